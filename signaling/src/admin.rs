//! The admin HTTP API, for the operator's backend and scripts: mint tokens, list rooms, close a
//! room, kick or mute a participant.
//!
//! Every request carries `Authorization: Bearer <token>`: an access token signed with the
//! server's API key and secret that has the `admin` grant. Its room is the scope: `*` for every
//! room (`roomcast token create --room '*' --identity ops --grant admin`), or one room name for
//! an admin of that room only. Dev mode has no credentials and so no admin API (403 says so).
//!
//! | method and path | does |
//! |---|---|
//! | `POST /admin/tokens` `{room, identity, name?, grants?, ttl_seconds?}` | mints an access token |
//! | `GET /admin/rooms` | every room in scope with participants, viewers and its host |
//! | `DELETE /admin/rooms/<room>` | removes everyone (reason `room_closed`), ends its broadcast |
//! | `DELETE /admin/rooms/<room>/participants/<id>` | removes one participant (reason `kicked`) |
//! | `POST /admin/rooms/<room>/participants/<id>/mute` `{muted, track_id?}` | stops or resumes forwarding its tracks |
//! | `GET /admin/rooms/<room>/questions?format=json\|csv&broadcast=<id>` | the room's chat questions, as a download |
//!
//! The questions export is also open in dev mode (the web client's "Export" button for the
//! host of a dev server), since there is no token to show.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use roomcast_auth::{Claims, Grant};
use roomcast_sfu::{Command, ParticipantId, RoomInfo, TrackId};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::{AppState, validate_room_name};

/// The room scope of an admin token that covers every room.
pub const ALL_ROOMS: &str = "*";

/// Longest token lifetime the API mints.
const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
const DEFAULT_TTL: Duration = Duration::from_secs(6 * 3600);

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A refusal: the status and a JSON body `{error, message}`.
pub(crate) struct ApiError {
    status: StatusCode,
    code: String,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.code, "message": self.message });
        (self.status, Json(body)).into_response()
    }
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        code: code.to_string(),
        message: message.into(),
    }
}

/// The admin's scope (`*` or a room), or the refusal to send.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(credentials) = state.credentials.as_ref() else {
        return Err(error(
            StatusCode::FORBIDDEN,
            "dev_mode",
            "the admin API needs --api-key and --api-secret; a dev-mode server has none",
        ));
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing `Authorization: Bearer <token>` (a token with the admin grant)",
            )
        })?;
    let claims = roomcast_auth::verify(credentials, token, now_unix())
        .and_then(|claims| roomcast_auth::require_grant(&claims, Grant::Admin).map(|()| claims));
    match claims {
        Ok(claims) => Ok(claims.room),
        Err(refused) => {
            warn!(
                code = refused.code(),
                "admin API request refused: {refused}"
            );
            let status = if refused.code() == "missing_grant" {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::UNAUTHORIZED
            };
            Err(error(status, refused.code(), refused.to_string()))
        }
    }
}

/// [`authorize`] for one room, where dev mode (no credentials) is let through.
fn authorize_room_or_dev(
    state: &AppState,
    headers: &HeaderMap,
    room: &str,
) -> Result<(), ApiError> {
    if state.credentials.is_none() {
        return Ok(());
    }
    let scope = authorize(state, headers)?;
    if !in_scope(&scope, room) {
        return Err(out_of_scope(&scope, room));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExportQuery {
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    broadcast: Option<String>,
}

/// `GET /admin/rooms/<room>/questions`: the room's questions (all, or one broadcast's) as
/// JSON or CSV, as a file download.
pub(crate) async fn export_questions(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    Query(query): Query<ExportQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    validate_room_name(&room).map_err(|why| error(StatusCode::BAD_REQUEST, "bad_request", why))?;
    authorize_room_or_dev(&state, &headers, &room)?;
    let csv = match query.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("format must be \"json\" or \"csv\", not {other:?}"),
            ));
        }
    };
    let questions = state
        .chat
        .questions(&room, query.broadcast)
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    info!(%room, count = questions.len(), csv, "questions exported");
    let (body, content_type, extension) = if csv {
        (
            roomcast_chat::export::questions_csv(&questions),
            "text/csv; charset=utf-8",
            "csv",
        )
    } else {
        (
            roomcast_chat::export::questions_json(&questions),
            "application/json",
            "json",
        )
    };
    let disposition = format!("attachment; filename=\"{room}-questions.{extension}\"");
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        body,
    )
        .into_response())
}

fn in_scope(scope: &str, room: &str) -> bool {
    scope == ALL_ROOMS || scope == room
}

fn out_of_scope(scope: &str, room: &str) -> ApiError {
    error(
        StatusCode::FORBIDDEN,
        "wrong_room",
        format!("this admin token is for room {scope:?}, not {room:?}"),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenRequest {
    room: String,
    identity: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    grants: Option<Vec<String>>,
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

pub(crate) async fn create_token(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<TokenRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let scope = authorize(&state, &headers)?;
    let Json(request) = match body {
        Ok(body) => body,
        Err(rejection) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                rejection.body_text(),
            ));
        }
    };
    if request.room != ALL_ROOMS
        && let Err(why) = validate_room_name(&request.room)
    {
        return Err(error(StatusCode::BAD_REQUEST, "invalid_name", why));
    }
    if !in_scope(&scope, &request.room) {
        return Err(out_of_scope(&scope, &request.room));
    }
    if request.identity.trim().is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "identity is empty",
        ));
    }
    let grants: Result<Vec<Grant>, _> = match &request.grants {
        Some(names) => names.iter().map(|g| g.parse::<Grant>()).collect(),
        None => Ok(vec![Grant::Subscribe, Grant::Chat]),
    };
    let grants = match grants {
        Ok(grants) => grants,
        Err(unknown) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                unknown.to_string(),
            ));
        }
    };
    let ttl = request
        .ttl_seconds
        .map_or(DEFAULT_TTL, Duration::from_secs)
        .min(MAX_TTL);
    let credentials = state.credentials.as_ref().expect("authorize checked");
    let mut claims = Claims::new(request.identity, request.room, now_unix(), ttl)
        .with_grants(grants.iter().copied());
    claims.name = request.name;
    let token = roomcast_auth::mint(credentials, &claims);
    info!(room = %claims.room, identity = %claims.sub, grants = %claims.grants, "token minted through the admin API");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "token": token,
            "room": claims.room,
            "identity": claims.sub,
            "grants": grants.iter().map(|g| g.to_string()).collect::<Vec<_>>(),
            "expires_at": claims.exp,
        })),
    )
        .into_response())
}

