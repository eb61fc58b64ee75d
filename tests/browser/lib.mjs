// Shared helpers for roomcast's browser end-to-end tests: a real server process, real headless
// Chromium pages (playwright-core driving /usr/bin/chromium), WebRTC stats read from the pages.
//
// Waiting rule: nothing here sleeps for a fixed time to stand in for readiness. Every wait is
// `waitFor` (poll a condition until a deadline, then fail saying what was expected and what was
// last seen) or an in-page recorder that timestamps the moment something happened.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { setTimeout as delay } from 'node:timers/promises';
import { test } from 'node:test';
import { chromium } from 'playwright-core';
// For the nginx helpers (startNginx and friends) at the end of this file.
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const OUTPUT_DIR = path.join(REPO_ROOT, 'test-output', 'browser');

/** Flags that make headless Chromium do WebRTC against a server on 127.0.0.1 with fake devices. */
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection',
  '--autoplay-policy=no-user-gesture-required',
];

const ANSI_ESCAPE = /\x1b\[[0-9;]*[A-Za-z]/g;

// ---------------------------------------------------------------------------------------------
// Waiting

/**
 * Polls `fn` until it succeeds or `timeout` ms have passed.
 *
 * `fn` (sync or async) says "not yet" by returning a falsy value or by throwing; the thrown
 * message is the best way to say what it saw. Anything else ends the wait and is returned.
 * On timeout the error names `message` (what was expected) and the last thing seen.
 */
export async function waitFor(fn, { timeout = 10_000, interval = 100, message = 'condition' } = {}) {
  const start = Date.now();
  const deadline = start + timeout;
  let lastSeen = 'nothing (the condition was never evaluated)';
  for (;;) {
    try {
      const value = await fn();
      if (value) return value;
      lastSeen = `returned ${describe(value)}`;
    } catch (error) {
      lastSeen = error?.message ?? String(error);
    }
    const now = Date.now();
    if (now >= deadline) {
      throw new Error(`Timed out after ${now - start} ms waiting for ${message}; last seen: ${lastSeen}`);
    }
    await delay(Math.min(interval, deadline - now));
  }
}

function describe(value) {
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}

// ---------------------------------------------------------------------------------------------
// Server

/**
 * Starts `roomcast serve` on an ephemeral HTTP port, an ephemeral RTC port and an ephemeral RTMP
 * port (the server's default RTMP port, 1935, would keep two servers from running at once) and
 * waits until it logs `HTTP listening on <url>` (with TLS flags: `HTTPS listening on <url>`).
 * Returns { url, rtmpUrl, logs(), stop(), process }. The server logs at RUST_LOG=info, or at
 * what ROOMCAST_TEST_LOG says (e.g. `info,roomcast_sfu::router=debug`); `env` overrides both.
 *
 * `extraArgs` are added to `args`; a `--flag value` pair there replaces the same flag in `args`.
 * When the arguments include `--rtmp`, it also waits for `RTMP listening on rtmp://<addr>` and
 * returns that base URL as `rtmpUrl` (publish to `${rtmpUrl}/live/<stream key>`); otherwise
 * `rtmpUrl` is null.
 *
 * With `hls` (the default) replays go to `--replay-dir replayDir`: a given directory (a test
 * that restarts a server over the same replays), else a fresh temp directory that stop()
 * removes (ROOMCAST_KEEP_REPLAY_DIR=1 keeps it), so no test writes into the repo.
 * `broadcastEndGraceMs` sets `--broadcast-end-grace-ms` (how soon a stopped source becomes a
 * replay). The returned `replayDir` is the directory used (null without `hls`).
 */
export async function startServer({
  bin = process.env.ROOMCAST_BIN ?? path.join(REPO_ROOT, 'target', 'debug', 'roomcast'),
  args = ['serve', '--http', '127.0.0.1:0', '--rtc-port', '0', '--rtmp', '127.0.0.1:0'],
  extraArgs = [],
  env = {},
  readyTimeout = 20_000,
  hls = true,
  replayDir = null,
  broadcastEndGraceMs = null,
  chatDb = null,
} = {}) {
  if (!existsSync(bin)) {
    throw new Error(`server binary ${bin} does not exist: build it with \`cargo build\` or set ROOMCAST_BIN`);
  }
  const ownReplayDir = hls && !replayDir;
  if (hls) {
    replayDir ??= mkdtempSync(path.join(os.tmpdir(), 'roomcast-replays-'));
    const hlsArgs = ['--replay-dir', replayDir];
    if (broadcastEndGraceMs != null) hlsArgs.push('--broadcast-end-grace-ms', String(broadcastEndGraceMs));
    extraArgs = [...hlsArgs, ...extraArgs];
  } else {
    replayDir = null;
  }
  // The chat database goes to a temporary directory too, unless the test keeps one across
  // restarts (it passes `chatDb` and removes it itself).
  const ownChatDir = chatDb ? null : mkdtempSync(path.join(os.tmpdir(), 'roomcast-chat-'));
  chatDb ??= path.join(ownChatDir, 'chat.sqlite3');
  extraArgs = ['--chat-db', chatDb, ...extraArgs];
  args = mergeArgs(args, extraArgs);
  const wantRtmp = args.some((arg) => arg === '--rtmp' || arg.startsWith('--rtmp='));
  const lines = [];
  const child = spawn(bin, args, {
    cwd: REPO_ROOT,
    env: { ...process.env, RUST_LOG: process.env.ROOMCAST_TEST_LOG ?? 'info', NO_COLOR: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let exit = null;
  const exited = once(child, 'exit').then(([code, signal]) => {
    exit = { code, signal };
    lines.push(`[test] server exited (code ${code}, signal ${signal})`);
  });
  let onLine = () => {};
  for (const stream of [child.stdout, child.stderr]) {
    let partial = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk) => {
      partial += chunk;
      const complete = partial.split('\n');
      partial = complete.pop();
      for (const raw of complete) {
        const line = raw.replace(ANSI_ESCAPE, '');
        lines.push(line);
        if (process.env.ROOMCAST_TEST_VERBOSE) console.log(`[server] ${line}`);
        onLine(line);
      }
    });
  }

  const removeOwnReplayDir = () => {
    if (ownReplayDir && !process.env.ROOMCAST_KEEP_REPLAY_DIR) rmSync(replayDir, { recursive: true, force: true });
    if (ownChatDir) rmSync(ownChatDir, { recursive: true, force: true });
  };
  const stop = async ({ timeout = 5_000 } = {}) => {
    if (exit) {
      removeOwnReplayDir();
      return exit;
    }
    child.kill('SIGTERM');
    const killer = setTimeout(() => {
      lines.push(`[test] server did not exit ${timeout} ms after SIGTERM; sending SIGKILL`);
      child.kill('SIGKILL');
    }, timeout);
    await exited;
    clearTimeout(killer);
    removeOwnReplayDir();
    return exit;
  };

  const { url, rtmpUrl } = await new Promise((resolve, reject) => {
    const found = { url: null, rtmpUrl: null };
    const expected = wantRtmp ? '"HTTP listening on <url>" and "RTMP listening on rtmp://<addr>"' : '"HTTP listening on <url>"';
    const timer = setTimeout(() => {
      reject(new Error(`server did not log ${expected} within ${readyTimeout} ms`));
    }, readyTimeout);
    const finish = (fn, value) => {
      clearTimeout(timer);
      onLine = () => {};
      fn(value);
    };
    const check = (line) => {
      const http = /HTTP listening on (http:\/\/\S+)/.exec(line);
      if (http) found.url ??= http[1];
      // With --tls-cert/--tls-key or --tls-self-signed the server logs an https:// URL instead.
      const https = /HTTPS listening on (https:\/\/\S+)/.exec(line);
      if (https) found.url ??= https[1];
      const rtmp = /RTMP listening on (rtmp:\/\/[^\s/]+)/.exec(line);
      if (rtmp) found.rtmpUrl ??= rtmp[1];
      if (found.url && (found.rtmpUrl || !wantRtmp)) finish(resolve, found);
    };
    lines.forEach(check);
    onLine = check;
    exited.then(() => finish(reject, new Error(`server exited before listening (${describe(exit)})`)));
    child.once('error', (error) => finish(reject, error));
  }).catch(async (error) => {
    await stop({ timeout: 1_000 });
    error.message += `\n--- server output ---\n${lines.join('\n')}`;
    throw error;
  });

  return { url, rtmpUrl, replayDir, logs: () => lines.join('\n'), lines, stop, process: child };
}

/** `args` followed by `extra`, where each `--flag value` pair of `extra` replaces that flag in `args`. */
function mergeArgs(args, extra) {
  const overridden = new Set(extra.filter((arg, i) => arg.startsWith('--') && extra[i + 1] != null && !extra[i + 1].startsWith('--')));
  const kept = [];
  for (let i = 0; i < args.length; i += 1) {
    if (overridden.has(args[i]) && args[i + 1] != null && !args[i + 1].startsWith('--')) {
      i += 1; // and its value
      continue;
    }
    kept.push(args[i]);
  }
  return [...kept, ...extra];
}

// ---------------------------------------------------------------------------------------------
// Browser and pages

export function launchBrowser({ args = [], ...options } = {}) {
  // A document fulfilled by the test (ROOMCAST_WEB_CLIENT_FROM_DISK) has no loopback address
  // of its own, so Chromium's local network access checks would refuse its WebSocket.
  const fromDisk = process.env.ROOMCAST_WEB_CLIENT_FROM_DISK ? ['--disable-features=LocalNetworkAccessChecks'] : [];
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    headless: true,
    args: [...CHROMIUM_ARGS, ...fromDisk, ...args],
    ...options,
  });
}

