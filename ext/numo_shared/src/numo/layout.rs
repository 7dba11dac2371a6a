//! A mirror of the parts of numo-narray's C structs this extension touches,
//! and the checks, run at load, that the installed numo-narray (and the
//! running Ruby's typed-data objects) match it.
//!
//! numo-narray keeps an array's data in `narray_data_t`
//! (`numo/narray.h`): `{u8 ndim; u8 type; u8 flag[2]; u16 elmsz; size_t size;
//! size_t *shape; VALUE reduce; char *ptr; bool owned}`. `shape` points at
//! `size` when `ndim <= 1`, otherwise at a buffer from `ruby_xmalloc`.
//! Every concrete class has its own `rb_data_type_t` whose parent is
//! `na_data_type` and whose `data` points at `narray_type_info_t`.

use std::ffi::CStr;

use rb_sys::{rb_data_type_t, VALUE};

use crate::error::{Error, Result};
use crate::numo::typed_data;

/// `narray_t`, the header every Numo array starts with.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NArrayBase {
    pub ndim: u8,
    pub kind: u8,
    pub flag: [u8; 2],
    pub elmsz: u16,
    pub size: usize,
    pub shape: *mut usize,
    pub reduce: VALUE,
}

/// `narray_data_t`: an array that owns (or borrows) a data pointer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NArrayData {
    pub base: NArrayBase,
    pub ptr: *mut u8,
    pub owned: bool,
}

impl NArrayBase {
    /// True when `shape` points at this struct's own `size` field, numo-narray's
    /// convention for 0- and 1-dimensional arrays; such a shape is not freed.
    pub fn shape_is_inline(&self) -> bool {
        std::ptr::eq(self.shape, &self.size)
    }

    /// True when `shape` is a separate buffer from `ruby_xmalloc`.
    pub fn shape_is_allocated(&self) -> bool {
        !self.shape.is_null() && !self.shape_is_inline()
    }
}

/// `narray_view_t`: the object the view looks into, the offset of the
/// view's first element in that object's data, and per dimension a
/// `stridx_t`, a union of a stride (`stride << 1 | 1`) and a pointer to a
/// `ruby_xmalloc`ed table of offsets, one per index of that dimension.
/// Offsets and strides count bytes, or bits for `Numo::Bit`.
#[repr(C)]
pub struct NArrayView {
    pub base: NArrayBase,
    pub data: VALUE,
    pub offset: usize,
    pub stridx: *mut usize,
}

/// One dimension of a view, as `stridx_t` holds it.
pub enum Step {
    Stride(isize),
    Index(Vec<usize>),
}

impl Step {
    /// Decodes `stridx[dim]` of a live view whose `dim` has `len` indices
    /// (an index table is copied: `Error::NoMemory` if it cannot be).
    ///
    /// # Safety
    /// `raw` must be a `stridx_t` of a live view, `len` its dimension's size.
    pub unsafe fn decode(raw: usize, len: usize) -> Result<Step> {
        if raw & 1 == 1 {
            return Ok(Step::Stride((raw as isize) >> 1));
        }
        let mut table = crate::error::try_vec(len, "a view's index table")?;
        table.extend_from_slice(std::slice::from_raw_parts(raw as *const usize, len));
        Ok(Step::Index(table))
    }

    /// The `stridx_t` for this step; an index table is copied to a buffer
    /// from `ruby_xmalloc`, which numo-narray frees with the view (so the
    /// word must be stored in a view, or the buffer freed). May allocate,
    /// and so run the GC.
    pub fn encode(&self) -> Result<usize> {
        match self {
            Step::Stride(stride) => Ok(((stride << 1) | 1) as usize),
            Step::Index(table) => {
                let buf = crate::numo::ruby_alloc::xmalloc_array::<usize>(table.len())?;
                // SAFETY: buf holds table.len() words.
                unsafe { std::ptr::copy_nonoverlapping(table.as_ptr(), buf, table.len()) };
                Ok(buf as usize)
            }
        }
    }

    /// The smallest and largest offset this step adds over `len` indices.
    pub fn reach(&self, len: usize) -> (i128, i128) {
        match self {
            Step::Stride(stride) => {
                let far = *stride as i128 * (len as i128 - 1).max(0);
                (far.min(0), far.max(0))
            }
            Step::Index(table) => (
                table.iter().min().map_or(0, |&i| i as i128),
                table.iter().max().map_or(0, |&i| i as i128),
            ),
        }
    }
}

/// `narray_type_info_t`, the per-class element description.
#[repr(C)]
pub struct TypeInfo {
    pub element_bits: u32,
    pub element_bytes: u32,
    pub element_stride: u32,
}

