//! Ruby allocations made from Rust, protected: when one fails (NoMemoryError,
//! or a GC that raises), Ruby's exception comes back as an `Err` instead of
//! a `longjmp` through Rust frames that own memory, mappings or locks.

use magnus::{rb_sys::FromRawValue, RString, Value};
use rb_sys::{size_t, VALUE};

use crate::error::{Error, Result};

/// `rb_protect` around `f`, whose result is a pointer-sized value.
fn protect(f: impl FnOnce() -> VALUE) -> Result<VALUE> {
    magnus::rb_sys::protect(f).map_err(Error::Ruby)
}

/// `ruby_xmalloc2(count, size)`: memory Numo frees with `xfree`.
pub fn xmalloc_array<T>(count: usize) -> Result<*mut T> {
    let ptr = protect(|| unsafe {
        rb_sys::ruby_xmalloc2(count.max(1) as size_t, std::mem::size_of::<T>() as size_t) as VALUE
    })?;
    Ok(ptr as *mut T)
}

/// `ruby_xmalloc(bytes)`.
pub fn xmalloc(bytes: usize) -> Result<*mut u8> {
    let ptr = protect(|| unsafe { rb_sys::ruby_xmalloc(bytes.max(1) as size_t) as VALUE })?;
    Ok(ptr as *mut u8)
}

/// A new typed-data object of `klass` and type `ty` with a NULL pointer.
pub fn typed_object(klass: VALUE, ty: *const rb_sys::rb_data_type_t) -> Result<VALUE> {
    protect(|| unsafe { rb_sys::rb_data_typed_object_wrap(klass, std::ptr::null_mut(), ty) })
}

/// A new binary String holding a copy of `bytes`.
pub fn binary_string(bytes: &[u8]) -> Result<RString> {
    let value = protect(|| unsafe {
        rb_sys::rb_str_new(bytes.as_ptr() as *const std::ffi::c_char, bytes.len() as _)
    })?;
    // SAFETY: rb_str_new returned a String.
    Ok(RString::from_value(unsafe { Value::from_raw(value) }).expect("rb_str_new makes a String"))
}
