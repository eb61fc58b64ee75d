//! roomcast's HTTP and WebSocket edge.
//!
//! Routes (all on one listener):
//! - `GET /` (with or without `?room=…&name=…`), `/room.js`, `/style.css`: the web client,
//!   embedded in the binary so the server needs no files next to it.
//! - `GET /watch/<room>`, `/watch.js`: the broadcast viewer page (WHEP).
//! - `GET /ws`: the signaling WebSocket ([`protocol`], `docs/protocol.md`).
//! - `POST /whip/<room>`, `POST /whep/<room>`, `DELETE` on their Locations: WebRTC ingest and
//!   playback over plain HTTP ([`whip`]), CORS open.
//! - `GET /api/rooms/<room>`: a room's live status for viewer pages (CORS open).
//! - RTMP ingest has its own listener ([`rtmp::serve`]).
//! - `GET /healthz`: liveness and a one-line summary, for load balancers and people.
//! - `GET /metrics`: Prometheus text: the SFU workers' counters plus signaling's own.
//!
//! This crate talks to the SFU only through `roomcast_sfu::api` commands and events.

#![forbid(unsafe_code)]

pub mod admin;
pub mod broadcast;
pub mod chat;
pub mod hls;
pub mod limits;
pub mod process;
pub mod protocol;
pub mod replay;
pub mod rtmp;
mod session;
pub mod whip;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State, WebSocketUpgrade};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use roomcast_auth::ApiCredentials;
use roomcast_auth::turn::TurnConfig;
use roomcast_sfu::{Command, ParticipantId, Sfu};

use crate::broadcast::Broadcasts;
use crate::whip::HttpSessions;

pub use session::{CLOSE_MESSAGE_TOO_BIG, validate_room_name};

/// Frames larger than this are refused by the WebSocket layer itself; frames between
/// [`protocol::MAX_MESSAGE_BYTES`] and this are refused by the session with a precise error.
/// Either way the socket closes with 1009.
const WEBSOCKET_HARD_LIMIT: usize = 1024 * 1024;

/// Everything the HTTP handlers share.
pub struct AppState {
    pub sfu: Arc<Sfu>,
    /// Rooms are open to anyone (no tokens). Told to clients in `joined`.
    pub dev_mode: bool,
    /// The API key and secret tokens are verified with; `None` in dev mode.
    pub credentials: Option<ApiCredentials>,
    /// Issues each participant its own TURN credentials ([`AppState::ice_servers`]); `None`:
    /// clients get no ICE servers.
    pub turn: Option<TurnConfig>,
    pub metrics: SignalingMetrics,
    pub broadcasts: Broadcasts,
    pub http_sessions: HttpSessions,
    pub rtmp: rtmp::RtmpConfig,
    /// Set after [`AppState::new`] from the configuration; defaults otherwise.
    pub limits: limits::Limits,
    pub limit_state: limits::LimitState,
    /// Outside dev mode, let clients without a token watch (join receive-only, WHEP): set
    /// after [`AppState::new`] from `--anonymous-viewers`.
    pub anonymous_viewers: bool,
    /// HLS packaging and replays ([`hls`]); replaced after [`AppState::new`] from the
    /// configuration (the default keeps no replays).
    pub hls: Arc<hls::Hls>,
    /// Room chat ([`chat`]); replaced after [`AppState::new`] from the configuration (the
    /// default keeps questions and notices in memory only).
    pub chat: Arc<chat::ChatHub>,
}