const pageLogStore = new WeakMap();
const pageLabels = new WeakMap();

/**
 * Opens `<url>/?room=<room>&name=<name>` in its own browser context (own storage, own fake
 * devices) and returns the page once the document has loaded; joining continues in the page.
 * `contextOptions` go to browser.newContext (e.g. a larger `viewport` for screenshots).
 * `initScripts` run in the page before any of its own scripts (see `mediaTimelineInitScript`).
 * `query` adds URL parameters (e.g. `{ simulcast: '3' }`). Pages capture 640×480 (two
 * simulcast layers) unless `query.capture` says otherwise: the client's default, 1280×720, on
 * every page would be more encoding than a 2-core machine does for five pages; the client test
 * covers the default through the lobby.
 */
export async function openRoomPage(browser, url, room, name, { initScripts = [], contextOptions = {}, query = {} } = {}) {
  const page = await newLoggedPage(browser, name, { initScripts, contextOptions });
  const target = new URL('/', url);
  target.searchParams.set('room', room);
  target.searchParams.set('name', name);
  for (const [key, value] of Object.entries({ capture: '640x480', ...query })) target.searchParams.set(key, value);
  await page.goto(target.href);
  return page;
}

/**
 * Opens the broadcast viewer `<url>/watch/<room>` in its own browser context and returns the
 * page once the document has loaded; the WHEP session continues in the page (`window.roomcast`
 * is web-client/watch.js's hook). `label` names the page in logs and diagnostics.
 */
export async function openWatchPage(browser, url, room, { label = `watch-${room}`, initScripts = [], contextOptions = {} } = {}) {
  const page = await newLoggedPage(browser, label, { initScripts, contextOptions });
  await page.goto(new URL(`/watch/${encodeURIComponent(room)}`, url).href);
  return page;
}

/**
 * A new page in its own browser context (own storage, own fake devices) whose console, uncaught
 * errors and crash are recorded for `pageLogs` / `pageErrors`, with `initScripts` installed.
 * Nothing is loaded yet.
 */
export async function newLoggedPage(browser, label, { initScripts = [], contextOptions = {} } = {}) {
  // Small by default: every page shares this machine's CPU (unlike real participants), and
  // software compositing of the video tiles grows with the viewport (measured with 4 pages:
  // ~182% of 2 cores at 1024x640, ~135% at 480x300).
  const context = await browser.newContext({ viewport: { width: 640, height: 400 }, ...contextOptions });
  const page = await context.newPage();
  const logs = [];
  pageLogStore.set(page, logs);
  pageLabels.set(page, label);
  const started = Date.now();
  const stamp = () => `+${String(Date.now() - started).padStart(6)}ms`;
  page.on('console', (message) => logs.push({ type: message.type(), text: `${stamp()} [${message.type()}] ${message.text()}` }));
  page.on('pageerror', (error) => logs.push({ type: 'pageerror', text: `${stamp()} [pageerror] ${error.stack ?? error}` }));
  page.on('crash', () => logs.push({ type: 'crash', text: `${stamp()} [crash] the page crashed` }));
  if (process.env.ROOMCAST_WEB_CLIENT_FROM_DISK) await serveWebClientFromDisk(page);
  for (const script of initScripts) {
    if (Array.isArray(script)) await page.addInitScript(script[0], script[1]);
    else await page.addInitScript(script);
  }
  return page;
}

/**
 * Development aid, off by default: the server embeds web-client/ at compile time, so client
 * changes need a rebuild. With ROOMCAST_WEB_CLIENT_FROM_DISK=1 the pages get every web-client
 * file (index.html for `/`, watch.html for /watch/<room>) from the working tree instead.
 */
async function serveWebClientFromDisk(page) {
  const types = { html: 'text/html', js: 'text/javascript', css: 'text/css', json: 'application/json', svg: 'image/svg+xml', png: 'image/png' };
  const fileFor = (pathname) => {
    if (pathname === '/') return 'index.html';
    if (/^\/watch\/[^/]+\/?$/.test(pathname)) return 'watch.html';
    if (pathname === '/hls.min.js') return 'vendor/hls.min.js';
    const relative = pathname.slice(1);
    if (relative.includes('..')) return null;
    return existsSync(path.join(REPO_ROOT, 'web-client', relative)) && /\.[a-z]+$/.test(relative) ? relative : null;
  };
  await page.route((url) => Boolean(fileFor(url.pathname)), (route) => {
    const file = fileFor(new URL(route.request().url()).pathname);
    const contentType = types[file.split('.').pop()] ?? 'text/plain';
    return route.fulfill({ contentType, body: readFileSync(path.join(REPO_ROOT, 'web-client', file)) });
  });
}

/** Everything the page logged (console, uncaught errors, crashes), oldest first. */
export function pageLogs(page) {
  return (pageLogStore.get(page) ?? []).map((entry) => entry.text);
}

/** Console errors and uncaught exceptions: a healthy page has none. */
export function pageErrors(page) {
  return (pageLogStore.get(page) ?? [])
    .filter((entry) => entry.type === 'error' || entry.type === 'pageerror' || entry.type === 'crash')
    .map((entry) => entry.text);
}

export function pageLabel(page) {
  return pageLabels.get(page) ?? page.url();
}

/** The page's own view of the session, from the `window.roomcast` hook. */
export function sessionInfo(page) {
  return page.evaluate(() => {
    const hook = window.roomcast;
    if (!hook) return null;
    return {
      state: hook.state,
      stateReason: hook.stateReason ?? null,
      participantId: hook.participantId,
      participants: [...hook.participants.values()].map((p) => ({ id: p.id, name: p.name })),
      connectionState: hook.pc?.connectionState ?? null,
      signalingState: hook.pc?.signalingState ?? null,
      mids: Object.fromEntries([...hook.mids].map(([mid, info]) => [mid, info])),
    };
  });
}

/**
 * One entry per inbound-rtp stats object of the page's peer connection:
 * { kind, framesDecoded, frameWidth, packetsReceived, trackIdentifier, mid, participantId, ... }
 * (plus loss and feedback counters: packetsLost, nackCount, pliCount, keyFramesDecoded).
 * `participantId` comes from the server's mid map as the page holds it.
 */
export function inboundStats(page) {
  return page.evaluate(async () => {
    const pc = window.roomcast?.pc;
    if (!pc) return [];
    const midByTrack = new Map(pc.getTransceivers().map((t) => [t.receiver.track.id, t.mid]));
    const report = await pc.getStats();
    const result = [];
    report.forEach((stats) => {
      if (stats.type !== 'inbound-rtp') return;
      const mid = stats.mid ?? midByTrack.get(stats.trackIdentifier) ?? null;
      result.push({
        id: stats.id,
        ssrc: stats.ssrc,
        kind: stats.kind,
        mid,
        participantId: mid == null ? null : window.roomcast.mids?.get(mid)?.participant_id ?? null,
        trackIdentifier: stats.trackIdentifier,
        framesDecoded: stats.framesDecoded ?? 0,
        frameWidth: stats.frameWidth ?? 0,
        frameHeight: stats.frameHeight ?? 0,
        packetsReceived: stats.packetsReceived ?? 0,
        bytesReceived: stats.bytesReceived ?? 0,
        totalAudioEnergy: stats.totalAudioEnergy ?? 0,
        packetsLost: stats.packetsLost ?? 0,
        nackCount: stats.nackCount ?? 0,
        pliCount: stats.pliCount ?? 0,
        keyFramesDecoded: stats.keyFramesDecoded ?? 0,
      });
    });
    return result;
  });
}

/** The remote tiles the page shows: { id, name, videoWidth, videoTrackId, audioTrackIds }. */
export function remoteTiles(page) {
  return page.evaluate(() => [...document.querySelectorAll('#grid .tile[data-role="remote"]')].map((tile) => {
    const video = tile.querySelector('video');
    return {
      id: Number(tile.dataset.participantId),
      name: tile.querySelector('.tile-name')?.textContent ?? '',
      hasVideo: tile.classList.contains('has-video'),
      videoWidth: video?.videoWidth ?? 0,
      videoTrackId: video?.srcObject?.getVideoTracks()[0]?.id ?? null,
      audioTrackIds: [...tile.querySelectorAll('audio')].flatMap((a) => a.srcObject?.getAudioTracks().map((t) => t.id) ?? []),
      status: tile.querySelector('.tile-status')?.textContent ?? '',
    };
  }));
}

/** Every transceiver of the page's peer connection, as Chromium reports it. */
export function transceivers(page) {
  return page.evaluate(() => (window.roomcast?.pc?.getTransceivers() ?? []).map((t) => ({
    mid: t.mid,
    direction: t.direction,
    currentDirection: t.currentDirection,
    kind: t.receiver.track.kind,
    receiverTrackId: t.receiver.track.id,
    receiverTrackState: t.receiver.track.readyState,
    receiverTrackMuted: t.receiver.track.muted,
    mappedTo: t.mid == null ? null : window.roomcast.mids.get(t.mid) ?? null,
  })));
}

