//! A roomcast participant without a browser: str0m for ICE, DTLS and SRTP, the signaling
//! protocol over a real WebSocket, and synthetic media with a known structure.
//!
//! Used by the integration tests (many participants in one process, checked
//! deterministically) and as the building block of the load tool.
//!
//! Synthetic media:
//! - video: VP8 frames at a configurable rate and bitrate. Each frame starts with a valid
//!   VP8 frame tag (keyframes also carry the start code and a 640×480 size), so the SFU's
//!   keyframe detection sees real structure; then the marker `RCST` and the send time (µs
//!   since the Unix epoch, little endian) so receivers measure end-to-end delay.
//! - audio: 20 ms Opus-shaped packets (a TOC byte, then padding), 48 kHz timestamps.
//!
//! A publisher answers keyframe requests (PLI/FIR) with a keyframe on its next frame.

#![forbid(unsafe_code)]

pub mod load;
pub mod whep;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use roomcast_sfu::{MediaKind, ParticipantId};
use roomcast_signaling::protocol::{ClientMessage, ServerMessage};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Mid, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

/// Marker after the VP8 header of every synthetic video frame.
pub const FRAME_MARKER: &[u8; 4] = b"RCST";

#[derive(Debug, Clone)]
pub struct ParticipantOptions {
    /// `http://host:port` of the roomcast server.
    pub server: String,
    pub room: String,
    pub name: String,
    /// `None` joins as a pure subscriber.
    pub publish: Option<PublishOptions>,
    /// Local address for the media socket.
    pub bind_ip: IpAddr,
    /// Access token for servers outside dev mode.
    pub token: Option<String>,
    /// Report every video track it receives as shown in a tile this wide (device pixels),
    /// as the web client does (`track_settings`): the server then sends no wider layer.
    /// `None`: says nothing (any layer, as bandwidth allows).
    pub tile_width: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct PublishOptions {
    pub video_bitrate_bps: u32,
    pub fps: u32,
    /// Send a keyframe this often even without requests. `None`: only on request (and first).
    pub keyframe_interval: Option<Duration>,
    /// Publish the video as three simulcast layers ([`SIMULCAST_LAYERS`]) instead of one.
    pub simulcast: bool,
}

/// The simulcast layers a publisher sends, lowest first, as the web client does for a 720p
/// camera: rid, picture size, and share of `video_bitrate_bps` (the top layer's rate).
pub const SIMULCAST_LAYERS: [(&str, u16, u16, f64); 3] = [
    ("q", 320, 180, 0.1),
    ("h", 640, 360, 1.0 / 3.0),
    ("f", 1280, 720, 1.0),
];

/// The picture size of a single-layer publisher's synthetic frames.
pub const SINGLE_LAYER_SIZE: (u16, u16) = (1280, 720);

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            video_bitrate_bps: 1_000_000,
            fps: 30,
            keyframe_interval: Some(Duration::from_secs(2)),
            simulcast: false,
        }
    }
}

