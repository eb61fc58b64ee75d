// End to end: real headless Chromium pages running web-client/ against a real `roomcast serve`.
//
//   1. Four pages join one room: each decodes the three others' video (frames advancing) and
//      receives their audio (packets advancing), and shows three tiles with the right names.
//   2. One page closes: within 2 s (measured from the close call) every remaining page has
//      removed its tile and no longer has a live receiver for its tracks.
//   3. A fifth page joins late: all three existing videos are decoded within 1 s of its peer
//      connection reaching 'connected' (both instants recorded in the page; the decode time
//      from requestVideoFrameCallback metadata), and the room sees and hears it too.
//   4. The fifth page clicks Leave: it is back at the directory (the room in its start form) with
//      camera and connection closed,
//      and the others drop its tile.
//   5. A tab is killed (renderer crash: no unload handler, no leave message): within 2 s the
//      others drop its tile and tracks, from the WebSocket close alone.
//   6. No page logged a console error or threw.
// The measured numbers are printed (they show up as `# ...` lines in the TAP output). On a
// failure the server log, each page's console, state and a screenshot go to test-output/browser/.
//
// Run: `cargo build && npm run test:browser`. ROOMCAST_BIN overrides the binary;
// ROOMCAST_TEST_VERBOSE=1 streams the server log; ROOMCAST_WEB_CLIENT_FROM_DISK=1 serves
// web-client/ from the working tree instead of the copy embedded in the binary.

import { after, before } from 'node:test';
import assert from 'node:assert/strict';
import {
  departureRecord,
  dumpDiagnostics,
  inboundStats,
  launchBrowser,
  mediaTimeline,
  mediaTimelineInitScript,
  openRoomPage,
  pageErrors,
  pageLabel,
  remoteTiles,
  sessionInfo,
  startServer,
  transceivers,
  waitFor,
  watchDeparture,
  expectMediaFrom,
  sequentialSteps,
  stepLabel,
} from './lib.mjs';

const DEPARTURE_BOUND_MS = 2_000;
const LATE_JOIN_FIRST_FRAME_BOUND_MS = 1_000;

let server;
let browser;
/** Pages currently in the room, and every page ever opened (for the console check). */
const pages = [];
const allPages = [];
const room = `rooms-${process.pid}-${Date.now().toString(36)}`;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  const exit = await server?.stop();
  console.log(`server stopped: ${JSON.stringify(exit)}`);
});

/** Runs one step; on failure dumps the server log and every page, and skips later steps. */
const step = sequentialSteps((name) => dumpDiagnostics({ server, pages, label: stepLabel('', name) }));

/** The id each page got from the server, keyed by display name. */
async function idsByName(roomPages) {
  const entries = await Promise.all(roomPages.map(async (page) => {
    const info = await sessionInfo(page);
    return [pageLabel(page), info.participantId];
  }));
  return new Map(entries);
}

/** Waits until `page` shows exactly the remote tiles in `expected` (name -> id), each playing video. */
async function expectTiles(page, expected, { timeout }) {
  const label = pageLabel(page);
  const want = [...expected].map(([name, id]) => ({ id, name })).sort((a, b) => a.id - b.id);
  return waitFor(async () => {
    const tiles = (await remoteTiles(page)).sort((a, b) => a.id - b.id);
    assert.deepEqual(tiles.map(({ id, name }) => ({ id, name })), want, `${label}: remote tiles`);
    const dark = tiles.filter((tile) => !tile.hasVideo || tile.videoWidth === 0 || tile.audioTrackIds.length === 0);
    if (dark.length) throw new Error(`${label}: tiles without playing video or audio: ${JSON.stringify(dark)}`);
    return tiles;
  }, { timeout, interval: 200, message: `${label} to show tiles ${JSON.stringify(want)} with video and audio` });
}

