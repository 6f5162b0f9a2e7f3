// k6 scenario: chat sockets on one channel, and posts at a fixed rate from the first VU.
//
//   k6 run -e WS_URL=ws://HOST/api/channels/ID/chat/ws -e VUS=500 -e RATE=5 \
//          -e TOKENS=tok1,tok2,... -e DURATION=60s bench/k6/chat.js
//
// Posting needs authors: TOKENS (bearer tokens, one per user; the node allows each user 5
// messages per 10 s, so give at least 2 x RATE), or USER_IDS in development mode (loopback).
// Delivery latency is receive time minus the send time carried in the text (lib/chat.js), so run
// k6 on one machine (one clock).
import http from 'k6/http';
import ws from 'k6/ws';
import { Counter, Trend } from 'k6/metrics';
import { postText, postUrl, readFrame } from './lib/chat.js';

const VUS = Number(__ENV.VUS || 10);
const SECONDS = Number(String(__ENV.DURATION || '60s').replace(/s$/, ''));
export const options = { vus: VUS, iterations: VUS, summaryTrendStats: ['avg', 'med', 'max', 'p(90)', 'p(99)'] };

const delivery = new Trend('chat_delivery_ms');
const deliveries = new Counter('chat_deliveries');
const posts = new Counter('chat_posts');
const failedPosts = new Counter('chat_posts_failed');

const RUN = Math.floor(Math.random() * 1e9);

export default function () {
  const url = __ENV.WS_URL;
  const tokens = (__ENV.TOKENS || '').split(',').filter((t) => t);
  const users = (__ENV.USER_IDS || '').split(',').filter((t) => t);
  const poster = __VU === 1 && (tokens.length > 0 || users.length > 0);
  ws.connect(`${url}${url.includes('?') ? '&' : '?'}history=0`, {}, (socket) => {
    socket.on('message', (frame) => {
      const m = readFrame(frame);
      if (m && m.run === RUN) {
        delivery.add(Date.now() - m.sentMs);
        deliveries.add(1);
      }
    });
    if (poster) {
      let seq = 0;
      socket.setInterval(() => {
        const body = { text: postText(RUN, seq, Date.now()) };
        const params = { headers: { 'Content-Type': 'application/json' } };
        if (tokens.length > 0) params.headers.Authorization = `Bearer ${tokens[seq % tokens.length]}`;
        else body.userId = users[seq % users.length];
        const res = http.post(postUrl(url), JSON.stringify(body), params);
        if (res.status === 201) posts.add(1);
        else failedPosts.add(1);
        seq += 1;
      }, 1000 / Number(__ENV.RATE || 1));
    }
    socket.setTimeout(() => socket.close(), SECONDS * 1000);
  });
}
