//! Limits that keep one client (or one address) from taking the server: connections per IP,
//! message size and rate per signaling connection. Rooms per node and participants per room
//! are enforced by the SFU (`--max-rooms`, `--max-participants`). Every refusal is a precise
//! error for the offender and a count in `roomcast_limit_rejections_total{limit=…}`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use dashmap::DashMap;

use crate::protocol::MAX_MESSAGE_BYTES;

/// Configured limits. The defaults suit a server for a few hundred participants.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest signaling message accepted (bytes); at most 1 MiB.
    pub max_message_bytes: usize,
    /// Signaling messages per second per connection, sustained; bursts of twice that pass.
    pub max_message_rate: u32,
    /// Concurrent signaling WebSockets and WHIP/WHEP sessions from one address.
    pub max_connections_per_ip: usize,
    /// Take the client address from `X-Real-IP` (set by the nginx in front) instead of the
    /// TCP peer. Only when every request comes through that proxy.
    pub trust_proxy_headers: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: MAX_MESSAGE_BYTES,
            max_message_rate: 50,
            max_connections_per_ip: 50,
            trust_proxy_headers: false,
        }
    }
}

/// Which limit refused something, for the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    ConnectionsPerIp,
    MessageRate,
    MessageSize,
    RoomsPerNode,
    ParticipantsPerRoom,
    /// A chat sender over its message rate (`--chat-rate`).
    ChatRate,
}

impl Limit {
    const ALL: [Limit; 6] = [
        Limit::ConnectionsPerIp,
        Limit::MessageRate,
        Limit::MessageSize,
        Limit::RoomsPerNode,
        Limit::ParticipantsPerRoom,
        Limit::ChatRate,
    ];

    fn label(self) -> &'static str {
        match self {
            Limit::ConnectionsPerIp => "connections_per_ip",
            Limit::MessageRate => "message_rate",
            Limit::MessageSize => "message_size",
            Limit::RoomsPerNode => "rooms_per_node",
            Limit::ParticipantsPerRoom => "participants_per_room",
            Limit::ChatRate => "chat_rate",
        }
    }
}

/// Counts refusals per limit, and open connections per address.
#[derive(Debug, Default)]
pub struct LimitState {
    rejections: [AtomicU64; Limit::ALL.len()],
    connections: Arc<DashMap<IpAddr, usize>>,
}

impl LimitState {
    pub fn rejected(&self, limit: Limit) {
        let index = Limit::ALL.iter().position(|l| *l == limit).unwrap_or(0);
        self.rejections[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Claim a connection slot for `ip`; `None` when it already has `max` open. The slot is
    /// released when the returned guard drops.
    pub fn connect(&self, ip: IpAddr, max: usize) -> Option<ConnectionSlot> {
        let mut count = self.connections.entry(ip).or_insert(0);
        if *count >= max {
            drop(count);
            self.rejected(Limit::ConnectionsPerIp);
            return None;
        }
        *count += 1;
        Some(ConnectionSlot {
            ip,
            connections: self.connections.clone(),
        })
    }

    pub(crate) fn render(&self) -> String {
        let mut text = String::from(
            "# HELP roomcast_limit_rejections_total Requests refused by a configured limit.\n\
             # TYPE roomcast_limit_rejections_total counter\n",
        );
        for (limit, count) in Limit::ALL.iter().zip(&self.rejections) {
            text.push_str(&format!(
                "roomcast_limit_rejections_total{{limit=\"{}\"}} {}\n",
                limit.label(),
                count.load(Ordering::Relaxed)
            ));
        }
        text
    }
}

/// One open connection of an address; released on drop.
#[derive(Debug)]
pub struct ConnectionSlot {
    ip: IpAddr,
    connections: Arc<DashMap<IpAddr, usize>>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.connections.remove_if_mut(&self.ip, |_, count| {
            *count -= 1;
            *count == 0
        });
    }
}

/// The client's address: the TCP peer, or `X-Real-IP` when the proxy is trusted.
pub fn client_ip(limits: &Limits, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    if limits.trust_proxy_headers
        && let Some(ip) = headers
            .get("x-real-ip")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
    {
        return ip;
    }
    peer.ip()
}

/// A token bucket: `rate` messages per second, bursts of `2 × rate`.
#[derive(Debug)]
pub struct MessageRate {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    /// When a `rate_limited` error was last sent: at most one per second, so a flood does not
    /// turn into a flood of errors.
    last_error: Option<Instant>,
}

impl MessageRate {
    pub fn new(rate: u32, now: Instant) -> Self {
        let rate = f64::from(rate.max(1));
        MessageRate {
            rate,
            burst: 2.0 * rate,
            tokens: 2.0 * rate,
            last: now,
            last_error: None,
        }
    }

    /// Take one message; false when over the rate.
    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether to tell the client about this refusal (once per second at most).
    pub fn should_report(&mut self, now: Instant) -> bool {
        let report = self
            .last_error
            .is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(1));
        if report {
            self.last_error = Some(now);
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_bursts_then_the_rate() {
        let start = Instant::now();
        let mut rate = MessageRate::new(10, start);
        let burst = (0..100).filter(|_| rate.allow(start)).count();
        assert_eq!(burst, 20, "twice the rate at once");
        let later = start + Duration::from_millis(500);
        let refill = (0..100).filter(|_| rate.allow(later)).count();
        assert_eq!(refill, 5, "half a second later, half the rate");
        assert!(rate.should_report(later));
        assert!(!rate.should_report(later + Duration::from_millis(999)));
        assert!(rate.should_report(later + Duration::from_secs(1)));
    }

    #[test]
    fn connection_slots_are_per_address_and_released() {
        let state = LimitState::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = state.connect(a, 2).unwrap();
        let _second = state.connect(a, 2).unwrap();
        assert!(state.connect(a, 2).is_none());
        assert!(
            state.connect(b, 2).is_some(),
            "another address is not affected"
        );
        drop(first);
        assert!(
            state.connect(a, 2).is_some(),
            "a closed connection frees its slot"
        );
        assert!(state.render().contains("{limit=\"connections_per_ip\"} 1"));
    }

    #[test]
    fn proxy_headers_only_when_trusted() {
        let mut headers = HeaderMap::new();
        headers.insert("x-real-ip", "198.51.100.7".parse().unwrap());
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut limits = Limits::default();
        assert_eq!(client_ip(&limits, peer, &headers), peer.ip());
        limits.trust_proxy_headers = true;
        assert_eq!(
            client_ip(&limits, peer, &headers),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
    }
}
