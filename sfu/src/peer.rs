//! A participant on a worker: its str0m `Rtc`, what it publishes (producers) and what it
//! receives (consumers).
//!
//! Invariants:
//! - `rtc` is `None` until the participant's first SDP offer has been accepted.
//! - A consumer in [`ConsumerState::Active`] has a negotiated m-line and a send stream.
//! - Every [`ConsumerRef`] in a producer's list points at a live consumer slot, and every
//!   live consumer is listed by exactly one producer: the router keeps both sides in step.
//! - Nothing here allocates per packet: per-packet lookups scan small vectors that grow only
//!   when a new SSRC or payload type is first seen.

use std::net::SocketAddr;
use std::time::Instant;

use str0m::Rtc;
use str0m::change::SdpPendingOffer;
use str0m::format::PayloadParams;
use str0m::media::{Mid, Pt};
use str0m::rtp::Ssrc;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::api::{
    LeaveReason, MediaKind, MutedBy, ParticipantId, SessionEvent, Subscription, TrackId,
    TrackSource,
};
use crate::core::rewrite::RtpRewriter;
use crate::core::throttle::KeyframeRequestThrottle;

/// Index of a peer in the router's slab. Valid until that peer is removed.
pub(crate) type PeerIndex = usize;

pub(crate) struct Peer {
    pub id: ParticipantId,
    pub name: String,
    pub room: String,
    pub subscription: Subscription,
    pub span: tracing::Span,
    events: mpsc::Sender<SessionEvent>,
    pub rtc: Option<Rtc>,
    pub producers: Vec<Producer>,
    /// Slots; `None` is a free slot that the next consumer reuses.
    pub consumers: Vec<Option<Consumer>>,
    /// [`Subscription::Host`] only: the client's receive m-lines, each playing the room's host.
    pub host_slots: Vec<HostSlot>,
    pub pending_offer: Option<SdpPendingOffer>,
    /// The deadline this peer has in the router's timer heap, if any.
    pub scheduled_timeout: Option<Instant>,
    /// Remote addresses the router's demultiplexer maps to this peer.
    pub remote_addrs: Vec<SocketAddr>,
    /// DTLS is done: SRTP keys exist, so media written now reaches the client.
    pub media_connected: bool,
    /// Last time a datagram from this peer arrived (or its first offer, before any did).
    pub last_heard: Option<Instant>,
    /// Set when the peer must be removed; removal happens between packets, never during a
    /// fan-out, so producer and consumer lists stay stable while they are walked.
    pub removal: Option<LeaveReason>,
    /// This peer is its room's stage: the router copies its packets to the stage tap.
    pub on_stage: bool,
    /// Sources its latest offer declared for send m-lines, by mid (see [`crate::Command::Offer`]).
    pub declared_sources: Vec<(String, TrackSource)>,
}

pub(crate) struct Producer {
    pub track: TrackId,
    pub mid: Mid,
    pub kind: MediaKind,
    /// SSRCs seen on this m-line (one, or several with simulcast or a restart).
    pub ssrcs: Vec<Ssrc>,
    /// Payload types seen from the publisher, with their negotiated parameters.
    pub codecs: Vec<PayloadParams>,
    pub consumers: Vec<ConsumerRef>,
    pub keyframe_throttle: KeyframeRequestThrottle,
    /// Set for tracks fed by an ingest edge rather than a WebRTC session.
    pub ingest: Option<IngestTrack>,
    pub source: TrackSource,
    /// Muted by its owner or an admin: nothing is forwarded until it is unmuted.
    pub muted: Option<MutedBy>,
}

impl Producer {
    pub fn is_muted(&self) -> bool {
        self.muted.is_some()
    }
}

/// The sending side of an ingest track: the router numbers its packets.
pub(crate) struct IngestTrack {
    pub params: PayloadParams,
    /// Extended sequence number of the next packet.
    pub next_seq: u64,
}

