//! HLS end to end: ffmpeg pushes RTMP as OBS would; ffprobe and ffmpeg read the live
//! playlist, an RFC 8216bis checker ([`m3u8`]) reads every playlist, blocking reload and the
//! HTTP headers are checked on the wire, and replays are played back after the broadcast, after
//! a restart and after a crash.
//!
//! Tests in this file run one at a time (each ffmpeg encode takes most of a core).

mod common;
#[path = "common/m3u8.rs"]
mod m3u8;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{HttpResponse, KEY, SECRET, Server, eventually, mint, temp_dir};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// ffmpeg pushing a test pattern and a tone over RTMP as OBS does (x264 zerolatency, 2 s
/// keyframe interval, AAC); killed when dropped.
struct Encoder(Child);

impl Encoder {
    fn obs(rtmp: &str, room: &str, size: &str, seconds: Option<u32>) -> Encoder {
        let limit: Vec<String> = seconds
            .map(|s| vec!["-t".to_string(), s.to_string()])
            .unwrap_or_default();
        let child = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
            .args([
                "-f",
                "lavfi",
                "-i",
                &format!("testsrc2=size={size}:rate=30"),
            ])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args(&limit)
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-tune",
                "zerolatency",
            ])
            .args([
                "-g", "60", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k",
            ])
            .args(["-f", "flv", &format!("rtmp://{rtmp}/live/{room}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("ffmpeg runs (apt-get install ffmpeg)");
        Encoder(child)
    }

    fn wait(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while !matches!(self.0.try_wait(), Ok(Some(_))) {
            assert!(Instant::now() < deadline, "ffmpeg did not finish its push");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn json(server: &Server, path: &str) -> serde_json::Value {
    let (status, body) = server.get(path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("the API returns JSON")
}

/// The live playlist once it lists at least `segments` complete segments.
async fn live_playlist(
    server: &Server,
    room: &str,
    segments: usize,
) -> (HttpResponse, m3u8::Playlist) {
    eventually(Duration::from_secs(30), "the live playlist", || {
        let response = server.fetch(&format!("/hls/{room}/index.m3u8"));
        if response.status != 200 {
            return Err(format!("{} {}", response.status, response.text()));
        }
        let playlist = m3u8::parse(&response.text())?;
        if playlist.segments.len() < segments {
            return Err(format!("{} segments", playlist.segments.len()));
        }
        Ok((response, playlist))
    })
    .await
}

/// `ffprobe`'s view of the streams at `url`: (codec, width, height) each.
fn probe(url: &str) -> Vec<(String, u64, u64)> {
    let output = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height",
        ])
        .args(["-of", "json", url])
        .output()
        .expect("ffprobe runs");
    assert!(
        output.status.success(),
        "ffprobe {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    report["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["codec_name"].as_str().unwrap_or("").to_string(),
                s["width"].as_u64().unwrap_or(0),
                s["height"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// Decode `url` with ffmpeg (`extra` before the output), failing on any error it reports.
/// Returns ffmpeg's final `time=` progress in seconds.
fn decode(url: &str, extra: &[&str]) -> f64 {
    let output = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-v",
            "error",
            "-stats",
            "-i",
            url,
        ])
        .args(extra)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    let log = String::from_utf8_lossy(&output.stderr).to_string();
    let errors: Vec<&str> = log
        .split(['\n', '\r'])
        .filter(|l| !l.trim().is_empty() && !l.contains("time=") && !l.contains("frame="))
        .collect();
    assert!(
        output.status.success() && errors.is_empty(),
        "ffmpeg decoding {url}:\n{log}"
    );
    log.rsplit("time=")
        .next()
        .and_then(|t| t.split_whitespace().next())
        .and_then(|t| {
            let parts: Vec<f64> = t.split(':').filter_map(|p| p.parse().ok()).collect();
            (parts.len() == 3).then(|| parts[0] * 3600.0 + parts[1] * 60.0 + parts[2])
        })
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_is_packaged_as_ll_hls_that_follows_the_rfc_decodes_and_becomes_a_replay() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = Server::start_with(&["--broadcast-end-grace-ms", "1000"]);
    let mut encoder = Encoder::obs(&server.rtmp, "talk", "1280x720", None);
    let (response, first) = live_playlist(&server, "talk", 2).await;

    // HTTP: content type, CORS, short-lived caching for the playlist.
    assert_eq!(
        response.header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    assert_eq!(response.header("access-control-allow-origin"), Some("*"));
    assert!(
        response
            .header("cache-control")
            .is_some_and(|c| c.contains("max-age=1")),
        "{:?}",
        response.headers
    );
    m3u8::check(&first, true).unwrap_or_else(|e| panic!("{e}\n{}", response.text()));
    assert!(
        first.preload_hint.is_some(),
        "a live LL-HLS playlist hints its next part"
    );
    let init = first.segments[0].map.clone().unwrap();
    let init_response = server.fetch(&format!("/hls/talk/{init}"));
    assert_eq!(init_response.status, 200);
    assert_eq!(init_response.header("content-type"), Some("video/mp4"));
    assert!(
        init_response
            .header("cache-control")
            .is_some_and(|c| c.contains("immutable"))
    );
    assert_eq!(&init_response.body[4..8], b"ftyp");
    let part = &first
        .segments
        .last()
        .unwrap()
        .parts
        .first()
        .expect("recent segments list parts")
        .uri;
    let part_response = server.fetch(&format!("/hls/talk/{part}"));
    assert_eq!(part_response.status, 200, "{part}");
    assert!(
        part_response
            .header("cache-control")
            .is_some_and(|c| c.contains("immutable"))
    );
    assert!(part_response.body.windows(4).any(|w| w == b"moof"));

    // Blocking reload (RFC 8216bis §6.2.5.2): the next segment is answered as soon as it
    // exists, within a few target durations; one far ahead is a 400.
    let mut previous = first.clone();
    for _ in 0..3 {
        let next = previous.segments.last().unwrap().msn + 1;
        let started = Instant::now();
        let response = server.fetch(&format!("/hls/talk/index.m3u8?_HLS_msn={next}"));
        let waited = started.elapsed();
        assert_eq!(response.status, 200, "{}", response.text());
        let playlist = m3u8::parse(&response.text()).unwrap();
        m3u8::check(&playlist, true).unwrap_or_else(|e| panic!("{e}\n{}", response.text()));
        m3u8::check_reload(&previous, &playlist).unwrap();
        assert!(
            playlist.segments.iter().any(|s| s.msn == next),
            "segment {next} missing:\n{}",
            response.text()
        );
        assert!(
            waited < Duration::from_secs(3 * first.target_duration.unwrap()),
            "waited {waited:?}"
        );
        previous = playlist;
    }
    let next = previous.segments.last().unwrap().msn + 1;
    let started = Instant::now();
    let response = server.fetch(&format!("/hls/talk/index.m3u8?_HLS_msn={next}&_HLS_part=0"));
    assert_eq!(response.status, 200);
    let with_part = m3u8::parse(&response.text()).unwrap();
    assert!(
        !with_part.trailing_parts.is_empty() || with_part.segments.iter().any(|s| s.msn == next)
    );
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "part wait {:?}",
        started.elapsed()
    );
    let too_far = server.fetch(&format!("/hls/talk/index.m3u8?_HLS_msn={}", next + 10));
    assert_eq!(too_far.status, 400, "{}", too_far.text());
    assert_eq!(server.fetch("/hls/talk/0-0/seg-1.m4s").status, 404);
    assert_eq!(
        server
            .fetch("/hls/talk/nonsense/..%2F..%2Fetc%2Fpasswd")
            .status,
        404
    );
    assert_eq!(server.fetch("/hls/nobody/index.m3u8").status, 404);

    // Real players: ffprobe sees H.264 1280×720 and AAC; ffmpeg decodes 5 s without an error.
    let url = format!("{}/hls/talk/index.m3u8", server.url);
    let streams = probe(&url);
    assert!(streams.contains(&("h264".into(), 1280, 720)), "{streams:?}");
    assert!(streams.iter().any(|s| s.0 == "aac"), "{streams:?}");
    let decoded = decode(&url, &["-t", "5"]);
    assert!(decoded >= 4.0, "decoded only {decoded} s");
    assert_eq!(server.metric("roomcast_hls_live_broadcasts"), 1);

    // The push stops: after the grace the broadcast is a replay that plays start to end.
    // A replay of some length: stop once the broadcast has 5 segments.
    eventually(Duration::from_secs(30), "segment 4", || {
        let playlist = m3u8::parse(&server.fetch("/hls/talk/index.m3u8").text())?;
        let last = playlist.segments.last().map_or(0, |s| s.msn);
        if last >= 4 {
            Ok(())
        } else {
            Err(format!("last segment {last}"))
        }
    })
    .await;
    let _ = encoder.0.kill();
    encoder.wait(Duration::from_secs(5));
    let replay = eventually(Duration::from_secs(15), "the replay in /api/rooms", || {
        let directory = json(&server, "/api/rooms");
        directory["replays"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["room"] == "talk").cloned())
            .ok_or_else(|| directory.to_string())
    })
    .await;
    let replay_url = replay["url"].as_str().unwrap().to_string();
    let vod = server.fetch(&replay_url);
    assert_eq!(vod.status, 200, "{replay_url}: {}", vod.text());
    let playlist = m3u8::parse(&vod.text()).unwrap();
    m3u8::check(&playlist, false).unwrap_or_else(|e| panic!("{e}\n{}", vod.text()));
    assert!(
        playlist.ended && playlist.playlist_type.as_deref() == Some("VOD"),
        "{}",
        vod.text()
    );
    let listed: f64 = playlist.segments.iter().map(|s| s.duration).sum();
    let duration = replay["duration_s"].as_f64().unwrap();
    assert!((listed - duration).abs() < 0.01, "{listed} vs {duration}");
    assert!(duration > 8.0, "replay of {duration} s");
    let played = decode(&format!("{}{replay_url}", server.url), &[]);
    assert!(
        (played - duration).abs() < 1.0,
        "played {played} s of {duration} s"
    );
    // The live URL now ends too, so players stop cleanly; briefly cached, as the room's next
    // broadcast may start at any moment.
    let ended = server.fetch("/hls/talk/index.m3u8");
    assert_eq!(ended.header("cache-control"), Some("public, max-age=1"));
    let live = m3u8::parse(&ended.text()).unwrap();
    assert!(live.ended);
    assert_eq!(server.metric("roomcast_hls_live_broadcasts"), 0);

    // The room's next broadcast continues the media sequence numbers, so a cached answer to
    // `?_HLS_msn=N` can never be the previous broadcast's playlist.
    let last_msn = live.segments.last().unwrap().msn;
    let _again = Encoder::obs(&server.rtmp, "talk", "640x360", None);
    let next = eventually(Duration::from_secs(30), "the next broadcast", || {
        let playlist = m3u8::parse(&server.fetch("/hls/talk/index.m3u8").text())?;
        if playlist.ended || playlist.segments.is_empty() {
            return Err("still the ended broadcast".to_string());
        }
        Ok(playlist)
    })
    .await;
    assert!(
        next.segments[0].msn > last_msn,
        "the next broadcast starts at {} after {last_msn}",
        next.segments[0].msn
    );
    // Players of the ended broadcast still get the parts its final playlist lists.
    let old_part = live
        .segments
        .iter()
        .rev()
        .find_map(|s| s.parts.last())
        .expect("the final playlist lists the last parts")
        .uri
        .clone();
    let response = server.fetch(&format!("/hls/talk/{old_part}"));
    assert_eq!(response.status, 200, "{old_part}: {}", response.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_dev_mode_playlists_need_a_subscribe_token_and_are_cached_privately() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = Server::start_with(&["--api-key", KEY, "--api-secret", SECRET]);
    let viewer = mint("stage", "viewer", "subscribe");
    let elsewhere = mint("elsewhere", "viewer", "subscribe");
    let _encoder = Encoder::obs(
        &server.rtmp,
        &mint("stage", "obs", "ingest"),
        "640x360",
        None,
    );

    // Refusals name the scheme (RFC 6750 §3), and say why.
    let anonymous = server.fetch("/hls/stage/index.m3u8");
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
    assert_eq!(
        anonymous.header("www-authenticate"),
        Some(r#"Bearer realm="roomcast""#)
    );
    assert!(anonymous.text().contains("?token="), "{}", anonymous.text());
    let wrong_room = server.fetch(&format!("/hls/stage/index.m3u8?token={elsewhere}"));
    assert_eq!(wrong_room.status, 401, "{}", wrong_room.text());
    assert_eq!(
        wrong_room.header("www-authenticate"),
        Some(r#"Bearer realm="roomcast", error="invalid_token""#)
    );

    // A token in the URL or as a Bearer header lets a viewer in; shared caches must not keep
    // what a token unlocked.
    let in_url = format!("/hls/stage/index.m3u8?token={viewer}");
    let playlist = eventually(Duration::from_secs(30), "the live playlist", || {
        let response = server.fetch(&in_url);
        if response.status == 200 {
            Ok(response)
        } else {
            Err(format!("{} {}", response.status, response.text()))
        }
    })
    .await;
    assert_eq!(playlist.header("cache-control"), Some("private, max-age=1"));
    let bearer = format!("Bearer {viewer}");
    let with_header =
        server.fetch_with_headers("/hls/stage/index.m3u8", &[("Authorization", &bearer)]);
    assert_eq!(with_header.status, 200, "{}", with_header.text());
    assert_eq!(
        with_header.header("cache-control"),
        Some("private, max-age=1")
    );

    // RFC 8216bis §6.2.5.2: _HLS_part without _HLS_msn is a client error.
    let part_only = server.fetch(&format!("{in_url}&_HLS_part=0"));
    assert_eq!(part_only.status, 400, "{}", part_only.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_survive_a_restart_and_a_crash() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = temp_dir("replay-restart");
    let dir_arg = dir.display().to_string();
    let args = [
        "--replay-dir",
        dir_arg.as_str(),
        "--broadcast-end-grace-ms",
        "500",
    ];

    // A broadcast that ends by itself, then a clean restart.
    let mut server = Server::start_with(&args);
    let mut encoder = Encoder::obs(&server.rtmp, "first", "640x360", Some(5));
    encoder.wait(Duration::from_secs(30));
    let listed = |server: &Server, room: &str| {
        json(server, "/api/rooms")["replays"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["room"] == room)
            .cloned()
    };
    let first = eventually(Duration::from_secs(15), "the first replay", || {
        listed(&server, "first").ok_or("not listed yet".to_string())
    })
    .await;
    assert!(
        server.terminate(Duration::from_secs(10)).is_some(),
        "SIGTERM stops the server"
    );
    drop(server);
    let server = Server::start_with(&args);
    assert_eq!(listed(&server, "first"), Some(first.clone()));
    let url = format!("{}{}", server.url, first["url"].as_str().unwrap());
    decode(&url, &[]);

    // A crash mid-broadcast: the next start finishes the replay from what reached the disk.
    let _encoder = Encoder::obs(&server.rtmp, "second", "640x360", None);
    live_playlist(&server, "second", 3).await;
    drop(server); // SIGKILL
    let server = Server::start_with(&args);
    let second = listed(&server, "second").expect("the crashed broadcast is a replay");
    assert!(second["duration_s"].as_f64().unwrap() >= 2.0, "{second}");
    let vod = server.fetch(second["url"].as_str().unwrap());
    let playlist = m3u8::parse(&vod.text()).unwrap();
    m3u8::check(&playlist, false).unwrap_or_else(|e| panic!("{e}\n{}", vod.text()));
    decode(
        &format!("{}{}", server.url, second["url"].as_str().unwrap()),
        &[],
    );
    assert!(
        server
            .log_text()
            .contains("finished a replay cut short by a restart")
    );
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_replays_what_slides_out_of_the_window_is_gone() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let server = Server::start_with(&["--replay-retention-hours", "0", "--hls-window", "3"]);
    let _encoder = Encoder::obs(&server.rtmp, "short", "640x360", None);
    let (_, first) = live_playlist(&server, "short", 1).await;
    let oldest = first.segments[0].clone();
    eventually(
        Duration::from_secs(30),
        "the oldest segment to slide out",
        || {
            let playlist = m3u8::parse(&server.fetch("/hls/short/index.m3u8").text())?;
            if playlist.media_sequence > oldest.msn {
                Ok(())
            } else {
                Err(format!("media sequence {}", playlist.media_sequence))
            }
        },
    )
    .await;
    let gone = server.fetch(&format!("/hls/short/{}", oldest.uri));
    assert_eq!(gone.status, 410, "{}", gone.text());
    assert!(
        json(&server, "/api/rooms")["replays"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}
