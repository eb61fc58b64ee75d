//! A live HLS / Low-Latency HLS stream, sans-IO: samples in; playlist text, media bytes and
//! finished segments out.
//!
//! [`LiveStream`] packages H.264 and AAC or Opus samples into fMP4 ([`crate::fmp4`]) the way
//! [RFC 8216bis](https://datatracker.ietf.org/doc/html/draft-pantos-hls-rfc8216bis) describes,
//! with one media playlist serving both LL-HLS players (which fetch *parts* and block on
//! `_HLS_msn`/`_HLS_part` reloads) and classic players (which fetch whole segments). The I/O
//! shell owns sockets, clocks and files: it calls [`LiveStream::push`] with each sample and its
//! capture time, answers requests from [`LiveStream::playlist`], [`LiveStream::readiness`] and
//! [`LiveStream::get`], and archives [`LiveStream::take_finished`] for replays
//! ([`vod_playlist`]).
//!
//! # How samples become parts and segments
//!
//! One track is *primary* — video when there is video, else audio — and its timeline decides
//! every boundary; the other track's samples go into the part whose time span they start in.
//! A sample's duration is the next sample's dts minus its own, so each track holds one sample
//! back; the last sample of a source gets its predecessor's duration.
//!
//! - A **part** is one `moof`+`mdat` with both tracks. It closes before a sample that would
//!   take it past `PART-TARGET`, and early when the next sample, assumed as long as the
//!   previous one, would not fit. So parts never exceed `PART-TARGET` (RFC 8216bis §4.4.4.9)
//!   unless one sample alone is longer (counted in [`HlsCounters::long_samples`]).
//! - A **segment** is the concatenation of its parts' bytes (valid fMP4, ISO/IEC 14496-12
//!   §8.8). It starts on a video keyframe and closes at the first keyframe at or after
//!   `segment_target` of media (audio-only: the first frame at or after it).
//! - `EXT-X-TARGETDURATION` is fixed when the first segment completes — the largest of
//!   `segment_target` rounded up, `PART-TARGET` rounded up and the first segment's rounded
//!   duration — and never changes. When a later GOP would make a segment's rounded duration
//!   exceed it, the segment is cut at a part boundary without a keyframe
//!   ([`HlsCounters::forced_segment_cuts`]); such a segment is not independent, and from then on
//!   the playlist no longer claims `EXT-X-INDEPENDENT-SEGMENTS`. Until the first segment
//!   completes its length is capped at [`MAX_FIRST_SEGMENT_SECS`].
//!
//! # Invariants
//!
//! - [`LiveStream::playlist`] is `None` until the first segment completes (its target duration
//!   must be known before any playlist is served, as it may never change); the shell answers
//!   404 until then. Afterwards every playlist satisfies RFC 8216bis §6.2.1 for reloads: lines
//!   are only appended, or removed from the front with `EXT-X-MEDIA-SEQUENCE` and
//!   `EXT-X-DISCONTINUITY-SEQUENCE` advanced accordingly.
//! - Media names never repeat within a stream: `init-K.mp4`, `seg-N.m4s`, `part-N-M.m4s`, with
//!   `N` the media sequence number and `M` the part index, both from 0. The playlist lists them
//!   behind [`HlsConfig::uri_prefix`]; [`LiveStream::get`] takes the bare name.
//! - Memory is bounded: `window` complete segments (more only while fewer would last less than
//!   three target durations, RFC 8216bis §6.2.2, and never more than `4 × window + 8`) plus the
//!   one in progress. Parts are slices of their segment's bytes, so they cost no extra memory.
//!   Older names answer [`Lookup::Gone`].
//! - No clock reads, no panics: a sample that cannot be used (no such track, before
//!   [`LiveStream::set_tracks`], dts not increasing, before the first keyframe, after
//!   [`LiveStream::end`]) is dropped and counted in [`HlsCounters`].
//! - Timestamps go into `tfdt` unchanged: the caller's tracks share one clock, so audio and
//!   video stay in sync. A restart ([`LiveStream::set_tracks`]) may start from any value; it is
//!   preceded by `EXT-X-DISCONTINUITY` and a new `EXT-X-MAP`.

mod playlist;
#[cfg(test)]
mod tests;

#[cfg(test)]
mod decoder_tests;

pub use crate::fmp4::{AudioTrack, Tracks, VideoTrack};
pub use playlist::vod_playlist;

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};

use crate::fmp4::{self, AUDIO_TRACK_ID, Fmp4Error, FragmentSample, TrackRun, VIDEO_TRACK_ID};

/// `Content-Type` of playlists (RFC 8216bis §4).
pub const PLAYLIST_CONTENT_TYPE: &str = "application/vnd.apple.mpegurl";
/// `Content-Type` of init segments.
pub const INIT_CONTENT_TYPE: &str = "video/mp4";
/// `Content-Type` of media segments and parts (ISO/IEC 14496-12 Annex M).
pub const MEDIA_CONTENT_TYPE: &str = "video/iso.segment";

/// Until the first segment fixes the target duration, a segment longer than this (an encoder
/// with a very long or no keyframe interval) is cut at a part boundary.
pub const MAX_FIRST_SEGMENT_SECS: u64 = 10;

/// Samples of the non-primary track waiting for the primary track's timeline to pass them
/// (e.g. audio while the video stalls): past this many the oldest is dropped.
const MAX_QUEUED_SECONDARY: usize = 4096;

/// Which track a sample belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackKind {
    Video,
    Audio,
}

