//! Arbitrary bytes into the FLV parsers (tag bodies, FLV file framing) and the codec layer behind
//! them: codec configurations, the SPS parser, AVCC and Annex B NAL unit framing.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use media::codec::aac::AacConfig;
use media::codec::h264::{self, AvcConfig};
use media::flv;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let body = Bytes::copy_from_slice(rest);
    let ts = u64::from(selector) << 24;
    match selector % 4 {
        0 => {
            if let Ok(flv::VideoTag::Frame(frame)) = flv::parse_video_tag(ts, &body) {
                assert_eq!(frame.dts_ms, ts);
                for length_size in 1..=4 {
                    let _ = h264::avcc_nal_units(&frame.nalus, length_size).count();
                    let _ = h264::to_avcc4(&frame.nalus, length_size);
                }
            }
        }
        1 => {
            let _ = flv::parse_audio_tag(ts, &body);
            let _ = AacConfig::parse(&body);
        }
        2 => {
            let _ = h264::parse_sps(&body);
            let _ = AvcConfig::parse_record(&body);
            let _ = h264::annexb_nal_units(&body).count();
            let _ = h264::split_access_units(&body);
        }
        _ => {
            // A file: header, then tags until the data runs out.
            let mut pos = match flv::read_file_header(&body) {
                Ok((_, used)) => used,
                Err(_) => 0,
            };
            while pos < body.len() {
                match flv::read_tag(&body.slice(pos..)) {
                    Ok((tag, used)) => {
                        assert!(used > 0);
                        pos += used;
                        match tag.tag_type {
                            flv::tag_type::VIDEO => drop(flv::parse_video_tag(u64::from(tag.timestamp), &tag.body)),
                            flv::tag_type::AUDIO => drop(flv::parse_audio_tag(u64::from(tag.timestamp), &tag.body)),
                            _ => {}
                        }
                    }
                    Err(_) => break,
                }
            }
        }
    }
});
