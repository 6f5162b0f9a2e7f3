//! The CMAF header (`ftyp`+`moov`) and fragment (`moof`+`mdat`) writers.
//!
//! Layout choices, all fixed so output is byte-for-byte predictable:
//! - `ftyp` major brand `iso6`, compatible `iso6`, `cmfc`;
//! - header sample tables are empty (`stts`/`stsc`/`stsz`/`stco`), everything lives in fragments;
//! - `tfhd` uses default-base-is-moof and carries no defaults: each `trun` sample has its own
//!   duration, size, flags and (signed, version 1) composition offset. That costs 16 bytes per
//!   sample but keeps every part self-describing, which LL-HLS players handle best.

use bytes::Bytes;

use super::boxes::BoxWriter;
use super::{AudioConfig, CmafError, Sample, TrackRun, VideoConfig, AUDIO_TRACK_ID, VIDEO_TIMESCALE, VIDEO_TRACK_ID};
use crate::codec::h264;

/// The unity transformation matrix of `mvhd`/`tkhd`.
const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

/// `trun` flags: data offset, then per-sample duration, size, flags, composition offset.
const TRUN_FLAGS: u32 = 0x00_0001 | 0x00_0100 | 0x00_0200 | 0x00_0400 | 0x00_0800;
/// `tfhd` flag: offsets are relative to the start of the `moof`.
const TFHD_DEFAULT_BASE_IS_MOOF: u32 = 0x02_0000;
/// Sample flags of a sync sample: `sample_depends_on = 2` (depends on no other sample).
const SYNC_SAMPLE_FLAGS: u32 = 0x0200_0000;
/// Sample flags of a non-sync sample: `sample_depends_on = 1`, `sample_is_non_sync_sample = 1`.
const NON_SYNC_SAMPLE_FLAGS: u32 = 0x0101_0000;

/// Writes the CMAF header (`ftyp` + `moov`) for a video track, an audio track, or both.
pub fn init_segment(video: Option<&VideoConfig>, audio: Option<&AudioConfig>) -> Result<Bytes, CmafError> {
    if video.is_none() && audio.is_none() {
        return Err(CmafError::NoTracks);
    }
    if let Some(v) = video {
        validate_video(v)?;
    }
    if let Some(a) = audio {
        if a.asc.is_empty() || a.sample_rate == 0 {
            return Err(CmafError::BadAudioConfig);
        }
    }

    let mut w = BoxWriter::with_capacity(1024);
    let ftyp = w.open(b"ftyp");
    w.bytes(b"iso6");
    w.u32(0);
    w.bytes(b"iso6");
    w.bytes(b"cmfc");
    w.close(ftyp);

    let moov = w.open(b"moov");
    let mvhd = w.open_full(b"mvhd", 0, 0);
    w.u32(0); // creation_time
    w.u32(0); // modification_time
    w.u32(1000); // timescale
    w.u32(0); // duration: unknown (live)
    w.u32(0x0001_0000); // rate 1.0
    w.u16(0x0100); // volume 1.0
    w.zeros(10);
    matrix(&mut w);
    w.zeros(24); // pre_defined
    w.u32(AUDIO_TRACK_ID.max(VIDEO_TRACK_ID) + 1); // next_track_ID
    w.close(mvhd);

    if let Some(v) = video {
        video_trak(&mut w, v);
    }
    if let Some(a) = audio {
        audio_trak(&mut w, a);
    }

    let mvex = w.open(b"mvex");
    for track_id in [video.map(|_| VIDEO_TRACK_ID), audio.map(|_| AUDIO_TRACK_ID)].into_iter().flatten() {
        let trex = w.open_full(b"trex", 0, 0);
        w.u32(track_id);
        w.u32(1); // default_sample_description_index
        w.u32(0); // default_sample_duration
        w.u32(0); // default_sample_size
        w.u32(0); // default_sample_flags
        w.close(trex);
    }
    w.close(mvex);
    w.close(moov);
    Ok(w.finish()?)
}

