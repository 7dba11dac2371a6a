//! Making shared arrays: `Plan` checks a class and a shape and works out the
//! data size, then wraps a segment as a new Numo object of that class, or
//! turns an object `Marshal.load` just allocated into a shared array, a
//! view of one, or an ordinary array filled with given bytes.

use std::ffi::c_void;

use magnus::{prelude::*, rb_sys::AsRawValue, rb_sys::FromRawValue, RArray, RClass, Ruby, Value};
use rb_sys::{rb_data_type_t, VALUE};

use crate::error::{Error, Result};
use std::sync::Arc;

use crate::memory::live::Mapping;
use crate::numo::layout::{
    self, NArrayBase, NArrayData, NArrayView, Step, TypeInfo, NARRAY_DATA_T, NARRAY_VIEW_T,
};
use crate::numo::ruby_alloc;
use crate::numo::shape;
use crate::numo::shared_array::{
    free_shape, install, is_narray, is_shared_type, shared_type_for, SharedArray,
};
use crate::numo::typed_data;

/// The numeric Numo class `klass`, checked, with its element description.
struct NumoClass {
    numo_type: *const rb_data_type_t,
    info: *const TypeInfo,
}

/// Checks that a fresh array of `klass` is a numeric Numo array we can share.
fn numo_class_of(klass: RClass, fresh: Value) -> Result<NumoClass> {
    let raw = fresh.as_raw();
    // SAFETY: fresh is a live object returned by klass.new.
    unsafe {
        if !is_narray(raw) {
            return Err(Error::Type(format!(
                "{} is not a Numo::NArray class",
                klass.inspect()
            )));
        }
        let ty = typed_data::type_of(raw);
        let na = typed_data::data_of(raw) as *const NArrayData;
        if (*ty).function.dmark.is_some() {
            return Err(Error::Type(format!(
                "{} holds references to Ruby objects, which cannot live in shared memory; \
                 use a numeric class such as Numo::DFloat",
                klass.inspect()
            )));
        }
        if (*ty).data.is_null() || na.is_null() || (*na).base.kind != NARRAY_DATA_T {
            return Err(Error::Type(format!(
                "{} is not a numeric Numo class",
                klass.inspect()
            )));
        }
        Ok(NumoClass {
            numo_type: ty,
            info: (*ty).data as *const TypeInfo,
        })
    }
}

/// A checked request for an array of some class and shape: what its struct
/// looks like and how many bytes of data it needs.
pub struct Plan {
    numo_type: *const rb_data_type_t,
    template: NArrayData,
    dims: Vec<usize>,
    pub bytes: usize,
}

/// Checks `klass` and `shape` and works out the data size, without mapping.
pub fn plan(ruby: &Ruby, klass: RClass, shape: RArray) -> Result<Plan> {
    check_class(ruby, klass)?;
    let (dims, elements) = shape::dimensions(shape)?;
    let fresh = fresh_array(klass)?;
    plan_from(klass, fresh, dims, elements, || shape::describe(shape))
}

/// An unallocated array of `klass`, made by its allocator.
fn fresh_array(klass: RClass) -> Result<Value> {
    klass
        .obj_alloc()
        .map_err(|e| Error::Type(format!("{} cannot make arrays: {e}", klass.inspect())))
}

fn plan_from(
    klass: RClass,
    fresh: Value,
    dims: Vec<usize>,
    elements: usize,
    describe: impl FnOnce() -> String,
) -> Result<Plan> {
    let class = numo_class_of(klass, fresh)?;
    // SAFETY: info points at numo-narray's static narray_type_info_t.
    let bytes = layout::data_bytes(unsafe { &*class.info }, elements)
        .filter(|&b| b <= isize::MAX as usize)
        .ok_or_else(|| {
            Error::Argument(format!(
                "shape {} of {} needs more bytes than can be addressed",
                describe(),
                klass.inspect()
            ))
        })?;
    // SAFETY: fresh is a Numo data array (checked above).
    let template = unsafe { *(typed_data::data_of(fresh.as_raw()) as *const NArrayData) };
    Ok(Plan {
        numo_type: class.numo_type,
        template,
        dims,
        bytes,
    })
}

/// The number of elements of `dims`, or an error naming the shape.
fn elements_of(dims: &[usize]) -> Result<usize> {
    if dims.len() > shape::MAX_DIMENSIONS {
        return Err(Error::Argument(format!(
            "a shape has at most {} dimensions, got {}",
            shape::MAX_DIMENSIONS,
            dims.len()
        )));
    }
    dims.iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| {
            Error::Argument(format!(
                "shape {dims:?} has more elements than can be addressed"
            ))
        })
}

