// The web client as people use it, end to end: real headless Chromium pages against a real
// `roomcast serve`, clicking the controls a person clicks.
//
//   1. The directory at `/` lists nothing; a person starts from the lobby: camera preview
//      playing, a camera and a microphone picker, "join muted" ticked, then Join.
//   2. Three more people join: every page shows the other three tiles, with names; the
//      directory lists the room with its four participants.
//   3. The person who joined muted shows a muted badge on everyone's grid; unmuting clears it;
//      muting by the button shows it again. Camera off shows an avatar instead of video.
//   4. Screen share: the sharer's screen appears for the others as an extra, large tile; it goes
//      when sharing stops.
//   5. Active speaker: a page whose fake microphone plays a tone (every other page's plays
//      silence) is highlighted as the speaker on the others.
//   6. Chat: a general message, a question and a notice reach everyone; the question is listed
//      under Questions and the host marks it answered for everyone; a listed word is masked; a
//      sender over the rate limit is told to wait; a late joiner gets the history.
//   7. Reconnect: the server restarts (same port, same chat database): every page shows
//      "reconnecting", then rejoins and sees the others again; the question and notice are
//      still there.
//   8. Leave: one page leaves, the others drop its tile. No page logged a console error.
// Screenshots of the lobby, the 4-person grid, the chat and the directory go to
// test-output/screenshots/ (ROOMCAST_SCREENSHOT_DIR overrides: `node scripts/screenshots.mjs`
// writes the README's docs/images/ this way).

import { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  REPO_ROOT,
  dumpDiagnostics,
  freePort,
  launchBrowser,
  newLoggedPage,
  openRoomPage,
  pageErrors,
  pageLabel,
  remoteTiles,
  sequentialSteps,
  sessionInfo,
  startServer,
  stepLabel,
  waitFor,
} from './lib.mjs';

const SCREENSHOTS = process.env.ROOMCAST_SCREENSHOT_DIR ?? path.join(REPO_ROOT, 'test-output', 'screenshots');
const room = `client-${process.pid}-${Date.now().toString(36)}`;

let server;
let browser;
let speakerBrowser;
let port;
let workDir;
const pages = [];
const allPages = [];

/** 16-bit mono PCM WAV: a 440 Hz tone at about −12 dBFS, or silence. */
function writeWav(file, { seconds, tone }) {
  const rate = 48_000;
  const samples = rate * seconds;
  const data = Buffer.alloc(samples * 2);
  for (let i = 0; i < samples; i++) {
    const value = tone ? Math.round(Math.sin((2 * Math.PI * 440 * i) / rate) * 8_000) : 0;
    data.writeInt16LE(value, i * 2);
  }
  const header = Buffer.alloc(44);
  header.write('RIFF', 0);
  header.writeUInt32LE(36 + data.length, 4);
  header.write('WAVE', 8);
  header.write('fmt ', 12);
  header.writeUInt32LE(16, 16);
  header.writeUInt16LE(1, 20); // PCM
  header.writeUInt16LE(1, 22); // mono
  header.writeUInt32LE(rate, 24);
  header.writeUInt32LE(rate * 2, 28);
  header.writeUInt16LE(2, 32);
  header.writeUInt16LE(16, 34);
  header.write('data', 36);
  header.writeUInt32LE(data.length, 40);
  writeFileSync(file, Buffer.concat([header, data]));
}

/** Chat messages per sender per 10 s (the server's token bucket: its size, and its refill). */
const CHAT_RATE = 4;

async function start() {
  return startServer({
    extraArgs: [
      '--http', `127.0.0.1:${port}`,
      '--chat-word-list', path.join(workDir, 'words.txt'),
      '--chat-rate', String(CHAT_RATE),
    ],
    chatDb: path.join(workDir, 'chat.sqlite3'),
  });
}

before(async () => {
  workDir = mkdtempSync(path.join(os.tmpdir(), 'roomcast-client-test-'));
  writeFileSync(path.join(workDir, 'words.txt'), '# masked in chat\nbother\n');
  writeWav(path.join(workDir, 'silence.wav'), { seconds: 2, tone: false });
  writeWav(path.join(workDir, 'tone.wav'), { seconds: 2, tone: true });
  mkdirSync(SCREENSHOTS, { recursive: true });
  port = await freePort();
  server = await start();
  const fakeAudio = (file) => [`--use-file-for-fake-audio-capture=${path.join(workDir, file)}`];
  browser = await launchBrowser({ args: fakeAudio('silence.wav') });
  speakerBrowser = await launchBrowser({ args: fakeAudio('tone.wav') });
});

