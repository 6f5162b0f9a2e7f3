// node --test tests/browser/clock.test.mjs
import test from 'node:test';
import assert from 'node:assert/strict';
import { decodeClock, latencyMs, summary, BLOCK } from './clock.mjs';

/// A frame's luma function with `value` painted as the strip, at `scale`.
function painted(value, scale = 1, grey = null) {
  return (x, y) => {
    const bx = Math.floor(x / scale / BLOCK);
    if (y / scale >= BLOCK || bx >= 32) return 0;
    if (grey !== null && bx === grey) return 128;
    return Math.floor(value / 2 ** bx) % 2 ? 235 : 16;
  };
}

test('a painted clock reads back at any scale', () => {
  for (const value of [0, 1, 0x80000000, 0xffffffff, 1046396482]) {
    assert.equal(decodeClock(painted(value)), value);
    assert.equal(decodeClock(painted(value, 0.5), 0.5), value);
    assert.equal(decodeClock(painted(value, 1.5), 1.5), value);
  }
});

test('a grey block is unreadable', () => {
  assert.equal(decodeClock(painted(12345, 1, 7)), null);
});

test('latency across the 2^32 wrap', () => {
  assert.equal(latencyMs(2 ** 32 + 100, 2 ** 32 - 200), 300);
  assert.equal(latencyMs(1_000_500, 1_000_000), 500);
  assert.equal(latencyMs(1_000_000, 1_000_500), -500);
});

test('summary', () => {
  assert.deepEqual(summary([3, 1, 2]), { count: 3, min: 1, median: 2, max: 3 });
  assert.deepEqual(summary([4, 1, 2, 3]), { count: 4, min: 1, median: 2.5, max: 4 });
  assert.equal(summary([]), null);
});