impl Plan {
    /// A plan for an array of `klass` with dimensions `dims`.
    pub fn for_class(klass: RClass, dims: Vec<usize>) -> Result<Plan> {
        let elements = elements_of(&dims)?;
        let fresh = fresh_array(klass)?;
        plan_from(klass, fresh, dims.clone(), elements, || format!("{dims:?}"))
    }

    /// The plan for turning `obj`, an unallocated array just made by its
    /// class's allocator (as `Marshal.load` makes them), into an array of
    /// `dims` whose Numo flags (byte order, column-major) are `flags`.
    pub fn for_object(obj: Value, dims: Vec<usize>, flags: u8) -> Result<Plan> {
        let elements = elements_of(&dims)?;
        // numo_class_of checks obj's own type, which is all check_class would.
        let mut plan = plan_from(class_of(obj), obj, dims.clone(), elements, || {
            format!("{dims:?}")
        })?;
        plan.template.base.flag[0] = flags;
        Ok(plan)
    }

    /// The checked dimensions.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// Bytes per element, or `None` for classes that pack bits (Numo::Bit).
    pub fn element_bytes(&self) -> Option<usize> {
        // SAFETY: numo_type is a live, static Numo type whose data is its
        // narray_type_info_t (checked when the plan was made).
        let info = unsafe { &*((*self.numo_type).data as *const TypeInfo) };
        (info.element_bytes > 0).then_some(info.element_bytes as usize)
    }

    /// A new Ruby object of `klass` over `segment`.
    pub fn wrap(&self, klass: RClass, segment: Option<Arc<Mapping>>) -> Result<Value> {
        self.wrap_at(klass, segment, 0)
    }

    /// A new Ruby object of `klass` whose data starts `delta` bytes into
    /// `segment`. If Ruby cannot allocate, the segment is unmapped and the
    /// error returned.
    pub fn wrap_at(
        &self,
        klass: RClass,
        segment: Option<Arc<Mapping>>,
        delta: usize,
    ) -> Result<Value> {
        let ty = shared_type_for(self.numo_type);
        // The object and the shape buffer exist before our struct owns the
        // segment: a failed allocation drops the segment on the way out.
        let obj = ruby_alloc::typed_object(klass.as_raw(), ty)?;
        let array = self.build(segment, delta)?;
        // SAFETY: obj is ours, its pointer is still NULL.
        unsafe { install(obj, array) }
    }

    /// Turns `obj`, an unallocated array just made by its class's allocator
    /// (as `Marshal.load` makes them), into a shared array over `segment`.
    /// Its data starts `delta` bytes into the segment.
    pub fn adopt(&self, obj: Value, segment: Option<Arc<Mapping>>, delta: usize) -> Result<Value> {
        let raw = obj.as_raw();
        let old = self.fresh_struct(raw)?;
        let array = self.build(segment, delta)?;
        // SAFETY: old is obj's unallocated struct (checked above).
        unsafe {
            swap_struct(
                raw,
                shared_type_for(self.numo_type),
                std::ptr::null_mut(),
                old,
            );
            install(raw, array)
        }
    }

