// `/c/{channelId}`: the player, live badge, follow/subscribe, live chat, past broadcasts and
// clips (played in the same player, with a way back to live) and the streamer's profile.
import { api, canModerate, get, whoami } from './api.js';
import { ChatConnection, messageItem } from './chat.js';
import { actionButton, copyText, durationElement, fill, formatDuration, formatTime, h, liveBadge, toast } from './dom.js';
import { Player } from './player.js';

const enc = encodeURIComponent;

function profileCard(profile) {
  const safeUrl = (u) => (u && /^https?:\/\//i.test(u) ? u : null);
  const banner = safeUrl(profile.bannerUrl);
  const avatar = safeUrl(profile.avatarUrl);
  return h('section', { class: 'card', 'aria-labelledby': 'profile-title', id: 'profile' },
    banner ? h('img', { class: 'profile-banner', src: banner, alt: '' }) : null,
    h('div', { class: 'profile-head' },
      avatar ? h('img', { class: 'avatar', src: avatar, alt: '' }) : h('div', { class: 'avatar', 'aria-hidden': 'true' }),
      h('h2', { id: 'profile-title' }, `About ${profile.displayName}`)),
    profile.bio ? h('p', {}, profile.bio) : h('p', { class: 'muted' }, 'No bio yet.'),
    profile.channels.length > 1
      ? [h('h3', {}, 'Channels'), h('ul', {}, profile.channels.map((c) =>
        h('li', {}, h('a', { href: `/c/${enc(c.id)}` }, c.title), ' ', liveBadge(c.liveState))))]
      : null,
    h('h3', {}, 'Top friends'),
    profile.topFriends.length
      ? h('ol', { class: 'friends', id: 'top-friends' }, profile.topFriends.map((f) =>
        h('li', {}, h('a', { href: `/channels?q=${enc(f.displayName)}` }, f.displayName))))
      : h('p', { class: 'muted' }, 'No top friends yet.'),
    h('h3', {}, 'Support with crypto'),
    profile.donationAddresses.length
      ? h('ul', { class: 'donations', id: 'donations' }, profile.donationAddresses.map((d) =>
        h('li', {},
          h('span', { class: 'badge' }, d.currency),
          h('code', {}, d.address),
          d.note ? h('span', { class: 'muted' }, d.note) : null,
          h('button', { type: 'button', class: 'small secondary', 'aria-label': `Copy ${d.currency} address`,
            onclick: () => copyText(d.address, `${d.currency} address`) }, 'Copy'))))
      : h('p', { class: 'muted' }, 'No donation addresses.'),
    h('p', { class: 'hint' }, 'Donations go straight to the streamer; BitRiver Live never holds funds.'));
}

function relationButtons(channel, who, relation) {
  if (!who.user) {
    return h('a', { class: 'button secondary', href: `/signup?next=${enc(location.pathname)}` }, 'Sign in to follow');
  }
  const state = { following: relation.following, subscribed: relation.subscribed };
  const count = h('span', { class: 'muted', id: 'audience' }, `${channel.followers} followers · ${channel.subscribers} subscribers`);
  const follow = actionButton('Follow', async () => {
    const res = await api(state.following ? 'DELETE' : 'POST', `/api/channels/${enc(channel.id)}/follow`);
    state.following = res.following;
    channel.followers = res.followers;
    follow.textContent = res.following ? 'Unfollow' : 'Follow';
    count.textContent = `${channel.followers} followers · ${channel.subscribers} subscribers`;
    toast(res.following ? 'Following' : 'Unfollowed');
  }, { id: 'follow-button' });
  follow.textContent = state.following ? 'Unfollow' : 'Follow';
  const subscribe = actionButton('Subscribe', async () => {
    const res = await api(state.subscribed ? 'DELETE' : 'POST', `/api/channels/${enc(channel.id)}/subscribe`);
    state.subscribed = res.subscribed;
    channel.subscribers = res.subscribers;
    subscribe.textContent = res.subscribed ? 'Unsubscribe' : 'Subscribe';
    count.textContent = `${channel.followers} followers · ${channel.subscribers} subscribers`;
    toast(res.subscribed ? 'Subscribed' : 'Unsubscribed');
  }, { id: 'subscribe-button', class: 'secondary' });
  subscribe.textContent = state.subscribed ? 'Unsubscribe' : 'Subscribe';
  return h('div', { class: 'row' }, follow, subscribe, count);
}

function chatPanel(channel, who, relation) {
  const moderate = relation.canModerate || canModerate(who, channel);
  const log = h('ul', { class: 'chat-log', id: 'chat-log', 'aria-label': 'Chat messages', 'aria-live': 'polite', tabindex: '0' });
  const status = h('p', { class: 'status-line', id: 'chat-status' });
  const input = h('input', { id: 'chat-input', name: 'text', maxlength: 500, autocomplete: 'off', disabled: !who.user });
  const send = h('button', { type: 'submit', disabled: !who.user }, 'Send');
  const shown = new Set();
  const add = (m) => {
    if (shown.has(m.id)) return;
    shown.add(m.id);
    const nearBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    log.append(messageItem(m, moderate, null, Boolean(who.user) && !moderate && m.userId !== who.user.id));
    if (nearBottom) log.scrollTop = log.scrollHeight;
  };
  const connection = new ChatConnection(channel.id, {
    onHistory: (messages) => { log.replaceChildren(); shown.clear(); messages.forEach(add); log.scrollTop = log.scrollHeight; },
    onMessage: add,
    onDeleted: (id) => { log.querySelector(`[data-message-id="${CSS.escape(id)}"]`)?.remove(); },
    onHeld: (held) => { status.textContent = `Your message is waiting for a moderator: ${held.reason}.`; },
    onError: (err) => {
      // A banned viewer may appeal (once per ban); a moderator other than the one who banned decides.
      if (err.code === 'chat_banned') {
        fill(status, err.message, ' ', actionButton('Appeal this ban', async () => {
          const text = window.prompt('Why should the ban be lifted?');
          if (!text || !text.trim()) return;
          await api('POST', '/api/appeals', { channelId: channel.id, text: text.trim().slice(0, 2000) });
          toast('Appeal sent to the moderators');
        }, { class: 'small', 'data-action': 'appeal-ban' }));
      } else {
        status.textContent = err.message;
      }
    },
    onStatus: (text) => { status.textContent = text; },
  });
  const form = h('form', { 'aria-label': 'Send a chat message' },
    h('label', { for: 'chat-input', class: 'visually-hidden' }, 'Message'), input, send);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    try { connection.send(text); input.value = ''; status.textContent = ''; } catch (err) { status.textContent = err.message; }
  });
  return h('section', { class: 'card chat', 'aria-labelledby': 'chat-title' },
    h('h2', { id: 'chat-title' }, 'Chat'),
    log, status,
    who.user ? form : h('p', {}, h('a', { href: `/signup?next=${enc(location.pathname)}` }, 'Sign in to chat')));
}

