// `/c/{channelId}`: the player, live badge, follow/subscribe, live chat and the streamer's profile.
import { api, canModerate, get, whoami } from './api.js';
import { ChatConnection, messageItem } from './chat.js';
import { actionButton, copyText, fill, h, liveBadge, toast } from './dom.js';
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
  const video = h('video', { id: 'player-video', controls: true, muted: true, playsinline: true, autoplay: true,
    'aria-label': `Live video of ${channel.title}` });
  const overlay = h('div', { class: 'overlay', id: 'player-message', role: 'status' });
  const player = new Player(video, overlay);
  const badge = h('span', { id: 'live-badge' }, liveBadge(channel.liveState));
  const meta = h('p', { class: 'muted' });
  const showMeta = () => fill(meta, [channel.category, ...channel.tags.map((t) => `#${t}`)].filter(Boolean).join(' · '));
  const profileSlot = h('div', { class: 'profile-slot' });
  fill(main,
    h('div', { class: 'channel-layout' },
      h('div', { class: 'channel-stage' },
        h('div', { class: 'player' }, video, overlay),
        h('div', { class: 'channel-head' }, h('h1', { id: 'channel-title' }, channel.title), badge),
        meta,
        relationButtons(channel, who, relation)),
      chatPanel(channel, who, relation),
      h('div', { class: 'channel-about' }, profileSlot, embedSnippet(channel))));
  showMeta();

  const apply = () => {
    fill(badge, liveBadge(channel.liveState));
    if (channel.liveState === 'live') {
      player.play(channel.edgePlaybackUrl || channel.playbackUrl, channel.steeredPlaybackUrl || null);
    }
    else player.stop('Offline. The player starts when the stream goes live.');
  };
  apply();
  get(`/api/profiles/${enc(channel.ownerId)}`).then((p) => fill(profileSlot, profileCard(p))).catch(() => {});
  // Follow the live state: the player starts when a broadcast begins and stops when it ends.
  setInterval(async () => {
    if (document.hidden) return;
    try {
      channel = await get(`/api/channels/${enc(channelId)}`);
      apply();
    } catch { /* keep the last state */ }
  }, 3000);
}
