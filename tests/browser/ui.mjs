// Web UI checks in headless Chromium against a running bitriver node in development mode
// (driven by node/tests/web_ui.rs, one scenario per test).
//
// usage: node tests/browser/ui.mjs SCENARIO BASE_URL
//   live   sign up, get the creator role from an admin in the Control Center, create a channel,
//          copy its stream key, publish with ffmpeg (RTMP_URL), watch the channel page play and
//          show the live badge; screenshots at 1280 and 390 px
//   chat   two signed-in viewers on a channel page; a message from one appears for the other;
//          the owner deletes it on the page, an admin deletes another in the Control Center;
//          both disappear everywhere; `next` of /signup cannot lead off the site
//   recordings  empty states; publish with ffmpeg for 8 s; the Control Center shows the draft,
//          previews it and publishes it; an anonymous visitor's channel page lists it and plays
//          it; a clip cut 1..4 s (Set start / Set end from the preview player; a bad range shows
//          the server's message) goes queued -> ready, is published, plays, and is deleted
//   a11y   axe-core on /, /channels, /c/{id}, /signup (both themes): no serious or critical
//          violations; keyboard focus is visible
// env: RTMP_URL=rtmp://127.0.0.1:PORT (live, recordings), FFMPEG=/usr/bin/ffmpeg, UI_ARTIFACTS=DIR,
//      UI_TIMEOUT_S=50, CHROMIUM=/usr/bin/chromium
// stdout: one JSON summary; exit 0 when the scenario passed and no page logged an error.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import { api, artifactsDir, axeViolations, launch, log, newContext, problems, screenshot, unique, visitorBase } from './ui-lib.mjs';

const [scenario, base] = process.argv.slice(2);
const TIMEOUT_S = Number(process.env.UI_TIMEOUT_S || 50);
const summary = { ok: false, scenario, base, reason: null, steps: [], problems, artifacts: null };
const step = (s) => { summary.steps.push(s); log(s); };

const hardStop = setTimeout(() => {
  summary.reason = `timed out after ${TIMEOUT_S}s`;
  finish(1);
}, TIMEOUT_S * 1000);

let browser = null;
let ffmpeg = null;
let finished = false;
async function finish(code) {
  if (finished) return;
  finished = true;
  clearTimeout(hardStop);
  if (ffmpeg) ffmpeg.kill('SIGKILL');
  if (browser) await browser.close().catch(() => {});
  process.stdout.write(`${JSON.stringify(summary, null, 1)}\n`);
  process.exit(code);
}

function expect(cond, message) {
  if (!cond) throw new Error(message);
}

/** Takes out of `problems` the console line that a deliberately refused request leaves
 *  (Chromium logs every HTTP error status); it must be there. */
function expectLogged(context, text) {
  const i = problems.findIndex((p) => p.context === context && p.text.includes(text));
  expect(i >= 0, `no console line with "${text}" in ${context}`);
  problems.splice(i, 1);
}

async function signUp(page, name, email, password) {
  await page.goto(`${base}/signup`);
  await page.fill('#signup-form [name=displayName]', name);
  await page.fill('#signup-form [name=email]', email);
  await page.fill('#signup-form [name=password]', password);
  await Promise.all([page.waitForURL(`${base}/`), page.click('#signup-form button[type=submit]')]);
}

async function signIn(page, email, password, next) {
  await page.goto(`${base}/signup?next=${encodeURIComponent(next)}`);
  await page.fill('#login-form [name=email]', email);
  await page.fill('#login-form [name=password]', password);
  await Promise.all([page.waitForURL(`${base}${next}`), page.click('#login-form button[type=submit]')]);
  await page.waitForSelector('#signout:not([hidden])');
}

/**
 * ffmpeg publishing a 640x360 test pattern with a tone over RTMP for `seconds` (real time); kept
 * in `ffmpeg` so that `finish` stops it. Resolves when ffmpeg exits by itself.
 */
function publish(rtmp, key, seconds) {
  const ffmpegArgs = ['-hide_banner', '-nostdin', '-loglevel', 'error', '-re',
    '-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
    '-c:v', 'libx264', '-preset', 'veryfast', '-tune', 'zerolatency', '-g', '30', '-pix_fmt', 'yuv420p',
    '-c:a', 'aac', '-b:a', '128k', '-t', String(seconds), '-f', 'flv', `${rtmp}/live/${key}`];
  ffmpeg = spawn(process.env.FFMPEG || '/usr/bin/ffmpeg', ffmpegArgs, { stdio: ['ignore', 'ignore', 'pipe'] });
  let ffmpegErr = '';
  ffmpeg.stderr.on('data', (d) => { ffmpegErr += d; });
  return new Promise((resolve) => {
    ffmpeg.on('exit', (code) => {
      if (code) log(`ffmpeg exited ${code}: ${ffmpegErr.slice(-500)}`);
      resolve(code);
    });
  });
}

// ----- scenarios -----