    /// Turns `obj`, an unallocated array just made by its class's allocator,
    /// into a Numo view (of numo-narray's `view_type`) of `base` with this
    /// plan's shape, starting `offset` into `base`'s data, one `steps` entry
    /// per dimension. The caller has checked that every element it reaches
    /// lies inside `base`.
    pub fn adopt_view(
        &self,
        obj: Value,
        view_type: *const rb_data_type_t,
        base: Value,
        offset: usize,
        steps: &[Step],
    ) -> Result<Value> {
        let raw = obj.as_raw();
        let old = self.fresh_struct(raw)?;
        let dims = &self.dims;
        // Every buffer comes from ruby_xmalloc, as numo-narray's view free
        // expects; they are all made (allocation may run the GC) before
        // obj's struct is swapped, and freed again if one cannot be made.
        let view = ruby_alloc::xmalloc_array::<NArrayView>(1)?;
        let stridx = match ruby_alloc::xmalloc_array::<usize>(dims.len()) {
            Ok(stridx) => stridx,
            Err(err) => {
                // SAFETY: view came from xmalloc just above.
                unsafe { rb_sys::ruby_xfree(view as *mut c_void) };
                return Err(err);
            }
        };
        let mut encoded = Vec::with_capacity(steps.len());
        let mut shape = Ok(std::ptr::null_mut());
        for step in steps {
            match step.encode() {
                Ok(word) => encoded.push(word),
                Err(err) => {
                    shape = Err(err);
                    break;
                }
            }
        }
        if shape.is_ok() {
            shape = shape_buffer(dims);
        }
        let shape = match shape {
            Ok(shape) => shape,
            Err(err) => {
                // SAFETY: every buffer here came from xmalloc and is unused.
                unsafe {
                    for (word, step) in encoded.iter().zip(steps) {
                        if matches!(step, Step::Index(_)) {
                            rb_sys::ruby_xfree(*word as *mut c_void);
                        }
                    }
                    rb_sys::ruby_xfree(stridx as *mut c_void);
                    rb_sys::ruby_xfree(view as *mut c_void);
                }
                return Err(err);
            }
        };
        // SAFETY: the buffers are ours and sized above; base stays on this
        // stack until obj marks it.
        unsafe {
            for (i, word) in encoded.into_iter().enumerate() {
                *stridx.add(i) = word;
            }
            view.write(NArrayView {
                base: NArrayBase {
                    ndim: dims.len() as u8,
                    kind: NARRAY_VIEW_T,
                    size: dims.iter().product(),
                    shape,
                    ..(*old).base
                },
                data: base.as_raw(),
                offset,
                stridx,
            });
            (*view).base.flag[0] = self.template.base.flag[0];
            if shape.is_null() {
                (*view).base.shape = &mut (*view).base.size;
            }
            // From here on obj references base, which Numo's view type
            // marks: swap_struct unprotects its write barrier first.
            swap_struct(raw, view_type, view as *mut c_void, old);
        }
        Ok(obj)
    }

    /// Turns `obj`, an unallocated array just made by its class's allocator,
    /// into an ordinary array of this plan whose data (from `ruby_xmalloc`,
    /// as Numo's own) starts with a copy of `bytes`; the rest is zeroed.
    pub fn fill(&self, obj: Value, bytes: &[u8]) -> Result<Value> {
        if bytes.len() > self.bytes {
            return Err(Error::Argument(format!(
                "{} bytes do not fit an array of {} bytes",
                bytes.len(),
                self.bytes
            )));
        }
        self.fill_with(obj, |data| {
            let (head, tail) = data.split_at_mut(bytes.len());
            head.copy_from_slice(bytes);
            tail.fill(0);
            Ok(())
        })
    }

    /// `fill`, with the data written by `copy`, which gets all of the new
    /// buffer once it is allocated and must write every byte of it. `copy`
    /// runs after the last allocation (which may run the GC, and so move a
    /// String's bytes): it may read memory that moves, and must not call Ruby.
    pub fn fill_with(
        &self,
        obj: Value,
        copy: impl FnOnce(&mut [u8]) -> Result<()>,
    ) -> Result<Value> {
        let raw = obj.as_raw();
        let old = self.fresh_struct(raw)?;
        let dims = &self.dims;
        // Both buffers are made before the struct is touched, and
        // numo-narray frees them with xfree.
        let data = if self.bytes == 0 {
            std::ptr::null_mut()
        } else {
            ruby_alloc::xmalloc(self.bytes)?
        };
        let shape = match shape_buffer(dims) {
            Ok(shape) => shape,
            Err(err) => {
                // SAFETY: data came from xmalloc just above (or is NULL).
                unsafe { rb_sys::ruby_xfree(data as *mut c_void) };
                return Err(err);
            }
        };
        let target: &mut [u8] = if data.is_null() {
            &mut []
        } else {
            // SAFETY: data holds self.bytes bytes, used by nothing else yet.
            unsafe { std::slice::from_raw_parts_mut(data, self.bytes) }
        };
        if let Err(err) = copy(target) {
            // SAFETY: both came from xmalloc just above (or are NULL), and
            // nothing holds them.
            unsafe {
                rb_sys::ruby_xfree(data as *mut c_void);
                rb_sys::ruby_xfree(shape as *mut c_void);
            }
            return Err(err);
        }
        // SAFETY: old is obj's own struct.
        unsafe {
            free_shape(&*old);
            let na = &mut *old;
            na.base.ndim = dims.len() as u8;
            na.base.size = dims.iter().product();
            na.base.flag[0] = self.template.base.flag[0];
            na.base.shape = if shape.is_null() {
                &mut na.base.size
            } else {
                shape
            };
            na.ptr = data;
            na.owned = !data.is_null();
        }
        Ok(obj)
    }

