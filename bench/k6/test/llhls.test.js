// node --test bench/k6: the LL-HLS logic the k6 viewer scenario runs.
import test from 'node:test';
import assert from 'node:assert/strict';
import {
  attr, nextPart, parseDateTime, parseMedia, parseMultivariant, pickVariant, reloadUrl, resolve, startPosition, Viewer,
} from '../lib/llhls.js';

const MASTER = '#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=2500000,CODECS="avc1,mp4a"\nsource/index.m3u8\n'
  + '#EXT-X-STREAM-INF:BANDWIDTH=800000\n360p/index.m3u8\n';

/** A live playlist in our origin's shape (1 s segments of five 200 ms parts), like the Rust
 * player's tests: `complete` whole segments from `first`, then `partial` parts, PDT from t0. */
function live(first, complete, partial, t0) {
  let out = '#EXTM3U\n#EXT-X-TARGETDURATION:1\n'
    + '#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.600,CAN-SKIP-UNTIL=6.0\n'
    + `#EXT-X-PART-INF:PART-TARGET=0.200\n#EXT-X-MEDIA-SEQUENCE:${first}\n#EXT-X-MAP:URI="init.mp4"\n`;
  for (let k = 0; k < complete; k++) {
    const msn = first + k;
    out += `#EXT-X-PROGRAM-DATE-TIME:${new Date(t0 + 1000 * k).toISOString()}\n`;
    if (k + 3 >= complete) {
      for (let i = 0; i < 5; i++) out += `#EXT-X-PART:DURATION=0.200,URI="part${msn}.${i}.m4s"${i === 0 ? ',INDEPENDENT=YES' : ''}\n`;
    }
    out += `#EXTINF:1.000,\nseg${msn}.m4s\n`;
  }
  const msn = first + complete;
  if (partial > 0) {
    out += `#EXT-X-PROGRAM-DATE-TIME:${new Date(t0 + 1000 * complete).toISOString()}\n`;
    for (let i = 0; i < partial; i++) out += `#EXT-X-PART:DURATION=0.200,URI="part${msn}.${i}.m4s"${i === 0 ? ',INDEPENDENT=YES' : ''}\n`;
  }
  return `${out}#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part${msn}.${partial}.m4s"\n`;
}

test('attribute lists with quoted commas', () => {
  assert.equal(attr('A=1,CODECS="a,b",URI="x"', 'URI'), 'x');
  assert.equal(attr('A=1,CODECS="a,b",URI="x"', 'CODECS'), 'a,b');
  assert.equal(attr('A=1', 'B'), undefined);
});

test('reads a live LL-HLS playlist', () => {
  const p = parseMedia(live(40, 2, 1, Date.UTC(2026, 11, 2, 11)));
  assert.equal(p.partTarget, 0.2);
  assert.equal(p.partHoldBack, 0.6);
  assert.ok(p.canBlock && p.canSkip);
  assert.deepEqual(p.segments.map((s) => [s.msn, s.uri, s.parts.length]), [[40, 'seg40.m4s', 5], [41, 'seg41.m4s', 5], [42, null, 1]]);
  assert.equal(p.hint, 'part42.1.m4s');
  assert.deepEqual(nextPart(p), [42, 1]);
  assert.equal(p.segments[1].pdt, Date.UTC(2026, 11, 2, 11, 0, 1));
  assert.throws(() => parseMedia('<html>'), /not an M3U8/);
  assert.throws(() => parseMedia('#EXTM3U\nseg.ts\n'), /without EXTINF/);
  assert.equal(parseDateTime('1970-01-01T00:00:01.500Z'), 1500);
});

test('variants and URLs', () => {
  const v = parseMultivariant(MASTER).sort((a, b) => a.bandwidth - b.bandwidth);
  assert.deepEqual(v.map((x) => x.uri), ['360p/index.m3u8', 'source/index.m3u8']);
  assert.equal(pickVariant(v, 5e6), 1);
  assert.equal(pickVariant(v, 1e6), 0);
  assert.equal(pickVariant(v, 1), 0);
  assert.equal(resolve('http://e:8080/hls/ch/master.m3u8', 'source/index.m3u8'), 'http://e:8080/hls/ch/source/index.m3u8');
  assert.equal(resolve('http://e/hls/ch/a/index.m3u8?x=1', '../b/index.m3u8'), 'http://e/hls/ch/b/index.m3u8');
  assert.equal(resolve('http://e/a/b', '/root'), 'http://e/root');
  assert.equal(resolve('http://e/a/b', 'https://o/x'), 'https://o/x');
  const p = parseMedia(live(10, 5, 2, 0));
  assert.equal(reloadUrl('http://e/x/index.m3u8', p), 'http://e/x/index.m3u8?_HLS_msn=15&_HLS_part=2&_HLS_skip=YES');
  assert.equal(reloadUrl('http://e/x/index.m3u8?t=1', null), 'http://e/x/index.m3u8?t=1');
});

