//! Live broadcasts: which rooms have an ingest host (an RTMP encoder or a WHIP client), since
//! when, and what is wrong with them. Written by the RTMP and WHIP edges, read by the HTTP API
//! and `/metrics`.
//!
//! Invariants:
//! - A room has at most one broadcast. A new publisher with a valid key for a live room
//!   replaces the old one (the old session is told to stop), as MediaMTX does by default:
//!   an encoder that lost its network reconnects at once instead of waiting for the dead TCP
//!   connection to time out. See `docs/decisions/0007-broadcast-ingest.md`.
//! - [`Broadcasts::end`] only removes the entry if it still belongs to the caller, so a
//!   replaced session ending late cannot end its successor's broadcast.
//! - Nothing here is on a packet path: a mutex is fine.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use roomcast_auth::{ApiCredentials, Grant, TokenError};
use roomcast_sfu::ParticipantId;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::validate_room_name;

/// How the host publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IngestSource {
    Rtmp,
    Whip,
}

/// What the API reports about a live broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BroadcastStatus {
    pub participant: ParticipantId,
    pub source: IngestSource,
    pub host_name: String,
    pub started_at: SystemTime,
    pub warnings: Vec<String>,
}

struct Entry {
    status: BroadcastStatus,
    /// Fired when a new publisher replaces this one.
    replaced: Option<oneshot::Sender<()>>,
}

/// The live broadcasts of this server, by room.
#[derive(Default)]
pub struct Broadcasts {
    live: Mutex<HashMap<String, Entry>>,
    pub metrics: IngestMetrics,
}

impl Broadcasts {
    /// Register `participant` as the host of `room`. Returns a receiver that fires if a later
    /// publisher replaces it, and the participant it replaced, if any.
    pub fn start(
        &self,
        room: &str,
        participant: ParticipantId,
        source: IngestSource,
        host_name: &str,
    ) -> (oneshot::Receiver<()>, Option<ParticipantId>) {
        let (replaced_tx, replaced_rx) = oneshot::channel();
        let entry = Entry {
            status: BroadcastStatus {
                participant,
                source,
                host_name: host_name.to_string(),
                started_at: SystemTime::now(),
                warnings: Vec::new(),
            },
            replaced: Some(replaced_tx),
        };
        let previous = self.lock().insert(room.to_string(), entry);
        let replaced = previous.map(|mut old| {
            if let Some(stop) = old.replaced.take() {
                let _ = stop.send(());
            }
            old.status.participant
        });
        (replaced_rx, replaced)
    }

    /// The broadcast of `participant` in `room` ended.
    pub fn end(&self, room: &str, participant: ParticipantId) {
        let mut live = self.lock();
        if live
            .get(room)
            .is_some_and(|e| e.status.participant == participant)
        {
            live.remove(room);
        }
    }

    /// Attach a warning to a live broadcast (once per distinct text).
    pub fn warn(&self, room: &str, participant: ParticipantId, warning: &str) {
        let mut live = self.lock();
        if let Some(entry) = live.get_mut(room)
            && entry.status.participant == participant
            && !entry.status.warnings.iter().any(|w| w == warning)
        {
            entry.status.warnings.push(warning.to_string());
        }
    }

    pub fn get(&self, room: &str) -> Option<BroadcastStatus> {
        self.lock().get(room).map(|e| e.status.clone())
    }

    pub fn live_count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding this lock leaves plain data behind; keep serving it.
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Who may publish into which room with a stream key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestGrant {
    pub room: String,
    pub host_name: String,
}

/// Why a stream key was refused. The text is what the encoder's operator reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRefused {
    /// Stable machine code: `invalid_room_name` in dev mode, else the token error's code.
    pub code: &'static str,
    pub message: String,
}

