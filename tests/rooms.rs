//! Several str0m participants in one room through a real `roomcast serve` process: every
//! participant receives every other's audio and video; leavers vanish; late joiners get a
//! keyframe on request.

mod common;

use std::time::{Duration, Instant};

use common::{Server, eventually};
use roomcast_client::{Participant, ParticipantOptions, PublishOptions};

fn options(server: &Server, room: &str, name: &str) -> ParticipantOptions {
    ParticipantOptions {
        server: server.url.clone(),
        room: room.into(),
        name: name.into(),
        publish: Some(PublishOptions {
            video_bitrate_bps: 300_000,
            fps: 30,
            // Only the first frame and requested ones are keyframes: a late joiner sees video
            // only if the SFU asks the publisher for a keyframe.
            keyframe_interval: None,
            simulcast: false,
        }),
        bind_ip: "127.0.0.1".parse().unwrap(),
        token: None,
        tile_width: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_receive_each_other_leave_and_join_late() {
    let server = Server::start();
    let room = "rust-room";
    let mut participants = Vec::new();
    for i in 0..4 {
        participants.push(
            Participant::join(options(&server, room, &format!("peer{i}")))
                .await
                .unwrap(),
        );
    }
    let ids: Vec<_> = participants.iter().map(|p| p.id()).collect();

    // Everyone receives video and audio from each of the three others, with frames flowing.
    eventually(
        Duration::from_secs(20),
        "every participant to receive 30 video and 30 audio frames from each other",
        || {
            for p in &participants {
                let stats = p.stats();
                if let Some(ended) = &stats.ended {
                    return Err(format!("{} ended: {ended}", p.id()));
                }
                for other in ids.iter().filter(|&&id| id != p.id()) {
                    let remote = stats.remote.get(other).cloned().unwrap_or_default();
                    if remote.video_frames < 30 || remote.audio_frames < 30 {
                        return Err(format!(
                            "{} from {}: {} video, {} audio",
                            p.id(),
                            other,
                            remote.video_frames,
                            remote.audio_frames
                        ));
                    }
                }
            }
            Ok(())
        },
    )
    .await;
    for p in &participants {
        let stats = p.stats();
        for (from, remote) in &stats.remote {
            let mut delays: Vec<u64> = remote.frames.iter().map(|f| f.delay_us).collect();
            delays.sort_unstable();
            let p50 = delays[delays.len() / 2];
            assert!(
                p50 < 100_000,
                "{} from {from}: median end-to-end delay {p50} µs on loopback",
                p.id()
            );
        }
    }
    assert!(server.metric("roomcast_rtp_packets_forwarded_total") > 0);
    assert_eq!(server.metric("roomcast_participants"), 4);
    assert_eq!(server.metric("roomcast_tracks"), 8);
    assert_eq!(server.metric("roomcast_consumers"), 24);

    // One participant leaves: the others are told and stop receiving its m-lines.
    let leaver = participants.pop().unwrap();
    let leaver_id = leaver.id();
    leaver.leave().await;
    let left_at = Instant::now();
    eventually(
        Duration::from_secs(2),
        "the others to see the leaver go and its tracks stop",
        || {
            for p in &participants {
                let stats = p.stats();
                if !stats.left.contains_key(&leaver_id) {
                    return Err(format!("{} not told about {leaver_id}", p.id()));
                }
                if stats.active_mids != 4 {
                    return Err(format!(
                        "{} still has {} forwarded m-lines",
                        p.id(),
                        stats.active_mids
                    ));
                }
            }
            Ok(())
        },
    )
    .await;
    println!("leave propagated in {:?}", left_at.elapsed());

    // A late joiner receives video from all three within a second of connecting.
    let late = Participant::join(options(&server, room, "late"))
        .await
        .unwrap();
    let connected_at = eventually(
        Duration::from_secs(10),
        "the late joiner to connect",
        || {
            late.stats()
                .connected_at
                .ok_or_else(|| "not connected".to_string())
        },
    )
    .await;
    let remaining: Vec<_> = participants.iter().map(|p| p.id()).collect();
    let first_video = eventually(
        Duration::from_secs(5),
        "the late joiner to receive video from everyone",
        || {
            let stats = late.stats();
            remaining
                .iter()
                .map(|id| {
                    stats
                        .remote
                        .get(id)
                        .and_then(|r| r.first_video_at)
                        .ok_or_else(|| format!("no video from {id} yet"))
                })
                .collect::<Result<Vec<_>, _>>()
        },
    )
    .await;
    let slowest = first_video
        .iter()
        .max()
        .unwrap()
        .saturating_duration_since(connected_at);
    println!(
        "late joiner: first video from all {} publishers {:?} after connecting",
        remaining.len(),
        slowest
    );
    assert!(
        slowest < Duration::from_secs(1),
        "late joiner waited {slowest:?} for video"
    );
    // The keyframe came from a request (periodic keyframes are off).
    assert!(
        participants
            .iter()
            .all(|p| p.stats().keyframe_requests_received > 0)
    );

    // A participant that vanishes without a word (a killed tab: no `leave`, the WebSocket and
    // media just stop) is gone for the others within 2 s as well.
    let vanishing = participants.pop().unwrap();
    let vanished_id = vanishing.id();
    vanishing.abort();
    let vanished_at = Instant::now();
    eventually(
        Duration::from_secs(2),
        "the others to see the vanished participant go",
        || {
            for p in participants.iter().chain(std::iter::once(&late)) {
                if !p.stats().left.contains_key(&vanished_id) {
                    return Err(format!("{} not told about {vanished_id}", p.id()));
                }
            }
            Ok(())
        },
    )
    .await;
    println!(
        "vanished participant removed in {:?}",
        vanished_at.elapsed()
    );

    late.leave().await;
    for p in participants {
        p.leave().await;
    }
    eventually(Duration::from_secs(5), "the room to empty", || match server
        .metric("roomcast_participants")
    {
        0 => Ok(()),
        n => Err(format!("{n} participants")),
    })
    .await;
    assert_eq!(server.metric("roomcast_rooms"), 0);
    assert_eq!(server.metric("roomcast_consumers"), 0);
}
