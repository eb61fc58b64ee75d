// @ts-check
// roomcast browser client: the directory (`/`), the lobby (`/?room=R`) and the call page
// (`/?room=R&name=N`, which joins at once).
//
// Joins a room over the `/ws` signaling socket (protocol: docs/protocol.md), publishes camera
// and microphone (and a screen share) on one RTCPeerConnection and shows every other
// participant. Both directions share that peer connection:
//
// - The client offers its own tracks (sendonly transceivers); the server answers. `sources`
//   in the offer marks the screen share's mid.
// - The server offers the tracks it forwards (one m-line per track); the client answers. The
//   server's `offer` message maps every m-line mid to the participant and track it carries.
// - When both offer at once the client is the polite peer: it rolls its own offer back, answers
//   the server, and offers again from `negotiationneeded` once it is back in `stable`.
//
// Every signaling message (and every negotiation step) runs through one promise chain, so they
// are processed strictly in order.
//
// Microphone and camera off are signalled (`mute` of the own track): the server stops
// forwarding and everyone shows a muted badge or an avatar. The server names the dominant
// speaker (`active_speaker`); its tile gets a ring. A dropped connection is repaired by an ICE
// restart, and when that does not help within a few seconds (or the socket closed) by joining
// again with the same camera, microphone, mute and screen-share state, with backoff.
//
// `window.roomcast` is a read-only debugging/test hook: { pc, ws, participantId, participants,
// state, stateReason, room, name, mids, localStream, timings, activeSpeaker, reconnects,
// quality, screenSharing, layers, micMuted, cameraOff, chat, leave }. `layers` is the camera's
// simulcast encodings by rid as the server last paused/resumed them (dynacast). `state` is 'directory', 'lobby',
// 'joining', 'connected', 'reconnecting', 'disconnected' (the join was refused) or 'left'.

import { createChatPanel } from './chat.js';
import { mountDirectory } from './directory.js';

// The server's rules (signaling/src/session.rs): room 1-64 of A-Z a-z 0-9 . - _, name 1-64
// printable characters.
const ROOM_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;
const NAME_MAX_LENGTH = 64;
const STORAGE_KEY = 'roomcast.lastJoin';
/** A media path `disconnected` this long gets an ICE restart. */
const ICE_RESTART_AFTER_MS = 2000;
/** An ICE restart that has not reconnected after this long gives way to a rejoin. */
const REJOIN_AFTER_MS = 8000;
const REJOIN_BACKOFF_MS = [500, 1000, 2000, 4000, 8000];
const QUALITY_INTERVAL_MS = 2000;

/** How a `participant_left` reason reads in a notice (unknown reasons are shown as sent). */
const LEAVE_REASONS = {
  left: 'left',
  disconnected: 'connection closed',
  media_timeout: 'media connection lost',
  slow_client: 'connection too slow',
  server_shutdown: 'server shutting down',
  kicked: 'removed by a host',
  room_closed: 'room closed',
};

/** @param {string} id */
const $ = (id) => document.getElementById(id);
/** @param {string} id */
const input = (id) => /** @type {HTMLInputElement} */ (document.getElementById(id));
/** @param {string} id */
const button = (id) => /** @type {HTMLButtonElement} */ (document.getElementById(id));
const ui = {
  roomInfo: $('room-info'),
  roomName: $('room-name'),
  participantCount: $('participant-count'),
  devBadge: $('dev-badge'),
  status: $('status'),
  statusText: $('status-text'),
  quality: $('quality'),
  controls: $('controls'),
  micButton: button('mic-button'),
  cameraButton: button('camera-button'),
  shareButton: button('share-button'),
  peopleButton: $('people-button'),
  chatButton: $('chat-button'),
  chatUnread: $('chat-unread'),
  copyLinkButton: $('copy-link-button'),
  leaveButton: $('leave-button'),
  directoryView: $('directory-view'),
  directory: $('directory'),
  startForm: /** @type {HTMLFormElement} */ ($('start-form')),
  startRoom: input('start-room'),
  lobbyView: $('lobby-view'),
  lobbyForm: /** @type {HTMLFormElement} */ ($('lobby-form')),
  lobbyRoom: $('lobby-room'),
  lobbyMessage: $('lobby-message'),
  lobbyVideo: /** @type {HTMLVideoElement} */ ($('lobby-video')),
  lobbyNoCamera: $('lobby-no-camera'),
  lobbyMeter: $('lobby-meter'),
  nameInput: input('name-input'),
  cameraSelect: /** @type {HTMLSelectElement} */ ($('camera-select')),
  micSelect: /** @type {HTMLSelectElement} */ ($('mic-select')),
  joinMuted: input('join-muted'),
  joinCameraOff: input('join-camera-off'),
  callView: $('call-view'),
  banner: $('banner'),
  bannerText: $('banner-text'),
  rejoinButton: $('rejoin-button'),
  grid: $('grid'),
  peoplePanel: $('people-panel'),
  peopleList: $('people-list'),
  chatPanel: $('chat-panel'),
  notices: $('notices'),
  tileTemplate: /** @type {HTMLTemplateElement} */ ($('tile-template')),
};

const session = {
  state: 'idle',
  stateReason: null,
  room: null,
  name: null,
  token: null,
  ws: null,
  pc: null,
  participantId: null,
  /** The room's stage (`stage_changed`): whose media HLS viewers and replays see. */
  stageParticipant: null,
  devMode: false,
  grants: { publish: true, chat: true, admin: false },
  /** id -> Participant (see createParticipant) */
  participants: new Map(),
  /** Participants that left: late media for them must not bring their tile back. */
  departed: new Set(),
  /** mid -> {mid, participant_id, track_id, kind, source}, from the server's latest offer or answer. */
  mids: new Map(),
  /** Receive transceivers for the tracks `joined` listed, declared in our first offer. */
  receiveOnJoin: [],
  localStream: null,
  mediaPromise: null,
  mediaSettled: false,
  selfTile: null,
  pendingCandidates: [],
  /** While true, `track` events leave the tiles to reconcileMedia() after the answer is sent. */
  applyingServerOffer: false,
  chain: Promise.resolve(),
  audioBlockedNoticeShown: false,
  /** performance.now() of milestones, for debugging: ws_open, joined, offer_sent, pc_<state>... */
  timings: {},
  /** Own track ids by source, from `track_published` for our own id. */
  ownTracks: new Map(),
  /** Own track id -> the mute state last sent for it. */
  sentMutes: new Map(),
  micMuted: false,
  cameraOff: false,
  /** The screen share: its stream and the transceiver sending it. */
  screen: null,
  activeSpeaker: null,
  /** Completed recoveries: ICE restarts that reconnected, and rejoins. */
  reconnects: 0,
  /** Rejoin attempts since the connection was last up. */
  rejoinAttempt: 0,
  iceRestartTimer: null,
  rejoinTimer: null,
  quality: null,
  qualityTimer: null,
  chat: null,
  directory: null,
  /** The lobby's preview, handed to the call on Join. */
  lobby: null,
  /** Dynacast: our camera's encodings by rid, as the server last asked (`set_layers`). */
  layers: {},
  /** Track id -> the `track_settings` last sent for it. */
  sentTrackSettings: new Map(),
};

/**
 * Simulcast for the camera (issue: "many-party rooms that stay smooth"): up to three
 * encodings, lowest first, so the server can send each viewer the one that fits its
 * bandwidth and tile. The top one is always the camera's full size.
 */
const SIMULCAST_LADDER = [
  { rid: 'q', scaleResolutionDownBy: 4 },
  { rid: 'h', scaleResolutionDownBy: 2 },
  { rid: 'f', scaleResolutionDownBy: 1 },
];

/**
 * An encoding's bit rate cap, from its picture size: 40 kbit/s plus 1.5 bit per pixel (per
 * frame, at up to 30 fps), within ~20 % of LiveKit's presets from 160×120 (70 kbit/s) to
 * 1280×720 (1.4 Mbit/s here, 1.7 there). A fixed ladder would give a 640×480 camera's
 * 160×120 layer as much as a 1280×720 camera's 320×180 one: more than a constrained viewer,
 * who receives those smallest layers, can spare.
 * @param {number} pixels
 */
function layerBitrate(pixels) {
  return Math.round(40_000 + 1.5 * pixels);
}
/** `?simulcast=0`: one encoding; `?simulcast=3`: three whatever the camera's size. */
const simulcastParam = new URLSearchParams(location.search).get('simulcast');

/**
 * The size the camera is asked for (an ideal: a camera that cannot gives its nearest).
 * 1280×720 is where Chromium sends three simulcast layers (see `cameraEncodings`); without a
 * constraint it opens cameras at 640×480, and sends two. `?capture=640x480` asks for another
 * size: a weak machine, or the browser tests, which run many pages on two cores.
 */
const CAPTURE_SIZE = (() => {
  const match = /^(\d{2,4})x(\d{2,4})$/.exec(new URLSearchParams(location.search).get('capture') ?? '');
  return match ? { width: Number(match[1]), height: Number(match[2]) } : { width: 1280, height: 720 };
})();