/**
 * Init script (pass to `openRoomPage`'s `initScripts` as [mediaTimelineInitScript, options]):
 * wraps RTCPeerConnection so that, from the moment the page creates one, the page itself records
 * on the performance.now() clock
 *   - every connectionState change (`states`, `connectedAt` = first 'connected'), when the event
 *     is dispatched (on a busy page that can be well after the fact),
 *   - `transportConnectedAt`: the first stats sample whose transport reports dtlsState
 *     'connected', and `notConnectedAt`: the last sample before it (connection happened between),
 *   - for each inbound video stream, the first getStats sample with framesDecoded > 0
 *     (`firstFrames[key]` = { t, previousSampleAt, resolvedAt, mid, trackIdentifier, frameWidth }),
 *     where `t` is when Chromium collected that sample (RTCStats.timestamp), and likewise
 *     `firstPackets[key]` for the first sample with packetsReceived > 0 (decode minus packet
 *     time is the wait for a decodable keyframe),
 *   - for each received video track, when the first frame shown by a 2-pixel <video> the script
 *     adds for it was decoded (`decodedFrames[mid]` = { decodedAt, receiveTime,
 *     presentationTime, callbackAt, width }), from requestVideoFrameCallback metadata, which
 *     Chromium stamps on its media threads (receiveTime + processingDuration).
 * Both first-frame times are upper bounds on the first decode, use the smaller: the stats one is
 * late by up to the gap since the previous sample (`previousSampleAt`; stats are sampled every
 * `intervalMs` in the page, no round trips to the test, but on a busy page timers and getStats
 * wait for busy threads, see `sampleLog` = [start, getStats duration] per sample); the
 * requestVideoFrameCallback one is exact for its frame but late if that <video> started playing
 * after the first frame was decoded.
 * Sampling stops after `maxDurationMs` or once `expectVideos` videos have a first frame.
 * Read the result with `mediaTimeline(page)`.
 */
export function mediaTimelineInitScript({ intervalMs = 20, maxDurationMs = 30_000, expectVideos = Infinity } = {}) {
  const timeline = {
    createdAt: null,
    connectedAt: null, // first 'connected' connectionstatechange event
    transportConnectedAt: null, // first stats sample whose transport has dtlsState 'connected'
    notConnectedAt: null, // last stats sample whose transport was not connected yet
    states: [],
    firstFrames: {},
    firstPackets: {},
    decodedFrames: {},
    samples: 0,
    sampleLog: [],
  };
  window.__roomcastTimeline = timeline;
  const Native = window.RTCPeerConnection;
  class TimedPeerConnection extends Native {
    constructor(...args) {
      super(...args);
      const pc = this;
      const createdAt = performance.now();
      timeline.createdAt ??= createdAt;
      pc.addEventListener('connectionstatechange', () => {
        const t = performance.now();
        timeline.states.push({ state: pc.connectionState, t });
        if (pc.connectionState === 'connected') timeline.connectedAt ??= t;
      });
      // Exact first-frame times: a 2-pixel <video> of our own per received video track, and
      // requestVideoFrameCallback's metadata for its first frame. For WebRTC frames Chromium
      // stamps receiveTime (last packet of the frame in) and processingDuration (decode) on the
      // media threads, so the result does not depend on when this page's main thread is free.
      pc.addEventListener('track', ({ track, transceiver }) => {
        if (track.kind !== 'video') return;
        const mid = transceiver.mid;
        const video = document.createElement('video');
        video.muted = true;
        video.playsInline = true;
        video.setAttribute('aria-hidden', 'true');
        video.style.cssText = 'position:fixed;left:0;top:0;width:2px;height:2px;pointer-events:none;z-index:-1';
        video.srcObject = new MediaStream([track]);
        document.documentElement.append(video);
        video.play().catch(() => {});
        video.requestVideoFrameCallback((callbackAt, frame) => {
          const decodedAt = frame.receiveTime != null && frame.processingDuration != null
            ? frame.receiveTime + frame.processingDuration * 1000
            : frame.presentationTime;
          timeline.decodedFrames[mid] ??= {
            mid,
            trackIdentifier: track.id,
            decodedAt,
            receiveTime: frame.receiveTime ?? null,
            presentationTime: frame.presentationTime,
            callbackAt,
            width: frame.width,
          };
          video.srcObject = null; // one frame is all it is for
          video.remove();
        });
      });
      let previousSampleAt = createdAt;
      const sample = async () => {
        if (pc.connectionState === 'closed') return;
        const started = performance.now();
        try {
          const report = await pc.getStats();
          const resolvedAt = performance.now();
          // [when the sample started, how long getStats took], relative to the pc's creation
          if (timeline.sampleLog.length < 200) timeline.sampleLog.push([Math.round(started - createdAt), Math.round(resolvedAt - started)]);
          // When Chromium collected the stats (RTCStats.timestamp is epoch ms here): the values
          // describe that instant, which can be well before the promise resolves on a busy page.
          let t = resolvedAt;
          report.forEach((stats) => {
            const at = stats.timestamp > 1e12 ? stats.timestamp - performance.timeOrigin : stats.timestamp;
            if (at >= started - 1 && at <= resolvedAt) t = Math.min(t, at);
          });
          let transportConnected = false;
          report.forEach((stats) => {
            if (stats.type === 'transport' && stats.dtlsState === 'connected') transportConnected = true;
          });
          if (transportConnected) timeline.transportConnectedAt ??= t;
          else if (timeline.transportConnectedAt == null) timeline.notConnectedAt = t;
          report.forEach((stats) => {
            if (stats.type !== 'inbound-rtp' || stats.kind !== 'video' || !(stats.packetsReceived > 0)) return;
            const key = stats.mid ?? stats.trackIdentifier;
            timeline.firstPackets[key] ??= { t, previousSampleAt, mid: stats.mid ?? null, trackIdentifier: stats.trackIdentifier };
            if (!(stats.framesDecoded > 0)) return;
            timeline.firstFrames[key] ??= {
              t,
              resolvedAt,
              previousSampleAt,
              mid: stats.mid ?? null,
              trackIdentifier: stats.trackIdentifier,
              frameWidth: stats.frameWidth ?? 0,
              framesDecoded: stats.framesDecoded,
            };
          });
          previousSampleAt = t;
          timeline.samples += 1;
        } catch (error) {
          timeline.lastError = String(error);
        }
        const done = Object.keys(timeline.firstFrames).length >= expectVideos;
        if (!done && performance.now() - createdAt < maxDurationMs) setTimeout(sample, intervalMs);
      };
      setTimeout(sample, intervalMs);
    }
  }
  window.RTCPeerConnection = TimedPeerConnection;
}

/**
 * What `mediaTimelineInitScript` recorded, with each first frame's mid and participant resolved.
 * `connectedObservedAt` is the earliest observation of the connection being up (event or stats),
 * the best available estimate of when it happened (the truth lies after `notConnectedAt`).
 */
export function mediaTimeline(page) {
  return page.evaluate(() => {
    const timeline = window.__roomcastTimeline;
    if (!timeline) return null;
    const pc = window.roomcast?.pc;
    const midByTrack = new Map((pc?.getTransceivers() ?? []).map((t) => [t.receiver.track.id, t.mid]));
    const resolve = (entries) => Object.values(entries).map((entry) => {
      const mid = entry.mid ?? midByTrack.get(entry.trackIdentifier) ?? null;
      return { ...entry, mid, participantId: mid == null ? null : window.roomcast?.mids.get(mid)?.participant_id ?? null };
    });
    const firstFrames = resolve(timeline.firstFrames);
    const firstPackets = resolve(timeline.firstPackets);
    const decodedFrames = resolve(timeline.decodedFrames);
    const observations = [timeline.connectedAt, timeline.transportConnectedAt].filter((t) => t != null);
    const connectedObservedAt = observations.length ? Math.min(...observations) : null;
    // A stats snapshot can trail the event by a few ms; the window cannot end before it starts.
    const notConnectedAt = timeline.notConnectedAt == null || connectedObservedAt == null
      ? timeline.notConnectedAt : Math.min(timeline.notConnectedAt, connectedObservedAt);
    return { ...timeline, notConnectedAt, connectedObservedAt, firstFrames, firstPackets, decodedFrames };
  });
}

/**
 * Starts an in-page recorder for one participant's departure, as seen by `page`. Every 10 ms it
 * checks, and stamps with Date.now() (the same clock as the test's Date.now()):
 *   - tileGoneAt: no remote tile for `participantId` is left in the grid;
 *   - tracksDeadAt: none of `mids` is still live, i.e. no transceiver with one of these mids is
 *     both receiving (currentDirection recvonly/sendrecv) with a live receiver track and still
 *     mapped to `participantId` (or unmapped) in the page's mid map.
 * Read it with `departureRecord(page)`.
 */
