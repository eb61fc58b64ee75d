//! Simulcast: which spatial layer each subscriber receives, when it may switch, how the
//! switch stays invisible, and how a subscriber's bandwidth is shared between its tracks.
//!
//! A simulcast publisher sends the same camera as up to three independent encodings
//! ("layers", lowest first), each an RTP stream with its own SSRC, identified by its RTP
//! stream id ([RFC 8852](https://www.rfc-editor.org/rfc/rfc8852), negotiated with
//! [RFC 8853](https://www.rfc-editor.org/rfc/rfc8853) `a=simulcast` and
//! [RFC 8851](https://www.rfc-editor.org/rfc/rfc8851) `a=rid`). A subscriber gets exactly
//! one layer per track, as one continuous stream:
//!
//! - [`LayerSwitcher`] decides per packet. The layers are independent encodings, so a
//!   subscriber can move to another layer only at that layer's keyframe; until it arrives it
//!   keeps receiving the current layer, and nothing of any other layer.
//! - [`super::rewrite::RtpRewriter`] then sees a source change (a new SSRC starting with a
//!   keyframe) and continues the outgoing sequence numbers and timestamps.
//! - [`Vp8PictureIds`] keeps VP8's PictureID and TL0PICIDX
//!   ([RFC 7741 §4.2](https://www.rfc-editor.org/rfc/rfc7741#section-4.2)) continuous, since
//!   each layer numbers its pictures on its own.
//! - [`allocate`] turns the subscriber's bandwidth estimate and its tiles' sizes into a target
//!   layer per track.
//!
//! Worked example: a subscriber on layer 0 whose estimate grows so that layer 2 fits.
//!
//! | packet (layer, seq, keyframe?) | target | decision           | out seq | PictureID in → out |
//! |--------------------------------|--------|--------------------|---------|--------------------|
//! | L0 seq 100, delta              | 0      | forward            | 41      | 7000 → 12          |
//! | (allocation: target 2, PLI to layer 2)                                                   |
//! | L2 seq 900, delta              | 2      | drop (not yet)     | –       | –                  |
//! | L0 seq 101, delta              | 2      | forward (current)  | 42      | 7001 → 13          |
//! | L2 seq 905, keyframe starts    | 2      | switch 0 → 2       | 43      | 3500 → 14          |
//! | L2 seq 906, same frame         | 2      | forward            | 44      | 3500 → 14          |
//! | L0 seq 102, delta              | 2      | drop (old layer)   | –       | –                  |
//! | L0 seq 101, retransmission     | 2      | drop (old layer)   | –       | –                  |
//!
//! The subscriber's decoder sees seq 41, 42, 43, 44 with no hole, pictures 12, 13, 14, and
//! a keyframe exactly where the resolution changes. Timestamps continue from the last one
//! sent by the wall time elapsed (see the rewriter).
//!
//! Invariants: a subscriber never receives packets of two layers between two switches; a
//! switch happens only on the first packet of a keyframe of a layer between the current one
//! (exclusive) and the target (inclusive); a subscriber whose target is `None` (hidden tile,
//! no bandwidth) receives nothing of the track.

use super::rewrite::{DropReason, IncomingPacket, Rewrite, RtpRewriter};

/// Spatial layer index: 0 is the lowest resolution.
pub type Layer = u8;

/// Layers a publisher may send; more are ignored (the web client sends three).
pub const MAX_LAYERS: usize = 3;

/// What to do with one packet of a simulcast track for one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerDecision {
    /// The packet belongs to the current layer.
    Forward,
    /// The packet starts a keyframe of a better layer: it becomes current and is forwarded.
    Switched { from: Option<Layer>, to: Layer },
    /// Not for this subscriber.
    Drop,
}

/// One subscriber's layer choice for one simulcast track.
#[derive(Debug, Default, Clone)]
pub struct LayerSwitcher {
    current: Option<Layer>,
    target: Option<Layer>,
}

impl LayerSwitcher {
    /// A switcher that takes the first keyframe of any layer up to `target`.
    pub fn starting_at(target: Layer) -> Self {
        LayerSwitcher {
            current: None,
            target: Some(target),
        }
    }

