// @ts-check
// roomcast broadcast viewer, served at /watch/<room>.
//
// Plays the room's host (an RTMP publisher such as OBS, a WHIP client, or a participant of the
// room) over WHEP: one RTCPeerConnection with a recvonly audio and a recvonly video transceiver,
// the offer POSTed to /whep/<room> without trickle ICE (the server is ICE-lite and learns our
// address from our STUN checks), the answer in the 201 response, `Location` naming the session
// that a DELETE ends. The 201's `Link: <turn:…>; rel="ice-server"` headers carry TURN servers
// with this session's credentials: the offer is POSTed before setLocalDescription, so they are
// configured before ICE gathering starts and a viewer without UDP can relay. The server keeps a session on the room's current host and moves it to the
// next host without renegotiating, so a host that drops and comes back needs nothing from us.
// Only when our own connection fails (or the POST does) do we start a new session, with backoff.
//
// Next to the video, `GET /api/rooms/<room>` (every 2 s) gives the LIVE / OFFLINE status, the
// viewer count, the host's name, when the broadcast started and its warnings.
//
// HLS: when WebRTC has not connected WEBRTC_FALLBACK_MS after the page started trying (UDP
// blocked, no TURN), or its WHEP request or connection failed before it ever worked (a refused
// token excepted: HLS would refuse it too), the page plays the room's
// LL-HLS playlist (`/hls/<room>/index.m3u8`, from the room status's `hls.url`) instead: with
// hls.js (`/hls.min.js`, loaded only then; `lowLatencyMode`) where the browser has Media Source
// Extensions, else natively where `<video>` plays HLS (Safari on iPhone). The "WebRTC / HLS"
// buttons switch by hand (and turn the automatic fallback off); `?transport=hls` starts on HLS.
// The playlist is only requested while the room status says `hls.live` (a 404 would be logged
// as an error); a failure is shown and retried every HLS_RETRY_MS; a playlist that ends
// (`#EXT-X-ENDLIST`, the broadcast is over) shows "Broadcast ended".
//
// Delay behind live, shown under the video: over HLS, now minus the capture time of the frame
// on screen (EXT-X-PROGRAM-DATE-TIME: hls.js's `playingDate`, natively `getStartDate()` +
// `currentTime`); over WebRTC an estimate from getStats (jitter buffer + decode + half the round
// trip; the encoder's and server's own delay are not in it).
//
// No camera or microphone is ever requested. Sound: the video element starts unmuted; when the
// browser refuses audible autoplay it plays muted and offers a "Click to unmute" button.
//
// `window.roomcast` is a read-only debugging/test hook: { pc, state, live, room, info,
// sessionUrl, sessions, connectionState, muted, audioBlocked, framesPresented, lastFrameAt,
// video, timings, transport, transportChoice, fallbackReason, hls, hlsPlayer, hlsStatus,
// hlsError, delayMs, delaySource }. `state` is one of 'invalid', 'connecting', 'reconnecting',
// 'offline', 'waiting' (live, no picture yet), 'playing', and over HLS also 'ended' (the
// playlist ended and was played to its end) and 'error' (HLS cannot play; retrying).
// `transport` is 'webrtc' or 'hls'; `transportChoice` 'auto' (WebRTC, HLS as fallback),
// 'webrtc' or 'hls' (the switch); `hls` the hls.js instance (null otherwise); `hlsPlayer`
// 'hls.js', 'native' or null; `hlsStatus` 'idle', 'waiting' (not live yet), 'loading',
// 'playing', 'ended', 'error' or 'unsupported'; `delayMs` the delay behind live shown (null
// while unknown) and `delaySource` 'program-date-time' or 'webrtc-stats'.

// The server's rule for room names (signaling/src/session.rs).
import { createChatPanel } from './chat.js';

const ROOM_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;
const POLL_INTERVAL_MS = 2_000;
const POLL_TIMEOUT_MS = 5_000;
/** A connection 'disconnected' for this long is given up and replaced by a new session. */
const DISCONNECTED_GRACE_MS = 2_000;
/** A new session that has not connected after this long is given up too. */
const CONNECT_TIMEOUT_MS = 10_000;
const BACKOFF_INITIAL_MS = 500;
const BACKOFF_MAX_MS = 10_000;
/** No new frame for this long: the picture is stale (host gone or stream stalled). */
const STALL_MS = 2_500;
/** Once the room status says offline, a picture this old is already the past. */
const OFFLINE_STALL_MS = 500;
/** Automatic mode: WebRTC not connected this long after it started trying: play HLS instead. */
const WEBRTC_FALLBACK_MS = 4_000;
/** Retry delay after an HLS failure (playlist not there yet, network or media error). */
const HLS_RETRY_MS = 2_000;
/** A fatal hls.js media error is first handed back to hls.js this many times. */
const HLS_MEDIA_RECOVERIES = 2;
const HLS_MIME = 'application/vnd.apple.mpegurl';

const OFFLINE_TEXT = 'The host is offline — this page will start playing when the broadcast begins.';

/** @param {string} id */
const $ = (id) => document.getElementById(id);
const ui = {
  roomName: $('room-name'),
  liveBadge: $('live-badge'),
  viewerCount: $('viewer-count'),
  status: $('status'),
  statusText: $('status-text'),
  stage: $('stage'),
  video: /** @type {HTMLVideoElement & { getStartDate?: () => Date }} */ ($('video')),
  stageText: $('stage-text'),
  unmuteButton: $('unmute-button'),
  hostName: $('host-name'),
  elapsed: /** @type {HTMLTimeElement} */ ($('elapsed')),
  muteButton: /** @type {HTMLButtonElement} */ ($('mute-button')),
  fullscreenButton: /** @type {HTMLButtonElement} */ ($('fullscreen-button')),
  warnings: $('warnings'),
  warningList: $('warning-list'),
  pageError: $('page-error'),
  transportName: $('transport-name'),
  delay: $('delay'),
  transportButtons: /** @type {HTMLButtonElement[]} */ ([$('transport-webrtc'), $('transport-hls')]),
  transportNote: $('transport-note'),
};

