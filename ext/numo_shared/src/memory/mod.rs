//! Mappings and files: fd-backed mappings (segments), memfds and the limits
//! checked before one is sized, named segments in /dev/shm and their
//! headers, and files. Knows nothing of Numo or of Numo::Parallel.

pub mod file;
pub mod header;
pub mod limits;
pub mod live;
pub mod memfd;
pub mod named;
pub mod pid;
pub mod segment;