step('four participants see and hear each other', async () => {
  const names = ['p1', 'p2', 'p3', 'p4'];
  pages.push(...await Promise.all(names.map((name) => openRoomPage(browser, server.url, room, name))));
  allPages.push(...pages);

  await waitFor(async () => {
    const infos = await Promise.all(pages.map(sessionInfo));
    const notConnected = infos.filter((info) => info?.state !== 'connected');
    if (notConnected.length) throw new Error(`states: ${JSON.stringify(infos.map((i) => [i?.state, i?.connectionState, i?.stateReason]))}`);
    return true;
  }, { timeout: 20_000, interval: 100, message: 'all four pages to be connected' });

  const ids = await idsByName(pages);
  assert.equal(new Set(ids.values()).size, 4, `distinct participant ids: ${JSON.stringify([...ids])}`);
  await Promise.all(pages.map(async (page) => {
    const others = new Map([...ids].filter(([name]) => name !== pageLabel(page)));
    const stats = await expectMediaFrom(page, others, { timeout: 30_000 });
    const videos = stats.filter((s) => s.kind === 'video' && s.framesDecoded > 0 && s.frameWidth > 0);
    const audios = stats.filter((s) => s.kind === 'audio' && s.packetsReceived > 0);
    assert.ok(videos.length >= 3, `${pageLabel(page)}: ${videos.length} decoding videos`);
    assert.ok(audios.length >= 3, `${pageLabel(page)}: ${audios.length} audio streams`);
    await expectTiles(page, others, { timeout: 5_000 });
    const header = await page.textContent('#participant-count');
    assert.equal(header, '4 participants', `${pageLabel(page)}: header count`);
  }));
});

/**
 * Make the page labelled `label` go by running `departAction(page)`, and assert that within
 * DEPARTURE_BOUND_MS (measured from just before the action) every other page has removed its
 * tile and no longer has live receivers for its audio and video mids. Returns the others.
 */
async function assertDeparture(label, how, departAction) {
  const leaving = pages.find((page) => pageLabel(page) === label);
  const staying = pages.filter((page) => page !== leaving);
  const leavingId = (await sessionInfo(leaving)).participantId;

  // The mids each remaining page receives the leaving participant's tracks on.
  const midsByPage = await Promise.all(staying.map(async (page) => {
    const trx = await transceivers(page);
    const mids = trx.filter((t) => t.mappedTo?.participant_id === leavingId).map((t) => t.mid);
    assert.equal(mids.length, 2, `${pageLabel(page)}: expected an audio and a video mid for ${label}, got ${JSON.stringify(trx)}`);
    return mids;
  }));
  await Promise.all(staying.map((page, i) => watchDeparture(page, leavingId, midsByPage[i])));

  const startedAt = Date.now();
  await departAction(leaving);
  const actionTookMs = Date.now() - startedAt;

  const records = await Promise.all(staying.map((page) => waitFor(async () => {
    const record = await departureRecord(page);
    if (record?.tileGoneAt == null || record?.tracksDeadAt == null) {
      throw new Error(`${pageLabel(page)}: ${JSON.stringify(record)}; transceivers: ${JSON.stringify(await transceivers(page))}`);
    }
    return record;
  }, { timeout: DEPARTURE_BOUND_MS + 8_000, interval: 100, message: `${pageLabel(page)} to drop ${label}'s tile and tracks` })));

  const measured = staying.map((page, i) => ({
    page: pageLabel(page),
    tileGoneMs: records[i].tileGoneAt - startedAt,
    tracksDeadMs: records[i].tracksDeadAt - startedAt,
  }));
  console.log(`departure by ${how} (ms after it started; the action itself took ${actionTookMs} ms): ${JSON.stringify(measured)}`);
  for (const m of measured) {
    assert.ok(m.tileGoneMs <= DEPARTURE_BOUND_MS, `${m.page}: ${label}'s tile removed after ${m.tileGoneMs} ms (bound ${DEPARTURE_BOUND_MS})`);
    assert.ok(m.tracksDeadMs <= DEPARTURE_BOUND_MS, `${m.page}: ${label}'s tracks stopped after ${m.tracksDeadMs} ms (bound ${DEPARTURE_BOUND_MS})`);
  }
  pages.splice(pages.indexOf(leaving), 1);
  return { leaving, staying };
}