export function watchDeparture(page, participantId, mids, { maxDurationMs = 30_000 } = {}) {
  return page.evaluate(({ participantId, mids, maxDurationMs }) => {
    const record = { startedAt: Date.now(), tileGoneAt: null, tracksDeadAt: null, liveMids: null, checks: 0 };
    window.__departure = record;
    const liveMids = () => (window.roomcast?.pc?.getTransceivers() ?? [])
      .filter((t) => mids.includes(t.mid))
      .filter((t) => t.currentDirection === 'recvonly' || t.currentDirection === 'sendrecv')
      .filter((t) => t.receiver.track.readyState === 'live')
      .filter((t) => {
        const owner = window.roomcast.mids.get(t.mid)?.participant_id;
        return owner === undefined || owner === participantId;
      })
      .map((t) => t.mid);
    const check = () => {
      const now = Date.now();
      record.checks += 1;
      const tile = document.querySelector(`#grid .tile[data-role="remote"][data-participant-id="${participantId}"]`);
      if (record.tileGoneAt == null && !tile) record.tileGoneAt = now;
      const live = liveMids();
      record.liveMids = live;
      if (record.tracksDeadAt == null && live.length === 0) record.tracksDeadAt = now;
      const finished = record.tileGoneAt != null && record.tracksDeadAt != null;
      if (!finished && now - record.startedAt < maxDurationMs) setTimeout(check, 10);
    };
    check();
  }, { participantId, mids, maxDurationMs });
}

export function departureRecord(page) {
  return page.evaluate(() => window.__departure ?? null);
}

// ---------------------------------------------------------------------------------------------
// Diagnostics

/**
 * Prints (and writes to test-output/browser/) what is needed to understand a failure: the server
 * log, each page's console, session state, transceivers and stats, and a screenshot of each page.
 * `describePage(page)` replaces the room-page state (session, tiles, transceivers, stats) with
 * whatever another kind of page should report; `extra` ({ name: text }) adds more logs.
 */
export async function dumpDiagnostics({ server, pages = [], label = 'failure', describePage = describeRoomPage, extra = {} }) {
  mkdirSync(OUTPUT_DIR, { recursive: true });
  const sections = [];
  if (server) {
    writeFileSync(path.join(OUTPUT_DIR, `${label}-server.log`), server.logs());
    const lines = server.logs().split('\n');
    sections.push(`--- server log (last 200 of ${lines.length} lines; full log in ${OUTPUT_DIR}) ---\n${lines.slice(-200).join('\n')}`);
  }
  for (const page of pages) {
    const name = pageLabel(page);
    let state = 'page closed';
    if (!page.isClosed()) {
      try {
        state = JSON.stringify(await describePage(page), null, 1);
        writeFileSync(path.join(OUTPUT_DIR, `${label}-${name}-state.json`), state);
        await page.screenshot({ path: path.join(OUTPUT_DIR, `${label}-${name}.png`) });
      } catch (error) {
        state = `could not read the page: ${error.message}`;
      }
    }
    const logs = pageLogs(page);
    writeFileSync(path.join(OUTPUT_DIR, `${label}-${name}-console.log`), logs.join('\n'));
    sections.push(`--- page ${name}: state ---\n${state}\n--- page ${name}: console (last 60 of ${logs.length}) ---\n${logs.slice(-60).join('\n')}`);
  }
  for (const [name, text] of Object.entries(extra)) {
    writeFileSync(path.join(OUTPUT_DIR, `${label}-${name}.log`), text);
    const lines = text.split('\n');
    sections.push(`--- ${name} (last 60 of ${lines.length} lines) ---\n${lines.slice(-60).join('\n')}`);
  }
  console.log(sections.join('\n'));
}

async function describeRoomPage(page) {
  const [info, tiles, trx, stats] = await Promise.all([
    sessionInfo(page), remoteTiles(page), transceivers(page), inboundStats(page),
  ]);
  return { info, tiles, transceivers: trx, inbound: stats };
}

// ---------------------------------------------------------------------------------------------
// Room media (shared by the room tests)

/**
 * Waits until `page` decodes video from and receives audio from every participant in `expected`
 * (Map name -> participant id), then until all those streams advance once more. Returns the
 * last inbound-rtp sample. (rooms.test.mjs has the same check as a local function.)
 */
export async function expectMediaFrom(page, expected, { timeout = 30_000 } = {}) {
  const wantedIds = [...expected.values()];
  const label = pageLabel(page);
  const first = await waitFor(async () => {
    const stats = await inboundStats(page);
    const videos = stats.filter((s) => s.kind === 'video' && s.framesDecoded > 0 && s.frameWidth > 0);
    const audios = stats.filter((s) => s.kind === 'audio' && s.packetsReceived > 0);
    const missing = wantedIds.filter((id) => !videos.some((s) => s.participantId === id) || !audios.some((s) => s.participantId === id));
    if (missing.length) {
      throw new Error(`${label}: ${videos.length} decoding videos, ${audios.length} audio streams with packets, ` +
        `no media yet from participants ${JSON.stringify(missing)}; inbound-rtp: ${JSON.stringify(stats)}`);
    }
    return stats;
  }, { timeout, interval: 250, message: `${label} to decode video and receive audio from ${JSON.stringify([...expected.keys()])}` });

  const base = wantedIds.flatMap((id) => [
    first.find((s) => s.kind === 'video' && s.participantId === id && s.framesDecoded > 0),
    first.find((s) => s.kind === 'audio' && s.participantId === id && s.packetsReceived > 0),
  ]);
  return waitFor(async () => {
    const stats = await inboundStats(page);
    const stalled = base.filter((was) => {
      const now = stats.find((s) => s.id === was.id);
      return was.kind === 'video' ? !(now?.framesDecoded > was.framesDecoded) : !(now?.packetsReceived > was.packetsReceived);
    }).map((was) => `${was.kind} of ${was.participantId}`);
    if (stalled.length) throw new Error(`${label}: not advancing: ${stalled.join(', ')}`);
    return stats;
  }, { timeout: 5_000, interval: 200, message: `${label}: every received stream to keep advancing` });
}

// ---------------------------------------------------------------------------------------------
// nginx in front (nginx/roomcast.conf and nginx/roomcast-rtmps.conf)

export const NGINX_BIN = process.env.NGINX ?? '/usr/sbin/nginx';
/** Debian's libnginx-mod-stream; the test's own nginx.conf loads it (the repo's files do not). */
export const NGINX_STREAM_MODULE = '/usr/lib/nginx/modules/ngx_stream_module.so';

/** A TCP port free on 127.0.0.1 right now (the kernel's pick; closed again before returning). */
export async function freePort() {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  server.close();
  await once(server, 'close');
  return port;
}

/** Whether this host can listen on the IPv6 loopback (gVisor and some CI containers cannot). */
async function hasIpv6Loopback() {
  const server = net.createServer();
  try {
    server.listen(0, '::1');
    await once(server, 'listening');
    server.close();
    return true;
  } catch {
    return false;
  }
}

/**
 * A self-signed certificate for localhost and 127.0.0.1 in `dir`: { cert, key } (file paths)
 * and `pem` (the certificate's text: pass it as `ca` to trust exactly this certificate).
 */
export function makeSelfSignedCert(dir) {
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  const result = spawnSync('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
    '-keyout', key, '-out', cert,
  ], { encoding: 'utf8' });
  if (result.error || result.status !== 0) {
    throw new Error(`openssl req -x509 failed: ${result.error?.message ?? result.stderr}`);
  }
  return { cert, key, pem: readFileSync(cert, 'utf8') };
}

/**
 * Replaces each [from, to] of `substitutions` in `text` (every occurrence, literally) and fails
 * when one finds nothing: the test would no longer be exercising the file it claims to.
 * Returns { text, counts } (occurrences replaced, per substitution).
 */
export function templateConfig(text, file, substitutions) {
  const counts = [];
  for (const [from, to] of substitutions) {
    const parts = text.split(from);
    if (parts.length === 1) {
      throw new Error(`templating ${file}: "${from}" does not occur in it. The substitutions in ` +
        'tests/browser/lib.mjs (startNginx) and the config must change together.');
    }
    counts.push([from, parts.length - 1]);
    text = parts.join(to);
  }
  return { text, counts };
}

/**
 * Runs Debian's nginx with the repo's nginx/roomcast.conf (in `http {}`) and
 * nginx/roomcast-rtmps.conf (in the main context) in front of `server` (from startServer, with
 * an RTMP listener), unprivileged ports, everything under a fresh temp directory.
 *
 * The two files are used as they are except for the substitutions listed below (ports, paths,
 * the certificate, and optionally the /metrics allow list): `nginx -t` runs first and its
 * complaint is the error. `upstream` replaces roomcast's HTTP address (a stand-in server);
 * `metricsAllow` replaces the /metrics allow list with that one address.
 *
 * Returns { httpsUrl, httpUrl, rtmpsUrl, httpsPort, httpPort, rtmpsPort, dir, cert, ca,
 * substitutions, accessLog(), logs(), stop() }; `ca` is the certificate's PEM.
 */
