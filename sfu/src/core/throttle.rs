//! Keyframe request throttling.
//!
//! Every new consumer, every consumer that lost its place, and every subscriber's own PLI
//! asks the publisher for a keyframe. A keyframe is several times the size of a delta frame,
//! so a room where ten people join at once must not make the publisher send ten. Requests to
//! one producer are let through at most once per [`KEYFRAME_REQUEST_INTERVAL`]; the ones in
//! between are answered by the keyframe already on its way.
//! ([RFC 4585 §6.3.1](https://www.rfc-editor.org/rfc/rfc4585#section-6.3.1) defines PLI.)

use std::time::{Duration, Instant};

/// Long enough to cover a keyframe's round trip on a normal link, short enough that a joiner
/// whose request was absorbed still sees video well within a second.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(300);

#[derive(Debug, Default)]
pub struct KeyframeRequestThrottle {
    last_sent: Option<Instant>,
}

impl KeyframeRequestThrottle {
    /// Whether a request made at `now` should reach the publisher; records it if so.
    pub fn allow(&mut self, now: Instant) -> bool {
        let allowed = self
            .last_sent
            .is_none_or(|last| now.saturating_duration_since(last) >= KEYFRAME_REQUEST_INTERVAL);
        if allowed {
            self.last_sent = Some(now);
        }
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lets_one_request_through_per_interval() {
        let t0 = Instant::now();
        let mut throttle = KeyframeRequestThrottle::default();
        assert!(throttle.allow(t0));
        assert!(!throttle.allow(t0 + Duration::from_millis(10)));
        assert!(!throttle.allow(t0 + KEYFRAME_REQUEST_INTERVAL - Duration::from_millis(1)));
        assert!(throttle.allow(t0 + KEYFRAME_REQUEST_INTERVAL));
        assert!(!throttle.allow(t0 + KEYFRAME_REQUEST_INTERVAL + Duration::from_millis(1)));
    }
}
