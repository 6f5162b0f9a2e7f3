// `/`: the Control Center. Admins see everything; creators their own channels, sessions,
// recordings and clips, chat and profile; viewers their account and profile. Each section loads on its own, so one failing
// call (say, analytics for a non-admin) does not blank the page.
import { ApiError, api, get, whoami } from './api.js';
import { ChatConnection, messageItem } from './chat.js';
import { actionButton, copyText, durationElement, field, fill, formatBytes, formatTime, h, liveBadge, selectField, toast } from './dom.js';
import { Player } from './player.js';
import { profileForm } from './profile-form.js';

const enc = encodeURIComponent;
const ROLES = ['admin', 'creator', 'moderator', 'viewer'];

/** Page-wide state: who is calling, the users and channels they may manage, stream keys seen. */
const ctx = {
  who: null,
  users: [],
  channels: [],
  /** Stream keys are only in create/rotate answers: kept in memory for this page only. */
  keys: new Map(),
  rtmpBase: null,
  /** Channel id -> the answer of GET /api/channels/{id}/ingest (the node to stream to). */
  ingest: new Map(),
};

function section(id, title, ...body) {
  return h('section', { class: 'card', id, 'aria-labelledby': `${id}-title` },
    h('h2', { id: `${id}-title` }, title), ...body);
}

function errorLine(e) {
  return h('p', { class: 'error-text' }, e.status === 403 ? 'Admins only.' : e.message);
}

function userName(id) {
  const u = ctx.users.find((x) => x.id === id);
  return u ? u.displayName : id;
}

async function loadUsersAndChannels() {
  const { who } = ctx;
  if (who.admin) {
    ctx.users = await get('/api/users').catch(() => (who.user ? [who.user] : []));
    ctx.channels = await get('/api/channels');
  } else {
    ctx.users = [who.user];
    ctx.channels = await get(`/api/channels?ownerId=${enc(who.user.id)}`);
  }
}

// ----- overview: analytics, health, cluster -----

function stat(label, value, id) {
  return h('div', { class: 'stat', id }, h('span', { class: 'value' }, value), h('span', { class: 'label' }, label));
}

async function renderOverview(slot) {
  const parts = [];
  if (ctx.who.admin) {
    try {
      const a = await get('/api/analytics/overview');
      const s = a.summary;
      parts.push(h('h3', {}, 'Analytics'),
        h('div', { class: 'stats', id: 'analytics-cards' },
          stat('Live viewers', s.liveViewers, 'stat-live-viewers'),
          stat('Streams live', s.streamsLive, 'stat-streams-live'),
          stat('Watch time (24 h, min)', Math.round(s.watchTimeMinutes), 'stat-watch-time'),
          stat('Chat messages today', s.chatMessages, 'stat-chat-messages')),
        a.perChannel.length
          ? h('div', { class: 'table-wrap' }, h('table', {},
            h('caption', { class: 'visually-hidden' }, 'Per-channel analytics'),
            h('thead', {}, h('tr', {}, ['Channel', 'Live viewers', 'Followers', 'Avg watch (min)', 'Chat today'].map((t) => h('th', { scope: 'col' }, t)))),
            h('tbody', {}, a.perChannel.map((c) => h('tr', {},
              h('td', {}, h('a', { href: `/c/${enc(c.channelId)}` }, c.title)), h('td', {}, c.liveViewers), h('td', {}, c.followers),
              h('td', {}, c.avgWatchMinutes.toFixed(1)), h('td', {}, c.chatMessages))))))
          : null);
    } catch (e) {
      parts.push(errorLine(e));
    }
  }
  // /healthz answers 503 with the same JSON when unhealthy: read it either way.
  try {
    const res = await fetch('/healthz', { headers: { Accept: 'application/json' } });
    const health = await res.json();
    const comps = health.components || {};
    const listeners = comps.listeners || {};
    if (listeners.rtmp) ctx.rtmpBase = `rtmp://${location.hostname}:${listeners.rtmp.addr.split(':').pop()}/live/`;
    parts.push(h('h3', {}, 'Health'),
      h('p', { id: 'health-status' }, h('span', { class: health.status === 'ok' ? 'badge' : 'badge live' }, health.status),
        ` node ${health.nodeId} · catalog: ${comps.catalog ? comps.catalog.detail : '?'} · storage: ${comps.storage ? comps.storage.status : '?'}`),
      h('p', { class: 'muted' }, 'Listeners: ', Object.entries(listeners).map(([name, l]) => `${name} ${l.addr}`).join(' · ')));
  } catch (e) {
    parts.push(h('p', { class: 'error-text' }, `Health check failed: ${e.message}`));
  }
  if (ctx.who.admin) {
    try {
      const cluster = await get('/api/cluster');
      parts.push(h('h3', {}, 'Cluster'),
        h('p', {}, `Leader: node ${cluster.leaderId ?? 'none'} · term ${cluster.term}`),
        h('div', { class: 'table-wrap' }, h('table', { id: 'cluster-members' },
          h('caption', { class: 'visually-hidden' }, 'Cluster members'),
          h('thead', {}, h('tr', {}, ['Node', 'Region', 'Roles', 'Voter', 'Applied', 'Address', 'Health', 'Load'].map((t) => h('th', { scope: 'col' }, t)))),
          h('tbody', {}, cluster.members.map((m) => h('tr', {},
            h('td', {}, m.nodeId, m.nodeId === cluster.leaderId ? ' (leader)' : ''), h('td', {}, m.region), h('td', {}, m.roles.join(', ')),
            h('td', {}, m.voter ? 'yes' : 'learner'), h('td', {}, m.lastApplied ?? '—'), h('td', {}, h('code', {}, m.addr)),
            h('td', {}, `${m.health ?? '—'}${m.draining ? ' · draining' : ''}`),
            h('td', {}, m.load ? `CPU ${(m.load.cpuPermille / 10).toFixed(0)}% · ${m.load.streams} streams · ${m.load.connections} conns · ${(m.load.egressBps * 8 / 1e6).toFixed(1)} Mb/s` : '—')))))));
    } catch (e) {
      parts.push(h('h3', {}, 'Cluster'), errorLine(e));
    }
  }
  fill(slot, parts);
}

// ----- channels and stream keys -----

function keyBox(channel) {
  const key = ctx.keys.get(channel.id);
  if (!key) {
    return h('div', { class: 'key-box' },
      h('span', { class: 'muted' }, 'Stream key hidden (shown once).'),
      actionButton('Rotate key', () => rotateKey(channel), { class: 'small secondary', 'data-action': 'rotate-key',
        'aria-label': `Rotate key of ${channel.title}` }));
  }
  // The ingest point arrives after the row is drawn: read it when the button is pressed.
  const ingestUrl = () => {
    const point = ctx.ingest.get(channel.id);
    if (point && point.rtmpUrl) return `${point.rtmpUrl}/${key}`;
    return ctx.rtmpBase ? `${ctx.rtmpBase}${key}` : null;
  };
  return h('div', { class: 'key-box' },
    h('code', { 'data-stream-key': channel.id }, key),
    h('button', { type: 'button', class: 'small', 'data-action': 'copy-key', 'aria-label': `Copy key of ${channel.title}`,
      onclick: () => copyText(key, 'Stream key') }, 'Copy key'),
    h('button', { type: 'button', class: 'small secondary', 'aria-label': `Copy RTMP URL of ${channel.title}`,
      onclick: () => {
        const url = ingestUrl();
        if (url) copyText(url, 'RTMP URL'); else toast('No ingest node is known yet', true);
      } }, 'Copy RTMP URL'),
    actionButton('Rotate key', () => rotateKey(channel), { class: 'small secondary', 'data-action': 'rotate-key',
      'aria-label': `Rotate key of ${channel.title}` }));
}