/// Check a stream key. In dev mode (`credentials` is `None`) the key is the room name;
/// otherwise it is an access token for the room with the `ingest` or `publish` grant.
/// `room` is the room the request names (WHIP URLs do; RTMP keys don't).
pub fn authorize_stream_key(
    credentials: Option<&ApiCredentials>,
    key: &str,
    room: Option<&str>,
    now_unix: u64,
) -> Result<IngestGrant, KeyRefused> {
    let Some(credentials) = credentials else {
        let room = room.unwrap_or(key);
        if let Err(why) = validate_room_name(room) {
            return Err(KeyRefused {
                code: "invalid_room_name",
                message: format!("in dev mode the stream key is the room name: {why}"),
            });
        }
        if key != room {
            return Err(KeyRefused {
                code: "bad_stream_key",
                message: format!("in dev mode the stream key is the room name ({room:?})"),
            });
        }
        return Ok(IngestGrant {
            room: room.to_string(),
            host_name: room.to_string(),
        });
    };
    let refused = |error: TokenError| KeyRefused {
        code: error.code(),
        message: format!("stream key refused: {error}"),
    };
    let claims = roomcast_auth::verify(credentials, key, now_unix).map_err(refused)?;
    if let Some(room) = room {
        roomcast_auth::require_room(&claims, room).map_err(refused)?;
    }
    if !claims.grants.allows(Grant::Ingest) && !claims.grants.allows(Grant::Publish) {
        return Err(KeyRefused {
            code: "missing_grant",
            message: format!(
                "stream key refused: the token for {:?} has neither the `ingest` nor the `publish` \
                 grant; mint a stream key with `roomcast token create --grant ingest`",
                claims.sub
            ),
        });
    }
    Ok(IngestGrant {
        host_name: claims.name.clone().unwrap_or_else(|| claims.sub.clone()),
        room: claims.room,
    })
}

/// Counters of the ingest edges for `/metrics`.
#[derive(Debug, Default)]
pub struct IngestMetrics {
    pub rtmp_connections: AtomicU64,
    pub rtmp_publishes_total: AtomicU64,
    pub refused_total: AtomicU64,
    pub replaced_total: AtomicU64,
    pub bframe_streams_total: AtomicU64,
    pub bframe_frames_total: AtomicU64,
    pub unsupported_media_total: AtomicU64,
    pub audio_errors_total: AtomicU64,
    pub bad_input_total: AtomicU64,
    pub frames_total: AtomicU64,
    pub whip_sessions: AtomicU64,
    pub whep_sessions: AtomicU64,
}

