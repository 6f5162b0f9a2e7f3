//! LL-HLS cache rules: which object a path names, its cache key, and how long it stays fresh.
//!
//! Pure functions over the request path and query, no I/O, so the rules are tested on their own.

use std::time::Duration;

/// What an `/hls/` path names, as the origin lays objects out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// `master.m3u8`: the multivariant playlist.
    Master,
    /// `{rendition}/index.m3u8` without `_HLS_msn`: always the newest window.
    Playlist,
    /// `{rendition}/index.m3u8?_HLS_msn=..`: names the update it waits for.
    BlockingPlaylist,
    /// `init.mp4`.
    Init,
    /// `seg{msn}.m4s`.
    Segment,
    /// `part{msn}.{index}.m4s`.
    Part,
}

impl ObjectKind {
    /// The `kind` label of `bitriver_edge_origin_requests_total`.
    pub fn label(self) -> &'static str {
        match self {
            ObjectKind::Master | ObjectKind::Playlist | ObjectKind::BlockingPlaylist => "playlist",
            ObjectKind::Init => "init",
            ObjectKind::Segment => "segment",
            ObjectKind::Part => "part",
        }
    }

    /// Init, segments and parts never change once published.
    pub fn is_immutable(self) -> bool {
        matches!(self, ObjectKind::Init | ObjectKind::Segment | ObjectKind::Part)
    }
}

/// A parsed `/hls/{channel}/...` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HlsRequest {
    pub channel: String,
    pub kind: ObjectKind,
    /// Path plus the LL-HLS query parameters that change the answer, in a fixed order: the
    /// cache key, and what is sent to the origin.
    pub key: String,
}

/// The query parameters that select a different playlist; every other one is dropped.
const KEYED_PARAMS: [&str; 3] = ["_HLS_msn", "_HLS_part", "_HLS_skip"];

/// Parse an edge request path. `None` if it is not an object the origin serves.
pub fn parse(path: &str, query: Option<&str>) -> Option<HlsRequest> {
    let rest = path.strip_prefix("/hls/")?;
    let mut segments = rest.split('/');
    let channel = segments.next().filter(|c| is_name(c))?;
    let (kind, params) = match (segments.next(), segments.next(), segments.next()) {
        (Some("master.m3u8"), None, None) => (ObjectKind::Master, Vec::new()),
        (Some(rendition), Some(file), None) if is_name(rendition) => match file {
            "index.m3u8" => {
                let params = keyed_params(query.unwrap_or(""));
                let blocking = params.iter().any(|(k, _)| *k == "_HLS_msn");
                (if blocking { ObjectKind::BlockingPlaylist } else { ObjectKind::Playlist }, params)
            }
            "init.mp4" => (ObjectKind::Init, Vec::new()),
            f if f.starts_with("seg") && f.ends_with(".m4s") && is_name(f) => (ObjectKind::Segment, Vec::new()),
            f if f.starts_with("part") && f.ends_with(".m4s") && is_name(f) => (ObjectKind::Part, Vec::new()),
            _ => return None,
        },
        _ => return None,
    };
    let mut key = String::with_capacity(path.len() + 32);
    key.push_str(path);
    for (i, (name, value)) in params.iter().enumerate() {
        key.push(if i == 0 { '?' } else { '&' });
        key.push_str(name);
        key.push('=');
        key.push_str(value);
    }
    Some(HlsRequest { channel: channel.to_owned(), kind, key })
}

/// Channel and rendition ids and file names: what the origin generates, nothing to escape.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The keyed parameters present, in [`KEYED_PARAMS`] order; the first occurrence of each wins.
fn keyed_params(query: &str) -> Vec<(&'static str, &str)> {
    let mut found: [Option<&str>; 3] = [None; 3];
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if let Some(i) = KEYED_PARAMS.iter().position(|k| *k == name) {
            let safe = value.len() <= 20 && value.bytes().all(|b| b.is_ascii_alphanumeric());
            if found[i].is_none() && safe {
                found[i] = Some(value);
            }
        }
    }
    KEYED_PARAMS.iter().zip(found).filter_map(|(k, v)| v.map(|v| (*k, v))).collect()
}

/// Freshness rules of the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freshness {
    /// How long a plain (non-blocking) playlist is shared: a fraction of a part duration, so
    /// viewers polling together share one fetch yet never fall a part behind.
    pub playlist: Duration,
    /// Upper bound for blocking playlist responses (the origin says a target duration).
    pub blocking_playlist_max: Duration,
    /// Upper bound for the multivariant playlist.
    pub master_max: Duration,
    /// Immutable objects: until evicted, bounded so a long-lived edge forgets old broadcasts.
    pub immutable: Duration,
    /// How long after expiry a part or segment may still be served when the origin fails.
    pub stale_if_error: Duration,
}

