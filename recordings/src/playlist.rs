//! VOD playlists of a recording, rendered from its journals: a multivariant playlist and, per
//! rendition, a media playlist of type VOD (`EXT-X-PLAYLIST-TYPE:VOD`, `EXT-X-ENDLIST`), with
//! `EXT-X-DISCONTINUITY` where the publisher reconnected and a new `EXT-X-MAP` where the header
//! changed. URIs use the live grammar ([`hls_names`]), so edges key them the same way.

use std::fmt::Write as _;
use std::time::Duration;

use hls_names::{RenditionFile, MEDIA_PLAYLIST};

use crate::journal::{self, Entry, RenditionMeta};

/// A rendition's media playlist; `None` for an empty journal (nothing to play).
pub fn media_playlist(entries: &[Entry]) -> Option<String> {
    let first = entries.first()?;
    let target = entries.iter().map(|e| ceil_secs(e.duration)).max().unwrap_or(1).max(1);
    let mut out = String::with_capacity(160 + entries.len() * 48);
    out.push_str("#EXTM3U\n#EXT-X-VERSION:7\n");
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
    out.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    let mut init = None;
    for entry in entries {
        if entry.discontinuity && entry.index != first.index {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if init != Some(entry.init) {
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", RenditionFile::Init(entry.init));
            init = Some(entry.init);
        }
        let _ = writeln!(out, "#EXTINF:{:.5},", entry.duration.as_secs_f64());
        let _ = writeln!(out, "{}", RenditionFile::Segment(entry.index));
    }
    out.push_str("#EXT-X-ENDLIST\n");
    Some(out)
}

/// The multivariant playlist over renditions with their journals, in the order given (the
/// source first); renditions with no segment are left out. `None` if none is left.
pub fn multivariant_playlist(renditions: &[(RenditionMeta, Vec<Entry>)]) -> Option<String> {
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    let mut any = false;
    for (meta, entries) in renditions.iter().filter(|(_, e)| !e.is_empty()) {
        any = true;
        let peak = journal::peak_bandwidth(entries).max(1);
        let average = journal::average_bandwidth(entries).max(1);
        let _ = write!(out, "#EXT-X-STREAM-INF:BANDWIDTH={peak},AVERAGE-BANDWIDTH={average}");
        if !meta.codecs.is_empty() {
            let _ = write!(out, ",CODECS=\"{}\"", meta.codecs);
        }
        if let (Some(w), Some(h)) = (meta.width, meta.height) {
            let _ = write!(out, ",RESOLUTION={w}x{h}");
        }
        let _ = writeln!(out, "\n{}/{MEDIA_PLAYLIST}", meta.name);
    }
    any.then_some(out)
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use hls_names::InitId;

    use super::*;

    fn entry(index: u64, ms: u64, init: u64, discontinuity: bool) -> Entry {
        Entry {
            index,
            duration: Duration::from_millis(ms),
            discontinuity,
            init: InitId(init),
            bytes: 100_000,
            program_date_time: 0,
        }
    }

    #[test]
    fn a_vod_playlist_lists_every_segment_and_marks_the_reconnect() {
        let entries = [entry(0, 1000, 1, false), entry(1, 1500, 1, false), entry(2, 1000, 2, true)];
        let text = media_playlist(&entries).unwrap();
        let expected = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n\
            #EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-INDEPENDENT-SEGMENTS\n\
            #EXT-X-MAP:URI=\"init-0000000000000001.mp4\"\n#EXTINF:1.00000,\nseg0.m4s\n#EXTINF:1.50000,\nseg1.m4s\n\
            #EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init-0000000000000002.mp4\"\n#EXTINF:1.00000,\nseg2.m4s\n\
            #EXT-X-ENDLIST\n";
        assert_eq!(text, expected);
        assert_eq!(media_playlist(&[]), None);
    }

    #[test]
    fn the_multivariant_playlist_measures_each_rendition() {
        let meta = |name: &str, w| RenditionMeta {
            name: name.into(),
            codecs: "avc1.64001f,mp4a.40.2".into(),
            width: Some(w),
            height: Some(w * 9 / 16),
        };
        let renditions = vec![
            (meta("source", 1280), vec![entry(0, 1000, 1, false)]),
            (meta("360p", 640), vec![]),
            (meta("180p", 320), vec![entry(0, 500, 1, false)]),
        ];
        let text = multivariant_playlist(&renditions).unwrap();
        assert!(text.contains("BANDWIDTH=800000,AVERAGE-BANDWIDTH=800000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720\nsource/index.m3u8\n"), "{text}");
        assert!(text.contains("BANDWIDTH=1600000"), "{text}");
        assert!(!text.contains("360p"), "an empty rendition is left out");
        assert_eq!(multivariant_playlist(&[(meta("source", 1280), vec![])]), None);
    }
}