/**
 * The encodings to publish `track` with (`undefined`: one plain encoding). Chromium sends at
 * most three layers from 960×540 up, two from 480×270 and one below, and it drops the *top*
 * encodings it will not send; asking for only as many as it sends keeps the full-size layer
 * (a 640×480 camera: 320×240 and 640×480).
 * @param {MediaStreamTrack} track
 * @returns {RTCRtpEncodingParameters[] | undefined}
 */
function cameraEncodings(track) {
  if (track.kind !== 'video' || simulcastParam === '0') return undefined;
  const { width = 0, height = 0 } = track.getSettings();
  const pixels = width * height;
  const count = simulcastParam === '3' || pixels >= 960 * 540 ? 3 : pixels >= 480 * 270 ? 2 : 1;
  if (count === 1) return undefined;
  return SIMULCAST_LADDER.slice(-count).map((encoding) => ({
    ...encoding,
    maxBitrate: layerBitrate(pixels / encoding.scaleResolutionDownBy ** 2),
  }));
}

/** @type {any} */ (window).roomcast = Object.freeze({
  get pc() { return session.pc; },
  get ws() { return session.ws; },
  get participantId() { return session.participantId; },
  get participants() { return session.participants; },
  get state() { return session.state; },
  get stateReason() { return session.stateReason; },
  get room() { return session.room; },
  get name() { return session.name; },
  get mids() { return session.mids; },
  get localStream() { return session.localStream; },
  get timings() { return session.timings; },
  get activeSpeaker() { return session.activeSpeaker; },
  get reconnects() { return session.reconnects; },
  get quality() { return session.quality; },
  get screenSharing() { return Boolean(session.screen); },
  get layers() { return { ...session.layers }; },
  get micMuted() { return session.micMuted; },
  get cameraOff() { return session.cameraOff; },
  get chat() { return session.chat; },
  leave: () => leave(),
});

// ---------------------------------------------------------------------------------------------
// Start-up and routing

function main() {
  const params = new URLSearchParams(location.search);
  const room = (params.get('room') ?? '').trim();
  const name = (params.get('name') ?? '').trim();
  const token = params.get('token');

  ui.startForm.addEventListener('submit', onStartSubmit);
  ui.lobbyForm.addEventListener('submit', onLobbySubmit);
  ui.cameraSelect.addEventListener('change', () => startPreview());
  ui.micSelect.addEventListener('change', () => startPreview());
  ui.leaveButton.addEventListener('click', () => leave());
  ui.rejoinButton.addEventListener('click', () => location.reload());
  ui.micButton.addEventListener('click', () => toggleMicrophone());
  ui.cameraButton.addEventListener('click', () => toggleCamera());
  ui.shareButton.addEventListener('click', () => toggleScreenShare());
  ui.peopleButton.addEventListener('click', () => togglePanel('people'));
  ui.chatButton.addEventListener('click', () => togglePanel('chat'));
  ui.copyLinkButton.addEventListener('click', copyInviteLink);
  document.addEventListener('keydown', onShortcut);
  navigator.mediaDevices?.addEventListener?.('devicechange', () => {
    if (session.state === 'lobby') fillDevicePickers();
  });
  new ResizeObserver(layoutGrid).observe(ui.grid);
  window.addEventListener('pagehide', () => {
    // Tell the room right away instead of letting the server notice the closed socket.
    if (isActive()) send({ type: 'leave' });
  });
  window.addEventListener('popstate', () => {
    const hasRoom = new URLSearchParams(location.search).has('room');
    if (isActive() && !hasRoom) leave({ navigate: false });
    else if (!isActive()) location.reload();
  });

  const problem = validateRoom(room) ?? validateName(name);
  const joinNow = room && name && !problem;
  if (joinNow) {
    session.micMuted = params.get('mic') === 'off';
    session.cameraOff = params.get('camera') === 'off';
    join(room, name, token);
  } else if (room && !validateRoom(room)) {
    showLobby(room, { name, message: name ? problem : null });
  } else {
    showDirectory({ room, message: room ? validateRoom(room) : null });
  }
}

function onStartSubmit(event) {
  event.preventDefault();
  const room = ui.startRoom.value.trim();
  ui.startRoom.setCustomValidity(validateRoom(room) ?? '');
  if (!ui.startForm.reportValidity()) return;
  goToLobby(room);
}

function goToLobby(room) {
  session.directory?.stop();
  session.directory = null;
  history.pushState(null, '', `${homeUrl()}?${new URLSearchParams({ room })}`);
  showLobby(room);
}

function validateRoom(room) {
  if (!room) return 'Enter a room name.';
  if (!ROOM_PATTERN.test(room)) {
    return 'Room names use letters, digits, “.”, “-” or “_” (up to 64 characters).';
  }
  return null;
}

function validateName(name) {
  if (!name) return 'Enter your name.';
  if ([...name].length > NAME_MAX_LENGTH) return `Names are at most ${NAME_MAX_LENGTH} characters.`;
  if (/\p{Cc}/u.test(name)) return 'Names cannot contain control characters.';
  return null;
}

function homeUrl() {
  return new URL('./', location.href).pathname;
}

function hideViews() {
  ui.directoryView.hidden = true;
  ui.lobbyView.hidden = true;
  ui.callView.hidden = true;
  ui.roomInfo.hidden = true;
  ui.controls.hidden = true;
  ui.quality.hidden = true;
}

function showDirectory({ room = '', message = null } = {}) {
  hideViews();
  stopPreview();
  if (session.state !== 'left') setState('directory');
  ui.directoryView.hidden = false;
  ui.startRoom.value = room || loadLastJoin().room || randomRoomName();
  ui.startRoom.addEventListener('input', () => ui.startRoom.setCustomValidity(''), { once: true });
  if (message) showNotice(message, 'warn');
  document.title = 'roomcast';
  session.directory?.stop();
  session.directory = mountDirectory(ui.directory, { onJoin: goToLobby });
  renderStatus();
}

function randomRoomName() {
  const bytes = crypto.getRandomValues(new Uint8Array(3));
  return `room-${[...bytes].map((b) => b.toString(16).padStart(2, '0')).join('')}`;
}

function loadLastJoin() {
  try {
    return JSON.parse(localStorage.getItem(STORAGE_KEY)) ?? {};
  } catch {
    return {};
  }
}

function saveLastJoin(room, name) {
  try {
    localStorage.setItem(STORAGE_KEY, JSON.stringify({ room, name }));
  } catch {
    // Storage may be disabled; remembering the form is only a convenience.
  }
}

// ---------------------------------------------------------------------------------------------
// Lobby: camera and microphone preview, device pickers, join muted

function showLobby(room, { name = '', message = null } = {}) {
  hideViews();
  setState('lobby');
  session.room = room;
  ui.lobbyView.hidden = false;
  ui.lobbyRoom.textContent = room;
  ui.nameInput.value = name || loadLastJoin().name || '';
  ui.nameInput.addEventListener('input', () => ui.nameInput.setCustomValidity(''));
  ui.lobbyMessage.textContent = message ?? '';
  ui.lobbyMessage.hidden = !message;
  document.title = `Join ${room} · roomcast`;
  renderStatus();
  ui.nameInput.focus();
  startPreview();
}

/** (Re)starts the preview with the picked devices; fills the pickers once labels are known. */
async function startPreview() {
  const cameraId = ui.cameraSelect.value;
  const micId = ui.micSelect.value;
  stopPreview();
  const lobby = { stream: null, meter: null };
  session.lobby = lobby;
  const { stream, error, missing } = await acquireLocalMedia({ cameraId, micId });
  if (session.lobby !== lobby) {
    stream?.getTracks().forEach((track) => track.stop());
    return;
  }
  lobby.stream = stream;
  ui.lobbyVideo.srcObject = stream;
  ui.lobbyVideo.play().catch(() => {});
  const noCamera = !stream?.getVideoTracks().length;
  ui.lobbyNoCamera.hidden = !noCamera && !error;
  ui.lobbyNoCamera.textContent = error
    ? `No access to your ${missing} (${error.name ?? 'error'}: ${error.message}). You can still join${noCamera ? ' and watch' : ''}.`
    : '';
  if (stream?.getAudioTracks().length) lobby.meter = startMeter(stream, ui.lobbyMeter);
  await fillDevicePickers();
}

function stopPreview() {
  const lobby = session.lobby;
  if (!lobby) return;
  session.lobby = null;
  lobby.meter?.stop();
  lobby.stream?.getTracks().forEach((track) => track.stop());
  ui.lobbyVideo.srcObject = null;
}

