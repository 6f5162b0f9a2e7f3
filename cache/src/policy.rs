//! LL-HLS cache rules: which object a path names, its cache key, and how long it stays fresh.
//!
//! Pure functions over the request path and query, no I/O, so the rules are tested on their own.
//! The names themselves (and the `_HLS_*` parameters) are the origin's grammar, [`hls_names`]:
//! the edge keys exactly the objects the origin serves, one key per object.

use std::time::Duration;

use hls_names::{HlsPath, MalformedParam, PlaylistParams, RenditionFile};

/// What an `/hls/` path names, as the origin lays objects out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// `master.m3u8`: the multivariant playlist.
    Master,
    /// `{rendition}/index.m3u8` without `_HLS_msn`: always the newest window.
    Playlist,
    /// `{rendition}/index.m3u8?_HLS_msn=..`: names the update it waits for.
    BlockingPlaylist,
    /// `init-{id}.mp4`.
    Init,
    /// `seg{msn}.m4s`.
    Segment,
    /// `part{msn}.{index}.m4s`.
    Part,
    /// `poster.jpg` (live, refreshed every few seconds) or a recording's `thumb{n}.jpg`.
    Image,
}

impl ObjectKind {
    /// The `kind` label of `bitriver_edge_origin_requests_total`.
    pub fn label(self) -> &'static str {
        match self {
            ObjectKind::Master | ObjectKind::Playlist | ObjectKind::BlockingPlaylist => "playlist",
            ObjectKind::Init => "init",
            ObjectKind::Segment => "segment",
            ObjectKind::Part => "part",
            ObjectKind::Image => "image",
        }
    }

    /// Init, segments and parts never change once published.
    pub fn is_immutable(self) -> bool {
        matches!(self, ObjectKind::Init | ObjectKind::Segment | ObjectKind::Part)
    }
}

/// A parsed `/hls/{channel}/...` or `/vod/{recording}/...` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HlsRequest {
    /// The channel, or for a recording its id.
    pub channel: String,
    /// A recording (`/vod/`): its origin is the node holding it, and it has no live viewers.
    pub vod: bool,
    pub kind: ObjectKind,
    /// Path plus the LL-HLS query parameters that change the answer, in a fixed order: the
    /// cache key, and what is sent to the origin.
    pub key: String,
}

/// Why the edge does not serve a request (it answers without asking the origin, as the origin
/// would).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotServed {
    /// Not an object the origin serves: 404.
    NotFound,
    /// A playlist request with a malformed `_HLS_*` parameter: 400.
    BadRequest(MalformedParam),
}

