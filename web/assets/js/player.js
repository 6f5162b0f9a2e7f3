// The player: hls.js (embedded from npm at build time) in low-latency mode for live channels and
// as an ordinary seekable VOD player for recordings and clips, or the browser's own HLS where
// hls.js cannot run (Safari on iOS); or WebRTC (WHEP, whep.js) when a viewer picks low latency.
import { keepNearLive } from './live-sync.js';
import { playWhep } from './whep.js';

let hlsLoading = null;

/** Loads /assets/vendor/hls.min.js once; resolves to `window.Hls` or null when it is missing. */
function loadHls() {
  if (!hlsLoading) {
    hlsLoading = new Promise((resolve) => {
      // Ask first, so that a binary built without hls.js does not log a failed script load.
      fetch('/assets/vendor/hls.min.js', { method: 'HEAD' }).then((res) => {
        if (!res.ok) { resolve(null); return; }
        const script = document.createElement('script');
        script.src = '/assets/vendor/hls.min.js';
        script.onload = () => resolve(window.Hls || null);
        script.onerror = () => resolve(null);
        document.head.append(script);
      }, () => resolve(null));
    });
  }
  return hlsLoading;
}

export class Player {
  constructor(video, overlay) {
    this.video = video;
    this.overlay = overlay;
    this.hls = null;
    /** Detaches live-sync.js from the live hls.js player. */
    this.unsync = null;
    this.whep = null;
    this.url = null;
  }

  message(text) {
    this.overlay.textContent = text;
    this.overlay.hidden = !text;
  }

  /**
   * Play `playbackUrl` (relative URLs resolve against this page, absolute ones may name an edge).
   * With hls.js, `steeredUrl` (the control node's `/play/{id}/master.m3u8`, every variant once
   * per edge, with HLS Content Steering) is played instead when given: hls.js then moves between
   * edges on the steering server's word, without a reload, when an edge dies or drains.
   *
   * `vod`: a recording or clip (`EXT-X-PLAYLIST-TYPE:VOD`), played from its start, seekable, not
   * low-latency; it starts with sound (a click started it) unless the browser refuses.
   */
  async play(playbackUrl, steeredUrl = null, { vod = false } = {}) {
    const Hls0 = await loadHls();
    const chosen = steeredUrl && Hls0 && Hls0.isSupported() ? steeredUrl : playbackUrl;
    const url = new URL(chosen, location.origin).href;
    if (this.url === url) return;
    this.stop();
    this.url = url;
    const video = this.video;
    const Hls = await loadHls();
    if (this.url !== url) return;
    if (Hls && Hls.isSupported()) {
      const hls = new Hls(vod
        ? { lowLatencyMode: false, backBufferLength: 90 }
        // Live: the playlist's PART-HOLD-BACK (three part targets) is the target latency; a
        // liveSyncDuration* setting here would override it with whole segments. The playback rate
        // that closes a gap to it is live-sync.js's, so hls.js's own stays off.
        : { lowLatencyMode: true, backBufferLength: 30, maxLiveSyncPlaybackRate: 1 });
      if (!vod) this.unsync = keepNearLive(hls, Hls, video);
      this.hls = hls;
      hls.on(Hls.Events.ERROR, (_event, data) => {
        if (!data.fatal) return;
        if (data.type === Hls.ErrorTypes.MEDIA_ERROR) {
          hls.recoverMediaError();
        } else if (vod) {
          // A recording does not come back by waiting: say so instead of retrying forever.
          hls.destroy();
          if (this.hls === hls) { this.hls = null; this.url = null; }
          this.message('This recording cannot be played right now.');
        } else {
          this.message('The stream is not reachable right now; retrying…');
          setTimeout(() => { if (this.hls === hls) { hls.loadSource(url); hls.startLoad(); } }, 2000);
        }
      });
      hls.on(Hls.Events.FRAG_BUFFERED, () => { if (this.hls === hls) this.message(''); });
      hls.loadSource(url);
      hls.attachMedia(video);
    } else if (video.canPlayType('application/vnd.apple.mpegurl')) {
      video.src = url;
    } else {
      this.message(Hls === null
        ? 'Player unavailable: hls.js was not installed when this server was built (run ./scripts/setup.sh).'
        : 'This browser cannot play HLS.');
      return;
    }
    this.message(vod ? 'Loading…' : 'Connecting…');
    video.addEventListener('playing', () => { if (this.url === url) this.message(''); }, { once: true });
    if (vod) {
      video.muted = false;
      video.play().catch((e) => {
        // Autoplay with sound refused: muted then (the controls are there to unmute).
        if (e.name !== 'NotAllowedError' || this.url !== url) return;
        video.muted = true;
        video.play().catch(() => { /* the controls are there */ });
      });
    } else {
      video.muted = true;
      video.play().catch(() => { /* autoplay refused: the controls are there */ });
    }
  }

  /**
   * Plays the live channel over WebRTC from its `whepUrl` (sub-second, no seeking). Rejects with
   * the node's reason when it refuses; the caller falls back to LL-HLS.
   */
  async playWebrtc(whepUrl) {
    const url = `whep:${new URL(whepUrl, location.origin).href}`;
    if (this.url === url) return;
    this.stop();
    this.url = url;
    this.message('Connecting (WebRTC)…');
    const video = this.video;
    let session;
    try {
      session = await playWhep(video, url.slice('whep:'.length));
    } catch (error) {
      if (this.url === url) { this.url = null; this.message(''); }
      throw error;
    }
    if (this.url !== url) { session.stop(); return; }
    this.whep = session;
    video.addEventListener('playing', () => { if (this.url === url) this.message(''); }, { once: true });
    video.muted = true;
    video.play().catch(() => { /* autoplay refused: the controls are there */ });
  }

  stop(text = '') {
    if (this.whep) { this.whep.stop(); this.whep = null; }
    if (this.unsync) { this.unsync(); this.unsync = null; }
    if (this.hls) { this.hls.destroy(); this.hls = null; }
    if (this.video.src) { this.video.removeAttribute('src'); this.video.load(); }
    this.url = null;
    this.message(text);
  }
}

export { loadHls };