/// One access unit or audio frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub kind: TrackKind,
    /// Decode timestamp in the track's timescale (video: 90 kHz; AAC: its sample rate; Opus:
    /// 48 kHz). Increasing per track (callers unwrap RTP timestamps / extend FLV ms). Tracks
    /// start at arbitrary values but on one shared clock: video dts/90000 and audio dts/rate
    /// are comparable seconds.
    pub dts: u64,
    /// pts - dts (video with B-frames), else 0.
    pub cts_offset: i32,
    /// Video: an IDR access unit. Audio: ignored (every frame is a sync sample).
    pub keyframe: bool,
    /// Video: an AVCC access unit (NAL units with big-endian length prefixes of the
    /// configuration record's size, 4 bytes in practice; no SPS/PPS needed). Audio: one raw
    /// AAC frame (no ADTS) or one Opus packet.
    pub data: Bytes,
}

/// Part and segment lengths and the live window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HlsConfig {
    /// `PART-TARGET`: no part is longer. At least 10 ms.
    pub part_target: Duration,
    /// A segment closes at the first keyframe after this much media. At least `part_target`.
    pub segment_target: Duration,
    /// Complete segments kept in the playlist and in memory. At least 1.
    pub window: usize,
    /// Put before every media URI in the live playlist (e.g. `"<broadcast id>/"`); the names
    /// [`LiveStream::get`] takes and [`ArchivedSegment`] holds are bare.
    pub uri_prefix: String,
}

impl Default for HlsConfig {
    fn default() -> Self {
        HlsConfig {
            part_target: Duration::from_millis(200),
            segment_target: Duration::from_secs(1),
            window: 6,
            uri_prefix: String::new(),
        }
    }
}

/// Why [`LiveStream::set_tracks`] refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HlsError {
    /// The tracks cannot be packaged (the stream keeps its previous tracks).
    Tracks(Fmp4Error),
    /// [`LiveStream::end`] was called: an ended playlist never grows again.
    Ended,
}

impl fmt::Display for HlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HlsError::Tracks(error) => error.fmt(f),
            HlsError::Ended => f.write_str("the HLS stream has ended"),
        }
    }
}

impl std::error::Error for HlsError {}

impl From<Fmp4Error> for HlsError {
    fn from(error: Fmp4Error) -> Self {
        HlsError::Tracks(error)
    }
}

/// What one call published: the shell wakes blocked requests when anything did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Parts completed (each changes the playlist).
    pub parts: usize,
    /// Segments completed.
    pub segments: usize,
}

impl Published {
    pub fn any(&self) -> bool {
        self.parts > 0 || self.segments > 0
    }
}

/// The answer to a blocking playlist reload (RFC 8216bis §6.2.5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// The playlist has the requested segment or part (or has ended): answer now.
    Ready,
    /// Hold the request until something is published (at most three target durations).
    Wait,
    /// Further ahead than the RFC lets a client ask: 400 Bad Request.
    TooFar,
}

/// A media file's bytes and `Content-Type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub bytes: Bytes,
    pub content_type: &'static str,
}

/// The answer to a media request by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(Resource),
    /// The part named by `EXT-X-PRELOAD-HINT`: wait until something is published, then ask
    /// again (RFC 8216bis §6.2.6).
    Pending,
    /// Slid out of the live window: 410 Gone (or the replay on disk has it).
    Gone,
    NotFound,
}

/// A completed segment as a replay records it, for [`vod_playlist`].
#[derive(Debug, Clone, PartialEq)]
pub struct ArchivedSegment {
    /// The segment's file name, e.g. `seg-12.m4s`.
    pub uri: String,
    /// Its init segment's file name, e.g. `init-0.mp4`.
    pub init: String,
    /// Seconds.
    pub duration: f64,
    /// Capture time of its first sample.
    pub program_date_time: SystemTime,
    /// It follows a restart (new source or codec parameters): `EXT-X-DISCONTINUITY` before it.
    pub discontinuity: bool,
}

/// A completed segment, for archiving.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedSegment {
    pub record: ArchivedSegment,
    pub bytes: Bytes,
    /// The bytes of `record.init` (a cheap clone of the one buffer).
    pub init_bytes: Bytes,
    /// The first finished segment with this init segment: write `init_bytes` too.
    pub init_is_new: bool,
}

/// What was dropped or bent, for metrics and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HlsCounters {
    /// Samples taken into the stream (audio that arrived before the first keyframe is
    /// counted here, and again in `dropped_before_keyframe` if it turns out to be older).
    pub samples_accepted: u64,
    /// Before [`LiveStream::set_tracks`], or of a kind the tracks do not have.
    pub dropped_without_track: u64,
    /// After [`LiveStream::end`].
    pub dropped_after_end: u64,
    /// Video before the first keyframe of a source, and audio older than that keyframe.
    pub dropped_before_keyframe: u64,
    /// A dts not above the track's previous one.
    pub dropped_non_monotonic: u64,
    /// No data.
    pub dropped_empty: u64,
    /// Audio waiting for a stalled video timeline, beyond [`MAX_QUEUED_SECONDARY`] frames.
    pub dropped_queue_full: u64,
    /// Samples of a fragment mp4-atom could not encode (not expected to happen).
    pub dropped_unencodable: u64,
    /// Samples longer than `PART-TARGET` by themselves: their part is longer too.
    pub long_samples: u64,
    /// Segments cut without a keyframe to stay within the target duration.
    pub forced_segment_cuts: u64,
}

