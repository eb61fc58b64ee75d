//! The sans-IO heart of a worker: rooms, peers, the producer → consumer table, and the
//! forwarding path.
//!
//! The router never reads a clock or touches a socket. The worker shell (or a test) feeds it
//! datagrams, commands and timeouts, each with the current time, and hands it a
//! [`Transmit`] sink for outgoing datagrams. That makes whole rooms testable faster than real
//! time with in-memory str0m peers.
//!
//! The forwarding path (see `docs/packet-flow.md`): [`Router::handle_datagram`] demultiplexes
//! by remote address → the publisher's `Rtc` decrypts and emits `Event::RtpPacket` → the
//! packet is queued → [`Router::forward`] walks the producer's consumer list, rewrites
//! sequence number and timestamp per consumer, and writes the same payload (`Arc<[u8]>`,
//! shared, never copied) to each subscriber's send stream → each subscriber `Rtc` encrypts
//! and its datagrams go to the sink.
//!
//! Invariants:
//! - str0m's single-mutation rule: every mutation of an `Rtc` is followed by a full drain of
//!   `poll_output` ([`drain`]) before the next mutation of the same `Rtc`.
//! - Graph changes (removals, new producers) happen between packets, never while a consumer
//!   list is being walked: [`drain`] only queues what it sees.
//! - In steady state the forwarding path allocates nothing and takes no lock: queues and
//!   per-peer vectors keep their capacity; counters are per-worker relaxed atomics.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::bwe::{Bitrate, BweKind};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::config::DtlsCert;
use str0m::format::{Codec, PayloadParams};
use str0m::media::{Direction, KeyframeRequestKind, MediaAdded, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, Ssrc, Vp8Descriptor};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tracing::{debug, info, warn};

use crate::alloc_audit::engine;
use crate::api::{
    Command, IngestFrame, LeaveReason, MediaKind, MutedBy, OfferAnswer, OfferedTrack,
    ParticipantId, ParticipantSummary, RoomInfo, SessionEvent, SfuError, Subscription, TrackId,
    TrackSource, TrackSummary,
};
use crate::core::keyframe::{VideoCodec, starts_keyframe, vp8_keyframe_size};
use crate::core::rewrite::{DropReason, IncomingPacket, Rewrite};
use crate::core::simulcast::{
    self, Forwarded, Layer, LayerDecision, LayerForwarder, LayerInfo, Priority, TrackDemand,
};
use crate::core::speaker::{self, SpeakerDetector};
use crate::metrics::WorkerMetrics;
use crate::msid;
use crate::peer::{
    Consumer, ConsumerRef, ConsumerState, HostSlot, IngestTrack, Peer, PeerIndex, Producer,
};
use crate::stage::{StageChange, StageCodec, StageRtp, StageSource, StageTap};

/// Where the router's outgoing datagrams go: the worker's UDP socket, or a test's queue.
pub trait Transmit {
    fn send(&mut self, destination: SocketAddr, datagram: &[u8]);
}

/// Settings a router needs from the server configuration.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// The address the worker's socket receives on, as announced in ICE candidates.
    pub announced_addr: SocketAddr,
    pub max_participants_per_room: usize,
    /// The node's room limit, shared by every worker.
    pub room_budget: Arc<RoomBudget>,
    /// Where stage changes and stage packets go (see [`crate::stage`]); `None`: no packager.
    pub stage_tap: Option<StageTap>,
}

/// How many rooms the node may still open: one counter shared by all workers (a room opens on
/// its first join and closes when its last participant leaves). Touched only on those two
/// events, never per packet.
#[derive(Debug)]
pub struct RoomBudget {
    max: usize,
    open: std::sync::atomic::AtomicUsize,
}

impl RoomBudget {
    pub fn new(max: usize) -> Self {
        RoomBudget {
            max,
            open: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Take a room from the budget; false when the node is at its limit.
    fn try_open(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max).then_some(open + 1)
            })
            .is_ok()
    }

    fn close(&self) {
        use std::sync::atomic::Ordering;
        let _ = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                open.checked_sub(1)
            });
    }
}

/// Longest the router sleeps when no peer needs time.
const IDLE_TIMEOUT: Duration = Duration::from_millis(500);

/// A peer with a media session that sends nothing for this long is gone (tab killed, network
/// lost). Browsers send RTCP about every second and ICE consent checks every ~5 s
/// ([RFC 7675](https://www.rfc-editor.org/rfc/rfc7675)); a closed WebSocket removes a
/// participant much sooner, so this is the backstop for a signaling connection that outlives
/// its media.
pub const MEDIA_SILENCE_TIMEOUT: Duration = Duration::from_secs(15);

/// How often peers are checked against [`MEDIA_SILENCE_TIMEOUT`].
const LIVENESS_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How often each subscriber's bandwidth is shared out again (layer targets) and unwanted
/// layers are paused (dynacast). Layer bitrates are measured over this window.
const ALLOCATION_INTERVAL: Duration = Duration::from_millis(500);

/// The estimate a subscriber's bandwidth estimator starts from: enough for the lowest layers
/// of a dozen tracks; probing finds the rest within seconds.
const INITIAL_ESTIMATE: Bitrate = Bitrate::kbps(1_000);

/// The share of a subscriber's bandwidth estimate that layers may fill.
const ESTIMATE_USABLE_PERCENT: u64 = 85;

/// What one audio track is assumed to take from a subscriber's budget (Opus speech with
/// RTP/SRTP overhead).
const AUDIO_ALLOWANCE_BPS: u64 = 50_000;

/// What each forwarded video stream keeps for retransmission (str0m's default size and age).
const RTX_CACHE_PACKETS: usize = 2000;
const RTX_CACHE_AGE: Duration = Duration::from_secs(3);

/// A layer nobody wanted for this long is paused at the publisher.
const PAUSE_UNWANTED_AFTER: Duration = Duration::from_secs(4);

pub struct Router {
    config: RouterConfig,
    dtls_cert: DtlsCert,
    peers: Vec<Option<Peer>>,
    free_peer_slots: Vec<PeerIndex>,
    by_participant: HashMap<ParticipantId, PeerIndex>,
    by_addr: HashMap<SocketAddr, PeerIndex>,
    rooms: HashMap<String, Vec<PeerIndex>>,
    /// Each room's stage (see [`crate::stage`]), for rooms that had one or chose one.
    stages: HashMap<String, RoomStage>,
    timers: BinaryHeap<Reverse<(Instant, PeerIndex)>>,
    queues: Queues,
    next_track: u64,
    next_liveness_check: Option<Instant>,
    /// Each room's dominant-speaker detector, fed from the audio level of every forwarded
    /// audio packet (created with the room, so the packet path never allocates).
    speakers: HashMap<String, SpeakerDetector>,
    /// When the detectors are next polled; `None` while no room has one.
    next_speaker_poll: Option<Instant>,
    /// When each room's first member joined.
    opened_at: HashMap<String, Instant>,
    /// When layers are next allocated; `None` while no peer has a media session.
    next_allocation: Option<Instant>,
    /// Reused by every allocation, so the periodic tick allocates nothing in steady state.
    scratch: AllocationScratch,
    metrics: Arc<WorkerMetrics>,
    /// What ingest tracks are declared as: H.264 constrained baseline, packetization mode 1
    /// (what every browser decodes; x264's High profile streams decode under it too, since
    /// decoders take the profile from the SPS), and Opus.
    ingest_h264: PayloadParams,
    ingest_opus: PayloadParams,
}

/// Buffers of [`Router::allocate_for`] and [`Router::dynacast`], kept between ticks.
#[derive(Default)]
struct AllocationScratch {
    /// Consumer slots of the subscriber being allocated, in `demands` order.
    slots: Vec<usize>,
    demands: Vec<TrackDemand>,
    targets: Vec<Option<Layer>>,
    /// Dynacast: (producer index, layers wanted) of the publisher being looked at.
    wanted: Vec<(usize, [bool; simulcast::MAX_LAYERS])>,
}

/// A room's stage: the member an admin chose, and the member currently reported.
struct RoomStage {
    room: Arc<str>,
    chosen: Option<ParticipantId>,
    current: Option<ParticipantId>,
}

/// What [`drain`] saw and the router acts on after the drain.
#[derive(Default)]
struct Queues {
    rtp: VecDeque<(PeerIndex, RtpPacket)>,
    keyframe_requests: Vec<(PeerIndex, Mid)>,
    media_added: Vec<(PeerIndex, MediaAdded)>,
    /// m-lines the client no longer sends on (a stopped screen share): their producer ends.
    media_stopped: Vec<(PeerIndex, Mid)>,
    /// Peers whose DTLS just completed: their video consumers need a keyframe.
    connected: Vec<PeerIndex>,
    to_remove: Vec<PeerIndex>,
    to_negotiate: Vec<PeerIndex>,
}

impl Router {
    pub fn new(config: RouterConfig, dtls_cert: DtlsCert, metrics: Arc<WorkerMetrics>) -> Self {
        let mut codecs = server_codecs(RtcConfig::new(), false);
        let ingest_h264 = *codecs
            .codec_config()
            .find(|p| {
                let spec = p.spec();
                spec.codec == Codec::H264
                    && spec.format.profile_level_id == Some(0x42e01f)
                    && spec.format.packetization_mode == Some(1)
            })
            .expect("the server codecs include H.264 42e01f in packetization mode 1");
        let ingest_opus = *codecs
            .codec_config()
            .find(|p| p.spec().codec == Codec::Opus)
            .expect("the server codecs include Opus");
        Router {
            config,
            dtls_cert,
            peers: Vec::new(),
            free_peer_slots: Vec::new(),
            by_participant: HashMap::new(),
            by_addr: HashMap::new(),
            rooms: HashMap::new(),
            stages: HashMap::new(),
            timers: BinaryHeap::new(),
            queues: Queues::default(),
            next_track: 1,
            next_liveness_check: None,
            speakers: HashMap::new(),
            next_speaker_poll: None,
            opened_at: HashMap::new(),
            next_allocation: None,
            scratch: AllocationScratch::default(),
            metrics,
            ingest_h264,
            ingest_opus,
        }
    }

    pub fn metrics(&self) -> &Arc<WorkerMetrics> {
        &self.metrics
    }

    /// When the router next needs [`Router::handle_timeout`].
    pub fn next_timeout(&self, now: Instant) -> Instant {
        let peer_deadline = self
            .timers
            .peek()
            .map(|Reverse((at, _))| *at)
            .unwrap_or(now + IDLE_TIMEOUT);
        [
            self.next_liveness_check,
            self.next_speaker_poll,
            self.next_allocation,
        ]
        .into_iter()
        .flatten()
        .fold(peer_deadline, Instant::min)
    }

    pub fn participant_count(&self) -> usize {
        self.by_participant.len()
    }

