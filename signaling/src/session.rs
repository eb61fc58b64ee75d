//! One signaling WebSocket: the JSON protocol in, SFU commands out, SFU events back.
//!
//! The socket is split in two: this task reads frames and SFU events; a writer task owns the
//! sink, so a slow client never blocks the reader (its queue is bounded; when it is full the
//! session ends). The SFU side of the session is the participant's worker mailbox plus its
//! bounded event stream (see `roomcast_sfu::api`).
//!
//! Invariants:
//! - Every client frame gets exactly the answer the protocol promises, or an `error` with a
//!   stable code; only oversize frames (1009) and `leave` close the socket from our side.
//! - Whatever way the socket ends, the participant is removed from its room.

use std::ops::ControlFlow;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use roomcast_chat::{Author, ChatError, Permissions};
use roomcast_sfu::{
    Command, LeaveReason, MutedBy, ParticipantId, SessionEvent, SfuError, Subscription, TrackId,
    TrackSource, WorkerHandle,
};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{Instrument, debug, info, warn};

use crate::AppState;
use crate::limits::{Limit, MessageRate};
use crate::protocol::{
    ChatPermissions, ClientMessage, ErrorCode, Grants, LayerState, OfferedTrack, ParticipantInfo,
    ProtocolError, ServerMessage, TrackInfo, parse_client_message_within,
};

/// Frames queued for one client before the session gives up on it.
const OUTGOING_QUEUE: usize = 256;
/// SFU events queued for one participant before the worker removes it as too slow.
const EVENT_QUEUE: usize = 256;
/// Longest room name and display name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// How often the server pings an open signaling socket.
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// WebSocket close code for a frame over the size limit (RFC 6455 §7.4.1).
pub const CLOSE_MESSAGE_TOO_BIG: u16 = 1009;