test('starts PART-HOLD-BACK behind the edge at an independent part', () => {
  // Edge = end of 15.1; 0.6 s back is 14.2; the independent part at or before it is 14.0.
  assert.deepEqual(startPosition(parseMedia(live(10, 5, 2, 0))), [14, 0]);
});

test('a viewer loads init, parts in order, then the hinted part, and measures latency', () => {
  const t0 = 100000;
  const v = new Viewer('http://e/hls/ch/master.m3u8', 5e6);
  assert.equal(v.onMultivariant(MASTER), 'http://e/hls/ch/source/index.m3u8');
  assert.equal(v.nextPlaylistUrl(), 'http://e/hls/ch/source/index.m3u8');
  v.onPlaylist(live(10, 5, 2, t0), 0);
  assert.equal(v.nextPlaylistUrl(), 'http://e/hls/ch/source/index.m3u8?_HLS_msn=15&_HLS_part=2&_HLS_skip=YES');
  const init = v.nextMedia();
  assert.deepEqual(init, { url: 'http://e/hls/ch/source/init.mp4', kind: 'init' });
  v.onMedia(init, 0);
  const got = [];
  for (let k = 0; k < 8; k++) {
    const r = v.nextMedia();
    got.push(r.url.split('/').pop() + (r.hinted ? ' (hint)' : ''));
    v.onMedia(r, 0);
  }
  assert.deepEqual(got, ['part14.0.m4s', 'part14.1.m4s', 'part14.2.m4s', 'part14.3.m4s', 'part14.4.m4s', 'part15.0.m4s', 'part15.1.m4s', 'part15.2.m4s (hint)']);
  assert.equal(v.nextMedia(), null);
  // Part 14.0 starts at PDT t0 + 4 s and arrives at wall t0 + 4.8 s; 200 ms later the playhead is
  // at PDT t0 + 4.2 s: 800 ms behind the wall clock.
  const wall = t0 + 5000;
  const fresh = new Viewer('http://e/hls/ch/master.m3u8', 5e6);
  fresh.onMultivariant(MASTER);
  fresh.onPlaylist(live(10, 5, 2, t0), wall - 200);
  fresh.onMedia(fresh.nextMedia(), wall - 200); // init
  fresh.onMedia(fresh.nextMedia(), wall - 200); // 14.0
  fresh.onMedia(fresh.nextMedia(), wall - 200); // 14.1
  const s = fresh.sample(wall);
  assert.equal(s.stalled, false);
  assert.equal(s.latencyMs, 800);
});

test('an empty buffer is a stall until two part targets are buffered again', () => {
  const v = new Viewer('http://e/hls/ch/source/index.m3u8', 1);
  v.onMultivariant(live(10, 5, 2, 0));
  v.onPlaylist(live(10, 5, 2, 0), 0);
  v.onMedia(v.nextMedia(), 0); // init
  v.onMedia(v.nextMedia(), 0); // 200 ms
  assert.equal(v.sample(1000).stalled, true);
  assert.equal(v.stats.stalls, 1);
  v.onMedia(v.nextMedia(), 1500);
  assert.equal(v.sample(1500).stalled, true, 'one part is below the rebuffering goal');
  v.onMedia(v.nextMedia(), 1600);
  assert.equal(v.sample(1600).stalled, false);
  assert.equal(v.stats.stallMs, 1400);
  assert.equal(v.stats.stalls, 1);
});

test('a delta update keeps the skipped segments and a viewer left behind resyncs', () => {
  const v = new Viewer('http://e/hls/ch/source/index.m3u8', 1);
  v.onMultivariant(live(10, 5, 2, 0));
  v.onPlaylist(live(10, 5, 2, 0), 0);
  const delta = '#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=6.0,PART-HOLD-BACK=0.6\n'
    + '#EXT-X-PART-INF:PART-TARGET=0.2\n#EXT-X-MEDIA-SEQUENCE:10\n#EXT-X-SKIP:SKIPPED-SEGMENTS=4\n#EXTINF:1.0,\nseg14.m4s\n'
    + '#EXT-X-PART:DURATION=0.2,URI="part15.0.m4s",INDEPENDENT=YES\n';
  v.onPlaylist(delta, 0);
  assert.equal(v.stats.deltas, 1);
  assert.deepEqual(v.playlist.segments.map((s) => s.msn), [10, 11, 12, 13, 14, 15]);
  v.onPlaylist(live(30, 5, 1, 20000), 0);
  v.needInit = false;
  assert.equal(v.nextMedia().url, 'http://e/hls/ch/source/part34.0.m4s');
  assert.equal(v.stats.resyncs, 1);
});