    /// Feed one received UDP datagram.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        datagram: &[u8],
        out: &mut impl Transmit,
    ) {
        let Ok(contents) = engine!(datagram.try_into()) else {
            WorkerMetrics::add(&self.metrics.datagrams_dropped, 1);
            debug!(%source, bytes = datagram.len(), "dropped datagram: not STUN, DTLS, RTP or RTCP");
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.config.announced_addr,
                contents,
            },
        );
        let index = match self.by_addr.get(&source) {
            Some(&index) => index,
            None => {
                // A new remote address: only a STUN binding request carrying a peer's ICE
                // credentials can claim it. Rare (once per peer and path), so a scan is fine.
                let found = self.peers.iter().position(|peer| {
                    peer.as_ref()
                        .and_then(|p| p.rtc.as_ref())
                        .is_some_and(|rtc| rtc.accepts(&input))
                });
                let Some(index) = found else {
                    WorkerMetrics::add(&self.metrics.datagrams_dropped, 1);
                    debug!(%source, "dropped datagram from an address no peer has claimed");
                    return;
                };
                self.by_addr.insert(source, index);
                if let Some(peer) = self.peers[index].as_mut() {
                    peer.remote_addrs.push(source);
                }
                index
            }
        };
        let Some(peer) = self.peers[index].as_mut() else {
            return;
        };
        let Some(rtc) = peer.rtc.as_mut() else {
            return;
        };
        peer.last_heard = Some(now);
        if let Err(error) = engine!(rtc.handle_input(input)) {
            peer.span.in_scope(
                || warn!(%error, "media connection failed on input; removing participant"),
            );
            peer.mark_for_removal(LeaveReason::MediaTimeout);
        }
        drain(now, index, peer, &mut self.queues, &mut self.timers, out);
        self.process(now, out);
    }

    /// Drive every peer whose deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut impl Transmit) {
        while let Some(Reverse((at, index))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(peer) = self.peers[index].as_mut() else {
                continue;
            };
            if peer.scheduled_timeout != Some(at) {
                continue; // superseded by an earlier deadline that already fired
            }
            peer.scheduled_timeout = None;
            let Some(rtc) = peer.rtc.as_mut() else {
                continue;
            };
            if let Err(error) = engine!(rtc.handle_input(Input::Timeout(now))) {
                peer.span
                    .in_scope(|| warn!(%error, "media connection failed; removing participant"));
                peer.mark_for_removal(LeaveReason::MediaTimeout);
            }
            drain(now, index, peer, &mut self.queues, &mut self.timers, out);
        }
        if self.next_liveness_check.is_some_and(|check| check <= now) {
            self.remove_silent_peers(now);
        }
        if self.next_speaker_poll.is_some_and(|poll| poll <= now) {
            self.poll_speakers(now);
        }
        if self.next_allocation.is_some_and(|at| at <= now) {
            let any_media = self.peers.iter().flatten().any(|p| p.rtc.is_some());
            self.next_allocation = any_media.then(|| now + ALLOCATION_INTERVAL);
            self.allocate_all(now, out);
        }
        self.process(now, out);
    }

    /// The allocation tick: measure every layer's bitrate over the last interval, choose
    /// every subscriber's layers, then pause or resume layers at the publishers (dynacast).
    fn allocate_all(&mut self, now: Instant, out: &mut impl Transmit) {
        let seconds = ALLOCATION_INTERVAL.as_secs_f64();
        for producer in self
            .peers
            .iter_mut()
            .flatten()
            .flat_map(|p| &mut p.producers)
        {
            for layer in &mut producer.layers {
                let measured = (layer.bytes as f64 * 8.0 / seconds) as u64;
                layer.bytes = 0;
                if measured > 0 {
                    // Smoothed over ~2 s: keyframes come in bursts.
                    layer.bitrate_bps = if layer.bitrate_bps == 0 {
                        measured
                    } else {
                        (layer.bitrate_bps * 3 + measured) / 4
                    };
                }
            }
            // The stage's layer stopped (the publisher's own estimate dropped it, or it
            // restarted): any layer's keyframe restarts the stage's picture.
            let started = producer.first_packet;
            if let Some(stage) = producer.stage.as_mut()
                && let Some(current) = stage.switcher.current()
                && !producer.layers[current as usize].available(now, started)
            {
                stage.switcher.current_stopped();
            }
        }
        for index in 0..self.peers.len() {
            if self.peers[index]
                .as_ref()
                .is_some_and(|p| p.media_connected && p.removal.is_none())
            {
                self.allocate_for(now, index, out);
            }
        }
        self.dynacast(now);
        self.metrics
            .set_estimates(self.peers.iter().flatten().filter_map(|p| p.estimate_bps));
    }

    /// Share subscriber `index`'s bandwidth estimate across its video consumers
    /// ([`simulcast::allocate`]) and set their target layers; tell str0m's estimator what to
    /// probe for.
    fn allocate_for(&mut self, now: Instant, index: PeerIndex, out: &mut impl Transmit) {
        let Some(peer) = self.peers[index].as_ref() else {
            return;
        };
        let dominant = self
            .speakers
            .get(peer.room.as_str())
            .and_then(SpeakerDetector::dominant);
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.slots.clear();
        scratch.demands.clear();
        let mut audio_tracks = 0u64;
        for (slot, consumer) in peer.consumers.iter().enumerate() {
            let Some(consumer) = consumer else { continue };
            if !matches!(consumer.state, ConsumerState::Active { .. }) {
                continue;
            }
            let Some(producer) = self.peers[consumer.source_peer]
                .as_ref()
                .and_then(|p| p.producers.iter().find(|p| p.track == consumer.track))
            else {
                continue;
            };
            if producer.is_muted() {
                continue;
            }
            if consumer.kind == MediaKind::Audio {
                audio_tracks += 1;
                continue;
            }
            let count = producer.layers.len().min(simulcast::MAX_LAYERS);
            let mut layers = [LayerInfo::default(); simulcast::MAX_LAYERS];
            for (i, layer) in producer.layers.iter().take(count).enumerate() {
                layers[i] = layer.info(i, count, now, producer.first_packet);
            }
            let priority = if consumer.source == TrackSource::Screen {
                Priority::ScreenShare
            } else if Some(consumer.source_participant) == dominant {
                Priority::DominantSpeaker
            } else {
                Priority::Normal
            };
            scratch.slots.push(slot);
            scratch.demands.push(TrackDemand::new(
                priority,
                consumer.visible,
                consumer.rendered_width,
                &layers[..count],
            ));
        }
        let audio_bps = audio_tracks * AUDIO_ALLOWANCE_BPS;
        // Headroom: the estimate is what the path carried at best; retransmissions, probes and
        // keyframes after a switch need room too, and a link filled to its estimate queues.
        let budget = peer.estimate_bps.map_or(u64::MAX, |estimate| {
            (estimate / 100 * ESTIMATE_USABLE_PERCENT).saturating_sub(audio_bps)
        });
        let allocation = simulcast::allocate(budget, &scratch.demands, &mut scratch.targets);
        let peer = self.peers[index].as_mut().expect("checked above");
        for ((&slot, &target), demand) in scratch
            .slots
            .iter()
            .zip(&scratch.targets)
            .zip(&scratch.demands)
        {
            let Some(consumer) = peer.consumers[slot].as_mut() else {
                continue;
            };
            if consumer
                .switcher
                .current()
                .is_some_and(|current| !demand.layers()[current as usize].available)
            {
                consumer.switcher.current_stopped();
            }
            if consumer.switcher.set_target(target) {
                let track = consumer.track;
                peer.span
                    .in_scope(|| debug!(track = %track, ?target, "layer target"));
            }
        }
        self.scratch = scratch;
        let used = allocation.used_bps + audio_bps;
        let desired = (allocation.desired_bps + audio_bps).max(used);
        let wanted = (
            used,
            peer.probing
                .desired_for_estimator(now, used, desired, peer.estimate_bps),
        );
        if peer.bwe_wanted != Some(wanted)
            && let Some(rtc) = peer.rtc.as_mut()
        {
            peer.bwe_wanted = Some(wanted);
            if wanted.1 < desired {
                let estimate = peer.estimate_bps;
                peer.span.in_scope(|| {
                    debug!(
                        ?estimate,
                        used, desired, "short of bandwidth: the next tick probes for more"
                    )
                });
            }
            engine!(
                rtc.bwe()
                    .set_bitrate(Bitrate::bps(wanted.0), Bitrate::bps(wanted.1))
            );
            drain(now, index, peer, &mut self.queues, &mut self.timers, out);
        }
    }

    /// Dynacast: pause the simulcast layers no subscriber receives or waits for, resume the
    /// ones someone needs again, and tell each publisher (its client turns the encodings off
    /// and on with `RTCRtpSender.setParameters`).
    fn dynacast(&mut self, now: Instant) {
        let mut paused_total = 0u64;
        for source in 0..self.peers.len() {
            let Some(publisher) = self.peers[source].as_ref() else {
                continue;
            };
            let mut changes = std::mem::take(&mut self.scratch.wanted);
            changes.clear();
            for (producer_index, producer) in publisher.producers.iter().enumerate() {
                if !producer.is_simulcast() {
                    continue;
                }
                let mut wanted = [false; simulcast::MAX_LAYERS];
                // The stage's layers are packaged for HLS, which takes H.264 only: the best
                // layer, and the one the stage shows until the best one's keyframe.
                if publisher.on_stage
                    && producer
                        .codecs
                        .iter()
                        .any(|c| c.spec().codec == Codec::H264)
                {
                    wanted[producer.top_layer() as usize] = true;
                    if let Some(current) =
                        producer.stage.as_ref().and_then(|s| s.switcher.current())
                    {
                        wanted[(current as usize).min(simulcast::MAX_LAYERS - 1)] = true;
                    }
                }
                for consumer_ref in &producer.consumers {
                    let Some(consumer) = self.peers[consumer_ref.peer]
                        .as_ref()
                        .and_then(|p| p.consumers.get(consumer_ref.slot))
                        .and_then(Option::as_ref)
                    else {
                        continue;
                    };
                    for layer in [consumer.switcher.current(), consumer.switcher.target()]
                        .into_iter()
                        .flatten()
                    {
                        wanted[(layer as usize).min(simulcast::MAX_LAYERS - 1)] = true;
                    }
                }
                changes.push((producer_index, wanted));
            }
            let publisher = self.peers[source].as_mut().expect("checked above");
            for &(producer_index, wanted) in &changes {
                let producer = &mut publisher.producers[producer_index];
                let mut changed = false;
                for (layer, wanted) in producer.layers.iter_mut().zip(wanted) {
                    if wanted {
                        layer.unwanted_since = None;
                        if layer.paused {
                            layer.paused = false;
                            layer.resumed_at = Some(now);
                            changed = true;
                        }
                    } else {
                        let since = *layer.unwanted_since.get_or_insert(now);
                        if !layer.paused
                            && now.saturating_duration_since(since) >= PAUSE_UNWANTED_AFTER
                        {
                            layer.paused = true;
                            changed = true;
                        }
                    }
                    paused_total += u64::from(layer.paused);
                }
                if changed {
                    let layers: Vec<(String, bool)> = producer
                        .layers
                        .iter()
                        .filter_map(|l| Some((l.rid?.to_string(), !l.paused)))
                        .collect();
                    let track = producer.track;
                    publisher.span.in_scope(
                        || info!(track = %track, ?layers, "simulcast layers paused/resumed"),
                    );
                    publisher.notify(SessionEvent::SetLayers { track, layers });
                }
            }
            self.scratch.wanted = changes;
        }
        WorkerMetrics::set(&self.metrics.paused_layers, paused_total);
    }

    /// A subscriber's report about the tile showing one of its tracks.
    fn track_settings(
        &mut self,
        now: Instant,
        participant: ParticipantId,
        track: TrackId,
        visible: bool,
        rendered_width: Option<u32>,
        out: &mut impl Transmit,
    ) -> Result<(), SfuError> {
        let index = self.peer_index(participant)?;
        let peer = self.peers[index].as_mut().expect("peer_index checked");
        let consumer = peer
            .consumers
            .iter_mut()
            .flatten()
            .find(|c| {
                c.track == track
                    && !matches!(
                        c.state,
                        ConsumerState::ToStop(_) | ConsumerState::Stopping(_)
                    )
            })
            .ok_or(SfuError::UnknownTrack(track))?;
        consumer.visible = visible;
        consumer.rendered_width = rendered_width.filter(|&w| w > 0);
        if peer.media_connected {
            self.allocate_for(now, index, out);
        }
        Ok(())
    }

    /// Re-evaluate every room's dominant speaker and tell the room about changes.
    fn poll_speakers(&mut self, now: Instant) {
        for (room, detector) in &mut self.speakers {
            let Some(dominant) = detector.poll(now) else {
                continue;
            };
            debug!(%room, ?dominant, "dominant speaker changed");
            for &member in self.rooms.get(room).map(Vec::as_slice).unwrap_or_default() {
                if let Some(peer) = self.peers[member].as_mut()
                    && peer.subscription == Subscription::AllTracks
                {
                    peer.notify(SessionEvent::ActiveSpeaker {
                        participant: dominant,
                    });
                }
            }
        }
        self.next_speaker_poll = (!self.speakers.is_empty()).then(|| now + speaker::POLL_INTERVAL);
    }

    /// Mark peers whose media went silent for removal; schedules the next check while any
    /// peer has a media session.
    fn remove_silent_peers(&mut self, now: Instant) {
        let mut any_media = false;
        for (index, slot) in self.peers.iter_mut().enumerate() {
            let Some(peer) = slot.as_mut() else { continue };
            let Some(last_heard) = peer.last_heard else {
                continue;
            };
            any_media = true;
            if peer.removal.is_none()
                && now.saturating_duration_since(last_heard) >= MEDIA_SILENCE_TIMEOUT
            {
                peer.span.in_scope(|| {
                    info!(silent_for = ?now.saturating_duration_since(last_heard), "no media or ICE traffic; removing participant")
                });
                peer.mark_for_removal(LeaveReason::MediaTimeout);
                self.queues.to_remove.push(index);
            }
        }
        self.next_liveness_check = any_media.then(|| now + LIVENESS_CHECK_INTERVAL);
    }

    pub fn handle_command(&mut self, now: Instant, command: Command, out: &mut impl Transmit) {
        match command {
            Command::Join {
                room,
                participant,
                name,
                subscription,
                events,
                reply,
            } => {
                let _ = reply.send(self.join(now, room, participant, name, subscription, events));
            }
            Command::Offer {
                participant,
                sdp,
                sources,
                receive,
                reply,
            } => {
                if let Some(peer) = self
                    .peer_index(participant)
                    .ok()
                    .and_then(|i| self.peers[i].as_mut())
                {
                    peer.declared_sources = sources;
                }
                let result = self.accept_offer(now, participant, &sdp, &receive, out);
                let _ = reply.send(result);
            }
            Command::Answer {
                participant,
                sdp,
                reply,
            } => {
                let result = self.accept_answer(now, participant, &sdp, out);
                let _ = reply.send(result);
            }
            Command::Candidate {
                participant,
                candidate,
                reply,
            } => {
                let result = self.add_candidate(now, participant, &candidate, out);
                let _ = reply.send(result);
            }
            Command::Leave {
                participant,
                reason,
            } => {
                if let Some(&index) = self.by_participant.get(&participant)
                    && let Some(peer) = self.peers[index].as_mut()
                {
                    peer.mark_for_removal(reason);
                    self.queues.to_remove.push(index);
                }
            }
            Command::PublishIngest {
                participant,
                kind,
                reply,
            } => {
                let _ = reply.send(self.publish_ingest(participant, kind));
            }
            Command::IngestFrame {
                participant,
                track,
                frame,
            } => self.ingest_frame(now, participant, track, frame, out),
            Command::RoomInfo { room, reply } => {
                let _ = reply.send(self.room_info(&room));
            }
            Command::ListRooms { reply } => {
                let rooms = self
                    .rooms
                    .keys()
                    .filter_map(|name| Some((name.clone(), self.room_info(name)?)))
                    .collect();
                let _ = reply.send(rooms);
            }
            Command::Kick {
                room,
                participant,
                reply,
            } => {
                let found = self.by_participant.get(&participant).copied().filter(|&i| {
                    self.peers[i]
                        .as_ref()
                        .is_some_and(|p| p.room == room && p.removal.is_none())
                });
                if let Some(index) = found {
                    self.remove_for(index, LeaveReason::Kicked);
                }
                let _ = reply.send(found.is_some());
            }
            Command::CloseRoom { room, reply } => {
                let members = self.rooms.get(&room).cloned().unwrap_or_default();
                for &index in &members {
                    self.remove_for(index, LeaveReason::RoomClosed);
                }
                let _ = reply.send(members.len());
            }
            Command::SetMuted {
                room,
                participant,
                track,
                muted,
                by,
                reply,
            } => {
                let result = self.set_muted(now, &room, participant, track, muted, by, out);
                let _ = reply.send(result);
            }
            Command::SetStage {
                room,
                participant,
                reply,
            } => {
                let _ = reply.send(self.set_stage(&room, participant));
            }
            Command::TrackSettings {
                participant,
                track,
                visible,
                rendered_width,
                reply,
            } => {
                let result =
                    self.track_settings(now, participant, track, visible, rendered_width, out);
                let _ = reply.send(result);
            }
            Command::RequestStageKeyframe { participant } => {
                let Some(&index) = self.by_participant.get(&participant) else {
                    return;
                };
                let video: Vec<TrackId> = self.peers[index]
                    .as_ref()
                    .map(|p| {
                        p.producers
                            .iter()
                            .filter(|p| p.kind == MediaKind::Video)
                            .map(|p| p.track)
                            .collect()
                    })
                    .unwrap_or_default();
                for track in video {
                    self.request_keyframe(now, index, track, KeyframeLayer::Stage, out);
                }
            }
            Command::Shutdown => {
                for index in 0..self.peers.len() {
                    if let Some(peer) = self.peers[index].as_mut() {
                        peer.mark_for_removal(LeaveReason::ServerShutdown);
                        self.queues.to_remove.push(index);
                    }
                }
            }
        }
        self.process(now, out);
    }

    fn join(
        &mut self,
        now: Instant,
        room: String,
        participant: ParticipantId,
        name: String,
        subscription: Subscription,
        events: tokio::sync::mpsc::Sender<SessionEvent>,
    ) -> Result<Vec<ParticipantSummary>, SfuError> {
        if self.by_participant.contains_key(&participant) {
            return Err(SfuError::AlreadyJoined(participant));
        }
        let members = self.rooms.get(&room).map(Vec::as_slice).unwrap_or_default();
        if members.len() >= self.config.max_participants_per_room {
            return Err(SfuError::RoomFull {
                room,
                limit: self.config.max_participants_per_room,
            });
        }
        if members.is_empty() && !self.config.room_budget.try_open() {
            return Err(SfuError::TooManyRooms {
                limit: self.config.room_budget.max(),
            });
        }
        let existing: Vec<PeerIndex> = members.to_vec();
        let summaries = existing
            .iter()
            .filter_map(|&i| self.peers[i].as_ref())
            .filter(|p| p.removal.is_none() && p.subscription != Subscription::Host)
            .map(summary)
            .collect();

        let peer = Peer::new(
            participant,
            name.clone(),
            room.clone(),
            subscription,
            events,
        );
        peer.span.in_scope(|| info!(?subscription, "joined"));
        let index = self.insert_peer(peer);
        for &other in &existing {
            let Some(other_peer) = self.peers[other].as_mut() else {
                continue;
            };
            if other_peer.removal.is_some() {
                continue;
            }
            if subscription != Subscription::Host
                && other_peer.subscription == Subscription::AllTracks
            {
                other_peer.notify(SessionEvent::ParticipantJoined(ParticipantSummary {
                    id: participant,
                    name: name.clone(),
                    tracks: Vec::new(),
                }));
            }
            if subscription != Subscription::AllTracks {
                continue; // a host follower binds when its offer is accepted
            }
            let producers: Vec<(TrackId, MediaKind, TrackSource)> = self.peers[other]
                .as_ref()
                .map(|p| {
                    p.producers
                        .iter()
                        .map(|pr| (pr.track, pr.kind, pr.source))
                        .collect()
                })
                .unwrap_or_default();
            for (track, kind, source) in producers {
                self.add_consumer(index, other, track, kind, source);
            }
        }
        self.opened_at.entry(room.clone()).or_insert(now);
        let detector = self.speakers.entry(room.clone()).or_default();
        if let Some(dominant) = detector.dominant()
            && subscription == Subscription::AllTracks
            && let Some(peer) = self.peers[index].as_mut()
        {
            peer.notify(SessionEvent::ActiveSpeaker {
                participant: Some(dominant),
            });
        }
        self.next_speaker_poll
            .get_or_insert(now + speaker::POLL_INTERVAL);
        self.rooms.entry(room).or_default().push(index);
        self.by_participant.insert(participant, index);
        self.update_gauges();
        Ok(summaries)
    }

    fn insert_peer(&mut self, peer: Peer) -> PeerIndex {
        if let Some(index) = self.free_peer_slots.pop() {
            self.peers[index] = Some(peer);
            index
        } else {
            self.peers.push(Some(peer));
            self.peers.len() - 1
        }
    }

    fn peer_index(&self, participant: ParticipantId) -> Result<PeerIndex, SfuError> {
        self.by_participant
            .get(&participant)
            .copied()
            .filter(|&i| self.peers[i].as_ref().is_some_and(|p| p.removal.is_none()))
            .ok_or(SfuError::UnknownParticipant(participant))
    }

    fn accept_offer(
        &mut self,
        now: Instant,
        participant: ParticipantId,
        sdp: &str,
        receive: &[(String, TrackId)],
        out: &mut impl Transmit,
    ) -> Result<OfferAnswer, SfuError> {
        let index = self.peer_index(participant)?;
        // Receive m-lines the client declared play in their publisher's stream (see `msid`).
        let streams: Vec<_> = receive
            .iter()
            .filter_map(|(mid, track)| {
                let consumer = self.peers[index]
                    .as_ref()?
                    .consumers
                    .iter()
                    .flatten()
                    .find(|c| c.track == *track)?;
                Some((mid.as_str(), consumer.source_participant, *track))
            })
            .collect();
        let with_msids = msid::with_receive_msids(sdp, &streams);
        let sdp = with_msids.as_deref().unwrap_or(sdp);
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| SfuError::BadSdp(e.to_string()))?;
        let first_offer = self.peers[index].as_ref().is_some_and(|p| p.rtc.is_none());
        // Broadcast publishers (WHIP) answer with H.264 first: it is what encoders send and
        // what HLS packages; room members keep VP8 first.
        let h264_first = self.peers[index]
            .as_ref()
            .is_some_and(|p| p.subscription == Subscription::Nothing);
        let new_rtc = first_offer.then(|| self.new_rtc(now, h264_first));
        let peer = self.peers[index]
            .as_mut()
            .expect("peer_index checked the slot");
        if peer.pending_offer.is_some() {
            return Err(SfuError::OfferCollision);
        }
        if let Some(rtc) = new_rtc {
            peer.rtc = Some(rtc);
            peer.last_heard = Some(now);
            self.next_liveness_check
                .get_or_insert(now + LIVENESS_CHECK_INTERVAL);
            self.next_allocation
                .get_or_insert(now + ALLOCATION_INTERVAL);
        }
        let rtc = peer.rtc.as_mut().expect("set above");
        let answer = match rtc.sdp_api().accept_offer(offer) {
            Ok(answer) => answer,
            Err(error) => {
                if first_offer {
                    peer.rtc = None;
                    peer.last_heard = None;
                } else {
                    drain(now, index, peer, &mut self.queues, &mut self.timers, out);
                }
                return Err(SfuError::BadSdp(error.to_string()));
            }
        };
        let bound = bind_receive_mids(peer, receive);
        peer.span
            .in_scope(|| debug!(first_offer, bound = bound.len(), "accepted offer"));
        let tracks = offered_tracks(peer);
        // Before DTLS is done, `media_connected` asks for the keyframes.
        let wants_keyframe: Vec<_> = video_consumers(peer)
            .filter(|(.., slot)| peer.media_connected && bound.contains(slot))
            .collect();
        drain(now, index, peer, &mut self.queues, &mut self.timers, out);
        if !wants_keyframe.is_empty() {
            self.allocate_for(now, index, out);
        }
        for (source, track, slot) in wants_keyframe {
            self.request_keyframe(now, source, track, KeyframeLayer::For(index, slot), out);
        }
        // The tracks the offer did not receive are offered right after this answer.
        self.queues.to_negotiate.push(index);
        Ok(OfferAnswer {
            sdp: answer.to_sdp_string(),
            tracks,
        })
    }

    fn new_rtc(&self, now: Instant, h264_first: bool) -> Rtc {
        let mut rtc = server_codecs(Rtc::builder(), h264_first)
            .set_rtp_mode(true)
            .set_ice_lite(true)
            .set_dtls_cert(self.dtls_cert.clone())
            .set_stats_interval(None)
            .enable_bwe(Some(INITIAL_ESTIMATE))
            .build(now);
        let candidate = Candidate::host(self.config.announced_addr, "udp")
            .expect("the announced address is a valid UDP host candidate");
        rtc.add_local_candidate(candidate);
        rtc
    }

    fn accept_answer(
        &mut self,
        now: Instant,
        participant: ParticipantId,
        sdp: &str,
        out: &mut impl Transmit,
    ) -> Result<(), SfuError> {
        let index = self.peer_index(participant)?;
        let peer = self.peers[index]
            .as_mut()
            .expect("peer_index checked the slot");
        let Some(pending) = peer.pending_offer.take() else {
            return Err(SfuError::NoPendingOffer);
        };
        let rtc = peer
            .rtc
            .as_mut()
            .expect("an offer was made, so the Rtc exists");
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| SfuError::BadSdp(e.to_string()));
        let accepted = answer.and_then(|answer| {
            rtc.sdp_api()
                .accept_answer(pending, answer)
                .map_err(|e| SfuError::BadSdp(e.to_string()))
        });
        if let Err(error) = accepted {
            // The offer is void: everything in it is offered again next time.
            for consumer in peer.consumers.iter_mut().flatten() {
                consumer.state = match consumer.state {
                    ConsumerState::Offered(_) => ConsumerState::ToOffer,
                    ConsumerState::Stopping(mid) => ConsumerState::ToStop(mid),
                    other => other,
                };
            }
            drain(now, index, peer, &mut self.queues, &mut self.timers, out);
            self.queues.to_negotiate.push(index);
            return Err(error);
        }
        let mut freed = Vec::new();
        let mut wants_keyframe = Vec::new();
        for (slot, entry) in peer.consumers.iter_mut().enumerate() {
            let Some(consumer) = entry.as_mut() else {
                continue;
            };
            match consumer.state {
                ConsumerState::Offered(mid) => {
                    match forwarding_stream(rtc, mid) {
                        Some(ssrc) => {
                            consumer.state = ConsumerState::Active { mid, ssrc };
                            // Before DTLS is done the keyframe could not be delivered; the
                            // request is made when the peer connects instead.
                            if consumer.kind == MediaKind::Video && peer.media_connected {
                                wants_keyframe.push((consumer.source_peer, consumer.track, slot));
                            }
                        }
                        None => {
                            peer.span.in_scope(|| {
                                warn!(%mid, "client rejected a forwarded track; it will not be sent")
                            });
                            consumer.state = ConsumerState::Stopping(mid);
                            freed.push(slot);
                        }
                    }
                }
                ConsumerState::Stopping(_) => freed.push(slot),
                _ => {}
            }
        }
        peer.span.in_scope(|| debug!("answer accepted"));
        drain(now, index, peer, &mut self.queues, &mut self.timers, out);
        for slot in freed {
            self.free_consumer(index, slot);
        }
        if !wants_keyframe.is_empty() {
            // Choose layers first, so the keyframe is asked of the layer that will be sent.
            self.allocate_for(now, index, out);
        }
        for (source_peer, track, slot) in wants_keyframe {
            self.request_keyframe(
                now,
                source_peer,
                track,
                KeyframeLayer::For(index, slot),
                out,
            );
        }
        self.queues.to_negotiate.push(index);
        self.process(now, out);
        Ok(())
    }

    fn add_candidate(
        &mut self,
        now: Instant,
        participant: ParticipantId,
        candidate: &str,
        out: &mut impl Transmit,
    ) -> Result<(), SfuError> {
        let index = self.peer_index(participant)?;
        let line = candidate.trim();
        let line = line.strip_prefix("a=").unwrap_or(line);
        if line.is_empty() {
            return Ok(()); // end of candidates
        }
        let candidate =
            Candidate::from_sdp_string(line).map_err(|e| SfuError::BadCandidate(e.to_string()))?;
        if candidate.proto() != Protocol::Udp {
            // Media is UDP only. Handing str0m a TCP candidate alone (browsers trickle them
            // first) makes its ICE agent see "no possible pairs" and declare the session
            // disconnected before the UDP candidates arrive.
            return Ok(());
        }
        let peer = self.peers[index]
            .as_mut()
            .expect("peer_index checked the slot");
        let Some(rtc) = peer.rtc.as_mut() else {
            return Err(SfuError::BadCandidate(
                "candidate received before the client's offer".into(),
            ));
        };
        rtc.add_remote_candidate(candidate);
        drain(now, index, peer, &mut self.queues, &mut self.timers, out);
        Ok(())
    }

    /// Act on everything the drains queued: forward packets, relay keyframe requests, publish
    /// new tracks, remove peers, and start negotiations. Loops until nothing is left, since
    /// each step may queue more.
    fn process(&mut self, now: Instant, out: &mut impl Transmit) {
        loop {
            if let Some((index, packet)) = self.queues.rtp.pop_front() {
                self.forward(now, index, packet, out);
                continue;
            }
            if let Some((index, mid)) = self.queues.keyframe_requests.pop() {
                self.relay_keyframe_request(now, index, mid, out);
                continue;
            }
            if let Some((index, added)) = self.queues.media_added.pop() {
                self.media_added(index, added);
                continue;
            }
            if let Some((index, mid)) = self.queues.media_stopped.pop() {
                self.unpublish(index, mid);
                continue;
            }
            if let Some(index) = self.queues.connected.pop() {
                self.media_connected(now, index, out);
                continue;
            }
            if let Some(index) = self.queues.to_remove.pop() {
                self.remove_peer(index);
                continue;
            }
            if let Some(index) = self.queues.to_negotiate.pop() {
                self.negotiate(now, index, out);
                continue;
            }
            break;
        }
        self.compact_timers();
    }

    /// Drop superseded timer-heap entries once they outnumber the live ones. A peer whose
    /// deadline moves earlier gets a new entry and the old one stays until its time; with
    /// str0m's pacer moving deadlines on every write, those would pile up for as long as the
    /// furthest deadline (seconds). Compacting in place keeps the heap at a few entries per
    /// peer, so it stops growing (and allocating) in steady state.
    fn compact_timers(&mut self) {
        let limit = 4 * self.by_participant.len() + 64;
        if self.timers.len() <= limit {
            return;
        }
        let peers = &self.peers;
        self.timers.retain(|Reverse((at, index))| {
            peers[*index]
                .as_ref()
                .is_some_and(|peer| peer.scheduled_timeout == Some(*at))
        });
    }

    /// The per-packet fan-out. See the module docs for the path and its invariants.
    fn forward(
        &mut self,
        now: Instant,
        source: PeerIndex,
        packet: RtpPacket,
        out: &mut impl Transmit,
    ) {
        let Some(publisher) = self.peers[source].as_mut() else {
            return;
        };
        let Some((producer_index, layer)) = publisher.producer_for_ssrc(packet.header.ssrc) else {
            return;
        };
        let Some(params) = publisher.producer_codec(producer_index, packet.header.payload_type)
        else {
            return;
        };
        let producer = &mut publisher.producers[producer_index];
        let kind = producer.kind;
        let top_layer = producer.top_layer();
        let producer_layer = &mut producer.layers[layer as usize];
        producer_layer.bytes += packet.payload.len() as u64;
        producer_layer.last_packet = Some(now);
        producer.first_packet.get_or_insert(now);
        if kind == MediaKind::Audio
            && !producer.is_muted()
            && let Some(level) = packet.header.ext_vals.audio_level
            && let Some(detector) = self.speakers.get_mut(publisher.room.as_str())
        {
            // RFC 6464 levels are 0..=127 (−dBov); str0m hands them over negated.
            detector.observe(publisher.id, level.unsigned_abs(), now);
        }
        let codec = VideoCodec::from_str0m(params.spec().codec);
        let vp8 = (codec == VideoCodec::Vp8)
            .then(|| Vp8Descriptor::parse(&packet.payload).ok())
            .flatten();
        let starts = match kind {
            MediaKind::Audio => true,
            MediaKind::Video => {
                let keyframe =
                    codec.keyframes_detectable() && starts_keyframe(codec, &packet.payload);
                if keyframe {
                    let producer_layer = &mut producer.layers[layer as usize];
                    producer_layer.keyframe_throttle.keyframe_arrived();
                    if codec == VideoCodec::Vp8
                        && let Some((width, _)) = vp8_keyframe_size(&packet.payload)
                    {
                        producer_layer.width = width;
                    }
                }
                keyframe || !codec.keyframes_detectable()
            }
        };
        let mut stage_wants_keyframe = false;
        let incoming = IncomingPacket {
            ssrc: *packet.header.ssrc,
            seq: *packet.seq_no,
            timestamp: packet.header.timestamp,
            starts_keyframe: starts,
            arrival: packet.timestamp,
        };
        if publisher.on_stage
            && !producer.is_muted()
            && let Some(tap) = &self.config.stage_tap
        {
            // Audio goes as it came; video as the best layer that flows, one continuous
            // stream across layer switches and publisher restarts.
            let numbers = match kind {
                MediaKind::Audio => Forwarded::Send {
                    seq: incoming.seq,
                    timestamp: incoming.timestamp,
                },
                MediaKind::Video => producer
                    .stage
                    .get_or_insert_with(|| LayerForwarder::video(top_layer))
                    .forward(layer, incoming),
            };
            match numbers {
                Forwarded::Send { seq, timestamp } => tap.packet(StageRtp {
                    participant: publisher.id,
                    kind,
                    codec: match params.spec().codec {
                        Codec::H264 => StageCodec::H264,
                        Codec::Opus => StageCodec::Opus,
                        _ => StageCodec::Other,
                    },
                    seq: seq as u16,
                    rtp_timestamp: timestamp,
                    marker: packet.header.marker,
                    arrival: packet.timestamp,
                    payload: packet.payload.clone(),
                }),
                Forwarded::Drop { wants_keyframe } => stage_wants_keyframe = wants_keyframe,
            }
        }
        let ext_vals = ExtensionValues {
            audio_level: packet.header.ext_vals.audio_level,
            voice_activity: packet.header.ext_vals.voice_activity,
            video_orientation: packet.header.ext_vals.video_orientation,
            ..Default::default()
        };
        let outgoing = OutgoingPacket {
            incoming,
            layer,
            vp8,
            marker: packet.header.marker,
            payload: &packet.payload,
            ext_vals,
        };
        let track = producer.track;
        self.fan_out(now, source, producer_index, &params, outgoing, out);
        if stage_wants_keyframe {
            self.request_keyframe(now, source, track, KeyframeLayer::Layer(layer), out);
        }
    }

    /// Write one packet of producer `producer_index` of peer `source` to every subscriber.
    fn fan_out(
        &mut self,
        now: Instant,
        source: PeerIndex,
        producer_index: usize,
        params: &PayloadParams,
        packet: OutgoingPacket<'_>,
        out: &mut impl Transmit,
    ) {
        let payload_len = packet.payload.len() as u64;
        WorkerMetrics::add(&self.metrics.packets_received, 1);
        WorkerMetrics::add(&self.metrics.bytes_received, payload_len);
        let Some(producer) = self.peers[source]
            .as_ref()
            .and_then(|p| p.producers.get(producer_index))
        else {
            return;
        };
        if producer.is_muted() {
            return;
        }
        let kind = producer.kind;
        let incoming = packet.incoming;
        let track = producer.track;
        let fan_out = producer.consumers.len();
        let mut waiting_for_keyframe = false;
        let mut switches = 0u64;
        let mut forwarded = 0u64;
        for i in 0..fan_out {
            let Some(consumer_ref) = self.peers[source]
                .as_ref()
                .and_then(|p| p.producers.get(producer_index))
                .and_then(|p| p.consumers.get(i))
                .copied()
            else {
                break;
            };
            let Some(subscriber) = self.peers[consumer_ref.peer].as_mut() else {
                continue;
            };
            if subscriber.removal.is_some() || !subscriber.media_connected {
                continue;
            }
            let Some(rtc) = subscriber.rtc.as_mut() else {
                continue;
            };
            let Some(consumer) = subscriber.consumers[consumer_ref.slot].as_mut() else {
                continue;
            };
            let ConsumerState::Active { ssrc, .. } = consumer.state else {
                continue;
            };
            if kind == MediaKind::Video {
                match consumer
                    .switcher
                    .on_packet(packet.layer, incoming.starts_keyframe)
                {
                    LayerDecision::Forward => {}
                    LayerDecision::Switched { from, to } => {
                        consumer.picture_ids.switched();
                        switches += 1;
                        subscriber
                            .span
                            .in_scope(|| debug!(track = %track, ?from, to, "layer switched"));
                    }
                    LayerDecision::Drop => {
                        // The layer it waits for is flowing, but this is no keyframe: ask.
                        waiting_for_keyframe |=
                            consumer.switcher.wants_keyframe() == Some(packet.layer);
                        continue;
                    }
                }
            }
            let was_waiting = consumer.rewriter.is_waiting();
            let (seq, timestamp) = match consumer.rewriter.rewrite(incoming) {
                Rewrite::Forward { seq, timestamp } => {
                    if was_waiting {
                        subscriber
                            .span
                            .in_scope(|| debug!(track = %track, "forwarding started"));
                    }
                    (seq, timestamp)
                }
                Rewrite::Drop(DropReason::WaitingForKeyframe) => {
                    waiting_for_keyframe = true;
                    continue;
                }
                Rewrite::Drop(DropReason::BeforeStart) => continue,
            };
            let Some(pt) = consumer.map_payload_type(rtc, params) else {
                WorkerMetrics::add(&self.metrics.packets_dropped_no_codec, 1);
                continue;
            };
            let vp8_patch = packet.vp8.as_ref().and_then(|descriptor| {
                let picture_id = descriptor.picture_id()?;
                let (out_id, out_tl0) = consumer
                    .picture_ids
                    .rewrite(picture_id, descriptor.tl0_pic_idx());
                if out_id == picture_id && out_tl0 == descriptor.tl0_pic_idx() {
                    return None;
                }
                let build = |id: u16| {
                    let mut patch = descriptor.patch().picture_id(id);
                    if let Some(tl0) = out_tl0 {
                        patch = patch.tl0_pic_idx(tl0);
                    }
                    patch.build().ok()
                };
                // A 7-bit PictureID field keeps the low 7 bits (still continuous modulo 128).
                build(out_id).or_else(|| build(out_id & 0x7f))
            });
            let mut api = rtc.direct_api();
            let Some(stream) = engine!(api.stream_tx(&ssrc)) else {
                continue;
            };
            // The payload clone is a reference count increment: every subscriber shares it.
            let payload = packet.payload.clone();
            let mut write = RtpWrite::new(pt, seq.into(), timestamp, incoming.arrival, payload)
                .marker(packet.marker)
                .ext_vals(packet.ext_vals.clone())
                .nackable(kind == MediaKind::Video);
            if let Some(patch) = vp8_patch {
                write = write.vp8_patch(patch);
            }
            engine!(stream.write_rtp(write));
            forwarded += 1;
            drain(
                now,
                consumer_ref.peer,
                subscriber,
                &mut self.queues,
                &mut self.timers,
                out,
            );
        }
        WorkerMetrics::add(&self.metrics.packets_forwarded, forwarded);
        WorkerMetrics::add(&self.metrics.bytes_forwarded, forwarded * payload_len);
        WorkerMetrics::add(&self.metrics.layer_switches, switches);
        if waiting_for_keyframe {
            self.request_keyframe(now, source, track, KeyframeLayer::Layer(packet.layer), out);
        }
    }

    /// A subscriber asked for a keyframe on one of its consumers: pass it to the publisher.
    fn relay_keyframe_request(
        &mut self,
        now: Instant,
        subscriber: PeerIndex,
        mid: Mid,
        out: &mut impl Transmit,
    ) {
        let Some(peer) = self.peers[subscriber].as_ref() else {
            return;
        };
        let Some(slot) = peer.consumer_slot_for_mid(mid) else {
            return;
        };
        let Some(consumer) = peer.consumers[slot].as_ref() else {
            return;
        };
        let (source, track) = (consumer.source_peer, consumer.track);
        self.request_keyframe(
            now,
            source,
            track,
            KeyframeLayer::For(subscriber, slot),
            out,
        );
    }

    /// Ask a publisher for a keyframe on one layer (or all) of a video track, through that
    /// layer's throttle ([`crate::core::throttle`]).
    fn request_keyframe(
        &mut self,
        now: Instant,
        source: PeerIndex,
        track: TrackId,
        layer: KeyframeLayer,
        out: &mut impl Transmit,
    ) {
        let for_consumer = match layer {
            KeyframeLayer::For(subscriber, slot) => self.peers[subscriber]
                .as_ref()
                .and_then(|p| p.consumers.get(slot))
                .and_then(Option::as_ref)
                .map(|c| (c.switcher.wants_keyframe(), c.switcher.current())),
            _ => None,
        };
        let Some(publisher) = self.peers[source].as_mut() else {
            return;
        };
        let Some(producer) = publisher.producers.iter_mut().find(|p| p.track == track) else {
            return;
        };
        if producer.kind != MediaKind::Video {
            return;
        }
        let top = producer.top_layer();
        let layers = match layer {
            KeyframeLayer::Layer(layer) => layer..=layer,
            // HLS cuts segments at the layer it packages; before it has one, any layer's
            // keyframe starts it. (Moving up asks for its own keyframes, see `forward`.)
            KeyframeLayer::Stage => {
                match producer.stage.as_ref().and_then(|s| s.switcher.current()) {
                    Some(current) => current.min(top)..=current.min(top),
                    None => 0..=top,
                }
            }
            KeyframeLayer::All => 0..=top,
            KeyframeLayer::For(..) => {
                let (wanted, current) = for_consumer.unwrap_or((None, None));
                let layer = wanted.or(current).unwrap_or(top).min(top);
                layer..=layer
            }
        };
        let mid = producer.mid;
        let Some(rtc) = publisher.rtc.as_mut() else {
            return;
        };
        let mut requested = false;
        for layer in layers {
            let producer_layer = &mut producer.layers[layer as usize];
            if producer_layer.paused || !producer_layer.keyframe_throttle.allow(now) {
                continue;
            }
            let mut api = rtc.direct_api();
            let Some(stream) = api.stream_rx_by_mid(mid, producer_layer.rid) else {
                continue; // nothing received yet: the first keyframe is on its way anyway
            };
            stream.request_keyframe(KeyframeRequestKind::Pli);
            WorkerMetrics::add(&self.metrics.keyframe_requests, 1);
            publisher
                .span
                .in_scope(|| debug!(track = %track, layer, "keyframe requested (PLI)"));
            requested = true;
        }
        if !requested {
            return;
        }
        drain(
            now,
            source,
            publisher,
            &mut self.queues,
            &mut self.timers,
            out,
        );
    }

    /// A peer's DTLS completed: forwarding to it can start, each video consumer with a
    /// keyframe from its publisher.
    fn media_connected(&mut self, now: Instant, index: PeerIndex, out: &mut impl Transmit) {
        let Some(peer) = self.peers[index].as_mut() else {
            return;
        };
        peer.media_connected = true;
        let sources: Vec<_> = video_consumers(peer).collect();
        self.allocate_for(now, index, out);
        for (source, track, slot) in sources {
            self.request_keyframe(now, source, track, KeyframeLayer::For(index, slot), out);
        }
    }

    /// A negotiated m-line appeared on a peer: if the client sends on it, it is a new track; if
    /// it receives on it and follows the host, it is a host slot.
    fn media_added(&mut self, index: PeerIndex, added: MediaAdded) {
        let Some(peer) = self.peers[index].as_mut() else {
            return;
        };
        let kind = MediaKind::from(added.kind);
        if added.direction == Direction::SendOnly && peer.subscription == Subscription::Host {
            peer.host_slots.push(HostSlot {
                kind,
                mid: added.mid,
                consumer: None,
                rewriter: None,
            });
            self.bind_host_slots(index);
            return;
        }
        if added.direction != Direction::RecvOnly && added.direction != Direction::SendRecv {
            return; // one of our own forwarding m-lines
        }
        let track = TrackId(self.next_track);
        self.next_track += 1;
        let source = peer
            .declared_sources
            .iter()
            .find(|(mid, _)| mid.as_str() == &*added.mid)
            .map_or(TrackSource::default_for(kind), |&(_, source)| source);
        let rids: Vec<_> = added
            .simulcast
            .as_ref()
            .map(|simulcast| simulcast.recv.iter().map(|layer| layer.rid).collect())
            .unwrap_or_default();
        let producer = Producer::new(track, added.mid, kind, source, &rids);
        let layers = producer.layers.len();
        peer.producers.push(producer);
        peer.span.in_scope(|| {
            info!(track = %track, ?kind, ?source, mid = %added.mid, layers, ?rids, "published track")
        });
        self.track_published(index, track, kind, source);
    }

    /// The client stopped sending on `mid` (it stopped a screen share): the producer ends, every
    /// subscriber's m-line for it is stopped in its next offer.
    fn unpublish(&mut self, index: PeerIndex, mid: Mid) {
        let Some(peer) = self.peers[index].as_mut() else {
            return;
        };
        let Some(position) = peer.producers.iter().position(|p| p.mid == mid) else {
            return;
        };
        let producer = peer.producers.remove(position);
        let publisher = peer.id;
        peer.span
            .in_scope(|| info!(track = %producer.track, %mid, "unpublished track"));
        if peer.subscription == Subscription::AllTracks {
            peer.notify(SessionEvent::TrackUnpublished {
                participant: publisher,
                track: producer.track,
            });
        }
        let mut followers = Vec::new();
        self.detach_consumers(publisher, &producer, &mut followers);
        followers.dedup();
        for follower in followers {
            self.bind_host_slots(follower);
        }
        let room = peer_room(&self.peers, index);
        self.update_stage(&room);
        self.update_gauges();
    }

    /// A producer is going: room subscribers hear `TrackUnpublished` and stop its m-line in
    /// their next offer; host followers (WHEP) keep their m-line and rewriter, unbound, and are
    /// added to `followers` to bind to the next host.
    fn detach_consumers(
        &mut self,
        publisher: ParticipantId,
        producer: &Producer,
        followers: &mut Vec<PeerIndex>,
    ) {
        for consumer_ref in &producer.consumers {
            let Some(subscriber) = self.peers[consumer_ref.peer].as_mut() else {
                continue;
            };
            if subscriber.subscription == Subscription::Host {
                let consumer = subscriber.consumers[consumer_ref.slot].take();
                if let Some(slot) = subscriber
                    .host_slots
                    .iter_mut()
                    .find(|s| s.consumer == Some(consumer_ref.slot))
                {
                    slot.consumer = None;
                    slot.rewriter = consumer.map(|c| c.rewriter);
                }
                followers.push(consumer_ref.peer);
                continue;
            }
            subscriber.notify(SessionEvent::TrackUnpublished {
                participant: publisher,
                track: producer.track,
            });
            let entry = &mut subscriber.consumers[consumer_ref.slot];
            match entry.as_ref().map(|c| c.state) {
                Some(ConsumerState::ToOffer) => *entry = None,
                Some(ConsumerState::Offered(mid) | ConsumerState::Active { mid, .. }) => {
                    if let Some(c) = entry.as_mut() {
                        c.state = ConsumerState::ToStop(mid);
                    }
                    self.queues.to_negotiate.push(consumer_ref.peer);
                }
                _ => {}
            }
        }
    }

    /// A new track is in the room: offer it to every member that takes all tracks, and let host
    /// followers bind to it if they have nothing of its kind. A room member that publishes hears
    /// of its own track too, so its client learns the track's id (to mute it).
    fn track_published(
        &mut self,
        index: PeerIndex,
        track: TrackId,
        kind: MediaKind,
        source: TrackSource,
    ) {
        let Some(peer) = self.peers[index].as_mut() else {
            return;
        };
        let publisher = peer.id;
        let summary = TrackSummary {
            id: track,
            kind,
            source,
            muted: false,
        };
        if peer.subscription == Subscription::AllTracks {
            peer.notify(SessionEvent::TrackPublished {
                participant: publisher,
                track: summary.clone(),
            });
        }
        let members = self.rooms.get(&peer.room).cloned().unwrap_or_default();
        for member in members {
            if member == index {
                continue;
            }
            let Some(other) = self.peers[member].as_mut() else {
                continue;
            };
            match other.subscription {
                Subscription::AllTracks => {
                    other.notify(SessionEvent::TrackPublished {
                        participant: publisher,
                        track: summary.clone(),
                    });
                    self.add_consumer(member, index, track, kind, source);
                }
                Subscription::Host => self.bind_host_slots(member),
                Subscription::Nothing => {}
            }
        }
        let room = peer_room(&self.peers, index);
        self.update_stage(&room);
        self.update_gauges();
    }

    /// An admin's choice of stage for `room` (`None`: back to the host).
    fn set_stage(
        &mut self,
        room: &str,
        participant: Option<ParticipantId>,
    ) -> Result<Option<ParticipantId>, SfuError> {
        if let Some(participant) = participant {
            let in_room = self
                .by_participant
                .get(&participant)
                .and_then(|&i| self.peers[i].as_ref())
                .is_some_and(|p| p.room == room && p.subscription != Subscription::Host);
            if !in_room {
                return Err(SfuError::UnknownParticipant(participant));
            }
        }
        self.stages
            .entry(room.to_owned())
            .or_insert_with(|| RoomStage {
                room: Arc::from(room),
                chosen: None,
                current: None,
            })
            .chosen = participant;
        self.update_stage(room);
        Ok(self.stages.get(room).and_then(|s| s.current))
    }

    /// The member on `room`'s stage: the admin's choice while it publishes, else the host (the
    /// first member, in join order, that publishes).
    fn effective_stage(&self, room: &str) -> Option<PeerIndex> {
        let members = self.rooms.get(room)?;
        let eligible = |index: PeerIndex| {
            self.peers[index].as_ref().is_some_and(|p| {
                p.removal.is_none()
                    && p.subscription != Subscription::Host
                    && !p.producers.is_empty()
            })
        };
        let chosen = self.stages.get(room).and_then(|s| s.chosen);
        let chosen = chosen.and_then(|id| {
            members
                .iter()
                .copied()
                .find(|&m| eligible(m) && self.peers[m].as_ref().is_some_and(|p| p.id == id))
        });
        chosen.or_else(|| members.iter().copied().find(|&m| eligible(m)))
    }

    /// Recompute `room`'s stage; on a change, tell the stage tap and the room's members.
    /// Called after every change that can move it (publish, leave, an admin's choice).
    fn update_stage(&mut self, room: &str) {
        let new = self.effective_stage(room);
        let new_id = new.and_then(|i| self.peers[i].as_ref()).map(|p| p.id);
        let current = self.stages.get(room).and_then(|s| s.current);
        if current == new_id {
            if new.is_none() && !self.rooms.contains_key(room) {
                self.stages.remove(room);
            }
            return;
        }
        if let Some(old) = current.and_then(|id| self.by_participant.get(&id).copied())
            && let Some(peer) = self.peers[old].as_mut()
        {
            peer.on_stage = false;
            peer.producers.iter_mut().for_each(|p| p.stage = None);
        }
        let source = new.and_then(|i| self.peers[i].as_mut()).map(|peer| {
            peer.on_stage = peer.rtc.is_some();
            peer.producers.iter_mut().for_each(|p| p.stage = None);
            peer.span.in_scope(|| info!("on stage"));
            StageSource {
                participant: peer.id,
                name: peer.name.clone(),
                ingest: peer.rtc.is_none(),
            }
        });
        let stage = self
            .stages
            .entry(room.to_owned())
            .or_insert_with(|| RoomStage {
                room: Arc::from(room),
                chosen: None,
                current: None,
            });
        stage.current = new_id;
        let room_name = stage.room.clone();
        if let Some(tap) = &self.config.stage_tap {
            tap.change(StageChange {
                room: room_name,
                stage: source,
            });
        }
        for &member in self.rooms.get(room).map(Vec::as_slice).unwrap_or_default() {
            if let Some(other) = self.peers[member].as_mut()
                && other.subscription == Subscription::AllTracks
            {
                other.notify(SessionEvent::StageChanged {
                    participant: new_id,
                });
            }
        }
        if new.is_none() && !self.rooms.contains_key(room) {
            self.stages.remove(room);
        }
    }

    /// The room's host track of `kind`: the first producer of that kind, in join order, of a
    /// member other than `viewer`.
    fn host_track(
        &self,
        room: &str,
        viewer: PeerIndex,
        kind: MediaKind,
    ) -> Option<(PeerIndex, TrackId)> {
        self.rooms.get(room)?.iter().find_map(|&member| {
            let peer = self.peers[member].as_ref()?;
            if member == viewer || peer.removal.is_some() {
                return None;
            }
            let producer = peer.producers.iter().find(|p| p.kind == kind)?;
            Some((member, producer.track))
        })
    }

    /// Bind each unbound host slot of a host follower to the room's host track of its kind.
    /// No renegotiation: the slot's m-line and SSRC stay; the kept rewriter makes the new
    /// source continue the subscriber's sequence numbers and timestamps.
    fn bind_host_slots(&mut self, index: PeerIndex) {
        let Some(peer) = self.peers[index].as_ref() else {
            return;
        };
        if peer.removal.is_some() {
            return;
        }
        let room = peer.room.clone();
        for slot_index in 0..peer.host_slots.len() {
            let Some(peer) = self.peers[index].as_ref() else {
                return;
            };
            let slot = &peer.host_slots[slot_index];
            if slot.consumer.is_some() {
                continue;
            }
            let (kind, mid) = (slot.kind, slot.mid);
            let Some((source, track)) = self.host_track(&room, index, kind) else {
                continue;
            };
            let Some(source_participant) = self.peers[source].as_ref().map(|p| p.id) else {
                continue;
            };
            let Some(peer) = self.peers[index].as_mut() else {
                return;
            };
            let Some(ssrc) = peer.rtc.as_mut().and_then(|rtc| {
                rtc.direct_api()
                    .stream_tx_by_mid(mid, None)
                    .map(|s| s.ssrc())
            }) else {
                continue;
            };
            let mut consumer = Consumer::new(
                source,
                source_participant,
                track,
                kind,
                TrackSource::default_for(kind),
            );
            consumer.state = ConsumerState::Active { mid, ssrc };
            if let Some(mut rewriter) = peer.host_slots[slot_index].rewriter.take() {
                rewriter.restart();
                consumer.rewriter = rewriter;
            }
            let consumer_slot = peer.insert_consumer(consumer);
            peer.host_slots[slot_index].consumer = Some(consumer_slot);
            peer.span.in_scope(
                || info!(%mid, track = %track, host = %source_participant, "playing the host's track"),
            );
            if kind == MediaKind::Video && peer.media_connected {
                self.queues.keyframe_requests.push((index, mid));
            }
            if let Some(producer) = self.peers[source]
                .as_mut()
                .and_then(|p| p.producers.iter_mut().find(|p| p.track == track))
            {
                producer.consumers.push(ConsumerRef {
                    peer: index,
                    slot: consumer_slot,
                });
            }
        }
        self.update_gauges();
    }

    /// An ingest edge adds a track to its participant (which has no WebRTC session).
    fn publish_ingest(
        &mut self,
        participant: ParticipantId,
        kind: MediaKind,
    ) -> Result<TrackId, SfuError> {
        let index = self.peer_index(participant)?;
        let params = match kind {
            MediaKind::Video => self.ingest_h264,
            MediaKind::Audio => self.ingest_opus,
        };
        let track = TrackId(self.next_track);
        let peer = self.peers[index]
            .as_mut()
            .expect("peer_index checked the slot");
        if peer.rtc.is_some() {
            return Err(SfuError::NotIngest(participant));
        }
        self.next_track += 1;
        let mid = Mid::from(match kind {
            MediaKind::Audio => "ingest-audio",
            MediaKind::Video => "ingest-video",
        });
        let mut producer = Producer::new(track, mid, kind, TrackSource::default_for(kind), &[]);
        producer.ingest = Some(IngestTrack {
            params,
            next_seq: 0,
        });
        peer.producers.push(producer);
        peer.span
            .in_scope(|| info!(track = %track, ?kind, "published ingest track"));
        self.track_published(index, track, kind, TrackSource::default_for(kind));
        Ok(track)
    }

    /// One frame of an ingest track: number its packets and fan them out.
    fn ingest_frame(
        &mut self,
        now: Instant,
        participant: ParticipantId,
        track: TrackId,
        frame: IngestFrame,
        out: &mut impl Transmit,
    ) {
        let Some(&index) = self.by_participant.get(&participant) else {
            return;
        };
        let Some(peer) = self.peers[index].as_mut() else {
            return;
        };
        let Some(producer_index) = peer.producers.iter().position(|p| p.track == track) else {
            return;
        };
        let producer = &mut peer.producers[producer_index];
        let Some(ingest) = producer.ingest.as_mut() else {
            return;
        };
        let params = ingest.params;
        let kind = producer.kind;
        producer.first_packet.get_or_insert(now);
        let layer = &mut producer.layers[0];
        layer.last_packet = Some(now);
        layer.bytes += frame
            .payloads
            .iter()
            .map(|(p, _)| p.len() as u64)
            .sum::<u64>();
        let first_seq = ingest.next_seq;
        ingest.next_seq += frame.payloads.len() as u64;
        for (seq, (i, (payload, marker))) in (first_seq..).zip(frame.payloads.iter().enumerate()) {
            let incoming = IncomingPacket {
                ssrc: frame.source_id,
                seq,
                timestamp: frame.rtp_timestamp,
                starts_keyframe: kind == MediaKind::Audio || (frame.keyframe && i == 0),
                arrival: frame.capture_time,
            };
            let packet = OutgoingPacket {
                incoming,
                layer: 0,
                vp8: None,
                marker: *marker,
                payload,
                ext_vals: ExtensionValues::default(),
            };
            self.fan_out(now, index, producer_index, &params, packet, out);
        }
    }

    /// Mark a peer for removal with `reason`; [`Router::process`] removes it.
    fn remove_for(&mut self, index: PeerIndex, reason: LeaveReason) {
        if let Some(peer) = self.peers[index].as_mut() {
            peer.span.in_scope(|| info!(?reason, "removed by an admin"));
            peer.mark_for_removal(reason);
            self.queues.to_remove.push(index);
        }
    }

    /// A server-side mute, by the track's owner or an admin: the producer's packets stop at
    /// the SFU. Unmuting video asks the publisher for a keyframe so subscribers resume at once.
    /// An owner cannot lift an admin's mute; an admin's unmute lifts any.
    #[allow(clippy::too_many_arguments)]
    fn set_muted(
        &mut self,
        now: Instant,
        room: &str,
        participant: ParticipantId,
        track: Option<TrackId>,
        muted: bool,
        by: MutedBy,
        out: &mut impl Transmit,
    ) -> Result<Vec<TrackId>, SfuError> {
        let index = self
            .peer_index(participant)
            .ok()
            .filter(|&i| self.peers[i].as_ref().is_some_and(|p| p.room == room))
            .ok_or(SfuError::UnknownParticipant(participant))?;
        let peer = self.peers[index].as_mut().expect("peer_index checked");
        if let Some(track) = track
            && !peer.producers.iter().any(|p| p.track == track)
        {
            return Err(SfuError::UnknownTrack(track));
        }
        if !muted
            && by == MutedBy::Owner
            && let Some(held) = peer
                .producers
                .iter()
                .find(|p| track.is_none_or(|t| t == p.track) && p.muted == Some(MutedBy::Admin))
        {
            return Err(SfuError::MutedByAdmin(held.track));
        }
        let mut changed = Vec::new();
        let mut resumed = Vec::new();
        for producer in &mut peer.producers {
            if track.is_some_and(|t| t != producer.track) || producer.is_muted() == muted {
                continue;
            }
            producer.muted = muted.then_some(by);
            changed.push((producer.track, producer.kind));
            if !muted {
                resumed.extend(producer.consumers.iter().copied());
            }
        }
        peer.span
            .in_scope(|| info!(?changed, muted, ?by, "tracks muted or unmuted"));
        // What was not forwarded while muted is not a loss: subscribers continue their sequence
        // numbers from the next packet, with no gap to report or NACK.
        for consumer_ref in resumed {
            if let Some(consumer) = self.peers[consumer_ref.peer]
                .as_mut()
                .and_then(|p| p.consumers.get_mut(consumer_ref.slot))
                .and_then(Option::as_mut)
            {
                consumer.rewriter.restart();
            }
        }
        let members = self.rooms.get(room).cloned().unwrap_or_default();
        for &(track, kind) in &changed {
            for &member in &members {
                if let Some(other) = self.peers[member].as_mut()
                    && (other.subscription == Subscription::AllTracks || member == index)
                {
                    other.notify(SessionEvent::TrackMuted {
                        participant,
                        track,
                        muted,
                        by,
                    });
                }
            }
            if !muted && kind == MediaKind::Video {
                self.request_keyframe(now, index, track, KeyframeLayer::All, out);
            }
        }
        Ok(changed.into_iter().map(|(track, _)| track).collect())
    }

    pub fn room_info(&self, room: &str) -> Option<RoomInfo> {
        let members = self.rooms.get(room)?;
        let peers = || members.iter().filter_map(|&m| self.peers[m].as_ref());
        Some(RoomInfo {
            participants: members.len(),
            viewers: peers().filter(|p| p.producers.is_empty()).count(),
            host: peers()
                .find(|p| p.removal.is_none() && !p.producers.is_empty())
                .map(summary),
            opened_at: *self.opened_at.get(room)?,
        })
    }

    fn add_consumer(
        &mut self,
        subscriber: PeerIndex,
        source: PeerIndex,
        track: TrackId,
        kind: MediaKind,
        track_source: TrackSource,
    ) {
        let Some(source_participant) = self.peers[source].as_ref().map(|p| p.id) else {
            return;
        };
        let Some(peer) = self.peers[subscriber].as_mut() else {
            return;
        };
        let slot = peer.insert_consumer(Consumer::new(
            source,
            source_participant,
            track,
            kind,
            track_source,
        ));
        if let Some(producer) = self.peers[source]
            .as_mut()
            .and_then(|p| p.producers.iter_mut().find(|p| p.track == track))
        {
            producer.consumers.push(ConsumerRef {
                peer: subscriber,
                slot,
            });
        }
        self.queues.to_negotiate.push(subscriber);
    }

    /// Drop a consumer slot and its entry in the producer's list.
    fn free_consumer(&mut self, subscriber: PeerIndex, slot: usize) {
        let Some(consumer) = self.peers[subscriber]
            .as_mut()
            .and_then(|p| p.consumers[slot].take())
        else {
            return;
        };
        if let Some(producer) = self.peers[consumer.source_peer]
            .as_mut()
            .and_then(|p| p.producers.iter_mut().find(|p| p.track == consumer.track))
        {
            producer.consumers.retain(|r| {
                *r != ConsumerRef {
                    peer: subscriber,
                    slot,
                }
            });
        }
        self.update_gauges();
    }

    fn remove_peer(&mut self, index: PeerIndex) {
        let Some(mut peer) = self.peers[index].take() else {
            return;
        };
        let reason = peer.removal.unwrap_or(LeaveReason::Left);
        peer.span.in_scope(|| info!(?reason, "left"));
        peer.notify_removed(reason);

        // Its consumers: unlink them from their producers.
        for (slot, consumer) in peer.consumers.iter().enumerate() {
            let Some(consumer) = consumer else { continue };
            if let Some(producer) = self.peers[consumer.source_peer]
                .as_mut()
                .and_then(|p| p.producers.iter_mut().find(|p| p.track == consumer.track))
            {
                producer
                    .consumers
                    .retain(|r| *r != ConsumerRef { peer: index, slot });
            }
        }
        // Its producers: every subscriber stops the matching m-line; host followers keep theirs
        // and bind to the next host below.
        let mut followers = Vec::new();
        for producer in &peer.producers {
            self.detach_consumers(peer.id, producer, &mut followers);
        }
        for addr in &peer.remote_addrs {
            if self.by_addr.get(addr) == Some(&index) {
                self.by_addr.remove(addr);
            }
        }
        self.by_participant.remove(&peer.id);
        if let Some(stage) = self.stages.get_mut(&peer.room)
            && stage.chosen == Some(peer.id)
        {
            stage.chosen = None;
        }
        if let Some(detector) = self.speakers.get_mut(&peer.room) {
            detector.remove(peer.id);
        }
        if let Some(members) = self.rooms.get_mut(&peer.room) {
            members.retain(|&m| m != index);
            if members.is_empty() {
                self.rooms.remove(&peer.room);
                self.speakers.remove(&peer.room);
                self.opened_at.remove(&peer.room);
                self.config.room_budget.close();
            } else {
                for &member in members.iter() {
                    if let Some(other) = self.peers[member].as_mut()
                        && other.subscription == Subscription::AllTracks
                        && peer.subscription != Subscription::Host
                    {
                        other.notify(SessionEvent::ParticipantLeft {
                            participant: peer.id,
                            reason,
                        });
                    }
                }
            }
        }
        self.queues.to_negotiate.retain(|&i| i != index);
        self.queues.rtp.retain(|(i, _)| *i != index);
        self.queues.keyframe_requests.retain(|(i, _)| *i != index);
        self.queues.media_added.retain(|(i, _)| *i != index);
        self.queues.media_stopped.retain(|(i, _)| *i != index);
        self.queues.connected.retain(|&i| i != index);
        self.free_peer_slots.push(index);
        followers.dedup();
        for follower in followers {
            self.bind_host_slots(follower);
        }
        self.update_stage(&peer.room);
        // Peers that became unable to take events during the notifications go next.
        for (i, other) in self.peers.iter().enumerate() {
            if other.as_ref().is_some_and(|p| p.removal.is_some())
                && !self.queues.to_remove.contains(&i)
            {
                self.queues.to_remove.push(i);
            }
        }
        self.update_gauges();
    }

    /// Send the peer a server offer if its forwarded tracks changed and no offer is out.
    fn negotiate(&mut self, now: Instant, index: PeerIndex, out: &mut impl Transmit) {
        let Some(peer) = self.peers[index].as_mut() else {
            return;
        };
        if peer.removal.is_some() || peer.pending_offer.is_some() {
            return;
        }
        let Some(rtc) = peer.rtc.as_mut() else {
            return;
        };
        let mut changes = rtc.sdp_api();
        for mid in peer.stray_receive_mids.drain(..) {
            changes.stop_media(mid);
        }
        for consumer in peer.consumers.iter_mut().flatten() {
            match consumer.state {
                ConsumerState::ToOffer => {
                    let mid = changes.add_media(
                        consumer.kind.into(),
                        Direction::SendOnly,
                        Some(consumer.source_participant.to_string()),
                        Some(consumer.track.to_string()),
                        None,
                    );
                    consumer.state = ConsumerState::Offered(mid);
                    consumer.reset_stream();
                }
                ConsumerState::ToStop(mid) => {
                    changes.stop_media(mid);
                    consumer.state = ConsumerState::Stopping(mid);
                }
                _ => {}
            }
        }
        if !changes.has_changes() {
            return;
        }
        let Some((offer, pending)) = changes.apply() else {
            return;
        };
        peer.pending_offer = Some(pending);
        let tracks = offered_tracks(peer);
        peer.notify(SessionEvent::Offer {
            sdp: offer.to_sdp_string(),
            tracks,
        });
        drain(now, index, peer, &mut self.queues, &mut self.timers, out);
    }

    fn update_gauges(&self) {
        let peers = self.peers.iter().flatten();
        let producers: usize = peers.clone().map(|p| p.producers.len()).sum();
        let consumers: usize = peers.map(|p| p.consumers.iter().flatten().count()).sum();
        WorkerMetrics::set(&self.metrics.rooms, self.rooms.len() as u64);
        WorkerMetrics::set(&self.metrics.participants, self.by_participant.len() as u64);
        WorkerMetrics::set(&self.metrics.producers, producers as u64);
        WorkerMetrics::set(&self.metrics.consumers, consumers as u64);
    }
}

