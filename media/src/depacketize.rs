//! RTP to access units: H.264 depacketization for the HLS packager, and the helpers it needs.
//!
//! A WebRTC publisher sends H.264 as [RFC 6184](https://www.rfc-editor.org/rfc/rfc6184) RTP
//! payloads, packetization-mode=1; the HLS packager wants whole access units in AVCC form plus
//! the AVCDecoderConfigurationRecord and picture size for its init segment.
//!
//! - [`H264Depacketizer`]: RTP payloads in, [`AccessUnit`]s out. Single NAL unit packets
//!   ([§5.6](https://www.rfc-editor.org/rfc/rfc6184#section-5.6)), STAP-A
//!   ([§5.7.1](https://www.rfc-editor.org/rfc/rfc6184#section-5.7.1)) and FU-A
//!   ([§5.8](https://www.rfc-editor.org/rfc/rfc6184#section-5.8)). The interleaved mode's
//!   STAP-B, MTAP16, MTAP24 and FU-B are not accepted: counted as unsupported.
//! - [`sps_dimensions`]: the picture size of a sequence parameter set
//!   ([ITU-T H.264](https://www.itu.int/rec/T-REC-H.264) §7.3.2.1.1, cropping from
//!   §7.4.2.1.1).
//! - [`TimestampUnwrapper`]: 32-bit RTP timestamps onto a 64-bit timeline.
//!
//! Invariants:
//! - Nothing the publisher sends makes it panic or grow without bound: the payload parsers
//!   never index past a slice (the `rtp_h264` fuzz target holds them to that) and an access
//!   unit over [`MAX_ACCESS_UNIT_BYTES`] is dropped.
//! - An [`AccessUnit`] is whole and decodable: its `data` is well-formed AVCC (4-byte
//!   lengths, no empty NAL unit, no SPS, PPS or AUD), and it is either a keyframe or follows
//!   the previous returned access unit with nothing lost in between. The first access unit
//!   returned is a keyframe.
//! - No allocation per packet: access units are assembled in one buffer reused from one to
//!   the next; the returned [`bytes::Bytes`] is the one allocation per access unit (and the
//!   configuration record when the parameter sets change).
//! - Every access unit not returned is counted in [`DepacketizerStats`] by reason, except one
//!   without any slice (parameter sets sent on their own), which has nothing to return.
//!
//! # Loss, worked through
//!
//! The RTP layer (str0m) delivers in order and retransmits on NACK, so a gap in sequence
//! numbers here is a loss that retransmission could not repair. Any picture decoded after it
//! may refer to the lost one, so the depacketizer drops everything up to the next keyframe
//! (the broadcast task asks for one every segment). With `ts` the RTP timestamp and `M` the
//! marker bit:
//!
//! | seq | ts  | payload                   | result                                        |
//! |-----|-----|---------------------------|-----------------------------------------------|
//! | 10  | 0   | STAP-A (SPS, PPS)         |                                               |
//! | 11  | 0   | IDR slice, M              | access unit 0, keyframe, `new_config`         |
//! | 12  | 3000| FU-A start (P slice)      |                                               |
//! | —   |     | 13 lost                   |                                               |
//! | 14  | 3000| FU-A end, M               | gap: unit 3000 damaged, dropped               |
//! | 15  | 6000| P slice, M                | complete, but refers to 3000: dropped         |
//! | 16  | 9000| STAP-A (SPS, PPS)         |                                               |
//! | 17  | 9000| IDR slice, M              | access unit 9000, keyframe (same parameter sets: no `new_config`) |
//!
//! `stats()` then shows one loss and two access units dropped for it. A unit that begins
//! right after a gap (or at the very first packet, which may join mid-frame) could have lost
//! its first packets, so it must prove its start: an FU-A continuation there damages it, and
//! its first slice must begin at macroblock 0 (`first_mb_in_slice`, §7.3.3). Lost leading
//! parameter sets cannot be noticed; the last ones seen stay in force.
//!
//! An access unit ends at its marker bit (§5.1), or when a packet with another timestamp
//! arrives first (a sender that omits the marker). When that packet carries the marker
//! itself, two units complete in one [`H264Depacketizer::push`]: the older one is returned
//! and the newer one on the next call.
//!
//! Parameter sets: the depacketizer keeps the last SPS and the last PPS seen (one of each;
//! streams that switch between several PPS ids are not followed) and takes them out of the
//! access unit data. When either changes, the next access unit returned carries the new
//! configuration record in [`AccessUnit::new_config`]. A parameter set is taken from any
//! complete NAL unit, even one in an access unit later dropped for loss, because it does not
//! depend on the pictures around it.

use std::mem;

use bytes::Bytes;

/// The largest access unit assembled, in AVCC bytes: an access unit that grows past it is
/// dropped (and counted), so a publisher cannot make the server buffer without bound. A 4K
/// keyframe at a generous bitrate stays well under it.
pub const MAX_ACCESS_UNIT_BYTES: usize = 4 << 20;

/// NAL unit types (ITU-T H.264 Table 7-1) and RFC 6184 payload types (Table 1).
mod nal_type {
    /// Coded slice of a non-IDR picture.
    pub const NON_IDR_SLICE: u8 = 1;
    /// Coded slice data partition A: starts with a slice header, like the slices.
    pub const PARTITION_A: u8 = 2;
    /// Coded slice of an IDR picture: a keyframe.
    pub const IDR_SLICE: u8 = 5;
    pub const SPS: u8 = 7;
    pub const PPS: u8 = 8;
    pub const ACCESS_UNIT_DELIMITER: u8 = 9;
    pub const STAP_A: u8 = 24;
    pub const STAP_B: u8 = 25;
    pub const MTAP16: u8 = 26;
    pub const MTAP24: u8 = 27;
    pub const FU_A: u8 = 28;
    pub const FU_B: u8 = 29;
}

/// The type of a NAL unit or RTP payload: the low five bits of its first byte.
fn type_of(header: u8) -> u8 {
    header & 0x1f
}

/// A NAL unit type that may not appear inside an access unit's data: 0 and 30–31 are
/// unspecified, 24–29 are RTP payload structures.
fn is_unspecified(nal_type: u8) -> bool {
    nal_type == 0 || nal_type >= nal_type::STAP_A
}

/// One complete access unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessUnit {
    /// The RTP timestamp (90 kHz) all of its packets carried.
    pub rtp_timestamp: u32,
    /// Contains an IDR slice (NAL unit type 5): decodable without earlier pictures.
    pub keyframe: bool,
    /// AVCC: each NAL unit prefixed by its 4-byte big-endian length, in arrival order. SPS (7)
    /// and PPS (8) are not here (they are in the configuration, see `new_config`); access unit
    /// delimiters (9) are dropped; every other NAL unit is kept. Never empty: it holds at
    /// least one slice.
    pub data: Bytes,
    /// The decoder configuration, when the SPS or PPS in force changed since the previous
    /// access unit returned (and on the first one returned after both are known).
    pub new_config: Option<AvcDecoderConfig>,
}

/// What an MP4 (fMP4/CMAF) video track needs to describe H.264.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcDecoderConfig {
    /// An AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1.2) with one SPS, one PPS
    /// and 4-byte NAL unit lengths (`lengthSizeMinusOne` = 3), as `avcC` holds it.
    pub record: Vec<u8>,
    /// The picture size after cropping, from the SPS.
    pub width: u16,
    pub height: u16,
}

/// What happened to the packets pushed into an [`H264Depacketizer`]. Counters only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DepacketizerStats {
    /// Payloads pushed, duplicates included.
    pub packets: u64,
    /// Access units completed for returning (one may still wait for the next push, see
    /// [`H264Depacketizer::push`]).
    pub access_units: u64,
    /// Gaps in the sequence numbers (each gap once, however many packets it spans).
    pub losses: u64,
    /// Access units dropped because of a loss, a malformed or an unsupported packet: the one
    /// it damaged, then each complete one after it until the next keyframe.
    pub dropped_for_loss: u64,
    /// Complete access units dropped before the stream's first keyframe.
    pub before_first_keyframe: u64,
    /// Payloads that break RFC 6184 or H.264: empty, a STAP-A whose sizes do not add up, an
    /// FU-A without its start or end (when no gap explains it), an unspecified NAL unit type
    /// inside a STAP-A or FU-A, an SPS whose picture size cannot be read. Their access unit
    /// is damaged, as by a loss.
    pub malformed: u64,
    /// Payloads of packetization modes not negotiated: STAP-B, MTAP16, MTAP24 and FU-B
    /// (their access unit is damaged: part of it is missing), and NAL unit types 0, 30 and 31
    /// (ignored, RFC 6184 §5.4 leaves them undefined).
    pub unsupported: u64,
    /// Access units dropped for growing past [`MAX_ACCESS_UNIT_BYTES`].
    pub oversized: u64,
    /// Packets ignored because they repeat the previous sequence number.
    pub duplicates: u64,
}

/// Where the access unit being assembled stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// Between access units: the last one ended at a marker bit (or nothing arrived yet).
    Idle,
    /// Assembling into the buffer.
    Collecting,
    /// Part of it is lost or unusable: its remaining packets are ignored, then it is dropped.
    Damaged,
    /// It grew past [`MAX_ACCESS_UNIT_BYTES`]: likewise ignored, then dropped.
    Oversized,
}

