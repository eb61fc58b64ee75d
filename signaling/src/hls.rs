//! The HLS edge: each room's stage packaged as LL-HLS (fMP4 parts) and classic HLS from one
//! playlist, served over HTTP, archived as a replay when the broadcast ends.
//!
//! Flow: the SFU's stage tap ([`roomcast_sfu::stage`]) reports which participant is on each
//! room's stage and copies the RTP of WebRTC stages; the RTMP edge hands over its original
//! H.264 and AAC ([`Hls::ingest`]; no second transcode). One task per live broadcast owns the
//! sans-IO packager ([`roomcast_media::hls::LiveStream`]) behind a mutex that HTTP handlers hold
//! only to copy out a playlist or a `Bytes` handle; blocked playlist reloads wait on a watch
//! channel the task bumps when parts appear.
//!
//! URLs (see `docs/hls.md`):
//! - `/hls/<room>/index.m3u8`: the live playlist (blocking reload with `_HLS_msn`/`_HLS_part`,
//!   RFC 8216bis §6.2.5.2). Its media URIs are `<broadcast id>/…`, unique per broadcast, so a
//!   CDN may cache them as immutable.
//! - `/hls/<room>/<broadcast id>/<file>`: init segments, segments, parts of the live broadcast;
//!   after it ends, the same URLs (plus `index.m3u8`, the VOD playlist) serve the replay.
//!
//! Invariants:
//! - Nothing here blocks the SFU: stage packets arrive through bounded channels with
//!   `try_send`; a packager that falls behind loses packets (counted) and resumes at the next
//!   keyframe.
//! - A slow HTTP client never holds the packager: responses are `Bytes` clones taken under a
//!   short lock; what slid out of the live window answers 410 Gone.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use dashmap::DashMap;
use roomcast_media::depacketize::{H264Depacketizer, TimestampUnwrapper};
use roomcast_media::hls::{
    ArchivedSegment, AudioTrack, HlsConfig, LiveStream, Lookup, Readiness, Sample, TrackKind,
    Tracks, VideoTrack,
};
use roomcast_sfu::stage::{StageCodec, StageReceiver, StageRtp, StageSource};
use roomcast_sfu::{Command, MediaKind, ParticipantId, Sfu};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tracing::{Instrument, info, info_span, warn};

use crate::AppState;
use crate::replay::{ReplayInfo, ReplayStore, unix_ms, valid_file_name};

/// HLS settings from the configuration.
#[derive(Debug, Clone)]
pub struct HlsSettings {
    /// Longest part (LL-HLS `PART-TARGET`).
    pub part_target: Duration,
    /// A segment closes at the first keyframe after this much media.
    pub segment_target: Duration,
    /// Complete segments kept in the live playlist (and in memory).
    pub window: usize,
    /// How long a broadcast waits for its source (an encoder reconnecting, a new stage) before
    /// it ends and its replay is written.
    pub end_grace: Duration,
    /// Where replays are kept; `None`: no replays.
    pub replay_dir: Option<PathBuf>,
    pub replay_retention: Duration,
}

impl Default for HlsSettings {
    fn default() -> Self {
        HlsSettings {
            part_target: Duration::from_millis(200),
            segment_target: Duration::from_secs(1),
            window: 6,
            end_grace: Duration::from_secs(5),
            replay_dir: None,
            replay_retention: Duration::from_secs(72 * 3600),
        }
    }
}

/// Inputs of one broadcast's task.
///
/// Two channels: [`Control`] is unbounded and never dropped (a lost stage change or track
/// announcement would leave a broadcast wrong until its source reconnects; there are a few per
/// minute at most), [`Media`] is bounded and dropped when full (a packager that falls behind
/// loses packets, never the SFU or the RTMP edge their pace). The task reads control first.
enum Control {
    Stage(Option<StageSource>),
    IngestTracks {
        participant: ParticipantId,
        tracks: Tracks,
    },
}

enum Media {
    Rtp(StageRtp),
    IngestSample {
        participant: ParticipantId,
        sample: Sample,
        wall_clock: SystemTime,
    },
}

/// One broadcast: live, or ended and still answering with its final playlist until the room's
/// next broadcast replaces it.
pub struct Broadcast {
    pub id: String,
    pub room: String,
    pub started_at: SystemTime,
    host: Mutex<String>,
    stream: Mutex<LiveStream>,
    /// Bumped whenever the playlist changes; blocked requests wait on it.
    changed: watch::Sender<u64>,
    control: mpsc::UnboundedSender<Control>,
    media: mpsc::Sender<Media>,
    /// The stage participant the dispatcher last routed here (the RTMP edge feeds only that).
    on_stage: Mutex<Option<ParticipantId>>,
    /// Set before the task stops reading `control`: a sender that finds the channel closed
    /// finds the broadcast ended, and [`Hls::live_broadcast`] makes the next one.
    ended: AtomicBool,
    /// When it ended: it keeps answering with its final playlist for [`ENDED_BROADCAST_KEPT`]
    /// (players play out and stop), then [`run_janitor`] frees its memory; its replay, if any,
    /// stays on disk and is served at the same URLs.
    ended_at: std::sync::OnceLock<Instant>,
}

impl Broadcast {
    pub fn is_live(&self) -> bool {
        !self.ended.load(Ordering::Acquire)
    }

