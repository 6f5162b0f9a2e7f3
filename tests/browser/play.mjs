// Browser playback check: headless Debian Chromium (/usr/bin/chromium) driven by playwright-core
// plays an HLS URL with hls.js (lowLatencyMode) from player.html and waits until the video has
// really played MIN_SECONDS.
//
// usage: node tests/browser/play.mjs HLS_URL [MIN_SECONDS=3]
// stdout: one JSON summary (also on failure); diagnostics go to stderr.
// exit:   0 played, 1 playback failed, 2 usage, 3 harness problem (browser, hls.js, page server).
//
// env (all optional):
//   PLAY_TIMEOUT_S=45          give up when MIN_SECONDS of playback did not happen by then
//   CHROMIUM=/usr/bin/chromium browser binary (playwright-core never downloads one)
//   PLAY_SAME_ORIGIN=1         fetch the stream through the page server (/proxy/...) so the origin
//                              needs no CORS headers; by default the page (own origin) fetches the
//                              URL directly, as a player on another site would, so CORS counts
//   PLAY_SCREENSHOT=FILE.png   screenshot of the page at the end
//   PLAY_ALLOW_NON_LOOPBACK=1  play a URL whose host is not loopback (refused by default)
//   PLAY_STARTED_FILE=PATH     created once playback has started (lets a test start another
//                              player on the same stream at the same moment): the wall clock
//                              (ms), then hls.js's start-up (first media playlist to playing, ms)
//   PLAY_CLOCK=1               read the wall clock burned into the video (clock.mjs) from each
//                              new frame on screen after 2 s of playback: summary.clockLatencyMs
//                              = {count, min, median, max} of now minus the frame's clock
//                              (glass-to-glass, beside the same figure from whep.mjs)
//   PLAY_SWITCH_LEVEL=N        after 1 s of playback force hls.js to level N (hls.currentLevel);
//                              success then also needs the switch to N and 1 s played after it
//                              (summary: switchLevel, playedAfterSwitch)
//
// summary.pdtLatencyMs: latency to live as a wall clock sees it, sampled at every poll after 2 s
// of playback: the page's Date.now() minus hls.playingDate (the EXT-X-PROGRAM-DATE-TIME of the
// frame on screen), as {count, min, median, max}. bitriver-load measures the same quantity.
// summary.rateChanges: each playback-rate change of the catch-up to live (web/assets/js/
// live-sync.js, as in the web UI's player): {at: media time, rate, latency: hls.js's, s}.
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const started = Date.now();

const [hlsUrlArg, minArg] = process.argv.slice(2);
const MIN_SECONDS = minArg === undefined ? 3 : Number(minArg);
const TIMEOUT_S = Number(process.env.PLAY_TIMEOUT_S || 45);
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SAME_ORIGIN = ['1', 'true', 'yes'].includes((process.env.PLAY_SAME_ORIGIN || '').toLowerCase());
const SCREENSHOT = process.env.PLAY_SCREENSHOT || '';
const CLOCK = process.env.PLAY_CLOCK === '1';
const SWITCH_LEVEL = (process.env.PLAY_SWITCH_LEVEL ?? '') === '' ? null : Number(process.env.PLAY_SWITCH_LEVEL);

const summary = {
  ok: false,
  reason: null,
  url: hlsUrlArg || null,
  minSeconds: MIN_SECONDS,
  timeoutSeconds: TIMEOUT_S,
  sameOrigin: SAME_ORIGIN,
  playedSeconds: 0,
  startCurrentTime: null,
  currentTime: null,
  timeToFirstProgressMs: null,
  elapsedMs: 0,
  latency: null,
  targetLatency: null,
  levelSwitches: 0,
  level: null,
  levels: null,
  lowLatencyPlaylist: null,
  fragsLoaded: 0,
  partsLoaded: 0,
  stalls: 0,
  hlsErrors: [],
  fatalHlsError: false,
  consoleErrors: [],
  pageErrors: [],
  video: null,
  hlsVersion: null,
  browserVersion: null,
  switchLevel: SWITCH_LEVEL,
  playedAfterSwitch: null,
  pdtLatencyMs: null,
  bufferAheadMs: null,
  rateChanges: [],
};
const pdtLatencies = [];
const buffersAhead = [];

function spread(values) {
  if (!values.length) return null;
  const v = [...values].sort((a, b) => a - b);
  const mid = v.length >> 1;
  const median = v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
  return { count: v.length, min: v[0], median, max: v[v.length - 1] };
}

