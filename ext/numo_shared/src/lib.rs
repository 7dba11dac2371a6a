//! numo-shared's extension: Numo::NArray arrays in `MAP_SHARED` memory.
//!
//! `lib.rs` only wires Ruby names to the modules that do the work.

mod arena;
mod error;
mod file_map;
mod handle;
mod header;
mod memfd;
mod named;
mod numo;
mod pid;
mod pool;
mod region;
mod ruby_alloc;
mod segment;
mod shape;
mod shared_array;
mod stack_rows;
mod sys;
mod view;
mod worker;

use magnus::{function, method, prelude::*, rb_sys::AsRawValue, RClass, RModule, Ruby, Value};

use crate::arena::Arena;
use crate::error::Error;

#[magnus::init]
fn init(ruby: &Ruby) -> Result<(), magnus::Error> {
    let numo: RModule = ruby.define_module("Numo")?;
    let shared = numo.define_module("Shared")?;
    // Define the exception classes now, so that they exist before any raise.
    let _ = ruby.get_inner(&error::SHARED_ERROR);
    let _ = ruby.get_inner(&error::LAYOUT_ERROR);
    let _ = ruby.get_inner(&error::FORMAT_ERROR);

    check_numo_layout(ruby, numo).map_err(|e| e.into_ruby(ruby))?;
    pid::watch_forks();
    pool::watch_forks();

    let native = shared.define_module("Native")?;
    native.define_module_function("create", function!(shared_array::create, 2))?;
    native.define_module_function("shared?", function!(shared_array::is_shared, 1))?;
    native.define_module_function("ours?", function!(shared_array::is_ours, 1))?;
    native.define_module_function("mapped_bytes", function!(shared_array::mapped_bytes, 1))?;
    native.define_module_function("release", function!(shared_array::release, 1))?;
    native.define_module_function("layout_mismatch", function!(layout_mismatch, 3))?;
    native.define_module_function("create_named", function!(named::create, 3))?;
    native.define_module_function("open_named", function!(named::open, 2))?;
    native.define_module_function("unlink_named", function!(named::unlink, 1))?;
    native.define_module_function("segments", function!(named::list, 0))?;
    native.define_module_function("memmap", function!(file_map::memmap, 6))?;
    native.define_module_function("flush", function!(shared_array::flush, 1))?;
    native.define_module_function("populate", function!(shared_array::populate, 3))?;
    native.define_module_function("backed?", function!(shared_array::is_backed, 1))?;
    native.define_module_function("pooled_bytes", function!(shared_array::pooled_bytes, 1))?;
    native.define_module_function("activate_pool", function!(pool::activate_in_child, 1))?;
    // Numo::Parallel: a worker's handle for an array of its result (or nil),
    // and the parent's loading of one.
    native.define_module_function("export", function!(worker::export, 1))?;
    native.define_module_function("load_handle", function!(arena::load_handle, 2))?;
    native.define_module_function("load_numo_data", function!(shared_array::load_numo_data, 2))?;
    native.define_module_function("pool_stats", function!(pool::stats, 0))?;
    // Numo::Parallel.stack: its target, and a worker's store of a row.
    native.define_module_function(
        "create_stack_target",
        function!(stack_rows::create_target, 2),
    )?;
    native.define_module_function(
        "release_stack_target",
        function!(stack_rows::release_target, 1),
    )?;
    native.define_module_function("store_stack_row", function!(stack_rows::store_row, 4))?;

    let arena = shared.define_class("Arena", ruby.class_object())?;
    arena.define_singleton_method("new", function!(Arena::new, 0))?;
    arena.define_method("close", method!(Arena::close, 0))?;
    arena.define_method("owner_pid", method!(Arena::owner_pid, 0))?;
    arena.define_method("token", method!(Arena::token, 0))?;
    arena.define_method("enter_worker", method!(worker::enter, 0))?;
    arena.define_method("expect_exports", method!(expect_exports, 1))?;
    arena.define_method("claims?", method!(Arena::has_claims, 0))?;
    arena.define_method("claim_item", method!(Arena::claim_item, 1))?;
    arena.define_method("items_claimed", method!(Arena::items_claimed, 0))?;
    arena.define_method("stop_claims", method!(Arena::stop_claims, 1))?;
    arena.define_method("claims_stopped", method!(Arena::claims_stopped, 0))?;

    // Every shared array is extended with it (see shared_array::install).
    let reinit = shared.define_module("Reinitialization")?;
    reinit.define_private_method(
        "initialize",
        method!(shared_array::guard_reinitialization, -1),
    )?;
    reinit.define_private_method(
        "initialize_copy",
        method!(shared_array::guard_reinitialization, -1),
    )?;
    shared_array::set_reinitialization_guard(reinit.as_raw());

    // Prepended (empty) to Numo's numeric classes at load; its `allocate`
    // is defined in worker processes only (see worker::arm_allocation).
    shared.define_module("WorkerAllocation")?;

    let narray: RClass = numo.const_get("NArray")?;
    narray.define_method("shared?", method!(shared_array::is_shared, 0))?;
    Ok(())
}

/// `arena.expect_exports(result)`.
fn expect_exports(_arena: &Arena, result: Value) {
    worker::expect_exports(result);
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
fn check_numo_layout(ruby: &Ruby, numo_module: RModule) -> Result<(), Error> {
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
            .funcall("new", (ruby.ary_from_vec(shape.clone()),))
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
