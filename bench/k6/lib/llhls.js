// LL-HLS viewer logic for the k6 scenario, as plain functions and one state machine with no I/O:
// playlists in, request URLs out. k6 imports it (llhls-viewers.js) and node tests it
// (test/llhls.test.js), so it uses nothing but the language: no k6 modules, no node modules.
//
// It follows what hls.js does in lowLatencyMode, like bitriver-load's Rust player:
// multivariant -> variant by bandwidth, start PART-HOLD-BACK behind the live edge at an
// independent part, blocking reloads with _HLS_msn/_HLS_part (and _HLS_skip=YES for delta
// updates), the preload-hinted part requested before it is listed. Playback is modelled as a
// playhead that advances in real time while media is buffered; an empty buffer is a stall that
// lasts until two part targets are buffered again.

/** Value of attribute `name` in an attribute list (quotes removed), or undefined. */
export function attr(list, name) {
  const re = /([A-Z0-9-]+)=("[^"]*"|[^,]*)/g;
  let m;
  while ((m = re.exec(list)) !== null) {
    if (m[1] === name) return m[2].startsWith('"') ? m[2].slice(1, -1) : m[2];
  }
  return undefined;
}

function lines(text) {
  const all = String(text).split(/\r?\n/).map((l) => l.trim()).filter((l) => l.length > 0);
  if (all.length === 0 || all[0].replace(/^\uFEFF/, '') !== '#EXTM3U') throw new Error('not an M3U8 playlist');
  return all.slice(1);
}

/** Variants of a multivariant playlist: [{uri, bandwidth}], or [] when it is a media playlist. */
export function parseMultivariant(text) {
  const ls = lines(text);
  const out = [];
  for (let i = 0; i < ls.length; i++) {
    if (!ls[i].startsWith('#EXT-X-STREAM-INF:')) continue;
    const bandwidth = Number(attr(ls[i].slice(18), 'BANDWIDTH'));
    if (!Number.isFinite(bandwidth)) throw new Error('EXT-X-STREAM-INF without BANDWIDTH');
    let j = i + 1;
    while (j < ls.length && ls[j].startsWith('#')) j++;
    if (j >= ls.length) throw new Error('EXT-X-STREAM-INF without a URI');
    out.push({ uri: ls[j], bandwidth });
    i = j;
  }
  return out;
}

/** ms since the epoch of an EXT-X-PROGRAM-DATE-TIME value. */
export function parseDateTime(s) {
  const t = Date.parse(s);
  if (Number.isNaN(t)) throw new Error(`bad EXT-X-PROGRAM-DATE-TIME ${s}`);
  return t;
}

/**
 * A media playlist: {targetDuration, partTarget, partHoldBack, canBlock, canSkip, mediaSequence,
 * skipped, map, segments: [{msn, duration, uri|null, pdt|null, parts: [{uri, duration,
 * independent}]}], hint, endlist}. The last segment has uri null when only its parts are listed.
 */
export function parseMedia(text) {
  const p = {
    targetDuration: 0, partTarget: null, partHoldBack: null, canBlock: false, canSkip: false,
    mediaSequence: 0, skipped: 0, map: null, segments: [], hint: null, endlist: false,
  };
  let parts = [];
  let pdt = null;
  let extinf = null;
  let msn = null;
  const prevEnd = () => {
    const last = p.segments[p.segments.length - 1];
    return last && last.pdt !== null ? last.pdt + last.duration * 1000 : null;
  };
  for (const l of lines(text)) {
    const after = (tag) => l.slice(tag.length);
    if (l.startsWith('#EXT-X-TARGETDURATION:')) p.targetDuration = Number(after('#EXT-X-TARGETDURATION:'));
    else if (l.startsWith('#EXT-X-MEDIA-SEQUENCE:')) p.mediaSequence = Number(after('#EXT-X-MEDIA-SEQUENCE:'));
    else if (l.startsWith('#EXT-X-PART-INF:')) p.partTarget = Number(attr(after('#EXT-X-PART-INF:'), 'PART-TARGET'));
    else if (l.startsWith('#EXT-X-SERVER-CONTROL:')) {
      const a = after('#EXT-X-SERVER-CONTROL:');
      p.canBlock = attr(a, 'CAN-BLOCK-RELOAD') === 'YES';
      p.canSkip = attr(a, 'CAN-SKIP-UNTIL') !== undefined;
      const hold = attr(a, 'PART-HOLD-BACK');
      p.partHoldBack = hold === undefined ? null : Number(hold);
    } else if (l.startsWith('#EXT-X-MAP:')) p.map = attr(after('#EXT-X-MAP:'), 'URI') || null;
    else if (l.startsWith('#EXT-X-SKIP:')) p.skipped = Number(attr(after('#EXT-X-SKIP:'), 'SKIPPED-SEGMENTS'));
    else if (l.startsWith('#EXT-X-PROGRAM-DATE-TIME:')) pdt = parseDateTime(after('#EXT-X-PROGRAM-DATE-TIME:'));
    else if (l.startsWith('#EXT-X-PART:')) {
      const a = after('#EXT-X-PART:');
      const uri = attr(a, 'URI');
      const duration = Number(attr(a, 'DURATION'));
      if (!uri || !Number.isFinite(duration)) throw new Error(`bad EXT-X-PART: ${l}`);
      parts.push({ uri, duration, independent: attr(a, 'INDEPENDENT') === 'YES' });
    } else if (l.startsWith('#EXTINF:')) extinf = Number(after('#EXTINF:').split(',')[0]);
    else if (l.startsWith('#EXT-X-PRELOAD-HINT:')) {
      const a = after('#EXT-X-PRELOAD-HINT:');
      if (attr(a, 'TYPE') === 'PART') p.hint = attr(a, 'URI') || null;
    } else if (l === '#EXT-X-ENDLIST') p.endlist = true;
    else if (!l.startsWith('#')) {
      if (extinf === null || !Number.isFinite(extinf)) throw new Error(`segment ${l} without EXTINF`);
      if (msn === null) msn = p.mediaSequence + p.skipped;
      p.segments.push({ msn, duration: extinf, uri: l, pdt: pdt !== null ? pdt : prevEnd(), parts });
      msn += 1;
      parts = [];
      pdt = null;
      extinf = null;
    }
  }
  if (parts.length > 0) {
    if (msn === null) msn = p.mediaSequence + p.skipped;
    const duration = parts.reduce((s, x) => s + x.duration, 0);
    p.segments.push({ msn, duration, uri: null, pdt: pdt !== null ? pdt : prevEnd(), parts });
  }
  return p;
}

