//! Reading HLS playlists as a player does: the multivariant playlist's variants, and a media
//! playlist's segments, LL-HLS parts, preload hint, delta-update skip and server control.
//!
//! Our own parser: `media` only renders playlists, and a load generator must read what any server
//! sends (including other servers' spellings) without panicking. Input is bounded by the caller
//! (the HTTP driver caps playlist bodies); here the number of segments and parts kept is bounded
//! too, so a hostile playlist costs at most `MAX_ENTRIES` entries. Unknown tags are ignored, as
//! players do.

use std::fmt;

/// Segments (and parts) kept from one playlist; more is an error, not a silent truncation.
const MAX_ENTRIES: usize = 20_000;

/// Why a playlist cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PlaylistError {
    /// The text does not start with `#EXTM3U`.
    NotM3u8,
    /// A multivariant playlist without any `EXT-X-STREAM-INF`.
    NoVariants,
    /// A tag whose value cannot be read; the tag name and why.
    BadTag(&'static str, String),
    /// More than [`MAX_ENTRIES`] segments or parts.
    TooLarge,
}

impl fmt::Display for PlaylistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlaylistError::NotM3u8 => f.write_str("not an M3U8 playlist (no #EXTM3U)"),
            PlaylistError::NoVariants => f.write_str("multivariant playlist lists no variant"),
            PlaylistError::BadTag(tag, why) => write!(f, "bad {tag}: {why}"),
            PlaylistError::TooLarge => write!(f, "playlist lists more than {MAX_ENTRIES} entries"),
        }
    }
}

impl std::error::Error for PlaylistError {}

/// One `EXT-X-STREAM-INF` entry of a multivariant playlist.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Variant {
    /// As written (relative to the multivariant playlist's URL).
    pub(crate) uri: String,
    /// Peak bits per second: what hls.js compares with its bandwidth estimate.
    pub(crate) bandwidth: u64,
}

/// One LL-HLS part (`EXT-X-PART`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Part {
    pub(crate) uri: String,
    /// Seconds.
    pub(crate) duration: f64,
    pub(crate) independent: bool,
}

/// A media segment as listed: complete (with `uri`, after `EXTINF`) or the partial segment at the
/// live edge (parts only, `uri` is `None`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Segment {
    pub(crate) msn: u64,
    /// `EXTINF` seconds of a complete segment; the sum of the listed parts of a partial one.
    pub(crate) duration: f64,
    pub(crate) uri: Option<String>,
    /// Wall-clock start of the segment, ms since the Unix epoch: its own
    /// `EXT-X-PROGRAM-DATE-TIME`, else the previous segment's start plus its duration.
    pub(crate) program_date_time: Option<i64>,
    /// Parts, in order; empty when the playlist no longer lists this segment's parts.
    pub(crate) parts: Vec<Part>,
}

impl Segment {
    /// Wall-clock start of part `index`, ms since the epoch.
    pub(crate) fn part_start(&self, index: usize) -> Option<i64> {
        let before: f64 = self.parts.iter().take(index).map(|p| p.duration).sum();
        self.program_date_time.map(|pdt| pdt + (before * 1000.0).round() as i64)
    }
}

/// A media playlist.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct MediaPlaylist {
    pub(crate) target_duration: f64,
    /// `EXT-X-PART-INF:PART-TARGET`: present in LL-HLS playlists.
    pub(crate) part_target: Option<f64>,
    pub(crate) media_sequence: u64,
    /// `CAN-BLOCK-RELOAD=YES`.
    pub(crate) can_block_reload: bool,
    /// `CAN-SKIP-UNTIL`: the server answers `_HLS_skip=YES` with a delta update.
    pub(crate) can_skip_until: Option<f64>,
    /// `PART-HOLD-BACK`: how far behind the live edge a low-latency player starts.
    pub(crate) part_hold_back: Option<f64>,
    /// `EXT-X-MAP` URI.
    pub(crate) map_uri: Option<String>,
    /// `EXT-X-SKIP:SKIPPED-SEGMENTS`: this is a delta update missing that many segments.
    pub(crate) skipped: u64,
    pub(crate) segments: Vec<Segment>,
    /// `EXT-X-PRELOAD-HINT:TYPE=PART` URI: the next part, requestable before it exists.
    pub(crate) preload_hint: Option<String>,
    pub(crate) endlist: bool,
}

impl MediaPlaylist {
    /// The part a blocking reload asks for: the one after the last listed part. A partial
    /// segment's next part is in the same segment; after a complete one it is the next segment's
    /// first.
    pub(crate) fn next_part(&self) -> Option<(u64, u32)> {
        let last = self.segments.last()?;
        Some(match &last.uri {
            None => (last.msn, last.parts.len() as u32),
            Some(_) => (last.msn + 1, 0),
        })
    }

