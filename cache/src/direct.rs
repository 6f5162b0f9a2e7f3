//! Fresh immutable hits sent straight to the viewer's socket.
//!
//! Parts, segments and init segments never change once cached, so a fresh complete copy needs
//! none of pingora's cache phases (no lock, no revalidation, no stale decision). For those, on a
//! plain-TCP HTTP/1.1 keep-alive connection, the edge writes a pre-serialized head and then
//! `sendfile`s the body from its memfd ([`crate::storage::BodyFile`]): one copy of the bytes less
//! than writing them from user space, and none of pingora's per-chunk body machinery. A single
//! byte range is answered here too (206, or 416 past the end), by the same rules as pingora's
//! hit path ([`hit_range`]). Anything else (TLS, HEAD, conditional requests, several ranges,
//! playlists, stale or filling objects, misses) goes through pingora as before.
//!
//! The socket is reached through a duplicate of its descriptor taken at accept time
//! ([`DirectSocket`]), registered with the runtime of the thread serving the connection: the
//! edge reads requests from it before pingora does ([`crate::early`]) and writes hits to it.

use std::io;
use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::ops::Range;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use http::{header, StatusCode};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::RangeType;
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::metrics::EdgeMetrics;
use crate::policy::{self, HlsRequest};
use crate::storage::{Body, FreshHit, MokaStorage, ObjectKey};
use crate::viewers::{LastCounted, ViewerCounter};

/// `body` label of `bitriver_edge_direct_sends_total` for a body sent from its memfd.
pub(crate) const SENDFILE: &str = "sendfile";
/// `body` label of `bitriver_edge_direct_sends_total` for a small body held in memory.
pub(crate) const MEMORY: &str = "memory";

/// How long a send may wait for the viewer to make room in its socket buffer.
const WRITE_STALL: Duration = Duration::from_secs(60);

/// Bytes of a connection's input read at once, looking for a plain `GET` ([`crate::early`]): a
/// player's request head fits; a longer one (large cookies) is pingora's to read.
const READ: usize = 4096;

/// The fresh hit of an immutable object (part, segment, init) `request` names, if the cache holds
/// one.
pub(crate) fn fresh_hit(storage: &MokaStorage, request: &HlsRequest) -> Option<FreshHit> {
    if !request.kind.is_immutable() {
        return None;
    }
    storage.fresh_hit(ObjectKey::of_primary(request.key.as_str()).as_str(), SystemTime::now())
}

/// What the edge needs to answer a request before pingora reads it: the proxy's storage, counters
/// and viewer counter.
pub(crate) struct EarlyHits {
    pub(crate) storage: &'static MokaStorage,
    pub(crate) metrics: EdgeMetrics,
    pub(crate) viewers: Arc<ViewerCounter>,
}

impl EarlyHits {
    /// What the start of `pending` is: a plain `GET` of a fresh immutable hit is taken off it;
    /// anything else is left whole, for pingora.
    fn take(&self, pending: &mut Vec<u8>) -> Pending {
        let Some(get) = crate::early::plain_get(pending) else { return Pending::Other };
        let Ok(request) = policy::parse(get.path, get.query) else { return Pending::Other };
        let Some(hit) = fresh_hit(self.storage, &request) else { return Pending::Other };
        let len = get.len;
        pending.drain(..len);
        Pending::Hit { request, hit }
    }
}

