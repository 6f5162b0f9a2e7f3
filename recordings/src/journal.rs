//! The per-rendition journal of a recording: one line per segment, appended after the segment's
//! file is in place. It is the recording's source of truth on disk: playlists, clips and
//! recovery after a crash read it, and a line torn by a crash (no newline yet) is ignored, so
//! the recording is whatever segments were complete.
//!
//! ```text
//! {index}\t{duration µs}\t{discontinuity 0|1}\t{init id, 16 hex}\t{bytes}\t{program date-time ms}\n
//! ```

use std::fmt::Write as _;
use std::time::Duration;

use hls_names::InitId;
use serde::{Deserialize, Serialize};

/// The journal's file name in a rendition directory.
pub const JOURNAL: &str = "segments.tsv";
/// The rendition's description (codecs, size) in its directory.
pub const META: &str = "rendition.json";

/// One recorded segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Position in the recording from 0: the segment's file is `seg{index}.m4s`.
    pub index: u64,
    pub duration: Duration,
    /// Starts a new timeline (the publisher reconnected): `EXT-X-DISCONTINUITY`.
    pub discontinuity: bool,
    /// The header it needs: `init-{id}.mp4`.
    pub init: InitId,
    pub bytes: u64,
    /// Wall clock of its first sample (ms since the epoch).
    pub program_date_time: i64,
}

impl Entry {
    /// The entry as one journal line, newline included.
    pub fn line(&self) -> String {
        let mut line = String::with_capacity(64);
        let _ = writeln!(
            line,
            "{}\t{}\t{}\t{:016x}\t{}\t{}",
            self.index,
            self.duration.as_micros(),
            u8::from(self.discontinuity),
            self.init.0,
            self.bytes,
            self.program_date_time
        );
        line
    }

    fn parse(line: &str) -> Option<Entry> {
        let mut fields = line.split('\t');
        let mut next = || fields.next();
        let entry = Entry {
            index: next()?.parse().ok()?,
            duration: Duration::from_micros(next()?.parse().ok()?),
            discontinuity: match next()? {
                "0" => false,
                "1" => true,
                _ => return None,
            },
            init: InitId(u64::from_str_radix(next()?, 16).ok()?),
            bytes: next()?.parse().ok()?,
            program_date_time: next()?.parse().ok()?,
        };
        next().is_none().then_some(entry)
    }
}

/// The entries of a journal, in order. Only complete lines count (the last one may be torn by a
/// crash); a malformed line ends the journal there, as if the crash happened before it.
pub fn parse(text: &str) -> Vec<Entry> {
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => return Vec::new(),
    };
    let mut entries = Vec::new();
    for line in complete.split('\n') {
        match Entry::parse(line) {
            Some(entry) if entry.index == entries.len() as u64 => entries.push(entry),
            _ => break,
        }
    }
    entries
}

/// What a rendition is, written once beside its journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RenditionMeta {
    pub name: String,
    /// `CODECS=` as the live playlist advertised it.
    pub codecs: String,
    pub width: Option<u16>,
    pub height: Option<u16>,
}

/// Total duration of `entries`.
pub fn duration(entries: &[Entry]) -> Duration {
    entries.iter().map(|e| e.duration).sum()
}

/// Peak bit rate over segments (bits per second), for `BANDWIDTH`.
pub fn peak_bandwidth(entries: &[Entry]) -> u64 {
    entries
        .iter()
        .filter(|e| !e.duration.is_zero())
        .map(|e| (e.bytes as f64 * 8.0 / e.duration.as_secs_f64()).ceil() as u64)
        .max()
        .unwrap_or(0)
}

/// Mean bit rate (bits per second), for `AVERAGE-BANDWIDTH`.
pub fn average_bandwidth(entries: &[Entry]) -> u64 {
    let seconds = duration(entries).as_secs_f64();
    if seconds == 0.0 {
        return 0;
    }
    (entries.iter().map(|e| e.bytes).sum::<u64>() as f64 * 8.0 / seconds).ceil() as u64
}

/// The segments a clip of `[start, end)` (from the recording's start) takes: from the segment
/// boundary nearest `start` to the one nearest `end` (segments start on keyframes, so the clip
/// is cut without re-encoding and each end is off by at most half a segment). `None` when that
/// leaves nothing.
pub fn clip_range(entries: &[Entry], start: Duration, end: Duration) -> Option<std::ops::Range<usize>> {
    // Boundaries: the start of each segment, then the end of the last.
    let mut boundaries = Vec::with_capacity(entries.len() + 1);
    let mut at = Duration::ZERO;
    boundaries.push(at);
    for entry in entries {
        at += entry.duration;
        boundaries.push(at);
    }
    let nearest = |t: Duration| boundaries.iter().enumerate().min_by_key(|(_, b)| b.abs_diff(t)).map_or(0, |(i, _)| i);
    let (first, last) = (nearest(start), nearest(end));
    (first < last).then_some(first..last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, ms: u64) -> Entry {
        Entry {
            index,
            duration: Duration::from_millis(ms),
            discontinuity: false,
            init: InitId(0xab),
            bytes: 125_000,
            program_date_time: 1_700_000_000_000 + index as i64 * 1000,
        }
    }

    #[test]
    fn lines_round_trip_and_a_torn_tail_is_ignored() {
        let entries = [entry(0, 1000), Entry { discontinuity: true, ..entry(1, 1001) }, entry(2, 999)];
        let text: String = entries.iter().map(Entry::line).collect();
        assert_eq!(parse(&text), entries);
        // A crash mid-line: the complete lines stand.
        let torn = format!("{text}3\t1000\t0\t00");
        assert_eq!(parse(&torn), entries);
        // Garbage or a gap ends the journal where it starts.
        assert_eq!(parse(&format!("{}x\n{}", entries[0].line(), entries[1].line())), entries[..1]);
        assert_eq!(parse(&format!("{}{}", entries[0].line(), entries[2].line())), entries[..1]);
        assert!(parse("").is_empty());
        assert!(parse("0\t1\t0\t00000000000000ab\t1\t1").is_empty(), "no newline: torn");
    }

    #[test]
    fn bandwidth_from_sizes_and_durations() {
        let entries = [entry(0, 1000), Entry { bytes: 250_000, ..entry(1, 1000) }];
        assert_eq!(peak_bandwidth(&entries), 2_000_000);
        assert_eq!(average_bandwidth(&entries), 1_500_000);
        assert_eq!(duration(&entries), Duration::from_secs(2));
        assert_eq!(peak_bandwidth(&[]), 0);
    }

    #[test]
    fn clips_snap_to_the_nearest_segment_boundaries() {
        let entries: Vec<Entry> = (0..20).map(|i| entry(i, 1000)).collect();
        let s = Duration::from_secs_f64;
        assert_eq!(clip_range(&entries, s(5.0), s(12.0)), Some(5..12));
        assert_eq!(clip_range(&entries, s(5.4), s(11.6)), Some(5..12));
        assert_eq!(clip_range(&entries, s(5.6), s(11.4)), Some(6..11));
        assert_eq!(clip_range(&entries, s(0.0), s(99.0)), Some(0..20));
        assert_eq!(clip_range(&entries, s(5.2), s(5.3)), None, "less than one segment");
        assert_eq!(clip_range(&[], s(0.0), s(1.0)), None);
    }
}