/// One live stream: see the module documentation.
#[derive(Debug)]
pub struct LiveStream {
    config: HlsConfig,
    /// The current source's tracks and their pending samples; `None` before the first
    /// [`LiveStream::set_tracks`].
    period: Option<Period>,
    /// The segment in progress (its parts so far).
    open: Option<OpenSegment>,
    /// Complete segments in the window, oldest first.
    segments: VecDeque<Segment>,
    /// Init segments still referenced (by a segment in the window or the current period).
    inits: VecDeque<(u64, Bytes)>,
    next_init_id: u64,
    /// Media sequence number of the segment in progress (or the next one).
    next_msn: u64,
    /// The first segment's media sequence number ([`LiveStream::continuing`]).
    first_msn: u64,
    /// Discontinuity sequence number of the latest complete segment.
    discontinuity_sequence: u64,
    /// The next segment opened follows a restart.
    pending_discontinuity: bool,
    /// Fixed when the first segment completes.
    target_duration: Option<u64>,
    /// No segment so far was cut without a keyframe.
    all_independent: bool,
    ended: bool,
    /// `mfhd` sequence number of the next fragment.
    fragment_sequence: u32,
    /// Init id of the last segment handed to `take_finished`.
    last_finished_init: Option<u64>,
    finished: Vec<FinishedSegment>,
    counters: HlsCounters,
    /// What the current call published.
    published: Published,
}

/// One source's tracks.
#[derive(Debug)]
struct Period {
    init_id: u64,
    /// Video if there is video, else audio.
    primary: TrackState,
    /// Audio when there is video too.
    secondary: Option<TrackState>,
    /// Secondary samples with known durations, not yet in a part.
    secondary_queue: VecDeque<TimedSample>,
    /// Primary samples waiting for the secondary track to catch up with them (see
    /// [`LiveStream::release_primaries`]), oldest first.
    primary_waiting: VecDeque<HeldSample>,
    /// The primary track's first keyframe has arrived.
    started: bool,
    part: OpenPart,
    /// `PART-TARGET` in primary ticks.
    part_target_ticks: u64,
    /// `segment_target` in primary ticks.
    segment_target_ticks: u64,
    /// The first packaged primary sample's (dts, capture time): every segment's
    /// `EXT-X-PROGRAM-DATE-TIME` is this plus its dts offset, so dates advance exactly with
    /// the media (RFC 8216bis §4.4.4.6) instead of with arrival jitter.
    clock_anchor: Option<(u64, SystemTime)>,
}

impl Period {
    /// The date of primary `dts`: the anchor's capture time plus the media time since it
    /// (players such as hls.js align playlist reloads by these dates; capture times jitter
    /// by tens of milliseconds with arrival and would shift the timeline).
    fn program_date_time(&mut self, dts: u64, wall_clock: SystemTime) -> SystemTime {
        let (anchor_dts, anchor_wall) = *self.clock_anchor.get_or_insert((dts, wall_clock));
        let ticks = dts.saturating_sub(anchor_dts);
        let timescale = u64::from(self.primary.timescale.max(1));
        let since = Duration::from_secs(ticks / timescale)
            + Duration::from_nanos((ticks % timescale) * 1_000_000_000 / timescale);
        anchor_wall + since
    }

    /// Drops secondary samples that start before `primary_dts` (in primary ticks); returns how
    /// many.
    fn drop_secondary_before(&mut self, primary_dts: u64) -> u64 {
        let Some(track) = self.secondary.as_mut() else {
            return 0;
        };
        let (primary_rate, rate) = (
            u128::from(self.primary.timescale),
            u128::from(track.timescale),
        );
        let before = |dts: u64| u128::from(dts) * primary_rate < u128::from(primary_dts) * rate;
        let queued = self.secondary_queue.len();
        self.secondary_queue.retain(|timed| !before(timed.dts));
        let mut dropped = (queued - self.secondary_queue.len()) as u64;
        if track.held.as_ref().is_some_and(|held| before(held.dts)) {
            track.held = None;
            dropped += 1;
        }
        dropped
    }
}

#[derive(Debug)]
struct TrackState {
    track_id: u32,
    timescale: u32,
    /// The latest sample, waiting for the next one to know its duration.
    held: Option<HeldSample>,
    last_dts: Option<u64>,
    /// The previous sample's duration: the estimate for the next one and for the last.
    last_duration: u32,
}

#[derive(Debug)]
struct HeldSample {
    dts: u64,
    cts_offset: i32,
    keyframe: bool,
    data: Bytes,
    wall_clock: SystemTime,
}

#[derive(Debug)]
struct TimedSample {
    dts: u64,
    sample: FragmentSample,
}

/// The primary samples of the part being filled.
#[derive(Debug, Default)]
struct OpenPart {
    samples: Vec<FragmentSample>,
    base_dts: u64,
    ticks: u64,
    independent: bool,
}

#[derive(Debug)]
struct OpenSegment {
    msn: u64,
    parts: Vec<Part>,
    /// Primary ticks so far.
    ticks: u64,
    timescale: u32,
    program_date_time: SystemTime,
    discontinuity: bool,
    init_id: u64,
    independent: bool,
}

#[derive(Debug, Clone)]
struct Part {
    duration: Duration,
    independent: bool,
    bytes: Bytes,
}

#[derive(Debug)]
struct Segment {
    msn: u64,
    parts: Vec<Part>,
    duration: Duration,
    bytes: Bytes,
    program_date_time: SystemTime,
    discontinuity: bool,
    discontinuity_sequence: u64,
    init_id: u64,
}

/// A media file name as the playlist lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Name {
    Init(u64),
    Segment(u64),
    Part(u64, u64),
}

impl Name {
    fn parse(name: &str) -> Option<Name> {
        fn number(digits: &str) -> Option<u64> {
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            digits.parse().ok()
        }
        if let Some(id) = name
            .strip_prefix("init-")
            .and_then(|r| r.strip_suffix(".mp4"))
        {
            return number(id).map(Name::Init);
        }
        if let Some(msn) = name
            .strip_prefix("seg-")
            .and_then(|r| r.strip_suffix(".m4s"))
        {
            return number(msn).map(Name::Segment);
        }
        let rest = name.strip_prefix("part-")?.strip_suffix(".m4s")?;
        let (msn, part) = rest.split_once('-')?;
        Some(Name::Part(number(msn)?, number(part)?))
    }
}

