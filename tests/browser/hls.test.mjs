// HLS end to end: real ffmpeg pushing RTMP as OBS would (or a room page publishing H.264), the
// server packaging the room's stage as LL-HLS (`/hls/<room>/index.m3u8`), and hls.js in headless
// Chromium playing it, against a real `roomcast serve --rtmp 127.0.0.1:0 --replay-dir <tmp>
// --broadcast-end-grace-ms 1000`.
//
//   0. The vendored player web-client/vendor/hls.min.js (served at /hls.min.js) is byte for byte
//      node_modules' hls.js, the version package-lock.json pins (scripts/vendor-hlsjs.sh).
//   1. Server up; it serves that file at /hls.min.js.
//   2. LL-HLS delay: ffmpeg pushes 720p30 H.264 + AAC with the wall clock burned into the video
//      (lib.mjs CLOCK_FILTER, keyframe every second); a plain page with hls.js (lowLatencyMode)
//      plays the playlist (parts, blocking reload): the picture moves at 1280x720 with sound;
//      for ~6 s every presented frame's burned-in clock is read and subtracted from Date.now(),
//      and so is hls.js's playingDate (EXT-X-PROGRAM-DATE-TIME). Medians and p95s go to stdout
//      and test-output/browser/hls-latency.json; the burned-clock median must stay under
//      LL_MEDIAN_BOUND_MS and the PDT-based one must agree with it.
//   3. /watch/<room> falls back to HLS: a viewer whose peer connections may only use relay
//      candidates, with no TURN server (a network that blocks UDP), shows transport HLS, a
//      moving picture, "… s behind live" and the fallback note within FALLBACK_BOUND_MS; a
//      normal viewer plays over WebRTC, its "HLS" button moves it to HLS, and the "WebRTC"
//      button (pressed from the keyboard) moves it back.
//   4. A room participant publishing H.264 from Chromium (the room page, H.264 forced with
//      setCodecPreferences) is packaged: hls.js plays the fake camera's 640x480 with sound.
//   5. Replay: a push is stopped as OBS stops (ffmpeg SIGINT); the live playlist ends (a live
//      hls.js player gets `ended`, the HLS watch page shows "Broadcast ended"); after the grace
//      /api/rooms lists the replay with its url, and hls.js plays that VOD from start to end;
//      the watch page plays it too (`/watch/<room>?replay=<id>`, with the room's chat);
//      a second server over the same --replay-dir lists it too.
//   6. No page logged a console error or threw.
//
// One server for the file (each step uses its own room); at most three Chromium pages at once.
// ffmpeg must be installed (scripts/install-test-deps.sh); FFMPEG overrides the binary. On a
// failure the server log, ffmpeg's log, the playlists, each page's console, state and a
// screenshot go to test-output/browser/ (hls-*).
//
// Run: `cargo build && node --test tests/browser/hls.test.mjs` (ROOMCAST_BIN picks another
// binary; ROOMCAST_TEST_VERBOSE=1 streams the server log; ROOMCAST_WEB_CLIENT_FROM_DISK=1 serves
// web-client/ from the working tree instead of the copy embedded in the binary).

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  FFMPEG,
  OUTPUT_DIR,
  REPO_ROOT,
  dumpDiagnostics,
  ffmpegPushArgs,
  forceH264InitScript,
  hlsPlayerState,
  inboundStats,
  launchBrowser,
  measureLatencyInPage,
  newLoggedPage,
  openHlsPlayerPage,
  openRoomPage,
  openWatchPage,
  pageErrors,
  pageLabel,
  percentile,
  relayOnlyInitScript,
  sequentialSteps,
  startLoggedProcess,
  startServer,
  stepLabel,
  waitFor,
} from './lib.mjs';

