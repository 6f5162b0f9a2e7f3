// `/terms`, `/privacy`, `/dmca`: the operator's text (GET /api/pages/{name}); admins edit it here.
import { api, get, whoami } from './api.js';
import { fill, h, toast } from './dom.js';

const TITLES = { terms: 'Terms of Service', privacy: 'Privacy Policy', dmca: 'Copyright (DMCA)' };

export async function render(main, name) {
  document.title = `${TITLES[name]} · BitRiver Live`;
  const [page, who] = await Promise.all([get(`/api/pages/${name}`), whoami()]);
  // Plain text: blank lines separate paragraphs (no markup from the API reaches the page).
  const paragraphs = page.text
    ? page.text.split(/\n\s*\n/).map((p) => h('p', {}, p.trim()))
    : [h('p', { class: 'muted' }, 'The operator has not published this page yet.')];
  let editor = null;
  if (who.admin) {
    const area = h('textarea', { id: 'legal-text', name: 'text', rows: 12, maxlength: 50000 }, page.text);
    editor = h('form', { id: 'legal-form', 'aria-label': `Edit ${TITLES[name]}` },
      h('label', { for: 'legal-text' }, 'Text (blank lines separate paragraphs)'), area,
      h('button', { type: 'submit' }, 'Publish'));
    editor.addEventListener('submit', async (e) => {
      e.preventDefault();
      try {
        await api('PUT', `/api/pages/${name}`, { text: area.value });
        toast('Published');
        render(main, name);
      } catch (err) { toast(err.message, true); }
    });
  }
  fill(main, h('h1', {}, TITLES[name]), h('article', { id: 'legal-page' }, ...paragraphs), editor);
}