async function live() {
  const rtmp = process.env.RTMP_URL;
  expect(rtmp, 'RTMP_URL is required');
  const userCtx = await newContext(browser, base, 'creator');
  const adminCtx = await newContext(browser, base, 'admin');
  const page = await userCtx.newPage();
  const email = `${unique('river')}@example.com`;
  await signUp(page, 'River Creator', email, 'correct horse battery');
  await page.waitForSelector('text=Creating channels needs the creator role');
  step('signed up through /signup; the Control Center asks for the creator role');

  // An admin (development mode: loopback without a session) grants it in the users table.
  const admin = await adminCtx.newPage();
  await admin.goto(`${base}/`);
  const row = admin.locator('#users-table tr', { hasText: email });
  await row.getByRole('button', { name: 'Edit' }).click();
  const form = admin.locator('#users-table form');
  await form.getByLabel('creator').check();
  await form.getByRole('button', { name: 'Save' }).click();
  await admin.locator('#users-table tr', { hasText: email }).locator('td[data-field=roles]', { hasText: 'creator' }).waitFor();
  step('admin granted the creator role in the Control Center');

  await page.reload();
  await page.fill('#create-channel [name=title]', 'Rafting live from the UI');
  await page.fill('#create-channel [name=tags]', 'outdoors, uitest');
  await page.click('#create-channel button[type=submit]');
  const keyCode = page.locator('[data-stream-key]').first();
  await keyCode.waitFor();
  const channelId = await keyCode.getAttribute('data-stream-key');
  const firstKey = (await keyCode.textContent()).trim();
  // One click rotates: a new key replaces the shown one.
  await page.locator(`li[data-channel-id="${channelId}"] [data-action=rotate-key]`).click();
  await page.waitForFunction(([id, old]) => {
    const el = document.querySelector(`[data-stream-key="${id}"]`);
    return el && el.textContent.trim() !== old;
  }, [channelId, firstKey]);
  const shownKey = (await page.locator(`[data-stream-key="${channelId}"]`).textContent()).trim();
  await page.locator(`li[data-channel-id="${channelId}"] [data-action=copy-key]`).click();
  await page.waitForSelector('text=Stream key copied to the clipboard');
  const key = await page.evaluate(() => navigator.clipboard.readText());
  expect(key === shownKey && key.startsWith('live_'), `clipboard holds ${JSON.stringify(key)}, page shows ${shownKey}`);
  step(`created channel ${channelId}, rotated its stream key and copied the new one from the Control Center`);

  // The guided profile form: bio, featured channel, a donation address.
  const profile = page.locator('#profile-form');
  await profile.getByLabel('Bio').fill('Paddling down the river, live.');
  await profile.getByLabel('Featured channel').selectOption(channelId);
  await profile.getByRole('button', { name: 'Add an address' }).click();
  await profile.getByLabel('Currency').fill('eth');
  await profile.getByLabel('Address', { exact: true }).fill('0x52908400098527886e0f7030069857d2e4169ee7');
  await profile.getByLabel('Note').fill('tips');
  await profile.getByRole('button', { name: 'Save profile' }).click();
  await page.waitForSelector('text=Profile saved');
  step('saved the streamer profile through the guided form');

  publish(rtmp, key, TIMEOUT_S);
  step('ffmpeg publishing over RTMP with the copied key');

  const viewer = await userCtx.newPage();
  // Viewers play through the node's edge (another port), not from the origin the page came from.
  const hlsHosts = new Set();
  viewer.on('request', (r) => { if (r.url().includes('/hls/')) hlsHosts.add(new URL(r.url()).host); });
  await viewer.goto(`${base}/c/${channelId}`);
  await viewer.waitForSelector('#live-badge [data-live=true]', { timeout: 30000 });
  step('channel page shows the live badge');
  await viewer.waitForFunction(() => document.getElementById('player-video').currentTime > 0.5, null, { timeout: 30000, polling: 200 });
  const start = await viewer.evaluate(() => document.getElementById('player-video').currentTime);
  await viewer.waitForFunction((t0) => document.getElementById('player-video').currentTime > t0 + 2, start, { timeout: 20000, polling: 200 });
  const state = await viewer.evaluate(() => {
    const v = document.getElementById('player-video');
    return { currentTime: v.currentTime, width: v.videoWidth, height: v.videoHeight, paused: v.paused, hls: Boolean(window.Hls) };
  });
  expect(state.width === 640 && state.height === 360, `video is ${state.width}x${state.height}`);
  summary.playback = state;
  summary.playback.hlsHosts = [...hlsHosts];
  expect(hlsHosts.size > 0 && !hlsHosts.has(new URL(base).host), `LL-HLS fetched from ${[...hlsHosts]}, not the edge`);
  step(`the player plays: currentTime ${state.currentTime.toFixed(2)} s (hls.js ${state.hls})`);

  // The profile on the channel page, with a copy button per donation address.
  await viewer.locator('#profile', { hasText: 'Paddling down the river, live.' }).waitFor();
  await viewer.getByRole('button', { name: 'Copy ETH address' }).click();
  await viewer.waitForSelector('text=ETH address copied to the clipboard');
  const copied = await viewer.evaluate(() => navigator.clipboard.readText());
  expect(copied === '0x52908400098527886e0f7030069857d2e4169ee7', `clipboard holds ${copied}`);
  step('the channel page shows the profile; the donation address copies');

  // Dark/light toggle, remembered across reloads.
  const before = await viewer.evaluate(() => document.documentElement.dataset.theme);
  await viewer.click('#theme-toggle');
  const after = await viewer.evaluate(() => document.documentElement.dataset.theme);
  expect(before !== after, `theme stayed ${before}`);
  await viewer.reload();
  await viewer.waitForSelector('#live-badge [data-live=true]');
  expect(await viewer.evaluate(() => document.documentElement.dataset.theme) === after, 'theme not remembered');
  await viewer.waitForFunction(() => document.getElementById('player-video').currentTime > 0.5, null, { timeout: 30000, polling: 200 });
  step(`theme toggled ${before} -> ${after} and kept after a reload`);

  // Low latency: the same <video> plays over WebRTC (WHEP), then back to LL-HLS.
  await viewer.getByRole('button', { name: 'Low latency (WebRTC)' }).click();
  await viewer.waitForFunction(() => {
    const v = document.getElementById('player-video');
    return v.srcObject instanceof MediaStream && v.videoWidth === 640 && v.currentTime > 1;
  }, null, { timeout: 30000, polling: 200 });
  expect(await viewer.getAttribute('#low-latency', 'aria-pressed') === 'true', 'the low-latency toggle is not pressed');
  await viewer.click('#low-latency');
  await viewer.waitForFunction(() => {
    const v = document.getElementById('player-video');
    return !v.srcObject && v.currentTime > 0.5;
  }, null, { timeout: 30000, polling: 200 });
  step('"Low latency (WebRTC)" plays the channel over WHEP, and back to LL-HLS');

  const shots = [];
  for (const width of [1280, 390]) shots.push(await screenshot(viewer, 'channel-page', width));
  await page.reload();
  await page.locator(`li[data-channel-id="${channelId}"] [data-live=true]`).waitFor();
  await admin.reload();
  await admin.locator('#analytics-cards').waitFor();
  await admin.locator('#cluster-members').waitFor();
  for (const width of [1280, 390]) shots.push(await screenshot(admin, 'control-center', width));
  const [download] = await Promise.all([admin.waitForEvent('download'), admin.click('#export-button')]);
  const exported = JSON.parse(fs.readFileSync(await download.path(), 'utf8'));
  expect(exported.channels.some((c) => c.id === channelId), 'the export lacks the channel');
  step(`exported the JSON snapshot (${download.suggestedFilename()})`);
  // Stream health: the creator's charts fill in from the ingest node's 5 s samples.
  await page.selectOption('#health-channel', channelId);
  // `attached`: a flat line (a steady 30 fps) has no height, which Playwright counts as hidden.
  await page.waitForSelector('#health-chart-video polyline', { timeout: 30000, state: 'attached' });
  await page.waitForSelector('#health-chart-fps polyline', { state: 'attached' });
  const healthLabel = await page.getAttribute('#health-chart-video', 'aria-label');
  expect(/latest \d+ kbit\/s/.test(healthLabel), `video bitrate chart: ${healthLabel}`);
  await page.waitForSelector('#health-audience', { state: 'attached' });
  await page.waitForSelector('#health-chart-retention', { state: 'attached' });
  step(`stream health charts drawn in the Control Center (${healthLabel}), audience: ${await page.textContent('#health-audience')}`);
  for (const width of [1280, 390]) shots.push(await screenshot(page, 'control-center-creator', width));
  summary.screenshots = shots;
  for (const s of shots) expect(s.overflow <= 0, `${path.basename(s.file)} scrolls sideways by ${s.overflow}px`);
  step(`screenshots in ${artifactsDir()}`);
}

