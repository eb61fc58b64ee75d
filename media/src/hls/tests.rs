//! Cutting, playlist and lookup tests on synthetic streams. Every published playlist goes
//! through the RFC 8216bis checker the integration tests use (written independently of the
//! writer), and every segment's bytes are decoded back with mp4-atom.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use mp4_atom::{Any, Decode, TrunSamples};

use super::*;
use crate::fmp4::TEST_AVC_RECORD;

/// The integration tests' checker, shared rather than copied. `rustfmt::skip`: it belongs to
/// the root crate's tests, so formatting this crate must not touch it.
#[path = "../../../tests/common/m3u8.rs"]
#[allow(dead_code)]
#[rustfmt::skip]
mod m3u8;

fn wall0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn video() -> VideoTrack {
    VideoTrack {
        avc_config: TEST_AVC_RECORD.to_vec(),
        width: 160,
        height: 120,
    }
}

fn aac() -> AudioTrack {
    AudioTrack::Aac {
        config: vec![0x11, 0x90], // AAC-LC, 48 kHz, stereo
        sample_rate: 48_000,
        channels: 2,
    }
}

fn opus() -> AudioTrack {
    AudioTrack::Opus { channels: 2 }
}

/// A synthetic source: video at `fps` with a keyframe every `gop` frames, and/or audio frames.
#[derive(Clone)]
struct Clip {
    fps: Option<u64>,
    gop: u64,
    audio: Option<AudioTrack>,
    seconds: u64,
    /// First dts of each track (arbitrary, on one clock: video at 90 kHz).
    video_start: u64,
    audio_start_seconds: u64,
    /// Extra composition offset on non-keyframes (B-frame style), in 90 kHz ticks.
    cts_offset: i32,
}

impl Clip {
    fn video(fps: u64, gop: u64, audio: Option<AudioTrack>) -> Clip {
        Clip {
            fps: Some(fps),
            gop,
            audio,
            seconds: 12,
            video_start: 90_000 * 1000,
            audio_start_seconds: 1000,
            cts_offset: 0,
        }
    }

    fn tracks(&self) -> Tracks {
        Tracks {
            video: self.fps.map(|_| video()),
            audio: self.audio.clone(),
        }
    }

    /// Samples with their capture times, in arrival order (interleaved by time).
    fn samples(&self) -> Vec<(Sample, SystemTime)> {
        let mut out: Vec<(f64, Sample)> = Vec::new();
        if let Some(fps) = self.fps {
            let ticks = 90_000 / fps;
            for n in 0..self.seconds * fps {
                let keyframe = n % self.gop == 0;
                out.push((
                    n as f64 / fps as f64,
                    Sample {
                        kind: TrackKind::Video,
                        dts: self.video_start + n * ticks,
                        cts_offset: if keyframe { 0 } else { self.cts_offset },
                        keyframe,
                        data: Bytes::from(vec![
                            0,
                            0,
                            0,
                            2,
                            if keyframe { 0x65 } else { 0x41 },
                            n as u8,
                        ]),
                    },
                ));
            }
        }
        if let Some(audio) = &self.audio {
            let rate = u64::from(audio.timescale());
            let frame = u64::from(audio.typical_frame_duration());
            let count = self.seconds * rate / frame;
            for n in 0..count {
                out.push((
                    (n * frame) as f64 / rate as f64,
                    Sample {
                        kind: TrackKind::Audio,
                        dts: self.audio_start_seconds * rate + n * frame,
                        cts_offset: 0,
                        keyframe: true,
                        data: Bytes::from(vec![0x21, n as u8, 7]),
                    },
                ));
            }
        }
        // Stable: at equal times video comes first.
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out.into_iter()
            .map(|(t, s)| (s, wall0() + Duration::from_secs_f64(t)))
            .collect()
    }
}

/// Checks every published playlist against the RFC checker and against the previous one.
#[derive(Default)]
struct Watcher {
    previous: Option<m3u8::Playlist>,
    playlists: usize,
    max_segments: usize,
    target: Option<u64>,
}

impl Watcher {
    fn check(&mut self, stream: &LiveStream) {
        let Some(text) = stream.playlist() else {
            assert!(stream.segments.is_empty(), "segments but no playlist");
            return;
        };
        let playlist = m3u8::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        m3u8::check(&playlist, true).unwrap_or_else(|e| panic!("{e}\n{text}"));
        if let Some(previous) = &self.previous {
            m3u8::check_reload(previous, &playlist).unwrap_or_else(|e| panic!("{e}\n{text}"));
        }
        assert_eq!(playlist.version, Some(6));
        let target = playlist.target_duration.unwrap();
        assert_eq!(
            *self.target.get_or_insert(target),
            target,
            "TARGETDURATION changed"
        );
        assert_eq!(stream.target_duration(), target);
        assert_eq!(
            playlist.part_target,
            Some(stream.config().part_target.as_secs_f64())
        );
        // The preload hint is the part after the last one listed.
        if let Some(hint) = &playlist.preload_hint {
            let name = hint.trim_start_matches(&stream.config().uri_prefix);
            assert_eq!(stream.get(name), Lookup::Pending, "{text}");
        }
        for uri in playlist
            .segments
            .iter()
            .flat_map(|s| s.parts.iter().map(|p| &p.uri).chain([&s.uri]))
            .chain(playlist.trailing_parts.iter().map(|p| &p.uri))
        {
            let name = uri.trim_start_matches(&stream.config().uri_prefix);
            assert!(
                matches!(stream.get(name), Lookup::Found(_)),
                "{uri} is listed but not served"
            );
        }
        self.max_segments = self.max_segments.max(playlist.segments.len());
        self.playlists += 1;
        self.previous = Some(playlist);
    }
}