/// Opus, VP8 and H.264 only: every browser has them, H.264 is what RTMP/WHIP encoders send,
/// and each forwarded m-line lists every configured codec, so fewer codecs make smaller offers
/// that browsers apply faster. Publishers send the first one they share with this list: VP8
/// for room members, H.264 with `h264_first` (broadcast publishers).
/// The room of the peer at `index` (empty if the slot is free).
fn peer_room(peers: &[Option<Peer>], index: PeerIndex) -> String {
    peers[index]
        .as_ref()
        .map(|p| p.room.clone())
        .unwrap_or_default()
}

fn server_codecs(config: RtcConfig, h264_first: bool) -> RtcConfig {
    let config = config.clear_codecs().enable_opus(true, false);
    if h264_first {
        config.enable_h264(true).enable_vp8(true)
    } else {
        config.enable_vp8(true).enable_h264(true)
    }
}

fn summary(peer: &Peer) -> ParticipantSummary {
    ParticipantSummary {
        id: peer.id,
        name: peer.name.clone(),
        tracks: peer
            .producers
            .iter()
            .map(|p| TrackSummary {
                id: p.track,
                kind: p.kind,
                source: p.source,
                muted: p.is_muted(),
            })
            .collect(),
    }
}

/// A packet on its way to a producer's subscribers.
struct OutgoingPacket<'a> {
    incoming: IncomingPacket,
    /// The producer layer it belongs to (0 for a plain track).
    layer: Layer,
    /// Its VP8 payload descriptor, parsed once for every subscriber's PictureID rewrite.
    vp8: Option<Vp8Descriptor>,
    marker: bool,
    payload: &'a Arc<[u8]>,
    ext_vals: ExtensionValues,
}