async function chat() {
  const tag = unique('');
  const owner = await api(base, 'POST', '/api/users',
    { displayName: 'Chat Owner', email: `owner${tag}@example.com`, roles: ['creator'], password: 'owner password 1' });
  const viewerUser = await api(base, 'POST', '/api/users',
    { displayName: 'Chat Viewer', email: `viewer${tag}@example.com`, roles: ['viewer'], password: 'viewer password 1' });
  const channel = await api(base, 'POST', '/api/channels', { ownerId: owner.id, title: 'Chat room', tags: ['talk'] });
  const next = `/c/${channel.id}`;

  const ownerPage = await (await newContext(browser, base, 'owner')).newPage();
  const viewerPage = await (await newContext(browser, base, 'viewer')).newPage();
  const adminPage = await (await newContext(browser, base, 'admin')).newPage();
  await signIn(ownerPage, `owner${tag}@example.com`, 'owner password 1', next);
  await signIn(viewerPage, `viewer${tag}@example.com`, 'viewer password 1', next);
  await ownerPage.waitForSelector('#chat-status:has-text("Connected")');
  await viewerPage.waitForSelector('#chat-status:has-text("Connected")');
  step('owner and viewer signed in through /signup and opened the channel page');

  // `next` must not lead off the site (an open redirect after signing in): the check resolves it
  // as the browser does, so `/\host` (read as `//host`) and friends fall back to `/`.
  const redirectPage = await (await newContext(browser, base, 'redirect')).newPage();
  await redirectPage.goto(`${base}/signup`);
  const tricks = ['/\\evil.example', '//evil.example', '/\\/evil.example', '/\t/evil.example', 'https://evil.example',
    'javascript:alert(1)', '/%5Cevil.example/x', `${next}?a=1#b`];
  const resolved = await redirectPage.evaluate(async (inputs) => {
    const { safeNext } = await import('/assets/js/signup.js');
    return inputs.map((i) => safeNext(i));
  }, tricks);
  const wanted = ['/', '/', '/', '/', '/', '/', '/%5Cevil.example/x', `${next}?a=1#b`];
  expect(JSON.stringify(resolved) === JSON.stringify(wanted), `next resolved to ${JSON.stringify(resolved)}`);
  await redirectPage.goto(`${base}/signup?next=${encodeURIComponent('/\\evil.example')}`);
  await redirectPage.fill('#login-form [name=email]', `viewer${tag}@example.com`);
  await redirectPage.fill('#login-form [name=password]', 'viewer password 1');
  await Promise.all([redirectPage.waitForURL(`${base}/`), redirectPage.click('#login-form button[type=submit]')]);
  expect(new URL(redirectPage.url()).origin === new URL(base).origin, `left the site for ${redirectPage.url()}`);
  await redirectPage.close();
  step('signing in with next=/\\evil.example stays on this site; tricky `next` values fall back to /');

  await viewerPage.click('#follow-button');
  await viewerPage.waitForSelector('#follow-button:has-text("Unfollow")');
  await viewerPage.waitForSelector('#audience:has-text("1 followers")');
  await viewerPage.reload();
  await viewerPage.waitForSelector('#follow-button:has-text("Unfollow")');
  await viewerPage.waitForSelector('#chat-status:has-text("Connected")');
  step('the viewer follows the channel; the button remembers it after a reload');

  const first = `hello from the viewer ${tag}`;
  await viewerPage.fill('#chat-input', first);
  await viewerPage.press('#chat-input', 'Enter');
  const inOwner = ownerPage.locator('#chat-log li', { hasText: first });
  const inViewer = viewerPage.locator('#chat-log li', { hasText: first });
  await inOwner.waitFor();
  await inViewer.waitFor();
  expect(await inViewer.locator('[data-action=delete-message]').count() === 0, 'a viewer sees a Delete button');
  step('a message sent by the viewer appears for the owner');

  await inOwner.locator('[data-action=delete-message]').click();
  await inOwner.waitFor({ state: 'detached' });
  await inViewer.waitFor({ state: 'detached' });
  step('the owner deleted it on the channel page; it is gone for both');

  const second = `second message ${tag}`;
  await viewerPage.fill('#chat-input', second);
  await viewerPage.press('#chat-input', 'Enter');
  await ownerPage.locator('#chat-log li', { hasText: second }).waitFor();
  await adminPage.goto(`${base}/`);
  const inModeration = adminPage.locator('#moderation-log li', { hasText: second });
  await inModeration.waitFor();
  expect(await adminPage.locator('#moderation-log li', { hasText: first }).count() === 0, 'a deleted message shows in moderation');
  await inModeration.locator('[data-action=delete-message]').click();
  await inModeration.waitFor({ state: 'detached' });
  await viewerPage.locator('#chat-log li', { hasText: second }).waitFor({ state: 'detached' });
  await ownerPage.locator('#chat-log li', { hasText: second }).waitFor({ state: 'detached' });
  step('an admin deleted another from the Control Center moderation view; gone everywhere');

  // A reload shows neither: deleted messages are not in the history either.
  await viewerPage.reload();
  await viewerPage.waitForSelector('#chat-status:has-text("Connected")');
  const left = await viewerPage.locator('#chat-log li').allTextContents();
  expect(!left.some((t) => t.includes(tag)), `deleted messages came back after a reload: ${left}`);
  step('after a reload the deleted messages stay hidden');

  // Automod from the Control Center: links blocked, new accounts held. The viewer signed up
  // minutes ago, so its next message waits until the admin approves it.
  await adminPage.selectOption('#automod-form [name=channelId]', channel.id);
  await adminPage.waitForSelector(`#automod-form[data-loaded-for="${channel.id}"]`);
  await adminPage.check('#automod-form [name=blockLinks]');
  await adminPage.fill('#automod-form [name=newAccountHoldMinutes]', '10');
  await adminPage.click('#automod-form button[type=submit]');
  await adminPage.waitForSelector('text=Automod saved');
  await viewerPage.fill('#chat-input', 'win big at https://spam.example.net');
  await viewerPage.press('#chat-input', 'Enter');
  await viewerPage.waitForSelector('#chat-status:has-text("links are not allowed")');
  const held = `held message ${tag}`;
  await viewerPage.fill('#chat-input', held);
  await viewerPage.press('#chat-input', 'Enter');
  await viewerPage.waitForTimeout(1500);
  log(`status after the lift: ${await viewerPage.textContent('#chat-status')}`);
  await viewerPage.waitForSelector('#chat-status:has-text("waiting for a moderator")');
  const inHeld = adminPage.locator('#held-list li', { hasText: held });
  await inHeld.waitFor();
  expect(await ownerPage.locator('#chat-log li', { hasText: held }).count() === 0, 'a held message reached the chat');
  await inHeld.locator('[data-action=approve-held]').click();
  await ownerPage.locator('#chat-log li', { hasText: held }).waitFor();
  await viewerPage.locator('#chat-log li', { hasText: held }).waitFor();
  await inHeld.waitFor({ state: 'detached' });
  step('automod: a link was refused, a new account was held, the admin approved it from the Control Center');

  // Reports: the viewer reports the owner's line from the channel page; the admin decides it in
  // the Control Center.
  const ownerLine = `owner line ${tag}`;
  await ownerPage.fill('#chat-input', ownerLine);
  await ownerPage.press('#chat-input', 'Enter');
  const toReport = viewerPage.locator('#chat-log li', { hasText: ownerLine });
  await toReport.waitFor();
  viewerPage.once('dialog', (dialog) => dialog.accept('spam'));
  await toReport.locator('[data-action=report-message]').click();
  await viewerPage.waitForSelector('text=Reported to the moderators');
  await adminPage.reload();
  const reportRow = adminPage.locator('#reports-table tr', { hasText: ownerLine });
  await reportRow.waitFor();
  await reportRow.locator('select[name=action]').selectOption('dismiss');
  await reportRow.locator('button[type=submit]').click();
  await adminPage.locator('#reports-table tr', { hasText: 'dismiss by' }).waitFor();
  step('a viewer reported a chat line from the channel page; the admin dismissed it in the Control Center');

  // Appeals: an admin bans the viewer; the viewer appeals from the channel page; the owner (not
  // the one who banned) lifts the ban in the Control Center and the viewer chats again.
  await api(base, 'POST', `/api/channels/${channel.id}/chat/bans`, { userId: viewerUser.id, reason: 'spam' });
  await viewerPage.fill('#chat-input', 'am I banned?');
  await viewerPage.press('#chat-input', 'Enter');
  await viewerPage.waitForSelector('#chat-status [data-action=appeal-ban]');
  viewerPage.once('dialog', (dialog) => dialog.accept('I will keep it on topic'));
  await viewerPage.click('#chat-status [data-action=appeal-ban]');
  await viewerPage.waitForSelector('text=Appeal sent to the moderators');
  await ownerPage.goto(`${base}/`);
  const appealRow = ownerPage.locator('#appeals-table tr', { hasText: 'I will keep it on topic' });
  await appealRow.locator('[data-action=lift]').click();
  await ownerPage.locator('#appeals-table tr', { hasText: 'lifted by' }).waitFor();
  // Unbanned: the next line is no longer refused (automod still holds this new account's lines).
  // The flood limit (5 lines per 10 s) counted this viewer's refused tries: let it pass first.
  await viewerPage.waitForTimeout(10000);
  await viewerPage.fill('#chat-input', `back on topic ${tag}`);
  await viewerPage.press('#chat-input', 'Enter');
  await viewerPage.waitForSelector('#chat-status:has-text("waiting for a moderator")');
  step('the banned viewer appealed from the channel page; the owner lifted the ban in the Control Center');

  // Channel metadata and a manual start/stop from the Control Center (no viewers left: a channel
  // started by hand has no media to play).
  await ownerPage.close();
  await viewerPage.close();
  const row = adminPage.locator(`li[data-channel-id="${channel.id}"]`);
  await row.getByRole('button', { name: 'Edit' }).click();
  const edit = adminPage.locator('form[aria-label="Edit Chat room"]');
  await edit.getByLabel('Title').fill('Chat room, renamed');
  await edit.getByLabel('Category').fill('Just Chatting');
  await edit.getByRole('button', { name: 'Save' }).click();
  await adminPage.locator(`li[data-channel-id="${channel.id}"]`, { hasText: 'Chat room, renamed' }).waitFor();
  expect((await api(base, 'GET', `/api/channels/${channel.id}`)).category === 'Just Chatting', 'category not saved');
  await adminPage.locator(`li[data-channel-id="${channel.id}"] [data-action=start]`).click();
  await adminPage.locator(`li[data-channel-id="${channel.id}"] [data-live=true]`).waitFor();
  await adminPage.locator('#sessions-table [data-live=true]').first().waitFor({ timeout: 15000 });
  await adminPage.locator(`li[data-channel-id="${channel.id}"] [data-action=stop]`).click();
  await adminPage.locator(`li[data-channel-id="${channel.id}"] [data-live=false]`).waitFor();
  expect((await api(base, 'GET', `/api/channels/${channel.id}`)).liveState === 'offline', 'still live after Stop');
  step('an admin renamed the channel, started and stopped a broadcast from the Control Center');
}