    /// Live and with a playlist to serve (the first segment is complete).
    pub fn is_playable(&self) -> bool {
        self.is_live() && self.stream().has_playlist()
    }

    pub fn host(&self) -> String {
        self.host.lock().expect("host lock").clone()
    }

    fn bump(&self) {
        self.changed.send_modify(|version| *version += 1);
    }

    /// The packager's state. A panic in the task (see [`EndOnDrop`]) leaves it as it was;
    /// the broadcast is ended by then and its last playlist is still worth serving.
    fn stream(&self) -> std::sync::MutexGuard<'_, LiveStream> {
        self.stream
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn mark_ended(&self) {
        let _ = self.ended_at.set(Instant::now());
        self.ended.store(true, Ordering::Release);
        self.bump();
    }
}

/// Ends the broadcast if its task stops any other way than through [`BroadcastTask::end`] (a
/// panic): players get no more waiting, and the next stage report starts a new broadcast.
struct EndOnDrop(Arc<Broadcast>);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        if self.0.is_live() {
            warn!(room = %self.0.room, broadcast = %self.0.id, "the HLS packager stopped unexpectedly; the broadcast ends");
            self.0.stream().end();
            self.0.mark_ended();
        }
    }
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct HlsMetrics {
    pub broadcasts_started: AtomicU64,
    pub parts_published: AtomicU64,
    pub inputs_dropped: AtomicU64,
    pub playlist_requests: AtomicU64,
    pub blocking_timeouts: AtomicU64,
    pub archive_errors: AtomicU64,
}

/// The HLS registry: the current broadcast of each room, and the replays.
pub struct Hls {
    pub settings: HlsSettings,
    broadcasts: DashMap<String, Arc<Broadcast>>,
    /// Per room, the ended broadcast the current one replaced, until [`run_janitor`] frees it:
    /// its players may still fetch the last parts its final playlist lists.
    replaced: DashMap<String, Arc<Broadcast>>,
    pub replays: Option<ReplayStore>,
    pub metrics: HlsMetrics,
}

/// How long an ended broadcast's final playlist and window stay in memory.
const ENDED_BROADCAST_KEPT: Duration = Duration::from_secs(60);

/// How long a capacity-bounded broadcast inbox is (≈ 2 s of a 4 Mbit/s stage's packets).
const INBOX_CAPACITY: usize = 1024;

impl Hls {
    pub fn new(settings: HlsSettings) -> std::io::Result<Hls> {
        let replays = match &settings.replay_dir {
            Some(dir) if !settings.replay_retention.is_zero() => {
                Some(ReplayStore::open(dir.clone(), settings.replay_retention)?)
            }
            _ => None,
        };
        Ok(Hls {
            settings,
            broadcasts: DashMap::new(),
            replaced: DashMap::new(),
            replays,
            metrics: HlsMetrics::default(),
        })
    }

    /// The room's current broadcast (live or just ended).
    pub fn broadcast(&self, room: &str) -> Option<Arc<Broadcast>> {
        self.broadcasts.get(room).map(|b| b.clone())
    }

    /// The room's live broadcast, started if there is none.
    fn live_broadcast(self: &Arc<Self>, room: &str, sfu: &Arc<Sfu>) -> Arc<Broadcast> {
        let mut entry = self
            .broadcasts
            .entry(room.to_owned())
            .or_insert_with(|| self.start_broadcast(room, sfu, 0));
        if !entry.is_live() {
            // Continue the ended broadcast's media sequence numbers (see LiveStream::continuing).
            let first_msn = entry.stream().next_media_sequence();
            let ended = std::mem::replace(&mut *entry, self.start_broadcast(room, sfu, first_msn));
            self.replaced.insert(room.to_owned(), ended);
        }
        entry.clone()
    }

    fn start_broadcast(
        self: &Arc<Self>,
        room: &str,
        sfu: &Arc<Sfu>,
        first_msn: u64,
    ) -> Arc<Broadcast> {
        let started_at = SystemTime::now();
        let id = format!(
            "{}-{:016x}",
            unix_ms(started_at),
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
        );
        let config = HlsConfig {
            part_target: self.settings.part_target,
            segment_target: self.settings.segment_target,
            window: self.settings.window,
            uri_prefix: format!("{id}/"),
        };
        let (control, control_inputs) = mpsc::unbounded_channel();
        let (media, media_inputs) = mpsc::channel(INBOX_CAPACITY);
        let broadcast = Arc::new(Broadcast {
            id: id.clone(),
            room: room.to_owned(),
            started_at,
            host: Mutex::new(String::new()),
            stream: Mutex::new(LiveStream::continuing(config, first_msn)),
            changed: watch::channel(0).0,
            control,
            media,
            on_stage: Mutex::new(None),
            ended: AtomicBool::new(false),
            ended_at: std::sync::OnceLock::new(),
        });
        self.metrics
            .broadcasts_started
            .fetch_add(1, Ordering::Relaxed);
        let span = info_span!("broadcast", %room, broadcast = %id);
        let task = BroadcastTask::new(self.clone(), sfu.clone(), broadcast.clone());
        tokio::spawn(task.run(control_inputs, media_inputs).instrument(span));
        broadcast
    }

    /// From the RTMP edge: the codec parameters of its stream (sent again whenever they change
    /// or the room's broadcast is new).
    pub fn ingest_tracks(&self, room: &str, participant: ParticipantId, tracks: Tracks) -> bool {
        self.broadcast(room)
            .filter(|b| b.is_live())
            .is_some_and(|b| {
                b.control
                    .send(Control::IngestTracks {
                        participant,
                        tracks,
                    })
                    .is_ok()
            })
    }

