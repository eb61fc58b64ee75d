// roomcast browser client.
//
// Joins a room over the `/ws` signaling socket (protocol: signaling/src/protocol.rs), publishes
// camera and microphone on one RTCPeerConnection and shows every other participant. Both
// directions share that peer connection:
//
// - The client offers its own tracks (sendonly transceivers); the server answers.
// - The server offers the tracks it forwards (one m-line per track); the client answers. The
//   server's `offer` message maps every m-line mid to the participant and track it carries.
// - When both offer at once the client is the polite peer: it rolls its own offer back, answers
//   the server, and offers again from `negotiationneeded` once it is back in `stable`.
//
// Every signaling message (and every negotiation step) runs through one promise chain, so they
// are processed strictly in order.
//
// `window.roomcast` is a read-only debugging/test hook: { pc, ws, participantId, participants,
// state, room, name, mids, localStream, timings }. `state` is 'idle' (the join form),
// 'joining', 'connected' (media connection up), 'disconnected' or 'left'.

// The server's rules (signaling/src/session.rs): room 1-64 of A-Z a-z 0-9 . - _, name 1-64
// printable characters.
const ROOM_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;
const NAME_MAX_LENGTH = 64;
const STORAGE_KEY = 'roomcast.lastJoin';

/** How a `participant_left` reason reads in a notice (unknown reasons are shown as sent). */
const LEAVE_REASONS = {
  left: 'left',
  disconnected: 'connection closed',
  media_timeout: 'media connection lost',
  slow_client: 'connection too slow',
  server_shutdown: 'server shutting down',
};

const $ = (id) => document.getElementById(id);
const ui = {
  roomInfo: $('room-info'),
  roomName: $('room-name'),
  participantCount: $('participant-count'),
  devBadge: $('dev-badge'),
  status: $('status'),
  statusText: $('status-text'),
  controls: $('controls'),
  micButton: $('mic-button'),
  cameraButton: $('camera-button'),
  copyLinkButton: $('copy-link-button'),
  leaveButton: $('leave-button'),
  joinView: $('join-view'),
  joinForm: $('join-form'),
  joinMessage: $('join-message'),
  roomInput: $('room-input'),
  nameInput: $('name-input'),
  callView: $('call-view'),
  banner: $('banner'),
  bannerText: $('banner-text'),
  rejoinButton: $('rejoin-button'),
  grid: $('grid'),
  notices: $('notices'),
  tileTemplate: $('tile-template'),
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
  /** id -> Participant (see createParticipant) */
  participants: new Map(),
  /** Participants that left: late media for them must not bring their tile back. */
  departed: new Set(),
  /** mid -> {mid, participant_id, track_id, kind}, from the server's latest offer. */
  mids: new Map(),
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
};

window.roomcast = Object.freeze({
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
  leave: () => leave(),
});

// ---------------------------------------------------------------------------------------------
// Start-up and routing

function main() {
  const params = new URLSearchParams(location.search);
  const room = (params.get('room') ?? '').trim();
  const name = (params.get('name') ?? '').trim();
  const token = params.get('token');

  ui.joinForm.addEventListener('submit', onJoinSubmit);
  ui.leaveButton.addEventListener('click', () => leave());
  ui.rejoinButton.addEventListener('click', () => location.reload());
  ui.micButton.addEventListener('click', () => toggleLocal('audio'));
  ui.cameraButton.addEventListener('click', () => toggleLocal('video'));
  ui.copyLinkButton.addEventListener('click', copyInviteLink);
  new ResizeObserver(layoutGrid).observe(ui.grid);
  window.addEventListener('pagehide', () => {
    // Tell the room right away instead of letting the server notice the closed socket.
    if (isActive()) send({ type: 'leave' });
  });
  window.addEventListener('popstate', () => {
    const hasRoom = new URLSearchParams(location.search).has('room');
    if (isActive() && !hasRoom) leave({ navigate: false });
    else if (!isActive() && hasRoom) location.reload();
  });

  const problem = validateRoom(room) ?? validateName(name);
  if (room && name && !problem) {
    join(room, name, token);
  } else {
    showJoinView({ room, name, message: room && name ? problem : null });
  }
}

