//! The one grammar of LL-HLS object names: what the playlist writer puts in URIs, what the
//! origin's router accepts, and what the edge turns into a cache key. All three call this crate,
//! so they cannot disagree (an edge that cached `seg01.m4s` would keep a second copy of `seg1.m4s`,
//! or a copy of an object the origin never serves).
//!
//! ```text
//! /hls/{channel}/master.m3u8                                   HlsPath::Master
//! /hls/{channel}/{rendition}/index.m3u8?_HLS_msn=M&_HLS_part=P&_HLS_skip=YES
//!                                                              RenditionFile::Playlist + PlaylistParams
//! /hls/{channel}/{rendition}/init-{id}.mp4                     RenditionFile::Init
//! /hls/{channel}/{rendition}/seg{msn}.m4s                      RenditionFile::Segment
//! /hls/{channel}/{rendition}/part{msn}.{index}.m4s             RenditionFile::Part
//! /hls/{channel}/poster.jpg                                    HlsPath::Image (Image::Live)
//! /vod/{recording}/master.m3u8, /vod/{recording}/{rendition}/{index.m3u8, init-{id}.mp4, seg{n}.m4s}
//! /vod/{recording}/thumb{n}.jpg                                HlsPath::Image (Image::Thumbnail)
//! ```
//!
//! Numbers are decimal without sign or leading zero, so every object has exactly one name. The
//! header's name carries an [`InitId`] (16 lowercase hex digits) that changes with every
//! broadcast and track configuration: headers are cached as immutable, so a reconnect at another
//! resolution must not be served the previous broadcast's header under the same URL.
//! Channel and rendition ids are [`is_name`]s. A tiny crate of its own rather than a module of
//! the packager: the edge needs the grammar without compiling the packager (and its fuzz target
//! builds in seconds).

use std::fmt;
use std::str::FromStr;

/// The path prefix of everything the origin serves.
pub const PREFIX: &str = "/hls/";
/// The path prefix of recordings (VOD): `/vod/{recording}/master.m3u8` and below, the same
/// names as live.
pub const VOD_PREFIX: &str = "/vod/";
/// The multivariant playlist of a channel.
pub const MASTER_PLAYLIST: &str = "master.m3u8";
/// The media playlist of a rendition.
pub const MEDIA_PLAYLIST: &str = "index.m3u8";
/// `_HLS_msn`: the media sequence number a blocking playlist request waits for.
pub const PARAM_MSN: &str = "_HLS_msn";
/// `_HLS_part`: the part of `_HLS_msn` a blocking playlist request waits for.
pub const PARAM_PART: &str = "_HLS_part";
/// `_HLS_skip`: ask for a delta update.
pub const PARAM_SKIP: &str = "_HLS_skip";

/// An object below a rendition, by file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RenditionFile {
    /// `index.m3u8`
    Playlist,
    /// `init-{id}.mp4`: the CMAF header of one broadcast and track configuration.
    Init(InitId),
    /// `seg{msn}.m4s`
    Segment(u64),
    /// `part{msn}.{index}.m4s`
    Part(u64, u32),
}

impl RenditionFile {
    /// Parses a file name; `None` for anything the origin does not serve.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            MEDIA_PLAYLIST => Some(RenditionFile::Playlist),
            _ if name.starts_with("init-") => {
                let hex = name.strip_prefix("init-")?.strip_suffix(".mp4")?;
                let canonical = hex.len() == 16 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
                canonical.then(|| u64::from_str_radix(hex, 16).ok().map(|id| RenditionFile::Init(InitId(id)))).flatten()
            }
            _ => {
                let stem = name.strip_suffix(".m4s")?;
                if let Some(msn) = stem.strip_prefix("seg") {
                    return Some(RenditionFile::Segment(number(msn)?));
                }
                let (msn, index) = stem.strip_prefix("part")?.split_once('.')?;
                Some(RenditionFile::Part(number(msn)?, number(index)?))
            }
        }
    }

    /// Parts, segments and the header never change once published: cacheable as immutable.
    pub fn is_immutable(self) -> bool {
        !matches!(self, RenditionFile::Playlist)
    }
}

