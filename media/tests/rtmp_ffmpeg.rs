//! A real publisher against the sans-IO `ServerSession`: ffmpeg pushes a few seconds of H.264 +
//! AAC over loopback, a plain std thread moves the bytes. Needs ffmpeg; fails naming it when missing.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Stdio;
use std::time::Duration;

use media::codec::h264;
use media::flv::{self, AudioTag, VideoTag};
use media::rtmp::{CloseReason, Event, ServerSession, SessionConfig};

#[test]
fn ffmpeg_publishes_h264_and_aac() {
    if !testkit::require_tool("ffmpeg") {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let pattern = testkit::ffmpeg::TestPattern {
        fps: 25,
        gop: 25,
        seconds: Some(2),
        realtime: true,
        preset: "ultrafast",
        ..testkit::ffmpeg::TestPattern::new(640, 360)
    };
    let mut ffmpeg =
        pattern.command("flv", format!("rtmp://127.0.0.1:{port}/live/test-key")).stdout(Stdio::null()).spawn().unwrap();

    // Never hang the suite if ffmpeg fails before connecting.
    listener.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut sock = loop {
        match listener.accept() {
            Ok((sock, _)) => break sock,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("ffmpeg did not connect: {e} ({:?})", ffmpeg.try_wait()),
        }
    };
    sock.set_nonblocking(false).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut session = ServerSession::new(SessionConfig::default());
    let mut buf = vec![0u8; 64 * 1024];
    let (mut avc, mut aac, mut keyframes, mut video, mut audio, mut meta, mut unpublished) =
        (None, None, 0, 0, 0, None, false);
    let mut last_dts = 0;
    loop {
        let n = sock.read(&mut buf).unwrap();
        if n == 0 {
            session.handle_eof();
        } else {
            session.handle_input(&buf[..n]);
        }
        let mut requests = Vec::new();
        while let Some(event) = session.poll_event() {
            match event {
                Event::PublishRequested { request_id, app, stream_key } => {
                    assert_eq!((app.as_str(), stream_key.as_str()), ("live", "test-key"));
                    requests.push(request_id);
                }
                Event::Metadata(m) => meta = Some(m),
                Event::Video { timestamp_ms, payload } => match flv::parse_video_tag(timestamp_ms, &payload).unwrap() {
                    VideoTag::AvcSequenceHeader(c) => avc = Some(c),
                    VideoTag::Frame(f) => {
                        assert!(f.dts_ms >= last_dts);
                        last_dts = f.dts_ms;
                        keyframes += usize::from(f.keyframe);
                        video += 1;
                        let nal_len = avc.as_ref().map_or(4, |c| c.nal_length_size);
                        assert!(h264::avcc_nal_units(&f.nalus, nal_len).all(|n| n.is_ok()));
                    }
                    _ => {}
                },
                Event::Audio { timestamp_ms, payload } => match flv::parse_audio_tag(timestamp_ms, &payload).unwrap() {
                    AudioTag::AacSequenceHeader(c) => aac = Some(c),
                    AudioTag::Frame(_) => audio += 1,
                    _ => {}
                },
                Event::Unpublished => unpublished = true,
                Event::Closed(reason) => {
                    assert_eq!(reason, CloseReason::PeerClosed);
                    let _ = ffmpeg.wait();
                    let avc = avc.expect("AVC sequence header");
                    assert_eq!((avc.width, avc.height), (640, 360));
                    let aac = aac.expect("AAC sequence header");
                    assert_eq!((aac.sample_rate, aac.codec_string().as_str()), (48000, "mp4a.40.2"));
                    assert_eq!(meta.expect("onMetaData").width, Some(640.0));
                    assert!(video >= 40 && audio >= 80 && keyframes >= 2, "{video} {audio} {keyframes}");
                    assert!(unpublished);
                    return;
                }
                _ => {}
            }
        }
        for id in requests {
            session.accept_publish(id).unwrap();
        }
        while let Some(out) = session.poll_transmit() {
            sock.write_all(&out).unwrap();
        }
    }
}