/// Writes one fragment: `moof` (`mfhd`, then one `traf` per run) followed by one `mdat` holding
/// the runs' sample data in the same order.
pub fn fragment(sequence_number: u32, runs: &[TrackRun<'_>]) -> Result<Bytes, CmafError> {
    let data_len: usize = runs.iter().flat_map(|r| r.samples).map(|s| s.data.len()).sum();
    let sample_count: usize = runs.iter().map(|r| r.samples.len()).sum();
    let mut w = BoxWriter::with_capacity(64 + runs.len() * 64 + sample_count * 16 + data_len);

    let moof = w.open(b"moof");
    let mfhd = w.open_full(b"mfhd", 0, 0);
    w.u32(sequence_number);
    w.close(mfhd);
    let mut offsets = Vec::with_capacity(runs.len());
    for run in runs {
        let traf = w.open(b"traf");
        let tfhd = w.open_full(b"tfhd", 0, TFHD_DEFAULT_BASE_IS_MOOF);
        w.u32(run.track_id);
        w.close(tfhd);
        let tfdt = w.open_full(b"tfdt", 1, 0);
        w.u64(run.base_media_decode_time);
        w.close(tfdt);
        let trun = w.open_full(b"trun", 1, TRUN_FLAGS);
        let count = w.checked_u32(run.samples.len());
        w.u32(count);
        offsets.push(w.slot_i32());
        for sample in run.samples {
            w.u32(sample.duration);
            let size = w.checked_u32(sample.data.len());
            w.u32(size);
            w.u32(sample_flags(sample));
            w.i32(sample.pts_offset);
        }
        w.close(trun);
        w.close(traf);
    }
    w.close(moof);

    // Each run's data offset counts from the first byte of the moof (default-base-is-moof).
    let mut offset = w.len() + 8;
    for (run, slot) in runs.iter().zip(offsets) {
        match i32::try_from(offset) {
            Ok(v) => w.patch_i32(slot, v),
            Err(_) => w.mark_overflow(),
        }
        offset += run.samples.iter().map(|s| s.data.len()).sum::<usize>();
    }

    let mdat = w.open(b"mdat");
    for sample in runs.iter().flat_map(|r| r.samples) {
        w.bytes(&sample.data);
    }
    w.close(mdat);
    Ok(w.finish()?)
}

fn sample_flags(sample: &Sample) -> u32 {
    if sample.keyframe {
        SYNC_SAMPLE_FLAGS
    } else {
        NON_SYNC_SAMPLE_FLAGS
    }
}

fn validate_video(v: &VideoConfig) -> Result<(), CmafError> {
    if v.sps.is_empty() || v.pps.is_empty() {
        return Err(CmafError::MissingParameterSets);
    }
    h264::decoder_config_record(&v.sps, &v.pps).map(drop).map_err(|_| CmafError::BadParameterSet)
}

fn matrix(w: &mut BoxWriter) {
    for m in MATRIX {
        w.u32(m);
    }
}

fn tkhd(w: &mut BoxWriter, track_id: u32, volume: u16, width: u16, height: u16) {
    let tkhd = w.open_full(b"tkhd", 0, 0x3); // enabled | in_movie
    w.u32(0); // creation_time
    w.u32(0); // modification_time
    w.u32(track_id);
    w.u32(0); // reserved
    w.u32(0); // duration
    w.zeros(8);
    w.u16(0); // layer
    w.u16(0); // alternate_group
    w.u16(volume);
    w.u16(0);
    matrix(w);
    w.u32(u32::from(width) << 16);
    w.u32(u32::from(height) << 16);
    w.close(tkhd);
}

fn mdhd_hdlr(w: &mut BoxWriter, timescale: u32, handler: &[u8; 4], name: &[u8]) {
    let mdhd = w.open_full(b"mdhd", 0, 0);
    w.u32(0); // creation_time
    w.u32(0); // modification_time
    w.u32(timescale);
    w.u32(0); // duration
    w.u16(0x55c4); // language "und", packed ISO-639-2/T
    w.u16(0);
    w.close(mdhd);
    let hdlr = w.open_full(b"hdlr", 0, 0);
    w.u32(0); // pre_defined
    w.bytes(handler);
    w.zeros(12);
    w.bytes(name);
    w.u8(0);
    w.close(hdlr);
}

/// `dinf` and the empty sample tables around one sample entry, written by `entry`.
fn dinf_stbl(w: &mut BoxWriter, entry: impl FnOnce(&mut BoxWriter)) {
    let dinf = w.open(b"dinf");
    let dref = w.open_full(b"dref", 0, 0);
    w.u32(1);
    let url = w.open_full(b"url ", 0, 1); // media data in the same file
    w.close(url);
    w.close(dref);
    w.close(dinf);

    let stbl = w.open(b"stbl");
    let stsd = w.open_full(b"stsd", 0, 0);
    w.u32(1);
    entry(w);
    w.close(stsd);
    for fourcc in [b"stts", b"stsc"] {
        let b = w.open_full(fourcc, 0, 0);
        w.u32(0);
        w.close(b);
    }
    let stsz = w.open_full(b"stsz", 0, 0);
    w.u32(0); // sample_size
    w.u32(0); // sample_count
    w.close(stsz);
    let stco = w.open_full(b"stco", 0, 0);
    w.u32(0);
    w.close(stco);
    w.close(stbl);
}

fn video_trak(w: &mut BoxWriter, v: &VideoConfig) {
    let trak = w.open(b"trak");
    tkhd(w, VIDEO_TRACK_ID, 0, v.width, v.height);
    let mdia = w.open(b"mdia");
    mdhd_hdlr(w, VIDEO_TIMESCALE, b"vide", b"BitRiver Video");
    let minf = w.open(b"minf");
    let vmhd = w.open_full(b"vmhd", 0, 1);
    w.zeros(8); // graphicsmode, opcolor
    w.close(vmhd);
    dinf_stbl(w, |w| {
        let avc1 = w.open(b"avc1");
        w.zeros(6);
        w.u16(1); // data_reference_index
        w.zeros(16); // pre_defined, reserved
        w.u16(v.width);
        w.u16(v.height);
        w.u32(0x0048_0000); // 72 dpi
        w.u32(0x0048_0000);
        w.u32(0);
        w.u16(1); // frame_count
        w.zeros(32); // compressorname
        w.u16(0x0018); // depth
        w.u16(0xffff); // pre_defined = -1
        let avcc = w.open(b"avcC");
        // validate_video checked what the record needs; an empty box cannot happen.
        w.bytes(&h264::decoder_config_record(&v.sps, &v.pps).unwrap_or_default());
        w.close(avcc);
        w.close(avc1);
    });
    w.close(minf);
    w.close(mdia);
    w.close(trak);
}

fn audio_trak(w: &mut BoxWriter, a: &AudioConfig) {
    let trak = w.open(b"trak");
    tkhd(w, AUDIO_TRACK_ID, 0x0100, 0, 0);
    let mdia = w.open(b"mdia");
    mdhd_hdlr(w, a.sample_rate, b"soun", b"BitRiver Audio");
    let minf = w.open(b"minf");
    let smhd = w.open_full(b"smhd", 0, 0);
    w.u16(0); // balance
    w.u16(0);
    w.close(smhd);
    dinf_stbl(w, |w| {
        let mp4a = w.open(b"mp4a");
        w.zeros(6);
        w.u16(1); // data_reference_index
        w.zeros(8);
        w.u16(a.channels);
        w.u16(16); // samplesize
        w.u32(0); // pre_defined, reserved
                  // 16.16 fixed point; rates above 65535 Hz don't fit and are left to the timescale/ASC.
        w.u32(if a.sample_rate <= 0xffff { a.sample_rate << 16 } else { 0 });
        esds(w, a);
        w.close(mp4a);
    });
    w.close(minf);
    w.close(mdia);
    w.close(trak);
}

/// `esds`: ES_Descriptor > DecoderConfigDescriptor > DecoderSpecificInfo (the ASC), SLConfig.
fn esds(w: &mut BoxWriter, a: &AudioConfig) {
    let esds = w.open_full(b"esds", 0, 0);
    let asc_len = a.asc.len();
    let dsi_len = descriptor_len(asc_len);
    let dcd_len = descriptor_len(13 + dsi_len);
    descriptor_header(w, 0x03, 3 + dcd_len + 3);
    w.u16(0); // ES_ID
    w.u8(0); // flags
    descriptor_header(w, 0x04, 13 + dsi_len);
    w.u8(0x40); // objectTypeIndication: MPEG-4 Audio
    w.u8(0x15); // streamType audio (5) << 2 | reserved 1
    w.u24(0); // bufferSizeDB
    w.u32(0); // maxBitrate
    w.u32(0); // avgBitrate
    descriptor_header(w, 0x05, asc_len);
    w.bytes(&a.asc);
    descriptor_header(w, 0x06, 1);
    w.u8(0x02); // predefined: MP4
    w.close(esds);
}

/// Total size of a descriptor with a `payload`-byte body: tag, expandable size, body.
fn descriptor_len(payload: usize) -> usize {
    let mut size_bytes = 1;
    while size_bytes < 4 && payload >> (7 * size_bytes) != 0 {
        size_bytes += 1;
    }
    1 + size_bytes + payload
}

/// Writes a descriptor tag and its size in the expandable (7 bits per byte) form, minimal length.
fn descriptor_header(w: &mut BoxWriter, tag: u8, payload: usize) {
    w.u8(tag);
    if payload >= 1 << 28 {
        w.mark_overflow();
        return;
    }
    let mut shift = 21;
    while shift > 0 && payload >> shift == 0 {
        shift -= 7;
    }
    while shift > 0 {
        w.u8(0x80 | ((payload >> shift) & 0x7f) as u8);
        shift -= 7;
    }
    w.u8((payload & 0x7f) as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmaf::VideoCodec;
    use crate::codec::aac;
    use crate::test_support::audio_config;

    /// The video track of the byte-exact tests (its bytes are pinned below).
    fn video_config() -> VideoConfig {
        VideoConfig {
            codec: VideoCodec::Avc1,
            sps: vec![vec![0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9]],
            pps: vec![vec![0x68, 0xeb, 0xe3, 0xcb]],
            width: 320,
            height: 240,
            codec_string: "avc1.64001f".into(),
        }
    }

    /// Walks a box tree, returning `path size` for every box, checking that children fill their
    /// parent exactly. Containers are the ones we write.
    fn walk(buf: &[u8], prefix: &str, out: &mut Vec<String>) {
        const CONTAINERS: [&str; 9] = ["moov", "trak", "mdia", "minf", "dinf", "stbl", "mvex", "moof", "traf"];
        let mut at = 0;
        while at < buf.len() {
            let size = u32::from_be_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
            let name = std::str::from_utf8(&buf[at + 4..at + 8]).unwrap().to_string();
            assert!(size >= 8 && at + size <= buf.len(), "box {prefix}/{name} overruns its parent");
            let path = format!("{prefix}/{name}");
            out.push(format!("{path} {size}"));
            let body = &buf[at + 8..at + size];
            if CONTAINERS.contains(&name.as_str()) {
                walk(body, &path, out);
            } else if name == "stsd" {
                walk(&body[8..], &path, out);
            } else if name == "avc1" {
                walk(&body[78..], &path, out);
            } else if name == "mp4a" {
                walk(&body[28..], &path, out);
            }
            at += size;
        }
    }

    fn find<'a>(buf: &'a [u8], fourcc: &[u8; 4]) -> &'a [u8] {
        let at = buf.windows(4).position(|w| w == fourcc).expect("box present") - 4;
        let size = u32::from_be_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
        &buf[at..at + size]
    }

    #[test]
    fn init_segment_layout() {
        let init = init_segment(Some(&video_config()), Some(&audio_config())).unwrap();
        let mut boxes = Vec::new();
        walk(&init, "", &mut boxes);
        let names: Vec<&str> = boxes.iter().map(|b| b.split(' ').next().unwrap()).collect();
        assert_eq!(
            names,
            [
                "/ftyp",
                "/moov",
                "/moov/mvhd",
                "/moov/trak",
                "/moov/trak/tkhd",
                "/moov/trak/mdia",
                "/moov/trak/mdia/mdhd",
                "/moov/trak/mdia/hdlr",
                "/moov/trak/mdia/minf",
                "/moov/trak/mdia/minf/vmhd",
                "/moov/trak/mdia/minf/dinf",
                "/moov/trak/mdia/minf/dinf/dref",
                "/moov/trak/mdia/minf/stbl",
                "/moov/trak/mdia/minf/stbl/stsd",
                "/moov/trak/mdia/minf/stbl/stsd/avc1",
                "/moov/trak/mdia/minf/stbl/stsd/avc1/avcC",
                "/moov/trak/mdia/minf/stbl/stts",
                "/moov/trak/mdia/minf/stbl/stsc",
                "/moov/trak/mdia/minf/stbl/stsz",
                "/moov/trak/mdia/minf/stbl/stco",
                "/moov/trak",
                "/moov/trak/tkhd",
                "/moov/trak/mdia",
                "/moov/trak/mdia/mdhd",
                "/moov/trak/mdia/hdlr",
                "/moov/trak/mdia/minf",
                "/moov/trak/mdia/minf/smhd",
                "/moov/trak/mdia/minf/dinf",
                "/moov/trak/mdia/minf/dinf/dref",
                "/moov/trak/mdia/minf/stbl",
                "/moov/trak/mdia/minf/stbl/stsd",
                "/moov/trak/mdia/minf/stbl/stsd/mp4a",
                "/moov/trak/mdia/minf/stbl/stsd/mp4a/esds",
                "/moov/trak/mdia/minf/stbl/stts",
                "/moov/trak/mdia/minf/stbl/stsc",
                "/moov/trak/mdia/minf/stbl/stsz",
                "/moov/trak/mdia/minf/stbl/stco",
                "/moov/mvex",
                "/moov/mvex/trex",
                "/moov/mvex/trex",
            ]
        );
        assert_eq!(&init[..24], b"\0\0\0\x18ftypiso6\0\0\0\0iso6cmfc");
        assert_eq!(
            find(&init, b"avcC"),
            [
                &[0, 0, 0, 29][..],
                b"avcC",
                &[1, 0x64, 0x00, 0x1f, 0xff, 0xe1, 0, 6, 0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9],
                &[1, 0, 4, 0x68, 0xeb, 0xe3, 0xcb],
            ]
            .concat()
        );
        assert_eq!(
            find(&init, b"esds"),
            [
                &[0, 0, 0, 39][..],
                b"esds",
                &[0, 0, 0, 0],
                &[0x03, 25, 0, 0, 0],
                &[0x04, 17, 0x40, 0x15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                &[0x05, 2, 0x11, 0x90],
                &[0x06, 1, 0x02],
            ]
            .concat()
        );
        let mdhd = find(&init, b"mdhd");
        assert_eq!(&mdhd[20..24], &VIDEO_TIMESCALE.to_be_bytes());
        let trex = find(&init, b"trex");
        assert_eq!(&trex[12..16], &VIDEO_TRACK_ID.to_be_bytes());
    }

    #[test]
    fn init_segment_rejects_bad_configs() {
        assert_eq!(init_segment(None, None), Err(CmafError::NoTracks));
        let mut v = video_config();
        v.pps.clear();
        assert_eq!(init_segment(Some(&v), None), Err(CmafError::MissingParameterSets));
        let mut v = video_config();
        v.sps[0].truncate(2);
        assert_eq!(init_segment(Some(&v), None), Err(CmafError::BadParameterSet));
        let mut v = video_config();
        v.pps[0] = vec![0; 70_000];
        assert_eq!(init_segment(Some(&v), None), Err(CmafError::BadParameterSet));
        let mut a = audio_config();
        a.asc.clear();
        assert_eq!(init_segment(None, Some(&a)), Err(CmafError::BadAudioConfig));
        assert!(init_segment(None, Some(&audio_config())).is_ok());
    }

    #[test]
    fn fragment_is_byte_exact() {
        let samples = [
            Sample { dts: 0, pts_offset: 3000, duration: 3000, keyframe: true, data: Bytes::from_static(&[1, 2, 3]) },
            Sample { dts: 3000, pts_offset: -3000, duration: 3000, keyframe: false, data: Bytes::from_static(&[4, 5]) },
        ];
        let run = TrackRun { track_id: 1, base_media_decode_time: 0x1_0000_0000, samples: &samples };
        let out = fragment(7, &[run]).unwrap();
        let expected = [
            &[0, 0, 0, 120][..],
            b"moof",
            &[0, 0, 0, 16],
            b"mfhd",
            &[0, 0, 0, 0, 0, 0, 0, 7],
            &[0, 0, 0, 96],
            b"traf",
            &[0, 0, 0, 16],
            b"tfhd",
            &[0, 2, 0, 0, 0, 0, 0, 1],
            &[0, 0, 0, 20],
            b"tfdt",
            &[1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0],
            &[0, 0, 0, 52],
            b"trun",
            &[1, 0, 0x0f, 0x01, 0, 0, 0, 2, 0, 0, 0, 128],
            &[0, 0, 0x0b, 0xb8, 0, 0, 0, 3, 0x02, 0, 0, 0, 0, 0, 0x0b, 0xb8],
            &[0, 0, 0x0b, 0xb8, 0, 0, 0, 2, 0x01, 0x01, 0, 0, 0xff, 0xff, 0xf4, 0x48],
            &[0, 0, 0, 13],
            b"mdat",
            &[1, 2, 3, 4, 5],
        ]
        .concat();
        assert_eq!(&out[..], &expected[..]);
    }

    #[test]
    fn fragment_data_offsets_point_at_each_runs_samples() {
        let video = [Sample { dts: 0, pts_offset: 0, duration: 1, keyframe: true, data: Bytes::from_static(b"VVVV") }];
        let audio = [
            Sample { dts: 0, pts_offset: 0, duration: 1024, keyframe: true, data: Bytes::from_static(b"AA") },
            Sample { dts: 1024, pts_offset: 0, duration: 1024, keyframe: true, data: Bytes::from_static(b"BBB") },
        ];
        let runs = [
            TrackRun { track_id: VIDEO_TRACK_ID, base_media_decode_time: 0, samples: &video },
            TrackRun { track_id: AUDIO_TRACK_ID, base_media_decode_time: 0, samples: &audio },
        ];
        let out = fragment(1, &runs).unwrap();
        let moof_len = u32::from_be_bytes(out[0..4].try_into().unwrap()) as usize;
        let mut at = 0;
        let mut offsets = Vec::new();
        while let Some(pos) = out[at..moof_len].windows(4).position(|w| w == b"trun") {
            let trun = at + pos - 4;
            offsets.push(i32::from_be_bytes(out[trun + 16..trun + 20].try_into().unwrap()) as usize);
            at = trun + 8;
        }
        assert_eq!(offsets.len(), 2);
        assert_eq!(&out[offsets[0]..offsets[0] + 4], b"VVVV");
        assert_eq!(&out[offsets[1]..offsets[1] + 5], b"AABBB");
        assert_eq!(offsets[0], moof_len + 8);
    }

    /// Splits ADTS into raw AAC frames and derives the AudioSpecificConfig from the first header.
    fn adts_frames(data: &[u8]) -> (Vec<u8>, u32, u16, Vec<Bytes>) {
        let mut frames = Vec::new();
        let mut at = 0;
        let mut first = None;
        while at < data.len() {
            let h = aac::parse_adts_header(&data[at..]).expect("ADTS from ffmpeg");
            first.get_or_insert(h);
            frames.push(Bytes::copy_from_slice(&data[at + h.header_len..at + h.frame_len]));
            at += h.frame_len;
        }
        let h = first.expect("at least one ADTS frame");
        let channels = u16::from((h.asc[1] >> 3) & 0x0f);
        (h.asc.to_vec(), h.sample_rate, channels, frames)
    }

    fn run(cmd: &mut std::process::Command) -> std::process::Output {
        let out = cmd.output().expect("spawn");
        assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        out
    }

    /// Real H.264 + AAC from ffmpeg, muxed by us, read back by ffprobe.
    #[test]
    fn ffprobe_reads_our_fragments() {
        if !testkit::require_tools(&["ffmpeg", "ffprobe"]) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let h264 = dir.path().join("out.h264");
        let aac = dir.path().join("out.aac");
        // -bf 0: the test helper has no POC parsing, so decode order must equal presentation order.
        run(std::process::Command::new(testkit::tools::ffmpeg())
            .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-t", "2"])
            .args(["-c:v", "libx264", "-g", "30", "-bf", "0", "-bsf:v", "h264_mp4toannexb", "-f", "h264"])
            .arg(&h264));
        run(std::process::Command::new(testkit::tools::ffmpeg())
            .args(["-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "2"])
            .args(["-c:a", "aac", "-ac", "2", "-f", "adts"])
            .arg(&aac));

        let es = h264::split_access_units(&std::fs::read(&h264).unwrap());
        assert_eq!(es.access_units.len(), 60);
        let video = VideoConfig {
            codec: VideoCodec::Avc1,
            codec_string: h264::codec_string(&es.sps[0]).unwrap(),
            sps: es.sps.clone(),
            pps: es.pps.clone(),
            width: 320,
            height: 240,
        };
        let (asc, sample_rate, channels, aac_frames) = adts_frames(&std::fs::read(&aac).unwrap());
        let audio = AudioConfig { codec_string: aac::codec_string(&asc).unwrap(), asc, sample_rate, channels };
        assert_eq!(audio.codec_string, "mp4a.40.2");

        let video_samples: Vec<Sample> = es
            .access_units
            .iter()
            .enumerate()
            .map(|(i, (au, idr))| Sample {
                dts: i as u64 * 3000,
                pts_offset: 0,
                duration: 3000,
                keyframe: *idr,
                data: au.clone(),
            })
            .collect();
        let audio_samples: Vec<Sample> = aac_frames
            .into_iter()
            .enumerate()
            .map(|(i, data)| Sample { dts: i as u64 * 1024, pts_offset: 0, duration: 1024, keyframe: true, data })
            .collect();

        let mut file = init_segment(Some(&video), Some(&audio)).unwrap().to_vec();
        // Fragments of 6 video frames (200 ms) with the audio frames of the same time span.
        for (n, chunk) in video_samples.chunks(6).enumerate() {
            let start = chunk[0].dts;
            let end = start + 6 * 3000;
            let in_span = |s: &&Sample| s.dts * 90_000 >= start * 48_000 && s.dts * 90_000 < end * 48_000;
            let first = audio_samples.iter().position(|s| in_span(&s)).unwrap_or(audio_samples.len());
            let count = audio_samples[first..].iter().take_while(|s| in_span(s)).count();
            let audio_run = &audio_samples[first..first + count];
            let runs = [
                TrackRun { track_id: VIDEO_TRACK_ID, base_media_decode_time: start, samples: chunk },
                TrackRun {
                    track_id: AUDIO_TRACK_ID,
                    base_media_decode_time: audio_run.first().map_or(0, |s| s.dts),
                    samples: audio_run,
                },
            ];
            file.extend_from_slice(&fragment(n as u32 + 1, &runs).unwrap());
        }
        let mp4 = dir.path().join("out.mp4");
        std::fs::write(&mp4, &file).unwrap();

        let out = run(std::process::Command::new(testkit::tools::ffprobe())
            .args(["-v", "error", "-show_streams", "-show_packets"])
            .arg(&mp4));
        assert!(out.stderr.is_empty(), "ffprobe complained: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        let streams: Vec<&str> = text.split("[STREAM]").skip(1).collect();
        assert_eq!(streams.len(), 2);
        assert!(streams[0].contains("codec_name=h264\n"), "{}", streams[0]);
        assert!(streams[0].contains("width=320\n") && streams[0].contains("height=240\n"));
        assert!(streams[1].contains("codec_name=aac\n") && streams[1].contains("sample_rate=48000\n"));
        assert!(streams[1].contains("channels=2\n"));

        let packets: Vec<&str> = text.split("[PACKET]").skip(1).collect();
        let video_packets: Vec<&str> = packets.iter().copied().filter(|p| p.contains("stream_index=0\n")).collect();
        let audio_packets = packets.iter().filter(|p| p.contains("stream_index=1\n")).count();
        assert_eq!(video_packets.len(), 60);
        let audio_in_video_span = audio_samples.iter().filter(|s| s.dts * 90_000 < 60 * 3000 * 48_000).count();
        assert_eq!(audio_packets, audio_in_video_span);
        for (i, p) in video_packets.iter().enumerate() {
            assert!(p.contains(&format!("\ndts={}\n", i * 3000)), "packet {i}: {p}");
            let key = p.lines().find_map(|l| l.strip_prefix("flags=")).unwrap().starts_with('K');
            assert_eq!(key, i.is_multiple_of(30), "keyframe flag of packet {i}");
        }
    }
}
