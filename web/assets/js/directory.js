// `/channels`: the directory (live channels first), searchable, with live badges.
import { get } from './api.js';
import { fill, h, liveBadge } from './dom.js';

function card(item) {
  return h('li', { 'data-channel-id': item.id },
    h('div', { class: 'row' }, liveBadge(item.liveState), item.category ? h('span', { class: 'muted' }, item.category) : null),
    h('a', { class: 'title', href: `/c/${encodeURIComponent(item.id)}` }, item.title),
    h('div', { class: 'muted' }, `${item.ownerDisplayName || item.ownerId} · ${item.followers} follower${item.followers === 1 ? '' : 's'}`),
    item.tags.length ? h('ul', { class: 'tags', 'aria-label': 'Tags' }, item.tags.map((t) => h('li', {}, h('span', { class: 'tag' }, t)))) : null);
}

export function render(main) {
  const params = new URLSearchParams(location.search);
  const search = h('input', { type: 'search', id: 'directory-search', name: 'q', value: params.get('q') || '',
    placeholder: 'Title, tag, category or streamer', autocomplete: 'off' });
  const list = h('ul', { class: 'directory', id: 'directory-list', 'aria-live': 'polite' });
  const status = h('p', { class: 'status-line', role: 'status' });
  const more = h('button', { type: 'button', class: 'secondary', hidden: true }, 'Load more');
  let cursor = null;
  let generation = 0;

  async function load(reset) {
    const mine = ++generation;
    const query = new URLSearchParams({ limit: '24' });
    if (search.value.trim()) query.set('q', search.value.trim());
    if (!reset && cursor) query.set('cursor', cursor);
    try {
      const page = await get(`/api/directory?${query}`);
      if (mine !== generation) return;
      if (reset) list.replaceChildren();
      list.append(...page.items.map(card));
      cursor = page.nextCursor || null;
      more.hidden = !cursor;
      const count = list.children.length;
      status.textContent = count ? `${count} channel${count === 1 ? '' : 's'}` : 'No channels match.';
    } catch (e) {
      status.textContent = `Could not load the directory: ${e.message}`;
    }
  }

  let timer = null;
  search.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      const url = new URL(location.href);
      if (search.value.trim()) url.searchParams.set('q', search.value.trim()); else url.searchParams.delete('q');
      history.replaceState(null, '', url);
      load(true);
    }, 250);
  });
  more.addEventListener('click', () => load(false));

  const form = h('form', { role: 'search', onsubmit: (e) => { e.preventDefault(); load(true); } },
    h('label', { for: 'directory-search' }, 'Search channels'), h('div', { class: 'row' }, search, h('button', { type: 'submit' }, 'Search')));
  fill(main, h('h1', {}, 'Channels'), form, status, list, more);
  load(true);
  // Live badges follow the catalog without a reload.
  setInterval(() => { if (!document.hidden && !cursor) load(true); }, 15000);
}