let finished = false;
function finish(code, reason) {
  if (finished) return;
  finished = true;
  if (reason) summary.reason = reason;
  summary.elapsedMs = Date.now() - started;
  process.stdout.write(`${JSON.stringify(summary, null, 1)}\n`);
  process.exitCode = code;
}

function usage(msg) {
  console.error(`play.mjs: ${msg}\nusage: node play.mjs HLS_URL [MIN_SECONDS]`);
  finish(2, msg);
  process.exit(2);
}

if (!hlsUrlArg) usage('missing HLS_URL');
let hlsUrl;
try {
  hlsUrl = new URL(hlsUrlArg);
} catch {
  usage(`not a URL: ${hlsUrlArg}`);
}
if (!['http:', 'https:'].includes(hlsUrl.protocol)) usage(`not an http(s) URL: ${hlsUrlArg}`);
const loopback = /^(127\.\d+\.\d+\.\d+|localhost|\[::1\])$/i.test(hlsUrl.hostname);
if (!loopback && process.env.PLAY_ALLOW_NON_LOOPBACK !== '1') {
  usage(`refusing non-loopback host ${hlsUrl.hostname} (set PLAY_ALLOW_NON_LOOPBACK=1)`);
}
if (!Number.isFinite(MIN_SECONDS) || MIN_SECONDS <= 0) usage(`bad MIN_SECONDS: ${minArg}`);
if (!Number.isFinite(TIMEOUT_S) || TIMEOUT_S <= 0) usage(`bad PLAY_TIMEOUT_S: ${process.env.PLAY_TIMEOUT_S}`);
if (SWITCH_LEVEL !== null && !(Number.isInteger(SWITCH_LEVEL) && SWITCH_LEVEL >= 0)) {
  usage(`bad PLAY_SWITCH_LEVEL: ${process.env.PLAY_SWITCH_LEVEL}`);
}

const hlsJsFile = path.join(here, 'node_modules/hls.js/dist/hls.min.js');
const playerFile = path.join(here, 'player.html');
for (const f of [hlsJsFile, playerFile]) {
  if (!fs.existsSync(f)) {
    console.error(`play.mjs: ${f} missing; run scripts/browser-setup.sh`);
    finish(3, `missing ${path.relative(here, f)} (run scripts/browser-setup.sh)`);
    process.exit(3);
  }
}
if (!fs.existsSync(CHROMIUM)) {
  console.error(`play.mjs: ${CHROMIUM} missing; run scripts/browser-setup.sh`);
  finish(3, `missing ${CHROMIUM} (run scripts/browser-setup.sh)`);
  process.exit(3);
}
let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch (e) {
  console.error(`play.mjs: cannot load playwright-core (${e.message}); run scripts/browser-setup.sh`);
  finish(3, 'cannot load playwright-core (run scripts/browser-setup.sh)');
  process.exit(3);
}

// Page server: player.html, hls.min.js and, with PLAY_SAME_ORIGIN, a pass-through proxy to the origin.
const upstream = hlsUrl.origin;
const sockets = new Set();
const server = http.createServer((req, res) => {
  const u = new URL(req.url, 'http://page');
  if (['/player.html', '/hls.min.js', '/clock.mjs', '/live-sync.js'].includes(u.pathname)) {
    const [file, type] = {
      '/player.html': [playerFile, 'text/html; charset=utf-8'],
      '/hls.min.js': [hlsJsFile, 'application/javascript'],
      '/clock.mjs': [path.join(here, 'clock.mjs'), 'application/javascript'],
      '/live-sync.js': [path.join(here, '../../web/assets/js/live-sync.js'), 'application/javascript'],
    }[u.pathname];
    res.writeHead(200, { 'content-type': type, 'cache-control': 'no-store' });
    fs.createReadStream(file).pipe(res);
  } else if (SAME_ORIGIN && u.pathname.startsWith('/proxy/')) {
    const target = new URL(u.pathname.slice('/proxy'.length) + u.search, upstream);
    const client = target.protocol === 'https:' ? null : http;
    if (!client) {
      res.writeHead(502);
      res.end('https upstream not supported by the proxy');
      return;
    }
    const up = client.request(target, { method: req.method, headers: { ...req.headers, host: target.host } }, (r) => {
      res.writeHead(r.statusCode || 502, r.headers);
      r.pipe(res);
    });
    up.on('error', (e) => {
      if (!res.headersSent) res.writeHead(502);
      res.end(String(e));
    });
    req.pipe(up);
  } else if (u.pathname === '/favicon.ico') {
    res.writeHead(204);
    res.end();
  } else {
    res.writeHead(404);
    res.end();
  }
});
server.on('connection', (s) => {
  sockets.add(s);
  s.on('close', () => sockets.delete(s));
});
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(0, '127.0.0.1', resolve);
});
const pagePort = server.address().port;
const src = SAME_ORIGIN
  ? `http://127.0.0.1:${pagePort}/proxy${hlsUrl.pathname}${hlsUrl.search}`
  : hlsUrl.href;
