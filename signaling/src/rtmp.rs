//! RTMP ingest: what OBS (and every other encoder) speaks, bridged into the SFU.
//!
//! One task per TCP connection (not a packet path: an encoder sends ~100 messages a second).
//! The RTMP handshake and chunk stream are [`rml_rtmp`]'s; this module decides who may
//! publish, turns FLV tags into SFU frames and reports what is wrong with a stream:
//!
//! - `rtmp://HOST[:PORT]/<any app>/<stream key>`. In dev mode the key is the room name;
//!   otherwise it is an access token with the `ingest` (or `publish`) grant, and its room is
//!   the room. A refused key gets `NetStream.Publish.Unauthorized` with the reason, then the
//!   connection closes; a valid key for a live room replaces the live publisher
//!   ([`crate::broadcast`]).
//! - The publisher joins its room as a participant with [`Subscription::Nothing`] and two
//!   ingest tracks: H.264 video (passed through, [RFC 6184] packetization with SPS/PPS ahead of
//!   every IDR) and Opus audio (AAC-LC transcoded).
//! - Timestamps: FLV DTS + composition offset = PTS, ×90 for the video RTP clock; audio PTS
//!   ×48. Both tracks' capture times come from one anchor (the first tag's arrival minus its
//!   timestamp), so receivers line audio and video up from the sender reports.
//! - HLS ([`crate::hls`]) gets the original H.264 access units and AAC frames (no second
//!   transcode); AAC timestamps are counted in 1024-sample frames, since FLV's milliseconds
//!   are too coarse for gapless audio.
//! - B-frames (a non-zero composition offset) break WebRTC playback order: the stream keeps
//!   flowing unless `refuse_bframes` is set, and the warning appears in the log, `/metrics`
//!   and `/api/rooms/<room>`.
//! - Nothing an encoder sends can stall another stream: a handshake that does not complete in
//!   [`HANDSHAKE_TIMEOUT`] or a connection silent for [`IDLE_TIMEOUT`] is closed; malformed
//!   chunks end only their own connection.
//!
//! [RFC 6184]: https://www.rfc-editor.org/rfc/rfc6184

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use roomcast_media::aac::{AacToOpus, AudioSpecificConfig, OpusPacket};
use roomcast_media::depacketize::sps_dimensions;
use roomcast_media::flv::{self, AudioTag, VideoTag};
use roomcast_media::h264::{AvcConfig, H264Packetizer};
use roomcast_media::hls::{AudioTrack, Sample, TrackKind, Tracks, VideoTrack};
use roomcast_sfu::{
    Command, IngestFrame, LeaveReason, MediaKind, ParticipantId, SessionEvent, Subscription,
    TrackId, WorkerHandle,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::AppState;
use crate::broadcast::{IngestMetrics, IngestSource, authorize_stream_key};
use crate::session::request;

/// The RTMP handshake (C0–C2) must be done by then.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that sends nothing for this long is dropped (encoders send media constantly;
/// an idle connection that has not published yet also waits at most this long).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest RTP payload written: leaves room for the RTP header, header extensions and SRTP
/// within a 1200-byte datagram.
const MAX_RTP_PAYLOAD: usize = 1100;

/// The operator-facing fix for B-frames, in logs, metrics help and the broadcast status.
pub const BFRAME_WARNING: &str = "B-frames detected in the H.264 stream: browsers cannot decode \
     them over WebRTC, so viewers see a frozen or stuttering picture. Fix: in OBS, Settings → \
     Output (Advanced) → Streaming → x264 options `bframes=0` (or the \"baseline\" profile); \
     with ffmpeg add `-bf 0`.";

/// RTMP settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct RtmpConfig {
    /// End a broadcast whose H.264 carries B-frames instead of passing it on with a warning.
    pub refuse_bframes: bool,
}

/// Accept RTMP connections until the listener fails.
pub async fn serve(listener: TcpListener, state: Arc<AppState>) {
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: keep accepting once it passes.
                warn!(%error, "RTMP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        let span = info_span!("rtmp", %peer);
        tokio::spawn(connection(socket, peer, state).instrument(span));
    }
}