async function fillDevicePickers() {
  let devices = [];
  try {
    devices = await navigator.mediaDevices.enumerateDevices();
  } catch {
    return;
  }
  const current = session.lobby?.stream;
  const fill = (select, kind, activeTrack, noun) => {
    const options = devices.filter((device) => device.kind === kind);
    const activeId = activeTrack?.getSettings().deviceId;
    select.replaceChildren(...options.map((device, index) => {
      const option = document.createElement('option');
      option.value = device.deviceId;
      option.textContent = device.label || `${noun} ${index + 1}`;
      option.selected = device.deviceId === activeId;
      return option;
    }));
    if (!options.length) select.append(new Option(`No ${noun.toLowerCase()} found`, ''));
    select.disabled = !options.length;
  };
  fill(ui.cameraSelect, 'videoinput', current?.getVideoTracks()[0], 'Camera');
  fill(ui.micSelect, 'audioinput', current?.getAudioTracks()[0], 'Microphone');
}

/** A level meter on `stream`'s audio: sets `bar`'s width 0-100%. */
function startMeter(stream, bar) {
  let context;
  try {
    context = new AudioContext();
  } catch {
    return null;
  }
  const analyser = context.createAnalyser();
  analyser.fftSize = 512;
  context.createMediaStreamSource(stream).connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  let frame = 0;
  const draw = () => {
    analyser.getFloatTimeDomainData(samples);
    let peak = 0;
    for (const sample of samples) peak = Math.max(peak, Math.abs(sample));
    bar.style.width = `${Math.min(100, Math.round(peak * 140))}%`;
    frame = requestAnimationFrame(draw);
  };
  draw();
  return {
    stop() {
      cancelAnimationFrame(frame);
      context.close().catch(() => {});
      bar.style.width = '0';
    },
  };
}

function onLobbySubmit(event) {
  event.preventDefault();
  const name = ui.nameInput.value.trim();
  ui.nameInput.setCustomValidity(validateName(name) ?? '');
  if (!ui.lobbyForm.reportValidity()) return;
  const lobby = session.lobby;
  session.lobby = null; // the call takes the preview's stream over
  lobby?.meter?.stop();
  ui.lobbyVideo.srcObject = null;
  session.micMuted = ui.joinMuted.checked;
  session.cameraOff = ui.joinCameraOff.checked;
  // The link's other parameters (an access token, `capture`, `simulcast`) stay in the URL, for
  // this join and a reload.
  const params = new URLSearchParams(location.search);
  params.set('room', session.room);
  params.set('name', name);
  history.replaceState(null, '', `${homeUrl()}?${params}`);
  join(session.room, name, params.get('token'), lobby?.stream ? { stream: lobby.stream, error: null, missing: null } : null);
}

// ---------------------------------------------------------------------------------------------
// Session

function isActive() {
  return session.state === 'joining' || session.state === 'connected' || session.state === 'reconnecting';
}

function setState(state, reason = null) {
  session.state = state;
  session.stateReason = reason;
  session.timings[`state_${state}`] ??= performance.now();
  document.body.dataset.state = state;
  renderStatus();
  window.dispatchEvent(new CustomEvent('roomcast:statechange', { detail: { state, reason } }));
}

/**
 * Enters the call page for `room` as `name`: the camera (from the lobby, or asked for now),
 * the chat panel, then the signaling socket (`connect`).
 */
function join(room, name, token, media = null) {
  session.room = room;
  session.name = name;
  session.token = token;
  saveLastJoin(room, name);
  stopPreview();
  session.directory?.stop();
  session.directory = null;
  hideViews();
  setState('joining');

  ui.callView.hidden = false;
  ui.roomInfo.hidden = false;
  ui.controls.hidden = false;
  ui.banner.hidden = true;
  ui.roomName.textContent = room;
  document.title = `${room} · roomcast`;
  session.selfTile = createTile({ self: true, name });
  updateSelfTile();
  renderHeader();
  renderControls();
  createChat();

  // Ask for the camera while the socket connects; `joined` waits for the answer.
  session.mediaPromise = media ? Promise.resolve(media) : acquireLocalMedia();
  session.mediaPromise.then(({ stream }) => {
    session.mediaSettled = true;
    if (!isActive()) {
      stream?.getTracks().forEach((track) => track.stop());
      return;
    }
    session.localStream = stream; // the self view shows while the join is still under way
    applyLocalMute();
    updateSelfTile();
    renderControls();
  });
  connect();
}

/** Opens the signaling socket and joins (again, after a drop: a new participant id). */
function connect() {
  const { room, name, token } = session;
  const url = new URL('ws', location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const ws = new WebSocket(url);
  session.ws = ws;
  let opened = false;
  ws.addEventListener('open', () => {
    opened = true;
    session.timings.ws_open ??= performance.now();
    send({ type: 'join', room, name, ...(token ? { token } : {}) });
    renderStatus();
  });
  ws.addEventListener('message', (event) => {
    if (session.ws !== ws) return;
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      console.warn('roomcast: ignoring a frame that is not JSON', event.data);
      return;
    }
    session.timings[`received_${message.type}`] ??= performance.now();
    console.debug(`roomcast: <- ${summarize(message)}`);
    if (session.chat?.handle(message)) return;
    enqueue(() => handleMessage(message));
  });
  ws.addEventListener('close', (event) => {
    if (session.ws !== ws || !isActive()) return;
    const reason = opened ? event.reason || describeCloseCode(event.code) : 'the server is unreachable';
    reconnect(`Connection to the server lost (${reason}).`);
  });
}

function createChat() {
  session.chat = createChatPanel({
    send,
    room: session.room,
    exportUrl: `/admin/rooms/${encodeURIComponent(session.room)}/questions`,
    token: session.token,
  });
  session.chat.setUnreadListener((count) => {
    ui.chatUnread.textContent = String(count);
    ui.chatUnread.hidden = count === 0;
    ui.chatButton.setAttribute('aria-label', count ? `Chat, ${count} unread` : 'Chat');
  });
  ui.chatPanel.replaceChildren(session.chat.element);
  session.chat.setVisible(!ui.chatPanel.hidden);
}

/** Camera and microphone, by the lobby's picks (each falls back to none if refused). */
async function acquireLocalMedia({ cameraId = '', micId = '' } = {}) {
  /** @type {MediaTrackConstraints} */
  const video = { width: { ideal: CAPTURE_SIZE.width }, height: { ideal: CAPTURE_SIZE.height } };
  if (cameraId) video.deviceId = { exact: cameraId };
  const audio = micId ? { deviceId: { exact: micId } } : true;
  const attempts = [
    { audio, video },
    { audio, video: false },
    { audio: false, video },
  ];
  let firstError = null;
  for (const constraints of attempts) {
    try {
      const stream = await navigator.mediaDevices.getUserMedia(constraints);
      const missing = firstError ? (constraints.video ? 'microphone' : 'camera') : null;
      return { stream, error: firstError, missing };
    } catch (error) {
      firstError ??= error;
      // A refusal covers both devices; asking again would only show the prompt again.
      if (error?.name === 'NotAllowedError' || error?.name === 'SecurityError') break;
    }
  }
  return { stream: null, error: firstError ?? new Error('no media devices'), missing: 'camera and microphone' };
}

function send(message) {
  const ws = session.ws;
  if (!ws || ws.readyState !== WebSocket.OPEN) return false;
  console.debug(`roomcast: -> ${summarize(message)}`);
  ws.send(JSON.stringify(message));
  return true;
}

/** A signaling message for the debug log, with SDP bodies shortened to their m-lines. */
function summarize(message) {
  return JSON.stringify(message, (key, value) => {
    if (key !== 'sdp' || typeof value !== 'string') return value;
    const mlines = value.split(/\r?\n/).filter((line) => /^(m=|a=mid:|a=(sendrecv|sendonly|recvonly|inactive)$)/.test(line));
    return `<${value.length} bytes: ${mlines.join(' ')}>`;
  });
}

/** Runs `task` after every earlier signaling step; a failed step is reported, never fatal. */
function enqueue(task) {
  const run = session.chain.then(task);
  session.chain = run.catch((error) => {
    console.error('roomcast: signaling step failed:', error);
    showNotice(`Something went wrong while negotiating media: ${error?.message ?? error}`, 'error');
  });
  return run;
}

async function handleMessage(message) {
  if (!isActive()) return;
  switch (message.type) {
    case 'joined': return onJoined(message);
    case 'answer': return onAnswer(message);
    case 'offer': return onServerOffer(message);
    case 'candidate': return onRemoteCandidate(message);
    case 'participant_joined':
      onParticipantJoined(message.participant);
      if (message.participant && message.participant.id !== session.participantId) {
        showNotice(`${message.participant.name} joined.`, 'info');
      }
      return undefined;
    case 'participant_left': return onParticipantLeft(message.participant_id, message.reason);
    case 'track_published': return onTrackPublished(message.participant_id, message.track);
    case 'track_unpublished': return onTrackUnpublished(message.participant_id, message.track_id);
    case 'track_muted': return onTrackMuted(message);
    case 'active_speaker': return onActiveSpeaker(message.participant_id);
    case 'set_layers': return onSetLayers(message.layers ?? []);
    case 'stage_changed':
      // Whose media HLS viewers and replays see (docs/hls.md); kept for the UI and tests.
      session.stageParticipant = message.participant_id;
      return undefined;
    case 'left': return undefined; // answer to our `leave`; we are already gone
    case 'error': return onServerError(message);
    default:
      console.warn('roomcast: ignoring unknown message type', message.type);
      return undefined;
  }
}

