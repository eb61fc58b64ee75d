//! WHIP ingest ([RFC 9725]) and WHEP playback (draft-ietf-wish-whep): one HTTP POST with an
//! SDP offer creates a session, DELETE on the returned Location ends it.
//!
//! - `POST /whip/<room>`: the client publishes (OBS 30+, GStreamer, a browser page). The
//!   bearer token is a stream key (see [`crate::broadcast::authorize_stream_key`]); the
//!   participant joins with [`Subscription::Nothing`] and becomes the room's broadcast host,
//!   replacing a live one.
//! - `POST /whep/<room>`: the client plays the room's host on the m-lines of its own offer
//!   ([`Subscription::Host`]): no renegotiation ever, and the session keeps playing when the
//!   host reconnects or changes. Outside dev mode the bearer token needs the `subscribe`
//!   grant for the room.
//! - Both: `201 Created`, `Location: /whip|whep/<room>/<session>`, `application/sdp` answer,
//!   ICE servers in `Link` headers (RFC 9725, "STUN/TURN Server Configuration"): the TURN
//!   URLs with the session's own credentials ([`AppState::ice_servers`]). The server is
//!   ICE-lite with all its candidates in the answer, so trickle (`PATCH`) is answered `405`,
//!   which RFC 9725 allows for servers without trickle support. CORS is open so players on
//!   other origins can use the endpoints.
//!
//! [RFC 9725]: https://www.rfc-editor.org/rfc/rfc9725

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use roomcast_auth::Grant;
use roomcast_sfu::{
    Command, LeaveReason, ParticipantId, SessionEvent, SfuError, Subscription, WorkerHandle,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, info, info_span, warn};

use crate::AppState;
use crate::broadcast::{IngestMetrics, IngestSource, authorize_stream_key};
use crate::limits::{ConnectionSlot, client_ip};
use crate::session::request;
use crate::validate_room_name;

/// Largest SDP offer accepted (a browser's offer is 3–10 KiB).
pub const MAX_SDP_BYTES: usize = 64 * 1024;

/// Which of the two protocols a session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Whip,
    Whep,
}

impl Direction {
    fn path(self) -> &'static str {
        match self {
            Direction::Whip => "whip",
            Direction::Whep => "whep",
        }
    }
}

/// Live WHIP and WHEP sessions by id (the participant id).
#[derive(Default)]
pub struct HttpSessions {
    sessions: DashMap<u64, HttpSession>,
}

struct HttpSession {
    room: String,
    direction: Direction,
    participant: ParticipantId,
    worker: WorkerHandle,
}

pub(crate) async fn post_whip(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    create(state, room, peer, headers, body, Direction::Whip).await
}

pub(crate) async fn post_whep(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    create(state, room, peer, headers, body, Direction::Whep).await
}

pub(crate) async fn delete_whip(
    State(state): State<Arc<AppState>>,
    Path((room, id)): Path<(String, String)>,
) -> Response {
    delete(state, room, id, Direction::Whip).await
}

pub(crate) async fn delete_whep(
    State(state): State<Arc<AppState>>,
    Path((room, id)): Path<(String, String)>,
) -> Response {
    delete(state, room, id, Direction::Whep).await
}

/// Trickle ICE and ICE restarts are not supported: all server candidates are in the answer.
pub(crate) async fn patch_session() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "trickle ICE is not supported: the server is ICE-lite and its answer holds all its candidates",
    )
}

