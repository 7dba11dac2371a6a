//! Ruby's typed-data objects (`struct RTypedData`), the one place that reads
//! or writes them. Numo's arrays are typed data; a shared array is one whose
//! type and data pointer are ours, so the extension reads and, when an
//! array adopts shared memory, writes both fields.
//!
//! The struct's layout depends on the Ruby version:
//! - Ruby 3.1 to 3.4: `{RBasic basic; const rb_data_type_t *type;
//!   VALUE typed_flag; void *data}`; `typed_flag` is 1 for typed data (3.3
//!   and 3.4 add bit 2 for data embedded in the object).
//! - Ruby 4.0 (from rb-sys 0.9.130's bindings of its headers): `{RBasic
//!   basic; VALUE fields_obj; VALUE type; void *data}`; `type` holds the
//!   `rb_data_type_t *` with bit 0 set for embedded data, and typed data is
//!   marked by `RUBY_FL_USERPRIV0` in the flags.
//!
//! Which one applies is decided once, at load, from the running Ruby's
//! version (`select`), then checked on a probe object against Ruby's own
//! exported functions (`rb_check_typeddata`, `rb_typeddata_is_kind_of`).
//! Any other Ruby, or a failed check, refuses to load with a `LoadError`
//! naming the version: the extension never guesses a field.

use std::ffi::c_void;
use std::sync::atomic::{AtomicU8, Ordering};

use rb_sys::{rb_data_type_t, VALUE};

/// `struct RTypedData` of Ruby 3.1 to 3.4.
#[repr(C)]
struct Classic {
    flags: VALUE,
    klass: VALUE,
    type_: *const rb_data_type_t,
    typed_flag: VALUE,
    data: *mut c_void,
}

/// `struct RTypedData` of Ruby 4.0.
#[repr(C)]
struct WithFields {
    flags: VALUE,
    klass: VALUE,
    fields_obj: VALUE,
    type_: VALUE,
    data: *mut c_void,
}

/// `RUBY_FL_USERPRIV0` (`1 << 6` in Ruby 4.0's `fl_type.h`), which Ruby 4.0
/// sets on typed data (`RUBY_TYPED_FL_IS_TYPED_DATA`).
const FL_USERPRIV0: VALUE = 1 << 6;

const UNKNOWN: u8 = 0;
const CLASSIC: u8 = 1;
const WITH_FIELDS: u8 = 2;

static LAYOUT: AtomicU8 = AtomicU8::new(UNKNOWN);

/// The layout of the running Ruby, by its `RUBY_VERSION`, or the error to
/// raise (as a `LoadError`).
pub fn select(ruby_version: &str) -> Result<&'static str, String> {
    let mut parts = ruby_version.split('.').map(|p| p.parse::<u32>().ok());
    let (major, minor) = match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor),
        _ => return Err(format!("cannot read the Ruby version {ruby_version:?}")),
    };
    let (layout, name) = match (major, minor) {
        (3, 1..=4) => (CLASSIC, "Ruby 3.1-3.4 (type, typed_flag, data)"),
        (4, 0) => (WITH_FIELDS, "Ruby 4.0 (fields_obj, flagged type, data)"),
        _ => {
            return Err(format!(
                "numo-shared knows how Ruby 3.1 to 4.0 lay out typed-data objects, \
                 and this is Ruby {ruby_version}: shared arrays are refused rather than \
                 written through a layout that may differ"
            ))
        }
    };
    LAYOUT.store(layout, Ordering::Release);
    Ok(name)
}

fn layout() -> u8 {
    LAYOUT.load(Ordering::Acquire)
}

/// True when `obj` is a typed-data object (of any class) whose data is not
/// embedded in the object (Numo's never is).
///
/// # Safety
/// `obj` must be a live Ruby object.
pub unsafe fn is_typed(obj: VALUE) -> bool {
    if !rb_sys::RB_TYPE_P(obj, rb_sys::ruby_value_type::RUBY_T_DATA) {
        return false;
    }
    match layout() {
        CLASSIC => (*(obj as *const Classic)).typed_flag == 1,
        WITH_FIELDS => {
            let data = &*(obj as *const WithFields);
            data.flags & FL_USERPRIV0 != 0 && data.type_ & 1 == 0
        }
        _ => false,
    }
}