async function onJoined(message) {
  session.timings.joined ??= performance.now();
  session.participantId = message.participant_id;
  session.devMode = Boolean(message.dev_mode);
  session.grants = message.grants ?? session.grants;
  session.ownTracks = new Map();
  session.sentTrackSettings = new Map();
  session.layers = {};
  session.selfTile.root.dataset.participantId = String(message.participant_id);
  for (const info of message.participants ?? []) onParticipantJoined(info);
  renderHeader();
  renderPeople();

  const { stream, error, missing } = await session.mediaPromise;
  if (!isActive()) return;
  if (error && session.reconnects === 0 && session.rejoinAttempt === 0) {
    console.warn('roomcast: getUserMedia failed:', error);
    const what = missing ?? 'camera and microphone';
    showNotice(`No access to your ${what} (${error.name ?? 'error'}: ${error.message}). ` +
      'You are in the room; others will not get your ' +
      `${what === 'microphone' ? 'audio' : what === 'camera' ? 'video' : 'audio or video'}.`, 'warn');
  }
  updateSelfTile();
  renderControls();

  const pc = new RTCPeerConnection({
    iceServers: message.ice_servers ?? [],
    bundlePolicy: 'max-bundle',
    rtcpMuxPolicy: 'require',
  });
  session.pc = pc;
  pc.addEventListener('icecandidate', ({ candidate }) => {
    // `null` ends gathering and is sent as the empty candidate. Chromium may also report an
    // empty candidate (end of one generation) before that; one end marker is enough.
    if (candidate && !candidate.candidate) return;
    send({
      type: 'candidate',
      candidate: candidate ? candidate.candidate : '',
      sdp_mid: candidate?.sdpMid ?? null,
    });
  });
  pc.addEventListener('track', onTrack);
  pc.addEventListener('connectionstatechange', onConnectionStateChange);
  pc.addEventListener('negotiationneeded', () => enqueue(negotiate));

  const tracks = stream && session.grants.publish !== false ? stream.getTracks() : [];
  for (const track of tracks) {
    /** @type {RTCRtpTransceiverInit} */
    const init = { direction: 'sendonly', streams: [stream] };
    const encodings = cameraEncodings(track);
    if (encodings) init.sendEncodings = encodings;
    pc.addTransceiver(track, init);
  }
  // A screen share that survived a rejoin is published again.
  if (session.screen) {
    session.screen.transceiver = pc.addTransceiver(session.screen.track, { direction: 'sendonly', streams: [session.screen.stream] });
  }
  session.receiveOnJoin = receiveExistingTracks(pc, message.participants ?? []);
  // Without any media the offer still needs something to negotiate ICE and DTLS with.
  if (tracks.length === 0 && !session.screen && session.receiveOnJoin.length === 0) pc.createDataChannel('roomcast');
  startQualityPolling();

  renderStatus();
  await negotiate();
}

/**
 * One receive transceiver per track already in the room, for the first offer: the server binds
 * them (offer `receive`, docs/protocol.md) and the answer maps them, so a late joiner's video
 * starts on its first negotiation instead of after a second, server-offered one. (The answer
 * gives each participant's audio and video one stream id, as server offers do: lip sync.)
 * @param {RTCPeerConnection} pc
 * @param {{id: number, tracks?: {id: number, kind: string}[]}[]} participants
 * @returns {{transceiver: RTCRtpTransceiver, trackId: number}[]}
 */
function receiveExistingTracks(pc, participants) {
  const slots = [];
  for (const participant of participants) {
    if (participant.id === session.participantId) continue;
    for (const track of participant.tracks ?? []) {
      const transceiver = pc.addTransceiver(track.kind, { direction: 'recvonly' });
      slots.push({ transceiver, trackId: track.id });
    }
  }
  return slots;
}

/** Offers our local changes. Runs on the chain; only when nothing else is being negotiated. */
async function negotiate() {
  const pc = session.pc;
  if (!pc || !isActive() || pc.signalingState !== 'stable') return;
  const offer = await pc.createOffer();
  if (session.pc !== pc || pc.signalingState !== 'stable') return;
  await pc.setLocalDescription(offer);
  session.timings.offer_sent ??= performance.now();
  const screenMid = session.screen?.transceiver?.mid;
  const receive = Object.fromEntries(session.receiveOnJoin
    .filter(({ transceiver }) => transceiver.mid != null)
    .map(({ transceiver, trackId }) => [transceiver.mid, trackId]));
  session.receiveOnJoin = [];
  send({
    type: 'offer',
    sdp: pc.localDescription.sdp,
    ...(screenMid ? { sources: { [screenMid]: 'screen' } } : {}),
    ...(Object.keys(receive).length ? { receive } : {}),
  });
}

/**
 * The server's map of the m-lines it sends on (in its offers and answers): placed before the
 * description is applied, since `track` events and reconcileMedia() read it.
 * @param {{mid: string, participant_id: number, track_id: number, kind: string, source?: string}[]} tracks
 */
function applyTrackMap(tracks) {
  session.mids = new Map(tracks.map((track) => [String(track.mid), track]));
  for (const track of tracks) {
    const participant = session.participants.get(track.participant_id);
    if (participant && !participant.tracks.has(track.track_id)) {
      participant.tracks.set(track.track_id, { kind: track.kind, source: track.source ?? defaultSource(track.kind), muted: false });
    }
  }
}

async function onAnswer({ sdp, tracks }) {
  const pc = session.pc;
  if (!pc) return;
  if (pc.signalingState !== 'have-local-offer') {
    // Our offer was rolled back in favour of the server's; the offer will be repeated.
    console.warn(`roomcast: ignoring an answer in signaling state ${pc.signalingState}`);
    return;
  }
  if (tracks) applyTrackMap(tracks);
  await pc.setRemoteDescription({ type: 'answer', sdp });
  await flushCandidates();
  reconcileMedia();
}

async function onServerOffer({ sdp, tracks }) {
  const pc = session.pc;
  if (!pc) {
    console.warn('roomcast: server offer before the peer connection exists; ignored');
    return;
  }
  applyTrackMap(tracks ?? []);

  if (pc.signalingState !== 'stable') {
    // Polite peer: the server's offer wins; ours is re-sent from `negotiationneeded`.
    await pc.setLocalDescription({ type: 'rollback' });
  }
  // Answer first: the server forwards nothing before it has the answer. So the implicit
  // createAnswer (one trip to WebRTC's thread instead of two), and tiles and candidates after.
  session.applyingServerOffer = true;
  try {
    await pc.setRemoteDescription({ type: 'offer', sdp });
    await pc.setLocalDescription();
  } finally {
    session.applyingServerOffer = false;
  }
  send({ type: 'answer', sdp: pc.localDescription.sdp });
  session.timings.server_offer_answered ??= performance.now();
  await flushCandidates();
  reconcileMedia();
}

async function onRemoteCandidate({ candidate, sdp_mid: sdpMid }) {
  const init = { candidate: candidate ?? '' };
  if (sdpMid != null) init.sdpMid = sdpMid;
  else init.sdpMLineIndex = 0;
  const pc = session.pc;
  if (!pc || !pc.remoteDescription) {
    session.pendingCandidates.push(init);
    return;
  }
  await addCandidate(pc, init);
}

async function flushCandidates() {
  const pc = session.pc;
  const pending = session.pendingCandidates.splice(0);
  for (const init of pending) await addCandidate(pc, init);
}

async function addCandidate(pc, init) {
  try {
    await pc.addIceCandidate(init);
  } catch (error) {
    console.warn('roomcast: could not add a server ICE candidate', init, error);
  }
}

function onServerError({ code, message }) {
  if (code === 'offer_collision') {
    // Glare: our offer crossed the server's. The server's offer wins; we roll back when it
    // arrives, answer it, and offer again from negotiationneeded (docs/protocol.md).
    console.debug(`roomcast: ${message}`);
    return;
  }
  if (code === 'unknown_participant' && message.startsWith('track_settings:')) {
    // A tile report crossed the track's removal: nothing to tell the user.
    console.debug(`roomcast: ${message}`);
    return;
  }
  if (code === 'forbidden' && /muted by a host/.test(message)) {
    showNotice('A host muted you; only a host can unmute you.', 'warn');
    session.micMuted = true;
    applyLocalMute();
    renderControls();
    return;
  }
  console.warn(`roomcast: server error ${code}: ${message}`);
  if (session.participantId == null) {
    // The join itself was refused (bad name, room full, bad token...).
    failJoin(`Could not join “${session.room}”: ${message} (${code}).`);
    return;
  }
  showNotice(`Server error (${code}): ${message}`, 'error');
}