/// What the start of a connection's pending input is, to the edge.
pub(crate) enum Pending {
    /// A plain `GET` of a fresh immutable hit, taken off the pending bytes: the edge answers it.
    Hit { request: HlsRequest, hit: FreshHit },
    /// Anything else: pingora reads it.
    Other,
    /// The viewer closed the connection.
    Closed,
}

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

    /// Wait for the connection's next request, read what has arrived of it, and tell whether the
    /// edge answers it itself ([`DirectSocket::answer_early`]) or leaves it to pingora.
    ///
    /// `pending` holds bytes read from the socket and not yet answered: a request pipelined
    /// behind one answered here, or, after [`Pending::Other`], what pingora must read first
    /// (the caller hands it back to pingora's stream).
    pub(crate) async fn next_request(&self, early: &EarlyHits, pending: &mut Vec<u8>) -> io::Result<Pending> {
        if !pending.is_empty() {
            return Ok(early.take(pending));
        }
        loop {
            self.socket.readable().await?;
            let mut read = None;
            let outcome = self.socket.try_io(Interest::READABLE, || {
                let mut buf = [MaybeUninit::<u8>::uninit(); READ];
                let ((got, _), _) = rustix::net::recv(&self.socket, &mut buf[..], RecvFlags::empty())?;
                let drained = got.len() < READ;
                read = Some(if got.is_empty() {
                    Pending::Closed
                } else {
                    pending.extend_from_slice(got);
                    early.take(pending)
                });
                // Fewer bytes than asked for: the socket is empty. Saying so now spares the
                // next request a read that would only find nothing (edge-triggered: bytes that
                // arrive later raise a new event).
                if drained {
                    Err(io::ErrorKind::WouldBlock.into())
                } else {
                    Ok(())
                }
            });
            match (read, outcome) {
                (Some(read), _) => return Ok(read),
                (None, Err(e)) if e.kind() == io::ErrorKind::WouldBlock => continue,
                (None, Err(e)) => return Err(e),
                (None, Ok(())) => unreachable!("a read that succeeded sets its outcome"),
            }
        }
    }

    /// Answer the request [`DirectSocket::next_request`] found with `hit`, counting it as
    /// pingora's path would.
    pub(crate) async fn answer_early(
        &self,
        early: &EarlyHits,
        request: &HlsRequest,
        hit: &FreshHit,
        client: Option<IpAddr>,
        last: &mut LastCounted,
    ) -> io::Result<()> {
        let metrics = &early.metrics;
        metrics.requests.inc();
        // Before sending, as on pingora's path: once the viewer has the answer, the count has it.
        metrics.cache_hits.inc();
        metrics.early_hits.inc();
        metrics.direct_sent(sent_from(hit));
        self.send_hit(hit, &HitRange::Whole).await?;
        crate::proxy::count_answer(metrics, &early.viewers, early.storage, Some(request), client, Some(last), hit.size);
        Ok(())
    }

    async fn send_all(&self, mut buf: &[u8], more: bool) -> io::Result<()> {
        let flags = if more { SendFlags::MORE | SendFlags::NOSIGNAL } else { SendFlags::NOSIGNAL };
        while !buf.is_empty() {
            let n = self.when_writable(|fd| rustix::net::send(fd, buf, flags)).await?;
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Send a fresh hit: its head (with `age`) and the bytes of its body that `range` names.
    pub(crate) async fn send_hit(&self, hit: &FreshHit, range: &HitRange) -> io::Result<()> {
        let mut head = hit_response_head(hit, range);
        let bytes = match range {
            HitRange::Whole => 0..hit.size,
            HitRange::Part(part) => part.clone(),
            HitRange::Unsatisfiable => 0..0,
        };
        match &hit.body {
            Body::Memory(chunks) => {
                let slices: Vec<Bytes> = slice_chunks(chunks, bytes.clone()).collect();
                if bytes.len() <= 64 * 1024 {
                    // Small: head and body in one send.
                    for slice in &slices {
                        head.put_slice(slice);
                    }
                    self.send_all(&head, false).await?;
                } else {
                    self.send_all(&head, true).await?;
                    for (i, slice) in slices.iter().enumerate() {
                        self.send_all(slice, i + 1 < slices.len()).await?;
                    }
                }
                Ok(())
            }
            Body::File(body) => {
                self.send_all(&head, cork_head(bytes.len())).await?;
                let end = bytes.end.min(body.len) as u64;
                let mut offset = bytes.start as u64;
                while offset < end {
                    let left = (end - offset) as usize;
                    let n =
                        self.when_writable(|fd| rustix::fs::sendfile(fd, &body.file, Some(&mut offset), left)).await?;
                    if n == 0 {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "cached body shorter than stored"));
                    }
                }
                Ok(())
            }
        }
    }
}

/// How [`DirectSocket::send_hit`] sends `hit`'s body ([`SENDFILE`] or [`MEMORY`]), for the
/// metrics. Counted before sending, as the hit itself: once the viewer has the answer, the
/// counts include it.
pub(crate) fn sent_from(hit: &FreshHit) -> &'static str {
    match hit.body {
        Body::File(_) => SENDFILE,
        Body::Memory(_) => MEMORY,
    }
}

/// Body bytes from which a file hit's head is sent corked (`MSG_MORE`), to leave in the same
/// segment as the start of the body.
///
/// Measured on loopback at 256 connections (`edge-bench`): a corked head in front of a 100 KB
/// part cost the edge 25-30% more CPU per hit (`perf`: the extra in the kernel's `tcp_write_xmit`
/// with interrupts off and in softirqs run on interrupt exit), while a head sent on its own in
/// front of a 1 MB segment let the viewer's receive window close about 40 times as often, and
/// the edge served 40% fewer segments per second.
const CORK_HEAD_FROM: usize = 256 * 1024;

/// Whether the head of a hit with `body` bytes goes out corked ([`CORK_HEAD_FROM`]).
fn cork_head(body: usize) -> bool {
    body >= CORK_HEAD_FROM
}

/// Which bytes of a fresh hit go out, from the request's `Range` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HitRange {
    /// No (usable) range: 200 with the whole body.
    Whole,
    /// One satisfiable range: 206 with these bytes.
    Part(Range<usize>),
    /// A range that starts past the end: 416, no body.
    Unsatisfiable,
}

