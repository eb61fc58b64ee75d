//! Room chat end to end over real sockets: kinds and permissions per grant, anonymous readers,
//! the word filter, the per-sender rate limit, history for late joiners, questions answered
//! live, the export, and questions and notices surviving a restart.

mod common;

use std::time::Duration;

use common::{KEY, SECRET, Server, mint, temp_dir};
use futures_util::{SinkExt, StreamExt};
use roomcast_client::whep::http_request;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next message of one of `types` (others, like `active_speaker`, are skipped).
async fn next_of(ws: &mut Ws, types: &[&str]) -> Value {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let message: Value = serde_json::from_str(text.as_str()).unwrap();
                    if types.contains(&message["type"].as_str().unwrap_or_default()) {
                        return message;
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {types:?} within 5 s"))
}

async fn send(ws: &mut Ws, message: Value) {
    ws.send(Message::text(message.to_string())).await.unwrap();
}

/// A chat-only member (as the watch page joins): returns the socket and its `chat_history`.
async fn chat_member(server: &Server, room: &str, name: &str, token: Option<&str>) -> (Ws, Value) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.host_port()))
        .await
        .unwrap();
    let mut join = json!({"type": "chat_join", "room": room, "name": name});
    if let Some(token) = token {
        join["token"] = json!(token);
    }
    send(&mut ws, join).await;
    let history = next_of(&mut ws, &["chat_history", "error"]).await;
    assert_eq!(history["type"], "chat_history", "{history}");
    (ws, history)
}

async fn post(ws: &mut Ws, kind: &str, text: &str) {
    send(ws, json!({"type": "chat", "kind": kind, "text": text})).await;
}

/// Reads chat messages until the one with `text` (no error may come first).
async fn until_text(ws: &mut Ws, text: &str) -> Value {
    loop {
        let message = next_of(ws, &["chat_message", "error"]).await;
        assert_eq!(message["type"], "chat_message", "{message}");
        if message["message"]["text"] == text {
            return message["message"].clone();
        }
    }
}