function onConnectionStateChange() {
  const pc = session.pc;
  if (!pc || session.pc !== pc || !isActive()) return;
  const state = pc.connectionState;
  session.timings[`pc_${state}`] ??= performance.now();
  if (state === 'connected') {
    clearTimeout(session.iceRestartTimer);
    clearTimeout(session.rejoinTimer);
    session.iceRestartTimer = null;
    if (session.state !== 'connected') {
      if (session.state === 'reconnecting') session.reconnects += 1;
      session.rejoinAttempt = 0;
      ui.banner.hidden = true;
      setState('connected');
      scheduleTrackSettings();
    }
  } else if (state === 'disconnected' && session.state === 'connected') {
    // Often a blip; if it lasts, try an ICE restart on the same session.
    session.iceRestartTimer ??= setTimeout(() => restartIce(), ICE_RESTART_AFTER_MS);
  } else if (state === 'failed') {
    restartIce();
  }
  renderStatus();
}

/** Repairs the media path without leaving: new ICE credentials, same tracks. */
function restartIce() {
  const pc = session.pc;
  session.iceRestartTimer = null;
  if (!pc || pc.connectionState === 'connected' || !isActive()) return;
  if (session.ws?.readyState !== WebSocket.OPEN) return; // the socket's close handles it
  setState('reconnecting', 'media connection interrupted; restarting ICE');
  showBanner('Reconnecting… (restoring the media connection)');
  pc.restartIce(); // fires negotiationneeded: an offer with new ICE credentials
  clearTimeout(session.rejoinTimer);
  session.rejoinTimer = setTimeout(() => {
    if (session.pc === pc && pc.connectionState !== 'connected' && isActive()) {
      reconnect('The media connection did not come back.');
    }
  }, REJOIN_AFTER_MS);
}

/**
 * Leaves the broken session behind and joins again (a new socket, participant id and peer
 * connection), keeping the camera, microphone, mutes and screen share. Retries with backoff.
 */
function reconnect(reason) {
  if (!isActive()) return;
  const attempt = session.rejoinAttempt;
  session.rejoinAttempt += 1;
  setState('reconnecting', reason);
  const delay = REJOIN_BACKOFF_MS[Math.min(attempt, REJOIN_BACKOFF_MS.length - 1)];
  showBanner(`Reconnecting… ${reason} Trying again${attempt ? ` (attempt ${attempt + 1})` : ''}.`);
  const old = session.ws;
  session.ws = null;
  if (old && old.readyState <= WebSocket.OPEN) old.close(1000, 'reconnecting');
  dropCall();
  clearTimeout(session.rejoinTimer);
  session.rejoinTimer = setTimeout(() => {
    if (session.state !== 'reconnecting') return;
    // A rejoin that does not reach 'connected' in time tries again.
    session.rejoinTimer = setTimeout(() => {
      if (session.state === 'reconnecting') reconnect('The server did not answer.');
    }, REJOIN_AFTER_MS + 4000);
    connect();
  }, delay);
}

function showBanner(text) {
  ui.bannerText.textContent = text;
  ui.rejoinButton.hidden = true;
  ui.banner.hidden = false;
}

function failJoin(message) {
  setState('disconnected', message);
  const room = session.room;
  const name = session.name;
  teardown();
  session.ws?.close(1000, 'join refused');
  showLobby(room, { name, message });
}

function leave({ navigate = true } = {}) {
  if (!isActive()) return;
  const { room, ws } = session;
  send({ type: 'leave' });
  setState('left');
  teardown();
  // The server answers `left` and closes the socket; do it ourselves if it does not.
  setTimeout(() => {
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000, 'left');
  }, 1000);
  if (navigate) history.pushState(null, '', homeUrl());
  ui.notices.replaceChildren();
  showDirectory({ room });
  showNotice(`You left ${room}.`, 'info');
}

/** The room's media and members go (the local camera and the chat stay): before a rejoin. */
function dropCall() {
  clearTimeout(session.iceRestartTimer);
  session.iceRestartTimer = null;
  session.pc?.close(); // kept (closed) until the next join replaces it
  session.participantId = null;
  for (const participant of session.participants.values()) {
    participant.tile.root.remove();
    participant.screenTile?.root.remove();
  }
  session.participants.clear();
  session.departed.clear();
  session.mids = new Map();
  session.ownTracks = new Map();
  session.sentMutes = new Map();
  session.pendingCandidates = [];
  session.activeSpeaker = null;
  session.chain = Promise.resolve();
  stopQualityPolling();
  renderHeader();
  renderPeople();
  layoutGrid();
}

/** Releases the camera, the peer connection, every tile and the chat. */
function teardown() {
  clearTimeout(session.rejoinTimer);
  dropCall();
  session.localStream?.getTracks().forEach((track) => track.stop());
  session.screen?.track.stop();
  session.screen = null;
  if (session.selfTile) {
    session.selfTile.video.srcObject = null;
    session.selfTile.root.remove();
  }
  session.chat = null;
  ui.chatPanel.replaceChildren();
  ui.banner.hidden = true;
  renderHeader();
  renderControls();
}

function describeCloseCode(code) {
  switch (code) {
    case 1000: return 'closed normally';
    case 1001: return 'server going away';
    case 1006: return 'connection lost';
    case 1008: return 'policy violation';
    case 1009: return 'message too large';
    case 1011: return 'server error';
    default: return `code ${code}`;
  }
}

// ---------------------------------------------------------------------------------------------
// Participants and their media

function defaultSource(kind) {
  return kind === 'audio' ? 'microphone' : 'camera';
}

function createParticipant(id, name) {
  const participant = {
    id,
    name,
    /** track id -> {kind, source, muted}, as announced by the server */
    tracks: new Map(),
    /** The tile of its screen share, while it shares. */
    screenTile: null,
    /** mid -> {mid, trackId, kind, track}: the receivers currently showing this participant */
    media: new Map(),
    tile: createTile({ self: false, name }),
  };
  participant.tile.root.dataset.participantId = String(id);
  session.participants.set(id, participant);
  renderHeader();
  renderPeople();
  return participant;
}

function onParticipantJoined(info) {
  if (!info || info.id === session.participantId) return;
  session.departed.delete(info.id);
  const participant = session.participants.get(info.id) ?? createParticipant(info.id, info.name);
  participant.name = info.name;
  participant.tile.name.textContent = info.name;
  participant.tile.avatar.textContent = initials(info.name);
  participant.tile.root.setAttribute('aria-label', info.name);
  for (const track of info.tracks ?? []) {
    participant.tracks.set(track.id, { kind: track.kind, source: track.source ?? defaultSource(track.kind), muted: Boolean(track.muted) });
  }
  updateTile(participant);
  renderPeople();
}

function onParticipantLeft(id, reason) {
  const participant = session.participants.get(id);
  session.departed.add(id);
  if (!participant) return;
  session.participants.delete(id);
  for (const entry of participant.media.values()) stopWatching(entry);
  participant.tile.video.srcObject = null;
  participant.tile.root.remove();
  participant.screenTile?.root.remove();
  if (session.activeSpeaker === id) session.activeSpeaker = null;
  renderHeader();
  renderPeople();
  layoutGrid();
  const why = LEAVE_REASONS[reason] ?? reason;
  showNotice(`${participant.name} ${why === 'left' ? 'left the room' : `left the room (${why})`}.`, 'info');
}

function onTrackPublished(participantId, track) {
  if (!track) return;
  const source = track.source ?? defaultSource(track.kind);
  if (participantId === session.participantId) {
    // Our own track: its id is what `mute` names.
    session.ownTracks.set(source, track.id);
    if (!session.sentMutes.has(track.id)) session.sentMutes.set(track.id, Boolean(track.muted));
    applyLocalMute();
    return;
  }
  const participant = session.participants.get(participantId);
  if (!participant) return;
  participant.tracks.set(track.id, { kind: track.kind, source, muted: Boolean(track.muted) });
  updateTile(participant);
  renderPeople();
}

function onTrackMuted({ participant_id: participantId, track_id: trackId, muted, by }) {
  if (participantId === session.participantId) {
    if (by === 'admin') {
      const source = [...session.ownTracks].find(([, id]) => id === trackId)?.[0];
      if (source === 'microphone') session.micMuted = muted;
      if (source === 'camera') session.cameraOff = muted;
      applyLocalMute({ signal: false });
      renderControls();
      updateSelfTile();
      showNotice(muted ? `A host turned your ${source ?? 'track'} off.` : `A host turned your ${source ?? 'track'} back on.`, 'info');
    }
    return;
  }
  const participant = session.participants.get(participantId);
  const track = participant?.tracks.get(trackId);
  if (!track) return;
  track.muted = muted;
  updateTile(participant);
  renderPeople();
}

/**
 * Dynacast: the server pauses the encodings of our camera that nobody receives, and resumes
 * them when someone needs them again.
 * @param {{rid: string, active: boolean}[]} layers
 */