async fn connection(socket: TcpStream, peer: SocketAddr, state: Arc<AppState>) {
    let metrics = &state.broadcasts.metrics;
    IngestMetrics::add(&metrics.rtmp_connections, 1);
    let _ = socket.set_nodelay(true);
    debug!(%peer, "RTMP connection opened");
    let mut connection = Connection {
        state: state.clone(),
        publisher: None,
        refused: false,
    };
    match connection.run(socket).await {
        Ok(end) => info!("RTMP connection closed: {end}"),
        Err(error) => {
            IngestMetrics::add(&metrics.bad_input_total, 1);
            warn!("RTMP connection dropped: {error}");
        }
    }
    connection.end_publishing().await;
    IngestMetrics::sub(&metrics.rtmp_connections, 1);
}

struct Connection {
    state: Arc<AppState>,
    publisher: Option<Publisher>,
    /// A publish was refused: close once the refusal is written.
    refused: bool,
}

/// A connection that publishes: its participant and the media state of its stream.
struct Publisher {
    room: String,
    participant: ParticipantId,
    worker: WorkerHandle,
    video_track: TrackId,
    audio_track: TrackId,
    /// Changes with every publish, so subscribers' rewriters see a restarted source.
    source_id: u32,
    events: mpsc::Receiver<SessionEvent>,
    replaced: oneshot::Receiver<()>,
    /// (arrival of the first tag, its timestamp in ms): the capture clock of both tracks.
    clock_anchor: Option<(Instant, u32)>,
    avc: Option<AvcConfig>,
    packetizer: H264Packetizer,
    audio: AudioState,
    video_unsupported_reported: bool,
    bframes_seen: u64,
    waiting_for_keyframe: bool,
    opus_out: Vec<OpusPacket>,
    hls: HlsFeed,
}

/// What the RTMP edge hands the HLS packager: the stream's codec parameters and its original
/// access units and AAC frames.
#[derive(Default)]
struct HlsFeed {
    tracks: Tracks,
    /// The broadcast the tracks were last announced to (a new one needs them again).
    announced_to: Option<String>,
    /// AAC frames since `base_ms`: exact 1024-sample steps.
    aac_clock: Option<AacClock>,
}

struct AacClock {
    base_ms: u64,
    frames: u64,
    sample_rate: u64,
}

/// An FLV timestamp further than this from the counted AAC clock restarts the count (a gap in
/// the encoder's audio, or a timestamp jump).
const AAC_RESYNC_MS: u64 = 100;

impl AacClock {
    /// The decode time (in samples) of the AAC frame stamped `timestamp_ms`.
    fn next(&mut self, timestamp_ms: u64) -> u64 {
        let counted_ms = self.base_ms + self.frames * 1024 * 1000 / self.sample_rate;
        if counted_ms.abs_diff(timestamp_ms) > AAC_RESYNC_MS {
            self.base_ms = timestamp_ms;
            self.frames = 0;
        }
        let dts = self.base_ms * self.sample_rate / 1000 + self.frames * 1024;
        self.frames += 1;
        dts
    }
}

impl HlsFeed {
    /// Give the room's broadcast one sample, announcing the tracks first when it has not seen
    /// them.
    fn send(
        &mut self,
        state: &AppState,
        room: &str,
        participant: ParticipantId,
        sample: Sample,
        capture: Instant,
    ) {
        let Some(broadcast) = state.hls.live_id_on_stage(room, participant) else {
            return; // not (yet) on stage: another publisher is, or nobody
        };
        if self.announced_to.as_deref() != Some(broadcast.as_str()) {
            if !state
                .hls
                .ingest_tracks(room, participant, self.tracks.clone())
            {
                return; // it ended just now; the next sample finds its successor
            }
            self.announced_to = Some(broadcast);
        }
        let now = Instant::now();
        let wall_clock = SystemTime::now()
            .checked_sub(now.saturating_duration_since(capture))
            .unwrap_or_else(SystemTime::now);
        state
            .hls
            .ingest_sample(room, participant, sample, wall_clock);
    }