step(`a closed page disappears from the others within ${DEPARTURE_BOUND_MS} ms`, async () => {
  const { staying } = await assertDeparture('p4', 'page.close()', (page) => page.close());
  for (const page of staying) {
    assert.equal(await page.textContent('#participant-count'), '3 participants', `${pageLabel(page)}: header count`);
  }
});

step(`a late joiner decodes every existing video within ${LATE_JOIN_FIRST_FRAME_BOUND_MS} ms of connecting`, async () => {
  const existing = [...pages];
  const late = await openRoomPage(browser, server.url, room, 'p5', {
    initScripts: [[mediaTimelineInitScript, { intervalMs: 20, expectVideos: existing.length }]],
  });
  pages.push(late);
  allPages.push(late);

  const existingIds = await idsByName(existing);
  const wanted = [...existingIds.values()];
  const timeline = await waitFor(async () => {
    const now = await mediaTimeline(late);
    const decoded = (now?.decodedFrames ?? []).filter((f) => wanted.includes(f.participantId));
    const confirmed = (now?.firstFrames ?? []).filter((f) => wanted.includes(f.participantId));
    if (now?.connectedObservedAt == null || decoded.length < wanted.length || confirmed.length < wanted.length) {
      throw new Error(`p5 timeline: ${JSON.stringify(now)}`);
    }
    return now;
  }, { timeout: 15_000, interval: 25, message: `p5 to connect and decode a frame of each of ${JSON.stringify([...existingIds])}` });

  // All instants are recorded in the page (performance.now()), none by polling from here.
  // Connected: the earliest observation of it, the 'connected' event or a stats sample whose
  // DTLS transport is connected (a busy page dispatches the event late); it happened after
  // `notConnectedAt`. First frame: two upper bounds on the first decode, and the assertion takes
  // the tighter: `rvfcMs`, the decode time (receiveTime + processingDuration) of the first frame
  // the instrumentation's own <video> presented (exact for that frame, late only if the element
  // started after the first decode), and `statsMs`, the 20 ms in-page getStats sampler's first
  // sample with framesDecoded > 0 (late by up to the sampling gap, long on a busy page).
  // `firstPacketMs`: that sampler's first sample with packetsReceived > 0.
  const connectedAt = timeline.connectedObservedAt;
  const firstFrames = [...existingIds].map(([name, id]) => {
    const decoded = timeline.decodedFrames.find((f) => f.participantId === id);
    const sampled = timeline.firstFrames.find((f) => f.participantId === id);
    const packet = timeline.firstPackets.find((f) => f.participantId === id);
    return {
      from: name,
      ms: Math.round(Math.min(decoded.decodedAt, sampled.t) - connectedAt),
      rvfcMs: Math.round(decoded.decodedAt - connectedAt),
      statsMs: Math.round(sampled.t - connectedAt),
      firstPacketMs: packet ? Math.round(packet.t - connectedAt) : null,
      width: decoded.width,
    };
  });
  const rel = (t) => (t == null ? null : Math.round(t - timeline.createdAt));
  const gaps = timeline.sampleLog.map(([at], i, log) => (i ? at - log[i - 1][0] : at));
  console.log(`late joiner (ms since its RTCPeerConnection was created): connected between ${rel(timeline.notConnectedAt)} and ` +
    `${rel(connectedAt)} (event at ${rel(timeline.connectedAt)}, stats at ${rel(timeline.transportConnectedAt)}); ` +
    `first decoded frame, ms after connected: ${JSON.stringify(firstFrames)} ` +
    `(${timeline.samples} stats samples, largest gap ${Math.max(...gaps)} ms)`);
  for (const frame of firstFrames) {
    assert.ok(frame.ms <= LATE_JOIN_FIRST_FRAME_BOUND_MS,
      `p5 decoded ${frame.from}'s first frame ${frame.ms} ms after connecting (bound ${LATE_JOIN_FIRST_FRAME_BOUND_MS})`);
  }

  // Each participant's audio and video reach p5 in one MediaStream (one msid stream id): what
  // lets the browser play them in sync.
  const streamsByParticipant = await late.evaluate(() => {
    const streamOfMid = new Map();
    for (const section of window.roomcast.pc.remoteDescription.sdp.split(/\r?\nm=/).slice(1)) {
      const mid = /^a=mid:(\S+)/m.exec(section)?.[1];
      if (mid) streamOfMid.set(mid, /^a=msid:(\S+)/m.exec(section)?.[1] ?? null);
    }
    /** @type {Record<string, {kind: string, stream: string | null}[]>} */
    const byParticipant = {};
    for (const [mid, info] of window.roomcast.mids) {
      (byParticipant[info.participant_id] ??= []).push({ kind: info.kind, stream: streamOfMid.get(mid) ?? null });
    }
    return byParticipant;
  });
  for (const [name, id] of existingIds) {
    const streams = streamsByParticipant[id] ?? [];
    assert.deepEqual(streams.map((s) => s.kind).sort(), ['audio', 'video'], `p5 receives ${name}'s audio and video: ${JSON.stringify(streams)}`);
    assert.ok(streams[0].stream && streams.every((s) => s.stream === streams[0].stream),
      `${name}'s audio and video are in one stream on p5: ${JSON.stringify(streams)}`);
  }

  // And the rest of the room now includes p5, both ways.
  const ids = await idsByName(pages);
  await Promise.all(pages.map(async (page) => {
    const others = new Map([...ids].filter(([name]) => name !== pageLabel(page)));
    await expectMediaFrom(page, others, { timeout: 15_000 });
    await expectTiles(page, others, { timeout: 5_000 });
  }));
});

