//! The header at the start of every named segment: what a process that
//! opens the segment by name needs to rebuild the array.
//!
//! Layout (little-endian), data aligned to 64 bytes:
//!
//! | offset | size | field                                             |
//! |--------|------|---------------------------------------------------|
//! | 0      | 8    | magic `NUMOSHRD` (written last, once complete)    |
//! | 8      | 4    | format version (1)                                |
//! | 12     | 4    | data offset                                       |
//! | 16     | 8    | data bytes                                        |
//! | 24     | 4    | creating pid                                      |
//! | 28     | 4    | ndim                                              |
//! | 32     | 8    | creating process's start time (clock ticks)       |
//! | 40     | 24   | class name, NUL-padded (`Numo::DFloat`)           |
//! | 64     | 8n   | shape                                             |

use crate::error::{Error, Result};

pub const MAGIC: &[u8; 8] = b"NUMOSHRD";
pub const VERSION: u32 = 1;
/// The most dimensions a header records (numo-narray allows 62).
pub const MAX_DIMENSIONS: usize = 64;
/// Bytes before the shape.
pub const FIXED: usize = 64;
const CLASS_FIELD: std::ops::Range<usize> = 40..64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub class_name: String,
    pub shape: Vec<usize>,
    pub data_bytes: usize,
    pub creator_pid: i32,
    pub creator_start: u64,
}

/// Where the data starts for a header of `ndim` dimensions.
pub fn data_offset(ndim: usize) -> usize {
    (FIXED + 8 * ndim).div_ceil(64) * 64
}

impl Header {
    pub fn data_offset(&self) -> usize {
        data_offset(self.shape.len())
    }

    /// The header's bytes, magic last: `encode()[8..]` is written first and
    /// the magic only once everything else is in place.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let name = self.class_name.as_bytes();
        if name.len() > CLASS_FIELD.len() {
            return Err(Error::Argument(format!(
                "class name {} is too long for a segment header",
                self.class_name
            )));
        }
        let mut out = vec![0u8; self.data_offset()];
        out[..8].copy_from_slice(MAGIC);
        out[8..12].copy_from_slice(&VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&(self.data_offset() as u32).to_le_bytes());
        out[16..24].copy_from_slice(&(self.data_bytes as u64).to_le_bytes());
        out[24..28].copy_from_slice(&self.creator_pid.to_le_bytes());
        out[28..32].copy_from_slice(&(self.shape.len() as u32).to_le_bytes());
        out[32..40].copy_from_slice(&self.creator_start.to_le_bytes());
        out[CLASS_FIELD.start..CLASS_FIELD.start + name.len()].copy_from_slice(name);
        for (i, &dim) in self.shape.iter().enumerate() {
            out[FIXED + 8 * i..FIXED + 8 * i + 8].copy_from_slice(&(dim as u64).to_le_bytes());
        }
        Ok(out)
    }

    /// Reads a header from the start of a segment of `total` bytes named
    /// `what` (for messages); checks everything but the class.
    pub fn decode(bytes: &[u8], total: usize, what: &str) -> Result<Header> {
        let damaged = |why: &str| Error::Format(format!("{what} has a damaged header: {why}"));
        if bytes.len() < FIXED || &bytes[..8] != MAGIC {
            return Err(Error::Format(format!(
                "{what} was not made by numo-shared (or is not complete yet): no numo-shared header"
            )));
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let version = u32_at(8);
        if version != VERSION {
            return Err(Error::Format(format!(
                "{what} has header format version {version}; this numo-shared reads version {VERSION}"
            )));
        }
        let ndim = u32_at(28) as usize;
        if ndim > MAX_DIMENSIONS {
            return Err(damaged(&format!("{ndim} dimensions")));
        }
        let offset = u32_at(12) as usize;
        if offset != data_offset(ndim) || bytes.len() < offset {
            return Err(damaged(&format!(
                "data offset {offset} for {ndim} dimensions"
            )));
        }
        let name_field = &bytes[CLASS_FIELD];
        let name_len = name_field
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(name_field.len());
        let class_name = std::str::from_utf8(&name_field[..name_len])
            .map_err(|_| damaged("class name is not UTF-8"))?
            .to_string();
        let shape: Vec<usize> = (0..ndim)
            .map(|i| usize::try_from(u64_at(FIXED + 8 * i)))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| damaged("a dimension does not fit in memory"))?;
        let data_bytes =
            usize::try_from(u64_at(16)).map_err(|_| damaged("data size does not fit in memory"))?;
        if offset.checked_add(data_bytes) != Some(total) {
            return Err(Error::Format(format!(
                "{what} holds {total} bytes, but its header says {offset} + {data_bytes} (header and data)"
            )));
        }
        Ok(Header {
            class_name,
            shape,
            data_bytes,
            creator_pid: u32_at(24) as i32,
            creator_start: u64_at(32),
        })
    }
}

/// The start time (clock ticks after boot) of process `pid`, from
/// `/proc/<pid>/stat`; `None` if there is no such process.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22; the command name (field 2) may hold spaces but ends with ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            class_name: "Numo::DFloat".into(),
            shape: vec![2, 3],
            data_bytes: 48,
            creator_pid: 42,
            creator_start: 7,
        }
    }

    #[test]
    fn round_trips_and_aligns_data() {
        let h = sample();
        let bytes = h.encode().unwrap();
        assert_eq!(bytes.len(), 128);
        assert_eq!(Header::decode(&bytes, 128 + 48, "x").unwrap(), h);
    }

    #[test]
    fn refuses_foreign_damaged_and_truncated() {
        let mut bytes = sample().encode().unwrap();
        assert!(
            matches!(Header::decode(&bytes, 100, "x"), Err(Error::Format(m)) if m.contains("holds 100 bytes"))
        );
        bytes[12] = 0;
        assert!(
            matches!(Header::decode(&bytes, 176, "x"), Err(Error::Format(m)) if m.contains("damaged"))
        );
        bytes[0] = b'X';
        assert!(
            matches!(Header::decode(&bytes, 176, "x"), Err(Error::Format(m)) if m.contains("not made by numo-shared"))
        );
    }
}