/// A client receive m-line that plays the room host's track of its kind.
pub(crate) struct HostSlot {
    pub kind: MediaKind,
    pub mid: Mid,
    /// The consumer slot while bound to a producer.
    pub consumer: Option<usize>,
    /// The rewriter of the last consumer, kept while unbound so the subscriber's sequence
    /// numbers and timestamps continue across host changes.
    pub rewriter: Option<RtpRewriter>,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConsumerRef {
    pub peer: PeerIndex,
    pub slot: usize,
}

pub(crate) struct Consumer {
    /// The publishing peer and its track.
    pub source_peer: PeerIndex,
    pub source_participant: ParticipantId,
    pub track: TrackId,
    pub kind: MediaKind,
    pub source: TrackSource,
    pub state: ConsumerState,
    pub rewriter: RtpRewriter,
    /// Publisher payload type → this subscriber's payload type.
    pub pt_map: Vec<(Pt, Pt)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConsumerState {
    /// Waiting for the next server offer.
    ToOffer,
    /// In the outstanding server offer.
    Offered(Mid),
    /// Negotiated: packets flow on `ssrc`.
    Active { mid: Mid, ssrc: Ssrc },
    /// The producer is gone: the m-line must be stopped in the next offer.
    ToStop(Mid),
    /// Stopped in the outstanding offer; the slot is freed when the answer arrives.
    Stopping(Mid),
}

impl ConsumerState {
    pub fn mid(self) -> Option<Mid> {
        match self {
            ConsumerState::ToOffer => None,
            ConsumerState::Offered(mid)
            | ConsumerState::Active { mid, .. }
            | ConsumerState::ToStop(mid)
            | ConsumerState::Stopping(mid) => Some(mid),
        }
    }
}

impl Peer {
    pub fn new(
        id: ParticipantId,
        name: String,
        room: String,
        subscription: Subscription,
        events: mpsc::Sender<SessionEvent>,
    ) -> Self {
        let span =
            tracing::info_span!("participant", room = %room, participant = %id, name = %name);
        Peer {
            id,
            name,
            room,
            subscription,
            span,
            events,
            rtc: None,
            producers: Vec::new(),
            consumers: Vec::new(),
            host_slots: Vec::new(),
            pending_offer: None,
            scheduled_timeout: None,
            remote_addrs: Vec::new(),
            media_connected: false,
            last_heard: None,
            removal: None,
            on_stage: false,
            declared_sources: Vec::new(),
        }
    }

    /// Queue an event for the participant's session. A full queue means the session cannot
    /// keep up: the participant is removed rather than the worker waiting for it.
    pub fn notify(&mut self, event: SessionEvent) {
        if self.removal.is_some() {
            return;
        }
        match self.events.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.span.in_scope(|| {
                    tracing::warn!(
                        "signaling session is not reading its events; removing participant"
                    )
                });
                self.removal = Some(LeaveReason::SlowClient);
            }
            Err(TrySendError::Closed(_)) => self.removal = Some(LeaveReason::Disconnected),
        }
    }

    /// Send the final event; used during removal, when `removal` is already set.
    pub fn notify_removed(&mut self, reason: LeaveReason) {
        let _ = self.events.try_send(SessionEvent::Removed { reason });
    }

    pub fn mark_for_removal(&mut self, reason: LeaveReason) {
        if self.removal.is_none() {
            self.removal = Some(reason);
        }
    }

    /// The producer that receives `ssrc`, learning the SSRC from str0m on first sight.
    pub fn producer_for_ssrc(&mut self, ssrc: Ssrc) -> Option<usize> {
        if let Some(index) = self.producers.iter().position(|p| p.ssrcs.contains(&ssrc)) {
            return Some(index);
        }
        let mid = self.rtc.as_mut()?.direct_api().stream_rx(&ssrc)?.mid();
        let index = self.producers.iter().position(|p| p.mid == mid)?;
        self.producers[index].ssrcs.push(ssrc);
        Some(index)
    }

    /// The negotiated parameters of payload type `pt` on producer `index`.
    pub fn producer_codec(&mut self, index: usize, pt: Pt) -> Option<PayloadParams> {
        let producer = &mut self.producers[index];
        if let Some(ingest) = &producer.ingest {
            return Some(ingest.params);
        }
        if let Some(params) = producer.codecs.iter().find(|p| p.pt() == pt) {
            return Some(*params);
        }
        let params = *self.rtc.as_ref()?.codec_config().find(|p| p.pt() == pt)?;
        producer.codecs.push(params);
        Some(params)
    }

    /// A free consumer slot (reused before the vector grows).
    pub fn insert_consumer(&mut self, consumer: Consumer) -> usize {
        if let Some(slot) = self.consumers.iter().position(Option::is_none) {
            self.consumers[slot] = Some(consumer);
            slot
        } else {
            self.consumers.push(Some(consumer));
            self.consumers.len() - 1
        }
    }

    pub fn consumer_slot_for_mid(&self, mid: Mid) -> Option<usize> {
        self.consumers
            .iter()
            .position(|c| c.as_ref().is_some_and(|c| c.state.mid() == Some(mid)))
    }
}

impl Consumer {
    pub fn new(
        source_peer: PeerIndex,
        source_participant: ParticipantId,
        track: TrackId,
        kind: MediaKind,
        source: TrackSource,
    ) -> Self {
        Consumer {
            source_peer,
            source_participant,
            track,
            kind,
            source,
            state: ConsumerState::ToOffer,
            rewriter: RtpRewriter::new(clock_rate(kind), kind == MediaKind::Video),
            pt_map: Vec::new(),
        }
    }

    /// This subscriber's payload type for the publisher's `params`.
    pub fn map_payload_type(&mut self, rtc: &Rtc, params: &PayloadParams) -> Option<Pt> {
        if let Some((_, local)) = self
            .pt_map
            .iter()
            .find(|(remote, _)| *remote == params.pt())
        {
            return Some(*local);
        }
        let local = rtc.codec_config().match_params(*params)?.pt();
        self.pt_map.push((params.pt(), local));
        Some(local)
    }
}

fn clock_rate(kind: MediaKind) -> u32 {
    match kind {
        MediaKind::Audio => 48_000,
        MediaKind::Video => 90_000,
    }
}