    /// Choose the layer to move to (`None`: stop forwarding at once).
    /// Returns whether the target changed.
    pub fn set_target(&mut self, target: Option<Layer>) -> bool {
        let changed = self.target != target;
        self.target = target;
        if target.is_none() {
            self.current = None;
        }
        changed
    }

    pub fn target(&self) -> Option<Layer> {
        self.target
    }

    pub fn current(&self) -> Option<Layer> {
        self.current
    }

    /// The layer whose keyframe the subscriber is waiting for, if any.
    pub fn wants_keyframe(&self) -> Option<Layer> {
        match (self.current, self.target) {
            (current, Some(target)) if current != Some(target) => Some(target),
            _ => None,
        }
    }

    /// Decide for one packet of `layer`.
    pub fn on_packet(&mut self, layer: Layer, starts_keyframe: bool) -> LayerDecision {
        let Some(target) = self.target else {
            return LayerDecision::Drop;
        };
        if self.current == Some(layer) {
            return LayerDecision::Forward;
        }
        if starts_keyframe && self.moves_toward_target(layer, target) {
            let from = self.current.replace(layer);
            return LayerDecision::Switched { from, to: layer };
        }
        LayerDecision::Drop
    }

    /// The current layer stopped arriving (the publisher paused it or lost it): forget it,
    /// so that any layer's keyframe up to the target restarts the picture.
    pub fn current_stopped(&mut self) {
        self.current = None;
    }

    fn moves_toward_target(&self, layer: Layer, target: Layer) -> bool {
        match self.current {
            // Nothing yet: any layer up to the target gets the picture going.
            None => layer <= target,
            Some(current) if current < target => layer > current && layer <= target,
            Some(current) => layer < current && layer >= target,
        }
    }
}

/// One simulcast track forwarded as one continuous stream to a single sink that always
/// wants the best layer that flows: the stage, which HLS packages.
///
/// It is a [`LayerSwitcher`] followed by an [`RtpRewriter`]: it starts on the first
/// keyframe of any layer, climbs to the target layer at that layer's keyframe, and the sink
/// sees one SSRC-free sequence of numbers and timestamps with no jump back. (Consumers keep
/// the two apart: their rewriter outlives a consumer on a host slot.)
#[derive(Debug)]
pub struct LayerForwarder {
    pub switcher: LayerSwitcher,
    rewriter: RtpRewriter,
}

/// What [`LayerForwarder::forward`] decided for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarded {
    /// Send with these numbers.
    Send { seq: u64, timestamp: u32 },
    /// Not for the sink. `wants_keyframe`: the packet is of the layer the sink waits for,
    /// so that layer should be asked for a keyframe.
    Drop { wants_keyframe: bool },
}

impl LayerForwarder {
    /// A video forwarder aiming at `target`, starting on the first keyframe of any layer up
    /// to it.
    pub fn video(target: Layer) -> Self {
        LayerForwarder {
            switcher: LayerSwitcher::starting_at(target),
            rewriter: RtpRewriter::new(90_000, true),
        }
    }

    pub fn forward(&mut self, layer: Layer, packet: IncomingPacket) -> Forwarded {
        match self.switcher.on_packet(layer, packet.starts_keyframe) {
            LayerDecision::Forward | LayerDecision::Switched { .. } => {}
            LayerDecision::Drop => {
                // Before any picture a keyframe of any layer up to the target starts one;
                // after, only the target's is worth asking for.
                let wants_keyframe = match (self.switcher.current(), self.switcher.target()) {
                    (None, Some(target)) => layer <= target,
                    _ => self.switcher.wants_keyframe() == Some(layer),
                };
                return Forwarded::Drop { wants_keyframe };
            }
        }
        match self.rewriter.rewrite(packet) {
            Rewrite::Forward { seq, timestamp } => Forwarded::Send { seq, timestamp },
            Rewrite::Drop(DropReason::WaitingForKeyframe) => Forwarded::Drop {
                wants_keyframe: true,
            },
            Rewrite::Drop(DropReason::BeforeStart) => Forwarded::Drop {
                wants_keyframe: false,
            },
        }
    }
}