export async function startNginx({
  server,
  upstream = null,
  metricsAllow = null,
  readyTimeout = 10_000,
} = {}) {
  if (!existsSync(NGINX_BIN)) {
    throw new Error(`${NGINX_BIN} does not exist: apt-get install --no-install-recommends nginx libnginx-mod-stream (or set NGINX)`);
  }
  if (!existsSync(NGINX_STREAM_MODULE)) {
    throw new Error(`${NGINX_STREAM_MODULE} does not exist: apt-get install --no-install-recommends libnginx-mod-stream`);
  }
  const httpAddr = upstream ?? new URL(server.url).host;
  if (!server?.rtmpUrl && !upstream) throw new Error('startNginx needs a server started with --rtmp (server.rtmpUrl)');
  const rtmpAddr = server?.rtmpUrl ? new URL(server.rtmpUrl).host : '127.0.0.1:9'; // discard: nothing listens

  const dir = mkdtempSync(path.join(os.tmpdir(), 'roomcast-nginx-'));
  // nginx's workers drop root for `nobody`: they must reach the cache, temp and webroot dirs.
  chmodSync(dir, 0o755);
  for (const sub of ['conf', 'logs', 'tmp', 'cache', 'acme']) mkdirSync(path.join(dir, sub));
  const cert = makeSelfSignedCert(dir);
  const [httpPort, httpsPort, rtmpsPort] = [await freePort(), await freePort(), await freePort()];
  const ipv6 = await hasIpv6Loopback();
  // The IPv6 listen lines: on the IPv6 loopback, or commented out where there is none.
  const v6 = (line, listen) => [line, ipv6 ? listen : `# (no IPv6 loopback on this host) ${line}`];

  // The whole list of differences between the repo's files and what runs here.
  const certificate = [
    ['/etc/letsencrypt/live/example.com/fullchain.pem', cert.cert],
    ['/etc/letsencrypt/live/example.com/privkey.pem', cert.key],
  ];
  const site = [
    ['listen 80;', `listen 127.0.0.1:${httpPort};`],
    v6('listen [::]:80;', `listen [::1]:${httpPort};`),
    ['listen 443 ssl http2;', `listen 127.0.0.1:${httpsPort} ssl http2;`],
    v6('listen [::]:443 ssl http2;', `listen [::1]:${httpsPort} ssl http2;`),
    ['server 127.0.0.1:8080;', `server ${httpAddr};`],
    ...certificate,
    ['/var/cache/nginx/roomcast-hls', path.join(dir, 'cache', 'hls')],
    ['/var/www/letsencrypt', path.join(dir, 'acme')],
    ['/var/log/nginx/', `${path.join(dir, 'logs')}/`],
    ...(metricsAllow ? [['allow 127.0.0.1;', `allow ${metricsAllow};`], ['allow ::1;', `allow ${metricsAllow};`]] : []),
  ];
  const rtmps = [
    ['listen 1936 ssl;', `listen 127.0.0.1:${rtmpsPort} ssl;`],
    v6('listen [::]:1936 ssl;', `listen [::1]:${rtmpsPort} ssl;`),
    ['server 127.0.0.1:1935;', `server ${rtmpAddr};`],
    ...certificate,
  ];
  const siteFile = path.join(REPO_ROOT, 'nginx', 'roomcast.conf');
  const rtmpsFile = path.join(REPO_ROOT, 'nginx', 'roomcast-rtmps.conf');
  const siteConf = templateConfig(readFileSync(siteFile, 'utf8'), siteFile, site);
  const rtmpsConf = templateConfig(readFileSync(rtmpsFile, 'utf8'), rtmpsFile, rtmps);
  writeFileSync(path.join(dir, 'conf', 'roomcast.conf'), siteConf.text);
  writeFileSync(path.join(dir, 'conf', 'roomcast-rtmps.conf'), rtmpsConf.text);

  // The test's own main configuration: what /etc/nginx/nginx.conf is on a server, with every
  // path of nginx's own under `dir`.
  const mainConf = path.join(dir, 'nginx.conf');
  const tmp = (name) => path.join(dir, 'tmp', name);
  writeFileSync(mainConf, [
    `load_module ${NGINX_STREAM_MODULE};`,
    'worker_processes 1;',
    `pid ${path.join(dir, 'nginx.pid')};`,
    `error_log ${path.join(dir, 'logs', 'error.log')} notice;`,
    'events { worker_connections 512; }',
    'http {',
    `    access_log ${path.join(dir, 'logs', 'access.log')};`,
    `    client_body_temp_path ${tmp('body')};`,
    `    proxy_temp_path ${tmp('proxy')};`,
    `    fastcgi_temp_path ${tmp('fastcgi')};`,
    `    uwsgi_temp_path ${tmp('uwsgi')};`,
    `    scgi_temp_path ${tmp('scgi')};`,
    `    include ${path.join(dir, 'conf', 'roomcast.conf')};`,
    '}',
    '# The RTMPS file belongs to the main context, outside http {}.',
    `include ${path.join(dir, 'conf', 'roomcast-rtmps.conf')};`,
    '',
  ].join('\n'));

  const nginxArgs = ['-p', `${dir}/`, '-c', mainConf, '-g', 'daemon off;'];
  const check = spawnSync(NGINX_BIN, ['-t', ...nginxArgs], { encoding: 'utf8' });
  if (check.error || check.status !== 0) {
    throw new Error(`nginx -t refused the configuration (the repo's nginx/*.conf after the test's substitutions, in ${dir}):\n` +
      `${check.error?.message ?? ''}${check.stderr}${check.stdout}`);
  }

  const lines = [];
  const child = spawn(NGINX_BIN, nginxArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
  for (const stream of [child.stdout, child.stderr]) {
    stream.setEncoding('utf8');
    stream.on('data', (chunk) => lines.push(...chunk.trimEnd().split('\n')));
  }
  let exit = null;
  const exited = once(child, 'exit').then(([code, signal]) => {
    exit = { code, signal };
    lines.push(`[test] nginx exited (code ${code}, signal ${signal})`);
  });
  child.once('error', (error) => lines.push(`[test] nginx failed to start: ${error.message}`));
  const readLog = (name) => {
    const file = path.join(dir, 'logs', name);
    return existsSync(file) ? readFileSync(file, 'utf8') : '';
  };
  const logs = () => [
    `--- nginx stdout/stderr ---\n${lines.join('\n')}`,
    ...readdirSync(path.join(dir, 'logs')).map((name) => `--- ${name} ---\n${readLog(name)}`),
  ].join('\n');

  const stop = async ({ timeout = 5_000 } = {}) => {
    if (!exit) {
      child.kill('SIGTERM'); // fast shutdown: open WebSockets and RTMPS streams are cut
      const killer = setTimeout(() => child.kill('SIGKILL'), timeout);
      await exited;
      clearTimeout(killer);
    }
    if (!process.env.ROOMCAST_KEEP_NGINX_DIR) rmSync(dir, { recursive: true, force: true });
    return exit;
  };

  try {
    for (const port of [httpPort, httpsPort, rtmpsPort]) {
      await waitFor(async () => {
        if (exit) throw new Error(`nginx exited ${JSON.stringify(exit)}`);
        const socket = net.connect(port, '127.0.0.1');
        try {
          await once(socket, 'connect');
          return true;
        } finally {
          socket.destroy();
        }
      }, { timeout: readyTimeout, interval: 50, message: `nginx to accept connections on 127.0.0.1:${port}` });
    }
  } catch (error) {
    error.message += `\n${logs()}`;
    await stop();
    throw error;
  }

  return {
    httpsUrl: `https://localhost:${httpsPort}`,
    httpUrl: `http://localhost:${httpPort}`,
    rtmpsUrl: `rtmps://localhost:${rtmpsPort}`,
    httpsPort,
    httpPort,
    rtmpsPort,
    dir,
    cert,
    ca: cert.pem,
    substitutions: { 'roomcast.conf': siteConf.counts, 'roomcast-rtmps.conf': rtmpsConf.counts },
    accessLog: () => readLog('roomcast.access.log'),
    logs,
    stop,
    process: child,
  };
}

/**
 * One HTTP(S) request from node to 127.0.0.1, whatever host `url` names (its host still goes
 * in the Host header and, for https, in SNI). For https, `ca` is the only certificate trusted.
 * Resolves to { status, headers, body } (body as text).
 */
export function request(url, { method = 'GET', headers = {}, body = null, ca = undefined, timeout = 10_000 } = {}) {
  const target = new URL(url);
  const client = target.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = client.request({
      host: '127.0.0.1',
      port: target.port,
      path: target.pathname + target.search,
      method,
      headers: { Host: target.host, ...headers },
      servername: target.hostname,
      ca,
      agent: false,
      timeout,
    }, (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk) => { text += chunk; });
      response.on('end', () => resolve({ status: response.statusCode, headers: response.headers, body: text }));
      response.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${url}: no answer in ${timeout} ms`)));
    req.on('error', reject);
    req.end(body ?? undefined);
  });
}

// ---------------------------------------------------------------------------------------------
// coturn (TURN relay; tests/browser/turn.test.mjs)

export const TURNSERVER_BIN = process.env.TURNSERVER ?? '/usr/bin/turnserver';

/**
 * Runs Debian's coturn on 127.0.0.1 with TURN REST credentials (`use-auth-secret`,
 * `static-auth-secret=<secret>`, the settings roomcast's --turn-secret must match), UDP and TCP
 * on a free port, relay ports in a small range, every file in a fresh temp directory, and waits
 * until it accepts connections. Returns { port, url (turn:127.0.0.1:PORT?transport=udp), realm,
 * dir, lines, logs(), stop() }; stop() also removes the directory.
 */
export async function startTurnServer({ secret, realm = 'roomcast.test', readyTimeout = 10_000 } = {}) {
  if (!existsSync(TURNSERVER_BIN)) {
    throw new Error(`${TURNSERVER_BIN} does not exist: apt-get install --no-install-recommends coturn (or set TURNSERVER)`);
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'roomcast-coturn-'));
  const port = await freePort();
  // 50 relay ports somewhere in 49152-64199: coturn skips the ones in use.
  const minPort = 49_152 + 50 * Math.floor(Math.random() * 300);
  const config = [
    'listening-ip=127.0.0.1',
    'relay-ip=127.0.0.1',
    `listening-port=${port}`,
    'use-auth-secret',
    `static-auth-secret=${secret}`,
    `realm=${realm}`,
    // roomcast and the browsers are all on loopback, which coturn refuses as a peer by default.
    'allow-loopback-peers',
    'no-tls',
    'no-dtls',
    'no-cli',
    `min-port=${minPort}`,
    `max-port=${minPort + 49}`,
    'fingerprint',
    `pidfile=${path.join(dir, 'turnserver.pid')}`,
    `userdb=${path.join(dir, 'turndb')}`,
    'log-file=stdout',
    // Logs each session and request with its username: how the test sees allocations.
    'verbose',
  ];
  const configFile = path.join(dir, 'turnserver.conf');
  writeFileSync(configFile, `${config.join('\n')}\n`);
  const lines = [];
  const child = spawn(TURNSERVER_BIN, ['-c', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  let exit = null;
  const exited = once(child, 'exit').then(([code, signal]) => {
    exit = { code, signal };
    lines.push(`[test] turnserver exited (code ${code}, signal ${signal})`);
  });
  for (const stream of [child.stdout, child.stderr]) {
    let partial = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk) => {
      partial += chunk;
      const complete = partial.split('\n');
      partial = complete.pop();
      lines.push(...complete);
      if (process.env.ROOMCAST_TEST_VERBOSE) complete.forEach((line) => console.log(`[coturn] ${line}`));
    });
  }
  const stop = async ({ timeout = 5_000 } = {}) => {
    if (!exit) {
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), timeout);
      await exited;
      clearTimeout(killer);
    }
    rmSync(dir, { recursive: true, force: true });
    return exit;
  };
  try {
    await waitFor(async () => {
      if (exit) throw new Error(`turnserver exited: ${JSON.stringify(exit)}`);
      const socket = net.connect(port, '127.0.0.1');
      try {
        await once(socket, 'connect');
        return true;
      } finally {
        socket.destroy();
      }
    }, { timeout: readyTimeout, interval: 50, message: `turnserver to listen on 127.0.0.1:${port}` });
  } catch (error) {
    await stop({ timeout: 1_000 });
    error.message += `\n--- turnserver output ---\n${lines.join('\n')}`;
    throw error;
  }
  return { port, url: `turn:127.0.0.1:${port}?transport=udp`, realm, dir, lines, logs: () => lines.join('\n'), stop };
}

/**
 * Init script: every RTCPeerConnection the page creates uses only relay candidates
 * (`iceTransportPolicy: 'relay'`, kept through setConfiguration), as for a client whose UDP is
 * blocked except to its TURN server. Each one's state changes are recorded in `window.__relayPcs`
 * ({ createdAt, connectionStates, iceStates, iceServers }, Date.now() clock).
 */
export function relayOnlyInitScript() {
  const Native = window.RTCPeerConnection;
  const records = [];
  window.__relayPcs = records;
  const relayOnly = (config) => ({ ...config, iceTransportPolicy: 'relay' });
  class RelayOnlyPeerConnection extends Native {
    constructor(config = {}, ...rest) {
      super(relayOnly(config), ...rest);
      const record = { createdAt: Date.now(), connectionStates: [], iceStates: [], iceServers: config.iceServers ?? [] };
      records.push(record);
      this.addEventListener('connectionstatechange', () => record.connectionStates.push(this.connectionState));
      this.addEventListener('iceconnectionstatechange', () => record.iceStates.push(this.iceConnectionState));
    }

    setConfiguration(config) {
      records.at(-1).iceServers = config?.iceServers ?? [];
      return super.setConfiguration(relayOnly(config));
    }
  }
  window.RTCPeerConnection = RelayOnlyPeerConnection;
}

/** What `relayOnlyInitScript` recorded: one entry per peer connection, oldest first. */
export function relayPcRecords(page) {
  return page.evaluate(() => window.__relayPcs ?? null);
}

/**
 * The ICE candidate pair the page's peer connection (`window.roomcast.pc`) sends on:
 * { state, local: { candidateType, protocol, address, port, relayProtocol }, remote: {...} },
 * or null while there is none.
 */
export function selectedCandidatePair(page) {
  return page.evaluate(async () => {
    const pc = window.roomcast?.pc;
    if (!pc) return null;
    const report = await pc.getStats();
    const byId = new Map();
    report.forEach((stats) => byId.set(stats.id, stats));
    let pair = null;
    report.forEach((stats) => {
      if (stats.type === 'transport' && stats.selectedCandidatePairId) pair = byId.get(stats.selectedCandidatePairId);
    });
    if (!pair) return null;
    const candidate = (id) => {
      const c = byId.get(id);
      return c && { candidateType: c.candidateType, protocol: c.protocol, address: c.address, port: c.port, relayProtocol: c.relayProtocol ?? null };
    };
    return { state: pair.state, local: candidate(pair.localCandidateId), remote: candidate(pair.remoteCandidateId) };
  });
}

/**
 * A `step(name, fn, { timeout })` for test files whose steps build on each other: steps run as
 * node:test tests, log how long they took, and once one fails the later ones are skipped.
 * `onFailure(name)` runs before the failing step's error is rethrown (dump diagnostics there).
 */
export function sequentialSteps(onFailure, { timeout: defaultTimeout } = {}) {
  let failed = false;
  return function step(name, fn, { timeout = defaultTimeout } = {}) {
    return test(name, timeout ? { timeout } : {}, async (t) => {
      if (failed) {
        t.skip('an earlier step failed');
        return;
      }
      const started = Date.now();
      try {
        await fn(t);
      } catch (error) {
        failed = true;
        await onFailure(name);
        throw error;
      } finally {
        console.log(`step "${name}" took ${Date.now() - started} ms`);
      }
    });
  };
}

/** A file-name-safe label for a step's diagnostics. */
export function stepLabel(prefix, name) {
  return `${prefix}${name.replace(/\W+/g, '-').slice(0, 40)}`;
}

// ---------------------------------------------------------------------------------------------
// ffmpeg as OBS, and the wall clock burned into its video (broadcast.test.mjs, hls.test.mjs,
// scripts/hls-delay.mjs)

export const FFMPEG = process.env.FFMPEG ?? 'ffmpeg';

/**
 * The wall clock burned into the video, machine-readable: frame pts := wall clock (µs), then on
 * a 1280x16 copy of the top rows `geq` paints 32 blocks of 40 px, block k white when bit k of
 * floor(T*1000) (ms since the epoch) is set; the strip is laid back over the frame and normal
 * timestamps are restored. geq runs on the strip only (on a full 720p frame it is too slow for
 * two cores). `settb` first: in the source's 1/30 s time base the pts would be rounded to 33 ms.
 */
export const CLOCK_FILTER = [
  "[0:v]settb=1/1000000,setpts='RTCTIME',split[main][top]",
  "[top]crop=1280:16:0:0,geq=lum='255*mod(floor(T*1000/pow(2,floor(X/40))),2)':cb=128:cr=128[clock]",
  "[main][clock]overlay=0:0,setpts='N/(30*TB)'[v]",
].join(';');

/**
 * ffmpeg's arguments for pushing what OBS would to `target` (an rtmp:// URL): 720p30 test
 * pattern (`clock`: with CLOCK_FILTER's burned-in clock), x264 veryfast zerolatency with a
 * keyframe every `gop` frames (`bframes`: -bf N), a 440 Hz tone in AAC, as FLV. `output`
 * replaces `-f flv <target>` (e.g. an HLS muxer writing files).
 */
export function ffmpegPushArgs(target, { clock = false, bframes = null, gop = 60, output = null } = {}) {
  return [
    '-hide_banner', '-nostats', '-loglevel', 'warning',
    '-re', '-f', 'lavfi', '-i', 'testsrc2=size=1280x720:rate=30',
    '-f', 'lavfi', '-i', 'sine=frequency=440',
    ...(clock ? ['-filter_complex', CLOCK_FILTER, '-map', '[v]', '-map', '1:a'] : []),
    '-c:v', 'libx264', '-preset', 'veryfast', '-tune', 'zerolatency',
    ...(bframes == null ? [] : ['-bf', String(bframes)]),
    '-g', String(gop), '-c:a', 'aac', '-b:a', '128k',
    ...(output ?? ['-f', 'flv', target]),
  ];
}

/** `argv` as a person would type it in a shell (for logs and result files). */
export function shellCommand(argv) {
  return argv.map((arg) => (/^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, "'\\''")}'`)).join(' ');
}

