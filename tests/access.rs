//! Access control and limits end to end: the admin HTTP API (tokens, rooms, kick, mute), grants
//! on the signaling socket, and every configured limit refusing precisely with a metric.

mod common;

use std::time::Duration;

use common::{KEY, SECRET, Server, eventually, mint};
use futures_util::{SinkExt, StreamExt};
use roomcast_client::whep::http_request;
use roomcast_client::{Participant, ParticipantOptions, PublishOptions};
use tokio_tungstenite::tungstenite::Message;

async fn admin(
    server: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let body = body.map(|b| b.to_string());
    let response = http_request(
        &server.host_port(),
        method,
        path,
        token,
        body.as_deref().map(|b| ("application/json", b)),
    )
    .await
    .unwrap();
    let json = serde_json::from_str(&response.body).unwrap_or(serde_json::Value::Null);
    (response.status, json)
}

fn participant(server: &Server, room: &str, name: &str, token: String) -> ParticipantOptions {
    ParticipantOptions {
        server: server.url.clone(),
        room: room.into(),
        name: name.into(),
        publish: Some(PublishOptions::default()),
        bind_ip: "127.0.0.1".parse().unwrap(),
        token: Some(token),
        tile_width: None,
    }
}

fn frames_from(receiver: &Participant, from: &Participant) -> u64 {
    receiver
        .stats()
        .remote
        .get(&from.id())
        .map_or(0, |r| r.video_frames)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_mints_tokens_lists_mutes_kicks_and_closes() {
    let server = Server::start_with(&["--api-key", KEY, "--api-secret", SECRET]);
    let ops = mint("*", "ops", "admin");

    // Refusals first: no token, a token without the admin grant, a forged one.
    let (status, body) = admin(&server, "GET", "/admin/rooms", None, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized"))
    );
    let viewer = mint("*", "viewer", "subscribe");
    let (status, body) = admin(&server, "GET", "/admin/rooms", Some(&viewer), None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("missing_grant"))
    );
    let forged = format!("{}x", &ops[..ops.len() - 1]);
    let (status, _) = admin(&server, "GET", "/admin/rooms", Some(&forged), None).await;
    assert_eq!(status, 401);

    // Mint two participants' tokens through the API and let them meet.
    let mut tokens = Vec::new();
    for identity in ["ada", "bob"] {
        let request = serde_json::json!({
            "room": "standup", "identity": identity, "grants": ["publish", "subscribe"],
            "ttl_seconds": 600,
        });
        let (status, body) =
            admin(&server, "POST", "/admin/tokens", Some(&ops), Some(request)).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["grants"], serde_json::json!(["publish", "subscribe"]));
        tokens.push(body["token"].as_str().unwrap().to_string());
    }
    let (status, body) = admin(
        &server,
        "POST",
        "/admin/tokens",
        Some(&ops),
        Some(serde_json::json!({"room": "standup", "identity": "x", "grants": ["fly"]})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let ada = Participant::join(participant(&server, "standup", "ada", tokens[0].clone()))
        .await
        .unwrap();
    let bob = Participant::join(participant(&server, "standup", "bob", tokens[1].clone()))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(15),
        "ada and bob to see each other",
        || {
            let (a, b) = (frames_from(&ada, &bob), frames_from(&bob, &ada));
            if a > 10 && b > 10 {
                Ok(())
            } else {
                Err(format!("{a} {b}"))
            }
        },
    )
    .await;

    let (status, body) = admin(&server, "GET", "/admin/rooms", Some(&ops), None).await;
    assert_eq!(status, 200);
    assert_eq!(body["rooms"][0]["room"], "standup", "{body}");
    assert_eq!(body["rooms"][0]["participants"], 2, "{body}");

    // Mute bob at the SFU: ada stops receiving his video; unmute: it resumes.
    let mute_path = format!("/admin/rooms/standup/participants/{}/mute", bob.id().0);
    let (status, body) = admin(
        &server,
        "POST",
        &mute_path,
        Some(&ops),
        Some(serde_json::json!({"muted": true})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tracks"].as_array().map(Vec::len), Some(2), "{body}");
    tokio::time::sleep(Duration::from_millis(300)).await; // in-flight packets drain
    let frozen = frames_from(&ada, &bob);
    tokio::time::sleep(Duration::from_millis(700)).await; // a window in which none may arrive
    assert!(
        frames_from(&ada, &bob) <= frozen + 1,
        "bob's video still reaches ada while muted"
    );
    admin(
        &server,
        "POST",
        &mute_path,
        Some(&ops),
        Some(serde_json::json!({"muted": false})),
    )
    .await;
    eventually(Duration::from_secs(5), "bob's video after unmute", || {
        let now = frames_from(&ada, &bob);
        if now > frozen + 10 {
            Ok(())
        } else {
            Err(format!("{now}"))
        }
    })
    .await;

    // A room-scoped admin cannot act on other rooms.
    let scoped = mint("other", "mod", "admin");
    let (status, body) = admin(
        &server,
        "DELETE",
        "/admin/rooms/standup",
        Some(&scoped),
        None,
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (403, Some("wrong_room")));

    // Kick bob; then close the room with ada in it.
    let kick_path = format!("/admin/rooms/standup/participants/{}", bob.id().0);
    let (status, _) = admin(&server, "DELETE", &kick_path, Some(&ops), None).await;
    assert_eq!(status, 200);
    eventually(Duration::from_secs(5), "bob to be removed", || {
        bob.stats()
            .ended
            .clone()
            .ok_or_else(|| "still in".to_string())
    })
    .await;
    let (status, _) = admin(&server, "DELETE", &kick_path, Some(&ops), None).await;
    assert_eq!(status, 404, "a second kick finds nobody");
    let (status, body) = admin(&server, "DELETE", "/admin/rooms/standup", Some(&ops), None).await;
    assert_eq!((status, body["removed"].as_u64()), (200, Some(1)), "{body}");
    eventually(Duration::from_secs(5), "ada to be removed", || {
        ada.stats()
            .ended
            .clone()
            .ok_or_else(|| "still in".to_string())
    })
    .await;
    let (_, body) = admin(&server, "GET", "/admin/rooms", Some(&ops), None).await;
    assert_eq!(body["rooms"], serde_json::json!([]));
    let (status, _) = admin(&server, "DELETE", "/admin/rooms/standup", Some(&ops), None).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_has_no_admin_api() {
    let server = Server::start();
    let (status, body) = admin(&server, "GET", "/admin/rooms", None, None).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("dev_mode")));
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_json(ws: &mut Ws) -> serde_json::Value {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let message: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
                    // The chat history every joiner gets is not what these tests are about
                    // (tests/chat.rs is).
                    if message["type"] != "chat_history" {
                        return message;
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("the server answers within 5 s")
}

async fn join(server: &Server, room: &str) -> (Ws, serde_json::Value) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.host_port()))
        .await
        .unwrap();
    let join = serde_json::json!({"type": "join", "room": room, "name": "n"});
    ws.send(Message::text(join.to_string())).await.unwrap();
    let reply = next_json(&mut ws).await;
    (ws, reply)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_refuse_precisely_and_are_counted() {
    let server = Server::start_with(&[
        "--max-rooms",
        "1",
        "--max-connections-per-ip",
        "3",
        "--max-message-rate",
        "5",
        "--max-message-bytes",
        "2048",
    ]);
    let metric = |limit: &str| {
        server.metric(&format!(
            "roomcast_limit_rejections_total{{limit=\"{limit}\"}}"
        ))
    };

    // Rooms per node: the first room opens, a second one is refused, the first still joins.
    let (mut first, reply) = join(&server, "a").await;
    assert_eq!(reply["type"], "joined", "{reply}");
    let (_second, reply) = join(&server, "b").await;
    assert_eq!(reply["code"], "too_many_rooms", "{reply}");
    let (_third, reply) = join(&server, "a").await;
    assert_eq!(reply["type"], "joined", "{reply}");
    assert_eq!(metric("rooms_per_node"), 1);

    // Connections per IP: three are open, the fourth is refused at the upgrade with 429.
    let refused = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.host_port())).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429)
        }
        other => panic!("expected HTTP 429, got {other:?}"),
    }
    assert_eq!(metric("connections_per_ip"), 1);

    // Message rate: a burst far over 5/s gets one rate_limited error, the rest are dropped.
    for _ in 0..40 {
        first
            .send(Message::text(r#"{"type":"candidate","candidate":""}"#))
            .await
            .unwrap();
    }
    let mut codes = Vec::new();
    while let Ok(reply) =
        tokio::time::timeout(Duration::from_millis(500), next_json(&mut first)).await
    {
        codes.push(reply["code"].as_str().unwrap_or("").to_string());
    }
    assert_eq!(
        codes.iter().filter(|c| *c == "rate_limited").count(),
        1,
        "one rate_limited error per second at most: {codes:?}"
    );
    assert!(metric("message_rate") >= 20, "{}", metric("message_rate"));

    // Message size: over the configured 2 KiB (far below the 64 KiB default).
    tokio::time::sleep(Duration::from_millis(1500)).await; // the bucket refills (rate limit is not under test here)
    let big = serde_json::json!({"type": "offer", "sdp": "v".repeat(3000)}).to_string();
    first.send(Message::text(big)).await.unwrap();
    let reply = next_json(&mut first).await;
    assert_eq!(reply["code"], "message_too_large", "{reply}");
    assert!(
        reply["message"].as_str().unwrap().contains("2048"),
        "{reply}"
    );
    assert_eq!(metric("message_size"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscribe_grant_and_anonymous_viewers() {
    let server = Server::start_with(&[
        "--api-key",
        KEY,
        "--api-secret",
        SECRET,
        "--anonymous-viewers",
    ]);
    let publisher = Participant::join(participant(
        &server,
        "town-hall",
        "host",
        mint("town-hall", "host", "publish,subscribe"),
    ))
    .await
    .unwrap();
    // Publish without subscribe: sends, receives nothing.
    let deaf = Participant::join(participant(
        &server,
        "town-hall",
        "deaf",
        mint("town-hall", "deaf", "publish"),
    ))
    .await
    .unwrap();
    // No token at all: allowed to watch on this server, not to publish.
    let anonymous = Participant::join(ParticipantOptions {
        publish: None,
        token: None,
        tile_width: None,
        ..participant(&server, "town-hall", "guest", String::new())
    })
    .await
    .unwrap();
    eventually(
        Duration::from_secs(15),
        "the host's video at the anonymous viewer and deaf's at the host",
        || {
            let (a, h) = (
                frames_from(&anonymous, &publisher),
                frames_from(&publisher, &deaf),
            );
            if a > 10 && h > 10 {
                Ok(())
            } else {
                Err(format!("{a} {h}"))
            }
        },
    )
    .await;
    assert!(
        deaf.stats().remote.is_empty(),
        "a token without subscribe receives nothing: {:?}",
        deaf.stats().remote
    );
    let (mut ws, reply) = join(&server, "town-hall").await;
    assert_eq!(reply["type"], "joined", "anonymous join: {reply}");
    let offer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n";
    ws.send(Message::text(
        serde_json::json!({"type": "offer", "sdp": offer}).to_string(),
    ))
    .await
    .unwrap();
    let error = loop {
        let message = next_json(&mut ws).await;
        if message["type"] == "error" {
            break message;
        }
    };
    assert_eq!(error["code"], "forbidden", "{error}");
    let viewer = roomcast_client::whep::WhepViewer::connect(&server.url, "town-hall", None).await;
    assert!(viewer.is_ok(), "anonymous WHEP: {:?}", viewer.err());
}
