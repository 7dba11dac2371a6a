//! The checks run once, at load, before any array is touched: the running
//! Ruby lays out typed-data objects as `typed_data` expects, and the
//! installed numo-narray lays out its arrays as `layout` mirrors them.

use magnus::{prelude::*, rb_sys::AsRawValue, RClass, RModule, Ruby, Value};

use crate::error::{Error, Result};
use crate::numo::layout;
use crate::numo::shared_array::{self, narray_type, shared_type_for};
use crate::numo::typed_data;

/// The typed-data layout chosen for this Ruby (for `Native.typed_data_layout`).
static LAYOUT_NAME: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// What `typed_data` was set up for, once `check` ran.
pub fn typed_data_layout() -> Option<&'static str> {
    LAYOUT_NAME.get().copied()
}

/// The check of `typed_data` that ran at load, run again on a fresh probe:
/// nil when the module reads and writes what Ruby does, else what differs.
pub fn recheck_typed_data(ruby: &Ruby) -> Option<String> {
    let numo: RModule = ruby.class_object().const_get("Numo").ok()?;
    check_typed_data(ruby, numo).err()
}

/// Refuses to load on a Ruby whose typed-data layout is unknown (a
/// `LoadError` naming its version), and against a numo-narray whose version
/// or struct layout differs from the mirror in `layout.rs`
/// (`Numo::Shared::LayoutError`); records Numo's root data type.
pub fn check(ruby: &Ruby, numo_module: RModule) -> std::result::Result<(), magnus::Error> {
    let version: String = ruby
        .class_object()
        .const_get("RUBY_VERSION")
        .map_err(|e| load_error(ruby, format!("cannot read RUBY_VERSION: {e}")))?;
    let name = typed_data::select(&version).map_err(|message| load_error(ruby, message))?;
    check_numo(ruby, numo_module).map_err(|e| e.into_ruby(ruby))?;
    check_typed_data(ruby, numo_module)
        .map_err(|problem| load_error(ruby, format!("on Ruby {version}, {problem}")))?;
    let _ = LAYOUT_NAME.set(name);
    Ok(())
}

fn load_error(ruby: &Ruby, message: String) -> magnus::Error {
    magnus::Error::new(ruby.exception_load_error(), message)
}

fn check_numo(ruby: &Ruby, numo_module: RModule) -> Result<()> {
    let narray: RClass = numo_module.const_get("NArray").map_err(|_| {
        Error::Layout("numo-narray is not loaded; require \"numo/narray\" first".into())
    })?;
    let version: String = narray
        .const_get("VERSION")
        .map_err(|_| Error::Layout("Numo::NArray::VERSION is missing".into()))?;
    layout::check_version(&version)?;
    let dfloat = dfloat(numo_module)?;
    for shape in [vec![2usize, 3], vec![5], vec![]] {
        let probe: Value = dfloat
            .funcall("new", (ruby.ary_from_vec(shape.clone()),))
            .map_err(|e| Error::Layout(format!("cannot make a probe array: {e}")))?;
        // SAFETY: probe is a live object; the check reads only what it verified.
        if let Some(problem) = unsafe { layout::layout_mismatch(probe.as_raw(), &shape, 8) } {
            return Err(Error::Layout(format!(
                "numo-narray {version} does not lay out its arrays as numo-shared expects ({problem}); \
                 shared arrays are refused to avoid corrupting memory"
            )));
        }
        // SAFETY: layout_mismatch verified that probe is typed data with a parent type.
        let root = unsafe { (*typed_data::type_of(probe.as_raw())).parent };
        shared_array::set_narray_type(root);
    }
    Ok(())
}

fn dfloat(numo_module: RModule) -> Result<RClass> {
    numo_module
        .const_get("DFloat")
        .map_err(|_| Error::Layout("Numo::DFloat is missing".into()))
}

/// `typed_data::check_on` on a fresh DFloat array, with our type for
/// DFloat as the type written.
fn check_typed_data(ruby: &Ruby, numo_module: RModule) -> std::result::Result<(), String> {
    let dfloat = dfloat(numo_module).map_err(|e| format!("{e:?}"))?;
    let probe: Value = dfloat
        .funcall("new", (ruby.ary_from_vec(vec![2usize]),))
        .map_err(|e| format!("cannot make a probe array: {e}"))?;
    let raw = probe.as_raw();
    // SAFETY: probe is a live object.
    if !unsafe { typed_data::is_typed(raw) } {
        return Err("a Numo array does not read as typed data".into());
    }
    // SAFETY: probe is a fresh DFloat that nothing else holds; its type is
    // DFloat's, whose parent is Numo's root type; ours for DFloat has
    // DFloat's as its parent. No allocation happens during the check.
    let problem = unsafe {
        let own = typed_data::type_of(raw);
        typed_data::check_on(raw, own, shared_type_for(own), narray_type())
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(format!(
            "numo-shared cannot read or write typed-data objects as this Ruby lays them out \
             ({problem}); shared arrays are refused"
        )),
    }
}
