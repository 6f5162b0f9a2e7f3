//! Arbitrary query strings into `PlaylistParams::parse`, and every parsed query into
//! `BlockingReload::decide` against an arbitrary `Latest` and part target taken from the first
//! bytes: nothing may panic (overflow included), and the decision must respect its own rules.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use media::hls::{BadReload, BlockingReload, Latest, PlaylistParams};

/// Header: 8 bytes msn, 4 bytes part, 1 byte flags, 8 bytes part-target nanoseconds.
const HEADER: usize = 8 + 4 + 1 + 8;

fuzz_target!(|data: &[u8]| {
    if data.len() < HEADER {
        // Still exercise the parser on short inputs.
        if let Ok(s) = std::str::from_utf8(data) {
            let _ = PlaylistParams::parse(s);
        }
        return;
    }
    let (head, rest) = data.split_at(HEADER);
    let msn = u64::from_le_bytes(head[0..8].try_into().unwrap());
    let part = u32::from_le_bytes(head[8..12].try_into().unwrap());
    let flags = head[12];
    let nanos = u64::from_le_bytes(head[13..21].try_into().unwrap());
    // Mostly realistic small values, sometimes the extremes.
    let (msn, part) = if flags & 0x04 == 0 { (msn % 64, part % 16) } else { (msn, part) };
    let part_target =
        if flags & 0x08 == 0 { Duration::from_nanos(nanos % 2_000_000_000) } else { Duration::from_nanos(nanos) };
    let latest = (flags & 0x01 != 0).then_some(Latest { msn, part, segment_complete: flags & 0x02 != 0 });

    let Ok(query) = std::str::from_utf8(rest) else { return };
    let Ok(parsed) = PlaylistParams::parse(query) else { return };

    let decision = BlockingReload::decide(parsed, latest, part_target);
    match (parsed.msn, parsed.part) {
        (None, Some(_)) => assert_eq!(decision, BlockingReload::BadRequest(BadReload::PartWithoutMsn)),
        (None, None) => assert_eq!(decision, BlockingReload::Ready),
        (Some(m), _) => {
            let last = latest.map_or(0, |l| l.msn);
            if m > last.saturating_add(2) {
                assert!(matches!(decision, BlockingReload::BadRequest(BadReload::MsnTooFarAhead { .. })));
            } else if let Some(l) = latest {
                if m < l.msn {
                    assert_eq!(decision, BlockingReload::Ready);
                }
            }
        }
    }
    // Deciding is pure.
    assert_eq!(decision, BlockingReload::decide(parsed, latest, part_target));
});
