//! Reading a viewer's request before pingora does, for the hits that need none of it.
//!
//! Most requests a busy edge sees are plain `GET`s of parts and segments it holds fresh. For those
//! pingora's per-request work (a session, its proxy state machine, a parsed header map, every
//! phase) costs more than the answer itself, which [`crate::direct`] sends with `sendfile`. So on
//! plain-TCP connections the edge reads the request bytes itself: when they start with a complete
//! request that is a plain `GET` (this module, sans IO), and the object is a fresh immutable hit,
//! the edge takes exactly that request and answers it. Anything else goes to pingora with the
//! bytes read so far put back in front of its stream: ranges, conditionals, `HEAD`, HTTP/1.0,
//! `Connection: close`, a request with a body, a head not yet complete, or a malformed one
//! (pingora answers those with its own errors).

/// Headers a request may carry at most to be read here; more go to pingora.
const MAX_HEADERS: usize = 32;

/// A complete plain `GET` at the start of the pending bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainGet<'a> {
    /// The request target's path, as sent (origin form, no decoding).
    pub path: &'a str,
    /// Its query, without the `?`.
    pub query: Option<&'a str>,
    /// Bytes of the request head, blank line included: what to take off the socket.
    pub len: usize,
}

/// The request at the start of `pending` when it is a complete HTTP/1.1 `GET` with no body, no
/// range, no condition and that keeps the connection open; `None` for anything else, pingora's
/// to read.
pub fn plain_get(pending: &[u8]) -> Option<PlainGet<'_>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = request.parse(pending).ok()? else { return None };
    if request.method != Some("GET") || request.version != Some(1) {
        return None;
    }
    let target = request.path?;
    if !target.starts_with('/') {
        return None;
    }
    for header in request.headers.iter() {
        let name = header.name;
        let plain = if name.eq_ignore_ascii_case("connection") {
            // Only an explicit keep-alive: `close`, `upgrade` and lists are pingora's.
            header.value.eq_ignore_ascii_case(b"keep-alive")
        } else {
            !REFUSED.iter().any(|refused| name.eq_ignore_ascii_case(refused))
        };
        if !plain {
            return None;
        }
    }
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    Some(PlainGet { path, query, len })
}

/// Request headers that change what a hit's answer is (ranges, conditions) or how the request is
/// framed (a body, an upgrade): requests with any of them go to pingora.
const REFUSED: [&str; 11] = [
    "range",
    "if-range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "content-length",
    "transfer-encoding",
    "expect",
    "upgrade",
    "te",
];

#[cfg(test)]
mod tests {
    use super::*;

    const PART: &[u8] = b"GET /hls/demo/720p/part-12-3.m4s HTTP/1.1\r\nHost: edge\r\nUser-Agent: hls.js\r\n\r\n";

    #[test]
    fn a_plain_get_is_read_with_its_length() {
        let get = plain_get(PART).expect("a plain GET");
        assert_eq!(get.path, "/hls/demo/720p/part-12-3.m4s");
        assert_eq!(get.query, None);
        assert_eq!(get.len, PART.len());
    }

    #[test]
    fn pipelined_bytes_after_the_head_are_left_alone() {
        let mut pending = PART.to_vec();
        pending.extend_from_slice(b"GET /hls/demo/720p/part-12-4.m4s HTTP/1.1\r\n");
        let get = plain_get(&pending).expect("the first request is complete");
        assert_eq!(get.len, PART.len(), "only the first request is taken");
    }

    #[test]
    fn the_query_is_split_from_the_path() {
        let get = plain_get(b"GET /hls/demo/index.m3u8?_HLS_msn=4&_HLS_part=1 HTTP/1.1\r\nHost: e\r\n\r\n").unwrap();
        assert_eq!(get.path, "/hls/demo/index.m3u8");
        assert_eq!(get.query, Some("_HLS_msn=4&_HLS_part=1"));
    }

    #[test]
    fn an_explicit_keep_alive_is_plain() {
        let get = plain_get(b"GET /a HTTP/1.1\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(get.is_some());
    }

    #[test]
    fn everything_else_is_left_to_pingora() {
        let refused: [&[u8]; 14] = [
            // Incomplete: the rest may come in the next segment.
            b"GET /hls/demo/720p/part-12-3.m4s HTTP/1.1\r\nHost: edge\r\n",
            b"HEAD /a HTTP/1.1\r\n\r\n",
            b"POST /a HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            b"GET /a HTTP/1.0\r\n\r\n",
            b"GET http://edge/a HTTP/1.1\r\n\r\n",
            b"GET /a HTTP/1.1\r\nRange: bytes=0-10\r\n\r\n",
            b"GET /a HTTP/1.1\r\nIf-None-Match: \"x\"\r\n\r\n",
            b"GET /a HTTP/1.1\r\nif-modified-since: Thu, 01 Jan 1970 00:00:00 GMT\r\n\r\n",
            b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\n",
            b"GET /a HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"GET /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            b"GET /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            // Malformed: pingora answers it with its own error.
            b"GET /a HTTP/1.1\r\nBad Header\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ];
        for pending in refused {
            assert_eq!(plain_get(pending), None, "{}", String::from_utf8_lossy(pending));
        }
    }

    #[test]
    fn too_many_headers_are_pingoras() {
        let mut pending = b"GET /a HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            pending.extend_from_slice(format!("x-{i}: y\r\n").as_bytes());
        }
        pending.extend_from_slice(b"\r\n");
        assert_eq!(plain_get(&pending), None);
    }
}
