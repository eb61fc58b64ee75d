// roomcast behind the repo's own nginx configuration (nginx/roomcast.conf in `http {}`,
// nginx/roomcast-rtmps.conf in the main context), run by Debian's real nginx 1.22 with
// libnginx-mod-stream, a self-signed certificate and unprivileged ports. The files are used as
// they are except for an explicit list of substitutions (ports, paths, the certificate; see
// startNginx in lib.mjs); `nginx -t` must accept the result.
//
//   1. TLS and HTTP: TLS 1.3 with ALPN h2 and the test's certificate; the security headers on
//      `/` (HSTS, nosniff, Referrer-Policy, Permissions-Policy allowing camera, microphone and
//      display-capture for self, frame-ancestors / X-Frame-Options); /healthz, /api and
//      /metrics reach roomcast (/metrics from 127.0.0.1, which the config allows); port 80
//      redirects to https except for Let's Encrypt's /.well-known/acme-challenge/.
//   2. The same files in front of a stand-in upstream (a node HTTP server that echoes what it
//      was sent and serves fake HLS files), with the /metrics allow list templated to an
//      address the test is not (192.0.2.1): /metrics answers 403 without reaching the
//      upstream; X-Real-IP / X-Forwarded-For / X-Forwarded-Proto cannot be forged by the
//      client; bodies over 64 KiB get 413; HLS playlists are cached for about a second (and
//      not at all with the upstream's no-store), segments are cached and marked immutable
//      unless the upstream says otherwise.
//   3. Four Chromium pages join a room at https://localhost:PORT/?room=… (signaling over wss
//      through nginx; media over UDP straight to roomcast): each decodes the three other
//      videos and receives their audio. nginx's access log shows the page over HTTP/2 and
//      four `GET /ws` answered 101 (an upgraded connection is logged when it closes).
//   4. ffmpeg pushes RTMPS to nginx's stream proxy (rtmps://localhost:PORT/live/<room>), which
//      passes it to roomcast's RTMP port: /api/rooms/<room> over https says live with source
//      rtmp, and /watch/<room> opened through nginx decodes the video.
//   5. No page logged a console error or threw.
//
// At most four Chromium pages at once. Needs nginx, libnginx-mod-stream, ffmpeg and openssl
// (scripts/install-test-deps.sh installs them); NGINX and FFMPEG override the binaries.
// ROOMCAST_KEEP_NGINX_DIR=1 keeps nginx's temp directory (configs, logs) after the run. On a
// failure the server log, nginx's logs, ffmpeg's log and each page go to test-output/browser/.
//
// Run: `cargo build && ROOMCAST_BIN=target/debug/roomcast node --test tests/browser/nginx.test.mjs`

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import http from 'node:http';
import tls from 'node:tls';
import { writeFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import {
  NGINX_BIN,
  dumpDiagnostics,
  expectMediaFrom,
  inboundStats,
  launchBrowser,
  openRoomPage,
  openWatchPage,
  pageErrors,
  pageLabel,
  request,
  sessionInfo,
  startNginx,
  startServer,
  waitFor,
  sequentialSteps,
  stepLabel,
} from './lib.mjs';

const FFMPEG = process.env.FFMPEG ?? 'ffmpeg';
const run = `${process.pid}-${Date.now().toString(36)}`;
/** Self-signed: the pages accept it, node trusts exactly it (`ca`). */
const CONTEXT = { ignoreHTTPSErrors: true };

let server;
let nginx;
let browser;
/** Pages open right now (diagnostics) and every page ever opened (the console check). */
const pages = new Set();
const allPages = [];
let push = null;

before(async () => {
  for (const [bin, args, hint] of [
    [NGINX_BIN, ['-v'], 'apt-get install --no-install-recommends nginx libnginx-mod-stream, or set NGINX'],
    [FFMPEG, ['-hide_banner', '-version'], 'apt-get install --no-install-recommends ffmpeg, or set FFMPEG'],
    ['openssl', ['version'], 'apt-get install openssl'],
  ]) {
    const probe = spawnSync(bin, args, { encoding: 'utf8' });
    if (probe.error || probe.status !== 0) throw new Error(`${bin} does not run (${probe.error?.message ?? probe.stderr}): ${hint}`);
  }
  server = await startServer(); // HTTP, RTC and RTMP on ephemeral loopback ports
  nginx = await startNginx({ server });
  console.log(`nginx in front: ${nginx.httpsUrl} (HTTP/2 + TLS), ${nginx.httpUrl} (redirects), ${nginx.rtmpsUrl} (RTMPS); ` +
    `substitutions made in the repo's files: ${JSON.stringify(nginx.substitutions)}`);
  browser = await launchBrowser();
});

after(async () => {
  await push?.stop();
  await browser?.close();
  const nginxExit = await nginx?.stop();
  const exit = await server?.stop();
  console.log(`nginx stopped: ${JSON.stringify(nginxExit)}; server stopped: ${JSON.stringify(exit)}`);
});

/** Runs one step; on failure dumps every log and open page, and skips the later steps. */
const step = sequentialSteps((name) => {
  const extra = { nginx: nginx?.logs() ?? 'nginx did not start' };
  if (push) extra.ffmpeg = push.logs();
  return dumpDiagnostics({ server, pages: [...pages], label: stepLabel('nginx-', name), extra });
}, { timeout: 60_000 });

async function closePage(page) {
  pages.delete(page);
  await page.context().close();
}

/** GET (or another method) through nginx's HTTPS port, trusting only the test's certificate. */
function viaNginx(pathname, options = {}) {
  return request(new URL(pathname, nginx.httpsUrl).href, { ca: nginx.ca, ...options });
}

// ---------------------------------------------------------------------------------------------

step('TLS 1.3 with HTTP/2, security headers, redirects and the ACME webroot', async () => {
  // The handshake a browser makes: TLS 1.3, ALPN h2, and the certificate the config names.
  const socket = tls.connect({ host: '127.0.0.1', port: nginx.httpsPort, servername: 'localhost', ca: nginx.ca, ALPNProtocols: ['h2', 'http/1.1'] });
  await once(socket, 'secureConnect');
  const handshake = { protocol: socket.getProtocol(), alpn: socket.alpnProtocol, subject: socket.getPeerCertificate().subject?.CN };
  socket.destroy();
  assert.deepEqual(handshake, { protocol: 'TLSv1.3', alpn: 'h2', subject: 'localhost' }, 'TLS handshake with nginx');

  const home = await viaNginx('/');
  assert.equal(home.status, 200, `GET / through nginx: ${home.status} ${home.body.slice(0, 200)}`);
  assert.match(home.body, /<html/i, 'the web client comes back');
  const h = home.headers;
  assert.match(h['strict-transport-security'] ?? '', /max-age=\d{7,}/, `HSTS: ${h['strict-transport-security']}`);
  assert.equal(h['x-content-type-options'], 'nosniff');
  assert.ok(h['referrer-policy'], 'Referrer-Policy set');
  for (const feature of ['camera', 'microphone', 'display-capture']) {
    assert.match(h['permissions-policy'] ?? '', new RegExp(`(^|[ ,])${feature}=\\(self\\)`), `Permissions-Policy allows ${feature} for self: ${h['permissions-policy']}`);
  }
  assert.ok(/frame-ancestors/.test(h['content-security-policy'] ?? '') || h['x-frame-options'], 'framing restricted');
  assert.ok(!/immutable/.test(h['cache-control'] ?? ''), `the HLS Cache-Control stays off other paths: ${h['cache-control']}`);
  console.log(`security headers on /: ${JSON.stringify(Object.fromEntries(Object.entries(h).filter(([k]) =>
    /strict-transport|x-content-type|referrer|permissions|content-security|x-frame/.test(k))))}`);

  const health = await viaNginx('/healthz');
  assert.equal(health.status, 200);
  assert.equal(JSON.parse(health.body).status, 'ok');
  const api = await viaNginx(`/api/rooms/nobody-${run}`);
  assert.equal(api.status, 200);
  assert.equal(JSON.parse(api.body).live, false);
  // The config allows /metrics from 127.0.0.1, which is where this request comes from; step 2
  // shows the deny for everyone else.
  const metrics = await viaNginx('/metrics');
  assert.equal(metrics.status, 200, 'loopback may read /metrics');
  assert.match(metrics.body, /^roomcast_rooms /m);

  const redirect = await request(`${nginx.httpUrl}/watch/show?x=1`);
  assert.equal(redirect.status, 301, 'port 80 redirects');
  assert.equal(redirect.headers.location, 'https://localhost/watch/show?x=1');
  // certbot --webroot writes its token into the webroot; Let's Encrypt fetches it over port 80.
  const acmeDir = path.join(nginx.dir, 'acme', '.well-known', 'acme-challenge');
  mkdirSync(acmeDir, { recursive: true });
  writeFileSync(path.join(acmeDir, 'token-123'), 'token-123.thumbprint');
  const challenge = await request(`${nginx.httpUrl}/.well-known/acme-challenge/token-123`);
  assert.equal(challenge.status, 200, 'the ACME challenge is served over plain HTTP, not redirected');
  assert.equal(challenge.body, 'token-123.thumbprint');
});

step('headers roomcast is told, body limit, /metrics deny and HLS caching (stand-in upstream)', async () => {
  // A stand-in for roomcast: echoes what it was sent, serves fake HLS files, counts requests.
  const hits = new Map();
  const stub = http.createServer((req, res) => {
    let bodyBytes = 0;
    req.on('data', (chunk) => { bodyBytes += chunk.length; });
    req.on('end', () => {
      hits.set(req.url, (hits.get(req.url) ?? 0) + 1);
      const { pathname } = new URL(req.url, 'http://stub');
      if (pathname.startsWith('/hls/')) {
        const headers = { 'Content-Type': pathname.endsWith('.m3u8') ? 'application/vnd.apple.mpegurl' : 'video/iso.segment' };
        if (pathname.endsWith('no-store.m3u8')) headers['Cache-Control'] = 'no-store';
        if (pathname.endsWith('max-age.m4s')) headers['Cache-Control'] = 'max-age=5';
        res.writeHead(200, headers);
        res.end(`${req.url} #${hits.get(req.url)}`);
        return;
      }
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers, bodyBytes }));
    });
  });
  stub.listen(0, '127.0.0.1');
  await once(stub, 'listening');
  const front = await startNginx({ upstream: `127.0.0.1:${stub.address().port}`, metricsAllow: '192.0.2.1' });
  const get = (pathname, options = {}) => request(new URL(pathname, front.httpsUrl).href, { ca: front.ca, ...options });
  const count = (url) => hits.get(url) ?? 0;
  try {
    // /metrics: the test (127.0.0.1) is not in the templated allow list, so: refused by nginx.
    const metrics = await get('/metrics');
    assert.equal(metrics.status, 403, '/metrics from an address not allowed');
    assert.equal(count('/metrics'), 0, 'the refused /metrics request never reached the upstream');

    // Client-supplied forwarding headers cannot fake the client's address.
    const echoed = JSON.parse((await get('/api/echo', {
      headers: { 'X-Real-IP': '203.0.113.9', 'X-Forwarded-For': '203.0.113.9', 'X-Forwarded-Proto': 'http' },
    })).body);
    assert.equal(echoed.headers['x-real-ip'], '127.0.0.1', 'X-Real-IP is the address nginx saw');
    assert.equal(echoed.headers['x-forwarded-for'], '203.0.113.9, 127.0.0.1', 'X-Forwarded-For appends the address nginx saw');
    assert.equal(echoed.headers['x-forwarded-proto'], 'https');
    assert.equal(echoed.headers.host, 'localhost');
    assert.equal(echoed.headers.connection, undefined, 'no Connection header on plain requests (upstream keepalive)');
    assert.equal(echoed.headers.upgrade, undefined);

    // Request bodies: an SDP-sized body passes, more than 64 KiB is refused by nginx.
    const sdpHeaders = { 'Content-Type': 'application/sdp' };
    const small = await get('/whip/room', { method: 'POST', headers: sdpHeaders, body: 'v'.repeat(60_000) });
    assert.equal(small.status, 200);
    assert.equal(JSON.parse(small.body).bodyBytes, 60_000);
    const large = await get('/whip/room', { method: 'POST', headers: sdpHeaders, body: 'v'.repeat(70_000) });
    assert.equal(large.status, 413, 'a 70 kB body is refused');
    assert.equal(count('/whip/room'), 1, 'the refused body never reached the upstream');

    // HLS segment: cached (one upstream request for two viewers) and marked immutable.
    const seg = '/hls/r/seg1.m4s';
    const [segA, segB] = [await get(seg), await get(seg)];
    assert.deepEqual([segA.status, segB.status], [200, 200]);
    assert.deepEqual([segA.headers['x-cache-status'], segB.headers['x-cache-status']], ['MISS', 'HIT'], 'segment cached');
    assert.equal(count(seg), 1, 'one upstream request for the segment');
    assert.equal(segB.body, `${seg} #1`);
    for (const answer of [segA, segB]) {
      assert.equal(answer.headers['cache-control'], 'public, max-age=600, immutable', 'a segment without upstream Cache-Control is immutable');
    }
    // The upstream's own Cache-Control wins, and is not doubled.
    assert.equal((await get('/hls/r/max-age.m4s')).headers['cache-control'], 'max-age=5');

    // HLS playlist: cached for about a second, then fetched again.
    const playlist = '/hls/r/index.m3u8';
    const [plA, plB] = [await get(playlist), await get(playlist)];
    assert.deepEqual([plA.headers['x-cache-status'], plB.headers['x-cache-status']], ['MISS', 'HIT'], 'playlist cached briefly');
    assert.equal(plA.headers['cache-control'], undefined, 'no immutable on playlists');
    const firstFetch = Date.now();
    await waitFor(async () => {
      await get(playlist);
      return count(playlist) === 2;
    }, { timeout: 4_000, interval: 100, message: 'the cached playlist to expire and be fetched again' });
    console.log(`playlist fetched from the upstream again ${Date.now() - firstFetch} ms after the first fetch (proxy_cache_valid 200 1s)`);
    // Low-latency HLS blocking reloads differ by query: separate cache entries.
    assert.equal((await get(`${playlist}?_HLS_msn=5&_HLS_part=1`)).headers['x-cache-status'], 'MISS');
    // The upstream's no-store is honoured: every request goes through.
    const noStore = '/hls/r/no-store.m3u8';
    await get(noStore);
    await get(noStore);
    assert.equal(count(noStore), 2, 'a no-store playlist is never served from the cache');
  } catch (error) {
    error.message += `\n--- nginx in front of the stand-in ---\n${front.logs()}`;
    throw error;
  } finally {
    await front.stop();
    stub.close();
  }
});