async fn expect_error(ws: &mut Ws, code: &str) -> Value {
    let message = next_of(ws, &["error", "chat_message"]).await;
    assert_eq!(message["code"], code, "{message}");
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_kinds_permissions_filter_rate_limit_history_and_export() {
    let words = temp_dir("words").join("words.txt");
    std::fs::write(&words, "# words masked in chat\ndarn\nheck\n").unwrap();
    let server = Server::start_with(&[
        "--api-key",
        KEY,
        "--api-secret",
        SECRET,
        "--anonymous-viewers",
        "--chat-word-list",
        words.to_str().unwrap(),
        "--chat-rate",
        "3",
    ]);
    let host_token = mint("talk", "host", "publish,subscribe,chat,admin");
    let attendee_token = mint("talk", "ada", "subscribe,chat");
    let reader_token = mint("talk", "bob", "subscribe");

    let (mut host, history) = chat_member(&server, "talk", "Host", Some(&host_token)).await;
    assert_eq!(
        history["permissions"],
        json!({"post": true, "notice": true, "moderate": true})
    );
    let (mut ada, history) = chat_member(&server, "talk", "Ada", Some(&attendee_token)).await;
    assert_eq!(
        history["permissions"],
        json!({"post": true, "notice": false, "moderate": false})
    );
    let (mut bob, history) = chat_member(&server, "talk", "Bob", Some(&reader_token)).await;
    assert_eq!(history["permissions"]["post"], false);
    let (mut anonymous, history) = chat_member(&server, "talk", "Guest", None).await;
    assert_eq!(history["permissions"]["post"], false);
    assert_eq!(history["messages"], json!([]));

    // A general message, filtered, reaches everyone (the sender too).
    post(&mut ada, "general", "Hello, darn world!").await;
    for ws in [&mut host, &mut ada, &mut bob, &mut anonymous] {
        let message = next_of(ws, &["chat_message"]).await["message"].clone();
        assert_eq!(message["text"], "Hello, **** world!");
        assert_eq!(message["kind"], "general");
        assert_eq!(message["sender"]["name"], "Ada");
        assert!(message["sent_at"].as_str().unwrap().ends_with('Z'));
    }

    // Permissions: no chat grant and anonymous cannot post; only hosts post notices or
    // answer questions.
    post(&mut bob, "general", "hi").await;
    let error = expect_error(&mut bob, "forbidden").await;
    assert!(
        error["message"].as_str().unwrap().contains("chat"),
        "{error}"
    );
    post(&mut anonymous, "question", "hi?").await;
    expect_error(&mut anonymous, "forbidden").await;
    post(&mut ada, "notice", "Break!").await;
    expect_error(&mut ada, "forbidden").await;
    post(&mut ada, "general", "   ").await;
    expect_error(&mut ada, "bad_message").await;

    // A question, answered live by the host.
    post(&mut ada, "question", "Will the slides be shared?").await;
    let question = next_of(&mut host, &["chat_message"]).await["message"].clone();
    assert_eq!(question["kind"], "question");
    assert_eq!(question["answered"], false);
    let id = question["id"].as_u64().unwrap();
    send(
        &mut ada,
        json!({"type": "answer_question", "id": id, "answered": true}),
    )
    .await;
    next_of(&mut ada, &["chat_message"]).await; // its own question
    expect_error(&mut ada, "forbidden").await;
    send(
        &mut host,
        json!({"type": "answer_question", "id": 9999, "answered": true}),
    )
    .await;
    expect_error(&mut host, "unknown_question").await;
    send(
        &mut host,
        json!({"type": "answer_question", "id": id, "answered": true}),
    )
    .await;
    for ws in [&mut host, &mut bob] {
        let updated = next_of(ws, &["question_updated"]).await["message"].clone();
        assert_eq!(
            (updated["id"].as_u64(), &updated["answered"]),
            (Some(id), &json!(true))
        );
        assert_eq!(updated["answered_by"], "Host");
    }
    post(&mut host, "notice", "We resume at 14:00").await;
    let notice = next_of(&mut bob, &["chat_message"]).await["message"].clone();
    assert_eq!(notice["kind"], "notice");

    // The rate limit is per sender: Ada used 2 of 3; the third passes, the fourth is refused
    // with a wait time, and the host still posts.
    post(&mut ada, "general", "three").await;
    until_text(&mut ada, "three").await;
    post(&mut ada, "general", "four").await;
    let refused = expect_error(&mut ada, "rate_limited").await;
    assert!(
        refused["message"].as_str().unwrap().contains("wait"),
        "{refused}"
    );
    post(&mut host, "general", "still here").await;
    until_text(&mut host, "still here").await;
    assert!(
        server.metric("roomcast_limit_rejections_total{limit=\"chat_rate\"}") >= 1,
        "refusals are counted"
    );
    assert_eq!(
        server.metric("roomcast_chat_messages_total{kind=\"question\"}"),
        1
    );
    assert_eq!(server.metric("roomcast_chat_members"), 4);

    // A late joiner gets the history: messages in order, the question answered.
    let (_late, history) = chat_member(&server, "talk", "Late", Some(&attendee_token)).await;
    let texts: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        [
            "Hello, **** world!",
            "Will the slides be shared?",
            "We resume at 14:00",
            "three",
            "still here"
        ]
    );
    assert_eq!(history["messages"][1]["answered"], true);

    // The host exports the questions; others cannot.
    let host_port = server.host_port();
    let export = |token: Option<String>, format: &'static str| {
        let host_port = host_port.clone();
        async move {
            let path = format!("/admin/rooms/talk/questions?format={format}");
            http_request(&host_port, "GET", &path, token.as_deref(), None)
                .await
                .unwrap()
        }
    };
    let ops = mint("talk", "ops", "admin");
    let csv = export(Some(ops.clone()), "csv").await;
    assert_eq!(csv.status, 200, "{}", csv.body);
    let mut lines = csv.body.lines();
    assert!(lines.next().unwrap().contains("text"), "a header row");
    let row = lines.next().expect("one question");
    assert!(
        row.contains("Will the slides be shared?") && row.contains("Ada"),
        "{row}"
    );
    assert_eq!(lines.next(), None, "only questions are exported");
    let json_export = export(Some(ops), "json").await;
    let exported: Value = serde_json::from_str(&json_export.body).unwrap();
    assert_eq!(exported.as_array().map(Vec::len), Some(1), "{exported}");
    assert_eq!(export(None, "json").await.status, 401);
    assert_eq!(
        export(Some(mint("talk", "ada", "subscribe,chat")), "json")
            .await
            .status,
        403
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn questions_and_notices_survive_a_restart_and_general_chat_does_not() {
    let db = temp_dir("chat-restart").join("chat.sqlite3");
    let db = db.to_str().unwrap();
    let mut server = Server::start_with(&["--chat-db", db]);
    let (mut ws, _) = chat_member(&server, "stage", "Ada", None).await;
    post(&mut ws, "general", "passing remark").await;
    post(&mut ws, "question", "Is this recorded?").await;
    post(&mut ws, "notice", "Recording starts soon").await;
    for _ in 0..3 {
        next_of(&mut ws, &["chat_message"]).await;
    }
    drop(ws);
    server.terminate(Duration::from_secs(10));

    let server = Server::start_with(&["--chat-db", db]);
    let (_ws, history) = chat_member(&server, "stage", "Bob", None).await;
    let kept: Vec<(&str, &str)> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["kind"].as_str().unwrap(), m["text"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kept,
        [
            ("question", "Is this recorded?"),
            ("notice", "Recording starts soon")
        ]
    );
    // Dev mode: the export needs no token.
    let (status, body) = server.get("/admin/rooms/stage/questions?format=json");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Is this recorded?"), "{body}");
}