fn run(config: HlsConfig, clip: &Clip) -> (LiveStream, Watcher, Vec<FinishedSegment>) {
    let mut stream = LiveStream::new(config);
    stream.set_tracks(clip.tracks()).unwrap();
    let mut watcher = Watcher::default();
    let mut finished = Vec::new();
    for (sample, wall) in clip.samples() {
        let published = stream.push(sample, wall);
        if published.any() {
            watcher.check(&stream);
        }
        finished.extend(stream.take_finished());
    }
    (stream, watcher, finished)
}

/// The boxes of a segment: for each fragment, per track id, (tfdt, sample durations, flags,
/// composition offsets).
type Runs = Vec<HashMap<u32, (u64, Vec<u32>, Vec<u32>, Vec<i64>)>>;

fn fragments(bytes: &[u8]) -> Runs {
    let mut buf = bytes;
    let mut out = Vec::new();
    while !buf.is_empty() {
        match Any::decode(&mut buf).expect("a box") {
            Any::Moof(moof) => {
                let mut tracks = HashMap::new();
                for traf in moof.traf {
                    let TrunSamples::Explicit(entries) = &traf.trun[0].samples else {
                        panic!("trun without per-sample fields");
                    };
                    tracks.insert(
                        traf.tfhd.track_id,
                        (
                            traf.tfdt.unwrap().base_media_decode_time,
                            entries.iter().map(|e| e.duration.unwrap()).collect(),
                            entries.iter().map(|e| e.flags.unwrap()).collect(),
                            entries.iter().map(|e| e.cts.unwrap()).collect(),
                        ),
                    );
                }
                out.push(tracks);
            }
            Any::Mdat(_) => {}
            other => panic!("unexpected box {:?}", other.kind()),
        }
    }
    out
}

/// Every track's timeline runs without gap or overlap across the segments (each sample's
/// duration is the next dts minus its own), and each segment starts with a sync sample.
fn check_media(finished: &[FinishedSegment], video: bool) {
    let mut next_dts: HashMap<u32, u64> = HashMap::new();
    for segment in finished {
        let runs = fragments(&segment.bytes);
        assert!(!runs.is_empty());
        let first = &runs[0];
        let primary = if video {
            VIDEO_TRACK_ID
        } else {
            AUDIO_TRACK_ID
        };
        assert_eq!(
            first[&primary].2[0], 0x0200_0000,
            "{} does not start with a sync sample",
            segment.record.uri
        );
        for fragment in &runs {
            for (track, (tfdt, durations, _, _)) in fragment {
                if let Some(expected) = next_dts.get(track) {
                    assert_eq!(
                        tfdt, expected,
                        "gap in track {track} at {}",
                        segment.record.uri
                    );
                }
                next_dts.insert(
                    *track,
                    tfdt + durations.iter().map(|&d| u64::from(d)).sum::<u64>(),
                );
            }
        }
    }
}

#[test]
fn video_at_30_25_24_fps_with_aac_cuts_on_keyframes_within_part_target() {
    for fps in [30, 25, 24] {
        let clip = Clip::video(fps, 2 * fps, Some(aac()));
        let (stream, watcher, finished) = run(HlsConfig::default(), &clip);
        assert_eq!(watcher.target, Some(2), "{fps} fps: GOPs of 2 s");
        assert!(
            watcher.playlists > 40,
            "{fps} fps: {} playlists",
            watcher.playlists
        );
        assert_eq!(
            stream.counters(),
            HlsCounters {
                samples_accepted: stream.counters().samples_accepted,
                ..HlsCounters::default()
            }
        );
        // 12 s of media; the last GOP is still open.
        assert_eq!(finished.len(), 5, "{fps} fps");
        for segment in &finished {
            assert!(
                (segment.record.duration - 2.0).abs() < 1e-6,
                "{fps}: {:?}",
                segment.record
            );
        }
        check_media(&finished, true);
        let text = stream.playlist().unwrap();
        assert!(text.contains("#EXT-X-INDEPENDENT-SEGMENTS\n"));
        assert!(text.contains("PART-HOLD-BACK=0.600,HOLD-BACK=6.000"));
        // Parts: 6 frames at 30 fps, 5 at 25, 4 at 24 (5 × 41.7 ms would exceed 200 ms).
        let per_part = match fps {
            30 => 6,
            25 => 5,
            _ => 4,
        };
        let expected = format!(
            "#EXT-X-PART:DURATION={},URI=\"part-5-0.m4s\",INDEPENDENT=YES\n",
            part_duration_text(per_part as f64 / fps as f64)
        );
        assert!(text.contains(&expected), "{fps}: no {expected} in\n{text}");
    }
}

