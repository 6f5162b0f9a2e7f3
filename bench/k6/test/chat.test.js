// node --test bench/k6: the chat scenario's message marker and URLs.
import test from 'node:test';
import assert from 'node:assert/strict';
import { postText, postUrl, readFrame } from '../lib/chat.js';

test('a posted text reads back from a message frame only', () => {
  const text = postText(7, 42, 1700000000123);
  const frame = JSON.stringify({ type: 'message', message: { id: 'm', text } });
  assert.deepEqual(readFrame(frame), { run: 7, seq: 42, sentMs: 1700000000123 });
  assert.equal(readFrame(JSON.stringify({ type: 'history', messages: [{ text }] })), null);
  assert.equal(readFrame(JSON.stringify({ type: 'message', message: { text: 'hello' } })), null);
  assert.equal(readFrame('not json'), null);
});

test('posts go to the channel chat endpoint', () => {
  assert.equal(postUrl('ws://127.0.0.1:8080/api/channels/abc/chat/ws'), 'http://127.0.0.1:8080/api/channels/abc/chat');
  assert.equal(postUrl('wss://live.example/api/channels/abc/chat/ws?history=0'), 'https://live.example/api/channels/abc/chat');
  assert.throws(() => postUrl('http://x/y'), /not a chat socket URL/);
});
