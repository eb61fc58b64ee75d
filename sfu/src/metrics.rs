//! Counters and gauges of one worker, exported by the HTTP edge as Prometheus text.
//!
//! Each worker owns one [`WorkerMetrics`] and is its only writer, so the relaxed atomic
//! adds on the packet path never contend with another core; `/metrics` sums the workers.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct WorkerMetrics {
    pub rooms: AtomicU64,
    pub participants: AtomicU64,
    pub producers: AtomicU64,
    pub consumers: AtomicU64,
    pub packets_received: AtomicU64,
    pub bytes_received: AtomicU64,
    pub packets_forwarded: AtomicU64,
    pub bytes_forwarded: AtomicU64,
    pub datagrams_dropped: AtomicU64,
    pub keyframe_requests: AtomicU64,
    pub packets_dropped_no_codec: AtomicU64,
    pub layer_switches: AtomicU64,
    pub paused_layers: AtomicU64,
    pub estimated_subscribers: AtomicU64,
    pub estimated_bps_sum: AtomicU64,
}

impl WorkerMetrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn set(gauge: &AtomicU64, value: u64) {
        gauge.store(value, Ordering::Relaxed);
    }
}

struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    read: fn(&WorkerMetrics) -> &AtomicU64,
}

const FAMILIES: &[Family] = &[
    Family {
        name: "roomcast_rooms",
        kind: "gauge",
        help: "Rooms with at least one participant.",
        read: |m| &m.rooms,
    },
    Family {
        name: "roomcast_participants",
        kind: "gauge",
        help: "Participants in rooms.",
        read: |m| &m.participants,
    },
    Family {
        name: "roomcast_tracks",
        kind: "gauge",
        help: "Published tracks (producers).",
        read: |m| &m.producers,
    },
    Family {
        name: "roomcast_consumers",
        kind: "gauge",
        help: "Forwarded track copies (one per subscriber and track).",
        read: |m| &m.consumers,
    },
    Family {
        name: "roomcast_rtp_packets_received_total",
        kind: "counter",
        help: "RTP packets received from publishers.",
        read: |m| &m.packets_received,
    },
    Family {
        name: "roomcast_rtp_bytes_received_total",
        kind: "counter",
        help: "RTP payload bytes received from publishers.",
        read: |m| &m.bytes_received,
    },
    Family {
        name: "roomcast_rtp_packets_forwarded_total",
        kind: "counter",
        help: "RTP packets forwarded to subscribers.",
        read: |m| &m.packets_forwarded,
    },
    Family {
        name: "roomcast_rtp_bytes_forwarded_total",
        kind: "counter",
        help: "RTP payload bytes forwarded to subscribers.",
        read: |m| &m.bytes_forwarded,
    },
    Family {
        name: "roomcast_udp_datagrams_dropped_total",
        kind: "counter",
        help: "UDP datagrams dropped on the media port: not STUN/DTLS/RTP, or from no known peer.",
        read: |m| &m.datagrams_dropped,
    },
    Family {
        name: "roomcast_keyframe_requests_total",
        kind: "counter",
        help: "Keyframe requests (PLI) sent to publishers.",
        read: |m| &m.keyframe_requests,
    },
    Family {
        name: "roomcast_rtp_packets_dropped_no_codec_total",
        kind: "counter",
        help: "RTP packets not forwarded because the subscriber did not negotiate the publisher's codec.",
        read: |m| &m.packets_dropped_no_codec,
    },
    Family {
        name: "roomcast_simulcast_layer_switches_total",
        kind: "counter",
        help: "Times a subscriber moved to another simulcast layer of a track (at that layer's keyframe).",
        read: |m| &m.layer_switches,
    },
    Family {
        name: "roomcast_simulcast_paused_layers",
        kind: "gauge",
        help: "Simulcast layers paused at their publisher because no subscriber needs them (dynacast).",
        read: |m| &m.paused_layers,
    },
    Family {
        name: "roomcast_bwe_subscribers",
        kind: "gauge",
        help: "Subscribers with a bandwidth estimate (transport-wide congestion control).",
        read: |m| &m.estimated_subscribers,
    },
    Family {
        name: "roomcast_bwe_estimate_bps_sum",
        kind: "gauge",
        help: "Sum of the subscribers' bandwidth estimates in bit/s; divide by roomcast_bwe_subscribers for the mean.",
        read: |m| &m.estimated_bps_sum,
    },
];

/// Prometheus text exposition (format 0.0.4) of the sum over `workers`.
pub fn render_prometheus<'a>(workers: impl Iterator<Item = &'a WorkerMetrics> + Clone) -> String {
    let mut text = String::with_capacity(2048);
    for family in FAMILIES {
        let total: u64 = workers
            .clone()
            .map(|w| (family.read)(w).load(Ordering::Relaxed))
            .sum();
        // Writing to a String cannot fail.
        let _ = writeln!(text, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(text, "# TYPE {} {}", family.name, family.kind);
        let _ = writeln!(text, "{} {total}", family.name);
    }
    text
}