/// Per fragment: (video end, audio end) in seconds on the clip's clock.
fn track_ends(finished: &[FinishedSegment]) -> Vec<(f64, f64)> {
    finished
        .iter()
        .flat_map(|segment| fragments(&segment.bytes))
        .map(|runs| {
            let end = |track: u32, rate: f64| {
                let (tfdt, durations, _, _) = &runs[&track];
                (tfdt + durations.iter().map(|&d| u64::from(d)).sum::<u64>()) as f64 / rate
            };
            (end(VIDEO_TRACK_ID, 90_000.0), end(AUDIO_TRACK_ID, 48_000.0))
        })
        .collect()
}

#[test]
fn audio_arriving_after_the_video_still_ends_each_part_with_the_video() {
    // Audio reaches the packager 50 ms after video of the same time (encoders and RTMP
    // interleave loosely). Each part must still carry the audio up to its video end, or a
    // player's buffer (which ends at the earlier track) has holes at part boundaries.
    let clip = Clip::video(30, 30, Some(aac()));
    let mut samples = clip.samples();
    let late = Duration::from_millis(50);
    samples.sort_by_key(|(sample, wall)| match sample.kind {
        TrackKind::Audio => *wall + late,
        TrackKind::Video => *wall,
    });
    let mut stream = LiveStream::new(HlsConfig::default());
    stream.set_tracks(clip.tracks()).unwrap();
    let mut finished = Vec::new();
    for (sample, wall) in samples {
        stream.push(sample, wall);
        finished.extend(stream.take_finished());
    }
    assert!(finished.len() >= 10, "{} segments", finished.len());
    check_media(&finished, true);
    let frame = 1024.0 / 48_000.0;
    for (index, (video_end, audio_end)) in track_ends(&finished).into_iter().enumerate() {
        assert!(
            audio_end >= video_end && audio_end - video_end < frame,
            "fragment {index}: video ends at {video_end:.4} s, audio at {audio_end:.4} s"
        );
    }
}

#[test]
fn at_the_end_the_audio_reaches_the_last_video_frame() {
    // The encoder's audio stops 70 ms before its video (as ffmpeg's does on SIGINT): the last
    // audio frame is stretched to the video's end, so a player's buffer (the earlier of the
    // two tracks) covers the whole last part.
    let clip = Clip {
        seconds: 5,
        ..Clip::video(30, 30, Some(aac()))
    };
    let mut stream = LiveStream::new(HlsConfig::default());
    stream.set_tracks(clip.tracks()).unwrap();
    let mut finished = Vec::new();
    for (sample, wall) in clip.samples() {
        let seconds = wall.duration_since(wall0()).unwrap().as_secs_f64();
        if sample.kind == TrackKind::Audio && seconds > 5.0 - 0.07 - 1.0 / 30.0 {
            continue;
        }
        stream.push(sample, wall);
        finished.extend(stream.take_finished());
    }
    stream.end();
    finished.extend(stream.take_finished());
    let (video_end, audio_end) = *track_ends(&finished).last().unwrap();
    assert!(
        audio_end >= video_end,
        "the last part: video ends at {video_end:.4} s, audio at {audio_end:.4} s"
    );
    assert!(audio_end - video_end < 1024.0 / 48_000.0);
}

#[test]
fn audio_that_stops_holds_the_video_back_by_at_most_a_part_target() {
    // Audio stops after 2 s (a muted or dead track): video parts keep coming, at most
    // PART-TARGET behind the newest video frame.
    let clip = Clip::video(30, 30, Some(aac()));
    let mut stream = LiveStream::new(HlsConfig::default());
    stream.set_tracks(clip.tracks()).unwrap();
    let mut published_parts = 0;
    let mut last_video = 0.0;
    for (sample, wall) in clip.samples() {
        let seconds = wall.duration_since(wall0()).unwrap().as_secs_f64();
        if sample.kind == TrackKind::Audio && seconds >= 2.0 {
            continue;
        }
        if sample.kind == TrackKind::Video {
            last_video = seconds;
        }
        published_parts += stream.push(sample, wall).parts;
    }
    let part_seconds = 0.2;
    // 12 s of video in 0.2 s parts, minus what may still wait (the held frame, a part
    // target of interleaving and the open part).
    let expected = ((last_video - 3.0 * part_seconds) / part_seconds).floor() as usize;
    assert!(
        published_parts >= expected,
        "{published_parts} parts published, expected at least {expected}"
    );
}