/// The file name, as playlists write it and [`RenditionFile::parse`] reads it back.
impl fmt::Display for RenditionFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RenditionFile::Playlist => f.write_str(MEDIA_PLAYLIST),
            RenditionFile::Init(id) => write!(f, "init-{:016x}.mp4", id.0),
            RenditionFile::Segment(msn) => write!(f, "seg{msn}.m4s"),
            RenditionFile::Part(msn, index) => write!(f, "part{msn}.{index}.m4s"),
        }
    }
}

/// Which CMAF header an `init-{id}.mp4` names: the origin derives it from the broadcast and the
/// header's bytes, and serves only the current one under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InitId(pub u64);

/// A decimal number as the playlists write it: digits only, no leading zero (`0` itself aside),
/// within `T`'s range.
pub fn number<T: FromStr>(s: &str) -> Option<T> {
    let canonical = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    canonical.then(|| s.parse().ok()).flatten()
}

/// A channel or rendition id as the origin generates them: 1 to 128 of `[A-Za-z0-9._-]`, not
/// `.` or `..`; nothing to escape in a URL, a cache key or a log line.
pub fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// What an `/hls/` path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HlsPath<'a> {
    /// `/hls/{channel}/master.m3u8`
    Master { channel: &'a str },
    /// `/hls/{channel}/{rendition}/{file}`
    Rendition { channel: &'a str, rendition: &'a str, file: RenditionFile },
    /// `/hls/{channel}/poster.jpg` (the live picture, refreshed every few seconds) or
    /// `/vod/{recording}/thumb{n}.jpg` (its poster, 0, and pictures along the timeline).
    Image { channel: &'a str, image: Image },
}

/// A still picture of a channel or recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Image {
    /// `poster.jpg`: the live channel now.
    Live,
    /// `thumb{n}.jpg`: a recording's picture `n` (0 is its poster).
    Thumbnail(u32),
}

/// The live picture's file name.
pub const LIVE_POSTER: &str = "poster.jpg";

impl fmt::Display for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Image::Live => f.write_str(LIVE_POSTER),
            Image::Thumbnail(n) => write!(f, "thumb{n}.jpg"),
        }
    }
}

impl<'a> HlsPath<'a> {
    /// Parses a request path (no query); `None` for anything the origin does not serve.
    pub fn parse(path: &'a str) -> Option<Self> {
        Self::parse_below(path, PREFIX).filter(|p| !matches!(p, HlsPath::Image { image: Image::Thumbnail(_), .. }))
    }

    /// Parses a recording's path, `/vod/{recording}/...` (same names below the id; the
    /// "channel" is the recording id). Recordings have no parts.
    pub fn parse_vod(path: &'a str) -> Option<Self> {
        Self::parse_below(path, VOD_PREFIX).filter(|p| {
            !matches!(
                p,
                HlsPath::Rendition { file: RenditionFile::Part(..), .. } | HlsPath::Image { image: Image::Live, .. }
            )
        })
    }

    fn parse_below(path: &'a str, prefix: &str) -> Option<Self> {
        let rest = path.strip_prefix(prefix)?;
        let mut segments = rest.split('/');
        let channel = segments.next().filter(|c| is_name(c))?;
        match (segments.next(), segments.next(), segments.next()) {
            (Some(MASTER_PLAYLIST), None, None) => Some(HlsPath::Master { channel }),
            (Some(LIVE_POSTER), None, None) => Some(HlsPath::Image { channel, image: Image::Live }),
            (Some(name), None, None) => {
                let n = name.strip_prefix("thumb")?.strip_suffix(".jpg")?;
                Some(HlsPath::Image { channel, image: Image::Thumbnail(number(n)?) })
            }
            (Some(rendition), Some(file), None) if is_name(rendition) => {
                Some(HlsPath::Rendition { channel, rendition, file: RenditionFile::parse(file)? })
            }
            _ => None,
        }
    }

