//! MPEG-TS demuxer on arbitrary bytes, fed in the splits the first byte chooses, and the
//! SRT path behind it (demuxer → packager feed): nothing may panic or grow without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use media::ingest::srt::TsToCmaf;
use media::ts::TsDemuxer;

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else { return };
    let split = usize::from(split).max(1) * 7;
    let mut demuxer = TsDemuxer::new();
    let mut pipeline = TsToCmaf::new();
    for chunk in data.chunks(split) {
        demuxer.handle_input(chunk);
        while demuxer.poll_event().is_some() {}
        let _ = pipeline.handle_input(chunk);
        while pipeline.poll_output().is_some() {}
    }
    demuxer.finish();
    while demuxer.poll_event().is_some() {}
    let _ = pipeline.finish();
    while pipeline.poll_output().is_some() {}
});