async fn create(
    state: Arc<AppState>,
    room: String,
    peer: SocketAddr,
    headers: HeaderMap,
    body: Bytes,
    direction: Direction,
) -> Response {
    if let Err(why) = validate_room_name(&room) {
        return error(StatusCode::BAD_REQUEST, &why);
    }
    let ip = client_ip(&state.limits, peer, &headers);
    let Some(slot) = state
        .limit_state
        .connect(ip, state.limits.max_connections_per_ip)
    else {
        warn!(%ip, "{} refused: too many connections from this address", direction.path());
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "too many connections from {ip} (limit {})",
                state.limits.max_connections_per_ip
            ),
        );
    };
    let is_sdp = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().starts_with("application/sdp"));
    if !is_sdp {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be an SDP offer with Content-Type: application/sdp",
        );
    }
    let Ok(offer) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "the SDP offer is not UTF-8");
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let metrics = &state.broadcasts.metrics;
    // A WHEP viewer's token identity names its TURN credentials (else the session id does).
    let mut identity = None;
    let name = match (direction, state.credentials.as_ref(), token) {
        // Dev mode viewers need no key.
        (Direction::Whep, None, _) => "viewer".to_string(),
        (Direction::Whep, Some(credentials), Some(token)) => {
            let claims = roomcast_auth::verify(credentials, token, now_unix).and_then(|claims| {
                roomcast_auth::require_room(&claims, &room)?;
                roomcast_auth::require_grant(&claims, Grant::Subscribe)?;
                Ok(claims)
            });
            match claims {
                Ok(claims) => {
                    identity = Some(claims.sub.clone());
                    claims.name.unwrap_or(claims.sub)
                }
                Err(refused) => {
                    IngestMetrics::add(&metrics.refused_total, 1);
                    warn!(%room, code = refused.code(), "WHEP refused: {refused}");
                    return error(StatusCode::UNAUTHORIZED, &refused.to_string());
                }
            }
        }
        (Direction::Whip, credentials, Some(key)) => {
            match authorize_stream_key(credentials, key, Some(&room), now_unix) {
                Ok(grant) => grant.host_name,
                Err(refused) => {
                    IngestMetrics::add(&metrics.refused_total, 1);
                    warn!(%room, code = refused.code, "WHIP refused: {}", refused.message);
                    return error(StatusCode::UNAUTHORIZED, &refused.message);
                }
            }
        }
        (Direction::Whep, Some(_), None) if state.anonymous_viewers => "viewer".to_string(),
        (_, _, None) => {
            IngestMetrics::add(&metrics.refused_total, 1);
            let what = if direction == Direction::Whip {
                "a stream key (in dev mode: the room name)"
            } else {
                "an access token with the subscribe grant"
            };
            return error(
                StatusCode::UNAUTHORIZED,
                &format!("missing `Authorization: Bearer …` header: {what}"),
            );
        }
    };

    let participant = ParticipantId::next();
    let worker = state.sfu.worker_for_room(&room).clone();
    let (events, events_rx) = mpsc::channel(16);
    let subscription = match direction {
        Direction::Whip => Subscription::Nothing,
        Direction::Whep => Subscription::Host,
    };
    let joined = request(&worker, |reply| Command::Join {
        room: room.clone(),
        participant,
        name: name.clone(),
        subscription,
        events,
        reply,
    })
    .await;
    if let Err(refused) = joined {
        return sfu_error(refused);
    }
    let answer = request(&worker, |reply| Command::Offer {
        participant,
        sdp: offer.to_string(),
        sources: Vec::new(),
        receive: Vec::new(),
        reply,
    })
    .await;
    let answer = match answer {
        Ok(answer) => answer.sdp,
        Err(refused) => {
            let _ = worker
                .send(Command::Leave {
                    participant,
                    reason: LeaveReason::Left,
                })
                .await;
            return sfu_error(refused);
        }
    };

    let replaced = match direction {
        Direction::Whip => {
            let (replaced, previous) =
                state
                    .broadcasts
                    .start(&room, participant, IngestSource::Whip, &name);
            if previous.is_some() {
                info!(%room, "WHIP publisher replaces the live publisher of this room");
            }
            IngestMetrics::add(&metrics.whip_sessions, 1);
            Some(replaced)
        }
        Direction::Whep => {
            IngestMetrics::add(&metrics.whep_sessions, 1);
            None
        }
    };
    state.http_sessions.sessions.insert(
        participant.0,
        HttpSession {
            room: room.clone(),
            direction,
            participant,
            worker: worker.clone(),
        },
    );
    let span = info_span!("http_session", protocol = direction.path(), %room, %participant);
    span.in_scope(|| info!(%name, "session started"));
    tokio::spawn(
        watch_session(
            state.clone(),
            participant,
            worker,
            events_rx,
            replaced,
            slot,
        )
        .instrument(span),
    );

    let location = format!("/{}/{room}/{}", direction.path(), participant.0);
    let mut response = (StatusCode::CREATED, answer).into_response();
    let response_headers = response.headers_mut();
    response_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(value) = HeaderValue::from_str(&location) {
        response_headers.insert(header::LOCATION, value);
    }
    for server in state.ice_servers(identity.as_deref(), participant) {
        for url in &server.urls {
            let mut link = format!("<{url}>; rel=\"ice-server\"");
            if let (Some(username), Some(credential)) = (&server.username, &server.credential) {
                link.push_str(&format!(
                    "; username=\"{username}\"; credential=\"{credential}\"; credential-type=\"password\""
                ));
            }
            if let Ok(value) = HeaderValue::from_str(&link) {
                response_headers.append(header::LINK, value);
            }
        }
    }
    response
}

/// Follow a session until its participant is removed or, for WHIP, replaced; then forget it.
async fn watch_session(
    state: Arc<AppState>,
    participant: ParticipantId,
    worker: WorkerHandle,
    mut events: mpsc::Receiver<SessionEvent>,
    replaced: Option<oneshot::Receiver<()>>,
    // Held for the session's life: its per-IP connection slot.
    _slot: ConnectionSlot,
) {
    let replaced = async {
        match replaced {
            Some(replaced) => {
                let _ = replaced.await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::pin!(replaced);
    let reason = loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(SessionEvent::Removed { reason }) => break format!("{reason:?}"),
                Some(_) => continue,
                None => break "the SFU stopped".to_string(),
            },
            _ = &mut replaced => {
                let leave = Command::Leave { participant, reason: LeaveReason::Left };
                let _ = worker.send(leave).await;
                IngestMetrics::add(&state.broadcasts.metrics.replaced_total, 1);
                break "replaced by a new publisher".to_string();
            }
        }
    };
    forget(&state, participant);
    info!(%reason, "session ended");
}

fn forget(state: &AppState, participant: ParticipantId) {
    if let Some((_, session)) = state.http_sessions.sessions.remove(&participant.0) {
        let metrics = &state.broadcasts.metrics;
        match session.direction {
            Direction::Whip => {
                state.broadcasts.end(&session.room, participant);
                IngestMetrics::sub(&metrics.whip_sessions, 1);
            }
            Direction::Whep => IngestMetrics::sub(&metrics.whep_sessions, 1),
        }
    }
}

async fn delete(state: Arc<AppState>, room: String, id: String, direction: Direction) -> Response {
    let found = id.parse::<u64>().ok().and_then(|id| {
        state
            .http_sessions
            .sessions
            .get(&id)
            .filter(|s| s.room == room && s.direction == direction)
            .map(|s| (s.participant, s.worker.clone()))
    });
    let Some((participant, worker)) = found else {
        return error(StatusCode::NOT_FOUND, "no such session (already ended?)");
    };
    forget(&state, participant);
    let _ = worker
        .send(Command::Leave {
            participant,
            reason: LeaveReason::Left,
        })
        .await;
    StatusCode::OK.into_response()
}

fn sfu_error(refused: SfuError) -> Response {
    let status = match refused {
        SfuError::RoomFull { .. } => StatusCode::SERVICE_UNAVAILABLE,
        SfuError::BadSdp(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, &refused.to_string())
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}
