//! Real decoders on real media: x264 + AAC from ffmpeg, through [`LiveStream`], played back by
//! ffprobe and ffmpeg from the playlist on disk. Skipped (with a message) only when ffmpeg is
//! not installed; `scripts/test.sh` installs it and CI has it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;

use super::*;
use crate::aac::AudioSpecificConfig;
use crate::flv::{self, AudioTag, VideoTag};

fn ffmpeg_available() -> bool {
    let found = |tool: &str| {
        Command::new(tool)
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    found("ffmpeg") && found("ffprobe")
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("roomcast-hls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// One FLV tag: type (8 audio, 9 video), timestamp in ms, body.
struct FlvTag {
    kind: u8,
    timestamp_ms: u32,
    body: Vec<u8>,
}

/// The tags of an FLV file (Adobe FLV v10.1 Annex E.2–E.4): header, then tags each followed by
/// its 32-bit PreviousTagSize.
fn flv_tags(file: &[u8]) -> Vec<FlvTag> {
    assert_eq!(&file[..3], b"FLV", "not an FLV file");
    let header = u32::from_be_bytes([file[5], file[6], file[7], file[8]]) as usize;
    let mut at = header + 4;
    let mut tags = Vec::new();
    while at + 11 <= file.len() {
        let kind = file[at] & 0x1f;
        let size = u32::from_be_bytes([0, file[at + 1], file[at + 2], file[at + 3]]) as usize;
        let timestamp_ms =
            u32::from_be_bytes([file[at + 7], file[at + 4], file[at + 5], file[at + 6]]);
        let body = file[at + 11..at + 11 + size].to_vec();
        tags.push(FlvTag {
            kind,
            timestamp_ms,
            body,
        });
        at += 11 + size + 4;
    }
    tags
}

/// Encodes `seconds` of 320x240 30 fps test video and a 48 kHz sine as FLV, packages it, and
/// writes init segments, segments and the ended playlist to `dir`. Returns the video frame
/// count pushed.
fn package(dir: &Path, seconds: u32, b_frames: u32) -> usize {
    let flv_path = dir.join("source.flv");
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=320x240:rate=30")
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &seconds.to_string()])
        .args(["-c:v", "libx264", "-g", "30", "-bf", &b_frames.to_string()])
        .args(["-c:a", "aac", "-ar", "48000", "-f", "flv"])
        .arg(&flv_path)
        .status()
        .expect("run ffmpeg");
    assert!(status.success(), "ffmpeg could not encode the test clip");
    let file = std::fs::read(&flv_path).expect("read the FLV");

    let mut stream = LiveStream::new(HlsConfig::default());
    let wall0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut video = None;
    let mut audio = None;
    let mut tracks_set = false;
    let mut audio_frames = 0u64;
    let mut video_frames = 0;
    let mut finished = Vec::new();
    for tag in flv_tags(&file) {
        let wall = wall0 + Duration::from_millis(u64::from(tag.timestamp_ms));
        let sample = match tag.kind {
            9 => match flv::parse_video(&tag.body).expect("video tag") {
                VideoTag::AvcSequenceHeader(record) => {
                    video = Some(VideoTrack {
                        avc_config: record.to_vec(),
                        width: 320,
                        height: 240,
                    });
                    None
                }
                VideoTag::AvcNalus {
                    keyframe,
                    composition_time_ms,
                    data,
                } => {
                    video_frames += 1;
                    Some(Sample {
                        kind: TrackKind::Video,
                        dts: u64::from(tag.timestamp_ms) * 90,
                        cts_offset: composition_time_ms * 90,
                        keyframe,
                        data: Bytes::copy_from_slice(data),
                    })
                }
                _ => None,
            },
            8 => match flv::parse_audio(&tag.body).expect("audio tag") {
                AudioTag::AacSequenceHeader(config) => {
                    let parsed = AudioSpecificConfig::parse(config).expect("AAC config");
                    audio = Some(AudioTrack::Aac {
                        config: config.to_vec(),
                        sample_rate: parsed.sample_rate,
                        channels: u16::from(parsed.channels),
                    });
                    None
                }
                AudioTag::AacRaw(frame) => {
                    // Frames counted in 1024-sample units: FLV's milliseconds would jitter.
                    let dts = audio_frames * 1024;
                    audio_frames += 1;
                    Some(Sample {
                        kind: TrackKind::Audio,
                        dts,
                        cts_offset: 0,
                        keyframe: true,
                        data: Bytes::copy_from_slice(frame),
                    })
                }
                _ => None,
            },
            _ => None,
        };
        let Some(sample) = sample else { continue };
        if !tracks_set {
            stream
                .set_tracks(Tracks {
                    video: video.clone(),
                    audio: audio.clone(),
                })
                .expect("tracks");
            tracks_set = true;
        }
        stream.push(sample, wall);
        finished.extend(stream.take_finished());
    }
    stream.end();
    finished.extend(stream.take_finished());
    let counters = stream.counters();
    assert_eq!(
        counters.samples_accepted as usize,
        video_frames + audio_frames as usize,
        "{counters:?}"
    );

    for segment in &finished {
        if segment.init_is_new {
            std::fs::write(dir.join(&segment.record.init), &segment.init_bytes).unwrap();
        }
        std::fs::write(dir.join(&segment.record.uri), &segment.bytes).unwrap();
    }
    std::fs::write(
        dir.join("index.m3u8"),
        stream.playlist().expect("a playlist"),
    )
    .unwrap();
    let records: Vec<_> = finished.iter().map(|f| f.record.clone()).collect();
    std::fs::write(dir.join("vod.m3u8"), vod_playlist(&records)).unwrap();
    video_frames
}

fn output(command: &mut Command) -> (bool, String, String) {
    let out = command.output().expect("run ffmpeg/ffprobe");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn ffmpeg_decodes_the_packaged_h264_and_aac_without_errors() {
    if !ffmpeg_available() {
        eprintln!(
            "SKIPPED: ffmpeg/ffprobe not installed (scripts/install-test-deps.sh installs them)"
        );
        return;
    }
    for b_frames in [0, 2] {
        let dir = scratch_dir(&format!("decode-bf{b_frames}"));
        let frames = package(&dir, 3, b_frames);
        assert_eq!(frames, 90);
        for playlist in ["index.m3u8", "vod.m3u8"] {
            let path = dir.join(playlist);
            let (ok, streams, errors) = output(
                Command::new("ffprobe")
                    .args(["-v", "error", "-show_entries"])
                    .arg("stream=codec_name,width,height,sample_rate,channels")
                    .args(["-of", "compact=p=0"])
                    .arg(&path),
            );
            assert!(ok && errors.is_empty(), "ffprobe {playlist}: {errors}");
            assert!(
                streams.contains("codec_name=h264|width=320|height=240"),
                "{playlist}: {streams}"
            );
            assert!(
                streams.contains("codec_name=aac|sample_rate=48000|channels=1"),
                "{playlist}: {streams}"
            );

            let (ok, _, errors) = output(
                Command::new("ffmpeg")
                    .args(["-v", "error", "-i"])
                    .arg(&path)
                    .args(["-f", "null", "-"]),
            );
            assert!(
                ok && errors.trim().is_empty(),
                "ffmpeg -i {playlist}: {errors}"
            );

            let (ok, count, errors) = output(
                Command::new("ffprobe")
                    .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
                    .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
                    .arg(&path),
            );
            assert!(ok, "{errors}");
            // The HLS demuxer lists the stream once per program and once on its own.
            let counts: Vec<&str> = count.lines().filter(|l| !l.trim().is_empty()).collect();
            assert!(
                !counts.is_empty() && counts.iter().all(|c| c.trim() == "90"),
                "{playlist}: decoded video frames {count:?}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