async function onSetLayers(layers) {
  const sender = session.pc?.getSenders().find((candidate) =>
    candidate.getParameters().encodings?.some((encoding) => encoding.rid && layers.some((layer) => layer.rid === encoding.rid)));
  if (!sender) return;
  const parameters = sender.getParameters();
  for (const encoding of parameters.encodings) {
    const layer = layers.find((candidate) => candidate.rid === encoding.rid);
    if (layer) encoding.active = layer.active;
  }
  try {
    await sender.setParameters(parameters);
    for (const layer of layers) session.layers[layer.rid] = layer.active;
  } catch (error) {
    console.warn('roomcast: could not pause/resume camera encodings:', error);
  }
}

// ---------------------------------------------------------------------------------------------
// What each remote video tile needs (`track_settings`): nothing while it is off screen or
// hidden, and no more pixels than it is drawn with.

/** Tiles currently intersecting the viewport (updated by the observer). */
const tilesInView = new WeakMap();
const tileVisibility = new IntersectionObserver((entries) => {
  for (const entry of entries) tilesInView.set(entry.target, entry.isIntersecting);
  scheduleTrackSettings();
});
const tileSizes = new ResizeObserver(() => scheduleTrackSettings());
document.addEventListener('visibilitychange', () => scheduleTrackSettings());
let trackSettingsTimer = 0;

function observeTile(element) {
  tileVisibility.observe(element);
  tileSizes.observe(element);
}

function scheduleTrackSettings() {
  clearTimeout(trackSettingsTimer);
  trackSettingsTimer = window.setTimeout(sendTrackSettings, 150);
}

/**
 * Reports every remote video track's tile, from the moment we joined: before media connects,
 * so the server picks each first layer by the tile it fills (a small one starts at once, on a
 * small keyframe) rather than by bandwidth alone. A track whose tile does not exist yet (a
 * screen share before its media) is reported when the tile appears.
 */
function sendTrackSettings() {
  if (session.ws?.readyState !== WebSocket.OPEN || session.participantId == null || !isActive()) return;
  for (const participant of session.participants.values()) {
    for (const [trackId, track] of participant.tracks) {
      if (track.kind !== 'video') continue;
      const element = (track.source === 'screen' ? participant.screenTile : participant.tile)?.root;
      if (!element) continue;
      const rect = element.getBoundingClientRect();
      const visible = Boolean(element.isConnected && rect.width > 0 && rect.height > 0
        && tilesInView.get(element) !== false && document.visibilityState !== 'hidden');
      const width = visible ? Math.round(rect.width * window.devicePixelRatio) : 0;
      // A change of less than 10% is not worth a message (a window being resized).
      const last = session.sentTrackSettings.get(trackId);
      if (last && last.visible === visible && Math.abs(last.width - width) <= width * 0.1) continue;
      session.sentTrackSettings.set(trackId, { visible, width });
      send({ type: 'track_settings', track_id: trackId, visible, ...(visible ? { width } : {}) });
    }
  }
}

function onActiveSpeaker(participantId) {
  session.activeSpeaker = participantId ?? null;
  for (const participant of session.participants.values()) updateTile(participant);
  updateSelfTile();
  renderPeople();
}

function onTrackUnpublished(participantId, trackId) {
  const participant = session.participants.get(participantId);
  if (!participant) return;
  participant.tracks.delete(trackId);
  for (const [mid, entry] of participant.media) {
    if (entry.trackId === trackId) {
      stopWatching(entry);
      participant.media.delete(mid);
    }
  }
  updateTile(participant);
}

function onTrack(event) {
  if (session.applyingServerOffer) return;
  const mid = event.transceiver?.mid;
  const info = mid == null ? undefined : session.mids.get(mid);
  if (!info) {
    console.warn(`roomcast: track on mid ${mid} that the server did not map`);
    return;
  }
  attachMedia(info, event.track);
}

function attachMedia(info, track) {
  if (info.participant_id === session.participantId || session.departed.has(info.participant_id)) return;
  const participant = session.participants.get(info.participant_id)
    ?? createParticipant(info.participant_id, `Participant ${info.participant_id}`);
  // A mid the server recycled may still be shown on someone else's tile.
  for (const other of session.participants.values()) {
    const entry = other.media.get(info.mid);
    if (other !== participant && entry) {
      stopWatching(entry);
      other.media.delete(info.mid);
      updateTile(other);
    }
  }
  const current = participant.media.get(info.mid);
  if (current?.track === track && current.trackId === info.track_id) return;
  if (current) stopWatching(current);
  const entry = { mid: info.mid, trackId: info.track_id, kind: info.kind, source: info.source ?? defaultSource(info.kind), track, unwatch: null };
  const refresh = () => updateTile(participant);
  for (const type of ['mute', 'unmute', 'ended']) track.addEventListener(type, refresh);
  entry.unwatch = () => {
    for (const type of ['mute', 'unmute', 'ended']) track.removeEventListener(type, refresh);
  };
  participant.media.set(info.mid, entry);
  if (!participant.tracks.has(info.track_id)) {
    participant.tracks.set(info.track_id, { kind: info.kind, source: entry.source, muted: false });
  }
  updateTile(participant);
}

function stopWatching(entry) {
  entry.unwatch?.();
  entry.unwatch = null;
}

/**
 * After every completed offer/answer: show exactly the receivers that the server sends on and
 * that are mapped to a participant still in the room.
 */
function reconcileMedia() {
  const pc = session.pc;
  if (!pc) return;
  const receiving = new Map(); // mid -> track
  for (const transceiver of pc.getTransceivers()) {
    const direction = transceiver.currentDirection;
    if (transceiver.mid == null || (direction !== 'recvonly' && direction !== 'sendrecv')) continue;
    const track = transceiver.receiver.track;
    if (track.readyState !== 'live') continue;
    receiving.set(transceiver.mid, track);
  }
  for (const participant of session.participants.values()) {
    let changed = false;
    for (const [mid, entry] of participant.media) {
      const info = session.mids.get(mid);
      if (receiving.get(mid) !== entry.track || info?.participant_id !== participant.id) {
        stopWatching(entry);
        participant.media.delete(mid);
        changed = true;
      }
    }
    if (changed) updateTile(participant);
  }
  for (const [mid, track] of receiving) {
    const info = session.mids.get(mid);
    if (info) attachMedia(info, track);
  }
}

// ---------------------------------------------------------------------------------------------
// Tiles

function createTile({ self, name, screen = false }) {
  const root = /** @type {HTMLElement} */ (ui.tileTemplate.content.firstElementChild.cloneNode(true));
  const tile = {
    root,
    video: /** @type {HTMLVideoElement} */ (root.querySelector('.tile-video')),
    avatar: /** @type {HTMLElement} */ (root.querySelector('.avatar')),
    status: /** @type {HTMLElement} */ (root.querySelector('.tile-status')),
    name: /** @type {HTMLElement} */ (root.querySelector('.tile-name')),
    mic: /** @type {Element} */ (root.querySelector('.tile-mic')),
    audio: /** @type {HTMLElement} */ (root.querySelector('.tile-audio')),
  };
  // Screen tiles are not "remote" participant tiles: one person, one participant tile.
  root.dataset.role = self ? 'self' : screen ? 'screen' : 'remote';
  root.dataset.source = screen ? 'screen' : 'camera';
  root.classList.toggle('tile-self', self);
  root.classList.toggle('tile-screen', screen);
  const label = screen ? `${name}’s screen` : self ? `${name} (you)` : name;
  root.setAttribute('aria-label', label);
  tile.name.textContent = label;
  tile.avatar.textContent = initials(name);
  tile.avatar.style.setProperty('--avatar-hue', String(hue(name)));
  tile.status.textContent = 'connecting…';
  const refresh = () => {
    if (self) updateSelfTile();
    else {
      const participant = session.participants.get(Number(root.dataset.participantId));
      if (participant) updateTile(participant);
    }
  };
  for (const type of ['loadeddata', 'resize', 'playing', 'emptied']) tile.video.addEventListener(type, refresh);
  if (self) ui.grid.prepend(root);
  else if (screen) ui.grid.prepend(root);
  else ui.grid.append(root);
  if (!self) observeTile(root);
  layoutGrid();
  return tile;
}

/** Shows `track` (or nothing) in `tile`'s video element. */
function showVideo(tile, track) {
  if ((tile.video.srcObject?.getVideoTracks()[0] ?? null) !== track) {
    tile.video.srcObject = track ? new MediaStream([track]) : null;
    if (track) tile.video.play().catch(() => { /* muted video; retried on the next event */ });
  }
  return Boolean(track && !track.muted && tile.video.videoWidth > 0);
}