/// Which of a producer's layers a keyframe request is for.
#[derive(Debug, Clone, Copy)]
enum KeyframeLayer {
    Layer(Layer),
    /// The layer the stage (HLS) packages or waits for.
    Stage,
    /// Every layer that flows (after an unmute, subscribers may be on any of them).
    All,
    /// The layer consumer slot `.1` of subscriber `.0` waits for or receives.
    For(PeerIndex, usize),
}

/// Bound on deadlines of "now" handled inside one drain, so a misbehaving session cannot spin.
const MAX_IMMEDIATE_TIMEOUTS: u32 = 4;

/// Drain one peer's `Rtc` until it asks for time: datagrams go to `out`, events are queued
/// for the router, and the next deadline goes into the timer heap.
/// Every m-line a peer is sent media on, or will be once the outstanding offer is answered,
/// and the track it carries: what the client needs to place each incoming track.
fn offered_tracks(peer: &Peer) -> Vec<OfferedTrack> {
    peer.consumers
        .iter()
        .flatten()
        .filter_map(|c| match c.state {
            ConsumerState::Offered(mid) | ConsumerState::Active { mid, .. } => Some(OfferedTrack {
                mid: mid.to_string(),
                participant: c.source_participant,
                track: c.track,
                kind: c.kind,
                source: c.source,
            }),
            _ => None,
        })
        .collect()
}

