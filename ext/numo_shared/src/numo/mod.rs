//! Numo's structs and Ruby's, and shared memory wrapped as Numo arrays:
//! checked against the running Ruby and numo-narray at load, made, guarded,
//! freed, read for passing on, and rebuilt as views. Uses `memory`; knows
//! nothing of Numo::Parallel.

pub mod facts;
pub mod guards;
pub mod installed;
pub mod layout;
pub mod marshal;
pub mod nogvl;
pub mod plan;
pub mod ruby_alloc;
pub mod shape;
pub mod shared_array;
pub mod typed_data;
pub mod view;