enum Outgoing {
    Message(ServerMessage),
    Close(u16, &'static str),
}

pub(crate) async fn run(socket: WebSocket, state: Arc<AppState>) {
    state.metrics.connection_opened();
    let (mut sink, mut stream) = socket.split();
    let (outgoing, mut outgoing_rx) = mpsc::channel::<Outgoing>(OUTGOING_QUEUE);
    let writer = tokio::spawn(async move {
        // Pings keep idle sockets alive through proxies and NATs (a quiet meeting sends nothing
        // on its socket for hours); browsers answer them without any client code.
        let mut keepalive = tokio::time::interval(KEEPALIVE_INTERVAL);
        keepalive.tick().await;
        loop {
            let item = tokio::select! {
                item = outgoing_rx.recv() => item,
                _ = keepalive.tick() => {
                    if sink.send(Message::Ping(Default::default())).await.is_err() {
                        break;
                    }
                    continue;
                }
            };
            let Some(item) = item else { break };
            let result = match item {
                Outgoing::Message(message) => {
                    let json =
                        serde_json::to_string(&message).expect("server messages always serialize");
                    sink.send(Message::Text(json.into())).await
                }
                Outgoing::Close(code, reason) => {
                    let frame = CloseFrame {
                        code,
                        reason: Utf8Bytes::from_static(reason),
                    };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    break;
                }
            };
            if result.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });

    let mut session = Session {
        rate: MessageRate::new(state.limits.max_message_rate, std::time::Instant::now()),
        state: state.clone(),
        outgoing,
        joined: None,
        chat: None,
    };
    let span = tracing::info_span!("ws");
    async {
        loop {
            let flow = tokio::select! {
                frame = stream.next() => match frame {
                    Some(Ok(Message::Text(text))) => session.handle_text(text.as_str()).await,
                    Some(Ok(Message::Binary(_))) => {
                        session.send_error(ErrorCode::BinaryNotSupported, "binary frames are not part of the protocol; send JSON text frames").await
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => ControlFlow::Continue(()),
                    Some(Ok(Message::Close(_))) | None => ControlFlow::Break(LeaveReason::Disconnected),
                    Some(Err(error)) => session.handle_read_error(error).await,
                },
                event = next_event(&mut session.joined) => session.handle_event(event).await,
                event = next_chat_event(&mut session.chat) => session.handle_chat_event(event).await,
            };
            if let ControlFlow::Break(reason) = flow {
                session.leave(reason).await;
                break;
            }
        }
    }
    .instrument(span)
    .await;
    if let Some(seat) = session.chat.take() {
        state.chat.unsubscribe(&seat.room, seat.events);
    }
    drop(session);
    let _ = writer.await;
    state.metrics.connection_closed();
}

/// The SFU event stream of a joined session; pending forever before `join`.
async fn next_event(joined: &mut Option<Joined>) -> Option<SessionEvent> {
    match joined {
        Some(joined) => joined.events.recv().await,
        None => std::future::pending().await,
    }
}

/// The room chat's next event for this socket; pending forever without a seat.
async fn next_chat_event(
    seat: &mut Option<ChatSeat>,
) -> Result<ServerMessage, broadcast::error::RecvError> {
    match seat {
        Some(seat) => seat.events.recv().await,
        None => std::future::pending().await,
    }
}

struct Session {
    state: Arc<AppState>,
    outgoing: mpsc::Sender<Outgoing>,
    joined: Option<Joined>,
    /// The room's chat: after `join`, or `chat_join` (chat without media).
    chat: Option<ChatSeat>,
    rate: MessageRate,
}

/// A socket's place in a room's chat.
struct ChatSeat {
    room: String,
    author: Author,
    events: broadcast::Receiver<ServerMessage>,
}

/// What a `join` or `chat_join` is allowed, from dev mode, `--anonymous-viewers` or its token.
struct Access {
    name: String,
    may_publish: bool,
    may_chat: bool,
    is_admin: bool,
    subscription: Subscription,
    /// The token's subject (`None` in dev mode and for anonymous viewers).
    identity: Option<String>,
}

struct Joined {
    participant: ParticipantId,
    worker: WorkerHandle,
    events: mpsc::Receiver<SessionEvent>,
    /// Set once the SFU has removed the participant: nothing left to leave.
    removed: bool,
    /// Dev mode, or the token grants publish.
    may_publish: bool,
    /// Dev mode, or the token grants admin (kick, mute).
    is_admin: bool,
    room: String,
}

impl ChatSeat {
    fn permissions(&self) -> ChatPermissions {
        ChatPermissions {
            post: self.author.permissions.post,
            notice: self.author.permissions.post && self.author.permissions.admin,
            moderate: self.author.permissions.admin,
        }
    }
}

/// Whether an SDP offer has an m-line the client sends on.
fn offers_to_send(sdp: &str) -> bool {
    sdp.lines()
        .map(str::trim)
        .any(|line| line == "a=sendonly" || line == "a=sendrecv")
}

impl Session {
    async fn send(&self, message: ServerMessage) -> ControlFlow<LeaveReason> {
        match self.outgoing.try_send(Outgoing::Message(message)) {
            Ok(()) => ControlFlow::Continue(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!("client is not reading its WebSocket; closing the session");
                ControlFlow::Break(LeaveReason::SlowClient)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                ControlFlow::Break(LeaveReason::Disconnected)
            }
        }
    }

    async fn send_error(
        &self,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> ControlFlow<LeaveReason> {
        let error = ProtocolError::new(code, message);
        debug!(code = ?error.code, message = %error.message, "protocol error");
        self.state.metrics.protocol_error();
        self.send(ServerMessage::Error(error)).await
    }

    async fn handle_read_error(&self, error: axum::Error) -> ControlFlow<LeaveReason> {
        let text = error.to_string();
        if text.contains("too long") || text.contains("too big") || text.contains("Space limit") {
            self.close_oversize().await
        } else {
            debug!(%error, "WebSocket read failed");
            ControlFlow::Break(LeaveReason::Disconnected)
        }
    }

    async fn close_oversize(&self) -> ControlFlow<LeaveReason> {
        let _ = self
            .send_error(
                ErrorCode::MessageTooLarge,
                format!(
                    "messages are limited to {} bytes",
                    self.state.limits.max_message_bytes
                ),
            )
            .await;
        let _ = self
            .outgoing
            .try_send(Outgoing::Close(CLOSE_MESSAGE_TOO_BIG, "message too large"));
        ControlFlow::Break(LeaveReason::Disconnected)
    }

    async fn handle_text(&mut self, text: &str) -> ControlFlow<LeaveReason> {
        self.state.metrics.message_received();
        let now = std::time::Instant::now();
        if !self.rate.allow(now) {
            self.state.limit_state.rejected(Limit::MessageRate);
            if !self.rate.should_report(now) {
                return ControlFlow::Continue(());
            }
            let limit = self.state.limits.max_message_rate;
            return self
                .send_error(
                    ErrorCode::RateLimited,
                    format!(
                        "more than {limit} messages per second: messages are being dropped until \
                         the rate falls (this error is sent at most once a second)"
                    ),
                )
                .await;
        }
        let message = match parse_client_message_within(text, self.state.limits.max_message_bytes) {
            Ok(message) => message,
            Err(error) if error.code == ErrorCode::MessageTooLarge => {
                self.state.limit_state.rejected(Limit::MessageSize);
                return self.close_oversize().await;
            }
            Err(error) => return self.send_error(error.code, error.message).await,
        };
        match message {
            ClientMessage::Join { room, name, token } => self.join(room, name, token).await,
            ClientMessage::ChatJoin { room, name, token } => {
                self.chat_join(room, name, token).await
            }
            ClientMessage::Chat { kind, text } => {
                let Some(seat) = self.chat_seat_or_error("chat").await? else {
                    return ControlFlow::Continue(());
                };
                let (room, author) = (seat.room.clone(), seat.author.clone());
                let broadcast = self.state.hls.broadcast(&room).map(|b| b.id.clone());
                let result = self
                    .state
                    .chat
                    .post(&room, author, kind, text, broadcast)
                    .await;
                self.chat_result(result).await
            }
            ClientMessage::AnswerQuestion { id, answered } => {
                let Some(seat) = self.chat_seat_or_error("answer_question").await? else {
                    return ControlFlow::Continue(());
                };
                let (room, author) = (seat.room.clone(), seat.author.clone());
                let result = self.state.chat.answer(&room, author, id, answered).await;
                self.chat_result(result).await
            }
            ClientMessage::Kick { participant_id } => {
                let Some((room, worker)) = self.admin_or_error("kick").await? else {
                    return ControlFlow::Continue(());
                };
                let (reply, response) = oneshot::channel();
                let command = Command::Kick {
                    room: room.clone(),
                    participant: participant_id,
                    reply,
                };
                let kicked = worker.send(command).await.is_ok() && response.await == Ok(true);
                if kicked {
                    info!(%room, participant = %participant_id, "kicked by an admin");
                    ControlFlow::Continue(())
                } else {
                    self.send_error(
                        ErrorCode::UnknownParticipant,
                        format!("participant {participant_id} is not in room {room:?}"),
                    )
                    .await
                }
            }
            ClientMessage::Mute {
                participant_id,
                track_id,
                muted,
            } => {
                let own = self
                    .joined
                    .as_ref()
                    .is_some_and(|j| j.participant == participant_id && !j.removed);
                let (room, worker, by) = if own {
                    let joined = self.joined.as_ref().expect("checked above");
                    (joined.room.clone(), joined.worker.clone(), MutedBy::Owner)
                } else {
                    let Some((room, worker)) = self.admin_or_error("mute").await? else {
                        return ControlFlow::Continue(());
                    };
                    (room, worker, MutedBy::Admin)
                };
                let result = request(&worker, |reply| Command::SetMuted {
                    room,
                    participant: participant_id,
                    track: track_id,
                    muted,
                    by,
                    reply,
                })
                .await;
                match result {
                    Ok(_) => ControlFlow::Continue(()),
                    Err(error) => self.send_sfu_error(error).await,
                }
            }
            ClientMessage::TrackSettings {
                track_id,
                visible,
                width,
            } => {
                let Some(joined) = self.joined_or_error("track_settings").await? else {
                    return ControlFlow::Continue(());
                };
                let participant = joined.participant;
                let worker = joined.worker.clone();
                let result = request(&worker, |reply| Command::TrackSettings {
                    participant,
                    track: track_id,
                    visible,
                    rendered_width: width,
                    reply,
                })
                .await;
                match result {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(SfuError::UnknownTrack(track)) => {
                        self.send_error(
                            ErrorCode::UnknownParticipant,
                            &format!("track_settings: you do not receive track {track}"),
                        )
                        .await
                    }
                    Err(error) => self.send_sfu_error(error).await,
                }
            }
            ClientMessage::SetStage { participant_id } => {
                let Some((room, worker)) = self.admin_or_error("set_stage").await? else {
                    return ControlFlow::Continue(());
                };
                let result = request(&worker, |reply| Command::SetStage {
                    room,
                    participant: participant_id,
                    reply,
                })
                .await;
                match result {
                    Ok(_) => ControlFlow::Continue(()),
                    Err(SfuError::UnknownParticipant(id)) => {
                        self.send_error(
                            ErrorCode::UnknownParticipant,
                            &format!("no participant {id} in this room to put on stage"),
                        )
                        .await
                    }
                    Err(error) => self.send_sfu_error(error).await,
                }
            }
            ClientMessage::Offer {
                sdp,
                sources,
                receive,
            } => {
                let Some(joined) = self.joined_or_error("offer").await? else {
                    return ControlFlow::Continue(());
                };
                if !joined.may_publish && offers_to_send(&sdp) {
                    return self
                        .send_error(
                            ErrorCode::Forbidden,
                            "your access token does not grant \"publish\": offer receive-only \
                             m-lines (or ask for a token with the publish grant)",
                        )
                        .await;
                }
                let participant = joined.participant;
                let worker = joined.worker.clone();
                let sources: Vec<(String, TrackSource)> = sources.into_iter().collect();
                let receive: Vec<(String, TrackId)> = receive.into_iter().collect();
                match request(&worker, |reply| Command::Offer {
                    participant,
                    sdp,
                    sources,
                    receive,
                    reply,
                })
                .await
                {
                    Ok(answer) => {
                        self.send(ServerMessage::Answer {
                            sdp: answer.sdp,
                            tracks: answer.tracks.into_iter().map(OfferedTrack::from).collect(),
                        })
                        .await
                    }
                    Err(error) => self.send_sfu_error(error).await,
                }
            }
            ClientMessage::Answer { sdp } => {
                let Some(joined) = self.joined_or_error("answer").await? else {
                    return ControlFlow::Continue(());
                };
                let participant = joined.participant;
                let worker = joined.worker.clone();
                match request(&worker, |reply| Command::Answer {
                    participant,
                    sdp,
                    reply,
                })
                .await
                {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(error) => self.send_sfu_error(error).await,
                }
            }
            ClientMessage::Candidate {
                candidate,
                sdp_mid: _,
            } => {
                let Some(joined) = self.joined_or_error("candidate").await? else {
                    return ControlFlow::Continue(());
                };
                let participant = joined.participant;
                let worker = joined.worker.clone();
                match request(&worker, |reply| Command::Candidate {
                    participant,
                    candidate,
                    reply,
                })
                .await
                {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(error) => self.send_sfu_error(error).await,
                }
            }
            ClientMessage::Leave {} => {
                if self.joined_or_error("leave").await?.is_none() {
                    return ControlFlow::Continue(());
                }
                self.leave(LeaveReason::Left).await;
                let _ = self
                    .send(ServerMessage::Left {
                        reason: LeaveReason::Left,
                    })
                    .await;
                let _ = self.outgoing.try_send(Outgoing::Close(1000, "left"));
                ControlFlow::Break(LeaveReason::Left)
            }
        }
    }

    /// The room and worker of a joined admin (dev mode, or a token with the admin grant), or an
    /// error to the client.
    async fn admin_or_error(
        &self,
        what: &str,
    ) -> ControlFlow<LeaveReason, Option<(String, WorkerHandle)>> {
        let Some(joined) = self.joined_or_error(what).await? else {
            return ControlFlow::Continue(None);
        };
        if !joined.is_admin {
            self.send_error(
                ErrorCode::Forbidden,
                format!("{what:?} needs a token with the \"admin\" grant"),
            )
            .await?;
            return ControlFlow::Continue(None);
        }
        ControlFlow::Continue(Some((joined.room.clone(), joined.worker.clone())))
    }

    /// The joined state, or an error to the client naming the message that needs it.
    async fn joined_or_error(&self, what: &str) -> ControlFlow<LeaveReason, Option<&Joined>> {
        match &self.joined {
            Some(joined) if !joined.removed => ControlFlow::Continue(Some(joined)),
            _ => {
                self.send_error(
                    ErrorCode::NotJoined,
                    format!("{what:?} needs a successful \"join\" first"),
                )
                .await?;
                ControlFlow::Continue(None)
            }
        }
    }

    /// Check a `join` or `chat_join`: once per socket, names, then the token (outside dev
    /// mode), which decides the room, the display name and the grants. On refusal the client
    /// has its error.
    async fn access(
        &self,
        room: &str,
        name: String,
        token: Option<String>,
    ) -> ControlFlow<LeaveReason, Option<Access>> {
        if self.joined.is_some() || self.chat.is_some() {
            self.send_error(
                ErrorCode::AlreadyJoined,
                "this socket already joined a room; open another socket to join again",
            )
            .await?;
            return ControlFlow::Continue(None);
        }
        let name = name.trim().to_string();
        if let Err(why) = validate_room_name(room) {
            self.send_error(ErrorCode::InvalidName, why).await?;
            return ControlFlow::Continue(None);
        }
        if name.is_empty()
            || name.chars().count() > MAX_NAME_CHARS
            || name.chars().any(char::is_control)
        {
            self.send_error(
                ErrorCode::InvalidName,
                format!("display name must be 1 to {MAX_NAME_CHARS} printable characters"),
            )
            .await?;
            return ControlFlow::Continue(None);
        }
        let access = match &self.state.credentials {
            None => Access {
                name,
                may_publish: true,
                may_chat: true,
                is_admin: true,
                subscription: Subscription::AllTracks,
                identity: None,
            },
            // `--anonymous-viewers`: no token, watch and read only.
            Some(_) if token.is_none() && self.state.anonymous_viewers => {
                info!(%room, "anonymous viewer joins");
                Access {
                    name,
                    may_publish: false,
                    may_chat: false,
                    is_admin: false,
                    subscription: Subscription::AllTracks,
                    identity: None,
                }
            }
            Some(credentials) => {
                let Some(token) = token else {
                    self.send_error(
                        ErrorCode::Unauthorized,
                        "this server needs an access token in \"join\" (\"token\": …); \
                         it does not allow anonymous viewers",
                    )
                    .await?;
                    return ControlFlow::Continue(None);
                };
                let now_unix = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let claims = roomcast_auth::verify(credentials, &token, now_unix).and_then(|c| {
                    roomcast_auth::require_room(&c, room)?;
                    Ok(c)
                });
                let claims = match claims {
                    Ok(claims) => claims,
                    Err(refused) => {
                        warn!(%room, code = refused.code(), "join refused: {refused}");
                        self.send_error(
                            ErrorCode::Unauthorized,
                            format!("{}: {refused}", refused.code()),
                        )
                        .await?;
                        return ControlFlow::Continue(None);
                    }
                };
                let grants = &claims.grants;
                Access {
                    name: claims.name.clone().unwrap_or(name),
                    may_publish: grants.allows(roomcast_auth::Grant::Publish),
                    may_chat: grants.allows(roomcast_auth::Grant::Chat),
                    is_admin: grants.allows(roomcast_auth::Grant::Admin),
                    subscription: if grants.allows(roomcast_auth::Grant::Subscribe) {
                        Subscription::AllTracks
                    } else {
                        Subscription::Nothing
                    },
                    identity: Some(claims.sub.clone()),
                }
            }
        };
        ControlFlow::Continue(Some(access))
    }

    async fn join(
        &mut self,
        room: String,
        name: String,
        token: Option<String>,
    ) -> ControlFlow<LeaveReason> {
        let Some(access) = self.access(&room, name, token).await? else {
            return ControlFlow::Continue(());
        };
        let Access {
            name,
            may_publish,
            may_chat,
            is_admin,
            subscription,
            identity,
        } = access;
        let participant = ParticipantId::next();
        let worker = self.state.sfu.worker_for_room(&room).clone();
        let (events, events_rx) = mpsc::channel(EVENT_QUEUE);
        let result = request(&worker, |reply| Command::Join {
            room: room.clone(),
            participant,
            name: name.clone(),
            subscription,
            events,
            reply,
        })
        .await;
        let participants = match result {
            Ok(participants) => participants,
            Err(error) => return self.send_sfu_error(error).await,
        };
        info!(%room, %participant, %name, "participant joined");
        self.joined = Some(Joined {
            participant,
            worker,
            events: events_rx,
            removed: false,
            may_publish,
            is_admin,
            room: room.clone(),
        });
        self.send(ServerMessage::Joined {
            participant_id: participant,
            room: room.clone(),
            dev_mode: self.state.dev_mode,
            participants: participants.into_iter().map(participant_info).collect(),
            ice_servers: self.state.ice_servers(identity.as_deref(), participant),
            grants: Grants {
                publish: may_publish,
                chat: may_chat,
                admin: is_admin,
            },
        })
        .await?;
        let author = Author {
            key: identity.unwrap_or_else(|| format!("participant:{participant}")),
            participant_id: Some(participant.0),
            name,
            permissions: Permissions {
                post: may_chat,
                admin: is_admin,
            },
        };
        self.take_chat_seat(room, author).await
    }

    /// `chat_join`: a seat in the room's chat without media (the watch page).
    async fn chat_join(
        &mut self,
        room: String,
        name: String,
        token: Option<String>,
    ) -> ControlFlow<LeaveReason> {
        let Some(access) = self.access(&room, name, token).await? else {
            return ControlFlow::Continue(());
        };
        info!(%room, name = %access.name, "chat-only member joins");
        let author = Author {
            // Without a token there is no identity: the socket is the sender.
            key: access.identity.unwrap_or_else(|| {
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
                format!(
                    "chat-socket:{}",
                    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                )
            }),
            participant_id: None,
            name: access.name,
            permissions: Permissions {
                post: access.may_chat,
                admin: access.is_admin,
            },
        };
        self.take_chat_seat(room, author).await
    }

    /// Subscribe to the room's chat, then send its history (in that order: nothing posted in
    /// between is lost).
    async fn take_chat_seat(&mut self, room: String, author: Author) -> ControlFlow<LeaveReason> {
        let events = self.state.chat.subscribe(&room);
        let seat = ChatSeat {
            room,
            author,
            events,
        };
        let permissions = seat.permissions();
        let room = seat.room.clone();
        self.chat = Some(seat);
        self.send_chat_history(room, permissions).await
    }

    async fn send_chat_history(
        &self,
        room: String,
        permissions: ChatPermissions,
    ) -> ControlFlow<LeaveReason> {
        match self.state.chat.history(&room).await {
            Ok(messages) => {
                self.send(ServerMessage::ChatHistory {
                    room,
                    messages,
                    permissions,
                })
                .await
            }
            Err(error) => {
                warn!(%room, %error, "chat history unavailable");
                self.send_error(
                    ErrorCode::Internal,
                    format!("chat history unavailable: {error}"),
                )
                .await
            }
        }
    }

    /// This socket's chat seat, or an error naming the message that needs one.
    async fn chat_seat_or_error(&self, what: &str) -> ControlFlow<LeaveReason, Option<&ChatSeat>> {
        match &self.chat {
            Some(seat) => ControlFlow::Continue(Some(seat)),
            None => {
                self.send_error(
                    ErrorCode::NotJoined,
                    format!("{what:?} needs a successful \"join\" or \"chat_join\" first"),
                )
                .await?;
                ControlFlow::Continue(None)
            }
        }
    }

    async fn chat_result(&self, result: Result<(), ChatError>) -> ControlFlow<LeaveReason> {
        let Err(error) = result else {
            return ControlFlow::Continue(());
        };
        let code = match &error {
            ChatError::Forbidden(_) => ErrorCode::Forbidden,
            ChatError::BadMessage(_) => ErrorCode::BadMessage,
            ChatError::RateLimited { .. } => {
                self.state.limit_state.rejected(Limit::ChatRate);
                ErrorCode::RateLimited
            }
            ChatError::UnknownQuestion(_) => ErrorCode::UnknownQuestion,
            ChatError::Storage(_) => {
                warn!(%error, "chat storage failed");
                ErrorCode::Internal
            }
        };
        self.send_error(code, error.to_string()).await
    }

    async fn handle_chat_event(
        &mut self,
        event: Result<ServerMessage, broadcast::error::RecvError>,
    ) -> ControlFlow<LeaveReason> {
        match event {
            Ok(message) => self.send(message).await,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                let Some(seat) = &self.chat else {
                    return ControlFlow::Continue(());
                };
                debug!(missed, "chat member fell behind; resending the history");
                self.send_chat_history(seat.room.clone(), seat.permissions())
                    .await
            }
            Err(broadcast::error::RecvError::Closed) => {
                // The hub never drops a room with members; nothing more will come.
                if let Some(seat) = self.chat.take() {
                    self.state.chat.unsubscribe(&seat.room, seat.events);
                }
                ControlFlow::Continue(())
            }
        }
    }

    async fn send_sfu_error(&self, error: SfuError) -> ControlFlow<LeaveReason> {
        let code = match error {
            SfuError::UnknownParticipant(_) => ErrorCode::NotJoined,
            SfuError::AlreadyJoined(_) => ErrorCode::AlreadyJoined,
            SfuError::RoomFull { .. } => {
                self.state.limit_state.rejected(Limit::ParticipantsPerRoom);
                ErrorCode::RoomFull
            }
            SfuError::BadSdp(_) => ErrorCode::BadSdp,
            SfuError::NoPendingOffer => ErrorCode::NoPendingOffer,
            SfuError::OfferCollision => ErrorCode::OfferCollision,
            SfuError::BadCandidate(_) => ErrorCode::BadCandidate,
            SfuError::TooManyRooms { .. } => {
                self.state.limit_state.rejected(Limit::RoomsPerNode);
                ErrorCode::TooManyRooms
            }
            SfuError::UnknownTrack(_) => ErrorCode::UnknownParticipant,
            SfuError::MutedByAdmin(_) => ErrorCode::Forbidden,
            SfuError::WorkerGone | SfuError::NotIngest(_) => ErrorCode::Internal,
        };
        self.send_error(code, error.to_string()).await
    }

    async fn handle_event(&mut self, event: Option<SessionEvent>) -> ControlFlow<LeaveReason> {
        let Some(event) = event else {
            // The worker dropped our stream: it stopped.
            if let Some(joined) = self.joined.as_mut() {
                joined.removed = true;
            }
            let _ = self
                .send(ServerMessage::Left {
                    reason: LeaveReason::ServerShutdown,
                })
                .await;
            let _ = self
                .outgoing
                .try_send(Outgoing::Close(1001, "server shutting down"));
            return ControlFlow::Break(LeaveReason::ServerShutdown);
        };
        let message = match event {
            SessionEvent::ParticipantJoined(participant) => ServerMessage::ParticipantJoined {
                participant: participant_info(participant),
            },
            SessionEvent::ParticipantLeft {
                participant,
                reason,
            } => ServerMessage::ParticipantLeft {
                participant_id: participant,
                reason,
            },
            SessionEvent::TrackPublished { participant, track } => ServerMessage::TrackPublished {
                participant_id: participant,
                track: track_info(track),
            },
            SessionEvent::TrackUnpublished { participant, track } => {
                ServerMessage::TrackUnpublished {
                    participant_id: participant,
                    track_id: track,
                }
            }
            SessionEvent::TrackMuted {
                participant,
                track,
                muted,
                by,
            } => ServerMessage::TrackMuted {
                participant_id: participant,
                track_id: track,
                muted,
                by,
            },
            SessionEvent::ActiveSpeaker { participant } => ServerMessage::ActiveSpeaker {
                participant_id: participant,
            },
            SessionEvent::StageChanged { participant } => ServerMessage::StageChanged {
                participant_id: participant,
            },
            SessionEvent::SetLayers { track, layers } => ServerMessage::SetLayers {
                track_id: track,
                layers: layers
                    .into_iter()
                    .map(|(rid, active)| LayerState { rid, active })
                    .collect(),
            },
            SessionEvent::Offer { sdp, tracks } => ServerMessage::Offer {
                sdp,
                tracks: tracks.into_iter().map(OfferedTrack::from).collect(),
            },
            SessionEvent::Removed { reason } => {
                if let Some(joined) = self.joined.as_mut() {
                    joined.removed = true;
                }
                let _ = self.send(ServerMessage::Left { reason }).await;
                let _ = self
                    .outgoing
                    .try_send(Outgoing::Close(1000, "removed from the room"));
                return ControlFlow::Break(reason);
            }
        };
        self.send(message).await
    }

    /// Take the participant out of its room (idempotent).
    async fn leave(&mut self, reason: LeaveReason) {
        if let Some(joined) = self.joined.as_mut()
            && !joined.removed
        {
            joined.removed = true;
            let _ = joined
                .worker
                .send(Command::Leave {
                    participant: joined.participant,
                    reason,
                })
                .await;
        }
    }
}

/// Send a command that carries a reply channel and wait for the reply.
pub(crate) async fn request<T>(
    worker: &WorkerHandle,
    command: impl FnOnce(oneshot::Sender<Result<T, SfuError>>) -> Command,
) -> Result<T, SfuError> {
    let (reply, response) = oneshot::channel();
    worker.send(command(reply)).await?;
    response.await.map_err(|_| SfuError::WorkerGone)?
}

fn participant_info(summary: roomcast_sfu::ParticipantSummary) -> ParticipantInfo {
    ParticipantInfo {
        id: summary.id,
        name: summary.name,
        tracks: summary.tracks.into_iter().map(track_info).collect(),
    }
}

fn track_info(track: roomcast_sfu::TrackSummary) -> TrackInfo {
    TrackInfo {
        id: track.id,
        kind: track.kind,
        source: track.source,
        muted: track.muted,
    }
}

/// Room names appear in URLs and logs: 1–64 of `A–Z a–z 0–9 - _ .`.
pub fn validate_room_name(room: &str) -> Result<(), String> {
    let valid_chars = room
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if room.is_empty() || room.len() > MAX_NAME_CHARS || !valid_chars {
        return Err(format!(
            "room name must be 1 to {MAX_NAME_CHARS} characters of A-Z, a-z, 0-9, '-', '_' or '.' (got {room:?})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        assert!(validate_room_name("demo-1_a.b").is_ok());
        assert!(validate_room_name("").is_err());
        assert!(validate_room_name("has space").is_err());
        assert!(validate_room_name("ünï").is_err());
        assert!(validate_room_name(&"a".repeat(65)).is_err());
    }
}
