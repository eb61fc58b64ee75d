//! Room chat on the signaling socket: the fan-out around [`roomcast_chat::ChatService`].
//!
//! The service (rules, word filter, rate limit, SQLite) is sans-IO and synchronous; the hub
//! runs it on one thread of its own (jobs in, replies out), so a slow disk never stalls a
//! runtime thread and the thread count stays flat, and fans each accepted message out to the
//! room's members over a `tokio::sync::broadcast` channel.
//!
//! Invariants:
//! - A message reaches a member only after the service accepted it (validated, permitted,
//!   rate-limited, filtered, and stored if it is a question or notice).
//! - A member that falls behind the fan-out ([`ROOM_QUEUE`] messages) is sent the whole
//!   history again rather than a chat with holes.
//! - A room's channel and its in-memory general chat are dropped when its last member goes.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Instant, SystemTime};

use dashmap::DashMap;
use roomcast_chat::{Author, ChatError, ChatMessage, ChatService, Kind};
use tokio::sync::{broadcast, oneshot};
use tracing::{info, warn};

use crate::protocol::ServerMessage;

/// Chat events buffered per member before it counts as lagging.
pub const ROOM_QUEUE: usize = 256;

/// Work for the chat thread.
type Job = Box<dyn FnOnce(&mut ChatService) + Send>;

pub struct ChatHub {
    /// The chat thread's queue; the thread ends when the hub is dropped.
    jobs: std_mpsc::Sender<Job>,
    rooms: DashMap<String, broadcast::Sender<ServerMessage>>,
    /// Accepted messages by kind: general, question, notice.
    posted: [AtomicU64; 3],
}

impl ChatHub {
    pub fn new(mut service: ChatService) -> Self {
        let (jobs, queue) = std_mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("chat".into())
            .spawn(move || {
                for job in queue {
                    // A bug in one job must not end the chat for everyone: the job's caller
                    // gets an error (its reply is dropped), the next job runs.
                    let run = std::panic::AssertUnwindSafe(|| job(&mut service));
                    if std::panic::catch_unwind(run).is_err() {
                        tracing::error!("a chat job panicked; the chat goes on");
                    }
                }
            })
            .expect("the chat thread starts");
        ChatHub {
            jobs,
            rooms: DashMap::new(),
            posted: Default::default(),
        }
    }

    /// Start receiving `room`'s chat events. Subscribe before reading the history, so nothing
    /// posted in between is missed (it may arrive twice; clients key messages by id).
    pub fn subscribe(&self, room: &str) -> broadcast::Receiver<ServerMessage> {
        self.rooms
            .entry(room.to_owned())
            .or_insert_with(|| broadcast::channel(ROOM_QUEUE).0)
            .subscribe()
    }

    /// A member stopped receiving `room`'s events: forget the room once nobody is left.
    pub fn unsubscribe(&self, room: &str, receiver: broadcast::Receiver<ServerMessage>) {
        drop(receiver);
        let removed = self
            .rooms
            .remove_if(room, |_, sender| sender.receiver_count() == 0);
        if removed.is_some() {
            let room = room.to_owned();
            let _ = self
                .jobs
                .send(Box::new(move |service| service.forget_room(&room)));
        }
    }

    /// The room's history as sent in `chat_history`.
    pub async fn history(&self, room: &str) -> Result<Vec<serde_json::Value>, ChatError> {
        let room = room.to_owned();
        self.blocking(move |service| service.history(&room, unix_ms(SystemTime::now())))
            .await
            .map(|messages| messages.iter().map(ChatMessage::to_json).collect())
    }

    /// Post a message: on success every member (the author included) receives it.
    pub async fn post(
        &self,
        room: &str,
        author: Author,
        kind: Kind,
        text: String,
        broadcast: Option<String>,
    ) -> Result<(), ChatError> {
        let room_name = room.to_owned();
        let message = self
            .blocking(move |service| {
                let now_ms = unix_ms(SystemTime::now());
                service.post(
                    &room_name,
                    &author,
                    kind,
                    &text,
                    broadcast.as_deref(),
                    Instant::now(),
                    now_ms,
                )
            })
            .await?;
        let index = match message.kind {
            Kind::General => 0,
            Kind::Question => 1,
            Kind::Notice => 2,
        };
        self.posted[index].fetch_add(1, Ordering::Relaxed);
        if message.kind != Kind::General {
            info!(%room, id = message.id, kind = message.kind.as_str(), sender = %message.sender.name, "chat message stored");
        }
        self.publish(
            room,
            ServerMessage::ChatMessage {
                message: message.to_json(),
            },
        );
        Ok(())
    }

    /// Mark a question answered (or open again): every member receives the update.
    pub async fn answer(
        &self,
        room: &str,
        author: Author,
        id: u64,
        answered: bool,
    ) -> Result<(), ChatError> {
        let room_name = room.to_owned();
        let message = self
            .blocking(move |service| {
                service.answer(
                    &room_name,
                    &author,
                    id,
                    answered,
                    unix_ms(SystemTime::now()),
                )
            })
            .await?;
        self.publish(
            room,
            ServerMessage::QuestionUpdated {
                message: message.to_json(),
            },
        );
        Ok(())
    }

    /// The room's questions (of one broadcast, or all), for export.
    pub async fn questions(
        &self,
        room: &str,
        broadcast: Option<String>,
    ) -> Result<Vec<ChatMessage>, ChatError> {
        let room = room.to_owned();
        self.blocking(move |service| service.questions(&room, broadcast.as_deref()))
            .await
    }

    /// Prometheus text: messages accepted by kind, and sockets in rooms' chats.
    pub fn render_metrics(&self) -> String {
        let mut text = String::from(
            "# HELP roomcast_chat_messages_total Chat messages accepted (after permissions, \
             validation and the rate limit).\n# TYPE roomcast_chat_messages_total counter\n",
        );
        for (kind, count) in ["general", "question", "notice"].iter().zip(&self.posted) {
            let _ = writeln!(
                text,
                "roomcast_chat_messages_total{{kind=\"{kind}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        let members: usize = self.rooms.iter().map(|r| r.receiver_count()).sum();
        let _ = writeln!(
            text,
            "# HELP roomcast_chat_members Sockets receiving a room's chat.\n\
             # TYPE roomcast_chat_members gauge\nroomcast_chat_members {members}"
        );
        text
    }

    fn publish(&self, room: &str, message: ServerMessage) {
        if let Some(sender) = self.rooms.get(room) {
            // No receivers is fine: the author left in the meantime.
            let _ = sender.send(message);
        }
    }

    /// Runs `f` on the chat thread and waits for its result.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut ChatService) -> Result<T, ChatError> + Send + 'static,
    ) -> Result<T, ChatError> {
        let (reply, result) = oneshot::channel();
        let job: Job = Box::new(move |service| {
            let _ = reply.send(f(service));
        });
        if self.jobs.send(job).is_err() {
            warn!("the chat thread has stopped");
        }
        result.await.unwrap_or_else(|_| {
            Err(ChatError::Storage(
                "the chat service failed; see the server log".into(),
            ))
        })
    }
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
