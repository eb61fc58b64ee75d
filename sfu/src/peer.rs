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
use str0m::media::{Mid, Pt, Rid};
use str0m::rtp::Ssrc;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::api::{
    LeaveReason, MediaKind, MutedBy, ParticipantId, SessionEvent, Subscription, TrackId,
    TrackSource,
};
use crate::core::probing::DeficitProbing;
use crate::core::rewrite::RtpRewriter;
use crate::core::simulcast::{
    Layer, LayerForwarder, LayerInfo, LayerSwitcher, MAX_LAYERS, Vp8PictureIds,
};
use crate::core::throttle::KeyframeRequestThrottle;

/// A layer silent this long, and not paused by dynacast, counts as stopped by its publisher.
pub(crate) const LAYER_STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

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
    /// Receive m-lines of a client offer that no track could be bound to (the track left
    /// before the offer arrived): stopped in the next server offer.
    pub stray_receive_mids: Vec<Mid>,
    /// The latest send-side bandwidth estimate towards this peer (str0m's TWCC estimator);
    /// `None` until one exists (the client negotiated no transport-wide CC, or no media yet).
    pub estimate_bps: Option<u64>,
    /// The (minimum, desired) bitrates last given to the estimator.
    pub bwe_wanted: Option<(u64, u64)>,
    /// Probes for bandwidth this peer is short of (see [`DeficitProbing`]).
    pub probing: DeficitProbing,
}

pub(crate) struct Producer {
    pub track: TrackId,
    pub mid: Mid,
    pub kind: MediaKind,
    /// SSRCs seen on this m-line (one, or several with simulcast or a restart), each with the
    /// layer it carries.
    pub ssrcs: Vec<(Ssrc, Layer)>,
    /// The encodings, lowest first: one for a plain track, up to [`MAX_LAYERS`] with
    /// simulcast (in the order of the offer's `a=simulcast` line).
    pub layers: Vec<ProducerLayer>,
    /// Payload types seen from the publisher, with their negotiated parameters.
    pub codecs: Vec<PayloadParams>,
    pub consumers: Vec<ConsumerRef>,
    /// When its first packet arrived.
    pub first_packet: Option<Instant>,
    /// Set for tracks fed by an ingest edge rather than a WebRTC session.
    pub ingest: Option<IngestTrack>,
    pub source: TrackSource,
    /// Muted by its owner or an admin: nothing is forwarded until it is unmuted.
    pub muted: Option<MutedBy>,
    /// Video on the stage: the best layer that flows, as one stream for the stage tap.
    /// Created at the first packet on stage, dropped when the peer leaves the stage.
    pub stage: Option<LayerForwarder>,
}

impl Producer {
    pub fn new(
        track: TrackId,
        mid: Mid,
        kind: MediaKind,
        source: TrackSource,
        rids: &[Rid],
    ) -> Self {
        let layers = if rids.len() > 1 && kind == MediaKind::Video {
            rids.iter()
                .take(MAX_LAYERS)
                .map(|&rid| ProducerLayer::new(Some(rid)))
                .collect()
        } else {
            vec![ProducerLayer::new(None)]
        };
        Producer {
            track,
            mid,
            kind,
            source,
            ssrcs: Vec::new(),
            layers,
            codecs: Vec::new(),
            consumers: Vec::new(),
            first_packet: None,
            ingest: None,
            muted: None,
            stage: None,
        }
    }

    pub fn is_muted(&self) -> bool {
        self.muted.is_some()
    }

    pub fn is_simulcast(&self) -> bool {
        self.layers.len() > 1
    }

    pub fn top_layer(&self) -> Layer {
        (self.layers.len() - 1) as Layer
    }
}

/// One encoding of a producer: what it costs, how wide it is, whether it flows.
pub(crate) struct ProducerLayer {
    /// RTP stream id (`None` for a plain track).
    pub rid: Option<Rid>,
    pub keyframe_throttle: KeyframeRequestThrottle,
    /// Payload bytes since the last allocation tick.
    pub bytes: u64,
    /// Smoothed bitrate, 0 until measured.
    pub bitrate_bps: u64,
    /// Picture width from the last VP8 keyframe, 0 when unknown.
    pub width: u16,
    pub last_packet: Option<Instant>,
    /// Dynacast: the publisher was asked to stop this encoding (no subscriber wants it).
    pub paused: bool,
    /// Since when no subscriber has wanted this layer (pausing waits a little, so a layer
    /// is not flapped off and on).
    pub unwanted_since: Option<Instant>,
    /// When the publisher was last asked to resume it (its packets take a moment to come).
    pub resumed_at: Option<Instant>,
}

