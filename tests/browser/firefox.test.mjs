// The web client in Firefox (Debian's Firefox ESR over WebDriver BiDi) with a Chromium page in
// the same room: each decodes the other's video and hears its audio, the Firefox page gets the
// chat, and it logs no error. The server announces this machine's own IPv4 address for media
// (Firefox gathers no loopback candidates); the packets still never leave the machine.

import { after, before } from 'node:test';
import assert from 'node:assert/strict';
import {
  dumpDiagnostics,
  expectMediaFrom,
  hostIPv4,
  launchBrowser,
  launchFirefox,
  openRoomPage,
  pageErrors,
  sequentialSteps,
  sessionInfo,
  startServer,
  stepLabel,
  waitFor,
} from './lib.mjs';

const room = `firefox-${process.pid}`;
let server;
let chromiumBrowser;
let firefox;
let chromiumPage;

before(async () => {
  const address = hostIPv4();
  server = await startServer({ extraArgs: ['--rtc-bind', address, '--public-ip', address] });
  chromiumBrowser = await launchBrowser();
  firefox = await launchFirefox();
});

after(async () => {
  await firefox?.close();
  await chromiumBrowser?.close();
  await server?.stop();
});

const step = sequentialSteps((name) => dumpDiagnostics({ server, pages: chromiumPage ? [chromiumPage] : [], label: stepLabel('firefox', name) }));

/** What the Firefox page's client reports: its state and what it decodes from whom. */
function firefoxMedia() {
  return firefox.evaluate(async () => {
    const client = window.roomcast;
    if (!client?.pc) return { state: client?.state ?? null, inbound: [] };
    const inbound = [];
    (await client.pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp') inbound.push({ kind: s.kind, framesDecoded: s.framesDecoded ?? 0, packetsReceived: s.packetsReceived ?? 0 });
    });
    return { state: client.state, inbound, tiles: document.querySelectorAll('#grid .tile[data-role="remote"]').length };
  });
}

step('a Firefox page and a Chromium page see and hear each other', async () => {
  await firefox.goto(`${server.url}/?room=${room}&name=Fox`);
  chromiumPage = await openRoomPage(chromiumBrowser, server.url, room, 'Chrome');
  const firefoxId = await waitFor(() => firefox.evaluate(async () => window.roomcast?.participantId ?? null), {
    timeout: 20_000, interval: 200, message: 'the Firefox page to join',
  });
  await expectMediaFrom(chromiumPage, new Map([['Fox', firefoxId]]), { timeout: 30_000 });
  const media = await waitFor(async () => {
    const media = await firefoxMedia();
    const video = media.inbound.find((s) => s.kind === 'video' && s.framesDecoded > 30);
    const audio = media.inbound.find((s) => s.kind === 'audio' && s.packetsReceived > 50);
    if (media.state !== 'connected' || !video || !audio || media.tiles !== 1) throw new Error(JSON.stringify(media));
    return media;
  }, { timeout: 30_000, interval: 500, message: 'Firefox to decode Chromium\'s video and audio' });
  console.log(`# Firefox decodes: ${JSON.stringify(media.inbound)}`);
  assert.equal((await sessionInfo(chromiumPage)).state, 'connected');
});

step('the Firefox page gets the chat, and neither page logged an error', async () => {
  await chromiumPage.evaluate(() => window.roomcast.ws.send(JSON.stringify({ type: 'chat', kind: 'general', text: 'hello from Chromium' })));
  await waitFor(() => firefox.evaluate(async () => document.body.textContent.includes('hello from Chromium')), {
    timeout: 10_000, interval: 200, message: 'the chat message on the Firefox page',
  });
  assert.deepEqual(firefox.errors(), [], 'Firefox console errors');
  assert.deepEqual(pageErrors(chromiumPage), [], 'Chromium console errors');
});