/// RFC 6184 depacketizer for packetization-mode 1: Single NAL unit packets, STAP-A and FU-A
/// in, whole [`AccessUnit`]s out. STAP-B, MTAP and FU-B are counted as unsupported.
///
/// Sans-IO: the caller feeds each RTP packet of one H.264 stream (one SSRC) in the order
/// received. See the module documentation for loss handling.
#[derive(Debug, Clone)]
pub struct H264Depacketizer {
    /// The AVCC bytes of the access unit being assembled; cleared, not freed, between units.
    buf: Vec<u8>,
    unit: Unit,
    /// The RTP timestamp of the access unit being assembled (meaningful unless `Idle`).
    unit_timestamp: u32,
    /// The unit holds an IDR slice / any slice.
    unit_keyframe: bool,
    unit_has_slice: bool,
    /// The unit began right after a gap (or with the first packet): its start is unproven.
    unit_after_gap: bool,
    /// Its first slice's `first_mb_in_slice` is still to be checked (see the module docs).
    check_first_slice: bool,
    /// An FU-A in progress: the offset of its length prefix in `buf`.
    fragment: Option<usize>,
    last_seq: Option<u16>,
    /// Complete access units are dropped until one holds an IDR slice.
    awaiting_keyframe: bool,
    /// A unit completed in the same push as an older one, returned by the next push.
    held: Option<AccessUnit>,
    parameter_sets: ParameterSets,
    stats: DepacketizerStats,
}

impl Default for H264Depacketizer {
    fn default() -> Self {
        Self::new()
    }
}

impl H264Depacketizer {
    pub fn new() -> Self {
        H264Depacketizer {
            buf: Vec::new(),
            unit: Unit::Idle,
            unit_timestamp: 0,
            unit_keyframe: false,
            unit_has_slice: false,
            unit_after_gap: false,
            check_first_slice: false,
            fragment: None,
            last_seq: None,
            awaiting_keyframe: true,
            held: None,
            parameter_sets: ParameterSets::default(),
            stats: DepacketizerStats::default(),
        }
    }

    /// Feeds one RTP packet's payload with its sequence number, 90 kHz RTP timestamp and
    /// marker bit. Returns an access unit when one completes: at its marker bit, or when a
    /// packet with another timestamp shows it ended without one. A unit that completes
    /// together with an older one is returned by the next call (module docs).
    pub fn push(
        &mut self,
        seq: u16,
        rtp_timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) -> Option<AccessUnit> {
        self.stats.packets += 1;
        if self.last_seq == Some(seq) {
            self.stats.duplicates += 1;
            return self.held.take();
        }
        // The first packet counts as a gap (it may join mid-frame), but not as a loss.
        let gap = self.last_seq.is_none_or(|last| seq != last.wrapping_add(1));
        if gap && self.last_seq.is_some() {
            // Even between frames: what was lost may be a whole frame the next ones refer to.
            self.stats.losses += 1;
            self.awaiting_keyframe = true;
        }
        self.last_seq = Some(seq);

        if gap && self.unit != Unit::Idle {
            // What was lost may have been this unit's end.
            self.damage();
        }
        let by_timestamp = if self.unit != Unit::Idle && rtp_timestamp != self.unit_timestamp {
            self.finish()
        } else {
            None
        };
        if self.unit == Unit::Idle {
            self.begin(rtp_timestamp, gap);
        }
        if self.unit == Unit::Collecting {
            self.payload(payload);
        }
        let by_marker = if marker { self.finish() } else { None };

        // At most two units are ready: `held` is only set when the marker ended this push's
        // unit, so the next push starts Idle and cannot also finish one by timestamp.
        let mut ready = [self.held.take(), by_timestamp, by_marker]
            .into_iter()
            .flatten();
        let out = ready.next();
        self.held = ready.next();
        debug_assert!(ready.next().is_none(), "three access units in one push");
        out
    }

    pub fn stats(&self) -> DepacketizerStats {
        self.stats
    }

    fn begin(&mut self, rtp_timestamp: u32, after_gap: bool) {
        self.unit = Unit::Collecting;
        self.unit_timestamp = rtp_timestamp;
        self.unit_keyframe = false;
        self.unit_has_slice = false;
        self.unit_after_gap = after_gap;
        self.check_first_slice = after_gap;
        self.fragment = None;
        self.buf.clear();
    }

    /// The unit in progress cannot be used: its remaining packets are ignored.
    fn damage(&mut self) {
        if self.unit == Unit::Collecting {
            self.unit = Unit::Damaged;
        }
        self.fragment = None;
        self.buf.clear();
    }

    fn malformed(&mut self) {
        self.stats.malformed += 1;
        self.damage();
    }

    /// Ends the unit in progress: the access unit, or `None` with the reason counted.
    fn finish(&mut self) -> Option<AccessUnit> {
        let unit = mem::replace(&mut self.unit, Unit::Idle);
        let fragment_open = self.fragment.take().is_some();
        let access_unit = match unit {
            Unit::Idle => None,
            Unit::Damaged => {
                self.stats.dropped_for_loss += 1;
                self.awaiting_keyframe = true;
                None
            }
            Unit::Oversized => {
                self.stats.oversized += 1;
                self.awaiting_keyframe = true;
                None
            }
            Unit::Collecting if fragment_open => {
                // No gap, yet the FU-A never ended: the sender broke it.
                self.stats.malformed += 1;
                self.stats.dropped_for_loss += 1;
                self.awaiting_keyframe = true;
                None
            }
            // Parameter sets or SEI alone: nothing to decode (the parameter sets were kept).
            Unit::Collecting if !self.unit_has_slice => None,
            Unit::Collecting if self.awaiting_keyframe && !self.unit_keyframe => {
                if self.stats.access_units == 0 {
                    self.stats.before_first_keyframe += 1;
                } else {
                    self.stats.dropped_for_loss += 1;
                }
                None
            }
            Unit::Collecting => {
                self.awaiting_keyframe = false;
                self.stats.access_units += 1;
                Some(AccessUnit {
                    rtp_timestamp: self.unit_timestamp,
                    keyframe: self.unit_keyframe,
                    data: Bytes::copy_from_slice(&self.buf),
                    new_config: self.parameter_sets.take_new_config(),
                })
            }
        };
        self.buf.clear();
        access_unit
    }

    /// One RTP payload of the unit being collected.
    fn payload(&mut self, payload: &[u8]) {
        let Some((&header, body)) = payload.split_first() else {
            return self.malformed();
        };
        let payload_type = type_of(header);
        if payload_type != nal_type::FU_A && self.fragment.is_some() {
            // An FU-A must end before anything else starts (§5.8).
            return self.malformed();
        }
        match payload_type {
            nal_type::STAP_A => self.stap_a(body),
            nal_type::FU_A => self.fu_a(header, body),
            nal_type::STAP_B | nal_type::MTAP16 | nal_type::MTAP24 | nal_type::FU_B => {
                self.stats.unsupported += 1;
                self.damage();
            }
            0 | 30 | 31 => self.stats.unsupported += 1,
            _ => {
                // A single NAL unit packet: the payload is the NAL unit.
                let start = self.buf.len();
                if self.append_nal_unit(payload) {
                    self.nal_unit_complete(start);
                }
            }
        }
    }

    /// STAP-A (§5.7.1): NAL units, each after a 16-bit size. Checked whole before any is
    /// kept, so a malformed one leaves nothing behind.
    fn stap_a(&mut self, mut rest: &[u8]) {
        let mut sizes_add_up = !rest.is_empty();
        let mut check = rest;
        while let Some((size, after)) = check.split_first_chunk::<2>() {
            let size = usize::from(u16::from_be_bytes(*size));
            if size == 0 || size > after.len() {
                sizes_add_up = false;
                break;
            }
            check = &after[size..];
        }
        if !sizes_add_up || !check.is_empty() {
            return self.malformed();
        }
        while let Some((size, after)) = rest.split_first_chunk::<2>() {
            let (nal_unit, after) = after.split_at(usize::from(u16::from_be_bytes(*size)));
            rest = after;
            let start = self.buf.len();
            if !self.append_nal_unit(nal_unit) || !self.nal_unit_complete(start) {
                return;
            }
        }
    }

    /// FU-A (§5.8): one fragment of a NAL unit. The NAL unit is rebuilt in place in `buf`:
    /// its header from the FU indicator's F and NRI bits and the FU header's type.
    fn fu_a(&mut self, indicator: u8, body: &[u8]) {
        let Some((&fu_header, fragment)) = body.split_first() else {
            return self.malformed();
        };
        let start_bit = fu_header & 0x80 != 0;
        let end_bit = fu_header & 0x40 != 0;
        let fragment_type = type_of(fu_header);
        if is_unspecified(fragment_type) {
            return self.malformed();
        }
        let start = match (start_bit, self.fragment) {
            (true, None) => {
                let start = self.buf.len();
                let nal_header = (indicator & 0xe0) | fragment_type;
                if !self.append(&[0, 0, 0, 0, nal_header]) {
                    return;
                }
                self.fragment = Some(start);
                start
            }
            // A new start inside an unfinished FU-A: that one lost its end.
            (true, Some(_)) => return self.malformed(),
            // A continuation without a start: its start was lost.
            (false, None) if self.unit_after_gap => return self.damage(),
            (false, None) => return self.malformed(),
            (false, Some(start)) => {
                if self.buf.get(start + 4).map(|&h| type_of(h)) != Some(fragment_type) {
                    return self.malformed();
                }
                start
            }
        };
        if !self.append(fragment) || !end_bit {
            return;
        }
        self.fragment = None;
        let Ok(length) = u32::try_from(self.buf.len() - start - 4) else {
            return self.malformed(); // unreachable: the buffer is capped far below 4 GiB
        };
        if let Some(prefix) = self.buf.get_mut(start..start + 4) {
            prefix.copy_from_slice(&length.to_be_bytes());
        }
        self.nal_unit_complete(start);
    }

