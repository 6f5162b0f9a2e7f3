//! LL-HLS playlist text and request rules (RFC 8216bis, Apple Low-Latency HLS).
//!
//! - [`media_playlist`] renders one rendition's `index.m3u8`, full or as a delta update;
//! - [`multivariant_playlist`] renders `master.m3u8`;
//! - [`BlockingReload::decide`] says whether a blocking request (its `_HLS_msn`, `_HLS_part`,
//!   parsed by [`PlaylistParams::parse`]) can be answered now.
//!
//! URIs are relative to the rendition directory and spelled by the shared grammar
//! ([`hls_names`]): `init-{id}.mp4`, `seg{msn}.m4s`, `part{msn}.{index}.m4s`, and
//! `../{rendition}/index.m3u8` for rendition reports.

use std::fmt::Write as _;
use std::time::Duration;

use hls_names::{InitId, PlaylistParams, RenditionFile};

use crate::clock::UnixMillis;

use super::window::{Latest, Rendition};

/// `EXT-X-PART` tags are listed for segments ending within this many target durations of the
/// playlist end (RFC 8216bis: parts older than three target durations SHOULD be removed).
const PART_LISTING_TARGET_DURATIONS: u32 = 3;
/// `PART-HOLD-BACK` in part targets (the spec requires at least 2, recommends 3).
const PART_HOLD_BACK_PARTS: u32 = 3;
/// `CAN-SKIP-UNTIL` in target durations (the spec requires at least 6).
const SKIP_UNTIL_TARGET_DURATIONS: u64 = 6;

/// The latest part of a sibling rendition, for `EXT-X-RENDITION-REPORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenditionReport<'a> {
    pub name: &'a str,
    pub latest: Latest,
}