    /// New codec parameters: announce them again.
    fn tracks_changed(&mut self) {
        self.announced_to = None;
    }
}

enum AudioState {
    /// No AAC sequence header yet.
    Waiting,
    Transcoding(Box<AacToOpus>),
    /// Unsupported codec or configuration: reported once, audio dropped, video flows.
    Unsupported,
}

/// Why a connection ended normally.
type End = &'static str;

impl Connection {
    async fn run(&mut self, socket: TcpStream) -> Result<End, String> {
        let (mut reader, mut writer) = socket.into_split();
        let mut buffer = vec![0u8; 64 * 1024];

        // The handshake: C0/C1 in, S0/S1/S2 out, C2 in.
        let mut handshake = Handshake::new(PeerType::Server);
        let handshake_done = async {
            loop {
                let n = reader
                    .read(&mut buffer)
                    .await
                    .map_err(|e| format!("read failed during the handshake: {e}"))?;
                if n == 0 {
                    return Err("connection closed during the RTMP handshake".to_string());
                }
                match handshake
                    .process_bytes(&buffer[..n])
                    .map_err(|e| format!("RTMP handshake failed (not an RTMP client?): {e}"))?
                {
                    HandshakeProcessResult::InProgress { response_bytes } => {
                        write(&mut writer, &response_bytes).await?;
                    }
                    HandshakeProcessResult::Completed {
                        response_bytes,
                        remaining_bytes,
                    } => {
                        write(&mut writer, &response_bytes).await?;
                        return Ok(remaining_bytes);
                    }
                }
            }
        };
        let remaining = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake_done)
            .await
            .map_err(|_| {
                format!(
                    "RTMP handshake not completed within {}s",
                    HANDSHAKE_TIMEOUT.as_secs()
                )
            })??;

        let (mut session, initial) = ServerSession::new(ServerSessionConfig::new())
            .map_err(|e| format!("RTMP session setup failed: {e:?}"))?;
        self.handle_results(&mut session, &mut writer, initial)
            .await?;
        let results = session
            .handle_input(&remaining)
            .map_err(|e| format!("malformed RTMP chunk stream: {e:?}"))?;
        self.handle_results(&mut session, &mut writer, results)
            .await?;

