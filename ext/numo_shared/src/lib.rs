//! numo-shared's extension: Numo::NArray arrays in `MAP_SHARED` memory.
//!
//! `lib.rs` only wires Ruby names to the modules that do the work.

mod arena;
mod error;
mod file_map;
mod header;
mod named;
mod numo;
mod pid;
mod segment;
mod shape;
mod shared_array;
mod view;

use magnus::{
    function, method, prelude::*, rb_sys::AsRawValue, RArray, RClass, RModule, RString, Ruby, Value,
};

use crate::error::Error;

#[magnus::init]
fn init(ruby: &Ruby) -> Result<(), magnus::Error> {
    let numo: RModule = ruby.define_module("Numo")?;
    let shared = numo.define_module("Shared")?;
    // Define the exception classes now, so that they exist before any raise.
    let _ = ruby.get_inner(&error::SHARED_ERROR);
    let _ = ruby.get_inner(&error::LAYOUT_ERROR);
    let _ = ruby.get_inner(&error::FORMAT_ERROR);

    check_numo_layout(numo).map_err(|e| e.into_ruby(ruby))?;
    pid::watch_forks();

    let native = shared.define_module("Native")?;
    native.define_module_function("create", function!(create, 2))?;
    native.define_module_function("shared?", function!(shared_array::is_shared, 1))?;
    native.define_module_function("mapped_bytes", function!(shared_array::mapped_bytes, 1))?;
    native.define_module_function("release", function!(shared_array::release, 1))?;
    native.define_module_function("layout_mismatch", function!(layout_mismatch, 3))?;
    native.define_module_function("location", function!(location, 1))?;
    native.define_module_function("claim_reference", function!(claim_reference, 4))?;
    native.define_module_function("view_location", function!(view_location, 1))?;
    native.define_module_function("claim_view", function!(claim_view, 4))?;
    native.define_module_function("create_named", function!(create_named, 3))?;
    native.define_module_function("open_named", function!(open_named, 2))?;
    native.define_module_function("unlink_named", function!(unlink_named, 1))?;
    native.define_module_function("segments", function!(segments, 0))?;
    native.define_module_function("memmap", function!(memmap, 6))?;
    native.define_module_function("flush", function!(flush, 1))?;

    let arena = shared.define_class("Arena", ruby.class_object())?;
    arena.define_singleton_method("new", function!(arena_new, 0))?;
    arena.define_method("allocate", method!(arena_allocate, 1))?;
    arena.define_method("export_block", method!(arena_export_block, 1))?;
    arena.define_method("export_target", method!(arena_export_target, 2))?;
    arena.define_method("write_bytes", method!(arena_write_bytes, 1))?;
    arena.define_method("write_array", method!(arena_write_array, 1))?;
    arena.define_method("read_bytes", method!(arena_read_bytes, 2))?;
    arena.define_method("fill", method!(arena_fill, 4))?;
    arena.define_method("claim", method!(arena_claim, 3))?;
    arena.define_method("close", method!(arena_close, 0))?;
    arena.define_method("worker?", method!(arena::Arena::in_worker, 0))?;
    arena.define_method("owner_pid", method!(arena::Arena::owner_pid, 0))?;
    arena.define_method("id", method!(arena::Arena::id, 0))?;

    let narray: RClass = numo.const_get("NArray")?;
    narray.define_method("shared?", method!(shared_array::is_shared, 0))?;
    Ok(())
}

fn create(ruby: &Ruby, klass: RClass, shape: RArray) -> Result<Value, magnus::Error> {
    shared_array::create(ruby, klass, shape).map_err(|e| e.into_ruby(ruby))
}

fn create_named(
    ruby: &Ruby,
    klass: RClass,
    shape: RArray,
    name: String,
) -> Result<Value, magnus::Error> {
    named::create(ruby, klass, shape, name).map_err(|e| e.into_ruby(ruby))
}

fn open_named(ruby: &Ruby, name: String, readonly: bool) -> Result<Value, magnus::Error> {
    named::open(ruby, name, readonly).map_err(|e| e.into_ruby(ruby))
}

fn unlink_named(ruby: &Ruby, name: String) -> Result<(), magnus::Error> {
    named::unlink(name).map_err(|e| e.into_ruby(ruby))
}

fn segments(ruby: &Ruby) -> Result<Vec<named::SegmentRow>, magnus::Error> {
    named::list().map_err(|e| e.into_ruby(ruby))
}

fn memmap(
    ruby: &Ruby,
    klass: RClass,
    shape: Option<RArray>,
    path: String,
    mode: String,
    offset: u64,
    prefix: Option<RString>,
) -> Result<Value, magnus::Error> {
    file_map::memmap(ruby, klass, shape, path, mode, offset, prefix).map_err(|e| e.into_ruby(ruby))
}

fn flush(ruby: &Ruby, obj: Value) -> Result<bool, magnus::Error> {
    shared_array::flush(obj).map_err(|e| e.into_ruby(ruby))
}

fn arena_new(ruby: &Ruby) -> Result<arena::Arena, magnus::Error> {
    arena::Arena::new().map_err(|e| e.into_ruby(ruby))
}

fn arena_allocate(ruby: &Ruby, rb_self: &arena::Arena, obj: Value) -> Result<bool, magnus::Error> {
    rb_self.allocate(obj).map_err(|e| e.into_ruby(ruby))
}