step('four browsers meet over https and wss through nginx', async () => {
  const room = `nginx-${run}`;
  const names = ['n1', 'n2', 'n3', 'n4'];
  const roomPages = await Promise.all(names.map((name) => openRoomPage(browser, nginx.httpsUrl, room, name, { contextOptions: CONTEXT })));
  roomPages.forEach((page) => pages.add(page));
  allPages.push(...roomPages);

  await waitFor(async () => {
    const infos = await Promise.all(roomPages.map(sessionInfo));
    if (infos.some((info) => info?.state !== 'connected')) {
      throw new Error(`states: ${JSON.stringify(infos.map((i) => [i?.state, i?.connectionState, i?.stateReason]))}`);
    }
    return true;
  }, { timeout: 20_000, interval: 100, message: 'all four pages to be connected' });
  const ids = new Map(await Promise.all(roomPages.map(async (page) => [pageLabel(page), (await sessionInfo(page)).participantId])));
  assert.equal(new Set(ids.values()).size, 4, `distinct participant ids: ${JSON.stringify([...ids])}`);
  const started = Date.now();
  await Promise.all(roomPages.map((page) => expectMediaFrom(page, new Map([...ids].filter(([name]) => name !== pageLabel(page))), { timeout: 30_000 })));
  console.log(`all four pages decode the three others' video and receive their audio (${Date.now() - started} ms after all connected)`);
  for (const page of roomPages) {
    assert.equal(new URL(page.url()).protocol, 'https:', `${pageLabel(page)} is on https`);
  }

  // nginx logs an upgraded connection when it closes: leave, then read the log.
  await Promise.all(roomPages.map(closePage));
  const upgrades = await waitFor(() => {
    const found = nginx.accessLog().split('\n').filter((line) => /"GET \/ws(\?\S*)? HTTP\/1\.1" 101 /.test(line));
    if (found.length < 4) throw new Error(`${found.length} "GET /ws … 101" lines in nginx's access log:\n${nginx.accessLog()}`);
    return found;
  }, { timeout: 10_000, interval: 100, message: 'four WebSocket upgrades (101) in nginx\'s access log' });
  assert.ok(nginx.accessLog().split('\n').some((line) => line.includes(`"GET /?room=${room}&name=n1`) && line.includes(' HTTP/2.0" 200 ')),
    'the room page came over HTTP/2');
  console.log(`nginx access log, WebSocket lines: ${JSON.stringify(upgrades)}`);
}, { timeout: 75_000 });

