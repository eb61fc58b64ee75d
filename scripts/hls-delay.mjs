#!/usr/bin/env node
// How far behind the camera each way of watching is, for docs/performance.md (a measurement, not
// a test: it asserts nothing).
//
//   cargo build && node scripts/hls-delay.mjs [--seconds 30] [--warmup 5] [--gop 60]
//                                              [--only ll,classic,webrtc,nginx]
//
// One ffmpeg encode (the browser tests' OBS stand-in: 720p30 x264 veryfast zerolatency, AAC,
// a keyframe every --gop frames, 60 = OBS's default 2 s; the wall clock burned into the top rows
// of every frame, tests/browser/lib.mjs CLOCK_FILTER) is pushed through ffmpeg's tee muxer, at
// the same time, to
//   - roomcast (`roomcast serve`, ROOMCAST_BIN or target/debug/roomcast), watched as
//       ll       LL-HLS /hls/<room>/index.m3u8 in hls.js as /watch plays it (lowLatencyMode,
//                maxLiveSyncPlaybackRate 1.5: catches up to PART-HOLD-BACK),
//       classic  the same playlist in hls.js with lowLatencyMode: false (whole segments),
//       webrtc   /watch/<room> over WebRTC (WHEP), for reference;
//   - nginx      Debian's nginx with libnginx-mod-rtmp (`hls on; hls_fragment 2s;
//                hls_playlist_length 10s;`), its .m3u8 served by the same nginx over HTTP on
//                loopback, in hls.js with its default settings (the baseline of
//                /work/shared/TESTING.md).
// Each is played in its own headless Chromium page, one after the other (two cores): after
// playback starts and --warmup seconds pass, every frame presented for --seconds has its
// burned-in clock read (requestVideoFrameCallback -> canvas) and subtracted from Date.now();
// for the HLS pages the player's EXT-X-PROGRAM-DATE-TIME delay (Date.now() − hls.playingDate)
// is recorded too where the playlist has one. Prints a markdown table (median / p95) and writes
// test-output/hls-delay.json.
//
// Needs ffmpeg, /usr/bin/chromium (CHROMIUM_PATH), npm's playwright-core (npm ci), and for the
// baseline nginx + libnginx-mod-rtmp (apt-get install --no-install-recommends nginx
// libnginx-mod-rtmp); without the module the nginx row is skipped with a message.

import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import {
  FFMPEG,
  NGINX_BIN,
  REPO_ROOT,
  ffmpegPushArgs,
  freePort,
  launchBrowser,
  measureLatencyInPage,
  openHlsPlayerPage,
  openWatchPage,
  pageErrors,
  pageLabel,
  percentile,
  startLoggedProcess,
  startServer,
  waitFor,
} from '../tests/browser/lib.mjs';

const NGINX_RTMP_MODULE = '/usr/lib/nginx/modules/ngx_rtmp_module.so';
const OUTPUT = path.join(REPO_ROOT, 'test-output', 'hls-delay.json');
const MODES = ['ll', 'classic', 'webrtc', 'nginx'];

const { values: options } = parseArgs({
  options: {
    seconds: { type: 'string', default: '30' },
    warmup: { type: 'string', default: '5' },
    gop: { type: 'string', default: '60' },
    only: { type: 'string', default: MODES.join(',') },
  },
});
const sampleMs = Number(options.seconds) * 1000;
const warmupMs = Number(options.warmup) * 1000;
const gop = Number(options.gop);
const wanted = options.only.split(',').map((m) => m.trim()).filter(Boolean);
for (const mode of wanted) {
  if (!MODES.includes(mode)) fail(`--only: unknown mode ${mode} (modes: ${MODES.join(', ')})`);
}

function fail(message) {
  console.error(`hls-delay: ${message}`);
  process.exit(1);
}

function log(message) {
  console.error(`[${new Date().toISOString().slice(11, 23)}] ${message}`);
}

// ---------------------------------------------------------------------------------------------
// nginx-rtmp, the baseline

/**
 * nginx with the RTMP module writing HLS (2 s fragments, 10 s playlist) into a temp directory
 * and serving it over HTTP on loopback. Returns { rtmpUrl, httpUrl, dir, logs(), stop() }.
 */