// ----- past broadcasts and clips -----

/** Recordings shown at most (newest first), each with its clips. */
const GALLERY_LIMIT = 24;

/** Where a recording plays: its edge for published ones, else this node (drafts need the cookie). */
function replayUrl(recording) {
  return recording.edgePlaybackUrl || recording.playbackPath;
}

/** The channel's playable recordings and the clips cut from them: published ones for everyone,
 *  drafts too for its owner and admins (the API decides). */
async function loadReplays(channelId) {
  const { recordings } = await get(`/api/recordings?channelId=${enc(channelId)}`);
  const broadcasts = recordings.filter((r) => r.status === 'ready').slice(0, GALLERY_LIMIT);
  const clipLists = await Promise.all(broadcasts.map((r) =>
    get(`/api/recordings/${enc(r.id)}/clips`).then((l) => l.recordings).catch(() => [])));
  const clips = clipLists.flat().filter((c) => c.status === 'ready').sort((a, b) => b.createdAt - a.createdAt);
  return { broadcasts, clips };
}

function replayCard(recording, onPlay) {
  const draft = !recording.published;
  // The button's name is its text, title first (the poster comes first on screen, by CSS order).
  return h('li', { 'data-recording-id': recording.id },
    h('button', { type: 'button', class: 'replay-card', onclick: () => onPlay(recording) },
      h('span', { class: 'replay-title' }, recording.title),
      h('span', { class: 'replay-meta' },
        h('time', { datetime: new Date(recording.createdAt).toISOString() }, formatTime(recording.createdAt)),
        draft ? h('span', { class: 'badge', 'data-draft': 'true' }, 'Draft') : null),
      h('span', { class: 'replay-thumb' },
        recording.posterPath ? h('img', { src: recording.posterPath, alt: '', loading: 'lazy',
          onerror: (e) => e.currentTarget.remove() }) : null,
        h('span', { class: 'replay-duration' }, durationElement(recording.durationMs)))));
}

/**
 * The "Past broadcasts" section: cards that play a recording or clip in the page's player.
 * `load()` refreshes it (the DOM is only rebuilt when what is shown changed, so keyboard focus
 * stays put); `find(id)` returns a shown recording; `mark(id)` marks the one playing.
 */