fn init_name(id: u64) -> String {
    format!("init-{id}.mp4")
}

fn segment_name(msn: u64) -> String {
    format!("seg-{msn}.m4s")
}

fn part_name(msn: u64, part: u64) -> String {
    format!("part-{msn}-{part}.m4s")
}

fn ticks_to_duration(ticks: u64, timescale: u32) -> Duration {
    let nanos = u128::from(ticks) * 1_000_000_000 / u128::from(timescale.max(1));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

fn duration_to_ticks(duration: Duration, timescale: u32) -> u64 {
    let ticks = duration.as_nanos() * u128::from(timescale) / 1_000_000_000;
    u64::try_from(ticks).unwrap_or(u64::MAX)
}

fn ceil_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// Seconds rounded to the nearest integer, halves up (as players round `EXTINF`).
fn round_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() >= 500_000_000)
}

impl LiveStream {
    /// A stream with nothing in it yet; out-of-range settings are raised to their minimum.
    pub fn new(config: HlsConfig) -> Self {
        Self::continuing(config, 0)
    }

    /// A stream whose first segment has media sequence number `first_msn`: a room's next
    /// broadcast continues the numbers of the one before, so a cached response for
    /// `?_HLS_msn=N` at the room's playlist URL can never be the previous broadcast's.
    pub fn continuing(config: HlsConfig, first_msn: u64) -> Self {
        let part_target = config.part_target.max(Duration::from_millis(10));
        let config = HlsConfig {
            part_target,
            segment_target: config.segment_target.max(part_target),
            window: config.window.max(1),
            uri_prefix: config.uri_prefix,
        };
        LiveStream {
            config,
            period: None,
            open: None,
            segments: VecDeque::new(),
            inits: VecDeque::new(),
            next_init_id: 0,
            next_msn: first_msn,
            first_msn,
            discontinuity_sequence: 0,
            pending_discontinuity: false,
            target_duration: None,
            all_independent: true,
            ended: false,
            fragment_sequence: 1,
            last_finished_init: None,
            finished: Vec::new(),
            counters: HlsCounters::default(),
            published: Published::default(),
        }
    }

    /// The settings in effect (after [`LiveStream::new`] raised any below their minimum).
    pub fn config(&self) -> &HlsConfig {
        &self.config
    }

    /// Start, or restart with new codec parameters or a new source: the open part and segment
    /// close (the last held samples get their predecessors' durations), and the next segment
    /// follows `EXT-X-DISCONTINUITY` (unless it is the first) and a new `EXT-X-MAP`. The next
    /// video sample must be a keyframe; earlier ones are dropped.
    ///
    /// On error nothing changes: the previous tracks stay in effect.
    pub fn set_tracks(&mut self, tracks: Tracks) -> Result<(), HlsError> {
        if self.ended {
            return Err(HlsError::Ended);
        }
        let init_bytes = fmp4::init_segment(&tracks)?;
        self.published = Published::default();
        self.flush_period();
        self.close_segment();
        let init_id = self.next_init_id;
        self.next_init_id += 1;
        self.inits.push_back((init_id, init_bytes.clone()));
        let audio = tracks.audio.as_ref().map(|audio| TrackState {
            track_id: AUDIO_TRACK_ID,
            timescale: audio.timescale(),
            held: None,
            last_dts: None,
            last_duration: audio.typical_frame_duration(),
        });
        let (primary, secondary) = match (tracks.video.is_some(), audio) {
            (true, audio) => (
                TrackState {
                    track_id: VIDEO_TRACK_ID,
                    timescale: fmp4::VIDEO_TIMESCALE,
                    held: None,
                    last_dts: None,
                    // 30 frames a second until the stream tells.
                    last_duration: fmp4::VIDEO_TIMESCALE / 30,
                },
                audio,
            ),
            (false, Some(audio)) => (audio, None),
            // `init_segment` refused tracks with neither.
            (false, None) => return Err(HlsError::Tracks(Fmp4Error::NoTracks)),
        };
        let timescale = primary.timescale;
        self.period = Some(Period {
            init_id,
            primary,
            secondary,
            secondary_queue: VecDeque::new(),
            primary_waiting: VecDeque::new(),
            started: false,
            part: OpenPart::default(),
            part_target_ticks: duration_to_ticks(self.config.part_target, timescale).max(1),
            segment_target_ticks: duration_to_ticks(self.config.segment_target, timescale),
            clock_anchor: None,
        });
        self.pending_discontinuity = self.next_msn > self.first_msn;
        self.drop_unused_inits();
        Ok(())
    }

    /// Take one sample; `wall_clock` is its capture time (for `EXT-X-PROGRAM-DATE-TIME`).
    /// Unusable samples are dropped and counted ([`LiveStream::counters`]).
    pub fn push(&mut self, sample: Sample, wall_clock: SystemTime) -> Published {
        self.published = Published::default();
        if self.ended {
            self.counters.dropped_after_end += 1;
            return self.published;
        }
        let Some(period) = self.period.as_mut() else {
            self.counters.dropped_without_track += 1;
            return self.published;
        };
        if sample.data.is_empty() || u32::try_from(sample.data.len()).is_err() {
            self.counters.dropped_empty += 1;
            return self.published;
        }
        let primary_kind = if period.primary.track_id == VIDEO_TRACK_ID {
            TrackKind::Video
        } else {
            TrackKind::Audio
        };
        let is_primary = sample.kind == primary_kind;
        let track = if is_primary {
            &mut period.primary
        } else if let Some(secondary) = period.secondary.as_mut() {
            secondary
        } else {
            self.counters.dropped_without_track += 1;
            return self.published;
        };
        if track.last_dts.is_some_and(|last| sample.dts <= last) {
            self.counters.dropped_non_monotonic += 1;
            return self.published;
        }
        // Audio frames are all sync samples.
        let keyframe = sample.keyframe || sample.kind == TrackKind::Audio;
        if !period.started && is_primary && !keyframe {
            self.counters.dropped_before_keyframe += 1;
            return self.published;
        }
        track.last_dts = Some(sample.dts);
        if !period.started && is_primary {
            // The first keyframe: audio that came first stays if it is not older.
            period.started = true;
            self.counters.dropped_before_keyframe += period.drop_secondary_before(sample.dts);
        }
        self.counters.samples_accepted += 1;
        let held = HeldSample {
            dts: sample.dts,
            cts_offset: sample.cts_offset,
            keyframe,
            data: sample.data,
            wall_clock,
        };
        if is_primary {
            period.primary_waiting.push_back(held);
        } else {
            self.secondary_arrived(held);
        }
        self.release_primaries(false);
        self.published
    }

