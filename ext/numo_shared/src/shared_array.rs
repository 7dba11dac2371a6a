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

use std::ffi::{c_void, CString};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::Mutex;

use magnus::{
    prelude::*, rb_sys::AsRawValue, rb_sys::FromRawValue, RArray, RClass, RString, Ruby, Value,
};
use rb_sys::{rb_data_type_struct__bindgen_ty_1, rb_data_type_t, size_t, VALUE};

use crate::error::{Error, Result};
use crate::numo::{
    self, NArrayBase, NArrayData, NArrayView, Step, TypeInfo, NARRAY_DATA_T, NARRAY_VIEW_T,
};
use crate::ruby_alloc;
use crate::segment::{Reservation, Segment};
use crate::shape;

/// Our typed-data struct. `data` must stay the first field: Numo casts the
/// object's data pointer to `narray_data_t *`.
#[repr(C)]
struct SharedArray {
    data: NArrayData,
    segment: Option<Segment>,
    /// Numo's own struct of an array that got shared memory from inside
    /// Numo's `allocate` (see `adopt_allocating`): C code up the stack still
    /// holds a pointer to it, so it lives (pointing at the same data) until
    /// the object is freed.
    retired: *mut NArrayData,
    /// After `NArray#free`: the address range the data was mapped at, kept
    /// (as anonymous memory) until the object is collected.
    released: Option<Reservation>,
    /// Set by `NArray#free`.
    freed: bool,
    /// After `NArray#free` of a moved array: its xmalloc'd data, kept (as
    /// `released` keeps a mapping) until the object is collected.
    kept: *mut u8,
}

impl SharedArray {
    /// After `Segment::park_for_hand_over`: drops the segment without
    /// unmapping (the parked mapping is the pool's now), points the array
    /// and Numo's retired struct of it at `data`, and stops counting the
    /// block's `held` bytes as this object's memory.
    fn leave_parked_block(&mut self, data: *mut u8, held: usize) {
        std::mem::forget(self.segment.take());
        self.data.ptr = data;
        // SAFETY: Numo's struct of this array lives as long as it does; the
        // adjustment reports memory this object no longer holds.
        unsafe {
            if !self.retired.is_null() {
                (*self.retired).ptr = data;
            }
            rb_sys::rb_gc_adjust_memory_usage(-(held as isize) as _);
        }
    }

