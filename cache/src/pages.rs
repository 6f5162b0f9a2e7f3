//! A complete cached body in sealed memory pages, readable as [`Bytes`] without a copy.
//!
//! The body is written once into a memfd, which is then sealed against writing, shrinking and
//! growing (`F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW`, then `F_SEAL_SEAL`): from that moment
//! the kernel guarantees its bytes never change again. The same pages serve both hit paths:
//! `sendfile` from the descriptor on plain TCP ([`crate::direct`]), and a read-only shared mapping
//! handed out as `Bytes` slices everywhere else (TLS, HTTP/2, ranges through pingora), so a hit
//! never copies the body into a new buffer. The mapping is the only unsafe code of the edge; the
//! seals are what make reading it as a `&[u8]` sound.

use std::fs::File;
use std::io::{self, Write as _};
use std::os::fd::AsFd;
use std::ptr::NonNull;

use bytes::Bytes;
use rustix::fs::{fcntl_add_seals, memfd_create, MemfdFlags, SealFlags};
use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};

/// `chunks` (together `len > 0` bytes) in a sealed memfd, and its pages as `Bytes`.
pub(crate) fn sealed(chunks: &[Bytes], len: usize) -> io::Result<(File, Bytes)> {
    if len == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "an empty body needs no pages"));
    }
    let fd = memfd_create("bitriver-edge-body", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    let mut file = File::from(fd);
    for chunk in chunks {
        file.write_all(chunk)?;
    }
    if file.metadata()?.len() != len as u64 {
        return Err(io::Error::other("the body's chunks do not add up to its length"));
    }
    fcntl_add_seals(&file, SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
    let pages = Mapping::of(&file, len)?;
    Ok((file, Bytes::from_owner(pages)))
}

/// A read-only shared mapping of a sealed memfd, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is read-only and its file is sealed against every change, so the bytes are
// immutable for the mapping's whole life and may be read from any thread.
unsafe impl Send for Mapping {}
// SAFETY: as above: shared references only ever read immutable bytes.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn of(file: &File, len: usize) -> io::Result<Self> {
        // SAFETY: a fresh mapping chosen by the kernel (null hint) of `len` bytes of a file that
        // holds exactly `len` bytes and can no longer shrink; nothing else refers to it.
        let ptr = unsafe { mmap(std::ptr::null_mut(), len, ProtFlags::READ, MapFlags::SHARED, file.as_fd(), 0)? };
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping { ptr, len })
    }
}

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` is mapped readable until drop, and sealed, so never written.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `of` mapped; no slice of it outlives the owner (Bytes holds
        // the owner until its last clone is gone).
        if let Err(error) = unsafe { munmap(self.ptr.as_ptr().cast(), self.len) } {
            tracing::warn!(%error, "edge: unmapping a cached body failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt as _;

    use super::*;

    #[test]
    fn the_pages_read_back_the_body_and_the_file_can_no_longer_change() {
        let chunks = [Bytes::from_static(b"hello "), Bytes::from(vec![7u8; 40_000]), Bytes::from_static(b"end")];
        let len = chunks.iter().map(Bytes::len).sum();
        let (file, pages) = sealed(&chunks, len).unwrap();
        assert_eq!(pages.len(), len);
        assert_eq!(&pages[..6], b"hello ");
        assert_eq!(&pages[len - 3..], b"end");
        let slice = pages.slice(6..40_006);
        drop(pages);
        assert!(slice.iter().all(|b| *b == 7), "a slice keeps the mapping alive");
        // Sealed: neither writes nor resizing are allowed any more.
        assert!(file.write_at(b"x", 0).is_err());
        assert!(file.set_len(1).is_err());
        let mut buf = [0u8; 3];
        file.read_exact_at(&mut buf, (len - 3) as u64).unwrap();
        assert_eq!(&buf, b"end");
    }

    #[test]
    fn chunks_that_do_not_add_up_and_empty_bodies_are_refused() {
        assert!(sealed(&[Bytes::from_static(b"abc")], 4).is_err());
        assert!(sealed(&[], 0).is_err());
    }
}