    /// The broadcast ended: the open part and segment close, the playlist gets
    /// `EXT-X-ENDLIST` and loses its preload hint. Later samples are dropped.
    pub fn end(&mut self) {
        if self.ended {
            return;
        }
        self.published = Published::default();
        self.flush_period();
        self.close_segment();
        self.period = None;
        self.ended = true;
        self.drop_unused_inits();
    }

    /// The media sequence number the next segment would have (for
    /// [`LiveStream::continuing`]).
    pub fn next_media_sequence(&self) -> u64 {
        self.next_msn + u64::from(self.open.as_ref().is_some_and(|o| !o.parts.is_empty()))
    }

    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Whether [`LiveStream::playlist`] has something to say (the first segment is complete).
    pub fn has_playlist(&self) -> bool {
        self.target_duration.is_some()
    }

    /// The source stopped (it may come back, or the stream may end later): publish what is
    /// buffered now — the held samples and the open part — so players reach the last frame
    /// instead of waiting for a sample that may never come. Until the next
    /// [`LiveStream::set_tracks`] samples are dropped and the playlist has no preload hint; the
    /// next segment follows an `EXT-X-DISCONTINUITY`.
    ///
    /// The open segment stays open (its parts listed, no `EXTINF` yet) until
    /// [`LiveStream::end`] or [`LiveStream::set_tracks`] closes it. Closing it here would make
    /// the last live update both add a short segment and slide the window, and hls.js 1.7
    /// then misplaces that segment's parts by whole seconds on its timeline, leaving a hole it
    /// never plays past (measured: one stopped broadcast in six never reached `ended`).
    pub fn interrupt(&mut self) {
        if self.ended || self.period.is_none() {
            return;
        }
        self.published = Published::default();
        self.flush_period();
        self.period = None;
        self.pending_discontinuity = true;
        self.drop_unused_inits();
    }

    /// `EXT-X-TARGETDURATION` in seconds: fixed once the first segment completed; before, the
    /// value it will have at least (`segment_target` and `PART-TARGET` rounded up).
    pub fn target_duration(&self) -> u64 {
        self.target_duration
            .unwrap_or_else(|| self.minimum_target_duration())
    }

    fn minimum_target_duration(&self) -> u64 {
        ceil_secs(self.config.segment_target)
            .max(ceil_secs(self.config.part_target))
            .max(1)
    }

    /// What was dropped or bent so far.
    pub fn counters(&self) -> HlsCounters {
        self.counters
    }

    /// Segments completed since the last call, oldest first, for archiving.
    pub fn take_finished(&mut self) -> Vec<FinishedSegment> {
        std::mem::take(&mut self.finished)
    }

    /// Blocking playlist reload (RFC 8216bis §6.2.5.2): is the playlist ready for
    /// `_HLS_msn=msn` (and `_HLS_part=part`)?
    ///
    /// Ready when the playlist holds segment `msn` (or that part of it; a part index past the
    /// last part of a complete segment means part 0 of the next one), or the stream ended.
    /// TooFar when `msn` is more than two past the last complete segment, or the part is more
    /// than the Advance Part Limit (3 / PART-TARGET, or 3 parts for targets of 1 s or more)
    /// past the last part. Before the first playlist exists, a request within those limits
    /// waits.
    pub fn readiness(&self, msn: u64, part: Option<u64>) -> Readiness {
        if self.ended {
            return Readiness::Ready;
        }
        // The last complete segment is `next_msn - 1`: two past it is `next_msn + 1`.
        if msn > self.next_msn.saturating_add(1) {
            return Readiness::TooFar;
        }
        if self.target_duration.is_none() {
            return Readiness::Wait;
        }
        let open_parts = self.open.as_ref().map_or(0, |o| o.parts.len()) as u64;
        let limit = self.advance_part_limit();
        match part {
            None if msn < self.next_msn => Readiness::Ready,
            None => Readiness::Wait,
            Some(part) if msn < self.next_msn => {
                let parts = self
                    .segments
                    .iter()
                    .find(|s| s.msn == msn)
                    .map(|s| s.parts.len() as u64);
                match parts {
                    // Slid out of the playlist: the current one is past it.
                    None => Readiness::Ready,
                    Some(parts) if part < parts => Readiness::Ready,
                    // Past the last part: part 0 of the next segment.
                    Some(_) if msn + 1 < self.next_msn || open_parts > 0 => Readiness::Ready,
                    Some(_) => Readiness::Wait,
                }
            }
            Some(part) if msn == self.next_msn => {
                if part < open_parts {
                    Readiness::Ready
                } else if part >= open_parts.saturating_add(limit) {
                    Readiness::TooFar
                } else {
                    Readiness::Wait
                }
            }
            // The segment after the one in progress: at least `part + 1` parts away.
            Some(part) if part >= limit => Readiness::TooFar,
            Some(_) => Readiness::Wait,
        }
    }