    /// Appends `nal_unit` with its length prefix. False if the unit is no longer collecting.
    fn append_nal_unit(&mut self, nal_unit: &[u8]) -> bool {
        // Callers pass at most a packet payload, far below 4 GiB.
        let length = u32::try_from(nal_unit.len()).unwrap_or(u32::MAX);
        self.append(&length.to_be_bytes()) && self.append(nal_unit)
    }

    /// Appends bytes to the unit, or marks it oversized. False if it is no longer collecting.
    fn append(&mut self, bytes: &[u8]) -> bool {
        let needed = self.buf.len() + bytes.len();
        if needed > MAX_ACCESS_UNIT_BYTES {
            self.unit = Unit::Oversized;
            self.fragment = None;
            self.buf.clear();
            return false;
        }
        if needed > self.buf.capacity() {
            // Doubling, as `Vec` would, but never past the cap.
            let target = (self.buf.capacity() * 2).clamp(needed, MAX_ACCESS_UNIT_BYTES);
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.extend_from_slice(bytes);
        true
    }

    /// The NAL unit whose length prefix is at `start` in `buf` is complete: keep it, move it
    /// to the parameter sets, or drop it. False if that damaged the unit.
    fn nal_unit_complete(&mut self, start: usize) -> bool {
        let nal_unit = self.buf.get(start + 4..).unwrap_or_default();
        let Some(&header) = nal_unit.first() else {
            self.malformed();
            return false;
        };
        match type_of(header) {
            nal_type::SPS | nal_type::PPS => {
                let accepted = self.parameter_sets.offer(nal_unit);
                self.buf.truncate(start);
                if !accepted {
                    // The slices after it may depend on it: the unit cannot be trusted.
                    self.malformed();
                }
                accepted
            }
            nal_type::ACCESS_UNIT_DELIMITER => {
                self.buf.truncate(start);
                true
            }
            slice_type @ nal_type::NON_IDR_SLICE..=nal_type::IDR_SLICE => {
                self.unit_has_slice = true;
                self.unit_keyframe |= slice_type == nal_type::IDR_SLICE;
                let starts_with_slice_header = matches!(
                    slice_type,
                    nal_type::NON_IDR_SLICE | nal_type::PARTITION_A | nal_type::IDR_SLICE
                );
                if self.check_first_slice && starts_with_slice_header {
                    self.check_first_slice = false;
                    let first_mb = BitReader::new(&nal_unit[1..]).ue();
                    if first_mb != Some(0) {
                        // The unit's first slice was lost with the gap.
                        self.damage();
                        return false;
                    }
                }
                true
            }
            other if is_unspecified(other) => {
                self.malformed();
                false
            }
            _ => true,
        }
    }
}

/// The SPS and PPS in force, and whether they changed since the last configuration reported.
#[derive(Debug, Clone, Default)]
struct ParameterSets {
    sps: Vec<u8>,
    pps: Vec<u8>,
    changed: bool,
}

impl ParameterSets {
    /// Takes an SPS or PPS NAL unit (header byte included). False if it cannot go into a
    /// configuration record: over 64 KiB, or an SPS without a readable picture size.
    fn offer(&mut self, nal_unit: &[u8]) -> bool {
        let is_sps = nal_unit
            .first()
            .is_some_and(|&h| type_of(h) == nal_type::SPS);
        let kept = if is_sps { &mut self.sps } else { &mut self.pps };
        if kept.as_slice() == nal_unit {
            return true;
        }
        if u16::try_from(nal_unit.len()).is_err() || (is_sps && parse_sps(nal_unit).is_none()) {
            return false;
        }
        kept.clear();
        kept.extend_from_slice(nal_unit);
        self.changed = true;
        true
    }

    /// The new configuration, once, after a change, when both parameter sets are known.
    fn take_new_config(&mut self) -> Option<AvcDecoderConfig> {
        if !self.changed || self.pps.is_empty() {
            return None;
        }
        let sps = parse_sps(&self.sps)?; // `offer` only keeps an SPS that parses
        self.changed = false;
        Some(AvcDecoderConfig {
            record: decoder_configuration_record(&sps, &self.sps, &self.pps),
            width: sps.width,
            height: sps.height,
        })
    }
}

/// An AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1.2) for one SPS and one PPS,
/// each at most 64 KiB, with 4-byte NAL unit lengths; for the profiles the standard lists
/// (100, 110, 122, 144) with the extension giving chroma format and bit depths, as x264
/// writes it.
fn decoder_configuration_record(parsed: &Sps, sps: &[u8], pps: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(11 + sps.len() + pps.len() + 4);
    record.extend_from_slice(&[
        1, // configurationVersion
        parsed.profile_idc,
        parsed.constraint_flags,
        parsed.level_idc,
        0xfc | 3, // reserved 6 bits, lengthSizeMinusOne = 3
        0xe0 | 1, // reserved 3 bits, numOfSequenceParameterSets = 1
    ]);
    let push_set = |record: &mut Vec<u8>, set: &[u8]| {
        let length = u16::try_from(set.len()).unwrap_or(u16::MAX); // checked by `offer`
        record.extend_from_slice(&length.to_be_bytes());
        record.extend_from_slice(set);
    };
    push_set(&mut record, sps);
    record.push(1); // numOfPictureParameterSets
    push_set(&mut record, pps);
    if matches!(parsed.profile_idc, 100 | 110 | 122 | 144) {
        record.extend_from_slice(&[
            0xfc | parsed.chroma_format_idc,
            0xf8 | parsed.bit_depth_luma_minus8,
            0xf8 | parsed.bit_depth_chroma_minus8,
            0, // numOfSequenceParameterSetExt
        ]);
    }
    record
}

/// The picture size (width, height) in pixels after frame cropping, from an SPS NAL unit
/// **including its 1-byte NAL header** (type 7), as RTP and [`crate::h264::AvcConfig::sps`]
/// carry it. `None` if it is not an SPS, is cut short, holds a value out of its range, or
/// gives a size of zero or over 65535.
///
/// Reads ITU-T H.264 §7.3.2.1.1 up to the cropping fields: the high profiles' chroma format,
/// bit depths and scaling lists, every picture order count type, `frame_mbs_only_flag`
/// (field-coded streams have map units of two macroblock rows) and the crop rectangle in
/// chroma-sample units (§7.4.2.1.1, equations 7-19 to 7-22). Emulation-prevention bytes
/// (`00 00 03`) are skipped as it reads; nothing is allocated.
pub fn sps_dimensions(sps: &[u8]) -> Option<(u16, u16)> {
    parse_sps(sps).map(|sps| (sps.width, sps.height))
}

/// What the configuration record and the track need from an SPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sps {
    profile_idc: u8,
    constraint_flags: u8,
    level_idc: u8,
    chroma_format_idc: u8,
    bit_depth_luma_minus8: u8,
    bit_depth_chroma_minus8: u8,
    width: u16,
    height: u16,
}

