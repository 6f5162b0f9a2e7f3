// WHIP publish from headless Chromium: its fake camera (640x360@30) and microphone, H.264
// preferred, POSTed as an SDP offer with the stream key as bearer token; publishes SECONDS after
// the connection is up, then DELETEs the session.
//
// usage: node tests/browser/whip.mjs WHIP_URL STREAM_KEY [SECONDS=10]
// stdout: one JSON summary: ok, reason, status, body (when not 201), location, connectedMs,
//         video {codec, framesEncoded, packetsSent, keyFramesEncoded}, audio {codec, packetsSent},
//         deleteStatus, iceServers, elapsedMs. Diagnostics on stderr.
// exit:   0 ok, 1 failed, 2 usage, 3 harness problem.
// env:    WHIP_EXPECT_STATUS=NNN  ok means the POST answered exactly NNN (a refusal test)
//         WHIP_STARTED_FILE=PATH  written (wall clock ms) once connected
//         CHROMIUM=/usr/bin/chromium
import fs from 'node:fs';
import { runSession } from './rtc-harness.mjs';

const [url, key, secondsArg] = process.argv.slice(2);
const started = Date.now();
const summary = { ok: false, reason: null, url, status: null, elapsedMs: 0 };
if (!url || key === undefined) {
  process.stderr.write('usage: node tests/browser/whip.mjs WHIP_URL STREAM_KEY [SECONDS=10]\n');
  process.exit(2);
}
const seconds = Number(secondsArg ?? 10);
const expect = process.env.WHIP_EXPECT_STATUS ? Number(process.env.WHIP_EXPECT_STATUS) : null;
const log = (line) => process.stderr.write(`whip: ${line}\n`);

const stopped = new Promise((resolve) => process.once('SIGTERM', resolve));
async function drive(page) {
  const startedFile = process.env.WHIP_STARTED_FILE;
  await page.exposeFunction('whipConnected', () => startedFile && fs.writeFileSync(startedFile, String(Date.now())));
  await page.exposeFunction('whipStopped', () => Promise.race([stopped, new Promise(() => {})]));
  return page.evaluate(async ({ url, key, seconds }) => {
    const { negotiate } = await import('/rtc-page.mjs');
    const out = {};
    const stream = await navigator.mediaDevices.getUserMedia({
      video: { width: 640, height: 360, frameRate: 30 },
      audio: true,
    });
    const pc = new RTCPeerConnection();
    const video = pc.addTransceiver(stream.getVideoTracks()[0], { direction: 'sendonly', streams: [stream] });
    pc.addTransceiver(stream.getAudioTracks()[0], { direction: 'sendonly', streams: [stream] });
    const codecs = RTCRtpSender.getCapabilities('video').codecs;
    const h264 = codecs.filter((c) => c.mimeType === 'video/H264' && /packetization-mode=1/.test(c.sdpFmtpLine || ''));
    video.setCodecPreferences([...h264, ...codecs.filter((c) => !h264.includes(c))]);
    const answer = await negotiate(pc, url, { authorization: `Bearer ${key}` });
    const posted = answer.posted;
    out.status = answer.status;
    out.iceServers = answer.link;
    if (answer.status !== 201) {
      out.body = answer.body;
      return out;
    }
    out.location = answer.location;
    while (pc.connectionState !== 'connected' && Date.now() - posted < 15000) {
      if (pc.connectionState === 'failed') break;
      await new Promise((r) => setTimeout(r, 50));
    }
    out.connectionState = pc.connectionState;
    if (pc.connectionState === 'connected') {
      out.connectedMs = Date.now() - posted;
      await window.whipConnected();
      await Promise.race([new Promise((r) => setTimeout(r, seconds * 1000)), window.whipStopped()]);
    }
    const stats = await pc.getStats();
    stats.forEach((s) => {
      if (s.type !== 'outbound-rtp') return;
      if (s.kind === 'video') {
        out.video = {
          framesEncoded: s.framesEncoded,
          packetsSent: s.packetsSent,
          keyFramesEncoded: s.keyFramesEncoded,
          codecId: s.codecId,
        };
      } else {
        out.audio = { packetsSent: s.packetsSent, codecId: s.codecId };
      }
    });
    for (const kind of ['video', 'audio']) {
      if (out[kind]?.codecId) out[kind].codec = stats.get(out[kind].codecId)?.mimeType ?? null;
      if (out[kind]) delete out[kind].codecId;
    }
    const deleted = await fetch(out.location, { method: 'DELETE', headers: { authorization: `Bearer ${key}` } });
    out.deleteStatus = deleted.status;
    pc.close();
    return out;
  }, { url, key, seconds });
}

await runSession({
  summary,
  started,
  log,
  expect,
  drive,
  problem: (s) => {
    if (s.connectionState !== 'connected') return `never connected (${s.connectionState})`;
    if (!(s.video?.framesEncoded > 0) || !(s.audio?.packetsSent > 0)) return 'no video frames or audio packets sent';
    return null;
  },
});
