//! Questions as a download: JSON, or CSV ([RFC 4180](https://www.rfc-editor.org/rfc/rfc4180)).

use serde_json::json;

use crate::message::{ChatMessage, rfc3339_millis};

const HEADER: [&str; 8] = [
    "id",
    "room",
    "broadcast",
    "sender",
    "text",
    "sent_at",
    "answered",
    "answered_by",
];

pub fn questions_json(questions: &[ChatMessage]) -> String {
    let rows: Vec<_> = questions
        .iter()
        .map(|q| {
            json!({
                "id": q.id,
                "room": q.room,
                "broadcast": q.broadcast,
                "sender": q.sender.name,
                "text": q.text,
                "sent_at": rfc3339_millis(q.sent_at_ms),
                "answered": q.answered.unwrap_or(false),
                "answered_by": q.answered_by,
            })
        })
        .collect();
    serde_json::to_string_pretty(&rows).expect("JSON values always serialize")
}

pub fn questions_csv(questions: &[ChatMessage]) -> String {
    let mut out = String::new();
    push_row(&mut out, HEADER.iter().map(|h| h.to_string()));
    for q in questions {
        push_row(
            &mut out,
            [
                q.id.to_string(),
                q.room.clone(),
                q.broadcast.clone().unwrap_or_default(),
                q.sender.name.clone(),
                q.text.clone(),
                rfc3339_millis(q.sent_at_ms),
                q.answered.unwrap_or(false).to_string(),
                q.answered_by.clone().unwrap_or_default(),
            ],
        );
    }
    out
}

fn push_row(out: &mut String, cells: impl IntoIterator<Item = String>) {
    for (i, cell) in cells.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&csv_cell(&cell));
    }
    out.push_str("\r\n");
}

/// One cell: quoted when it holds a comma, quote or line break; a leading `= + - @`, tab or
/// carriage return gets a `'` so spreadsheets show it instead of running it as a formula.
fn csv_cell(value: &str) -> String {
    let neutral = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_string()
    };
    if neutral.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", neutral.replace('"', "\"\""))
    } else {
        neutral
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Kind, Sender};

    fn question(text: &str) -> ChatMessage {
        ChatMessage {
            id: 1,
            room: "talk".into(),
            kind: Kind::Question,
            text: text.into(),
            sender: Sender {
                participant_id: None,
                name: "Ada, L.".into(),
            },
            sent_at_ms: 0,
            answered: Some(true),
            answered_by: Some("Grace".into()),
            broadcast: None,
        }
    }

    #[test]
    fn csv_has_a_header_and_quotes_what_needs_it() {
        let csv = questions_csv(&[question("He said \"why\",\nthen left")]);
        let mut lines = csv.split("\r\n");
        assert_eq!(
            lines.next(),
            Some("id,room,broadcast,sender,text,sent_at,answered,answered_by")
        );
        assert_eq!(
            csv.lines().nth(1),
            Some("1,talk,,\"Ada, L.\",\"He said \"\"why\"\",")
        );
        assert!(csv.ends_with("then left\",1970-01-01T00:00:00.000Z,true,Grace\r\n"));
    }

    #[test]
    fn formulas_are_neutralised() {
        let csv = questions_csv(&[question("=HYPERLINK(\"x\")")]);
        assert!(csv.contains(",\"'=HYPERLINK(\"\"x\"\")\","), "{csv}");
        assert_eq!(csv_cell("-1"), "'-1");
        assert_eq!(csv_cell("plain"), "plain");
    }

    #[test]
    fn json_lists_every_field() {
        let json: serde_json::Value =
            serde_json::from_str(&questions_json(&[question("Why?")])).unwrap();
        assert_eq!(json[0]["text"], "Why?");
        assert_eq!(json[0]["answered_by"], "Grace");
        assert_eq!(json[0]["sender"], "Ada, L.");
    }
}