async function rotateKey(channel) {
  const res = await api('POST', `/api/channels/${enc(channel.id)}/stream-key/rotate`);
  ctx.keys.set(channel.id, res.streamKey);
  toast('New stream key: the old one no longer works');
  await refreshChannels();
}

function channelEditForm(channel, row) {
  const form = h('form', { class: 'card', 'aria-label': `Edit ${channel.title}` },
    field('Title', { name: 'title', value: channel.title, required: true, maxlength: 140 }),
    field('Category', { name: 'category', value: channel.category || '' }),
    field('Tags', { name: 'tags', value: channel.tags.join(', ') }, 'Comma separated.'),
    h('div', { class: 'row' }, h('button', { type: 'submit' }, 'Save'),
      h('button', { type: 'button', class: 'secondary', onclick: () => form.remove() }, 'Cancel')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const data = Object.fromEntries(new FormData(form));
    try {
      await api('PATCH', `/api/channels/${enc(channel.id)}`, {
        title: data.title, category: data.category.trim() || null, tags: splitTags(data.tags),
      });
      toast('Channel saved');
      await refreshChannels();
    } catch (err) { toast(err.message, true); }
  });
  row.after(h('li', { class: 'edit-row' }, form));
  form.querySelector('input').focus();
}

function splitTags(text) {
  return text.split(',').map((t) => t.trim()).filter(Boolean);
}

function confirmButton(text, confirmText, action, attrs = {}) {
  const button = h('button', { type: 'button', class: 'small secondary', ...attrs }, text);
  let armed = false;
  button.addEventListener('click', async () => {
    if (!armed) {
      armed = true;
      button.textContent = confirmText;
      button.classList.replace('secondary', 'danger');
      setTimeout(() => { armed = false; button.textContent = text; button.classList.replace('danger', 'secondary'); }, 4000);
      return;
    }
    button.disabled = true;
    try { await action(); } catch (e) { toast(e.message, true); button.disabled = false; }
  });
  return button;
}

/** Where to stream: the best ingest node of the channel's home region, as the API names it. */
function ingestLine(channel) {
  const line = h('p', { class: 'muted', 'data-ingest-point': channel.id }, 'Ingest: finding the best node…');
  get(`/api/channels/${enc(channel.id)}/ingest`).then((p) => {
    ctx.ingest.set(channel.id, p);
    const where = `node ${p.nodeId}, region ${p.region}${p.homeRegion ? ` (home ${p.homeRegion})` : ''}`;
    fill(line, 'Stream to ', p.rtmpUrl ? h('code', { 'data-rtmp-url': '' }, p.rtmpUrl) : null,
      p.srtUrl ? [' or SRT ', h('code', { 'data-srt-url': '' }, p.srtUrl)] : null, ` · ${where}`);
  }).catch((e) => fill(line, `Ingest: ${e.message}`));
  return line;
}

function channelRow(channel) {
  const live = channel.liveState === 'live';
  const row = h('li', { class: 'card', 'data-channel-id': channel.id },
    h('div', { class: 'row' }, liveBadge(channel.liveState), h('strong', {}, channel.title),
      h('span', { class: 'muted' }, `by ${userName(channel.ownerId)}`),
      h('a', { href: `/c/${enc(channel.id)}` }, 'Open channel page')),
    h('p', { class: 'muted' }, [channel.category, channel.tags.map((t) => `#${t}`).join(' ')].filter(Boolean).join(' · ') || 'No category or tags',
      ` · ${channel.followers} followers · ${channel.subscribers} subscribers`),
    keyBox(channel),
    ingestLine(channel),
    h('div', { class: 'row actions' },
      h('button', { type: 'button', class: 'small secondary', onclick: () => channelEditForm(channel, row) }, 'Edit'),
      actionButton(live ? 'Stop stream' : 'Start stream', async () => {
        await api('POST', `/api/channels/${enc(channel.id)}/stream/${live ? 'stop' : 'start'}`, {});
        toast(live ? 'Stream stopped' : 'Stream started');
        await refreshChannels();
        if (sessionsSlot) renderSessions(sessionsSlot).catch(() => {});
      }, { class: 'small secondary', 'data-action': live ? 'stop' : 'start' }),
      confirmButton('Delete', 'Confirm delete', async () => {
        await api('DELETE', `/api/channels/${enc(channel.id)}`);
        toast('Channel deleted');
        await refreshChannels();
      })));
  return row;
}

let channelsSlot = null;
let moderationSlot = null;
let profilesSlot = null;
async function refreshChannels() {
  const before = ctx.channels.map((c) => c.id).join();
  await loadUsersAndChannels();
  renderChannels(channelsSlot);
  // New or deleted channels: the moderation view and the featured-channel choice follow.
  if (before !== ctx.channels.map((c) => c.id).join()) {
    if (moderationSlot) renderModeration(moderationSlot);
    if (recordingsSlot) renderRecordings(recordingsSlot);
    if (profilesSlot) profileForm(profilesSlot, ctx).catch((e) => fill(profilesSlot, errorLine(e)));
  }
}

function renderChannels(slot) {
  channelsSlot = slot;
  const { who } = ctx;
  const creator = who.admin || (who.user && who.user.roles.some((r) => r === 'creator'));
  let form = null;
  if (creator) {
    const ownerChoice = who.admin
      ? selectField('Owner', { name: 'ownerId' }, ctx.users.map((u) => [u.id, `${u.displayName} (${u.email})`]), who.user?.id)
      : null;
    form = h('form', { id: 'create-channel', 'aria-labelledby': 'create-channel-title' },
      h('h3', { id: 'create-channel-title' }, 'Create a channel'),
      h('div', { class: 'grid-2' },
        field('Title', { name: 'title', required: true, maxlength: 140 }),
        field('Category', { name: 'category' }),
        field('Tags', { name: 'tags' }, 'Comma separated, e.g. outdoors, travel.'),
        ownerChoice),
      h('button', { type: 'submit' }, 'Create channel'));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const data = Object.fromEntries(new FormData(form));
      const body = { title: data.title, tags: splitTags(data.tags || '') };
      if (data.category && data.category.trim()) body.category = data.category.trim();
      if (data.ownerId) body.ownerId = data.ownerId;
      try {
        const created = await api('POST', '/api/channels', body);
        ctx.keys.set(created.id, created.streamKey);
        toast(`Channel created. Copy its stream key now: it is shown only once.`);
        form.reset();
        await refreshChannels();
      } catch (err) { toast(err.message, true); }
    });
  }
  fill(slot,
    creator ? null : h('p', { class: 'muted' }, 'Creating channels needs the creator role: ask an admin.'),
    form,
    h('h3', {}, who.admin ? 'All channels' : 'Your channels'),
    ctx.channels.length ? h('ul', { id: 'channel-list', class: 'plain-list' }, ctx.channels.map(channelRow))
      : h('p', { class: 'muted' }, 'No channels yet.'));
}

// ----- live sessions -----