    /// From the RTMP edge: one access unit or audio frame. Returns the broadcast it went to
    /// (so the edge can resend its tracks to a new one).
    pub fn ingest_sample(
        &self,
        room: &str,
        participant: ParticipantId,
        sample: Sample,
        wall_clock: SystemTime,
    ) -> bool {
        let Some(broadcast) = self.broadcast(room).filter(|b| b.is_live()) else {
            return false;
        };
        let sample = Media::IngestSample {
            participant,
            sample,
            wall_clock,
        };
        match broadcast.media.try_send(sample) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.inputs_dropped.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// The id of the room's live broadcast if `participant` is its stage: the RTMP edge
    /// feeds only then.
    pub fn live_id_on_stage(&self, room: &str, participant: ParticipantId) -> Option<String> {
        self.broadcast(room)
            .filter(|b| b.is_live() && *b.on_stage.lock().expect("stage lock") == Some(participant))
            .map(|b| b.id.clone())
    }

    /// Routes a stage change to the room's broadcast; `Some` starts one if none is live.
    /// Never lost: a broadcast that ended meanwhile has closed its control channel (after
    /// marking itself ended), and the next attempt finds or makes its successor.
    fn deliver_stage(
        self: &Arc<Self>,
        room: &str,
        sfu: &Arc<Sfu>,
        stage: Option<StageSource>,
    ) -> Option<Arc<Broadcast>> {
        let mut stage = stage;
        loop {
            let broadcast = match &stage {
                Some(_) => self.live_broadcast(room, sfu),
                None => self.broadcast(room).filter(|b| b.is_live())?,
            };
            let participant = stage.as_ref().map(|s| s.participant);
            match broadcast.control.send(Control::Stage(stage)) {
                Ok(()) => {
                    // After the send: the RTMP edge feeds once it sees itself on stage, and
                    // the task (reading control first) then knows the stage before the samples.
                    *broadcast.on_stage.lock().expect("stage lock") = participant;
                    return Some(broadcast);
                }
                Err(mpsc::error::SendError(Control::Stage(returned))) => stage = returned,
                Err(mpsc::error::SendError(_)) => return None,
            }
        }
    }

    pub fn render_metrics(&self) -> String {
        let live = self.broadcasts.iter().filter(|b| b.is_live()).count();
        let replays = self.replays.as_ref().map_or(0, |r| r.list().len());
        let counters = [
            (
                "roomcast_hls_broadcasts_started_total",
                "Broadcasts packaged for HLS since start.",
                &self.metrics.broadcasts_started,
            ),
            (
                "roomcast_hls_parts_published_total",
                "LL-HLS parts published.",
                &self.metrics.parts_published,
            ),
            (
                "roomcast_hls_inputs_dropped_total",
                "Stage packets or frames dropped because a packager was behind.",
                &self.metrics.inputs_dropped,
            ),
            (
                "roomcast_hls_playlist_requests_total",
                "Live playlist requests.",
                &self.metrics.playlist_requests,
            ),
            (
                "roomcast_hls_blocking_reload_timeouts_total",
                "Blocking playlist reloads answered 503 after waiting.",
                &self.metrics.blocking_timeouts,
            ),
            (
                "roomcast_hls_archive_errors_total",
                "Replay files that could not be written.",
                &self.metrics.archive_errors,
            ),
        ];
        let mut text = format!(
            "# HELP roomcast_hls_live_broadcasts Broadcasts being packaged now.\n\
             # TYPE roomcast_hls_live_broadcasts gauge\nroomcast_hls_live_broadcasts {live}\n\
             # HELP roomcast_replays Replays kept on disk.\n\
             # TYPE roomcast_replays gauge\nroomcast_replays {replays}\n"
        );
        for (name, help, value) in counters {
            text.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                value.load(Ordering::Relaxed)
            ));
        }
        text
    }
}

