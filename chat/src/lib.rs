//! Room chat: who may post what, the word filter, the per-sender rate limit, history for late
//! joiners, questions marked answered, persistence and export.
//!
//! Sans-IO apart from the SQLite file: time is a parameter, nothing here owns a socket or a
//! task. The signaling edge (`roomcast-signaling`'s `chat` module) fans messages out.
//!
//! Invariants:
//! - No input from a client panics; every refusal is a [`ChatError`] with a sentence for the
//!   person who sent it.
//! - Text is validated and filtered before anyone sees it or it is stored.
//! - Message ids are unique and increasing while the server runs, and continue after the
//!   highest stored id after a restart, so clients can key and order messages by id (a general
//!   message's id may come again after a restart: general chat does not survive one).
//! - Questions and notices are stored; general chat lives only in memory, per room, up to
//!   [`ChatConfig::history_len`] messages.
#![forbid(unsafe_code)]

pub mod export;
pub mod filter;
pub mod message;
pub mod rate;
pub mod store;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

pub use filter::WordFilter;
pub use message::{ChatMessage, Kind, MAX_TEXT_CHARS, Sender};
pub use rate::{RateLimiter, RatePolicy};
pub use store::{ChatStore, StoreError};

/// Stored messages a joiner receives are at most this old ...
pub const STORED_HISTORY_AGE: Duration = Duration::from_secs(24 * 3600);
/// ... and at most this many.
pub const STORED_HISTORY_LEN: usize = 200;

/// What a sender may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permissions {
    /// General messages and questions: the chat grant, or dev mode.
    pub post: bool,
    /// Notices and answering questions: the admin grant (hosts), or dev mode.
    pub admin: bool,
}

/// Who is posting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author {
    /// Rate-limit identity: the token's subject, or a per-connection key without one.
    pub key: String,
    pub participant_id: Option<u64>,
    pub name: String,
    pub permissions: Permissions,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatError {
    Forbidden(String),
    BadMessage(String),
    RateLimited { retry_after: Duration },
    UnknownQuestion(u64),
    Storage(String),
}

impl ChatError {
    /// The protocol error code.
    pub fn code(&self) -> &'static str {
        match self {
            ChatError::Forbidden(_) => "forbidden",
            ChatError::BadMessage(_) => "bad_message",
            ChatError::RateLimited { .. } => "rate_limited",
            ChatError::UnknownQuestion(_) => "unknown_question",
            ChatError::Storage(_) => "internal",
        }
    }
}

impl std::fmt::Display for ChatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChatError::Forbidden(why) | ChatError::BadMessage(why) => f.write_str(why),
            ChatError::RateLimited { retry_after } => write!(
                f,
                "you are sending messages too fast: wait {} s and send it again",
                retry_after.as_secs_f64().ceil().max(1.0)
            ),
            ChatError::UnknownQuestion(id) => write!(f, "there is no question {id} in this room"),
            ChatError::Storage(why) => write!(f, "the chat could not be saved ({why})"),
        }
    }
}

impl std::error::Error for ChatError {}

impl From<StoreError> for ChatError {
    fn from(error: StoreError) -> Self {
        ChatError::Storage(error.0)
    }
}

#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// General messages kept per room for late joiners.
    pub history_len: usize,
    pub rate: RatePolicy,
    pub filter: WordFilter,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            history_len: 50,
            rate: RatePolicy::default(),
            filter: WordFilter::default(),
        }
    }
}

pub struct ChatService {
    config: ChatConfig,
    store: ChatStore,
    rate: RateLimiter<String>,
    general: HashMap<String, VecDeque<ChatMessage>>,
    next_id: u64,
}

impl ChatService {
    pub fn new(config: ChatConfig, store: ChatStore) -> Self {
        // A database that cannot even answer MAX(id) fails at its first insert, loudly.
        let next_id = store.max_id().unwrap_or(0) + 1;
        ChatService {
            rate: RateLimiter::new(config.rate),
            config,
            store,
            general: HashMap::new(),
            next_id,
        }
    }