/// Renders the media playlist of `rendition`.
///
/// With `skip` (the request had `_HLS_skip=YES`), segments that end more than `CAN-SKIP-UNTIL`
/// before the end of the playlist are replaced by one `EXT-X-SKIP:SKIPPED-SEGMENTS=N`; what
/// follows is line for line the tail of the full playlist. `reports` lists the sibling renditions
/// (the rendition itself, if included, is left out).
pub fn media_playlist(rendition: &Rendition, skip: bool, reports: &[RenditionReport<'_>]) -> String {
    let target = rendition.target_duration();
    let part_target = rendition.part_target();
    let segments: Vec<_> = rendition.playlist_segments().collect();
    let partial = rendition.partial_segment();

    // Start of each listed segment relative to the first, and the playlist's total duration.
    let partial_duration: Duration = partial.map(|p| p.parts.iter().map(|p| p.duration).sum()).unwrap_or_default();
    let listed: Duration = segments.iter().map(|s| s.duration).sum();
    let end = listed + partial_duration;
    let skip_until = Duration::from_secs(SKIP_UNTIL_TARGET_DURATIONS * target);
    let parts_from = end.saturating_sub(Duration::from_secs(target) * PART_LISTING_TARGET_DURATIONS);

    let mut skipped = 0;
    if skip {
        let mut segment_end = Duration::ZERO;
        for segment in &segments {
            segment_end += segment.duration;
            if end.saturating_sub(segment_end) < skip_until {
                break;
            }
            skipped += 1;
        }
    }

    let mut out = String::with_capacity(256 + segments.len() * 96 + 64 * 16);
    out.push_str("#EXTM3U\n#EXT-X-VERSION:9\n");
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
    let _ = writeln!(
        out,
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={},CAN-SKIP-UNTIL={}.0",
        seconds_ms(part_target * PART_HOLD_BACK_PARTS),
        SKIP_UNTIL_TARGET_DURATIONS * target
    );
    let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={}", seconds_ms(part_target));
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", rendition.media_sequence());
    let discontinuity_sequence = rendition.discontinuity_sequence();
    if discontinuity_sequence > 0 {
        let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}");
    }
    let mut init = rendition.first_listed_init();
    let _ = writeln!(out, "#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI=\"{}\"", RenditionFile::Init(init));
    // A resumed publish: a new timeline, and a new header if its tracks changed.
    let mut boundary = |out: &mut String, discontinuity: bool, segment_init: InitId| {
        if discontinuity {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if segment_init != init {
            init = segment_init;
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", RenditionFile::Init(init));
        }
    };
    if skipped > 0 {
        let _ = writeln!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
    }

    let mut segment_end = Duration::ZERO;
    for (i, segment) in segments.iter().enumerate() {
        segment_end += segment.duration;
        if i < skipped {
            continue;
        }
        boundary(&mut out, segment.discontinuity, segment.init_id);
        let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", iso8601(segment.program_date_time));
        if segment_end > parts_from {
            for part in &segment.parts {
                write_part(&mut out, part.msn, part.index, part.duration, part.independent);
            }
        }
        let _ = writeln!(out, "#EXTINF:{},\n{}", seconds(segment.duration), RenditionFile::Segment(segment.msn));
    }
    if let Some(partial) = partial.filter(|p| !p.parts.is_empty()) {
        boundary(&mut out, partial.discontinuity, partial.init_id);
        let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", iso8601(partial.program_date_time));
        for part in &partial.parts {
            write_part(&mut out, part.msn, part.index, part.duration, part.independent);
        }
    }
    if let Some((msn, index)) = rendition.preload_hint() {
        let _ = writeln!(out, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"", RenditionFile::Part(msn, index));
    }
    for report in reports.iter().filter(|r| r.name != rendition.name()) {
        let _ = writeln!(
            out,
            "#EXT-X-RENDITION-REPORT:URI=\"{}\",LAST-MSN={},LAST-PART={}",
            hls_names::sibling_playlist(report.name),
            report.latest.msn,
            report.latest.part
        );
    }
    if rendition.is_finished() {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    out
}

fn write_part(out: &mut String, msn: u64, index: u32, duration: Duration, independent: bool) {
    let _ = write!(out, "#EXT-X-PART:DURATION={},URI=\"{}\"", seconds(duration), RenditionFile::Part(msn, index));
    out.push_str(if independent { ",INDEPENDENT=YES\n" } else { "\n" });
}

/// One entry of the multivariant playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant<'a> {
    /// Rendition name; the URI is `{name}/index.m3u8`.
    pub name: &'a str,
    /// Peak bit rate, bits per second.
    pub bandwidth: u64,
    pub average_bandwidth: Option<u64>,
    /// Width and height of the video, if any.
    pub resolution: Option<(u16, u16)>,
    /// `CODECS`, e.g. from [`Rendition::codecs`].
    pub codecs: String,
    pub frame_rate: Option<f64>,
}

/// Renders `master.m3u8`: one `EXT-X-STREAM-INF` per variant, in the order given.
pub fn multivariant_playlist(variants: &[Variant<'_>]) -> String {
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for v in variants {
        let _ = write!(out, "#EXT-X-STREAM-INF:BANDWIDTH={}", v.bandwidth);
        if let Some(average) = v.average_bandwidth {
            let _ = write!(out, ",AVERAGE-BANDWIDTH={average}");
        }
        if let Some((w, h)) = v.resolution {
            let _ = write!(out, ",RESOLUTION={w}x{h}");
        }
        let _ = write!(out, ",CODECS=\"{}\"", v.codecs);
        if let Some(rate) = v.frame_rate.filter(|r| r.is_finite() && *r > 0.0) {
            let _ = write!(out, ",FRAME-RATE={rate:.3}");
        }
        let _ = writeln!(out, "\n{}", hls_names::rendition_playlist(v.name));
    }
    out
}

/// Whether a media playlist request can be answered now (RFC 8216bis §6.2.5.2, Blocking
/// Playlist Reload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockingReload {
    /// Render the playlist now.
    Ready,
    /// Hold the request until the rendition publishes more, then decide again. The wait is the
    /// driver's to bound (the spec suggests answering 503 after three target durations).
    Wait,
    /// Answer 400 Bad Request.
    BadRequest(BadReload),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BadReload {
    #[error("_HLS_part without _HLS_msn")]
    PartWithoutMsn,
    #[error("_HLS_msn {requested} is more than two segments after the last ({last})")]
    MsnTooFarAhead { requested: u64, last: u64 },
    #[error("_HLS_part is more than {limit} parts after the last published part")]
    PartTooFarAhead { limit: u32 },
    #[error("malformed _HLS_ query parameter")]
    Malformed,
}

impl BlockingReload {
    /// Decides a request against the rendition's latest part. The rules:
    ///
    /// 1. `_HLS_part` without `_HLS_msn` is a bad request.
    /// 2. No `_HLS_msn`: not a blocking request, ready.
    /// 3. `_HLS_msn` greater than the last media sequence number plus two is a bad request ("the
    ///    server SHOULD immediately return Bad Request"). The last msn is that of the newest
    ///    part's segment (0 before anything is published).
    /// 4. `_HLS_part` more than the Advance Part Limit beyond the last published part is a bad
    ///    request. The limit is `3 / PART-TARGET` parts for part targets under one second, else 3.
    ///    For requests in later segments the distance counted is a lower bound (`part + 1`), since
    ///    the in-progress segment's remaining parts are unknown.
    /// 5. `_HLS_msn=M` alone waits until segment `M` is complete.
    /// 6. `_HLS_msn=M&_HLS_part=P` waits until part `P` of `M` exists; a part index past the end of
    ///    a complete segment means part 0 of the following one (spec rule), so such a request is
    ///    ready if that part exists.
    pub fn decide(query: PlaylistParams, latest: Option<Latest>, part_target: Duration) -> Self {
        let (msn, part) = match (query.msn, query.part) {
            (None, Some(_)) => return BlockingReload::BadRequest(BadReload::PartWithoutMsn),
            (None, None) => return BlockingReload::Ready,
            (Some(msn), part) => (msn, part),
        };
        let last = latest.map_or(0, |l| l.msn);
        if msn > last.saturating_add(2) {
            return BlockingReload::BadRequest(BadReload::MsnTooFarAhead { requested: msn, last });
        }
        let limit = advance_part_limit(part_target);
        let Some(latest) = latest else {
            return match part {
                Some(p) if p >= limit => BlockingReload::BadRequest(BadReload::PartTooFarAhead { limit }),
                _ => BlockingReload::Wait,
            };
        };
        let ready = match part {
            None => msn < latest.msn || (msn == latest.msn && latest.segment_complete),
            Some(p) if msn == latest.msn => {
                if p <= latest.part {
                    true
                } else if !latest.segment_complete && p - latest.part > limit {
                    return BlockingReload::BadRequest(BadReload::PartTooFarAhead { limit });
                } else {
                    false
                }
            }
            // Every part of an earlier segment exists; past its end is part 0 of a later one,
            // which exists too because the latest segment has at least one part.
            Some(_) if msn < latest.msn => true,
            Some(p) => {
                if p.saturating_add(1) > limit {
                    return BlockingReload::BadRequest(BadReload::PartTooFarAhead { limit });
                }
                false
            }
        };
        if ready {
            BlockingReload::Ready
        } else {
            BlockingReload::Wait
        }
    }
}

/// RFC 8216bis: "three divided by the Part Target Duration if the Part Target Duration is less than
/// one second, or three otherwise".
fn advance_part_limit(part_target: Duration) -> u32 {
    if part_target >= Duration::from_secs(1) || part_target.is_zero() {
        3
    } else {
        u32::try_from(3_000_000_000u128 / part_target.as_nanos()).unwrap_or(u32::MAX)
    }
}

/// How long a blocking request may wait before the driver gives up (503): three target
/// durations, as RFC 8216bis suggests.
pub fn blocking_timeout(rendition: &Rendition) -> Duration {
    Duration::from_secs(3 * rendition.target_duration())
}

/// Seconds with 5 decimals (`EXTINF`, `EXT-X-PART:DURATION`).
fn seconds(d: Duration) -> String {
    format!("{:.5}", d.as_secs_f64())
}

/// Seconds with millisecond precision, rounded up so a target is never understated.
fn seconds_ms(d: Duration) -> String {
    let ms = d.as_nanos().div_ceil(1_000_000);
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` from Unix milliseconds (proleptic Gregorian calendar, UTC).
pub(crate) fn iso8601(ms: UnixMillis) -> String {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    // Civil date from days since 1970-01-01, counting in 400-year eras starting 0000-03-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::test_support::{frame, now_of, video_config, video_rendition, T0};

    /// One playlist line: a tag with its raw value, or a URI.
    #[derive(Debug, Clone, PartialEq)]
    enum Line {
        Tag(String, String),
        Uri(String),
    }

    fn parse(text: &str) -> Vec<Line> {
        assert!(text.ends_with('\n'));
        text.lines()
            .map(|l| {
                assert!(!l.is_empty() && !l.contains('\r'), "blank or CR line in\n{text}");
                match l.strip_prefix('#') {
                    Some(tag) => {
                        let (name, value) = tag.split_once(':').unwrap_or((tag, ""));
                        Line::Tag(name.to_string(), value.to_string())
                    }
                    None => Line::Uri(l.to_string()),
                }
            })
            .collect()
    }

    /// Attribute list: `KEY=value` pairs split on commas outside quotes; quotes removed.
    fn attrs(value: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let (mut quoted, mut start) = (false, 0);
        let bytes = value.as_bytes();
        for i in 0..=bytes.len() {
            if i == bytes.len() || (bytes[i] == b',' && !quoted) {
                let (k, v) = value[start..i].split_once('=').expect("KEY=value");
                assert!(k.bytes().all(|b| b.is_ascii_uppercase() || b == b'-'), "attribute name {k}");
                out.insert(k.to_string(), v.trim_matches('"').to_string());
                start = i + 1;
            } else if bytes[i] == b'"' {
                quoted = !quoted;
            }
        }
        out
    }

    fn tags<'a>(lines: &'a [Line], name: &str) -> Vec<&'a str> {
        lines
            .iter()
            .filter_map(|l| match l {
                Line::Tag(n, v) if n == name => Some(v.as_str()),
                _ => None,
            })
            .collect()
    }

    fn report(name: &str, msn: u64, part: u32) -> RenditionReport<'_> {
        RenditionReport { name, latest: Latest { msn, part, segment_complete: false } }
    }

    #[test]
    fn media_playlist_parses_back() {
        // 10 s of a 1 s GOP plus 2 parts (14 frames) of segment 10.
        let r = video_rendition("source", 314, 30);
        let text = media_playlist(&r, false, &[report("source", 10, 1), report("720p", 10, 0)]);
        let lines = parse(&text);
        assert_eq!(lines[0], Line::Tag("EXTM3U".into(), String::new()));
        assert_eq!(tags(&lines, "EXT-X-VERSION"), ["9"]);
        assert_eq!(tags(&lines, "EXT-X-TARGETDURATION"), ["1"]);
        let control = attrs(tags(&lines, "EXT-X-SERVER-CONTROL")[0]);
        assert_eq!(control["CAN-BLOCK-RELOAD"], "YES");
        assert_eq!(control["PART-HOLD-BACK"], "0.600");
        assert_eq!(control["CAN-SKIP-UNTIL"], "6.0");
        assert_eq!(attrs(tags(&lines, "EXT-X-PART-INF")[0])["PART-TARGET"], "0.200");
        assert_eq!(tags(&lines, "EXT-X-MEDIA-SEQUENCE"), ["2"]);
        assert_eq!(attrs(tags(&lines, "EXT-X-MAP")[0])["URI"], RenditionFile::Init(r.init_id()).to_string());

        let uris: Vec<&str> = lines
            .iter()
            .filter_map(|l| match l {
                Line::Uri(u) => Some(u.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(uris, (2..10).map(|m| format!("seg{m}.m4s")).collect::<Vec<_>>());
        assert_eq!(tags(&lines, "EXTINF"), ["1.00000,"; 8]);
        let pdts = tags(&lines, "EXT-X-PROGRAM-DATE-TIME");
        assert_eq!(pdts.len(), 9);
        assert_eq!(pdts[0], "2023-11-14T22:13:22.000Z");

        // Parts: the last 3 target durations of complete segments (7, 8, 9) and the open segment.
        let parts: Vec<_> = tags(&lines, "EXT-X-PART").into_iter().map(attrs).collect();
        assert_eq!(parts.len(), 3 * 5 + 2);
        assert_eq!(parts[0]["URI"], "part7.0.m4s");
        assert_eq!(parts[0]["INDEPENDENT"], "YES");
        assert_eq!(parts[0]["DURATION"], "0.20000");
        assert!(!parts[1].contains_key("INDEPENDENT"));
        assert_eq!(parts[16]["URI"], "part10.1.m4s");
        // Every part of a complete segment comes before that segment's URI.
        let pos = |needle: &Line| lines.iter().position(|l| l == needle).unwrap();
        let last_part_of_9 = pos(&Line::Tag("EXT-X-PART".into(), "DURATION=0.20000,URI=\"part9.4.m4s\"".into()));
        assert_eq!(pos(&Line::Uri("seg9.m4s".into())), last_part_of_9 + 2);

        assert_eq!(attrs(tags(&lines, "EXT-X-PRELOAD-HINT")[0])["URI"], "part10.2.m4s");
        assert_eq!(attrs(tags(&lines, "EXT-X-PRELOAD-HINT")[0])["TYPE"], "PART");
        let reports = tags(&lines, "EXT-X-RENDITION-REPORT");
        assert_eq!(reports.len(), 1, "a rendition doesn't report itself");
        let report = attrs(reports[0]);
        assert_eq!(report["URI"], "../720p/index.m3u8");
        assert_eq!((report["LAST-MSN"].as_str(), report["LAST-PART"].as_str()), ("10", "0"));
        assert!(tags(&lines, "EXT-X-SKIP").is_empty());
        assert!(tags(&lines, "EXT-X-ENDLIST").is_empty());
        // The preload hint and reports close the playlist.
        assert!(matches!(lines.last(), Some(Line::Tag(t, _)) if t == "EXT-X-RENDITION-REPORT"));
    }

    #[test]
    fn delta_update_skips_old_segments_and_keeps_the_same_tail() {
        let r = video_rendition("source", 314, 30);
        let full = parse(&media_playlist(&r, false, &[]));
        let delta = parse(&media_playlist(&r, true, &[]));
        // Playlist end is 8.4 s after segment 2 starts; segments ending 6 s or more before it
        // (2 and 3, ending at 1 s and 2 s) are skipped.
        let skip = tags(&delta, "EXT-X-SKIP");
        assert_eq!(skip.len(), 1);
        assert_eq!(attrs(skip[0])["SKIPPED-SEGMENTS"], "2");
        assert_eq!(tags(&delta, "EXT-X-MEDIA-SEQUENCE"), tags(&full, "EXT-X-MEDIA-SEQUENCE"));
        // Same header (apart from the SKIP tag) ...
        let skip_at = delta.iter().position(|l| matches!(l, Line::Tag(t, _) if t == "EXT-X-SKIP")).unwrap();
        assert_eq!(delta[..skip_at], full[..skip_at]);
        // ... and the tail after the skipped segments is identical.
        let after_skipped = full.iter().position(|l| *l == Line::Uri("seg3.m4s".into())).unwrap() + 1;
        assert_eq!(delta[skip_at + 1..], full[after_skipped..]);
        assert!(tags(&delta, "EXTINF").len() + 2 == tags(&full, "EXTINF").len());
    }

    #[test]
    fn nothing_to_skip_gives_the_full_playlist() {
        let r = video_rendition("source", 100, 30);
        assert_eq!(media_playlist(&r, true, &[]), media_playlist(&r, false, &[]));
    }

    #[test]
    fn playlist_before_the_first_part_and_after_the_end() {
        let config = crate::hls::RenditionConfig::default();
        let mut r = Rendition::new(config, Some(video_config()), None).unwrap();
        let lines = parse(&media_playlist(&r, false, &[]));
        assert_eq!(tags(&lines, "EXT-X-MEDIA-SEQUENCE"), ["0"]);
        assert_eq!(attrs(tags(&lines, "EXT-X-PRELOAD-HINT")[0])["URI"], "part0.0.m4s");
        for i in 0..40 {
            let _ = r.push_video(frame(i, 30), now_of(i)).unwrap();
        }
        let _ = r.finish().unwrap();
        let lines = parse(&media_playlist(&r, false, &[]));
        assert!(tags(&lines, "EXT-X-PRELOAD-HINT").is_empty());
        assert_eq!(lines.last(), Some(&Line::Tag("EXT-X-ENDLIST".into(), String::new())));
        assert_eq!(tags(&lines, "EXTINF"), ["1.00000,", "0.33333,"]);
    }

    #[test]
    fn multivariant_playlist_parses_back() {
        let variants = [
            Variant {
                name: "source",
                bandwidth: 6_600_000,
                average_bandwidth: Some(6_000_000),
                resolution: Some((1920, 1080)),
                codecs: "avc1.64002a,mp4a.40.2".into(),
                frame_rate: Some(30.0),
            },
            Variant {
                name: "360p",
                bandwidth: 1_300_000,
                average_bandwidth: None,
                resolution: Some((640, 360)),
                codecs: "avc1.42c01e,mp4a.40.2".into(),
                frame_rate: None,
            },
        ];
        let lines = parse(&multivariant_playlist(&variants));
        assert_eq!(lines[0], Line::Tag("EXTM3U".into(), String::new()));
        let inf = tags(&lines, "EXT-X-STREAM-INF");
        assert_eq!(inf.len(), 2);
        let first = attrs(inf[0]);
        assert_eq!(first["BANDWIDTH"], "6600000");
        assert_eq!(first["AVERAGE-BANDWIDTH"], "6000000");
        assert_eq!(first["RESOLUTION"], "1920x1080");
        assert_eq!(first["CODECS"], "avc1.64002a,mp4a.40.2");
        assert_eq!(first["FRAME-RATE"], "30.000");
        assert!(!attrs(inf[1]).contains_key("FRAME-RATE"));
        assert_eq!(lines[lines.len() - 1], Line::Uri("360p/index.m3u8".into()));
        assert_eq!(lines[lines.len() - 3], Line::Uri("source/index.m3u8".into()));
    }

    fn decide(msn: Option<u64>, part: Option<u32>, latest: Option<(u64, u32, bool)>) -> BlockingReload {
        let latest = latest.map(|(msn, part, segment_complete)| Latest { msn, part, segment_complete });
        BlockingReload::decide(PlaylistParams { msn, part, skip: false }, latest, Duration::from_millis(200))
    }

    #[test]
    fn blocking_reload_rules() {
        use BlockingReload::*;
        let open = Some((10, 2, false)); // part 2 of segment 10 is the newest
        let closed = Some((10, 4, true)); // segment 10 just completed with parts 0..=4

        // Rule 1: _HLS_part needs _HLS_msn.
        assert_eq!(decide(None, Some(1), open), BadRequest(BadReload::PartWithoutMsn));
        // Rule 2: plain requests are answered at once.
        assert_eq!(decide(None, None, open), Ready);
        assert_eq!(decide(None, None, None), Ready);
        // Rule 3: at most two segments ahead.
        assert_eq!(decide(Some(12), None, open), Wait);
        assert_eq!(decide(Some(13), None, open), BadRequest(BadReload::MsnTooFarAhead { requested: 13, last: 10 }));
        assert_eq!(decide(Some(2), Some(0), None), Wait);
        assert_eq!(decide(Some(3), None, None), BadRequest(BadReload::MsnTooFarAhead { requested: 3, last: 0 }));
        // Rule 4: Advance Part Limit, 3 / 0.2 s = 15 parts.
        assert_eq!(decide(Some(10), Some(17), open), Wait);
        assert_eq!(decide(Some(10), Some(18), open), BadRequest(BadReload::PartTooFarAhead { limit: 15 }));
        assert_eq!(decide(Some(11), Some(14), open), Wait);
        assert_eq!(decide(Some(11), Some(15), open), BadRequest(BadReload::PartTooFarAhead { limit: 15 }));
        assert_eq!(advance_part_limit(Duration::from_secs(2)), 3);
        // Rule 5: msn alone waits for the whole segment.
        assert_eq!(decide(Some(9), None, open), Ready);
        assert_eq!(decide(Some(10), None, open), Wait);
        assert_eq!(decide(Some(10), None, closed), Ready);
        assert_eq!(decide(Some(11), None, closed), Wait);
        // Rule 6: msn + part waits for that part.
        assert_eq!(decide(Some(10), Some(2), open), Ready);
        assert_eq!(decide(Some(10), Some(3), open), Wait);
        assert_eq!(decide(Some(3), Some(0), open), Ready);
        assert_eq!(decide(Some(9), Some(7), open), Ready); // past the end of 9: part 0 of 10
        assert_eq!(decide(Some(10), Some(5), closed), Wait); // past the end of 10: part 0 of 11
        assert_eq!(decide(Some(11), Some(0), closed), Wait);
    }

    #[test]
    fn blocking_reload_follows_a_live_rendition() {
        let mut r = video_rendition("source", 6, 30);
        let query = PlaylistParams::parse("_HLS_msn=0&_HLS_part=1").unwrap();
        assert_eq!(BlockingReload::decide(query, r.latest(), r.part_target()), BlockingReload::Wait);
        for i in 6..12 {
            let _ = r.push_video(frame(i, 30), T0 + i as i64 * 33).unwrap();
        }
        assert_eq!(BlockingReload::decide(query, r.latest(), r.part_target()), BlockingReload::Ready);
        assert!(r.part(0, 1).is_some());
        assert_eq!(blocking_timeout(&r), Duration::from_secs(3));
    }

    #[test]
    fn program_date_time_format() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
        assert_eq!(seconds_ms(Duration::from_micros(200_001)), "0.201");
    }
}