    /// RFC 8216bis §6.2.5.2: three divided by the part target if it is under a second, else 3.
    fn advance_part_limit(&self) -> u64 {
        let nanos = self.config.part_target.as_nanos().max(1);
        if nanos < 1_000_000_000 {
            u64::try_from(3_000_000_000 / nanos).unwrap_or(u64::MAX)
        } else {
            3
        }
    }

    /// A media file by the name the playlist lists (without [`HlsConfig::uri_prefix`]).
    pub fn get(&self, name: &str) -> Lookup {
        let Some(name) = Name::parse(name) else {
            return Lookup::NotFound;
        };
        let first_msn = self.segments.front().map_or(self.next_msn, |s| s.msn);
        let media = |bytes: &Bytes| {
            Lookup::Found(Resource {
                bytes: bytes.clone(),
                content_type: MEDIA_CONTENT_TYPE,
            })
        };
        match name {
            Name::Init(id) => {
                if let Some((_, bytes)) = self.inits.iter().find(|(i, _)| *i == id) {
                    Lookup::Found(Resource {
                        bytes: bytes.clone(),
                        content_type: INIT_CONTENT_TYPE,
                    })
                } else if id < self.next_init_id {
                    Lookup::Gone
                } else {
                    Lookup::NotFound
                }
            }
            Name::Segment(msn) if msn < first_msn => Lookup::Gone,
            Name::Segment(msn) => match self.segments.iter().find(|s| s.msn == msn) {
                Some(segment) => media(&segment.bytes),
                None => Lookup::NotFound,
            },
            Name::Part(msn, _) if msn < first_msn => Lookup::Gone,
            Name::Part(msn, index) => {
                let parts = match &self.open {
                    Some(open) if open.msn == msn => Some(&open.parts),
                    _ => self
                        .segments
                        .iter()
                        .find(|s| s.msn == msn)
                        .map(|s| &s.parts),
                };
                let part = parts.and_then(|p| usize::try_from(index).ok().and_then(|i| p.get(i)));
                match part {
                    Some(part) => media(&part.bytes),
                    None if self.preload_hint() == Some((msn, index)) => Lookup::Pending,
                    None => Lookup::NotFound,
                }
            }
        }
    }

    /// The next part, as `EXT-X-PRELOAD-HINT` names it: `None` once ended.
    fn preload_hint(&self) -> Option<(u64, u64)> {
        if self.ended || self.period.is_none() {
            return None;
        }
        let parts = self.open.as_ref().map_or(0, |o| o.parts.len()) as u64;
        Some((self.next_msn, parts))
    }

    /// Interleaving: a primary sample is packaged only once the secondary track has reached
    /// its dts, so that every secondary sample that starts before a part's end is in that
    /// part. Without this, audio that arrives a frame or two after the video (the usual
    /// case: encoders and RTMP interleave loosely, and the last audio frame waits for its
    /// successor to learn its duration) lands in the next part, each part's audio ends tens of
    /// milliseconds before its video, and hls.js, whose buffer ends at the earlier of the two,
    /// can stall on the hole left at a segment's end (measured: one live playback in three).
    ///
    /// A primary sample stops waiting when the secondary is more than a part target behind
    /// (a stalled or muted track must not hold the picture back), when the secondary has not
    /// sent anything yet, or with `all` (the source stopped).
    fn release_primaries(&mut self, all: bool) {
        loop {
            let Some(period) = self.period.as_mut() else {
                return;
            };
            let (Some(front), Some(newest)) = (
                period.primary_waiting.front(),
                period.primary_waiting.back(),
            ) else {
                return;
            };
            let caught_up = match &period.secondary {
                Some(track) => track.last_dts.is_none_or(|last| {
                    u128::from(last) * u128::from(period.primary.timescale)
                        >= u128::from(front.dts) * u128::from(track.timescale)
                }),
                None => true,
            };
            let waited_too_long = newest.dts - front.dts > period.part_target_ticks;
            if !(all || caught_up || waited_too_long) {
                return;
            }
            if let Some(held) = period.primary_waiting.pop_front() {
                self.primary_arrived(held);
            }
        }
    }

    /// A primary sample arrived: the held one gets its duration and goes into the part, then
    /// the new one decides whether the part (and segment) close before it.
    fn primary_arrived(&mut self, next: HeldSample) {
        let Some(period) = self.period.as_mut() else {
            return;
        };
        let Some(held) = period.primary.held.take() else {
            period.primary.held = Some(next);
            return;
        };
        let duration = self.sample_duration(held.dts, next.dts, true);
        self.add_primary(held, duration);
        let Some(period) = self.period.as_mut() else {
            return;
        };
        let segment_ticks = self.open.as_ref().map_or(0, |o| o.ticks);
        if next.keyframe && segment_ticks >= period.segment_target_ticks {
            self.close_part(false);
            self.close_segment();
        } else if period.part.ticks + u64::from(duration) / 2 > period.part_target_ticks {
            // Less than half a frame of room: the next sample cannot fit, publish now rather
            // than one frame later. With more room the next sample decides ([`add_primary`]
            // closes the part if it does not fit): frame durations jitter (30 fps over FLV's
            // milliseconds is 33, 33, 34 ms), and predicting "as long as this one" would
            // close 5-frame parts of 167 ms where 6 frames make exactly 200 ms, leaving a
            // one-frame part at the end of every segment.
            self.close_part(false);
            self.enforce_target_duration();
        }
        if let Some(period) = self.period.as_mut() {
            period.primary.held = Some(next);
        }
    }

    /// The held sample's duration from the next dts (which is greater), remembered as the
    /// estimate for the next one.
    fn sample_duration(&mut self, dts: u64, next_dts: u64, primary: bool) -> u32 {
        let duration = u32::try_from(next_dts.saturating_sub(dts)).unwrap_or(u32::MAX);
        if let Some(period) = self.period.as_mut() {
            let track = if primary {
                Some(&mut period.primary)
            } else {
                period.secondary.as_mut()
            };
            if let Some(track) = track {
                track.last_duration = duration;
            }
        }
        duration
    }

