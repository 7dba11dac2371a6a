//! Non-contiguous views of shared arrays, passed between processes by
//! reference: the sender sends the geometry of a view (the mapping of the
//! array it looks into, its offset, and a stride or an index table per
//! dimension); the receiver builds the same Numo view over its own mapping
//! of that array. No element is copied, and writes through either side reach
//! the same memory.

use std::sync::atomic::{AtomicPtr, Ordering};

use magnus::{prelude::*, rb_sys::AsRawValue, Value};
use rb_sys::rb_data_type_t;

use crate::error::{try_vec, Error, Result};
use crate::memory::live;
use crate::numo::facts::ViewOf;
use crate::numo::layout::{self, Step, NARRAY_VIEW_T};
use crate::numo::plan::{class_of, Plan};
use crate::numo::shared_array::narray_type;
use crate::numo::typed_data;

/// numo-narray's `na_data_type_view`, found on first use.
static VIEW_TYPE: AtomicPtr<rb_data_type_t> = AtomicPtr::new(std::ptr::null_mut());

/// Where a view looks: the live segment `serial` of the parent, the
/// `data_bytes` bytes at `data_offset` in it that the viewed array holds,
/// the view's offset into them, and per dimension a stride, or (for the
/// dimensions whose bit is set in `index_mask`) an index table. Offsets and
/// strides count bytes, or bits for `Numo::Bit`.
#[derive(Debug, PartialEq, Eq)]
pub struct Geometry {
    pub serial: u64,
    pub data_offset: usize,
    pub data_bytes: usize,
    pub offset: usize,
    pub index_mask: u64,
    pub strides: Vec<isize>,
}

/// In a worker: the geometry of `view` and its index tables, packed (native
/// `size_t`s, one table after another).
pub fn geometry_of(view: &ViewOf) -> Result<(Geometry, Vec<u8>)> {
    let mut mask = 0u64;
    let mut strides = Vec::with_capacity(view.steps.len());
    let table_bytes = view
        .steps
        .iter()
        .map(|step| match step {
            Step::Index(table) => table.len() * std::mem::size_of::<usize>(),
            Step::Stride(_) => 0,
        })
        .sum();
    let mut tables = try_vec(table_bytes, "a view's index tables")?;
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
    let geometry = Geometry {
        serial: view.serial,
        data_offset: view.data_offset,
        data_bytes: view.data_bytes,
        offset: view.offset,
        index_mask: mask,
        strides,
    };
    Ok((geometry, tables))
}

/// In the parent: makes `obj` (just allocated by `Marshal.load`, of `plan`'s
/// class and shape) a view with that geometry of the array it looks into,
/// mapped again. The geometry is checked to stay inside that array first.
pub fn claim(plan: &Plan, obj: Value, geometry: &Geometry, tables: &[u8]) -> Result<Value> {
    if plan.bytes == 0 {
        return plan.adopt(obj, None, 0);
    }
    let data_bytes = geometry.data_bytes;
    let klass = class_of(obj);
    // Offsets count bytes, or bits for Numo::Bit; the viewed array is made
    // one-dimensional with as many elements as its data holds.
    let (unit, elements) = match plan.element_bytes() {
        Some(size) if data_bytes.checked_rem(size) == Some(0) => (size, data_bytes / size),
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
    let steps = steps(plan.dims(), geometry.index_mask, &geometry.strides, tables)?;
    let (mut low, mut high) = (geometry.offset as i128, geometry.offset as i128);
    for (step, &len) in steps.iter().zip(plan.dims()) {
        let (down, up) = step.reach(len);
        low += down;
        high += up;
    }
    if low < 0 || high + unit as i128 > limit {
        return Err(outside(data_bytes));
    }
    let base_plan = Plan::for_class(klass, vec![elements])?;
    if base_plan.bytes != data_bytes {
        return Err(outside(data_bytes));
    }
    let mapping = live::find_range(geometry.serial, geometry.data_offset, data_bytes)?;
    let base = base_plan.wrap_at(klass, Some(mapping), geometry.data_offset)?;
    plan.adopt_view(obj, view_type(base)?, base, geometry.offset, &steps)
}

/// One `Step` per dimension from the strides, or for the dimensions in
/// `mask`, from the packed index tables.
fn steps(dims: &[usize], mask: u64, strides: &[isize], packed: &[u8]) -> Result<Vec<Step>> {
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
    let mut words = packed.chunks_exact(std::mem::size_of::<usize>());
    let mut steps = Vec::with_capacity(dims.len());
    for (dim, (&stride, &len)) in strides.iter().zip(dims).enumerate() {
        if mask & (1 << dim) != 0 {
            if words.len() < len {
                return Err(Error::Argument(
                    "a view's index tables are shorter than its shape".into(),
                ));
            }
            let mut table = try_vec(len, "a view's index table")?;
            for _ in 0..len {
                let word = words.next().ok_or_else(|| {
                    Error::Argument("a view's index tables are shorter than its shape".into())
                })?;
                table.push(usize::from_ne_bytes(word.try_into().expect("a word")));
            }
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
        if !typed_data::is_typed(raw) {
            return Err(Error::Layout(
                "a Numo view is not a typed-data object".into(),
            ));
        }
        let ty = typed_data::type_of(raw);
        let na = typed_data::data_of(raw) as *const layout::NArrayBase;
        if (*ty).parent != narray_type() || na.is_null() || (*na).kind != NARRAY_VIEW_T {
            return Err(Error::Layout(format!(
                "numo-narray's views ({}) are not laid out as numo-shared expects",
                layout::type_name(ty)
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
