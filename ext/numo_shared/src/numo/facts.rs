//! What the extension reads of any Numo array it is asked to pass on: its
//! shape, size and byte order; where a shared array (or the array a view
//! looks into) lies in its segment; the bytes of a plain data array.

use magnus::{rb_sys::AsRawValue, Value};

use crate::numo::layout::{
    self, NArrayData, NArrayView, Step, TypeInfo, NARRAY_DATA_T, NARRAY_VIEW_T,
};
use crate::numo::shared_array::{is_narray, segment_behind};
use crate::numo::typed_data;

/// What passing an array on needs to know of it: its shape, the bytes of its
/// elements, its element size (`None` for Numo::Bit) and Numo's first flag
/// byte. `None` for arrays of classes that hold Ruby objects, and for data
/// arrays with no memory yet (Numo raises on reading those).
pub struct ArrayFacts {
    pub shape: Vec<usize>,
    pub bytes: usize,
    pub element_bytes: Option<usize>,
    pub flags: u8,
}

pub fn facts_of(obj: Value) -> Option<ArrayFacts> {
    let raw = obj.as_raw();
    // SAFETY: each step checks the object's type before reading its struct.
    unsafe {
        if !is_narray(raw) {
            return None;
        }
        let na = typed_data::data_of(raw) as *const NArrayData;
        if na.is_null() {
            return None;
        }
        let base = &(*na).base;
        // A view's type is numo-narray's view type for every class: the
        // element description is on the type of the array it looks into.
        let elements_of = if base.kind == NARRAY_VIEW_T {
            (*(na as *const NArrayView)).data
        } else {
            raw
        };
        if !is_narray(elements_of) {
            return None;
        }
        let ty = typed_data::type_of(elements_of);
        if (*ty).data.is_null() || (*ty).function.dmark.is_some() {
            return None; // Numo::RObject: Ruby references, not bytes
        }
        if base.kind == NARRAY_DATA_T && (*na).ptr.is_null() && base.size > 0 {
            return None;
        }
        let info = &*((*ty).data as *const TypeInfo);
        let shape = if base.ndim == 0 {
            Vec::new()
        } else {
            std::slice::from_raw_parts(base.shape, base.ndim as usize).to_vec()
        };
        Some(ArrayFacts {
            bytes: layout::data_bytes(info, base.size)?,
            element_bytes: (!info.packs_bits()).then_some(info.element_bytes as usize),
            flags: base.flag[0],
            shape,
        })
    }
}

/// Where a shared array (not a view) starts in its segment.
pub struct Location {
    pub serial: u64,
    pub creator: i32,
    pub offset: usize,
    /// Bytes of the segment from the array's data to its end.
    pub room: usize,
    /// Whether its memory is shared and writable (not read-only, not
    /// copy-on-write), so that another process's mapping holds its values.
    pub shareable: bool,
}

/// `obj`'s location, when `obj` is itself a shared array with memory.
pub fn location(obj: Value) -> Option<Location> {
    let (raw, array) = segment_behind(obj)?;
    if raw != obj.as_raw() {
        return None;
    }
    let data = array.data.ptr;
    let mapping = array.segment.as_ref()?;
    let segment = mapping.segment();
    // SAFETY: data points into the segment.
    let offset = unsafe { data.offset_from(segment.as_ptr()) } as usize;
    Some(Location {
        serial: mapping.serial(),
        creator: mapping.creator_pid(),
        offset,
        room: segment.len() - offset,
        shareable: segment.access().is_shared_writable(),
    })
}

/// The data of `obj` when it is a Numo data array (not a view) of a class
/// with whole-byte elements, whose memory is allocated: every byte of it.
pub fn data_bytes_of<'a>(obj: Value) -> Option<&'a [u8]> {
    let raw = obj.as_raw();
    // SAFETY: each step checks the object's type before reading its struct;
    // the slice is read before any Ruby code runs.
    unsafe {
        if !is_narray(raw) {
            return None;
        }
        let na = typed_data::data_of(raw) as *const NArrayData;
        let info = (*typed_data::type_of(raw)).data as *const TypeInfo;
        if na.is_null() || info.is_null() || (*na).base.kind != NARRAY_DATA_T || (*na).ptr.is_null()
        {
            return None;
        }
        if (*info).packs_bits() {
            return None;
        }
        let bytes = layout::data_bytes(&*info, (*na).base.size)?;
        Some(std::slice::from_raw_parts((*na).ptr, bytes))
    }
}

/// A Numo view of a shared array, as read for passing it by reference: the
/// segment and byte range of the array it looks into, and its own geometry.
pub struct ViewOf {
    pub serial: u64,
    pub creator: i32,
    pub shareable: bool,
    /// Where the viewed array's data starts in its segment, and its size.
    pub data_offset: usize,
    pub data_bytes: usize,
    /// The view's `offset` and one step per dimension (see `numo::Step`).
    pub offset: usize,
    pub steps: Vec<Step>,
}

/// `obj` read as a view of a shared array; `None` when `obj` is not a view,
/// looks into an ordinary array or a released one, or has no dimensions.
pub fn view_of(obj: Value) -> Option<ViewOf> {
    let (raw, array) = segment_behind(obj)?;
    if raw == obj.as_raw() {
        return None;
    }
    // SAFETY: obj is a Numo view (shared_base read its type tag), whose
    // shape and stridx have ndim entries.
    unsafe {
        let info = (*typed_data::type_of(raw)).data as *const TypeInfo;
        let data_bytes = layout::data_bytes(&*info, array.data.base.size)?;
        let data = array.data.ptr;
        let mapping = array.segment.as_ref()?;
        let data_offset = data.offset_from(mapping.segment().as_ptr()) as usize;
        let view = &*(typed_data::data_of(obj.as_raw()) as *const NArrayView);
        let ndim = view.base.ndim as usize;
        if ndim == 0 || view.stridx.is_null() || view.base.shape.is_null() {
            return None;
        }
        let dims = std::slice::from_raw_parts(view.base.shape, ndim);
        let steps = dims
            .iter()
            .enumerate()
            .map(|(i, &len)| Step::decode(*view.stridx.add(i), len))
            .collect::<crate::error::Result<Vec<Step>>>()
            .ok()?;
        Some(ViewOf {
            serial: mapping.serial(),
            creator: mapping.creator_pid(),
            shareable: mapping.segment().access().is_shared_writable(),
            data_offset,
            data_bytes,
            offset: view.offset,
            steps,
        })
    }
}
