//! Fresh immutable hits sent straight to the viewer's socket.
//!
//! Parts, segments and init segments never change once cached, so a fresh complete copy needs
//! none of pingora's cache phases (no lock, no revalidation, no stale decision). For those, on a
//! plain-TCP HTTP/1.1 keep-alive connection, the edge writes a pre-serialized head and then
//! `sendfile`s the body from its memfd ([`crate::storage::BodyFile`]): one copy of the bytes less
//! than writing them from user space, and none of pingora's per-chunk body machinery. Anything
//! else (TLS, HEAD, conditional or range requests, playlists, stale or filling objects, misses)
//! goes through pingora as before.
//!
//! The socket is reached through a duplicate of its descriptor taken at accept time
//! ([`DirectSocket`]), registered with the runtime for write readiness only.

use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use pingora_http::ResponseHeader;
use rustix::io::Errno;
use rustix::net::SendFlags;
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::storage::{Body, FreshHit};

/// `body` label of `bitriver_edge_direct_sends_total` for a body sent from its memfd.
pub(crate) const SENDFILE: &str = "sendfile";
/// `body` label of `bitriver_edge_direct_sends_total` for a small body held in memory.
pub(crate) const MEMORY: &str = "memory";

/// How long a send may wait for the viewer to make room in its socket buffer.
const WRITE_STALL: Duration = Duration::from_secs(60);

/// The viewer's socket, for sending fresh hits without going through pingora's stream.
pub(crate) struct DirectSocket {
    socket: TcpStream,
}

impl DirectSocket {
    /// A duplicate of `socket`'s descriptor, registered with the runtime. `None` when the
    /// descriptor cannot be duplicated (out of descriptors): the connection is then served by
    /// pingora alone.
    pub(crate) fn new(socket: &TcpStream) -> Option<Self> {
        let fd = socket.as_fd().try_clone_to_owned().ok()?;
        TcpStream::from_std(std::net::TcpStream::from(fd)).ok().map(|socket| DirectSocket { socket })
    }

    /// Run `op` on the socket until it does not block, waiting for room in between.
    async fn when_writable(&self, mut op: impl FnMut(&TcpStream) -> rustix::io::Result<usize>) -> io::Result<usize> {
        let mut attempt = || loop {
            match op(&self.socket) {
                Err(Errno::INTR) => continue,
                other => break other.map_err(io::Error::from),
            }
        };
        // The socket usually has room: try before asking the runtime.
        match attempt() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            other => return other,
        }
        loop {
            tokio::time::timeout(WRITE_STALL, self.socket.writable())
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "viewer stopped reading"))??;
            match self.socket.try_io(Interest::WRITABLE, &mut attempt) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }

    async fn send_all(&self, mut buf: &[u8], more: bool) -> io::Result<()> {
        let flags = if more { SendFlags::MORE | SendFlags::NOSIGNAL } else { SendFlags::NOSIGNAL };
        while !buf.is_empty() {
            let n = self.when_writable(|fd| rustix::net::send(fd, buf, flags)).await?;
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Send a fresh hit: its head (with `age`) and its whole body. Returns how the body went
    /// ([`SENDFILE`] or [`MEMORY`]), for the metrics.
    pub(crate) async fn send_hit(&self, hit: &FreshHit) -> io::Result<&'static str> {
        let mut head = BytesMut::with_capacity(hit.head.len() + 32);
        head.put_slice(&hit.head);
        head.put_slice(b"age: ");
        head.put_slice(hit.age_secs.to_string().as_bytes());
        head.put_slice(b"\r\n\r\n");
        match &hit.body {
            Body::Memory(chunks) => {
                let len: usize = chunks.iter().map(Bytes::len).sum();
                if len <= 64 * 1024 {
                    // Small: head and body in one send.
                    for chunk in chunks.iter() {
                        head.put_slice(chunk);
                    }
                    self.send_all(&head, false).await?;
                } else {
                    self.send_all(&head, true).await?;
                    for (i, chunk) in chunks.iter().enumerate() {
                        self.send_all(chunk, i + 1 < chunks.len()).await?;
                    }
                }
                Ok(MEMORY)
            }
            Body::File(body) => {
                // MSG_MORE: the head leaves in the same segment as the start of the body.
                self.send_all(&head, true).await?;
                let mut offset = 0u64;
                while offset < body.len as u64 {
                    let left = body.len - offset as usize;
                    let n =
                        self.when_writable(|fd| rustix::fs::sendfile(fd, &body.file, Some(&mut offset), left)).await?;
                    if n == 0 {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "cached body shorter than stored"));
                    }
                }
                Ok(SENDFILE)
            }
        }
    }
}

/// The HTTP/1.1 head of a hit on an object with this origin header and body size: status line
/// and headers, with the edge's `content-length` and `x-cache: HIT`, without `age` and without
/// the blank line that ends it.
pub(crate) fn hit_head(header: &ResponseHeader, size: usize) -> Bytes {
    let mut out = BytesMut::with_capacity(256);
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(header.status.as_str().as_bytes());
    out.put_slice(b" ");
    out.put_slice(header.status.canonical_reason().unwrap_or("").as_bytes());
    out.put_slice(b"\r\n");
    for (name, value) in &header.headers {
        // Framing and hop-by-hop headers are the edge's own; age is added per hit.
        if matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "connection" | "keep-alive" | "age" | "x-cache"
        ) {
            continue;
        }
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"content-length: ");
    out.put_slice(size.to_string().as_bytes());
    out.put_slice(b"\r\nx-cache: HIT\r\n");
    out.freeze()
}