#[derive(Debug)]
pub enum ClientError {
    Connect(String),
    Protocol(String),
    Refused { code: String, message: String },
    Media(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Connect(why) => write!(f, "cannot reach the server: {why}"),
            ClientError::Protocol(why) => write!(f, "signaling failed: {why}"),
            ClientError::Refused { code, message } => {
                write!(f, "server refused ({code}): {message}")
            }
            ClientError::Media(why) => write!(f, "media failed: {why}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// What one participant has seen so far, shared with its background task.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub joined_at: Option<Instant>,
    /// When ICE + DTLS completed.
    pub connected_at: Option<Instant>,
    pub video_frames_sent: u64,
    /// Send time of every video frame sent, µs since the Unix epoch.
    pub video_frames_sent_us: Vec<u64>,
    pub keyframes_sent: u64,
    pub keyframe_requests_received: u64,
    /// Per remote participant.
    pub remote: HashMap<ParticipantId, RemoteStats>,
    /// Participants this one was told about and that are still in the room.
    pub present: HashMap<ParticipantId, String>,
    /// Remote participants whose `participant_left` arrived, with when.
    pub left: HashMap<ParticipantId, Instant>,
    /// Mids the server currently sends on (offered and not stopped).
    pub active_mids: usize,
    /// Set when the task ended: why.
    pub ended: Option<String>,
}

#[derive(Debug, Default, Clone)]
pub struct RemoteStats {
    pub video_frames: u64,
    /// Pixels of every video frame received (its layer's size, from the last keyframe): what
    /// a decoder would have to decode.
    pub video_pixels: u64,
    /// Picture size from the last keyframe received.
    pub picture: (u16, u16),
    pub video_keyframes: u64,
    pub audio_frames: u64,
    pub video_bytes: u64,
    pub first_video_at: Option<Instant>,
    /// Every video frame received: its send time and end-to-end delay.
    pub frames: Vec<ReceivedFrame>,
}

#[derive(Debug, Clone, Copy)]
pub struct ReceivedFrame {
    /// Send time, µs since the Unix epoch (carried in the frame).
    pub sent_us: u64,
    /// Send time → reassembled here, µs.
    pub delay_us: u64,
}

/// A running participant. Dropping it leaves the room.
pub struct Participant {
    id: ParticipantId,
    stats: Arc<Mutex<Stats>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Participant {
    /// Connect, join, and start publishing/subscribing in a background task. Returns once
    /// `joined` has arrived.
    pub async fn join(options: ParticipantOptions) -> Result<Participant, ClientError> {
        let url = ws_url(&options.server)?;
        let (mut ws, _) = tokio_tungstenite::connect_async(&url)
            .await
            .map_err(|e| ClientError::Connect(format!("{url}: {e}")))?;
        send(
            &mut ws,
            &ClientMessage::Join {
                room: options.room.clone(),
                name: options.name.clone(),
                token: options.token.clone(),
            },
        )
        .await?;
        let (id, participants) = match next_message(&mut ws).await? {
            ServerMessage::Joined {
                participant_id,
                participants,
                ..
            } => (participant_id, participants),
            ServerMessage::Error(error) => {
                return Err(ClientError::Refused {
                    code: serde_json::to_value(error.code)
                        .map(|v| v.to_string())
                        .unwrap_or_default(),
                    message: error.message,
                });
            }
            other => {
                return Err(ClientError::Protocol(format!(
                    "expected joined, got {other:?}"
                )));
            }
        };
        let socket = UdpSocket::bind(SocketAddr::new(options.bind_ip, 0))
            .await
            .map_err(|e| ClientError::Media(format!("binding a UDP socket: {e}")))?;
        let mut stats = Stats {
            joined_at: Some(Instant::now()),
            ..Default::default()
        };
        for participant in participants {
            stats.present.insert(participant.id, participant.name);
        }
        let stats = Arc::new(Mutex::new(stats));
        let (stop, stop_rx) = watch::channel(false);
        let session = Session::new(options, socket, stats.clone())?;
        let task = tokio::spawn(async move {
            let result = session.run(ws, stop_rx).await;
            let _ = result;
        });
        Ok(Participant {
            id,
            stats,
            stop,
            task,
        })
    }

    pub fn id(&self) -> ParticipantId {
        self.id
    }

    /// A snapshot of what this participant has seen.
    pub fn stats(&self) -> Stats {
        self.with_stats(Stats::clone)
    }

    /// Look at the stats without copying them (the delay samples can be large).
    pub fn with_stats<R>(&self, read: impl FnOnce(&Stats) -> R) -> R {
        read(
            &self
                .stats
                .lock()
                .expect("stats lock is never poisoned: no panics while held"),
        )
    }

    /// Send `leave` and wait for the task to end.
    pub async fn leave(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Vanish without a word (like a killed tab): the WebSocket and media just stop.
    pub fn abort(self) {
        self.task.abort();
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn ws_url(server: &str) -> Result<String, ClientError> {
    let rest = server
        .strip_prefix("http://")
        .map(|r| format!("ws://{r}"))
        .or_else(|| {
            server
                .strip_prefix("https://")
                .map(|r| format!("wss://{r}"))
        })
        .ok_or_else(|| {
            ClientError::Connect(format!(
                "server URL must start with http:// or https://: {server}"
            ))
        })?;
    Ok(format!("{}/ws", rest.trim_end_matches('/')))
}

async fn send(ws: &mut Ws, message: &ClientMessage) -> Result<(), ClientError> {
    let json = serde_json::to_string(message).expect("client messages always serialize");
    ws.send(Message::text(json))
        .await
        .map_err(|e| ClientError::Protocol(format!("WebSocket send: {e}")))
}

async fn next_message(ws: &mut Ws) -> Result<ServerMessage, ClientError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(text.as_str()).map_err(|e| {
                    ClientError::Protocol(format!("unparseable server message {text}: {e}"))
                });
            }
            Some(Ok(Message::Close(frame))) => {
                return Err(ClientError::Protocol(format!(
                    "server closed the WebSocket: {frame:?}"
                )));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(ClientError::Protocol(format!("WebSocket: {e}"))),
            None => return Err(ClientError::Protocol("WebSocket ended".into())),
        }
    }
}

struct Session {
    options: ParticipantOptions,
    socket: UdpSocket,
    local_addr: SocketAddr,
    rtc: Rtc,
    pending: Option<SdpPendingOffer>,
    video_mid: Option<Mid>,
    audio_mid: Option<Mid>,
    /// Server m-lines: mid → (publisher, kind).
    tracks: HashMap<Mid, (ParticipantId, MediaKind)>,
    stats: Arc<Mutex<Stats>>,
    connected: bool,
    /// Per layer (index 0 alone without simulcast).
    keyframe_wanted: [bool; 3],
    /// Per layer: the server's dynacast (`set_layers`) may turn layers off.
    layer_active: [bool; 3],
    last_keyframe: Option<Instant>,
    /// Video tracks already reported with `track_settings`.
    reported_tracks: Vec<roomcast_sfu::TrackId>,
    video_time: u64,
    audio_time: u64,
}

/// A client `Rtc` (no stats) with one host candidate: the address `socket` is bound to.
pub(crate) fn client_rtc(socket: &UdpSocket) -> Result<(Rtc, SocketAddr), ClientError> {
    let local_addr = socket
        .local_addr()
        .map_err(|e| ClientError::Media(e.to_string()))?;
    let mut rtc = Rtc::builder()
        .set_stats_interval(None)
        .build(Instant::now());
    let candidate =
        Candidate::host(local_addr, "udp").map_err(|e| ClientError::Media(e.to_string()))?;
    rtc.add_local_candidate(candidate);
    Ok((rtc, local_addr))
}

impl Session {
    fn new(
        options: ParticipantOptions,
        socket: UdpSocket,
        stats: Arc<Mutex<Stats>>,
    ) -> Result<Self, ClientError> {
        let (rtc, local_addr) = client_rtc(&socket)?;
        Ok(Session {
            options,
            socket,
            local_addr,
            rtc,
            pending: None,
            video_mid: None,
            audio_mid: None,
            tracks: HashMap::new(),
            stats,
            connected: false,
            keyframe_wanted: [true; 3],
            layer_active: [true; 3],
            last_keyframe: None,
            reported_tracks: Vec::new(),
            video_time: 0,
            audio_time: 0,
        })
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats
            .lock()
            .expect("stats lock is never poisoned: no panics while held")
    }

    async fn run(mut self, mut ws: Ws, mut stop: watch::Receiver<bool>) -> Result<(), ClientError> {
        let result = self.run_inner(&mut ws, &mut stop).await;
        let why = match &result {
            Ok(()) => "left".to_string(),
            Err(e) => e.to_string(),
        };
        self.stats().ended = Some(why);
        result
    }

    async fn run_inner(
        &mut self,
        ws: &mut Ws,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), ClientError> {
        // The first offer: our tracks, or for a pure subscriber one receive-only m-line.
        let mut change = self.rtc.sdp_api();
        if let Some(publish) = &self.options.publish {
            let stream = Some(self.options.name.clone());
            let simulcast = publish.simulcast.then(|| {
                let mut simulcast = Simulcast::new();
                for (rid, ..) in SIMULCAST_LAYERS {
                    simulcast.add_send_layer(SimulcastLayer::new(rid));
                }
                simulcast
            });
            self.video_mid = Some(change.add_media(
                str0m::media::MediaKind::Video,
                Direction::SendOnly,
                stream.clone(),
                None,
                simulcast,
            ));
            self.audio_mid = Some(change.add_media(
                str0m::media::MediaKind::Audio,
                Direction::SendOnly,
                stream,
                None,
                None,
            ));
        } else {
            // A viewer offers one receive-only m-line (as a WHEP player would) so the offer
            // is not empty; the server adds its own m-lines for what it forwards.
            change.add_media(
                str0m::media::MediaKind::Video,
                Direction::RecvOnly,
                None,
                None,
                None,
            );
        }
        let (offer, pending) = change
            .apply()
            .ok_or_else(|| ClientError::Media("nothing to offer".into()))?;
        self.pending = Some(pending);
        send(
            ws,
            &ClientMessage::Offer {
                sdp: offer.to_sdp_string(),
                sources: Default::default(),
                receive: Default::default(),
            },
        )
        .await?;
        let candidate = Candidate::host(self.local_addr, "udp")
            .map_err(|e| ClientError::Media(e.to_string()))?;
        send(
            ws,
            &ClientMessage::Candidate {
                candidate: candidate.to_sdp_string(),
                sdp_mid: None,
            },
        )
        .await?;

        let publish = self.options.publish.clone();
        let frame_interval = publish.as_ref().map_or(Duration::from_secs(3600), |p| {
            Duration::from_secs(1) / p.fps.max(1)
        });
        let mut video_tick = tokio::time::interval(frame_interval);
        let mut audio_tick = tokio::time::interval(Duration::from_millis(20));
        video_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        audio_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut buffer = vec![0u8; 2048];
        let mut timeout = self.drain(ws).await?;
        loop {
            tokio::select! {
                _ = stop.changed() => {
                    let _ = send(ws, &ClientMessage::Leave {}).await;
                    let _ = ws.close(None).await;
                    return Ok(());
                }
                message = next_message(ws) => {
                    self.handle_server_message(ws, message?).await?;
                }
                received = self.socket.recv_from(&mut buffer) => {
                    let (len, source) = received.map_err(|e| ClientError::Media(e.to_string()))?;
                    if let Ok(contents) = buffer[..len].try_into() {
                        let input = Input::Receive(Instant::now(), Receive {
                            proto: Protocol::Udp,
                            source,
                            destination: self.local_addr,
                            contents,
                        });
                        self.rtc.handle_input(input).map_err(|e| ClientError::Media(e.to_string()))?;
                    }
                }
                _ = tokio::time::sleep_until(timeout.into()) => {
                    self.rtc.handle_input(Input::Timeout(Instant::now())).map_err(|e| ClientError::Media(e.to_string()))?;
                }
                _ = video_tick.tick(), if publish.is_some() && self.connected => {
                    self.write_video_frame(publish.as_ref().expect("guarded by publish.is_some()"))?;
                }
                _ = audio_tick.tick(), if publish.is_some() && self.connected => {
                    self.write_audio_frame()?;
                }
            }
            timeout = self.drain(ws).await?;
        }
    }

    async fn handle_server_message(
        &mut self,
        ws: &mut Ws,
        message: ServerMessage,
    ) -> Result<(), ClientError> {
        match message {
            ServerMessage::Answer { sdp, .. } => {
                let answer = SdpAnswer::from_sdp_string(&sdp)
                    .map_err(|e| ClientError::Protocol(e.to_string()))?;
                let pending = self
                    .pending
                    .take()
                    .ok_or_else(|| ClientError::Protocol("answer without an offer".into()))?;
                self.rtc
                    .sdp_api()
                    .accept_answer(pending, answer)
                    .map_err(|e| ClientError::Protocol(e.to_string()))?;
            }
            ServerMessage::Offer { sdp, tracks } => {
                self.tracks = tracks
                    .iter()
                    .map(|t| (Mid::from(t.mid.as_str()), (t.participant_id, t.kind)))
                    .collect();
                if let Some(width) = self.options.tile_width {
                    for track in tracks.iter().filter(|t| t.kind == MediaKind::Video) {
                        if self.reported_tracks.contains(&track.track_id) {
                            continue;
                        }
                        self.reported_tracks.push(track.track_id);
                        send(
                            ws,
                            &ClientMessage::TrackSettings {
                                track_id: track.track_id,
                                visible: true,
                                width: Some(width),
                            },
                        )
                        .await?;
                    }
                }
                let offer = SdpOffer::from_sdp_string(&sdp)
                    .map_err(|e| ClientError::Protocol(e.to_string()))?;
                let answer = self
                    .rtc
                    .sdp_api()
                    .accept_offer(offer)
                    .map_err(|e| ClientError::Protocol(e.to_string()))?;
                self.stats().active_mids = tracks.len();
                send(
                    ws,
                    &ClientMessage::Answer {
                        sdp: answer.to_sdp_string(),
                    },
                )
                .await?;
            }
            ServerMessage::SetLayers { layers, .. } => {
                for layer in layers {
                    if let Some(index) = SIMULCAST_LAYERS
                        .iter()
                        .position(|(rid, ..)| *rid == layer.rid)
                    {
                        if layer.active && !self.layer_active[index] {
                            self.keyframe_wanted[index] = true; // an encoder restarts with one
                        }
                        self.layer_active[index] = layer.active;
                    }
                }
            }
            ServerMessage::ParticipantJoined { participant } => {
                self.stats()
                    .present
                    .insert(participant.id, participant.name);
            }
            ServerMessage::ParticipantLeft { participant_id, .. } => {
                let mut stats = self.stats();
                stats.present.remove(&participant_id);
                stats.left.insert(participant_id, Instant::now());
            }
            ServerMessage::Left { reason } => {
                return Err(ClientError::Protocol(format!(
                    "removed by the server: {reason:?}"
                )));
            }
            ServerMessage::Error(error) => {
                return Err(ClientError::Refused {
                    code: format!("{:?}", error.code),
                    message: error.message,
                });
            }
            _ => {}
        }
        Ok(())
    }

    /// Drain str0m until it asks for time; returns that deadline.
    async fn drain(&mut self, _ws: &mut Ws) -> Result<Instant, ClientError> {
        loop {
            match self
                .rtc
                .poll_output()
                .map_err(|e| ClientError::Media(e.to_string()))?
            {
                Output::Timeout(at) => return Ok(at),
                Output::Transmit(transmit) => {
                    // Loopback UDP never blocks for long; a dropped datagram is recovered by RTP.
                    let _ = self
                        .socket
                        .try_send_to(&transmit.contents, transmit.destination);
                }
                Output::Event(event) => self.handle_event(event)?,
            }
        }
    }

    fn handle_event(&mut self, event: Event) -> Result<(), ClientError> {
        match event {
            Event::Connected => {
                self.connected = true;
                self.stats().connected_at = Some(Instant::now());
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                return Err(ClientError::Media("ICE disconnected".into()));
            }
            Event::KeyframeRequest(request) => {
                let layer = request
                    .rid
                    .and_then(|rid| {
                        SIMULCAST_LAYERS
                            .iter()
                            .position(|(r, ..)| Rid::from(*r) == rid)
                    })
                    .unwrap_or(0);
                self.keyframe_wanted[layer] = true;
                self.stats().keyframe_requests_received += 1;
            }
            Event::MediaData(data) => {
                let Some(&(publisher, kind)) = self.tracks.get(&data.mid) else {
                    return Ok(());
                };
                let now = Instant::now();
                let mut stats = self.stats();
                let remote = stats.remote.entry(publisher).or_default();
                match kind {
                    MediaKind::Audio => remote.audio_frames += 1,
                    MediaKind::Video => {
                        remote.video_frames += 1;
                        remote.video_bytes += data.data.len() as u64;
                        remote.first_video_at.get_or_insert(now);
                        if data.data.first().is_some_and(|b| b & 0x01 == 0) {
                            remote.video_keyframes += 1;
                            if let Some(size) = data.data.get(6..10) {
                                remote.picture = (
                                    u16::from_le_bytes([size[0], size[1]]) & 0x3fff,
                                    u16::from_le_bytes([size[2], size[3]]) & 0x3fff,
                                );
                            }
                        }
                        remote.video_pixels +=
                            u64::from(remote.picture.0) * u64::from(remote.picture.1);
                        if let Some(sent_us) = frame_send_time(&data.data) {
                            let delay_us = unix_micros().saturating_sub(sent_us);
                            remote.frames.push(ReceivedFrame { sent_us, delay_us });
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn write_video_frame(&mut self, publish: &PublishOptions) -> Result<(), ClientError> {
        let Some(mid) = self.video_mid else {
            return Ok(());
        };
        let now = Instant::now();
        let periodic = publish
            .keyframe_interval
            .is_some_and(|interval| self.last_keyframe.is_none_or(|last| now - last >= interval));
        let sent_us = unix_micros();
        self.video_time += 90_000 / u64::from(publish.fps.max(1));
        let time =
            str0m::media::MediaTime::new(self.video_time, str0m::media::Frequency::NINETY_KHZ);
        let single = [("", SINGLE_LAYER_SIZE.0, SINGLE_LAYER_SIZE.1, 1.0)];
        let layers: &[(&str, u16, u16, f64)] = if publish.simulcast {
            &SIMULCAST_LAYERS
        } else {
            &single
        };
        let mut keyframes = 0;
        let mut sent_any = false;
        for (index, &(rid, width, height, share)) in layers.iter().enumerate() {
            if !self.layer_active[index] {
                continue;
            }
            let keyframe = self.keyframe_wanted[index] || periodic;
            let frame_bytes = (f64::from(publish.video_bitrate_bps) * share
                / 8.0
                / f64::from(publish.fps.max(1))) as usize;
            let frame =
                synthetic_vp8_frame(keyframe, frame_bytes.max(32), sent_us, (width, height));
            let Some(mut writer) = self.rtc.writer(mid) else {
                return Ok(());
            };
            let Some(pt) = writer
                .payload_params()
                .find(|p| p.spec().codec == Codec::Vp8)
                .map(|p| p.pt())
            else {
                return Err(ClientError::Media("server did not accept VP8".into()));
            };
            if publish.simulcast {
                writer = writer.rid(Rid::from(rid));
            }
            writer
                .write(pt, now, time, frame)
                .map_err(|e| ClientError::Media(e.to_string()))?;
            sent_any = true;
            if keyframe {
                self.keyframe_wanted[index] = false;
                keyframes += 1;
            }
        }
        if periodic {
            self.last_keyframe = Some(now);
        }
        if !sent_any {
            return Ok(()); // every layer paused: nobody watches
        }
        let mut stats = self.stats();
        stats.video_frames_sent += 1;
        stats.video_frames_sent_us.push(sent_us);
        stats.keyframes_sent += keyframes;
        Ok(())
    }

    fn write_audio_frame(&mut self) -> Result<(), ClientError> {
        let Some(mid) = self.audio_mid else {
            return Ok(());
        };
        let Some(writer) = self.rtc.writer(mid) else {
            return Ok(());
        };
        let Some(pt) = writer
            .payload_params()
            .find(|p| p.spec().codec == Codec::Opus)
            .map(|p| p.pt())
        else {
            return Err(ClientError::Media("server did not accept Opus".into()));
        };
        self.audio_time += 960;
        let time =
            str0m::media::MediaTime::new(self.audio_time, str0m::media::Frequency::FORTY_EIGHT_KHZ);
        let mut packet = vec![0u8; 80];
        packet[0] = 0xfc; // TOC: CELT fullband 20 ms, mono, one frame
        writer
            .write(pt, Instant::now(), time, packet)
            .map_err(|e| ClientError::Media(e.to_string()))
    }
}

/// A VP8 frame of `size` bytes whose header is valid (RFC 6386 §9.1; a keyframe says it is
/// `picture` wide and high) and whose body carries [`FRAME_MARKER`] and `sent_us`.
pub fn synthetic_vp8_frame(
    keyframe: bool,
    size: usize,
    sent_us: u64,
    picture: (u16, u16),
) -> Vec<u8> {
    let mut frame = Vec::with_capacity(size.max(24));
    let first_partition_size: u32 = 10;
    let tag: u32 = u32::from(!keyframe) | (1 << 4) | (first_partition_size << 5);
    frame.extend_from_slice(&tag.to_le_bytes()[..3]);
    if keyframe {
        frame.extend_from_slice(&[0x9d, 0x01, 0x2a]);
        frame.extend_from_slice(&picture.0.to_le_bytes());
        frame.extend_from_slice(&picture.1.to_le_bytes());
    }
    frame.extend_from_slice(FRAME_MARKER);
    frame.extend_from_slice(&sent_us.to_le_bytes());
    frame.resize(size.max(frame.len()), 0x55);
    frame
}

/// The send time carried by a [`synthetic_vp8_frame`].
pub fn frame_send_time(frame: &[u8]) -> Option<u64> {
    let at = frame.windows(4).take(16).position(|w| w == FRAME_MARKER)?;
    let bytes = frame.get(at + 4..at + 12)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

pub(crate) fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_frames_round_trip_their_send_time() {
        let key = synthetic_vp8_frame(true, 4000, 123_456_789, (640, 480));
        assert_eq!(key.len(), 4000);
        assert_eq!(key[0] & 0x01, 0, "keyframe P bit");
        assert_eq!(&key[3..6], &[0x9d, 0x01, 0x2a]);
        assert_eq!(frame_send_time(&key), Some(123_456_789));
        let delta = synthetic_vp8_frame(false, 100, 42, (640, 480));
        assert_eq!(delta[0] & 0x01, 1);
        assert_eq!(frame_send_time(&delta), Some(42));
        assert_eq!(frame_send_time(&[1, 2, 3]), None);
    }
}
