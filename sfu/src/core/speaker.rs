//! Dominant-speaker detection from the audio level each publisher's packets carry.
//!
//! Browsers put the level of every audio packet in the RTP header extension of
//! [RFC 6464](https://www.rfc-editor.org/rfc/rfc6464): 0 to 127, in −dBov (0 is the loudest a
//! signal can be, 127 is silence). The SFU never decodes audio; this is all it has, and all it
//! needs.
//!
//! Per participant the detector keeps a smoothed loudness: the linear amplitude of each level,
//! averaged with a time constant of [`SMOOTHING`]. A participant is *speaking* while a packet at
//! or above [`SPEECH_DBOV`] arrived within [`ACTIVE_WINDOW`].
//!
//! The dominant speaker changes with hysteresis, so a cough or a laugh does not move the
//! spotlight:
//! - with no dominant speaker, the loudest participant who has been speaking for
//!   [`MIN_SPEECH`] becomes it;
//! - a challenger replaces the dominant speaker after being louder by [`SWITCH_RATIO`] for
//!   [`SWITCH_HOLD`] without interruption, or after the dominant speaker has been silent for
//!   [`SILENCE_RELEASE`] while the challenger speaks;
//! - when everyone falls silent the last dominant speaker stays (conference layouts keep the
//!   last speaker large); it goes only when that participant leaves.
//!
//! Sans-IO: time is a parameter. [`SpeakerDetector::observe`] runs per audio packet and does not
//! allocate once a participant is known; [`SpeakerDetector::poll`] runs on a timer (every
//! [`POLL_INTERVAL`]) and returns a change at most once per call.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::api::ParticipantId;

/// Levels at or above this (at most this many dB below full scale) count as speech. Speech into
/// a headset or laptop microphone is −20 to −40 dBov; room noise −55 or lower.
pub const SPEECH_DBOV: u8 = 50;
/// Time constant of the smoothed loudness.
pub const SMOOTHING: Duration = Duration::from_millis(300);
/// A participant speaks while a speech-level packet arrived this recently.
pub const ACTIVE_WINDOW: Duration = Duration::from_millis(500);
/// Speech needed before a first dominant speaker is named.
pub const MIN_SPEECH: Duration = Duration::from_millis(200);
/// How much louder (linear amplitude) a challenger must be: ×1.5 is about +3.5 dB.
pub const SWITCH_RATIO: f32 = 1.5;
/// How long a challenger must stay louder, without a break, to take over.
pub const SWITCH_HOLD: Duration = Duration::from_millis(800);
/// A dominant speaker silent this long yields to anyone speaking.
pub const SILENCE_RELEASE: Duration = Duration::from_millis(1500);
/// How often the owner should call [`SpeakerDetector::poll`].
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct Voice {
    /// Smoothed linear amplitude, 0 (silence) to 1 (full scale).
    loudness: f32,
    last_packet: Instant,
    /// The start of the current run of speech, if speaking.
    speaking_since: Option<Instant>,
    last_speech: Option<Instant>,
    /// Since when this participant has been a louder challenger without a break.
    louder_since: Option<Instant>,
}

impl Voice {
    fn speaking(&self, now: Instant) -> bool {
        self.last_speech
            .is_some_and(|at| now.saturating_duration_since(at) <= ACTIVE_WINDOW)
    }
}

/// One room's dominant-speaker state.
#[derive(Debug, Default)]
pub struct SpeakerDetector {
    voices: HashMap<ParticipantId, Voice>,
    dominant: Option<ParticipantId>,
    /// What [`SpeakerDetector::poll`] last reported (a removal changes `dominant` between polls).
    reported: Option<ParticipantId>,
}

impl SpeakerDetector {
    /// One audio packet's level (RFC 6464: 0 to 127, −dBov) from `participant` at `now`.
    pub fn observe(&mut self, participant: ParticipantId, level: u8, now: Instant) {
        let level = level.min(127);
        let amplitude = 10f32.powf(-f32::from(level) / 20.0);
        let voice = self.voices.entry(participant).or_insert(Voice {
            loudness: 0.0,
            last_packet: now,
            speaking_since: None,
            last_speech: None,
            louder_since: None,
        });
        let elapsed = now.saturating_duration_since(voice.last_packet);
        let weight = 1.0 - (-elapsed.as_secs_f32() / SMOOTHING.as_secs_f32()).exp();
        // The first packet, or one after a long pause, starts from its own level's share.
        let weight = if voice.loudness == 0.0 {
            weight.max(0.2)
        } else {
            weight
        };
        voice.loudness += (amplitude - voice.loudness) * weight;
        voice.last_packet = now;
        if level <= SPEECH_DBOV {
            if !voice.speaking(now) {
                voice.speaking_since = Some(now);
            }
            voice.last_speech = Some(now);
        }
    }