async function startNginxRtmp() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'roomcast-nginx-rtmp-'));
  chmodSync(dir, 0o755);
  for (const sub of ['logs', 'tmp']) mkdirSync(path.join(dir, sub));
  // Written by nginx's worker, which runs as `nobody` when started as root.
  mkdirSync(path.join(dir, 'hls'));
  chmodSync(path.join(dir, 'hls'), 0o777);
  const [rtmpPort, httpPort] = [await freePort(), await freePort()];
  const conf = path.join(dir, 'nginx.conf');
  const tmp = (name) => path.join(dir, 'tmp', name);
  writeFileSync(conf, `load_module ${NGINX_RTMP_MODULE};
worker_processes 1;
pid ${path.join(dir, 'nginx.pid')};
error_log ${path.join(dir, 'logs', 'error.log')} notice;
events { worker_connections 256; }
rtmp {
    server {
        listen 127.0.0.1:${rtmpPort};
        chunk_size 4096;
        application live {
            live on;
            record off;
            hls on;
            hls_path ${path.join(dir, 'hls')};
            hls_fragment 2s;
            hls_playlist_length 10s;
        }
    }
}
http {
    access_log ${path.join(dir, 'logs', 'access.log')};
    client_body_temp_path ${tmp('body')};
    proxy_temp_path ${tmp('proxy')};
    fastcgi_temp_path ${tmp('fastcgi')};
    uwsgi_temp_path ${tmp('uwsgi')};
    scgi_temp_path ${tmp('scgi')};
    types {
        application/vnd.apple.mpegurl m3u8;
        video/mp2t ts;
    }
    server {
        listen 127.0.0.1:${httpPort};
        location /hls/ {
            alias ${path.join(dir, 'hls')}/;
            add_header Cache-Control no-cache;
        }
    }
}
`);
  const args = ['-p', `${dir}/`, '-c', conf, '-g', 'daemon off;'];
  const check = spawnSync(NGINX_BIN, ['-t', ...args], { encoding: 'utf8' });
  if (check.error || check.status !== 0) {
    throw new Error(`nginx -t refused ${conf}: ${check.error?.message ?? ''}${check.stderr}`);
  }
  const nginx = startLoggedProcess(NGINX_BIN, args, { label: 'nginx' });
  const logs = () => {
    const error = path.join(dir, 'logs', 'error.log');
    return `${nginx.logs()}\n--- error.log ---\n${existsSync(error) ? readFileSync(error, 'utf8') : ''}`;
  };
  try {
    for (const port of [rtmpPort, httpPort]) {
      await waitFor(async () => {
        if (nginx.exit) throw new Error(`nginx exited ${JSON.stringify(nginx.exit)}`);
        const socket = net.connect(port, '127.0.0.1');
        try {
          await once(socket, 'connect');
          return true;
        } finally {
          socket.destroy();
        }
      }, { timeout: 10_000, interval: 50, message: `nginx to listen on 127.0.0.1:${port}` });
    }
  } catch (error) {
    await nginx.stop();
    throw new Error(`${error.message}\n${logs()}`);
  }
  return {
    rtmpUrl: `rtmp://127.0.0.1:${rtmpPort}/live`,
    httpUrl: `http://127.0.0.1:${httpPort}`,
    dir,
    logs,
    stop: async () => {
      await nginx.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Measuring one page

/**
 * Waits until `url` lists at least `segments` segments: a viewer joining a running broadcast
 * (hls.js starts a fixed distance behind the live edge only once the playlist is that long;
 * on a younger one it starts at its first segment and stays behind by whatever that was).
 */
function waitForSegments(url, segments, push) {
  return waitFor(async () => {
    if (push.exit) throw new Error(`ffmpeg exited: ${push.logs()}`);
    const response = await fetch(url, { cache: 'no-store' });
    const text = await response.text();
    const count = text.match(/^#EXTINF/gm)?.length ?? 0;
    if (!(response.ok && count >= segments)) throw new Error(`HTTP ${response.status}, ${count} segments: ${text.slice(0, 300)}`);
    return true;
  }, { timeout: 60_000, interval: 250, message: `${url} to list ${segments} segments` });
}

/**
 * Waits until `page`'s video (`videoSelector`, or the watch page's) has presented frames for
 * `warmupMs`, then measures `sampleMs` of presented frames. Returns the summary row.
 */
async function measure(mode, page, { videoSelector = null, pdtDelayExpression = null, describe }) {
  const label = pageLabel(page);
  await waitFor(async () => {
    const frames = await page.evaluate((selector) => {
      const video = selector ? document.querySelector(selector) : window.roomcast?.video;
      return video && video.videoWidth === 1280 && !video.paused ? video.getVideoPlaybackQuality().totalVideoFrames : 0;
    }, videoSelector);
    if (!(frames > 10)) throw new Error(`${label}: ${frames} frames`);
    return true;
  }, { timeout: 40_000, interval: 250, message: `${label} to play the 1280x720 stream` });
  log(`${mode}: playing; warming up ${warmupMs / 1000} s, then measuring ${sampleMs / 1000} s`);
  await new Promise((resolve) => setTimeout(resolve, warmupMs)); // settling time by design, not readiness
  const result = await measureLatencyInPage(page, sampleMs, { videoSelector, pdtDelayExpression });
  const delays = result.samples.map((s) => s.delay).sort((a, b) => a - b);
  const pdt = result.samples.map((s) => s.pdtDelay).filter((d) => d != null).sort((a, b) => a - b);
  const steps = result.samples.slice(1).map((s, i) => s.value - result.samples[i].value);
  const row = {
    mode,
    path: describe,
    samples: delays.length,
    frames_presented: result.frames,
    rejected_frames: result.rejectedCount,
    median_ms: percentile(delays, 50),
    p95_ms: percentile(delays, 95),
    min_ms: delays[0] ?? null,
    max_ms: delays.at(-1) ?? null,
    pdt_median_ms: percentile(pdt, 50),
    pdt_p95_ms: percentile(pdt, 95),
    plausible_clock_steps: `${steps.filter((d) => d >= 0 && d <= 250).length}/${steps.length}`,
    page_errors: pageErrors(page),
  };
  log(`${mode}: median ${row.median_ms} ms, p95 ${row.p95_ms} ms (PDT median ${row.pdt_median_ms ?? '—'} ms), ${row.samples} frames`);
  return row;
}

// ---------------------------------------------------------------------------------------------
// Main

function preflight() {
  const ffmpeg = spawnSync(FFMPEG, ['-hide_banner', '-version'], { encoding: 'utf8' });
  if (ffmpeg.error || ffmpeg.status !== 0) fail(`${FFMPEG} does not run: apt-get install --no-install-recommends ffmpeg (or set FFMPEG)`);
  const nginxWanted = wanted.includes('nginx');
  let nginxProblem = null;
  if (nginxWanted && !existsSync(NGINX_BIN)) nginxProblem = `${NGINX_BIN} is missing`;
  else if (nginxWanted && !existsSync(NGINX_RTMP_MODULE)) nginxProblem = `${NGINX_RTMP_MODULE} is missing`;
  if (nginxProblem) {
    console.error(`hls-delay: ${nginxProblem}: the nginx-rtmp baseline is skipped. Install it with\n` +
      '  apt-get install --no-install-recommends nginx libnginx-mod-rtmp');
  }
  return { ffmpegVersion: ffmpeg.stdout.split('\n')[0], nginx: nginxWanted && !nginxProblem };
}

async function main() {
  const { ffmpegVersion, nginx: withNginx } = preflight();
  const withRoomcast = wanted.some((m) => m !== 'nginx');
  const room = `delay-${Date.now().toString(36)}`;
  const cleanups = [];
  const rows = [];
  let command = null;
  try {
    const roomcast = withRoomcast ? await startServer() : null;
    if (roomcast) cleanups.push(() => roomcast.stop());
    const nginx = withNginx ? await startNginxRtmp() : null;
    if (nginx) cleanups.push(() => nginx.stop());

    // One encode, pushed to every server at once.
    const targets = [
      roomcast && `${roomcast.rtmpUrl}/live/${room}`,
      nginx && `${nginx.rtmpUrl}/${room}`,
    ].filter(Boolean);
    if (!targets.length) fail('nothing to measure');
    const output = ['-flags', '+global_header', '-f', 'tee', targets.map((t) => `[f=flv:onfail=abort]${t}`).join('|')];
    const push = startLoggedProcess(FFMPEG, ffmpegPushArgs(null, { clock: true, bframes: 0, gop, output }), { label: 'ffmpeg' });
    cleanups.push(() => push.stop());
    command = push.command;
    log(`pushing: ${command}`);

    const browser = await launchBrowser();
    cleanups.push(() => browser.close());
    const pdt = 'window.__player.delayMs()';
    const roomcastPlaylist = roomcast && `${roomcast.url}/hls/${room}/index.m3u8`;
    // Playlists in their steady state first: roomcast keeps --hls-window (6) segments, nginx
    // hls_playlist_length / hls_fragment (5).
    if (wanted.includes('ll') || wanted.includes('classic')) await waitForSegments(roomcastPlaylist, 4, push);
    const runs = {
      ll: async () => {
        const page = await openHlsPlayerPage(browser, roomcast.url, roomcastPlaylist, { label: 'll', hlsConfig: { lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5 } });
        return [page, await measure('ll', page, { videoSelector: '#video', pdtDelayExpression: pdt,
          describe: 'roomcast LL-HLS, hls.js as on /watch: lowLatencyMode, maxLiveSyncPlaybackRate 1.5' })];
      },
      classic: async () => {
        const page = await openHlsPlayerPage(browser, roomcast.url, roomcastPlaylist, { label: 'classic', hlsConfig: { lowLatencyMode: false } });
        return [page, await measure('classic', page, { videoSelector: '#video', pdtDelayExpression: pdt,
          describe: 'roomcast HLS, hls.js lowLatencyMode: false' })];
      },
      webrtc: async () => {
        const page = await openWatchPage(browser, roomcast.url, room, { label: 'webrtc' });
        return [page, await measure('webrtc', page, { describe: 'roomcast WebRTC (/watch, WHEP)' })];
      },
      nginx: async () => {
        const playlist = `${nginx.httpUrl}/hls/${room}.m3u8`;
        await waitForSegments(playlist, 4, push);
        const page = await openHlsPlayerPage(browser, nginx.httpUrl, playlist, { label: 'nginx', hlsConfig: {}, hlsJsFromDisk: true });
        return [page, await measure('nginx', page, { videoSelector: '#video', pdtDelayExpression: pdt,
          describe: 'nginx-rtmp HLS (hls_fragment 2s), hls.js defaults' })];
      },
    };
    const order = MODES.filter((m) => wanted.includes(m) && (m === 'nginx' ? withNginx : withRoomcast));
    for (const mode of order) {
      log(`${mode}: opening the page`);
      let page = null;
      try {
        const [opened, row] = await runs[mode]();
        page = opened;
        rows.push(row);
      } catch (error) {
        log(`${mode}: failed: ${error.message}`);
        rows.push({ mode, error: error.message });
      } finally {
        await page?.context().close();
      }
      if (push.exit) throw new Error(`ffmpeg exited early: ${push.logs()}`);
    }

    const result = {
      measured_at: new Date().toISOString(),
      machine: `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, ${os.type()} ${os.release()}`,
      chromium: browser.version(),
      hls_js: JSON.parse(readFileSync(path.join(REPO_ROOT, 'node_modules', 'hls.js', 'package.json'), 'utf8')).version,
      ffmpeg: ffmpegVersion,
      source: command,
      warmup_s: warmupMs / 1000,
      sample_s: sampleMs / 1000,
      method: 'ffmpeg burns floor(wall clock ms) mod 2^32 into the top 16 rows of each frame; the page reads each ' +
        'presented frame (requestVideoFrameCallback -> canvas) and subtracts it from Date.now(); pdt_* is ' +
        'Date.now() − hls.playingDate (EXT-X-PROGRAM-DATE-TIME) at the same frames',
      rows,
    };
    mkdirSync(path.dirname(OUTPUT), { recursive: true });
    writeFileSync(OUTPUT, `${JSON.stringify(result, null, 2)}\n`);

    const cell = (ms) => (ms == null ? '—' : `${(ms / 1000).toFixed(2)} s`);
    console.log(`Delay behind the camera (burned-in clock), ${result.sample_s} s per row after ${result.warmup_s} s of ` +
      `playback; ${result.machine}; Chromium ${result.chromium}, hls.js ${result.hls_js}; keyframe every ${gop} frames.\n`);
    console.log('| path | median | p95 | PDT-based median | frames |');
    console.log('|---|---|---|---|---|');
    for (const row of rows) {
      if (row.error) console.log(`| ${row.mode} | failed: ${row.error.split('\n')[0]} | | | |`);
      else console.log(`| ${row.path} | ${cell(row.median_ms)} | ${cell(row.p95_ms)} | ${cell(row.pdt_median_ms)} | ${row.samples} |`);
    }
    console.log(`\n(written to ${path.relative(process.cwd(), OUTPUT)})`);
  } finally {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {});
  }
}

main().catch((error) => {
  console.error(`hls-delay: ${error.stack ?? error}`);
  process.exit(1);
});