let sessionsSlot = null;
async function renderSessions(slot) {
  sessionsSlot = slot;
  const channels = ctx.channels.slice(0, 40);
  const lists = await Promise.all(channels.map((c) =>
    get(`/api/channels/${enc(c.id)}/sessions`).then((s) => s.map((x) => ({ ...x, title: c.title }))).catch(() => [])));
  const sessions = lists.flat().sort((a, b) => b.startedAt - a.startedAt).slice(0, 50);
  const live = sessions.filter((s) => !s.endedAt);
  fill(slot,
    h('p', {}, `${live.length} live now.`),
    sessions.length ? h('div', { class: 'table-wrap' }, h('table', { id: 'sessions-table' },
      h('caption', { class: 'visually-hidden' }, 'Stream sessions, newest first'),
      h('thead', {}, h('tr', {}, ['Channel', 'State', 'Started', 'Ended', 'Renditions', 'Peak viewers'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, sessions.map((s) => h('tr', {},
        h('td', {}, h('a', { href: `/c/${enc(s.channelId)}` }, s.title)),
        h('td', {}, liveBadge(s.endedAt ? 'offline' : 'live')),
        h('td', {}, formatTime(s.startedAt)), h('td', {}, formatTime(s.endedAt)),
        h('td', {}, s.renditions.join(', ')), h('td', {}, s.peakConcurrent)))))) : h('p', { class: 'muted' }, 'No sessions yet.'));
}

// ----- recordings and clips -----

/** How often the recordings list refreshes: fast while a clip is being cut, else slowly (a
 *  broadcast that ends turns into a draft here). */
const RECORDINGS_FAST_MS = 1500;
const RECORDINGS_SLOW_MS = 5000;
const RECORDINGS_LIMIT = 50;

const STATUS_TEXT = {
  recording: 'Recording', queued: 'Queued', processing: 'Processing', ready: 'Ready', failed: 'Failed', deleting: 'Deleting',
};

function recordingBadges(r) {
  return [
    h('span', { class: r.status === 'recording' ? 'badge live' : r.status === 'failed' ? 'badge failed' : 'badge', 'data-status': r.status },
      STATUS_TEXT[r.status] || r.status),
    r.status === 'ready'
      ? h('span', { class: r.published ? 'badge published' : 'badge', 'data-published': String(r.published) }, r.published ? 'Published' : 'Draft')
      : null,
  ];
}

/** `1500` → `1.5 s`: a clip's range as the creator picked it. */
function seconds(ms) {
  return `${(ms / 1000).toFixed(1)} s`;
}

/**
 * The preview player and the clip form, one per panel (above the list, so refreshing the list
 * never stops playback). `open(recording, cut)` plays it; with `cut`, the form takes start and
 * end from the player (Set start / Set end) or typed, and posts the clip.
 */
function recordingEditor(onCreated) {
  const video = h('video', { id: 'recording-preview-video', controls: true, playsinline: true, 'aria-label': 'Recording preview' });
  const overlay = h('div', { class: 'overlay', role: 'status', hidden: true });
  const player = new Player(video, overlay);
  const heading = h('h3', { id: 'recording-preview-title', tabindex: '-1' });
  const error = h('p', { class: 'error-text', id: 'clip-error', role: 'alert' });
  const start = h('input', { type: 'number', id: 'clip-start', name: 'startSeconds', min: 0, step: 0.1, inputmode: 'decimal' });
  const end = h('input', { type: 'number', id: 'clip-end', name: 'endSeconds', min: 0, step: 0.1, inputmode: 'decimal' });
  const position = () => (Number.isFinite(video.currentTime) ? video.currentTime : 0).toFixed(1);
  const bound = (label, input, setText, hint) => h('div', { class: 'field' },
    h('label', { for: input.id }, label),
    h('div', { class: 'row clip-bound' }, input,
      h('button', { type: 'button', class: 'small secondary', 'aria-describedby': `${input.id}-hint`,
        onclick: () => { input.value = position(); input.removeAttribute('aria-invalid'); } }, setText)),
    h('div', { class: 'hint', id: `${input.id}-hint` }, hint));
  // `novalidate`: the server checks the range against the recording and says what is wrong.
  const form = h('form', { id: 'clip-form', 'aria-labelledby': 'recording-preview-title', novalidate: true, hidden: true },
    h('div', { class: 'grid-2' },
      bound('Start (seconds)', start, 'Set start', 'Set start takes the player’s current position.'),
      bound('End (seconds)', end, 'Set end', 'Set end takes the player’s current position.')),
    field('Clip title', { id: 'clip-title-field', name: 'title', maxlength: 140, autocomplete: 'off' }, 'Optional; the recording’s title when left empty.'),
    error,
    h('div', { class: 'row' }, h('button', { type: 'submit' }, 'Create clip')));
  const titleInput = form.querySelector('#clip-title-field');
  const closeButton = h('button', { type: 'button', class: 'small secondary', id: 'recording-preview-close', onclick: () => close() }, 'Close preview');
  const element = h('div', { class: 'recording-editor', id: 'recording-preview', hidden: true },
    h('div', { class: 'row' }, heading, closeButton),
    h('div', { class: 'player' }, video, overlay),
    form);
  let current = null;
  let opener = null;

  const showError = (message, fieldName) => {
    error.textContent = message;
    for (const input of [start, end, titleInput]) {
      const bad = fieldName && input.name === fieldName;
      if (bad) input.setAttribute('aria-invalid', 'true'); else input.removeAttribute('aria-invalid');
      if (bad) input.setAttribute('aria-errormessage', 'clip-error'); else input.removeAttribute('aria-errormessage');
    }
  };

  function open(recording, cut, from) {
    current = recording;
    opener = from || null;
    heading.textContent = cut ? `Cut a clip from “${recording.title}”` : `Preview: ${recording.title}`;
    video.setAttribute('aria-label', `Preview of ${recording.title}`);
    element.hidden = false;
    form.hidden = !cut;
    if (cut) {
      start.value = '0.0';
      end.value = (Math.min(recording.durationMs, 30000) / 1000).toFixed(1);
      titleInput.value = '';
      titleInput.placeholder = recording.title;
      showError('');
    }
    // Same origin: the session cookie lets the owner play a draft.
    player.play(recording.playbackPath, null, { vod: true });
    heading.focus();
  }

  function close() {
    player.stop();
    element.hidden = true;
    current = null;
    if (opener && opener.isConnected) opener.focus();
    opener = null;
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (!current) return;
    const startSeconds = Number(start.value);
    const endSeconds = Number(end.value);
    if (start.value.trim() === '' || end.value.trim() === '' || !Number.isFinite(startSeconds) || !Number.isFinite(endSeconds)) {
      showError('Enter a start and an end in seconds.', start.value.trim() === '' ? 'startSeconds' : 'endSeconds');
      return;
    }
    const body = { startSeconds, endSeconds };
    if (titleInput.value.trim()) body.title = titleInput.value.trim();
    const submit = form.querySelector('button[type=submit]');
    submit.disabled = true;
    try {
      const clip = await api('POST', `/api/recordings/${enc(current.id)}/clips`, body);
      showError('');
      titleInput.value = '';
      toast(`Clip “${clip.title}” queued: it appears under its recording when it is cut`);
      onCreated(clip);
    } catch (err) {
      // The server's own words (a range past the end, end before start) next to the form.
      showError(err.message, err instanceof ApiError ? err.field : null);
    } finally {
      submit.disabled = false;
    }
  });

  return { element, open, close, showing: () => current && current.id };
}

let recordingsSlot = null;
let recordingsTimer = null;
let recordingsEditor = null;
/** Bumped by every render: an older panel's refresh in flight stops there. */
let recordingsPanel = 0;
/** The selected channel's recordings (drafts and published) and their clips: publish, preview,
 *  cut a clip, delete. */
function renderRecordings(slot) {
  recordingsSlot = slot;
  clearTimeout(recordingsTimer);
  const panel = ++recordingsPanel;
  if (recordingsEditor) recordingsEditor.close();
  if (!ctx.channels.length) { fill(slot, h('p', { class: 'muted' }, 'No channels yet.')); return; }
  const channelSelect = selectField('Channel', { name: 'channelId', id: 'recordings-channel' }, ctx.channels.map((c) => [c.id, c.title]));
  const select = channelSelect.querySelector('select');
  const status = h('p', { class: 'status-line', id: 'recordings-status', role: 'status' }, 'Loading…');
  const list = h('ul', { class: 'plain-list recordings', id: 'recordings-list', 'aria-label': 'Recordings, newest first', hidden: true });
  const editor = recordingEditor(() => refresh(true));
  recordingsEditor = editor;
  /** Rows by recording id with what they were drawn from: unchanged rows stay in the DOM. */
  const rows = new Map();
  let generation = 0;
  let fast = false;

  const act = (text, action, attrs) => actionButton(text, async () => { await action(); await refresh(true); }, { class: 'small', ...attrs });
  const deleteButton = (r, titleId) => confirmButton('Delete', 'Confirm delete', async () => {
    await api('DELETE', `/api/recordings/${enc(r.id)}`);
    toast(`${r.kind === 'clip' ? 'Clip' : 'Recording'} “${r.title}” deleted`);
    if (editor.showing() === r.id) editor.close();
    await refresh(true);
  }, { 'data-action': 'delete', 'data-focus-key': `delete:${r.id}`, 'aria-describedby': titleId });
  const publishButton = (r, titleId) => act('Publish', async () => {
    await api('POST', `/api/recordings/${enc(r.id)}/publish`);
    toast(`“${r.title}” is published: it is on the channel page now`);
  }, { 'data-action': 'publish', 'data-focus-key': `publish:${r.id}`, 'aria-describedby': titleId });
  const previewButton = (r, titleId, cut) => h('button', { type: 'button', class: 'small secondary',
    'data-action': cut ? 'cut' : 'preview', 'data-focus-key': `${cut ? 'cut' : 'preview'}:${r.id}`, 'aria-describedby': titleId,
    onclick: (e) => { editor.open(r, cut, e.currentTarget); editor.element.scrollIntoView({ block: 'nearest' }); } },
  cut ? 'Cut a clip' : 'Preview');

  const clipItem = (c) => {
    const titleId = `recording-title-${c.id}`;
    const ready = c.status === 'ready';
    return h('li', { 'data-recording-id': c.id, 'data-status': c.status },
      h('div', { class: 'row' }, recordingBadges(c), h('strong', { id: titleId }, c.title),
        h('span', { class: 'muted' }, `${seconds(c.clipStartMs || 0)} to ${seconds(c.clipEndMs || 0)}`,
          ready ? [' · ', durationElement(c.durationMs), ` · ${formatBytes(c.sizeBytes)}`] : null)),
      c.status === 'failed' ? h('p', { class: 'error-text', 'data-failure': '' }, `Cutting failed: ${c.failure || 'no reason given'}`) : null,
      h('div', { class: 'row actions' },
        ready ? previewButton(c, titleId, false) : null,
        ready && !c.published ? publishButton(c, titleId) : null,
        ['ready', 'failed'].includes(c.status) ? deleteButton(c, titleId) : null,
        c.published ? h('a', { href: `/c/${enc(c.channelId)}?recording=${enc(c.id)}` }, 'On the channel page') : null));
  };

  const recordingRow = (r, clips) => {
    const titleId = `recording-title-${r.id}`;
    const ready = r.status === 'ready';
    const facts = [durationElement(r.durationMs), ` · ${formatBytes(r.sizeBytes)} · `,
      h('time', { datetime: new Date(r.createdAt).toISOString() }, formatTime(r.createdAt)),
      r.publishedAt ? ` · published ${formatTime(r.publishedAt)}` : ''];
    return h('li', { class: 'card recording-row', 'data-recording-id': r.id, 'data-status': r.status },
      r.posterPath ? h('img', { class: 'recording-poster', src: r.posterPath, alt: '', loading: 'lazy', width: 160, height: 90 }) : null,
      h('div', { class: 'row' }, recordingBadges(r), h('strong', { id: titleId }, r.title)),
      h('p', { class: 'muted' }, facts, r.status === 'recording' ? ' · on air: it becomes a draft when the broadcast ends' : ''),
      h('div', { class: 'row actions' },
        ready && !r.published ? publishButton(r, titleId) : null,
        ready ? previewButton(r, titleId, false) : null,
        ready ? previewButton(r, titleId, true) : null,
        r.status !== 'recording' ? deleteButton(r, titleId) : null,
        r.published ? h('a', { href: `/c/${enc(r.channelId)}?recording=${enc(r.id)}` }, 'On the channel page') : null),
      clips.length
        ? h('div', { class: 'clips' }, h('h4', {}, `Clips (${clips.length})`),
          h('ul', { class: 'plain-list clip-list', 'aria-label': `Clips of ${r.title}` }, clips.map(clipItem)))
        : null);
  };

  /** Draws `items` ({recording, clips}), keeping the rows that did not change and the focus. */
  const draw = (items) => {
    const focused = list.contains(document.activeElement) ? document.activeElement.dataset.focusKey : null;
    const next = items.map(({ recording, clips }) => {
      const signature = JSON.stringify([recording, clips]);
      const old = rows.get(recording.id);
      if (old && old.signature === signature) return old.element;
      const element = recordingRow(recording, clips);
      rows.set(recording.id, { signature, element });
      return element;
    });
    next.forEach((element, i) => { if (list.children[i] !== element) list.insertBefore(element, list.children[i] || null); });
    while (list.children.length > next.length) list.lastElementChild.remove();
    for (const id of [...rows.keys()]) if (!items.some((x) => x.recording.id === id)) rows.delete(id);
    if (focused && !list.contains(document.activeElement)) {
      // The same control, or (gone, say Publish once published) the first of its row.
      const row = `[data-recording-id="${CSS.escape(focused.slice(focused.indexOf(':') + 1))}"]`;
      (list.querySelector(`[data-focus-key="${CSS.escape(focused)}"]`) || list.querySelector(`${row} button`))?.focus();
    }
  };
  const say = (text) => { if (status.textContent !== text) status.textContent = text; };

  async function refresh(soon = false) {
    clearTimeout(recordingsTimer);
    const mine = ++generation;
    const channelId = select.value;
    try {
      const { recordings } = await get(`/api/recordings?channelId=${enc(channelId)}`);
      const shown = recordings.slice(0, RECORDINGS_LIMIT);
      const items = await Promise.all(shown.map(async (recording) => ({
        recording,
        clips: await get(`/api/recordings/${enc(recording.id)}/clips`).then((l) => l.recordings).catch(() => []),
      })));
      if (mine !== generation || panel !== recordingsPanel) return;
      fast = items.some((x) => x.clips.some((c) => c.status === 'queued' || c.status === 'processing'));
      draw(items);
      list.hidden = !items.length;
      say(items.length
        ? `${recordings.length} recording${recordings.length === 1 ? '' : 's'}${fast ? ' · cutting a clip…' : ''}`
        : 'No recordings of this channel yet. Every broadcast is recorded and appears here as a draft when it ends.');
    } catch (err) {
      if (mine !== generation || panel !== recordingsPanel) return;
      say(`Could not load the recordings: ${err.message}`);
    }
    if (mine !== generation || panel !== recordingsPanel) return;
    recordingsTimer = setTimeout(tick, soon || fast ? RECORDINGS_FAST_MS : RECORDINGS_SLOW_MS);
  }
  function tick() {
    if (document.hidden) recordingsTimer = setTimeout(tick, RECORDINGS_SLOW_MS);
    else refresh();
  }

  select.addEventListener('change', () => {
    editor.close();
    draw([]);
    list.hidden = true;
    say('Loading…');
    refresh();
  });
  fill(slot,
    h('p', { class: 'muted' }, 'Every broadcast is recorded. Publish a draft to list it on the channel page, preview it, cut clips from it or delete it.'),
    channelSelect, editor.element, status, list);
  refresh();
}

// ----- chat moderation across every channel -----

const moderationSockets = [];
function renderModeration(slot) {
  moderationSlot = slot;
  moderationSockets.splice(0).forEach((c) => c.close());
  const channels = ctx.channels.slice(0, 25);
  const log = h('ul', { class: 'moderation-log', id: 'moderation-log', 'aria-live': 'polite', 'aria-label': 'Recent chat messages' });
  const byId = new Map();
  const titleOf = (id) => (channels.find((c) => c.id === id) || {}).title || id;
  const add = (m) => {
    if (byId.has(m.id)) return;
    const item = messageItem(m, true, h('span', { class: 'badge' }, titleOf(m.channelId)));
    item.dataset.sentAt = m.sentAt;
    byId.set(m.id, item);
    // Newest first.
    const after = [...log.children].find((li) => Number(li.dataset.sentAt) < m.sentAt);
    log.insertBefore(item, after || null);
  };
  const remove = (id) => { byId.get(id)?.remove(); byId.delete(id); };
  for (const channel of channels) {
    moderationSockets.push(new ChatConnection(channel.id, {
      onHistory: (messages) => messages.forEach(add),
      onMessage: add,
      onDeleted: remove,
    }, 20));
  }
  let post = null;
  if (channels.length) {
    const asUser = !ctx.who.user
      ? selectField('Post as', { name: 'userId' }, ctx.users.map((u) => [u.id, u.displayName]))
      : null;
    post = h('form', { id: 'seed-chat', 'aria-labelledby': 'seed-chat-title' },
      h('h3', { id: 'seed-chat-title' }, 'Post a message'),
      h('div', { class: 'grid-2' },
        selectField('Channel', { name: 'channelId' }, channels.map((c) => [c.id, c.title])),
        asUser,
        field('Message', { name: 'text', required: true, maxlength: 500 })),
      h('button', { type: 'submit' }, 'Post'));
    post.addEventListener('submit', async (e) => {
      e.preventDefault();
      const data = Object.fromEntries(new FormData(post));
      try {
        const body = { text: data.text };
        if (data.userId) body.userId = data.userId;
        await api('POST', `/api/channels/${enc(data.channelId)}/chat`, body);
        post.querySelector('[name=text]').value = '';
      } catch (err) { toast(err.message, true); }
    });
  }
  fill(slot,
    h('p', { class: 'muted' }, channels.length
      ? `Live chat of ${channels.length} channel${channels.length === 1 ? '' : 's'}, newest first. Deleting a message removes it for every viewer.`
      : 'No channels to moderate.'),
    log, post, heldPanel(channels), automodForm(channels));
}

// ----- automod: held messages and rules -----

let heldTimer = null;
/** Messages automod held (new accounts), every channel's, refreshed every few seconds. */
function heldPanel(channels) {
  clearInterval(heldTimer);
  if (!channels.length) return null;
  const list = h('ul', { class: 'moderation-log', id: 'held-list', 'aria-label': 'Messages held for review' });
  const titleOf = (id) => (channels.find((c) => c.id === id) || {}).title || id;
  const decide = async (held, action) => {
    try {
      await api('POST', `/api/channels/${enc(held.message.channelId)}/chat/held/${enc(held.message.id)}/${action}`);
      toast(action === 'approve' ? 'Message approved and posted' : 'Message rejected');
    } catch (err) { toast(err.message, true); }
    refresh();
  };
  const refresh = async () => {
    const all = [];
    for (const channel of channels) {
      try { all.push(...(await get(`/api/channels/${enc(channel.id)}/chat/held`)).messages); } catch { /* not a moderator of it */ }
    }
    fill(list, ...(all.length ? all.map((held) => h('li', { 'data-message-id': held.message.id },
      h('span', { class: 'badge' }, titleOf(held.message.channelId)), ' ',
      h('strong', {}, held.message.userDisplayName), ': ', held.message.text, ' ',
      h('span', { class: 'muted' }, `(${held.reason})`), ' ',
      actionButton('Approve', () => decide(held, 'approve'), { 'data-action': 'approve-held', class: 'small' }),
      actionButton('Reject', () => decide(held, 'reject'), { 'data-action': 'reject-held', class: 'small secondary' })))
      : [h('li', { class: 'muted' }, 'Nothing is waiting for review.')]));
  };
  refresh();
  heldTimer = setInterval(refresh, 3000);
  return h('div', {}, h('h3', {}, 'Held for review'), list);
}

/** A channel's automod rules (they live in its chat settings). */
function automodForm(channels) {
  if (!channels.length) return null;
  const form = h('form', { id: 'automod-form', 'aria-labelledby': 'automod-title' },
    h('h3', { id: 'automod-title' }, 'Automod'),
    h('div', { class: 'grid-2' },
      selectField('Channel', { name: 'channelId' }, channels.map((c) => [c.id, c.title])),
      h('label', {}, h('input', { type: 'checkbox', name: 'blockLinks' }), ' Block links'),
      field('Allowed link domains', { name: 'allowedLinkDomains', placeholder: 'example.com, clips.example.org' }),
      field('Same message again within (s, 0 = off)', { name: 'repeatWindowSecs', type: 'number', min: 0, max: 3600 }),
      field('Most capitals (%, 0 = off)', { name: 'capsMaxPercent', type: 'number', min: 0, max: 100 }),
      field('Most emotes per message (0 = no limit)', { name: 'maxEmotes', type: 'number', min: 0, max: 100 }),
      field('Hold messages of accounts younger than (minutes, 0 = off)', { name: 'newAccountHoldMinutes', type: 'number', min: 0, max: 10080 })),
    h('button', { type: 'submit' }, 'Save automod'));
  const load = async () => {
    const id = form.querySelector('[name=channelId]').value;
    try {
      const s = await get(`/api/channels/${enc(id)}/chat/settings`);
      form.querySelector('[name=blockLinks]').checked = s.blockLinks;
      form.querySelector('[name=allowedLinkDomains]').value = s.allowedLinkDomains.join(', ');
      for (const name of ['repeatWindowSecs', 'capsMaxPercent', 'maxEmotes', 'newAccountHoldMinutes']) {
        form.querySelector(`[name=${name}]`).value = s[name];
      }
      form.dataset.loadedFor = id;
    } catch (err) { toast(err.message, true); }
  };
  form.querySelector('[name=channelId]').addEventListener('change', load);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const number = (name) => Number(data.get(name) || 0);
    const body = {
      blockLinks: data.get('blockLinks') === 'on',
      allowedLinkDomains: String(data.get('allowedLinkDomains') || '').split(/[\s,]+/).filter(Boolean),
      repeatWindowSecs: number('repeatWindowSecs'),
      capsMaxPercent: number('capsMaxPercent'),
      maxEmotes: number('maxEmotes'),
      newAccountHoldMinutes: number('newAccountHoldMinutes'),
    };
    try {
      await api('PUT', `/api/channels/${enc(data.get('channelId'))}/chat/settings`, body);
      toast('Automod saved');
    } catch (err) { toast(err.message, true); }
  });
  load();
  return form;
}

