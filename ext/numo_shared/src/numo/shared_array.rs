//! Numo arrays whose data pointer points into a `Segment`.
//!
//! A shared array is an ordinary Numo object of the requested class whose
//! typed-data struct is ours: `SharedArray` starts with a copy of Numo's own
//! `narray_data_t` (so every Numo function reads it as usual) with
//! `owned = true` (so Numo never copies it on write) and carries the
//! `Segment` behind it. Its `rb_data_type_t` is a child of the class's own
//! type (so Numo's type checks accept it) with our free function, so Numo's
//! free, which would `xfree` the mapped pointer, never sees it. Views made by
//! Numo keep the object alive by marking it, so the mapping lives exactly as
//! long as the array or any view of it.
//!
//! This file holds the struct, its data types and free function, and the
//! lookups and operations on an existing shared array; `plan.rs` makes them.

use std::ffi::{c_void, CString};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use magnus::{prelude::*, rb_sys::AsRawValue, rb_sys::FromRawValue, Value};
use rb_sys::{rb_data_type_struct__bindgen_ty_1, rb_data_type_t, size_t, VALUE};

use crate::error::{Error, Result};
use crate::memory::live::Mapping;
use crate::memory::segment::{self, Reservation};
use crate::numo::layout::{self, NArrayData, NArrayView, NARRAY_VIEW_T};
use crate::numo::typed_data;

/// Our typed-data struct. `data` must stay the first field: Numo casts the
/// object's data pointer to `narray_data_t *`.
#[repr(C)]
pub struct SharedArray {
    pub data: NArrayData,
    /// The memory, shared with the other arrays over the same mapping.
    pub segment: Option<Arc<Mapping>>,
    /// After `NArray#free`: the address range the data was mapped at, kept
    /// (as anonymous memory) until the object is collected; or, when other
    /// arrays share the mapping, the mapping itself.
    released: Option<Reservation>,
    kept: Option<Arc<Mapping>>,
    /// Set by `NArray#free`.
    freed: bool,
}

impl SharedArray {
    /// Our struct over `segment` (or no memory, for zero bytes), copying
    /// `template` (Numo's struct of the class) with `shape` (a buffer from
    /// `ruby_xmalloc` for two or more dimensions, null for fewer) and `dims`.
    /// Its data starts `delta` bytes into the segment.
    pub fn new(
        template: NArrayData,
        dims: &[usize],
        shape: *mut usize,
        segment: Option<Arc<Mapping>>,
        delta: usize,
    ) -> Box<SharedArray> {
        let mut array = Box::new(SharedArray {
            data: template,
            segment,
            released: None,
            kept: None,
            freed: false,
        });
        array.data.ptr = match array.segment.as_ref() {
            // SAFETY: callers pass a delta inside the segment.
            Some(mapping) => unsafe { mapping.segment().as_ptr().add(delta) },
            None => std::ptr::null_mut(),
        };
        array.data.owned = true;
        array.data.base.ndim = dims.len() as u8;
        array.data.base.size = dims.iter().product();
        array.data.base.shape = if shape.is_null() {
            &mut array.data.base.size as *mut usize
        } else {
            shape
        };
        array
    }
}

/// `na_data_type`, the root of Numo's type tree, found at load time.
static NARRAY_TYPE: AtomicPtr<rb_data_type_t> = AtomicPtr::new(std::ptr::null_mut());

/// One `rb_data_type_t` of ours per Numo class type, made on first use and
/// kept for the life of the process: (Numo's type, ours).
static SHARED_TYPES: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());

/// Our types again, in the order made, readable without the lock: every
/// `shared?` asks. numo-narray has 13 numeric classes; a type past the last
/// slot is still found in `SHARED_TYPES`.
static SHARED_TYPE_SLOTS: [AtomicUsize; 32] = [const { AtomicUsize::new(0) }; 32];

/// Records Numo's root type, read off a probe array's type chain.
pub fn set_narray_type(ty: *const rb_data_type_t) {
    NARRAY_TYPE.store(ty as *mut _, Ordering::Release);
}

pub fn narray_type() -> *const rb_data_type_t {
    NARRAY_TYPE.load(Ordering::Acquire)
}

/// Our type for objects of the Numo class whose own type is `numo_type`.
pub fn shared_type_for(numo_type: *const rb_data_type_t) -> *const rb_data_type_t {
    let mut types = SHARED_TYPES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&(_, ours)) = types
        .iter()
        .find(|(theirs, _)| *theirs == numo_type as usize)
    {
        return ours as *const rb_data_type_t;
    }
    // SAFETY: numo_type is a live, static rb_data_type_t of numo-narray.
    let (name, data, flags) = unsafe {
        (
            layout::type_name(numo_type),
            (*numo_type).data,
            (*numo_type).flags,
        )
    };
    let name = CString::new(format!("{name} (numo-shared)")).expect("no NUL in a type name");
    let ours = Box::new(rb_data_type_t {
        wrap_struct_name: name.into_raw(),
        function: rb_data_type_struct__bindgen_ty_1 {
            dmark: None,
            dfree: Some(free_shared),
            dsize: Some(size_shared),
            dcompact: None,
            reserved: [std::ptr::null_mut(); 1],
        },
        parent: numo_type,
        data,
        flags: flags | rb_sys::rbimpl_typeddata_flags::RUBY_TYPED_FREE_IMMEDIATELY as VALUE,
    });
    let ours = Box::into_raw(ours) as usize;
    types.push((numo_type as usize, ours));
    if let Some(slot) = SHARED_TYPE_SLOTS.get(types.len() - 1) {
        slot.store(ours, Ordering::Release);
    }
    ours as *const rb_data_type_t
}