#[test]
fn millisecond_timestamps_at_30_fps_make_full_200_ms_parts() {
    // RTMP carries milliseconds: 30 fps arrives as 33, 33, 34 ms frames. Six frames make
    // exactly 200 ms; a part must not close at five (167 ms, under the 85 % of PART-TARGET
    // RFC 8216bis asks of all but a segment's last part) and leave a one-frame part behind.
    let clip = Clip::video(30, 30, None);
    let mut stream = LiveStream::new(HlsConfig::default());
    stream.set_tracks(clip.tracks()).unwrap();
    for (mut sample, wall) in clip.samples() {
        let frame = (sample.dts - clip.video_start) / 3000;
        sample.dts = clip.video_start + (frame * 1000 + 15) / 30 * 90;
        stream.push(sample, wall);
    }
    let playlist = m3u8::parse(&stream.playlist().unwrap()).unwrap();
    let complete: Vec<_> = playlist
        .segments
        .iter()
        .filter(|s| !s.parts.is_empty())
        .collect();
    assert!(complete.len() >= 2);
    for segment in complete {
        let durations: Vec<f64> = segment.parts.iter().map(|p| p.duration).collect();
        assert_eq!(durations, vec![0.2; 5], "{}", segment.uri);
    }
}

#[test]
fn program_date_times_advance_with_the_media_not_with_arrival_jitter() {
    // Capture times jitter by ±40 ms (network, encoder bursts); the dates in the playlist
    // must still follow the media exactly, or players that align reloads by date (hls.js)
    // shift their timeline and leave holes.
    let clip = Clip::video(30, 30, Some(aac()));
    let mut stream = LiveStream::new(HlsConfig::default());
    stream.set_tracks(clip.tracks()).unwrap();
    let mut finished = Vec::new();
    for (index, (sample, wall)) in clip.samples().into_iter().enumerate() {
        let jitter = Duration::from_millis(40);
        let wall = if index % 2 == 0 {
            wall + jitter
        } else {
            wall - jitter
        };
        stream.push(sample, wall);
        finished.extend(stream.take_finished());
    }
    assert!(finished.len() >= 10);
    for pair in finished.windows(2) {
        let between = pair[1]
            .record
            .program_date_time
            .duration_since(pair[0].record.program_date_time)
            .unwrap()
            .as_secs_f64();
        assert!(
            (between - pair[0].record.duration).abs() < 1e-6,
            "{} starts {between} s after {}, which lasts {} s",
            pair[1].record.uri,
            pair[0].record.uri,
            pair[0].record.duration
        );
    }
}

fn part_duration_text(seconds: f64) -> String {
    format!("{:.5}", (seconds * 100_000.0).floor() / 100_000.0)
}

#[test]
fn segments_close_at_the_first_keyframe_after_the_segment_target() {
    // One-second GOPs at 30 fps, 1 s target: 1 s segments of five 200 ms parts.
    let clip = Clip::video(30, 30, Some(aac()));
    let (stream, _, finished) = run(HlsConfig::default(), &clip);
    assert_eq!(stream.target_duration(), 1);
    assert_eq!(finished.len(), 11);
    let text = stream.playlist().unwrap();
    let playlist = m3u8::parse(&text).unwrap();
    for segment in &playlist.segments {
        assert!((segment.duration - 1.0).abs() < 1e-9);
        if !segment.parts.is_empty() {
            assert_eq!(segment.parts.len(), 5);
            assert!(segment.parts[0].independent);
            assert!(segment.parts[1..].iter().all(|p| !p.independent));
        }
    }
    // Parts only for segments within three target durations of the end.
    let with_parts = playlist
        .segments
        .iter()
        .filter(|s| !s.parts.is_empty())
        .count();
    assert!((2..=3).contains(&with_parts), "{with_parts}\n{text}");
}

#[test]
fn audio_only_opus_cuts_parts_and_segments_on_audio_time() {
    let clip = Clip {
        fps: None,
        audio: Some(opus()),
        ..Clip::video(30, 60, None)
    };
    let (stream, watcher, finished) = run(HlsConfig::default(), &clip);
    assert_eq!(watcher.target, Some(1));
    assert_eq!(finished.len(), 11);
    for segment in &finished {
        assert!(
            (segment.record.duration - 1.0).abs() < 1e-9,
            "{:?}",
            segment.record
        );
    }
    check_media(&finished, false);
    let text = stream.playlist().unwrap();
    let playlist = m3u8::parse(&text).unwrap();
    assert!(playlist.independent_segments);
    let parts: Vec<_> = playlist
        .segments
        .iter()
        .flat_map(|s| &s.parts)
        .chain(&playlist.trailing_parts)
        .collect();
    assert!(!parts.is_empty());
    // 10 Opus frames of 20 ms fill a part exactly; every part starts with a sync sample.
    assert!(
        parts
            .iter()
            .all(|p| p.independent && (p.duration - 0.2).abs() < 1e-9)
    );
}