    pub fn channel(&self) -> &'a str {
        match self {
            HlsPath::Master { channel } | HlsPath::Rendition { channel, .. } | HlsPath::Image { channel, .. } => {
                channel
            }
        }
    }
}

/// The URI of a sibling rendition's playlist, relative to a rendition directory (for
/// `EXT-X-RENDITION-REPORT`).
pub fn sibling_playlist(rendition: &str) -> String {
    format!("../{rendition}/{MEDIA_PLAYLIST}")
}

/// The URI of a rendition's playlist, relative to the channel directory (for the multivariant
/// playlist).
pub fn rendition_playlist(rendition: &str) -> String {
    format!("{rendition}/{MEDIA_PLAYLIST}")
}

/// The LL-HLS query parameters of a media playlist request. Other parameters are ignored; a
/// repeated one counts by its last value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlaylistParams {
    /// `_HLS_msn`
    pub msn: Option<u64>,
    /// `_HLS_part`
    pub part: Option<u32>,
    /// `_HLS_skip=YES` (or `v2`): answer with a delta update.
    pub skip: bool,
}

/// An `_HLS_*` parameter with a value outside the grammar (the origin answers 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedParam {
    /// Which parameter.
    pub name: &'static str,
}

impl fmt::Display for MalformedParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed {} query parameter", self.name)
    }
}

impl std::error::Error for MalformedParam {}