impl AppState {
    /// State for a server: dev mode exactly when there are no credentials.
    pub fn new(
        sfu: Arc<Sfu>,
        credentials: Option<ApiCredentials>,
        turn: Option<TurnConfig>,
        rtmp: rtmp::RtmpConfig,
    ) -> Self {
        AppState {
            sfu,
            dev_mode: credentials.is_none(),
            credentials,
            turn,
            metrics: SignalingMetrics::default(),
            broadcasts: Broadcasts::default(),
            http_sessions: HttpSessions::default(),
            rtmp,
            limits: limits::Limits::default(),
            limit_state: limits::LimitState::default(),
            anonymous_viewers: false,
            hls: Arc::new(
                hls::Hls::new(hls::HlsSettings::default())
                    .expect("without a replay directory there is nothing to open"),
            ),
            chat: Arc::new(chat::ChatHub::new(roomcast_chat::ChatService::new(
                roomcast_chat::ChatConfig::default(),
                roomcast_chat::ChatStore::open_in_memory()
                    .expect("an in-memory SQLite database always opens"),
            ))),
        }
    }

    /// The ICE servers for one participant: the TURN URLs with fresh credentials of its own
    /// (none without TURN). The TURN username names the token's `identity` when it is plain
    /// enough for STUN and HTTP headers, else the participant id.
    pub fn ice_servers(
        &self,
        identity: Option<&str>,
        participant: ParticipantId,
    ) -> Vec<protocol::IceServer> {
        let Some(turn) = &self.turn else {
            return Vec::new();
        };
        let plain = |user: &&str| {
            !user.is_empty()
                && user.len() <= 64
                && user
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | '+'))
        };
        let user = identity
            .filter(plain)
            .map_or_else(|| participant.0.to_string(), str::to_string);
        let now_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let issued = turn.credentials(&user, now_unix);
        vec![protocol::IceServer {
            urls: turn.urls().to_vec(),
            username: Some(issued.username),
            credential: Some(issued.credential),
        }]
    }
}

/// Signaling's own counters (the SFU's are per worker).
#[derive(Debug, Default)]
pub struct SignalingMetrics {
    connections_open: AtomicU64,
    connections_total: AtomicU64,
    messages_total: AtomicU64,
    protocol_errors_total: AtomicU64,
}

impl SignalingMetrics {
    fn connection_opened(&self) {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        self.connections_total.fetch_add(1, Ordering::Relaxed);
    }
    fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
    fn message_received(&self) {
        self.messages_total.fetch_add(1, Ordering::Relaxed);
    }
    fn protocol_error(&self) {
        self.protocol_errors_total.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self) -> String {
        let rows = [
            (
                "roomcast_signaling_connections",
                "gauge",
                "Open signaling WebSockets.",
                &self.connections_open,
            ),
            (
                "roomcast_signaling_connections_total",
                "counter",
                "Signaling WebSockets accepted.",
                &self.connections_total,
            ),
            (
                "roomcast_signaling_messages_total",
                "counter",
                "Signaling messages received from clients.",
                &self.messages_total,
            ),
            (
                "roomcast_signaling_errors_total",
                "counter",
                "Error messages sent to clients (bad input, refused requests).",
                &self.protocol_errors_total,
            ),
        ];
        rows.iter()
            .map(|(name, kind, help, value)| {
                format!(
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}\n",
                    value.load(Ordering::Relaxed)
                )
            })
            .collect()
    }
}

