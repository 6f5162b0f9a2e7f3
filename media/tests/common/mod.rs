//! Fixtures of media's integration tests (the unit tests' are in `src/test_support.rs`): a 30 fps
//! synthetic H.264 stream, its wall clock and an origin served on loopback.

#![allow(dead_code)] // each test binary uses its own subset

use bytes::Bytes;
use media::cmaf::{Sample, VideoCodec, VideoConfig};
use media::origin::{routes, LiveRegistry, OriginConfig};

/// The wall clock of frame 0.
pub(crate) const T0: i64 = 1_700_000_000_000;

/// Baseline profile, level 3.0, 640x360: the codec string matches the SPS bytes.
pub(crate) fn video_config() -> VideoConfig {
    VideoConfig {
        codec: VideoCodec::Avc1,
        sps: vec![vec![0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x2f, 0xf9, 0x70, 0x11]],
        pps: vec![vec![0x68, 0xce, 0x3c, 0x80]],
        width: 640,
        height: 360,
        codec_string: "avc1.42c01e".into(),
    }
}

/// Frame `i` of a 30 fps stream with a keyframe every second: one AVCC NAL unit (IDR or not)
/// of `payload` bytes.
pub(crate) fn frame_of(i: u64, payload: usize) -> Sample {
    let keyframe = i.is_multiple_of(30);
    let mut data = (payload as u32 + 1).to_be_bytes().to_vec();
    data.push(if keyframe { 0x65 } else { 0x41 });
    data.extend(std::iter::repeat_n(i as u8, payload));
    Sample { dts: i * 3000, pts_offset: 0, duration: 3000, keyframe, data: Bytes::from(data) }
}

/// Frame `i` arrives at its media time after [`T0`].
pub(crate) fn now_of(i: u64) -> i64 {
    T0 + (i * 100 / 3) as i64
}

/// Serves the origin routes of `registry` on loopback; returns the base URL.
pub(crate) async fn serve(registry: LiveRegistry) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = routes(registry, OriginConfig::default());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}