function updateTile(participant) {
  const { tile } = participant;
  const entries = [...participant.media.values()];
  const live = (entry) => entry.track.readyState === 'live';
  const cameraEntry = entries.find((entry) => entry.kind === 'video' && entry.source !== 'screen' && live(entry));
  const screenEntry = entries.find((entry) => entry.kind === 'video' && entry.source === 'screen' && live(entry));
  const tracks = [...participant.tracks.values()];
  const camera = tracks.find((track) => track.kind === 'video' && track.source !== 'screen');
  const microphone = tracks.find((track) => track.kind === 'audio' && track.source !== 'screen');
  const cameraOff = tracks.length > 0 && (!camera || camera.muted);
  const micMuted = Boolean(microphone?.muted) || (tracks.length > 0 && !microphone);

  const showing = !cameraOff && showVideo(tile, cameraOff ? null : cameraEntry?.track ?? null);
  if (cameraOff) showVideo(tile, null);
  tile.root.classList.toggle('has-video', showing);
  tile.root.dataset.cameraOff = String(cameraOff);
  tile.root.dataset.micMuted = String(micMuted);
  tile.root.dataset.speaking = String(session.activeSpeaker === participant.id);
  tile.mic.toggleAttribute('hidden', !micMuted);
  tile.status.textContent = showing || cameraOff ? '' : 'connecting…';

  // The screen share: its own large tile while it plays.
  if (screenEntry && !participant.screenTile) {
    participant.screenTile = createTile({ self: false, name: participant.name, screen: true });
    participant.screenTile.root.dataset.participantId = String(participant.id);
  }
  if (participant.screenTile) {
    if (!screenEntry) {
      participant.screenTile.video.srcObject = null;
      participant.screenTile.root.remove();
      participant.screenTile = null;
    } else {
      const playing = showVideo(participant.screenTile, screenEntry.track);
      participant.screenTile.root.classList.toggle('has-video', playing);
      participant.screenTile.status.textContent = playing ? '' : 'connecting…';
    }
  }
  ui.grid.dataset.layout = ui.grid.querySelector('.tile-screen') ? 'stage' : 'grid';
  layoutGrid();
  scheduleTrackSettings();

  // One <audio> element per audio track: every one of them must be heard.
  const audioEntries = entries.filter((entry) => entry.kind === 'audio' && live(entry));
  const wanted = new Set(audioEntries.map((entry) => entry.track));
  for (const element of [...tile.audio.children]) {
    if (!wanted.has(element.srcObject?.getAudioTracks()[0])) {
      element.srcObject = null;
      element.remove();
    }
  }
  const present = new Set([...tile.audio.children].map((element) => element.srcObject?.getAudioTracks()[0]));
  for (const entry of audioEntries) {
    if (present.has(entry.track)) continue;
    const element = document.createElement('audio');
    element.autoplay = true;
    element.srcObject = new MediaStream([entry.track]);
    tile.audio.append(element);
    element.play().catch((error) => {
      if (error?.name === 'NotAllowedError') showAudioBlockedNotice();
    });
  }
}

function updateSelfTile() {
  const tile = session.selfTile;
  if (!tile) return;
  const stream = session.localStream;
  const videoTrack = stream?.getVideoTracks()[0] ?? null;
  if (stream && tile.video.srcObject !== stream) {
    tile.video.srcObject = stream;
    tile.video.play().catch(() => {});
  }
  const showing = Boolean(videoTrack && videoTrack.enabled && tile.video.videoWidth > 0);
  tile.root.classList.toggle('has-video', showing);
  tile.root.dataset.cameraOff = String(!videoTrack || session.cameraOff);
  tile.root.dataset.micMuted = String(session.micMuted || !stream?.getAudioTracks().length);
  tile.root.dataset.speaking = String(session.activeSpeaker != null && session.activeSpeaker === session.participantId);
  tile.mic.toggleAttribute('hidden', tile.root.dataset.micMuted !== 'true');
  if (showing) tile.status.textContent = '';
  else if (!session.mediaSettled) tile.status.textContent = 'starting camera…';
  else if (!videoTrack) tile.status.textContent = 'no camera';
  else if (session.cameraOff) tile.status.textContent = '';
  else tile.status.textContent = 'starting camera…';
}

function showAudioBlockedNotice() {
  if (session.audioBlockedNoticeShown) return;
  session.audioBlockedNoticeShown = true;
  const notice = showNotice('Your browser blocked sound from the room.', 'warn', {
    action: 'Enable sound',
    onAction: () => {
      for (const element of ui.grid.querySelectorAll('audio')) element.play().catch(() => {});
      session.audioBlockedNoticeShown = false;
    },
  });
  return notice;
}

/** A stable colour for a name's avatar. */
function hue(name) {
  let hash = 0;
  for (const char of String(name)) hash = (hash * 31 + char.codePointAt(0)) % 360;
  return hash;
}

function initials(name) {
  const words = String(name).trim().split(/\s+/).filter(Boolean);
  const letters = words.length > 1 ? [words[0], words[words.length - 1]] : words;
  return letters.map((word) => [...word][0] ?? '').join('').toUpperCase() || '?';
}

/** Sizes the tiles so all of them fit the stage at the largest 16:9 size (the classic call grid). */
function layoutGrid() {
  const count = ui.grid.children.length;
  const { width, height } = ui.grid.getBoundingClientRect();
  if (!count || !width || !height) return;
  const gap = parseFloat(getComputedStyle(ui.grid).columnGap) || 0;
  let best = 0;
  for (let columns = 1; columns <= count; columns += 1) {
    const rows = Math.ceil(count / columns);
    const tileWidth = Math.min(
      (width - gap * (columns - 1)) / columns,
      ((height - gap * (rows - 1)) / rows) * (16 / 9),
    );
    best = Math.max(best, tileWidth);
  }
  // Small screens with many people: scroll rather than shrink tiles to stamps.
  const minimum = Math.min(width, 220);
  ui.grid.style.setProperty('--tile-width', `${Math.floor(Math.max(best, minimum))}px`);
  // A screen share takes the stage; everyone else is a filmstrip below it.
  const others = ui.grid.querySelectorAll('.tile:not(.tile-screen)').length;
  const strip = Math.max(120, Math.min(240, (width - gap * Math.max(others - 1, 0)) / Math.max(others, 1)));
  ui.grid.style.setProperty('--strip-width', `${Math.floor(strip)}px`);
}

// ---------------------------------------------------------------------------------------------
// Header, controls and notices

function renderHeader() {
  const count = session.participants.size + (isActive() ? 1 : 0);
  ui.participantCount.textContent = `${count} ${count === 1 ? 'participant' : 'participants'}`;
  ui.participantCount.hidden = !isActive();
  ui.devBadge.hidden = !session.devMode;
}

function renderStatus() {
  const { state } = session;
  let text;
  let tone;
  if (state === 'idle' || state === 'directory' || state === 'lobby') {
    ui.status.hidden = true;
    return;
  }
  if (state === 'joining') {
    tone = 'pending';
    if (!session.ws || session.ws.readyState !== WebSocket.OPEN) text = 'Connecting…';
    else if (session.participantId == null) text = 'Joining…';
    else text = 'Connecting media…';
  } else if (state === 'connected') {
    tone = 'ok';
    text = 'Connected';
  } else if (state === 'reconnecting') {
    tone = 'pending';
    text = session.rejoinAttempt > 1 ? `Reconnecting… (attempt ${session.rejoinAttempt})` : 'Reconnecting…';
  } else if (state === 'disconnected') {
    tone = 'bad';
    text = 'Disconnected';
  } else {
    tone = 'idle';
    text = 'Left';
  }
  ui.status.hidden = false;
  ui.status.dataset.tone = tone;
  ui.status.title = session.stateReason ?? '';
  ui.statusText.textContent = text;
}

function renderControls() {
  const audio = session.localStream?.getAudioTracks()[0];
  const video = session.localStream?.getVideoTracks()[0];
  const canPublish = session.grants.publish !== false;
  ui.micButton.disabled = !audio || !isActive() || !canPublish;
  ui.cameraButton.disabled = !video || !isActive() || !canPublish;
  ui.shareButton.disabled = !isActive() || !canPublish || !navigator.mediaDevices?.getDisplayMedia;
  const micOff = !audio || session.micMuted;
  const cameraOff = !video || session.cameraOff;
  ui.micButton.textContent = micOff ? 'Unmute' : 'Mute';
  ui.micButton.setAttribute('aria-pressed', String(Boolean(audio && session.micMuted)));
  ui.micButton.classList.toggle('btn-off', Boolean(audio && session.micMuted));
  ui.cameraButton.textContent = cameraOff ? 'Start video' : 'Stop video';
  ui.cameraButton.setAttribute('aria-pressed', String(Boolean(video && session.cameraOff)));
  ui.cameraButton.classList.toggle('btn-off', Boolean(video && session.cameraOff));
  ui.shareButton.textContent = session.screen ? 'Stop sharing' : 'Share screen';
  ui.shareButton.setAttribute('aria-pressed', String(Boolean(session.screen)));
}

/**
 * Makes the local tracks match `micMuted`/`cameraOff`: a disabled track sends nothing useful,
 * and (`signal`) the server is told, so it stops forwarding and everyone shows the state.
 */
