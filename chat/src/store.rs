//! Questions and notices on SQLite, so they survive restarts and can be exported.
//!
//! Only questions and notices are written; general chat never touches the disk (privacy: what
//! is stored is what a host asked to be answered or announced). One file, WAL journal,
//! `synchronous=NORMAL` (a crash may lose the last moments, never corrupt the file). The
//! schema version is `PRAGMA user_version`; [`ChatStore::open`] migrates older files.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use crate::message::{ChatMessage, Kind, Sender};

/// The schema this code writes.
const SCHEMA_VERSION: i64 = 1;

#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        StoreError(format!("chat database: {error}"))
    }
}

pub struct ChatStore {
    connection: Connection,
}

impl ChatStore {
    /// Opens (or creates, with its directory) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
        }
        let connection = Connection::open(path)?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        ChatStore::migrated(connection)
    }

    /// A database that lives as long as the store (tests; servers without a chat database).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        ChatStore::migrated(Connection::open_in_memory()?)
    }

    fn migrated(connection: Connection) -> Result<Self, StoreError> {
        let version: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError(format!(
                "chat database has schema version {version}, newer than this server's \
                 {SCHEMA_VERSION}: it was written by a newer roomcast"
            )));
        }
        if version < 1 {
            connection.execute_batch(
                "CREATE TABLE messages (
                    id INTEGER PRIMARY KEY,
                    room TEXT NOT NULL,
                    broadcast TEXT,
                    kind TEXT NOT NULL CHECK (kind IN ('question', 'notice')),
                    sender_participant INTEGER,
                    sender_name TEXT NOT NULL,
                    text TEXT NOT NULL,
                    sent_at_ms INTEGER NOT NULL,
                    answered INTEGER,
                    answered_by TEXT,
                    answered_at_ms INTEGER
                );
                CREATE INDEX messages_by_room ON messages (room, id);
                PRAGMA user_version = 1;",
            )?;
        }
        Ok(ChatStore { connection })
    }

    /// Stores a question or notice (the caller chose its id).
    pub fn insert(&self, message: &ChatMessage) -> Result<(), StoreError> {
        debug_assert!(message.kind.is_stored());
        self.connection.execute(
            "INSERT INTO messages (id, room, broadcast, kind, sender_participant, sender_name,
                                   text, sent_at_ms, answered)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                message.id as i64,
                message.room,
                message.broadcast,
                message.kind.as_str(),
                message.sender.participant_id.map(|id| id as i64),
                message.sender.name,
                message.text,
                message.sent_at_ms as i64,
                message.answered,
            ],
        )?;
        Ok(())
    }

    /// The highest id stored (0 for an empty database).
    pub fn max_id(&self) -> Result<u64, StoreError> {
        let id: Option<i64> =
            self.connection
                .query_row("SELECT MAX(id) FROM messages", [], |row| row.get(0))?;
        Ok(id.unwrap_or(0).max(0) as u64)
    }

    /// Marks question `id` of `room` answered or open; `None` if there is no such question.
    pub fn set_answered(
        &self,
        room: &str,
        id: u64,
        answered: bool,
        by: Option<&str>,
        at_ms: u64,
    ) -> Result<Option<ChatMessage>, StoreError> {
        let changed = self.connection.execute(
            "UPDATE messages SET answered = ?1, answered_by = ?2, answered_at_ms = ?3
             WHERE room = ?4 AND id = ?5 AND kind = 'question'",
            params![
                answered,
                by.filter(|_| answered),
                answered.then_some(at_ms as i64),
                room,
                id as i64
            ],
        )?;
        if changed == 0 {
            return Ok(None);
        }
        Ok(self
            .connection
            .query_row(
                &format!("{SELECT} WHERE id = ?1"),
                params![id as i64],
                row_to_message,
            )
            .optional()?)
    }

    /// The room's stored messages sent at or after `since_ms`, at most `limit` (the latest),
    /// oldest first.
    pub fn recent(
        &self,
        room: &str,
        since_ms: u64,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        let mut statement = self.connection.prepare_cached(&format!(
            "SELECT * FROM ({SELECT} WHERE room = ?1 AND sent_at_ms >= ?2 ORDER BY id DESC LIMIT ?3)
             ORDER BY id"
        ))?;
        let rows =
            statement.query_map(params![room, since_ms as i64, limit as i64], row_to_message)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The room's questions (of one broadcast, or all), oldest first.
    pub fn questions(
        &self,
        room: &str,
        broadcast: Option<&str>,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        let mut statement = self.connection.prepare_cached(&format!(
            "{SELECT} WHERE room = ?1 AND kind = 'question' AND (?2 IS NULL OR broadcast = ?2)
             ORDER BY id"
        ))?;
        let rows = statement.query_map(params![room, broadcast], row_to_message)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes messages sent before `at_ms`; returns how many.
    pub fn delete_older_than(&self, at_ms: u64) -> Result<usize, StoreError> {
        Ok(self.connection.execute(
            "DELETE FROM messages WHERE sent_at_ms < ?1",
            params![at_ms as i64],
        )?)
    }
}

const SELECT: &str = "SELECT id, room, broadcast, kind, sender_participant, sender_name, text,
                             sent_at_ms, answered, answered_by FROM messages";

fn row_to_message(row: &rusqlite::Row<'_>) -> rusqlite::Result<ChatMessage> {
    let kind: String = row.get(3)?;
    Ok(ChatMessage {
        id: row.get::<_, i64>(0)? as u64,
        room: row.get(1)?,
        broadcast: row.get(2)?,
        kind: Kind::parse(&kind).unwrap_or(Kind::Notice),
        sender: Sender {
            participant_id: row.get::<_, Option<i64>>(4)?.map(|id| id as u64),
            name: row.get(5)?,
        },
        text: row.get(6)?,
        sent_at_ms: row.get::<_, i64>(7)? as u64,
        answered: row.get(8)?,
        answered_by: row.get(9)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn question(id: u64, room: &str, broadcast: Option<&str>, at: u64) -> ChatMessage {
        ChatMessage {
            id,
            room: room.into(),
            kind: Kind::Question,
            text: format!("question {id}"),
            sender: Sender {
                participant_id: Some(3),
                name: "Ada".into(),
            },
            sent_at_ms: at,
            answered: Some(false),
            answered_by: None,
            broadcast: broadcast.map(Into::into),
        }
    }

    #[test]
    fn stores_answers_and_lists_questions() {
        let store = ChatStore::open_in_memory().unwrap();
        assert_eq!(store.max_id().unwrap(), 0);
        store.insert(&question(1, "a", Some("b1"), 100)).unwrap();
        store.insert(&question(2, "a", Some("b2"), 200)).unwrap();
        store.insert(&question(3, "other", None, 300)).unwrap();
        assert_eq!(store.max_id().unwrap(), 3);
        let answered = store
            .set_answered("a", 2, true, Some("Grace"), 250)
            .unwrap()
            .unwrap();
        assert_eq!(answered.answered, Some(true));
        assert_eq!(answered.answered_by.as_deref(), Some("Grace"));
        assert_eq!(
            store.set_answered("a", 3, true, None, 0).unwrap(),
            None,
            "another room"
        );
        assert_eq!(store.questions("a", None).unwrap().len(), 2);
        assert_eq!(store.questions("a", Some("b1")).unwrap()[0].id, 1);
        let recent = store.recent("a", 150, 10).unwrap();
        assert_eq!(recent.iter().map(|m| m.id).collect::<Vec<_>>(), [2]);
        let latest = store.recent("a", 0, 1).unwrap();
        assert_eq!(latest[0].id, 2, "the limit keeps the latest");
        assert_eq!(store.delete_older_than(250).unwrap(), 2);
    }

    #[test]
    fn a_file_database_survives_reopening() {
        let dir = std::env::temp_dir().join(format!("roomcast-chat-store-{}", std::process::id()));
        let path = dir.join("nested").join("chat.sqlite3");
        let _ = std::fs::remove_dir_all(&dir);
        {
            let store = ChatStore::open(&path).unwrap();
            store.insert(&question(41, "a", None, 1)).unwrap();
        }
        let store = ChatStore::open(&path).unwrap();
        assert_eq!(store.max_id().unwrap(), 41);
        assert_eq!(store.questions("a", None).unwrap()[0].text, "question 41");
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