impl PlaylistParams {
    /// Parses a URL query string (without `?`).
    pub fn parse(query: &str) -> Result<Self, MalformedParam> {
        let mut params = PlaylistParams::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                PARAM_MSN => params.msn = Some(number(value).ok_or(MalformedParam { name: PARAM_MSN })?),
                PARAM_PART => params.part = Some(number(value).ok_or(MalformedParam { name: PARAM_PART })?),
                PARAM_SKIP => match value {
                    "YES" | "v2" => params.skip = true,
                    _ => return Err(MalformedParam { name: PARAM_SKIP }),
                },
                _ => {}
            }
        }
        Ok(params)
    }

    /// A blocking request: it names the update it waits for.
    pub fn is_blocking(&self) -> bool {
        self.msn.is_some()
    }

    /// The parameters in one canonical order and spelling (`?_HLS_msn=M&_HLS_part=P&_HLS_skip=YES`,
    /// each only if set; empty if none): requests that mean the same get the same text.
    pub fn canonical_query(&self) -> String {
        let mut out = String::new();
        let mut add = |name: &str, value: &dyn fmt::Display| {
            out.push(if out.is_empty() { '?' } else { '&' });
            out.push_str(name);
            out.push('=');
            out.push_str(&value.to_string());
        };
        if let Some(msn) = self.msn {
            add(PARAM_MSN, &msn);
        }
        if let Some(part) = self.part {
            add(PARAM_PART, &part);
        }
        if self.skip {
            add(PARAM_SKIP, &"YES");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        for file in [
            RenditionFile::Playlist,
            RenditionFile::Init(InitId(0)),
            RenditionFile::Init(InitId(0x0123_4567_89ab_cdef)),
            RenditionFile::Init(InitId(u64::MAX)),
            RenditionFile::Segment(0),
            RenditionFile::Segment(17_900_000_123),
            RenditionFile::Part(12, 0),
            RenditionFile::Part(u64::MAX, u32::MAX),
        ] {
            assert_eq!(RenditionFile::parse(&file.to_string()), Some(file), "{file}");
        }
        assert_eq!(RenditionFile::parse("part12.3.m4s"), Some(RenditionFile::Part(12, 3)));
        assert_eq!(RenditionFile::parse("init-00000000000000ff.mp4"), Some(RenditionFile::Init(InitId(255))));
    }

    #[test]
    fn recordings_use_the_same_names_without_parts() {
        assert_eq!(HlsPath::parse_vod("/vod/r1/master.m3u8"), Some(HlsPath::Master { channel: "r1" }));
        assert_eq!(
            HlsPath::parse_vod("/vod/r1/source/seg3.m4s"),
            Some(HlsPath::Rendition { channel: "r1", rendition: "source", file: RenditionFile::Segment(3) })
        );
        assert_eq!(HlsPath::parse_vod("/vod/r1/source/part3.0.m4s"), None);
        assert_eq!(HlsPath::parse_vod("/hls/r1/master.m3u8"), None);
        assert_eq!(HlsPath::parse("/vod/r1/master.m3u8"), None);
        assert_eq!(HlsPath::parse_vod("/vod/../master.m3u8"), None);
        assert_eq!(HlsPath::parse("/hls/c1/poster.jpg"), Some(HlsPath::Image { channel: "c1", image: Image::Live }));
        assert_eq!(
            HlsPath::parse_vod("/vod/r1/thumb3.jpg"),
            Some(HlsPath::Image { channel: "r1", image: Image::Thumbnail(3) })
        );
        assert_eq!(HlsPath::parse("/hls/c1/thumb3.jpg"), None);
        assert_eq!(HlsPath::parse_vod("/vod/r1/poster.jpg"), None);
        assert_eq!(HlsPath::parse_vod("/vod/r1/thumb03.jpg"), None);
        assert_eq!(Image::Thumbnail(3).to_string(), "thumb3.jpg");
    }

    #[test]
    fn leading_zeros_and_other_spellings_are_refused() {
        for bad in [
            "seg.m4s",
            "seg01.m4s",
            "seg00.m4s",
            "part01.2.m4s",
            "part1.02.m4s",
            "seg+1.m4s",
            "seg-1.m4s",
            "seg 1.m4s",
            "part1.m4s",
            "part1.2.3.m4s",
            "part1.x.m4s",
            "part1.4294967296.m4s",
            "seg18446744073709551616.m4s",
            "seg1.mp4",
            "SEG1.m4s",
            "index.m3u",
            "init.mp4",
            "init-.mp4",
            "init-ff.mp4",
            "init-00000000000000FF.mp4",
            "init-000000000000000ff.mp4",
            "init-0x00000000000000f.mp4",
            "init-00000000000000ff.m4s",
            "",
        ] {
            assert_eq!(RenditionFile::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn paths() {
        assert_eq!(HlsPath::parse("/hls/ch1/master.m3u8"), Some(HlsPath::Master { channel: "ch1" }));
        assert_eq!(
            HlsPath::parse("/hls/ch1/720p/seg5.m4s"),
            Some(HlsPath::Rendition { channel: "ch1", rendition: "720p", file: RenditionFile::Segment(5) })
        );
        for bad in ["/", "/hls/", "/hls/ch1", "/hls/../x/index.m3u8", "/hls/ch1/a/b/c.m4s", "/hls/ch%2F1/s/index.m3u8"]
        {
            assert_eq!(HlsPath::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn playlist_params() {
        let p = PlaylistParams::parse("x=1&_HLS_part=2&_HLS_msn=10&_HLS_msn=11").unwrap();
        assert_eq!(p, PlaylistParams { msn: Some(11), part: Some(2), skip: false });
        assert_eq!(p.canonical_query(), "?_HLS_msn=11&_HLS_part=2");
        let p = PlaylistParams::parse("_HLS_skip=v2").unwrap();
        assert_eq!(p.canonical_query(), "?_HLS_skip=YES");
        assert_eq!(PlaylistParams::parse("").unwrap().canonical_query(), "");
        for bad in ["_HLS_msn=01", "_HLS_msn=-1", "_HLS_msn=", "_HLS_part=x", "_HLS_skip=NO", "_HLS_msn=1%26x"] {
            assert!(PlaylistParams::parse(bad).is_err(), "{bad}");
        }
    }
}