#[test]
fn aac_only_parts_stay_under_the_target() {
    let clip = Clip {
        fps: None,
        audio: Some(aac()),
        ..Clip::video(30, 60, None)
    };
    let (stream, _, finished) = run(HlsConfig::default(), &clip);
    check_media(&finished, false);
    let playlist = m3u8::parse(&stream.playlist().unwrap()).unwrap();
    // 9 frames of 1024 samples: 192 ms.
    assert!(playlist.trailing_parts.iter().all(|p| p.duration == 0.192));
}

#[test]
fn b_frame_composition_offsets_reach_the_trun() {
    let clip = Clip {
        cts_offset: 6000,
        ..Clip::video(30, 60, Some(aac()))
    };
    let (_, _, finished) = run(HlsConfig::default(), &clip);
    let runs = fragments(&finished[0].bytes);
    let (_, _, flags, cts) = &runs[0][&VIDEO_TRACK_ID];
    assert_eq!(cts[..3], [0, 6000, 6000]);
    assert_eq!(flags[..2], [0x0200_0000, 0x0101_0000]);
}

#[test]
fn the_window_slides_and_old_names_are_gone() {
    let clip = Clip {
        seconds: 30,
        ..Clip::video(30, 60, Some(aac()))
    };
    let config = HlsConfig {
        uri_prefix: "b1/".into(),
        ..HlsConfig::default()
    };
    let (stream, watcher, finished) = run(config, &clip);
    assert_eq!(finished.len(), 14);
    assert_eq!(watcher.max_segments, 6);
    assert_eq!(stream.segments.len(), 6);
    let text = stream.playlist().unwrap();
    assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:8\n"), "{text}");
    assert!(text.contains("#EXT-X-MAP:URI=\"b1/init-0.mp4\"\n"));
    assert!(text.contains("\nb1/seg-13.m4s\n"));
    assert_eq!(stream.get("seg-7.m4s"), Lookup::Gone);
    assert_eq!(stream.get("part-7-3.m4s"), Lookup::Gone);
    assert!(
        matches!(stream.get("seg-8.m4s"), Lookup::Found(r) if r.content_type == MEDIA_CONTENT_TYPE)
    );
    assert!(
        matches!(stream.get("init-0.mp4"), Lookup::Found(r) if r.content_type == INIT_CONTENT_TYPE)
    );
    // Parts are views of their segment's bytes.
    let Lookup::Found(segment) = stream.get("seg-13.m4s") else {
        panic!()
    };
    let Lookup::Found(part) = stream.get("part-13-0.m4s") else {
        panic!()
    };
    assert_eq!(&segment.bytes[..part.bytes.len()], &part.bytes[..]);
    for name in [
        "seg-14.m4s",
        "seg-99.m4s",
        "part-13-99.m4s",
        "init-1.mp4",
        "index.m3u8",
        "seg-+1.m4s",
        "part-1.m4s",
        "",
    ] {
        assert_eq!(stream.get(name), Lookup::NotFound, "{name}");
    }
}

#[test]
fn blocking_reload_readiness_follows_rfc_8216bis_6_2_5_2() {
    let clip = Clip {
        seconds: 5,
        ..Clip::video(30, 60, Some(aac()))
    };
    let mut stream = LiveStream::new(HlsConfig::default());
    // Before any playlist: wait, unless too far.
    assert_eq!(stream.readiness(0, None), Readiness::Wait);
    assert_eq!(stream.readiness(2, None), Readiness::TooFar);
    stream.set_tracks(clip.tracks()).unwrap();
    let samples = clip.samples();
    let mut pushed = 0;
    // Up to the first published part of segment 2 (4 s of media).
    while stream.next_msn < 2 || stream.open.as_ref().is_none_or(|o| o.parts.is_empty()) {
        let (sample, wall) = samples[pushed].clone();
        stream.push(sample, wall);
        pushed += 1;
    }
    // Segments 0 and 1 are complete (10 parts each), segment 2 has one part.
    assert_eq!(
        stream
            .segments
            .iter()
            .map(|s| s.parts.len())
            .collect::<Vec<_>>(),
        [10, 10]
    );
    assert_eq!(stream.readiness(0, None), Readiness::Ready);
    assert_eq!(stream.readiness(1, None), Readiness::Ready);
    assert_eq!(stream.readiness(2, None), Readiness::Wait);
    assert_eq!(stream.readiness(3, None), Readiness::Wait);
    assert_eq!(stream.readiness(4, None), Readiness::TooFar);
    assert_eq!(stream.readiness(2, Some(0)), Readiness::Ready);
    assert_eq!(stream.readiness(2, Some(1)), Readiness::Wait);
    // Past the last part of complete segment 1: part 0 of segment 2, which exists.
    assert_eq!(stream.readiness(1, Some(10)), Readiness::Ready);
    assert_eq!(stream.readiness(1, Some(9)), Readiness::Ready);
    // The advance part limit at 200 ms parts is 15.
    assert_eq!(stream.readiness(2, Some(15)), Readiness::Wait);
    assert_eq!(stream.readiness(2, Some(16)), Readiness::TooFar);
    assert_eq!(stream.readiness(3, Some(14)), Readiness::Wait);
    assert_eq!(stream.readiness(3, Some(15)), Readiness::TooFar);
    assert_eq!(stream.get("part-2-1.m4s"), Lookup::Pending);
    // After the end, every request is answered.
    stream.end();
    assert_eq!(stream.readiness(3, Some(0)), Readiness::Ready);
    assert_eq!(
        stream.get("part-2-1.m4s"),
        Lookup::Found(match stream.get("part-2-1.m4s") {
            Lookup::Found(r) => r,
            other => panic!("{other:?}"),
        })
    );
}

