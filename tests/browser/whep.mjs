// WHEP playback in headless Chromium: a recvonly offer POSTed to WHEP_URL, the answer applied,
// the stream shown in a <video>; getStats polled every 500 ms until SECONDS after the first
// decoded frame, then the session DELETEd.
//
// usage: node tests/browser/whep.mjs WHEP_URL [SECONDS=5]
// stdout: one JSON summary: ok, reason, status, body (when not 201), location, connectedMs,
//         timeToFirstFrameMs (POST to the first decoded frame), video {codec, framesDecoded,
//         framesDecodedGrowth, framesDropped, packetsLost, jitterBufferMs, width, height},
//         audio {codec, packetsReceived}, clockLatencyMs, clockUnreadable, deleteStatus, elapsedMs.
// exit:   0 ok, 1 failed, 2 usage, 3 harness problem.
// env:    WHEP_EXPECT_STATUS=NNN  ok means the POST answered exactly NNN
//         WHEP_EXPECT_AUDIO=0     audio packets not required
//         WHEP_CLOCK=1            read the wall clock burned into the video (clock.mjs) from each
//                                 new frame on screen after the first second: clockLatencyMs =
//                                 {count, min, median, max} of now minus the frame's clock
//         CHROMIUM=/usr/bin/chromium
import { runSession } from './rtc-harness.mjs';

const [url, secondsArg] = process.argv.slice(2);
const started = Date.now();
const summary = { ok: false, reason: null, url, status: null, elapsedMs: 0 };
if (!url) {
  process.stderr.write('usage: node tests/browser/whep.mjs WHEP_URL [SECONDS=5]\n');
  process.exit(2);
}
const seconds = Number(secondsArg ?? 5);
const expect = process.env.WHEP_EXPECT_STATUS ? Number(process.env.WHEP_EXPECT_STATUS) : null;
const needAudio = process.env.WHEP_EXPECT_AUDIO !== '0';
const clock = process.env.WHEP_CLOCK === '1';
const log = (line) => process.stderr.write(`whep: ${line}\n`);

async function drive(page) {
  return page.evaluate(async ({ url, seconds, clock }) => {
    const { sampleVideoClock, summary } = await import('/clock.mjs');
    const { negotiate } = await import('/rtc-page.mjs');
    const out = {};
    const pc = new RTCPeerConnection();
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    const video = document.createElement('video');
    video.muted = true;
    video.autoplay = true;
    video.playsInline = true;
    document.body.append(video);
    // The answer may put each track in no stream (msid "-"): gather them in one.
    const remote = new MediaStream();
    video.srcObject = remote;
    pc.addEventListener('track', (e) => {
      remote.addTrack(e.track);
      video.play().catch(() => {});
    });
    const answer = await negotiate(pc, url);
    const posted = answer.posted;
    out.status = answer.status;
    if (answer.status !== 201) {
      out.body = answer.body;
      return out;
    }
    out.location = answer.location;
    pc.addEventListener('connectionstatechange', () => {
      if (pc.connectionState === 'connected') out.connectedMs = Date.now() - posted;
    });
    // The burned clock of each new frame on screen, after the first second of playback: the
    // <video> is sampled every 10 ms and a frame counts when its clock is first seen (the
    // sampling adds up to 10 ms).
    const latencies = [];
    out.clockUnreadable = 0;
    let sampler = null;
    if (clock) {
      let firstShown = null;
      const ready = (now) => {
        if (video.readyState < 2) return false;
        firstShown ??= now;
        return now - firstShown >= 1000;
      };
      sampler = sampleVideoClock(video, ready, (latency) => latencies.push(latency), () => {
        out.clockUnreadable += 1;
      });
    }
    const read = async () => {
      const stats = await pc.getStats();
      const got = {};
      stats.forEach((s) => {
        if (s.type !== 'inbound-rtp') return;
        const codec = stats.get(s.codecId)?.mimeType ?? null;
        if (s.kind === 'video') {
          got.video = {
            codec,
            framesDecoded: s.framesDecoded ?? 0,
            framesDropped: s.framesDropped ?? 0,
            packetsLost: s.packetsLost ?? 0,
            jitterBufferMs: s.jitterBufferEmittedCount ? (1000 * s.jitterBufferDelay) / s.jitterBufferEmittedCount : null,
            width: s.frameWidth ?? null,
            height: s.frameHeight ?? null,
          };
        } else {
          got.audio = { codec, packetsReceived: s.packetsReceived ?? 0 };
        }
      });
      return got;
    };
    let firstFrame = null;
    let atFirst = 0;
    let last = {};
    const deadline = posted + 20000 + seconds * 1000;
    while (Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 500));
      last = await read();
      const decoded = last.video?.framesDecoded ?? 0;
      if (firstFrame === null && decoded > 0) {
        firstFrame = Date.now();
        atFirst = decoded;
        out.timeToFirstFrameMs = firstFrame - posted;
      }
      if (firstFrame !== null && Date.now() - firstFrame >= seconds * 1000) break;
    }
    clearInterval(sampler);
    out.element = { readyState: video.readyState, width: video.videoWidth, currentTime: video.currentTime, paused: video.paused };
    out.connectionState = pc.connectionState;
    out.video = last.video ?? null;
    if (out.video) out.video.framesDecodedGrowth = out.video.framesDecoded - atFirst;
    out.audio = last.audio ?? null;
    out.clockLatencyMs = summary(latencies);
    const deleted = await fetch(out.location, { method: 'DELETE' });
    out.deleteStatus = deleted.status;
    pc.close();
    return out;
  }, { url, seconds, clock });
}

await runSession({
  summary,
  started,
  log,
  expect,
  drive,
  problem: (s) => {
    if (!(s.video?.framesDecodedGrowth >= 10)) return `video did not play: ${JSON.stringify(s.video)}`;
    if (needAudio && !(s.audio?.packetsReceived > 0)) return 'no audio packets';
    if (clock && !s.clockLatencyMs) return `no burned clock read (${s.clockUnreadable} frames unreadable)`;
    return null;
  },
});
