// Shared pieces of the web UI checks (ui.mjs): headless Debian Chromium through playwright-core,
// contexts that record every console error and page error, axe-core, small API helpers.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

/**
 * A name the browser resolves to loopback. In development mode a request from loopback *to* a
 * loopback host acts as an admin; pages opened at this name are an anonymous visitor's.
 */
export const VISITOR_HOST = 'viewer.test';

export const ARGS = [
  `--host-resolver-rules=MAP ${VISITOR_HOST} 127.0.0.1`,
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--autoplay-policy=no-user-gesture-required',
];

/** Everything the pages said on the console at error level, and uncaught exceptions. */
export const problems = [];

export async function launch() {
  const { chromium } = await import('playwright-core');
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS, timeout: 30000 });
}

/** A fresh browser profile (own cookies) whose pages report console errors into `problems`.
 *  The clipboard is granted to `base` when it is loopback (a secure context; the visitor's name
 *  is not one). */
export async function newContext(browser, base, name, options = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, ...options });
  if (new URL(base).hostname !== VISITOR_HOST) {
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
  }
  context.on('page', (page) => watch(page, name));
  return context;
}

function watch(page, name) {
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push({ context: name, url: page.url(), kind: 'console.error', text: msg.text() });
  });
  page.on('pageerror', (err) => problems.push({ context: name, url: page.url(), kind: 'pageerror', text: String(err) }));
}

export function log(...args) {
  console.error('[ui]', ...args);
}

/** JSON over HTTP from this process (no cookies: in development mode loopback acts as admin). */
export async function api(base, method, p, body) {
  const res = await fetch(base + p, {
    method,
    headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  const json = text ? JSON.parse(text) : null;
  if (!res.ok) throw new Error(`${method} ${p}: ${res.status} ${text}`);
  return json;
}

/** Runs axe-core on the page; returns the serious and critical violations. */
export async function axeViolations(page) {
  const source = fs.readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
  await page.evaluate(source);
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  return result.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 5).map((n) => n.target.join(' ')) }));
}

export function artifactsDir() {
  const dir = process.env.UI_ARTIFACTS || path.join(os.tmpdir(), 'bitriver-ui-artifacts');
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

/** Screenshot at `width` px wide (full page), saved under the artifacts dir. */
export async function screenshot(page, name, width) {
  await page.setViewportSize({ width, height: width < 600 ? 844 : 900 });
  await page.waitForTimeout(300);
  const file = path.join(artifactsDir(), `${name}-${width}.png`);
  await page.screenshot({ path: file, fullPage: true });
  // Nothing may stick out sideways at this width (responsive down to 360 px).
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  return { file, overflow };
}

/** `base` (http://127.0.0.1:PORT) as an anonymous visitor reaches it: the same node, by name. */
export function visitorBase(base) {
  const url = new URL(base);
  url.hostname = VISITOR_HOST;
  return url.origin;
}

export function unique(prefix) {
  return `${prefix}${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
}
