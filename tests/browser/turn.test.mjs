// End to end through a real TURN server: Debian's coturn on loopback with TURN REST credentials
// (`use-auth-secret`), roomcast started with the same secret (--turn-secret, --turn-urls), and
// headless Chromium pages of which some may only use relay candidates (iceTransportPolicy
// 'relay': a client whose UDP is blocked except to its TURN server).
//
//   1. A relay-only participant and a direct one join a room: each decodes the other's video and
//      receives its audio; the relay-only page's selected candidate pair has a local 'relay'
//      candidate, and coturn logged an allocation for its credentials (the `joined` message's).
//   2. A relay-only WHEP viewer (web-client/watch.js) plays the room's host: its TURN server and
//      credentials come from the WHEP answer's Link headers.
//   3. Against a roomcast whose TURN secret is wrong, a relay-only participant never connects:
//      coturn refuses its credentials, so it has no candidate at all.
// On a failure the roomcast and coturn logs, each page's console, state and a screenshot go to
// test-output/browser/.
//
// Run: `cargo build && node --test tests/browser/turn.test.mjs` (needs coturn:
// scripts/install-test-deps.sh). ROOMCAST_TEST_VERBOSE=1 streams both servers' logs.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  dumpDiagnostics,
  expectMediaFrom,
  inboundStats,
  launchBrowser,
  openRoomPage,
  openWatchPage,
  pageErrors,
  pageLabel,
  relayOnlyInitScript,
  relayPcRecords,
  selectedCandidatePair,
  sessionInfo,
  startServer,
  startTurnServer,
  waitFor,
  sequentialSteps,
  stepLabel,
} from './lib.mjs';

const SECRET = `turn-test-secret-${process.pid}`;
/** The negative check's bound: a relay-only page with refused credentials must not connect. */
const REFUSED_WINDOW_MS = 15_000;

let turn;
let server;
let browser;
const pages = [];
const room = `turn-${process.pid}-${Date.now().toString(36)}`;
/** Servers of the current step, for diagnostics. */
let stepServer = null;

before(async () => {
  turn = await startTurnServer({ secret: SECRET });
  server = await startServer({ extraArgs: ['--turn-secret', SECRET, '--turn-urls', turn.url] });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  await stepServer?.stop();
  await turn?.stop();
});

const step = sequentialSteps((name) => dumpDiagnostics({
  server: stepServer ?? server,
  pages,
  label: stepLabel('turn-', name),
  describePage: describeTurnPage,
  extra: { coturn: turn?.logs() ?? '' },
}));

async function describeTurnPage(page) {
  const [pair, records, inbound] = await Promise.all([
    selectedCandidatePair(page).catch((e) => String(e)),
    relayPcRecords(page),
    inboundStats(page),
  ]);
  const state = await page.evaluate(() => ({
    state: window.roomcast?.state ?? null,
    connectionState: window.roomcast?.pc?.connectionState ?? null,
    iceConnectionState: window.roomcast?.pc?.iceConnectionState ?? null,
  }));
  return { ...state, selectedPair: pair, relayPcs: records, inbound };
}

/** coturn's log lines that mention `username` (it logs the user of every request it handles). */
function coturnLinesFor(username) {
  return turn.lines.filter((line) => line.includes(username));
}

step('a relay-only participant sees and hears a direct one through coturn', async () => {
  const [direct, relayed] = await Promise.all([
    openRoomPage(browser, server.url, room, 'direct'),
    openRoomPage(browser, server.url, room, 'relayed', { initScripts: [relayOnlyInitScript] }),
  ]);
  pages.push(direct, relayed);
  await waitFor(async () => {
    const infos = await Promise.all(pages.map(sessionInfo));
    if (infos.some((info) => info?.state !== 'connected')) throw new Error(JSON.stringify(infos.map((i) => [i?.state, i?.connectionState])));
    return true;
  }, { timeout: 20_000, message: 'both pages to be connected' });

  const ids = new Map(await Promise.all(pages.map(async (page) => [pageLabel(page), (await sessionInfo(page)).participantId])));
  await expectMediaFrom(relayed, new Map([['direct', ids.get('direct')]]), { timeout: 20_000 });
  await expectMediaFrom(direct, new Map([['relayed', ids.get('relayed')]]), { timeout: 20_000 });

  const pair = await selectedCandidatePair(relayed);
  assert.equal(pair?.local?.candidateType, 'relay', `relayed page's selected pair: ${JSON.stringify(pair)}`);
  assert.equal(pair.local.address, '127.0.0.1', JSON.stringify(pair));
  const directPair = await selectedCandidatePair(direct);
  assert.notEqual(directPair?.local?.candidateType, 'relay', `direct page's selected pair: ${JSON.stringify(directPair)}`);

  // The credentials came from `joined` (room.js passes ice_servers to RTCPeerConnection) and
  // name the participant; coturn allocated a relay for exactly them.
  const [record] = await relayPcRecords(relayed);
  const username = record.iceServers[0]?.username;
  assert.match(username ?? '', new RegExp(`^\\d+:${ids.get('relayed')}$`), JSON.stringify(record));
  assert.deepEqual(record.iceServers[0].urls, [turn.url]);
  const allocated = await waitFor(() => coturnLinesFor(username).find((line) => /ALLOCATE processed, success/.test(line)), {
    timeout: 5_000,
    message: `coturn to log a successful ALLOCATE for ${username}`,
  });
  console.log(`coturn: ${allocated}`);
  console.log(`relayed page: local ${JSON.stringify(pair.local)} -> remote ${JSON.stringify(pair.remote)}`);
  for (const page of pages) assert.deepEqual(pageErrors(page), [], `${pageLabel(page)} logged errors`);
});