/// `seq_parameter_set_data()` of ITU-T H.264 §7.3.2.1.1 up to the frame cropping, each value
/// checked against its range in §7.4.2.1.1.
fn parse_sps(nal_unit: &[u8]) -> Option<Sps> {
    let (&header, rbsp) = nal_unit.split_first()?;
    if type_of(header) != nal_type::SPS {
        return None;
    }
    let mut r = BitReader::new(rbsp);
    let profile_idc = r.byte()?;
    let constraint_flags = r.byte()?;
    let level_idc = r.byte()?;
    r.ue_max(31)?; // seq_parameter_set_id

    let mut chroma_format_idc = 1; // 4:2:0 unless the profile says otherwise
    let mut separate_colour_plane = false;
    let mut bit_depth_luma_minus8 = 0;
    let mut bit_depth_chroma_minus8 = 0;
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = r.ue_max(3)?;
        if chroma_format_idc == 3 {
            separate_colour_plane = r.flag()?;
        }
        bit_depth_luma_minus8 = r.ue_max(6)?;
        bit_depth_chroma_minus8 = r.ue_max(6)?;
        r.flag()?; // qpprime_y_zero_transform_bypass_flag
        if r.flag()? {
            // seq_scaling_matrix_present_flag: 6 4x4 lists, then 2 8x8 (6 for 4:4:4).
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for index in 0..lists {
                if r.flag()? {
                    r.skip_scaling_list(if index < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue_max(12)?; // log2_max_frame_num_minus4
    match r.ue_max(2)? {
        0 => {
            r.ue_max(12)?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.flag()?; // delta_pic_order_always_zero_flag
            r.se()?; // offset_for_non_ref_pic
            r.se()?; // offset_for_top_to_bottom_field
            let cycle = r.ue_max(255)?; // num_ref_frames_in_pic_order_cnt_cycle
            for _ in 0..cycle {
                r.se()?; // offset_for_ref_frame[i]
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.flag()?; // gaps_in_frame_num_value_allowed_flag
    let width_in_mbs = u64::from(r.ue()?) + 1;
    let height_in_map_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = r.flag()?;
    if !frame_mbs_only {
        r.flag()?; // mb_adaptive_frame_field_flag
    }
    r.flag()?; // direct_8x8_inference_flag
    let [mut left, mut right, mut top, mut bottom] = [0u64; 4];
    if r.flag()? {
        // frame_cropping_flag
        for offset in [&mut left, &mut right, &mut top, &mut bottom] {
            *offset = u64::from(r.ue()?);
        }
    }

    // Equations 7-19 to 7-22 and Table 6-1: the crop unit is one chroma sample, and two
    // rows more per field when pictures are coded as fields.
    let field_factor = if frame_mbs_only { 1 } else { 2 };
    let chroma_array_type = if separate_colour_plane {
        0
    } else {
        chroma_format_idc
    };
    let (crop_unit_x, crop_unit_y) = match chroma_array_type {
        1 => (2, 2 * field_factor),
        2 => (2, field_factor),
        _ => (1, field_factor), // monochrome, 4:4:4, or 4:4:4 coded as separate planes
    };
    let full_width = width_in_mbs * 16;
    let full_height = field_factor * height_in_map_units * 16;
    let width = full_width.checked_sub(crop_unit_x * (left + right))?;
    let height = full_height.checked_sub(crop_unit_y * (top + bottom))?;
    Some(Sps {
        profile_idc,
        constraint_flags,
        level_idc,
        chroma_format_idc: u8::try_from(chroma_format_idc).ok()?,
        bit_depth_luma_minus8: u8::try_from(bit_depth_luma_minus8).ok()?,
        bit_depth_chroma_minus8: u8::try_from(bit_depth_chroma_minus8).ok()?,
        width: u16::try_from(width).ok().filter(|&w| w > 0)?,
        height: u16::try_from(height).ok().filter(|&h| h > 0)?,
    })
}

/// Reads bits, most significant first, from the bytes after a NAL unit header, dropping each
/// emulation-prevention byte (`03` after `00 00`, §7.4.1) on the way: RBSP without a copy.
struct BitReader<'a> {
    data: &'a [u8],
    /// The next byte of `data` to load.
    offset: usize,
    /// Zero bytes just loaded in a row.
    zeros: u8,
    /// The loaded byte and how many of its bits are still unread.
    current: u8,
    bits_left: u8,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        BitReader {
            data,
            offset: 0,
            zeros: 0,
            current: 0,
            bits_left: 0,
        }
    }

    fn flag(&mut self) -> Option<bool> {
        if self.bits_left == 0 {
            let mut byte = *self.data.get(self.offset)?;
            self.offset += 1;
            if self.zeros >= 2 && byte == 3 {
                byte = *self.data.get(self.offset)?;
                self.offset += 1;
                self.zeros = 0;
            }
            self.zeros = if byte == 0 {
                self.zeros.saturating_add(1)
            } else {
                0
            };
            self.current = byte;
            self.bits_left = 8;
        }
        self.bits_left -= 1;
        Some((self.current >> self.bits_left) & 1 == 1)
    }

    /// `u(n)` for n ≤ 32.
    fn bits(&mut self, count: u32) -> Option<u32> {
        let mut value = 0u32;
        for _ in 0..count {
            value = (value << 1) | u32::from(self.flag()?);
        }
        Some(value)
    }

    fn byte(&mut self) -> Option<u8> {
        u8::try_from(self.bits(8)?).ok()
    }

    /// `ue(v)` (§9.1): up to 2^32 − 2; longer codes are refused.
    fn ue(&mut self) -> Option<u32> {
        let mut leading_zeros = 0;
        while !self.flag()? {
            leading_zeros += 1;
            if leading_zeros > 31 {
                return None;
            }
        }
        let suffix = self.bits(leading_zeros)?;
        // 2^n − 1 + suffix, at most 2^32 − 2 for n = 31.
        Some(((1u64 << leading_zeros) - 1 + u64::from(suffix)) as u32)
    }

    /// `ue(v)` that must not exceed `max`.
    fn ue_max(&mut self, max: u32) -> Option<u32> {
        self.ue().filter(|&value| value <= max)
    }

    /// `se(v)` (§9.1.1).
    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }

    /// `scaling_list()` (§7.3.2.1.1.1): deltas until one makes the next scale zero (the rest
    /// repeat the last), each in −128..=127.
    fn skip_scaling_list(&mut self, size: usize) -> Option<()> {
        let mut last_scale = 8i64;
        for _ in 0..size {
            let delta = self.se().filter(|delta| (-128..=127).contains(delta))?;
            let next_scale = (last_scale + delta + 256) % 256;
            if next_scale == 0 {
                break;
            }
            last_scale = next_scale;
        }
        Some(())
    }
}

/// Unwraps 32-bit RTP timestamps onto a 64-bit timeline that does not wrap.
///
/// The first timestamp maps to itself. Each later one maps to the value congruent to it
/// modulo 2^32 that is nearest to the furthest value so far: a step back of less than 2^31
/// is reordering (it maps before that value), anything else is forward (across a wrap when
/// the 32-bit value went down). Values would go below zero only for packets reordered before
/// a first timestamp under 2^31 ticks; they are clamped to 0.
#[derive(Debug, Clone, Copy, Default)]
pub struct TimestampUnwrapper {
    /// The furthest unwrapped value so far.
    furthest: Option<u64>,
}

impl TimestampUnwrapper {
    pub fn new() -> Self {
        TimestampUnwrapper { furthest: None }
    }

    pub fn unwrap(&mut self, ts: u32) -> u64 {
        let Some(furthest) = self.furthest else {
            self.furthest = Some(u64::from(ts));
            return u64::from(ts);
        };
        // The signed distance from the furthest value's low 32 bits, in −2^31..2^31.
        let step = i64::from(ts.wrapping_sub(furthest as u32) as i32);
        let value = furthest.saturating_add_signed(step);
        self.furthest = Some(furthest.max(value));
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h264::{AvcConfig, AvccNalus, H264Packetizer, NalLengthSize};

    // --- Real x264 parameter sets ------------------------------------------------------
    //
    // SPS NAL units (header byte included) of `ffmpeg -f lavfi -i testsrc2=size=WxH:rate=10
    // -frames:v 1 -c:v libx264 [options] -f h264` (ffmpeg 5.1, x264 core 164), cut from the
    // Annex B output; the field values were checked with `-bsf:v trace_headers`.

    /// `-profile:v baseline`, 320x240: Constrained Baseline, no cropping.
    const SPS_320X240_BASELINE: &[u8] =
        &hex::<24>("6742c00bd90141fb011000000300100000030140f142a480");
    const PPS_320X240_BASELINE: &[u8] = &hex::<5>("68cb83cb20");
    /// Default (High), 1280x720: no cropping.
    const SPS_1280X720_HIGH: &[u8] =
        &hex::<26>("6764001facd9405005bb011000000300100000030140f1831960");
    const PPS_1280X720_HIGH: &[u8] = &hex::<6>("68ebe3cb22c0");
    /// Default (High), 1920x1080: coded as 1088 rows, frame_crop_bottom_offset 4.
    const SPS_1920X1080_HIGH: &[u8] =
        &hex::<27>("67640028acd940780227e5c044000003000400000300503c60c658");
    /// `-profile:v main`, 854x480: 864 columns, frame_crop_right_offset 5.
    const SPS_854X480_MAIN: &[u8] = &hex::<24>("674d4016eca06c1ef3780880000003008000000a078b16cb");
    /// `-pix_fmt yuv422p`, 642x362: High 4:2:2 (chroma_format_idc 2), right offset 7 in
    /// 2-column units, bottom offset 6 in 1-row units.
    const SPS_642X362_422: &[u8] =
        &hex::<27>("677a0016bcd940a42fe227c044000003000400000300503c58b658");
    /// `-pix_fmt yuv444p`, 642x362: High 4:4:4 Predictive (chroma_format_idc 3), offsets 14
    /// and 6 in 1-sample units.
    const SPS_642X362_444: &[u8] =
        &hex::<26>("67f40016919b281485fc7cf80880000003008000000a078b16cb");
    /// `-pix_fmt yuv420p10le`, 1280x720: High 10.
    const SPS_1280X720_HIGH10: &[u8] =
        &hex::<26>("676e001fa6cd9405005bb011000003000100000300140f183196");
    /// `-flags +ilme+ildct -x264-params interlaced=1`, 720x576: frame_mbs_only_flag 0,
    /// 18 map units of two macroblock rows.
    const SPS_720X576_INTERLACED: &[u8] =
        &hex::<24>("67640016acd940b424d80880000003008000000a0f8a14cb");
    /// The same at 1920x1080: 34 map units (1088 rows), bottom offset 2 in 4-row units.
    const SPS_1920X1080_INTERLACED: &[u8] =
        &hex::<27>("67640028acd94078044fde022000000300200000030283e2c5b2c0");

    /// x264's AVC sequence header record for `testsrc2=size=160x120` in FLV (the one
    /// `h264.rs` tests with): High, level 1.0, with the High-profile extension.
    const X264_160X120_RECORD: &[u8] = &hex::<46>(concat!(
        "01 64 00 0a ff e1 0019",
        "6764000aacd942847e5c04400000030040000005 03c4896580",
        "01 0006 68ebe3cb22c0",
        "fd f8 f8 00",
    ));

    /// Hex digits to bytes at compile time; spaces are skipped.
    const fn hex<const N: usize>(digits: &str) -> [u8; N] {
        let digits = digits.as_bytes();
        let mut out = [0u8; N];
        let (mut i, mut n) = (0, 0);
        while i < digits.len() {
            let d = digits[i];
            i += 1;
            let value = match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b' ' => continue,
                _ => panic!("not a hex digit"),
            };
            out[n / 2] |= value << (4 * (1 - n % 2));
            n += 1;
        }
        assert!(n == 2 * N, "wrong number of hex digits");
        out
    }

    // --- Helpers ---------------------------------------------------------------------

    /// An AVCC access unit with 4-byte lengths.
    fn avcc(nal_units: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for nal_unit in nal_units {
            out.extend_from_slice(&u32::try_from(nal_unit.len()).unwrap().to_be_bytes());
            out.extend_from_slice(nal_unit);
        }
        out
    }

    /// A slice NAL unit of `len` bytes whose slice header starts at macroblock 0 (`0x88`:
    /// first_mb_in_slice ue "1" = 0, then slice_type ue "0001000" = 7, I), then a counting
    /// pattern.
    fn slice(header: u8, len: usize) -> Vec<u8> {
        let mut out = vec![header, 0x88];
        out.extend((2..len).map(|i| (i % 251) as u8 | 1));
        out
    }

    /// An IDR slice and a P slice at macroblock 0.
    fn idr(len: usize) -> Vec<u8> {
        slice(0x65, len)
    }

    fn p_slice(len: usize) -> Vec<u8> {
        slice(0x41, len)
    }

    fn stap_a(nal_units: &[&[u8]]) -> Vec<u8> {
        let mut out = vec![0x78];
        for nal_unit in nal_units {
            out.extend_from_slice(&u16::try_from(nal_unit.len()).unwrap().to_be_bytes());
            out.extend_from_slice(nal_unit);
        }
        out
    }

    /// FU-A fragments of `nal_unit`, `size` body bytes each.
    fn fu_a(nal_unit: &[u8], size: usize) -> Vec<Vec<u8>> {
        let (header, body) = nal_unit.split_first().unwrap();
        let chunks: Vec<&[u8]> = body.chunks(size).collect();
        chunks
            .iter()
            .enumerate()
            .map(|(i, chunk)| {
                let start = if i == 0 { 0x80 } else { 0 };
                let end = if i + 1 == chunks.len() { 0x40 } else { 0 };
                let mut out = vec![(header & 0xe0) | 28, start | end | (header & 0x1f)];
                out.extend_from_slice(chunk);
                out
            })
            .collect()
    }

    /// Feeds packets with consecutive sequence numbers from `seq` (advanced), all with
    /// `ts`, the marker on the last; returns what came out.
    fn feed(
        depacketizer: &mut H264Depacketizer,
        seq: &mut u16,
        ts: u32,
        payloads: &[Vec<u8>],
    ) -> Vec<AccessUnit> {
        let mut out = Vec::new();
        for (i, payload) in payloads.iter().enumerate() {
            out.extend(depacketizer.push(*seq, ts, i + 1 == payloads.len(), payload));
            *seq = seq.wrapping_add(1);
        }
        out
    }

    /// A keyframe's packets: STAP-A with the 720p parameter sets, then an IDR slice.
    fn keyframe_packets(len: usize) -> Vec<Vec<u8>> {
        vec![stap_a(&[SPS_1280X720_HIGH, PPS_1280X720_HIGH]), idr(len)]
    }

    fn stats_after(f: impl FnOnce(&mut H264Depacketizer)) -> DepacketizerStats {
        let mut depacketizer = H264Depacketizer::new();
        f(&mut depacketizer);
        depacketizer.stats()
    }

    // --- sps_dimensions --------------------------------------------------------------

    #[test]
    fn reads_x264_picture_sizes_with_cropping() {
        let cases: [(&[u8], (u16, u16)); 10] = [
            (SPS_320X240_BASELINE, (320, 240)),
            (SPS_1280X720_HIGH, (1280, 720)),
            (SPS_1920X1080_HIGH, (1920, 1080)),
            (SPS_854X480_MAIN, (854, 480)),
            (SPS_642X362_422, (642, 362)),
            (SPS_642X362_444, (642, 362)),
            (SPS_1280X720_HIGH10, (1280, 720)),
            (SPS_720X576_INTERLACED, (720, 576)),
            (SPS_1920X1080_INTERLACED, (1920, 1080)),
            (&X264_160X120_RECORD[8..33], (160, 120)),
        ];
        for (sps, size) in cases {
            assert_eq!(sps_dimensions(sps), Some(size), "{sps:02x?}");
        }
    }

    #[test]
    fn sps_needs_its_nal_header() {
        assert_eq!(sps_dimensions(&SPS_1280X720_HIGH[1..]), None);
        assert_eq!(sps_dimensions(PPS_1280X720_HIGH), None);
        assert_eq!(sps_dimensions(&[]), None);
    }

    #[test]
    fn every_cut_sps_is_refused_without_panicking() {
        for sps in [SPS_1920X1080_HIGH, SPS_642X362_444, SPS_720X576_INTERLACED] {
            // The cropping fields end in the 11th byte or so; cuts before them must fail.
            let needed = (1..=sps.len())
                .find(|&len| sps_dimensions(&sps[..len]).is_some())
                .unwrap();
            assert!(needed > 8, "{needed}");
            for len in 0..needed {
                assert_eq!(sps_dimensions(&sps[..len]), None);
            }
        }
    }

    /// Writes SPS fields for cases x264 does not produce (scaling lists, POC type 1,
    /// monochrome, separate colour planes, emulation prevention in the sizes).
    #[derive(Default)]
    struct BitWriter {
        bits: Vec<bool>,
    }

    impl BitWriter {
        fn u(&mut self, count: u32, value: u64) -> &mut Self {
            for i in (0..count).rev() {
                self.bits.push((value >> i) & 1 == 1);
            }
            self
        }

        fn ue(&mut self, value: u64) -> &mut Self {
            let coded = value + 1;
            let len = 64 - coded.leading_zeros();
            self.u(len - 1, 0).u(len, coded)
        }

        fn se(&mut self, value: i64) -> &mut Self {
            self.ue(if value > 0 {
                2 * value as u64 - 1
            } else {
                2 * value.unsigned_abs()
            })
        }

        /// The NAL unit: header 0x67, the bits with rbsp_trailing_bits, then emulation
        /// prevention.
        fn sps(&mut self) -> Vec<u8> {
            self.u(1, 1);
            while !self.bits.len().is_multiple_of(8) {
                self.bits.push(false);
            }
            let mut out = vec![0x67];
            let mut zeros = 0;
            for byte in self.bits.chunks(8) {
                let byte = byte.iter().fold(0u8, |b, &bit| (b << 1) | u8::from(bit));
                if zeros >= 2 && byte <= 3 {
                    out.push(3);
                    zeros = 0;
                }
                zeros = if byte == 0 { zeros + 1 } else { 0 };
                out.push(byte);
            }
            out
        }
    }

    /// profile, constraint, level, sps id 0.
    fn sps_start(profile_idc: u64) -> BitWriter {
        let mut w = BitWriter::default();
        w.u(8, profile_idc).u(8, 0).u(8, 40).ue(0);
        w
    }

    /// From log2_max_frame_num to the end, frame-coded, with a crop.
    fn sps_rest(w: &mut BitWriter, mbs: (u64, u64), crop: [u64; 4]) -> Vec<u8> {
        w.ue(0).ue(2).ue(0); // log2_max_frame_num, POC type 2, max_num_ref_frames
        w.u(1, 0).ue(mbs.0 - 1).ue(mbs.1 - 1).u(1, 1).u(1, 1);
        if crop == [0; 4] {
            w.u(1, 0);
        } else {
            w.u(1, 1);
            for offset in crop {
                w.ue(offset);
            }
        }
        w.u(1, 0); // no VUI
        w.sps()
    }

    #[test]
    fn skips_scaling_lists_of_every_shape() {
        // High, 4:2:0: 8 lists. List 0 explicit and ending early (delta to scale 0), list 1
        // absent, list 6 (8x8) given in full, the rest absent.
        let mut w = sps_start(100);
        w.ue(1).ue(0).ue(0).u(1, 0).u(1, 1); // chroma 1, depths, bypass, matrix present
        w.u(1, 1).se(5).se(-13); // 8 → 13 → 0: stops
        w.u(1, 0).u(1, 0).u(1, 0).u(1, 0).u(1, 0);
        w.u(1, 1);
        for i in 0..64 {
            w.se(if i % 2 == 0 { 7 } else { -7 });
        }
        w.u(1, 0);
        let sps = sps_rest(&mut w, (120, 68), [0, 0, 0, 4]);
        assert_eq!(sps_dimensions(&sps), Some((1920, 1080)));

        // High 4:4:4: 12 lists, all present with the 8x8 ones stopping at once.
        let mut w = sps_start(244);
        w.ue(3).u(1, 0).ue(2).ue(2).u(1, 0).u(1, 1);
        for index in 0..12 {
            w.u(1, 1);
            if index < 6 {
                for _ in 0..16 {
                    w.se(1);
                }
            } else {
                w.se(-8);
            }
        }
        let sps = sps_rest(&mut w, (41, 23), [0, 14, 0, 6]);
        assert_eq!(sps_dimensions(&sps), Some((642, 362)));

        // A delta out of range is refused.
        let mut w = sps_start(100);
        w.ue(1).ue(0).ue(0).u(1, 0).u(1, 1).u(1, 1).se(128);
        assert_eq!(sps_dimensions(&sps_rest(&mut w, (20, 15), [0; 4])), None);
    }

    #[test]
    fn reads_poc_type_1_monochrome_and_separate_planes() {
        // Main, POC type 1 with a 3-entry cycle.
        let mut w = sps_start(77);
        w.ue(0)
            .ue(1)
            .u(1, 0)
            .se(-2)
            .se(3)
            .ue(3)
            .se(1)
            .se(-1)
            .se(100);
        w.ue(1)
            .u(1, 0)
            .ue(19)
            .ue(14)
            .u(1, 1)
            .u(1, 1)
            .u(1, 0)
            .u(1, 0);
        assert_eq!(sps_dimensions(&w.sps()), Some((320, 240)));

        // High 4:0:0 (chroma_format_idc 0): crop units of one sample.
        let mut w = sps_start(100);
        w.ue(0).ue(0).ue(0).u(1, 0).u(1, 0);
        assert_eq!(
            sps_dimensions(&sps_rest(&mut w, (20, 15), [1, 2, 3, 4])),
            Some((317, 233))
        );

        // 4:4:4 coded as separate planes: ChromaArrayType 0.
        let mut w = sps_start(244);
        w.ue(3).u(1, 1).ue(0).ue(0).u(1, 0).u(1, 0);
        assert_eq!(
            sps_dimensions(&sps_rest(&mut w, (20, 15), [0, 1, 0, 1])),
            Some((319, 239))
        );
    }

    #[test]
    fn skips_emulation_prevention_in_a_long_code() {
        // POC type 1 with offset_for_non_ref_pic = −2^30: se → ue(2^31), 31 zero bits in a
        // row, so the written SPS holds 00 00 03 00.
        let mut w = sps_start(66);
        w.ue(0).ue(1).u(1, 0).se(-(1 << 30)).se(0).ue(0);
        w.ue(1)
            .u(1, 0)
            .ue(79)
            .ue(44)
            .u(1, 1)
            .u(1, 1)
            .u(1, 0)
            .u(1, 0);
        let sps = w.sps();
        assert!(sps.windows(4).any(|w| w == [0, 0, 3, 0]), "{sps:02x?}");
        assert_eq!(sps_dimensions(&sps), Some((1280, 720)));
    }

    #[test]
    fn refuses_impossible_sizes_and_ranges() {
        // Cropping everything away, or more.
        let mut w = sps_start(66);
        assert_eq!(
            sps_dimensions(&sps_rest(&mut w, (1, 1), [4, 4, 0, 0])),
            None
        );
        let mut w = sps_start(66);
        assert_eq!(
            sps_dimensions(&sps_rest(&mut w, (1, 1), [0, 9, 0, 0])),
            None
        );
        // Over 65535 pixels wide.
        let mut w = sps_start(66);
        assert_eq!(sps_dimensions(&sps_rest(&mut w, (4096, 1), [0; 4])), None);
        // chroma_format_idc 4 and a 33-bit Exp-Golomb code.
        let mut w = sps_start(100);
        assert_eq!(sps_dimensions(&sps_rest(w.ue(4), (20, 15), [0; 4])), None);
        let mut w = sps_start(66);
        w.u(32, 0).u(1, 1).u(32, 0);
        assert_eq!(sps_dimensions(&w.sps()), None);
    }

    // --- The configuration record --------------------------------------------------------

    #[test]
    fn record_matches_x264s_byte_for_byte() {
        let sps = &X264_160X120_RECORD[8..33];
        let pps = &X264_160X120_RECORD[36..42];
        let mut depacketizer = H264Depacketizer::new();
        let unit = depacketizer
            .push(0, 0, false, &stap_a(&[sps, pps]))
            .or_else(|| depacketizer.push(1, 0, true, &idr(30)))
            .unwrap();
        let config = unit.new_config.unwrap();
        assert_eq!(config.record, X264_160X120_RECORD);
        assert_eq!((config.width, config.height), (160, 120));
    }

    #[test]
    fn avc_config_parses_the_records() {
        for (sps, pps, profile, extension) in [
            (SPS_320X240_BASELINE, PPS_320X240_BASELINE, 66, false),
            (SPS_642X362_422, PPS_1280X720_HIGH, 122, true),
            (SPS_642X362_444, PPS_1280X720_HIGH, 244, false),
        ] {
            let parsed = parse_sps(sps).unwrap();
            let record = decoder_configuration_record(&parsed, sps, pps);
            let config = AvcConfig::parse(&record).unwrap();
            assert_eq!(config.profile_idc(), profile);
            assert_eq!(config.profile_compatibility(), sps[2]);
            assert_eq!(config.level_idc(), sps[3]);
            assert_eq!(config.nal_length_size(), NalLengthSize::Four);
            assert_eq!(config.sps(), [sps.to_vec()]);
            assert_eq!(config.pps(), [pps.to_vec()]);
            let base = 6 + 2 + sps.len() + 1 + 2 + pps.len();
            assert_eq!(record.len(), base + if extension { 4 } else { 0 });
        }
        // 4:2:2: chroma_format 2, 8 bit.
        let record = decoder_configuration_record(
            &parse_sps(SPS_642X362_422).unwrap(),
            SPS_642X362_422,
            PPS_1280X720_HIGH,
        );
        assert_eq!(record[record.len() - 4..], [0xfe, 0xf8, 0xf8, 0x00]);
        // High 10: 10-bit luma and chroma.
        let record = decoder_configuration_record(
            &parse_sps(SPS_1280X720_HIGH10).unwrap(),
            SPS_1280X720_HIGH10,
            PPS_1280X720_HIGH,
        );
        assert_eq!(record[record.len() - 4..], [0xfd, 0xfa, 0xfa, 0x00]);
    }

    // --- Depacketizing -----------------------------------------------------------------

    #[test]
    fn round_trips_the_packetizer_output() {
        let record = decoder_configuration_record(
            &parse_sps(SPS_1280X720_HIGH).unwrap(),
            SPS_1280X720_HIGH,
            PPS_1280X720_HIGH,
        );
        let config = AvcConfig::parse(&record).unwrap();
        let sei = slice(0x06, 700);
        let frames = [
            avcc(&[&[0x09, 0x10], &sei, &idr(3000), &slice(0x65, 40)]),
            avcc(&[&[0x09, 0x30], &p_slice(1500)]),
            avcc(&[&p_slice(20), &p_slice(1199), &p_slice(1201)]),
            avcc(&[&idr(100)]),
        ];
        for max_payload in [1200, 100, 3] {
            let mut packetizer = H264Packetizer::new(max_payload);
            let mut depacketizer = H264Depacketizer::new();
            let mut seq = 65530u16; // wraps
            let mut packets = 0;
            for (i, frame) in frames.iter().enumerate() {
                let ts = (u32::MAX - 3000).wrapping_add(3000 * i as u32); // wraps too
                let mut units = Vec::new();
                packetizer
                    .packetize(&config, frame, |payload, marker| {
                        units.extend(depacketizer.push(seq, ts, marker, payload));
                        seq = seq.wrapping_add(1);
                        packets += 1;
                    })
                    .unwrap();
                let [unit] = units.try_into().unwrap();
                // The AUD is gone; everything else arrives as sent.
                let expected: Vec<&[u8]> = AvccNalus::new(frame, NalLengthSize::Four)
                    .map(Result::unwrap)
                    .filter(|nal_unit| nal_unit[0] & 0x1f != 9)
                    .collect();
                assert_eq!(unit.data, avcc(&expected), "frame {i}, {max_payload}");
                assert_eq!(unit.rtp_timestamp, ts);
                assert_eq!(unit.keyframe, i == 0 || i == 3);
                assert_eq!(unit.new_config.is_some(), i == 0);
                if let Some(new_config) = unit.new_config {
                    assert_eq!(new_config.record, record);
                    assert_eq!((new_config.width, new_config.height), (1280, 720));
                }
            }
            assert_eq!(
                depacketizer.stats(),
                DepacketizerStats {
                    packets,
                    access_units: 4,
                    ..Default::default()
                }
            );
        }
    }

    #[test]
    fn reuses_its_buffer() {
        let mut depacketizer = H264Depacketizer::new();
        let mut seq = 0;
        feed(&mut depacketizer, &mut seq, 0, &keyframe_packets(2000));
        let capacity = depacketizer.buf.capacity();
        for i in 1..50 {
            let units = feed(
                &mut depacketizer,
                &mut seq,
                3000 * i,
                &fu_a(&p_slice(2000), 500),
            );
            assert_eq!(units.len(), 1);
        }
        assert_eq!(depacketizer.buf.capacity(), capacity);
    }

    #[test]
    fn waits_for_the_first_keyframe() {
        let mut depacketizer = H264Depacketizer::new();
        let mut seq = 7;
        assert!(feed(&mut depacketizer, &mut seq, 0, &[p_slice(10)]).is_empty());
        let units = feed(&mut depacketizer, &mut seq, 3000, &keyframe_packets(10));
        assert_eq!(units.len(), 1);
        assert!(units[0].keyframe);
        assert_eq!(units[0].data, avcc(&[&idr(10)]));
        let units = feed(&mut depacketizer, &mut seq, 6000, &[p_slice(10)]);
        assert_eq!(units.len(), 1);
        assert!(!units[0].keyframe && units[0].new_config.is_none());
        let stats = depacketizer.stats();
        assert_eq!((stats.before_first_keyframe, stats.access_units), (1, 2));
    }

    #[test]
    fn joins_mid_frame_at_the_next_whole_one() {
        // The first packet is the middle of a keyframe's FU-A: that keyframe is incomplete.
        let fragments = fu_a(&idr(300), 100);
        let mut depacketizer = H264Depacketizer::new();
        let mut seq = 0;
        assert!(feed(&mut depacketizer, &mut seq, 0, &fragments[1..]).is_empty());
        assert_eq!(
            feed(&mut depacketizer, &mut seq, 3000, &keyframe_packets(10)).len(),
            1
        );
        let stats = depacketizer.stats();
        assert_eq!(
            (stats.malformed, stats.losses, stats.dropped_for_loss),
            (0, 0, 1)
        );
    }

    /// The module documentation's worked example.
    #[test]
    fn loss_drops_up_to_the_next_keyframe() {
        let mut depacketizer = H264Depacketizer::new();
        let p = fu_a(&p_slice(200), 100);
        let mut out = Vec::new();
        let stap = stap_a(&[SPS_1280X720_HIGH, PPS_1280X720_HIGH]);
        for (seq, ts, marker, payload) in [
            (10, 0, false, &stap),
            (11, 0, true, &idr(50)),
            (12, 3000, false, &p[0]),
            (14, 3000, true, &p[1]),
            (15, 6000, true, &p_slice(30)),
            (16, 9000, false, &stap),
            (17, 9000, true, &idr(60)),
        ] {
            out.push(depacketizer.push(seq, ts, marker, payload));
        }
        let returned: Vec<(usize, bool, bool)> = out
            .iter()
            .enumerate()
            .filter_map(|(i, unit)| {
                unit.as_ref()
                    .map(|u| (i, u.keyframe, u.new_config.is_some()))
            })
            .collect();
        assert_eq!(returned, [(1, true, true), (6, true, false)]);
        assert_eq!(
            depacketizer.stats(),
            DepacketizerStats {
                packets: 7,
                access_units: 2,
                losses: 1,
                dropped_for_loss: 2,
                ..Default::default()
            }
        );
    }

    #[test]
    fn a_gap_between_frames_still_breaks_the_chain() {
        // The lost packet may have been a whole frame the next one refers to.
        let mut depacketizer = H264Depacketizer::new();
        assert!(depacketizer.push(0, 0, true, &idr(10)).is_some());
        assert!(depacketizer.push(2, 6000, true, &p_slice(10)).is_none());
        assert!(depacketizer.push(3, 9000, true, &idr(10)).is_some());
        let stats = depacketizer.stats();
        assert_eq!((stats.losses, stats.dropped_for_loss), (1, 1));
    }

    #[test]
    fn a_keyframe_right_after_a_gap_is_kept_if_its_start_is_there() {
        let mut depacketizer = H264Depacketizer::new();
        assert!(depacketizer.push(0, 0, true, &idr(10)).is_some());
        // seq 1 lost (the next P frame, say); the keyframe arrives whole.
        let mut seq = 2;
        assert_eq!(
            feed(&mut depacketizer, &mut seq, 6000, &keyframe_packets(10)).len(),
            1
        );
        // Another gap that took a keyframe's first slice: the second slice starts at
        // macroblock 99 (ue "0000001100100" = 99, then padding).
        let mut second_slice = vec![0x65, 0b0000_0011, 0b0010_0100];
        second_slice.extend([0x55; 10]);
        assert!(
            depacketizer
                .push(seq + 1, 9000, true, &second_slice)
                .is_none()
        );
        // And one that took an FU-A's start.
        let fragments = fu_a(&idr(300), 100);
        let mut seq = seq + 5;
        assert!(feed(&mut depacketizer, &mut seq, 12000, &fragments[1..]).is_empty());
        let stats = depacketizer.stats();
        assert_eq!(
            (
                stats.losses,
                stats.dropped_for_loss,
                stats.malformed,
                stats.access_units
            ),
            (3, 2, 0, 2)
        );
    }

    #[test]
    fn fu_a_missing_its_start_or_end_without_a_gap_is_malformed() {
        let fragments = fu_a(&p_slice(300), 100);
        let mut depacketizer = H264Depacketizer::new();
        let mut seq = 0;
        feed(&mut depacketizer, &mut seq, 0, &keyframe_packets(10));
        // No start.
        assert!(feed(&mut depacketizer, &mut seq, 3000, &fragments[1..]).is_empty());
        // No end: the marker comes on a middle fragment.
        assert!(feed(&mut depacketizer, &mut seq, 6000, &fragments[..2]).is_empty());
        // No end, cut by a single NAL unit packet.
        let cut = [fragments[0].clone(), p_slice(10)];
        assert!(feed(&mut depacketizer, &mut seq, 9000, &cut).is_empty());
        // A second start.
        let twice = [
            fragments[0].clone(),
            fragments[0].clone(),
            fragments[2].clone(),
        ];
        assert!(feed(&mut depacketizer, &mut seq, 12000, &twice).is_empty());
        // A type change mid-way.
        let mut other = fragments[1].clone();
        other[1] = (other[1] & 0xe0) | 5;
        let changed = [fragments[0].clone(), other, fragments[2].clone()];
        assert!(feed(&mut depacketizer, &mut seq, 15000, &changed).is_empty());
        let stats = depacketizer.stats();
        assert_eq!(
            (stats.malformed, stats.dropped_for_loss, stats.losses),
            (5, 5, 0)
        );
        // Recovery at a keyframe.
        assert_eq!(
            feed(&mut depacketizer, &mut seq, 18000, &keyframe_packets(10)).len(),
            1
        );
    }

    #[test]
    fn fu_a_with_start_and_end_in_one_fragment_is_accepted() {
        let mut depacketizer = H264Depacketizer::new();
        let unit = depacketizer
            .push(0, 0, true, &fu_a(&idr(50), 100)[0])
            .unwrap();
        assert_eq!(unit.data, avcc(&[&idr(50)]));
    }

    #[test]
    fn fu_a_rebuilds_the_header_from_f_and_nri() {
        let mut nal_unit = idr(300);
        nal_unit[0] = 0xa5; // F set, NRI 1
        let mut depacketizer = H264Depacketizer::new();
        let mut seq = 0;
        let units = feed(&mut depacketizer, &mut seq, 0, &fu_a(&nal_unit, 70));
        assert_eq!(units[0].data, avcc(&[&nal_unit]));
    }

    #[test]
    fn the_timestamp_ends_a_frame_without_a_marker() {
        let mut depacketizer = H264Depacketizer::new();
        assert!(depacketizer.push(0, 0, false, &idr(10)).is_none());
        assert!(depacketizer.push(1, 0, false, &slice(0x65, 10)).is_none());
        let unit = depacketizer.push(2, 3000, false, &p_slice(10)).unwrap();
        assert_eq!(unit.rtp_timestamp, 0);
        assert_eq!(unit.data, avcc(&[&idr(10), &slice(0x65, 10)]));
        // Two complete in one push: the older is returned, the newer with the next packet
        // (a duplicate here).
        let unit = depacketizer.push(3, 6000, true, &p_slice(11)).unwrap();
        assert_eq!(unit.rtp_timestamp, 3000);
        let unit = depacketizer.push(3, 6000, true, &p_slice(11)).unwrap();
        assert_eq!(unit.rtp_timestamp, 6000);
        assert_eq!(unit.data, avcc(&[&p_slice(11)]));
        assert!(depacketizer.push(4, 9000, true, &p_slice(12)).is_some());
        let stats = depacketizer.stats();
        assert_eq!(
            (stats.access_units, stats.duplicates, stats.losses),
            (4, 1, 0)
        );
    }

    #[test]
    fn held_frame_comes_before_the_next_one() {
        let mut depacketizer = H264Depacketizer::new();
        depacketizer.push(0, 0, false, &idr(10));
        assert_eq!(
            depacketizer
                .push(1, 3000, true, &p_slice(10))
                .unwrap()
                .rtp_timestamp,
            0
        );
        // The held one (3000) comes out; this one (6000) is held in turn.
        assert_eq!(
            depacketizer
                .push(2, 6000, true, &p_slice(10))
                .unwrap()
                .rtp_timestamp,
            3000
        );
        assert_eq!(
            depacketizer
                .push(3, 9000, false, &p_slice(10))
                .unwrap()
                .rtp_timestamp,
            6000
        );
        assert_eq!(
            depacketizer
                .push(4, 9000, true, &p_slice(10))
                .unwrap()
                .rtp_timestamp,
            9000
        );
    }

    #[test]
    fn parameter_sets_leave_the_data_and_changes_are_reported_once() {
        let mut depacketizer = H264Depacketizer::new();
        let mut seq = 0;
        let sei = [0x06, 0x05, 0x01, 0x80];
        let aud = [0x09, 0xf0];
        let stap = stap_a(&[&aud, SPS_1280X720_HIGH, PPS_1280X720_HIGH, &sei]);
        let units = feed(&mut depacketizer, &mut seq, 0, &[stap.clone(), idr(20)]);
        assert_eq!(units[0].data, avcc(&[&sei, &idr(20)]));
        assert_eq!(units[0].new_config.as_ref().map(|c| c.width), Some(1280));
        // The same parameter sets again: no new configuration.
        let units = feed(&mut depacketizer, &mut seq, 3000, &[stap, idr(20)]);
        assert!(units[0].new_config.is_none());
        // A new SPS (1080p) with the old PPS, in single NAL unit packets.
        let packets = [SPS_1920X1080_HIGH.to_vec(), idr(20)];
        let units = feed(&mut depacketizer, &mut seq, 6000, &packets);
        let config = units[0].new_config.as_ref().unwrap();
        assert_eq!((config.width, config.height), (1920, 1080));
        let parsed = AvcConfig::parse(&config.record).unwrap();
        assert_eq!(parsed.sps(), [SPS_1920X1080_HIGH.to_vec()]);
        assert_eq!(parsed.pps(), [PPS_1280X720_HIGH.to_vec()]);
        // A new PPS alone, in an access unit of its own (no slice: nothing returned), then
        // reported with the next frame.
        let pps = [0x68, 0xee, 0x3c, 0x80];
        assert!(feed(&mut depacketizer, &mut seq, 9000, &[pps.to_vec()]).is_empty());
        let units = feed(&mut depacketizer, &mut seq, 12000, &[p_slice(20)]);
        let parsed = AvcConfig::parse(&units[0].new_config.as_ref().unwrap().record).unwrap();
        assert_eq!(parsed.pps(), [pps.to_vec()]);
        assert_eq!(depacketizer.stats().access_units, 4);
    }

    #[test]
    fn parameter_sets_in_a_dropped_frame_still_count() {
        let mut depacketizer = H264Depacketizer::new();
        let mut seq = 0;
        // The keyframe after its STAP-A is lost.
        let stap = stap_a(&[SPS_320X240_BASELINE, PPS_320X240_BASELINE]);
        depacketizer.push(seq, 0, false, &stap);
        seq += 2;
        assert!(depacketizer.push(seq, 3000, true, &p_slice(10)).is_none());
        seq += 1;
        // The next keyframe comes without parameter sets.
        let unit = depacketizer.push(seq, 6000, true, &idr(10)).unwrap();
        assert_eq!(unit.new_config.unwrap().width, 320);
    }

    #[test]
    fn an_fu_a_sps_is_taken_out_too() {
        let mut depacketizer = H264Depacketizer::new();
        let mut seq = 0;
        let mut packets = fu_a(SPS_1920X1080_HIGH, 10);
        packets.push(PPS_1280X720_HIGH.to_vec());
        packets.push(idr(10));
        let units = feed(&mut depacketizer, &mut seq, 0, &packets);
        assert_eq!(units[0].data, avcc(&[&idr(10)]));
        assert_eq!(units[0].new_config.as_ref().unwrap().height, 1080);
    }

    #[test]
    fn a_bad_sps_damages_its_frame() {
        let mut depacketizer = H264Depacketizer::new();
        let mut seq = 0;
        let stap = stap_a(&[&SPS_1280X720_HIGH[..6], PPS_1280X720_HIGH]);
        assert!(feed(&mut depacketizer, &mut seq, 0, &[stap, idr(10)]).is_empty());
        let stats = depacketizer.stats();
        assert_eq!((stats.malformed, stats.dropped_for_loss), (1, 1));
    }

    #[test]
    fn malformed_payloads_are_counted_and_damage_their_frame() {
        let good = stap_a(&[&[0x06, 0x01], &idr(10)]);
        let cases: [&[u8]; 7] = [
            &[],                                   // empty
            &[0x78],                               // STAP-A without units
            &good[..good.len() - 1],               // STAP-A unit past the end
            &[0x78, 0x00, 0x00, 0x00, 0x01, 0x65], // zero-size unit
            &[0x78, 0x00, 0x02, 0x78, 0x00],       // STAP-A inside a STAP-A
            &[0x7c],                               // FU-A without its header
            &[0x7c, 0x98, 0x00],                   // FU-A of type 24
        ];
        for payload in cases {
            let stats = stats_after(|d| {
                assert!(d.push(0, 0, true, payload).is_none());
                assert!(
                    d.push(1, 3000, true, &p_slice(10)).is_none(),
                    "waits for a keyframe"
                );
                assert!(d.push(2, 6000, true, &good).is_some());
            });
            assert_eq!(stats.malformed, 1, "{payload:02x?}");
            assert_eq!(stats.access_units, 1);
        }
    }

    #[test]
    fn interleaved_mode_payloads_are_unsupported() {
        for payload_type in [25u8, 26, 27, 29] {
            let stats = stats_after(|d| {
                assert!(d.push(0, 0, false, &idr(10)).is_none());
                assert!(
                    d.push(1, 0, true, &[0x60 | payload_type, 0, 0, 0])
                        .is_none()
                );
            });
            assert_eq!((stats.unsupported, stats.dropped_for_loss), (1, 1));
        }
        // Types 0, 30 and 31 are ignored; the frame around them is fine.
        for payload_type in [0u8, 30, 31] {
            let mut depacketizer = H264Depacketizer::new();
            assert!(
                depacketizer
                    .push(0, 0, false, &[payload_type, 1, 2])
                    .is_none()
            );
            let unit = depacketizer.push(1, 0, true, &idr(10)).unwrap();
            assert_eq!(unit.data, avcc(&[&idr(10)]));
            assert_eq!(depacketizer.stats().unsupported, 1);
        }
    }

    #[test]
    fn oversized_frames_are_dropped() {
        let mut depacketizer = H264Depacketizer::new();
        let mut seq = 0;
        feed(&mut depacketizer, &mut seq, 0, &keyframe_packets(10));
        let fragment_count = MAX_ACCESS_UNIT_BYTES / 60_000 + 2;
        let big = idr(60_000 * fragment_count);
        assert!(feed(&mut depacketizer, &mut seq, 3000, &fu_a(&big, 60_000)).is_empty());
        assert!(depacketizer.buf.capacity() <= MAX_ACCESS_UNIT_BYTES);
        // The chain is broken: the next P frame is dropped too.
        assert!(feed(&mut depacketizer, &mut seq, 6000, &[p_slice(10)]).is_empty());
        let stats = depacketizer.stats();
        assert_eq!((stats.oversized, stats.dropped_for_loss), (1, 1));
        // Just under the limit is fine.
        let size = MAX_ACCESS_UNIT_BYTES - 4;
        let units = feed(&mut depacketizer, &mut seq, 9000, &fu_a(&idr(size), 60_000));
        assert_eq!(units[0].data.len(), MAX_ACCESS_UNIT_BYTES);
    }

    #[test]
    fn sequence_numbers_wrap_without_loss() {
        let mut depacketizer = H264Depacketizer::new();
        let mut seq = u16::MAX - 1;
        for i in 0..4 {
            let units = feed(&mut depacketizer, &mut seq, 3000 * i, &keyframe_packets(10));
            assert_eq!(units.len(), 1);
        }
        assert_eq!(depacketizer.stats().losses, 0);
    }

    // --- TimestampUnwrapper -------------------------------------------------------------

    #[test]
    fn unwraps_across_the_wrap_and_reordering() {
        let mut clock = TimestampUnwrapper::new();
        assert_eq!(clock.unwrap(u32::MAX - 100), u64::from(u32::MAX - 100));
        assert_eq!(clock.unwrap(u32::MAX - 200), u64::from(u32::MAX - 200)); // reordered
        assert_eq!(clock.unwrap(50), (1 << 32) + 50); // wrapped
        assert_eq!(clock.unwrap(u32::MAX - 50), u64::from(u32::MAX - 50)); // reordered back
        assert_eq!(clock.unwrap(100), (1 << 32) + 100);
        // Steps of just under half the range are forward; many wraps accumulate.
        let mut ts = 100u32;
        for lap in 1..=6u64 {
            ts = ts.wrapping_add(0x7fff_ffff);
            let value = clock.unwrap(ts);
            assert_eq!(value, (1 << 32) + 100 + lap * 0x7fff_ffff);
        }
    }

    #[test]
    fn reordering_before_a_small_first_timestamp_clamps_to_zero() {
        let mut clock = TimestampUnwrapper::new();
        assert_eq!(clock.unwrap(10), 10);
        assert_eq!(clock.unwrap(u32::MAX - 5), 0);
        assert_eq!(clock.unwrap(20), 20);
    }
}