    fn secondary_arrived(&mut self, next: HeldSample) {
        let Some(held) = self
            .period
            .as_mut()
            .and_then(|p| p.secondary.as_mut())
            .and_then(|s| s.held.take())
        else {
            if let Some(secondary) = self.period.as_mut().and_then(|p| p.secondary.as_mut()) {
                secondary.held = Some(next);
            }
            return;
        };
        let duration = self.sample_duration(held.dts, next.dts, false);
        self.queue_secondary(held, duration);
        if let Some(secondary) = self.period.as_mut().and_then(|p| p.secondary.as_mut()) {
            secondary.held = Some(next);
        }
    }

    fn queue_secondary(&mut self, held: HeldSample, duration: u32) {
        let Some(period) = self.period.as_mut() else {
            return;
        };
        if period.secondary_queue.len() >= MAX_QUEUED_SECONDARY {
            period.secondary_queue.pop_front();
            self.counters.dropped_queue_full += 1;
        }
        period.secondary_queue.push_back(TimedSample {
            dts: held.dts,
            sample: FragmentSample {
                duration,
                cts_offset: held.cts_offset,
                keyframe: true,
                data: held.data,
            },
        });
    }

    /// Put a primary sample with its duration into the open part, closing the part first if
    /// the sample would take it past `PART-TARGET`.
    fn add_primary(&mut self, held: HeldSample, duration: u32) {
        let Some(period) = self.period.as_ref() else {
            return;
        };
        let part_target = period.part_target_ticks;
        if !period.part.samples.is_empty() && period.part.ticks + u64::from(duration) > part_target
        {
            self.close_part(false);
            self.enforce_target_duration();
        }
        let Some(period) = self.period.as_mut() else {
            return;
        };
        if self.open.is_none() {
            self.open = Some(OpenSegment {
                msn: self.next_msn,
                parts: Vec::new(),
                ticks: 0,
                timescale: period.primary.timescale,
                program_date_time: period.program_date_time(held.dts, held.wall_clock),
                discontinuity: std::mem::take(&mut self.pending_discontinuity),
                init_id: period.init_id,
                independent: held.keyframe,
            });
        }
        if period.part.samples.is_empty() {
            period.part.base_dts = held.dts;
            period.part.independent = held.keyframe;
        }
        period.part.ticks += u64::from(duration);
        period.part.samples.push(FragmentSample {
            duration,
            cts_offset: held.cts_offset,
            keyframe: held.keyframe,
            data: held.data,
        });
        if let Some(open) = self.open.as_mut() {
            open.ticks += u64::from(duration);
        }
        if u64::from(duration) > part_target {
            self.counters.long_samples += 1;
        }
    }

    /// Close the open part: its primary samples and the secondary samples that start before
    /// its end (all of them when `flush`) become one fragment.
    fn close_part(&mut self, flush: bool) {
        let Some(period) = self.period.as_mut() else {
            return;
        };
        if period.part.samples.is_empty() {
            return;
        }
        let part = std::mem::take(&mut period.part);
        let end = u128::from(part.base_dts) + u128::from(part.ticks);
        let primary_rate = u128::from(period.primary.timescale);
        let mut secondary = Vec::new();
        let mut secondary_base = 0;
        if let Some(track) = &period.secondary {
            let rate = u128::from(track.timescale);
            while let Some(first) = period.secondary_queue.front() {
                // first.dts / rate < end / primary_rate, without division.
                if !flush && u128::from(first.dts) * primary_rate >= end * rate {
                    break;
                }
                if let Some(timed) = period.secondary_queue.pop_front() {
                    if secondary.is_empty() {
                        secondary_base = timed.dts;
                    }
                    secondary.push(timed.sample);
                }
            }
        }
        let mut runs = vec![TrackRun {
            track_id: period.primary.track_id,
            base_media_decode_time: part.base_dts,
            samples: &part.samples,
        }];
        if let Some(track) = &period.secondary {
            runs.push(TrackRun {
                track_id: track.track_id,
                base_media_decode_time: secondary_base,
                samples: &secondary,
            });
        }
        let timescale = period.primary.timescale;
        let sequence = self.fragment_sequence;
        self.fragment_sequence = self.fragment_sequence.wrapping_add(1).max(1);
        match fmp4::fragment(sequence, &runs) {
            Ok(bytes) => {
                if let Some(open) = self.open.as_mut() {
                    open.parts.push(Part {
                        duration: ticks_to_duration(part.ticks, timescale),
                        independent: part.independent,
                        bytes,
                    });
                    self.published.parts += 1;
                }
            }
            Err(_) => {
                self.counters.dropped_unencodable += (part.samples.len() + secondary.len()) as u64;
                if let Some(open) = self.open.as_mut() {
                    open.ticks = open.ticks.saturating_sub(part.ticks);
                }
            }
        }
    }

    /// After a part closed: if one more part could take the segment's rounded duration past
    /// the target duration, close the segment here, keyframe or not.
    fn enforce_target_duration(&mut self) {
        let (Some(open), Some(period)) = (self.open.as_ref(), self.period.as_ref()) else {
            return;
        };
        let target = self
            .target_duration
            .unwrap_or_else(|| self.minimum_target_duration().max(MAX_FIRST_SEGMENT_SECS));
        // Rounded to the nearest second, a duration stays ≤ target below target + 0.5 s; the
        // millisecond of margin keeps the 3-decimal EXTINF from rounding up to that half.
        let limit = duration_to_ticks(
            Duration::from_millis(target.saturating_mul(1000).saturating_add(499)),
            open.timescale,
        );
        if open.ticks + period.part_target_ticks >= limit {
            self.counters.forced_segment_cuts += 1;
            self.close_segment();
        }
    }

