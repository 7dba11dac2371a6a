//! The guard every shared array is extended with
//! (`Numo::Shared::Reinitialization`): Numo's `initialize` and
//! `initialize_copy` would re-shape a shared array over a mapping of the old
//! size, so they are refused.

use magnus::{Ruby, Value};
use rb_sys::VALUE;

use crate::error::Error;
use crate::numo::shared_array::is_ours;

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
    call_super_with(args)
}

/// `super(*args)` (and the block) from a method written in Rust.
fn call_super_with(args: &[magnus::Value]) -> std::result::Result<magnus::Value, magnus::Error> {
    use magnus::rb_sys::AsRawValue;
    let mut raw = [0 as VALUE; 4];
    let heap: Vec<VALUE>;
    let argv: &[VALUE] = if args.len() <= raw.len() {
        for (slot, arg) in raw.iter_mut().zip(args) {
            *slot = arg.as_raw();
        }
        &raw[..args.len()]
    } else {
        heap = args.iter().map(|a| a.as_raw()).collect();
        &heap
    };
    // SAFETY: called from a method body; rb_call_super uses its frame.
    let value = magnus::rb_sys::protect(|| unsafe {
        rb_sys::rb_call_super(argv.len() as std::ffi::c_int, argv.as_ptr())
    })?;
    // SAFETY: a live value returned by the method.
    Ok(unsafe { <magnus::Value as magnus::rb_sys::FromRawValue>::from_raw(value) })
}
