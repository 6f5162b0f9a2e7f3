// What whip.mjs and whep.mjs share: headless Chromium (with a fake camera and microphone) on a
// blank page served from our own 127.0.0.1 server, so the WHIP/WHEP endpoint is another origin
// (CORS counts) and the page is a secure context (getUserMedia, WebRTC). The page can import
// /clock.mjs and /rtc-page.mjs.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
/// Modules of this folder the page may import.
const PAGE_MODULES = ['/clock.mjs', '/rtc-page.mjs'];

/// Prints `summary` as JSON on stdout and exits (0 when ok, else 1; 3 for a harness problem).
export function finish(summary, code = summary.ok ? 0 : 1) {
  process.stdout.write(JSON.stringify(summary) + '\n');
  process.exit(code);
}

/// Starts the page server and the browser; returns {page, close}. Throws (harness problem) when
/// playwright-core or Chromium is missing.
export async function openPage(log) {
  const { chromium } = await import('playwright-core');
  const server = http.createServer((req, res) => {
    if (PAGE_MODULES.includes(req.url)) {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      res.end(fs.readFileSync(path.join(here, req.url.slice(1))));
      return;
    }
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<!doctype html><meta charset="utf-8"><title>rtc</title><body></body>');
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--autoplay-policy=no-user-gesture-required',
      '--use-fake-device-for-media-stream',
      '--use-fake-ui-for-media-stream',
    ],
  });
  const page = await browser.newPage();
  page.on('console', (m) => log(`page: ${m.text()}`));
  await page.goto(`http://127.0.0.1:${server.address().port}/`);
  return {
    page,
    close: async () => {
      await browser.close().catch(() => {});
      server.close();
    },
  };
}

/// Opens the page, runs `drive(page)` (what the page measured is merged into `summary`), judges
/// and prints the summary, and exits. With `expect` set, ok means the POST answered exactly that
/// status; otherwise a 201 and no complaint from `problem(summary)` (a reason, or null).
export async function runSession({ summary, started, log, expect, drive, problem }) {
  let session;
  try {
    session = await openPage(log);
  } catch (error) {
    summary.reason = `harness: ${error.message}`;
    finish(summary, 3);
  }
  try {
    Object.assign(summary, await drive(session.page));
    if (expect !== null) {
      summary.ok = summary.status === expect;
      summary.reason = summary.ok ? null : `expected status ${expect}, got ${summary.status}`;
    } else if (summary.status !== 201) {
      summary.reason = `POST answered ${summary.status}: ${summary.body}`;
    } else {
      summary.reason = problem(summary);
      summary.ok = summary.reason === null;
    }
  } catch (error) {
    summary.reason = `page: ${error.message}`;
  }
  summary.elapsedMs = Date.now() - started;
  await session.close();
  finish(summary);
}