const session = {
  room: null,
  /** The chat panel beside the player. */
  chat: null,
  token: null,
  invalid: null,
  /** The current WHEP attempt: every callback of an older one is ignored. */
  generation: 0,
  pc: null,
  sessionUrl: null,
  /** WHEP sessions created (201 received) since the page loaded. */
  sessions: 0,
  /** 'connecting' until the first connection, then 'connected' or 'reconnecting'. */
  connection: 'connecting',
  /** Why the last attempt failed, for the status tooltip and the console. */
  lastProblem: null,
  /** A permanent refusal (bad token): retried slowly, shown as an error. */
  refused: null,
  retryAttempt: 0,
  retryTimer: null,
  graceTimer: null,
  connectTimer: null,
  /** Re-renders when the picture would turn stale without a new frame. */
  staleTimer: null,
  /** The current session's video receiver track: muted while no media arrives. */
  videoTrack: null,
  /** The latest /api/rooms answer (null until the first one). */
  info: null,
  pollFailures: 0,
  pollTimer: null,
  polling: false,
  audioBlocked: false,
  framesPresented: 0,
  lastFrameAt: null,
  /** Browsers without requestVideoFrameCallback: polls the decoder's frame count (tick()). */
  sampleFrames: null,
  /** performance.now() of milestones: whep_posted, whep_answered, pc_<state>, first_frame... */
  timings: {},
  /** What plays now: 'webrtc' or 'hls'. */
  transport: 'webrtc',
  /** The switch: 'auto' (WebRTC, HLS when it cannot connect), 'webrtc' or 'hls'. */
  choice: 'auto',
  /** Why the page fell back to HLS by itself (null if it did not). */
  fallbackReason: null,
  fallbackTimer: null,
  /** Whether WebRTC reached 'connected' since it was (re)started (fallback only before). */
  webrtcConnected: false,
  hls: {
    /** hls.js instance (null when native or stopped). */
    instance: null,
    /** 'hls.js' or 'native' while a stream is attached, else null. */
    player: null,
    /** 'idle', 'waiting', 'loading', 'playing', 'ended', 'error' or 'unsupported'. */
    status: 'idle',
    error: null,
    /** Every callback of an older load is ignored. */
    generation: 0,
    retryTimer: null,
    mediaRecoveries: 0,
  },
  /** The delay behind live on display: { ms, source } and the previous WebRTC stats sample. */
  delay: { ms: null, source: null, previous: null, sampling: false },
};

/** @type {any} */ (window).roomcast = Object.freeze({
  get pc() { return session.pc; },
  get state() { return document.body.dataset.state; },
  get live() { return session.info ? Boolean(session.info.live) : null; },
  get room() { return session.room; },
  get info() { return session.info; },
  get sessionUrl() { return session.sessionUrl; },
  get sessions() { return session.sessions; },
  get connectionState() { return session.pc?.connectionState ?? null; },
  get muted() { return ui.video.muted; },
  get audioBlocked() { return session.audioBlocked; },
  get framesPresented() { return session.framesPresented; },
  get lastFrameAt() { return session.lastFrameAt; },
  get video() { return ui.video; },
  get timings() { return session.timings; },
  get transport() { return session.transport; },
  get transportChoice() { return session.choice; },
  get fallbackReason() { return session.fallbackReason; },
  get hls() { return session.hls.instance; },
  get hlsPlayer() { return session.hls.player; },
  get hlsStatus() { return session.hls.status; },
  get hlsError() { return session.hls.error; },
  get delayMs() {
    if (session.transport === 'hls') session.delay.ms = hlsDelayMs();
    return session.delay.ms;
  },
  get delaySource() { return session.delay.source; },
});

// ---------------------------------------------------------------------------------------------
// Start-up

function main() {
  const match = /\/watch\/([^/]+)\/?$/.exec(location.pathname);
  let room = '';
  try {
    room = match ? decodeURIComponent(match[1]) : '';
  } catch {
    room = '';
  }
  session.room = room;
  const query = new URLSearchParams(location.search);
  session.token = query.get('token');
  if (query.get('transport') === 'hls' || query.get('transport') === 'webrtc') session.choice = query.get('transport');
  ui.roomName.textContent = room || 'No room';

  ui.unmuteButton.addEventListener('click', unmute);
  ui.muteButton.addEventListener('click', () => {
    if (ui.video.muted) unmute();
    else {
      ui.video.muted = true;
      render();
    }
  });
  ui.video.addEventListener('volumechange', render);
  ui.video.addEventListener('ended', onMediaEnded);
  ui.video.addEventListener('error', onNativeHlsError);
  for (const button of ui.transportButtons) {
    button.addEventListener('click', () => chooseTransport(button.dataset.transport));
  }
  setUpFullscreen();
  watchFrames();

  if (!ROOM_PATTERN.test(room)) {
    session.invalid = room
      ? `“${room}” is not a room name: room names use letters, digits, “.”, “-” or “_” (up to 64 characters).`
      : 'No room in the address: open /watch/<room name>.';
    render();
    return;
  }
  document.title = `${room} · roomcast`;
  ui.video.setAttribute('aria-label', `Broadcast of room ${room}`);
  startChat();
  const replay = query.get('replay');
  if (replay) {
    playReplay(replay);
    return;
  }

  window.addEventListener('pagehide', () => {
    // End the session right away rather than letting the server notice the silence.
    endSession(session.sessionUrl, { keepalive: true });
  });
  setInterval(tick, 1_000);
  pollRoom();
  render();
  // A <video> waiting for its first frame delays the document's load event, and an offline
  // broadcast has no frame to give: connect once the page has loaded, so it does not look
  // like it is loading forever.
  const start = () => useTransport(session.choice === 'hls' ? 'hls' : 'webrtc');
  if (document.readyState === 'complete') start();
  else window.addEventListener('load', start, { once: true });
}

// ---------------------------------------------------------------------------------------------
// Chat beside the player (`chat_join`: chat without media), and replays