/** The issue's target for LL-HLS in hls.js: camera to screen, median. */
const LL_MEDIAN_BOUND_MS = 2_000;
/** The PDT-based delay (what the watch page shows) may differ from the burned clock by this. */
const PDT_AGREEMENT_MS = 1_000;
// Long enough for hls.js to catch up to its live target at 1.5× from a start one GOP back.
const LATENCY_WARMUP_MS = 5_000;
const LATENCY_SAMPLE_MS = 6_000;
/** watch.js falls back after 4 s without a WebRTC connection; then HLS has to start. */
const FALLBACK_BOUND_MS = 15_000;
/** --broadcast-end-grace-ms for this server: how soon a stopped push becomes a replay. */
const END_GRACE_MS = 1_000;
/** ffmpeg's keyframe interval (frames at 30 fps): one-second segments. */
const GOP = 30;

const run = `${process.pid}-${Date.now().toString(36)}`;
let server;
let browser;
/** Pages open right now (diagnostics, closed at the end) and every page opened (console check). */
const pages = new Set();
const allPages = [];
/** ffmpeg processes still running, and every one started (diagnostics). */
const pushes = new Set();
const allPushes = [];
/** Rooms whose playlists go into the diagnostics. */
const rooms = new Set();

after(async () => {
  await Promise.all([...pushes].map((push) => push.stop()));
  await browser?.close();
  const exit = await server?.stop();
  if (exit) console.log(`server stopped: ${JSON.stringify(exit)}`);
});

async function onFailure(name) {
  const extra = Object.fromEntries(allPushes.map((push) => [`ffmpeg-${push.label}`, push.logs()]));
  for (const room of rooms) {
    extra[`playlist-${room}`] = await fetchText(`/hls/${room}/index.m3u8`)
      .then(({ status, body }) => `HTTP ${status}\n${body}`)
      .catch((error) => `could not fetch: ${error.message}`);
  }
  await dumpDiagnostics({ server, pages: [...pages], label: stepLabel('hls-', name), describePage, extra });
}

const step = sequentialSteps(onFailure, { timeout: 120_000 });

// ---------------------------------------------------------------------------------------------
// Helpers

function startPush(label, room, options = {}) {
  const push = startLoggedProcess(FFMPEG, ffmpegPushArgs(`${server.rtmpUrl}/live/${room}`, { gop: GOP, ...options }), { label });
  const stop = push.stop;
  push.stop = async () => {
    await stop();
    pushes.delete(push);
  };
  pushes.add(push);
  allPushes.push(push);
  rooms.add(room);
  return push;
}

/** Fails with ffmpeg's own words when it exited (it does not retry like OBS). */
function assertRunning(push) {
  if (push.exit) throw new Error(`ffmpeg ${push.label} exited ${JSON.stringify(push.exit)}:\n${push.logs()}`);
}

async function fetchText(pathname) {
  const response = await fetch(new URL(pathname, server.url), { cache: 'no-store' });
  return { status: response.status, headers: response.headers, body: await response.text() };
}

async function fetchJson(pathname) {
  const { status, body } = await fetchText(pathname);
  if (status !== 200) throw new Error(`GET ${pathname}: HTTP ${status} ${body.slice(0, 300)}`);
  return JSON.parse(body);
}

/**
 * Waits (from node, so no page logs a 404) until /api/rooms/<room> says `hls.live` and the live
 * playlist has at least `segments` complete segments. Returns { status, playlist }.
 */
