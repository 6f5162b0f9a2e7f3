//! A complete cached body in a file of its own, readable as [`Bytes`] without a copy.
//!
//! The body is written once, then never changed: the same pages serve both hit paths, `sendfile`
//! from the descriptor on plain TCP ([`crate::direct`]), and a read-only shared mapping handed out
//! as `Bytes` slices everywhere else (TLS, HTTP/2, ranges through pingora), so a hit never copies
//! the body into a new buffer. The mapping is the only unsafe code of the edge; what makes reading
//! it as a `&[u8]` sound is that nothing can change the file's bytes or size once it is mapped:
//!
//! - By default the file is a memfd, sealed against writing, shrinking and growing
//!   (`F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW`, then `F_SEAL_SEAL`): the kernel guarantees it.
//! - With a body directory, it is an unnamed file there (`O_TMPFILE`, never linked): no other
//!   process can open it, and this crate never writes to or resizes it after [`body_file`]
//!   returns. Seals exist only for memory files, so this rests on that discipline.
//!
//! Why a directory: memfd pages are 4 KiB shmem pages (unless the machine enables shmem huge
//! pages), and `sendfile` from shmem looks each page up on its own. A file on a disk filesystem
//! with large folios (ext4, XFS on Linux 6.x) is sent in batches of large folios, and its clean
//! pages are reclaimable under memory pressure, as nginx's cache files are. Measured (edge-bench,
//! 256 connections, alternated): 10% less edge CPU per 100 KB hit and 25% less per 1 MB hit.

use std::fs::File;
use std::io::{self, IoSlice, Write as _};
use std::os::fd::AsFd;
use std::path::Path;
use std::ptr::NonNull;

use bytes::Bytes;
use rustix::fs::{fcntl_add_seals, memfd_create, MemfdFlags, Mode, OFlags, SealFlags};
use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};

/// `chunks` (together `len > 0` bytes) in a file of their own: an unnamed file in `dir`, else
/// (no directory, or one that cannot hold unnamed files) a sealed memfd; and its pages as `Bytes`.
pub(crate) fn body_file(dir: Option<&Path>, chunks: &[Bytes], len: usize) -> io::Result<(File, Bytes)> {
    if len == 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "an empty body needs no pages"));
    }
    let unnamed = dir.and_then(|dir| {
        rustix::fs::open(dir, OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC, Mode::from_raw_mode(0o600))
            .inspect_err(|error| tracing::debug!(%error, dir = %dir.display(), "edge: no unnamed body file, memfd"))
            .ok()
    });
    let sealable = unnamed.is_none();
    let fd = match unnamed {
        Some(fd) => fd,
        None => memfd_create("bitriver-edge-body", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?,
    };
    let mut file = File::from(fd);
    // One vectored write: the filesystem picks folio sizes from the length of each write.
    let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|chunk| IoSlice::new(chunk)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let n = file.write_vectored(rest)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    if file.metadata()?.len() != len as u64 {
        return Err(io::Error::other("the body's chunks do not add up to its length"));
    }
    if sealable {
        fcntl_add_seals(&file, SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
    }
    let pages = Mapping::of(&file, len)?;
    Ok((file, Bytes::from_owner(pages)))
}

/// A read-only shared mapping of a body file, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is read-only and its file never changes again (sealed, or unnamed and
// never written after mapping: see the module docs), so the bytes are immutable for the
// mapping's whole life and may be read from any thread.
unsafe impl Send for Mapping {}
// SAFETY: as above: shared references only ever read immutable bytes.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn of(file: &File, len: usize) -> io::Result<Self> {
        // SAFETY: a fresh mapping chosen by the kernel (null hint) of `len` bytes of a file that
        // holds exactly `len` bytes and never shrinks (module docs); nothing else refers to it.
        let ptr = unsafe { mmap(std::ptr::null_mut(), len, ProtFlags::READ, MapFlags::SHARED, file.as_fd(), 0)? };
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping { ptr, len })
    }
}

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` is mapped readable until drop, and its file is never written.
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
        let (file, pages) = body_file(None, &chunks, len).unwrap();
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
    fn in_a_body_directory_the_file_has_no_name_and_reads_back_the_body() {
        let dir = tempfile::tempdir().unwrap();
        let chunks = [Bytes::from(vec![1u8; 70_000]), Bytes::from(vec![2u8; 30_000])];
        let (file, pages) = body_file(Some(dir.path()), &chunks, 100_000).unwrap();
        assert_eq!(&pages[..70_000], &chunks[0][..]);
        assert_eq!(&pages[70_000..], &chunks[1][..]);
        // An unnamed file in that directory, not a memfd: nothing shows in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let mut buf = [0u8; 2];
        file.read_exact_at(&mut buf, 69_999).unwrap();
        assert_eq!(buf, [1, 2]);
        let link = std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file))).unwrap();
        assert!(link.starts_with(dir.path()), "{}", link.display());
        // A directory that cannot hold files: the body goes to a memfd instead.
        let (_, pages) = body_file(Some(Path::new("/proc")), &chunks, 100_000).unwrap();
        assert_eq!(pages.len(), 100_000);
    }

    #[test]
    fn chunks_that_do_not_add_up_and_empty_bodies_are_refused() {
        assert!(body_file(None, &[Bytes::from_static(b"abc")], 4).is_err());
        assert!(body_file(None, &[], 0).is_err());
    }
}