// ----- users -----

function userEditForm(user, row) {
  const form = h('form', { class: 'card', 'aria-label': `Edit ${user.displayName}` },
    h('div', { class: 'grid-2' },
      field('Display name', { name: 'displayName', value: user.displayName, required: true, maxlength: 64 }),
      field('Email', { name: 'email', type: 'email', value: user.email, required: true })),
    ctx.who.admin ? h('fieldset', {}, h('legend', {}, 'Roles'), h('div', { class: 'checks' },
      ROLES.map((r) => h('label', {}, h('input', { type: 'checkbox', name: 'roles', value: r, checked: user.roles.includes(r) }), r)))) : null,
    h('div', { class: 'row' }, h('button', { type: 'submit' }, 'Save'),
      h('button', { type: 'button', class: 'secondary', onclick: () => form.closest('.edit-row').remove() }, 'Cancel')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const body = { displayName: data.get('displayName'), email: data.get('email') };
    if (ctx.who.admin) body.roles = data.getAll('roles');
    try {
      await api('PATCH', `/api/users/${enc(user.id)}`, body);
      toast('User saved');
      await whoami(true).then((w) => { ctx.who = w; });
      await loadUsersAndChannels();
      renderUsers(usersSlot);
    } catch (err) { toast(err.message, true); }
  });
  const editRow = h('tr', { class: 'edit-row' }, h('td', { colspan: 5 }, form));
  row.after(editRow);
  form.querySelector('input').focus();
}