impl IngestMetrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Ordering::Relaxed);
    }

    pub(crate) fn render(&self, live_broadcasts: usize) -> String {
        let rows: [(&str, &str, &str, u64); 13] = [
            (
                "roomcast_broadcasts_live",
                "gauge",
                "Rooms with a live RTMP or WHIP host.",
                live_broadcasts as u64,
            ),
            (
                "roomcast_rtmp_connections",
                "gauge",
                "Open RTMP connections (publishing or not).",
                self.rtmp_connections.load(Ordering::Relaxed),
            ),
            (
                "roomcast_rtmp_publishes_total",
                "counter",
                "RTMP publishes accepted.",
                self.rtmp_publishes_total.load(Ordering::Relaxed),
            ),
            (
                "roomcast_ingest_refused_total",
                "counter",
                "RTMP publishes and WHIP/WHEP requests refused (bad or expired key, missing grant).",
                self.refused_total.load(Ordering::Relaxed),
            ),
            (
                "roomcast_ingest_replaced_total",
                "counter",
                "Broadcasts replaced by a new publisher with a key for the same room.",
                self.replaced_total.load(Ordering::Relaxed),
            ),
            (
                "roomcast_ingest_bframe_streams_total",
                "counter",
                "Broadcasts whose H.264 carried B-frames (WebRTC viewers stutter; set bframes=0).",
                self.bframe_streams_total.load(Ordering::Relaxed),
            ),
            (
                "roomcast_ingest_bframe_frames_total",
                "counter",
                "H.264 frames received with a non-zero composition time offset (B-frames).",
                self.bframe_frames_total.load(Ordering::Relaxed),
            ),
            (
                "roomcast_ingest_unsupported_media_total",
                "counter",
                "Broadcasts with a video or audio codec roomcast cannot pass on (the log names it).",
                self.unsupported_media_total.load(Ordering::Relaxed),
            ),
            (
                "roomcast_ingest_audio_errors_total",
                "counter",
                "AAC frames that failed to decode or transcode to Opus.",
                self.audio_errors_total.load(Ordering::Relaxed),
            ),
            (
                "roomcast_ingest_bad_input_total",
                "counter",
                "RTMP connections ended by malformed input (handshake, chunk stream, FLV).",
                self.bad_input_total.load(Ordering::Relaxed),
            ),
            (
                "roomcast_ingest_frames_total",
                "counter",
                "Video and audio frames passed from RTMP into the SFU.",
                self.frames_total.load(Ordering::Relaxed),
            ),
            (
                "roomcast_whip_sessions",
                "gauge",
                "Open WHIP publishing sessions.",
                self.whip_sessions.load(Ordering::Relaxed),
            ),
            (
                "roomcast_whep_sessions",
                "gauge",
                "Open WHEP viewing sessions.",
                self.whep_sessions.load(Ordering::Relaxed),
            ),
        ];
        rows.iter()
            .map(|(name, kind, help, value)| {
                format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n")
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roomcast_auth::Claims;

    #[test]
    fn a_new_publisher_replaces_the_old_and_a_late_end_keeps_the_new() {
        let broadcasts = Broadcasts::default();
        let (a, b) = (ParticipantId(1), ParticipantId(2));
        let (mut replaced_a, none) = broadcasts.start("show", a, IngestSource::Rtmp, "obs");
        assert_eq!(none, None);
        assert!(replaced_a.try_recv().is_err());
        let (_replaced_b, previous) = broadcasts.start("show", b, IngestSource::Rtmp, "obs");
        assert_eq!(previous, Some(a));
        assert!(
            replaced_a.try_recv().is_ok(),
            "the old session is told to stop"
        );
        broadcasts.end("show", a);
        assert_eq!(broadcasts.get("show").map(|s| s.participant), Some(b));
        broadcasts.warn("show", b, "B-frames");
        broadcasts.warn("show", b, "B-frames");
        assert_eq!(broadcasts.get("show").unwrap().warnings, vec!["B-frames"]);
        broadcasts.end("show", b);
        assert_eq!(broadcasts.get("show"), None);
    }

    #[test]
    fn dev_mode_keys_are_room_names() {
        let grant = authorize_stream_key(None, "show", None, 0).unwrap();
        assert_eq!(grant.room, "show");
        let refused = authorize_stream_key(None, "no spaces", None, 0).unwrap_err();
        assert_eq!(refused.code, "invalid_room_name");
        let refused = authorize_stream_key(None, "other", Some("show"), 0).unwrap_err();
        assert_eq!(refused.code, "bad_stream_key");
    }

    #[test]
    fn tokens_need_the_room_and_an_ingest_or_publish_grant() {
        let credentials = ApiCredentials::new("key", "a-secret-of-sufficient-length");
        let now = 1_800_000_000;
        let mint = |grants: Vec<Grant>, issued: u64| {
            let ttl = std::time::Duration::from_secs(900);
            let claims = Claims::new("obs", "show", issued, ttl).with_grants(grants);
            roomcast_auth::mint(&credentials, &claims)
        };
        let ingest = mint(vec![Grant::Ingest], now);
        let grant = authorize_stream_key(Some(&credentials), &ingest, None, now).unwrap();
        assert_eq!(grant.room, "show");
        let publish = mint(vec![Grant::Publish], now);
        assert!(authorize_stream_key(Some(&credentials), &publish, Some("show"), now).is_ok());
        let viewer = mint(vec![Grant::Subscribe], now);
        let refused = authorize_stream_key(Some(&credentials), &viewer, None, now).unwrap_err();
        assert_eq!(refused.code, "missing_grant");
        let refused =
            authorize_stream_key(Some(&credentials), &ingest, Some("other"), now).unwrap_err();
        assert_eq!(refused.code, "wrong_room");
        let expired = mint(vec![Grant::Ingest], now - 1000);
        let refused = authorize_stream_key(Some(&credentials), &expired, None, now).unwrap_err();
        assert_eq!(refused.code, "expired");
        let refused = authorize_stream_key(Some(&credentials), "show", None, now).unwrap_err();
        assert_eq!(refused.code, "malformed");
    }
}
