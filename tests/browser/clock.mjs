// The wall clock burned into test video (testkit's TestPattern `clock`): 32 blocks of 16x16
// pixels along the top left, block i white when bit i of (Unix time in ms mod 2^32) is set when
// the frame was made. Pure functions, used by the pages and unit tested with `node --test`.

export const BLOCKS = 32;
export const BLOCK = 16;
const WRAP = 2 ** 32;

/// Reads the clock from a frame. `luma(x, y)` gives 0..255 at intrinsic pixel (x, y); `scale`
/// maps intrinsic pixels to the sampled image (1 when they are the same size). Returns the
/// 32-bit value, or null when a block is neither clearly black nor clearly white.
export function decodeClock(luma, scale = 1) {
  let value = 0;
  for (let i = 0; i < BLOCKS; i++) {
    const x = Math.floor((i * BLOCK + BLOCK / 2) * scale);
    const y = Math.floor((BLOCK / 2) * scale);
    const l = luma(x, y);
    if (l > 160) value += 2 ** i;
    else if (l >= 96) return null;
  }
  return value;
}

/// Milliseconds from the clock `value` to `nowMs` (both taken mod 2^32), across a wrap.
export function latencyMs(nowMs, value) {
  const now = ((nowMs % WRAP) + WRAP) % WRAP;
  let diff = now - value;
  if (diff < -WRAP / 2) diff += WRAP;
  if (diff > WRAP / 2) diff -= WRAP;
  return diff;
}

/// {count, min, median, max} of numbers (null when empty).
export function summary(values) {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  return { count: sorted.length, min: sorted[0], median, max: sorted[sorted.length - 1] };
}

/// Samples the clock burned into what `video` shows every 10 ms while `ready(nowMs)` holds, and
/// calls `onLatency(ms)` for each new frame (a frame counts when its clock is first seen, so the
/// sampling adds up to 10 ms) or `onUnreadable()` for one whose clock cannot be read or is
/// implausible. Browser only (draws into a canvas); returns the interval's id.
export function sampleVideoClock(video, ready, onLatency, onUnreadable) {
  const canvas = document.createElement('canvas');
  const context = canvas.getContext('2d', { willReadFrequently: true });
  let lastValue = null;
  return setInterval(() => {
    const width = video.videoWidth;
    const now = Date.now();
    if (!width || !ready(now)) return;
    canvas.width = width;
    canvas.height = BLOCK;
    context.drawImage(video, 0, 0, width, BLOCK, 0, 0, width, BLOCK);
    const row = context.getImageData(0, 0, width, BLOCK).data;
    const value = decodeClock((x, y) => {
      const i = (y * width + x) * 4;
      return 0.299 * row[i] + 0.587 * row[i + 1] + 0.114 * row[i + 2];
    });
    if (value === lastValue) return;
    lastValue = value;
    const latency = value === null ? null : latencyMs(now, value);
    if (latency === null || latency < 0 || latency > 60000) onUnreadable();
    else onLatency(latency);
  }, 10);
}
