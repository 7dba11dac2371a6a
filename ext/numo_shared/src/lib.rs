//! numo-shared's extension: Numo::NArray arrays in `MAP_SHARED` memory.
//!
//! Layers, each using only those below it: `sys` (system calls) and `error`;
//! `memory` (mappings and files); `numo` (Numo's and Ruby's structs, shared
//! memory wrapped as Numo arrays); `ruby_api` (the constructors) and
//! `parallel` (Numo::Parallel's transport). This file only wires Ruby names
//! to the functions that do the work.

mod error;
mod memory;
mod numo;
mod parallel;
mod ruby_api;
mod sys;

use magnus::{function, method, prelude::*, rb_sys::AsRawValue, RClass, RModule, Ruby, Value};

use crate::numo::{guards, installed, layout, marshal, shared_array};
use crate::parallel::doorbell::Doorbell;
use crate::parallel::link_object::Link;
use crate::parallel::{arena::Arena, export, exporting, load, stack_rows, worker};
use crate::ruby_api::{memmap, named, new_shared};

#[magnus::init]
fn init(ruby: &Ruby) -> Result<(), magnus::Error> {
    let numo: RModule = ruby.define_module("Numo")?;
    let shared = numo.define_module("Shared")?;
    // Define the exception classes now, so that they exist before any raise.
    let _ = ruby.get_inner(&error::SHARED_ERROR);
    let _ = ruby.get_inner(&error::LAYOUT_ERROR);
    let _ = ruby.get_inner(&error::FORMAT_ERROR);

    installed::check(ruby, numo)?;
    memory::pid::watch_forks();
    exporting::register_root();

    let native = shared.define_module("Native")?;
    native.define_module_function("create", function!(new_shared::create, 2))?;
    native.define_module_function("shared?", function!(shared_array::is_shared, 1))?;
    native.define_module_function("ours?", function!(shared_array::is_ours, 1))?;
    native.define_module_function("mapped_bytes", function!(shared_array::mapped_bytes, 1))?;
    native.define_module_function("release", function!(shared_array::release, 1))?;
    native.define_module_function("flush", function!(shared_array::flush, 1))?;
    native.define_module_function("populate", function!(shared_array::populate, 3))?;
    native.define_module_function("layout_mismatch", function!(layout_mismatch, 3))?;
    native.define_module_function("typed_data_layout", function!(typed_data_layout, 0))?;
    native.define_module_function(
        "typed_data_check",
        function!(installed::recheck_typed_data, 0),
    )?;
    native.define_module_function("create_named", function!(named::create, 3))?;
    native.define_module_function("open_named", function!(named::open, 2))?;
    native.define_module_function("unlink_named", function!(named::unlink, 1))?;
    native.define_module_function("segments", function!(named::list, 0))?;
    native.define_module_function("memmap", function!(memmap::memmap, 6))?;
    native.define_module_function("load_numo_data", function!(marshal::load_numo_data, 2))?;
    // Numo::Parallel: a worker's handle for an array of its result (or nil),
    // the parent's loading of one, and where a worker's Marshal.dump is.
    native.define_module_function("export", function!(export::export, 1))?;
    native.define_module_function("load_handle", function!(load::load_handle, 2))?;
    native.define_module_function("dump_begins", function!(exporting::dump_begins, 1))?;
    native.define_module_function("dump_ends", function!(exporting::dump_ends, 0))?;
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
    arena.define_method("arm_exports", method!(arm_exports, 1))?;
    arena.define_method("disarm_exports", method!(disarm_exports, 0))?;
    arena.define_method("claims?", method!(Arena::has_claims, 0))?;
    arena.define_method("claim_item", method!(Arena::claim_item, 1))?;
    arena.define_method("items_claimed", method!(Arena::items_claimed, 0))?;
    arena.define_method("stop_claims", method!(Arena::stop_claims, 1))?;
    arena.define_method("claims_stopped", method!(Arena::claims_stopped, 0))?;
    arena.define_method("reset", method!(Arena::reset, 0))?;
    arena.define_method("pack", method!(Arena::pack, 1))?;
    arena.define_method("unpack", method!(Arena::unpack, 2))?;
    arena.define_method("keep_files", method!(Arena::keep_files, 1))?;

    // Numo::Parallel::Pool: what it shares with one worker.
    let link = shared.define_class("WorkerLink", ruby.class_object())?;
    link.define_singleton_method("new", function!(Link::new, 1))?;
    link.define_method("in_parent", method!(Link::in_parent, 0))?;
    link.define_method("in_worker", method!(Link::in_worker, 1))?;
    link.define_method("arm_items", method!(Link::arm_items, 1))?;
    link.define_method("forgotten", method!(Link::forgotten, 0))?;
    link.define_method("forget", method!(Link::forget, 1))?;
    link.define_method("close", method!(Link::close, 0))?;

    let bell = shared.define_class("Doorbell", ruby.class_object())?;
    bell.const_set("ON_SOCKET", parallel::doorbell::ON_SOCKET)?;
    bell.define_singleton_method("new", function!(Doorbell::new, 1))?;
    bell.define_method("ring", method!(Doorbell::ring, 3))?;
    bell.define_method("wait_bell", method!(Doorbell::wait_bell, 3))?;
    bell.define_method("message", method!(Doorbell::message, 1))?;
    bell.define_method("rung", method!(Doorbell::rung, 1))?;
    bell.define_method("answer", method!(Doorbell::answer, 3))?;
    bell.define_method("answered", method!(Doorbell::answered, 1))?;
    bell.define_method("answer_of", method!(Doorbell::answer_of, 1))?;
    bell.define_method("answers", method!(Doorbell::answers, 0))?;
    bell.define_method("wait_answers", method!(Doorbell::wait_answers, 3))?;
    bell.define_method("close", method!(Doorbell::close, 0))?;

    // Every shared array is extended with it (see numo/guards.rs).
    let reinit = shared.define_module("Reinitialization")?;
    reinit.define_private_method("initialize", method!(guards::guard_reinitialization, -1))?;
    reinit.define_private_method(
        "initialize_copy",
        method!(guards::guard_reinitialization, -1),
    )?;
    shared_array::set_reinitialization_guard(reinit.as_raw());

    let narray: RClass = numo.const_get("NArray")?;
    narray.define_method("shared?", method!(shared_array::is_shared, 0))?;
    Ok(())
}

/// `arena.arm_exports(value)` (see `parallel::worker::arm_results`).
fn arm_exports(_arena: &Arena, value: Value) {
    worker::arm_results(value.as_raw());
}

/// `arena.disarm_exports`: no dump exports until the next arming.
fn disarm_exports(_arena: &Arena) {
    exporting::arm(None);
}

/// `Numo::Shared::Native.typed_data_layout`: how this Ruby's typed-data
/// objects are read and written (see `numo/typed_data.rs`).
fn typed_data_layout() -> Option<&'static str> {
    installed::typed_data_layout()
}

/// `Numo::Shared::Native.layout_mismatch(array, shape, element_bytes)`: what
/// differs between `array`'s struct and what this extension expects of an
/// unallocated array of that shape, or nil.
fn layout_mismatch(probe: Value, shape: Vec<usize>, element_bytes: u32) -> Option<String> {
    // SAFETY: probe is a live object; the check reads only what it verified.
    unsafe { layout::layout_mismatch(probe.as_raw(), &shape, element_bytes) }
}