    pub(crate) fn segment(&self, msn: u64) -> Option<&Segment> {
        let first = self.segments.first()?.msn;
        self.segments.get(usize::try_from(msn.checked_sub(first)?).ok()?)
    }
}

/// Reads a multivariant playlist.
pub(crate) fn parse_multivariant(text: &str) -> Result<Vec<Variant>, PlaylistError> {
    let mut lines = lines(text)?;
    let mut variants = Vec::new();
    while let Some(line) = lines.next() {
        let Some(attrs) = line.strip_prefix("#EXT-X-STREAM-INF:") else { continue };
        let bandwidth =
            attr(attrs, "BANDWIDTH").ok_or_else(|| PlaylistError::BadTag("EXT-X-STREAM-INF", "no BANDWIDTH".into()))?;
        let bandwidth = number(bandwidth, "EXT-X-STREAM-INF")?;
        let uri = lines
            .by_ref()
            .find(|l| !l.starts_with('#'))
            .ok_or_else(|| PlaylistError::BadTag("EXT-X-STREAM-INF", "no URI line after it".into()))?;
        if variants.len() >= MAX_ENTRIES {
            return Err(PlaylistError::TooLarge);
        }
        variants.push(Variant { uri: uri.to_owned(), bandwidth });
    }
    if variants.is_empty() {
        return Err(PlaylistError::NoVariants);
    }
    Ok(variants)
}

/// Reads a media playlist (full or delta update).
pub(crate) fn parse_media(text: &str) -> Result<MediaPlaylist, PlaylistError> {
    let mut p = MediaPlaylist::default();
    let mut msn: Option<u64> = None;
    let mut pending_pdt: Option<i64> = None;
    let mut parts: Vec<Part> = Vec::new();
    let mut extinf: Option<f64> = None;
    let mut entries = 0usize;
    for line in lines(text)? {
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            p.target_duration = float(v, "EXT-X-TARGETDURATION")?;
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            p.media_sequence = number(v, "EXT-X-MEDIA-SEQUENCE")?;
        } else if let Some(a) = line.strip_prefix("#EXT-X-PART-INF:") {
            p.part_target = attr(a, "PART-TARGET").map(|v| float(v, "EXT-X-PART-INF")).transpose()?;
        } else if let Some(a) = line.strip_prefix("#EXT-X-SERVER-CONTROL:") {
            p.can_block_reload = attr(a, "CAN-BLOCK-RELOAD") == Some("YES");
            p.can_skip_until = attr(a, "CAN-SKIP-UNTIL").map(|v| float(v, "EXT-X-SERVER-CONTROL")).transpose()?;
            p.part_hold_back = attr(a, "PART-HOLD-BACK").map(|v| float(v, "EXT-X-SERVER-CONTROL")).transpose()?;
        } else if let Some(a) = line.strip_prefix("#EXT-X-MAP:") {
            p.map_uri = attr(a, "URI").map(str::to_owned);
        } else if let Some(a) = line.strip_prefix("#EXT-X-SKIP:") {
            let n = attr(a, "SKIPPED-SEGMENTS")
                .ok_or_else(|| PlaylistError::BadTag("EXT-X-SKIP", "no SKIPPED-SEGMENTS".into()))?;
            p.skipped = number(n, "EXT-X-SKIP")?;
        } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            pending_pdt =
                Some(parse_date_time(v).ok_or_else(|| PlaylistError::BadTag("EXT-X-PROGRAM-DATE-TIME", v.into()))?);
        } else if let Some(a) = line.strip_prefix("#EXT-X-PART:") {
            let uri = attr(a, "URI").ok_or_else(|| PlaylistError::BadTag("EXT-X-PART", "no URI".into()))?;
            let duration =
                attr(a, "DURATION").ok_or_else(|| PlaylistError::BadTag("EXT-X-PART", "no DURATION".into()))?;
            entries += 1;
            if entries > MAX_ENTRIES {
                return Err(PlaylistError::TooLarge);
            }
            parts.push(Part {
                uri: uri.to_owned(),
                duration: float(duration, "EXT-X-PART")?,
                independent: attr(a, "INDEPENDENT") == Some("YES"),
            });
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            let d = v.split(',').next().unwrap_or_default();
            extinf = Some(float(d, "EXTINF")?);
        } else if let Some(a) = line.strip_prefix("#EXT-X-PRELOAD-HINT:") {
            if attr(a, "TYPE") == Some("PART") {
                p.preload_hint = attr(a, "URI").map(str::to_owned);
            }
        } else if line == "#EXT-X-ENDLIST" {
            p.endlist = true;
        } else if !line.starts_with('#') {
            // A segment URI closes the segment its EXTINF (and parts) described.
            let duration =
                extinf.take().ok_or_else(|| PlaylistError::BadTag("EXTINF", format!("missing before {line}")))?;
            entries += 1;
            if entries > MAX_ENTRIES {
                return Err(PlaylistError::TooLarge);
            }
            let this = *msn.get_or_insert(p.media_sequence + p.skipped);
            let pdt = pending_pdt.take().or_else(|| previous_end(&p.segments));
            p.segments.push(Segment {
                msn: this,
                duration,
                uri: Some(line.to_owned()),
                program_date_time: pdt,
                parts: std::mem::take(&mut parts),
            });
            msn = Some(this + 1);
        }
    }
    if !parts.is_empty() {
        let this = msn.unwrap_or(p.media_sequence + p.skipped);
        let pdt = pending_pdt.take().or_else(|| previous_end(&p.segments));
        p.segments.push(Segment {
            msn: this,
            duration: parts.iter().map(|p| p.duration).sum(),
            uri: None,
            program_date_time: pdt,
            parts,
        });
    }
    Ok(p)
}

