//! What a Numo::Parallel worker marshals instead of an NArray's data: a
//! handle of a few dozen bytes naming where the data is, and how the parent
//! reads it back.
//!
//! A handle is a binary String: `MAGIC`, then little-endian fields: the
//! arena's token (random, so that only what that arena's workers issued is
//! accepted), a kind, Numo's first flag byte (byte order, column-major),
//! the number of dimensions, the shape, and where the data is:
//! - `Inline`: the bytes of a tiny result (no larger than a handle), in the
//!   handle itself;
//! - `Bytes`: a small result packed in the arena's shared region, copied out;
//! - `Block`: a memfd the worker sent over the arena's socket, which becomes
//!   the result's own memory;
//! - `Reference`: memory the parent already has (a shared array made before
//!   the map, or a contiguous view of one), mapped again;
//! - `View`: any other view of such an array, rebuilt over a second mapping
//!   of the array it looks into (index tables packed in the region).

use crate::error::{Error, Result};
use crate::numo::view::Geometry;

/// Starts every handle. Numo's own marshal data is an Array, never a String.
pub const MAGIC: &[u8; 8] = b"NUMOSHR\x02";

const BYTES: u8 = 1;
const BLOCK: u8 = 2;
const REFERENCE: u8 = 3;
const VIEW: u8 = 4;
const INLINE: u8 = 5;

/// Where a result's data is.
#[derive(Debug, PartialEq, Eq)]
pub enum Place {
    Inline {
        bytes: Vec<u8>,
    },
    Bytes {
        offset: u64,
        len: u64,
    },
    Block {
        id: u64,
    },
    Reference {
        serial: u64,
        offset: u64,
    },
    View {
        geometry: Geometry,
        /// Where the view's index tables are packed in the region.
        tables_offset: u64,
        tables_len: u64,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub struct Handle {
    pub token: u64,
    pub flags: u8,
    pub shape: Vec<usize>,
    pub place: Place,
}

impl Handle {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + 8 * self.shape.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.token.to_le_bytes());
        let kind = match self.place {
            Place::Inline { .. } => INLINE,
            Place::Bytes { .. } => BYTES,
            Place::Block { .. } => BLOCK,
            Place::Reference { .. } => REFERENCE,
            Place::View { .. } => VIEW,
        };
        out.extend_from_slice(&[kind, self.flags, self.shape.len() as u8]);
        let mut put = |n: u64| out.extend_from_slice(&n.to_le_bytes());
        for &dim in &self.shape {
            put(dim as u64);
        }
        match &self.place {
            Place::Inline { bytes } => {
                put(bytes.len() as u64);
                out.extend_from_slice(bytes);
            }
            Place::Bytes { offset, len } => {
                put(*offset);
                put(*len);
            }
            Place::Block { id } => put(*id),
            Place::Reference { serial, offset } => {
                put(*serial);
                put(*offset);
            }
            Place::View {
                geometry: g,
                tables_offset,
                tables_len,
            } => {
                for n in [g.serial, g.data_offset as u64, g.data_bytes as u64] {
                    put(n);
                }
                put(g.offset as u64);
                put(g.index_mask);
                for &stride in &g.strides {
                    put(stride as u64);
                }
                put(*tables_offset);
                put(*tables_len);
            }
        }
        out
    }

    /// True when `data` starts like a handle (the rest is checked by `decode`).
    pub fn looks_like(data: &[u8]) -> bool {
        data.starts_with(MAGIC)
    }

    pub fn decode(data: &[u8]) -> Result<Handle> {
        let damaged = || Error::Argument("damaged Numo::Parallel result handle".into());
        let mut reader = Reader {
            data: data.strip_prefix(MAGIC.as_slice()).ok_or_else(damaged)?,
        };
        let token = reader.u64().ok_or_else(damaged)?;
        let [kind, flags, ndim] = reader.bytes::<3>().ok_or_else(damaged)?;
        if ndim as usize > crate::numo::shape::MAX_DIMENSIONS {
            return Err(damaged());
        }
        let shape = (0..ndim)
            .map(|_| reader.u64().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(damaged)?;
        let mut next = || reader.u64().ok_or_else(damaged);
        let place = match kind {
            INLINE => {
                let len = usize::try_from(next()?).map_err(|_| damaged())?;
                if len > reader.data.len() {
                    return Err(damaged());
                }
                let (bytes, rest) = reader.data.split_at(len);
                reader.data = rest;
                Place::Inline {
                    bytes: bytes.to_vec(),
                }
            }
            BYTES => Place::Bytes {
                offset: next()?,
                len: next()?,
            },
            BLOCK => Place::Block { id: next()? },
            REFERENCE => Place::Reference {
                serial: next()?,
                offset: next()?,
            },
            VIEW => {
                let serial = next()?;
                let [data_offset, data_bytes, offset] =
                    [next()?, next()?, next()?].map(|n| usize::try_from(n).map_err(|_| damaged()));
                let (data_offset, data_bytes, offset) = (data_offset?, data_bytes?, offset?);
                let index_mask = next()?;
                let strides = (0..ndim)
                    .map(|_| next().map(|s| s as i64 as isize))
                    .collect::<Result<Vec<_>>>()?;
                Place::View {
                    geometry: Geometry {
                        serial,
                        data_offset,
                        data_bytes,
                        offset,
                        index_mask,
                        strides,
                    },
                    tables_offset: next()?,
                    tables_len: next()?,
                }
            }
            _ => return Err(damaged()),
        };
        if !reader.data.is_empty() {
            return Err(damaged());
        }
        Ok(Handle {
            token,
            flags,
            shape,
            place,
        })
    }
}

struct Reader<'a> {
    data: &'a [u8],
}

impl Reader<'_> {
    fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.data.split_first_chunk::<N>()?;
        self.data = rest;
        Some(*head)
    }

    fn u64(&mut self) -> Option<u64> {
        self.bytes::<8>().map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(place: Place, shape: Vec<usize>) {
        let handle = Handle {
            token: 0xdead_beef_1234,
            flags: 2,
            shape,
            place,
        };
        let bytes = handle.encode();
        assert!(Handle::looks_like(&bytes));
        assert_eq!(Handle::decode(&bytes).unwrap(), handle);
        for cut in 0..bytes.len() {
            assert!(Handle::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Handle::decode(&longer).is_err());
    }

    #[test]
    fn every_kind_round_trips_and_truncations_are_refused() {
        round_trip(
            Place::Bytes {
                offset: 64,
                len: 128,
            },
            vec![16],
        );
        round_trip(Place::Block { id: 7 << 32 | 3 }, vec![1000, 1000]);
        round_trip(
            Place::Reference {
                serial: 9,
                offset: 4096,
            },
            vec![],
        );
        round_trip(
            Place::View {
                geometry: Geometry {
                    serial: 1,
                    data_offset: 0,
                    data_bytes: 800,
                    offset: 8,
                    index_mask: 0b10,
                    strides: vec![-16, 0],
                },
                tables_offset: 128,
                tables_len: 24,
            },
            vec![5, 3],
        );
    }

    #[test]
    fn a_one_dimensional_handle_is_smaller_than_a_cache_line() {
        let handle = Handle {
            token: 1,
            flags: 0,
            shape: vec![100_000],
            place: Place::Block { id: 1 },
        };
        assert!(handle.encode().len() <= 64);
    }
}