/// True for the types made by `shared_type_for`.
pub fn is_shared_type(ty: *const rb_data_type_t) -> bool {
    let ty = ty as usize;
    for slot in &SHARED_TYPE_SLOTS {
        match slot.load(Ordering::Acquire) {
            0 => return false,
            ours if ours == ty => return true,
            _ => {}
        }
    }
    let types = SHARED_TYPES.lock().unwrap_or_else(|e| e.into_inner());
    types.iter().any(|&(_, ours)| ours == ty)
}

unsafe extern "C" fn free_shared(ptr: *mut c_void) {
    if ptr.is_null() {
        return;
    }
    let array = Box::from_raw(ptr as *mut SharedArray);
    free_shape(&array.data);
    if array.segment.is_none() && !array.data.ptr.is_null() && array.data.owned {
        // Numo gave a released array memory of its own (its `allocate` does
        // not look at whose struct it writes to): free it as Numo would
        // (only if owned: Numo's `store_binary` of a frozen String points
        // the array at the String's bytes).
        rb_sys::ruby_xfree(array.data.ptr as *mut c_void);
    }
    if let Some(segment) = &array.segment {
        rb_sys::rb_gc_adjust_memory_usage(-(segment.segment().len() as isize) as _);
    }
    drop(array); // unmaps the segment, if no other array uses it
}

/// Frees the shape buffer unless it points at the struct's own size field,
/// the convention numo-narray uses for 0- and 1-dimensional arrays. Numo's
/// `reshape!` may have swapped in its own `ruby_xmalloc`ed buffer.
pub unsafe fn free_shape(data: &NArrayData) {
    let shape = data.base.shape;
    if data.base.shape_is_allocated() {
        rb_sys::ruby_xfree(shape as *mut c_void);
    }
}

unsafe extern "C" fn size_shared(ptr: *const c_void) -> size_t {
    let array = &*(ptr as *const SharedArray);
    let mut size = std::mem::size_of::<SharedArray>();
    if array.data.base.shape_is_allocated() {
        size += std::mem::size_of::<usize>() * array.data.base.ndim as usize;
    }
    if let Some(segment) = &array.segment {
        size += segment.segment().len();
    }
    size as size_t
}

/// Puts `array` behind `obj`, whose data pointer is NULL and whose type is ours.
/// Then extends `obj` with `Numo::Shared::Reinitialization` (see
/// `guards.rs`); if that fails, `obj` still owns `array` and
/// frees it when collected.
pub unsafe fn install(obj: VALUE, array: Box<SharedArray>) -> Result<Value> {
    let bytes = array.segment.as_ref().map_or(0, |m| m.segment().len());
    typed_data::set_data(obj, Box::into_raw(array) as *mut c_void);
    rb_sys::rb_gc_adjust_memory_usage(bytes as _);
    let guard = REINITIALIZATION.load(Ordering::Acquire) as VALUE;
    if guard != 0 {
        magnus::rb_sys::protect(|| {
            rb_sys::rb_extend_object(obj, guard);
            obj
        })
        .map_err(Error::Ruby)?;
    }
    Ok(Value::from_raw(obj))
}

/// `Numo::Shared::Reinitialization`, set at load (a constant: never collected).
static REINITIALIZATION: AtomicUsize = AtomicUsize::new(0);

/// Records the module every shared array is extended with (see `guards`).
pub fn set_reinitialization_guard(module: VALUE) {
    REINITIALIZATION.store(module as usize, Ordering::Release);
}

/// True for Numo arrays (any class, views included).
///
/// # Safety
/// `raw` must be a live object.
pub unsafe fn is_narray(raw: VALUE) -> bool {
    typed_data::is_typed(raw)
        && !narray_type().is_null()
        && rb_sys::rb_typeddata_is_kind_of(raw, narray_type()) != 0
}