/// The complete HTTP application.
pub fn app(state: Arc<AppState>) -> Router {
    // Endpoints players on other origins call: WHIP/WHEP (RFC 9725 §4.1 asks for CORS) and the
    // room status API.
    let cross_origin = Router::new()
        .route("/whip/{room}", post(whip::post_whip).options(preflight))
        .route(
            "/whip/{room}/{session}",
            axum::routing::delete(whip::delete_whip)
                .patch(whip::patch_session)
                .options(preflight),
        )
        .route("/whep/{room}", post(whip::post_whep).options(preflight))
        .route(
            "/whep/{room}/{session}",
            axum::routing::delete(whip::delete_whep)
                .patch(whip::patch_session)
                .options(preflight),
        )
        .route("/api/rooms", get(directory).options(preflight))
        .route("/api/rooms/{room}", get(room_status).options(preflight))
        .route(
            "/hls/{room}/index.m3u8",
            get(hls::live_playlist).options(preflight),
        )
        .route(
            "/hls/{room}/{broadcast}/{file}",
            get(hls::media).options(preflight),
        )
        .layer(DefaultBodyLimit::max(whip::MAX_SDP_BYTES))
        .layer(axum::middleware::map_response(allow_any_origin));
    let mut router = Router::new()
        .route("/", get(|| async { web_client_file("index.html") }))
        .route(
            "/watch/{room}",
            get(|| async { web_client_file("watch.html") }),
        )
        // Older pages load hls.js from here.
        .route(
            "/hls.min.js",
            get(|| async { web_client_file("vendor/hls.min.js") }),
        );
    for &(path, _) in web_client::WEB_CLIENT_FILES {
        router = router.route(
            &format!("/{path}"),
            get(move || async move { web_client_file(path) }),
        );
    }
    router
        // `any`: over HTTP/2 (HTTPS with ALPN h2) browsers open WebSockets with an extended
        // CONNECT (RFC 8441), not a GET.
        .route("/ws", axum::routing::any(websocket))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        // The admin API: bearer tokens with the admin grant, no CORS (server-to-server).
        .route("/admin/tokens", post(admin::create_token))
        .route("/admin/rooms", get(admin::list_rooms))
        .route(
            "/admin/rooms/{room}",
            axum::routing::delete(admin::close_room),
        )
        .route(
            "/admin/rooms/{room}/participants/{id}",
            axum::routing::delete(admin::kick),
        )
        .route(
            "/admin/rooms/{room}/participants/{id}/mute",
            post(admin::mute),
        )
        .route(
            "/admin/rooms/{room}/questions",
            get(admin::export_questions),
        )
        .merge(cross_origin)
        .with_state(state)
}

async fn allow_any_origin(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, Link"),
    );
    response
}

async fn preflight() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (
                header::ACCESS_CONTROL_ALLOW_METHODS,
                "GET, POST, DELETE, PATCH, OPTIONS",
            ),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                "Authorization, Content-Type, If-Match",
            ),
            (header::ACCESS_CONTROL_MAX_AGE, "86400"),
        ],
    )
        .into_response()
}

/// `GET /api/rooms/<room>`: whether the room is live, who hosts it, how many watch.
async fn room_status(State(state): State<Arc<AppState>>, Path(room): Path<String>) -> Response {
    if let Err(why) = validate_room_name(&room) {
        return (StatusCode::BAD_REQUEST, why).into_response();
    }
    let worker = state.sfu.worker_for_room(&room);
    let (reply, response) = tokio::sync::oneshot::channel();
    let info = match worker
        .send(Command::RoomInfo {
            room: room.clone(),
            reply,
        })
        .await
    {
        Ok(()) => response.await.ok().flatten(),
        Err(_) => None,
    };
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::Json(room_json(&state, &room, info.as_ref())),
    )
        .into_response()
}

/// A room as the viewer pages and the directory see it.
fn room_json(
    state: &AppState,
    room: &str,
    info: Option<&roomcast_sfu::RoomInfo>,
) -> serde_json::Value {
    let broadcast = state.broadcasts.get(room);
    let host = info.and_then(|i| i.host.as_ref()).map(|host| {
        let source = match &broadcast {
            Some(b) if b.participant == host.id => serde_json::json!(b.source),
            _ => serde_json::json!("webrtc"),
        };
        serde_json::json!({ "name": host.name, "source": source })
    });
    let hls = state.hls.broadcast(room).filter(|b| b.is_live());
    let hls_playable = hls.as_ref().is_some_and(|b| b.is_playable());
    serde_json::json!({
        "room": room,
        "live": host.is_some(),
        "host": host,
        "viewers": info.map_or(0, |i| i.viewers),
        "participants": info.map_or(0, |i| i.participants),
        // A broadcast's start, else when the room's first member joined.
        "started_at": broadcast
            .as_ref()
            .map(|b| b.started_at)
            .or_else(|| hls.as_ref().map(|b| b.started_at))
            .or_else(|| info.map(|i| {
                let open_for = std::time::Instant::now().saturating_duration_since(i.opened_at);
                std::time::SystemTime::now() - open_for
            }))
            .map(|at| humantime::format_rfc3339_seconds(at).to_string()),
        "warnings": broadcast.map(|b| b.warnings).unwrap_or_default(),
        "hls": {
            "live": hls_playable,
            "url": format!("/hls/{room}/index.m3u8"),
        },
    })
}