const CHAT_RETRY_MS = [1000, 2000, 4000, 8000];

/** The room's chat: questions for the speaker, notices; reconnects with backoff. */
function startChat() {
  const panel = $('chat-panel');
  if (!panel) return;
  let name = '';
  try {
    name = JSON.parse(localStorage.getItem('roomcast.lastJoin') ?? '{}').name ?? '';
  } catch {
    name = '';
  }
  name ||= `Viewer ${Math.floor(100 + Math.random() * 900)}`;
  /** @type {WebSocket | null} */
  let socket = null;
  let attempt = 0;
  const chat = createChatPanel({
    send: (message) => {
      if (socket?.readyState !== WebSocket.OPEN) return false;
      socket.send(JSON.stringify(message));
      return true;
    },
    room: session.room,
    exportUrl: `/admin/rooms/${encodeURIComponent(session.room)}/questions`,
    token: session.token,
  });
  chat.setVisible(true);
  panel.replaceChildren(chat.element);
  session.chat = chat;
  const connect = () => {
    const url = new URL('/ws', location.href);
    url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(url);
    socket = ws;
    ws.addEventListener('open', () => {
      ws.send(JSON.stringify({ type: 'chat_join', room: session.room, name, ...(session.token ? { token: session.token } : {}) }));
    });
    ws.addEventListener('message', (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message.type === 'chat_history') attempt = 0;
      if (!chat.handle(message) && message.type === 'error') {
        console.warn(`roomcast: chat: ${message.code}: ${message.message}`);
      }
    });
    ws.addEventListener('close', () => {
      if (socket !== ws) return;
      setTimeout(connect, CHAT_RETRY_MS[Math.min(attempt, CHAT_RETRY_MS.length - 1)]);
      attempt += 1;
    });
  };
  connect();
}

/** `?replay=<id>`: plays a finished broadcast from its replay (VOD HLS) with normal controls. */
async function playReplay(id) {
  document.body.dataset.state = 'replay';
  document.body.dataset.live = 'false';
  ui.liveBadge.textContent = 'REPLAY';
  ui.liveBadge.dataset.live = 'false';
  for (const element of [...ui.transportButtons, ui.transportNote]) element.hidden = true;
  ui.status.hidden = true;
  const fail = (text) => {
    ui.stage.dataset.showing = 'none';
    ui.stageText.textContent = text;
  };
  ui.stageText.textContent = 'Loading the replay…';
  let replay;
  try {
    const response = await fetch('/api/rooms', { cache: 'no-store' });
    const body = await response.json();
    replay = (body.replays ?? []).find((entry) => entry.id === id && entry.room === session.room);
  } catch (error) {
    fail(`The server is unreachable: ${error.message}`);
    return;
  }
  if (!replay) {
    fail('This replay does not exist (any more): replays are kept for a limited time.');
    return;
  }
  const started = new Date(replay.started_at);
  document.title = `Replay of ${session.room} · roomcast`;
  ui.roomName.textContent = `Replay of ${session.room} — ${started.toLocaleString()}`;
  ui.hostName.textContent = replay.host;
  ui.elapsed.textContent = `${Math.floor(replay.duration_s / 60)} min ${Math.round(replay.duration_s % 60)} s`;
  ui.transportName.textContent = 'HLS (replay)';
  ui.delay.textContent = '—';
  const video = ui.video;
  video.controls = true;
  const url = new URL(replay.url, location.href).href;
  const playing = () => {
    ui.stage.dataset.showing = 'video';
  };
  video.addEventListener('playing', playing, { once: true });
  video.addEventListener('loadeddata', playing, { once: true });
  try {
    const Hls = await loadHlsJs();
    if (Hls.isSupported()) {
      const instance = new Hls();
      session.hls.instance = instance;
      session.hls.player = 'hls.js';
      instance.on(Hls.Events.ERROR, (_event, data) => {
        if (data.fatal) fail(`The replay cannot be played (${data.details}).`);
      });
      instance.loadSource(url);
      instance.attachMedia(video);
    } else if (video.canPlayType(HLS_MIME)) {
      video.src = url;
    } else {
      fail('This browser cannot play HLS.');
      return;
    }
  } catch (error) {
    fail(`The player failed to load: ${error.message}`);
    return;
  }
  video.muted = false;
  video.play().catch(() => {
    // Sound needs a click first in some browsers: play muted and offer to unmute.
    video.muted = true;
    video.play().catch(() => {});
  });
}

// ---------------------------------------------------------------------------------------------
// WHEP session

class HttpError extends Error {
  constructor(status, body) {
    super(`HTTP ${status}${body ? `: ${body.trim().slice(0, 200)}` : ''}`);
    this.status = status;
  }
}

function authHeaders() {
  return session.token ? { Authorization: `Bearer ${session.token}` } : {};
}

function serverUrl(pathname) {
  return new URL(pathname, location.href).href;
}