fn previous_end(segments: &[Segment]) -> Option<i64> {
    let last = segments.last()?;
    Some(last.program_date_time? + (last.duration * 1000.0).round() as i64)
}

/// Non-empty trimmed lines after checking `#EXTM3U`.
fn lines(text: &str) -> Result<impl Iterator<Item = &str>, PlaylistError> {
    let mut it = text.lines().map(str::trim).filter(|l| !l.is_empty());
    if it.next().map(|l| l.trim_start_matches('\u{feff}')) != Some("#EXTM3U") {
        return Err(PlaylistError::NotM3u8);
    }
    Ok(it)
}

/// The value of attribute `name` in an attribute list, without quotes.
fn attr<'a>(list: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = list;
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], quoted[end + 1..].strip_prefix(',').unwrap_or(&quoted[end + 1..]))
        } else {
            after.split_once(',').unwrap_or((after, ""))
        };
        if key.trim() == name {
            return Some(value);
        }
        rest = next;
    }
    None
}

fn number(v: &str, tag: &'static str) -> Result<u64, PlaylistError> {
    v.trim().parse().map_err(|_| PlaylistError::BadTag(tag, format!("{v:?} is not a whole number")))
}

fn float(v: &str, tag: &'static str) -> Result<f64, PlaylistError> {
    v.trim()
        .parse::<f64>()
        .ok()
        .filter(|f| f.is_finite() && *f >= 0.0)
        .ok_or_else(|| PlaylistError::BadTag(tag, format!("{v:?} is not a duration")))
}

/// ms since the epoch of an ISO 8601 date-time as HLS writes it:
/// `YYYY-MM-DDTHH:MM:SS[.fff](Z|+HH:MM|-HH:MM)`.
pub(crate) fn parse_date_time(s: &str) -> Option<i64> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes().all(|c| c.is_ascii_digit()).then(|| t.parse().ok()).flatten()
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut millis = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let ms: String = frac[..digits].chars().chain("000".chars()).take(3).collect();
        millis = ms.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let hm = rest[1..].replace(':', "");
            if hm.len() != 4 || !hm.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            sign * (hm[..2].parse::<i64>().ok()? * 60 + hm[2..].parse::<i64>().ok()?)
        }
    };
    // Days since 1970-01-01 of a civil date (the inverse of the era computation in media's hls).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + hour) * 60 + minute - offset_min) * 60_000 + second * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVE: &str = "#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.600,CAN-SKIP-UNTIL=12.0
