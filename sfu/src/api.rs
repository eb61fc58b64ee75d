//! The typed boundary between protocol edges (signaling today; RTMP, WHIP, HLS later) and the
//! SFU workers.
//!
//! Edges send [`Command`]s to the worker that owns the room (see [`crate::Sfu::command`]);
//! requests carry a oneshot reply channel. Everything that happens to a participant later
//! arrives on that participant's own bounded [`SessionEvent`] stream, given at join time.
//! No edge ever touches a str0m type: SDP and candidates cross this boundary as strings.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

/// A participant, unique in this process for its lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ParticipantId(pub u64);

/// A published track, unique in this process for its lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TrackId(pub u64);

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "P{}", self.0)
    }
}

impl fmt::Display for TrackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "T{}", self.0)
    }
}

impl ParticipantId {
    /// A fresh id. Ids are never reused while the process runs.
    pub fn next() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ParticipantId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Audio,
    Video,
}

impl From<str0m::media::MediaKind> for MediaKind {
    fn from(kind: str0m::media::MediaKind) -> Self {
        match kind {
            str0m::media::MediaKind::Audio => MediaKind::Audio,
            str0m::media::MediaKind::Video => MediaKind::Video,
        }
    }
}

impl From<MediaKind> for str0m::media::MediaKind {
    fn from(kind: MediaKind) -> Self {
        match kind {
            MediaKind::Audio => str0m::media::MediaKind::Audio,
            MediaKind::Video => str0m::media::MediaKind::Video,
        }
    }
}

/// Why a participant left a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// It asked to leave.
    Left,
    /// Its signaling connection closed.
    Disconnected,
    /// Its media connection failed or timed out (ICE/DTLS).
    MediaTimeout,
    /// It could not keep up with its own event stream.
    SlowClient,
    /// The server is shutting down.
    ServerShutdown,
    /// An admin removed it (admin API or a participant with the admin grant).
    Kicked,
    /// An admin closed the room.
    RoomClosed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackSummary {
    pub id: TrackId,
    pub kind: MediaKind,
    pub source: TrackSource,
    /// The SFU is not forwarding it (see [`Command::SetMuted`]).
    pub muted: bool,
}

/// What a track carries, as its publisher declared it. Clients lay tiles out by it (a screen
/// share is shown large); the SFU treats every source alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackSource {
    Microphone,
    Camera,
    Screen,
}

impl TrackSource {
    /// The source of a track nobody declared: the microphone for audio, the camera for video.
    pub fn default_for(kind: MediaKind) -> Self {
        match kind {
            MediaKind::Audio => TrackSource::Microphone,
            MediaKind::Video => TrackSource::Camera,
        }
    }
}

/// Who muted a track. A participant may mute and unmute its own tracks; a track an admin
/// muted stays muted until an admin unmutes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MutedBy {
    /// The participant itself (microphone off, camera off).
    #[serde(rename = "self")]
    Owner,
    /// A participant or API client with the admin grant.
    Admin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantSummary {
    pub id: ParticipantId,
    pub name: String,
    pub tracks: Vec<TrackSummary>,
}

/// One m-line of a server offer and the track it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedTrack {
    pub mid: String,
    pub participant: ParticipantId,
    pub track: TrackId,
    pub kind: MediaKind,
    pub source: TrackSource,
}

/// The server's answer to a client offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferAnswer {
    pub sdp: String,
    /// Every m-line the server sends on after this answer and the track it carries (as in
    /// [`SessionEvent::Offer`]); includes the offer's `receive` m-lines it bound.
    pub tracks: Vec<OfferedTrack>,
}

/// What a participant receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subscription {
    /// Every track in the room, each offered by the server as it is published (rooms).
    AllTracks,
    /// Nothing: a publish-only participant (RTMP or WHIP ingest).
    Nothing,
    /// The room's host: the first audio and first video publisher, played on the m-lines of the
    /// client's own offer and followed across host changes without renegotiation (WHEP
    /// viewers). Such participants are invisible to the room: no join/leave events either way.
    Host,
}

/// A frame from an ingest edge (RTMP), already packetized into RTP payloads.
#[derive(Debug)]
pub struct IngestFrame {
    /// Identifies the source session: a new value (the encoder reconnected) makes subscribers'
    /// rewriters treat what follows as a restarted stream.
    pub source_id: u32,
    /// Media timestamp in the track's RTP clock (90 kHz video, 48 kHz Opus).
    pub rtp_timestamp: u32,
    /// When this frame was captured, on the same clock for every track of the participant:
    /// str0m maps it to NTP in sender reports, which is how receivers sync audio and video.
    pub capture_time: Instant,
    /// The frame is an H.264 IDR access unit (always true for audio).
    pub keyframe: bool,
    /// RTP payloads in order; the marker bit of each.
    pub payloads: Vec<(Arc<[u8]>, bool)>,
}