/// Route the SFU's stage reports to broadcasts: runs for the life of the server.
pub async fn run_stage_dispatcher(state: Arc<AppState>, mut tap: StageReceiver) {
    let hls = state.hls.clone();
    // The stage of each room and where its packets go; only stages are in here.
    let mut stages: HashMap<Arc<str>, StageSource> = HashMap::new();
    let mut inboxes: HashMap<ParticipantId, (Arc<str>, mpsc::Sender<Media>)> = HashMap::new();
    loop {
        tokio::select! {
            biased;
            change = tap.changes.recv() => {
                let Some(change) = change else { return };
                if let Some(old) = stages.remove(&change.room) {
                    inboxes.remove(&old.participant);
                }
                let source = change.stage.clone();
                let broadcast = hls.deliver_stage(&change.room, &state.sfu, change.stage);
                if let (Some(source), Some(broadcast)) = (source, broadcast) {
                    inboxes.insert(source.participant, (change.room.clone(), broadcast.media.clone()));
                    stages.insert(change.room.clone(), source);
                }
            }
            packet = tap.packets.recv() => {
                let Some(packet) = packet else { return };
                let Some((room, inbox)) = inboxes.get_mut(&packet.participant) else { continue };
                match inbox.try_send(Media::Rtp(packet)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        hls.metrics.inputs_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(mpsc::error::TrySendError::Closed(Media::Rtp(packet))) => {
                        // The broadcast ended (its task stopped) while its stage was still
                        // reported: a new one.
                        let source = stages.get(room).cloned();
                        if source.is_some()
                            && let Some(broadcast) = hls.deliver_stage(room, &state.sfu, source)
                        {
                            *inbox = broadcast.media.clone();
                            let _ = inbox.try_send(Media::Rtp(packet));
                        }
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
            }
        }
    }
}

/// Housekeeping for the life of the server: free ended broadcasts after
/// [`ENDED_BROADCAST_KEPT`], and delete expired replays every minute.
pub async fn run_janitor(hls: Arc<Hls>) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    for round in 0u64.. {
        tick.tick().await;
        let kept = |broadcast: &Arc<Broadcast>| {
            broadcast
                .ended_at
                .get()
                .is_none_or(|ended| ended.elapsed() < ENDED_BROADCAST_KEPT)
        };
        hls.broadcasts.retain(|_, broadcast| kept(broadcast));
        hls.replaced.retain(|_, broadcast| kept(broadcast));
        if round % 6 == 0 && hls.replays.is_some() {
            // Deleting directories blocks: not on a runtime thread.
            let hls = hls.clone();
            let expire = tokio::task::spawn_blocking(move || {
                if let Some(replays) = hls.replays.as_ref() {
                    replays.expire(SystemTime::now());
                }
            });
            if let Err(error) = expire.await {
                warn!("the replay expiry stopped: {error}");
            }
        }
    }
}

/// Turns a WebRTC stage's RTP into samples: H.264 access units and Opus packets on one clock.
struct RtpSource {
    participant: ParticipantId,
    depacketizer: H264Depacketizer,
    video_clock: TimestampUnwrapper,
    audio_clock: TimestampUnwrapper,
    /// The arrival of the first packet: time zero of the broadcast's media clock.
    epoch: Option<(Instant, SystemTime)>,
    /// Per track: the unwrapped RTP timestamp that maps to the track's first arrival.
    video_base: Option<(u64, u64)>,
    audio_base: Option<(u64, u64)>,
    video: Option<VideoTrack>,
    audio_seen: bool,
    first_packet: Option<Instant>,
    warned_codec: bool,
}

/// How long a WebRTC stage's audio waits for its video's first keyframe before the broadcast
/// starts audio-only.
const VIDEO_WAIT: Duration = Duration::from_secs(3);
/// How long a WebRTC stage's video waits for its first audio packet before the broadcast
/// starts video-only (audio that comes later joins at a keyframe, after a discontinuity).
const AUDIO_WAIT: Duration = Duration::from_millis(500);

impl RtpSource {
    fn new(participant: ParticipantId) -> Self {
        RtpSource {
            participant,
            depacketizer: H264Depacketizer::new(),
            video_clock: TimestampUnwrapper::new(),
            audio_clock: TimestampUnwrapper::new(),
            epoch: None,
            video_base: None,
            audio_base: None,
            video: None,
            audio_seen: false,
            first_packet: None,
            warned_codec: false,
        }
    }

    /// A track's timestamp on the broadcast clock (its rate's ticks since the epoch).
    fn media_time(
        base: &mut Option<(u64, u64)>,
        epoch: (Instant, SystemTime),
        arrival: Instant,
        rate: u64,
        unwrapped: u64,
    ) -> u64 {
        let (rtp0, media0) = *base.get_or_insert_with(|| {
            let offset = arrival.saturating_duration_since(epoch.0);
            (unwrapped, (offset.as_secs_f64() * rate as f64) as u64)
        });
        media0 + unwrapped.saturating_sub(rtp0)
    }
}

/// Owns one broadcast's packager.
struct BroadcastTask {
    hls: Arc<Hls>,
    sfu: Arc<Sfu>,
    broadcast: Arc<Broadcast>,
    stage: Option<StageSource>,
    rtp: Option<RtpSource>,
    /// Tracks an ingest participant announced (kept even before it is on stage).
    ingest_tracks: HashMap<ParticipantId, Tracks>,
    applied: Option<Tracks>,
    /// Archived segments so far (for the VOD playlist).
    archived: Vec<ArchivedSegment>,
    archived_inits: Vec<String>,
    replay: Option<ReplayInfo>,
}

impl BroadcastTask {
    fn new(hls: Arc<Hls>, sfu: Arc<Sfu>, broadcast: Arc<Broadcast>) -> Self {
        BroadcastTask {
            hls,
            sfu,
            broadcast,
            stage: None,
            rtp: None,
            ingest_tracks: HashMap::new(),
            applied: None,
            archived: Vec::new(),
            archived_inits: Vec::new(),
            replay: None,
        }
    }

    async fn run(
        mut self,
        mut control: mpsc::UnboundedReceiver<Control>,
        mut media: mpsc::Receiver<Media>,
    ) {
        info!("broadcast started");
        let _end_on_panic = EndOnDrop(self.broadcast.clone());
        let mut grace: Option<tokio::time::Instant> = None;
        let mut keyframes = tokio::time::interval(self.hls.settings.segment_target);
        keyframes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                input = control.recv() => {
                    // The registry keeps a sender while the broadcast is current.
                    let Some(input) = input else { break };
                    match input {
                        Control::Stage(Some(source)) => {
                            grace = None;
                            self.stage_changed(source).await;
                        }
                        Control::Stage(None) => {
                            info!("nobody on stage: the broadcast ends unless a source returns");
                            self.stage = None;
                            self.rtp = None;
                            self.interrupt().await;
                            grace = Some(tokio::time::Instant::now() + self.hls.settings.end_grace);
                        }
                        Control::IngestTracks { participant, tracks } => {
                            self.ingest_tracks.insert(participant, tracks);
                        }
                    }
                }
                input = media.recv() => {
                    let Some(input) = input else { break };
                    match input {
                        Media::Rtp(packet) => self.rtp_packet(packet).await,
                        Media::IngestSample { participant, sample, wall_clock } => {
                            if self.stage.as_ref().is_some_and(|s| s.participant == participant && s.ingest) {
                                self.apply_ingest_tracks(participant);
                                self.push(sample, wall_clock).await;
                            }
                        }
                    }
                }
                _ = keyframes.tick() => {
                    // WebRTC encoders send keyframes only when asked; segments are cut on them.
                    if let Some(stage) = self.stage.as_ref().filter(|s| !s.ingest) {
                        let command = Command::RequestStageKeyframe { participant: stage.participant };
                        let _ = self.sfu.worker_for_room(&self.broadcast.room).try_send(command);
                    }
                }
                _ = sleep_until(grace), if grace.is_some() => {
                    // Ended first, then closed: whoever finds the channel closed finds the
                    // broadcast ended and delivers to its successor instead.
                    self.finish_stream();
                    control.close();
                    media.close();
                    // A stage reported while the grace ran out continues in a new broadcast.
                    let mut restage = None;
                    while let Ok(input) = control.try_recv() {
                        if let Control::Stage(source) = input {
                            restage = source;
                        }
                    }
                    if let Some(source) = restage {
                        self.hls.deliver_stage(&self.broadcast.room, &self.sfu, Some(source));
                    }
                    self.end().await;
                    return;
                }
            }
        }
        self.finish_stream();
        self.end().await;
    }

    async fn stage_changed(&mut self, source: StageSource) {
        if self
            .stage
            .as_ref()
            .is_some_and(|s| s.participant == source.participant)
        {
            return;
        }
        info!(participant = %source.participant, name = %source.name, ingest = source.ingest, "stage source");
        if self.stage.is_some() {
            // Another source: publish what the last one left, and start over with the new
            // one's tracks (its timestamps start anywhere).
            self.interrupt().await;
        }
        self.applied = None;
        if !source.name.is_empty() {
            *self.broadcast.host.lock().expect("host lock") = source.name.clone();
        }
        self.rtp = (!source.ingest).then(|| RtpSource::new(source.participant));
        self.stage = Some(source);
    }

    /// The source stopped: publish its last frames now (players reach them), wake waiters,
    /// and take the next source's tracks afresh.
    async fn interrupt(&mut self) {
        let finished = {
            let mut stream = self.broadcast.stream();
            stream.interrupt();
            stream.take_finished()
        };
        self.applied = None;
        self.broadcast.bump();
        self.archive(finished).await;
    }

    fn apply_ingest_tracks(&mut self, participant: ParticipantId) {
        let Some(tracks) = self.ingest_tracks.get(&participant) else {
            return;
        };
        if self.applied.as_ref() != Some(tracks) {
            let tracks = tracks.clone();
            self.set_tracks(tracks);
        }
    }

    fn set_tracks(&mut self, tracks: Tracks) {
        let mut stream = self.broadcast.stream();
        match stream.set_tracks(tracks.clone()) {
            Ok(()) => {
                info!(
                    video = tracks.video.as_ref().map(|v| format!("H.264 {}x{}", v.width, v.height)),
                    audio = ?tracks.audio.as_ref().map(audio_name),
                    "packaging"
                );
                self.applied = Some(tracks);
            }
            Err(error) => warn!("cannot package the stage's tracks: {error}"),
        }
    }

    async fn rtp_packet(&mut self, packet: StageRtp) {
        let Some(source) = self
            .rtp
            .as_mut()
            .filter(|s| s.participant == packet.participant)
        else {
            return;
        };
        let first = *source.first_packet.get_or_insert(packet.arrival);
        let epoch = *source
            .epoch
            .get_or_insert_with(|| (packet.arrival, SystemTime::now()));
        let wall =
            |media: u64, rate: u64| epoch.1 + Duration::from_secs_f64(media as f64 / rate as f64);
        match (packet.kind, packet.codec) {
            (MediaKind::Video, StageCodec::H264) => {
                let Some(unit) = source.depacketizer.push(
                    packet.seq,
                    packet.rtp_timestamp,
                    packet.marker,
                    &packet.payload,
                ) else {
                    return;
                };
                if let Some(config) = unit.new_config {
                    source.video = Some(VideoTrack {
                        avc_config: config.record,
                        width: config.width,
                        height: config.height,
                    });
                }
                let unwrapped = source.video_clock.unwrap(unit.rtp_timestamp);
                let dts = RtpSource::media_time(
                    &mut source.video_base,
                    epoch,
                    packet.arrival,
                    90_000,
                    unwrapped,
                );
                let tracks = Tracks {
                    video: source.video.clone(),
                    audio: source
                        .audio_seen
                        .then_some(AudioTrack::Opus { channels: 2 }),
                };
                if tracks.video.is_none() {
                    return; // no SPS/PPS yet: nothing decodable
                }
                if self.applied.is_none()
                    && tracks.audio.is_none()
                    && packet.arrival.saturating_duration_since(first) < AUDIO_WAIT
                {
                    return; // give the audio a moment, rather than a discontinuity later
                }
                // New video parameters, or audio that started after the video (a host who
                // joined muted): repackage from this keyframe on, with both tracks.
                if self.applied.as_ref() != Some(&tracks) {
                    if !unit.keyframe {
                        return;
                    }
                    self.set_tracks(tracks);
                }
                let sample = Sample {
                    kind: TrackKind::Video,
                    dts,
                    cts_offset: 0,
                    keyframe: unit.keyframe,
                    data: unit.data,
                };
                self.push(sample, wall(dts, 90_000)).await;
            }
            (MediaKind::Audio, StageCodec::Opus) => {
                source.audio_seen = true;
                let unwrapped = source.audio_clock.unwrap(packet.rtp_timestamp);
                let dts = RtpSource::media_time(
                    &mut source.audio_base,
                    epoch,
                    packet.arrival,
                    48_000,
                    unwrapped,
                );
                if self.applied.is_none() {
                    // Wait a little for the video's first keyframe; then go audio-only.
                    if packet.arrival.saturating_duration_since(first) < VIDEO_WAIT {
                        return;
                    }
                    self.set_tracks(Tracks {
                        video: None,
                        audio: Some(AudioTrack::Opus { channels: 2 }),
                    });
                }
                if self.applied.as_ref().is_some_and(|a| a.audio.is_none()) {
                    return; // the video started first; audio joins at its next keyframe
                }
                let sample = Sample {
                    kind: TrackKind::Audio,
                    dts,
                    cts_offset: 0,
                    keyframe: true,
                    data: Bytes::copy_from_slice(&packet.payload),
                };
                self.push(sample, wall(dts, 48_000)).await;
            }
            (kind, _) => {
                if !source.warned_codec {
                    source.warned_codec = true;
                    warn!(
                        ?kind,
                        "the stage sends a codec HLS cannot carry (HLS takes H.264 video and \
                         Opus audio from WebRTC): publish H.264 to be seen over HLS"
                    );
                }
            }
        }
    }

    async fn push(&mut self, sample: Sample, wall_clock: SystemTime) {
        let (published, finished) = {
            let mut stream = self.broadcast.stream();
            let published = stream.push(sample, wall_clock);
            (published, stream.take_finished())
        };
        if published.parts > 0 {
            self.hls
                .metrics
                .parts_published
                .fetch_add(published.parts as u64, Ordering::Relaxed);
            self.broadcast.bump();
        }
        self.archive(finished).await;
    }

    /// Write completed segments (and their init segments) to the replay directory.
    async fn archive(&mut self, finished: Vec<roomcast_media::hls::FinishedSegment>) {
        let Some(store) = self.hls.replays.as_ref() else {
            return;
        };
        for segment in finished {
            if self.replay.is_none() {
                let info = ReplayInfo {
                    id: self.broadcast.id.clone(),
                    room: self.broadcast.room.clone(),
                    host: self.broadcast.host(),
                    started_at_ms: unix_ms(self.broadcast.started_at),
                    ended_at_ms: None,
                    duration_s: 0.0,
                };
                if let Err(error) = store.begin(&info).await {
                    self.hls
                        .metrics
                        .archive_errors
                        .fetch_add(1, Ordering::Relaxed);
                    warn!("cannot archive the broadcast for its replay: {error}");
                }
                self.replay = Some(info);
            }
            let id = &self.broadcast.id;
            let record = segment.record.clone();
            let mut result = Ok(());
            if !self.archived_inits.contains(&record.init) {
                result = store
                    .write_file(id, &record.init, &segment.init_bytes)
                    .await;
                if result.is_ok() {
                    self.archived_inits.push(record.init.clone());
                }
            }
            if result.is_ok() {
                result = store.write_file(id, &record.uri, &segment.bytes).await;
            }
            if result.is_ok() {
                result = store.append_segment(id, &record).await;
            }
            match result {
                Ok(()) => self.archived.push(record),
                Err(error) => {
                    self.hls
                        .metrics
                        .archive_errors
                        .fetch_add(1, Ordering::Relaxed);
                    warn!(segment = %record.uri, "cannot archive a segment for the replay: {error}");
                }
            }
        }
    }

    /// The playlist ends (`EXT-X-ENDLIST`) and the broadcast is marked ended: players stop
    /// waiting, and the room's next stage makes a new broadcast.
    fn finish_stream(&mut self) {
        self.broadcast.stream().end();
        self.broadcast.mark_ended();
    }

    /// After [`BroadcastTask::finish_stream`]: archive the last segment and write the replay.
    async fn end(&mut self) {
        let finished = self.broadcast.stream().take_finished();
        self.archive(finished).await;
        if let (Some(store), Some(mut info)) = (self.hls.replays.as_ref(), self.replay.take()) {
            info.host = self.broadcast.host();
            info.ended_at_ms = Some(unix_ms(SystemTime::now()));
            if let Err(error) = store.finish(info, &self.archived).await {
                self.hls
                    .metrics
                    .archive_errors
                    .fetch_add(1, Ordering::Relaxed);
                warn!("cannot write the replay's playlist: {error}");
            }
        }
        info!(segments = self.archived.len(), "broadcast ended");
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn audio_name(audio: &AudioTrack) -> &'static str {
    match audio {
        AudioTrack::Aac { .. } => "AAC",
        AudioTrack::Opus { .. } => "Opus",
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

#[derive(Debug, Deserialize)]
pub(crate) struct PlaylistQuery {
    #[serde(rename = "_HLS_msn")]
    msn: Option<u64>,
    #[serde(rename = "_HLS_part")]
    part: Option<u64>,
    token: Option<String>,
}

const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";

fn plain(status: StatusCode, message: impl Into<String>) -> Response {
    let mut message = message.into();
    message.push('\n');
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        message,
    )
        .into_response()
}

/// How a playlist request was let in, which decides who may cache the answer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Viewer {
    /// Viewing is open: shared caches (a CDN) may keep playlists.
    Anyone,
    /// A token let it in: only the viewer's own cache may keep it.
    WithToken,
}

