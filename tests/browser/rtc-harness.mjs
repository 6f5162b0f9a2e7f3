// What whip.mjs and whep.mjs share: headless Chromium (with a fake camera and microphone) on a
// blank page served from our own 127.0.0.1 server, so the WHIP/WHEP endpoint is another origin
// (CORS counts) and the page is a secure context (getUserMedia, WebRTC). The page can import
// /clock.mjs.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

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
    if (req.url === '/clock.mjs') {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      res.end(fs.readFileSync(path.join(here, 'clock.mjs')));
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
