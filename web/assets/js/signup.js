// `/signup`: register or sign in. The server answers with the HttpOnly session cookie; the
// token in the answer body is ignored on purpose.
import { api, whoami } from './api.js';
import { field, fill, h } from './dom.js';

// Where to go after signing in: `next` when it resolves to a page of this origin, else `/`.
// Resolved the way the browser will resolve it, so `//host`, `/\host` (browsers read `\` as
// `/`), tabs or newlines inside `//` and schemes all fall back to `/` instead of leaving the site.
export function safeNext(next, origin = location.origin) {
  if (typeof next !== 'string' || !next.startsWith('/')) return '/';
  let url;
  try {
    url = new URL(next, origin);
  } catch {
    return '/';
  }
  return url.origin === origin ? `${url.pathname}${url.search}${url.hash}` : '/';
}

function nextPage() {
  return safeNext(new URLSearchParams(location.search).get('next'));
}

function authForm({ title, id, fields, submit, action }) {
  const error = h('p', { class: 'error-text', role: 'alert', id: `${id}-error` });
  const form = h('form', { class: 'card', id, 'aria-labelledby': `${id}-title`, novalidate: true },
    h('h2', { id: `${id}-title` }, title), fields, error, h('button', { type: 'submit' }, submit));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.textContent = '';
    const data = Object.fromEntries(new FormData(form));
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    try {
      await action(data);
      await whoami(true);
      location.href = nextPage();
    } catch (e) {
      error.textContent = e.message;
      const bad = e.field && form.querySelector(`[name="${e.field}"]`);
      (bad || form.querySelector('input')).focus();
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

export async function render(main) {
  const who = await whoami();
  fill(main,
    h('h1', {}, 'Join BitRiver Live'),
    who.user ? h('p', {}, `You are signed in as ${who.user.displayName}. `, h('a', { href: '/' }, 'Open the Control Center')) : null,
    h('div', { class: 'auth-forms' },
      authForm({
        title: 'Create an account', id: 'signup-form', submit: 'Sign up',
        fields: [
          field('Display name', { name: 'displayName', autocomplete: 'nickname', required: true, maxlength: 64 }),
          field('Email', { name: 'email', type: 'email', autocomplete: 'email', required: true }),
          field('Password', { name: 'password', type: 'password', autocomplete: 'new-password', required: true, minlength: 8 },
            'At least 8 characters.'),
        ],
        action: (data) => api('POST', '/api/auth/signup', data),
      }),
      authForm({
        title: 'Sign in', id: 'login-form', submit: 'Sign in',
        fields: [
          field('Email', { name: 'email', type: 'email', autocomplete: 'username', required: true }),
          field('Password', { name: 'password', type: 'password', autocomplete: 'current-password', required: true }),
        ],
        action: (data) => api('POST', '/api/auth/login', data),
      })));
}