/// The `SharedArray` behind `obj` or behind the array a view of `obj` looks
/// into; `None` if neither is a shared array.
fn shared_base(obj: Value) -> Option<(VALUE, *mut SharedArray)> {
    let mut raw = obj.as_raw();
    // SAFETY: each step checks the object's type before reading its struct.
    unsafe {
        if !is_narray(raw) {
            return None;
        }
        let na = typed_data::data_of(raw) as *const NArrayView;
        if na.is_null() {
            return None;
        }
        if (*na).base.kind == NARRAY_VIEW_T {
            raw = (*na).data;
            if !typed_data::is_typed(raw) {
                return None;
            }
        }
        if !is_shared_type(typed_data::type_of(raw)) {
            return None;
        }
        let ptr = typed_data::data_of(raw) as *mut SharedArray;
        (!ptr.is_null()).then_some((raw, ptr))
    }
}

/// The segment behind `obj` (itself or the array it views), if any.
pub fn segment_behind<'a>(obj: Value) -> Option<(VALUE, &'a mut SharedArray)> {
    let (raw, ptr) = shared_base(obj)?;
    // SAFETY: ptr is our live struct, kept alive by obj.
    Some((raw, unsafe { &mut *ptr }))
}

/// `NArray#shared?`: true while `obj` (or the array it views) has shared
/// memory; false for ordinary arrays and after `free`.
pub fn is_shared(obj: Value) -> bool {
    segment_behind(obj).is_some_and(|(_, array)| !array.freed)
}

/// True for our own arrays, released or not: Numo must not re-initialize or
/// allocate into them.
pub fn is_ours(obj: Value) -> bool {
    let raw = obj.as_raw();
    // SAFETY: each step checks the object's type before reading its struct.
    unsafe { is_narray(raw) && is_shared_type(typed_data::type_of(raw)) }
}

/// `Numo::Shared.mapped_bytes(array)`: bytes of shared memory behind `obj`
/// (or behind the array it views), as mapped in this process; 0 for other
/// arrays and released ones.
pub fn mapped_bytes(obj: Value) -> Result<usize> {
    // SAFETY: obj is a live object.
    if !unsafe { is_narray(obj.as_raw()) } {
        return Err(Error::Type(format!(
            "no implicit conversion of {} into Numo::NArray",
            // SAFETY: obj is a live object.
            unsafe { obj.classname() }
        )));
    }
    Ok(segment_behind(obj)
        .and_then(|(_, array)| array.segment.as_ref().map(|m| m.segment().len()))
        .unwrap_or(0))
}

/// `NArray#free` on a shared array: gives up its memory in this process now
/// (the caller then freezes the array, so that later reads raise and writes
/// cannot silently move it to private memory). The address range is kept (as
/// anonymous memory, read as zeros) until the object is collected, so that
/// a Numo loop still running over it (`a.each { a.free }`) cannot fault.
/// Returns false when `obj` is not itself a shared array (a view, or an
/// ordinary array), for Numo's own `free` to handle.
pub fn release(obj: Value) -> bool {
    let Some((raw, array)) = segment_behind(obj) else {
        return false;
    };
    if raw != obj.as_raw() {
        return false;
    }
    array.data.ptr = std::ptr::null_mut();
    array.freed = true;
    if let Some(mapping) = array.segment.take() {
        // SAFETY: reports memory this object no longer holds.
        unsafe { rb_sys::rb_gc_adjust_memory_usage(-(mapping.segment().len() as isize) as _) };
        match Mapping::release(mapping) {
            Ok(reservation) => array.released = Some(reservation),
            // Other arrays use the mapping (views by reference, results
            // passed back): it stays until they are collected, and this
            // array keeps its reference until it is, so that a Numo loop
            // still running over it cannot fault.
            Err(shared) => array.kept = Some(shared),
        }
    }
    true
}

/// `Numo::Shared::Native.populate(array, offset, length)`: maps every page
/// of `length` bytes at `offset` into `array`'s data (a shared array) at
/// once, as writing them would one fault at a time. A hint: false when it
/// cannot be done (not a shared array, a range outside it, an old kernel).
pub fn populate(obj: Value, offset: usize, len: usize) -> bool {
    let Some((raw, array)) = segment_behind(obj) else {
        return false;
    };
    let data = array.data.ptr as usize;
    let Some(mapping) = array.segment.as_ref().filter(|_| raw == obj.as_raw()) else {
        return false;
    };
    let start = mapping.segment().as_ptr() as usize;
    let end = start + mapping.segment().len();
    let Some(from) = data.checked_add(offset).filter(|&f| f >= start) else {
        return false;
    };
    let Some(to) = from.checked_add(len).filter(|&t| t <= end) else {
        return false;
    };
    let page = crate::sys::page_size();
    let (first, last) = (from / page * page, to.div_ceil(page) * page);
    // SAFETY: a range of our own live mapping; populating has no other effect.
    unsafe { segment::populate(first, last.min(end) - first) }
}

/// `NArray#flush`: writes the changes of a mapped file (or the file behind
/// the array a view looks into) to disk. False for ordinary arrays.
pub fn flush(obj: Value) -> Result<bool> {
    let Some((_, array)) = segment_behind(obj) else {
        return Ok(false);
    };
    if let Some(mapping) = array.segment.as_ref() {
        mapping.segment().flush()?;
    }
    Ok(true)
}