        loop {
            if self.refused {
                let _ = writer.shutdown().await;
                return Ok("publish refused");
            }
            let read = reader.read(&mut buffer);
            let n = match self.publisher.as_mut() {
                Some(publisher) => tokio::select! {
                    read = tokio::time::timeout(IDLE_TIMEOUT, read) => read,
                    _ = &mut publisher.replaced => {
                        info!(room = %publisher.room, "a new publisher with a key for this room replaced this one");
                        IngestMetrics::add(&self.state.broadcasts.metrics.replaced_total, 1);
                        return Ok("replaced by a new publisher");
                    }
                    event = publisher.events.recv() => match event {
                        Some(SessionEvent::Removed { reason }) => {
                            info!(?reason, "the SFU removed the RTMP host");
                            return Ok("removed by the SFU");
                        }
                        Some(_) => continue,
                        None => return Ok("the SFU stopped"),
                    },
                },
                None => tokio::time::timeout(IDLE_TIMEOUT, read).await,
            };
            let n = n
                .map_err(|_| format!("no data for {}s", IDLE_TIMEOUT.as_secs()))?
                .map_err(|e| format!("read failed: {e}"))?;
            if n == 0 {
                return Ok("the encoder closed the connection");
            }
            let results = session
                .handle_input(&buffer[..n])
                .map_err(|e| format!("malformed RTMP chunk stream: {e:?}"))?;
            self.handle_results(&mut session, &mut writer, results)
                .await?;
        }
    }

    async fn handle_results(
        &mut self,
        session: &mut ServerSession,
        writer: &mut OwnedWriteHalf,
        results: Vec<ServerSessionResult>,
    ) -> Result<(), String> {
        let mut pending = std::collections::VecDeque::from(results);
        while let Some(result) = pending.pop_front() {
            match result {
                ServerSessionResult::OutboundResponse(packet) => {
                    write(writer, &packet.bytes).await?;
                }
                ServerSessionResult::RaisedEvent(event) => {
                    let more = self.handle_event(session, event).await?;
                    pending.extend(more);
                }
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(())
    }

    async fn handle_event(
        &mut self,
        session: &mut ServerSession,
        event: ServerSessionEvent,
    ) -> Result<Vec<ServerSessionResult>, String> {
        let session_error = |e| format!("RTMP session error: {e:?}");
        match event {
            ServerSessionEvent::ConnectionRequested {
                request_id,
                app_name,
            } => {
                debug!(%app_name, "RTMP connect");
                session.accept_request(request_id).map_err(session_error)
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                app_name,
                stream_key,
                ..
            } => {
                if self.publisher.is_some() {
                    self.refused = true;
                    return session
                        .reject_request(
                            request_id,
                            "NetStream.Publish.BadName",
                            "this connection already publishes a stream",
                        )
                        .map_err(session_error);
                }
                match self.start_publishing(&app_name, &stream_key).await {
                    Ok(()) => session.accept_request(request_id).map_err(session_error),
                    Err(message) => {
                        self.refused = true;
                        IngestMetrics::add(&self.state.broadcasts.metrics.refused_total, 1);
                        session
                            .reject_request(request_id, "NetStream.Publish.Unauthorized", &message)
                            .map_err(session_error)
                    }
                }
            }
            ServerSessionEvent::PublishStreamFinished { .. } => {
                self.end_publishing().await;
                Ok(Vec::new())
            }
            ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
                self.refused = true;
                session
                    .reject_request(
                        request_id,
                        "NetStream.Play.Failed",
                        "roomcast does not play over RTMP: watch over WebRTC (/watch/<room>, WHEP) or HLS",
                    )
                    .map_err(session_error)
            }
            ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
                info!(
                    encoder = metadata.encoder.as_deref().unwrap_or("unknown"),
                    width = metadata.video_width,
                    height = metadata.video_height,
                    fps = metadata.video_frame_rate,
                    video_kbps = metadata.video_bitrate_kbps,
                    audio_kbps = metadata.audio_bitrate_kbps,
                    audio_rate = metadata.audio_sample_rate,
                    "encoder metadata"
                );
                Ok(Vec::new())
            }
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } => {
                self.video(&data, timestamp.value).await?;
                Ok(Vec::new())
            }
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } => {
                self.audio(&data, timestamp.value).await?;
                Ok(Vec::new())
            }
            _ => Ok(Vec::new()),
        }
    }

    /// Check the key, join the room and publish the two tracks. The error is the refusal text.
    async fn start_publishing(&mut self, app_name: &str, stream_key: &str) -> Result<(), String> {
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let grant = match authorize_stream_key(
            self.state.credentials.as_ref(),
            stream_key,
            None,
            now_unix,
        ) {
            Ok(grant) => grant,
            Err(refused) => {
                warn!(%app_name, code = refused.code, "RTMP publish refused: {}", refused.message);
                return Err(refused.message);
            }
        };
        let participant = ParticipantId::next();
        let worker = self.state.sfu.worker_for_room(&grant.room).clone();
        let (events, events_rx) = mpsc::channel(16);
        let joined = request(&worker, |reply| Command::Join {
            room: grant.room.clone(),
            participant,
            name: grant.host_name.clone(),
            subscription: Subscription::Nothing,
            events,
            reply,
        })
        .await;
        if let Err(error) = joined {
            warn!(room = %grant.room, "RTMP publish refused: {error}");
            return Err(error.to_string());
        }
        let mut tracks = [TrackId(0); 2];
        for (i, kind) in [MediaKind::Video, MediaKind::Audio].into_iter().enumerate() {
            let published = request(&worker, |reply| Command::PublishIngest {
                participant,
                kind,
                reply,
            })
            .await;
            match published {
                Ok(track) => tracks[i] = track,
                Err(error) => {
                    let _ = worker
                        .send(Command::Leave {
                            participant,
                            reason: LeaveReason::Left,
                        })
                        .await;
                    return Err(error.to_string());
                }
            }
        }
        let (replaced, previous) = self.state.broadcasts.start(
            &grant.room,
            participant,
            IngestSource::Rtmp,
            &grant.host_name,
        );
        if let Some(previous) = previous {
            info!(room = %grant.room, %previous, "replacing the live publisher of this room");
        }
        IngestMetrics::add(&self.state.broadcasts.metrics.rtmp_publishes_total, 1);
        info!(room = %grant.room, %participant, host = %grant.host_name, "RTMP publish started");
        self.publisher = Some(Publisher {
            room: grant.room,
            participant,
            worker,
            video_track: tracks[0],
            audio_track: tracks[1],
            source_id: participant.0 as u32,
            events: events_rx,
            replaced,
            clock_anchor: None,
            avc: None,
            packetizer: H264Packetizer::new(MAX_RTP_PAYLOAD),
            audio: AudioState::Waiting,
            video_unsupported_reported: false,
            bframes_seen: 0,
            waiting_for_keyframe: true,
            opus_out: Vec::new(),
            hls: HlsFeed::default(),
        });
        Ok(())
    }

    /// Leave the room and end the broadcast (idempotent).
    async fn end_publishing(&mut self) {
        let Some(publisher) = self.publisher.take() else {
            return;
        };
        self.state
            .broadcasts
            .end(&publisher.room, publisher.participant);
        let _ = publisher
            .worker
            .send(Command::Leave {
                participant: publisher.participant,
                reason: LeaveReason::Left,
            })
            .await;
        info!(room = %publisher.room, participant = %publisher.participant, "RTMP publish ended");
    }

    async fn video(&mut self, data: &[u8], timestamp_ms: u32) -> Result<(), String> {
        let state = self.state.clone();
        let metrics = &state.broadcasts.metrics;
        let Some(publisher) = self.publisher.as_mut() else {
            return Ok(()); // media before publish: nothing to attach it to
        };
        let tag = flv::parse_video(data).map_err(|e| format!("bad FLV video tag: {e}"))?;
        match tag {
            VideoTag::AvcSequenceHeader(record) => {
                let config = AvcConfig::parse(record)
                    .map_err(|e| format!("bad AVC sequence header: {e}"))?;
                info!(
                    profile = config.profile_name(),
                    level = config.level_idc(),
                    "H.264 configuration received"
                );
                publisher.hls.tracks.video = config.sps().first().and_then(|sps| {
                    let (width, height) = sps_dimensions(sps)?;
                    Some(VideoTrack {
                        avc_config: record.to_vec(),
                        width,
                        height,
                    })
                });
                if publisher.hls.tracks.video.is_none() {
                    warn!(room = %publisher.room, "the H.264 SPS gives no picture size: HLS carries no video");
                }
                publisher.hls.tracks_changed();
                publisher.avc = Some(config);
            }
            VideoTag::AvcNalus {
                composition_time_ms,
                data,
                ..
            } => {
                let Some(config) = publisher.avc.as_ref() else {
                    debug!("H.264 frame before the sequence header: dropped");
                    return Ok(());
                };
                if composition_time_ms != 0 {
                    IngestMetrics::add(&metrics.bframe_frames_total, 1);
                    publisher.bframes_seen += 1;
                    if publisher.bframes_seen == 1 {
                        IngestMetrics::add(&metrics.bframe_streams_total, 1);
                        warn!(room = %publisher.room, "{BFRAME_WARNING}");
                        state.broadcasts.warn(
                            &publisher.room,
                            publisher.participant,
                            BFRAME_WARNING,
                        );
                        if state.rtmp.refuse_bframes {
                            return Err(format!(
                                "stream refused (server set to refuse B-frames): {BFRAME_WARNING}"
                            ));
                        }
                    }
                }
                let mut payloads = Vec::new();
                let info = publisher
                    .packetizer
                    .packetize(config, data, |payload, marker| {
                        payloads.push((Arc::<[u8]>::from(payload), marker));
                    })
                    .map_err(|e| format!("bad H.264 access unit: {e}"))?;
                if publisher.waiting_for_keyframe && !info.keyframe {
                    return Ok(()); // nobody can decode this before the first IDR
                }
                publisher.waiting_for_keyframe = false;
                if payloads.is_empty() {
                    return Ok(());
                }
                let pts_ms = i64::from(timestamp_ms) + i64::from(composition_time_ms);
                let access_unit = publisher
                    .hls
                    .tracks
                    .video
                    .is_some()
                    .then(|| avcc_with_4_byte_lengths(config, data))
                    .flatten();
                let capture_time = publisher.capture_time(pts_ms);
                if let Some(access_unit) = access_unit {
                    let sample = Sample {
                        kind: TrackKind::Video,
                        dts: u64::from(timestamp_ms) * 90,
                        cts_offset: composition_time_ms * 90,
                        keyframe: info.keyframe,
                        data: access_unit,
                    };
                    publisher.hls.send(
                        &state,
                        &publisher.room,
                        publisher.participant,
                        sample,
                        capture_time,
                    );
                }
                let frame = IngestFrame {
                    source_id: publisher.source_id,
                    rtp_timestamp: (pts_ms as u32).wrapping_mul(90),
                    capture_time,
                    keyframe: info.keyframe,
                    payloads,
                };
                IngestMetrics::add(&metrics.frames_total, 1);
                let track = publisher.video_track;
                publisher.send(track, frame).await?;
            }
            VideoTag::Unsupported { codec } => {
                if !publisher.video_unsupported_reported {
                    publisher.video_unsupported_reported = true;
                    IngestMetrics::add(&metrics.unsupported_media_total, 1);
                    let warning = format!(
                        "video codec {codec} is not supported: roomcast passes H.264 through. \
                         Set the encoder to H.264 (OBS: x264 or a hardware H.264 encoder)."
                    );
                    warn!(room = %publisher.room, "{warning}");
                    state
                        .broadcasts
                        .warn(&publisher.room, publisher.participant, &warning);
                }
            }
            VideoTag::AvcEndOfSequence | VideoTag::Command | VideoTag::Metadata(_) => {}
        }
        Ok(())
    }

    async fn audio(&mut self, data: &[u8], timestamp_ms: u32) -> Result<(), String> {
        let state = self.state.clone();
        let metrics = &state.broadcasts.metrics;
        let Some(publisher) = self.publisher.as_mut() else {
            return Ok(());
        };
        let tag = flv::parse_audio(data).map_err(|e| format!("bad FLV audio tag: {e}"))?;
        let unsupported = |publisher: &mut Publisher, why: String| {
            if !matches!(publisher.audio, AudioState::Unsupported) {
                publisher.audio = AudioState::Unsupported;
                IngestMetrics::add(&metrics.unsupported_media_total, 1);
                let warning = format!("audio not passed on (video still flows): {why}");
                warn!(room = %publisher.room, "{warning}");
                state
                    .broadcasts
                    .warn(&publisher.room, publisher.participant, &warning);
            }
        };
        match tag {
            AudioTag::AacSequenceHeader(bytes) => {
                if let Ok(config) = AudioSpecificConfig::parse(bytes) {
                    publisher.hls.tracks.audio = Some(AudioTrack::Aac {
                        config: bytes.to_vec(),
                        sample_rate: config.sample_rate,
                        channels: u16::from(config.channels),
                    });
                    publisher.hls.aac_clock = Some(AacClock {
                        base_ms: u64::from(timestamp_ms),
                        frames: 0,
                        sample_rate: u64::from(config.sample_rate),
                    });
                    publisher.hls.tracks_changed();
                }
                let transcoder = AudioSpecificConfig::parse(bytes).and_then(|config| {
                    info!(
                        sample_rate = config.sample_rate,
                        channels = config.channels,
                        "AAC configuration received; transcoding to Opus"
                    );
                    AacToOpus::new(&config)
                });
                match transcoder {
                    Ok(transcoder) => {
                        publisher.audio = AudioState::Transcoding(Box::new(transcoder))
                    }
                    Err(error) => unsupported(publisher, error.to_string()),
                }
            }
            AudioTag::AacRaw(frame) => {
                if let Some(clock) = publisher.hls.aac_clock.as_mut() {
                    let sample = Sample {
                        kind: TrackKind::Audio,
                        dts: clock.next(u64::from(timestamp_ms)),
                        cts_offset: 0,
                        keyframe: true,
                        data: Bytes::copy_from_slice(frame),
                    };
                    let capture_time = publisher.capture_time(i64::from(timestamp_ms));
                    publisher.hls.send(
                        &state,
                        &publisher.room,
                        publisher.participant,
                        sample,
                        capture_time,
                    );
                }
                let AudioState::Transcoding(transcoder) = &mut publisher.audio else {
                    return Ok(());
                };
                let mut packets = std::mem::take(&mut publisher.opus_out);
                packets.clear();
                if let Err(error) = transcoder.push(frame, i64::from(timestamp_ms), &mut packets) {
                    IngestMetrics::add(&metrics.audio_errors_total, 1);
                    if error.is_recoverable() {
                        debug!(%error, "AAC frame dropped");
                    } else {
                        unsupported(publisher, error.to_string());
                    }
                }
                for packet in packets.drain(..) {
                    let pts_ms = i64::from(packet.rtp_timestamp / 48);
                    let frame = IngestFrame {
                        source_id: publisher.source_id,
                        rtp_timestamp: packet.rtp_timestamp,
                        capture_time: publisher.capture_time(pts_ms),
                        keyframe: true,
                        payloads: vec![(Arc::from(packet.data), false)],
                    };
                    IngestMetrics::add(&metrics.frames_total, 1);
                    let track = publisher.audio_track;
                    publisher.send(track, frame).await?;
                }
                publisher.opus_out = packets;
            }
            AudioTag::Unsupported { codec } => unsupported(
                publisher,
                format!(
                    "audio codec {codec} is not supported; set the encoder to AAC-LC (OBS's default)"
                ),
            ),
        }
        Ok(())
    }
}