/// The peer's negotiated video consumers, as (publisher, track, consumer slot): those that
/// need a keyframe when forwarding to them starts.
fn video_consumers(peer: &Peer) -> impl Iterator<Item = (PeerIndex, TrackId, usize)> + '_ {
    peer.consumers
        .iter()
        .enumerate()
        .filter_map(|(slot, c)| Some((slot, c.as_ref()?)))
        .filter(|(_, c)| {
            c.kind == MediaKind::Video && matches!(c.state, ConsumerState::Active { .. })
        })
        .map(|(slot, c)| (c.source_peer, c.track, slot))
}

/// The negotiated send stream of a forwarding m-line, set up for forwarding; `None` if the
/// client declined it.
fn forwarding_stream(rtc: &mut Rtc, mid: Mid) -> Option<Ssrc> {
    rtc.direct_api().stream_tx_by_mid(mid, None).map(|stream| {
        // str0m drops queued retransmissions while they exceed 15 % of the stream's bytes, and
        // its bandwidth probes (padding sent as RTX) count as retransmissions: a low layer being
        // probed would stop answering NACKs. Resends are bounded by what the subscriber asks for.
        stream.set_rtx_cache(RTX_CACHE_PACKETS, RTX_CACHE_AGE, None);
        stream.ssrc()
    })
}

