//! Per-sender rate limit: a token bucket per sender key.
//!
//! Each sender may post `burst` messages at once, refilled continuously at `burst / per`. Time
//! is a parameter (sans-IO). Full buckets carry no information, so [`RateLimiter::check`] drops
//! them every [`PRUNE_EVERY`] calls: memory is bounded by the senders active within `per`.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Calls between sweeps of full buckets.
pub const PRUNE_EVERY: u32 = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RatePolicy {
    /// Messages a sender may post at once.
    pub burst: u32,
    /// Time in which a spent burst refills.
    pub per: Duration,
}

impl RatePolicy {
    /// No limit at all.
    pub fn unlimited() -> Self {
        RatePolicy {
            burst: u32::MAX,
            per: Duration::from_nanos(1),
        }
    }

    fn is_unlimited(&self) -> bool {
        self.burst == u32::MAX
    }
}

impl Default for RatePolicy {
    /// 5 messages per 10 seconds.
    fn default() -> Self {
        RatePolicy {
            burst: 5,
            per: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug)]
pub struct RateLimiter<K> {
    policy: RatePolicy,
    buckets: HashMap<K, Bucket>,
    calls: u32,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    pub fn new(policy: RatePolicy) -> Self {
        RateLimiter {
            policy,
            buckets: HashMap::new(),
            calls: 0,
        }
    }

    fn refill_per_second(&self) -> f64 {
        f64::from(self.policy.burst) / self.policy.per.as_secs_f64().max(1e-9)
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        (bucket.tokens + elapsed * self.refill_per_second()).min(f64::from(self.policy.burst))
    }

    /// Takes one message from `key`'s allowance, or says how long until one is available.
    pub fn check(&mut self, key: &K, now: Instant) -> Result<(), Duration> {
        if self.policy.is_unlimited() {
            return Ok(());
        }
        self.calls = self.calls.wrapping_add(1);
        if self.calls.is_multiple_of(PRUNE_EVERY) {
            self.prune(now);
        }
        let burst = f64::from(self.policy.burst);
        let tokens = match self.buckets.get(key) {
            Some(&bucket) => self.refilled(bucket, now),
            None => burst,
        };
        if tokens >= 1.0 {
            self.buckets.insert(
                key.clone(),
                Bucket {
                    tokens: tokens - 1.0,
                    at: now,
                },
            );
            Ok(())
        } else {
            let wait = (1.0 - tokens) / self.refill_per_second();
            Err(Duration::from_secs_f64(wait).max(Duration::from_millis(1)))
        }
    }

    /// Forgets senders whose allowance is full again.
    pub fn prune(&mut self, now: Instant) {
        let burst = f64::from(self.policy.burst);
        let full: Vec<K> = self
            .buckets
            .iter()
            .filter(|(_, bucket)| self.refilled(**bucket, now) >= burst)
            .map(|(key, _)| key.clone())
            .collect();
        for key in full {
            self.buckets.remove(&key);
        }
    }

    /// Senders currently tracked.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> RateLimiter<&'static str> {
        RateLimiter::new(RatePolicy {
            burst: 3,
            per: Duration::from_secs(3),
        })
    }

    #[test]
    fn a_burst_passes_and_the_next_waits_for_its_refill() {
        let mut limiter = limiter();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check(&"ada", t0), Ok(()));
        }
        let wait = limiter.check(&"ada", t0).unwrap_err();
        assert!(
            (Duration::from_millis(990)..=Duration::from_millis(1010)).contains(&wait),
            "{wait:?}"
        );
        assert!(
            limiter
                .check(&"ada", t0 + Duration::from_millis(500))
                .is_err()
        );
        assert_eq!(limiter.check(&"ada", t0 + Duration::from_secs(1)), Ok(()));
    }

    #[test]
    fn senders_are_independent() {
        let mut limiter = limiter();
        let t0 = Instant::now();
        for _ in 0..3 {
            limiter.check(&"ada", t0).unwrap();
        }
        assert!(limiter.check(&"ada", t0).is_err());
        assert_eq!(limiter.check(&"bob", t0), Ok(()));
    }

    #[test]
    fn idle_senders_are_forgotten() {
        let mut limiter = limiter();
        let t0 = Instant::now();
        limiter.check(&"ada", t0).unwrap();
        limiter
            .check(&"bob", t0 + Duration::from_millis(2500))
            .unwrap();
        limiter.prune(t0 + Duration::from_secs(3));
        assert_eq!(limiter.tracked(), 1, "ada refilled, bob not yet");
        limiter.prune(t0 + Duration::from_secs(10));
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn unlimited_never_refuses() {
        let mut limiter = RateLimiter::new(RatePolicy::unlimited());
        let t0 = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(limiter.check(&1, t0), Ok(()));
        }
        assert_eq!(limiter.tracked(), 0);
    }
}