async function recordings() {
  const rtmp = process.env.RTMP_URL;
  expect(rtmp, 'RTMP_URL is required');
  const tag = unique('');
  const email = `vod${tag}@example.com`;
  const title = `Canyon run ${tag}`;
  const owner = await api(base, 'POST', '/api/users',
    { displayName: 'Vod Creator', email, roles: ['creator'], password: 'vod password 1' });
  const channel = await api(base, 'POST', '/api/channels', { ownerId: owner.id, title, tags: ['uitest'] });
  const creatorCtx = await newContext(browser, base, 'creator');
  const page = await creatorCtx.newPage();
  await signIn(page, email, 'vod password 1', '/');
  // The visitor reaches the node by a name (not loopback): anonymous, not development's admin.
  const visitorAt = visitorBase(base);
  const visitor = await (await newContext(browser, visitorAt, 'visitor')).newPage();
  await visitor.goto(`${visitorAt}/c/${channel.id}`);
  await visitor.waitForSelector('#signin-link:not([hidden])');
  await visitor.locator('#replay-empty', { hasText: 'No past broadcasts yet.' }).waitFor();
  await page.locator('#recordings-status', { hasText: 'No recordings of this channel yet' }).waitFor();
  step('empty states: no past broadcasts on the channel page, no recordings in the Control Center');

  const published = publish(rtmp, channel.streamKey, 8);
  const row = page.locator('#recordings-list > li[data-recording-id]').first();
  await row.waitFor({ timeout: 30000 });
  const id = await row.getAttribute('data-recording-id');
  const onAir = await row.getAttribute('data-status');
  step(`ffmpeg publishing for 8 s; the Control Center lists recording ${id} (${onAir})`);
  expect(await published === 0, 'ffmpeg failed');
  ffmpeg = null;
  const mine = page.locator(`#recordings-list > li[data-recording-id="${id}"]`);
  const actions = mine.locator(':scope > .row.actions');
  await mine.locator('[data-published=false]', { hasText: 'Draft' }).waitFor({ timeout: 30000 });
  const facts = await mine.locator(':scope > p').textContent();
  expect(/0:00:(0[5-9]|1[01])/.test(facts), `a draft of an 8 s broadcast reads ${facts}`);
  step(`the broadcast ended: a ready draft (${facts.trim()})`);

  // The draft plays in the preview (same origin: the session cookie lets its owner in).
  await actions.getByRole('button', { name: 'Preview' }).click();
  await page.waitForFunction(() => document.getElementById('recording-preview-video').currentTime > 1.5, null, { timeout: 20000, polling: 200 });
  // Its owner sees it on the channel page, marked; the visitor does not.
  const ownerView = await creatorCtx.newPage();
  await ownerView.goto(`${base}/c/${channel.id}`);
  await ownerView.locator(`#replay-list li[data-recording-id="${id}"] [data-draft]`, { hasText: 'Draft' }).waitFor();
  await ownerView.close();
  await visitor.reload();
  await visitor.locator('#replay-empty').waitFor();
  step('the draft plays in the preview player; its owner sees it marked Draft on the channel page, a visitor sees nothing');

  await actions.getByRole('button', { name: 'Publish' }).click();
  await mine.locator('[data-published=true]', { hasText: 'Published' }).waitFor();
  expect(await actions.getByRole('button', { name: 'Publish' }).count() === 0, 'Publish still offered');
  step('Publish: the recording is published');

  // Its poster (pictures are made in the background once it is ready): the card shows it when
  // the API names one, a placeholder otherwise.
  let posterPath = null;
  for (let i = 0; i < 25 && !posterPath; i++) {
    posterPath = (await api(base, 'GET', `/api/recordings/${id}`)).posterPath;
    if (!posterPath) await page.waitForTimeout(200);
  }
  summary.posterPath = posterPath;
  await visitor.reload();
  const card = visitor.locator(`#replay-list li[data-recording-id="${id}"]`);
  await card.waitFor();
  const cardText = await card.textContent();
  expect(cardText.includes(title) && /0:00:(0[5-9]|1[01])/.test(cardText) && !cardText.includes('Draft'), `gallery card: ${cardText}`);
  await card.scrollIntoViewIfNeeded();
  // (A poster named after the check above shows too: then it must load as well.)
  const posterShown = await card.locator('img').count() === 1;
  expect(posterShown || !posterPath, `the API names poster ${posterPath}; the card shows none`);
  if (posterShown) {
    await visitor.waitForFunction((rid) => {
      const img = document.querySelector(`#replay-list li[data-recording-id="${rid}"] img`);
      return img && img.complete && img.naturalWidth > 0;
    }, id, { timeout: 10000 });
  }
  await card.getByRole('button').click();
  await visitor.locator('#replay-now', { hasText: title }).waitFor();
  await visitor.waitForFunction(() => document.getElementById('player-video').currentTime > 2, null, { timeout: 20000, polling: 200 });
  const replay = await visitor.evaluate(() => {
    const v = document.getElementById('player-video');
    return { currentTime: v.currentTime, duration: v.duration, width: v.videoWidth, height: v.videoHeight, label: v.getAttribute('aria-label') };
  });
  expect(replay.width === 640 && Math.abs(replay.duration - 8) <= 1.5, `replay: ${JSON.stringify(replay)}`);
  expect(new URL(visitor.url()).searchParams.get('recording') === id, `address ${visitor.url()}`);
  summary.replay = replay;
  step(`a visitor's channel page lists it (${posterShown ? 'with its poster' : 'no poster yet: a placeholder'}); `
    + `a click plays it (${replay.duration.toFixed(1)} s, at ${replay.currentTime.toFixed(1)} s)`);

  // Cut 1..4 s: first a range past the end (the server's words next to the form), then the
  // range taken from the player with Set start / Set end.
  await actions.getByRole('button', { name: 'Cut a clip' }).click();
  const form = page.locator('#clip-form');
  await form.waitFor();
  await page.fill('#clip-start', '0');
  await page.fill('#clip-end', '999');
  await form.getByRole('button', { name: 'Create clip' }).click();
  const refusal = await page.locator('#clip-error', { hasText: 'past its end' }).textContent();
  expect(await page.getAttribute('#clip-end', 'aria-invalid') === 'true', 'the end field is not marked invalid');
  step(`a range past the end is refused next to the form: "${refusal}"`);
  await page.waitForFunction(() => {
    const v = document.getElementById('recording-preview-video');
    return v.readyState >= 2 && v.duration > 5;
  }, null, { timeout: 20000, polling: 200 });
  const seek = (t) => page.evaluate((at) => new Promise((resolve) => {
    const v = document.getElementById('recording-preview-video');
    v.pause();
    v.addEventListener('seeked', resolve, { once: true });
    v.currentTime = at;
  }), t);
  await seek(1);
  await form.getByRole('button', { name: 'Set start' }).click();
  await seek(4);
  await form.getByRole('button', { name: 'Set end' }).click();
  const range = [await page.inputValue('#clip-start'), await page.inputValue('#clip-end')];
  expect(range[0] === '1.0' && range[1] === '4.0', `Set start / Set end gave ${range}`);
  expectLogged('creator', 'status of 422');
  await form.getByLabel('Clip title').fill('Best rapid');
  await form.getByRole('button', { name: 'Create clip' }).click();
  const clip = mine.locator('.clip-list > li', { hasText: 'Best rapid' });
  await clip.waitFor();
  expect(await page.textContent('#clip-error') === '', 'the error stayed after a good range');
  const seen = [];
  const deadline = Date.now() + 30000;
  for (;;) {
    const status = await clip.getAttribute('data-status');
    if (seen[seen.length - 1] !== status) seen.push(status);
    if (status === 'ready') break;
    expect(status !== 'failed', `the clip failed: ${await clip.textContent()}`);
    expect(Date.now() < deadline, `the clip stayed ${status}`);
    await page.waitForTimeout(100);
  }
  await clip.locator('[data-status=ready]', { hasText: 'Ready' }).waitFor();
  summary.clipStatuses = seen;
  const clipText = await clip.textContent();
  expect(clipText.includes('1.0 s to 4.0 s'), `clip row: ${clipText}`);
  step(`Create clip: the clip went ${seen.join(' -> ')} under its recording (${clipText.trim()})`);

  // Published, the clip is on the channel page and plays at its own length.
  const clipId = await clip.getAttribute('data-recording-id');
  await clip.getByRole('button', { name: 'Publish' }).click();
  await clip.locator('[data-published=true]').waitFor();
  await visitor.reload();
  const clipCard = visitor.locator(`#clip-gallery li[data-recording-id="${clipId}"]`, { hasText: 'Best rapid' });
  await clipCard.getByRole('button').click();
  await visitor.locator('#replay-now', { hasText: 'Best rapid' }).waitFor();
  await visitor.waitForFunction(() => document.getElementById('player-video').currentTime > 1, null, { timeout: 20000, polling: 200 });
  const clipDuration = await visitor.evaluate(() => document.getElementById('player-video').duration);
  expect(Math.abs(clipDuration - 3) <= 1.2, `a 1..4 s clip plays for ${clipDuration} s`);
  await visitor.getByRole('button', { name: 'Close replay' }).click();
  await visitor.locator('#player-message', { hasText: 'Offline' }).waitFor();
  step(`the visitor plays the published clip (${clipDuration.toFixed(1)} s) and closes the replay`);

  const shots = [];
  await clipCard.getByRole('button').click();
  await visitor.locator('#replay-bar:not([hidden])').waitFor();
  for (const width of [1280, 390]) shots.push(await screenshot(visitor, 'channel-replays', width));
  for (const width of [1280, 390]) shots.push(await screenshot(page, 'control-center-recordings', width));
  summary.screenshots = shots;
  for (const sh of shots) expect(sh.overflow <= 0, `${path.basename(sh.file)} scrolls sideways by ${sh.overflow}px`);

  // axe-core on what this adds, in both themes: the gallery with a replay playing (a visitor's
  // page) and the Recordings panel with a clip and the clip form open (development's loopback
  // admin). bypassCSP: axe is evaluated into the pages.
  const axeVisitor = await (await newContext(browser, visitorAt, 'axe-visitor', { bypassCSP: true })).newPage();
  const axeAdmin = await (await newContext(browser, base, 'axe-admin', { bypassCSP: true })).newPage();
  const report = {};
  for (const theme of ['dark', 'light']) {
    await axeVisitor.goto(`${visitorAt}/c/${channel.id}?recording=${clipId}`);
    await axeVisitor.evaluate((t) => localStorage.setItem('bitriver-theme', t), theme);
    await axeVisitor.reload();
    await axeVisitor.locator('#replay-now', { hasText: 'Best rapid' }).waitFor();
    report[`${theme} /c/{id}?recording=`] = await axeViolations(axeVisitor);
    await axeAdmin.goto(`${base}/`);
    await axeAdmin.evaluate((t) => localStorage.setItem('bitriver-theme', t), theme);
    await axeAdmin.reload();
    await axeAdmin.selectOption('#recordings-channel', channel.id);
    const adminRow = axeAdmin.locator(`#recordings-list > li[data-recording-id="${id}"]`);
    await adminRow.locator('.clip-list > li').waitFor();
    await adminRow.locator(':scope > .row.actions').getByRole('button', { name: 'Cut a clip' }).click();
    await axeAdmin.locator('#clip-form').waitFor();
    report[`${theme} / recordings`] = await axeViolations(axeAdmin);
  }
  summary.axe = report;
  const bad = Object.entries(report).filter(([, v]) => v.length);
  expect(!bad.length, `axe found serious/critical violations: ${JSON.stringify(bad, null, 1)}`);
  step(`axe-core: no serious or critical violations in ${Object.keys(report).length} renders of the gallery and the panel`);

  // Delete asks once more; then the clip is gone.
  const remove = clip.getByRole('button', { name: 'Delete' });
  await remove.click();
  await clip.getByRole('button', { name: 'Confirm delete' }).click();
  await clip.waitFor({ state: 'detached' });
  expect((await api(base, 'GET', `/api/recordings/${id}/clips`)).recordings.length === 0, 'the clip is still listed');
  step('Delete, then Confirm delete: the clip is gone');
}