/// VP8 PictureID (15 bit) and TL0PICIDX (8 bit) continuity across layer switches.
///
/// Each layer numbers its pictures independently. After a switch the first picture of the
/// new layer gets the number after the last one sent, and the rest of that layer follows at
/// the same offset, so a decoder never sees a jump that looks like lost pictures.
#[derive(Debug, Default, Clone)]
pub struct Vp8PictureIds {
    picture_offset: u16,
    tl0_offset: u8,
    last_picture: Option<u16>,
    last_tl0: Option<u8>,
    rebase: bool,
}

const PICTURE_ID_MODULUS: u16 = 1 << 15;

impl Vp8PictureIds {
    /// The next packet starts another layer: rebase the numbering on it.
    pub fn switched(&mut self) {
        self.rebase = true;
    }

    /// Outgoing (PictureID, TL0PICIDX) for a packet's incoming ones.
    pub fn rewrite(&mut self, picture_id: u16, tl0: Option<u8>) -> (u16, Option<u8>) {
        if self.rebase {
            self.rebase = false;
            if let Some(last) = self.last_picture {
                let next = (last + 1) % PICTURE_ID_MODULUS;
                self.picture_offset = next.wrapping_sub(picture_id) % PICTURE_ID_MODULUS;
            }
            if let (Some(last), Some(tl0)) = (self.last_tl0, tl0) {
                self.tl0_offset = last.wrapping_add(1).wrapping_sub(tl0);
            }
        }
        let picture = picture_id.wrapping_add(self.picture_offset) % PICTURE_ID_MODULUS;
        let tl0 = tl0.map(|t| t.wrapping_add(self.tl0_offset));
        self.last_picture = Some(picture);
        if tl0.is_some() {
            self.last_tl0 = tl0;
        }
        (picture, tl0)
    }
}

/// How much a track matters when bandwidth is short; higher first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    Normal,
    DominantSpeaker,
    ScreenShare,
}

/// One layer as the allocator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LayerInfo {
    /// What the layer costs (measured, or a nominal figure before it was seen).
    pub bitrate_bps: u64,
    /// Picture width, 0 when not known.
    pub width: u16,
    /// The publisher sends it, or would on request (paused by dynacast); false for a layer
    /// the publisher stopped on its own (its CPU or uplink) or never sent.
    pub available: bool,
}

/// One video track a subscriber receives. Plain data (no borrows), so the router keeps one
/// vector of these and reuses it at every allocation without allocating.
#[derive(Debug, Clone, Copy)]
pub struct TrackDemand {
    pub priority: Priority,
    /// The tile is on screen; a hidden tile gets nothing.
    pub visible: bool,
    /// Width the tile is drawn at in device pixels; `None` when the client has not said.
    pub rendered_width: Option<u32>,
    layer_storage: [LayerInfo; MAX_LAYERS],
    layer_count: usize,
}

impl TrackDemand {
    /// `layers` lowest first; more than [`MAX_LAYERS`] are ignored.
    pub fn new(
        priority: Priority,
        visible: bool,
        rendered_width: Option<u32>,
        layers: &[LayerInfo],
    ) -> Self {
        let mut layer_storage = [LayerInfo::default(); MAX_LAYERS];
        let layer_count = layers.len().min(MAX_LAYERS);
        layer_storage[..layer_count].copy_from_slice(&layers[..layer_count]);
        TrackDemand {
            priority,
            visible,
            rendered_width,
            layer_storage,
            layer_count,
        }
    }

    /// The track's layers, lowest first.
    pub fn layers(&self) -> &[LayerInfo] {
        &self.layer_storage[..self.layer_count]
    }

    /// The best layer worth sending: the smallest available one at least as wide as the
    /// tile (a bigger picture would be scaled down and wasted), or the top available one.
    pub fn max_useful_layer(&self) -> Option<Layer> {
        if !self.visible {
            return None;
        }
        let top = self.layers().iter().rposition(|l| l.available)?;
        let Some(rendered) = self.rendered_width else {
            return Some(top as Layer);
        };
        let fits = self.layers().iter().position(|layer| {
            layer.available && layer.width != 0 && u32::from(layer.width) >= rendered
        });
        Some(fits.unwrap_or(top) as Layer)
    }

    fn lowest_layer(&self) -> Option<Layer> {
        self.layers()
            .iter()
            .position(|l| l.available)
            .map(|l| l as Layer)
    }