/// A room as the HTTP API and viewer pages see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    /// Participants, viewers included.
    pub participants: usize,
    /// Participants that publish nothing (WHEP viewers and silent room members).
    pub viewers: usize,
    /// The first participant (in join order) that publishes a track.
    pub host: Option<ParticipantSummary>,
    /// When its first member joined (on the worker's clock).
    pub opened_at: Instant,
}

/// Commands from an edge to the worker that owns the room.
#[derive(Debug)]
pub enum Command {
    Join {
        room: String,
        participant: ParticipantId,
        name: String,
        subscription: Subscription,
        /// Where this participant's events go. Bounded: a participant whose stream is full is
        /// removed with [`LeaveReason::SlowClient`] rather than stalling the worker.
        events: mpsc::Sender<SessionEvent>,
        reply: oneshot::Sender<Result<Vec<ParticipantSummary>, SfuError>>,
    },
    /// The participant's SDP offer; the reply is the SDP answer.
    Offer {
        participant: ParticipantId,
        sdp: String,
        /// Sources of the offer's send m-lines, by mid, where they are not the default
        /// ([`TrackSource::default_for`]): a screen share. Applies to tracks this offer adds.
        sources: Vec<(String, TrackSource)>,
        /// Receive m-lines of the offer, by mid, and the track each is for: a client that knows
        /// the room's tracks when it first offers (they are in `joined`) receives them on its
        /// first negotiation instead of waiting for the server's offer. A mid whose track is
        /// gone, or taken by an earlier mid, is stopped in the server's next offer.
        receive: Vec<(String, TrackId)>,
        reply: oneshot::Sender<Result<OfferAnswer, SfuError>>,
    },
    /// The participant's answer to the last [`SessionEvent::Offer`].
    Answer {
        participant: ParticipantId,
        sdp: String,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    /// A trickled remote ICE candidate (`candidate:…` attribute value).
    Candidate {
        participant: ParticipantId,
        candidate: String,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    Leave {
        participant: ParticipantId,
        reason: LeaveReason,
    },
    /// Add a track fed by [`Command::IngestFrame`] to a participant without a WebRTC session
    /// (an RTMP host): H.264 for video, Opus for audio.
    PublishIngest {
        participant: ParticipantId,
        kind: MediaKind,
        reply: oneshot::Sender<Result<TrackId, SfuError>>,
    },
    /// One frame for an ingest track; forwarded to every subscriber.
    IngestFrame {
        participant: ParticipantId,
        track: TrackId,
        frame: IngestFrame,
    },
    RoomInfo {
        room: String,
        reply: oneshot::Sender<Option<RoomInfo>>,
    },
    /// Every room on the worker, by name.
    ListRooms {
        reply: oneshot::Sender<Vec<(String, RoomInfo)>>,
    },
    /// Remove `participant` from `room` (an admin's kick). Replies whether it was there.
    Kick {
        room: String,
        participant: ParticipantId,
        reply: oneshot::Sender<bool>,
    },
    /// Remove everyone from `room`; replies how many were removed.
    CloseRoom {
        room: String,
        reply: oneshot::Sender<usize>,
    },
    /// Stop (or resume) forwarding `participant`'s tracks in `room`: one track, or all of them.
    /// Replies with the tracks whose state changed. An owner cannot unmute what an admin muted
    /// ([`SfuError::MutedByAdmin`]).
    SetMuted {
        room: String,
        participant: ParticipantId,
        track: Option<TrackId>,
        muted: bool,
        by: MutedBy,
        reply: oneshot::Sender<Result<Vec<TrackId>, SfuError>>,
    },
    /// Put `participant` on `room`'s stage (the media packaged for HLS and replays), or go back
    /// to the default (the host) with `None`. Replies with the stage now in effect.
    SetStage {
        room: String,
        participant: Option<ParticipantId>,
        reply: oneshot::Sender<Result<Option<ParticipantId>, SfuError>>,
    },
    /// A subscriber's report about the tile showing `track`: hidden tiles receive nothing,
    /// and no layer wider than `rendered_width` (device pixels) is sent
    /// (see [`crate::core::simulcast`]).
    TrackSettings {
        participant: ParticipantId,
        track: TrackId,
        visible: bool,
        rendered_width: Option<u32>,
        reply: oneshot::Sender<Result<(), SfuError>>,
    },
    /// Ask the stage's publisher for a keyframe (the HLS packager cuts segments on them; WebRTC
    /// encoders send one only when asked). Throttled like any keyframe request.
    RequestStageKeyframe { participant: ParticipantId },
    /// Stop the worker after removing every participant with [`LeaveReason::ServerShutdown`].
    Shutdown,
}

/// Events for one participant, in the order they happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    ParticipantJoined(ParticipantSummary),
    ParticipantLeft {
        participant: ParticipantId,
        reason: LeaveReason,
    },
    TrackPublished {
        participant: ParticipantId,
        track: TrackSummary,
    },
    TrackUnpublished {
        participant: ParticipantId,
        track: TrackId,
    },
    /// A track was muted or unmuted (by its owner or an admin): the SFU stops (or resumes)
    /// forwarding it.
    TrackMuted {
        participant: ParticipantId,
        track: TrackId,
        muted: bool,
        by: MutedBy,
    },
    /// The room's dominant speaker changed (see [`crate::core::speaker`]); `None` once the
    /// last one left.
    ActiveSpeaker {
        participant: Option<ParticipantId>,
    },
    /// The room's stage (what HLS viewers and replays see) is now `participant`.
    StageChanged {
        participant: Option<ParticipantId>,
    },
    /// Dynacast, to a simulcast publisher: turn these encodings (by RTP stream id) on or off,
    /// as subscribers need them.
    SetLayers {
        track: TrackId,
        layers: Vec<(String, bool)>,
    },
    /// A server offer to pass to the client; answer with [`Command::Answer`].
    Offer {
        sdp: String,
        tracks: Vec<OfferedTrack>,
    },
    /// The SFU removed this participant (its media failed, it was too slow, shutdown).
    /// No further events follow.
    Removed {
        reason: LeaveReason,
    },
}

/// Why a command failed. The signaling edge maps each to a stable protocol error code; the
/// display text is for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SfuError {
    /// The participant is not in a room on this worker (never joined, or already removed).
    UnknownParticipant(ParticipantId),
    /// The participant already joined.
    AlreadyJoined(ParticipantId),
    /// The room has reached its participant limit.
    RoomFull { room: String, limit: usize },
    /// Opening another room would exceed the node's room limit.
    TooManyRooms { limit: usize },
    /// The SDP could not be parsed or negotiated.
    BadSdp(String),
    /// An answer arrived while no server offer was outstanding.
    NoPendingOffer,
    /// A client offer was ignored because the server's own offer is outstanding (glare; the
    /// client must answer the server's offer and then offer again).
    OfferCollision,
    /// The ICE candidate could not be parsed.
    BadCandidate(String),
    /// The worker has stopped (shutdown or crash).
    WorkerGone,
    /// Ingest tracks are only for participants without a WebRTC session.
    NotIngest(ParticipantId),
    /// The participant has no such track.
    UnknownTrack(TrackId),
    /// The owner of a track tried to unmute it while an admin keeps it muted.
    MutedByAdmin(TrackId),
}