after(async () => {
  await browser?.close();
  await speakerBrowser?.close();
  await server?.stop();
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

const step = sequentialSteps((name) => dumpDiagnostics({ server, pages, label: stepLabel('client', name) }));

/** The tile of participant `id` on `page`, as the test reads it. */
function tileState(page, id) {
  return page.evaluate((id) => {
    const tile = document.querySelector(`#grid .tile[data-participant-id="${id}"]`);
    if (!tile) return null;
    const avatar = tile.querySelector('.avatar');
    return {
      micMuted: tile.dataset.micMuted === 'true',
      cameraOff: tile.dataset.cameraOff === 'true',
      speaking: tile.dataset.speaking === 'true',
      avatarVisible: Boolean(avatar && avatar.getClientRects().length && getComputedStyle(avatar).visibility !== 'hidden'),
    };
  }, id);
}

async function expectOnOthers(self, predicate, message) {
  const id = (await sessionInfo(self)).participantId;
  await Promise.all(pages.filter((p) => p !== self).map((page) => waitFor(async () => {
    const state = await tileState(page, id);
    if (!state || !predicate(state)) throw new Error(`${pageLabel(page)} sees ${pageLabel(self)}'s tile as ${JSON.stringify(state)}`);
    return true;
  }, { timeout: 10_000, interval: 100, message: `${pageLabel(page)}: ${message}` })));
}

async function waitConnected(page, timeout = 20_000) {
  await waitFor(async () => (await sessionInfo(page))?.state === 'connected', {
    timeout, interval: 100, message: `${pageLabel(page)} to be connected`,
  });
}

step('the lobby previews the camera, offers device pickers and joins muted', async () => {
  const directory = await newLoggedPage(browser, 'directory', { contextOptions: { viewport: { width: 1100, height: 700 } } });
  allPages.push(directory);
  await directory.goto(server.url + '/');
  await directory.getByText(/no live rooms/i).first().waitFor({ timeout: 10_000 });
  await directory.close();

  const page = await newLoggedPage(browser, 'Ada', { contextOptions: { viewport: { width: 1100, height: 700 } } });
  pages.push(page);
  allPages.push(page);
  await page.goto(`${server.url}/?room=${room}`);
  await waitFor(() => page.evaluate(() => {
    const preview = document.querySelector('#lobby-view video');
    return preview && preview.videoWidth > 0 && !preview.paused;
  }), { timeout: 10_000, interval: 100, message: 'the camera preview to play' });
  const pickers = await page.evaluate(() => [...document.querySelectorAll('#lobby-view select')].map((s) => s.options.length));
  assert.ok(pickers.length >= 2 && pickers.every((n) => n >= 1), `camera and microphone pickers with devices: ${pickers}`);
  await page.getByLabel(/your name/i).fill('Ada');
  await page.getByLabel(/microphone muted|join muted|mute microphone/i).check();
  await page.screenshot({ path: path.join(SCREENSHOTS, 'lobby.png') });
  await page.getByRole('button', { name: /^join/i }).click();
  await waitConnected(page);
  const joined = await page.evaluate(() => ({ name: window.roomcast.name, micMuted: window.roomcast.micMuted }));
  assert.deepEqual(joined, { name: 'Ada', micMuted: true }, 'joined as Ada with the microphone muted');
  // With the client's defaults (the lobby, no URL options) the camera opens at 1280×720 and is
  // published as three simulcast layers.
  const camera = await page.evaluate(() => {
    const sender = window.roomcast.pc.getSenders().find((s) => s.track?.kind === 'video');
    const { width, height } = sender?.track?.getSettings() ?? {};
    const encodings = (sender?.getParameters().encodings ?? []).map((e) => `${e.rid}/${e.scaleResolutionDownBy}`);
    return { width, height, encodings };
  });
  assert.deepEqual(camera, { width: 1280, height: 720, encodings: ['q/4', 'h/2', 'f/1'] }, 'Ada\'s camera and its layers');
});

step('four people see each other, and the directory lists the room', async () => {
  for (const name of ['Grace', 'Linus', 'Margaret']) {
    const page = await openRoomPage(browser, server.url, room, name, { contextOptions: { viewport: { width: 1100, height: 700 } } });
    pages.push(page);
    allPages.push(page);
  }
  await Promise.all(pages.map((page) => waitConnected(page)));
  await Promise.all(pages.map((page) => waitFor(async () => {
    const tiles = await remoteTiles(page);
    const names = tiles.map((t) => t.name).sort();
    const expected = pages.filter((p) => p !== page).map(pageLabel).sort();
    assert.deepEqual(names, expected, `${pageLabel(page)}: tile names`);
    const dark = tiles.filter((t) => t.name !== 'Ada' && t.videoWidth === 0);
    if (dark.length) throw new Error(`${pageLabel(page)}: no video yet from ${dark.map((t) => t.name)}`);
    return true;
  }, { timeout: 20_000, interval: 200, message: `${pageLabel(page)} to show three playing tiles` })));
  // The indicator, from getStats: on loopback (no loss, a short round trip) not "poor".
  await waitFor(async () => {
    const quality = await pages[1].evaluate(() => window.roomcast.quality);
    if (!quality || quality.rtt == null || quality.level === 'poor') throw new Error(JSON.stringify(quality));
    return true;
  }, { timeout: 10_000, interval: 200, message: 'a good or fair connection quality' });
  await pages[1].screenshot({ path: path.join(SCREENSHOTS, 'room.png') });

  const directory = await newLoggedPage(browser, 'directory', { contextOptions: { viewport: { width: 1100, height: 700 } } });
  allPages.push(directory);
  await directory.goto(server.url + '/');
  const card = directory.locator(`[data-room="${room}"]`);
  await card.waitFor({ timeout: 10_000 });
  await waitFor(async () => /4 participants/i.test(await card.innerText()), {
    timeout: 10_000, interval: 200, message: 'the directory card to count 4 participants',
  });
  await directory.screenshot({ path: path.join(SCREENSHOTS, 'directory.png') });
  await directory.close();
});

step('mute badges and camera-off avatars show on everyone\'s grid', async () => {
  const [ada, grace] = pages;
  await expectOnOthers(ada, (s) => s.micMuted, 'Ada joined muted: a muted badge');
  await ada.keyboard.press('m');
  await expectOnOthers(ada, (s) => !s.micMuted, 'Ada unmuted (M key): no badge');
  await grace.getByRole('button', { name: /mute|microphone/i }).first().click();
  await expectOnOthers(grace, (s) => s.micMuted, 'Grace muted: a muted badge');
  await grace.getByRole('button', { name: /camera|video/i }).first().click();
  await expectOnOthers(grace, (s) => s.cameraOff && s.avatarVisible, 'Grace\'s camera off: an avatar');
  await grace.getByRole('button', { name: /camera|video/i }).first().click();
  await expectOnOthers(grace, (s) => !s.cameraOff, 'Grace\'s camera back on');
});

step('a screen share appears large for the others and goes when it stops', async () => {
  const linus = pages[2];
  await linus.getByRole('button', { name: /share/i }).first().click();
  const linusId = (await sessionInfo(linus)).participantId;
  const others = pages.filter((p) => p !== linus);
  await Promise.all(others.map((page) => waitFor(() => page.evaluate((id) => {
    const grid = document.querySelector('#grid');
    const screen = document.querySelector(`#grid .tile[data-participant-id="${id}"][data-source="screen"] video`);
    return grid?.dataset.layout === 'stage' && screen && screen.videoWidth > 0;
  }, linusId), { timeout: 20_000, interval: 200, message: `${pageLabel(page)} to show Linus's screen on the stage` })));
  await linus.getByRole('button', { name: /stop sharing|share/i }).first().click();
  await Promise.all(others.map((page) => waitFor(() => page.evaluate((id) => (
    !document.querySelector(`#grid .tile[data-participant-id="${id}"][data-source="screen"]`)
      && document.querySelector('#grid')?.dataset.layout !== 'stage'
  ), linusId), { timeout: 10_000, interval: 200, message: `${pageLabel(page)} to drop the screen tile` })));
});

step('the page playing a tone is highlighted as the active speaker', async () => {
  const speaker = await openRoomPage(speakerBrowser, server.url, room, 'Tone', { contextOptions: { viewport: { width: 1100, height: 700 } } });
  pages.push(speaker);
  allPages.push(speaker);
  await waitConnected(speaker);
  await expectOnOthers(speaker, (s) => s.speaking, 'Tone is the active speaker');
  const toneId = (await sessionInfo(speaker)).participantId;
  for (const page of pages.filter((p) => p !== speaker)) {
    assert.equal(await page.evaluate(() => window.roomcast.activeSpeaker), toneId, `${pageLabel(page)}: activeSpeaker`);
  }
  await speaker.getByRole('button', { name: /leave/i }).click();
  pages.pop();
  await closeAfterLeaving(speaker);
});

/**
 * A page that left is on the directory, which polls the server: it is checked for errors and
 * closed before the server restarts (its failed polls would be logged by the browser).
 */
async function closeAfterLeaving(page) {
  await waitFor(async () => (await sessionInfo(page))?.state === 'left', { timeout: 5_000, message: `${pageLabel(page)} to leave` });
  assert.deepEqual(pageErrors(page), [], `${pageLabel(page)}: console errors`);
  allPages.splice(allPages.indexOf(page), 1);
  await page.close();
}

/** Opens the chat panel of `page` if it is closed. */
async function openChat(page) {
  const visible = await page.locator('#chat-panel').isVisible().catch(() => false);
  if (!visible) await page.keyboard.press('c');
  await page.locator('#chat-panel').waitFor({ state: 'visible', timeout: 5_000 });
}

async function postChat(page, kind, text) {
  await openChat(page);
  const panel = page.locator('#chat-panel');
  await panel.getByRole('radio', { name: new RegExp(`^${kind}$`, 'i') }).check();
  await panel.locator('textarea').fill(text);
  await panel.locator('textarea').press('Enter');
}

function chatMessages(page) {
  return page.evaluate(() => [...document.querySelectorAll('#chat-panel [data-message-id]')].map((li) => ({
    id: Number(li.dataset.messageId),
    kind: li.dataset.kind,
    answered: li.dataset.answered,
    text: li.querySelector('.chat-text')?.textContent ?? '',
  })));
}

async function expectChat(page, predicate, message) {
  return waitFor(async () => {
    const messages = await chatMessages(page);
    const found = messages.find(predicate);
    if (!found) throw new Error(`${pageLabel(page)} chat: ${JSON.stringify(messages)}`);
    return found;
  }, { timeout: 10_000, interval: 100, message: `${pageLabel(page)}: ${message}` });
}

step('chat: messages, questions answered live, notices, the word filter, the rate limit and history', async () => {
  const [ada, grace, linus] = pages;
  await Promise.all(pages.map(openChat));
  await postChat(grace, 'general', 'Hello everyone, sorry to bother you');
  const gracePostedAt = Date.now();
  for (const page of pages) await expectChat(page, (m) => m.kind === 'general' && m.text.includes('sorry to ****** you'), 'the filtered message');
  await postChat(linus, 'question', 'Will the slides be shared?');
  const question = await expectChat(ada, (m) => m.kind === 'question' && m.text.includes('slides'), 'the question');
  await ada.locator(`#chat-panel [data-message-id="${question.id}"]`).getByRole('button', { name: /mark answered/i }).click();
  for (const page of pages) await expectChat(page, (m) => m.id === question.id && m.answered === 'true', 'the question answered');
  await postChat(ada, 'notice', 'We resume at 14:00');
  for (const page of pages) await expectChat(page, (m) => m.kind === 'notice' && m.text.includes('14:00'), 'the notice');
  await ada.screenshot({ path: path.join(SCREENSHOTS, 'chat.png') });

  // The rate limit (CHAT_RATE per 10 s): Grace sends 8 messages in one burst, through the form's own
  // submit path (what Enter does), so no refill can come between them however slow this
  // machine is, and is told to wait. (Each send clears the last error line, so a refill in
  // the middle could leave the last message accepted and no error shown.)
  await openChat(grace);
  await grace.locator('#chat-panel').getByRole('radio', { name: /^general$/i }).check();
  // Her first message took a token; the bucket is full again one refill later (a rule of
  // time, not a readiness wait).
  const refillMs = 10_000 / CHAT_RATE + 100;
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, gracePostedAt + refillMs - Date.now())));
  await grace.evaluate(() => {
    const input = /** @type {HTMLTextAreaElement} */ (document.querySelector('#chat-input'));
    for (let i = 1; i <= 8; i++) {
      input.value = `message ${i}`;
      input.form?.requestSubmit();
    }
  });
  await waitFor(async () => /wait \d+ s/i.test(await grace.locator('#chat-panel .chat-error').innerText()) || undefined,
    { timeout: 10_000, message: 'Grace to be told to wait' });
  const sent = await waitFor(async () => {
    const texts = new Set((await chatMessages(grace)).map((m) => m.text));
    const got = [1, 2, 3, 4].filter((i) => texts.has(`message ${i}`));
    return got.length === 4 ? texts : undefined;
  }, { timeout: 10_000, message: "Grace's first four messages (the bucket's size) to be sent" });
  const refusedNumber = [5, 6, 7, 8].find((i) => !sent.has(`message ${i}`));
  const refused = refusedNumber ? `message ${refusedNumber}` : null;
  assert.ok(refused, 'Grace was told to wait');
  await expectChat(linus, (m) => m.text === 'message 2', 'Grace\'s second message');
  assert.ok(!(await chatMessages(linus)).some((m) => m.text === refused), 'the refused message reached nobody');

  const late = await openRoomPage(browser, server.url, room, 'Late');
  allPages.push(late);
  await waitConnected(late);
  await openChat(late);
  await expectChat(late, (m) => m.id === question.id && m.answered === 'true', 'the answered question in the history');
  await expectChat(late, (m) => m.text === 'message 2', 'general chat in the history');
  await late.getByRole('button', { name: /leave/i }).click();
  await closeAfterLeaving(late);
});