let usersSlot = null;
function renderUsers(slot) {
  usersSlot = slot;
  let create = null;
  if (ctx.who.admin) {
    create = h('form', { id: 'create-user', 'aria-labelledby': 'create-user-title' },
      h('h3', { id: 'create-user-title' }, 'Create a user'),
      h('div', { class: 'grid-2' },
        field('Display name', { name: 'displayName', required: true, maxlength: 64 }),
        field('Email', { name: 'email', type: 'email', required: true }),
        field('Password', { name: 'password', type: 'password', autocomplete: 'new-password' }, 'Optional; at least 8 characters.')),
      h('fieldset', {}, h('legend', {}, 'Roles'), h('div', { class: 'checks' },
        ROLES.map((r) => h('label', {}, h('input', { type: 'checkbox', name: 'roles', value: r, checked: r === 'creator' }), r)))),
      h('button', { type: 'submit' }, 'Create user'));
    create.addEventListener('submit', async (e) => {
      e.preventDefault();
      const data = new FormData(create);
      const body = { displayName: data.get('displayName'), email: data.get('email'), roles: data.getAll('roles') };
      if (data.get('password')) body.password = data.get('password');
      try {
        await api('POST', '/api/users', body);
        toast('User created');
        create.reset();
        await loadUsersAndChannels();
        renderUsers(slot);
      } catch (err) { toast(err.message, true); }
    });
  }
  const rows = ctx.users.map((u) => {
    const row = h('tr', { 'data-user-id': u.id },
      h('td', {}, u.displayName), h('td', {}, u.email), h('td', { 'data-field': 'roles' }, u.roles.join(', ')), h('td', {}, formatTime(u.createdAt)));
    row.append(h('td', {}, h('div', { class: 'row' },
      h('button', { type: 'button', class: 'small secondary', 'aria-label': `Edit ${u.displayName}`, onclick: () => userEditForm(u, row) }, 'Edit'),
      confirmButton('Retire', 'Confirm retire', async () => {
        await api('DELETE', `/api/users/${enc(u.id)}`);
        toast(`${u.displayName} retired`);
        if (ctx.who.user && ctx.who.user.id === u.id) { location.href = '/signup'; return; }
        await loadUsersAndChannels();
        renderUsers(slot);
      }, { 'aria-label': `Retire ${u.displayName}` }))));
    return row;
  });
  fill(slot, create,
    h('div', { class: 'table-wrap' }, h('table', { id: 'users-table' },
      h('caption', { class: 'visually-hidden' }, 'Users'),
      h('thead', {}, h('tr', {}, ['Name', 'Email', 'Roles', 'Created', 'Actions'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, rows))));
}

// ----- reports and appeals -----

/** Reports the caller may see (filed, or about channels they moderate) and appeals to decide. */
async function renderReports(slot) {
  const [{ reports }, { appeals }] = await Promise.all([get('/api/reports'), get('/api/appeals')]);
  const me = ctx.who.user && ctx.who.user.id;
  const mayDecide = (channelId) => ctx.who.admin || ctx.channels.some((c) => c.id === channelId);
  const refresh = () => renderReports(slot).catch((e) => fill(slot, errorLine(e)));
  const resolve = (report) => {
    const form = h('form', { class: 'row', 'aria-label': `Decide report ${report.id}` },
      selectField('Action', { name: 'action' }, [['dismiss', 'Dismiss'], ...(report.targetType === 'message' ? [['delete', 'Delete the message']] : []),
        ...(report.channelId ? [['timeout', 'Time out 10 minutes'], ['ban', 'Ban from the chat']] : [])]),
      field('Note', { name: 'note', maxlength: 2000 }),
      h('button', { type: 'submit', class: 'small' }, 'Decide'));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const data = new FormData(form);
      const body = { action: data.get('action'), note: data.get('note') || undefined };
      if (body.action === 'timeout') body.durationSeconds = 600;
      try { await api('POST', `/api/reports/${enc(report.id)}/resolve`, body); toast('Report decided'); refresh(); } catch (err) { toast(err.message, true); }
    });
    return form;
  };
  const actionText = (a) => (typeof a === 'string' ? a : a.timeout ? `timeout ${a.timeout.durationSeconds} s` : JSON.stringify(a));
  const reportRows = reports.map((r) => h('tr', { 'data-report-id': r.id },
    h('td', {}, r.targetType), h('td', {}, r.excerpt || r.targetId), h('td', {}, r.reason + (r.note ? ` (${r.note})` : '')),
    h('td', {}, formatTime(r.createdAt)),
    h('td', {}, r.resolution
      ? `${actionText(r.resolution.action)} by ${userName(r.resolution.by)}${r.resolution.note ? `: ${r.resolution.note}` : ''}`
      : (r.reporterId !== me && (mayDecide(r.channelId) || ctx.who.admin) ? resolve(r) : 'open'))));
  const decide = (appeal) => h('div', { class: 'row' },
    actionButton('Lift the ban', async () => { await api('POST', `/api/appeals/${enc(appeal.id)}/decide`, { lift: true }); toast('Ban lifted'); refresh(); }, { class: 'small', 'data-action': 'lift' }),
    actionButton('Uphold', async () => { await api('POST', `/api/appeals/${enc(appeal.id)}/decide`, { lift: false }); toast('Ban upheld'); refresh(); }, { class: 'small secondary', 'data-action': 'uphold' }));
  const appealRows = appeals.map((a) => h('tr', { 'data-appeal-id': a.id },
    h('td', {}, userName(a.userId)), h('td', {}, a.text), h('td', {}, `banned by ${userName(a.banBy)}`),
    h('td', {}, a.decision
      ? `${a.decision.lift ? 'lifted' : 'upheld'} by ${userName(a.decision.by)}`
      // Someone other than the banning moderator decides, never the appellant.
      : (a.userId !== me && a.banBy !== me && mayDecide(a.channelId) ? decide(a) : 'waiting'))));
  const table = (id, caption, head, rows, empty) => (rows.length
    ? h('div', { class: 'table-wrap' }, h('table', { id },
      h('caption', { class: 'visually-hidden' }, caption),
      h('thead', {}, h('tr', {}, head.map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, rows)))
    : h('p', { class: 'muted' }, empty));
  fill(slot,
    h('h3', {}, 'Reports'),
    table('reports-table', 'Reports', ['About', 'What', 'Reason', 'Filed', 'Decision'], reportRows, 'No reports.'),
    h('h3', {}, 'Appeals'),
    table('appeals-table', 'Appeals', ['Who', 'Appeal', 'Ban', 'Decision'], appealRows, 'No appeals.'));
}

// ----- stream health -----

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  el.append(...children);
  return el;
}