#[test]
fn a_restart_adds_a_discontinuity_and_a_new_map() {
    let mut stream = LiveStream::new(HlsConfig::default());
    let mut watcher = Watcher::default();
    let mut finished = Vec::new();
    let first = Clip {
        seconds: 5,
        ..Clip::video(30, 60, Some(aac()))
    };
    // The second source: its clock starts at another value, and it is audio + video at 25 fps.
    let second = Clip {
        seconds: 20,
        video_start: 7,
        audio_start_seconds: 3,
        ..Clip::video(25, 50, Some(aac()))
    };
    stream.set_tracks(first.tracks()).unwrap();
    for (sample, wall) in first.samples() {
        if stream.push(sample, wall).any() {
            watcher.check(&stream);
        }
    }
    stream.set_tracks(second.tracks()).unwrap();
    // The open segment (1 s of the first source) closed: 3 segments so far.
    finished.extend(stream.take_finished());
    assert_eq!(finished.len(), 3);
    assert!(
        (finished[2].record.duration - 1.0).abs() < 0.05,
        "{:?}",
        finished[2].record
    );
    let mut saw_discontinuity_tag = false;
    for (sample, wall) in second.samples() {
        let wall = wall + Duration::from_secs(60);
        if stream.push(sample, wall).any() {
            watcher.check(&stream);
            let text = stream.playlist().unwrap();
            saw_discontinuity_tag |=
                text.contains("#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init-1.mp4\"\n");
        }
        finished.extend(stream.take_finished());
    }
    assert!(saw_discontinuity_tag);
    let records: Vec<_> = finished
        .iter()
        .map(|f| (&f.record.init[..], f.record.discontinuity, f.init_is_new))
        .collect();
    assert_eq!(
        records[..4],
        [
            ("init-0.mp4", false, true),
            ("init-0.mp4", false, false),
            ("init-0.mp4", false, false),
            ("init-1.mp4", true, true),
        ]
    );
    // Once the restart slid out of the window, the discontinuity sequence says so.
    let text = stream.playlist().unwrap();
    assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"), "{text}");
    assert!(!text.contains("init-0.mp4"));
    assert_eq!(stream.get("init-0.mp4"), Lookup::Gone);
    check_media(&finished[3..], true);
}

#[test]
fn a_continuing_stream_numbers_its_segments_after_the_previous_broadcast() {
    let clip = Clip {
        seconds: 4,
        ..Clip::video(30, 30, Some(aac()))
    };
    let (mut first, _, _) = run(HlsConfig::default(), &clip);
    first.end();
    let next = first.next_media_sequence();
    assert_eq!(next, 4, "4 s of 1 s segments");
    let mut stream = LiveStream::continuing(HlsConfig::default(), next);
    stream.set_tracks(clip.tracks()).unwrap();
    let mut watcher = Watcher::default();
    for (sample, wall) in clip.samples() {
        if stream.push(sample, wall).any() {
            watcher.check(&stream);
        }
    }
    let text = stream.playlist().unwrap();
    assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:4\n"), "{text}");
    assert!(text.contains("\nseg-4.m4s\n"), "{text}");
    assert!(
        !text.contains("DISCONTINUITY"),
        "a new broadcast is not a discontinuity\n{text}"
    );
    assert!(matches!(stream.get("seg-4.m4s"), Lookup::Found(_)));
    assert_eq!(stream.get("seg-3.m4s"), Lookup::Gone);
}

#[test]
fn end_flushes_and_closes_the_playlist() {
    let clip = Clip {
        seconds: 5,
        ..Clip::video(30, 60, Some(aac()))
    };
    let (mut stream, mut watcher, mut finished) = run(HlsConfig::default(), &clip);
    stream.end();
    assert!(stream.is_ended());
    finished.extend(stream.take_finished());
    watcher.check(&stream);
    let text = stream.playlist().unwrap();
    assert!(
        text.ends_with("#EXTINF:1.000,\nseg-2.m4s\n#EXT-X-ENDLIST\n"),
        "{text}"
    );
    assert!(!text.contains("PRELOAD-HINT"));
    assert_eq!(finished.len(), 3);
    // The last video frame got its predecessor's duration: 5 s in all.
    let total: f64 = finished.iter().map(|f| f.record.duration).sum();
    assert!((total - 5.0).abs() < 1e-9, "{total}");
    check_media(&finished, true);
    // Nothing more gets in.
    let (sample, wall) = clip.samples()[0].clone();
    assert_eq!(stream.push(sample, wall), Published::default());
    assert_eq!(stream.counters().dropped_after_end, 1);
    assert_eq!(stream.set_tracks(clip.tracks()), Err(HlsError::Ended));
    // The VOD playlist of the archive passes the checker too.
    let records: Vec<_> = finished.iter().map(|f| f.record.clone()).collect();
    let vod = m3u8::parse(&vod_playlist(&records)).unwrap();
    m3u8::check(&vod, false).unwrap();
    assert!(vod.ended && vod.playlist_type.as_deref() == Some("VOD"));
    assert_eq!(vod.segments.len(), 3);
}

