//! The few FFmpeg fields ffmpeg-next has no safe accessor for. All of the crate's unsafe code is
//! here, each block with why it holds.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::ptr;

use ffmpeg_next::codec;
use ffmpeg_next::ffi as sys;

/// Hands `data` to a not yet opened codec context as its extradata (the H.264 decoder reads its
/// `avcC` from there).
pub(crate) fn set_extradata(context: &mut codec::Context, data: &[u8]) -> bool {
    let Ok(size) = i32::try_from(data.len()) else { return false };
    let padded = data.len() + sys::AV_INPUT_BUFFER_PADDING_SIZE as usize;
    // SAFETY: av_mallocz returns null or a zeroed buffer of `padded` bytes, owned by FFmpeg's
    // allocator as AVCodecContext.extradata must be.
    let buffer = unsafe { sys::av_mallocz(padded) }.cast::<u8>();
    if buffer.is_null() {
        return false;
    }
    // SAFETY: `buffer` holds `padded` >= `data.len()` bytes and does not overlap `data`; the
    // context pointer is valid for the lifetime of `context`, which we borrow mutably, and it is
    // not open yet, so nothing else reads extradata meanwhile. Any previous extradata is freed
    // with the allocator that made it (av_freep is null-safe).
    unsafe {
        ptr::copy_nonoverlapping(data.as_ptr(), buffer, data.len());
        let raw = context.as_mut_ptr();
        sys::av_freep(ptr::addr_of_mut!((*raw).extradata).cast());
        (*raw).extradata = buffer;
        (*raw).extradata_size = size;
    }
    true
}

/// A copy of an opened encoder's extradata (its global header: SPS and PPS for H.264).
pub(crate) fn extradata(context: &codec::Context) -> Vec<u8> {
    // SAFETY: the context pointer is valid while `context` is borrowed; FFmpeg keeps `extradata`
    // either null or pointing at `extradata_size` readable bytes, and nothing mutates it while we
    // hold a shared borrow.
    unsafe {
        let raw = context.as_ptr();
        let (data, size) = ((*raw).extradata, (*raw).extradata_size);
        match usize::try_from(size) {
            Ok(size) if !data.is_null() && size > 0 => std::slice::from_raw_parts(data, size).to_vec(),
            _ => Vec::new(),
        }
    }
}

/// Whether a hardware device of FFmpeg type `name` (`vaapi`, `qsv`, `cuda`) can be opened here.
pub(crate) fn hw_device_opens(name: &str) -> bool {
    let Ok(cname) = CString::new(name) else { return false };
    // SAFETY: `cname` is a valid NUL-terminated string for the call's duration.
    let kind = unsafe { sys::av_hwdevice_find_type_by_name(cname.as_ptr()) };
    if kind == sys::AVHWDeviceType::AV_HWDEVICE_TYPE_NONE {
        return false;
    }
    let mut device: *mut sys::AVBufferRef = ptr::null_mut();
    // SAFETY: `device` is a valid out-pointer; null device name and options ask for the default
    // device. On success we own one reference, released right after.
    let created = unsafe { sys::av_hwdevice_ctx_create(&mut device, kind, ptr::null(), ptr::null_mut(), 0) };
    if created < 0 || device.is_null() {
        return false;
    }
    // SAFETY: `device` is the reference av_hwdevice_ctx_create gave us; unref nulls it.
    unsafe { sys::av_buffer_unref(&mut device) };
    true
}

/// A new reference to `frame`'s pictures (no pixel copy), with its own properties (pts, picture
/// type) to set: how a rung of the source's size and format encodes without scaling.
pub(crate) fn frame_ref(frame: &ffmpeg_next::frame::Video) -> Option<ffmpeg_next::frame::Video> {
    // SAFETY: `frame.as_ptr()` is a valid AVFrame while borrowed; av_frame_clone only reads it and
    // returns null or a newly allocated frame sharing the (reference-counted) buffers.
    let cloned = unsafe { sys::av_frame_clone(frame.as_ptr()) };
    if cloned.is_null() {
        return None;
    }
    // SAFETY: `cloned` is a valid frame we own; `Video` takes that ownership and frees it with
    // av_frame_free on drop.
    Some(unsafe { ffmpeg_next::frame::Video::wrap(cloned) })
}

/// An opened encoder's delay in samples (`initial_padding`: 1024 for FFmpeg's AAC, 312 for
/// libopus): its packets' pts are the input's minus this.
pub(crate) fn initial_padding(context: &codec::Context) -> i64 {
    // SAFETY: the context pointer is valid while `context` is borrowed; reading a plain int field
    // that FFmpeg sets when the encoder opens.
    i64::from(unsafe { (*context.as_ptr()).initial_padding })
}
