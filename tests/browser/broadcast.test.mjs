// Broadcasting end to end: real ffmpeg pushing RTMP as OBS would (or a Chromium page pushing
// WHIP), real headless Chromium pages watching /watch/<room> (web-client/watch.html + watch.js)
// over WHEP, against a real `roomcast serve --rtmp 127.0.0.1:0`.
//
//   1. ffmpeg pushes 720p30 H.264 + AAC to rtmp://…/live/<room>: two viewer pages decode the
//      video (framesDecoded advancing, 1280x720) and the audio (packetsReceived and
//      totalAudioEnergy advancing), and show LIVE, "2 viewers" and the host.
//   2. ffmpeg is killed (SIGKILL) and started again with the same key: the same two pages, on
//      the same WHEP session, decode the new stream again without a reload. The gap is measured
//      in the pages: the restarted push carries the burned-in clock of step 3 (the first push
//      does not), so each presented frame is known to be old or new; gap = last old frame to
//      first new frame presented.
//   3. Glass-to-glass latency: ffmpeg burns the wall clock (ms since the epoch, 32 bits) into
//      the top 16 rows of every frame as 32 black/white blocks; a viewer page reads each frame
//      presented (requestVideoFrameCallback → canvas) and subtracts it from Date.now().
//      ~5 s of samples after a warm-up; median and p95 go to stdout and
//      test-output/browser/latency.json; the median must stay under LATENCY_MEDIAN_BOUND_MS.
//   4. A push with B-frames (-bf 2): /api/rooms/<room> warns about B-frames and so does the page.
//   5. WHIP → WHEP: a viewer opens an empty room (offline message), a Chromium page publishes
//      its fake camera and microphone to /whip/<room> with fetch + RTCPeerConnection, the viewer
//      starts playing without a reload; after DELETE of the WHIP session it shows OFFLINE.
//   6. No page logged a console error or threw.
//
// One server for the file (each step uses its own room); at most two Chromium pages at once.
// ffmpeg must be installed (Debian: apt-get install --no-install-recommends ffmpeg); FFMPEG
// overrides the binary. Measured numbers are printed (`# …` lines in the TAP output). On a
// failure the server log, ffmpeg's log, each page's console, state and a screenshot go to
// test-output/browser/.
//
// Run: `cargo build && ROOMCAST_BIN=target/debug/roomcast node --test tests/browser/broadcast.test.mjs`
// (ROOMCAST_TEST_VERBOSE=1 streams the server log; ROOMCAST_WEB_CLIENT_FROM_DISK=1 serves
// web-client/ from the working tree instead of the copy embedded in the binary).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  OUTPUT_DIR,
  dumpDiagnostics,
  ffmpegPushArgs,
  inboundStats,
  installClockReader,
  launchBrowser,
  measureLatencyInPage,
  newLoggedPage,
  openWatchPage,
  pageErrors,
  pageLabel,
  percentile,
  startLoggedProcess,
  startServer,
  waitFor,
} from './lib.mjs';

const FFMPEG = process.env.FFMPEG ?? 'ffmpeg';
/** From the restart of ffmpeg to the pages presenting frames again ("within a few seconds"). */
const RESUME_BOUND_MS = 8_000;
/** Generous on purpose (the published target is < 400 ms): it fails when the path buffers seconds. */
const LATENCY_MEDIAN_BOUND_MS = 1_000;
const LATENCY_WARMUP_MS = 2_000;
const LATENCY_SAMPLE_MS = 5_000;

const run = `${process.pid}-${Date.now().toString(36)}`;
let server;
let browser;
/** Pages open right now (diagnostics) and every page ever opened (the console check). */
const pages = new Set();
const allPages = [];
/** ffmpeg processes still running (stopped at the end), and every one started (diagnostics). */
const pushes = new Set();
const allPushes = [];
const failedSteps = new Set();

