//! Bad input on every outside-facing edge: each offender gets a precise error (or its
//! datagrams are dropped and counted) while the participants of the same room keep
//! receiving media.

mod common;

use std::time::Duration;

use common::{Server, eventually};
use futures_util::{SinkExt, StreamExt};
use roomcast_client::{Participant, ParticipantOptions, PublishOptions};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(server: &Server) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.host_port()))
        .await
        .expect("WebSocket connects");
    ws
}

/// The next JSON message from the server (ignoring pings and `chat_history`).
async fn next_json(ws: &mut Ws) -> serde_json::Value {
    let frame = tokio::time::timeout(Duration::from_secs(5), async {
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
    .await;
    frame.expect("the server answers within 5 s")
}

/// Send `text` and expect an error with `code`.
async fn expect_error(ws: &mut Ws, text: impl Into<String>, code: &str) {
    ws.send(Message::text(text.into())).await.unwrap();
    let reply = next_json(ws).await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], code, "{reply}");
    assert!(
        reply["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{reply}"
    );
}

async fn total_frames(participants: &[Participant]) -> u64 {
    participants
        .iter()
        .flat_map(|p| p.stats().remote.into_values())
        .map(|r| r.video_frames)
        .sum()
}

/// Two publishers in `room` that already receive each other's video.
async fn bystanders(server: &Server, room: &str) -> Vec<Participant> {
    let options = |name: &str| ParticipantOptions {
        server: server.url.clone(),
        room: room.into(),
        name: name.into(),
        publish: Some(PublishOptions::default()),
        bind_ip: "127.0.0.1".parse().unwrap(),
        token: None,
        tile_width: None,
    };
    let bystanders = vec![
        Participant::join(options("alice")).await.unwrap(),
        Participant::join(options("bob")).await.unwrap(),
    ];
    eventually(
        Duration::from_secs(15),
        "the bystanders to exchange video",
        || {
            let ok = bystanders
                .iter()
                .all(|p| p.stats().remote.values().any(|r| r.video_frames > 10));
            if ok {
                Ok(())
            } else {
                Err("no video yet".into())
            }
        },
    )
    .await;
    bystanders
}

/// The bystanders keep receiving video (60 more frames) and none of them was dropped.
async fn assert_unaffected(bystanders: &[Participant], frames_before: u64) {
    eventually(
        Duration::from_secs(5),
        "the bystanders to keep receiving video",
        || {
            let now: u64 = bystanders
                .iter()
                .flat_map(|p| p.stats().remote.into_values())
                .map(|r| r.video_frames)
                .sum();
            if now > frames_before + 60 {
                Ok(())
            } else {
                Err(format!("{now} frames, had {frames_before}"))
            }
        },
    )
    .await;
    for p in bystanders {
        assert!(p.stats().ended.is_none(), "{:?}", p.stats().ended);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_signaling_gets_precise_errors_and_hurts_nobody() {
    let server = Server::start();
    let bystanders = bystanders(&server, "abuse").await;
    let frames_before = total_frames(&bystanders).await;

    let mut ws = connect(&server).await;
    expect_error(&mut ws, "{not json", "bad_json").await;
    expect_error(&mut ws, "[1,2,3]", "bad_json").await;
    expect_error(&mut ws, r#"{"type":"dance"}"#, "unknown_type").await;
    expect_error(&mut ws, r#"{"type":"join","room":"abuse"}"#, "bad_message").await;
    expect_error(&mut ws, r#"{"type":"offer","sdp":"v=0"}"#, "not_joined").await;
    expect_error(&mut ws, r#"{"type":"answer","sdp":"v=0"}"#, "not_joined").await;
    // Chat: before joining, an unknown kind, a mistyped id.
    let chat = r#"{"type":"chat","kind":"general","text":"hi"}"#;
    expect_error(&mut ws, chat, "not_joined").await;
    let shout = r#"{"type":"chat","kind":"shout","text":"hi"}"#;
    expect_error(&mut ws, shout, "bad_message").await;
    let answer = r#"{"type":"answer_question","id":"7","answered":true}"#;
    expect_error(&mut ws, answer, "bad_message").await;
    expect_error(
        &mut ws,
        r#"{"type":"join","room":"no spaces","name":"x"}"#,
        "invalid_name",
    )
    .await;
    expect_error(
        &mut ws,
        r#"{"type":"join","room":"abuse","name":"   "}"#,
        "invalid_name",
    )
    .await;
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["code"], "binary_not_supported", "{reply}");

    // The same socket is still usable: join works after all of the above.
    ws.send(Message::text(
        r#"{"type":"join","room":"abuse","name":"mallory"}"#,
    ))
    .await
    .unwrap();
    let joined = loop {
        let message = next_json(&mut ws).await;
        if message["type"] == "joined" {
            break message;
        }
    };
    assert_eq!(
        joined["participants"].as_array().unwrap().len(),
        2,
        "{joined}"
    );
    expect_error(
        &mut ws,
        r#"{"type":"join","room":"abuse","name":"again"}"#,
        "already_joined",
    )
    .await;
    expect_error(
        &mut ws,
        r#"{"type":"offer","sdp":"this is not SDP"}"#,
        "bad_sdp",
    )
    .await;
    expect_error(
        &mut ws,
        r#"{"type":"answer","sdp":"v=0"}"#,
        "no_pending_offer",
    )
    .await;
    expect_error(
        &mut ws,
        r#"{"type":"candidate","candidate":"candidate:garbage"}"#,
        "bad_candidate",
    )
    .await;

    // Oversize: an error naming the limit, then close code 1009.
    let huge = format!(r#"{{"type":"offer","sdp":"{}"}}"#, "a".repeat(70 * 1024));
    ws.send(Message::text(huge)).await.unwrap();
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["code"], "message_too_large", "{reply}");
    let close = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap();
    match close {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Size),
        other => panic!("expected a 1009 close, got {other:?}"),
    }

    // Past the WebSocket layer's own limit (1 MiB) the server does not read the frame at all:
    // the connection ends (a 1009 close if the client reads it in time, otherwise a reset).
    let mut ws = connect(&server).await;
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        if ws
            .send(Message::text("x".repeat(2 * 1024 * 1024)))
            .await
            .is_err()
        {
            return "send failed";
        }
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(Some(frame)))) if frame.code == CloseCode::Size => {
                    return "closed 1009";
                }
                Some(Ok(Message::Text(_))) => continue,
                Some(Ok(other)) => panic!("unexpected frame {other:?}"),
                Some(Err(_)) | None => return "connection ended",
            }
        }
    })
    .await
    .expect("a 2 MiB frame must end the connection within 5 s");
    println!("2 MiB frame: {ended}");

    // The bystanders never stopped receiving, and the offender left the room.
    assert_unaffected(&bystanders, frames_before).await;
    eventually(
        Duration::from_secs(5),
        "the offender to be removed from the room",
        || match server.metric("roomcast_participants") {
            2 => Ok(()),
            n => Err(format!("{n} participants")),
        },
    )
    .await;
    assert!(server.metric("roomcast_signaling_errors_total") >= 14);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_are_dropped_and_counted() {
    let server = Server::start_with(&["--workers", "1"]);
    let bystanders = bystanders(&server, "udp").await;
    let frames_before = total_frames(&bystanders).await;
    let media = server.media_addrs()[0];
    let dropped_before = server.metric("roomcast_udp_datagrams_dropped_total");
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut garbage = Vec::new();
    // Random bytes, an RTP-looking header from nobody, a STUN-looking header, a DTLS record.
    for i in 0..200u32 {
        let mut datagram: Vec<u8> = (0..(20 + i % 300))
            .map(|j| (i.wrapping_mul(2654435761).wrapping_add(j) >> 7) as u8)
            .collect();
        match i % 4 {
            0 => datagram[0] = 0x80,
            1 => datagram[..2].copy_from_slice(&[0x00, 0x01]),
            2 => datagram[0] = 22,
            _ => {}
        }
        garbage.push(datagram);
    }
    for datagram in &garbage {
        socket.send_to(datagram, media).await.unwrap();
    }
    eventually(
        Duration::from_secs(5),
        "the garbage to be counted as dropped",
        || {
            let dropped = server.metric("roomcast_udp_datagrams_dropped_total") - dropped_before;
            if dropped >= garbage.len() as u64 {
                Ok(())
            } else {
                Err(format!("{dropped} dropped"))
            }
        },
    )
    .await;
    assert_unaffected(&bystanders, frames_before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_dev_mode_joins_need_a_token_for_the_room_and_publishing_needs_the_grant() {
    const SECRET: &str = "an-api-secret-for-tests-32-bytes-or-more";
    let server = Server::start_with(&["--api-key", "k1", "--api-secret", SECRET]);
    let mint = |room: &str, grants: &str| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_roomcast"))
            .args(["token", "create", "--api-key", "k1", "--api-secret", SECRET])
            .args(["--room", room, "--identity", "ada", "--name", "Ada L."])
            .args(["--grant", grants])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    };
    let join = |token: Option<String>| {
        let mut message = serde_json::json!({"type": "join", "room": "team", "name": "x"});
        if let Some(token) = token {
            message["token"] = token.into();
        }
        message.to_string()
    };
    let mut ws = connect(&server).await;
    expect_error(&mut ws, join(None), "unauthorized").await;
    expect_error(&mut ws, join(Some("a.b.c".into())), "unauthorized").await;
    expect_error(
        &mut ws,
        join(Some(mint("other", "subscribe"))),
        "unauthorized",
    )
    .await;

    // A viewer token joins under the token's name but cannot publish.
    ws.send(Message::text(join(Some(mint("team", "subscribe")))))
        .await
        .unwrap();
    let joined = next_json(&mut ws).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    assert_eq!(joined["dev_mode"], false, "{joined}");
    let offer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n";
    let offer = serde_json::json!({"type": "offer", "sdp": offer}).to_string();
    expect_error(&mut ws, offer, "forbidden").await;

    // With the publish grant the same offer reaches the SFU (which judges the SDP itself).
    let mut publisher = connect(&server).await;
    publisher
        .send(Message::text(join(Some(mint("team", "publish,subscribe")))))
        .await
        .unwrap();
    let joined = next_json(&mut publisher).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    let offer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n";
    let offer = serde_json::json!({"type": "offer", "sdp": offer}).to_string();
    expect_error(&mut publisher, offer, "bad_sdp").await;
    assert!(server.log_text().contains("join refused"));

    // Expired and tampered tokens are refused with their codes at the start of the message.
    let credentials = roomcast_auth::ApiCredentials::new("k1", SECRET);
    let long_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 3600;
    let claims = roomcast_auth::Claims::new("ada", "team", long_ago, Duration::from_secs(60))
        .with_grants([roomcast_auth::Grant::Subscribe]);
    let expired = roomcast_auth::mint(&credentials, &claims);
    let tampered = {
        let publisher = mint("team", "publish,subscribe,admin");
        let viewer = mint("team", "subscribe");
        let mut parts: Vec<&str> = viewer.split('.').collect();
        parts[1] = publisher.split('.').nth(1).unwrap();
        parts.join(".")
    };
    for (token, code) in [(expired, "expired"), (tampered, "bad_signature")] {
        let mut ws = connect(&server).await;
        ws.send(Message::text(join(Some(token)))).await.unwrap();
        let reply = next_json(&mut ws).await;
        assert_eq!(reply["code"], "unauthorized", "{reply}");
        assert!(
            reply["message"].as_str().unwrap().starts_with(code),
            "{reply}"
        );
    }

    // Kick needs the admin grant; with it, the kicked participant is told why.
    let mut viewer = connect(&server).await;
    viewer
        .send(Message::text(join(Some(mint("team", "subscribe")))))
        .await
        .unwrap();
    assert_eq!(next_json(&mut viewer).await["type"], "joined");
    let kick = serde_json::json!({"type": "kick", "participant_id": 1}).to_string();
    expect_error(&mut viewer, kick, "forbidden").await;
    // So does choosing the room's stage (what HLS and replays show).
    let stage = serde_json::json!({"type": "set_stage", "participant_id": 1}).to_string();
    expect_error(&mut viewer, stage, "forbidden").await;
    let mut admin = connect(&server).await;
    admin
        .send(Message::text(join(Some(mint("team", "subscribe,admin")))))
        .await
        .unwrap();
    assert_eq!(next_json(&mut admin).await["type"], "joined");
    let target = joined["participant_id"].clone();
    let kick = serde_json::json!({"type": "kick", "participant_id": target}).to_string();
    admin.send(Message::text(kick)).await.unwrap();
    let left = loop {
        let message = next_json(&mut publisher).await;
        if message["type"] == "left" {
            break message;
        }
    };
    assert_eq!(left["reason"], "kicked", "{left}");
    // The admin sees the kicked participant leave; wait for that room event so the replies
    // below are the next frames.
    loop {
        let message = next_json(&mut admin).await;
        if message["type"] == "participant_left" {
            assert_eq!(message["participant_id"], target, "{message}");
            assert_eq!(message["reason"], "kicked", "{message}");
            break;
        }
    }
    let kick = serde_json::json!({"type": "kick", "participant_id": 999_999}).to_string();
    expect_error(&mut admin, kick, "unknown_participant").await;
    let stage = serde_json::json!({"type": "set_stage", "participant_id": 999_999}).to_string();
    expect_error(&mut admin, stage, "unknown_participant").await;
}