    /// Posts `text` to `room`: checks the author's permissions, the text and the author's
    /// rate, masks filtered words, stores questions and notices. Returns the message to fan
    /// out.
    #[allow(clippy::too_many_arguments)]
    pub fn post(
        &mut self,
        room: &str,
        author: &Author,
        kind: Kind,
        text: &str,
        broadcast: Option<&str>,
        now: Instant,
        now_unix_ms: u64,
    ) -> Result<ChatMessage, ChatError> {
        if !author.permissions.post {
            return Err(ChatError::Forbidden(
                "posting needs the \"chat\" grant: your access lets you read the chat only".into(),
            ));
        }
        if kind == Kind::Notice && !author.permissions.admin {
            return Err(ChatError::Forbidden(
                "only hosts (the \"admin\" grant) can post notices".into(),
            ));
        }
        let text = message::validate_text(text)?;
        self.rate
            .check(&author.key, now)
            .map_err(|retry_after| ChatError::RateLimited { retry_after })?;
        let message = ChatMessage {
            id: self.next_id,
            room: room.to_owned(),
            kind,
            text: self.config.filter.mask(&text).into_owned(),
            sender: Sender {
                participant_id: author.participant_id,
                name: author.name.clone(),
            },
            sent_at_ms: now_unix_ms,
            answered: (kind == Kind::Question).then_some(false),
            answered_by: None,
            broadcast: broadcast.map(str::to_owned),
        };
        if kind.is_stored() {
            self.store.insert(&message)?;
        } else if self.config.history_len > 0 {
            let ring = self.general.entry(room.to_owned()).or_default();
            if ring.len() == self.config.history_len {
                ring.pop_front();
            }
            ring.push_back(message.clone());
        }
        self.next_id += 1;
        Ok(message)
    }

    /// Marks a question answered (or open again). Hosts only.
    pub fn answer(
        &mut self,
        room: &str,
        author: &Author,
        id: u64,
        answered: bool,
        now_unix_ms: u64,
    ) -> Result<ChatMessage, ChatError> {
        if !author.permissions.admin {
            return Err(ChatError::Forbidden(
                "only hosts (the \"admin\" grant) can mark questions answered".into(),
            ));
        }
        self.store
            .set_answered(room, id, answered, Some(&author.name), now_unix_ms)?
            .ok_or(ChatError::UnknownQuestion(id))
    }

    /// What a joiner receives: the room's stored questions and notices of the last
    /// [`STORED_HISTORY_AGE`] (at most [`STORED_HISTORY_LEN`]) and its recent general messages,
    /// oldest first. `now_unix_ms` bounds the age.
    pub fn history(&self, room: &str, now_unix_ms: u64) -> Result<Vec<ChatMessage>, ChatError> {
        let since = now_unix_ms.saturating_sub(STORED_HISTORY_AGE.as_millis() as u64);
        let mut messages = self.store.recent(room, since, STORED_HISTORY_LEN)?;
        messages.extend(self.general.get(room).into_iter().flatten().cloned());
        messages.sort_by_key(|m| m.id);
        Ok(messages)
    }

    /// The room's questions (of one broadcast, or all), for export.
    pub fn questions(
        &self,
        room: &str,
        broadcast: Option<&str>,
    ) -> Result<Vec<ChatMessage>, ChatError> {
        Ok(self.store.questions(room, broadcast)?)
    }

