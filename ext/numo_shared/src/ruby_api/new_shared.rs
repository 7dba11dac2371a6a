//! `Numo::DFloat.new_shared(2, 3)`: an array in a fresh anonymous memfd.

use magnus::{RArray, RClass, Ruby, Value};

use crate::error::Result;
use crate::memory::live;
use crate::memory::segment::Segment;
use crate::numo::plan;

/// A zero-filled array of `klass` and `shape` in a fresh anonymous shared
/// segment (no memory for zero bytes).
pub fn create(ruby: &Ruby, klass: RClass, shape: RArray) -> Result<Value> {
    let plan = plan::plan(ruby, klass, shape)?;
    let mapping = if plan.bytes == 0 {
        None
    } else {
        let (segment, fd) = Segment::anonymous(plan.bytes)?;
        Some(live::share(segment, live::keep(fd).map(|kept| (kept, 0))))
    };
    plan.wrap(klass, mapping)
}
