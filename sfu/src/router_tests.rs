//! Router tests on the in-memory harness ([`crate::testing`]).

use std::time::Duration;

use super::*;
use crate::testing::{HOST, World};

#[test]
fn three_peers_exchange_video_and_late_joiners_start_on_a_keyframe() {
    let mut world = World::default();
    world.join("room", "a").unwrap();
    world.join("room", "b").unwrap();
    world.run_for(Duration::from_secs(2));
    let (a, b) = (world.clients[0].id, world.clients[1].id);
    assert!(world.clients[0].video_frames.get(&b).copied().unwrap_or(0) > 20);
    assert!(world.clients[1].video_frames.get(&a).copied().unwrap_or(0) > 20);

    // A late joiner: the publishers only send keyframes on request, so the first frame it
    // decodes from each of them being a keyframe shows the SFU asked and waited.
    let requests_before = world.clients[0].keyframe_requests;
    world.join("room", "c").unwrap();
    world.run_for(Duration::from_secs(1));
    started_on_keyframes(&world.clients[2], &[a, b]);
    assert!(world.clients[0].keyframe_requests > requests_before);
    let metrics = world.router.metrics();
    assert_eq!(
        metrics
            .participants
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    assert_eq!(
        metrics.consumers.load(std::sync::atomic::Ordering::Relaxed),
        12
    );
}

#[test]
fn late_joiners_receive_existing_tracks_on_their_first_offer() {
    let mut world = World::with_room_limit(4);
    world.join("room", "a").unwrap();
    world.join("room", "b").unwrap();
    world.run_for(Duration::from_secs(1));
    let (a, b) = (world.clients[0].id, world.clients[1].id);

    // The join reported a's and b's tracks; the first offer receives all four: the answer maps
    // them, no server offer is needed, and the first frames are requested keyframes.
    let c = world.join_receiving_existing("room", "c", &[]).unwrap();
    assert_eq!(world.clients[c].tracks.len(), 4);
    world.run_for(Duration::from_secs(1));
    assert_eq!(
        world.clients[c].offers, 0,
        "everything was in the client's own offer"
    );
    started_on_keyframes(&world.clients[c], &[a, b]);

    // A receive m-line for a track that is not (or no longer) in the room carries nothing and
    // is stopped by the server's next offer; the real ones are unaffected.
    let c_id = world.clients[c].id;
    let d = world
        .join_receiving_existing("room", "d", &[TrackId(u64::MAX)])
        .unwrap();
    assert_eq!(
        world.clients[d].tracks.len(),
        6,
        "the stray mid is not mapped"
    );
    world.run_for(Duration::from_secs(1));
    let late = &world.clients[d];
    assert_eq!(
        late.offers, 1,
        "one server offer, stopping the stray m-line"
    );
    assert_eq!(late.tracks.len(), 6);
    started_on_keyframes(late, &[a, b, c_id]);
}

/// `late` decoded video from each publisher, starting on a keyframe: the publishers send
/// keyframes only on request, so the SFU asked and waited.
fn started_on_keyframes(late: &crate::testing::Client, publishers: &[ParticipantId]) {
    for publisher in publishers {
        assert!(
            late.video_frames.get(publisher).copied().unwrap_or(0) > 10,
            "{publisher}: late joiner got {:?}",
            late.video_frames
        );
        assert_eq!(late.first_frame_keyframe.get(publisher), Some(&true));
    }
}

#[test]
fn a_leaver_is_announced_and_its_forwarding_stops() {
    let mut world = World::default();
    world.join("room", "a").unwrap();
    world.join("room", "b").unwrap();
    world.run_for(Duration::from_secs(1));
    let b = world.clients[1].id;
    world.leave(1);
    world.run_for(Duration::from_millis(200));
    assert_eq!(world.clients[0].left, vec![b]);
    let frames = world.clients[0].video_frames[&b];
    world.run_for(Duration::from_secs(1));
    assert_eq!(world.clients[0].video_frames[&b], frames);
    let metrics = world.router.metrics();
    assert_eq!(
        metrics.consumers.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(
        metrics.producers.load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[test]
fn rooms_are_isolated_and_capped() {
    let mut world = World::default();
    world.join("one", "a").unwrap();
    world.join("two", "b").unwrap();
    world.run_for(Duration::from_secs(1));
    assert!(world.clients[0].video_frames.is_empty());
    assert!(world.clients[1].video_frames.is_empty());
    world.join("one", "c").unwrap();
    world.join("one", "d").unwrap();
    assert!(matches!(
        world.join("one", "e"),
        Err(SfuError::RoomFull { limit: 3, .. })
    ));
}

#[test]
fn protocol_misuse_is_refused_precisely() {
    let mut world = World::default();
    let index = world.join("room", "a").unwrap();
    let id = world.clients[index].id;
    assert_eq!(
        world.command(|reply| Command::Answer {
            participant: id,
            sdp: "v=0".into(),
            reply
        }),
        Err(SfuError::NoPendingOffer)
    );
    assert!(matches!(
        world.command(|reply| Command::Offer {
            participant: id,
            sdp: "garbage".into(),
            sources: Vec::new(),
            receive: Vec::new(),
            reply
        }),
        Err(SfuError::BadSdp(_))
    ));
    assert!(matches!(
        world.command(|reply| Command::Candidate {
            participant: id,
            candidate: "candidate:x".into(),
            reply
        }),
        Err(SfuError::BadCandidate(_))
    ));
    let stranger = ParticipantId::next();
    assert_eq!(
        world.command(|reply| Command::Offer {
            participant: stranger,
            sdp: "v=0".into(),
            sources: Vec::new(),
            receive: Vec::new(),
            reply
        }),
        Err(SfuError::UnknownParticipant(stranger))
    );
    // Garbage datagrams from anywhere are counted and change nothing.
    world.router.handle_datagram(
        world.now,
        "10.9.9.9:1".parse().unwrap(),
        &[0xde, 0xad],
        &mut world.to_clients,
    );
    world.router.handle_datagram(
        world.now,
        "10.9.9.9:1".parse().unwrap(),
        &[0x80; 40],
        &mut world.to_clients,
    );
    assert_eq!(
        world
            .router
            .metrics()
            .datagrams_dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[test]
fn a_peer_whose_media_goes_silent_is_removed() {
    let mut world = World::default();
    world.join("room", "a").unwrap();
    world.join("room", "b").unwrap();
    world.run_for(Duration::from_secs(1));
    // b vanishes without a word (its signaling connection lingers, its network is gone).
    let b = world.clients.remove(1);
    world.run_for(MEDIA_SILENCE_TIMEOUT - Duration::from_secs(2));
    assert!(world.clients[0].left.is_empty(), "removed too early");
    world.run_for(Duration::from_secs(3));
    assert_eq!(world.clients[0].left, vec![b.id]);
    assert_eq!(world.router.participant_count(), 1);
}

#[test]
fn ingest_frames_reach_room_members_from_a_keyframe() {
    let mut world = World::default();
    world.join_subscriber("show", "viewer").unwrap();
    let mut host = world.join_ingest("show", "obs").unwrap();
    // Start mid-GOP: the subscriber must not see the delta frames before the next keyframe,
    // and nothing can be asked of an RTMP encoder, so no keyframe request may be counted.
    host.frames = 10;
    world.run_with_ingest(&mut host, Duration::from_secs(3), 30);
    let viewer = &world.clients[0];
    let frames = viewer.video_frames.get(&host.id).copied().unwrap_or(0);
    assert!(frames > 40, "viewer decoded {frames} ingest frames");
    assert_eq!(viewer.first_frame_keyframe.get(&host.id), Some(&true));
    let requests = world
        .router
        .metrics()
        .keyframe_requests
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(requests, 0);
}

#[test]
fn host_followers_play_the_host_across_reconnects_without_renegotiation() {
    let mut world = World::default();
    let mut host = world.join_ingest("show", "obs").unwrap();
    world.join_host_follower("show", "whep").unwrap();
    world.run_with_ingest(&mut host, Duration::from_secs(2), 30);
    let first = world.clients[0]
        .video_frames
        .get(&HOST)
        .copied()
        .unwrap_or(0);
    assert!(first > 20, "follower decoded {first} frames");

    // The encoder drops: its participant leaves; a new one (new source id, timestamps from
    // zero again) takes over, and the follower plays it on the same m-line.
    world.router.handle_command(
        world.now,
        Command::Leave {
            participant: host.id,
            reason: LeaveReason::Disconnected,
        },
        &mut world.to_clients,
    );
    world.run_for(Duration::from_millis(500));
    let info = world.router.room_info("show").unwrap();
    assert_eq!(info.host, None);
    let mut host = world.join_ingest("show", "obs").unwrap();
    world.run_with_ingest(&mut host, Duration::from_secs(2), 30);
    let follower = &world.clients[0];
    let second = follower.video_frames.get(&HOST).copied().unwrap_or(0) - first;
    assert!(
        second > 20,
        "after the reconnect the follower decoded {second} frames"
    );
    assert_eq!(follower.offers, 0, "a host follower is never renegotiated");
    let info = world.router.room_info("show").unwrap();
    assert_eq!(info.participants, 2);
    assert_eq!(info.viewers, 1);
    assert_eq!(info.host.map(|h| h.id), Some(host.id));
}

#[test]
fn host_followers_are_invisible_and_publish_only_participants_receive_nothing() {
    let mut world = World::default();
    world.join("room", "member").unwrap();
    world.join_host_follower("room", "whep").unwrap();
    let host = world.join_ingest("room", "obs").unwrap();
    let member = &mut world.clients[0];
    let mut joined = Vec::new();
    while let Ok(event) = member.events.try_recv() {
        if let SessionEvent::ParticipantJoined(p) = event {
            joined.push(p.name);
        }
    }
    assert_eq!(
        joined,
        vec!["obs".to_string()],
        "the WHEP viewer is not announced"
    );
    world.run_for(Duration::from_secs(1));
    // The follower plays the member (the first publisher in join order); the ingest
    // participant has no consumers at all.
    let member_id = world.clients[0].id;
    let info = world.router.room_info("room").unwrap();
    assert_eq!(info.host.map(|h| h.id), Some(member_id));
    assert!(
        world.clients[1]
            .video_frames
            .get(&HOST)
            .copied()
            .unwrap_or(0)
            > 10
    );
    let error = world
        .command(|reply| Command::PublishIngest {
            participant: member_id,
            kind: MediaKind::Video,
            reply,
        })
        .unwrap_err();
    assert_eq!(error, SfuError::NotIngest(member_id));
    drop(host);
}

#[test]
fn the_node_room_limit_counts_open_rooms_and_frees_closed_ones() {
    let mut world = World::with_limits(3, 2);
    world.join("a", "ada").unwrap();
    world.join("b", "bob").unwrap();
    world.join("a", "amy").unwrap(); // an existing room costs nothing
    let error = world.join("c", "cat").unwrap_err();
    assert_eq!(error, SfuError::TooManyRooms { limit: 2 });
    // Closing room b (an admin) frees its place.
    let (reply, mut removed) = tokio::sync::oneshot::channel();
    world.router.handle_command(
        world.now,
        Command::CloseRoom {
            room: "b".into(),
            reply,
        },
        &mut world.to_clients,
    );
    assert_eq!(removed.try_recv().unwrap(), 1);
    world.join("c", "cat").unwrap();
}

#[test]
fn admins_kick_and_mute() {
    let mut world = World::default();
    world.join("room", "a").unwrap();
    world.join("room", "b").unwrap();
    world.join("room", "c").unwrap();
    world.run_for(Duration::from_secs(1));
    let (a, b, c) = (
        world.clients[0].id,
        world.clients[1].id,
        world.clients[2].id,
    );

    // Muting b stops its video at the SFU for everyone; unmuting resumes it.
    let muted = world
        .command(|reply| Command::SetMuted {
            room: "room".into(),
            participant: b,
            track: None,
            muted: true,
            by: MutedBy::Admin,
            reply,
        })
        .unwrap();
    assert_eq!(muted.len(), 2, "audio and video");
    world.run_for(Duration::from_millis(200));
    let frames = world.clients[0].video_frames[&b];
    world.run_for(Duration::from_secs(1));
    assert_eq!(
        world.clients[0].video_frames[&b], frames,
        "muted: nothing forwarded"
    );
    assert!(
        world.clients[0].video_frames[&c] > frames,
        "others still flow"
    );
    world
        .command(|reply| Command::SetMuted {
            room: "room".into(),
            participant: b,
            track: None,
            muted: false,
            by: MutedBy::Admin,
            reply,
        })
        .unwrap();
    world.run_for(Duration::from_secs(1));
    assert!(
        world.clients[0].video_frames[&b] > frames + 10,
        "unmuted: flowing again"
    );
    let error = world
        .command(|reply| Command::SetMuted {
            room: "other".into(),
            participant: b,
            track: None,
            muted: true,
            by: MutedBy::Admin,
            reply,
        })
        .unwrap_err();
    assert_eq!(error, SfuError::UnknownParticipant(b));

    // Kicking c: gone for the others, with the reason; a kick in the wrong room does nothing.
    let kick = |world: &mut World, room: &str, participant| {
        let (reply, mut result) = tokio::sync::oneshot::channel();
        world.router.handle_command(
            world.now,
            Command::Kick {
                room: room.into(),
                participant,
                reply,
            },
            &mut world.to_clients,
        );
        result.try_recv().unwrap()
    };
    assert!(!kick(&mut world, "other", c));
    assert!(kick(&mut world, "room", c));
    world.run_for(Duration::from_millis(100));
    assert_eq!(world.clients[0].left, vec![c]);
    assert!(
        world
            .router
            .room_info("room")
            .is_some_and(|i| i.participants == 2)
    );
    let _ = a;
}

#[test]
fn the_first_publisher_is_on_stage_and_only_its_packets_are_tapped() {
    let mut world = World::default();
    world.join("room", "a").unwrap();
    world.join("room", "b").unwrap();
    world.run_for(Duration::from_secs(1));
    let (a, b) = (world.clients[0].id, world.clients[1].id);
    let changes = world.stage_changes();
    assert_eq!(changes.len(), 1, "{changes:?}");
    let stage = changes[0].stage.as_ref().expect("a stage");
    assert_eq!(
        (&*changes[0].room, stage.participant, stage.ingest),
        ("room", a, false)
    );
    let packets = world.stage_packets();
    assert!(packets.len() > 50, "{} packets tapped", packets.len());
    assert!(packets.iter().all(|p| p.participant == a));
    assert!(packets.iter().any(|p| p.kind == MediaKind::Video));
    assert!(packets.iter().any(|p| p.kind == MediaKind::Audio));
    assert_eq!(world.clients[1].stage_events, vec![Some(a)]);

    // An admin's choice moves the stage; an unknown participant is refused.
    let chosen = world.command(|reply| Command::SetStage {
        room: "room".into(),
        participant: Some(b),
        reply,
    });
    assert_eq!(chosen, Ok(Some(b)));
    assert!(matches!(
        world.command(|reply| Command::SetStage {
            room: "room".into(),
            participant: Some(ParticipantId(999)),
            reply,
        }),
        Err(SfuError::UnknownParticipant(_))
    ));
    world.run_for(Duration::from_millis(500));
    let changes = world.stage_changes();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].stage.as_ref().map(|s| s.participant), Some(b));
    let packets = world.stage_packets();
    assert!(!packets.is_empty());
    assert!(packets.iter().all(|p| p.participant == b));

    // The chosen stage leaves: back to the host; the host leaves: nobody.
    world.leave(1);
    world.run_for(Duration::from_millis(200));
    let changes = world.stage_changes();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].stage.as_ref().map(|s| s.participant), Some(a));
    world.leave(0);
    world.run_for(Duration::from_millis(200));
    let changes = world.stage_changes();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].stage, None);
    world.stage_packets();
    world.run_for(Duration::from_millis(200));
    assert!(world.stage_packets().is_empty());
}

