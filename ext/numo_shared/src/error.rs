//! Every error the extension can raise, and the one place where each kind is
//! mapped to a Ruby exception class.

use crate::sys::Errno;
use magnus::{exception::ExceptionClass, prelude::*, value::Lazy, RModule, Ruby};

/// `Numo::Shared::Error`, the base of the gem's own exception classes.
pub static SHARED_ERROR: Lazy<ExceptionClass> =
    Lazy::new(|ruby| define_error(ruby, "Error", ruby.exception_standard_error()));

/// `Numo::Shared::LayoutError`: the installed numo-narray does not store its
/// arrays the way this extension expects, so it refuses to touch them.
pub static LAYOUT_ERROR: Lazy<ExceptionClass> =
    Lazy::new(|ruby| define_error(ruby, "LayoutError", ruby.get_inner(&SHARED_ERROR)));

/// `Numo::Shared::FormatError`: a named segment or file that does not hold
/// what it should (not made by this gem or numpy, a damaged header, a size
/// that does not match, a layout that cannot be mapped).
pub static FORMAT_ERROR: Lazy<ExceptionClass> =
    Lazy::new(|ruby| define_error(ruby, "FormatError", ruby.get_inner(&SHARED_ERROR)));

/// Defines `Numo::Shared::<name>` as a subclass of `parent`.
fn define_error(ruby: &Ruby, name: &str, parent: ExceptionClass) -> ExceptionClass {
    let numo: RModule = ruby.define_module("Numo").expect("module Numo");
    let module = numo.define_module("Shared").expect("module Numo::Shared");
    let class = module
        .define_class(name, parent.as_r_class())
        .unwrap_or_else(|e| panic!("define Numo::Shared::{name}: {e}"));
    ExceptionClass::from_value(class.as_value())
        .unwrap_or_else(|| panic!("Numo::Shared::{name} is an exception class"))
}

/// What went wrong, in terms the Ruby caller can act on.
#[derive(Debug)]
pub enum Error {
    /// A value of the wrong kind (a class that cannot be shared, a non-array).
    Type(String),
    /// A value of the right kind that is out of range (negative dimension,
    /// a shape whose byte size overflows).
    Argument(String),
    /// A system call failed; `context` says what was being attempted.
    Os { errno: Errno, context: String },
    /// The installed numo-narray does not match the struct layout we mirror.
    Layout(String),
    /// A segment or file whose contents are not what they must be.
    Format(String),
    /// A change to an array whose memory cannot change (FrozenError).
    Frozen(String),
    /// Memory for a buffer of Rust's own could not be had (NoMemoryError,
    /// instead of Rust's abort of the process).
    NoMemory(String),
    /// An exception Ruby raised in a call made from Rust (or a pending
    /// jump, such as a thread being killed), passed on as it is.
    Ruby(magnus::Error),
}

impl Error {
    pub fn os(errno: Errno, context: impl Into<String>) -> Self {
        Error::Os {
            errno,
            context: context.into(),
        }
    }

    /// The Ruby exception for this error, built now: magnus would otherwise
    /// build it while raising, and if that fails (a thread being killed makes
    /// `Class#new` return a fatal tag) it aborts the process. `Os` becomes the
    /// matching `Errno::*` class (a `SystemCallError`), with `context` in the
    /// message.
    pub fn into_ruby(self, ruby: &Ruby) -> magnus::Error {
        let (class, message) = match self {
            Error::Ruby(err) => return err,
            Error::Type(msg) => (ruby.exception_type_error(), msg),
            Error::Argument(msg) => (ruby.exception_arg_error(), msg),
            Error::Layout(msg) => (ruby.get_inner(&LAYOUT_ERROR), msg),
            Error::Format(msg) => (ruby.get_inner(&FORMAT_ERROR), msg),
            Error::Frozen(msg) => (ruby.exception_frozen_error(), msg),
            Error::NoMemory(msg) => (ruby.exception_no_mem_error(), msg),
            // SystemCallError.new picks the Errno::* class of the number and
            // builds "<strerror> - <context>".
            Error::Os { errno, context } => {
                return built(
                    ruby.exception_system_call_error()
                        .new_instance((context, errno.0)),
                )
            }
        };
        built(class.new_instance((message,)))
    }
}

/// The error to raise for an exception just built, or for the failure to
/// build it: a pending jump (a thread being killed) or an exception raised
/// while building, which magnus resumes or raises as it is.
fn built(made: std::result::Result<magnus::Exception, magnus::Error>) -> magnus::Error {
    match made {
        Ok(exception) => magnus::Error::from(exception),
        Err(err) => err,
    }
}

impl From<Error> for magnus::Error {
    fn from(err: Error) -> Self {
        let ruby = Ruby::get().expect("errors are raised on a Ruby thread");
        err.into_ruby(&ruby)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Lets the modules' functions be bound to Ruby methods as they are: magnus
/// turns an `Err` into the Ruby exception `into_ruby` names.
impl magnus::error::IntoError for Error {
    fn into_error(self, ruby: &Ruby) -> magnus::Error {
        self.into_ruby(ruby)
    }
}

/// A buffer of `len` elements, or `Error::NoMemory` naming `what` when the
/// allocation fails (Rust would abort the process).
pub fn try_vec<T>(len: usize, what: &str) -> Result<Vec<T>> {
    let mut buf = Vec::new();
    buf.try_reserve_exact(len).map_err(|_| {
        Error::NoMemory(format!(
            "failed to allocate memory for {what} ({})",
            human_bytes(len.saturating_mul(std::mem::size_of::<T>()))
        ))
    })?;
    Ok(buf)
}

/// An `std::io::Error` as an `Os` error with `context`.
pub fn io_error(err: std::io::Error, context: impl Into<String>) -> Error {
    Error::os(Errno::of(&err), context)
}

/// "8 bytes", "1.5 GiB": sizes in messages.
pub fn human_bytes(len: usize) -> String {
    const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if len < 1024 {
        return format!("{len} bytes");
    }
    let mut value = len as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {} ({len} bytes)", UNITS[unit])
}