const pageUrl = `http://127.0.0.1:${pagePort}/player.html?src=${encodeURIComponent(src)}${CLOCK ? '&clock=1' : ''}`;

const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'bitriver-chromium-'));
let ctx = null;
let cleaningUp = null;
function cleanup() {
  cleaningUp ??= (async () => {
    if (ctx) await ctx.close().catch(() => {});
    for (const s of sockets) s.destroy();
    server.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  })();
  return cleaningUp;
}
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, async () => {
    finish(1, `killed by ${sig}`);
    await cleanup();
    process.exit(1);
  });
}
// Last resort if the browser hangs: report and leave (the browser's process group dies with us).
const hardStop = setTimeout(async () => {
  finish(1, `hard timeout ${TIMEOUT_S + 30}s`);
  setTimeout(() => process.exit(1), 5000).unref();
  await cleanup();
  process.exit(1);
}, (TIMEOUT_S + 30) * 1000);
hardStop.unref();

const args = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--autoplay-policy=no-user-gesture-required',
];

async function readState(page) {
  return page.evaluate(() => {
    const v = document.getElementById('video');
    const h = window.__hls;
    const p = window.__player || {};
    const q = v && v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : null;
    return {
      currentTime: v ? v.currentTime : null,
      video: v && {
        paused: v.paused,
        readyState: v.readyState,
        width: v.videoWidth,
        height: v.videoHeight,
        buffered: v.buffered.length ? [v.buffered.start(0), v.buffered.end(v.buffered.length - 1)] : null,
        droppedFrames: q ? q.droppedVideoFrames : null,
        totalFrames: q ? q.totalVideoFrames : null,
      },
      // Before a media playlist has loaded hls.js reports 0: no latency known yet.
      latency: h && p.levels && Number.isFinite(h.latency) ? h.latency : null,
      targetLatency: h && p.levels && Number.isFinite(h.targetLatency) ? h.targetLatency : null,
      // Read together, so the difference is the latency at one instant.
      pdtLatencyMs: h && h.playingDate && v && !v.paused ? Date.now() - h.playingDate.getTime() : null,
      clockLatencies: p.clockLatencies ?? null,
      clockUnreadable: p.clockUnreadable ?? 0,
      hlsVersion: p.hlsVersion ?? null,
      errors: p.errors || [],
      levelSwitches: p.levelSwitches || 0,
      level: p.level ?? null,
      levels: p.levels ?? null,
      lowLatencyPlaylist: p.lowLatencyPlaylist ?? null,
      fragsLoaded: p.fragsLoaded || 0,
      partsLoaded: p.partsLoaded || 0,
      stalls: p.stalls || 0,
      rateChanges: p.rateChanges || [],
      events: p.events ? p.events.slice(-10) : [],
    };
  });
}

function absorb(st) {
  summary.currentTime = st.currentTime;
  summary.video = st.video;
  summary.latency = st.latency === null ? null : Number(st.latency.toFixed(3));
  summary.targetLatency = st.targetLatency;
  summary.hlsVersion = st.hlsVersion;
  summary.hlsErrors = st.errors;
  summary.fatalHlsError = st.errors.some((e) => e.fatal);
  summary.levelSwitches = st.levelSwitches;
  summary.level = st.level;
  summary.levels = st.levels;
  summary.lowLatencyPlaylist = st.lowLatencyPlaylist;
  summary.fragsLoaded = st.fragsLoaded;
  summary.partsLoaded = st.partsLoaded;
  summary.stalls = st.stalls;
  summary.rateChanges = st.rateChanges;
  summary.lastEvents = st.events;
}

