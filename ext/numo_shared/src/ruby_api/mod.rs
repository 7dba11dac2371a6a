//! The constructors of shared arrays that the Ruby API calls: anonymous
//! (`new_shared`), named (`new_shared(name:)`, `open_shared`) and
//! file-backed (`memmap`).

pub mod memmap;
pub mod named;
pub mod new_shared;