/// Bind the receive m-lines a client declared in its offer (`receive`: mid, track) to its
/// consumers still waiting to be offered, so those tracks flow without a server offer. Returns
/// the consumer slots bound; a declared m-line that could not be bound is stopped in the next
/// offer.
fn bind_receive_mids(peer: &mut Peer, receive: &[(String, TrackId)]) -> Vec<usize> {
    let mut bound = Vec::new();
    let Some(rtc) = peer.rtc.as_mut() else {
        return bound;
    };
    for (mid, track) in receive {
        let mid = Mid::from(mid.as_str());
        // The client receives on it, so it is a send m-line here; anything else is not ours.
        let Some(kind) = rtc
            .media(mid)
            .filter(|media| media.direction() == Direction::SendOnly)
            .map(|media| MediaKind::from(media.kind()))
        else {
            continue;
        };
        if peer
            .consumers
            .iter()
            .flatten()
            .any(|c| c.state.mid() == Some(mid))
        {
            continue; // already bound (a renegotiation repeating its receive map)
        }
        let waiting = peer.consumers.iter_mut().enumerate().find_map(|(slot, c)| {
            let c = c.as_mut()?;
            (c.track == *track && c.kind == kind && c.state == ConsumerState::ToOffer)
                .then_some((slot, c))
        });
        match (waiting, forwarding_stream(rtc, mid)) {
            (Some((slot, consumer)), Some(ssrc)) => {
                consumer.reset_stream();
                consumer.state = ConsumerState::Active { mid, ssrc };
                bound.push(slot);
            }
            _ => {
                peer.span.in_scope(|| {
                    debug!(%mid, track = %track, "receive m-line for no waiting track: stopping it")
                });
                peer.stray_receive_mids.push(mid);
            }
        }
    }
    bound
}