function replayGallery(channel, manager, onPlay) {
  const status = h('p', { class: 'error-text', id: 'replay-status', role: 'status', hidden: true });
  const body = h('div', { id: 'replay-body' });
  const shown = new Map();
  let signature = null;
  let playing = null;
  const mark = (id) => {
    playing = id;
    for (const li of body.querySelectorAll('li[data-recording-id]')) {
      const button = li.querySelector('button');
      if (li.dataset.recordingId === id) button.setAttribute('aria-current', 'true');
      else button.removeAttribute('aria-current');
    }
  };
  const load = async () => {
    let replays;
    try {
      replays = await loadReplays(channel.id);
    } catch (e) {
      status.textContent = `Could not load past broadcasts: ${e.message}`;
      status.hidden = false;
      return;
    }
    status.hidden = true;
    const next = JSON.stringify(replays);
    if (next === signature) return;
    signature = next;
    shown.clear();
    [...replays.broadcasts, ...replays.clips].forEach((r) => shown.set(r.id, r));
    const hadFocus = body.contains(document.activeElement) ? document.activeElement.closest('li')?.dataset.recordingId : null;
    const grid = (id, label, items) => h('ul', { class: 'replay-grid', id, 'aria-label': label },
      items.map((r) => replayCard(r, onPlay)));
    fill(body,
      replays.broadcasts.length
        ? grid('replay-list', 'Past broadcasts, newest first', replays.broadcasts)
        : h('p', { class: 'muted', id: 'replay-empty' }, 'No past broadcasts yet.',
          manager ? ' Every broadcast is recorded: when one ends, publish it from the Control Center.' : ''),
      replays.clips.length ? [h('h3', {}, 'Clips'), grid('clip-gallery', 'Clips, newest first', replays.clips)] : null);
    mark(playing);
    if (hadFocus) body.querySelector(`li[data-recording-id="${CSS.escape(hadFocus)}"] button`)?.focus();
  };
  const element = h('section', { class: 'card replays', id: 'replays', 'aria-labelledby': 'replays-title' },
    h('h2', { id: 'replays-title' }, 'Past broadcasts'), status, body);
  return { element, load, mark, find: (id) => shown.get(id) };
}

/**
 * The embed code for third-party sites: hls.js plays the steered playlist (HLS Content Steering
 * keeps the viewer on a live edge), browsers with their own HLS follow the `/play` redirect to the
 * nearest edge. Both are answered by this control node, for the viewer's own address.
 */
function embedSnippet(channel) {
  const base = location.origin;
  const id = encodeURIComponent(channel.id);
  const code = `<video id="bitriver-${id}" controls muted autoplay playsinline style="width:100%"></video>
<script src="https://cdn.jsdelivr.net/npm/hls.js@1"></script>
<script>
(function () {
  var video = document.getElementById('bitriver-${id}');
  if (window.Hls && Hls.isSupported()) {
    var hls = new Hls({ lowLatencyMode: true });
    hls.loadSource('${base}/play/${id}/master.m3u8');
    hls.attachMedia(video);
  } else {
    video.src = '${base}/play/${id}';
  }
})();
</script>`;
  const area = h('textarea', { id: 'embed-code', readonly: true, rows: 8, 'aria-label': 'Embed code' });
  area.value = code;
  return h('details', { class: 'embed' }, h('summary', {}, 'Embed this channel'), area);
}