async function a11y() {
  const tag = unique('');
  const streamer = await api(base, 'POST', '/api/users',
    { displayName: 'Axe Streamer', email: `axe${tag}@example.com`, roles: ['creator'] });
  const friend = await api(base, 'POST', '/api/users', { displayName: 'Axe Friend', email: `friend${tag}@example.com`, roles: ['creator'] });
  const channel = await api(base, 'POST', '/api/channels', { ownerId: streamer.id, title: 'Accessible stream', category: 'Talk', tags: ['a11y'] });
  await api(base, 'POST', '/api/channels', { ownerId: friend.id, title: 'Friend stream', tags: ['a11y'] });
  await api(base, 'PUT', `/api/profiles/${streamer.id}`, {
    bio: 'Checked by axe-core.', featuredChannelId: channel.id, topFriends: [friend.id],
    donationAddresses: [{ currency: 'btc', address: 'bc1qexampleaddress', note: 'tips' }],
  });
  await api(base, 'POST', `/api/channels/${channel.id}/chat`, { text: 'first message', userId: friend.id });

  // bypassCSP: axe is evaluated into the page, which the pages' CSP would refuse.
  const context = await newContext(browser, base, 'a11y', { bypassCSP: true });
  const page = await context.newPage();
  const report = {};
  const pages = [
    ['/', '#takedowns-table, #reports-table, #users-table'], ['/channels', '#directory-list li'], [`/c/${channel.id}`, '#donations'], ['/signup', '#login-form'],
    ['/terms', '#legal-form'],
  ];
  for (const theme of ['dark', 'light']) {
    for (const [p, ready] of pages) {
      await page.goto(`${base}${p}`);
      await page.evaluate((t) => localStorage.setItem('bitriver-theme', t), theme);
      await page.reload();
      await page.waitForSelector(ready);
      await page.waitForTimeout(200);
      const violations = await axeViolations(page);
      report[`${theme} ${p}`] = violations;
    }
  }
  summary.axe = report;
  const bad = Object.entries(report).filter(([, v]) => v.length);
  expect(!bad.length, `axe found serious/critical violations: ${JSON.stringify(bad, null, 1)}`);
  step(`axe-core: no serious or critical violations on ${Object.keys(report).length} page renders`);

  // Directory search narrows the list as one types.
  await page.goto(`${base}/channels`);
  await page.waitForSelector('#directory-list li');
  await page.fill('#directory-search', 'friend');
  await page.waitForFunction(() => [...document.querySelectorAll('#directory-list li[data-channel-id]')]
    .every((li) => li.textContent.includes('Friend stream')));
  expect(page.url().includes('q=friend'), `search not in the URL: ${page.url()}`);
  step('directory search narrows the list');

  // Keyboard: the first Tab reaches the skip link, focus is drawn, Enter moves to the content.
  await page.goto(`${base}/channels`);
  await page.waitForSelector('#directory-list li');
  await page.keyboard.press('Tab');
  const first = await page.evaluate(() => {
    const el = document.activeElement;
    const style = getComputedStyle(el);
    return { text: el.textContent, outline: style.outlineStyle, width: style.outlineWidth };
  });
  expect(first.text.includes('Skip to content'), `first Tab focused ${first.text}`);
  expect(first.outline !== 'none' && first.width !== '0px', `focus is not visible: ${JSON.stringify(first)}`);
  // Tab on to the search box and the first channel link, all reachable by keyboard.
  let reached = null;
  for (let i = 0; i < 15 && !reached; i++) {
    await page.keyboard.press('Tab');
    reached = await page.evaluate(() => (document.activeElement.matches('#directory-list a') ? document.activeElement.getAttribute('href') : null));
  }
  expect(reached && reached.startsWith('/c/'), 'no channel link reached with Tab');
  await page.keyboard.press('Enter');
  await page.waitForSelector('#channel-title');
  step('keyboard: skip link first with a visible focus ring; a channel opens with Tab and Enter');
}

try {
  const scenarios = { live, chat, recordings, a11y };
  expect(base && Object.hasOwn(scenarios, scenario), `usage: node ui.mjs ${Object.keys(scenarios).join('|')} BASE_URL`);
  browser = await launch();
  await scenarios[scenario]();
  summary.artifacts = artifactsDir();
  fs.writeFileSync(path.join(summary.artifacts, `${scenario}-summary.json`), JSON.stringify(summary, null, 1));
  if (problems.length) {
    summary.reason = `pages logged errors: ${JSON.stringify(problems, null, 1)}`;
    await finish(1);
  }
  summary.ok = true;
  await finish(0);
} catch (e) {
  summary.reason = e.stack || String(e);
  await finish(1);
}