fn room_json(state: &AppState, room: &str, info: &RoomInfo) -> serde_json::Value {
    let broadcast = state.broadcasts.get(room);
    json!({
        "room": room,
        "participants": info.participants,
        "viewers": info.viewers,
        "live": info.host.is_some(),
        "host": info.host.as_ref().map(|h| json!({"id": h.id, "name": h.name})),
        "broadcast": broadcast.map(|b| json!({
            "source": b.source,
            "participant": b.participant,
            "started_at": humantime::format_rfc3339_seconds(b.started_at).to_string(),
            "warnings": b.warnings,
        })),
    })
}

pub(crate) async fn list_rooms(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let scope = authorize(&state, &headers)?;
    let mut rooms = Vec::new();
    for worker in state.sfu.workers() {
        let (reply, response) = oneshot::channel();
        if worker.send(Command::ListRooms { reply }).await.is_ok()
            && let Ok(list) = response.await
        {
            rooms.extend(list);
        }
    }
    rooms.retain(|(name, _)| in_scope(&scope, name));
    rooms.sort_by(|a, b| a.0.cmp(&b.0));
    let rooms: Vec<_> = rooms
        .iter()
        .map(|(name, info)| room_json(&state, name, info))
        .collect();
    Ok(Json(json!({ "rooms": rooms })).into_response())
}

pub(crate) async fn close_room(
    State(state): State<Arc<AppState>>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let scope = authorize(&state, &headers)?;
    if !in_scope(&scope, &room) {
        return Err(out_of_scope(&scope, &room));
    }
    let (reply, response) = oneshot::channel();
    let worker = state.sfu.worker_for_room(&room);
    let command = Command::CloseRoom {
        room: room.clone(),
        reply,
    };
    let removed = match worker.send(command).await {
        Ok(()) => response.await.unwrap_or(0),
        Err(_) => 0,
    };
    if removed == 0 {
        return Err(error(
            StatusCode::NOT_FOUND,
            "unknown_room",
            format!("no room {room:?}"),
        ));
    }
    info!(%room, removed, "room closed through the admin API");
    Ok(Json(json!({ "room": room, "removed": removed })).into_response())
}

fn parse_participant(id: &str) -> Result<ParticipantId, ApiError> {
    id.parse::<u64>().map(ParticipantId).map_err(|_| {
        error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("participant ids are numbers, not {id:?}"),
        )
    })
}

pub(crate) async fn kick(
    State(state): State<Arc<AppState>>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let scope = authorize(&state, &headers)?;
    if !in_scope(&scope, &room) {
        return Err(out_of_scope(&scope, &room));
    }
    let participant = parse_participant(&id)?;
    let (reply, response) = oneshot::channel();
    let command = Command::Kick {
        room: room.clone(),
        participant,
        reply,
    };
    let worker = state.sfu.worker_for_room(&room);
    let kicked = worker.send(command).await.is_ok() && response.await == Ok(true);
    if !kicked {
        return Err(error(
            StatusCode::NOT_FOUND,
            "unknown_participant",
            format!("participant {id} is not in room {room:?}"),
        ));
    }
    info!(%room, %participant, "participant kicked through the admin API");
    Ok(Json(json!({ "room": room, "kicked": participant })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MuteRequest {
    muted: bool,
    #[serde(default)]
    track_id: Option<TrackId>,
}

pub(crate) async fn mute(
    State(state): State<Arc<AppState>>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Json<MuteRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let scope = authorize(&state, &headers)?;
    if !in_scope(&scope, &room) {
        return Err(out_of_scope(&scope, &room));
    }
    let participant = parse_participant(&id)?;
    let Json(request) = match body {
        Ok(body) => body,
        Err(rejection) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                rejection.body_text(),
            ));
        }
    };
    let (reply, response) = oneshot::channel();
    let command = Command::SetMuted {
        room: room.clone(),
        participant,
        track: request.track_id,
        muted: request.muted,
        by: roomcast_sfu::MutedBy::Admin,
        reply,
    };
    let worker = state.sfu.worker_for_room(&room);
    let result = match worker.send(command).await {
        Ok(()) => response
            .await
            .unwrap_or(Err(roomcast_sfu::SfuError::WorkerGone)),
        Err(gone) => Err(gone),
    };
    match result {
        Ok(tracks) => Ok(Json(json!({
            "room": room,
            "participant": participant,
            "muted": request.muted,
            "tracks": tracks,
        }))
        .into_response()),
        Err(refused) => Err(error(
            StatusCode::NOT_FOUND,
            "unknown_participant",
            refused.to_string(),
        )),
    }
}