#[test]
fn an_interrupted_source_publishes_its_last_frames_and_resumes_after_a_discontinuity() {
    let clip = Clip {
        seconds: 5,
        ..Clip::video(30, 60, Some(aac()))
    };
    let (mut stream, mut watcher, mut finished) = run(HlsConfig::default(), &clip);
    assert_eq!(finished.len(), 2, "the last second is still open");
    stream.interrupt();
    finished.extend(stream.take_finished());
    watcher.check(&stream);
    // Every frame is in a listed part at once; the segment stays open (no window slide in
    // this update) until the source returns or the stream ends.
    assert_eq!(finished.len(), 2, "the open segment stays open");
    let text = stream.playlist().unwrap();
    assert!(
        !text.contains("PRELOAD-HINT") && !text.contains("ENDLIST"),
        "{text}"
    );
    let playlist = m3u8::parse(&text).unwrap();
    let listed: f64 = playlist.segments.iter().map(|s| s.duration).sum::<f64>()
        + playlist
            .trailing_parts
            .iter()
            .map(|p| p.duration)
            .sum::<f64>();
    let first_listed = playlist.media_sequence as usize;
    let archived_before: f64 = finished[..first_listed]
        .iter()
        .map(|f| f.record.duration)
        .sum();
    assert!(
        (archived_before + listed - 5.0).abs() < 0.01,
        "{listed} s listed\n{text}"
    );
    // Nothing is taken until the source (or another) is set again; then the same tracks
    // continue after a discontinuity, with timestamps that start over.
    let (sample, wall) = clip.samples()[0].clone();
    assert_eq!(stream.push(sample, wall), Published::default());
    stream.set_tracks(clip.tracks()).unwrap();
    for (sample, wall) in clip.samples() {
        if stream.push(sample, wall + Duration::from_secs(30)).any() {
            watcher.check(&stream);
        }
        finished.extend(stream.take_finished());
    }
    let total: f64 = finished[..3].iter().map(|f| f.record.duration).sum();
    assert!((total - 5.0).abs() < 1e-9, "{total}");
    assert!(finished[3].record.discontinuity, "{:?}", finished[3].record);
    assert!(
        stream
            .playlist()
            .unwrap()
            .contains("#EXT-X-DISCONTINUITY\n")
    );
    check_media(&finished[3..], true);
}

#[test]
fn a_longer_gop_later_is_cut_at_a_part_boundary_within_the_target_duration() {
    // 1 s GOPs fix the target at 1 s; then the encoder switches to 3 s GOPs (no restart).
    let mut stream = LiveStream::new(HlsConfig::default());
    let mut watcher = Watcher::default();
    stream
        .set_tracks(Clip::video(30, 30, None).tracks())
        .unwrap();
    let mut finished = Vec::new();
    for n in 0..30 * 20u64 {
        let keyframe = if n < 90 { n % 30 == 0 } else { n % 90 == 0 };
        let sample = Sample {
            kind: TrackKind::Video,
            dts: n * 3000,
            cts_offset: 0,
            keyframe,
            data: Bytes::from_static(b"\0\0\0\x01\x65"),
        };
        if stream
            .push(sample, wall0() + Duration::from_millis(n * 100 / 3))
            .any()
        {
            watcher.check(&stream);
        }
        finished.extend(stream.take_finished());
    }
    assert_eq!(stream.target_duration(), 1);
    assert!(stream.counters().forced_segment_cuts > 0);
    for segment in &finished {
        assert!(segment.record.duration < 1.5, "{:?}", segment.record);
    }
    let text = stream.playlist().unwrap();
    assert!(!text.contains("#EXT-X-INDEPENDENT-SEGMENTS"), "{text}");
    // Segments that did not start on a keyframe: their first part is not independent.
    let playlist = m3u8::parse(&text).unwrap();
    assert!(
        playlist
            .segments
            .iter()
            .any(|s| s.parts.first().is_some_and(|p| !p.independent))
    );
}