impl Publisher {
    /// Hand one frame of `track` to the SFU worker (waits while its queue is full).
    async fn send(&self, track: TrackId, frame: IngestFrame) -> Result<(), String> {
        let command = Command::IngestFrame {
            participant: self.participant,
            track,
            frame,
        };
        self.worker.send(command).await.map_err(|e| e.to_string())
    }

    /// The capture time of media timestamp `pts_ms`, on the clock anchored at the first tag.
    fn capture_time(&mut self, pts_ms: i64) -> Instant {
        let (anchor_at, anchor_ms) = *self
            .clock_anchor
            .get_or_insert((Instant::now(), pts_ms.max(0) as u32));
        let offset = pts_ms - i64::from(anchor_ms);
        if offset >= 0 {
            anchor_at + Duration::from_millis(offset as u64)
        } else {
            anchor_at
                .checked_sub(Duration::from_millis(offset.unsigned_abs()))
                .unwrap_or(anchor_at)
        }
    }
}

/// An FLV access unit as fMP4 wants it: NAL units with 4-byte lengths (FLV allows 1, 2 or 4).
fn avcc_with_4_byte_lengths(config: &AvcConfig, access_unit: &[u8]) -> Option<Bytes> {
    if config.nal_length_size().bytes() == 4 {
        return Some(Bytes::copy_from_slice(access_unit));
    }
    let mut out = Vec::with_capacity(access_unit.len() + 64);
    for nalu in roomcast_media::h264::AvccNalus::new(access_unit, config.nal_length_size()) {
        let nalu = nalu.ok()?;
        out.extend_from_slice(&(nalu.len() as u32).to_be_bytes());
        out.extend_from_slice(nalu);
    }
    Some(Bytes::from(out))
}

async fn write(writer: &mut OwnedWriteHalf, bytes: &[u8]) -> Result<(), String> {
    writer
        .write_all(bytes)
        .await
        .map_err(|e| format!("write failed: {e}"))
}