/**
 * Runs `bin args` with its stderr (and stdout) collected. Returns { label, command, process,
 * exited, exit, startedAt, logs(), kill(signal) (waits for the exit), stop() (SIGTERM, then
 * SIGKILL after 2 s) }.
 */
export function startLoggedProcess(bin, args, { label = path.basename(bin), env = {} } = {}) {
  const command = shellCommand([bin, ...args]);
  const lines = [`[test] ${command}`];
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  for (const stream of [child.stdout, child.stderr]) {
    stream.setEncoding('utf8');
    stream.on('data', (chunk) => lines.push(...chunk.trimEnd().split('\n')));
  }
  let exit = null;
  const exited = once(child, 'exit').then(([code, signal]) => {
    exit = { code, signal };
    lines.push(`[test] ${label} exited (code ${code}, signal ${signal})`);
    return exit;
  });
  child.once('error', (error) => lines.push(`[test] ${label} failed to start: ${error.message}`));
  return {
    label,
    command,
    startedAt: Date.now(),
    process: child,
    exited,
    get exit() { return exit; },
    logs: () => lines.join('\n'),
    kill: async (signal = 'SIGKILL') => {
      if (!exit) child.kill(signal);
      return exited;
    },
    stop: async () => {
      if (!exit) {
        child.kill('SIGTERM');
        const killer = setTimeout(() => child.kill('SIGKILL'), 2_000);
        await exited;
        clearTimeout(killer);
      }
      return exit;
    },
  };
}