/// `GET /api/rooms`: the directory: live rooms and finished broadcasts with their replays.
async fn directory(State(state): State<Arc<AppState>>) -> Response {
    let mut rooms = Vec::new();
    for worker in state.sfu.workers() {
        let (reply, response) = tokio::sync::oneshot::channel();
        if worker.send(Command::ListRooms { reply }).await.is_ok()
            && let Ok(list) = response.await
        {
            rooms.extend(list);
        }
    }
    rooms.sort_by(|a, b| a.0.cmp(&b.0));
    let rooms: Vec<_> = rooms
        .iter()
        .map(|(name, info)| room_json(&state, name, Some(info)))
        .collect();
    let body = serde_json::json!({
        "rooms": rooms,
        // Replay URLs are capabilities (their media needs no token): listed only where anyone
        // may watch anyway.
        "replays": if state.credentials.is_none() || state.anonymous_viewers {
            hls::replays_json(&state.hls)
        } else {
            Vec::new()
        },
    });
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::Json(body),
    )
        .into_response()
}

/// The web client, embedded at build time (see `build.rs`).
mod web_client {
    include!(concat!(env!("OUT_DIR"), "/web_client.rs"));
}

/// One file of the web client, or 404. hls.js in `vendor/` is npm's build, vendored by
/// `scripts/vendor-hlsjs.sh` (Apache-2.0, see `web-client/vendor/hls.js-LICENSE`) so the
/// server needs no npm at run time.
fn web_client_file(path: &str) -> Response {
    let Some(&(_, body)) = web_client::WEB_CLIENT_FILES
        .iter()
        .find(|(p, _)| *p == path)
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let content_type = match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("wav") => "audio/wav",
        _ => "text/plain; charset=utf-8",
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

async fn websocket(
    upgrade: WebSocketUpgrade,
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
) -> Response {
    let ip = limits::client_ip(&state.limits, peer, &headers);
    let Some(slot) = state
        .limit_state
        .connect(ip, state.limits.max_connections_per_ip)
    else {
        tracing::warn!(%ip, limit = state.limits.max_connections_per_ip, "WebSocket refused: too many connections from this address");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many connections from {ip} (limit {}); close some and retry\n",
                state.limits.max_connections_per_ip
            ),
        )
            .into_response();
    };
    upgrade
        .max_message_size(WEBSOCKET_HARD_LIMIT)
        .max_frame_size(WEBSOCKET_HARD_LIMIT)
        .on_upgrade(move |socket| async move {
            session::run(socket, state).await;
            drop(slot);
        })
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let body = serde_json::json!({
        "status": "ok",
        "dev_mode": state.dev_mode,
        "workers": state.sfu.workers().len(),
        "participants": state.sfu.participants(),
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut text = state.sfu.render_metrics();
    text.push_str(&state.metrics.render());
    text.push_str(&state.limit_state.render());
    text.push_str(&state.hls.render_metrics());
    text.push_str(&state.chat.render_metrics());
    text.push_str(
        &state
            .broadcasts
            .metrics
            .render(state.broadcasts.live_count()),
    );
    if let Some(process) = process::ProcessStats::read() {
        let alive_tasks = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        text.push_str(&process.render(alive_tasks));
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}