step('after a server restart every page reconnects; questions and notices survive', async () => {
  await server.stop();
  await Promise.all(pages.map((page) => waitFor(async () => (await sessionInfo(page))?.state === 'reconnecting', {
    timeout: 10_000, interval: 50, message: `${pageLabel(page)} to show reconnecting`,
  })));
  assert.ok(await pages[0].getByText(/reconnecting/i).first().isVisible(), 'a visible "reconnecting" state');
  server = await start();
  await Promise.all(pages.map((page) => waitConnected(page, 30_000)));
  const reconnects = await Promise.all(pages.map((page) => page.evaluate(() => window.roomcast.reconnects)));
  assert.ok(reconnects.every((n) => n >= 1), `each page counted its recovery: ${reconnects}`);
  await Promise.all(pages.map((page) => waitFor(async () => {
    const tiles = await remoteTiles(page);
    if (tiles.length !== pages.length - 1 || tiles.some((t) => t.name !== 'Ada' && t.videoWidth === 0)) {
      throw new Error(`${pageLabel(page)}: ${JSON.stringify(tiles)}`);
    }
    return true;
  }, { timeout: 30_000, interval: 200, message: `${pageLabel(page)} to see the others again` })));
  for (const page of pages) {
    await openChat(page);
    await expectChat(page, (m) => m.kind === 'question' && m.text.includes('slides'), 'the stored question');
    await expectChat(page, (m) => m.kind === 'notice', 'the stored notice');
  }
});

step('leaving removes the tile everywhere; no page logged an error', async () => {
  const margaret = pages.pop();
  const id = (await sessionInfo(margaret)).participantId;
  await margaret.getByRole('button', { name: /leave/i }).click();
  await Promise.all(pages.map((page) => waitFor(async () => !(await remoteTiles(page)).some((t) => t.id === id), {
    timeout: 5_000, interval: 100, message: `${pageLabel(page)} to drop Margaret's tile`,
  })));
  for (const page of allPages) assert.deepEqual(pageErrors(page), [], `${pageLabel(page)}: console errors`);
});
