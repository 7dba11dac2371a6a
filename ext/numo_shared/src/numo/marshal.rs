//! Numo's own marshal data (`[1, shape, flags, bytes]`), loaded as a copy.
//!
//! Numo would point the array at the String's buffer (and keep the String).
//! Since Ruby 3.2 a short String's bytes live inside its object, which
//! `GC.compact` moves: the array then reads whatever takes that place. So
//! the bytes are copied, once, straight from the String into the array's own
//! memory (from `ruby_xmalloc`, which raises `NoMemoryError` when memory runs
//! out, as Numo's allocation does).

use magnus::{rb_sys::AsRawValue, rb_sys::FromRawValue, RString, Value};
use rb_sys::VALUE;

use crate::error::Result;
use crate::numo::layout::FLAG_BYTE_SWAPPED;
use crate::numo::plan::Plan;
use crate::numo::typed_data;

/// `Numo::Shared::Native.load_numo_data(array, data)` from
/// `NArray#marshal_load`: for Numo's own marshal data of a numeric class,
/// fills `array` with a copy of the bytes and returns it; nil for anything
/// else (Numo then loads it, or refuses it in its own words).
pub fn load_numo_data(obj: Value, data: Value) -> Result<Option<Value>> {
    let Some((dims, flags, binary)) = numo_marshal_data(data.as_raw()) else {
        return Ok(None);
    };
    // SAFETY: the type is read only of a typed-data object.
    let marks = unsafe {
        typed_data::is_typed(obj.as_raw())
            && (*typed_data::type_of(obj.as_raw()))
                .function
                .dmark
                .is_some()
    };
    if marks || flags & FLAG_BYTE_SWAPPED != 0 {
        return Ok(None); // Numo::RObject, or data Numo turns to the host's order
    }
    let Ok(plan) = Plan::for_object(obj, dims, flags) else {
        return Ok(None);
    };
    // SAFETY: binary is a String (checked), kept alive by `data`.
    let string = unsafe { RString::from_value(Value::from_raw(binary)) }.expect("checked a String");
    // SAFETY: only the length; the bytes are read after the last allocation.
    if unsafe { string.as_slice() }.len() < plan.bytes || !plan.is_fresh(obj) {
        return Ok(None);
    }
    plan.fill_with(obj, |target| {
        // SAFETY: read after the buffer was allocated (the GC that may have
        // run moved nothing from now on); no Ruby code runs during the copy.
        let bytes = unsafe { string.as_slice() };
        target.copy_from_slice(&bytes[..target.len()]);
        Ok(())
    })
    .map(Some)
}

/// The shape, flags and String of Numo's marshal data `[1, shape, flags,
/// bytes]`, or `None` for anything else.
fn numo_marshal_data(raw: VALUE) -> Option<(Vec<usize>, u8, VALUE)> {
    // SAFETY: each step checks the type of what it reads; nothing here calls
    // Ruby code or allocates a Ruby object.
    unsafe {
        if !rb_sys::RB_TYPE_P(raw, rb_sys::ruby_value_type::RUBY_T_ARRAY)
            || rb_sys::RARRAY_LEN(raw) != 4
            || rb_sys::rb_ary_entry(raw, 0) != rb_sys::rb_int2inum(1)
        {
            return None;
        }
        let (shape, flags, binary) = (
            rb_sys::rb_ary_entry(raw, 1),
            rb_sys::rb_ary_entry(raw, 2),
            rb_sys::rb_ary_entry(raw, 3),
        );
        if !rb_sys::RB_TYPE_P(shape, rb_sys::ruby_value_type::RUBY_T_ARRAY)
            || !rb_sys::FIXNUM_P(flags)
            || !rb_sys::RB_TYPE_P(binary, rb_sys::ruby_value_type::RUBY_T_STRING)
        {
            return None;
        }
        let len = rb_sys::RARRAY_LEN(shape);
        if len as usize > crate::numo::shape::MAX_DIMENSIONS {
            return None;
        }
        let mut dims = Vec::with_capacity(len as usize);
        for i in 0..len {
            let dim = rb_sys::rb_ary_entry(shape, i);
            if !rb_sys::FIXNUM_P(dim) || rb_sys::rb_num2long(dim) < 0 {
                return None;
            }
            dims.push(rb_sys::rb_num2long(dim) as usize);
        }
        let flags = u8::try_from(rb_sys::rb_num2long(flags)).ok()?;
        Some((dims, flags, binary))
    }
}