/// The `rb_data_type_t` of a typed-data object.
///
/// # Safety
/// `obj` must be a live object for which `is_typed` holds.
pub unsafe fn type_of(obj: VALUE) -> *const rb_data_type_t {
    match layout() {
        WITH_FIELDS => ((*(obj as *const WithFields)).type_ & !1) as *const rb_data_type_t,
        _ => (*(obj as *const Classic)).type_,
    }
}

/// The wrapped pointer of a typed-data object.
///
/// # Safety
/// `obj` must be a live object for which `is_typed` holds.
pub unsafe fn data_of(obj: VALUE) -> *mut c_void {
    match layout() {
        WITH_FIELDS => (*(obj as *const WithFields)).data,
        _ => (*(obj as *const Classic)).data,
    }
}

/// Sets the wrapped pointer of a typed-data object.
///
/// # Safety
/// `obj` must be a live object for which `is_typed` holds, and `ptr` a
/// pointer its type's free function frees (or NULL).
pub unsafe fn set_data(obj: VALUE, ptr: *mut c_void) {
    match layout() {
        WITH_FIELDS => (*(obj as *mut WithFields)).data = ptr,
        _ => (*(obj as *mut Classic)).data = ptr,
    }
}

/// Gives a typed-data object another type (its data not embedded).
///
/// # Safety
/// `obj` must be a live object for which `is_typed` holds, and its data must
/// be what `ty`'s functions expect.
pub unsafe fn set_type(obj: VALUE, ty: *const rb_data_type_t) {
    match layout() {
        WITH_FIELDS => (*(obj as *mut WithFields)).type_ = ty as VALUE,
        _ => (*(obj as *mut Classic)).type_ = ty,
    }
}

/// Checks the selected layout against Ruby's own functions on `probe`, a
/// fresh typed-data object whose type is `own` (a type with `parent` as its
/// parent, or `parent` itself): what this module reads must be what Ruby
/// reads, and a type and pointer this module writes must be what Ruby then
/// reads. `probe` is left as it was. `None` when all agree, else what did not.
///
/// # Safety
/// `probe` must be a live typed-data object of type `own` that nothing else
/// uses during the check; `other` a live type whose parent is `parent`, and
/// `own` one whose parent chain reaches `parent`.
pub unsafe fn check_on(
    probe: VALUE,
    own: *const rb_data_type_t,
    other: *const rb_data_type_t,
    parent: *const rb_data_type_t,
) -> Option<String> {
    if !is_typed(probe) {
        return Some("a Numo array does not read as typed data".into());
    }
    if type_of(probe) != own {
        return Some("the type read is not the array's own".into());
    }
    if rb_sys::rb_typeddata_is_kind_of(probe, parent) == 0 {
        return Some("Ruby does not see the array as a kind of Numo::NArray".into());
    }
    let data = data_of(probe);
    // rb_check_typeddata returns Ruby's own reading of the data pointer; it
    // raises only for a type mismatch, which the line above ruled out.
    if rb_sys::rb_check_typeddata(probe, own) != data {
        return Some("the data pointer read is not the one Ruby reads".into());
    }
    let marker = 0x5eed_0000usize as *mut c_void;
    set_type(probe, other);
    set_data(probe, marker);
    let seen = rb_sys::rb_typeddata_is_kind_of(probe, other) != 0
        && type_of(probe) == other
        && rb_sys::rb_check_typeddata(probe, other) == marker;
    set_type(probe, own);
    set_data(probe, data);
    (!seen).then(|| "a type and pointer written are not what Ruby reads back".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_ruby_3_1_to_4_0_and_refuses_the_others_naming_them() {
        for version in ["3.1.2", "3.2.9", "3.3.8", "3.4.11"] {
            assert_eq!(select(version), Ok("Ruby 3.1-3.4 (type, typed_flag, data)"));
            assert_eq!(layout(), CLASSIC);
        }
        assert_eq!(
            select("4.0.0"),
            Ok("Ruby 4.0 (fields_obj, flagged type, data)")
        );
        assert_eq!(layout(), WITH_FIELDS);
        for version in ["3.0.7", "4.1.0", "5.0.0"] {
            let refused = select(version).unwrap_err();
            assert!(
                refused.contains(&format!("this is Ruby {version}")),
                "{refused}"
            );
        }
        assert!(select("three").is_err());
    }
}