/** A line chart of `points` ([t ms, value]) drawn by the page: no chart library. */
function lineChart(id, title, unit, points) {
  const [w, hgt, pad] = [560, 140, 30];
  const values = points.map((p) => p[1]);
  const max = Math.max(1, ...values);
  const t0 = points.length ? points[0][0] : 0;
  const span = Math.max(1, (points.length ? points[points.length - 1][0] : 1) - t0);
  const xy = points.map(([t, v]) => `${(pad + ((t - t0) / span) * (w - 2 * pad)).toFixed(1)},${(hgt - pad - (v / max) * (hgt - 2 * pad)).toFixed(1)}`);
  const last = values.length ? values[values.length - 1] : null;
  const label = `${title}: ${points.length} samples, latest ${last === null ? 'none' : `${Math.round(last)} ${unit}`}, peak ${Math.round(max)} ${unit}`;
  return h('figure', { class: 'chart' },
    svg('svg', { id, viewBox: `0 0 ${w} ${hgt}`, role: 'img', 'aria-label': label, width: '100%' },
      svg('line', { x1: pad, y1: hgt - pad, x2: w - pad, y2: hgt - pad, stroke: 'currentColor', 'stroke-opacity': '0.4' }),
      svg('text', { x: 2, y: pad - 8, 'font-size': 11, fill: 'currentColor' }, `${Math.round(max)} ${unit}`),
      svg('text', { x: 2, y: hgt - pad + 14, 'font-size': 11, fill: 'currentColor' }, `0`),
      points.length > 1 ? svg('polyline', { points: xy.join(' '), fill: 'none', stroke: 'currentColor', 'stroke-width': 2 }) : ''),
    h('figcaption', {}, label));
}