    /// The room closed: its general chat goes.
    pub fn forget_room(&mut self, room: &str) {
        self.general.remove(room);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0_MS: u64 = 1_795_359_600_000;

    fn author(key: &str, post: bool, admin: bool) -> Author {
        Author {
            key: key.into(),
            participant_id: Some(1),
            name: key.into(),
            permissions: Permissions { post, admin },
        }
    }

    fn service(store: ChatStore) -> ChatService {
        ChatService::new(
            ChatConfig {
                history_len: 2,
                rate: RatePolicy {
                    burst: 3,
                    per: Duration::from_secs(3),
                },
                filter: WordFilter::from_words(["darn"]),
            },
            store,
        )
    }

    #[test]
    fn who_may_post_what() {
        let mut chat = service(ChatStore::open_in_memory().unwrap());
        let now = Instant::now();
        let reader = author("reader", false, false);
        let attendee = author("ada", true, false);
        let host = author("host", true, true);
        for kind in [Kind::General, Kind::Question, Kind::Notice] {
            let refused = chat.post("r", &reader, kind, "hi", None, now, T0_MS);
            assert!(matches!(refused, Err(ChatError::Forbidden(_))), "{kind:?}");
        }
        assert!(
            chat.post("r", &attendee, Kind::General, "hi", None, now, T0_MS)
                .is_ok()
        );
        let question = chat
            .post("r", &attendee, Kind::Question, "why?", None, now, T0_MS)
            .unwrap();
        assert_eq!(question.answered, Some(false));
        assert!(matches!(
            chat.post("r", &attendee, Kind::Notice, "hey", None, now, T0_MS),
            Err(ChatError::Forbidden(_))
        ));
        assert!(
            chat.post("r", &host, Kind::Notice, "break", None, now, T0_MS)
                .is_ok()
        );
        assert!(matches!(
            chat.answer("r", &attendee, question.id, true, T0_MS),
            Err(ChatError::Forbidden(_))
        ));
        let answered = chat.answer("r", &host, question.id, true, T0_MS).unwrap();
        assert_eq!(
            (answered.answered, answered.answered_by.as_deref()),
            (Some(true), Some("host"))
        );
        assert_eq!(
            chat.answer("other", &host, question.id, true, T0_MS),
            Err(ChatError::UnknownQuestion(question.id))
        );
    }

    #[test]
    fn text_is_validated_filtered_and_rate_limited_per_author() {
        let mut chat = service(ChatStore::open_in_memory().unwrap());
        let now = Instant::now();
        let ada = author("ada", true, false);
        assert!(matches!(
            chat.post("r", &ada, Kind::General, "  ", None, now, T0_MS),
            Err(ChatError::BadMessage(_))
        ));
        let message = chat
            .post("r", &ada, Kind::General, "Darn it", None, now, T0_MS)
            .unwrap();
        assert_eq!(message.text, "**** it");
        chat.post("r", &ada, Kind::General, "two", None, now, T0_MS)
            .unwrap();
        chat.post("r", &ada, Kind::General, "three", None, now, T0_MS)
            .unwrap();
        let refused = chat.post("r", &ada, Kind::General, "four", None, now, T0_MS);
        assert!(matches!(refused, Err(ChatError::RateLimited { .. })));
        assert!(refused.unwrap_err().to_string().contains("wait 1 s"));
        let bob = author("bob", true, false);
        assert!(
            chat.post("r", &bob, Kind::General, "hi", None, now, T0_MS)
                .is_ok()
        );
    }

    #[test]
    fn history_merges_stored_and_recent_general_messages_in_order() {
        let mut chat = service(ChatStore::open_in_memory().unwrap());
        let now = Instant::now();
        let host = author("host", true, true);
        let ada = author("ada", true, false);
        chat.post("r", &ada, Kind::General, "g1", None, now, T0_MS)
            .unwrap();
        chat.post("r", &host, Kind::Notice, "n1", None, now, T0_MS)
            .unwrap();
        chat.post("r", &ada, Kind::General, "g2", None, now, T0_MS)
            .unwrap();
        chat.post("r", &ada, Kind::Question, "q1", None, now, T0_MS)
            .unwrap();
        chat.post("r", &host, Kind::General, "g3", None, now, T0_MS)
            .unwrap();
        chat.post("elsewhere", &host, Kind::General, "x", None, now, T0_MS)
            .unwrap();
        let texts: Vec<String> = chat
            .history("r", T0_MS)
            .unwrap()
            .into_iter()
            .map(|m| m.text)
            .collect();
        assert_eq!(
            texts,
            ["n1", "g2", "q1", "g3"],
            "general history keeps the last 2"
        );
        let a_day_later = T0_MS + STORED_HISTORY_AGE.as_millis() as u64 + 1;
        assert_eq!(
            chat.history("r", a_day_later).unwrap().len(),
            2,
            "old stored ones age out"
        );
        chat.forget_room("r");
        assert_eq!(chat.history("r", T0_MS).unwrap().len(), 2);
    }

    #[test]
    fn questions_and_notices_survive_a_restart_and_ids_continue() {
        let dir =
            std::env::temp_dir().join(format!("roomcast-chat-service-{}", std::process::id()));
        let path = dir.join("chat.sqlite3");
        let _ = std::fs::remove_dir_all(&dir);
        let now = Instant::now();
        let host = author("host", true, true);
        let notice_id = {
            let mut chat = service(ChatStore::open(&path).unwrap());
            chat.post("r", &host, Kind::Question, "q", Some("b1"), now, T0_MS)
                .unwrap();
            let notice = chat
                .post("r", &host, Kind::Notice, "n", None, now, T0_MS)
                .unwrap();
            chat.post("r", &host, Kind::General, "g", None, now, T0_MS)
                .unwrap();
            notice.id
        };
        let mut chat = service(ChatStore::open(&path).unwrap());
        let kept: Vec<(Kind, String)> = chat
            .history("r", T0_MS)
            .unwrap()
            .into_iter()
            .map(|m| (m.kind, m.text))
            .collect();
        assert_eq!(
            kept,
            [(Kind::Question, "q".into()), (Kind::Notice, "n".into())]
        );
        let next = chat
            .post("r", &host, Kind::General, "after", None, now, T0_MS)
            .unwrap();
        assert_eq!(next.id, notice_id + 1, "ids continue after the stored ones");
        assert_eq!(chat.questions("r", Some("b1")).unwrap().len(), 1);
        assert_eq!(chat.questions("r", Some("b2")).unwrap().len(), 0);
        drop(chat);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
