//! A minimal ISO-BMFF box writer.
//!
//! We write our own rather than use a general MP4 crate: the muxer only ever writes one fixed
//! layout (a CMAF header and `moof`+`mdat` fragments), and doing that with a flat byte buffer and
//! back-patched sizes is a few dozen lines, allocation-free after the first reservation and easy to
//! test byte for byte.
//!
//! Boxes are opened with [`BoxWriter::open`] / [`BoxWriter::open_full`], which write a placeholder
//! size, and closed with [`BoxWriter::close`], which patches it. A box larger than `u32::MAX`
//! bytes cannot be written with a 32-bit size; rather than panic we remember the overflow and
//! [`BoxWriter::finish`] reports it.

use bytes::{BufMut, Bytes, BytesMut};

/// Position of an open box, returned by [`BoxWriter::open`] and consumed by [`BoxWriter::close`].
#[must_use = "an opened box must be closed"]
#[derive(Debug)]
pub(crate) struct OpenBox(usize);

/// A position in the buffer holding a `u32`/`i32` to patch later (e.g. `trun` data offsets).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot(usize);

/// Writes boxes into one growable buffer.
#[derive(Debug)]
pub(crate) struct BoxWriter {
    buf: BytesMut,
    overflow: bool,
}

/// The output exceeded what 32-bit box sizes or fields can express.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Overflow;

impl BoxWriter {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        BoxWriter { buf: BytesMut::with_capacity(capacity), overflow: false }
    }

    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn open(&mut self, fourcc: &[u8; 4]) -> OpenBox {
        let start = self.buf.len();
        self.buf.put_u32(0);
        self.buf.put_slice(fourcc);
        OpenBox(start)
    }

    /// Opens a "full box": version (1 byte) and flags (24 bits) follow the header.
    pub(crate) fn open_full(&mut self, fourcc: &[u8; 4], version: u8, flags: u32) -> OpenBox {
        let open = self.open(fourcc);
        self.buf.put_u32((u32::from(version) << 24) | (flags & 0x00ff_ffff));
        open
    }

    /// Patches the size of a box opened earlier. Boxes must be closed innermost first.
    pub(crate) fn close(&mut self, open: OpenBox) {
        let size = self.buf.len() - open.0;
        let size = self.checked_u32(size);
        self.buf[open.0..open.0 + 4].copy_from_slice(&size.to_be_bytes());
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.put_u8(v);
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.buf.put_u16(v);
    }

    pub(crate) fn u24(&mut self, v: u32) {
        self.buf.put_slice(&v.to_be_bytes()[1..]);
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.put_u32(v);
    }

    pub(crate) fn i32(&mut self, v: i32) {
        self.buf.put_i32(v);
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.put_u64(v);
    }

    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.buf.put_slice(v);
    }

    pub(crate) fn zeros(&mut self, n: usize) {
        self.buf.put_bytes(0, n);
    }

    /// Converts a length to `u32`, recording an overflow (and writing `u32::MAX`) if it doesn't fit.
    pub(crate) fn checked_u32(&mut self, v: usize) -> u32 {
        match u32::try_from(v) {
            Ok(v) => v,
            Err(_) => {
                self.overflow = true;
                u32::MAX
            }
        }
    }

    /// Reserves a 32-bit field to be filled in by [`BoxWriter::patch_i32`].
    pub(crate) fn slot_i32(&mut self) -> Slot {
        let at = self.buf.len();
        self.buf.put_i32(0);
        Slot(at)
    }

    pub(crate) fn patch_i32(&mut self, slot: Slot, v: i32) {
        self.buf[slot.0..slot.0 + 4].copy_from_slice(&v.to_be_bytes());
    }

    /// Records that some field could not be represented.
    pub(crate) fn mark_overflow(&mut self) {
        self.overflow = true;
    }

    pub(crate) fn finish(self) -> Result<Bytes, Overflow> {
        if self.overflow {
            Err(Overflow)
        } else {
            Ok(self.buf.freeze())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_boxes_get_their_sizes_patched() {
        let mut w = BoxWriter::with_capacity(0);
        let outer = w.open(b"moof");
        let inner = w.open_full(b"mfhd", 0, 0);
        w.u32(7);
        w.close(inner);
        w.close(outer);
        let out = w.finish().unwrap();
        assert_eq!(
            &out[..],
            &[0, 0, 0, 24, b'm', b'o', b'o', b'f', 0, 0, 0, 16, b'm', b'f', b'h', b'd', 0, 0, 0, 0, 0, 0, 0, 7]
        );
    }

    #[test]
    fn full_box_header_and_u24() {
        let mut w = BoxWriter::with_capacity(0);
        let b = w.open_full(b"tfhd", 1, 0x02_0000);
        w.u24(0x0a0b0c);
        w.close(b);
        assert_eq!(&w.finish().unwrap()[..], &[0, 0, 0, 15, b't', b'f', b'h', b'd', 1, 2, 0, 0, 0x0a, 0x0b, 0x0c]);
    }

    #[test]
    fn overflow_is_reported_not_panicked() {
        let mut w = BoxWriter::with_capacity(0);
        let _ = w.checked_u32(usize::MAX);
        assert_eq!(w.finish(), Err(Overflow));
    }
}
