// The REST API as the pages use it. The browser carries the HttpOnly `bitriver_session` cookie;
// the UI never sees or stores a token.

export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `request failed (${status})`);
    this.status = status;
    this.code = err.code || 'http_' + status;
    this.field = err.field || null;
  }
}

/** `api('POST', '/api/channels', {title})`: JSON in, JSON out (null for 204). */
export async function api(method, path, body) {
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  const text = await res.text();
  let json = null;
  if (text) {
    try { json = JSON.parse(text); } catch { json = null; }
  }
  if (!res.ok) throw new ApiError(res.status, json);
  return json;
}

export const get = (path) => api('GET', path);

/** Who is calling: `{user, admin}` (never an error: anonymous is `{user: null, admin: false}`). */
let whoamiCache = null;
export function whoami(refresh = false) {
  if (!whoamiCache || refresh) whoamiCache = get('/api/auth/whoami');
  return whoamiCache;
}

export function canModerate(who, channel) {
  if (!who) return false;
  if (who.admin) return true;
  const id = who.user && who.user.id;
  return Boolean(id && (channel.ownerId === id || (channel.moderators || []).includes(id)));
}

/** The WebSocket URL of a channel's chat on this origin. */
export function chatSocketUrl(channelId, history = 50) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/api/channels/${encodeURIComponent(channelId)}/chat/ws?history=${history}`;
}
