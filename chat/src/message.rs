//! Chat messages: kinds, validation and the JSON shape clients receive.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::ChatError;

/// Longest message text, in characters (after trimming).
pub const MAX_TEXT_CHARS: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Conversation, kept in memory for late joiners.
    General,
    /// A question for the speaker: listed apart, marked answered by a host, stored.
    Question,
    /// An announcement by a host, stored.
    Notice,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::General => "general",
            Kind::Question => "question",
            Kind::Notice => "notice",
        }
    }

    pub fn parse(text: &str) -> Option<Kind> {
        match text {
            "general" => Some(Kind::General),
            "question" => Some(Kind::Question),
            "notice" => Some(Kind::Notice),
            _ => None,
        }
    }

    /// Whether messages of this kind are written to the database.
    pub fn is_stored(self) -> bool {
        self != Kind::General
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    /// The room participant, or `None` for a chat-only member (a watch page).
    pub participant_id: Option<u64>,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Unique and increasing across restarts.
    pub id: u64,
    pub room: String,
    pub kind: Kind,
    /// Validated and filtered.
    pub text: String,
    pub sender: Sender,
    pub sent_at_ms: u64,
    /// `Some` for questions only.
    pub answered: Option<bool>,
    pub answered_by: Option<String>,
    /// The HLS broadcast live in the room when it was posted, if any (export filter).
    pub broadcast: Option<String>,
}

impl ChatMessage {
    /// The shape clients receive (`docs/protocol.md`, `chat_message`).
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "kind": self.kind.as_str(),
            "text": self.text,
            "sender": {"participant_id": self.sender.participant_id, "name": self.sender.name},
            "sent_at": rfc3339_millis(self.sent_at_ms),
            "answered": self.answered,
            "answered_by": self.answered_by,
        })
    }
}

/// The text to post: trimmed, 1 to [`MAX_TEXT_CHARS`] characters, no control characters but
/// newlines and tabs.
pub fn validate_text(text: &str) -> Result<String, ChatError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ChatError::BadMessage("the message is empty".into()));
    }
    let chars = text.chars().count();
    if chars > MAX_TEXT_CHARS {
        return Err(ChatError::BadMessage(format!(
            "the message has {chars} characters; the limit is {MAX_TEXT_CHARS}"
        )));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(ChatError::BadMessage(
            "the message contains control characters".into(),
        ));
    }
    Ok(text.to_string())
}

/// `2026-11-22T14:00:00.123Z` for Unix milliseconds (proleptic Gregorian, UTC).
pub fn rfc3339_millis(unix_ms: u64) -> String {
    let days = (unix_ms / 86_400_000) as i64;
    let ms_of_day = unix_ms % 86_400_000;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(
            rfc3339_millis(1_795_359_600_000),
            "2026-11-22T15:00:00.000Z"
        );
    }

    #[test]
    fn text_is_trimmed_and_bounded() {
        assert_eq!(validate_text("  hi\n").unwrap(), "hi");
        assert!(validate_text(" \n\t ").is_err());
        assert!(validate_text(&"é".repeat(MAX_TEXT_CHARS)).is_ok());
        assert!(validate_text(&"é".repeat(MAX_TEXT_CHARS + 1)).is_err());
        assert!(validate_text("bell\u{7}").is_err());
        assert!(validate_text("two\nlines\tand a tab").is_ok());
    }

    #[test]
    fn the_wire_shape() {
        let message = ChatMessage {
            id: 7,
            room: "r".into(),
            kind: Kind::Question,
            text: "Why?".into(),
            sender: Sender {
                participant_id: None,
                name: "Ada".into(),
            },
            sent_at_ms: 0,
            answered: Some(false),
            answered_by: None,
            broadcast: Some("b".into()),
        };
        assert_eq!(
            message.to_json(),
            json!({"id": 7, "kind": "question", "text": "Why?",
                   "sender": {"participant_id": null, "name": "Ada"},
                   "sent_at": "1970-01-01T00:00:00.000Z", "answered": false, "answered_by": null})
        );
    }
}