impl HitRange {
    /// Body bytes this answer carries for an object of `size` bytes.
    pub(crate) fn body_len(&self, size: usize) -> usize {
        match self {
            HitRange::Whole => size,
            HitRange::Part(part) => part.len(),
            HitRange::Unsatisfiable => 0,
        }
    }
}

/// Ranges per request at most, as pingora's default range filter allows.
const MAX_RANGES: usize = 200;

/// What `req`'s `Range` header asks of a stored answer with `status` and a body of `size` bytes,
/// by pingora's own range rules, so that a hit sent here and one sent by pingora's hit path
/// agree. `None` for several ranges: the multipart answer is left to pingora's hit path.
pub(crate) fn hit_range(req: &RequestHeader, status: StatusCode, size: usize) -> Option<HitRange> {
    if !req.headers.contains_key(header::RANGE) {
        return Some(HitRange::Whole);
    }
    let mut resp = ResponseHeader::build(status, Some(1)).ok()?;
    resp.insert_header(header::CONTENT_LENGTH, size).ok()?;
    match pingora_proxy::range_header_filter(req, &mut resp, Some(MAX_RANGES)) {
        RangeType::None => Some(HitRange::Whole),
        RangeType::Single(part) => Some(HitRange::Part(part)),
        RangeType::Invalid => Some(HitRange::Unsatisfiable),
        RangeType::Multi(_) => None,
    }
}

/// The pieces of `chunks` (a body cut in consecutive chunks) that fall in `range`.
fn slice_chunks(chunks: &[Bytes], range: Range<usize>) -> impl Iterator<Item = Bytes> + '_ {
    let mut offset = 0;
    chunks.iter().filter_map(move |chunk| {
        let (start, end) = (offset, offset + chunk.len());
        offset = end;
        let from = range.start.max(start);
        let to = range.end.min(end);
        (from < to).then(|| chunk.slice(from - start..to - start))
    })
}

/// The whole HTTP/1.1 head of a fresh hit answered with `range`, blank line included.
fn hit_response_head(hit: &FreshHit, range: &HitRange) -> BytesMut {
    let mut head = BytesMut::with_capacity(hit.head.len() + 128);
    // Numbers without `fmt` and its `String`s: this runs for every direct hit.
    let mut age = itoa::Buffer::new();
    let age = age.format(hit.age_secs);
    let mut size = itoa::Buffer::new();
    let size = size.format(hit.size);
    match range {
        HitRange::Whole => {
            put_status_line(&mut head, hit.status);
            head.put_slice(&hit.head);
            head.put_slice(b"accept-ranges: bytes\r\ncontent-length: ");
            head.put_slice(size.as_bytes());
        }
        HitRange::Part(part) => {
            put_status_line(&mut head, StatusCode::PARTIAL_CONTENT);
            head.put_slice(&hit.head);
            head.put_slice(b"content-length: ");
            head.put_slice(itoa::Buffer::new().format(part.len()).as_bytes());
            // The range end is inclusive on the wire.
            let content_range = format!("bytes {}-{}/{size}", part.start, part.end.saturating_sub(1));
            head.put_slice(b"\r\ncontent-range: ");
            head.put_slice(content_range.as_bytes());
        }
        HitRange::Unsatisfiable => {
            // No body, so none of the object's own headers (type, caching) apply.
            put_status_line(&mut head, StatusCode::RANGE_NOT_SATISFIABLE);
            head.put_slice(b"x-cache: HIT\r\ncontent-length: 0\r\ncontent-range: bytes */");
            head.put_slice(size.as_bytes());
        }
    }
    head.put_slice(b"\r\nage: ");
    head.put_slice(age.as_bytes());
    head.put_slice(b"\r\n\r\n");
    head
}

fn put_status_line(out: &mut BytesMut, status: StatusCode) {
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_slice(b" ");
    out.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.put_slice(b"\r\n");
}

/// The headers of a hit on an object with this origin header, for [`hit_response_head`]: the
/// origin's headers and `x-cache: HIT`, without the status line, framing (`content-length` is
/// per answer, with its range) and `age`.
pub(crate) fn hit_headers(header: &ResponseHeader) -> Bytes {
    let mut out = BytesMut::with_capacity(256);
    for (name, value) in &header.headers {
        // Framing and hop-by-hop headers are the edge's own; age is added per hit.
        if matches!(
            name.as_str(),
            "content-length"
                | "transfer-encoding"
                | "connection"
                | "keep-alive"
                | "age"
                | "x-cache"
                | "accept-ranges"
                | "content-range"
        ) {
            continue;
        }
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"x-cache: HIT\r\n");
    out.freeze()
}