#EXT-X-PART-INF:PART-TARGET=0.200
#EXT-X-MEDIA-SEQUENCE:40
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI=\"init.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2026-12-02T11:00:00.000Z
#EXTINF:1.000,
seg40.m4s
#EXT-X-PROGRAM-DATE-TIME:2026-12-02T11:00:01.000Z
#EXT-X-PART:DURATION=0.500,URI=\"part41.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.500,URI=\"part41.1.m4s\"
#EXTINF:1.000,
seg41.m4s
#EXT-X-PROGRAM-DATE-TIME:2026-12-02T11:00:02.000Z
#EXT-X-PART:DURATION=0.200,URI=\"part42.0.m4s\",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part42.1.m4s\"
#EXT-X-RENDITION-REPORT:URI=\"../r1/index.m3u8\",LAST-MSN=42,LAST-PART=0
";

    #[test]
    fn reads_a_live_ll_hls_playlist() {
        let p = parse_media(LIVE).unwrap();
        assert_eq!(p.target_duration, 2.0);
        assert_eq!(p.part_target, Some(0.2));
        assert_eq!(p.part_hold_back, Some(0.6));
        assert_eq!(p.can_skip_until, Some(12.0));
        assert!(p.can_block_reload);
        assert_eq!(p.map_uri.as_deref(), Some("init.mp4"));
        assert_eq!(p.segments.len(), 3);
        assert_eq!(p.segments[0].msn, 40);
        assert!(p.segments[0].parts.is_empty());
        assert_eq!(p.segments[1].parts.len(), 2);
        assert!(p.segments[1].parts[0].independent && !p.segments[1].parts[1].independent);
        let partial = &p.segments[2];
        assert_eq!((partial.msn, partial.uri.as_deref(), partial.parts.len()), (42, None, 1));
        assert_eq!(p.preload_hint.as_deref(), Some("part42.1.m4s"));
        assert_eq!(p.next_part(), Some((42, 1)));
        let t0 = parse_date_time("2026-12-02T11:00:01.000Z").unwrap();
        assert_eq!(p.segments[1].part_start(1), Some(t0 + 500));
        assert!(!p.endlist);
    }

    #[test]
    fn a_delta_update_numbers_segments_after_the_skipped_ones() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:10\n#EXT-X-SKIP:SKIPPED-SEGMENTS=5\n\
                    #EXTINF:1.0,\nseg15.m4s\n#EXT-X-PART:DURATION=0.2,URI=\"p\"\n";
        let p = parse_media(text).unwrap();
        assert_eq!(p.skipped, 5);
        assert_eq!(p.segments[0].msn, 15);
        assert_eq!(p.segments[1].msn, 16);
        // No PDT at all: none is invented.
        assert_eq!(p.segments[0].program_date_time, None);
    }

    #[test]
    fn program_date_time_carries_over_segments_without_one() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PROGRAM-DATE-TIME:1970-01-01T00:00:10Z\n\
                    #EXTINF:2.0,\na.ts\n#EXTINF:2.0,\nb.ts\n#EXT-X-ENDLIST\n";
        let p = parse_media(text).unwrap();
        assert_eq!(p.segments[1].program_date_time, Some(12_000));
        assert_eq!(p.next_part(), Some((2, 0)));
        assert!(p.endlist);
    }

    #[test]
    fn reads_variants() {
        let text = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=2500000,AVERAGE-BANDWIDTH=2000000,RESOLUTION=1280x720,CODECS=\"avc1.64001f,mp4a.40.2\"\n\
                    720p/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=800000,CODECS=\"avc1\"\n\n360p/index.m3u8\n";
        let v = parse_multivariant(text).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].uri, "720p/index.m3u8");
        assert_eq!(v[0].bandwidth, 2_500_000);
        assert_eq!((v[1].uri.as_str(), v[1].bandwidth), ("360p/index.m3u8", 800_000));
    }

    #[test]
    fn refuses_what_is_not_a_playlist() {
        assert_eq!(parse_media("<html>"), Err(PlaylistError::NotM3u8));
        assert_eq!(parse_multivariant("#EXTM3U\n#EXT-X-VERSION:3\n"), Err(PlaylistError::NoVariants));
        assert!(matches!(parse_media("#EXTM3U\nseg.ts\n"), Err(PlaylistError::BadTag("EXTINF", _))));
        assert!(matches!(parse_media("#EXTM3U\n#EXT-X-PART:URI=\"x\"\n"), Err(PlaylistError::BadTag("EXT-X-PART", _))));
        assert!(matches!(parse_media("#EXTM3U\n#EXTINF:abc,\nx\n"), Err(PlaylistError::BadTag("EXTINF", _))));
    }

    #[test]
    fn date_times_in_the_spellings_servers_use() {
        assert_eq!(parse_date_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_date_time("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(parse_date_time("1970-01-01T01:00:00.000+01:00"), Some(0));
        assert_eq!(parse_date_time("1969-12-31T23:00:00-01:00"), Some(0));
        assert_eq!(parse_date_time("2000-03-01T00:00:00Z"), Some(951_868_800_000));
        assert_eq!(parse_date_time("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_date_time("yesterday"), None);
    }

    #[test]
    fn attribute_lists_with_quoted_commas() {
        assert_eq!(attr("A=1,CODECS=\"a,b\",URI=\"x\"", "URI"), Some("x"));
        assert_eq!(attr("A=1,CODECS=\"a,b\",URI=\"x\"", "CODECS"), Some("a,b"));
        assert_eq!(attr("A=1", "B"), None);
        assert_eq!(attr("A=\"unterminated", "A"), None);
    }
}