/** The part after the last listed: what a blocking reload asks for, [msn, index]. */
export function nextPart(p) {
  const last = p.segments[p.segments.length - 1];
  if (!last) return null;
  return last.uri === null ? [last.msn, last.parts.length] : [last.msn + 1, 0];
}

/** Index of the highest variant whose bandwidth fits `linkBps` (variants sorted ascending). */
export function pickVariant(variants, linkBps) {
  let pick = 0;
  variants.forEach((v, i) => {
    if (v.bandwidth <= linkBps) pick = i;
  });
  return pick;
}

/** Resolves `ref` against `base` (absolute URLs; k6 has no URL class everywhere). */
export function resolve(base, ref) {
  if (/^[a-z][a-z0-9+.-]*:/i.test(ref)) return ref;
  const [path] = base.split('?');
  const origin = path.match(/^[a-z]+:\/\/[^/]+/i)[0];
  if (ref.startsWith('/')) return origin + ref;
  const dir = path.slice(0, path.lastIndexOf('/') + 1).slice(origin.length).split('/');
  dir.pop();
  for (const piece of ref.split('/')) {
    if (piece === '..') {
      if (dir.length > 1) dir.pop();
    } else if (piece !== '.') dir.push(piece);
  }
  return origin + dir.join('/');
}

/** URL of a blocking reload of `p` at `url` (query parameters in the order the spec gives). */
export function reloadUrl(url, p) {
  const next = p && p.canBlock ? nextPart(p) : null;
  if (!next) return url;
  let q = `_HLS_msn=${next[0]}`;
  if (p.partTarget !== null) q += `&_HLS_part=${next[1]}`;
  if (p.canSkip) q += '&_HLS_skip=YES';
  return url + (url.includes('?') ? '&' : '?') + q;
}

/** Where a viewer joining `p` starts: [msn, index] of the last independent part at or before
 * the live edge minus PART-HOLD-BACK. */
export function startPosition(p) {
  const parts = [];
  let t = 0;
  for (const s of p.segments) {
    s.parts.forEach((part, i) => {
      parts.push({ msn: s.msn, index: i, t, independent: part.independent });
      t += part.duration;
    });
    if (s.parts.length === 0) t += s.duration;
  }
  if (parts.length === 0) return null;
  const target = t - (p.partHoldBack !== null ? p.partHoldBack : 3 * (p.partTarget || 1));
  const anyIndependent = parts.some((x) => x.independent);
  const ok = parts.filter((x) => x.independent || !anyIndependent);
  let pick = ok[0];
  for (const x of ok) if (x.t <= target + 1e-6) pick = x;
  return [pick.msn, pick.index];
}

/**
 * One viewer. Feed it with onMultivariant/onPlaylist/onMedia and ask what to fetch next with
 * nextPlaylistUrl() and nextMedia(); sample(now) gives latency to live and stall state.
 */
export class Viewer {
  constructor(masterUrl, linkBps) {
    this.masterUrl = masterUrl;
    this.linkBps = linkBps;
    this.mediaUrl = null;
    this.playlist = null;
    this.needInit = true;
    this.next = null;
    this.playhead = 0;
    this.bufferEnd = 0;
    this.pdtOffset = null;
    this.playing = false;
    this.stalledSince = null;
    this.lastAdvance = null;
    this.stats = { parts: 0, hinted: 0, playlists: 0, deltas: 0, stalls: 0, stallMs: 0, resyncs: 0 };
  }

