//! Turning a Ruby shape (`[2, 3, 3]`) into dimensions, with every check that
//! numo-narray itself skips: it multiplies sizes without overflow checks.

use magnus::{prelude::*, Integer, RArray, Value};

use crate::error::{Error, Result};

/// numo-narray's `NA_MAX_DIMENSION`: `sizeof(VALUE) * 8 - 2`.
pub const MAX_DIMENSIONS: usize = std::mem::size_of::<usize>() * 8 - 2;

/// The dimensions of `shape` and their product, or a clear error.
pub fn dimensions(shape: RArray) -> Result<(Vec<usize>, usize)> {
    if shape.len() > MAX_DIMENSIONS {
        return Err(Error::Argument(format!(
            "a shape has at most {MAX_DIMENSIONS} dimensions, got {}",
            shape.len()
        )));
    }
    let mut dims = Vec::with_capacity(shape.len());
    let mut elements: usize = 1;
    for (i, value) in shape.into_iter().enumerate() {
        let dim = dimension(i, value)?;
        elements = elements.checked_mul(dim).ok_or_else(|| {
            Error::Argument(format!(
                "shape {} has more elements than can be addressed",
                describe(shape)
            ))
        })?;
        dims.push(dim);
    }
    Ok((dims, elements))
}

fn dimension(index: usize, value: Value) -> Result<usize> {
    let int = Integer::from_value(value).ok_or_else(|| {
        Error::Argument(format!(
            "dimension {index} of the shape must be an Integer, got {} ({})",
            inspect(value),
            unsafe { value.classname() }
        ))
    })?;
    let n = int.to_i64().map_err(|_| {
        Error::Argument(format!(
            "dimension {index} of the shape is too large: {}",
            inspect(value)
        ))
    })?;
    if n < 0 {
        return Err(Error::Argument(format!(
            "dimension {index} of the shape is negative: {n}"
        )));
    }
    usize::try_from(n).map_err(|_| Error::Argument(format!("dimension {index} is too large: {n}")))
}

pub fn describe(shape: RArray) -> String {
    inspect(shape.as_value())
}

fn inspect(value: Value) -> String {
    value.inspect()
}