fn arena_export_block(
    ruby: &Ruby,
    rb_self: &arena::Arena,
    obj: Value,
) -> Result<Option<u64>, magnus::Error> {
    rb_self.export_block(obj).map_err(|e| e.into_ruby(ruby))
}

fn arena_write_bytes(
    ruby: &Ruby,
    rb_self: &arena::Arena,
    bytes: RString,
) -> Result<u64, magnus::Error> {
    rb_self.write_bytes(bytes).map_err(|e| e.into_ruby(ruby))
}

fn arena_write_array(
    ruby: &Ruby,
    rb_self: &arena::Arena,
    obj: Value,
) -> Result<Option<u64>, magnus::Error> {
    rb_self.write_array(obj).map_err(|e| e.into_ruby(ruby))
}

fn arena_fill(
    ruby: &Ruby,
    rb_self: &arena::Arena,
    obj: Value,
    shape: RArray,
    offset: u64,
    len: usize,
) -> Result<Value, magnus::Error> {
    rb_self
        .fill(obj, shape, offset, len)
        .map_err(|e| e.into_ruby(ruby))
}

fn arena_read_bytes(
    ruby: &Ruby,
    rb_self: &arena::Arena,
    offset: u64,
    len: usize,
) -> Result<RString, magnus::Error> {
    arena::Arena::read_bytes(ruby, rb_self, offset, len).map_err(|e| e.into_ruby(ruby))
}

/// `Numo::Shared::Native.location(array)`: `[serial, creator_pid, offset]`
/// of a shared array or view in its segment, or nil.
fn location(obj: Value) -> Option<(u64, i32, usize)> {
    shared_array::location(obj)
}

fn claim_reference(
    ruby: &Ruby,
    obj: Value,
    shape: RArray,
    serial: u64,
    offset: usize,
) -> Result<Value, magnus::Error> {
    arena::claim_reference(obj, shape, serial, offset).map_err(|e| e.into_ruby(ruby))
}

/// `Numo::Shared::Native.view_location(array)`: the geometry of a view of a
/// shared array (see `view::location`), or nil.
fn view_location(ruby: &Ruby, obj: Value) -> Option<view::Location> {
    view::location(ruby, obj)
}

fn claim_view(
    ruby: &Ruby,
    obj: Value,
    shape: RArray,
    geometry: view::Geometry,
    tables: RString,
) -> Result<Value, magnus::Error> {
    view::claim(ruby, obj, shape, geometry, tables).map_err(|e| e.into_ruby(ruby))
}

fn arena_export_target(
    ruby: &Ruby,
    rb_self: &arena::Arena,
    klass: RClass,
    shape: RArray,
) -> Result<(u64, Value), magnus::Error> {
    arena::Arena::export_target(ruby, rb_self, klass, shape).map_err(|e| e.into_ruby(ruby))
}

fn arena_claim(
    ruby: &Ruby,
    rb_self: &arena::Arena,
    obj: Value,
    shape: RArray,
    offset: u64,
) -> Result<Value, magnus::Error> {
    rb_self
        .claim(obj, shape, offset)
        .map_err(|e| e.into_ruby(ruby))
}

fn arena_close(ruby: &Ruby, rb_self: &arena::Arena) -> Result<(), magnus::Error> {
    rb_self.close().map_err(|e| e.into_ruby(ruby))
}

/// `Numo::Shared::Native.layout_mismatch(array, shape, element_bytes)`: what
/// differs between `array`'s struct and what this extension expects of an
/// unallocated array of that shape, or nil.
fn layout_mismatch(probe: Value, shape: Vec<usize>, element_bytes: u32) -> Option<String> {
    // SAFETY: probe is a live object; the check reads only what it verified.
    unsafe { numo::layout_mismatch(probe.as_raw(), &shape, element_bytes) }
}

/// Refuses to load against a numo-narray whose version or struct layout
/// differs from the mirror in `numo.rs`, and records Numo's root data type.
fn check_numo_layout(numo_module: RModule) -> Result<(), Error> {
    let narray: RClass = numo_module.const_get("NArray").map_err(|_| {
        Error::Layout("numo-narray is not loaded; require \"numo/narray\" first".into())
    })?;
    let version: String = narray
        .const_get("VERSION")
        .map_err(|_| Error::Layout("Numo::NArray::VERSION is missing".into()))?;
    numo::check_version(&version)?;
    let dfloat: RClass = numo_module
        .const_get("DFloat")
        .map_err(|_| Error::Layout("Numo::DFloat is missing".into()))?;
    for shape in [vec![2usize, 3], vec![5], vec![]] {
        let probe: Value = dfloat
            .funcall("new", (RArray::from_vec(shape.clone()),))
            .map_err(|e| Error::Layout(format!("cannot make a probe array: {e}")))?;
        // SAFETY: probe is a live object; the check reads only what it verified.
        if let Some(problem) = unsafe { numo::layout_mismatch(probe.as_raw(), &shape, 8) } {
            return Err(Error::Layout(format!(
                "numo-narray {version} does not lay out its arrays as numo-shared expects ({problem}); \
                 shared arrays are refused to avoid corrupting memory"
            )));
        }
        // SAFETY: layout_mismatch verified that probe is typed data with a parent type.
        let root = unsafe { (*numo::data_type_of(probe.as_raw())).parent };
        shared_array::set_narray_type(root);
    }
    Ok(())
}
