// node --test tests/browser/live-sync.test.mjs: the web UI player's catch-up to the live point
// (web/assets/js/live-sync.js) without a browser: when it speeds up, when it stops, and that it
// drives a video element and an hls.js-shaped emitter as the browser would.
import test from 'node:test';
import assert from 'node:assert/strict';
import { CAUGHT_UP, bufferedAhead, catchUpFrom, catchUpRate, keepNearLive } from '../../web/assets/js/live-sync.js';

const LIVE = { target: 0.6, partTarget: 0.2, buffered: 0.6, rate: 1 };

test('on target or slightly behind it plays at normal speed', () => {
  for (const latency of [0.5, 0.6, 0.65, 0.6 + catchUpFrom(0.2) - 0.001]) {
    assert.equal(catchUpRate({ ...LIVE, latency }), 1, `latency ${latency}`);
  }
});

test('a third of a second behind speeds up gently, more than a second behind faster', () => {
  assert.equal(catchUpRate({ ...LIVE, latency: 0.95 }), 1.1);
  assert.equal(catchUpRate({ ...LIVE, latency: 1.7, buffered: 1.5 }), 1.25);
});

test('once speeding up it keeps on until nearly on target (hysteresis)', () => {
  const behind = 0.6 + catchUpFrom(0.2) / 2;
  assert.equal(catchUpRate({ ...LIVE, latency: behind }), 1, 'not started this close');
  assert.equal(catchUpRate({ ...LIVE, latency: behind, rate: 1.1 }), 1.1, 'but not stopped either');
  assert.equal(catchUpRate({ ...LIVE, latency: 0.6 + CAUGHT_UP - 0.005, rate: 1.1 }), 1);
});

test('a buffer thinner than a part never speeds up', () => {
  assert.equal(catchUpRate({ ...LIVE, latency: 0.95, buffered: 0.19 }), 1);
  assert.equal(catchUpRate({ ...LIVE, latency: 0.95, buffered: 0.19, rate: 1.1 }), 1);
});

test('unknown figures (no playlist yet) leave the rate at 1', () => {
  assert.equal(catchUpRate({ ...LIVE, latency: NaN }), 1);
  assert.equal(catchUpRate({ ...LIVE, latency: 2, target: null }), 1);
});

test('small parts start the catch-up no closer than 50 ms', () => {
  assert.equal(catchUpFrom(0.05), 0.05);
  assert.equal(catchUpFrom(0.5), 0.25);
});

class FakeRanges {
  constructor(ranges) { this.ranges = ranges; }
  get length() { return this.ranges.length; }
  start(i) { return this.ranges[i][0]; }
  end(i) { return this.ranges[i][1]; }
}

test('buffered ahead is the range holding the play head, 0 in a gap', () => {
  const video = { currentTime: 10, buffered: new FakeRanges([[0, 4], [9.98, 10.7]]) };
  assert.ok(Math.abs(bufferedAhead(video) - 0.7) < 1e-9);
  video.currentTime = 5;
  assert.equal(bufferedAhead(video), 0);
});

class FakeVideo extends EventTarget {
  constructor() {
    super();
    this.currentTime = 20;
    this.playbackRate = 1;
    this.paused = false;
    this.seeking = false;
    this.buffered = new FakeRanges([[15, 20.5]]);
  }
}

class FakeHls {
  constructor() { this.handlers = new Map(); this.config = {}; this.latency = 0; this.targetLatency = 0.6; }
  on(event, f) { this.handlers.set(event, f); }
  off(event, f) { if (this.handlers.get(event) === f) this.handlers.delete(event); }
  emit(event, data) { this.handlers.get(event)?.(event, data); }
}
const Hls = { Events: { LEVEL_UPDATED: 'hlsLevelUpdated' } };

test('attached, it bounds the seek back to live per playlist and drives the rate on timeupdate', () => {
  const video = new FakeVideo();
  const hls = new FakeHls();
  const rates = [];
  const detach = keepNearLive(hls, Hls, video, (r) => rates.push(r));
  const tick = (latency) => { hls.latency = latency; video.dispatchEvent(new Event('timeupdate')); };

  tick(0.95);
  assert.equal(video.playbackRate, 1, 'no playlist seen yet: nothing known of parts');
  hls.emit(Hls.Events.LEVEL_UPDATED, { details: { partHoldBack: 0.6, partTarget: 0.2 } });
  assert.ok(Math.abs(hls.config.liveMaxLatencyDuration - 1.0) < 1e-9);

  tick(0.95);
  assert.equal(video.playbackRate, 1.1);
  tick(0.7);
  assert.equal(video.playbackRate, 1.1, 'still behind');
  tick(0.62);
  assert.equal(video.playbackRate, 1);
  video.paused = true;
  tick(0.95);
  assert.equal(video.playbackRate, 1, 'paused: left alone');
  video.paused = false;
  tick(0.95);
  assert.deepEqual(rates, [1.1, 1, 1.1]);

  detach();
  assert.equal(video.playbackRate, 1, 'detached at normal speed');
  tick(0.95);
  assert.equal(video.playbackRate, 1, 'and no longer listening');
  assert.equal(hls.handlers.size, 0);
});
