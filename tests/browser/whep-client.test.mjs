// node --test tests/browser/whep-client.test.mjs: the web UI's WHEP client (web/assets/js/whep.js)
// without a browser: a refusal becomes an Error with the node's reason, and nothing is left open.
import test from 'node:test';
import assert from 'node:assert/strict';
import { playWhep } from '../../web/assets/js/whep.js';

class FakePeer {
  constructor() { this.closed = false; this.iceGatheringState = 'complete'; this.localDescription = null; }
  addTransceiver() {}
  addEventListener() {}
  async createOffer() { return { type: 'offer', sdp: 'v=0\\r\\n' }; }
  async setLocalDescription(d) { this.localDescription = d; }
  async setRemoteDescription(d) { this.remote = d; }
  close() { this.closed = true; }
}
globalThis.MediaStream ??= class { addTrack() {} };

test('a 404 is an error naming the status and the reason', async () => {
  const calls = [];
  const fetchImpl = async (url, init) => {
    calls.push([url, init.method, init.headers]);
    return { status: 404, statusText: 'Not Found', url, text: async () => 'the channel is not live on this node', headers: new Map() };
  };
  const video = { srcObject: null };
  await assert.rejects(
    playWhep(video, 'http://node/whep/abc', { fetchImpl, RTCPeerConnectionImpl: FakePeer }),
    /refused \(404\): the channel is not live on this node/,
  );
  assert.deepEqual(calls.map(([u, m]) => [u, m]), [['http://node/whep/abc', 'POST']]);
  assert.equal(calls[0][2]['content-type'], 'application/sdp');
  assert.equal(video.srcObject, null, 'nothing left attached');
});

test('a 201 applies the answer and stop() deletes the session', async () => {
  const calls = [];
  const fetchImpl = async (url, init) => {
    calls.push([url, init.method]);
    if (init.method === 'DELETE') return { status: 200, text: async () => '' };
    return { status: 201, url, text: async () => 'v=0 answer', headers: new Map([['location', '/whep/abc/s1']]) };
  };
  const video = { srcObject: null };
  const session = await playWhep(video, 'http://node/whep/abc', { fetchImpl, RTCPeerConnectionImpl: FakePeer });
  assert.equal(session.connection.remote.sdp, 'v=0 answer');
  session.stop();
  assert.ok(session.connection.closed);
  assert.deepEqual(calls, [['http://node/whep/abc', 'POST'], ['http://node/whep/abc/s1', 'DELETE']]);
});