async function waitForPlaylist(room, { push = null, segments = 2, timeout = 25_000 } = {}) {
  return waitFor(async () => {
    if (push) assertRunning(push);
    const status = await fetchJson(`/api/rooms/${room}`);
    if (!status.hls?.live) throw new Error(`/api/rooms/${room}: ${JSON.stringify(status)}`);
    const { status: code, body } = await fetchText(status.hls.url ?? `/hls/${room}/index.m3u8`);
    const count = body.match(/^#EXTINF/gm)?.length ?? 0;
    if (code !== 200 || count < segments) throw new Error(`${status.hls.url}: HTTP ${code}, ${count} segments: ${body.slice(0, 400)}`);
    return { status, playlist: body };
  }, { timeout, interval: 250, message: `the HLS playlist of room ${room} with ${segments} segments` });
}

// The watch page's hls.js settings (web-client/watch.js HLS_JS_CONFIG).
const WATCH_PAGE_HLS_CONFIG = { lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5 };

async function openPlayer(room, label, playlistPath, hlsConfig = WATCH_PAGE_HLS_CONFIG) {
  const page = await openHlsPlayerPage(browser, server.url, new URL(playlistPath, server.url).href, { label, hlsConfig });
  pages.add(page);
  allPages.push(page);
  return page;
}

/** /watch/<room>, or /watch/<room>?<query> (e.g. 'transport=hls') in a page of its own. */
async function openViewer(room, label, { query = null, initScripts = [] } = {}) {
  let page;
  if (query) {
    page = await newLoggedPage(browser, label, { initScripts });
    await page.goto(new URL(`/watch/${encodeURIComponent(room)}?${query}`, server.url).href);
  } else {
    page = await openWatchPage(browser, server.url, room, { label, initScripts });
  }
  pages.add(page);
  allPages.push(page);
  return page;
}

async function closePage(page) {
  pages.delete(page);
  await page.context().close();
}

/**
 * Waits until the player page shows a `width`x`height` picture with sound, then until its
 * currentTime, presented frames and decoded audio all advance (by at least `seconds` of media).
 */
async function expectPlayerPlaying(page, { width = null, height = null, seconds = 1, timeout = 20_000 } = {}) {
  const label = pageLabel(page);
  const first = await waitFor(async () => {
    const state = await hlsPlayerState(page);
    const sizeOk = (width == null || state.videoSize[0] === width) && (height == null || state.videoSize[1] === height);
    if (!(state.framesPresented > 0 && sizeOk && state.audioDecodedBytes > 0)) throw new Error(`${label}: ${JSON.stringify(state)}`);
    return state;
  }, { timeout, interval: 200, message: `${label} to show ${width ? `${width}x${height}` : 'a picture'} with sound` });
  return waitFor(async () => {
    const state = await hlsPlayerState(page);
    const stalled = [];
    if (!(state.currentTime >= first.currentTime + seconds)) stalled.push(`currentTime ${first.currentTime} -> ${state.currentTime}`);
    if (!(state.framesPresented > first.framesPresented)) stalled.push(`frames ${first.framesPresented} -> ${state.framesPresented}`);
    if (!(state.audioDecodedBytes > first.audioDecodedBytes)) stalled.push(`audio bytes ${first.audioDecodedBytes} -> ${state.audioDecodedBytes}`);
    if (stalled.length) throw new Error(`${label}: not advancing: ${stalled.join('; ')}; errors ${JSON.stringify(state.errors)}`);
    return state;
  }, { timeout: 5_000 + seconds * 2_000, interval: 200, message: `${label}: picture and sound to keep advancing` });
}

/** What the watch page shows, from the page and its `window.roomcast`. */
function watchInfo(page) {
  return page.evaluate(() => {
    const hook = window.roomcast;
    const text = (id) => document.getElementById(id)?.textContent.trim() ?? null;
    return {
      state: hook?.state ?? null,
      transport: hook?.transport ?? null,
      transportChoice: hook?.transportChoice ?? null,
      fallbackReason: hook?.fallbackReason ?? null,
      hlsPlayer: hook?.hlsPlayer ?? null,
      hlsStatus: hook?.hlsStatus ?? null,
      hlsError: hook?.hlsError ?? null,
      delayMs: hook?.delayMs ?? null,
      delaySource: hook?.delaySource ?? null,
      connectionState: hook?.connectionState ?? null,
      framesPresented: hook?.framesPresented ?? null,
      currentTime: hook?.video?.currentTime ?? null,
      videoSize: [hook?.video?.videoWidth ?? 0, hook?.video?.videoHeight ?? 0],
      badge: text('live-badge'),
      status: text('status-text'),
      via: text('transport-name'),
      delay: text('delay'),
      stage: document.getElementById('stage-message')?.offsetParent ? text('stage-text') : null,
      note: document.getElementById('transport-note')?.hidden ? null : text('transport-note'),
      pressed: Object.fromEntries([...document.querySelectorAll('.transport-switch button')]
        .map((button) => [button.dataset.transport, button.getAttribute('aria-pressed')])),
    };
  });
}

async function describePage(page) {
  const isWatch = await page.evaluate(() => Boolean(window.roomcast?.video)).catch(() => false);
  if (isWatch) {
    const [info, inbound] = await Promise.all([watchInfo(page), inboundStats(page)]);
    return { info, inbound };
  }
  const isPlayer = await page.evaluate(() => Boolean(window.__player)).catch(() => false);
  return isPlayer ? { player: await hlsPlayerState(page) } : { url: page.url() };
}

function expectShown(page, description, predicate, { timeout = 10_000 } = {}) {
  return waitFor(async () => {
    const info = await watchInfo(page);
    if (!predicate(info)) throw new Error(`${pageLabel(page)} shows ${JSON.stringify(info)}`);
    return info;
  }, { timeout, interval: 100, message: `${pageLabel(page)} to show ${description}` });
}

/** The watch page's video advances by `seconds` (over either transport). */
async function expectWatchAdvancing(page, { seconds = 1, timeout = 10_000 } = {}) {
  const first = await watchInfo(page);
  return expectShown(page, `its picture advancing ${seconds} s`, (info) => info.state === 'playing' &&
    info.framesPresented > first.framesPresented && info.currentTime >= first.currentTime + seconds, { timeout });
}

const DELAY_TEXT = /^(≈ )?\d+(\.\d)? (s|ms) behind live$/;

// ---------------------------------------------------------------------------------------------
// Steps

test('the vendored hls.js (web-client/vendor/) is node_modules\' copy of the locked version', () => {
  const lock = JSON.parse(readFileSync(path.join(REPO_ROOT, 'package-lock.json'), 'utf8'));
  const locked = lock.packages?.['node_modules/hls.js']?.version;
  assert.ok(locked, 'package-lock.json has hls.js');
  const installed = JSON.parse(readFileSync(path.join(REPO_ROOT, 'node_modules', 'hls.js', 'package.json'), 'utf8')).version;
  assert.equal(installed, locked, 'node_modules/hls.js is not the locked version: run `npm ci`');
  const vendored = readFileSync(path.join(REPO_ROOT, 'web-client', 'vendor', 'hls.min.js'));
  const upstream = readFileSync(path.join(REPO_ROOT, 'node_modules', 'hls.js', 'dist', 'hls.min.js'));
  assert.ok(vendored.equals(upstream), `web-client/vendor/hls.min.js (${vendored.length} bytes) differs from hls.js ${locked}'s ` +
    `dist/hls.min.js (${upstream.length} bytes): run scripts/vendor-hlsjs.sh and commit the result`);
  const license = readFileSync(path.join(REPO_ROOT, 'web-client', 'vendor', 'hls.js-LICENSE'));
  assert.ok(license.equals(readFileSync(path.join(REPO_ROOT, 'node_modules', 'hls.js', 'LICENSE'))),
    'web-client/vendor/hls.js-LICENSE differs from hls.js\'s LICENSE: run scripts/vendor-hlsjs.sh');
});

step('the server starts with HLS and serves the vendored hls.js at /hls.min.js', async () => {
  const probe = spawnSync(FFMPEG, ['-hide_banner', '-version'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) {
    throw new Error(`${FFMPEG} does not run (${probe.error?.message ?? probe.stderr}): ` +
      'install it (apt-get install --no-install-recommends ffmpeg) or set FFMPEG');
  }
  server = await startServer({ broadcastEndGraceMs: END_GRACE_MS });
  browser = await launchBrowser();
  const response = await fetch(new URL('/hls.min.js', server.url));
  assert.equal(response.status, 200, 'GET /hls.min.js');
  assert.match(response.headers.get('content-type') ?? '', /javascript/, 'content type of /hls.min.js');
  const served = Buffer.from(await response.arrayBuffer());
  assert.ok(served.equals(readFileSync(path.join(REPO_ROOT, 'web-client', 'vendor', 'hls.min.js'))),
    `/hls.min.js (${served.length} bytes) is not web-client/vendor/hls.min.js: rebuild the server`);
});

const llRoom = `hls-ll-${run}`;
let llPush;

step('LL-HLS: an RTMP push plays in hls.js (lowLatencyMode) under the delay target, burned clock and PDT', async () => {
  llPush = startPush('ll', llRoom, { clock: true, bframes: 0 });
  const { playlist } = await waitForPlaylist(llRoom, { push: llPush });
  for (const tag of ['#EXT-X-PROGRAM-DATE-TIME:', '#EXT-X-PART-INF:', '#EXT-X-MAP:', 'CAN-BLOCK-RELOAD=YES']) {
    assert.ok(playlist.includes(tag), `the live playlist has ${tag}:\n${playlist}`);
  }
  const player = await openPlayer(llRoom, 'll-player', `/hls/${llRoom}/index.m3u8`);
  const playing = await expectPlayerPlaying(player, { width: 1280, height: 720 });
  const level = playing.events.find((e) => e.event === 'levelLoaded');
  assert.ok(level?.canBlockReload && level.partCount > 0, `hls.js plays it as LL-HLS (blocking reload, parts): ${JSON.stringify(level)}`);

  await waitFor(async () => {
    const { firstFrameAt, now } = await player.evaluate(() => ({ firstFrameAt: window.__player.firstFrameAt, now: Date.now() }));
    return now - firstFrameAt >= LATENCY_WARMUP_MS;
  }, { timeout: LATENCY_WARMUP_MS + 5_000, interval: 100, message: `${LATENCY_WARMUP_MS} ms of playback before measuring` });
  const result = await measureLatencyInPage(player, LATENCY_SAMPLE_MS, { videoSelector: '#video', pdtDelayExpression: 'window.__player.delayMs()' });
  const delays = result.samples.map((s) => s.delay).sort((a, b) => a - b);
  const pdt = result.samples.map((s) => s.pdtDelay).filter((d) => d != null).sort((a, b) => a - b);
  const steps = result.samples.slice(1).map((s, i) => s.value - result.samples[i].value);
  const plausibleSteps = steps.filter((d) => d >= 0 && d <= 250).length;
  const state = await hlsPlayerState(player);
  const summary = {
    measured_at: new Date().toISOString(),
    method: 'ffmpeg burns floor(wall clock ms) mod 2^32 as 32 blocks into the top 16 rows; hls.js (lowLatencyMode) ' +
      'in headless Chromium plays /hls/<room>/index.m3u8; for each presented frame (requestVideoFrameCallback -> canvas) ' +
      'Date.now() minus the burned clock, and Date.now() minus hls.playingDate (EXT-X-PROGRAM-DATE-TIME)',
    source: llPush.command,
    hls_js: state.version,
    samples: delays.length,
    frames_presented: result.frames,
    rejected_frames: result.rejectedCount,
    median_ms: percentile(delays, 50),
    p95_ms: percentile(delays, 95),
    min_ms: delays[0] ?? null,
    max_ms: delays.at(-1) ?? null,
    pdt_median_ms: percentile(pdt, 50),
    pdt_p95_ms: percentile(pdt, 95),
    hls_js_latency_s: state.latency,
    plausible_clock_steps: `${plausibleSteps}/${steps.length}`,
    bound_median_ms: LL_MEDIAN_BOUND_MS,
    playlist_level: level,
  };
  mkdirSync(OUTPUT_DIR, { recursive: true });
  writeFileSync(path.join(OUTPUT_DIR, 'hls-latency.json'), `${JSON.stringify(summary, null, 2)}\n`);
  console.log(`RTMP -> LL-HLS (hls.js ${state.version}, lowLatencyMode) delay behind the camera: burned clock median ` +
    `${summary.median_ms} ms, p95 ${summary.p95_ms} ms; PROGRAM-DATE-TIME median ${summary.pdt_median_ms} ms, p95 ` +
    `${summary.pdt_p95_ms} ms (${summary.samples} frames; hls.js latency ${state.latency?.toFixed?.(2)} s) -> ` +
    `${path.join(OUTPUT_DIR, 'hls-latency.json')}`);

  assert.ok(delays.length >= 60, `only ${delays.length} readable frames in ${LATENCY_SAMPLE_MS} ms: ${JSON.stringify(result.rejected)}`);
  assert.ok(plausibleSteps >= steps.length * 0.9, `burned clock misread: steps between frames ${JSON.stringify(steps.slice(0, 40))}`);
  assert.ok(summary.min_ms >= 0, `negative delay ${summary.min_ms} ms: the clock is misread`);
  assert.ok(pdt.length >= delays.length * 0.9, `hls.playingDate missing for ${delays.length - pdt.length} frames: no PROGRAM-DATE-TIME?`);
  assert.ok(Math.abs(summary.pdt_median_ms - summary.median_ms) < PDT_AGREEMENT_MS,
    `EXT-X-PROGRAM-DATE-TIME is not the capture clock: PDT-based median ${summary.pdt_median_ms} ms vs burned clock ${summary.median_ms} ms`);
  assert.ok(summary.median_ms < LL_MEDIAN_BOUND_MS, `median LL-HLS delay ${summary.median_ms} ms (bound ${LL_MEDIAN_BOUND_MS} ms)`);
  await closePage(player);
});

step('/watch falls back to HLS when WebRTC cannot connect; the switch moves a viewer to HLS and back', async () => {
  assertRunning(llPush);
  // Relay candidates only and no TURN server: no candidate at all, as behind a firewall that
  // drops UDP. (Chromium's --force-webrtc-ip-handling-policy does not stop loopback ICE here.)
  const blocked = await openViewer(llRoom, 'no-udp-viewer', { initScripts: [relayOnlyInitScript] });
  const openedAt = Date.now();
  const fellBack = await expectShown(blocked, 'HLS playing with a delay readout and the fallback note', (info) => info.transport === 'hls' &&
    info.state === 'playing' && info.via.startsWith('HLS') && DELAY_TEXT.test(info.delay) && Boolean(info.note) &&
    info.pressed.hls === 'true' && info.pressed.webrtc === 'false', { timeout: FALLBACK_BOUND_MS });
  const fallbackMs = Date.now() - openedAt;
  await expectWatchAdvancing(blocked, { seconds: 1 });
  assert.equal(fellBack.videoSize[0], 1280, `picture size ${fellBack.videoSize}`);
  assert.equal(fellBack.delaySource, 'program-date-time');
  assert.ok(fellBack.delayMs > 0 && fellBack.delayMs < 10_000, `delay behind live ${fellBack.delayMs} ms`);
  console.log(`no-UDP viewer: playing over HLS ${fallbackMs} ms after opening, showing ${JSON.stringify(fellBack.delay)} ` +
    `(${fellBack.fallbackReason}); note: ${fellBack.note}`);
  await closePage(blocked);

  const viewer = await openViewer(llRoom, 'switching-viewer');
  const onWebRtc = await expectShown(viewer, 'WebRTC playing', (info) => info.transport === 'webrtc' && info.state === 'playing' &&
    info.connectionState === 'connected' && info.pressed.webrtc === 'true' && DELAY_TEXT.test(info.delay), { timeout: 20_000 });
  await viewer.getByRole('button', { name: 'HLS', exact: true }).click();
  const onHls = await expectShown(viewer, 'HLS playing after pressing "HLS"', (info) => info.transport === 'hls' &&
    info.transportChoice === 'hls' && info.state === 'playing' && info.pressed.hls === 'true' && info.connectionState === null &&
    DELAY_TEXT.test(info.delay) && !info.note, { timeout: 15_000 });
  await expectWatchAdvancing(viewer, { seconds: 1 });
  // Back with the keyboard: focus the button, press Enter.
  await viewer.getByRole('button', { name: 'WebRTC', exact: true }).focus();
  await viewer.keyboard.press('Enter');
  const back = await expectShown(viewer, 'WebRTC playing again after "WebRTC"', (info) => info.transport === 'webrtc' &&
    info.transportChoice === 'webrtc' && info.state === 'playing' && info.connectionState === 'connected' &&
    info.pressed.webrtc === 'true' && info.hlsPlayer === null, { timeout: 15_000 });
  const decoded = (await inboundStats(viewer)).find((s) => s.kind === 'video')?.framesDecoded ?? 0;
  await waitFor(async () => ((await inboundStats(viewer)).find((s) => s.kind === 'video')?.framesDecoded ?? 0) > decoded + 10,
    { timeout: 5_000, interval: 200, message: 'WebRTC frames decoding again' });
  console.log(`switch: WebRTC ${JSON.stringify(onWebRtc.delay)} -> HLS ${JSON.stringify(onHls.delay)} -> WebRTC ${JSON.stringify(back.delay)}`);
  await closePage(viewer);
  await llPush.stop();
});

step('a room participant publishing H.264 from Chromium is packaged and plays in hls.js', async () => {
  const room = `hls-room-${run}`;
  rooms.add(room);
  const presenter = await openRoomPage(browser, server.url, room, 'presenter', { initScripts: [forceH264InitScript] });
  pages.add(presenter);
  allPages.push(presenter);
  const sent = await waitFor(async () => presenter.evaluate(async () => {
    const pc = window.roomcast?.pc;
    if (!pc || pc.connectionState !== 'connected') return null;
    const report = await pc.getStats();
    let video = null;
    report.forEach((s) => {
      if (s.type === 'outbound-rtp' && s.kind === 'video' && s.framesEncoded > 0) video = { codec: report.get(s.codecId)?.mimeType ?? null, framesEncoded: s.framesEncoded };
    });
    return video && { ...video, changed: window.__forceH264.transceivers };
  }), { timeout: 20_000, interval: 250, message: 'the presenter to connect and send video' });
  assert.equal(sent.codec, 'video/H264', `the presenter sends ${JSON.stringify(sent)}`);

  await waitForPlaylist(room);
  const player = await openPlayer(room, 'room-player', `/hls/${room}/index.m3u8`);
  const state = await expectPlayerPlaying(player, { width: 640, height: 480, timeout: 20_000 });
  console.log(`room participant (${sent.codec}) -> HLS: hls.js plays ${state.videoSize.join('x')}, ` +
    `${state.audioDecodedBytes} audio bytes decoded, delay (PDT) ${state.delayMs} ms`);
  await closePage(player);
  await closePage(presenter);
});

step('replay: a stopped push ends the live playlist, /api/rooms lists the replay and hls.js plays it to the end', async () => {
  const room = `hls-replay-${run}`;
  const push = startPush('replay', room);
  await waitForPlaylist(room, { push });
  const livePlayer = await openPlayer(room, 'live-player', `/hls/${room}/index.m3u8`);
  const viewer = await openViewer(room, 'hls-viewer', { query: 'transport=hls' });
  await expectPlayerPlaying(livePlayer, { width: 1280, height: 720, seconds: 3 });
  await expectShown(viewer, 'HLS playing', (info) => info.transport === 'hls' && info.state === 'playing', { timeout: 15_000 });

  // As OBS's "Stop streaming": ffmpeg closes the RTMP stream cleanly on SIGINT.
  const stoppedAt = Date.now();
  await push.kill('SIGINT');
  await push.stop();

  const replay = await waitFor(async () => {
    const directory = await fetchJson('/api/rooms');
    const found = (directory.replays ?? []).find((r) => r.room === room);
    if (!found) throw new Error(`/api/rooms: ${JSON.stringify(directory)}`);
    return found;
  }, { timeout: END_GRACE_MS + 15_000, interval: 250, message: `the replay of ${room} in /api/rooms` });
  const listedMs = Date.now() - stoppedAt;
  for (const key of ['id', 'room', 'host', 'started_at', 'ended_at', 'duration_s', 'url']) {
    assert.ok(replay[key] != null, `replay.${key} in ${JSON.stringify(replay)}`);
  }
  assert.ok(replay.duration_s >= 3, `replay duration ${replay.duration_s} s`);
  const vod = await fetchText(replay.url);
  assert.equal(vod.status, 200, `GET ${replay.url}: ${vod.body.slice(0, 300)}`);
  assert.match(vod.body, /#EXT-X-ENDLIST/, `the replay playlist ends:\n${vod.body}`);

  // The live playlist ended too: the live player plays out and ends, the watch page says so.
  const ended = await waitFor(async () => {
    const state = await hlsPlayerState(livePlayer);
    if (state.endedAt == null) throw new Error(JSON.stringify(state));
    return state;
  }, { timeout: 20_000, interval: 250, message: 'the live hls.js player to end (EXT-X-ENDLIST)' });
  const shown = await expectShown(viewer, '"Broadcast ended"', (info) => info.state === 'ended' && /broadcast ended/i.test(info.stage ?? ''),
    { timeout: 20_000 });
  await closePage(livePlayer);
  await closePage(viewer);

  const player = await openPlayer(room, 'replay-player', replay.url);
  const started = await waitFor(async () => {
    const state = await hlsPlayerState(player);
    if (!(state.framesPresented > 0 && state.videoSize[0] === 1280)) throw new Error(JSON.stringify(state));
    return state;
  }, { timeout: 15_000, interval: 200, message: 'the replay to start playing' });
  assert.equal(started.live, false, 'hls.js sees a VOD playlist');
  const done = await waitFor(async () => {
    const state = await hlsPlayerState(player);
    if (state.endedAt == null) throw new Error(JSON.stringify(state));
    return state;
  }, { timeout: replay.duration_s * 1000 + 15_000, interval: 250, message: `the replay (${replay.duration_s} s) to play to its end` });
  assert.ok(Math.abs(done.duration - replay.duration_s) < 1, `media duration ${done.duration} s vs duration_s ${replay.duration_s}`);
  assert.ok(done.played >= replay.duration_s - 1, `played ${done.played} s of ${replay.duration_s} s`);
  console.log(`replay: listed ${listedMs} ms after ffmpeg stopped (grace ${END_GRACE_MS} ms): ${JSON.stringify(replay)}; ` +
    `live player ended at currentTime ${ended.currentTime.toFixed(2)}, watch page: ${JSON.stringify(shown.stage)}; ` +
    `VOD: duration ${done.duration} s, played ${done.played.toFixed(2)} s, ${done.framesPresented} frames`);
  await closePage(player);

  // The directory's "Play replay" link: the watch page plays the VOD with controls, titled as
  // a replay, with the room's chat beside it.
  const replayPage = await openViewer(room, 'replay-watch', { query: `replay=${encodeURIComponent(replay.id)}` });
  const watched = await waitFor(() => replayPage.evaluate(() => {
    const video = document.querySelector('video');
    const chat = document.querySelector('#chat-panel .chat');
    if (!video || video.currentTime < 1 || !video.controls || !chat) return null;
    return { currentTime: video.currentTime, title: document.getElementById('room-name').textContent, badge: document.getElementById('live-badge').textContent };
  }), { timeout: 20_000, interval: 200, message: 'the watch page to play the replay' });
  assert.match(watched.title, /^Replay of /, `watch page title: ${JSON.stringify(watched)}`);
  assert.equal(watched.badge, 'REPLAY');
  await closePage(replayPage);

  // A server restarted over the same directory still has it.
  const again = await startServer({ replayDir: server.replayDir });
  try {
    const directory = await (await fetch(new URL('/api/rooms', again.url))).json();
    assert.ok((directory.replays ?? []).some((r) => r.id === replay.id), `after a restart: ${JSON.stringify(directory)}`);
  } finally {
    await again.stop();
  }
});

step('no page logged an error', async () => {
  for (const page of allPages) {
    assert.deepEqual(pageErrors(page), [], `${pageLabel(page)} logged errors`);
  }
});
