//! The typed boundary between protocol edges (signaling today; RTMP, WHIP, HLS later) and the
//! SFU workers.
//!
//! Edges send [`Command`]s to the worker that owns the room (see [`crate::Sfu::command`]);
//! requests carry a oneshot reply channel. Everything that happens to a participant later
//! arrives on that participant's own bounded [`SessionEvent`] stream, given at join time.
//! No edge ever touches a str0m type: SDP and candidates cross this boundary as strings.

use std::fmt;

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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackSummary {
    pub id: TrackId,
    pub kind: MediaKind,
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
}

/// Commands from an edge to the worker that owns the room.
#[derive(Debug)]
pub enum Command {
    Join {
        room: String,
        participant: ParticipantId,
        name: String,
        /// Where this participant's events go. Bounded: a participant whose stream is full is
        /// removed with [`LeaveReason::SlowClient`] rather than stalling the worker.
        events: mpsc::Sender<SessionEvent>,
        reply: oneshot::Sender<Result<Vec<ParticipantSummary>, SfuError>>,
    },
    /// The participant's SDP offer; the reply is the SDP answer.
    Offer {
        participant: ParticipantId,
        sdp: String,
        reply: oneshot::Sender<Result<String, SfuError>>,
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
}

impl fmt::Display for SfuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SfuError::UnknownParticipant(id) => write!(f, "participant {id} is not in a room"),
            SfuError::AlreadyJoined(id) => write!(f, "participant {id} already joined"),
            SfuError::RoomFull { room, limit } => {
                write!(f, "room {room:?} is full ({limit} participants)")
            }
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
        }
    }
}

impl std::error::Error for SfuError {}
