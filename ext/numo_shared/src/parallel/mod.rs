//! What crosses between the processes of a `Numo::Parallel` call: the
//! arena each call shares with its workers, the channel that carries large
//! results' memfds, the region for small ones and for batched maps'
//! counters, handles, how each array of a result travels (`export`), the
//! parent's loading of handles, and stack rows. Uses `numo` and `memory`.

pub mod arena;
pub mod channel;
pub mod export;
pub mod handle;
pub mod load;
pub mod region;
pub mod stack_rows;
pub mod worker;