/** Replaces the current session (if any) by a new one. */
async function connect() {
  clearTimers();
  if (session.transport !== 'webrtc') return;
  const generation = ++session.generation;
  const current = () => generation === session.generation;
  closePeerConnection();
  armFallback();

  const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
  session.pc = pc;
  const audio = pc.addTransceiver('audio', { direction: 'recvonly' });
  const video = pc.addTransceiver('video', { direction: 'recvonly' });
  // The receiver tracks exist before negotiation and stay the same for the whole session,
  // across host changes (the server switches what it sends, not the m-lines).
  session.videoTrack = video.receiver.track;
  ui.video.srcObject = new MediaStream([video.receiver.track, audio.receiver.track]);
  startPlayback();
  pc.addEventListener('connectionstatechange', () => {
    if (current()) onConnectionStateChange(pc);
  });

  try {
    const offer = await pc.createOffer();
    if (!current()) return;
    session.timings.whep_posted ??= performance.now();
    const response = await fetch(serverUrl(`/whep/${encodeURIComponent(session.room)}`), {
      method: 'POST',
      headers: { 'Content-Type': 'application/sdp', ...authHeaders() },
      body: offer.sdp,
    });
    const body = await response.text();
    if (response.status !== 201) throw new HttpError(response.status, body);
    const locationHeader = response.headers.get('Location');
    const sessionUrl = locationHeader ? new URL(locationHeader, response.url).href : null;
    if (!current()) {
      endSession(sessionUrl);
      return;
    }
    session.sessionUrl = sessionUrl;
    session.sessions += 1;
    session.refused = null;
    const iceServers = parseIceServerLinks(response.headers.get('Link'));
    if (iceServers.length) pc.setConfiguration({ ...pc.getConfiguration(), iceServers });
    await pc.setLocalDescription(offer);
    await pc.setRemoteDescription({ type: 'answer', sdp: body });
    session.timings.whep_answered ??= performance.now();
    session.connectTimer = setTimeout(() => {
      if (current() && pc.connectionState !== 'connected') {
        retryLater(`no media connection ${CONNECT_TIMEOUT_MS / 1000} s after the answer`);
      }
    }, CONNECT_TIMEOUT_MS);
    render();
  } catch (error) {
    if (!current()) return;
    const refused = error instanceof HttpError && (error.status === 401 || error.status === 403);
    if (refused) {
      session.refused = session.token
        ? 'The server refused this page’s access token for the broadcast.'
        : 'This broadcast needs an access token: open the link you were given (it ends in ?token=…).';
    } else if (canFallBack()) {
      // (A refused token would be refused for HLS too: that is not a reason to switch.)
      fallBackToHls(`the WHEP request failed (${error?.message ?? error})`);
      return;
    }
    retryLater(`WHEP request failed (${error?.message ?? error})`);
  }
}

/**
 * The ICE servers in a `Link` header value (several links, comma-separated):
 * `<turn:host:3478?transport=udp>; rel="ice-server"; username="…"; credential="…"`.
 */
function parseIceServerLinks(header) {
  const servers = [];
  const link = /<([^>]*)>((?:\s*;\s*[\w-]+\s*=\s*(?:"[^"]*"|[^;,\s]*))*)/g;
  for (const [, url, params] of (header ?? '').matchAll(link)) {
    const values = Object.fromEntries([...params.matchAll(/([\w-]+)\s*=\s*(?:"([^"]*)"|([^;,\s]*))/g)]
      .map(([, name, quoted, bare]) => [name.toLowerCase(), quoted ?? bare]));
    if (values.rel !== 'ice-server') continue;
    const server = { urls: url };
    if (values.username != null) server.username = values.username;
    if (values.credential != null) server.credential = values.credential;
    servers.push(server);
  }
  return servers;
}

function onConnectionStateChange(pc) {
  const state = pc.connectionState;
  session.timings[`pc_${state}`] ??= performance.now();
  clearTimeout(session.graceTimer);
  session.graceTimer = null;
  if (state === 'connected') {
    clearTimeout(session.connectTimer);
    session.connectTimer = null;
    clearTimeout(session.fallbackTimer);
    session.fallbackTimer = null;
    session.webrtcConnected = true;
    session.connection = 'connected';
    session.retryAttempt = 0;
    session.lastProblem = null;
    pollRoom(); // the viewer count now includes this page: show it without waiting 2 s
  } else if (state === 'disconnected') {
    // Often a blip that ICE recovers from by itself; if not, start over.
    session.graceTimer = setTimeout(() => {
      if (pc === session.pc && pc.connectionState === 'disconnected') {
        retryLater(`connection interrupted for ${DISCONNECTED_GRACE_MS / 1000} s`, { now: true });
      }
    }, DISCONNECTED_GRACE_MS);
  } else if (state === 'failed') {
    if (canFallBack()) {
      fallBackToHls('the WebRTC connection failed');
      return;
    }
    retryLater('media connection failed', { now: session.connection === 'connected' });
  }
  render();
}

/**
 * Gives up the current attempt and schedules a new session: at once after a connection that
 * worked (`now`), otherwise after an exponential backoff with jitter.
 */
function retryLater(reason, { now = false } = {}) {
  console.warn(`roomcast: ${reason}; starting a new session`);
  session.lastProblem = reason;
  session.connection = session.connection === 'connecting' && session.sessions === 0 ? 'connecting' : 'reconnecting';
  clearTimers();
  session.generation += 1; // late events of the abandoned attempt are ignored
  closePeerConnection();
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_INITIAL_MS * 2 ** session.retryAttempt);
  const wait = now ? 0 : session.refused ? BACKOFF_MAX_MS : Math.round(base * (0.8 + Math.random() * 0.4));
  session.retryAttempt += 1;
  session.retryTimer = setTimeout(connect, wait);
  render();
}

/** The room just went live while we wait to retry: do not sit out the rest of the backoff. */
function retrySoon() {
  if (session.retryTimer == null || session.refused) return;
  clearTimeout(session.retryTimer);
  session.retryTimer = setTimeout(connect, 0);
}

function clearTimers() {
  for (const key of ['retryTimer', 'graceTimer', 'connectTimer']) {
    clearTimeout(session[key]);
    session[key] = null;
  }
}

/**
 * Ends the current WHEP session, then closes its peer connection. In that order: a closed
 * connection tells the server at once (DTLS close), which ends the session before the DELETE
 * arrives, and the DELETE then gets a 404. The old connection's events are ignored already
 * (`current()`), so it may stay open for the DELETE's round trip.
 */
function closePeerConnection() {
  const pc = session.pc;
  const ended = endSession(session.sessionUrl);
  session.sessionUrl = null;
  session.pc = null;
  if (ended) ended.finally(() => pc?.close());
  else pc?.close();
}

/**
 * DELETE a session we no longer use; best effort (the server also times sessions out).
 * Returns the request's promise (never rejected), or null without a session.
 */
function endSession(sessionUrl, { keepalive = false } = {}) {
  if (!sessionUrl) return null;
  return fetch(sessionUrl, { method: 'DELETE', headers: authHeaders(), keepalive }).catch(() => {
    // The server may be gone; it drops the session when its media connection dies.
  });
}

// ---------------------------------------------------------------------------------------------
// Transport: WebRTC or HLS

/** Whether the page may still switch to HLS by itself: automatic mode, WebRTC never worked. */
function canFallBack() {
  return session.choice === 'auto' && session.transport === 'webrtc' && !session.webrtcConnected && !session.refused;
}

/** Starts the fallback clock once per WebRTC round (connect() retries do not restart it). */
function armFallback() {
  if (!canFallBack() || session.fallbackTimer != null) return;
  session.fallbackTimer = setTimeout(() => {
    session.fallbackTimer = null;
    if (canFallBack() && session.pc?.connectionState !== 'connected') {
      fallBackToHls(`WebRTC did not connect within ${WEBRTC_FALLBACK_MS / 1000} s`);
    }
  }, WEBRTC_FALLBACK_MS);
}

function fallBackToHls(reason) {
  console.info(`roomcast: ${reason}; playing the HLS stream instead`);
  session.fallbackReason = reason;
  session.timings.hls_fallback ??= performance.now();
  useTransport('hls');
}

/** The "WebRTC / HLS" switch: a choice by hand, which also ends the automatic fallback. */
function chooseTransport(transport) {
  if (transport !== 'webrtc' && transport !== 'hls') return;
  session.choice = transport;
  session.fallbackReason = null;
  if (transport === session.transport) {
    render();
    return;
  }
  useTransport(transport);
}

/** Stops whatever plays and starts `transport` ('webrtc' or 'hls'). */
function useTransport(transport) {
  clearTimers();
  clearTimeout(session.fallbackTimer);
  session.fallbackTimer = null;
  session.generation += 1; // late events of the WebRTC attempt are ignored
  closePeerConnection();
  session.videoTrack = null;
  stopHls();
  ui.video.srcObject = null;
  session.lastFrameAt = null;
  session.delay = { ms: null, source: null, previous: null, sampling: false };
  session.transport = transport;
  if (transport === 'webrtc') {
    session.webrtcConnected = false;
    session.connection = 'connecting';
    session.retryAttempt = 0;
    session.lastProblem = null;
    connect();
  } else {
    Object.assign(session.hls, { status: 'idle', error: null, mediaRecoveries: 0 });
    ensureHls();
  }
  render();
}

// ---------------------------------------------------------------------------------------------
// HLS

let hlsLibrary = null;

/** hls.js, loaded on first use (the server serves web-client/vendor/hls.min.js). */
function loadHlsJs() {
  if (/** @type {any} */ (window).Hls) return Promise.resolve(/** @type {any} */ (window).Hls);
  hlsLibrary ??= new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = serverUrl('/hls.min.js');
    script.addEventListener('load', () => (/** @type {any} */ (window).Hls ? resolve(/** @type {any} */ (window).Hls) : reject(new Error('/hls.min.js did not define Hls'))));
    script.addEventListener('error', () => {
      hlsLibrary = null;
      script.remove();
      reject(new Error('could not load the HLS player (/hls.min.js)'));
    });
    document.head.append(script);
  });
  return hlsLibrary;
}

