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
    /// Subscribers whose estimate is at most [`ESTIMATE_BUCKETS_BPS`]`[i]` (cumulative).
    pub estimated_at_most: [AtomicU64; ESTIMATE_BUCKETS_BPS.len()],
}

/// Bucket bounds, in bit/s, of `roomcast_bwe_subscribers_by_estimate` (a `+Inf` bucket, equal
/// to `roomcast_bwe_subscribers`, follows them): from a phone on a weak cell to a desk
/// receiving a whole meeting.
pub const ESTIMATE_BUCKETS_BPS: [u64; 10] = [
    100_000, 250_000, 500_000, 1_000_000, 2_000_000, 4_000_000, 8_000_000, 16_000_000, 32_000_000,
    64_000_000,
];

impl WorkerMetrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn set(gauge: &AtomicU64, value: u64) {
        gauge.store(value, Ordering::Relaxed);
    }

    /// Publish the current bandwidth estimates of this worker's subscribers.
    pub(crate) fn set_estimates(&self, estimates: impl Iterator<Item = u64>) {
        let (mut count, mut sum) = (0, 0);
        let mut at_most = [0; ESTIMATE_BUCKETS_BPS.len()];
        for estimate in estimates {
            count += 1;
            sum += estimate;
            for (bucket, bound) in at_most.iter_mut().zip(ESTIMATE_BUCKETS_BPS) {
                *bucket += u64::from(estimate <= bound);
            }
        }
        Self::set(&self.estimated_subscribers, count);
        Self::set(&self.estimated_bps_sum, sum);
        for (gauge, value) in self.estimated_at_most.iter().zip(at_most) {
            Self::set(gauge, value);
        }
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
    // A gauge histogram: how many subscribers are at each estimate now (not a count of
    // observations). `histogram_quantile()` reads it like any `le` series.
    let name = "roomcast_bwe_subscribers_by_estimate";
    let _ = writeln!(
        text,
        "# HELP {name} Subscribers whose bandwidth estimate is at most `le` bit/s \
         (histogram_quantile(0.5, ...) gives the median estimate)."
    );
    let _ = writeln!(text, "# TYPE {name} gauge");
    let sum = |read: &dyn Fn(&WorkerMetrics) -> u64| -> u64 { workers.clone().map(read).sum() };
    for (i, bound) in ESTIMATE_BUCKETS_BPS.iter().enumerate() {
        let at_most = sum(&|w| w.estimated_at_most[i].load(Ordering::Relaxed));
        let _ = writeln!(text, "{name}{{le=\"{bound}\"}} {at_most}");
    }
    let all = sum(&|w| w.estimated_subscribers.load(Ordering::Relaxed));
    let _ = writeln!(text, "{name}{{le=\"+Inf\"}} {all}");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_are_counted_by_estimate_over_all_workers() {
        let (a, b) = (WorkerMetrics::default(), WorkerMetrics::default());
        a.set_estimates([90_000, 600_000, 3_000_000].into_iter());
        b.set_estimates([600_000, 90_000_000].into_iter());
        let text = render_prometheus([&a, &b].into_iter());
        let lines: Vec<_> = text
            .lines()
            .filter(|l| {
                l.starts_with("roomcast_bwe_subscribers_by_estimate{")
                    || l.starts_with("roomcast_bwe_subscribers ")
            })
            .collect();
        assert_eq!(
            lines,
            [
                "roomcast_bwe_subscribers 5",
                "roomcast_bwe_subscribers_by_estimate{le=\"100000\"} 1",
                "roomcast_bwe_subscribers_by_estimate{le=\"250000\"} 1",
                "roomcast_bwe_subscribers_by_estimate{le=\"500000\"} 1",
                "roomcast_bwe_subscribers_by_estimate{le=\"1000000\"} 3",
                "roomcast_bwe_subscribers_by_estimate{le=\"2000000\"} 3",
                "roomcast_bwe_subscribers_by_estimate{le=\"4000000\"} 4",
                "roomcast_bwe_subscribers_by_estimate{le=\"8000000\"} 4",
                "roomcast_bwe_subscribers_by_estimate{le=\"16000000\"} 4",
                "roomcast_bwe_subscribers_by_estimate{le=\"32000000\"} 4",
                "roomcast_bwe_subscribers_by_estimate{le=\"64000000\"} 4",
                "roomcast_bwe_subscribers_by_estimate{le=\"+Inf\"} 5",
            ]
        );
        assert!(text.contains("roomcast_bwe_estimate_bps_sum 94290000\n"));
    }
}
