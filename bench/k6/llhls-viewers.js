// k6 scenario: low-latency HLS viewers (one per VU), doing what hls.js does.
//
//   k6 run -e MASTER_URL=http://EDGE/hls/CHANNEL/master.m3u8 -e VUS=200 -e DURATION=60s \
//          --summary-export summary.json bench/k6/llhls-viewers.js
//   bitriver-load plan --viewers 10000 --report summary.json
//
// Each iteration sends the blocking playlist reload and the next part (often the preload-hinted
// one, which the origin holds until it exists) together with http.batch, as hls.js keeps its
// playlist and fragment loaders busy at once. The playlist logic is lib/llhls.js.
import http from 'k6/http';
import { Counter, Trend } from 'k6/metrics';
import { Viewer } from './lib/llhls.js';

const VUS = Number(__ENV.VUS || 10);
export const options = {
  // p(99) is what the planner reads (llhls_latency_ms) to judge whether a run was healthy.
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)'],
  scenarios: {
    viewers: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: [
        { duration: __ENV.RAMP || '10s', target: VUS },
        { duration: __ENV.DURATION || '60s', target: VUS },
      ],
      gracefulRampDown: '0s',
    },
  },
};

const latency = new Trend('llhls_latency_ms');
const stalls = new Counter('llhls_stalls');
const parts = new Counter('llhls_parts');
const playlistBytes = new Counter('llhls_playlist_bytes');
const errors = new Counter('llhls_errors');

let viewer = null;
let lastSample = 0;
let lastStalls = 0;

function ok(res) {
  if (res.status >= 200 && res.status < 300) return true;
  errors.add(1);
  return false;
}

export default function () {
  if (viewer === null) {
    viewer = new Viewer(__ENV.MASTER_URL, Number(__ENV.LINK_BPS || 5000000));
    const master = http.get(viewer.masterUrl, { tags: { kind: 'multivariant' } });
    if (!ok(master)) return;
    playlistBytes.add(master.body.length);
    viewer.onMultivariant(master.body);
  }
  const requests = [['GET', viewer.nextPlaylistUrl(), null, { tags: { kind: 'playlist' }, timeout: '10s' }]];
  const media = viewer.nextMedia();
  if (media) requests.push(['GET', media.url, null, { tags: { kind: media.kind }, responseType: 'none', timeout: '10s' }]);
  const answers = http.batch(requests);
  const now = Date.now();
  if (media && answers[1].status === 200) {
    viewer.onMedia(media, now);
    if (media.kind === 'part') parts.add(1);
  } else if (media && !(media.hinted && answers[1].status === 404)) {
    ok(answers[1]);
  }
  if (ok(answers[0])) {
    playlistBytes.add(answers[0].body.length);
    viewer.onPlaylist(answers[0].body, Date.now());
  }
  if (now - lastSample >= 1000) {
    const s = viewer.sample(now);
    if (s.latencyMs !== null) latency.add(s.latencyMs);
    lastSample = now;
  }
  stalls.add(viewer.stats.stalls - lastStalls);
  lastStalls = viewer.stats.stalls;
}