    /// True when `obj` is an unallocated data array of this plan's class.
    pub fn is_fresh(&self, obj: Value) -> bool {
        self.fresh_struct(obj.as_raw()).is_ok()
    }

    /// The struct of `obj` if it is an unallocated data array of this
    /// plan's class, as its allocator (and so `Marshal.load`) makes them.
    fn fresh_struct(&self, raw: VALUE) -> Result<*mut NArrayData> {
        // SAFETY: each step checks the object's type before reading its struct.
        unsafe {
            if typed_data::is_typed(raw)
                && typed_data::type_of(raw) == self.numo_type
                && !is_shared_type(self.numo_type)
            {
                let old = typed_data::data_of(raw) as *mut NArrayData;
                if !old.is_null() && (*old).base.kind == NARRAY_DATA_T && (*old).ptr.is_null() {
                    return Ok(old);
                }
            }
        }
        Err(Error::Type(
            "only a freshly allocated array of the same class can adopt shared memory".into(),
        ))
    }

    /// Our struct for this plan over `segment`; the shape buffer (the only
    /// Ruby allocation) is made first.
    fn build(&self, segment: Option<Arc<Mapping>>, delta: usize) -> Result<Box<SharedArray>> {
        let shape = shape_buffer(&self.dims)?;
        Ok(SharedArray::new(
            self.template,
            &self.dims,
            shape,
            segment,
            delta,
        ))
    }
}

/// The shape buffer numo-narray keeps for `dims`: a copy from `ruby_xmalloc`
/// for two or more dimensions (Numo frees it), or null for fewer, whose
/// shape points at the struct's own `size` field. The buffer must end up in
/// a struct (or be freed).
fn shape_buffer(dims: &[usize]) -> Result<*mut usize> {
    if dims.len() <= 1 {
        return Ok(std::ptr::null_mut());
    }
    let buf = ruby_alloc::xmalloc_array::<usize>(dims.len())?;
    // SAFETY: buf holds dims.len() words.
    unsafe { std::ptr::copy_nonoverlapping(dims.as_ptr(), buf, dims.len()) };
    Ok(buf)
}

/// Gives `obj` the data type `ty` and the struct `data`, and frees `old`, the
/// unallocated Numo struct it had. Nothing allocates (so no GC runs) between
/// the swap and the free.
///
/// Ruby >= 3.3 allocates typed data whose type has no mark function (Numo's
/// numeric types) write-barrier protected, and keeps it so when the type
/// changes. A type that marks (numo-narray's view type marks the array the
/// view looks into) relies on its objects being unprotected, as Numo's own
/// views are: a protected object that is old, or becomes old, is not
/// traversed by a minor GC, which then frees what it references. So `obj` is
/// unprotected before it gets such a type (an old object is also remembered,
/// so the next minor GC marks its references).
///
/// # Safety
/// `old` must be `obj`'s own struct, and `data` a struct `ty`'s free function
/// frees (or NULL, to be installed next).
unsafe fn swap_struct(
    obj: VALUE,
    ty: *const rb_data_type_t,
    data: *mut c_void,
    old: *mut NArrayData,
) {
    if (*ty).function.dmark.is_some() {
        rb_sys::rb_gc_writebarrier_unprotect(obj);
    }
    typed_data::set_type(obj, ty);
    typed_data::set_data(obj, data);
    free_shape(&*old);
    rb_sys::ruby_xfree(old as *mut c_void);
}

/// Checks that `klass` is a Numo class other than Numo::NArray itself.
fn check_class(ruby: &Ruby, klass: RClass) -> Result<()> {
    let numo: magnus::RModule = ruby
        .class_object()
        .const_get("Numo")
        .map_err(|_| Error::Type("numo-narray is not loaded".into()))?;
    let narray: RClass = numo
        .const_get("NArray")
        .map_err(|_| Error::Type("numo-narray is not loaded".into()))?;
    if !klass.is_inherited(narray) || klass.equal(narray).unwrap_or(false) {
        return Err(Error::Type(format!(
            "{} is not a numeric Numo class such as Numo::DFloat",
            klass.inspect()
        )));
    }
    Ok(())
}

/// The class of `obj`, past its singleton class (shared arrays have one:
/// they are extended with `Numo::Shared::Reinitialization`).
pub fn class_of(obj: Value) -> RClass {
    // SAFETY: rb_obj_class returns a live class for a live object.
    unsafe {
        let klass = Value::from_raw(rb_sys::rb_obj_class(obj.as_raw()));
        RClass::from_value(klass).expect("rb_obj_class returns a class")
    }
}