#[test]
fn an_ingest_host_on_stage_is_reported_but_never_tapped() {
    let mut world = World::default();
    let mut host = world.join_ingest("live", "obs").unwrap();
    world.join_subscriber("live", "viewer").unwrap();
    world.run_with_ingest(&mut host, Duration::from_secs(1), 30);
    let changes = world.stage_changes();
    assert_eq!(changes.len(), 1, "{changes:?}");
    let stage = changes[0].stage.as_ref().expect("a stage");
    assert_eq!((stage.participant, stage.ingest), (host.id, true));
    assert!(world.stage_packets().is_empty());
}

#[test]
fn owners_mute_their_tracks_but_cannot_lift_an_admin_mute() {
    let mut world = World::default();
    world.join("room", "a").unwrap();
    world.join("room", "b").unwrap();
    world.run_for(Duration::from_secs(1));
    let b = world.clients[1].id;
    let b_audio = world.clients[1]
        .published
        .iter()
        .find(|(p, t)| *p == b && t.kind == MediaKind::Audio)
        .map(|(_, t)| t.clone())
        .expect("a publisher hears of its own tracks");
    assert_eq!(b_audio.source, TrackSource::Microphone);
    assert!(!b_audio.muted);
    let set = |world: &mut World, muted: bool, by: MutedBy| {
        world.command(|reply| Command::SetMuted {
            room: "room".into(),
            participant: b,
            track: Some(b_audio.id),
            muted,
            by,
            reply,
        })
    };

    assert_eq!(
        set(&mut world, true, MutedBy::Owner).unwrap(),
        vec![b_audio.id]
    );
    assert_eq!(
        set(&mut world, false, MutedBy::Owner).unwrap(),
        vec![b_audio.id]
    );
    set(&mut world, true, MutedBy::Admin).unwrap();
    assert_eq!(
        set(&mut world, false, MutedBy::Owner),
        Err(SfuError::MutedByAdmin(b_audio.id)),
        "the owner cannot unmute what a host muted"
    );
    assert_eq!(
        set(&mut world, false, MutedBy::Admin).unwrap(),
        vec![b_audio.id]
    );
}

#[test]
fn the_loudest_speaker_becomes_dominant_and_everyone_hears_of_it() {
    let mut world = World::default();
    world.join("room", "a").unwrap();
    world.join("room", "b").unwrap();
    world.run_for(Duration::from_secs(1));
    let b = world.clients[1].id;
    world.clients[0].audio_level = Some(90); // background noise
    world.clients[1].audio_level = Some(25); // speech
    world.run_for(Duration::from_secs(2));
    for client in &world.clients {
        assert_eq!(
            client.speaker_events,
            vec![Some(b)],
            "{} hears b named once",
            client.id
        );
    }
    // A late joiner is told the current dominant speaker at once.
    world.join("room", "c").unwrap();
    world.run_for(Duration::from_millis(300));
    assert_eq!(world.clients[2].speaker_events.first(), Some(&Some(b)));
    // b falls silent and c speaks up: c takes over.
    world.clients[1].audio_level = Some(127);
    world.clients[2].audio_level = Some(20);
    world.run_for(Duration::from_secs(3));
    let c = world.clients[2].id;
    assert_eq!(world.clients[0].speaker_events.last(), Some(&Some(c)));
}