impl Viewer {
    fn cache_control(self, max_age_secs: u32) -> String {
        match self {
            Viewer::Anyone => format!("public, max-age={max_age_secs}"),
            Viewer::WithToken => format!("private, max-age={max_age_secs}"),
        }
    }
}

/// 401 with the RFC 6750 challenge, so clients and proxies know a Bearer token is wanted.
fn unauthorized(message: impl Into<String>, invalid_token: bool) -> Box<Response> {
    let mut response = plain(StatusCode::UNAUTHORIZED, message);
    let challenge = if invalid_token {
        r#"Bearer realm="roomcast", error="invalid_token""#
    } else {
        r#"Bearer realm="roomcast""#
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    Box::new(response)
}

/// Viewing rule for HLS playlists: open in dev mode and with `--anonymous-viewers`, else a
/// token for the room with the subscribe grant (`?token=` or `Authorization: Bearer`). Media
/// URLs carry the broadcast id and need no token: they are only known from a playlist.
fn authorize_viewer(
    state: &AppState,
    room: &str,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<Viewer, Box<Response>> {
    let Some(credentials) = state.credentials.as_ref() else {
        return Ok(Viewer::Anyone);
    };
    if state.anonymous_viewers {
        return Ok(Viewer::Anyone);
    }
    let token = query_token.or_else(|| {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
    });
    let Some(token) = token else {
        return Err(unauthorized(
            "this server needs an access token with the subscribe grant: add ?token=… to the \
             playlist URL",
            false,
        ));
    };
    let now_unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    roomcast_auth::verify(credentials, token, now_unix)
        .and_then(|claims| {
            roomcast_auth::require_room(&claims, room)?;
            roomcast_auth::require_grant(&claims, roomcast_auth::Grant::Subscribe)
        })
        .map(|_| Viewer::WithToken)
        .map_err(|refused| {
            warn!(%room, code = refused.code(), "HLS playlist refused: {refused}");
            unauthorized(refused.to_string(), true)
        })
}

/// `GET /hls/<room>/index.m3u8`: the live playlist, with blocking reload.
pub(crate) async fn live_playlist(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    Query(query): Query<PlaylistQuery>,
    headers: HeaderMap,
) -> Response {
    let hls = &state.hls;
    hls.metrics
        .playlist_requests
        .fetch_add(1, Ordering::Relaxed);
    let viewer = match authorize_viewer(&state, &room, &headers, query.token.as_deref()) {
        Ok(viewer) => viewer,
        Err(refused) => return *refused,
    };
    if query.part.is_some() && query.msn.is_none() {
        return plain(
            StatusCode::BAD_REQUEST,
            "_HLS_part needs _HLS_msn (RFC 8216bis §6.2.5.2)",
        );
    }
    let Some(broadcast) = hls.broadcast(&room) else {
        return plain(
            StatusCode::NOT_FOUND,
            format!("nothing is broadcast in room {room:?} (HLS starts when someone publishes)"),
        );
    };
    let blocking = query.msn.is_some();
    if let Some(msn) = query.msn {
        // RFC 8216bis §6.2.5.2: hold the request until the playlist has the segment/part, at
        // most three target durations.
        let mut changes = broadcast.changed.subscribe();
        let timeout = {
            let stream = broadcast.stream();
            Duration::from_secs(3 * stream.target_duration().max(1))
        };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let readiness = broadcast.stream().readiness(msn, query.part);
            match readiness {
                Readiness::Ready => break,
                Readiness::TooFar => {
                    return plain(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "_HLS_msn={msn} _HLS_part={:?} is too far ahead of the live edge",
                            query.part
                        ),
                    );
                }
                Readiness::Wait => {}
            }
            if !broadcast.is_live() {
                break; // an ended playlist never grows: answer with what there is
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                hls.metrics
                    .blocking_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                return plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("segment {msn} did not appear in time; reload the playlist"),
                );
            }
        }
    }
    let playlist = broadcast.stream().playlist();
    let Some(playlist) = playlist else {
        return plain(
            StatusCode::NOT_FOUND,
            format!("room {room:?} is live but its first segment is not ready yet; retry shortly"),
        );
    };
    // A blocking response is the playlist at a given point and never changes (a room's next
    // broadcast continues the media sequence numbers, so the same URL never means another
    // broadcast); a plain reload must be fresh within about a part, and so must an ended
    // playlist: the room's next broadcast may start at any moment.
    let cache = if blocking && broadcast.is_live() {
        viewer.cache_control(60)
    } else {
        viewer.cache_control(1)
    };
    (
        [
            (header::CONTENT_TYPE, PLAYLIST_TYPE.to_owned()),
            (header::CACHE_CONTROL, cache),
        ],
        playlist,
    )
        .into_response()
}

