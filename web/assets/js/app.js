// Entry point: the header (who is signed in, sign out, theme toggle) and the view for the path.
import { api, whoami } from './api.js';
import { fill, h, toast } from './dom.js';

const main = document.getElementById('main');

function setupTheme() {
  const button = document.getElementById('theme-toggle');
  const show = () => {
    const dark = document.documentElement.dataset.theme !== 'light';
    button.textContent = dark ? 'Light theme' : 'Dark theme';
    button.setAttribute('aria-pressed', String(!dark));
  };
  button.addEventListener('click', () => {
    const next = document.documentElement.dataset.theme === 'light' ? 'dark' : 'light';
    document.documentElement.dataset.theme = next;
    try { localStorage.setItem('bitriver-theme', next); } catch { /* storage disabled */ }
    show();
  });
  show();
}

async function setupHeader() {
  const who = await whoami();
  const signin = document.getElementById('signin-link');
  const signout = document.getElementById('signout');
  const label = document.getElementById('whoami');
  if (who.user) {
    label.textContent = `Signed in as ${who.user.displayName}${who.admin ? ' (admin)' : ''}`;
    signin.hidden = true;
    signout.hidden = false;
    signout.addEventListener('click', async () => {
      try {
        await api('DELETE', '/api/auth/session');
        location.href = '/channels';
      } catch (e) {
        toast(e.message, true);
      }
    });
  } else if (who.admin) {
    label.textContent = 'Development admin (loopback)';
  }
  return who;
}

function markNav(name) {
  for (const link of document.querySelectorAll('[data-nav]')) {
    if (link.dataset.nav === name) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
}

async function route() {
  const path = location.pathname;
  try {
    await setupHeader();
    if (path === '/' || path === '') {
      markNav('control');
      document.title = 'Control Center · BitRiver Live';
      (await import('./control.js')).render(main);
    } else if (path === '/channels') {
      markNav('channels');
      document.title = 'Channels · BitRiver Live';
      (await import('./directory.js')).render(main);
    } else if (path.startsWith('/c/')) {
      markNav('channels');
      (await import('./channel.js')).render(main, decodeURIComponent(path.slice(3)));
    } else if (['/terms', '/privacy', '/dmca'].includes(path)) {
      (await import('./legal.js')).render(main, path.slice(1));
    } else if (path === '/signup') {
      document.title = 'Sign up or sign in · BitRiver Live';
      (await import('./signup.js')).render(main);
    } else {
      fill(main, h('h1', {}, 'Not found'), h('p', {}, h('a', { href: '/channels' }, 'Browse channels')));
    }
  } catch (e) {
    fill(main, h('h1', {}, 'Something went wrong'), h('p', { class: 'error-text' }, e.message));
  }
}

setupTheme();
route();