function hlsUrl() {
  const url = new URL(session.info?.hls?.url ?? `/hls/${encodeURIComponent(session.room)}/index.m3u8`, location.href);
  if (session.token) url.searchParams.set('token', session.token);
  return url.href;
}

/**
 * Starts HLS playback if it should run and does not: on HLS, not already playing or loading,
 * and the room status says the playlist exists (a request that 404s is logged as an error, so
 * none is made before; a room status without `hls`, from an older server, is not waited for).
 */
function ensureHls() {
  const hls = session.hls;
  if (session.transport !== 'hls' || session.invalid) return;
  if (hls.player || hls.status === 'loading' || hls.status === 'unsupported' || hls.retryTimer != null) return;
  if (!session.info) return; // pollRoom calls again with the first answer
  const live = session.info.hls ? Boolean(session.info.hls.live) : null;
  if (hls.status === 'ended' && live !== true) return; // a new broadcast starts it again
  if (live === false) {
    hls.status = 'waiting';
    render();
    return;
  }
  loadHls();
}

async function loadHls() {
  const hls = session.hls;
  const generation = ++hls.generation;
  const current = () => generation === hls.generation && session.transport === 'hls';
  hls.status = 'loading';
  hls.error = null;
  session.timings.hls_requested ??= performance.now();
  render();
  const url = hlsUrl();
  const video = ui.video;
  if (/** @type {any} */ (window).ManagedMediaSource || window.MediaSource) {
    let Hls;
    try {
      Hls = await loadHlsJs();
    } catch (error) {
      if (current()) hlsFailed(error.message);
      return;
    }
    if (!current()) return;
    if (Hls.isSupported()) {
      const instance = new Hls(HLS_JS_CONFIG);
      hls.instance = instance;
      hls.player = 'hls.js';
      instance.on(Hls.Events.ERROR, (_event, data) => {
        if (instance === hls.instance) onHlsJsError(Hls, data);
      });
      instance.on(Hls.Events.MANIFEST_PARSED, () => {
        if (instance !== hls.instance) return;
        hls.status = 'playing';
        session.timings.hls_manifest ??= performance.now();
        startPlayback();
        render();
      });
      instance.loadSource(url);
      instance.attachMedia(video);
      return;
    }
  }
  if (video.canPlayType(HLS_MIME)) {
    hls.player = 'native';
    video.addEventListener('loadedmetadata', () => {
      if (!current() || hls.player !== 'native') return;
      hls.status = 'playing';
      session.timings.hls_manifest ??= performance.now();
      render();
    }, { once: true });
    video.src = url;
    startPlayback();
    return;
  }
  hls.status = 'unsupported';
  hls.error = 'This browser can play neither WebRTC nor HLS';
  render();
}

