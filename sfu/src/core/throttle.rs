//! Keyframe request throttling.
//!
//! Every new consumer, every consumer that lost its place, and every subscriber's own PLI asks
//! the publisher for a keyframe. A keyframe is several times the size of a delta frame, so a
//! room where ten people join at once must not make the publisher send ten, yet a subscriber
//! that starts just after a keyframe went by must not wait for the next periodic one.
//!
//! The rule: a request is *outstanding* from the moment it is sent until a keyframe arrives
//! from that producer. While one is outstanding, further requests are absorbed (the keyframe
//! on its way serves them all), unless it has been outstanding for [`RETRY_INTERVAL`] (the
//! PLI or the keyframe was lost). Once answered, a new request may go out after
//! [`MIN_INTERVAL`], which caps a publisher at 10 requested keyframes per second.
//! ([RFC 4585 §6.3.1](https://www.rfc-editor.org/rfc/rfc4585#section-6.3.1) defines PLI.)

use std::time::{Duration, Instant};

/// Shortest gap between two requests that both reach the publisher.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// How long a request may stay unanswered before it is sent again.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, Default)]
pub struct KeyframeRequestThrottle {
    last_sent: Option<Instant>,
    answered: bool,
}

impl KeyframeRequestThrottle {
    /// Whether a request made at `now` should reach the publisher; records it if so.
    pub fn allow(&mut self, now: Instant) -> bool {
        let allowed = match self.last_sent {
            None => true,
            Some(last) => {
                let since = now.saturating_duration_since(last);
                if self.answered {
                    since >= MIN_INTERVAL
                } else {
                    since >= RETRY_INTERVAL
                }
            }
        };
        if allowed {
            self.last_sent = Some(now);
            self.answered = false;
        }
        allowed
    }

    /// A keyframe arrived from the producer: the outstanding request (if any) is answered.
    pub fn keyframe_arrived(&mut self) {
        self.answered = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_absorbed_while_one_is_outstanding_and_retried_when_lost() {
        let t0 = Instant::now();
        let mut throttle = KeyframeRequestThrottle::default();
        assert!(throttle.allow(t0));
        assert!(!throttle.allow(t0 + Duration::from_millis(10)));
        assert!(!throttle.allow(t0 + RETRY_INTERVAL - Duration::from_millis(1)));
        // Never answered: sent again.
        assert!(throttle.allow(t0 + RETRY_INTERVAL));
    }

    #[test]
    fn an_answered_request_frees_the_next_one_after_the_minimum_interval() {
        let t0 = Instant::now();
        let mut throttle = KeyframeRequestThrottle::default();
        assert!(throttle.allow(t0));
        throttle.keyframe_arrived();
        assert!(!throttle.allow(t0 + MIN_INTERVAL - Duration::from_millis(1)));
        assert!(throttle.allow(t0 + MIN_INTERVAL));
        assert!(!throttle.allow(t0 + MIN_INTERVAL + Duration::from_millis(1)));
    }

    #[test]
    fn keyframes_before_any_request_do_not_matter() {
        let t0 = Instant::now();
        let mut throttle = KeyframeRequestThrottle::default();
        throttle.keyframe_arrived();
        assert!(throttle.allow(t0));
        assert!(!throttle.allow(t0 + MIN_INTERVAL));
    }
}