step('a relay-only WHEP viewer plays the room through coturn (Link header credentials)', async () => {
  const viewer = await openWatchPage(browser, server.url, room, { label: 'relayed-viewer', initScripts: [relayOnlyInitScript] });
  pages.push(viewer);
  await waitFor(async () => {
    const stats = await inboundStats(viewer);
    const video = stats.find((s) => s.kind === 'video' && s.framesDecoded > 0 && s.frameWidth > 0);
    const audio = stats.find((s) => s.kind === 'audio' && s.packetsReceived > 0);
    if (!video || !audio) throw new Error(`inbound-rtp: ${JSON.stringify(stats)}`);
    return true;
  }, { timeout: 20_000, interval: 250, message: 'the relay-only viewer to decode video and receive audio' });
  const pair = await selectedCandidatePair(viewer);
  assert.equal(pair?.local?.candidateType, 'relay', `viewer's selected pair: ${JSON.stringify(pair)}`);
  const records = await relayPcRecords(viewer);
  const username = records.at(-1).iceServers[0]?.username;
  assert.match(username ?? '', /^\d+:\d+$/, JSON.stringify(records));
  await waitFor(() => coturnLinesFor(username).some((line) => /ALLOCATE processed, success/.test(line)), {
    timeout: 5_000,
    message: `coturn to log a successful ALLOCATE for ${username}`,
  });
  assert.deepEqual(pageErrors(viewer), [], 'viewer logged errors');
});

step('with a wrong TURN secret a relay-only participant does not connect', async () => {
  stepServer = await startServer({ extraArgs: ['--turn-secret', `${SECRET}-wrong`, '--turn-urls', turn.url] });
  const page = await openRoomPage(browser, stepServer.url, `${room}-refused`, 'refused', { initScripts: [relayOnlyInitScript] });
  pages.push(page);
  const joinedAt = Date.now();
  // Ends early once a peer connection reports 'failed'; otherwise the window must pass with
  // none of them ever 'connected'.
  const outcome = await waitFor(async () => {
    const records = await relayPcRecords(page);
    if (records?.some((r) => r.connectionStates.includes('connected') || r.iceStates.includes('connected'))) {
      return { connected: true, records };
    }
    if (records?.some((r) => r.connectionStates.includes('failed') || r.iceStates.includes('failed'))) {
      return { failed: true, records };
    }
    throw new Error(`no 'failed' yet: ${JSON.stringify(records)}`);
  }, { timeout: REFUSED_WINDOW_MS, interval: 200, message: "a 'failed' peer connection" }).catch(async (error) => {
    if (!/Timed out/.test(error.message)) throw error;
    return { failed: false, records: await relayPcRecords(page) };
  });
  assert.ok(!outcome.connected, `a relay-only page with refused TURN credentials connected: ${JSON.stringify(outcome.records)}`);
  assert.ok(outcome.records?.length > 0, 'the page created a peer connection');
  const username = outcome.records[0].iceServers[0]?.username;
  assert.ok(username, JSON.stringify(outcome.records));
  const refusals = coturnLinesFor(username).filter((line) => /401|Unauthori[sz]ed|cannot find credentials/i.test(line));
  assert.ok(refusals.length > 0, `coturn refused ${username}:\n${coturnLinesFor(username).join('\n')}`);
  console.log(`refused page after ${Date.now() - joinedAt} ms: ${outcome.failed ? "'failed'" : 'never connected'}; ` +
    `states ${JSON.stringify(outcome.records.map((r) => r.connectionStates))}; coturn: ${refusals[0]}`);
});