function onHlsJsError(Hls, data) {
  if (!data.fatal) return; // hls.js retries and recovers from these by itself
  const hls = session.hls;
  if (data.type === Hls.ErrorTypes.MEDIA_ERROR && hls.mediaRecoveries < HLS_MEDIA_RECOVERIES) {
    hls.mediaRecoveries += 1;
    console.warn(`roomcast: HLS media error (${data.details}); recovering`);
    hls.instance.recoverMediaError();
    return;
  }
  const code = data.response?.code || null;
  if (code === 404) hlsFailed(null, { waiting: true });
  else if (code === 401 || code === 403) hlsFailed('the server refused this page’s access to the HLS stream');
  else hlsFailed(`${data.details}${code ? ` (HTTP ${code})` : ''}`);
}

function onNativeHlsError() {
  if (session.transport !== 'hls' || session.hls.player !== 'native') return;
  hlsFailed(`the browser could not play the HLS stream (${ui.video.error?.message || `media error ${ui.video.error?.code}`})`);
}

/** Stops the player and retries in HLS_RETRY_MS; `waiting`: the playlist is not there (yet). */
function hlsFailed(reason, { waiting = false } = {}) {
  const hls = session.hls;
  stopHls();
  hls.status = waiting ? 'waiting' : 'error';
  hls.error = waiting ? null : reason;
  if (reason) console.warn(`roomcast: HLS playback failed: ${reason}; retrying in ${HLS_RETRY_MS / 1000} s`);
  hls.retryTimer = setTimeout(() => {
    hls.retryTimer = null;
    ensureHls();
  }, HLS_RETRY_MS);
  render();
}

/** The playlist ended (#EXT-X-ENDLIST) and the last frame was played. */
function onMediaEnded() {
  if (session.transport !== 'hls') return;
  stopHls();
  session.hls.status = 'ended';
  session.timings.hls_ended ??= performance.now();
  render();
}

function stopHls() {
  const hls = session.hls;
  hls.generation += 1;
  clearTimeout(hls.retryTimer);
  hls.retryTimer = null;
  if (hls.instance) {
    hls.instance.destroy();
    hls.instance = null;
  }
  if (hls.player === 'native') {
    ui.video.removeAttribute('src');
    ui.video.load();
  }
  hls.player = null;
}

// ---------------------------------------------------------------------------------------------
// Delay behind live

/** Over HLS: now minus the capture time (PROGRAM-DATE-TIME) of the frame on screen, or null. */
function hlsDelayMs() {
  const hls = session.hls;
  if (session.transport !== 'hls' || !hls.player || ui.video.readyState < 2) return null;
  let shown = null;
  if (hls.instance) {
    shown = hls.instance.playingDate?.getTime() ?? null;
  } else {
    const start = ui.video.getStartDate?.().getTime();
    if (Number.isFinite(start)) shown = start + ui.video.currentTime * 1000;
  }
  if (!Number.isFinite(shown)) return null;
  session.delay.source = 'program-date-time';
  return Math.round(Date.now() - shown);
}

/**
 * Over WebRTC: an estimate from the video's inbound-rtp stats since the previous sample
 * (jitter buffer delay per frame + decode time per frame) plus half the selected candidate
 * pair's round trip. What happens before the server sends (encoder, RTMP) is not in it.
 */
async function sampleWebRtcDelay() {
  const pc = session.pc;
  if (!pc || pc.connectionState !== 'connected' || session.delay.sampling) return;
  session.delay.sampling = true;
  try {
    const report = await pc.getStats();
    /** @type {any} */
    let inbound = null;
    let pairId = null;
    report.forEach((stats) => {
      if (stats.type === 'inbound-rtp' && stats.kind === 'video') inbound = stats;
      if (stats.type === 'transport' && stats.selectedCandidatePairId) pairId = stats.selectedCandidatePairId;
    });
    const rtt = pairId ? report.get(pairId)?.currentRoundTripTime ?? 0 : 0;
    const previous = session.delay.previous?.id === inbound?.id ? session.delay.previous : null;
    if (pc !== session.pc || !inbound?.jitterBufferEmittedCount) return;
    session.delay.previous = inbound;
    const delta = (key) => (inbound[key] ?? 0) - (previous?.[key] ?? 0);
    const emitted = delta('jitterBufferEmittedCount');
    const frames = delta('framesDecoded');
    const jitter = emitted > 0 ? delta('jitterBufferDelay') / emitted : 0;
    const decode = frames > 0 ? delta('totalDecodeTime') / frames : 0;
    session.delay.ms = Math.round((jitter + decode + rtt / 2) * 1000);
    session.delay.source = 'webrtc-stats';
    renderTransport(pageState());
  } catch {
    // A closed connection between the check and getStats: the next tick tries again.
  } finally {
    session.delay.sampling = false;
  }
}

// ---------------------------------------------------------------------------------------------
// Playback

function startPlayback() {
  ui.video.play().then(() => {
    if (!ui.video.muted) session.audioBlocked = false;
    render();
  }).catch((error) => {
    if (error?.name === 'NotAllowedError' && !ui.video.muted) {
      // Audible autoplay refused: play muted and ask for a click.
      session.audioBlocked = true;
      ui.video.muted = true;
      render();
      ui.video.play().catch((retryError) => console.warn('roomcast: muted playback refused too:', retryError));
    } else if (error?.name !== 'AbortError') {
      // AbortError: a new session replaced the stream before it started.
      console.warn('roomcast: playback did not start:', error);
    }
  });
}

function unmute() {
  ui.video.muted = false;
  ui.video.play().then(() => {
    session.audioBlocked = false;
    render();
  }).catch((error) => {
    console.warn('roomcast: unmuting refused:', error);
    ui.video.muted = true;
    session.audioBlocked = true;
    render();
  });
  render();
}

/**
 * Counts presented frames, to tell a moving picture from a frozen one. Frames of a muted track
 * (no media received; some browsers present a black placeholder) do not count.
 */
