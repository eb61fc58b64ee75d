// End to end over built-in HTTPS: `roomcast serve --tls-self-signed localhost,127.0.0.1` and two
// headless Chromium pages (contexts with ignoreHTTPSErrors, since the certificate is self-signed).
//
//   1. The page comes over TLS from roomcast's own certificate (the subject the server generated)
//      via HTTP/2 (ALPN), in a secure context, and the signaling WebSocket is wss://.
//   2. Both pages join one room and each decodes the other's video (framesDecoded advancing) and
//      receives its audio (packetsReceived advancing).
//   3. SIGTERM: the server exits cleanly (graceful shutdown over TLS), and no page logged an error.
//
// Run: `cargo build && node --test tests/browser/tls.test.mjs` (or `npm run test:browser`).

import { after, before } from 'node:test';
import assert from 'node:assert/strict';
import {
  dumpDiagnostics,
  inboundStats,
  launchBrowser,
  newLoggedPage,
  pageErrors,
  pageLabel,
  sessionInfo,
  startServer,
  waitFor,
  sequentialSteps,
  stepLabel,
} from './lib.mjs';

let server;
let browser;
const pages = [];
const webSockets = new Map(); // page label -> WebSocket URLs the page opened
const room = `tls-${process.pid}-${Date.now().toString(36)}`;

before(async () => {
  server = await startServer({ extraArgs: ['--tls-self-signed', 'localhost,127.0.0.1'] });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

const step = sequentialSteps((name) => dumpDiagnostics({ server, pages, label: stepLabel('tls-', name) }));

/** `https://localhost:PORT/?room=…&name=…`: the name the certificate is for, not the IP. */
function roomUrl(name) {
  assert.match(server.url, /^https:\/\/127\.0\.0\.1:\d+$/, 'the server logs an https:// URL');
  const url = new URL('/', server.url);
  url.hostname = 'localhost';
  url.searchParams.set('room', room);
  url.searchParams.set('name', name);
  return url.href;
}

step('pages load over HTTPS with the generated certificate and signal over WSS', async () => {
  for (const name of ['ada', 'bob']) {
    const page = await newLoggedPage(browser, name, { contextOptions: { ignoreHTTPSErrors: true } });
    webSockets.set(name, []);
    page.on('websocket', (ws) => webSockets.get(name).push(ws.url()));
    pages.push(page);
    const response = await page.goto(roomUrl(name));
    assert.equal(response.status(), 200);
    const security = await response.securityDetails();
    assert.ok(security, `${name}: the document came without TLS`);
    assert.match(security.subjectName ?? '', /roomcast self-signed localhost/, JSON.stringify(security));
    const { protocol, secure, nextHop } = await page.evaluate(() => ({
      protocol: location.protocol,
      secure: window.isSecureContext,
      nextHop: performance.getEntriesByType('navigation')[0]?.nextHopProtocol,
    }));
    assert.deepEqual({ protocol, secure, nextHop }, { protocol: 'https:', secure: true, nextHop: 'h2' });
  }
  for (const page of pages) {
    const label = pageLabel(page);
    await waitFor(async () => {
      const info = await sessionInfo(page);
      if (info?.state !== 'connected') throw new Error(`state ${JSON.stringify([info?.state, info?.connectionState, info?.stateReason])}`);
      return true;
    }, { timeout: 20_000, message: `${label} to be connected` });
    const urls = webSockets.get(label);
    assert.ok(urls.length >= 1 && urls.every((url) => url.startsWith('wss://localhost:')), `${label}: WebSockets ${JSON.stringify(urls)}`);
  }
});

step('each page decodes the other one\'s video and receives its audio', async () => {
  const ids = new Map(await Promise.all(pages.map(async (page) => [pageLabel(page), (await sessionInfo(page)).participantId])));
  await Promise.all(pages.map(async (page) => {
    const label = pageLabel(page);
    const otherId = [...ids].find(([name]) => name !== label)[1];
    const media = async () => {
      const stats = (await inboundStats(page)).filter((s) => s.participantId === otherId);
      return {
        frames: stats.find((s) => s.kind === 'video')?.framesDecoded ?? 0,
        width: stats.find((s) => s.kind === 'video')?.frameWidth ?? 0,
        packets: stats.find((s) => s.kind === 'audio')?.packetsReceived ?? 0,
        energy: stats.find((s) => s.kind === 'audio')?.totalAudioEnergy ?? 0,
      };
    };
    const first = await waitFor(async () => {
      const now = await media();
      if (!(now.frames > 0 && now.width > 0 && now.packets > 0)) throw new Error(`${label}: from ${otherId}: ${JSON.stringify(now)}`);
      return now;
    }, { timeout: 30_000, interval: 250, message: `${label} to decode video and receive audio from participant ${otherId}` });
    const later = await waitFor(async () => {
      const now = await media();
      if (!(now.frames > first.frames && now.packets > first.packets)) throw new Error(`${label}: ${JSON.stringify(first)} -> ${JSON.stringify(now)}`);
      return now;
    }, { timeout: 5_000, interval: 200, message: `${label}: video frames and audio packets to keep advancing` });
    console.log(`${label} from ${otherId}: ${JSON.stringify(later)}`);
  }));
});

step('SIGTERM stops the HTTPS server cleanly; no page logged an error', async () => {
  for (const page of pages) {
    assert.deepEqual(pageErrors(page), [], `${pageLabel(page)} logged errors`);
  }
  const exit = await server.stop({ timeout: 5_000 });
  assert.deepEqual(exit, { code: 0, signal: null }, server.logs());
  assert.match(server.logs(), /shutting down: removing participants/);
});