/**
 * Installs `window.__readClock(video)` in the page: reads the clock ffmpeg burned into the frame
 * the <video> currently shows (CLOCK_FILTER): the centre pixel of each of the 32 blocks of the
 * top 16 rows, bit k white = set. Returns { value } (ms since the epoch mod 2^32), or
 * { ambiguous } when some block is neither clearly black nor clearly white (no clock there, or a
 * blurred one), or { size } when the frame is not 1280x720.
 */
export function installClockReader(page) {
  return page.evaluate(() => {
    if (window.__readClock) return;
    const canvas = document.createElement('canvas');
    canvas.width = 1280;
    canvas.height = 16;
    const context = canvas.getContext('2d', { willReadFrequently: true });
    window.__readClock = (video) => {
      // The strip is the top 16/720 of a 16:9 picture at any size (a WebRTC sender may scale).
      const { videoWidth: width, videoHeight: height } = video;
      if (!width || Math.abs(width / height - 16 / 9) > 0.01) return { size: [width, height] };
      context.drawImage(video, 0, 0, width, (height * 16) / 720, 0, 0, 1280, 16);
      const { data } = context.getImageData(0, 0, 1280, 16);
      let value = 0;
      let ambiguous = 0;
      for (let k = 0; k < 32; k += 1) {
        const offset = (8 * 1280 + 40 * k + 20) * 4;
        const luma = (data[offset] + data[offset + 1] + data[offset + 2]) / 3;
        if (luma > 64 && luma < 192) ambiguous += 1;
        if (luma >= 128) value += 2 ** k;
      }
      return ambiguous ? { ambiguous, value } : { value };
    };
  });
}

/**
 * In the page: for every frame presented during `durationMs`, read the burned-in clock
 * (`installClockReader`) and compare it with Date.now() at that requestVideoFrameCallback (the
 * frame is being composited: the screen shows it at the next refresh). Returns
 * { samples: [{ delay, networkDelay, value, pdtDelay }], rejected, rejectedCount, frames };
 * `networkDelay` is to the arrival of the frame's last packet (rVFC `receiveTime`, WebRTC only).
 * The <video> is `document.querySelector(videoSelector)`, by default the watch page's
 * (`window.roomcast.video`). `pdtDelayExpression`, when given, is evaluated in the page at each
 * frame (e.g. the player's PROGRAM-DATE-TIME delay) and kept as `pdtDelay`.
 */
export async function measureLatencyInPage(page, durationMs, { videoSelector = null, pdtDelayExpression = null } = {}) {
  await installClockReader(page);
  return page.evaluate(({ durationMs, videoSelector, pdtDelayExpression }) => new Promise((resolve) => {
    const video = videoSelector ? document.querySelector(videoSelector) : window.roomcast.video;
    // eslint-disable-next-line no-new-func
    const pdtDelay = pdtDelayExpression ? new Function(`return (${pdtDelayExpression});`) : null;
    const MOD = 2 ** 32;
    const signed = (d) => (d >= MOD / 2 ? d - MOD : d);
    const since = (epochMs, value) => signed((((epochMs % MOD) - value) % MOD + MOD) % MOD);
    const samples = [];
    const rejected = [];
    let frames = 0;
    const started = performance.now();
    const onFrame = (now, metadata) => {
      const nowEpoch = Date.now();
      frames += 1;
      const read = window.__readClock(video);
      if (read.ambiguous || read.size) {
        rejected.push(read);
      } else {
        const sample = {
          delay: since(nowEpoch, read.value),
          networkDelay: metadata.receiveTime == null ? null : since(performance.timeOrigin + metadata.receiveTime, read.value),
          value: read.value,
        };
        if (pdtDelay) sample.pdtDelay = pdtDelay() ?? null;
        samples.push(sample);
      }
      if (performance.now() - started < durationMs) video.requestVideoFrameCallback(onFrame);
      else resolve({ samples, rejected: rejected.slice(0, 20), rejectedCount: rejected.length, frames });
    };
    video.requestVideoFrameCallback(onFrame);
  }), { durationMs, videoSelector, pdtDelayExpression });
}

/** The p-th percentile (nearest rank) of an ascending array; null when it is empty. */
export function percentile(sorted, p) {
  if (!sorted.length) return null;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index];
}

// ---------------------------------------------------------------------------------------------
// A plain hls.js player page (hls.test.mjs, scripts/hls-delay.mjs)

/** Where `openHlsPlayerPage` puts its page on the origin it is given (answered by the test). */
export const HLS_PLAYER_PATH = '/__roomcast-test/hls-player.html';

/**
 * Opens a page that is nothing but hls.js playing `playlistUrl` in a 640x360 muted <video>
 * (`#video`), at `${origin}${HLS_PLAYER_PATH}` (the test answers that one URL itself, so the
 * page has the origin of the server it plays from: same-origin requests, an untainted canvas).
 * hls.js comes from `${origin}/hls.min.js` (roomcast serves it), or with `hlsJsFromDisk` from
 * web-client/vendor/hls.min.js (for origins that do not serve it, e.g. nginx).
 * `hlsConfig` is hls.js's config (default `{ lowLatencyMode: true }`).
 *
 * The page keeps `window.__player` = { hls, video, config, version, events, errors,
 * framesPresented, firstFrameAt, endedAt, endList, live, maxCurrentTime, delayMs() } (times
 * Date.now()); `events` lists hls.js milestones ({ event, at, ... }), `errors` every hls.js
 * error ({ type, details, fatal, code, url, at }); delayMs() = Date.now() − hls.playingDate.
 */