function watchFrames() {
  const video = ui.video;
  const onFrame = () => {
    if (session.transport === 'webrtc' && (!session.videoTrack || session.videoTrack.muted)) return;
    const first = session.framesPresented === 0;
    session.framesPresented += 1;
    const wasStale = !hasPicture();
    session.lastFrameAt = performance.now();
    if (first) session.timings.first_frame = session.lastFrameAt;
    if (wasStale) render();
  };
  if ('requestVideoFrameCallback' in HTMLVideoElement.prototype) {
    const loop = () => {
      onFrame();
      video.requestVideoFrameCallback(loop);
    };
    video.requestVideoFrameCallback(loop);
  } else {
    // Older browsers: sample the decoder's frame counter (from tick()).
    let seen = 0;
    session.sampleFrames = () => {
      const total = video.getVideoPlaybackQuality?.().totalVideoFrames ?? 0;
      if (total > seen) onFrame();
      seen = total;
    };
  }
}

/** Whether the picture is moving: a frame within the stall limit (shorter once offline). */
function hasPicture() {
  return session.lastFrameAt != null
    && performance.now() - session.lastFrameAt < stallLimit()
    && ui.video.videoWidth > 0;
}

function stallLimit() {
  return session.info && !session.info.live ? OFFLINE_STALL_MS : STALL_MS;
}

function setUpFullscreen() {
  if (!document.fullscreenEnabled) {
    ui.fullscreenButton.hidden = true;
    return;
  }
  ui.fullscreenButton.addEventListener('click', () => {
    if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
    else ui.stage.requestFullscreen().catch((error) => console.warn('roomcast: full screen refused:', error));
  });
  document.addEventListener('fullscreenchange', () => {
    ui.fullscreenButton.textContent = document.fullscreenElement ? 'Exit full screen' : 'Full screen';
  });
}

// ---------------------------------------------------------------------------------------------
// Room status

async function pollRoom() {
  clearTimeout(session.pollTimer);
  session.pollTimer = null;
  if (session.polling) return;
  session.polling = true;
  const controller = new AbortController();
  const timeout = setTimeout(() => controller.abort(), POLL_TIMEOUT_MS);
  try {
    const response = await fetch(serverUrl(`/api/rooms/${encodeURIComponent(session.room)}`), {
      headers: { Accept: 'application/json', ...authHeaders() },
      signal: controller.signal,
      cache: 'no-store',
    });
    if (response.status === 404) {
      // No such room yet: nobody publishes or watches it.
      onRoomInfo({ room: session.room, live: false, host: null, viewers: 0, participants: 0, started_at: null, warnings: [] });
    } else if (response.ok) {
      onRoomInfo(await response.json());
    } else {
      throw new HttpError(response.status, await response.text());
    }
  } catch (error) {
    session.pollFailures += 1;
    if (session.pollFailures === 2) console.warn('roomcast: cannot read the room status:', error?.message ?? error);
    render();
  } finally {
    clearTimeout(timeout);
    session.polling = false;
    session.pollTimer = setTimeout(pollRoom, POLL_INTERVAL_MS);
  }
}

function onRoomInfo(info) {
  const wasLive = Boolean(session.info?.live);
  session.info = info;
  session.pollFailures = 0;
  if (info.live && !wasLive) retrySoon();
  ensureHls();
  render();
}

/** Once a second: the elapsed time, and whether the picture went stale. */
function tick() {
  session.sampleFrames?.();
  if (session.transport === 'webrtc' && hasPicture()) sampleWebRtcDelay();
  render();
}

// ---------------------------------------------------------------------------------------------
// Rendering

function pageState() {
  if (session.invalid) return 'invalid';
  if (hasPicture()) return 'playing';
  if (session.transport === 'hls') {
    const { status } = session.hls;
    if (status === 'ended') return 'ended';
    if (status === 'error' || status === 'unsupported') return 'error';
    if (session.info && !session.info.live) return 'offline';
    return status === 'loading' || status === 'idle' ? 'connecting' : 'waiting';
  }
  if (session.info && !session.info.live) return 'offline';
  if (session.pc?.connectionState === 'connected') return session.info?.live ? 'waiting' : 'connecting';
  return session.connection === 'connecting' ? 'connecting' : 'reconnecting';
}

/**
 * hls.js settings: parts and blocking playlist reloads (the server's LL-HLS), and play up to
 * 1.5× when behind the live target (PART-HOLD-BACK), so a start at an older keyframe does not
 * leave the viewer a GOP behind for the whole broadcast.
 */
const HLS_JS_CONFIG = { lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5, backBufferLength: 30 };

const HLS_NOT_LIVE_TEXT = 'Broadcast not live yet — retrying…';

const STAGE_TEXT = {
  invalid: () => session.invalid,
  offline: () => (session.transport === 'hls' ? HLS_NOT_LIVE_TEXT : OFFLINE_TEXT),
  connecting: () => (session.transport === 'hls' ? 'Loading the HLS stream…' : 'Connecting…'),
  reconnecting: () => 'Reconnecting…',
  waiting: () => {
    if (session.transport === 'hls' && session.hls.status === 'waiting') return HLS_NOT_LIVE_TEXT;
    return session.framesPresented > 0 && session.transport === 'webrtc'
      ? 'Waiting for the picture from the host…' : 'The broadcast is starting…';
  },
  playing: () => '',
  ended: () => 'Broadcast ended.',
  error: () => (session.hls.status === 'unsupported'
    ? `${session.hls.error}.` : `HLS playback failed: ${session.hls.error} — retrying…`),
};

function render() {
  const state = pageState();
  document.body.dataset.state = state;
  clearTimeout(session.staleTimer);
  session.staleTimer = state === 'playing'
    ? setTimeout(render, session.lastFrameAt + stallLimit() - performance.now() + 10)
    : null;
  ui.stage.dataset.showing = state === 'playing' ? 'video' : 'message';
  setText(ui.stageText, STAGE_TEXT[state]());

  renderStatus(state);
  renderRoomInfo();
  renderAudio(state);
  renderTransport(state);

  const error = session.refused ?? null;
  ui.pageError.hidden = !error;
  setText(ui.pageError, error ?? '');
}