/** `83` → `1 min 23 s`. */
function watchTime(seconds) {
  const s = Math.round(seconds);
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

let healthTimer = null;
/** Bitrate, frame rate and viewers of a channel's current or past broadcast, with warnings. */
function renderHealth(slot) {
  clearInterval(healthTimer);
  if (!ctx.channels.length) { fill(slot, h('p', { class: 'muted' }, 'No channels yet.')); return; }
  const channelSelect = selectField('Channel', { name: 'channelId', id: 'health-channel' }, ctx.channels.map((c) => [c.id, c.title]));
  const sessionSlot = h('div', {});
  const view = h('div', { id: 'health-view', 'aria-live': 'polite' });
  let session = '';
  const draw = async () => {
    const id = channelSelect.querySelector('select').value;
    try {
      const health = await get(`/api/channels/${enc(id)}/health${session ? `?sessionId=${enc(session)}` : ''}`);
      const pts = (key) => health.samples.map((s) => [s.at, s[key]]);
      fill(view,
        health.warnings.length
          ? h('ul', { class: 'warnings', id: 'health-warnings' }, health.warnings.map((w) => h('li', { class: 'error-text', 'data-code': w.code }, w.message)))
          : h('p', { class: 'muted' }, health.samples.length ? 'No warnings.' : 'No health samples for this broadcast yet.'),
        lineChart('health-chart-video', 'Video bitrate', 'kbit/s', pts('videoKbps')),
        lineChart('health-chart-fps', 'Frame rate', 'fps', pts('fps')),
        lineChart('health-chart-viewers', 'Viewers', 'viewers', health.viewers.map((p) => [p.at, p.viewers])),
        h('p', { id: 'health-audience' }, health.audience.viewersLeft
          ? `Average watch time ${watchTime(health.audience.averageWatchSeconds)} over ${health.audience.viewersLeft} viewers who left.`
          : 'No viewer has left this broadcast yet: watch times come as viewers leave.'),
        lineChart('health-chart-retention', 'Retention', '% of viewers still watching',
          health.audience.retention.map((p) => [p.atSeconds * 1000, p.share * 100])));
    } catch (err) { fill(view, errorLine(err)); }
  };
  const loadSessions = async () => {
    const id = channelSelect.querySelector('select').value;
    session = '';
    try {
      const sessions = await get(`/api/channels/${enc(id)}/sessions`);
      const select = selectField('Broadcast', { name: 'sessionId', id: 'health-session' },
        [['', 'Current or latest'], ...sessions.map((x) => [x.id, `${formatTime(x.startedAt)}${x.endedAt ? '' : ' (live)'}`])]);
      select.querySelector('select').addEventListener('change', (e) => { session = e.target.value; draw(); });
      fill(sessionSlot, select);
    } catch { fill(sessionSlot); }
    draw();
  };
  channelSelect.querySelector('select').addEventListener('change', loadSessions);
  fill(slot, h('div', { class: 'grid-2' }, channelSelect, sessionSlot), view);
  loadSessions();
  healthTimer = setInterval(() => { if (!document.hidden) draw(); }, 5000);
}

// ----- copyright notices -----

/** Notices against the caller's channels (how owners are told), with the counter-notice form;
 *  admins file notices, decide them and export the trail. */
async function renderNotices(slot) {
  const { takedowns } = await get('/api/takedowns');
  const refresh = () => renderNotices(slot).catch((e) => fill(slot, errorLine(e)));
  const titleOf = (id) => (ctx.channels.find((c) => c.id === id) || {}).title || id;
  const me = ctx.who.user && ctx.who.user.id;
  const rows = takedowns.map((t) => {
    let act = t.status;
    if (t.status === 'hidden' && t.ownerId === me) {
      const form = h('form', { class: 'row', 'aria-label': `Counter-notice for ${titleOf(t.channelId)}` },
        field('Counter-notice', { name: 'text', required: true, maxlength: 2000 }), h('button', { type: 'submit', class: 'small' }, 'Send'));
      form.addEventListener('submit', async (e) => {
        e.preventDefault();
        try { await api('POST', `/api/takedowns/${enc(t.id)}/counter`, { text: new FormData(form).get('text') }); toast('Counter-notice sent'); refresh(); } catch (err) { toast(err.message, true); }
      });
      act = form;
    } else if (ctx.who.admin && (t.status === 'hidden' || t.status === 'countered')) {
      act = h('div', { class: 'row' }, `${t.status}: `,
        actionButton('Restore', async () => { await api('POST', `/api/takedowns/${enc(t.id)}/decide`, { restore: true }); refresh(); }, { class: 'small' }),
        actionButton('Remove', async () => { await api('POST', `/api/takedowns/${enc(t.id)}/decide`, { restore: false }); refresh(); }, { class: 'small secondary' }));
    }
    return h('tr', { 'data-takedown-id': t.id },
      h('td', {}, titleOf(t.channelId)), h('td', {}, `${t.claimantName} <${t.claimantEmail}>`), h('td', {}, t.work),
      h('td', {}, t.history.map((e) => `${e.what} ${formatTime(e.at)}${e.text ? `: ${e.text}` : ''}`).join('; ')), h('td', {}, act));
  });
  let file = null;
  if (ctx.who.admin && ctx.channels.length) {
    file = h('form', { id: 'takedown-form', 'aria-labelledby': 'takedown-title' },
      h('h3', { id: 'takedown-title' }, 'Record a notice'),
      h('div', { class: 'grid-2' },
        selectField('Channel', { name: 'channelId' }, ctx.channels.map((c) => [c.id, c.title])),
        field('Claimant', { name: 'claimantName', required: true }), field('Claimant email', { name: 'claimantEmail', type: 'email', required: true }),
        field('Work', { name: 'work', required: true }), field('Where it was seen', { name: 'infringingUrl', required: true }),
        field('Statement', { name: 'statement', required: true })),
      h('button', { type: 'submit' }, 'Hide the channel'));
    file.addEventListener('submit', async (e) => {
      e.preventDefault();
      try { await api('POST', '/api/takedowns', Object.fromEntries(new FormData(file))); toast('Notice recorded; the channel is hidden'); refresh(); } catch (err) { toast(err.message, true); }
    });
  }
  fill(slot,
    takedowns.length ? h('div', { class: 'table-wrap' }, h('table', { id: 'takedowns-table' },
      h('caption', { class: 'visually-hidden' }, 'Copyright notices'),
      h('thead', {}, h('tr', {}, ['Channel', 'Claimant', 'Work', 'History', 'Status'].map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, rows))) : h('p', { class: 'muted' }, 'No copyright notices.'),
    file,
    ctx.who.admin ? h('p', {}, h('a', { href: '/api/takedowns/export', download: 'bitriver-takedowns.json' }, 'Export the notices and their history')) : null);
}

// ----- your data -----

function renderMyData(slot) {
  if (!ctx.who.user) { fill(slot, h('p', { class: 'muted' }, 'Sign in as a user to export or delete your data.')); return; }
  fill(slot,
    h('p', {}, 'Download everything stored about you, or delete your account. Your chat lines stay as "Deleted user" unless you remove them too.'),
    h('div', { class: 'row' },
      actionButton('Download my data', async () => {
        const res = await fetch('/api/me/export', { credentials: 'same-origin' });
        if (!res.ok) throw new Error(`export failed (${res.status})`);
        const link = h('a', { href: URL.createObjectURL(await res.blob()), download: 'bitriver-my-data.json' });
        document.body.append(link);
        link.click();
        link.remove();
        toast('Your data is downloaded');
      }, { id: 'my-data-button' }),
      h('label', {}, h('input', { type: 'checkbox', id: 'delete-chat-too' }), ' Also delete my chat messages'),
      confirmButton('Delete my account', 'Confirm: delete my account', async () => {
        const chat = document.getElementById('delete-chat-too').checked ? 'delete' : 'keep';
        await api('DELETE', `/api/me?chat=${chat}`);
        location.href = '/signup';
      }, { id: 'delete-account' })));
}

// ----- export -----

function renderExport(slot) {
  fill(slot,
    h('p', {}, 'Download the whole catalog (users without password hashes, channels, sessions, chat, profiles, follows, nodes) as JSON.'),
    actionButton('Export JSON snapshot', async () => {
      const res = await fetch('/api/export', { credentials: 'same-origin' });
      if (!res.ok) throw new Error(res.status === 403 ? 'Admins only.' : `export failed (${res.status})`);
      const blob = await res.blob();
      const link = h('a', { href: URL.createObjectURL(blob), download: `bitriver-export-${new Date().toISOString().slice(0, 19).replace(/:/g, '')}.json` });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 10000);
      toast('Snapshot downloaded');
    }, { id: 'export-button' }));
}

// ----- page -----

export async function render(main) {
  ctx.who = await whoami();
  const { who } = ctx;
  if (!who.user && !who.admin) {
    fill(main, h('h1', {}, 'Control Center'),
      h('p', {}, 'Sign in to manage your channels, stream keys, chat and profile.'),
      h('p', {}, h('a', { class: 'button', href: '/signup' }, 'Sign up or sign in'), ' ', h('a', { href: '/channels' }, 'or browse live channels')));
    return;
  }
  await loadUsersAndChannels();
  const slots = {
    overview: h('div', {}, h('p', { class: 'muted' }, 'Loading…')),
    channels: h('div', {}),
    sessions: h('div', {}, h('p', { class: 'muted' }, 'Loading…')),
    recordings: h('div', {}),
    moderation: h('div', {}),
    reports: h('div', {}, h('p', { class: 'muted' }, 'Loading…')),
    notices: h('div', {}, h('p', { class: 'muted' }, 'Loading…')),
    health: h('div', {}),
    profiles: h('div', {}),
    users: h('div', {}),
    export: h('div', {}),
    mydata: h('div', {}),
  };
  const sections = [
    ['overview', 'Overview'], ['channels', 'Channels'], ['sessions', 'Live sessions'], ['recordings', 'Recordings'], ['health', 'Stream health'], ['moderation', 'Chat moderation'],
    ['reports', 'Reports and appeals'], ['notices', 'Copyright notices'], ['profiles', 'Streamer profile'], ['users', who.admin ? 'Users' : 'Your account'],
    ...(who.admin ? [['export', 'Export']] : []), ['mydata', 'Your data'],
  ];
  fill(main,
    h('h1', {}, 'Control Center'),
    h('nav', { 'aria-label': 'Control Center sections' }, h('ul', { class: 'section-nav' },
      sections.map(([id, title]) => h('li', {}, h('a', { href: `#${id}` }, title))))),
    sections.map(([id, title]) => section(id, title, slots[id])));
  // The overview first: it finds the RTMP port that the stream-key boxes show.
  await renderOverview(slots.overview).catch((e) => fill(slots.overview, errorLine(e)));
  renderChannels(slots.channels);
  renderSessions(slots.sessions).catch((e) => fill(slots.sessions, errorLine(e)));
  renderRecordings(slots.recordings);
  renderModeration(slots.moderation);
  renderHealth(slots.health);
  renderReports(slots.reports).catch((e) => fill(slots.reports, errorLine(e)));
  renderNotices(slots.notices).catch((e) => fill(slots.notices, errorLine(e)));
  renderMyData(slots.mydata);
  profilesSlot = slots.profiles;
  profileForm(slots.profiles, ctx).catch((e) => fill(slots.profiles, errorLine(e)));
  renderUsers(slots.users);
  if (who.admin) renderExport(slots.export);
  setInterval(() => {
    if (document.hidden) return;
    renderOverview(slots.overview).catch(() => {});
    renderSessions(slots.sessions).catch(() => {});
  }, 10000);
}