  onMultivariant(text) {
    const variants = parseMultivariant(text).sort((a, b) => a.bandwidth - b.bandwidth);
    this.mediaUrl = variants.length === 0 ? this.masterUrl : resolve(this.masterUrl, variants[pickVariant(variants, this.linkBps)].uri);
    return this.mediaUrl;
  }

  /** URL of the next playlist request (blocking once a playlist is held). */
  nextPlaylistUrl() {
    return reloadUrl(this.mediaUrl, this.playlist);
  }

  onPlaylist(text, now) {
    this.advance(now);
    const fresh = parseMedia(text);
    this.stats.playlists += 1;
    if (fresh.skipped > 0 && this.playlist && fresh.segments.length > 0) {
      this.stats.deltas += 1;
      const first = fresh.segments[0].msn;
      fresh.segments = this.playlist.segments.filter((s) => s.msn < first).concat(fresh.segments);
    }
    this.playlist = fresh;
    if (this.next === null) this.next = startPosition(fresh);
  }

  segment(msn) {
    return this.playlist ? this.playlist.segments.find((s) => s.msn === msn) : undefined;
  }

  /** The next media request: {url, kind: 'init'|'part'|'segment', msn, index, hinted}, or null
   * to wait for the playlist. */
  nextMedia() {
    const p = this.playlist;
    if (!p) return null;
    if (this.needInit && p.map) return { url: resolve(this.mediaUrl, p.map), kind: 'init' };
    this.needInit = false;
    for (let step = 0; step < 4 && this.next; step++) {
      const [msn, index] = this.next;
      if (p.segments.length === 0) return null;
      if (msn < p.segments[0].msn) {
        this.stats.resyncs += 1;
        this.next = startPosition(p);
        continue;
      }
      const s = this.segment(msn);
      if (s) {
        if (index < s.parts.length) return { url: resolve(this.mediaUrl, s.parts[index].uri), kind: 'part', msn, index, hinted: false };
        if (s.uri !== null && s.parts.length > 0) {
          this.next = [msn + 1, 0];
          continue;
        }
        if (s.uri !== null && index === 0) return { url: resolve(this.mediaUrl, s.uri), kind: 'segment', msn, index: 0, hinted: false };
      }
      const n = nextPart(p);
      if (n && n[0] === msn && n[1] === index && p.hint) {
        return { url: resolve(this.mediaUrl, p.hint), kind: 'part', msn, index, hinted: true };
      }
      return null;
    }
    return null;
  }

  /** A media request from nextMedia() answered 2xx at `now` (ms, wall clock). */
  onMedia(req, now) {
    this.advance(now);
    if (req.kind === 'init') {
      this.needInit = false;
      return;
    }
    const s = this.segment(req.msn);
    let duration;
    let start = null;
    if (req.kind === 'segment') {
      duration = s ? s.duration * 1000 : 0;
      start = s ? s.pdt : null;
      this.next = [req.msn + 1, 0];
    } else {
      const part = s && s.parts[req.index];
      duration = (part ? part.duration : this.playlist.partTarget || 0.2) * 1000;
      if (s && s.pdt !== null) start = s.pdt + s.parts.slice(0, req.index).reduce((t, x) => t + x.duration * 1000, 0);
      else if (this.pdtOffset !== null) start = this.pdtOffset + this.bufferEnd;
      this.next = [req.msn, req.index + 1];
      this.stats.parts += 1;
      if (req.hinted) this.stats.hinted += 1;
    }
    if (start !== null) this.pdtOffset = start - this.bufferEnd;
    this.bufferEnd += duration;
    this.playing = true;
    // After a stall, resume once two part targets are buffered (a rebuffering goal), as the Rust
    // player does: a viewer at the very edge would otherwise stall on every part.
    const rebuffer = this.playlist && this.playlist.partTarget ? 2 * this.playlist.partTarget * 1000 : 0;
    if (this.stalledSince !== null && this.bufferEnd - this.playhead >= rebuffer - 1e-6) {
      this.stats.stallMs += now - this.stalledSince;
      this.stalledSince = null;
    }
  }

  advance(now) {
    const last = this.lastAdvance === null ? now : this.lastAdvance;
    this.lastAdvance = now;
    if (!this.playing || this.stalledSince !== null) return;
    const dt = Math.max(0, now - last);
    const room = this.bufferEnd - this.playhead;
    if (dt >= room) {
      this.playhead = this.bufferEnd;
      this.stalledSince = now - (dt - room);
      this.stats.stalls += 1;
    } else {
      this.playhead += dt;
    }
  }

  /** {latencyMs, stalled, bufferMs} at wall-clock `now` (ms). */
  sample(now) {
    this.advance(now);
    return {
      latencyMs: this.playing && this.pdtOffset !== null ? now - (this.pdtOffset + this.playhead) : null,
      stalled: this.stalledSince !== null,
      bufferMs: this.bufferEnd - this.playhead,
    };
  }
}