impl ProducerLayer {
    fn new(rid: Option<Rid>) -> Self {
        ProducerLayer {
            rid,
            keyframe_throttle: KeyframeRequestThrottle::default(),
            bytes: 0,
            bitrate_bps: 0,
            width: 0,
            last_packet: None,
            paused: false,
            unwanted_since: None,
            resumed_at: None,
        }
    }

    /// Whether the publisher sends this layer or would on request. A layer paused by
    /// dynacast can be resumed; one that sent nothing for [`LAYER_STALE_AFTER`] (or never,
    /// while the track's other layers have flowed that long) was stopped by the publisher
    /// itself. `track_started`: the track's first packet on any layer.
    pub fn available(&self, now: Instant, track_started: Option<Instant>) -> bool {
        let recent = |at: Option<Instant>| {
            at.is_some_and(|at| now.saturating_duration_since(at) < LAYER_STALE_AFTER)
        };
        if self.paused || recent(self.resumed_at) {
            return true;
        }
        match self.last_packet {
            Some(_) => recent(self.last_packet),
            None => track_started.is_none() || recent(track_started),
        }
    }

    /// The layer as the allocator sees it at `now`; `index` of `count` picks a nominal
    /// bitrate (1.2 Mbit/s at the top, a third per step down) until one is measured.
    pub fn info(
        &self,
        index: usize,
        count: usize,
        now: Instant,
        track_started: Option<Instant>,
    ) -> LayerInfo {
        let nominal = 1_200_000 / 3u64.pow((count - 1 - index) as u32);
        LayerInfo {
            bitrate_bps: if self.bitrate_bps > 0 {
                self.bitrate_bps
            } else {
                nominal
            },
            width: self.width,
            available: self.available(now, track_started),
        }
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
    /// Which layer this subscriber gets (video; a plain track has the one layer 0).
    pub switcher: LayerSwitcher,
    pub picture_ids: Vp8PictureIds,
    /// What the client said about the tile showing this track (`track_settings`).
    pub visible: bool,
    pub rendered_width: Option<u32>,
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
            stray_receive_mids: Vec::new(),
            estimate_bps: None,
            bwe_wanted: None,
            probing: DeficitProbing::default(),
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

    /// The producer and layer that receive `ssrc`, learning the SSRC from str0m on first
    /// sight (its m-line, and its RTP stream id for simulcast).
    pub fn producer_for_ssrc(&mut self, ssrc: Ssrc) -> Option<(usize, Layer)> {
        for (index, producer) in self.producers.iter().enumerate() {
            if let Some(&(_, layer)) = producer.ssrcs.iter().find(|(s, _)| *s == ssrc) {
                return Some((index, layer));
            }
        }
        let mut api = self.rtc.as_mut()?.direct_api();
        let stream = api.stream_rx(&ssrc)?;
        let (mid, rid) = (stream.mid(), stream.rid());
        let index = self.producers.iter().position(|p| p.mid == mid)?;
        let producer = &mut self.producers[index];
        let layer = match rid {
            Some(rid) if producer.is_simulcast() => {
                producer.layers.iter().position(|l| l.rid == Some(rid))? as Layer
            }
            _ => 0,
        };
        producer.ssrcs.push((ssrc, layer));
        Some((index, layer))
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
            switcher: LayerSwitcher::starting_at(0),
            picture_ids: Vp8PictureIds::default(),
            visible: true,
            rendered_width: None,
            pt_map: Vec::new(),
        }
    }

    /// Start the outgoing stream afresh (a new m-line): rewriting and layer choice.
    pub fn reset_stream(&mut self) {
        self.rewriter = RtpRewriter::new(clock_rate(self.kind), self.kind == MediaKind::Video);
        self.switcher = LayerSwitcher::starting_at(self.switcher.target().unwrap_or(0));
        self.picture_ids = Vp8PictureIds::default();
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
