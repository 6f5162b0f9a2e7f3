// WebRTC playback (WHEP): the sub-second path beside LL-HLS. One recvonly offer POSTed as
// application/sdp to the channel's `whepUrl`; the node answers 201 with its SDP and a Location
// that ends the session on DELETE (or redirects 307 to the node that packages the channel, which
// fetch follows with the same offer).

/** Waits until ICE candidates are gathered (at most `ms`): the offer then carries them all. */
function gathered(pc, ms) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') { resolve(); return; }
    const done = () => { if (pc.iceGatheringState === 'complete') resolve(); };
    pc.addEventListener('icegatheringstatechange', done);
    setTimeout(resolve, ms);
  });
}

/**
 * Plays the WHEP endpoint `url` in `video`. Resolves to `{ stop() }` once the answer is applied;
 * rejects with an Error naming the status and the server's reason when the node refuses (a
 * channel not live: 404), or when WebRTC is unavailable. `fetchImpl` is for tests.
 */
export async function playWhep(video, url, { fetchImpl = fetch, RTCPeerConnectionImpl = globalThis.RTCPeerConnection } = {}) {
  if (!RTCPeerConnectionImpl) throw new Error('this browser has no WebRTC');
  const pc = new RTCPeerConnectionImpl();
  let location = null;
  const stop = () => {
    pc.close();
    if (location) fetchImpl(location, { method: 'DELETE' }).catch(() => { /* it times out anyway */ });
    location = null;
    if (video.srcObject) video.srcObject = null;
  };
  try {
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    // The answer may put each track in no stream: gather them in one.
    const stream = new MediaStream();
    pc.addEventListener('track', (event) => stream.addTrack(event.track));
    video.srcObject = stream;
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc, 1500);
    const response = await fetchImpl(url, {
      method: 'POST',
      headers: { 'content-type': 'application/sdp' },
      body: pc.localDescription.sdp,
    });
    const body = await response.text();
    if (response.status !== 201) {
      throw new Error(`WebRTC playback refused (${response.status}): ${body.trim() || response.statusText}`);
    }
    location = new URL(response.headers.get('location') || '', response.url || url).href;
    await pc.setRemoteDescription({ type: 'answer', sdp: body });
  } catch (error) {
    stop();
    throw error;
  }
  return { stop, connection: pc };
}