    /// The participant left the room (or stopped publishing audio).
    pub fn remove(&mut self, participant: ParticipantId) {
        self.voices.remove(&participant);
        if self.dominant == Some(participant) {
            self.dominant = None;
        }
    }

    /// The current dominant speaker, if any.
    pub fn dominant(&self) -> Option<ParticipantId> {
        self.dominant
    }

    /// Whether `participant` is speaking at `now` (for a per-tile "speaking" ring).
    pub fn is_speaking(&self, participant: ParticipantId, now: Instant) -> bool {
        self.voices
            .get(&participant)
            .is_some_and(|v| v.speaking(now))
    }

    /// Re-evaluates at `now`; returns the new dominant speaker when it changed (`Some(None)`
    /// when the dominant speaker left and nobody speaks).
    pub fn poll(&mut self, now: Instant) -> Option<Option<ParticipantId>> {
        for voice in self.voices.values_mut() {
            // Loudness decays while no packets come (a muted microphone sends none).
            if now.saturating_duration_since(voice.last_packet) > ACTIVE_WINDOW {
                voice.loudness = 0.0;
            }
            if !voice.speaking(now) {
                voice.speaking_since = None;
            }
        }
        // The loudest speaking participant (ties: the lower id, so results are stable).
        let loudest = self
            .voices
            .iter()
            .filter(|(_, v)| v.speaking(now))
            .max_by(|(a_id, a), (b_id, b)| {
                a.loudness
                    .total_cmp(&b.loudness)
                    .then_with(|| b_id.cmp(a_id))
            })
            .map(|(id, v)| (*id, v.loudness, v.speaking_since));
        match (self.dominant, loudest) {
            (_, None) => {}
            (None, Some((id, _, since))) => {
                if since.is_some_and(|s| now.saturating_duration_since(s) >= MIN_SPEECH) {
                    self.dominant = Some(id);
                }
            }
            (Some(current), Some((id, loudness, _))) if id != current => {
                let (current_loudness, current_silent_for) = self
                    .voices
                    .get(&current)
                    .map(|v| {
                        let silent = v
                            .last_speech
                            .map_or(Duration::MAX, |at| now.saturating_duration_since(at));
                        (v.loudness, silent)
                    })
                    .unwrap_or((0.0, Duration::MAX));
                let challenger = self.voices.get_mut(&id).expect("loudest is known");
                if current_silent_for >= SILENCE_RELEASE {
                    self.dominant = Some(id);
                } else if loudness > current_loudness * SWITCH_RATIO {
                    let since = *challenger.louder_since.get_or_insert(now);
                    if now.saturating_duration_since(since) >= SWITCH_HOLD {
                        self.dominant = Some(id);
                    }
                } else {
                    challenger.louder_since = None;
                }
            }
            (Some(_), Some(_)) => {}
        }
        // A challenge is only continuous while the challenger stays the loudest.
        let leader = loudest.map(|(id, ..)| id);
        for (id, voice) in &mut self.voices {
            if Some(*id) != leader || Some(*id) == self.dominant {
                voice.louder_since = None;
            }
        }
        if self.dominant == self.reported {
            return None;
        }
        self.reported = self.dominant;
        Some(self.dominant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ParticipantId = ParticipantId(1);
    const B: ParticipantId = ParticipantId(2);
    const C: ParticipantId = ParticipantId(3);

    /// Simulated room: 50 audio packets per second per participant, polled every 100 ms.
    struct Room {
        detector: SpeakerDetector,
        now: Instant,
        changes: Vec<(Duration, Option<ParticipantId>)>,
        start: Instant,
    }

    impl Room {
        fn new() -> Room {
            let now = Instant::now();
            Room {
                detector: SpeakerDetector::default(),
                now,
                changes: Vec::new(),
                start: now,
            }
        }

        /// Runs `duration` with each participant at a fixed level (None: sends nothing).
        fn run(&mut self, duration: Duration, levels: &[(ParticipantId, Option<u8>)]) {
            let end = self.now + duration;
            let mut tick = 0u32;
            while self.now < end {
                self.now += Duration::from_millis(20);
                tick += 1;
                for (participant, level) in levels {
                    if let Some(level) = level {
                        self.detector.observe(*participant, *level, self.now);
                    }
                }
                if tick.is_multiple_of(5)
                    && let Some(change) = self.detector.poll(self.now)
                {
                    self.changes.push((self.now - self.start, change));
                }
            }
        }
    }

    const SILENT: u8 = 127;
    const SPEECH: u8 = 30;
    const LOUD: u8 = 15;

    #[test]
    fn the_one_who_speaks_becomes_dominant_within_a_few_hundred_ms() {
        let mut room = Room::new();
        room.run(
            Duration::from_secs(2),
            &[(A, Some(SILENT)), (B, Some(SPEECH)), (C, Some(SILENT))],
        );
        assert_eq!(room.changes.len(), 1, "{:?}", room.changes);
        let (at, who) = room.changes[0];
        assert_eq!(who, Some(B));
        assert!(at <= Duration::from_millis(400), "named after {at:?}");
        assert!(room.detector.is_speaking(B, room.now));
        assert!(!room.detector.is_speaking(A, room.now));
    }

    #[test]
    fn a_cough_does_not_take_the_spotlight() {
        let mut room = Room::new();
        room.run(
            Duration::from_secs(2),
            &[(A, Some(SPEECH)), (B, Some(SILENT))],
        );
        // B, much louder, for 400 ms: shorter than SWITCH_HOLD.
        room.run(
            Duration::from_millis(400),
            &[(A, Some(SPEECH)), (B, Some(LOUD))],
        );
        room.run(
            Duration::from_secs(2),
            &[(A, Some(SPEECH)), (B, Some(SILENT))],
        );
        assert_eq!(
            room.changes.iter().map(|c| c.1).collect::<Vec<_>>(),
            vec![Some(A)]
        );
    }

    #[test]
    fn a_louder_speaker_takes_over_after_the_hold() {
        let mut room = Room::new();
        room.run(
            Duration::from_secs(2),
            &[(A, Some(SPEECH)), (B, Some(SILENT))],
        );
        let challenged = room.now - room.start;
        room.run(
            Duration::from_secs(3),
            &[(A, Some(SPEECH)), (B, Some(LOUD))],
        );
        let (at, who) = *room.changes.last().unwrap();
        assert_eq!(who, Some(B), "{:?}", room.changes);
        let after = at - challenged;
        assert!(
            after >= SWITCH_HOLD && after <= SWITCH_HOLD + Duration::from_millis(700),
            "switched {after:?} after the challenge began"
        );
    }

    #[test]
    fn a_silent_dominant_speaker_yields_to_anyone_speaking_and_the_last_one_stays() {
        let mut room = Room::new();
        room.run(
            Duration::from_secs(2),
            &[(A, Some(SPEECH)), (B, Some(SILENT))],
        );
        // A stops; B speaks quietly (not louder than A was): B after SILENCE_RELEASE.
        room.run(Duration::from_secs(3), &[(A, Some(SILENT)), (B, Some(45))]);
        assert_eq!(room.detector.dominant(), Some(B), "{:?}", room.changes);
        // Everyone silent, or muted (no packets): B stays.
        room.run(Duration::from_secs(3), &[(A, None), (B, Some(SILENT))]);
        assert_eq!(room.detector.dominant(), Some(B));
        assert_eq!(room.changes.len(), 2, "{:?}", room.changes);
    }

    #[test]
    fn the_dominant_speaker_leaving_hands_over_or_clears() {
        let mut room = Room::new();
        room.run(
            Duration::from_secs(2),
            &[(A, Some(LOUD)), (B, Some(SPEECH)), (C, Some(SILENT))],
        );
        assert_eq!(room.detector.dominant(), Some(A));
        room.detector.remove(A);
        room.run(
            Duration::from_millis(300),
            &[(B, Some(SPEECH)), (C, Some(SILENT))],
        );
        assert_eq!(room.detector.dominant(), Some(B));
        room.detector.remove(B);
        assert_eq!(room.detector.poll(room.now), Some(None));
        assert_eq!(
            room.detector.poll(room.now),
            None,
            "a change is reported once"
        );
    }

    #[test]
    fn noise_below_the_speech_level_never_names_anyone() {
        let mut room = Room::new();
        room.run(Duration::from_secs(3), &[(A, Some(60)), (B, Some(70))]);
        assert!(room.changes.is_empty(), "{:?}", room.changes);
    }
}