function onJoinSubmit(event) {
  event.preventDefault();
  const room = ui.roomInput.value.trim();
  const name = ui.nameInput.value.trim();
  ui.roomInput.setCustomValidity(validateRoom(room) ?? '');
  ui.nameInput.setCustomValidity(validateName(name) ?? '');
  if (!ui.joinForm.reportValidity()) return;
  const params = new URLSearchParams({ room, name });
  location.assign(`${homeUrl()}?${params}`);
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

function showJoinView({ room = '', name = '', message = null } = {}) {
  const last = loadLastJoin();
  ui.roomInput.value = room || last.room || randomRoomName();
  ui.nameInput.value = name || last.name || '';
  for (const input of [ui.roomInput, ui.nameInput]) {
    input.addEventListener('input', () => input.setCustomValidity(''));
  }
  ui.joinMessage.textContent = message ?? '';
  ui.joinMessage.hidden = !message;
  ui.callView.hidden = true;
  ui.roomInfo.hidden = true;
  ui.controls.hidden = true;
  ui.joinView.hidden = false;
  document.title = 'roomcast';
  renderStatus();
  (ui.nameInput.value ? ui.roomInput : ui.nameInput).focus();
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
// Session

function isActive() {
  return session.state === 'joining' || session.state === 'connected';
}

function setState(state, reason = null) {
  session.state = state;
  session.stateReason = reason;
  session.timings[`state_${state}`] ??= performance.now();
  document.body.dataset.state = state;
  renderStatus();
  window.dispatchEvent(new CustomEvent('roomcast:statechange', { detail: { state, reason } }));
}

function join(room, name, token) {
  session.room = room;
  session.name = name;
  session.token = token;
  saveLastJoin(room, name);
  setState('joining');

  ui.joinView.hidden = true;
  ui.callView.hidden = false;
  ui.roomInfo.hidden = false;
  ui.controls.hidden = false;
  ui.roomName.textContent = room;
  document.title = `${room} · roomcast`;
  session.selfTile = createTile({ self: true, name });
  updateSelfTile();
  renderHeader();
  renderControls();

  // Ask for the camera while the socket connects; `joined` waits for the answer.
  session.mediaPromise = acquireLocalMedia();
  session.mediaPromise.then(({ stream }) => {
    session.mediaSettled = true;
    if (!isActive()) {
      stream?.getTracks().forEach((track) => track.stop());
      return;
    }
    session.localStream = stream; // the self view shows while the join is still under way
    updateSelfTile();
    renderControls();
  });

  const url = new URL('ws', location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const ws = new WebSocket(url);
  session.ws = ws;
  ws.addEventListener('open', () => {
    session.timings.ws_open = performance.now();
    send({ type: 'join', room, name, ...(token ? { token } : {}) });
    renderStatus();
  });
  ws.addEventListener('message', (event) => {
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      console.warn('roomcast: ignoring a frame that is not JSON', event.data);
      return;
    }
    session.timings[`received_${message.type}`] ??= performance.now();
    console.debug(`roomcast: <- ${summarize(message)}`);
    enqueue(() => handleMessage(message));
  });
  let opened = false;
  ws.addEventListener('open', () => { opened = true; });
  ws.addEventListener('close', (event) => {
    if (session.ws !== ws || !isActive()) return;
    if (!opened) {
      disconnect('Could not reach the server.');
      return;
    }
    const reason = event.reason || describeCloseCode(event.code);
    disconnect(`Connection to the server closed (${reason}).`);
  });
}

async function acquireLocalMedia() {
  const attempts = [
    { audio: true, video: true },
    { audio: true, video: false },
    { audio: false, video: true },
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
  session.timings.joined = performance.now();
  session.participantId = message.participant_id;
  session.devMode = Boolean(message.dev_mode);
  session.selfTile.root.dataset.participantId = String(message.participant_id);
  for (const info of message.participants ?? []) onParticipantJoined(info);
  renderHeader();

  const { stream, error, missing } = await session.mediaPromise;
  if (!isActive()) return;
  if (error) {
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

  const tracks = stream ? stream.getTracks() : [];
  for (const track of tracks) {
    pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
  }
  // Without local media the offer still needs something to negotiate ICE and DTLS with.
  if (tracks.length === 0) pc.createDataChannel('roomcast');

  renderStatus();
  await negotiate();
}

/** Offers our local changes. Runs on the chain; only when nothing else is being negotiated. */
async function negotiate() {
  const pc = session.pc;
  if (!pc || !isActive() || pc.signalingState !== 'stable') return;
  const offer = await pc.createOffer();
  if (session.pc !== pc || pc.signalingState !== 'stable') return;
  await pc.setLocalDescription(offer);
  session.timings.offer_sent ??= performance.now();
  send({ type: 'offer', sdp: pc.localDescription.sdp });
}

async function onAnswer({ sdp }) {
  const pc = session.pc;
  if (!pc) return;
  if (pc.signalingState !== 'have-local-offer') {
    // Our offer was rolled back in favour of the server's; the offer will be repeated.
    console.warn(`roomcast: ignoring an answer in signaling state ${pc.signalingState}`);
    return;
  }
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
  // The map must be in place before the offer is applied: `track` events and reconcileMedia()
  // read it.
  session.mids = new Map((tracks ?? []).map((track) => [String(track.mid), track]));
  for (const track of tracks ?? []) {
    const participant = session.participants.get(track.participant_id);
    if (participant && !participant.tracks.has(track.track_id)) {
      participant.tracks.set(track.track_id, track.kind);
    }
  }

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
  if (!pc || !isActive()) return;
  const state = pc.connectionState;
  session.timings[`pc_${state}`] ??= performance.now();
  if (state === 'connected' && session.state === 'joining') setState('connected');
  if (state === 'failed') {
    disconnect('The media connection failed (no network path to the server).');
    return;
  }
  renderStatus();
}

function failJoin(message) {
  setState('disconnected', message);
  teardown();
  session.ws?.close(1000, 'join refused');
  showJoinView({ room: session.room, name: session.name, message });
}

function disconnect(reason) {
  if (!isActive()) return;
  setState('disconnected', reason);
  teardown();
  session.ws?.close(1000, 'disconnected');
  ui.bannerText.textContent = `Disconnected. ${reason}`;
  ui.banner.hidden = false;
  ui.controls.hidden = true;
  ui.rejoinButton.focus();
}

function leave({ navigate = true } = {}) {
  if (!isActive()) return;
  const { room, name, ws } = session;
  send({ type: 'leave' });
  setState('left');
  teardown();
  // The server answers `left` and closes the socket; do it ourselves if it does not.
  setTimeout(() => {
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000, 'left');
  }, 1000);
  if (navigate) history.pushState(null, '', homeUrl());
  showJoinView({ room, name, message: null });
  ui.notices.replaceChildren();
  showNotice(`You left ${room}.`, 'info');
}

/** Releases the camera, the peer connection and every remote tile. */
function teardown() {
  session.pc?.close();
  session.localStream?.getTracks().forEach((track) => track.stop());
  for (const participant of session.participants.values()) participant.tile.root.remove();
  session.participants.clear();
  session.mids = new Map();
  session.pendingCandidates = [];
  if (session.selfTile) {
    session.selfTile.video.srcObject = null;
    session.selfTile.root.remove();
  }
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

function createParticipant(id, name) {
  const participant = {
    id,
    name,
    /** track id -> kind, as announced by the server */
    tracks: new Map(),
    /** mid -> {mid, trackId, kind, track}: the receivers currently showing this participant */
    media: new Map(),
    tile: createTile({ self: false, name }),
  };
  participant.tile.root.dataset.participantId = String(id);
  session.participants.set(id, participant);
  renderHeader();
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
  for (const track of info.tracks ?? []) participant.tracks.set(track.id, track.kind);
  updateTile(participant);
}

function onParticipantLeft(id, reason) {
  const participant = session.participants.get(id);
  session.departed.add(id);
  if (!participant) return;
  session.participants.delete(id);
  for (const entry of participant.media.values()) stopWatching(entry);
  participant.tile.video.srcObject = null;
  participant.tile.root.remove();
  renderHeader();
  layoutGrid();
  const why = LEAVE_REASONS[reason] ?? reason;
  showNotice(`${participant.name} ${why === 'left' ? 'left the room' : `left the room (${why})`}.`, 'info');
}

function onTrackPublished(participantId, track) {
  const participant = session.participants.get(participantId);
  if (!participant || !track) return;
  participant.tracks.set(track.id, track.kind);
  updateTile(participant);
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
  const entry = { mid: info.mid, trackId: info.track_id, kind: info.kind, track, unwatch: null };
  const refresh = () => updateTile(participant);
  for (const type of ['mute', 'unmute', 'ended']) track.addEventListener(type, refresh);
  entry.unwatch = () => {
    for (const type of ['mute', 'unmute', 'ended']) track.removeEventListener(type, refresh);
  };
  participant.media.set(info.mid, entry);
  participant.tracks.set(info.track_id, info.kind);
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

function createTile({ self, name }) {
  const root = ui.tileTemplate.content.firstElementChild.cloneNode(true);
  const tile = {
    root,
    video: root.querySelector('.tile-video'),
    avatar: root.querySelector('.avatar'),
    status: root.querySelector('.tile-status'),
    name: root.querySelector('.tile-name'),
    audio: root.querySelector('.tile-audio'),
  };
  root.dataset.role = self ? 'self' : 'remote';
  root.classList.toggle('tile-self', self);
  root.setAttribute('aria-label', self ? `${name} (you)` : name);
  tile.name.textContent = self ? `${name} (you)` : name;
  tile.avatar.textContent = initials(name);
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
  else ui.grid.append(root);
  layoutGrid();
  return tile;
}

function updateTile(participant) {
  const { tile } = participant;
  const entries = [...participant.media.values()];
  const videoEntry = entries.find((entry) => entry.kind === 'video' && entry.track.readyState === 'live');
  const videoTrack = videoEntry?.track ?? null;
  if ((tile.video.srcObject?.getVideoTracks()[0] ?? null) !== videoTrack) {
    tile.video.srcObject = videoTrack ? new MediaStream([videoTrack]) : null;
    if (videoTrack) tile.video.play().catch(() => { /* muted video; retried on the next event */ });
  }
  const showing = Boolean(videoTrack && !videoTrack.muted && tile.video.videoWidth > 0);
  tile.root.classList.toggle('has-video', showing);
  const publishesVideo = [...participant.tracks.values()].includes('video');
  const knowsTracks = participant.tracks.size > 0;
  tile.status.textContent = showing ? '' :
    (videoTrack || publishesVideo || !knowsTracks) ? 'connecting…' : 'camera off';

  // One <audio> element per audio track: every one of them must be heard.
  const audioEntries = entries.filter((entry) => entry.kind === 'audio' && entry.track.readyState === 'live');
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
  if (showing) tile.status.textContent = '';
  else if (!session.mediaSettled) tile.status.textContent = 'starting camera…';
  else if (!videoTrack) tile.status.textContent = 'no camera';
  else if (!videoTrack.enabled) tile.status.textContent = 'camera off';
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
  if (state === 'idle') {
    ui.status.hidden = true;
    return;
  }
  if (state === 'joining') {
    tone = 'pending';
    if (!session.ws || session.ws.readyState !== WebSocket.OPEN) text = 'Connecting…';
    else if (session.participantId == null) text = 'Joining…';
    else text = 'Connecting media…';
  } else if (state === 'connected') {
    const pcState = session.pc?.connectionState;
    if (pcState === 'disconnected') {
      tone = 'pending';
      text = 'Reconnecting…';
    } else {
      tone = 'ok';
      text = 'Connected';
    }
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
  ui.micButton.disabled = !audio || !isActive();
  ui.cameraButton.disabled = !video || !isActive();
  const micOff = !audio || !audio.enabled;
  const cameraOff = !video || !video.enabled;
  ui.micButton.textContent = micOff ? 'Unmute' : 'Mute';
  ui.micButton.setAttribute('aria-pressed', String(Boolean(audio && !audio.enabled)));
  ui.micButton.classList.toggle('btn-off', Boolean(audio && !audio.enabled));
  ui.cameraButton.textContent = cameraOff ? 'Start video' : 'Stop video';
  ui.cameraButton.setAttribute('aria-pressed', String(Boolean(video && !video.enabled)));
  ui.cameraButton.classList.toggle('btn-off', Boolean(video && !video.enabled));
}

/** Mute/unmute without renegotiating: a disabled track sends silence or black frames. */
function toggleLocal(kind) {
  const track = kind === 'audio'
    ? session.localStream?.getAudioTracks()[0]
    : session.localStream?.getVideoTracks()[0];
  if (!track) return;
  track.enabled = !track.enabled;
  renderControls();
  updateSelfTile();
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
