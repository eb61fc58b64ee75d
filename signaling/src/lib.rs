//! roomcast's HTTP and WebSocket edge.
//!
//! Routes (all on one listener):
//! - `GET /` (with or without `?room=…&name=…`), `/room.js`, `/style.css`: the web client,
//!   embedded in the binary so the server needs no files next to it.
//! - `GET /ws`: the signaling WebSocket ([`protocol`], `docs/protocol.md`).
//! - `GET /healthz`: liveness and a one-line summary, for load balancers and people.
//! - `GET /metrics`: Prometheus text: the SFU workers' counters plus signaling's own.
//!
//! This crate talks to the SFU only through `roomcast_sfu::api` commands and events.

#![forbid(unsafe_code)]

pub mod process;
pub mod protocol;
mod session;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use roomcast_sfu::Sfu;

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
    pub ice_servers: Vec<protocol::IceServer>,
    pub metrics: SignalingMetrics,
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
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/room.js",
            get(|| async { asset("text/javascript; charset=utf-8", ROOM_JS) }),
        )
        .route(
            "/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route("/ws", get(websocket))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

const INDEX_HTML: &str = include_str!("../../web-client/index.html");
const ROOM_JS: &str = include_str!("../../web-client/room.js");
const STYLE_CSS: &str = include_str!("../../web-client/style.css");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

async fn websocket(upgrade: WebSocketUpgrade, State(state): State<Arc<AppState>>) -> Response {
    upgrade
        .max_message_size(WEBSOCKET_HARD_LIMIT)
        .max_frame_size(WEBSOCKET_HARD_LIMIT)
        .on_upgrade(move |socket| session::run(socket, state))
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