let code = 1;
try {
  try {
    ctx = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args,
      viewport: { width: 660, height: 420 },
      timeout: 30000,
    });
  } catch (e) {
    code = 3;
    throw new Error(`cannot launch ${CHROMIUM}: ${e.message}`);
  }
  summary.browserVersion = ctx.browser()?.version() ?? null;
  const page = ctx.pages()[0] || (await ctx.newPage());
  page.on('console', (m) => {
    if (m.type() === 'error' && summary.consoleErrors.length < 50) summary.consoleErrors.push(m.text());
  });
  page.on('pageerror', (e) => {
    if (summary.pageErrors.length < 50) summary.pageErrors.push(String(e && e.message ? e.message : e));
  });
  console.error(`play.mjs: ${summary.browserVersion ? `Chromium ${summary.browserVersion}` : CHROMIUM} playing ${src}`);
  await page.goto(pageUrl, { timeout: 15000 });

  // "Played" = sum of forward currentTime steps no larger than the wall-clock time between two
  // polls (plus slack), so a live-edge start position or a catch-up seek does not count.
  const deadline = started + TIMEOUT_S * 1000;
  let last = null;
  let lastWall = Date.now();
  let played = 0;
  let fatalSince = null;
  let switchRequested = false;
  let switchedAt = null;
  for (;;) {
    const st = await readState(page);
    absorb(st);
    const now = Date.now();
    const cur = st.currentTime ?? 0;
    if (last !== null && cur > last) {
      const step = cur - last;
      const wall = (now - lastWall) / 1000;
      if (step <= wall * 1.25 + 0.1) played += step;
    }
    if (cur > 0 && summary.startCurrentTime === null) summary.startCurrentTime = cur;
    if (played > 0 && summary.timeToFirstProgressMs === null) {
      summary.timeToFirstProgressMs = now - started;
      summary.firstEvents = st.events;
      if (process.env.PLAY_STARTED_FILE) {
        // Second line: hls.js's own start-up, from the first media playlist to playing (ms), so
        // a test can give another player the same (it varies with the machine's load).
        const at = (what) => {
          const e = (st.events || []).find((x) => x.includes(what));
          return e ? parseFloat(e) * 1000 : null;
        };
        const [loaded, playing] = [at('first level loaded'), at('playing at')];
        const startup = loaded !== null && playing !== null ? Math.round(playing - loaded) : '';
        fs.writeFileSync(process.env.PLAY_STARTED_FILE, `${now}\n${startup}\n`);
      }
    }
    last = cur;
    lastWall = now;
    summary.playedSeconds = Number(played.toFixed(3));
    // After the start-up catch-up, like bitriver-load's samples.
    if (CLOCK && st.clockLatencies) {
      summary.clockLatencyMs = spread(st.clockLatencies);
      summary.clockUnreadable = st.clockUnreadable;
    }
    if (played >= 2 && st.pdtLatencyMs !== null) {
      pdtLatencies.push(st.pdtLatencyMs);
      summary.pdtLatencyMs = spread(pdtLatencies);
      if (st.video && st.video.buffered) {
        buffersAhead.push(Math.round((st.video.buffered[1] - cur) * 1000));
        summary.bufferAheadMs = spread(buffersAhead);
      }
    }
    if (SWITCH_LEVEL !== null) {
      if (!switchRequested && played >= 1) {
        await page.evaluate((level) => { window.__hls.currentLevel = level; }, SWITCH_LEVEL);
        switchRequested = true;
      }
      if (switchRequested && st.level === SWITCH_LEVEL) {
        switchedAt ??= played;
        summary.playedAfterSwitch = Number((played - switchedAt).toFixed(3));
      }
    }
    const switchDone = SWITCH_LEVEL === null || (summary.playedAfterSwitch ?? 0) >= 1;
    if (played >= MIN_SECONDS && switchDone) {
      summary.ok = true;
      code = 0;
      break;
    }
    if (summary.fatalHlsError) {
      fatalSince ??= now;
      // hls.js stops loading after a fatal error; what is buffered may still play out.
      if (now - fatalSince > 5000) {
        summary.reason = `fatal hls.js error after ${summary.playedSeconds}s of playback`;
        break;
      }
    }
    if (now >= deadline) {
      summary.reason = `played ${summary.playedSeconds}s < ${MIN_SECONDS}s within ${TIMEOUT_S}s`;
      break;
    }
    await page.waitForTimeout(250);
  }
  if (SCREENSHOT) await page.screenshot({ path: SCREENSHOT }).catch((e) => console.error(`play.mjs: screenshot: ${e.message}`));
} catch (e) {
  console.error(`play.mjs: ${e && e.stack ? e.stack : e}`);
  summary.reason = String(e && e.message ? e.message : e);
}
await cleanup();
clearTimeout(hardStop);
console.error(`play.mjs: ${summary.ok ? 'PASS' : 'FAIL'} played ${summary.playedSeconds}s (need ${MIN_SECONDS}s), latency ${summary.latency ?? '?'}s${summary.reason ? `: ${summary.reason}` : ''}`);
finish(code);
process.exit(code);