step('an RTMPS push through nginx\'s stream proxy plays on /watch over https', async () => {
  const room = `rtmps-${run}`;
  const target = `${nginx.rtmpsUrl}/live/${room}`;
  push = startFfmpeg([
    '-hide_banner', '-nostats', '-loglevel', 'warning',
    '-re', '-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30', '-f', 'lavfi', '-i', 'sine',
    '-c:v', 'libx264', '-preset', 'veryfast', '-tune', 'zerolatency', '-g', '60', '-c:a', 'aac',
    '-f', 'flv', target,
  ]);
  const status = await waitFor(async () => {
    if (push.exit) throw new Error(`ffmpeg exited ${JSON.stringify(push.exit)}: ${push.logs()}`);
    const answer = await viaNginx(`/api/rooms/${room}`);
    const now = JSON.parse(answer.body);
    if (!now.live) throw new Error(`/api/rooms/${room}: ${answer.body}`);
    return now;
  }, { timeout: 20_000, interval: 200, message: `${target} to make room ${room} live` });
  assert.equal(status.host?.source, 'rtmp', `host in ${JSON.stringify(status)}`);

  const viewer = await openWatchPage(browser, nginx.httpsUrl, room, { label: 'rtmps-viewer', contextOptions: CONTEXT });
  pages.add(viewer);
  allPages.push(viewer);
  const video = async () => (await inboundStats(viewer)).find((s) => s.kind === 'video');
  const first = await waitFor(async () => {
    const now = await video();
    if (!(now?.framesDecoded > 0)) throw new Error(`video inbound-rtp: ${JSON.stringify(now)}`);
    return now;
  }, { timeout: 20_000, interval: 250, message: 'the watch page to decode the RTMPS broadcast' });
  const later = await waitFor(async () => {
    const now = await video();
    return now.framesDecoded > first.framesDecoded + 30 ? now : null;
  }, { timeout: 10_000, interval: 250, message: 'the watch page to keep decoding' });
  assert.equal(later.frameWidth, 640, `decoded size ${later.frameWidth}x${later.frameHeight}`);
  assert.ok(nginx.accessLog().includes(`"POST /whep/${room} HTTP/2.0" 201 `), 'the WHEP session was set up through nginx');
  console.log(`RTMPS through nginx: ${push.command}; the viewer decoded ${later.framesDecoded} frames at ` +
    `${later.frameWidth}x${later.frameHeight}; room status ${JSON.stringify(status)}`);
  await closePage(viewer);
  await push.stop();
}, { timeout: 60_000 });

step('no page logged an error', async () => {
  for (const page of allPages) {
    assert.deepEqual(pageErrors(page), [], `${pageLabel(page)} logged errors`);
  }
});

/** Starts ffmpeg with `args`: { command, exit, logs(), stop() }. */
function startFfmpeg(args) {
  const lines = [`[test] ${FFMPEG} ${args.join(' ')}`];
  const child = spawn(FFMPEG, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk) => lines.push(...chunk.trimEnd().split('\n')));
  const state = { exit: null };
  const exited = once(child, 'exit').then(([code, signal]) => {
    state.exit = { code, signal };
    lines.push(`[test] ffmpeg exited (code ${code}, signal ${signal})`);
  });
  child.once('error', (error) => lines.push(`[test] ffmpeg failed to start: ${error.message}`));
  return {
    command: lines[0].slice('[test] '.length),
    get exit() { return state.exit; },
    logs: () => lines.join('\n'),
    stop: async () => {
      if (!state.exit) {
        child.kill('SIGTERM');
        const killer = setTimeout(() => child.kill('SIGKILL'), 2_000);
        await exited;
        clearTimeout(killer);
      }
    },
  };
}
