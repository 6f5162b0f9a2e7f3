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
import { finish, openPage } from './rtc-harness.mjs';

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

let session;
try {
  session = await openPage(log);
} catch (error) {
  summary.reason = `harness: ${error.message}`;
  finish(summary, 3);
}
const stopped = new Promise((resolve) => process.once('SIGTERM', resolve));
try {
  const startedFile = process.env.WHIP_STARTED_FILE;
  await session.page.exposeFunction('whipConnected', () => startedFile && fs.writeFileSync(startedFile, String(Date.now())));
  await session.page.exposeFunction('whipStopped', () => Promise.race([stopped, new Promise(() => {})]));
  const result = await session.page.evaluate(async ({ url, key, seconds }) => {
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
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((resolve) => {
      if (pc.iceGatheringState === 'complete') resolve();
      pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && resolve());
      setTimeout(resolve, 2000);
    });
    const posted = Date.now();
    const response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/sdp', authorization: `Bearer ${key}` },
      body: pc.localDescription.sdp,
    });
    out.status = response.status;
    const body = await response.text();
    out.iceServers = response.headers.get('link');
    if (response.status !== 201) {
      out.body = body;
      return out;
    }
    out.location = new URL(response.headers.get('location'), url).href;
    await pc.setRemoteDescription({ type: 'answer', sdp: body });
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
  Object.assign(summary, result);
  if (expect !== null) {
    summary.ok = summary.status === expect;
    summary.reason = summary.ok ? null : `expected status ${expect}, got ${summary.status}`;
  } else if (summary.status !== 201) {
    summary.reason = `POST answered ${summary.status}: ${summary.body}`;
  } else if (summary.connectionState !== 'connected') {
    summary.reason = `never connected (${summary.connectionState})`;
  } else if (!(summary.video?.framesEncoded > 0) || !(summary.audio?.packetsSent > 0)) {
    summary.reason = 'no video frames or audio packets sent';
  } else {
    summary.ok = true;
  }
} catch (error) {
  summary.reason = `page: ${error.message}`;
}
summary.elapsedMs = Date.now() - started;
await session.close();
finish(summary);
