//! Non-contiguous views of shared arrays, passed between processes by
//! reference: the worker sends the geometry of a view (the segment of the
//! array it looks into, its offset, and a stride or an index table per
//! dimension); the parent maps that array again and builds the same Numo
//! view over it. No element is copied, and writes through either side reach
//! the same memory.

use std::sync::atomic::{AtomicPtr, Ordering};

use magnus::{prelude::*, rb_sys::AsRawValue, RArray, RString, Ruby, Value};
use rb_sys::rb_data_type_t;

use crate::error::{Error, Result};
use crate::numo::{self, Step, NARRAY_VIEW_T};
use crate::segment::Segment;
use crate::shared_array::{self, narray_type};

/// What `Numo::Shared::Native.view_location` returns: `[serial, creator pid,
/// data offset, data bytes, view offset, index mask, strides, index tables]`.
/// Bit `d` of the mask marks dimension `d` as one whose offsets are in the
/// index tables (native `size_t`s, one table after another); its stride is 0.
pub type Location = (u64, i32, usize, usize, usize, u64, Vec<isize>, RString);

/// numo-narray's `na_data_type_view`, found on first use.
static VIEW_TYPE: AtomicPtr<rb_data_type_t> = AtomicPtr::new(std::ptr::null_mut());

/// `Numo::Shared::Native.view_location(array)` in a worker: the geometry of
/// `array` if it is a view of a shared array, or nil.
pub fn location(ruby: &Ruby, obj: Value) -> Option<Location> {
    let view = shared_array::view_of(obj)?;
    let mut mask = 0u64;
    let mut strides = Vec::with_capacity(view.steps.len());
    let mut tables = Vec::new();
    for (dim, step) in view.steps.iter().enumerate() {
        match step {
            Step::Stride(stride) => strides.push(*stride),
            Step::Index(table) => {
                mask |= 1 << dim;
                strides.push(0);
                tables.extend(table.iter().flat_map(|i| i.to_ne_bytes()));
            }
        }
    }
    Some((
        view.serial,
        view.creator,
        view.data_offset,
        view.data_bytes,
        view.offset,
        mask,
        strides,
        ruby.str_from_slice(&tables),
    ))
}

/// Where a view looks, as `claim_view` gets it from a worker's handle:
/// `[serial, data offset, data bytes, view offset, index mask, strides]`
/// (see `Location`).
pub type Geometry = (u64, usize, usize, usize, u64, Vec<isize>);

/// `Numo::Shared::Native.claim_view(array, shape, geometry, tables)` in the
/// parent: makes `array` (just allocated by `Marshal.load`) a view with that
/// geometry of the `data_bytes` bytes at `data_offset` of its live segment
/// `serial`, mapped again.
pub fn claim(
    ruby: &Ruby,
    obj: Value,
    shape: RArray,
    geometry: Geometry,
    tables: RString,
) -> Result<Value> {
    let (serial, data_offset, data_bytes, offset, mask, strides) = geometry;
    let plan = shared_array::plan_for_object(obj, shape)?;
    if plan.bytes == 0 {
        return plan.adopt(obj, None, 0);
    }
    let klass = obj.class();
    // Offsets count bytes, or bits for Numo::Bit; the viewed array is made
    // one-dimensional with as many elements as its data holds.
    let (unit, elements) = match plan.element_bytes() {
        Some(size) if data_bytes % size == 0 => (size, data_bytes / size),
        Some(size) => {
            return Err(Error::Argument(format!(
                "a view's array of {data_bytes} bytes does not hold whole elements of {size} bytes"
            )))
        }
        None => (
            1,
            data_bytes
                .checked_mul(8)
                .ok_or_else(|| outside(data_bytes))?,
        ),
    };
    // Offsets of the first and last element, in the units above.
    let limit = (elements * unit) as i128;
    let steps = steps(plan.dims(), mask, &strides, tables)?;
    let (mut low, mut high) = (offset as i128, offset as i128);
    for (step, &len) in steps.iter().zip(plan.dims()) {
        let (down, up) = step.reach(len);
        low += down;
        high += up;
    }
    if low < 0 || high + unit as i128 > limit {
        return Err(outside(data_bytes));
    }
    let base_plan = shared_array::plan(ruby, klass, RArray::from_vec(vec![elements]))?;
    if base_plan.bytes != data_bytes {
        return Err(outside(data_bytes));
    }
    let (segment, delta) = Segment::duplicate(serial, data_offset, data_bytes)?;
    let base = base_plan.wrap_at(klass, Some(segment), delta);
    plan.adopt_view(obj, view_type(base)?, base, offset, &steps)
}

