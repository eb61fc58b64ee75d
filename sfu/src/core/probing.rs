//! Probing for bandwidth a subscriber is short of.
//!
//! str0m's probe controller (a port of WebRTC's `ProbeController`) sends a probe cluster, a
//! short burst of padding above the estimate, when the *desired* bitrate rises past the
//! estimate (WebRTC's "allocation probe"), in the first seconds, in application-limited
//! periods, and after 15 s of a stagnant estimate. A subscriber whose link was congested and
//! has recovered is none of these: its desired bitrate (every tile at its best layer) has not
//! changed, and the estimator climbs by AIMD alone, ~8 % a second, so getting back from
//! 0.6 to 2.5 Mbit/s would take ~20 s.
//!
//! [`DeficitProbing`] is what SFUs do about it (LiveKit's stream allocator probes when a
//! subscriber is deficient): while the desired bitrate exceeds what the subscriber gets, it
//! lowers the desired bitrate given to the estimator to the used one for one allocation tick,
//! so that the next tick raises it again and str0m probes at up to twice the estimate. A
//! probe that found nothing (the estimate did not grow) doubles the wait before the next one,
//! up to [`MAX_INTERVAL`]; one that did resets it to [`MIN_INTERVAL`]. So a link that is still
//! limited sees a 15 ms burst every few seconds, and a recovered one doubles its estimate per
//! second or so.
//!
//! No probe while what the subscriber is sent already exceeds its estimate (the lowest layers
//! go out even past it): the link is full, and a burst would only queue.
//!
//! Invariant: the value returned is never above the desired bitrate and never below the used
//! one; it differs from the desired bitrate on one tick per interval at most.

use std::time::{Duration, Instant};

/// Shortest time between two probes of a deficient subscriber.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Longest time between two probes of a subscriber whose probes keep finding nothing.
pub const MAX_INTERVAL: Duration = Duration::from_secs(4);
/// A probe "found bandwidth" if the estimate grew by this many percent by the next dip.
const GROWTH_PERCENT: u64 = 10;

#[derive(Debug, Default)]
pub struct DeficitProbing {
    /// When the next dip is due; `None` while the subscriber is not deficient.
    next_dip: Option<Instant>,
    interval: Duration,
    /// The estimate at the last dip.
    estimate_at_dip: Option<u64>,
}

impl DeficitProbing {
    /// The desired bitrate to hand the estimator at this allocation tick, given the bitrate
    /// of the chosen layers (`used_bps`), of the best useful ones (`desired_bps`), and the
    /// current estimate (`None`: no estimator, nothing to probe).
    pub fn desired_for_estimator(
        &mut self,
        now: Instant,
        used_bps: u64,
        desired_bps: u64,
        estimate_bps: Option<u64>,
    ) -> u64 {
        let Some(estimate) = estimate_bps.filter(|_| desired_bps > used_bps) else {
            *self = DeficitProbing::default();
            return desired_bps;
        };
        if estimate < used_bps {
            // Even the chosen layers (at least every track's lowest) exceed the estimate: the
            // link is full, and a burst above it would only queue and cost frames. The
            // estimator climbs back over what is sent on its own once the link drains.
            return desired_bps;
        }
        let Some(next_dip) = self.next_dip else {
            self.interval = MIN_INTERVAL;
            self.next_dip = Some(now + MIN_INTERVAL);
            return desired_bps;
        };
        if now < next_dip {
            return desired_bps;
        }
        let grew = self
            .estimate_at_dip
            .is_none_or(|before| estimate > before + before / 100 * GROWTH_PERCENT);
        self.interval = if grew {
            MIN_INTERVAL
        } else {
            (self.interval * 2).min(MAX_INTERVAL)
        };
        self.estimate_at_dip = Some(estimate);
        self.next_dip = Some(now + self.interval);
        used_bps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(500);

    /// Runs `ticks` allocation ticks from `start`; returns the ticks (index) that dipped.
    fn dips(
        probing: &mut DeficitProbing,
        start: Instant,
        ticks: u32,
        estimate: impl Fn(u32) -> u64,
    ) -> Vec<u32> {
        (0..ticks)
            .filter(|&tick| {
                let now = start + TICK * tick;
                probing.desired_for_estimator(now, 500_000, 2_500_000, Some(estimate(tick)))
                    == 500_000
            })
            .collect()
    }

    #[test]
    fn a_subscriber_with_enough_bandwidth_is_never_probed() {
        let mut probing = DeficitProbing::default();
        let start = Instant::now();
        for tick in 0..20 {
            let now = start + TICK * tick;
            assert_eq!(
                probing.desired_for_estimator(now, 2_500_000, 2_500_000, Some(3_000_000)),
                2_500_000
            );
        }
        assert_eq!(
            probing.desired_for_estimator(start, 500_000, 2_500_000, None),
            2_500_000,
            "no estimator, nothing to probe"
        );
    }

    #[test]
    fn a_limited_link_is_probed_less_and_less_often() {
        let mut probing = DeficitProbing::default();
        let start = Instant::now();
        // The estimate stays at 600 kbit/s: after the first second, waits of 1, 1, 2, 4, 4 s.
        assert_eq!(
            dips(&mut probing, start, 30, |_| 600_000),
            [2, 4, 8, 16, 24]
        );
    }

    #[test]
    fn a_recovered_link_is_probed_every_second_while_the_estimate_grows() {
        let mut probing = DeficitProbing::default();
        let start = Instant::now();
        // Limited until tick 14, then each probe doubles the estimate.
        let estimate = |tick: u32| {
            if tick < 14 {
                600_000
            } else {
                600_000 << ((tick - 12) / 2).min(3)
            }
        };
        // Probes at 16 and 18 find more, so the next ones come a second later; from 20 on
        // the estimate stays at 4.8 Mbit/s and the waits grow again.
        assert_eq!(
            dips(&mut probing, start, 34, estimate),
            [2, 4, 8, 16, 18, 20, 24, 32]
        );
    }

    #[test]
    fn a_full_link_is_not_probed() {
        let mut probing = DeficitProbing::default();
        let start = Instant::now();
        // The lowest layers alone (500 kbit/s) exceed the estimate.
        assert_eq!(dips(&mut probing, start, 30, |_| 450_000), []);
        // Once the estimate is back above them, the first probe comes a second later.
        assert_eq!(dips(&mut probing, start + TICK * 30, 4, |_| 600_000), [2]);
    }

    #[test]
    fn the_first_probe_waits_a_second_after_the_deficit_starts_and_resets_with_it() {
        let mut probing = DeficitProbing::default();
        let start = Instant::now();
        // (tick, used, estimate) → what the estimator is told; 2.5 Mbit/s is always desired.
        let mut tell = |tick: u32, used: u64, estimate: u64| {
            probing.desired_for_estimator(start + TICK * tick, used, 2_500_000, Some(estimate))
        };
        assert_eq!(tell(0, 500_000, 600_000), 2_500_000);
        assert_eq!(tell(1, 500_000, 600_000), 2_500_000);
        assert_eq!(tell(2, 500_000, 600_000), 500_000, "the dip, a second in");
        // Not deficient any more: back to the start.
        assert_eq!(tell(3, 2_500_000, 3_000_000), 2_500_000);
        assert_eq!(tell(4, 500_000, 600_000), 2_500_000);
        assert_eq!(tell(6, 500_000, 600_000), 500_000);
    }
}
