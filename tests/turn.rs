//! TURN credentials as clients receive them: in the signaling `joined` message and in the
//! WHEP answer's `Link` headers, each verifiable with the shared secret (the check coturn
//! makes with `use-auth-secret`) and expiring `--turn-ttl` from now. The relay itself is
//! exercised with a real coturn in `tests/browser/turn.test.mjs`.

mod common;

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::Server;
use futures_util::{SinkExt, StreamExt};
use roomcast_auth::{ApiCredentials, Claims, Grant};
use roomcast_client::whep::http_request;
use str0m::Rtc;
use str0m::media::{Direction, MediaKind};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "coturn-static-auth-secret-for-tests";
const URLS: &str = "turn:127.0.0.1:3478?transport=udp,turns:turn.example.com:5349?transport=tcp";

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `join` over the WebSocket and return the `joined` message.
async fn join(server: &Server, room: &str, token: Option<&str>) -> serde_json::Value {
    let url = format!("ws://{}/ws", server.host_port());
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let join = serde_json::json!({"type": "join", "room": room, "name": "ada", "token": token});
    ws.send(Message::text(join.to_string())).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str::<serde_json::Value>(text.as_str()).unwrap();
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("the server answers join within 5 s");
    assert_eq!(reply["type"], "joined", "{reply}");
    reply
}

/// Checks one username/credential pair: `<expiry>:<user>`, expiry `ttl` from now (a few
/// seconds of test time allowed), credential = base64(HMAC-SHA1(secret, username)).
fn assert_valid(username: &str, credential: &str, user: &str, ttl: Duration) {
    let (expiry, rest) = username
        .split_once(':')
        .expect("username is <expiry>:<user>");
    assert_eq!(rest, user, "{username}");
    let expiry: u64 = expiry.parse().expect("expiry is Unix seconds");
    let expected = now_unix() + ttl.as_secs();
    assert!(
        expiry <= expected && expiry + 10 >= expected,
        "expiry {expiry}, expected about {expected}"
    );
    assert_eq!(
        credential,
        roomcast_auth::turn::credential(SECRET, username),
        "credential of {username}"
    );
}

/// POST a receive-only WHEP offer; returns the 201 response.
async fn whep(
    server: &Server,
    room: &str,
    token: Option<&str>,
) -> roomcast_client::whep::HttpResponse {
    let mut rtc = Rtc::builder().build(std::time::Instant::now());
    let mut change = rtc.sdp_api();
    change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    change.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, _pending) = change.apply().expect("two m-lines to offer");
    let response = http_request(
        &server.host_port(),
        "POST",
        &format!("/whep/{room}"),
        token,
        Some(("application/sdp", &offer.to_sdp_string())),
    )
    .await
    .unwrap();
    assert_eq!(response.status, 201, "{response:?}");
    response
}

/// The `Link` headers of a response, one per header line.
fn links(response: &roomcast_client::whep::HttpResponse) -> Vec<&str> {
    response
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("link"))
        .map(|(_, value)| value.as_str())
        .collect()
}

/// The quoted value of `param` in one Link header.
fn link_param<'a>(link: &'a str, param: &str) -> &'a str {
    let start = link
        .find(&format!("; {param}=\""))
        .unwrap_or_else(|| panic!("no {param} in {link}"))
        + param.len()
        + 4;
    let len = link[start..].find('"').unwrap();
    &link[start..start + len]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_get_their_own_turn_credentials() {
    let ttl = Duration::from_secs(3600);
    let server = Server::start_with(&[
        "--turn-secret",
        SECRET,
        "--turn-urls",
        URLS,
        "--turn-ttl",
        "1h",
    ]);
    assert!(server.log_text().contains("TURN: clients get credentials"));

    // Dev mode: the user part is the participant id.
    let joined = join(&server, "turned", None).await;
    let servers = joined["ice_servers"].as_array().unwrap();
    assert_eq!(servers.len(), 1, "{joined}");
    let urls: Vec<&str> = URLS.split(',').collect();
    assert_eq!(servers[0]["urls"], serde_json::json!(urls));
    let id = joined["participant_id"].as_u64().unwrap().to_string();
    assert_valid(
        servers[0]["username"].as_str().unwrap(),
        servers[0]["credential"].as_str().unwrap(),
        &id,
        ttl,
    );
    // Another participant gets other credentials.
    let second = join(&server, "turned", None).await;
    assert_ne!(second["ice_servers"][0]["username"], servers[0]["username"]);

    // WHEP: one Link header per URL, with the session's credentials.
    let response = whep(&server, "turned", None).await;
    let links = links(&response);
    assert_eq!(links.len(), urls.len(), "{response:?}");
    let session = response
        .header("location")
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap();
    for (link, url) in links.iter().zip(&urls) {
        assert!(
            link.starts_with(&format!("<{url}>; rel=\"ice-server\"")),
            "{link}"
        );
        assert_eq!(link_param(link, "credential-type"), "password", "{link}");
        assert_valid(
            link_param(link, "username"),
            link_param(link, "credential"),
            session,
            ttl,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_the_turn_username_names_the_identity() {
    let api_secret = "an api secret of at least thirty-two bytes";
    let server = Server::start_with(&[
        "--api-key",
        "APItest",
        "--api-secret",
        api_secret,
        "--turn-secret",
        SECRET,
        "--turn-urls",
        "turn:127.0.0.1:3478",
    ]);
    let credentials = ApiCredentials::new("APItest", api_secret);
    let claims = Claims::new("ada-7", "turned", now_unix(), Duration::from_secs(600))
        .with_grants([Grant::Publish, Grant::Subscribe]);
    let token = roomcast_auth::mint(&credentials, &claims);
    let joined = join(&server, "turned", Some(&token)).await;
    let server_entry = &joined["ice_servers"][0];
    assert_valid(
        server_entry["username"].as_str().unwrap(),
        server_entry["credential"].as_str().unwrap(),
        "ada-7",
        roomcast_auth::turn::DEFAULT_TTL,
    );
    let response = whep(&server, "turned", Some(&token)).await;
    let links = links(&response);
    assert_eq!(links.len(), 1, "{response:?}");
    assert_valid(
        link_param(links[0], "username"),
        link_param(links[0], "credential"),
        "ada-7",
        roomcast_auth::turn::DEFAULT_TTL,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_turn_there_are_no_ice_servers() {
    let server = Server::start();
    let joined = join(&server, "plain", None).await;
    assert_eq!(joined["ice_servers"], serde_json::json!([]), "{joined}");
    let response = whep(&server, "plain", None).await;
    assert!(links(&response).is_empty(), "{response:?}");
}

#[test]
fn turn_secret_and_urls_come_together() {
    for args in [
        &["--turn-secret", SECRET][..],
        &["--turn-urls", "turn:127.0.0.1:3478"][..],
        &[
            "--turn-secret",
            SECRET,
            "--turn-urls",
            "stun:127.0.0.1:3478",
        ][..],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_roomcast"))
            .args(["serve", "--http", "127.0.0.1:0", "--rtc-port", "0"])
            .args(["--rtmp", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--turn-"), "{args:?}: {stderr}");
    }
}