#[test]
fn a_stream_without_a_second_keyframe_still_publishes() {
    let mut stream = LiveStream::new(HlsConfig::default());
    stream
        .set_tracks(Clip::video(30, 30, None).tracks())
        .unwrap();
    let mut watcher = Watcher::default();
    for n in 0..30 * 25u64 {
        let sample = Sample {
            kind: TrackKind::Video,
            dts: n * 3000,
            cts_offset: 0,
            keyframe: n == 0,
            data: Bytes::from_static(b"\0\0\0\x01\x41"),
        };
        if stream
            .push(sample, wall0() + Duration::from_millis(n * 100 / 3))
            .any()
        {
            watcher.check(&stream);
        }
    }
    assert_eq!(stream.target_duration(), MAX_FIRST_SEGMENT_SECS);
    assert!(stream.playlist().is_some());
}

#[test]
fn bad_samples_are_dropped_and_counted() {
    let sample = |kind, dts, keyframe| Sample {
        kind,
        dts,
        cts_offset: 0,
        keyframe,
        data: Bytes::from_static(b"\0\0\0\x01\x65"),
    };
    let mut stream = LiveStream::new(HlsConfig::default());
    stream.push(sample(TrackKind::Video, 0, true), wall0());
    assert_eq!(stream.counters().dropped_without_track, 1);
    assert_eq!(stream.playlist(), None);
    assert_eq!(stream.readiness(0, Some(0)), Readiness::Wait);

    stream
        .set_tracks(Tracks {
            video: Some(video()),
            audio: None,
        })
        .unwrap();
    stream.push(sample(TrackKind::Audio, 0, true), wall0());
    assert_eq!(stream.counters().dropped_without_track, 2);
    stream.push(sample(TrackKind::Video, 100, false), wall0());
    assert_eq!(stream.counters().dropped_before_keyframe, 1);
    stream.push(sample(TrackKind::Video, 3000, true), wall0());
    stream.push(sample(TrackKind::Video, 3000, false), wall0());
    stream.push(sample(TrackKind::Video, 10, false), wall0());
    assert_eq!(stream.counters().dropped_non_monotonic, 2);
    stream.push(
        Sample {
            data: Bytes::new(),
            ..sample(TrackKind::Video, 6000, false)
        },
        wall0(),
    );
    assert_eq!(stream.counters().dropped_empty, 1);
    assert_eq!(stream.counters().samples_accepted, 1);

    // A refused configuration changes nothing.
    let broken = Tracks {
        video: Some(VideoTrack {
            avc_config: vec![1],
            ..video()
        }),
        audio: None,
    };
    assert!(matches!(
        stream.set_tracks(broken),
        Err(HlsError::Tracks(_))
    ));
    assert!(matches!(
        stream.set_tracks(Tracks::default()),
        Err(HlsError::Tracks(Fmp4Error::NoTracks))
    ));
    stream.push(sample(TrackKind::Video, 6000, false), wall0());
    assert_eq!(stream.counters().samples_accepted, 2);
}

#[test]
fn random_input_never_panics_and_playlists_stay_valid() {
    // A small deterministic generator: xorshift.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..20 {
        let mut stream = LiveStream::new(HlsConfig {
            part_target: Duration::from_millis(100 + 50 * (round % 5)),
            segment_target: Duration::from_millis(500 + 250 * (round % 4)),
            window: 1 + (round as usize % 4),
            uri_prefix: String::new(),
        });
        let mut dts = [0u64; 2];
        for step in 0..3000u64 {
            let r = next();
            if r % 997 == 0 {
                let audio = if r % 2 == 0 {
                    Some(aac())
                } else {
                    Some(opus())
                };
                let video = (r % 3 != 0).then(video);
                let _ = stream.set_tracks(Tracks { video, audio });
                continue;
            }
            let kind = if r % 3 == 0 {
                TrackKind::Audio
            } else {
                TrackKind::Video
            };
            let index = (kind == TrackKind::Audio) as usize;
            // Mostly forward, sometimes backwards or still, now and then a jump.
            let step_ticks = match r % 50 {
                0 => 0,
                1 => u64::MAX / 2,
                2..=4 => 90_000 * (r % 7),
                _ => 1 + (r >> 8) % 4000,
            };
            dts[index] = if r % 61 == 0 {
                dts[index] / 2
            } else {
                dts[index].wrapping_add(step_ticks)
            };
            let sample = Sample {
                kind,
                dts: dts[index],
                cts_offset: (r >> 20) as i32,
                keyframe: r % 40 == 1 || step < 5,
                data: Bytes::from(vec![0u8; (r % 64) as usize]),
            };
            let wall = wall0() + Duration::from_millis(step * 20);
            if stream.push(sample, wall).any() {
                // Random timestamps (jumps) break the checker's date rule, not the structure.
                if let Some(text) = stream.playlist() {
                    let playlist = m3u8::parse(&text).unwrap();
                    assert!(playlist.target_duration.is_some());
                }
            }
            for name in ["seg-0.m4s", "part-1-0.m4s", "init-0.mp4"] {
                let _ = stream.get(name);
            }
            let _ = stream.readiness(r % 5, Some(r % 20));
            stream.take_finished();
        }
        stream.end();
        assert!(
            stream
                .playlist()
                .is_none_or(|p| p.ends_with("#EXT-X-ENDLIST\n"))
        );
    }
}