/// Parse an edge request path and query. The key is the path plus the LL-HLS parameters in
/// their canonical form ([`PlaylistParams::canonical_query`]); every other parameter is dropped.
pub fn parse(path: &str, query: Option<&str>) -> Result<HlsRequest, NotServed> {
    let (parsed, vod) = match HlsPath::parse(path) {
        Some(parsed) => (parsed, false),
        None => (HlsPath::parse_vod(path).ok_or(NotServed::NotFound)?, true),
    };
    let (kind, params) = match parsed {
        HlsPath::Master { .. } => (ObjectKind::Master, String::new()),
        HlsPath::Image { .. } => (ObjectKind::Image, String::new()),
        HlsPath::Rendition { file, .. } => match file {
            RenditionFile::Playlist => {
                let params = PlaylistParams::parse(query.unwrap_or("")).map_err(NotServed::BadRequest)?;
                let kind = if params.is_blocking() { ObjectKind::BlockingPlaylist } else { ObjectKind::Playlist };
                (kind, params.canonical_query())
            }
            RenditionFile::Init(_) => (ObjectKind::Init, String::new()),
            RenditionFile::Segment(_) => (ObjectKind::Segment, String::new()),
            RenditionFile::Part(..) => (ObjectKind::Part, String::new()),
        },
    };
    Ok(HlsRequest { channel: parsed.channel().to_owned(), vod, kind, key: format!("{path}{params}") })
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
            // The live picture changes every few seconds; a recording's never (the origin says).
            ObjectKind::Image => origin_max_age.unwrap_or(self.master_max).min(self.immutable),
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
    fn recordings_and_pictures_are_keyed_like_live_objects() {
        let r = parse("/vod/r1/source/seg3.m4s", Some("x=1")).unwrap();
        assert_eq!(
            (r.channel.as_str(), r.vod, r.kind, r.key.as_str()),
            ("r1", true, ObjectKind::Segment, "/vod/r1/source/seg3.m4s")
        );
        assert!(!parse("/hls/r1/source/seg3.m4s", None).unwrap().vod);
        assert_eq!(parse("/vod/r1/master.m3u8", None).unwrap().kind, ObjectKind::Master);
        assert_eq!(parse("/vod/r1/source/part3.1.m4s", None), Err(NotServed::NotFound), "recordings have no parts");
        let poster = parse("/hls/ch1/poster.jpg", None).unwrap();
        assert_eq!((poster.kind, poster.vod), (ObjectKind::Image, false));
        assert_eq!(parse("/vod/r1/thumb0.jpg", None).unwrap().kind, ObjectKind::Image);
        let rules = Freshness::default();
        assert_eq!(rules.ttl(ObjectKind::Image, Some(Duration::from_secs(5))), Duration::from_secs(5));
        assert_eq!(rules.ttl(ObjectKind::Image, Some(Duration::from_secs(31_536_000))), rules.immutable);
        assert_eq!(rules.ttl(ObjectKind::Image, None), rules.master_max);
    }

    #[test]
    fn kinds_and_keys() {
        let r = parse("/hls/ch1/master.m3u8", Some("token=x")).unwrap();
        assert_eq!((r.channel.as_str(), r.kind, r.key.as_str()), ("ch1", ObjectKind::Master, "/hls/ch1/master.m3u8"));
        // A repeated parameter counts by its last value, as at the origin.
        let r = parse("/hls/ch1/source/index.m3u8", Some("x=1&_HLS_part=2&_HLS_msn=10&_HLS_msn=11")).unwrap();
        assert_eq!(r.kind, ObjectKind::BlockingPlaylist);
        assert_eq!(r.key, "/hls/ch1/source/index.m3u8?_HLS_msn=11&_HLS_part=2");
        let r = parse("/hls/ch1/source/index.m3u8", Some("_HLS_skip=YES")).unwrap();
        assert_eq!((r.kind, r.key.as_str()), (ObjectKind::Playlist, "/hls/ch1/source/index.m3u8?_HLS_skip=YES"));
        assert_eq!(parse("/hls/ch1/source/index.m3u8", None).unwrap().kind, ObjectKind::Playlist);
        assert_eq!(parse("/hls/ch1/source/init-0123456789abcdef.mp4", None).unwrap().kind, ObjectKind::Init);
        assert_eq!(parse("/hls/ch1/source/init.mp4", None), Err(NotServed::NotFound), "an unversioned header");
        assert_eq!(parse("/hls/ch1/source/seg12.m4s", Some("a=b")).unwrap().key, "/hls/ch1/source/seg12.m4s");
        assert_eq!(parse("/hls/ch1/source/part12.3.m4s", None).unwrap().kind, ObjectKind::Part);
    }

    #[test]
    fn rejects_what_the_origin_does_not_serve() {
        for path in [
            "/",
            "/api/channels",
            "/hls/",
            "/hls/ch1",
            "/hls/../x/index.m3u8",
            "/hls/ch1/a/b/c.m4s",
            "/hls/ch1/source/other.txt",
            "/hls/ch%2F1/source/index.m3u8",
            // The origin has one name per object: no leading zeros.
            "/hls/ch1/source/seg01.m4s",
            "/hls/ch1/source/part7.01.m4s",
            "/hls/ch1/source/segx.m4s",
        ] {
            assert_eq!(parse(path, None), Err(NotServed::NotFound), "{path}");
        }
        // An odd parameter value is refused as the origin refuses it, never put into the key.
        assert!(matches!(parse("/hls/c/s/index.m3u8", Some("_HLS_msn=1%26x")), Err(NotServed::BadRequest(_))));
        assert!(matches!(parse("/hls/c/s/index.m3u8", Some("_HLS_msn=01")), Err(NotServed::BadRequest(_))));
    }

    /// The edge serves exactly the names of the origin's grammar (the origin's router parses with
    /// the same `hls_names`; `media/tests/origin.rs` checks that side).
    #[test]
    fn edge_and_origin_grammar_agree() {
        for file in [
            "index.m3u8",
            "init.mp4",
            "init-0123456789abcdef.mp4",
            "init-0123456789ABCDEF.mp4",
            "seg0.m4s",
            "seg10.m4s",
            "seg01.m4s",
            "seg00.m4s",
            "part3.0.m4s",
            "part03.0.m4s",
            "part3.00.m4s",
            "part3.m4s",
            "seg1.mp4",
            "SEG1.m4s",
            "seg-1.m4s",
            "seg+1.m4s",
            "master.m3u8",
        ] {
            let path = format!("/hls/ch/source/{file}");
            let origin = RenditionFile::parse(file).is_some();
            assert_eq!(parse(&path, None).is_ok(), origin, "{path}");
        }
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
