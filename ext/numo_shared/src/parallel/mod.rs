//! What crosses between the processes of a `Numo::Parallel` call or pool:
//! the arena each call (or pool) shares with its workers, the channels that
//! carry large arrays' memfds, a pool's link to each worker (and its Ruby object), the region for
//! small arrays and for batched maps' counters, handles, when arrays are
//! exported (`exporting`) and how each one travels (`export`), the loading
//! of handles, and stack rows. Uses `numo` and `memory`.

pub mod arena;
pub mod channel;
pub mod doorbell;
pub mod export;
pub mod exporting;
pub mod handle;
pub mod link;
pub mod link_object;
pub mod load;
pub mod region;
pub mod stack_rows;
pub mod worker;