impl TypeInfo {
    /// True for `Numo::Bit`, which packs its elements as bits in 32-bit
    /// words: its sizes, offsets and strides count bits, not bytes.
    pub fn packs_bits(&self) -> bool {
        self.element_bits == 1 && self.element_bytes == 0
    }
}

/// `NA_FL0_BIG_ENDIAN` in the first flag byte: set on arrays whose data is
/// in the other byte order than the host's (`hton` on a little-endian host).
pub const FLAG_BYTE_SWAPPED: u8 = if cfg!(target_endian = "little") { 1 } else { 0 };

/// `NARRAY_DATA_T` and `NARRAY_VIEW_T` from `numo/narray.h`.
pub const NARRAY_DATA_T: u8 = 1;
pub const NARRAY_VIEW_T: u8 = 2;

/// The versions of `Numo::NArray::VERSION` whose headers this mirror was
/// checked against: numo-narray 0.9.x, and its fork numo-narray-alt, which
/// went on from 0.9.3 to 0.12.x with the same structs, type tags and flags
/// (its free functions also free the shape buffer of zero-size arrays; ours
/// and the structs we hand to Numo allow for both). Other versions are
/// refused; these are still probed at load.
pub const SUPPORTED_SERIES: [&str; 4] = ["0.9.", "0.10.", "0.11.", "0.12."];

/// The name a data type was registered under, for messages.
///
/// # Safety
/// `ty` must point at a live `rb_data_type_t`.
pub unsafe fn type_name(ty: *const rb_data_type_t) -> String {
    if ty.is_null() || (*ty).wrap_struct_name.is_null() {
        return "(unnamed)".to_string();
    }
    CStr::from_ptr((*ty).wrap_struct_name)
        .to_string_lossy()
        .into_owned()
}

/// Bytes of data an array of `elements` elements of this type needs, exactly
/// as numo-narray allocates it (Bit packs 32-bit words); `None` on overflow.
pub fn data_bytes(info: &TypeInfo, elements: usize) -> Option<usize> {
    if elements == 0 {
        return Some(0);
    }
    if info.packs_bits() {
        let word = std::mem::size_of::<u32>();
        let words = (elements - 1) / 8 / word + 1;
        return words.checked_mul(word);
    }
    elements.checked_mul(info.element_bytes as usize)
}

/// What a freshly made `klass.new(2, 3)` must look like in memory if the
/// mirror above matches the installed numo-narray. Returns a description
/// of the first mismatch.
///
/// # Safety
/// `probe` must be a live Numo array object.
pub unsafe fn layout_mismatch(probe: VALUE, shape: &[usize], element_bytes: u32) -> Option<String> {
    if !typed_data::is_typed(probe) {
        return Some("the probe array is not a typed-data object".into());
    }
    let ty = typed_data::type_of(probe);
    if (*ty).parent.is_null() || type_name((*ty).parent) != "Numo::NArray" {
        return Some(format!(
            "the data type {} does not have Numo::NArray as its parent",
            type_name(ty)
        ));
    }
    let info = (*ty).data as *const TypeInfo;
    if info.is_null() || (*info).element_bytes != element_bytes {
        return Some(format!(
            "the element size recorded for {} is not {} bytes",
            type_name(ty),
            element_bytes
        ));
    }
    let na = typed_data::data_of(probe) as *const NArrayData;
    let base = &(*na).base;
    let elements: usize = shape.iter().product();
    if base.kind != NARRAY_DATA_T {
        return Some(format!(
            "type tag is {}, expected {}",
            base.kind, NARRAY_DATA_T
        ));
    }
    if base.ndim as usize != shape.len() {
        return Some(format!("ndim is {}, expected {}", base.ndim, shape.len()));
    }
    if base.size != elements {
        return Some(format!("size is {}, expected {}", base.size, elements));
    }
    if shape.len() <= 1 {
        if !base.shape_is_inline() {
            return Some("shape of a 1-d array does not point at its size field".into());
        }
    } else {
        if base.shape.is_null() {
            return Some("shape pointer is null".into());
        }
        let recorded = std::slice::from_raw_parts(base.shape, shape.len());
        if recorded != shape {
            return Some(format!("shape reads {recorded:?}, expected {shape:?}"));
        }
    }
    if !(*na).ptr.is_null() || (*na).owned {
        return Some("an unallocated array has a data pointer or claims to own one".into());
    }
    None
}

/// Refuses a numo-narray whose version is outside the series we mirror.
pub fn check_version(version: &str) -> Result<()> {
    if SUPPORTED_SERIES
        .iter()
        .any(|series| version.starts_with(series))
    {
        Ok(())
    } else {
        Err(Error::Layout(format!(
            "numo-shared supports numo-narray 0.9.x and numo-narray-alt 0.9.3 to 0.12.x, \
             but Numo::NArray::VERSION is {version}; its array layout may differ, so shared arrays are refused"
        )))
    }
}
