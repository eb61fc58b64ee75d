//! RTMP and WHIP/WHEP ingest end to end: a real `roomcast serve`, ffmpeg pushing RTMP as OBS
//! would, and str0m WHEP viewers checking what arrives frame by frame.
//!
//! Tests in this file run one at a time (each ffmpeg encode takes most of a core).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, eventually};
use roomcast_client::whep::{WhepViewer, http_request};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SECRET: &str = "an-api-secret-for-tests-32-bytes-or-more";

/// ffmpeg pushing a test pattern and a tone over RTMP; killed when dropped. Its errors (it
/// logs only errors) go to the test's output.
struct Encoder {
    child: Child,
}

impl Encoder {
    /// `extra` goes before the output URL (codec options).
    fn push(rtmp: &str, key: &str, extra: &[&str]) -> Encoder {
        let child = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
            .args(["-c:v", "libx264", "-preset", "veryfast", "-g", "60"])
            .args(extra)
            .args(["-f", "flv", &format!("rtmp://{rtmp}/live/{key}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("ffmpeg runs (apt-get install ffmpeg)");
        Encoder { child }
    }

    /// The usual OBS-like settings: x264 zerolatency, AAC.
    fn obs(rtmp: &str, key: &str) -> Encoder {
        Encoder::push(rtmp, key, &["-tune", "zerolatency", "-c:a", "aac"])
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Poll (15 s deadline) until ffmpeg has exited.
    fn wait_for_exit(&mut self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.exited() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        self.kill();
    }
}

fn room_status(server: &Server, room: &str) -> serde_json::Value {
    let (status, body) = server.get(&format!("/api/rooms/{room}"));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("the room API returns JSON")
}

async fn wait_for_frames(viewer: &WhepViewer, more_than: u64, within: Duration, what: &str) {
    eventually(within, what, || {
        let stats = viewer.stats();
        if stats.video_frames > more_than {
            Ok(())
        } else {
            Err(format!("{stats:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_reaches_whep_viewers_and_they_survive_an_encoder_restart() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = Server::start();
    // One viewer is there before the broadcast starts, as on a watch page left open.
    let early = WhepViewer::connect(&server.url, "show", None)
        .await
        .unwrap();
    assert_eq!(room_status(&server, "show")["live"], false);

    let mut encoder = Encoder::obs(&server.rtmp, "show");
    wait_for_frames(
        &early,
        30,
        Duration::from_secs(15),
        "H.264 frames at the early viewer",
    )
    .await;
    let late = WhepViewer::connect(&server.url, "show", None)
        .await
        .unwrap();
    wait_for_frames(
        &late,
        30,
        Duration::from_secs(10),
        "frames at the late viewer",
    )
    .await;
    for viewer in [&early, &late] {
        let stats = viewer.stats();
        assert_eq!(stats.video_codec, Some(str0m::format::Codec::H264));
        assert_eq!(
            stats.first_frame_keyframe,
            Some(true),
            "a viewer's first frame is a keyframe with SPS/PPS ahead: {stats:?}"
        );
    }
    eventually(Duration::from_secs(5), "Opus audio at both viewers", || {
        let (a, b) = (early.stats(), late.stats());
        if a.audio_packets > 50 && b.audio_packets > 50 {
            Ok(())
        } else {
            Err(format!("{a:?} / {b:?}"))
        }
    })
    .await;
    assert_eq!(early.stats().audio_codec, Some(str0m::format::Codec::Opus));
    let status = room_status(&server, "show");
    assert_eq!(status["live"], true, "{status}");
    assert_eq!(status["host"]["source"], "rtmp", "{status}");
    assert_eq!(status["viewers"], 2, "{status}");
    assert_eq!(server.metric("roomcast_whep_sessions"), 2);

    // The encoder dies (OBS crashed, network cut) and comes back with the same key: the same
    // viewer sessions resume, nothing renegotiated.
    encoder.kill();
    eventually(Duration::from_secs(5), "the room to go offline", || {
        let status = room_status(&server, "show");
        if status["live"] == false {
            Ok(())
        } else {
            Err(status.to_string())
        }
    })
    .await;
    let before = early.stats().video_frames;
    let restarted = Instant::now();
    let mut restarted_encoder = Encoder::obs(&server.rtmp, "show");
    wait_for_frames(
        &early,
        before,
        Duration::from_secs(10),
        "frames after the restart",
    )
    .await;
    let gap = restarted.elapsed();
    println!("viewer resumed {gap:?} after the encoder restarted");
    wait_for_frames(
        &late,
        late.stats().video_frames + 30,
        Duration::from_secs(5),
        "the late viewer resumed",
    )
    .await;
    assert!(
        gap < Duration::from_secs(3),
        "viewers resumed only after {gap:?} (ffmpeg start + first keyframe should be < 1 s)"
    );

    // A second encoder with the same key while one is live replaces it (decision 0007): the
    // first one's connection is closed, the viewers play the newcomer.
    let _replacement = Encoder::obs(&server.rtmp, "show");
    eventually(
        Duration::from_secs(10),
        "the replaced encoder to be disconnected",
        || {
            if restarted_encoder.exited() {
                Ok(())
            } else {
                Err("still running".into())
            }
        },
    )
    .await;
    let frames = early.stats().video_frames;
    wait_for_frames(
        &early,
        frames + 30,
        Duration::from_secs(10),
        "frames from the replacement",
    )
    .await;
    assert_eq!(server.metric("roomcast_ingest_replaced_total"), 1);
    assert_eq!(room_status(&server, "show")["live"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_stalled_handshakes_do_not_disturb_a_live_stream() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = Server::start();
    let _encoder = Encoder::obs(&server.rtmp, "show");
    let viewer = WhepViewer::connect(&server.url, "show", None)
        .await
        .unwrap();
    wait_for_frames(
        &viewer,
        30,
        Duration::from_secs(15),
        "frames before the garbage",
    )
    .await;

    // Not RTMP at all: the server ends that connection.
    let mut garbage = TcpStream::connect(&server.rtmp).unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    garbage.write_all(&[0xab; 4000]).unwrap();
    garbage
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = garbage.read_to_end(&mut rest);
    // A truncated handshake that stays open, and a valid handshake start then chunk garbage.
    let mut stalled = TcpStream::connect(&server.rtmp).unwrap();
    stalled.write_all(&[3u8; 700]).unwrap();
    let mut half = TcpStream::connect(&server.rtmp).unwrap();
    half.write_all(&[3u8]).unwrap();
    half.write_all(&[0u8; 1536]).unwrap();

    let frames = viewer.stats().video_frames;
    wait_for_frames(
        &viewer,
        frames + 45,
        Duration::from_secs(5),
        "frames during the garbage",
    )
    .await;
    eventually(Duration::from_secs(5), "the garbage counted", || {
        let bad = server.metric("roomcast_ingest_bad_input_total");
        if bad >= 1 {
            Ok(())
        } else {
            Err(format!("{bad}"))
        }
    })
    .await;
    assert!(server.log_text().contains("RTMP handshake failed"));
    assert_eq!(room_status(&server, "show")["live"], true);
    drop((stalled, half));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_frames_are_reported_and_unsupported_audio_still_lets_video_through() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = Server::start();
    // x264 without zerolatency, two B-frames, and MP3 audio in FLV.
    let _encoder = Encoder::push(
        &server.rtmp,
        "bframes",
        &["-bf", "2", "-c:a", "libmp3lame", "-ar", "44100"],
    );
    let viewer = WhepViewer::connect(&server.url, "bframes", None)
        .await
        .unwrap();
    wait_for_frames(
        &viewer,
        30,
        Duration::from_secs(15),
        "video despite MP3 audio",
    )
    .await;
    eventually(
        Duration::from_secs(5),
        "the B-frame warning in the room API",
        || {
            let status = room_status(&server, "bframes");
            let warnings = status["warnings"].to_string();
            if warnings.contains("B-frames")
                && warnings.contains("bframes=0")
                && warnings.contains("MP3")
            {
                Ok(())
            } else {
                Err(status.to_string())
            }
        },
    )
    .await;
    assert_eq!(server.metric("roomcast_ingest_bframe_streams_total"), 1);
    assert!(server.metric("roomcast_ingest_bframe_frames_total") > 0);
    assert_eq!(viewer.stats().audio_packets, 0, "MP3 is not passed on");
    let log = server.log_text();
    assert!(log.contains("B-frames detected"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_keys_are_tokens_outside_dev_mode() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = Server::start_with(&[
        "--api-key",
        "test-key",
        "--api-secret",
        SECRET,
        "--refuse-bframes",
    ]);
    let mint = |grant: &str, ttl: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_roomcast"))
            .args([
                "token",
                "create",
                "--api-key",
                "test-key",
                "--api-secret",
                SECRET,
            ])
            .args([
                "--room",
                "secure",
                "--identity",
                "obs",
                "--name",
                "Studio A",
            ])
            .args(["--grant", grant, "--ttl", ttl])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    };
    let expect_refused = |key: &str, code: &str| {
        let mut encoder = Encoder::obs(&server.rtmp, key);
        encoder.wait_for_exit(&format!("ffmpeg to be refused for {code}"));
        let log = server.log_text();
        assert!(
            log.contains(&format!("code=\"{code}\"")) && log.contains("RTMP publish refused"),
            "no refusal with code {code} in the log:\n{log}"
        );
    };
    expect_refused("not-a-token", "malformed");
    expect_refused(&mint("subscribe", "1h"), "missing_grant");
    // A viewer's claims under a stream key's signature.
    let tampered = {
        let key = mint("ingest", "1h");
        let viewer = mint("subscribe", "2h");
        let mut parts: Vec<&str> = key.split('.').collect();
        parts[1] = viewer.split('.').nth(1).unwrap();
        parts.join(".")
    };
    expect_refused(&tampered, "bad_signature");
    assert!(server.metric("roomcast_ingest_refused_total") >= 3);
    assert_eq!(room_status(&server, "secure")["live"], false);

    // WHEP needs a token too.
    let refused = WhepViewer::connect(&server.url, "secure", None).await;
    assert!(refused.is_err(), "WHEP without a token must be refused");
    let viewer_token = mint("subscribe", "1h");
    let viewer = WhepViewer::connect(&server.url, "secure", Some(&viewer_token))
        .await
        .unwrap();

    // A valid key publishes, under the token's display name.
    let _encoder = Encoder::obs(&server.rtmp, &mint("ingest", "1h"));
    wait_for_frames(
        &viewer,
        30,
        Duration::from_secs(15),
        "frames with a valid stream key",
    )
    .await;
    let status = room_status(&server, "secure");
    assert_eq!(status["host"]["name"], "Studio A", "{status}");

    // This server refuses B-frames: such a stream is ended with the reason in the log.
    let mut bframes = Encoder::push(
        &server.rtmp,
        &mint("ingest", "1h"),
        &["-bf", "2", "-c:a", "aac"],
    );
    bframes.wait_for_exit("the B-frame stream to be ended");
    assert!(server.log_text().contains("server set to refuse B-frames"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_endpoints_refuse_bad_requests_precisely() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = Server::start();
    let host = server.host_port();
    let post =
        |path: &'static str, key: Option<&'static str>, body: (&'static str, &'static str)| {
            let host = host.clone();
            async move {
                http_request(&host, "POST", path, key, Some(body))
                    .await
                    .unwrap()
            }
        };
    let response = post("/whip/show", Some("show"), ("text/plain", "v=0")).await;
    assert_eq!(response.status, 415, "{response:?}");
    let response = post("/whip/show", None, ("application/sdp", "v=0")).await;
    assert_eq!(response.status, 401, "{response:?}");
    assert!(response.body.contains("Authorization"));
    let response = post("/whip/show", Some("other"), ("application/sdp", "v=0")).await;
    assert_eq!(response.status, 401, "{response:?}");
    assert!(response.body.contains("room name"), "{response:?}");
    let response = post("/whip/show", Some("show"), ("application/sdp", "not sdp")).await;
    assert_eq!(response.status, 400, "{response:?}");
    let response = post("/whep/bad%20room", None, ("application/sdp", "v=0")).await;
    assert_eq!(response.status, 400, "{response:?}");
    let response = http_request(&host, "DELETE", "/whep/show/12345", None, None)
        .await
        .unwrap();
    assert_eq!(response.status, 404);
    let response = http_request(&host, "OPTIONS", "/whip/show", None, None)
        .await
        .unwrap();
    assert_eq!(response.status, 204);
    assert_eq!(response.header("access-control-allow-origin"), Some("*"));
    // A real WHEP session is created, listed and ended with DELETE.
    let viewer = WhepViewer::connect(&server.url, "show", None)
        .await
        .unwrap();
    assert!(viewer.location.starts_with("/whep/show/"));
    assert_eq!(server.metric("roomcast_whep_sessions"), 1);
    let status = roomcast_client::whep::delete(&server.url, &viewer.location)
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(server.metric("roomcast_whep_sessions"), 0);
    // Everything still serves.
    assert_eq!(server.get("/healthz").0, 200);
}