before(async () => {
  const probe = spawnSync(FFMPEG, ['-hide_banner', '-version'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) {
    throw new Error(`${FFMPEG} does not run (${probe.error?.message ?? probe.stderr}): ` +
      'install it (apt-get install --no-install-recommends ffmpeg) or set FFMPEG');
  }
  server = await startServer({ extraArgs: ['--rtmp', '127.0.0.1:0'] });
  browser = await launchBrowser();
});

after(async () => {
  await Promise.all([...pushes].map((push) => push.stop()));
  await browser?.close();
  const exit = await server?.stop();
  console.log(`server stopped: ${JSON.stringify(exit)}`);
});

/**
 * Runs one step; on failure dumps the server log, ffmpeg's logs and every open page, then closes
 * those pages and stops that ffmpeg so the next step starts clean. A step listed in `needs` that
 * failed skips this one. (Steps clean up after themselves only when they pass, so that a failure
 * is dumped with everything still open.)
 */
function step(name, fn, { needs = [], timeout = 90_000 } = {}) {
  return test(name, { timeout }, async (t) => {
    const missing = needs.filter((other) => failedSteps.has(other));
    if (missing.length) {
      failedSteps.add(name);
      t.skip(`needs ${missing.join(', ')}, which failed`);
      return;
    }
    const started = Date.now();
    try {
      await fn(t);
    } catch (error) {
      failedSteps.add(name);
      const involved = allPushes.filter((push) => pushes.has(push) || push.startedAt >= started);
      const extra = Object.fromEntries(involved.map((push) => [`ffmpeg-${push.label}`, push.logs()]));
      await dumpDiagnostics({
        server,
        pages: [...pages],
        label: `broadcast-${name.replace(/\W+/g, '-').slice(0, 40)}`,
        describePage: describeWatchPage,
        extra,
      });
      await Promise.all(involved.map((push) => push.stop()));
      await Promise.all([...pages].map(closePage));
      throw error;
    } finally {
      console.log(`step "${name}" took ${Date.now() - started} ms`);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// ffmpeg as OBS (ffmpegPushArgs and the burned-in clock, CLOCK_FILTER, are in lib.mjs)

/**
 * Starts ffmpeg publishing to `${server.rtmpUrl}/live/<key>` and keeps it running. Returns
 * { label, command, process, exited, logs(), kill(signal), stop() }.
 */
function startPush(label, key, options = {}) {
  const push = startLoggedProcess(FFMPEG, ffmpegPushArgs(`${server.rtmpUrl}/live/${key}`, options), { label: 'ffmpeg' });
  push.label = label;
  const stop = push.stop;
  push.stop = async () => {
    await stop();
    pushes.delete(push);
  };
  pushes.add(push);
  allPushes.push(push);
  return push;
}

/** Fails with ffmpeg's own words when it exited (it does not retry like OBS). */
function assertRunning(push) {
  if (push.exit) throw new Error(`ffmpeg ${push.label} exited ${JSON.stringify(push.exit)}:\n${push.logs()}`);
}

// ---------------------------------------------------------------------------------------------
// Server API and pages

async function roomStatus(room) {
  const response = await fetch(new URL(`/api/rooms/${room}`, server.url));
  if (!response.ok) throw new Error(`GET /api/rooms/${room}: HTTP ${response.status} ${await response.text()}`);
  return response.json();
}

async function waitForLive(room, push, { timeout = 20_000 } = {}) {
  return waitFor(async () => {
    if (push) assertRunning(push);
    const status = await roomStatus(room);
    if (!status.live) throw new Error(`/api/rooms/${room}: ${JSON.stringify(status)}`);
    return status;
  }, { timeout, interval: 200, message: `room ${room} to be live` });
}

async function openViewer(room, label) {
  const page = await openWatchPage(browser, server.url, room, { label });
  pages.add(page);
  allPages.push(page);
  return page;
}

async function closePage(page) {
  pages.delete(page);
  await page.context().close();
}

/** What the viewer page shows, and its WHEP session, from the page and its `window.roomcast`. */
function watchInfo(page) {
  return page.evaluate(() => {
    const hook = window.roomcast;
    const text = (id) => document.getElementById(id)?.textContent.trim() ?? null;
    return {
      state: hook?.state ?? null,
      live: hook?.live ?? null,
      connectionState: hook?.connectionState ?? null,
      sessions: hook?.sessions ?? null,
      sessionUrl: hook?.sessionUrl ?? null,
      muted: hook?.muted ?? null,
      audioBlocked: hook?.audioBlocked ?? null,
      framesPresented: hook?.framesPresented ?? null,
      badge: text('live-badge'),
      viewers: text('viewer-count'),
      host: text('host-name'),
      elapsed: text('elapsed'),
      status: text('status-text'),
      stage: document.getElementById('stage-message')?.offsetParent ? text('stage-text') : null,
      unmuteButtonShown: !document.getElementById('unmute-button')?.hidden,
      warnings: document.getElementById('warnings')?.hidden
        ? [] : [...document.querySelectorAll('#warning-list li')].map((item) => item.textContent),
      videoSize: [hook?.video?.videoWidth ?? 0, hook?.video?.videoHeight ?? 0],
    };
  });
}

async function describeWatchPage(page) {
  const [info, inbound] = await Promise.all([watchInfo(page), inboundStats(page)]);
  return { info, inbound };
}

/** The page's inbound video and audio stats (the first of each kind), or null. */
async function media(page) {
  const stats = await inboundStats(page);
  return {
    video: stats.find((s) => s.kind === 'video') ?? null,
    audio: stats.find((s) => s.kind === 'audio') ?? null,
  };
}

/**
 * Waits until `page` decodes video (at `width`x`height` when given) and receives audio with
 * energy, then until video frames, audio packets and audio energy all advance. Returns the last
 * sample.
 */
async function expectPlaying(page, { width = null, height = null, timeout = 20_000 } = {}) {
  const label = pageLabel(page);
  const first = await waitFor(async () => {
    const now = await media(page);
    const { video, audio } = now;
    const sizeOk = (width == null || video?.frameWidth === width) && (height == null || video?.frameHeight === height);
    if (!(video?.framesDecoded > 0 && sizeOk && audio?.packetsReceived > 0 && audio?.totalAudioEnergy > 0)) {
      throw new Error(`${label}: ${JSON.stringify(now)}; page: ${JSON.stringify(await watchInfo(page))}`);
    }
    return now;
  }, { timeout, interval: 250, message: `${label} to decode video${width ? ` at ${width}x${height}` : ''} and receive audio` });
  return waitFor(async () => {
    const now = await media(page);
    const stalled = [];
    if (!(now.video?.framesDecoded > first.video.framesDecoded)) stalled.push(`framesDecoded ${first.video.framesDecoded} -> ${now.video?.framesDecoded}`);
    if (!(now.audio?.packetsReceived > first.audio.packetsReceived)) stalled.push(`audio packetsReceived ${first.audio.packetsReceived} -> ${now.audio?.packetsReceived}`);
    if (!(now.audio?.totalAudioEnergy > first.audio.totalAudioEnergy)) stalled.push(`totalAudioEnergy ${first.audio.totalAudioEnergy} -> ${now.audio?.totalAudioEnergy}`);
    if (stalled.length) throw new Error(`${label}: not advancing: ${stalled.join('; ')}`);
    return now;
  }, { timeout: 5_000, interval: 200, message: `${label}: video and audio to keep advancing` });
}

/** Waits until the page's own display matches `predicate(info)`; returns the info. */
function expectShown(page, description, predicate, { timeout = 10_000 } = {}) {
  return waitFor(async () => {
    const info = await watchInfo(page);
    if (!predicate(info)) throw new Error(`${pageLabel(page)} shows ${JSON.stringify(info)}`);
    return info;
  }, { timeout, interval: 100, message: `${pageLabel(page)} to show ${description}` });
}

/**
 * Starts an in-page recorder of the frames the viewer's <video> presents:
 * `window.__frameLog.frames` = [{ t: Date.now(), clock }] (the last 4000), where `clock` is the
 * burned-in clock of a frame that carries one (ms since the epoch mod 2^32, within a minute of
 * the page's clock), else null.
 */
async function recordFrames(page) {
  await installClockReader(page);
  return page.evaluate(() => {
    const log = { frames: [] };
    window.__frameLog = log;
    const video = window.roomcast.video;
    const MOD = 2 ** 32;
    const onFrame = () => {
      const t = Date.now();
      const read = window.__readClock(video);
      const age = read.ambiguous || read.size ? null : (((t % MOD) - read.value) % MOD + MOD) % MOD;
      log.frames.push({ t, clock: age != null && age < 60_000 ? read.value : null });
      if (log.frames.length > 4000) log.frames.splice(0, 1000);
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  });
}

// ---------------------------------------------------------------------------------------------
// Steps

const obsRoom = `obs-${run}`;
let obsPush;
let obsViewers = [];

step('two viewers play an RTMP push from ffmpeg (720p H.264 + AAC)', async () => {
  obsPush = startPush('obs', obsRoom);
  const status = await waitForLive(obsRoom, obsPush);
  console.log(`room status once live: ${JSON.stringify(status)}`);

  obsViewers = await Promise.all(['viewer-1', 'viewer-2'].map((label) => openViewer(obsRoom, label)));
  await Promise.all(obsViewers.map((page) => expectPlaying(page, { width: 1280, height: 720, timeout: 20_000 })));
  const shown = await Promise.all(obsViewers.map((page) => expectShown(page, 'LIVE, 2 viewers, the host and the picture',
    (info) => info.badge === 'LIVE' && /^2 viewers?$/.test(info.viewers) && info.host && info.host !== '—' &&
      info.state === 'playing' && info.videoSize[0] === 1280 && info.videoSize[1] === 720)));
  console.log(`viewer page: ${JSON.stringify(shown[0])}`);

  const after = await roomStatus(obsRoom);
  assert.equal(after.live, true, 'room live');
  assert.equal(after.viewers, 2, `viewers in ${JSON.stringify(after)}`);
  assert.equal(after.host?.source, 'rtmp', `host in ${JSON.stringify(after)}`);
  for (const info of shown) {
    assert.ok(info.host.includes(after.host.name), `page shows host ${JSON.stringify(info.host)}, API says ${after.host.name}`);
    assert.equal(info.muted, false, 'the page plays with sound (autoplay is allowed in this browser)');
  }
});

step('the pages resume on their session when ffmpeg is killed and restarted with the same key', async () => {
  assertRunning(obsPush);
  const before = await Promise.all(obsViewers.map(async (page) => {
    await page.evaluate(() => { window.__beforeRestart = { pc: window.roomcast.pc, sessions: window.roomcast.sessions }; });
    await recordFrames(page);
    await waitFor(() => page.evaluate(() => window.__frameLog.frames.length >= 10),
      { timeout: 5_000, interval: 50, message: `${pageLabel(page)}'s frame recorder to see the stream` });
    return (await media(page)).video;
  }));

  const killedAt = Date.now();
  await obsPush.kill('SIGKILL');
  await obsPush.stop();
  // Restart at once with the same key, as OBS's reconnect would. The new push carries the
  // burned-in clock (the first one does not), so the pages can tell its frames from the last
  // ones of the killed push that were still on their way.
  const restartedAt = Date.now();
  obsPush = startPush('obs-restarted', obsRoom, { clock: true });

  const resumed = await Promise.all(obsViewers.map((page, i) => waitFor(async () => {
    assertRunning(obsPush);
    const now = await media(page);
    const log = await page.evaluate(() => {
      const { frames } = window.__frameLog;
      return { presented: frames.length, newStream: frames.filter((f) => f.clock != null).length };
    });
    const decodedSince = (now.video?.framesDecoded ?? 0) - before[i].framesDecoded;
    if (!(log.newStream >= 30 && now.video?.frameWidth === 1280)) {
      throw new Error(`${pageLabel(page)}: ${decodedSince} frames decoded since the kill, frames presented ` +
        `${JSON.stringify(log)}; ${JSON.stringify(now)}; page ${JSON.stringify(await watchInfo(page))}`);
    }
    return now;
  }, { timeout: RESUME_BOUND_MS + 5_000, interval: 200, message: `${pageLabel(page)} to present a second of the restarted stream` })));

  const measured = await Promise.all(obsViewers.map(async (page, i) => {
    const frames = await page.evaluate(() => {
      const all = window.__frameLog.frames;
      const firstNewIndex = all.findIndex((f) => f.clock != null);
      const lastOld = all.slice(0, firstNewIndex).reverse().find((f) => f.clock == null) ?? null;
      return { lastOld: lastOld?.t ?? null, firstNew: all[firstNewIndex].t, firstNewClock: all[firstNewIndex].clock };
    });
    const same = await page.evaluate(() => ({
      samePc: window.__beforeRestart.pc === window.roomcast.pc,
      newSessions: window.roomcast.sessions - window.__beforeRestart.sessions,
    }));
    return {
      page: pageLabel(page),
      gapMs: frames.lastOld == null ? null : frames.firstNew - frames.lastOld,
      lastOldFrameMsAfterKill: frames.lastOld == null ? null : frames.lastOld - killedAt,
      firstNewFrameMsAfterRestart: frames.firstNew - restartedAt,
      firstNewFrameCapturedMsAfterRestart: ((frames.firstNewClock - (restartedAt % 2 ** 32)) % 2 ** 32 + 2 ** 32) % 2 ** 32,
      ...same,
      framesDecodedAfter: resumed[i].video.framesDecoded,
    };
  }));
  console.log(`RTMP publisher restart (SIGKILL, restarted ${restartedAt - killedAt} ms later; gap = last frame of the old ` +
    `push to first of the new one, as presented by the page): ${JSON.stringify(measured)}`);
  for (const m of measured) {
    assert.ok(m.firstNewFrameMsAfterRestart <= RESUME_BOUND_MS,
      `${m.page} presented the restarted stream ${m.firstNewFrameMsAfterRestart} ms after ffmpeg restarted (bound ${RESUME_BOUND_MS})`);
    assert.ok(m.samePc && m.newSessions === 0,
      `${m.page} should resume on its WHEP session (the session follows the host); samePc ${m.samePc}, new sessions ${m.newSessions}`);
  }
  // The same pages, not reloaded: audio is back too, and they still say LIVE with two viewers.
  await Promise.all(obsViewers.map((page) => expectPlaying(page, { width: 1280, height: 720, timeout: 5_000 })));
  await Promise.all(obsViewers.map((page) => expectShown(page, 'LIVE with 2 viewers after the restart',
    (info) => info.badge === 'LIVE' && /^2 viewers?$/.test(info.viewers) && info.state === 'playing')));
  for (const page of obsViewers) {
    assert.ok(await page.evaluate(() => window.__beforeRestart != null), `${pageLabel(page)} was not reloaded`);
  }
}, { needs: ['two viewers play an RTMP push from ffmpeg (720p H.264 + AAC)'] });

step('cleanup: the RTMP viewers leave', async () => {
  await obsPush?.stop();
  await Promise.all(obsViewers.map(closePage));
  obsViewers = [];
});

/**
 * Waits until `viewer` has played for LATENCY_WARMUP_MS, measures LATENCY_SAMPLE_MS of presented
 * frames against their burned-in clock, writes the summary to test-output/browser/`file`, logs
 * it, and asserts it is plausible and under LATENCY_MEDIAN_BOUND_MS.
 */
async function reportLatency(viewer, { label, file, method, source }) {
  // Warm-up: the page has been presenting frames for a while (jitter buffer settled).
  await waitFor(async () => {
    const { first_frame: firstFrame } = await viewer.evaluate(() => window.roomcast.timings);
    const now = await viewer.evaluate(() => performance.now());
    return firstFrame != null && now - firstFrame >= LATENCY_WARMUP_MS;
  }, { timeout: 15_000, interval: 100, message: `${LATENCY_WARMUP_MS} ms of playback before measuring` });

  const result = await measureLatencyInPage(viewer, LATENCY_SAMPLE_MS);
  const delays = result.samples.map((s) => s.delay).sort((a, b) => a - b);
  const network = result.samples.map((s) => s.networkDelay).filter((d) => d != null).sort((a, b) => a - b);
  // The clock in consecutive frames must move forward by about a frame: proof that the
  // blocks were read right (a misread bit would jump by a power of two).
  const steps = result.samples.slice(1).map((s, i) => s.value - result.samples[i].value);
  const plausibleSteps = steps.filter((d) => d >= 0 && d <= 250).length;
  const summary = {
    measured_at: new Date().toISOString(),
    method,
    source,
    samples: delays.length,
    frames_presented: result.frames,
    rejected_frames: result.rejectedCount,
    median_ms: percentile(delays, 50),
    p95_ms: percentile(delays, 95),
    min_ms: delays[0] ?? null,
    max_ms: delays[delays.length - 1] ?? null,
    to_last_packet_median_ms: percentile(network, 50),
    to_last_packet_p95_ms: percentile(network, 95),
    plausible_clock_steps: `${plausibleSteps}/${steps.length}`,
    bound_median_ms: LATENCY_MEDIAN_BOUND_MS,
  };
  mkdirSync(OUTPUT_DIR, { recursive: true });
  writeFileSync(path.join(OUTPUT_DIR, file), `${JSON.stringify(summary, null, 2)}\n`);
  console.log(`${label} glass-to-glass latency: median ${summary.median_ms} ms, p95 ${summary.p95_ms} ms ` +
    `(min ${summary.min_ms}, max ${summary.max_ms}, ${summary.samples} frames; capture to last packet received: ` +
    `median ${summary.to_last_packet_median_ms} ms, p95 ${summary.to_last_packet_p95_ms} ms) -> ${path.join(OUTPUT_DIR, file)}`);

  assert.ok(delays.length >= 50, `only ${delays.length} readable frames in ${LATENCY_SAMPLE_MS} ms: ${JSON.stringify(result.rejected)}`);
  assert.ok(plausibleSteps >= steps.length * 0.9, `burned clock misread: steps between frames ${JSON.stringify(steps.slice(0, 40))}`);
  assert.ok(summary.min_ms >= 0, `negative latency ${summary.min_ms} ms: the clock is misread`);
  assert.ok(summary.median_ms < LATENCY_MEDIAN_BOUND_MS,
    `median glass-to-glass latency ${summary.median_ms} ms (bound ${LATENCY_MEDIAN_BOUND_MS} ms)`);
  return summary;
}

step('glass-to-glass latency, clock burned into the video by ffmpeg (-bf 0)', async () => {
  const room = `latency-${run}`;
  const push = startPush('latency', room, { clock: true, bframes: 0 });
  await waitForLive(room, push);
  const viewer = await openViewer(room, 'latency-viewer');
  await expectPlaying(viewer, { width: 1280, height: 720, timeout: 20_000 });
  await reportLatency(viewer, {
    label: 'RTMP -> WebRTC',
    file: 'latency.json',
    method: 'ffmpeg burns floor(wall clock ms) mod 2^32 as 32 blocks into the top 16 rows; ' +
      'the page reads each presented frame (requestVideoFrameCallback -> canvas) and subtracts it from Date.now()',
    source: push.command,
  });
  await closePage(viewer);
  await push.stop();
});

step('a push with B-frames is flagged in the API and on the page', async () => {
  const room = `bframes-${run}`;
  const push = startPush('bframes', room, { bframes: 2 });
  await waitForLive(room, push);
  const viewer = await openViewer(room, 'bframes-viewer');
  const status = await waitFor(async () => {
    assertRunning(push);
    const now = await roomStatus(room);
    if (!(now.warnings ?? []).some((w) => /b-?frames?/i.test(w))) throw new Error(JSON.stringify(now));
    return now;
  }, { timeout: 15_000, interval: 250, message: `/api/rooms/${room} to warn about B-frames` });
  const shown = await expectShown(viewer, 'the B-frame warning',
    (info) => info.warnings.some((w) => /b-?frames?/i.test(w)));
  // Not asserted (B-frames may or may not play): how the picture fares, for the report.
  const video = await waitFor(async () => {
    const now = (await media(viewer)).video;
    return now?.framesDecoded > 30 ? now : null;
  }, { timeout: 5_000, interval: 250, message: 'B-frame video to decode' }).catch(async () => (await media(viewer)).video);
  console.log(`B-frame warning: API ${JSON.stringify(status.warnings)}, page ${JSON.stringify(shown.warnings)}; ` +
    `video (not asserted): ${video?.framesDecoded ?? 0} frames decoded at ${video?.frameWidth ?? 0}x${video?.frameHeight ?? 0}, ` +
    `${video?.packetsLost ?? 0} packets lost, ${video?.pliCount ?? 0} PLIs`);
  await closePage(viewer);
  await push.stop();
});

/**
 * In a page of the server's origin: camera + microphone (fake devices) on an RTCPeerConnection,
 * H.264 preferred, the complete offer POSTed to /whip/<room> with the stream key as bearer
 * token. Returns { status, location, videoCodec } and keeps the connection in `window.__whip`.
 */
function publishWhip(page, room, key) {
  return page.evaluate(async ({ room, key }) => {
    // Video: a 1280x720 canvas with the wall clock burned into its top strip exactly as
    // CLOCK_FILTER does it, so the viewer can measure WHIP -> WHEP glass-to-glass latency.
    // Audio: the fake microphone.
    const canvas = document.createElement('canvas');
    canvas.width = 1280;
    canvas.height = 720;
    const context = canvas.getContext('2d');
    let frame = 0;
    const draw = () => {
      const now = Date.now() % 2 ** 32;
      frame += 1;
      context.fillStyle = `hsl(${(frame * 3) % 360} 40% 35%)`;
      context.fillRect(0, 16, 1280, 704);
      context.fillStyle = '#fff';
      context.fillRect((frame * 8) % 1280, 300, 80, 80);
      for (let k = 0; k < 32; k += 1) {
        context.fillStyle = Math.floor(now / 2 ** k) % 2 ? '#fff' : '#000';
        context.fillRect(40 * k, 0, 40, 16);
      }
    };
    draw();
    const timer = setInterval(draw, 1000 / 30);
    const canvasTrack = canvas.captureStream(30).getVideoTracks()[0];
    const microphone = await navigator.mediaDevices.getUserMedia({ audio: true });
    const stream = new MediaStream([canvasTrack, ...microphone.getAudioTracks()]);
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
    const video = pc.addTransceiver(stream.getVideoTracks()[0], { direction: 'sendonly', streams: [stream] });
    const parameters = video.sender.getParameters();
    parameters.degradationPreference = 'maintain-resolution';
    await video.sender.setParameters(parameters);
    pc.addTransceiver(stream.getAudioTracks()[0], { direction: 'sendonly', streams: [stream] });
    const codecs = RTCRtpSender.getCapabilities('video').codecs;
    const isH264 = (c) => c.mimeType.toLowerCase() === 'video/h264';
    const preferred = (c) => isH264(c) && /packetization-mode=1/.test(c.sdpFmtpLine ?? '') && /profile-level-id=42e01f/.test(c.sdpFmtpLine ?? '');
    video.setCodecPreferences([
      ...codecs.filter(preferred),
      ...codecs.filter((c) => isH264(c) && !preferred(c)),
      ...codecs.filter((c) => !isH264(c)),
    ]);
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((resolve) => {
      if (pc.iceGatheringState === 'complete') resolve();
      pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && resolve());
      setTimeout(resolve, 2_000);
    });
    const response = await fetch(`/whip/${room}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${key}` },
      body: pc.localDescription.sdp,
    });
    const answer = await response.text();
    const location = response.headers.get('Location');
    window.__whip = { pc, stream, timer, location: location && new URL(location, response.url).href, key };
    if (response.status === 201) await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    const videoCodec = /a=rtpmap:\d+ ([\w-]+)\/90000/.exec(response.status === 201 ? answer.split('m=video')[1] ?? '' : '')?.[1] ?? null;
    return { status: response.status, location, videoCodec, body: response.status === 201 ? null : answer };
  }, { room, key });
}

/** The WHIP publisher's connection state and what it sends: { connectionState, video, audio }. */
async function whipSent(page) {
  return page.evaluate(async () => {
    const report = await window.__whip.pc.getStats();
    const out = {};
    report.forEach((s) => {
      if (s.type !== 'outbound-rtp') return;
      const codec = s.codecId ? report.get(s.codecId)?.mimeType ?? null : null;
      out[s.kind] = { packetsSent: s.packetsSent, framesEncoded: s.framesEncoded ?? null, codec };
    });
    return { connectionState: window.__whip.pc.connectionState, ...out };
  });
}

step('WHIP in, WHEP out: a browser publishes, a viewer watches, DELETE takes it offline', async () => {
  const room = `whip-${run}`;
  // The viewer comes first: it waits on the offline message and starts playing on its own.
  const viewer = await openViewer(room, 'whip-viewer');
  const publisher = await newLoggedPage(browser, 'whip-publisher');
  pages.add(publisher);
  allPages.push(publisher);
  await expectShown(viewer, 'the offline message', (info) => info.badge === 'OFFLINE' && info.state === 'offline' &&
    /host is offline/i.test(info.stage ?? ''));

  // Any document of the server's origin will do (a secure context: getUserMedia works). The
  // home page without a room only shows the join form (and has an inline icon: /healthz
  // would make Chromium ask for /favicon.ico, a 404 logged as a console error).
  await publisher.goto(new URL('/', server.url).href);
  const published = await publishWhip(publisher, room, room);
  assert.equal(published.status, 201, `POST /whip/${room}: ${JSON.stringify(published)}`);
  assert.ok(published.location, 'the WHIP answer has a Location');
  const sent = await waitFor(async () => {
    const sent = await whipSent(publisher);
    return sent.connectionState === 'connected' && sent.video?.packetsSent > 0 && sent.audio?.packetsSent > 0 ? sent : null;
  }, { timeout: 15_000, interval: 200, message: 'the WHIP publisher to connect and send' });

  const played = await expectPlaying(viewer, { timeout: 20_000 });
  const shown = await expectShown(viewer, 'LIVE and the WHIP host', (info) => info.badge === 'LIVE' && info.state === 'playing' &&
    info.host && info.host !== '—');
  const status = await roomStatus(room);
  assert.equal(status.host?.source, 'whip', `host in ${JSON.stringify(status)}`);
  console.log(`WHIP -> WHEP: offered H.264 first, the answer's first video codec is ${published.videoCodec}, ` +
    `the publisher sends ${sent.video.codec} + ${sent.audio.codec}; the viewer decodes ${played.video.frameWidth}x${played.video.frameHeight}, ` +
    `page shows ${JSON.stringify({ badge: shown.badge, host: shown.host, viewers: shown.viewers })}`);
  await reportLatency(viewer, {
    label: 'WHIP -> WHEP',
    file: 'latency-whip.json',
    method: 'the publishing page draws floor(Date.now()) mod 2^32 as 32 blocks into the top 16 rows of a ' +
      'canvas it publishes (captureStream, 30 fps); the viewer page in the same browser reads each presented ' +
      'frame (requestVideoFrameCallback -> canvas) and subtracts it from Date.now()',
    source: `Chromium canvas, ${sent.video.codec}, WHIP -> roomcast -> WHEP`,
  });

  const deleted = await publisher.evaluate(async () => {
    const response = await fetch(window.__whip.location, { method: 'DELETE', headers: { Authorization: `Bearer ${window.__whip.key}` } });
    return response.status;
  });
  assert.ok(deleted >= 200 && deleted < 300, `DELETE of the WHIP session: HTTP ${deleted}`);
  const deletedAt = Date.now();
  const offline = await expectShown(viewer, 'OFFLINE after the WHIP session ended',
    (info) => info.badge === 'OFFLINE' && info.state === 'offline', { timeout: 10_000 });
  console.log(`viewer showed OFFLINE ${Date.now() - deletedAt} ms after the DELETE (polling every 2 s): ${JSON.stringify(offline.stage)}`);
  await publisher.evaluate(() => {
    window.__whip.pc.close();
    window.__whip.stream.getTracks().forEach((track) => track.stop());
  });
  await closePage(viewer);
  await closePage(publisher);
});

step('no page logged an error', async () => {
  for (const page of allPages) {
    assert.deepEqual(pageErrors(page), [], `${pageLabel(page)} logged errors`);
  }
});
