//! `transcode::audio` on real codecs: Opus packets made by ffmpeg's libopus go through
//! [`OpusToAac`] and come out as AAC that ffmpeg decodes (ADTS file) to the same tone and length;
//! AAC frames made by ffmpeg (44.1/48 kHz, mono/stereo/5.1) go through [`AacToOpus`] and come out
//! as 20 ms Opus packets that FFmpeg's own Opus decoder plays back. Lost, duplicate and late
//! packets keep the timeline; garbage is an error, never a panic. One test prints the CPU cost
//! beside the ffmpeg CLI's (`cargo nextest run -p bitriver-transcode --test audio --nocapture`).
//!
//! Needs ffmpeg and ffprobe; fails naming them when missing unless `BITRIVER_ALLOW_SKIP=1`.

use std::path::{Path, PathBuf};
use std::process::Command;

use ffmpeg_next::codec::{self, decoder};
use ffmpeg_next::format::sample::Type as SampleType;
use ffmpeg_next::format::Sample;
use ffmpeg_next::{frame, Packet};
use media::codec::aac::parse_adts_header;
use testkit::procfs::{cpu_seconds, Pid};
use transcode::audio::{AacToOpus, AudioError, AudioFrame, OpusToAac, MAX_OPUS_PACKET};

const TONE_HZ: f64 = 440.0;

/// Runs ffmpeg with `args` and returns its stderr; panics when it fails.
fn ffmpeg(args: &[&str]) -> String {
    let out = Command::new(testkit::tools::ffmpeg())
        .args(["-hide_banner", "-nostdin", "-y"])
        .args(args)
        .output()
        .expect("running ffmpeg");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "ffmpeg {args:?}: {stderr}");
    stderr
}

/// The lavfi source of `seconds` of a 440 Hz tone at `rate` with `channels` (the same tone in
/// each).
fn tone(seconds: u32, rate: u32, channels: u32) -> Vec<String> {
    let layout = match channels {
        1 => "mono",
        2 => "stereo",
        _ => "5.1",
    };
    vec![
        "-f".into(),
        "lavfi".into(),
        "-i".into(),
        format!("sine=frequency={TONE_HZ}:sample_rate={rate}:duration={seconds},aformat=channel_layouts={layout}"),
    ]
}

/// `seconds` of the tone as libopus 20 ms packets in Ogg, demuxed with libavformat: (packet,
/// pts in 48 kHz units from 0).
fn opus_packets(dir: &Path, channels: u32, seconds: u32) -> Vec<(Vec<u8>, i64)> {
    let file = dir.join(format!("tone-{channels}.ogg"));
    let mut args = tone(seconds, 48000, channels);
    args.extend(["-c:a", "libopus", "-b:a", "96k", "-frame_duration", "20"].map(String::from));
    args.push(file.to_str().unwrap().into());
    ffmpeg(&args.iter().map(String::as_str).collect::<Vec<_>>());
    transcode::init();
    let mut input = ffmpeg_next::format::input(&file).expect("opening the Ogg file");
    let mut packets = Vec::new();
    for (stream, packet) in input.packets() {
        let tb = stream.time_base();
        let pts = packet.pts().expect("Ogg packets have pts") * 48000 * i64::from(tb.0) / i64::from(tb.1);
        packets.push((packet.data().unwrap().to_vec(), pts));
    }
    let first = packets[0].1;
    packets.iter_mut().for_each(|(_, pts)| *pts -= first);
    assert!(packets.len() as u32 >= seconds * 50, "only {} Opus packets", packets.len());
    packets
}

