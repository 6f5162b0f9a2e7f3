// The streamer profile as a guided form: four numbered steps (about, featured channel, top eight
// friends, donation addresses), each with a hint, then save. Admins pick whose profile to edit.
import { api, get } from './api.js';
import { field, fill, h, selectField, toast } from './dom.js';

const enc = encodeURIComponent;
const MAX_FRIENDS = 8;

/** Users a profile may name as friends: every user for admins, else the directory's streamers. */
async function friendCandidates(ctx, profile) {
  const byId = new Map();
  if (ctx.who.admin) {
    ctx.users.forEach((u) => byId.set(u.id, u.displayName));
  } else {
    const page = await get('/api/directory?limit=100').catch(() => ({ items: [] }));
    page.items.forEach((i) => byId.set(i.ownerId, i.ownerDisplayName || i.ownerId));
  }
  profile.topFriends.forEach((f) => byId.set(f.id, f.displayName));
  byId.delete(profile.userId);
  return [...byId.entries()].sort((a, b) => a[1].localeCompare(b[1]));
}

function donationRow(d = {}) {
  const row = h('div', { class: 'grid-2 donation-row' },
    field('Currency', { name: 'currency', value: d.currency || '', maxlength: 10, placeholder: 'BTC' }),
    field('Address', { name: 'address', value: d.address || '' }),
    field('Note', { name: 'note', value: d.note || '', maxlength: 200 }),
    h('div', { class: 'field' }, h('button', { type: 'button', class: 'small secondary', onclick: () => row.remove() }, 'Remove address')));
  return row;
}

async function renderFor(slot, ctx, userId) {
  const profile = await get(`/api/profiles/${enc(userId)}`);
  const candidates = await friendCandidates(ctx, profile);
  const ownChannels = ctx.channels.filter((c) => c.ownerId === userId);
  const channelOptions = [['', 'None'], ...(ownChannels.length ? ownChannels : profile.channels).map((c) => [c.id, c.title])];
  const friendSelects = Array.from({ length: MAX_FRIENDS }, (_, i) => selectField(`Friend ${i + 1}`, { name: 'topFriends' },
    [['', '—'], ...candidates], profile.topFriends[i] ? profile.topFriends[i].id : ''));
  const donations = h('div', { id: 'donation-rows' }, profile.donationAddresses.map(donationRow));
  const error = h('p', { class: 'error-text', role: 'alert' });
  const form = h('form', { id: 'profile-form', 'aria-label': `Profile of ${profile.displayName}` },
    h('fieldset', {}, h('legend', {}, 'Step 1 · About'),
      field('Bio', { tag: 'textarea', name: 'bio', value: profile.bio, maxlength: 2000 }, 'A few lines viewers see beside your stream.'),
      h('div', { class: 'grid-2' },
        field('Avatar URL', { name: 'avatarUrl', type: 'url', value: profile.avatarUrl || '', placeholder: 'https://…' }),
        field('Banner URL', { name: 'bannerUrl', type: 'url', value: profile.bannerUrl || '', placeholder: 'https://…' }))),
    h('fieldset', {}, h('legend', {}, 'Step 2 · Featured channel'),
      selectField('Featured channel', { name: 'featuredChannelId' }, channelOptions, profile.featuredChannelId || '')),
    h('fieldset', {}, h('legend', {}, 'Step 3 · Top eight friends'),
      h('p', { class: 'hint' }, candidates.length ? 'Pick up to eight fellow streamers, in order.' : 'No other streamers yet.'),
      h('div', { class: 'grid-2' }, friendSelects)),
    h('fieldset', {}, h('legend', {}, 'Step 4 · Donation addresses'),
      h('p', { class: 'hint' }, 'Viewers send crypto straight to these addresses; the platform never holds funds.'),
      donations,
      h('button', { type: 'button', class: 'small secondary', onclick: () => donations.append(donationRow()) }, 'Add an address')),
    error,
    h('div', { class: 'row' }, h('button', { type: 'submit' }, 'Save profile'),
      h('a', { href: profile.channels[0] ? `/c/${enc(profile.channels[0].id)}` : '/channels' }, 'See it on the channel page')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.textContent = '';
    const data = new FormData(form);
    const body = {
      bio: data.get('bio'),
      avatarUrl: data.get('avatarUrl') || null,
      bannerUrl: data.get('bannerUrl') || null,
      featuredChannelId: data.get('featuredChannelId') || null,
      topFriends: [...new Set(data.getAll('topFriends').filter(Boolean))],
      donationAddresses: [...donations.querySelectorAll('.donation-row')].map((row) => ({
        currency: row.querySelector('[name=currency]').value.trim(),
        address: row.querySelector('[name=address]').value.trim(),
        note: row.querySelector('[name=note]').value.trim() || null,
      })).filter((d) => d.currency || d.address),
    };
    try {
      await api('PUT', `/api/profiles/${enc(userId)}`, body);
      toast('Profile saved');
    } catch (err) {
      error.textContent = err.field ? `${err.field}: ${err.message}` : err.message;
    }
  });
  return form;
}

export async function profileForm(slot, ctx) {
  const initial = ctx.who.user ? ctx.who.user.id : (ctx.users[0] && ctx.users[0].id);
  if (!initial) { fill(slot, h('p', { class: 'muted' }, 'No users yet.')); return; }
  const target = h('div', {});
  const show = async (userId) => {
    try { fill(target, await renderFor(slot, ctx, userId)); } catch (e) { fill(target, h('p', { class: 'error-text' }, e.message)); }
  };
  const chooser = ctx.who.admin
    ? selectField('Edit the profile of', { name: 'profileUser', id: 'profile-user',
      onchange: (e) => show(e.target.value) }, ctx.users.map((u) => [u.id, u.displayName]), initial)
    : null;
  fill(slot, chooser, target);
  await show(initial);
}