    /// Close the segment in progress (its parts must be closed already).
    fn close_segment(&mut self) {
        let Some(open) = self.open.take() else {
            return;
        };
        if open.parts.is_empty() {
            // Nothing was published in it: the next segment takes its place.
            self.pending_discontinuity |= open.discontinuity;
            return;
        }
        let mut buffer = BytesMut::with_capacity(open.parts.iter().map(|p| p.bytes.len()).sum());
        for part in &open.parts {
            buffer.extend_from_slice(&part.bytes);
        }
        let bytes = buffer.freeze();
        // Parts become views of the segment's bytes: one copy of the media in memory.
        let mut offset = 0;
        let parts = open
            .parts
            .into_iter()
            .map(|part| {
                let len = part.bytes.len();
                let view = bytes.slice(offset..offset + len);
                offset += len;
                Part {
                    bytes: view,
                    ..part
                }
            })
            .collect();
        let duration = ticks_to_duration(open.ticks, open.timescale);
        if self.target_duration.is_none() {
            self.target_duration = Some(self.minimum_target_duration().max(round_secs(duration)));
        }
        if open.discontinuity {
            self.discontinuity_sequence += 1;
        }
        if !open.independent {
            self.all_independent = false;
        }
        let init_bytes = self
            .inits
            .iter()
            .find(|(id, _)| *id == open.init_id)
            .map(|(_, bytes)| bytes.clone())
            .unwrap_or_default();
        let init_is_new = self.last_finished_init != Some(open.init_id);
        self.last_finished_init = Some(open.init_id);
        self.finished.push(FinishedSegment {
            record: ArchivedSegment {
                uri: segment_name(open.msn),
                init: init_name(open.init_id),
                duration: duration.as_secs_f64(),
                program_date_time: open.program_date_time,
                discontinuity: open.discontinuity,
            },
            bytes: bytes.clone(),
            init_bytes,
            init_is_new,
        });
        self.segments.push_back(Segment {
            msn: open.msn,
            parts,
            duration,
            bytes,
            program_date_time: open.program_date_time,
            discontinuity: open.discontinuity,
            discontinuity_sequence: self.discontinuity_sequence,
            init_id: open.init_id,
        });
        self.next_msn = open.msn + 1;
        self.published.segments += 1;
        self.slide_window();
    }

    /// Drop the oldest segments beyond the window, keeping at least three target durations
    /// (RFC 8216bis §6.2.2) up to a hard cap.
    fn slide_window(&mut self) {
        let window = self.config.window;
        let hard_cap = window.saturating_mul(4).saturating_add(8);
        let minimum = Duration::from_secs(3 * self.target_duration());
        let mut total: Duration = self.segments.iter().map(|s| s.duration).sum();
        while self.segments.len() > window {
            let Some(front) = self.segments.front() else {
                break;
            };
            let remaining = total.saturating_sub(front.duration);
            if remaining < minimum && self.segments.len() <= hard_cap {
                break;
            }
            total = remaining;
            self.segments.pop_front();
        }
        self.drop_unused_inits();
    }

    fn drop_unused_inits(&mut self) {
        let oldest_needed = self
            .segments
            .front()
            .map(|s| s.init_id)
            .or(self.open.as_ref().map(|o| o.init_id))
            .or(self.period.as_ref().map(|p| p.init_id));
        let current = self.period.as_ref().map(|p| p.init_id);
        self.inits.retain(|(id, _)| {
            oldest_needed.is_some_and(|oldest| *id >= oldest) || Some(*id) == current
        });
    }

    /// The duration of the source's very last secondary sample: its predecessor's, or longer
    /// so that it reaches the end of the primary track (by at most a part target). Encoders
    /// stop audio a frame or two before video; a player's buffer ends at the earlier track,
    /// and hls.js declares the end of a stream only once the middle of the last part is
    /// buffered, which a short last part then never is.
    fn last_secondary_duration(&self, dts: u64, duration: u32) -> u32 {
        let Some(period) = self.period.as_ref() else {
            return duration;
        };
        let Some(track) = period.secondary.as_ref() else {
            return duration;
        };
        if period.part.samples.is_empty() {
            return duration;
        }
        let (primary_rate, rate) = (
            u128::from(period.primary.timescale.max(1)),
            u128::from(track.timescale),
        );
        let primary_end = u128::from(period.part.base_dts) + u128::from(period.part.ticks);
        let end = (primary_end * rate).div_ceil(primary_rate);
        let needed = end.saturating_sub(u128::from(dts));
        let cap = u128::from(duration) + u128::from(period.part_target_ticks) * rate / primary_rate;
        u32::try_from(needed.min(cap)).map_or(duration, |needed| needed.max(duration))
    }

    /// Close the current source: held samples get their predecessors' durations, then the
    /// part closes. The segment stays open for the caller to close (or not, see
    /// [`LiveStream::interrupt`]).
    fn flush_period(&mut self) {
        self.release_primaries(true);
        let Some(period) = self.period.as_mut() else {
            return;
        };
        let primary = period
            .primary
            .held
            .take()
            .map(|h| (h, period.primary.last_duration));
        let secondary = period
            .secondary
            .as_mut()
            .and_then(|s| s.held.take().map(|h| (h, s.last_duration)));
        if let Some((held, duration)) = primary {
            self.add_primary(held, duration);
        }
        if let Some((held, duration)) = secondary {
            let duration = self.last_secondary_duration(held.dts, duration);
            self.queue_secondary(held, duration);
        }
        self.close_part(true);
        if let Some(period) = self.period.as_mut() {
            // Audio with no video part left to carry it.
            self.counters.dropped_queue_full += period.secondary_queue.len() as u64;
            period.secondary_queue.clear();
        }
    }
}