    fn next_layer(&self, above: Layer) -> Option<Layer> {
        let start = above as usize + 1;
        let next = self
            .layers()
            .get(start..)?
            .iter()
            .position(|l| l.available)?;
        Some((start + next) as Layer)
    }
}

/// What [`allocate`] decided, besides the layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Allocation {
    /// Bitrate of the chosen layers.
    pub used_bps: u64,
    /// Bitrate of every visible track at its best useful layer: what the estimator should
    /// probe for.
    pub desired_bps: u64,
}

/// Share `budget_bps` across a subscriber's video tracks. `out[i]` becomes the layer for
/// `demands[i]` (`None`: nothing).
///
/// Three passes:
/// 1. every visible track gets its lowest layer, even past the budget: a tile that stops
///    is worse than a link that is briefly over its estimate, and lowest layers are small
///    (the estimator backs off further if the link really cannot carry them);
/// 2. within what is left of the budget, screen shares, then the dominant speaker, go up to their best useful layer;
/// 3. everyone else goes up one layer per round, in turn, so the rest is shared evenly.
///
/// A track whose next layer does not fit stops there; a cheaper track later in the round
/// may still rise. Allocates nothing once `out` has grown to the number of tracks.
pub fn allocate(
    budget_bps: u64,
    demands: &[TrackDemand],
    out: &mut Vec<Option<Layer>>,
) -> Allocation {
    out.clear();
    out.resize(demands.len(), None);
    let cost = |i: usize, layer: Option<Layer>| -> u64 {
        layer.map_or(0, |l| demands[i].layers()[l as usize].bitrate_bps)
    };
    let mut used = 0u64;
    let mut desired = 0u64;
    for i in 0..demands.len() {
        let Some(max) = demands[i].max_useful_layer() else {
            continue;
        };
        desired += cost(i, Some(max));
        let Some(lowest) = demands[i].lowest_layer() else {
            continue;
        };
        out[i] = Some(lowest);
        used += cost(i, Some(lowest));
    }
    let raise = |i: usize, used: &mut u64, out: &mut Vec<Option<Layer>>| -> bool {
        let (Some(current), Some(max)) = (out[i], demands[i].max_useful_layer()) else {
            return false;
        };
        let Some(next) = demands[i].next_layer(current).filter(|&next| next <= max) else {
            return false;
        };
        let extra = cost(i, Some(next)).saturating_sub(cost(i, Some(current)));
        if *used + extra > budget_bps {
            return false;
        }
        *used += extra;
        out[i] = Some(next);
        true
    };
    for priority in [Priority::ScreenShare, Priority::DominantSpeaker] {
        for i in (0..demands.len()).filter(|&i| demands[i].priority == priority) {
            while raise(i, &mut used, out) {}
        }
    }
    loop {
        let mut raised = false;
        for i in (0..demands.len()).filter(|&i| demands[i].priority == Priority::Normal) {
            raised |= raise(i, &mut used, out);
        }
        if !raised {
            break;
        }
    }
    Allocation {
        used_bps: used,
        desired_bps: desired,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// Three layers at 160, 320 and 640 pixels wide.
    const LADDER: [LayerInfo; 3] = [
        LayerInfo {
            bitrate_bps: 100_000,
            width: 160,
            available: true,
        },
        LayerInfo {
            bitrate_bps: 300_000,
            width: 320,
            available: true,
        },
        LayerInfo {
            bitrate_bps: 900_000,
            width: 640,
            available: true,
        },
    ];

    fn demand(priority: Priority) -> TrackDemand {
        TrackDemand::new(priority, true, None, &LADDER)
    }

    #[test]
    fn switches_only_on_a_keyframe_of_the_target_layer() {
        let mut switcher = LayerSwitcher::default();
        switcher.set_target(Some(0));
        assert_eq!(
            switcher.on_packet(0, false),
            LayerDecision::Drop,
            "no keyframe yet"
        );
        assert_eq!(
            switcher.on_packet(1, true),
            LayerDecision::Drop,
            "above the target"
        );
        assert_eq!(
            switcher.on_packet(0, true),
            LayerDecision::Switched { from: None, to: 0 }
        );
        assert_eq!(switcher.on_packet(0, false), LayerDecision::Forward);

        switcher.set_target(Some(2));
        assert_eq!(switcher.wants_keyframe(), Some(2));
        assert_eq!(
            switcher.on_packet(2, false),
            LayerDecision::Drop,
            "delta of the target"
        );
        assert_eq!(
            switcher.on_packet(0, false),
            LayerDecision::Forward,
            "still current"
        );
        assert_eq!(
            switcher.on_packet(2, true),
            LayerDecision::Switched {
                from: Some(0),
                to: 2
            }
        );
        assert_eq!(switcher.wants_keyframe(), None);
        assert_eq!(
            switcher.on_packet(0, true),
            LayerDecision::Drop,
            "old layer, even a keyframe"
        );
        assert_eq!(
            switcher.on_packet(1, true),
            LayerDecision::Drop,
            "not toward the target"
        );
    }

    #[test]
    fn moving_down_also_waits_and_may_stop_halfway() {
        let mut switcher = LayerSwitcher::default();
        switcher.set_target(Some(2));
        switcher.on_packet(2, true);
        switcher.set_target(Some(0));
        assert_eq!(switcher.on_packet(2, false), LayerDecision::Forward);
        assert_eq!(
            switcher.on_packet(1, true),
            LayerDecision::Switched {
                from: Some(2),
                to: 1
            },
            "a closer layer's keyframe already saves bandwidth"
        );
        assert_eq!(switcher.wants_keyframe(), Some(0));
        assert_eq!(
            switcher.on_packet(0, true),
            LayerDecision::Switched {
                from: Some(1),
                to: 0
            }
        );
    }

    #[test]
    fn a_hidden_track_stops_at_once_and_restarts_on_a_keyframe() {
        let mut switcher = LayerSwitcher::default();
        switcher.set_target(Some(1));
        switcher.on_packet(1, true);
        assert!(switcher.set_target(None));
        assert_eq!(switcher.on_packet(1, false), LayerDecision::Drop);
        assert_eq!(switcher.on_packet(1, true), LayerDecision::Drop);
        switcher.set_target(Some(1));
        assert_eq!(switcher.on_packet(1, false), LayerDecision::Drop);
        assert_eq!(
            switcher.on_packet(1, true),
            LayerDecision::Switched { from: None, to: 1 }
        );
    }

    #[test]
    fn a_stopped_layer_lets_a_lower_keyframe_restart_the_picture() {
        let mut switcher = LayerSwitcher::default();
        switcher.set_target(Some(2));
        switcher.on_packet(2, true);
        switcher.current_stopped();
        assert_eq!(
            switcher.on_packet(1, true),
            LayerDecision::Switched { from: None, to: 1 }
        );
    }

    /// One simulcast publisher as the tests see it: each layer its own SSRC, sequence and
    /// timestamp bases; 30 fps, two packets a frame.
    struct Publisher {
        ssrcs: [u32; 3],
        seq_bases: [u64; 3],
        ts_bases: [u32; 3],
        start: Instant,
    }

    impl Publisher {
        fn packet(&self, layer: usize, frame: u64, part: u64, keyframe: bool) -> IncomingPacket {
            IncomingPacket {
                ssrc: self.ssrcs[layer],
                seq: self.seq_bases[layer] + frame * 2 + part,
                timestamp: self.ts_bases[layer].wrapping_add((frame * 3000) as u32),
                starts_keyframe: keyframe && part == 0,
                arrival: self.start + Duration::from_millis(frame * 33),
            }
        }
    }

    /// What one subscriber receives: the switcher, then the rewriter.
    struct Subscriber {
        forwarder: LayerForwarder,
        sent: Vec<(u64, u32)>,
    }

    impl Subscriber {
        fn receive(&mut self, layer: usize, packet: IncomingPacket) -> Forwarded {
            let forwarded = self.forwarder.forward(layer as Layer, packet);
            if let Forwarded::Send { seq, timestamp } = forwarded {
                self.sent.push((seq, timestamp));
            }
            forwarded
        }

        fn frame(&mut self, publisher: &Publisher, layer: usize, frame: u64, keyframe: bool) {
            for part in 0..2 {
                let _ = self.receive(layer, publisher.packet(layer, frame, part, keyframe));
            }
        }
    }

    /// The switcher and the rewriter together, with simulated time: sequence numbers have no
    /// hole the SFU made and timestamps never go back across switches, a publisher restart
    /// and a lost packet.
    #[test]
    fn sequence_and_timestamp_continue_across_switches_restarts_and_loss() {
        let mut publisher = Publisher {
            ssrcs: [111, 222, 333],
            seq_bases: [1_000, 50_000, 9_000],
            ts_bases: [5_000, 4_000_000_000, 77],
            start: Instant::now(),
        };
        let mut subscriber = Subscriber {
            forwarder: LayerForwarder::video(0),
            sent: Vec::new(),
        };
        for frame in 0..10 {
            subscriber.frame(&publisher, 0, frame, frame == 0); // out 1..=20
        }
        subscriber.forwarder.switcher.set_target(Some(2));
        for frame in 10..20 {
            subscriber.frame(&publisher, 0, frame, false); // out 21..=32, then dropped
            subscriber.frame(&publisher, 2, frame, frame == 15); // switch at 33
        }
        // The publisher restarts layer 2 with a new SSRC; one packet is lost on the way in.
        publisher.ssrcs[2] = 444;
        for frame in 20..25 {
            for part in 0..2 {
                if (frame, part) != (22, 1) {
                    let _ = subscriber.receive(2, publisher.packet(2, frame, part, frame == 20));
                }
            }
        }
        subscriber.forwarder.switcher.set_target(Some(1));
        for frame in 25..35 {
            subscriber.frame(&publisher, 2, frame, false);
            subscriber.frame(&publisher, 1, frame, frame == 30);
        }
        let seqs: Vec<u64> = subscriber.sent.iter().map(|s| s.0).collect();
        let expected: Vec<u64> = (1..=74).filter(|&s| s != 48).collect();
        assert_eq!(
            seqs, expected,
            "the only hole is the packet really lost (seq 48)"
        );
        for pair in subscriber.sent.windows(2) {
            let advance = pair[1].1.wrapping_sub(pair[0].1);
            assert!(advance < 90_000, "timestamp went back or jumped: {pair:?}");
        }
    }

    /// The stage: it takes the first layer that flows and climbs to the best one at that
    /// layer's keyframe, asking for it meanwhile (a publisher's top layer often starts late,
    /// when its send estimate has grown).
    #[test]
    fn a_stage_forwarder_starts_on_any_layer_and_climbs_to_the_target() {
        let publisher = Publisher {
            ssrcs: [111, 222, 333],
            seq_bases: [1_000, 50_000, 9_000],
            ts_bases: [5_000, 4_000_000_000, 77],
            start: Instant::now(),
        };
        let mut stage = Subscriber {
            forwarder: LayerForwarder::video(2),
            sent: Vec::new(),
        };
        let wants = Forwarded::Drop {
            wants_keyframe: true,
        };
        let ignores = Forwarded::Drop {
            wants_keyframe: false,
        };
        assert_eq!(stage.receive(0, publisher.packet(0, 0, 1, false)), wants);
        assert!(matches!(
            stage.receive(0, publisher.packet(0, 1, 0, true)),
            Forwarded::Send { seq: 1, .. }
        ));
        assert_eq!(stage.receive(2, publisher.packet(2, 1, 0, false)), wants);
        assert!(matches!(
            stage.receive(1, publisher.packet(1, 2, 0, true)),
            Forwarded::Send { seq: 2, .. }
        ));
        assert_eq!(stage.receive(0, publisher.packet(0, 2, 0, false)), ignores);
        assert!(matches!(
            stage.receive(2, publisher.packet(2, 3, 0, true)),
            Forwarded::Send { seq: 3, .. }
        ));
        assert!(matches!(
            stage.receive(2, publisher.packet(2, 3, 1, true)),
            Forwarded::Send { seq: 4, .. }
        ));
        assert_eq!(stage.receive(1, publisher.packet(1, 3, 0, true)), ignores);
        for pair in stage.sent.windows(2) {
            let advance = pair[1].1.wrapping_sub(pair[0].1);
            assert!(advance < 90_000, "timestamp went back or jumped: {pair:?}");
        }
    }

    #[test]
    fn picture_ids_continue_across_a_switch_and_wrap() {
        let mut ids = Vp8PictureIds::default();
        assert_eq!(ids.rewrite(7000, Some(10)), (7000, Some(10)));
        assert_eq!(ids.rewrite(7001, Some(10)), (7001, Some(10)));
        ids.switched();
        assert_eq!(ids.rewrite(3500, Some(200)), (7002, Some(11)));
        assert_eq!(
            ids.rewrite(3500, Some(200)),
            (7002, Some(11)),
            "same picture, same id"
        );
        assert_eq!(ids.rewrite(3501, Some(201)), (7003, Some(12)));
        ids.switched();
        assert_eq!(ids.rewrite(32_767, Some(255)), (7004, Some(13)));
        assert_eq!(
            ids.rewrite(0, Some(0)),
            (7005, Some(14)),
            "the incoming 15-bit wrap"
        );
    }

    #[test]
    fn plenty_of_bandwidth_gives_everyone_the_top_layer() {
        let demands = vec![demand(Priority::Normal); 4];
        let mut out = Vec::new();
        let allocation = allocate(10_000_000, &demands, &mut out);
        assert_eq!(out, vec![Some(2); 4]);
        assert_eq!(allocation.used_bps, 3_600_000);
        assert_eq!(allocation.desired_bps, 3_600_000);
    }

    #[test]
    fn a_short_budget_is_shared_evenly() {
        let demands = vec![demand(Priority::Normal); 4];
        let mut out = Vec::new();
        // 4 × 100k base, then +200k each to layer 1 for 1.2M: 1.3M leaves 100k unused.
        let allocation = allocate(1_300_000, &demands, &mut out);
        assert_eq!(out, vec![Some(1); 4]);
        assert_eq!(allocation.used_bps, 1_200_000);
        assert_eq!(allocation.desired_bps, 3_600_000);
        // Too little even for the lowest layers: everyone still gets theirs.
        let allocation = allocate(250_000, &demands, &mut out);
        assert_eq!(out, vec![Some(0); 4]);
        assert_eq!(allocation.used_bps, 400_000);
    }

    #[test]
    fn screen_share_then_the_speaker_come_first() {
        let demands = vec![
            demand(Priority::Normal),
            demand(Priority::DominantSpeaker),
            demand(Priority::Normal),
            demand(Priority::ScreenShare),
        ];
        let mut out = Vec::new();
        // Bases 400k; screen to top +800k; speaker +800k would be 2.0M > 1.5M: speaker +200k.
        allocate(1_500_000, &demands, &mut out);
        assert_eq!(out, vec![Some(0), Some(1), Some(0), Some(2)]);
    }

    #[test]
    fn hidden_tiles_get_nothing_and_small_tiles_get_small_layers() {
        let mut demands = vec![demand(Priority::Normal); 3];
        demands[0].visible = false;
        demands[1].rendered_width = Some(300);
        demands[2].rendered_width = Some(1000);
        let mut out = Vec::new();
        let allocation = allocate(10_000_000, &demands, &mut out);
        assert_eq!(out, vec![None, Some(1), Some(2)]);
        assert_eq!(allocation.desired_bps, 1_200_000);
    }

    #[test]
    fn layers_the_publisher_stopped_are_skipped() {
        let ladder = [
            LADDER[0],
            LayerInfo {
                available: false,
                ..LADDER[1]
            },
            LADDER[2],
        ];
        let mut demands = vec![TrackDemand::new(Priority::Normal, true, None, &ladder)];
        let mut out = Vec::new();
        allocate(10_000_000, &demands, &mut out);
        assert_eq!(out, vec![Some(2)], "0 → 2 directly");
        demands[0].rendered_width = Some(300);
        allocate(10_000_000, &demands, &mut out);
        assert_eq!(
            out,
            vec![Some(2)],
            "the 320 layer is gone, the next wide enough is 640"
        );
        let top_gone = [
            LADDER[0],
            LADDER[1],
            LayerInfo {
                available: false,
                ..LADDER[2]
            },
        ];
        demands[0] = TrackDemand::new(Priority::Normal, true, None, &top_gone);
        allocate(10_000_000, &demands, &mut out);
        assert_eq!(out, vec![Some(1)]);
    }
}