    /// True for a worker's small result after it was handed over: its data
    /// moved to memory of Numo's kind (see `move_and_hand_over`).
    fn is_moved(&self) -> bool {
        self.segment.is_none() && self.released.is_none() && !self.data.ptr.is_null()
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
fn shared_type_for(numo_type: *const rb_data_type_t) -> *const rb_data_type_t {
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
            numo::type_name(numo_type),
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
fn is_shared_type(ty: *const rb_data_type_t) -> bool {
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
        // not look at whose struct it writes to), or a moved result's copy:
        // free it as Numo would (only if owned: Numo's `store_binary` of a
        // frozen String points the array at the String's bytes).
        rb_sys::ruby_xfree(array.data.ptr as *mut c_void);
    }
    if !array.kept.is_null() {
        rb_sys::ruby_xfree(array.kept as *mut c_void);
    }
    if !array.retired.is_null() {
        free_shape(&*array.retired);
        rb_sys::ruby_xfree(array.retired as *mut c_void);
    }
    if let Some(segment) = &array.segment {
        rb_sys::rb_gc_adjust_memory_usage(-(segment.len() as isize) as _);
    }
    drop(array); // unmaps the segment
}

/// Frees the shape buffer unless it points at the struct's own size field,
/// the convention numo-narray uses for 0- and 1-dimensional arrays. Numo's
/// `reshape!` may have swapped in its own `ruby_xmalloc`ed buffer.
unsafe fn free_shape(data: &NArrayData) {
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
        size += segment.len();
    }
    if !array.retired.is_null() {
        size += std::mem::size_of::<NArrayData>();
    }
    size as size_t
}

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
        if !numo::is_typed_data(raw) || rb_sys::rb_typeddata_is_kind_of(raw, narray_type()) == 0 {
            return Err(Error::Type(format!(
                "{} is not a Numo::NArray class",
                klass.inspect()
            )));
        }
        let ty = numo::data_type_of(raw);
        let na = numo::data_ptr_of(raw) as *const NArrayData;
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

/// `Numo::DFloat.new_shared(2, 3)`: a zero-filled array of `klass` and
/// `shape` in a fresh anonymous shared segment.
pub fn create(ruby: &Ruby, klass: RClass, shape: RArray) -> Result<Value> {
    let plan = plan(ruby, klass, shape)?;
    let segment = if plan.bytes == 0 {
        None
    } else {
        Some(Segment::anonymous(plan.bytes)?)
    };
    plan.wrap(klass, segment)
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
    let bytes = numo::data_bytes(unsafe { &*class.info }, elements)
        .filter(|&b| b <= isize::MAX as usize)
        .ok_or_else(|| {
            Error::Argument(format!(
                "shape {} of {} needs more bytes than can be addressed",
                describe(),
                klass.inspect()
            ))
        })?;
    // SAFETY: fresh is a Numo data array (checked above).
    let template = unsafe { *(numo::data_ptr_of(fresh.as_raw()) as *const NArrayData) };
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
        let mut plan = plan_from(numo::real_class(obj), obj, dims.clone(), elements, || {
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
    pub fn wrap(&self, klass: RClass, segment: Option<Segment>) -> Result<Value> {
        self.wrap_at(klass, segment, 0)
    }

    /// A new Ruby object of `klass` whose data starts `delta` bytes into
    /// `segment`. If Ruby cannot allocate, the segment is unmapped and the
    /// error returned.
    pub fn wrap_at(&self, klass: RClass, segment: Option<Segment>, delta: usize) -> Result<Value> {
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
    pub fn adopt(&self, obj: Value, segment: Option<Segment>, delta: usize) -> Result<Value> {
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
        let raw = obj.as_raw();
        let old = self.fresh_struct(raw)?;
        let dims = &self.dims;
        // Both buffers are made before the struct is touched (an allocation
        // may run the GC), and numo-narray frees them with xfree.
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
        // SAFETY: data holds self.bytes bytes; old is obj's own struct.
        unsafe {
            if !data.is_null() {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), data, bytes.len());
                std::ptr::write_bytes(data.add(bytes.len()), 0, self.bytes - bytes.len());
            }
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

    /// The struct of `obj` if it is an unallocated data array of this
    /// plan's class, as its allocator (and so `Marshal.load`) makes them.
    fn fresh_struct(&self, raw: VALUE) -> Result<*mut NArrayData> {
        // SAFETY: each step checks the object's type before reading its struct.
        unsafe {
            if numo::is_typed_data(raw)
                && numo::data_type_of(raw) == self.numo_type
                && !is_shared_type(self.numo_type)
            {
                let old = numo::data_ptr_of(raw) as *mut NArrayData;
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
    fn build(&self, segment: Option<Segment>, delta: usize) -> Result<Box<SharedArray>> {
        let dims = &self.dims;
        let shape = shape_buffer(dims)?;
        let mut array = Box::new(SharedArray {
            data: self.template,
            segment,
            retired: std::ptr::null_mut(),
            released: None,
            freed: false,
            kept: std::ptr::null_mut(),
        });
        array.data.ptr = match array.segment.as_mut() {
            // SAFETY: callers pass a delta inside the segment.
            Some(segment) => unsafe { segment.as_mut_ptr().add(delta) },
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
        Ok(array)
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
    (*(obj as *mut rb_sys::RTypedData)).type_ = ty;
    numo::set_data_ptr(obj, data);
    free_shape(&*old);
    rb_sys::ruby_xfree(old as *mut c_void);
}

/// Puts `array` behind `obj`, whose data pointer is NULL and whose type is ours.
/// Then extends `obj` with `Numo::Shared::Reinitialization` (see
/// `guard_reinitialization`); if that fails, `obj` still owns `array` and
/// frees it when collected.
unsafe fn install(obj: VALUE, array: Box<SharedArray>) -> Result<Value> {
    let bytes = array.segment.as_ref().map_or(0, Segment::len);
    numo::set_data_ptr(obj, Box::into_raw(array) as *mut c_void);
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

/// Records the module every shared array is extended with.
pub fn set_reinitialization_guard(module: VALUE) {
    REINITIALIZATION.store(module as usize, Ordering::Release);
}

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

/// True for Numo arrays (any class, views included).
///
/// # Safety
/// `raw` must be a live object.
pub unsafe fn is_narray(raw: VALUE) -> bool {
    numo::is_typed_data(raw)
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
        let na = numo::data_ptr_of(raw) as *const NArrayView;
        if na.is_null() {
            return None;
        }
        if (*na).base.kind == NARRAY_VIEW_T {
            raw = (*na).data;
            if !numo::is_typed_data(raw) {
                return None;
            }
        }
        if !is_shared_type(numo::data_type_of(raw)) {
            return None;
        }
        let ptr = numo::data_ptr_of(raw) as *mut SharedArray;
        (!ptr.is_null()).then_some((raw, ptr))
    }
}

/// The segment behind `obj` (itself or the array it views), if any.
fn segment_behind<'a>(obj: Value) -> Option<(VALUE, &'a mut SharedArray)> {
    let (raw, ptr) = shared_base(obj)?;
    // SAFETY: ptr is our live struct, kept alive by obj.
    Some((raw, unsafe { &mut *ptr }))
}

/// `NArray#shared?`: true while `obj` (or the array it views) has shared
/// memory; false for ordinary arrays and after `free`.
pub fn is_shared(obj: Value) -> bool {
    segment_behind(obj).is_some_and(|(_, array)| !array.freed && !array.is_moved())
}

/// True while `obj` (or the array it views) is ours and has memory: shared,
/// or a worker's moved result. Numo must not swap its data pointer.
pub fn is_backed(obj: Value) -> bool {
    segment_behind(obj).is_some_and(|(_, array)| !array.freed)
}

/// `Numo::Shared::Native.pooled_bytes(obj)`: the length of the block of this
/// worker's pool that `obj` itself owns, 0 for anything else (views, other
/// shared arrays, ordinary arrays).
pub fn pooled_bytes(obj: Value) -> usize {
    match segment_behind(obj) {
        Some((raw, array)) if raw == obj.as_raw() => array
            .segment
            .as_ref()
            .filter(|segment| segment.is_pooled())
            .map_or(0, Segment::len),
        _ => 0,
    }
}

/// True for our own arrays, released or not: Numo must not re-initialize or
/// allocate into them.
pub fn is_ours(obj: Value) -> bool {
    let raw = obj.as_raw();
    // SAFETY: each step checks the object's type before reading its struct.
    unsafe { is_narray(raw) && is_shared_type(numo::data_type_of(raw)) }
}

/// `initialize` and `initialize_copy` of `Numo::Shared::Reinitialization`,
/// which every shared array is extended with: Numo's would re-shape a shared
/// array over a mapping of the old size (and `store` would then write past
/// it), so they are refused. Extending the shared arrays themselves, rather
/// than prepending to Numo::NArray, leaves `DFloat.new` and `dup` of ordinary
/// arrays as fast as without the gem. (A clone of a shared array inherits
/// the module: it goes on to Numo's.) Marshal ignores the extension: Numo
/// arrays marshal themselves.
pub fn guard_reinitialization(
    rb_self: Value,
    args: &[Value],
) -> std::result::Result<Value, magnus::Error> {
    if is_ours(rb_self) {
        let ruby = Ruby::get().expect("called from Ruby");
        return Err(Error::Frozen("cannot re-initialize a shared array".into()).into_ruby(&ruby));
    }
    numo::call_super_with(args)
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
        .and_then(|(_, array)| array.segment.as_ref().map(Segment::len))
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
    if array.segment.is_none() && !array.data.ptr.is_null() {
        // Memory of Numo's kind (a worker's small result, moved when it was
        // handed over): kept until the object is collected, as a mapping's
        // range is, so a Numo loop still running over it cannot fault.
        if array.data.owned && array.kept.is_null() {
            array.kept = array.data.ptr;
        }
        if !array.retired.is_null() {
            // SAFETY: Numo's struct of this array must not keep the address.
            unsafe { (*array.retired).ptr = std::ptr::null_mut() };
        }
    }
    array.data.ptr = std::ptr::null_mut();
    array.freed = true;
    if let Some(segment) = array.segment.take() {
        // SAFETY: reports memory this object no longer holds.
        unsafe { rb_sys::rb_gc_adjust_memory_usage(-(segment.len() as isize) as _) };
        array.released = Some(segment.release());
    }
    true
}

/// Numo's `allocate` on `obj`, an unallocated data array of a numeric class,
/// done with shared memory from `make_segment(bytes)` instead of `xmalloc`.
/// Returns false (doing nothing) when `obj` is not such an array or when
/// `make_segment` declines with `None`.
///
/// Numo calls `allocate` from C code that keeps a pointer to the object's
/// struct and reads the data pointer from it afterwards, so that struct is
/// kept (pointing at the shared data) until the object is freed.
pub fn adopt_allocating(
    obj: Value,
    make_segment: impl FnOnce(usize) -> Option<Segment>,
) -> Result<bool> {
    let raw = obj.as_raw();
    // SAFETY: each step checks the object's type before reading its struct.
    unsafe {
        if !is_narray(raw) || is_shared_type(numo::data_type_of(raw)) {
            return Ok(false);
        }
        let old = numo::data_ptr_of(raw) as *mut NArrayData;
        if old.is_null() || (*old).base.kind != NARRAY_DATA_T || !(*old).ptr.is_null() {
            return Ok(false);
        }
        let ty = numo::data_type_of(raw);
        if (*ty).function.dmark.is_some() || (*ty).data.is_null() {
            return Ok(false); // Numo::RObject: Ruby references stay in Ruby's heap
        }
        let info = (*ty).data as *const TypeInfo;
        let Some(bytes) = numo::data_bytes(&*info, (*old).base.size) else {
            return Ok(false);
        };
        if bytes == 0 {
            return Ok(false);
        }
        let base = &(*old).base;
        let dims = if base.ndim == 0 {
            Vec::new()
        } else {
            std::slice::from_raw_parts(base.shape, base.ndim as usize).to_vec()
        };
        let plan = Plan {
            numo_type: ty,
            template: *old,
            dims,
            bytes,
        };
        let Some(segment) = make_segment(bytes) else {
            return Ok(false);
        };
        let mut array = plan.build(Some(segment), 0)?;
        (*old).ptr = array.data.ptr;
        (*old).owned = true;
        array.retired = old;
        (*(raw as *mut rb_sys::RTypedData)).type_ = shared_type_for(ty);
        numo::set_data_ptr(raw, std::ptr::null_mut());
        install(raw, array)?;
        Ok(true)
    }
}

/// In a worker: if `obj` itself is an array in this worker's pool, hands its
/// memory over for the parent (see `Segment::hand_over`) and returns the
/// file to send; `None` for any other array.
pub fn hand_over(obj: Value, bytes: usize) -> Result<Option<std::os::fd::OwnedFd>> {
    let Some((raw, array)) = segment_behind(obj) else {
        return Ok(None);
    };
    if raw != obj.as_raw() {
        return Ok(None);
    }
    match array.segment.as_mut() {
        Some(segment) if segment.is_pooled() => {
            if bytes < crate::pool::PARK_BELOW {
                return move_and_hand_over(array, bytes);
            }
            let held = segment.len();
            let fd = segment.hand_over(bytes)?;
            let shrunk = held - segment.len();
            if shrunk > 0 {
                // SAFETY: reports the part of the block this object no longer
                // holds (`install` counted the whole block).
                unsafe { rb_sys::rb_gc_adjust_memory_usage(-(shrunk as isize) as _) };
            }
            Ok(fd)
        }
        _ => Ok(None),
    }
}

/// `hand_over` for `obj`, an array made in a worker only to carry a copy of
/// a result to the parent (it is not used afterwards): a small one's mapping
/// is parked and `obj` left without memory, as after `NArray#free`; a large
/// one is handed over as `hand_over` does.
pub fn hand_over_carrier(obj: Value, bytes: usize) -> Result<Option<std::os::fd::OwnedFd>> {
    if bytes >= crate::pool::PARK_BELOW {
        return hand_over(obj, bytes);
    }
    let Some((raw, array)) = segment_behind(obj) else {
        return Ok(None);
    };
    let Some(segment) = array
        .segment
        .as_mut()
        .filter(|s| raw == obj.as_raw() && s.is_pooled())
    else {
        return Ok(None);
    };
    let held = segment.len();
    let Some(fd) = segment.park_for_hand_over(bytes)? else {
        return Ok(None);
    };
    array.leave_parked_block(std::ptr::null_mut(), held);
    array.freed = true;
    Ok(Some(fd))
}

/// `hand_over` for a small result: copies the array's data into memory of
/// Numo's kind (`xmalloc`, freed with the object as Numo frees its own),
/// points the array (and Numo's retired struct of it) there, and parks this
/// process's mapping of the block sent to the parent (`Segment::
/// park_for_hand_over`). The worker's array is then its own memory, as with
/// the parallel gem, and no page is unmapped. `None` for a block without its
/// descriptor.
fn move_and_hand_over(
    array: &mut SharedArray,
    bytes: usize,
) -> Result<Option<std::os::fd::OwnedFd>> {
    let copy = ruby_alloc::xmalloc(bytes.max(1))?;
    let Some(sent) = array.segment.as_mut() else {
        // SAFETY: just allocated, not used.
        unsafe { rb_sys::ruby_xfree(copy as *mut c_void) };
        return Ok(None);
    };
    let from = array.data.ptr;
    let offset = from as usize - sent.as_mut_ptr() as usize;
    let held = sent.len();
    // SAFETY: the array's data is `bytes` long inside its live mapping;
    // `copy` is a fresh buffer of at least `bytes`.
    unsafe { std::ptr::copy_nonoverlapping(from, copy, bytes) };
    let fd = match sent.park_for_hand_over(offset + bytes) {
        Ok(Some(fd)) => fd,
        other => {
            // SAFETY: `copy` was never handed to anything.
            unsafe { rb_sys::ruby_xfree(copy as *mut c_void) };
            return other;
        }
    };
    array.leave_parked_block(copy, held); // `xmalloc` counted the copy
    Ok(Some(fd))
}

/// What `export` needs to know of an array: its shape, the bytes of its
/// elements, its element size (`None` for Numo::Bit) and Numo's first flag
/// byte. `None` for arrays of classes that hold Ruby objects, and for data
/// arrays with no memory yet (Numo raises on reading those).
pub struct ArrayFacts {
    pub shape: Vec<usize>,
    pub bytes: usize,
    pub element_bytes: Option<usize>,
    pub flags: u8,
}

pub fn export_facts(obj: Value) -> Option<ArrayFacts> {
    let raw = obj.as_raw();
    // SAFETY: each step checks the object's type before reading its struct.
    unsafe {
        if !is_narray(raw) {
            return None;
        }
        let na = numo::data_ptr_of(raw) as *const NArrayData;
        if na.is_null() {
            return None;
        }
        let base = &(*na).base;
        // A view's type is numo-narray's view type for every class: the
        // element description is on the type of the array it looks into.
        let elements_of = if base.kind == NARRAY_VIEW_T {
            (*(na as *const NArrayView)).data
        } else {
            raw
        };
        if !is_narray(elements_of) {
            return None;
        }
        let ty = numo::data_type_of(elements_of);
        if (*ty).data.is_null() || (*ty).function.dmark.is_some() {
            return None; // Numo::RObject: Ruby references, not bytes
        }
        if base.kind == NARRAY_DATA_T && (*na).ptr.is_null() && base.size > 0 {
            return None;
        }
        let info = &*((*ty).data as *const TypeInfo);
        let shape = if base.ndim == 0 {
            Vec::new()
        } else {
            std::slice::from_raw_parts(base.shape, base.ndim as usize).to_vec()
        };
        Some(ArrayFacts {
            bytes: numo::data_bytes(info, base.size)?,
            element_bytes: (!info.packs_bits()).then_some(info.element_bytes as usize),
            flags: base.flag[0],
            shape,
        })
    }
}

/// Where a shared array (not a view) starts in its segment.
pub struct Location {
    pub serial: u64,
    pub creator: i32,
    pub offset: usize,
    /// Bytes of the segment from the array's data to its end.
    pub room: usize,
    /// Whether its memory is shared and writable (not read-only, not
    /// copy-on-write), so that another process's mapping holds its values.
    pub shareable: bool,
}

/// `obj`'s location, when `obj` is itself a shared array with memory.
pub fn location(obj: Value) -> Option<Location> {
    let (raw, array) = segment_behind(obj)?;
    if raw != obj.as_raw() {
        return None;
    }
    let data = array.data.ptr;
    let segment = array.segment.as_mut()?;
    // SAFETY: data points into the segment.
    let offset = unsafe { data.offset_from(segment.as_mut_ptr()) } as usize;
    Some(Location {
        serial: segment.serial(),
        creator: segment.creator_pid(),
        offset,
        room: segment.len() - offset,
        shareable: segment.access().is_shared_writable() && !segment.is_pooled(),
    })
}

/// The data of `obj` when it is a Numo data array (not a view) of a class
/// with whole-byte elements, whose memory is allocated: every byte of it.
pub fn data_bytes_of<'a>(obj: Value) -> Option<&'a [u8]> {
    let raw = obj.as_raw();
    // SAFETY: each step checks the object's type before reading its struct;
    // the slice is read before any Ruby code runs.
    unsafe {
        if !is_narray(raw) {
            return None;
        }
        let na = numo::data_ptr_of(raw) as *const NArrayData;
        let info = (*numo::data_type_of(raw)).data as *const TypeInfo;
        if na.is_null() || info.is_null() || (*na).base.kind != NARRAY_DATA_T || (*na).ptr.is_null()
        {
            return None;
        }
        if (*info).packs_bits() {
            return None;
        }
        let bytes = numo::data_bytes(&*info, (*na).base.size)?;
        Some(std::slice::from_raw_parts((*na).ptr, bytes))
    }
}

/// A Numo view of a shared array, as read for passing it by reference: the
/// segment and byte range of the array it looks into, and its own geometry.
pub struct ViewOf {
    pub serial: u64,
    pub creator: i32,
    pub shareable: bool,
    /// Where the viewed array's data starts in its segment, and its size.
    pub data_offset: usize,
    pub data_bytes: usize,
    /// The view's `offset` and one step per dimension (see `numo::Step`).
    pub offset: usize,
    pub steps: Vec<Step>,
}

/// `obj` read as a view of a shared array; `None` when `obj` is not a view,
/// looks into an ordinary array or a released one, or has no dimensions.
pub fn view_of(obj: Value) -> Option<ViewOf> {
    let (raw, array) = segment_behind(obj)?;
    if raw == obj.as_raw() {
        return None;
    }
    // SAFETY: obj is a Numo view (shared_base read its type tag), whose
    // shape and stridx have ndim entries.
    unsafe {
        let info = (*numo::data_type_of(raw)).data as *const TypeInfo;
        let data_bytes = numo::data_bytes(&*info, array.data.base.size)?;
        let data = array.data.ptr;
        let segment = array.segment.as_mut()?;
        let data_offset = data.offset_from(segment.as_mut_ptr()) as usize;
        let view = &*(numo::data_ptr_of(obj.as_raw()) as *const NArrayView);
        let ndim = view.base.ndim as usize;
        if ndim == 0 || view.stridx.is_null() || view.base.shape.is_null() {
            return None;
        }
        let dims = std::slice::from_raw_parts(view.base.shape, ndim);
        let steps = dims
            .iter()
            .enumerate()
            .map(|(i, &len)| Step::decode(*view.stridx.add(i), len))
            .collect();
        Some(ViewOf {
            serial: segment.serial(),
            creator: segment.creator_pid(),
            shareable: segment.access().is_shared_writable() && !segment.is_pooled(),
            data_offset,
            data_bytes,
            offset: view.offset,
            steps,
        })
    }
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
    let Some(segment) = array.segment.as_mut().filter(|_| raw == obj.as_raw()) else {
        return false;
    };
    let start = segment.as_mut_ptr() as usize;
    let end = start + segment.len();
    let Some(from) = data.checked_add(offset).filter(|&f| f >= start) else {
        return false;
    };
    let Some(to) = from.checked_add(len).filter(|&t| t <= end) else {
        return false;
    };
    let page = crate::segment::page_size();
    let (first, last) = (from / page * page, to.div_ceil(page) * page);
    // SAFETY: a range of our own live mapping; populating has no other effect.
    unsafe { crate::segment::populate(first, last.min(end) - first) }
}

/// `NArray#flush`: writes the changes of a mapped file (or the file behind
/// the array a view looks into) to disk. False for ordinary arrays.
pub fn flush(obj: Value) -> Result<bool> {
    let Some((_, array)) = segment_behind(obj) else {
        return Ok(false);
    };
    if let Some(segment) = array.segment.as_ref() {
        segment.flush()?;
    }
    Ok(true)
}

/// `Numo::Shared::Native.load_numo_data(array, data)` from
/// `NArray#marshal_load`, for Numo's own marshal data (`[1, shape, flags,
/// bytes]`) of a numeric class: fills `array` with a copy of the bytes, and
/// returns it; nil for anything else (Numo then loads it).
///
/// Numo would point the array at the String's buffer (and keep the String).
/// Since Ruby 3.2 a short String's bytes live inside its object, which
/// `GC.compact` moves: the array then reads whatever takes that place.
/// Copying costs one small memcpy and no object more.
pub fn load_numo_data(obj: Value, data: Value) -> Result<Option<Value>> {
    let raw = data.as_raw();
    // SAFETY: each step checks the type of what it reads; nothing here calls
    // Ruby code or allocates before the bytes are copied.
    let (dims, flags, bytes) = unsafe {
        if !rb_sys::RB_TYPE_P(raw, rb_sys::ruby_value_type::RUBY_T_ARRAY)
            || rb_sys::RARRAY_LEN(raw) != 4
            || rb_sys::rb_ary_entry(raw, 0) != rb_sys::rb_int2inum(1)
        {
            return Ok(None);
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
            return Ok(None);
        }
        let mut dims = Vec::new();
        for i in 0..rb_sys::RARRAY_LEN(shape) {
            let dim = rb_sys::rb_ary_entry(shape, i);
            if !rb_sys::FIXNUM_P(dim) || rb_sys::rb_num2long(dim) < 0 {
                return Ok(None);
            }
            dims.push(rb_sys::rb_num2long(dim) as usize);
        }
        let flags = rb_sys::rb_num2long(flags);
        let string = RString::from_value(Value::from_raw(binary)).expect("checked a String");
        (dims, flags, string.as_slice().to_vec())
    };
    // SAFETY: the type is read only of a typed-data object.
    let ty_marks = unsafe {
        numo::is_typed_data(obj.as_raw())
            && (*numo::data_type_of(obj.as_raw())).function.dmark.is_some()
    };
    let Ok(flags) = u8::try_from(flags) else {
        return Ok(None);
    };
    if ty_marks || flags & numo::FLAG_BYTE_SWAPPED != 0 {
        return Ok(None); // Numo::RObject, or data Numo turns to the host's order
    }
    let Ok(plan) = Plan::for_object(obj, dims, flags) else {
        return Ok(None);
    };
    if bytes.len() < plan.bytes || plan.fresh_struct(obj.as_raw()).is_err() {
        return Ok(None); // for Numo to refuse in its own words
    }
    plan.fill(obj, &bytes[..plan.bytes]).map(Some)
}
