//! The stage tap: what a room's stage publishes, handed to the HLS packager.
//!
//! Every room has at most one *stage*: the participant whose media is packaged for HLS and
//! replays. By default it is the room's host (the first member, in join order, that publishes
//! a track — the same participant WHEP viewers watch); someone with the admin grant can choose
//! another member with [`crate::Command::SetStage`]. The router decides the stage and reports
//! every change as a [`StageChange`]; for a stage with a WebRTC session it also copies each RTP
//! packet it forwards into a [`StageRtp`]. Ingest participants (RTMP) are never
//! tapped: their edge packages the original AAC itself, with no second transcode.
//!
//! Invariants:
//! - The tap never blocks the worker: packets go through a bounded channel with `try_send`;
//!   when the packager falls behind they are dropped and counted, and the packager recovers at
//!   the next keyframe.
//! - The per-packet event allocates nothing: the payload is the forwarding path's shared
//!   `Arc<[u8]>`, and everything else is `Copy`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::mpsc;

use crate::api::{MediaKind, ParticipantId};

/// A codec the packager cares about; anything else is reported as [`StageCodec::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageCodec {
    H264,
    Opus,
    Other,
}

/// A change of a room's stage: now `stage` (`None`: nobody publishes in the room any more, or
/// the room closed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageChange {
    pub room: Arc<str>,
    pub stage: Option<StageSource>,
}

/// The participant on a room's stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageSource {
    pub participant: ParticipantId,
    pub name: String,
    /// An ingest participant (RTMP): its edge feeds the packager, the router sends no packets.
    pub ingest: bool,
}

/// One RTP packet from the stage, as received (before any per-subscriber rewriting).
#[derive(Debug, Clone)]
pub struct StageRtp {
    pub participant: ParticipantId,
    pub kind: MediaKind,
    pub codec: StageCodec,
    pub seq: u16,
    pub rtp_timestamp: u32,
    pub marker: bool,
    pub arrival: Instant,
    pub payload: Arc<[u8]>,
}

/// Where the router sends stage events: cloned into every worker.
///
/// Changes (rare, must not be lost) and packets (many, may be dropped) travel on separate
/// channels; a packet of a participant the packager does not yet know as a stage is ignored.
#[derive(Debug, Clone)]
pub struct StageTap {
    changes: mpsc::UnboundedSender<StageChange>,
    packets: mpsc::Sender<StageRtp>,
    dropped: Arc<AtomicU64>,
}

/// The packager's end of a [`StageTap`].
#[derive(Debug)]
pub struct StageReceiver {
    pub changes: mpsc::UnboundedReceiver<StageChange>,
    pub packets: mpsc::Receiver<StageRtp>,
}

impl StageTap {
    /// A tap with room for `capacity` queued packets, and the receiving end for the packager.
    pub fn channel(capacity: usize) -> (StageTap, StageReceiver) {
        let (changes, changes_rx) = mpsc::unbounded_channel();
        let (packets, packets_rx) = mpsc::channel(capacity);
        let tap = StageTap {
            changes,
            packets,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        let receiver = StageReceiver {
            changes: changes_rx,
            packets: packets_rx,
        };
        (tap, receiver)
    }

    pub fn change(&self, change: StageChange) {
        let _ = self.changes.send(change);
    }

    /// Queue `packet` unless the packager is behind (then it is dropped and counted).
    pub fn packet(&self, packet: StageRtp) {
        if self.packets.try_send(packet).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Packets dropped because the packager was behind (or gone).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
