// Keeps an hls.js low-latency live player near the live point. hls.js aims at the playlist's
// PART-HOLD-BACK (three part targets) but lands later whenever loading the first parts takes a
// while, and its own playback-rate catch-up waits for a second of buffer, which a player 0.3 s
// behind a 0.6 s target never has: it stays there. So the rate is ours (hls.js's is left off,
// maxLiveSyncPlaybackRate 1) and the seek back to live is hls.js's, bounded per playlist.
// The web UI's player (player.js) and the test player (tests/browser/player.html) both use it.

/** Latency above the target (s) from which the player speeds up: half a part target, 50 ms at least. */
export function catchUpFrom(partTarget) {
  return Math.max(0.05, partTarget / 2);
}

/** Latency above the target (s) at which the player is back at normal speed. */
export const CAUGHT_UP = 0.03;

/**
 * The playback rate for a live player `latency` s behind live, `target` s its aim, with
 * `buffered` s of media ahead of the play head, now playing at `rate`. Faster only while behind
 * and never on a thin buffer (running it dry is a stall, which costs more latency than it saves):
 * 1.1x (a 0.3 s lag takes 3 s to close, the pitch kept by the browser), 1.25x when more than a
 * second behind, as after a stall.
 */
export function catchUpRate({ latency, target, buffered, partTarget, rate }) {
  if (![latency, target, buffered, partTarget].every(Number.isFinite)) return 1;
  const behind = latency - target;
  const speeding = rate > 1;
  if (buffered < partTarget || behind <= CAUGHT_UP) return 1;
  if (!speeding && behind < catchUpFrom(partTarget)) return 1;
  return behind > 1 ? 1.25 : 1.1;
}

/** Seconds of media buffered ahead of the play head of `video`. */
export function bufferedAhead(video) {
  const t = video.currentTime;
  const ranges = video.buffered;
  for (let i = 0; i < ranges.length; i++) {
    if (ranges.start(i) <= t + 0.05 && t < ranges.end(i)) return ranges.end(i) - t;
  }
  return 0;
}

/**
 * Attaches the catch-up to a live `hls` (created with lowLatencyMode) playing into `video`.
 * hls.js jumps back to the live point once playback is further behind than
 * liveMaxLatencyDuration; its config check would want liveSyncDuration beside that, which would
 * replace the playlist's hold-back, so the bound is set on the running config from each
 * playlist: the hold-back plus two part targets. Below it the rate closes the gap. `onRate`
 * (optional) hears each change of rate. Returns a function that detaches it.
 */
export function keepNearLive(hls, Hls, video, onRate = () => {}) {
  let partTarget = null;
  const onLevel = (_event, { details }) => {
    if (!details.partHoldBack || !details.partTarget) return;
    partTarget = details.partTarget;
    hls.config.liveMaxLatencyDuration = details.partHoldBack + 2 * details.partTarget;
  };
  const onTime = () => {
    if (partTarget === null || video.paused || video.seeking) return;
    const rate = catchUpRate({
      latency: hls.latency,
      target: hls.targetLatency,
      buffered: bufferedAhead(video),
      partTarget,
      rate: video.playbackRate,
    });
    if (rate !== video.playbackRate) {
      video.playbackRate = rate;
      onRate(rate);
    }
  };
  hls.on(Hls.Events.LEVEL_UPDATED, onLevel);
  video.addEventListener('timeupdate', onTime);
  return () => {
    hls.off(Hls.Events.LEVEL_UPDATED, onLevel);
    video.removeEventListener('timeupdate', onTime);
    if (video.playbackRate !== 1) video.playbackRate = 1;
  };
}