impl Default for Freshness {
    fn default() -> Self {
        Freshness {
            playlist: Duration::from_millis(100),
            blocking_playlist_max: Duration::from_secs(6),
            master_max: Duration::from_secs(2),
            immutable: Duration::from_secs(3600),
            stale_if_error: Duration::from_secs(3600),
        }
    }
}

impl Freshness {
    /// How long a 200 answer for `kind` stays fresh, given the origin's `max-age` if any.
    pub fn ttl(&self, kind: ObjectKind, origin_max_age: Option<Duration>) -> Duration {
        match kind {
            ObjectKind::Playlist => self.playlist,
            ObjectKind::BlockingPlaylist => {
                origin_max_age.unwrap_or(self.blocking_playlist_max).min(self.blocking_playlist_max)
            }
            ObjectKind::Master => origin_max_age.unwrap_or(self.master_max).min(self.master_max),
            ObjectKind::Init | ObjectKind::Segment | ObjectKind::Part => self.immutable,
        }
    }

    /// Seconds a stale copy may be served when the origin fails: parts, segments, init only.
    pub fn stale_if_error_secs(&self, kind: ObjectKind) -> u32 {
        if kind.is_immutable() {
            u32::try_from(self.stale_if_error.as_secs()).unwrap_or(u32::MAX)
        } else {
            0
        }
    }
}

/// `max-age` from a `Cache-Control` value.
pub fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control.split(',').find_map(|d| {
        let (name, value) = d.trim().split_once('=')?;
        name.trim().eq_ignore_ascii_case("max-age").then(|| value.trim().parse().ok().map(Duration::from_secs))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_keys() {
        let r = parse("/hls/ch1/master.m3u8", Some("token=x")).unwrap();
        assert_eq!((r.channel.as_str(), r.kind, r.key.as_str()), ("ch1", ObjectKind::Master, "/hls/ch1/master.m3u8"));
        let r = parse("/hls/ch1/source/index.m3u8", Some("x=1&_HLS_part=2&_HLS_msn=10&_HLS_msn=11")).unwrap();
        assert_eq!(r.kind, ObjectKind::BlockingPlaylist);
        assert_eq!(r.key, "/hls/ch1/source/index.m3u8?_HLS_msn=10&_HLS_part=2");
        let r = parse("/hls/ch1/source/index.m3u8", Some("_HLS_skip=YES")).unwrap();
        assert_eq!((r.kind, r.key.as_str()), (ObjectKind::Playlist, "/hls/ch1/source/index.m3u8?_HLS_skip=YES"));
        assert_eq!(parse("/hls/ch1/source/index.m3u8", None).unwrap().kind, ObjectKind::Playlist);
        assert_eq!(parse("/hls/ch1/source/init.mp4", None).unwrap().kind, ObjectKind::Init);
        assert_eq!(parse("/hls/ch1/source/seg12.m4s", Some("a=b")).unwrap().key, "/hls/ch1/source/seg12.m4s");
        assert_eq!(parse("/hls/ch1/source/part12.3.m4s", None).unwrap().kind, ObjectKind::Part);
    }

    #[test]
    fn rejects_what_the_origin_does_not_serve() {
        for path in ["/", "/api/channels", "/hls/", "/hls/ch1", "/hls/../x/index.m3u8", "/hls/ch1/a/b/c.m4s"] {
            assert_eq!(parse(path, None), None, "{path}");
        }
        assert_eq!(parse("/hls/ch1/source/other.txt", None), None);
        assert_eq!(parse("/hls/ch%2F1/source/index.m3u8", None), None);
        // An odd parameter value is dropped, not put into the key.
        let r = parse("/hls/c/s/index.m3u8", Some("_HLS_msn=1%26x")).unwrap();
        assert_eq!(r.kind, ObjectKind::Playlist);
    }

    #[test]
    fn ttls() {
        let f = Freshness::default();
        assert_eq!(f.ttl(ObjectKind::Playlist, Some(Duration::from_secs(5))), f.playlist);
        assert_eq!(f.ttl(ObjectKind::BlockingPlaylist, Some(Duration::from_secs(2))), Duration::from_secs(2));
        assert_eq!(f.ttl(ObjectKind::BlockingPlaylist, Some(Duration::from_secs(60))), f.blocking_playlist_max);
        assert_eq!(f.stale_if_error_secs(ObjectKind::Playlist), 0);
        assert!(f.stale_if_error_secs(ObjectKind::Part) > 0);
        assert_eq!(max_age("public, max-age=31536000, immutable"), Some(Duration::from_secs(31_536_000)));
        assert_eq!(max_age("no-cache"), None);
    }
}