export async function openHlsPlayerPage(browser, origin, playlistUrl, {
  label = 'hls-player',
  hlsConfig = { lowLatencyMode: true },
  hlsJsFromDisk = false,
  contextOptions = {},
} = {}) {
  const page = await newLoggedPage(browser, label, { contextOptions });
  const pageUrl = new URL(HLS_PLAYER_PATH, origin).href;
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>${label}</title>
<script src="/hls.min.js"></script></head>
<body style="margin:0;background:#000">
<video id="video" muted playsinline autoplay style="width:640px;height:360px"></video>
<script>
const video = document.getElementById('video');
const config = ${JSON.stringify(hlsConfig)};
const player = {
  hls: null, video, config, version: window.Hls?.version ?? null, events: [], errors: [],
  framesPresented: 0, firstFrameAt: null, endedAt: null, endList: null, live: null, maxCurrentTime: 0,
  delayMs: () => (player.hls?.playingDate ? Date.now() - player.hls.playingDate.getTime() : null),
};
window.__player = player;
const onFrame = () => {
  player.framesPresented += 1;
  player.firstFrameAt ??= Date.now();
  player.maxCurrentTime = Math.max(player.maxCurrentTime, video.currentTime);
  video.requestVideoFrameCallback(onFrame);
};
video.requestVideoFrameCallback(onFrame);
video.addEventListener('ended', () => { player.endedAt = Date.now(); });
const hls = new Hls(config);
player.hls = hls;
const E = Hls.Events;
hls.on(E.ERROR, (_e, d) => player.errors.push({ type: d.type, details: d.details, fatal: d.fatal,
  code: d.response?.code ?? null, url: d.url ?? d.frag?.url ?? d.context?.url ?? null, at: Date.now() }));
hls.on(E.MANIFEST_PARSED, () => player.events.push({ event: 'manifestParsed', at: Date.now() }));
hls.on(E.LEVEL_LOADED, (_e, d) => {
  player.live = d.details.live;
  player.endList = !d.details.live;
  if (player.events.filter((e) => e.event === 'levelLoaded').length < 3) {
    player.events.push({ event: 'levelLoaded', at: Date.now(), live: d.details.live, canBlockReload: d.details.canBlockReload,
      partTarget: d.details.partTarget, partCount: d.details.partList?.length ?? 0, totalduration: d.details.totalduration,
      targetduration: d.details.targetduration, fragments: d.details.fragments.length });
  }
});
hls.on(E.BUFFER_EOS, () => player.events.push({ event: 'bufferEos', at: Date.now() }));
// The last fragments and parts loaded (sn, part index, media time): where a stall's hole is.
player.loads = [];
hls.on(E.FRAG_LOADED, (_e, d) => {
  player.loads.push({ sn: d.frag.sn, part: d.part?.index ?? null, start: +(d.part ?? d.frag).start.toFixed(3),
    duration: +(d.part ?? d.frag).duration.toFixed(3), at: Date.now() });
  if (player.loads.length > 30) player.loads.shift();
});
// What each SourceBuffer holds after the last append ({ audio: [[start, end]…], video: … }).
player.trackBuffered = {};
hls.on(E.BUFFER_APPENDED, (_e, d) => {
  for (const [type, r] of Object.entries(d.timeRanges ?? {})) {
    if (r) player.trackBuffered[type] = [...Array(r.length).keys()].map((i) => [+r.start(i).toFixed(3), +r.end(i).toFixed(3)]);
  }
});
hls.loadSource(${JSON.stringify(playlistUrl)});
hls.attachMedia(video);
video.play().catch(() => {});
</script></body></html>`;
  await page.route((url) => url.href === pageUrl, (route) => route.fulfill({ contentType: 'text/html', body: html }));
  if (hlsJsFromDisk) {
    const hlsJs = new URL('/hls.min.js', origin).href;
    await page.route((url) => url.href === hlsJs, (route) => route.fulfill({
      contentType: 'text/javascript',
      body: readFileSync(path.join(REPO_ROOT, 'web-client', 'vendor', 'hls.min.js')),
    }));
  }
  await page.goto(pageUrl);
  return page;
}

/** What the player page shows: { currentTime, maxCurrentTime, videoSize, readyState, paused, ended, ... }. */
export function hlsPlayerState(page) {
  return page.evaluate(() => {
    const p = window.__player;
    const v = p.video;
    const ranges = (r) => [...Array(r.length).keys()].map((i) => [+r.start(i).toFixed(3), +r.end(i).toFixed(3)]);
    return {
      version: p.version,
      currentTime: v.currentTime,
      maxCurrentTime: p.maxCurrentTime,
      duration: Number.isFinite(v.duration) ? v.duration : String(v.duration),
      videoSize: [v.videoWidth, v.videoHeight],
      readyState: v.readyState,
      paused: v.paused,
      ended: v.ended,
      endedAt: p.endedAt,
      framesPresented: p.framesPresented,
      audioDecodedBytes: v.webkitAudioDecodedByteCount ?? null,
      played: [...Array(v.played.length).keys()].reduce((sum, i) => sum + v.played.end(i) - v.played.start(i), 0),
      live: p.live,
      endList: p.endList,
      delayMs: p.delayMs(),
      latency: p.hls?.latency ?? null,
      events: p.events,
      errors: p.errors.slice(-20),
      buffered: ranges(v.buffered),
      trackBuffered: p.trackBuffered,
      loads: p.loads,
      errorCount: p.errors.length,
    };
  });
}

/**
 * Init script for a room page: every video transceiver it adds (room.js publishes with
 * addTransceiver) offers H.264 only (packetization-mode 1, constrained baseline 42e01f first), as
 * the HLS packager needs (VP8, the browser's default, is packaged without video), and keeps
 * its resolution (degradationPreference 'maintain-resolution'). Counts the transceivers it
 * changed in `window.__forceH264`.
 */
export function forceH264InitScript() {
  const native = RTCPeerConnection.prototype.addTransceiver;
  window.__forceH264 = { transceivers: 0 };
  RTCPeerConnection.prototype.addTransceiver = function addTransceiver(trackOrKind, init) {
    const transceiver = native.call(this, trackOrKind, init);
    const kind = typeof trackOrKind === 'string' ? trackOrKind : trackOrKind?.kind;
    if (kind === 'video') {
      const codecs = RTCRtpSender.getCapabilities('video').codecs;
      const isH264 = (c) => c.mimeType.toLowerCase() === 'video/h264';
      const preferred = (c) => isH264(c) && /packetization-mode=1/.test(c.sdpFmtpLine ?? '') && /profile-level-id=42e01f/.test(c.sdpFmtpLine ?? '');
      // H.264 only (with RTX, RED and FEC): the server answers room members in its own order,
      // VP8 first, so a mere preference would not win.
      const helper = (c) => /^video\/(rtx|red|ulpfec|flexfec-03)$/i.test(c.mimeType);
      transceiver.setCodecPreferences([
        ...codecs.filter(preferred),
        ...codecs.filter((c) => isH264(c) && !preferred(c)),
        ...codecs.filter(helper),
      ]);
      // A fixed picture size: at the start bitrate Chromium would first send a downscaled
      // picture and step it up, and the test checks the camera's size.
      const parameters = transceiver.sender.getParameters();
      parameters.degradationPreference = 'maintain-resolution';
      transceiver.sender.setParameters(parameters).catch((error) => console.warn(`forceH264InitScript: ${error}`));
      window.__forceH264.transceivers += 1;
    }
    return transceiver;
  };
}

// ---------------------------------------------------------------------------------------------
// Firefox (firefox.test.mjs)

/**
 * The first IPv4 address of this machine that is not loopback. Firefox gathers no ICE candidates
 * on loopback (its `media.peerconnection.ice.loopback` pref no longer brings them back), so a
 * server that Firefox talks to announces this address instead: packets to one's own address
 * still never leave the machine.
 */
export function hostIPv4() {
  for (const addresses of Object.values(os.networkInterfaces())) {
    for (const address of addresses ?? []) {
      if (address.family === 'IPv4' && !address.internal) return address.address;
    }
  }
  throw new Error('this machine has no non-loopback IPv4 address for the Firefox test server to announce');
}

/**
 * Headless Debian Firefox ESR driven over WebDriver BiDi with a fresh profile: fake camera and
 * microphone, no permission prompts, no updates or telemetry. (playwright-core's Firefox
 * support needs a BiDi command this Firefox lacks, `emulation.setMediaFeaturesOverride`, so this
 * speaks the few BiDi commands the test needs itself.) `page.evaluate(fn)` runs `fn` (an async
 * function, as source or a function) in the page and returns its JSON result.
 */
export async function launchFirefox({ executablePath = process.env.FIREFOX_PATH ?? '/usr/bin/firefox-esr', label = 'firefox' } = {}) {
  const { ws: WebSocket } = createRequire(import.meta.url)('playwright-core/lib/utilsBundle');
  const profile = mkdtempSync(path.join(os.tmpdir(), 'roomcast-firefox-'));
  const prefs = {
    'media.navigator.streams.fake': true,
    'media.navigator.permission.disabled': true,
    'media.peerconnection.ice.obfuscate_host_addresses': false,
    'media.autoplay.default': 0,
    'remote.prefs.recommended': true,
    'app.update.enabled': false,
    'browser.shell.checkDefaultBrowser': false,
    'datareporting.policy.dataSubmissionEnabled': false,
    'toolkit.telemetry.enabled': false,
    'media.gmp-manager.updateEnabled': false,
    'network.captive-portal-service.enabled': false,
  };
  writeFileSync(path.join(profile, 'user.js'),
    Object.entries(prefs).map(([key, value]) => `user_pref(${JSON.stringify(key)}, ${JSON.stringify(value)});`).join('\n'));
  const child = spawn(executablePath, ['--headless', '--no-remote', '--profile', profile, '--remote-debugging-port=0', 'about:blank'],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  const logs = [];
  const endpoint = await new Promise((resolve, reject) => {
    let output = '';
    const timer = setTimeout(() => reject(new Error(`Firefox did not start WebDriver BiDi within 30 s:\n${output}`)), 30_000);
    const onData = (data) => {
      output += data;
      const match = /WebDriver BiDi listening on (ws:\/\/\S+)/.exec(output);
      if (match) { clearTimeout(timer); resolve(match[1]); }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`Firefox exited (${code}):\n${output}`)); });
  });
  const socket = new WebSocket(`${endpoint}/session`);
  await once(socket, 'open');
  let nextId = 1;
  const pending = new Map();
  socket.on('message', (data) => {
    const message = JSON.parse(data.toString());
    if (message.id && pending.has(message.id)) {
      const { resolve, reject } = pending.get(message.id);
      pending.delete(message.id);
      if (message.type === 'error') reject(new Error(`${message.error}: ${message.message}`));
      else resolve(message.result);
    } else if (message.method === 'log.entryAdded') {
      logs.push({ type: message.params.level, text: message.params.text });
    }
  });
  const send = (method, params = {}) => new Promise((resolve, reject) => {
    const id = nextId++;
    pending.set(id, { resolve, reject });
    socket.send(JSON.stringify({ id, method, params }));
  });
  await send('session.new', { capabilities: {} });
  await send('session.subscribe', { events: ['log.entryAdded'] });
  const { contexts } = await send('browsingContext.getTree', {});
  const context = contexts[0].context;
  return {
    label,
    logs,
    /** Console errors and uncaught exceptions, as `pageErrors` gives them for Chromium. */
    errors: () => logs.filter((entry) => entry.type === 'error').map((entry) => entry.text),
    goto: (url) => send('browsingContext.navigate', { context, url, wait: 'complete' }),
    async evaluate(fn) {
      const source = typeof fn === 'function' ? fn.toString() : fn;
      const result = await send('script.evaluate', {
        expression: `(async () => JSON.stringify(await (${source})() ?? null))()`,
        target: { context },
        awaitPromise: true,
      });
      if (result.type === 'exception') throw new Error(`${label}: ${result.exceptionDetails.text}`);
      return JSON.parse(result.result.value);
    },
    async close() {
      await send('session.end').catch(() => {});
      socket.close();
      child.kill('SIGTERM');
      await once(child, 'exit').catch(() => {});
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