export async function render(main, channelId) {
  let channel;
  try {
    channel = await get(`/api/channels/${enc(channelId)}`);
  } catch (e) {
    document.title = 'Channel not found · BitRiver Live';
    fill(main, h('h1', {}, 'Channel not found'), h('p', {}, e.message), h('a', { href: '/channels' }, 'Browse channels'));
    return;
  }
  const who = await whoami();
  const relation = await get(`/api/channels/${enc(channel.id)}/relation`)
    .catch(() => ({ following: false, subscribed: false, canModerate: false }));
  document.title = `${channel.title} · BitRiver Live`;
  const liveLabel = `Live video of ${channel.title}`;
  const video = h('video', { id: 'player-video', controls: true, muted: true, playsinline: true, autoplay: true,
    'aria-label': liveLabel });
  const overlay = h('div', { class: 'overlay', id: 'player-message', role: 'status' });
  const player = new Player(video, overlay);
  const badge = h('span', { id: 'live-badge' }, liveBadge(channel.liveState));
  // Low latency: WebRTC (WHEP) instead of LL-HLS, when the node offers it; remembered.
  let lowLatency = localStorage.getItem('bitriver.lowLatency') === '1';
  const lowLatencyButton = h('button', {
    type: 'button', class: 'small', id: 'low-latency', 'aria-pressed': String(lowLatency), hidden: true,
    title: 'Sub-second playback over WebRTC instead of LL-HLS',
    onclick: () => setLowLatency(!lowLatency),
  }, 'Low latency (WebRTC)');
  function setLowLatency(on) {
    lowLatency = on;
    localStorage.setItem('bitriver.lowLatency', on ? '1' : '0');
    lowLatencyButton.setAttribute('aria-pressed', String(on));
    if (!replaying) player.stop();
    apply();
  }
  const meta = h('p', { class: 'muted' });
  const showMeta = () => fill(meta, [channel.category, ...channel.tags.map((t) => `#${t}`)].filter(Boolean).join(' · '));
  const profileSlot = h('div', { class: 'profile-slot' });

  // A recording or clip playing instead of the live stream (null: the player follows live).
  let replaying = null;
  const nowPlaying = h('p', { class: 'replay-now', id: 'replay-now', 'aria-live': 'polite' });
  const leave = h('button', { type: 'button', class: 'small', id: 'back-to-live', onclick: () => stopReplay(true) }, 'Back to live');
  const replayBar = h('div', { class: 'replay-bar', id: 'replay-bar', hidden: true }, nowPlaying, leave);
  // Drafts are listed to the channel's owner and admins (moderators see what viewers see).
  const manager = Boolean(who.admin || (who.user && who.user.id === channel.ownerId));
  const gallery = replayGallery(channel, manager, (r) => startReplay(r));

  fill(main,
    h('div', { class: 'channel-layout' },
      h('div', { class: 'channel-stage' },
        h('div', { class: 'player' }, video, overlay),
        replayBar,
        h('div', { class: 'channel-head' }, h('h1', { id: 'channel-title' }, channel.title), badge, lowLatencyButton),
        meta,
        relationButtons(channel, who, relation)),
      chatPanel(channel, who, relation),
      // Under the player on wide screens; after the chat on narrow ones.
      h('div', { class: 'channel-about' }, gallery.element, profileSlot, embedSnippet(channel))));
  showMeta();

  const apply = () => {
    fill(badge, liveBadge(channel.liveState));
    if (replaying) {
      leave.textContent = channel.liveState === 'live' ? 'Back to live' : 'Close replay';
      return;
    }
    lowLatencyButton.hidden = !(channel.whepUrl && channel.liveState === 'live');
    if (channel.liveState === 'live' && lowLatency && channel.whepUrl) {
      player.playWebrtc(channel.whepUrl).catch((e) => {
        toast(`${e.message}. Playing LL-HLS instead.`, true);
        setLowLatency(false);
      });
    } else if (channel.liveState === 'live') {
      player.play(channel.edgePlaybackUrl || channel.playbackUrl, channel.steeredPlaybackUrl || null);
    }
    else player.stop('Offline. The player starts when the stream goes live.');
  };
  /** Plays `recording` in the page's player; the address names it, to share or reload. */
  function startReplay(recording) {
    replaying = recording;
    const kind = recording.kind === 'clip' ? 'clip' : 'past broadcast';
    video.setAttribute('aria-label', `Replay of ${recording.title}`);
    fill(nowPlaying, `Playing the ${kind} `, h('strong', {}, recording.title),
      ` (${formatTime(recording.createdAt)}, ${formatDuration(recording.durationMs)})`, recording.published ? '' : ' · draft');
    replayBar.hidden = false;
    gallery.mark(recording.id);
    const url = new URL(location.href);
    url.searchParams.set('recording', recording.id);
    history.replaceState(null, '', url);
    player.play(replayUrl(recording), null, { vod: true });
    apply();
    video.scrollIntoView({ block: 'nearest' });
  }
  function stopReplay(focusPlayer) {
    replaying = null;
    replayBar.hidden = true;
    video.setAttribute('aria-label', liveLabel);
    gallery.mark(null);
    const url = new URL(location.href);
    url.searchParams.delete('recording');
    history.replaceState(null, '', url);
    player.stop();
    apply();
    if (focusPlayer) video.focus();
  }

  // `?recording=ID` opens that recording or clip (a shared link, a reload while replaying).
  const wanted = new URLSearchParams(location.search).get('recording');
  if (wanted) fill(badge, liveBadge(channel.liveState)); else apply();
  get(`/api/profiles/${enc(channel.ownerId)}`).then((p) => fill(profileSlot, profileCard(p))).catch(() => {});
  gallery.load().then(async () => {
    if (!wanted) return;
    const recording = gallery.find(wanted) || await get(`/api/recordings/${enc(wanted)}`).catch(() => null);
    if (recording && recording.channelId === channel.id && recording.status === 'ready') {
      startReplay(recording);
    } else {
      toast('That recording is not available', true);
      stopReplay(false);
    }
  });
  // Follow the live state: the player starts when a broadcast begins and stops when it ends (a
  // replay keeps playing); a broadcast that ended may be a new recording.
  let ticks = 0;
  setInterval(async () => {
    if (document.hidden) return;
    ticks += 1;
    try {
      const was = channel.liveState;
      channel = await get(`/api/channels/${enc(channelId)}`);
      apply();
      if ((was === 'live' && channel.liveState !== 'live') || ticks % 10 === 0) gallery.load();
    } catch { /* keep the last state */ }
  }, 3000);
}