impl fmt::Display for SfuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SfuError::UnknownParticipant(id) => write!(f, "participant {id} is not in a room"),
            SfuError::AlreadyJoined(id) => write!(f, "participant {id} already joined"),
            SfuError::RoomFull { room, limit } => {
                write!(f, "room {room:?} is full ({limit} participants)")
            }
            SfuError::TooManyRooms { limit } => write!(
                f,
                "this server already hosts its limit of {limit} rooms; join an existing room or try later"
            ),
            SfuError::BadSdp(why) => write!(f, "SDP rejected: {why}"),
            SfuError::NoPendingOffer => {
                write!(f, "answer received but no server offer is outstanding")
            }
            SfuError::OfferCollision => write!(
                f,
                "offer ignored: the server's own offer is outstanding; answer it, then offer again"
            ),
            SfuError::BadCandidate(why) => write!(f, "ICE candidate rejected: {why}"),
            SfuError::WorkerGone => write!(f, "the media worker for this room has stopped"),
            SfuError::UnknownTrack(id) => write!(f, "no track {id} on that participant"),
            SfuError::MutedByAdmin(id) => write!(
                f,
                "track {id} was muted by a host; only a host (admin grant) can unmute it"
            ),
            SfuError::NotIngest(id) => {
                write!(
                    f,
                    "participant {id} has a WebRTC session; it cannot take ingest tracks"
                )
            }
        }
    }
}

impl std::error::Error for SfuError {}
