// Chat scenario logic for k6 (chat.js), tested with node (test/chat.test.js): the text a post
// carries and how a socket reads it back. Plain JavaScript, no k6 or node modules.

export const MARKER = 'bitriver-load ';

/** The text of post `seq` of run `run`, sent at `sentMs` (ms since the epoch). */
export function postText(run, seq, sentMs) {
  return `${MARKER}${run} ${seq} ${sentMs}`;
}

/** {run, seq, sentMs} of a `message` frame carrying a post of this scenario, else null.
 * History frames repeat old messages and are skipped. */
export function readFrame(frame) {
  let v;
  try {
    v = JSON.parse(frame);
  } catch (_) {
    return null;
  }
  if (!v || v.type !== 'message' || !v.message || typeof v.message.text !== 'string') return null;
  const text = v.message.text;
  if (!text.startsWith(MARKER)) return null;
  const [run, seq, sent] = text.slice(MARKER.length).split(' ').map(Number);
  if (![run, seq, sent].every(Number.isFinite)) return null;
  return { run, seq, sentMs: sent };
}

/** The REST URL posts go to, from the socket URL ws(s)://HOST/api/channels/ID/chat/ws. */
export function postUrl(wsUrl) {
  const m = String(wsUrl).match(/^(wss?):\/\/([^/]+)(\/api\/channels\/[^/]+\/chat)\/ws(\?.*)?$/);
  if (!m) throw new Error(`not a chat socket URL: ${wsUrl}`);
  return `${m[1] === 'wss' ? 'https' : 'http'}://${m[2]}${m[3]}`;
}
