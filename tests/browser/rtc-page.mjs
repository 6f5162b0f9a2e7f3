// What the pages of whip.mjs and whep.mjs share (imported in the page as /rtc-page.mjs).

/// Makes the offer, waits for ICE gathering (at most 2 s: without trickle the offer carries the
/// candidates), POSTs it to `url` as application/sdp with `headers`, and applies the answer of a
/// 201. Returns {posted (ms), status, body, link, location}: `location` is absolute (after any
/// redirect, as an edge's 307 to an origin) and only set for a 201.
export async function negotiate(pc, url, headers = {}) {
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') resolve();
    pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && resolve());
    setTimeout(resolve, 2000);
  });
  const posted = Date.now();
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/sdp', ...headers },
    body: pc.localDescription.sdp,
  });
  const body = await response.text();
  const answer = { posted, status: response.status, body, link: response.headers.get('link'), location: null };
  if (response.status !== 201) return answer;
  answer.location = new URL(response.headers.get('location'), response.url).href;
  await pc.setRemoteDescription({ type: 'answer', sdp: body });
  return answer;
}