/// One `Step` per dimension from the strides, or for the dimensions in
/// `mask`, from the packed index tables.
fn steps(dims: &[usize], mask: u64, strides: &[isize], tables: RString) -> Result<Vec<Step>> {
    if strides.len() != dims.len() {
        return Err(Error::Argument(format!(
            "a view of {} dimensions came with {} strides",
            dims.len(),
            strides.len()
        )));
    }
    if mask.checked_shr(dims.len() as u32).unwrap_or(0) != 0 {
        return Err(Error::Argument(format!(
            "a view of {} dimensions came with index tables for dimensions it does not have",
            dims.len()
        )));
    }
    // SAFETY: the bytes are copied out before any Ruby code runs.
    let packed = unsafe { tables.as_slice() }.to_vec();
    let mut words = packed.chunks_exact(std::mem::size_of::<usize>());
    let mut steps = Vec::with_capacity(dims.len());
    for (dim, (&stride, &len)) in strides.iter().zip(dims).enumerate() {
        if mask & (1 << dim) != 0 {
            let table: Option<Vec<usize>> = (0..len)
                .map(|_| {
                    words
                        .next()
                        .map(|w| usize::from_ne_bytes(w.try_into().unwrap()))
                })
                .collect();
            let table = table.ok_or_else(|| {
                Error::Argument("a view's index tables are shorter than its shape".into())
            })?;
            steps.push(Step::Index(table));
        } else if stride.unsigned_abs() > isize::MAX as usize >> 1 {
            return Err(Error::Argument(format!(
                "a view's stride {stride} is out of range"
            )));
        } else {
            steps.push(Step::Stride(stride));
        }
    }
    if words.next().is_some() || !words.remainder().is_empty() {
        return Err(Error::Argument(
            "a view's index tables are longer than its shape".into(),
        ));
    }
    Ok(steps)
}

/// numo-narray's view type, read off a view numo-narray makes of `base`.
fn view_type(base: Value) -> Result<*const rb_data_type_t> {
    let known = VIEW_TYPE.load(Ordering::Acquire);
    if !known.is_null() {
        return Ok(known);
    }
    let probe: Value = base
        .funcall("view", ())
        .map_err(|e| Error::Layout(format!("cannot make a view to learn its type: {e}")))?;
    let raw = probe.as_raw();
    // SAFETY: each step checks the object's type before reading its struct.
    let ty = unsafe {
        if !numo::is_typed_data(raw) {
            return Err(Error::Layout(
                "a Numo view is not a typed-data object".into(),
            ));
        }
        let ty = numo::data_type_of(raw);
        let na = numo::data_ptr_of(raw) as *const numo::NArrayBase;
        if (*ty).parent != narray_type() || na.is_null() || (*na).kind != NARRAY_VIEW_T {
            return Err(Error::Layout(format!(
                "numo-narray's views ({}) are not laid out as numo-shared expects",
                numo::type_name(ty)
            )));
        }
        ty
    };
    VIEW_TYPE.store(ty as *mut _, Ordering::Release);
    Ok(ty)
}

fn outside(data_bytes: usize) -> Error {
    Error::Argument(format!(
        "a view returned by reference reaches outside the {data_bytes} bytes of the array it looks into"
    ))
}