fn drain(
    now: Instant,
    index: PeerIndex,
    peer: &mut Peer,
    queues: &mut Queues,
    timers: &mut BinaryHeap<Reverse<(Instant, PeerIndex)>>,
    out: &mut impl Transmit,
) {
    let Some(rtc) = peer.rtc.as_mut() else {
        return;
    };
    let span = &peer.span;
    let mut failed = false;
    let mut immediate_timeouts = 0;
    loop {
        if !rtc.is_alive() {
            span.in_scope(|| info!("media connection closed"));
            failed = true;
            break;
        }
        match engine!(rtc.poll_output()) {
            Ok(Output::Transmit(transmit)) => out.send(transmit.destination, &transmit.contents),
            Ok(Output::Timeout(at)) => {
                // "Now" (str0m's pacer releasing what was just written): handle it here
                // rather than through the timer heap, a few times at most per drain.
                if at <= now && immediate_timeouts < MAX_IMMEDIATE_TIMEOUTS {
                    immediate_timeouts += 1;
                    if let Err(error) = engine!(rtc.handle_input(Input::Timeout(now))) {
                        span.in_scope(|| warn!(%error, "media connection failed"));
                        failed = true;
                        break;
                    }
                    continue;
                }
                if peer
                    .scheduled_timeout
                    .is_none_or(|scheduled| at < scheduled)
                {
                    peer.scheduled_timeout = Some(at);
                    timers.push(Reverse((at, index)));
                }
                break;
            }
            Ok(Output::Event(event)) => match event {
                Event::RtpPacket(packet) => queues.rtp.push_back((index, packet)),
                Event::KeyframeRequest(request) => {
                    queues.keyframe_requests.push((index, request.mid))
                }
                Event::MediaAdded(added) => queues.media_added.push((index, added)),
                Event::MediaChanged(changed) if !changed.direction.is_receiving() => {
                    queues.media_stopped.push((index, changed.mid))
                }
                Event::IceConnectionStateChange(state) => {
                    span.in_scope(|| debug!(?state, "ICE state"));
                    if state == IceConnectionState::Disconnected {
                        span.in_scope(|| {
                            info!("ICE disconnected: no connectivity checks from the client")
                        });
                        failed = true;
                    }
                }
                Event::Connected => {
                    span.in_scope(|| info!("media connected (DTLS done)"));
                    queues.connected.push(index);
                }
                Event::EgressBitrateEstimate(BweKind::Twcc {
                    estimate,
                    can_probe,
                }) => {
                    span.in_scope(|| debug!(%estimate, can_probe, "bandwidth estimate"));
                    peer.estimate_bps = Some(estimate.as_u64());
                }
                _ => {}
            },
            Err(error) => {
                span.in_scope(|| warn!(%error, "media connection failed"));
                failed = true;
                break;
            }
        }
    }
    if failed {
        peer.mark_for_removal(LeaveReason::MediaTimeout);
    }
    if peer.removal.is_some() && !queues.to_remove.contains(&index) {
        queues.to_remove.push(index);
    }
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;