function applyLocalMute({ signal = true } = {}) {
  const audio = session.localStream?.getAudioTracks()[0];
  const video = session.localStream?.getVideoTracks()[0];
  if (audio) audio.enabled = !session.micMuted;
  if (video) video.enabled = !session.cameraOff;
  if (!signal || session.participantId == null) return;
  for (const [source, muted] of [['microphone', session.micMuted], ['camera', session.cameraOff]]) {
    const trackId = session.ownTracks.get(source);
    if (trackId == null) continue;
    if (session.sentMutes.get(trackId) === muted) continue;
    session.sentMutes.set(trackId, muted);
    send({ type: 'mute', participant_id: session.participantId, track_id: trackId, muted });
  }
}

function toggleMicrophone() {
  if (!session.localStream?.getAudioTracks().length || !isActive()) return;
  session.micMuted = !session.micMuted;
  applyLocalMute();
  renderControls();
  updateSelfTile();
  renderPeople();
}

function toggleCamera() {
  if (!session.localStream?.getVideoTracks().length || !isActive()) return;
  session.cameraOff = !session.cameraOff;
  applyLocalMute();
  renderControls();
  updateSelfTile();
  renderPeople();
}

/** Shares a screen as an extra track (the others show it large), or stops sharing. */
async function toggleScreenShare() {
  if (!isActive()) return;
  if (session.screen) {
    stopScreenShare();
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
  } catch (error) {
    if (error?.name !== 'NotAllowedError' && error?.name !== 'AbortError') {
      showNotice(`Screen sharing failed: ${error?.message ?? error}`, 'error');
    }
    return;
  }
  const track = stream.getVideoTracks()[0];
  if (!track || !isActive()) {
    stream.getTracks().forEach((t) => t.stop());
    return;
  }
  track.contentHint = 'detail';
  track.addEventListener('ended', () => stopScreenShare());
  session.screen = { stream, track, transceiver: null };
  if (session.pc) {
    session.screen.transceiver = session.pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
  }
  renderControls();
}

function stopScreenShare() {
  const screen = session.screen;
  if (!screen) return;
  session.screen = null;
  screen.track.stop();
  const transceiver = screen.transceiver;
  if (transceiver && session.pc && session.pc.signalingState !== 'closed') {
    try {
      session.pc.removeTrack(transceiver.sender);
      transceiver.stop();
    } catch (error) {
      console.debug('roomcast: stopping the screen transceiver', error);
    }
  }
  session.ownTracks.delete('screen');
  renderControls();
}

/** Shows one side panel (people or chat), or hides it when it is already shown. */
function togglePanel(which) {
  const panel = which === 'chat' ? ui.chatPanel : ui.peoplePanel;
  const button = which === 'chat' ? ui.chatButton : ui.peopleButton;
  const show = panel.hidden;
  for (const [p, b] of [[ui.chatPanel, ui.chatButton], [ui.peoplePanel, ui.peopleButton]]) {
    p.hidden = true;
    b.setAttribute('aria-pressed', 'false');
  }
  panel.hidden = !show;
  button.setAttribute('aria-pressed', String(show));
  session.chat?.setVisible(!ui.chatPanel.hidden);
  if (show && which === 'chat') ui.chatPanel.querySelector('textarea')?.focus();
  layoutGrid();
}

/** M, V, S, C, P: the controls, when no text field has the focus. */
function onShortcut(event) {
  if (!isActive() || event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target;
  if (target instanceof HTMLElement && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName))) return;
  const action = {
    m: toggleMicrophone, v: toggleCamera, s: toggleScreenShare,
    c: () => togglePanel('chat'), p: () => togglePanel('people'),
  }[event.key.toLowerCase()];
  if (!action) return;
  event.preventDefault();
  action();
}

/** The participant list: names, you, microphone and camera state, speaking. */
function renderPeople() {
  const rows = [];
  if (isActive() && session.name) {
    rows.push({ id: session.participantId, name: `${session.name} (you)`, mic: !session.micMuted, camera: !session.cameraOff });
  }
  for (const participant of session.participants.values()) {
    const tracks = [...participant.tracks.values()];
    const mic = tracks.find((t) => t.kind === 'audio' && t.source !== 'screen');
    const camera = tracks.find((t) => t.kind === 'video' && t.source !== 'screen');
    rows.push({
      id: participant.id,
      name: participant.name,
      mic: Boolean(mic && !mic.muted),
      camera: Boolean(camera && !camera.muted),
      screen: tracks.some((t) => t.source === 'screen'),
    });
  }
  ui.peopleList.replaceChildren(...rows.map((row) => {
    const item = document.createElement('li');
    item.dataset.participantId = String(row.id);
    item.dataset.speaking = String(row.id != null && row.id === session.activeSpeaker);
    const name = document.createElement('span');
    name.className = 'people-name';
    name.textContent = row.name;
    const state = document.createElement('span');
    state.className = 'people-state';
    state.textContent = [row.mic ? 'mic on' : 'muted', row.camera ? 'camera on' : 'camera off', row.screen ? 'sharing' : null]
      .filter(Boolean).join(' · ');
    item.append(name, state);
    return item;
  }));
}

// ---------------------------------------------------------------------------------------------
// Connection quality (getStats every few seconds)

function startQualityPolling() {
  stopQualityPolling();
  session.qualityTimer = setInterval(measureQuality, QUALITY_INTERVAL_MS);
}

function stopQualityPolling() {
  clearInterval(session.qualityTimer);
  session.qualityTimer = null;
  session.quality = null;
  ui.quality.hidden = true;
}

/** Good, fair or poor from round-trip time, inbound loss and what limits our video. */
async function measureQuality() {
  const pc = session.pc;
  if (!pc || pc.connectionState !== 'connected') return;
  let report;
  try {
    report = await pc.getStats();
  } catch {
    return;
  }
  let rtt = null;
  let received = 0;
  let lost = 0;
  let limitation = 'none';
  report.forEach((stat) => {
    if (stat.type === 'candidate-pair' && stat.nominated && stat.state === 'succeeded' && stat.currentRoundTripTime != null) {
      rtt = stat.currentRoundTripTime;
    }
    if (stat.type === 'inbound-rtp') {
      received += stat.packetsReceived ?? 0;
      lost += Math.max(0, stat.packetsLost ?? 0);
    }
    if (stat.type === 'outbound-rtp' && stat.kind === 'video' && stat.qualityLimitationReason && stat.qualityLimitationReason !== 'none') {
      limitation = stat.qualityLimitationReason;
    }
  });
  // Loss over the last interval (the first sample only sets the baseline).
  const previous = session.quality;
  const deltaReceived = previous ? received - previous.received : 0;
  const deltaLost = previous ? lost - previous.lost : 0;
  const loss = deltaReceived + deltaLost > 0 ? Math.max(0, deltaLost) / (deltaReceived + deltaLost) : 0;
  let level = 'good';
  if ((rtt ?? 0) > 0.3 || loss > 0.05) level = 'poor';
  else if ((rtt ?? 0) > 0.15 || loss > 0.01 || limitation === 'bandwidth') level = 'fair';
  session.quality = { level, rtt, loss, limitation, received, lost };
  ui.quality.hidden = false;
  ui.quality.dataset.level = level;
  const label = `Connection ${level}: round trip ${rtt == null ? '?' : Math.round(Number(rtt) * 1000)} ms, ` +
    `loss ${(loss * 100).toFixed(1)} %${limitation !== 'none' ? `, video limited by ${limitation}` : ''}`;
  ui.quality.setAttribute('aria-label', label);
  ui.quality.title = label;
}

async function copyInviteLink() {
  const link = new URL(`${homeUrl()}?${new URLSearchParams({ room: session.room })}`, location.href).href;
  try {
    await navigator.clipboard.writeText(link);
    showNotice('Invite link copied.', 'info');
  } catch {
    showNotice(`Invite link: ${link}`, 'info', { timeout: 20000 });
  }
}

/**
 * Shows a dismissable message. `kind` is 'info' (fades after a few seconds), 'warn' or 'error'
 * (stay until dismissed).
 */
/**
 * @param {string} text
 * @param {'info' | 'warn' | 'error'} [kind]
 * @param {{ action?: string, onAction?: () => void, timeout?: number }} [options]
 */
function showNotice(text, kind = 'info', { action, onAction, timeout } = {}) {
  const notice = document.createElement('div');
  notice.className = `notice notice-${kind}`;
  notice.setAttribute('role', kind === 'error' ? 'alert' : 'status');
  const message = document.createElement('p');
  message.textContent = text;
  notice.append(message);
  const close = () => notice.remove();
  if (action) {
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'btn btn-primary';
    button.textContent = action;
    button.addEventListener('click', () => {
      onAction?.();
      close();
    });
    notice.append(button);
  }
  const dismiss = document.createElement('button');
  dismiss.type = 'button';
  dismiss.className = 'notice-dismiss';
  dismiss.setAttribute('aria-label', 'Dismiss');
  dismiss.textContent = '×';
  dismiss.addEventListener('click', close);
  notice.append(dismiss);
  ui.notices.append(notice);
  const lifetime = timeout ?? (kind === 'info' ? 6000 : 0);
  if (lifetime) setTimeout(close, lifetime);
  while (ui.notices.children.length > 4) ui.notices.firstElementChild.remove();
  return notice;
}

main();