function renderStatus(state) {
  let tone;
  let text;
  if (state === 'invalid') {
    tone = 'bad';
    text = 'No broadcast';
  } else if (session.transport === 'hls') {
    [tone, text] = session.pollFailures >= 2 && state !== 'playing' ? ['bad', 'Cannot reach the server — retrying…']
      : state === 'playing' ? ['ok', 'Connected']
        : state === 'ended' ? ['idle', 'Broadcast ended']
          : state === 'error' ? ['bad', session.hls.status === 'unsupported' ? 'Cannot play here' : 'HLS error — retrying…']
            : ['pending', state === 'connecting' ? 'Connecting…' : 'Waiting for the broadcast…'];
  } else if (session.pollFailures >= 2 && session.connection !== 'connected') {
    tone = 'bad';
    text = 'Cannot reach the server — retrying…';
  } else if (session.connection === 'connected' && session.pc?.connectionState === 'connected') {
    tone = 'ok';
    text = 'Connected';
  } else if (session.connection === 'connected' && session.pc?.connectionState === 'disconnected') {
    tone = 'pending';
    text = 'Reconnecting…';
  } else if (session.connection === 'reconnecting') {
    tone = 'pending';
    text = 'Reconnecting…';
  } else {
    tone = 'pending';
    text = 'Connecting…';
  }
  ui.status.dataset.tone = tone;
  ui.status.title = (session.transport === 'hls' ? session.hls.error : session.lastProblem) ?? '';
  setText(ui.statusText, text);
}

function renderRoomInfo() {
  const info = session.info;
  ui.liveBadge.hidden = Boolean(session.invalid);
  const live = info ? Boolean(info.live) : null;
  document.body.dataset.live = live == null ? 'unknown' : String(live);
  ui.liveBadge.dataset.live = live == null ? 'unknown' : String(live);
  setText(ui.liveBadge, live == null ? '…' : live ? 'LIVE' : 'OFFLINE');
  if (session.room && !session.invalid) {
    document.title = `${live ? '● ' : ''}${session.room} · roomcast`;
  }

  const viewers = Number.isFinite(info?.viewers) ? info.viewers : null;
  ui.viewerCount.hidden = viewers == null;
  setText(ui.viewerCount, viewers == null ? '' : `${viewers} ${viewers === 1 ? 'viewer' : 'viewers'}`);

  const host = info?.host ?? null;
  const source = { rtmp: 'RTMP', whip: 'WHIP', webrtc: 'browser' }[host?.source] ?? host?.source;
  setText(ui.hostName, host ? (source ? `${host.name} (${source})` : host.name) : '—');

  const startedAt = live && info.started_at ? Date.parse(info.started_at) : NaN;
  if (Number.isFinite(startedAt)) {
    const seconds = Math.max(0, Math.floor((Date.now() - startedAt) / 1000));
    setText(ui.elapsed, formatDuration(seconds));
    ui.elapsed.dateTime = `PT${seconds}S`;
  } else {
    setText(ui.elapsed, '—');
    ui.elapsed.removeAttribute('datetime');
  }

  const warnings = Array.isArray(info?.warnings) ? info.warnings.map(String) : [];
  const shown = [...ui.warningList.children].map((item) => item.textContent);
  if (shown.length !== warnings.length || shown.some((text, i) => text !== warnings[i])) {
    ui.warningList.replaceChildren(...warnings.map((text) => {
      const item = document.createElement('li');
      item.textContent = text;
      return item;
    }));
  }
  ui.warnings.hidden = warnings.length === 0;
}

function renderAudio(state) {
  const muted = ui.video.muted;
  ui.unmuteButton.hidden = !(session.audioBlocked && muted) || state === 'invalid';
  setText(ui.muteButton, muted ? 'Unmute' : 'Mute');
  ui.muteButton.setAttribute('aria-pressed', String(muted));
  ui.muteButton.disabled = state === 'invalid';
  ui.fullscreenButton.disabled = state === 'invalid';
}

function renderTransport(state) {
  const hls = session.transport === 'hls';
  for (const button of ui.transportButtons) {
    button.setAttribute('aria-pressed', String(button.dataset.transport === session.transport));
    button.disabled = state === 'invalid';
  }
  setText(ui.transportName, hls ? (session.hls.player === 'native' ? 'HLS (native)' : 'HLS') : 'WebRTC');
  ui.transportName.title = hls
    ? (session.hls.player === 'hls.js' ? 'HLS over HTTP, played by hls.js in low-latency mode' : 'HLS over HTTP')
    : 'WebRTC (WHEP)';

  if (hls) session.delay.ms = state === 'playing' ? hlsDelayMs() : null;
  const ms = state === 'playing' ? session.delay.ms : null;
  setText(ui.delay, ms == null ? '—' : formatDelay(ms, { estimate: !hls }));
  ui.delay.title = hls
    ? 'Now minus the time the picture on screen was captured (the playlist’s PROGRAM-DATE-TIME)'
    : 'Estimated from WebRTC statistics: network and jitter buffer; the encoder’s own delay is not included';

  const note = hls && session.fallbackReason
    ? `Playing over HLS, a second or two behind, because ${session.fallbackReason}. Press “WebRTC” to try it again.`
    : '';
  ui.transportNote.hidden = !note;
  setText(ui.transportNote, note);
}

/** Writes text only when it changed, so screen readers do not hear the same status again. */
function setText(element, text) {
  if (element.textContent !== text) element.textContent = text;
}

/** "1.2 s behind live"; an estimate under a second in tens of ms: "≈ 40 ms behind live". */
function formatDelay(ms, { estimate = false } = {}) {
  const value = Math.max(0, ms);
  const text = estimate && value < 1000 ? `${Math.max(10, Math.round(value / 10) * 10)} ms` : `${(value / 1000).toFixed(1)} s`;
  return `${estimate ? '≈ ' : ''}${text} behind live`;
}

function formatDuration(total) {
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = total % 60;
  const two = (n) => String(n).padStart(2, '0');
  return hours ? `${hours}:${two(minutes)}:${two(seconds)}` : `${minutes}:${two(seconds)}`;
}

main();