/// `GET /hls/<room>/<broadcast>/<file>`: media of a live broadcast, or of a replay.
pub(crate) async fn media(
    State(state): State<Arc<AppState>>,
    Path((room, broadcast_id, file)): Path<(String, String, String)>,
    Query(query): Query<PlaylistQuery>,
    headers: HeaderMap,
) -> Response {
    let hls = &state.hls;
    if !valid_file_name(&file) {
        return plain(StatusCode::NOT_FOUND, format!("no such HLS file {file:?}"));
    }
    let live = hls
        .broadcast(&room)
        .filter(|b| b.id == broadcast_id)
        .or_else(|| {
            hls.replaced
                .get(&room)
                .map(|b| b.clone())
                .filter(|b| b.id == broadcast_id)
        });
    if let Some(broadcast) = live.filter(|_| file != "index.m3u8") {
        let mut changes = broadcast.changed.subscribe();
        let deadline = tokio::time::Instant::now()
            + 3 * hls.settings.part_target.max(Duration::from_millis(100))
            + Duration::from_secs(1);
        loop {
            let lookup = broadcast.stream().get(&file);
            match lookup {
                Lookup::Found(resource) => {
                    return immutable(resource.content_type, resource.bytes);
                }
                // The preload-hinted part: answer as soon as it exists.
                Lookup::Pending if broadcast.is_live() => {
                    if tokio::time::timeout_at(deadline, changes.changed())
                        .await
                        .is_err()
                    {
                        return plain(StatusCode::SERVICE_UNAVAILABLE, "the part is late; retry");
                    }
                }
                Lookup::Pending | Lookup::NotFound => break,
                Lookup::Gone => {
                    if hls.replays.is_none() {
                        return plain(
                            StatusCode::GONE,
                            format!("{file} slid out of the live window"),
                        );
                    }
                    break; // archived: the replay has it
                }
            }
        }
    }
    let Some(replays) = hls.replays.as_ref() else {
        return plain(StatusCode::NOT_FOUND, format!("no such HLS file {file:?}"));
    };
    let Some(replay) = replays
        .get(&broadcast_id)
        .filter(|r| r.room == room)
        .map(Some)
        .unwrap_or_else(|| {
            // Segments of the live broadcast that slid out of memory are on disk already.
            hls.broadcast(&room)
                .filter(|b| b.id == broadcast_id)
                .map(|_| ReplayInfo {
                    id: broadcast_id.clone(),
                    room: room.clone(),
                    host: String::new(),
                    started_at_ms: 0,
                    ended_at_ms: None,
                    duration_s: 0.0,
                })
        })
    else {
        return plain(
            StatusCode::NOT_FOUND,
            format!("no broadcast {broadcast_id:?} in room {room:?} (its replay may have expired)"),
        );
    };
    let mut viewer = Viewer::Anyone;
    if file == "index.m3u8" {
        match authorize_viewer(&state, &room, &headers, query.token.as_deref()) {
            Ok(allowed) => viewer = allowed,
            Err(refused) => return *refused,
        }
        if replay.ended_at_ms.is_none() {
            return plain(
                StatusCode::NOT_FOUND,
                "this broadcast is still live: play /hls/<room>/index.m3u8",
            );
        }
    }
    let Some(path) = replays.file_path(&replay.id, &file) else {
        return plain(StatusCode::NOT_FOUND, format!("no such HLS file {file:?}"));
    };
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            let content_type = content_type_for(&file);
            if file == "index.m3u8" {
                (
                    [
                        (header::CONTENT_TYPE, content_type.to_owned()),
                        (header::CACHE_CONTROL, viewer.cache_control(3600)),
                    ],
                    Body::from(bytes),
                )
                    .into_response()
            } else {
                immutable(content_type, Bytes::from(bytes))
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            plain(StatusCode::NOT_FOUND, format!("no such HLS file {file:?}"))
        }
        Err(error) => {
            warn!(path = %path.display(), "cannot read a replay file: {error}");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the replay file could not be read",
            )
        }
    }
}

fn content_type_for(file: &str) -> &'static str {
    if file.ends_with(".m3u8") {
        PLAYLIST_TYPE
    } else if file.ends_with(".m4s") {
        "video/iso.segment"
    } else {
        "video/mp4"
    }
}

fn immutable(content_type: &'static str, bytes: Bytes) -> Response {
    let mut response = Body::from(bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    response
}

/// The replays for the directory API.
pub fn replays_json(hls: &Hls) -> Vec<serde_json::Value> {
    let Some(replays) = hls.replays.as_ref() else {
        return Vec::new();
    };
    replays
        .list()
        .into_iter()
        .map(|r| {
            let time = |ms: u64| {
                humantime::format_rfc3339_millis(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
                    .to_string()
            };
            serde_json::json!({
                "id": r.id,
                "room": r.room,
                "host": r.host,
                "started_at": time(r.started_at_ms),
                "ended_at": r.ended_at_ms.map(time),
                "duration_s": (r.duration_s * 1000.0).round() / 1000.0,
                "url": format!("/hls/{}/{}/index.m3u8", r.room, r.id),
            })
        })
        .collect()
}