/// `seconds` of the tone as AAC-LC from ffmpeg's encoder: (AudioSpecificConfig, raw frames).
fn aac_frames(dir: &Path, rate: u32, channels: u32, seconds: u32) -> ([u8; 2], Vec<Vec<u8>>) {
    let file = dir.join(format!("tone-{rate}-{channels}.aac"));
    let mut args = tone(seconds, rate, channels);
    args.extend(["-c:a", "aac", "-b:a", "128k", "-f", "adts"].map(String::from));
    args.push(file.to_str().unwrap().into());
    ffmpeg(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let adts = std::fs::read(&file).unwrap();
    let (mut frames, mut asc, mut pos) = (Vec::new(), [0; 2], 0);
    while pos < adts.len() {
        let header = parse_adts_header(&adts[pos..]).expect("ffmpeg's ADTS");
        asc = header.asc;
        frames.push(adts[pos + header.header_len..pos + header.frame_len].to_vec());
        pos += header.frame_len;
    }
    (asc, frames)
}

/// AAC-LC 48 kHz frames wrapped in ADTS headers, for ffmpeg to read.
fn adts_file(frames: &[AudioFrame], channels: u8, path: &Path) {
    let mut out = Vec::new();
    for frame in frames {
        let len = frame.data.len() + 7;
        let (profile, rate_index) = (1u8, 3u8); // AAC-LC, 48 kHz
        out.extend_from_slice(&[
            0xFF,
            0xF1,
            (profile << 6) | (rate_index << 2) | (channels >> 2),
            ((channels & 3) << 6) | (len >> 11) as u8,
            (len >> 3) as u8,
            ((len & 7) << 5) as u8 | 0x1F,
            0xFC,
        ]);
        out.extend_from_slice(&frame.data);
    }
    std::fs::write(path, out).unwrap();
}

/// `path` decoded by the ffmpeg CLI to mono 48 kHz samples.
fn decode_with_cli(path: &Path) -> Vec<f32> {
    let out = Command::new(testkit::tools::ffmpeg())
        .args(["-hide_banner", "-v", "error", "-i"])
        .arg(path)
        .args(["-f", "f32le", "-ac", "1", "-ar", "48000", "-"])
        .output()
        .expect("running ffmpeg");
    assert!(out.status.success(), "ffmpeg decoding {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    out.stdout.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

/// Opus packets decoded by FFmpeg's native Opus decoder (stereo, no extradata: what a WebRTC
/// receiver assumes): the first channel's samples.
fn decode_opus(packets: &[AudioFrame]) -> Vec<f32> {
    transcode::init();
    let codec = decoder::find_by_name("opus").expect("FFmpeg's Opus decoder");
    let mut opus = codec::Context::new_with_codec(codec).decoder().audio().expect("opening the Opus decoder");
    let mut samples = Vec::new();
    for packet in packets {
        opus.send_packet(&Packet::copy(&packet.data)).expect("ffmpeg decodes our Opus packet");
        let mut decoded = frame::Audio::empty();
        while opus.receive_frame(&mut decoded).is_ok() {
            assert_eq!(decoded.format(), Sample::F32(SampleType::Planar));
            assert_eq!(decoded.channels(), 2);
            samples.extend_from_slice(&decoded.plane::<f32>(0)[..decoded.samples()]);
        }
    }
    samples
}

/// The tone's frequency from upward zero crossings over the middle of `samples` (48 kHz).
fn frequency(samples: &[f32]) -> f64 {
    let middle = &samples[samples.len() / 4..samples.len() * 3 / 4];
    let crossings = middle.windows(2).filter(|w| w[0] < 0.0 && w[1] >= 0.0).count();
    crossings as f64 * 48000.0 / middle.len() as f64
}

fn rms(samples: &[f32]) -> f64 {
    (samples.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / samples.len().max(1) as f64).sqrt()
}

/// Every frame starts where the previous one ended.
fn assert_contiguous(frames: &[AudioFrame], what: &str) {
    for pair in frames.windows(2) {
        assert_eq!(
            pair[1].pts,
            pair[0].pts + i64::from(pair[0].duration),
            "{what}: a hole or overlap at {}",
            pair[0].pts
        );
    }
}

fn opus_to_aac(packets: &[(Vec<u8>, i64)], channels: u8) -> Vec<AudioFrame> {
    let mut t = OpusToAac::new(channels, 128_000).unwrap();
    let mut frames = Vec::new();
    for (packet, pts) in packets {
        frames.extend(t.push(packet, *pts).unwrap());
    }
    frames.extend(t.flush().unwrap());
    frames
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn opus_becomes_aac_that_ffmpeg_plays_as_the_same_tone_and_length() {
    if !testkit::require_tools(&["ffmpeg", "ffprobe"]) {
        return;
    }
    let dir = temp_dir();
    for channels in [1u8, 2] {
        let packets = opus_packets(dir.path(), u32::from(channels), 3);
        let input_samples = packets.last().unwrap().1 + 960;
        let t = OpusToAac::new(channels, 128_000).unwrap();
        assert_eq!((t.sample_rate(), t.channels()), (48000, channels));
        assert_eq!(t.audio_specific_config().len(), 2);
        let frames = opus_to_aac(&packets, channels);

        assert_eq!(frames[0].pts, 0, "the output starts at the input's first pts");
        assert!(frames[..frames.len() - 1].iter().all(|f| f.duration == 1024));
        assert_contiguous(&frames, "AAC");
        let output_samples = frames.last().unwrap().pts + i64::from(frames.last().unwrap().duration);
        assert!(
            (output_samples - input_samples).abs() <= 1024,
            "{channels} ch: {output_samples} samples out of {input_samples} in"
        );

        let file = dir.path().join(format!("out-{channels}.aac"));
        adts_file(&frames, channels, &file);
        let probe = Command::new(testkit::tools::ffprobe())
            .args(["-v", "error", "-show_entries", "stream=codec_name,profile,sample_rate,channels", "-of", "csv=p=0"])
            .arg(&file)
            .output()
            .unwrap();
        let probe = String::from_utf8_lossy(&probe.stdout);
        assert_eq!(probe.trim(), format!("aac,LC,48000,{channels}"), "ffprobe of our AAC");
        let pcm = decode_with_cli(&file);
        // ffmpeg's AAC decoder plays every frame including the priming one.
        assert!((pcm.len() as i64 - output_samples).abs() <= 2048, "{channels} ch: decoded {} samples", pcm.len());
        let hz = frequency(&pcm);
        assert!((hz - TONE_HZ).abs() < 3.0, "{channels} ch: the tone came out at {hz:.1} Hz");
        assert!(rms(&pcm[4800..pcm.len() - 4800]) > 0.05, "{channels} ch: the tone is too quiet");
    }
}

#[test]
fn lost_duplicate_late_and_far_future_packets_keep_the_aac_timeline() {
    if !testkit::require_tools(&["ffmpeg", "ffprobe"]) {
        return;
    }
    let dir = temp_dir();
    let packets = opus_packets(dir.path(), 2, 2);
    let whole = opus_to_aac(&packets, 2);

    // Packets 20 and 40..43 lost: silence fills their time, the rest stays where it was.
    let lossy: Vec<_> =
        packets.iter().enumerate().filter(|(i, _)| *i != 20 && !(40..43).contains(i)).map(|(_, p)| p.clone()).collect();
    let frames = opus_to_aac(&lossy, 2);
    assert_contiguous(&frames, "with losses");
    assert_eq!(
        frames.iter().map(|f| (f.pts, f.duration)).collect::<Vec<_>>(),
        whole.iter().map(|f| (f.pts, f.duration)).collect::<Vec<_>>(),
        "the same frames at the same times with and without losses"
    );
    let file = dir.path().join("lossy.aac");
    adts_file(&frames, 2, &file);
    let pcm = decode_with_cli(&file);
    // Skip the priming frame: packet 40 starts at 800 ms of input, 1024 samples later in the file.
    let hole = &pcm[1024 + 40 * 960 + 480..1024 + 43 * 960 - 480];
    assert!(rms(hole) < 0.02, "the lost packets' time is not silent: rms {}", rms(hole));

    // Duplicates and a late packet are dropped with no error; the next in-order one carries on.
    let mut t = OpusToAac::new(2, 128_000).unwrap();
    let mut out = Vec::new();
    for (i, (packet, pts)) in packets.iter().enumerate().take(60) {
        out.extend(t.push(packet, *pts).unwrap());
        if i == 30 {
            assert!(t.push(packet, *pts).unwrap().is_empty(), "a duplicate made output");
            assert!(t.push(&packets[10].0, packets[10].1).unwrap().is_empty(), "a late packet made output");
        }
    }
    assert_contiguous(&out, "with duplicates");

    // A jump of a minute (a publisher back after an outage): the timeline follows, no hour of
    // silence, still increasing.
    let before = out.last().unwrap().pts;
    let far = packets[60].1 + 60 * 48000;
    let mut after = Vec::new();
    for (packet, pts) in &packets[60..] {
        after.extend(t.push(packet, pts + 60 * 48000).unwrap());
    }
    after.extend(t.flush().unwrap());
    assert!(after.len() < 100, "{} frames after the jump", after.len());
    assert!(after.windows(2).all(|w| w[1].pts > w[0].pts));
    assert!(after[0].pts > before, "the jump went backwards");
    assert!(
        after.iter().any(|f| f.pts >= far && f.pts < far + 2048),
        "no frame at the new time {far}: {:?}",
        after.iter().map(|f| f.pts).collect::<Vec<_>>()
    );
    assert_eq!(t.push(&packets[0].0, far + 48000), Err(AudioError::Flushed));
}

#[test]
fn garbage_opus_is_an_error_or_concealed_and_never_a_panic() {
    let mut t = OpusToAac::new(2, 96_000).unwrap();
    assert!(matches!(t.push(&[], 0), Err(AudioError::Malformed { .. })));
    assert!(matches!(t.push(&vec![0xfc; MAX_OPUS_PACKET + 1], 0), Err(AudioError::TooLarge { .. })));
    // A code 3 packet claiming 63 frames.
    assert!(matches!(t.push(&[0xfb, 0x3f, 1, 2, 3], 0), Err(AudioError::Malformed { .. })));
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut pts = 0;
    let (mut errors, mut frames) = (0, 0);
    for round in 0..3000 {
        let len = 1 + (round * 7919) % 1500;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        match t.push(&bytes, pts) {
            Ok(out) => {
                frames += out.len();
                assert!(out.iter().all(|f| f.pts >= 0 && f.duration == 1024));
            }
            Err(AudioError::Malformed { .. } | AudioError::Decode(_)) => errors += 1,
            Err(other) => panic!("round {round}: unexpected {other}"),
        }
        pts += 960;
    }
    println!("garbage Opus: {errors} errors, {frames} AAC frames out of 3000 packets");
    assert!(errors > 0, "not one of 3000 random packets was refused");
    // Still a working transcoder: a flush ends the stream cleanly.
    t.flush().unwrap();
}

#[test]
fn aac_of_any_rate_and_layout_becomes_20_ms_opus_that_ffmpeg_decodes() {
    if !testkit::require_tools(&["ffmpeg"]) {
        return;
    }
    let dir = temp_dir();
    for (rate, channels) in [(48000u32, 2u32), (48000, 1), (44100, 2), (44100, 1), (48000, 6)] {
        let what = format!("{rate} Hz {channels} ch");
        let (asc, aac) = aac_frames(dir.path(), rate, channels, 3);
        let mut t = AacToOpus::new(&asc, 96_000).unwrap();
        assert_eq!(t.encoder_delay(), 312);
        // The track's time starts at 10 s, in its own timescale (the sample rate).
        let start = i64::from(rate) * 10;
        let mut packets = Vec::new();
        for (i, frame) in aac.iter().enumerate() {
            packets.extend(t.push(frame, start + i as i64 * 1024, rate).unwrap());
        }
        packets.extend(t.flush().unwrap());

        assert_eq!(packets[0].pts, 480_000, "{what}: Opus does not continue the input's time");
        // Each packet holds 20 ms; the last one says how much of it is real audio.
        let (last, whole) = packets.split_last().unwrap();
        assert!(whole.iter().all(|p| p.duration == 960), "{what}: not all 20 ms packets");
        assert!((1..=960).contains(&last.duration), "{what}: the last packet of {} samples", last.duration);
        assert_contiguous(&packets, &what);
        let input_samples = aac.len() as i64 * 1024 * 48000 / i64::from(rate);
        let output_samples = last.pts + i64::from(last.duration) - packets[0].pts;
        assert!((output_samples - input_samples).abs() <= 960, "{what}: {output_samples} out of {input_samples}");

        let pcm = decode_opus(&packets);
        assert_eq!(pcm.len(), packets.len() * 960, "{what}: decoded length");
        let hz = frequency(&pcm);
        assert!((hz - TONE_HZ).abs() < 3.0, "{what}: the tone came out at {hz:.1} Hz");
        assert!(rms(&pcm[4800..pcm.len() - 4800]) > 0.05, "{what}: the tone is too quiet");
    }
}

#[test]
fn aac_in_a_90_khz_timescale_with_a_lost_frame_keeps_the_opus_timeline() {
    if !testkit::require_tools(&["ffmpeg"]) {
        return;
    }
    let dir = temp_dir();
    let (asc, aac) = aac_frames(dir.path(), 44100, 2, 2);
    let mut t = AacToOpus::new(&asc, 64_000).unwrap();
    let pts_90k = |i: usize| (i as f64 * 1024.0 * 90000.0 / 44100.0).round() as i64;
    let mut packets = Vec::new();
    for (i, frame) in aac.iter().enumerate() {
        if i == 30 {
            continue;
        }
        packets.extend(t.push(frame, pts_90k(i), 90000).unwrap());
        if i == 40 {
            assert!(t.push(frame, pts_90k(i), 90000).unwrap().is_empty(), "a duplicate made output");
        }
    }
    packets.extend(t.flush().unwrap());
    assert_eq!(packets[0].pts, 0);
    assert_contiguous(&packets, "44.1 kHz in 90 kHz with a loss");
    let expected = aac.len() as i64 * 1024 * 48000 / 44100;
    assert!(
        (packets.len() as i64 * 960 - expected).abs() <= 2 * 960,
        "{} packets for {expected} samples",
        packets.len()
    );

    // Garbage frames are errors and the stream goes on.
    assert!(matches!(t.push(&[], 0, 90000), Err(AudioError::Flushed)));
    let mut t = AacToOpus::new(&asc, 64_000).unwrap();
    assert!(matches!(t.push(&[], 0, 44100), Err(AudioError::Malformed { .. })));
    assert!(matches!(t.push(&[0; 7000], 0, 44100), Err(AudioError::TooLarge { .. })));
    assert!(matches!(t.push(&aac[0], 0, 0), Err(AudioError::Config(_))));
    let mut errors = 0;
    for (i, frame) in aac.iter().enumerate().take(40) {
        let mut bytes = frame.clone();
        if i % 3 == 1 {
            bytes.iter_mut().skip(2).for_each(|b| *b = b.wrapping_mul(31).wrapping_add(7));
        }
        match t.push(&bytes, i as i64 * 1024, 44100) {
            Ok(_) => {}
            Err(AudioError::Decode(_)) => errors += 1,
            Err(other) => panic!("frame {i}: unexpected {other}"),
        }
    }
    println!("corrupted AAC: {errors} of 13 refused");
    t.flush().unwrap();
}

/// CPU seconds this process spent in `f`.
fn cpu_of(f: impl FnOnce()) -> f64 {
    let before = cpu_seconds(Pid::This).unwrap();
    f();
    cpu_seconds(Pid::This).unwrap() - before
}

/// CPU seconds (user + system) the ffmpeg CLI reports with `-benchmark` for `args`.
fn cli_cpu(args: &[&str]) -> f64 {
    let mut all = vec!["-benchmark"];
    all.extend_from_slice(args);
    let stderr = ffmpeg(&all);
    let line = stderr.lines().find(|l| l.starts_with("bench:")).expect("ffmpeg -benchmark line");
    let field = |name: &str| -> f64 {
        let start = line.find(&format!("{name}=")).unwrap() + name.len() + 1;
        line[start..].split('s').next().unwrap().parse().unwrap()
    };
    field("utime") + field("stime")
}

/// Prints the CPU cost per channel-second of both directions beside the ffmpeg CLI doing the
/// same conversion from a file (decode + encode, one process; demuxing included).
#[test]
fn cpu_cost_per_channel_second_beside_the_ffmpeg_cli() {
    if !testkit::require_tools(&["ffmpeg"]) {
        return;
    }
    let dir = temp_dir();
    let seconds = 30u32;
    let packets = opus_packets(dir.path(), 2, seconds);
    let ours = cpu_of(|| {
        let frames = opus_to_aac(&packets, 2);
        assert!(frames.len() > 1000);
    });
    let ogg = dir.path().join("tone-2.ogg");
    let cli = cli_cpu(&["-i", ogg.to_str().unwrap(), "-c:a", "aac", "-b:a", "128k", "-f", "adts", "/dev/null"]);
    let per = |cpu: f64| cpu * 1000.0 / f64::from(seconds * 2);
    println!(
        "Opus->AAC 48 kHz stereo, {seconds} s: ours {:.2} ms CPU per channel-second, ffmpeg CLI {:.2}",
        per(ours),
        per(cli)
    );

    let (asc, aac) = aac_frames(dir.path(), 44100, 2, seconds);
    let ours = cpu_of(|| {
        let mut t = AacToOpus::new(&asc, 96_000).unwrap();
        let mut n = 0;
        for (i, frame) in aac.iter().enumerate() {
            n += t.push(frame, i as i64 * 1024, 44100).unwrap().len();
        }
        n += t.flush().unwrap().len();
        assert!(n > 1000);
    });
    let adts: PathBuf = dir.path().join("tone-44100-2.aac");
    let cli = cli_cpu(&[
        "-i",
        adts.to_str().unwrap(),
        "-c:a",
        "libopus",
        "-b:a",
        "96k",
        "-frame_duration",
        "20",
        "-ar",
        "48000",
        "-f",
        "ogg",
        "/dev/null",
    ]);
    println!(
        "AAC 44.1 kHz stereo->Opus 48 kHz, {seconds} s: ours {:.2} ms CPU per channel-second, ffmpeg CLI {:.2}",
        per(ours),
        per(cli)
    );
}