step('the leave button leaves the room and returns to the directory', async () => {
  const leaver = pages.find((page) => pageLabel(page) === 'p5');
  const staying = pages.filter((page) => page !== leaver);
  const leaverId = (await sessionInfo(leaver)).participantId;

  await leaver.getByRole('button', { name: 'Leave' }).click();
  const after = await leaver.evaluate(() => ({
    state: window.roomcast.state,
    directoryShown: !document.getElementById('directory-view').hidden,
    room: document.getElementById('start-room').value,
    path: location.pathname + location.search,
    pcState: window.roomcast.pc?.connectionState ?? null,
    liveLocalTracks: window.roomcast.localStream?.getTracks().filter((t) => t.readyState === 'live').length ?? 0,
  }));
  assert.deepEqual(after, {
    state: 'left', directoryShown: true, room, path: '/', pcState: 'closed', liveLocalTracks: 0,
  }, 'p5 after clicking Leave');

  await Promise.all(staying.map((page) => waitFor(async () => {
    const tiles = await remoteTiles(page);
    if (tiles.some((tile) => tile.id === leaverId)) throw new Error(`${pageLabel(page)} still shows p5: ${JSON.stringify(tiles)}`);
    return true;
  }, { timeout: 5_000, interval: 50, message: `${pageLabel(page)} to drop p5 after it left` })));
  pages.splice(pages.indexOf(leaver), 1);
});

step(`a killed tab (renderer crash, no leave message) disappears from the others within ${DEPARTURE_BOUND_MS} ms`, async () => {
  // Crash the renderer: no unload handlers run, so the server only sees the WebSocket drop.
  const { leaving } = await assertDeparture('p3', 'renderer crash', async (page) => {
    const cdp = await page.context().newCDPSession(page);
    // Not awaited: the reply never comes from a page that crashed.
    cdp.send('Page.crash').catch(() => {});
  });
  allPages.splice(allPages.indexOf(leaving), 1); // a crashed page's own log is not the client's fault
});

step('no page logged an error', async () => {
  for (const page of allPages) {
    assert.deepEqual(pageErrors(page), [], `${pageLabel(page)} logged errors`);
  }
});
