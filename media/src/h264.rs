//! H.264 from RTMP to RTP: the decoder configuration, AVCC access units, and RTP
//! packetization.
//!
//! RTMP carries H.264 the way MP4 does: one AVCDecoderConfigurationRecord (the FLV "sequence
//! header") holding the SPS and PPS, then access units in AVCC form, every NAL unit prefixed
//! by its big-endian length. WebRTC wants RTP payloads as
//! [RFC 6184](https://www.rfc-editor.org/rfc/rfc6184) defines them for packetization-mode=1
//! (non-interleaved). This module turns the one into the other:
//!
//! - [`AvcConfig::parse`]: the record of ISO/IEC 14496-15 §5.3.3.1.2.
//! - [`AvccNalus`]: splits an access unit into NAL units, borrowing them.
//! - [`H264Packetizer`]: one access unit in, RTP payloads out. Single NAL unit packets
//!   ([RFC 6184 §5.6](https://www.rfc-editor.org/rfc/rfc6184#section-5.6)) for what fits,
//!   FU-A ([§5.8](https://www.rfc-editor.org/rfc/rfc6184#section-5.8)) for what does not, and
//!   a STAP-A ([§5.7.1](https://www.rfc-editor.org/rfc/rfc6184#section-5.7.1)) with SPS and
//!   PPS before every IDR access unit, so a subscriber who joins at any keyframe can decode
//!   it: RTMP sends the parameter sets once, at the start of the stream.
//!
//! Invariants:
//! - Parsers of outside bytes never panic and never read past the slice (the `avc_config`
//!   and `flv_tag` fuzz targets hold them to that); every failure names what is wrong.
//! - The packetizer checks a whole access unit before it emits anything: a malformed one
//!   emits no packet at all, never half a frame.
//! - Every payload is at most `max_payload` bytes; the RTP marker bit is set on the last
//!   payload of the access unit and only there.
//! - No allocation per packet: single NAL units are emitted straight from the input, STAP-A
//!   and FU-A payloads are assembled in one scratch buffer of `max_payload` bytes. The
//!   packetizer allocates only when the parameter sets it keeps change.
//! - No SPS parsing: profile and level come from the configuration record's header.

use std::fmt;
use std::iter::FusedIterator;

/// NAL unit types this module acts on (ITU-T H.264 Table 7-1).
mod nal_type {
    /// Coded slice of an IDR picture: a keyframe.
    pub const IDR_SLICE: u8 = 5;
    pub const SPS: u8 = 7;
    pub const PPS: u8 = 8;
    /// Access unit delimiter: RTP has the marker bit and timestamp for that, so it is dropped.
    pub const ACCESS_UNIT_DELIMITER: u8 = 9;
    /// Filler data: padding for constant-bitrate links, useless on RTP, dropped.
    pub const FILLER_DATA: u8 = 12;
    /// RFC 6184 Table 1: aggregation packet STAP-A.
    pub const STAP_A: u8 = 24;
    /// RFC 6184 Table 1: fragmentation unit FU-A.
    pub const FU_A: u8 = 28;
}

/// The type of a NAL unit: the low five bits of its header byte.
fn type_of(nal_header: u8) -> u8 {
    nal_header & 0x1f
}

/// How many bytes prefix each NAL unit's length in AVCC (`lengthSizeMinusOne` + 1).
/// ISO/IEC 14496-15 allows 1, 2 or 4; 3 is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NalLengthSize {
    One,
    Two,
    Four,
}

impl NalLengthSize {
    /// The size for a byte count, or `None` if it is not 1, 2 or 4.
    pub fn from_bytes(bytes: u8) -> Option<Self> {
        match bytes {
            1 => Some(NalLengthSize::One),
            2 => Some(NalLengthSize::Two),
            4 => Some(NalLengthSize::Four),
            _ => None,
        }
    }

    pub fn bytes(self) -> usize {
        match self {
            NalLengthSize::One => 1,
            NalLengthSize::Two => 2,
            NalLengthSize::Four => 4,
        }
    }
}

/// Which parameter set an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParameterSet {
    Sps,
    Pps,
}

impl ParameterSet {
    fn nal_type(self) -> u8 {
        match self {
            ParameterSet::Sps => nal_type::SPS,
            ParameterSet::Pps => nal_type::PPS,
        }
    }
}

impl fmt::Display for ParameterSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParameterSet::Sps => "SPS",
            ParameterSet::Pps => "PPS",
        })
    }
}

/// Why H.264 data could not be read or packetized. Parameter set indexes count from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum H264Error {
    /// The configuration record ends inside a fixed field.
    RecordTruncated {
        field: &'static str,
        needed: usize,
        got: usize,
    },
    /// `configurationVersion` is not 1, the only version defined.
    UnsupportedRecordVersion(u8),
    /// `lengthSizeMinusOne` + 1 is 3, which ISO/IEC 14496-15 does not allow.
    InvalidNalLengthSize(u8),
    /// The record lists no SPS, or no PPS: the stream cannot be decoded.
    MissingParameterSet(ParameterSet),
    /// A parameter set's length runs past the end of the record.
    ParameterSetPastEnd {
        kind: ParameterSet,
        index: usize,
        length: usize,
        remaining: usize,
    },
    /// A parameter set of length zero.
    EmptyParameterSet { kind: ParameterSet, index: usize },
    /// A parameter set whose NAL unit type is not 7 (SPS) or 8 (PPS).
    WrongParameterSetType {
        kind: ParameterSet,
        index: usize,
        found: u8,
    },
    /// An access unit ends inside a NAL unit's length prefix.
    NalLengthTruncated {
        offset: usize,
        needed: usize,
        remaining: usize,
    },
    /// A NAL unit's length runs past the end of its access unit.
    NalUnitPastEnd {
        offset: usize,
        length: usize,
        remaining: usize,
    },
    /// A NAL unit type that H.264 leaves unspecified (0, 24–31) and RFC 6184 uses for its own
    /// packet types: sending it would break the receiver's depacketizer.
    UnspecifiedNalType(u8),
}

impl fmt::Display for H264Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const RECORD: &str = "AVC configuration record";
        match self {
            H264Error::RecordTruncated { field, needed, got } => {
                write!(
                    f,
                    "{RECORD} truncated: {field} needs {needed} bytes, got {got}"
                )
            }
            H264Error::UnsupportedRecordVersion(version) => {
                write!(
                    f,
                    "{RECORD} version {version} is not supported (only 1 is defined)"
                )
            }
            H264Error::InvalidNalLengthSize(size) => write!(
                f,
                "{RECORD} declares {size}-byte NAL unit lengths; only 1, 2 or 4 are valid"
            ),
            H264Error::MissingParameterSet(kind) => {
                write!(f, "{RECORD} has no {kind}: the stream cannot be decoded")
            }
            H264Error::ParameterSetPastEnd {
                kind,
                index,
                length,
                remaining,
            } => write!(
                f,
                "{RECORD} truncated: {kind} {index} is {length} bytes but only {remaining} remain"
            ),
            H264Error::EmptyParameterSet { kind, index } => {
                write!(f, "{RECORD} has an empty {kind} {index}")
            }
            H264Error::WrongParameterSetType { kind, index, found } => write!(
                f,
                "{RECORD}: {kind} {index} has NAL unit type {found}, expected {}",
                kind.nal_type()
            ),
            H264Error::NalLengthTruncated {
                offset,
                needed,
                remaining,
            } => write!(
                f,
                "access unit truncated: the NAL unit length at byte {offset} needs {needed} \
                 bytes, {remaining} remain"
            ),
            H264Error::NalUnitPastEnd {
                offset,
                length,
                remaining,
            } => write!(
                f,
                "access unit truncated: the NAL unit at byte {offset} is {length} bytes but \
                 only {remaining} remain"
            ),
            H264Error::UnspecifiedNalType(found) => write!(
                f,
                "access unit holds a NAL unit of unspecified type {found}, which RTP cannot carry"
            ),
        }
    }
}

impl std::error::Error for H264Error {}

/// An AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1.2): what a decoder needs
/// before the first access unit.
///
/// Invariant: holds at least one SPS and one PPS, each non-empty with the right NAL unit
/// type ([`AvcConfig::parse`] is the only constructor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    profile_idc: u8,
    profile_compatibility: u8,
    level_idc: u8,
    nal_length_size: NalLengthSize,
    sps: Vec<Vec<u8>>,
    pps: Vec<Vec<u8>>,
}

impl AvcConfig {
    /// Reads a record as RTMP's AVC sequence header delivers it.
    ///
    /// Layout: configurationVersion (1), AVCProfileIndication, profile_compatibility,
    /// AVCLevelIndication, 6 reserved bits + lengthSizeMinusOne (2 bits), 3 reserved bits +
    /// numOfSequenceParameterSets (5 bits), each SPS as a 16-bit length and bytes,
    /// numOfPictureParameterSets, each PPS likewise. The High-profile extension after the
    /// PPS (chroma format, bit depths, SPS extensions) is not needed here and not read;
    /// reserved bits are not checked, as some encoders write them as zeros.
    pub fn parse(record: &[u8]) -> Result<AvcConfig, H264Error> {
        let mut reader = RecordReader {
            data: record,
            offset: 0,
        };
        let header = reader.take(6, "header")?;
        if header[0] != 1 {
            return Err(H264Error::UnsupportedRecordVersion(header[0]));
        }
        let length_size = (header[4] & 0x03) + 1;
        let nal_length_size = NalLengthSize::from_bytes(length_size)
            .ok_or(H264Error::InvalidNalLengthSize(length_size))?;
        let sps_count = header[5] & 0x1f;
        let sps = reader.parameter_sets(ParameterSet::Sps, sps_count)?;
        let pps_count = reader.take(1, "PPS count")?[0];
        let pps = reader.parameter_sets(ParameterSet::Pps, pps_count)?;
        Ok(AvcConfig {
            profile_idc: header[1],
            profile_compatibility: header[2],
            level_idc: header[3],
            nal_length_size,
            sps,
            pps,
        })
    }

    /// `profile_idc` of the SPS (66 Baseline, 77 Main, 100 High…).
    pub fn profile_idc(&self) -> u8 {
        self.profile_idc
    }

    /// The byte between profile and level in the SPS: constraint_set0_flag in the top bit
    /// down to constraint_set5_flag, then two reserved zero bits.
    pub fn profile_compatibility(&self) -> u8 {
        self.profile_compatibility
    }

    /// `level_idc`: ten times the level number (31 is level 3.1).
    pub fn level_idc(&self) -> u8 {
        self.level_idc
    }

    /// The length prefix size of the access units that follow this record.
    pub fn nal_length_size(&self) -> NalLengthSize {
        self.nal_length_size
    }

    /// The sequence parameter sets, NAL header byte included. Never empty.
    pub fn sps(&self) -> &[Vec<u8>] {
        &self.sps
    }

    /// The picture parameter sets, NAL header byte included. Never empty.
    pub fn pps(&self) -> &[Vec<u8>] {
        &self.pps
    }

    /// The profile's name for logs, from `profile_idc` and the constraint flags
    /// (ITU-T H.264 Annex A.2).
    pub fn profile_name(&self) -> &'static str {
        let constraint = |n: u8| self.profile_compatibility & (0x80 >> n) != 0;
        match self.profile_idc {
            66 if constraint(1) => "Constrained Baseline",
            66 => "Baseline",
            77 => "Main",
            88 => "Extended",
            100 if constraint(4) && constraint(5) => "Constrained High",
            100 if constraint(4) => "Progressive High",
            100 => "High",
            110 if constraint(3) => "High 10 Intra",
            110 if constraint(4) => "Progressive High 10",
            110 => "High 10",
            122 if constraint(3) => "High 4:2:2 Intra",
            122 => "High 4:2:2",
            244 if constraint(3) => "High 4:4:4 Intra",
            244 => "High 4:4:4 Predictive",
            44 => "CAVLC 4:4:4 Intra",
            83 => "Scalable Baseline",
            86 => "Scalable High",
            118 => "Multiview High",
            128 => "Stereo High",
            _ => "unknown profile",
        }
    }
}

/// For logs: "High profile, level 3.1, 1 SPS, 1 PPS, 4-byte NAL unit lengths".
impl fmt::Display for AvcConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} profile, level ", self.profile_name())?;
        // Level 1b: level_idc 9, or 11 with constraint_set3 in the Baseline/Main/Extended
        // profiles (ITU-T H.264 A.3.1, A.3.2).
        let set3 = self.profile_compatibility & 0x10 != 0;
        if self.level_idc == 9 || (self.level_idc == 11 && set3 && self.profile_idc < 100) {
            f.write_str("1b")?;
        } else {
            write!(f, "{}.{}", self.level_idc / 10, self.level_idc % 10)?;
        }
        write!(
            f,
            ", {} SPS, {} PPS, {}-byte NAL unit lengths",
            self.sps.len(),
            self.pps.len(),
            self.nal_length_size.bytes()
        )
    }
}

/// A cursor over a configuration record whose errors name the field being read.
struct RecordReader<'a> {
    data: &'a [u8],
    offset: usize,
}

impl<'a> RecordReader<'a> {
    fn take(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], H264Error> {
        let end = self.offset.saturating_add(len);
        let bytes = self
            .data
            .get(self.offset..end)
            .ok_or(H264Error::RecordTruncated {
                field,
                needed: end,
                got: self.data.len(),
            })?;
        self.offset = end;
        Ok(bytes)
    }

    fn parameter_sets(&mut self, kind: ParameterSet, count: u8) -> Result<Vec<Vec<u8>>, H264Error> {
        if count == 0 {
            return Err(H264Error::MissingParameterSet(kind));
        }
        let length_field = match kind {
            ParameterSet::Sps => "SPS length",
            ParameterSet::Pps => "PPS length",
        };
        let mut sets = Vec::with_capacity(usize::from(count));
        for index in 1..=usize::from(count) {
            let length = self.take(2, length_field)?;
            let length = usize::from(u16::from_be_bytes([length[0], length[1]]));
            let remaining = self.data.len() - self.offset;
            let set =
                self.take(length, length_field)
                    .map_err(|_| H264Error::ParameterSetPastEnd {
                        kind,
                        index,
                        length,
                        remaining,
                    })?;
            let Some(&nal_header) = set.first() else {
                return Err(H264Error::EmptyParameterSet { kind, index });
            };
            if type_of(nal_header) != kind.nal_type() {
                return Err(H264Error::WrongParameterSetType {
                    kind,
                    index,
                    found: type_of(nal_header),
                });
            }
            sets.push(set.to_vec());
        }
        Ok(sets)
    }
}

/// The NAL units of an AVCC access unit, borrowed, in order.
///
/// Yields `Err` once, at a length prefix that is cut short or a length that runs past the
/// end, and then stops. A zero length yields an empty slice. Never allocates.
#[derive(Debug, Clone)]
pub struct AvccNalus<'a> {
    access_unit: &'a [u8],
    offset: usize,
    nal_length_size: NalLengthSize,
    failed: bool,
}

impl<'a> AvccNalus<'a> {
    pub fn new(access_unit: &'a [u8], nal_length_size: NalLengthSize) -> Self {
        AvccNalus {
            access_unit,
            offset: 0,
            nal_length_size,
            failed: false,
        }
    }

    fn fail(&mut self, error: H264Error) -> Option<Result<&'a [u8], H264Error>> {
        self.failed = true;
        Some(Err(error))
    }
}

impl<'a> Iterator for AvccNalus<'a> {
    type Item = Result<&'a [u8], H264Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.access_unit.get(self.offset..).unwrap_or_default();
        if self.failed || rest.is_empty() {
            return None;
        }
        let prefix_size = self.nal_length_size.bytes();
        let Some((prefix, after)) = rest.split_at_checked(prefix_size) else {
            return self.fail(H264Error::NalLengthTruncated {
                offset: self.offset,
                needed: prefix_size,
                remaining: rest.len(),
            });
        };
        let length = prefix
            .iter()
            .fold(0usize, |length, &byte| length << 8 | usize::from(byte));
        let Some(nal_unit) = after.get(..length) else {
            return self.fail(H264Error::NalUnitPastEnd {
                offset: self.offset,
                length,
                remaining: after.len(),
            });
        };
        self.offset += prefix_size + length;
        Some(Ok(nal_unit))
    }
}

impl FusedIterator for AvccNalus<'_> {}

/// What [`H264Packetizer::packetize`] sent for one access unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccessUnitInfo {
    /// The access unit holds an IDR slice (and so was preceded by SPS and PPS).
    pub keyframe: bool,
    /// RTP payloads emitted; zero when the access unit held only dropped NAL units.
    pub packets: usize,
    /// Payload bytes emitted, RTP headers not included.
    pub bytes: usize,
}

/// The smallest usable `max_payload`: an FU-A needs two header bytes and one byte of data.
pub const MIN_MAX_PAYLOAD: usize = 3;

/// Turns AVCC access units into RTP payloads (RFC 6184, packetization-mode=1).
///
/// It keeps the SPS and PPS to send before each IDR access unit: the first of the
/// configuration's, replaced by the latest ones seen in-band, and by a new configuration's
/// when the caller passes one with different parameter sets (a new sequence header).
#[derive(Debug, Clone)]
pub struct H264Packetizer {
    max_payload: usize,
    /// STAP-A and FU-A payloads are assembled here; capacity `max_payload`, reused.
    scratch: Vec<u8>,
    /// The parameter sets sent before the next IDR access unit.
    sps: Vec<u8>,
    pps: Vec<u8>,
    /// The configuration's first SPS and PPS as last seen, to notice a new configuration.
    config_sps: Vec<u8>,
    config_pps: Vec<u8>,
}

impl H264Packetizer {
    /// A packetizer whose payloads are at most `max_payload` bytes (the RTP MTU budget left
    /// after IP, UDP, SRTP and RTP headers and extensions, typically about 1200).
    ///
    /// # Panics
    /// If `max_payload` is below [`MIN_MAX_PAYLOAD`]: a configuration bug, not an input.
    pub fn new(max_payload: usize) -> Self {
        assert!(
            max_payload >= MIN_MAX_PAYLOAD,
            "max_payload {max_payload} cannot hold an FU-A (needs {MIN_MAX_PAYLOAD})"
        );
        H264Packetizer {
            max_payload,
            scratch: Vec::with_capacity(max_payload),
            sps: Vec::new(),
            pps: Vec::new(),
            config_sps: Vec::new(),
            config_pps: Vec::new(),
        }
    }

    /// Packetizes one AVCC access unit (the `data` of an FLV AVC NALU tag), calling
    /// `emit(payload, marker)` for each RTP payload in order. All payloads of one call share
    /// one RTP timestamp.
    ///
    /// - AUD (type 9) and filler data (12) are dropped; zero-length NAL units are skipped.
    /// - If the access unit holds an IDR slice, SPS and PPS go first, as one STAP-A or, if
    ///   that would exceed `max_payload`, as two packets; in-band SPS/PPS of that access unit
    ///   become the kept ones and are not sent a second time. In-band SPS/PPS of other access
    ///   units are kept and also forwarded where they stand.
    /// - On error nothing has been emitted.
    pub fn packetize(
        &mut self,
        config: &AvcConfig,
        access_unit: &[u8],
        emit: impl FnMut(&[u8], bool),
    ) -> Result<AccessUnitInfo, H264Error> {
        self.follow_config(config);
        let nal_length_size = config.nal_length_size();

        // First pass: check everything, find what will be sent, emit nothing.
        let mut keyframe = false;
        let mut in_band_sps = None;
        let mut in_band_pps = None;
        let mut last_parameter_set = None;
        let mut last_other = None;
        for (index, nal_unit) in AvccNalus::new(access_unit, nal_length_size).enumerate() {
            let nal_unit = nal_unit?;
            let Some(&header) = nal_unit.first() else {
                continue;
            };
            match type_of(header) {
                0 | 24..=31 => return Err(H264Error::UnspecifiedNalType(type_of(header))),
                nal_type::ACCESS_UNIT_DELIMITER | nal_type::FILLER_DATA => {}
                nal_type::SPS => {
                    in_band_sps = Some(nal_unit);
                    last_parameter_set = Some(index);
                }
                nal_type::PPS => {
                    in_band_pps = Some(nal_unit);
                    last_parameter_set = Some(index);
                }
                nal_type => {
                    keyframe |= nal_type == nal_type::IDR_SLICE;
                    last_other = Some(index);
                }
            }
        }
        // In an IDR access unit the parameter sets travel in front, not where they stand.
        let last_sent = if keyframe {
            last_other
        } else {
            last_other.max(last_parameter_set)
        };

        keep(&mut self.sps, in_band_sps);
        keep(&mut self.pps, in_band_pps);

        // Second pass: send. The first pass checked every length, so no error can stop it.
        let nal_units = AvccNalus::new(access_unit, nal_length_size).map_while(Result::ok);
        let mut out = Output {
            emit,
            max_payload: self.max_payload,
            packets: 0,
            bytes: 0,
        };
        if keyframe {
            out.parameter_sets(&mut self.scratch, &self.sps, &self.pps);
        }
        for (index, nal_unit) in nal_units.enumerate() {
            let Some(&header) = nal_unit.first() else {
                continue;
            };
            let dropped = match type_of(header) {
                nal_type::ACCESS_UNIT_DELIMITER | nal_type::FILLER_DATA => true,
                nal_type::SPS | nal_type::PPS => keyframe,
                _ => false,
            };
            if !dropped {
                out.nal_unit(&mut self.scratch, nal_unit, Some(index) == last_sent);
            }
        }
        Ok(AccessUnitInfo {
            keyframe,
            packets: out.packets,
            bytes: out.bytes,
        })
    }

    /// Takes the configuration's first SPS and PPS when they differ from the last seen: a
    /// new sequence header outranks older in-band parameter sets.
    fn follow_config(&mut self, config: &AvcConfig) {
        let (Some(sps), Some(pps)) = (config.sps().first(), config.pps().first()) else {
            return; // AvcConfig's invariant: never taken.
        };
        if self.config_sps != *sps || self.config_pps != *pps {
            self.config_sps.clone_from(sps);
            self.config_pps.clone_from(pps);
            self.sps.clone_from(sps);
            self.pps.clone_from(pps);
        }
    }
}

/// Replaces a kept parameter set, reusing its buffer.
fn keep(kept: &mut Vec<u8>, in_band: Option<&[u8]>) {
    if let Some(in_band) = in_band {
        kept.clear();
        kept.extend_from_slice(in_band);
    }
}

/// The caller's `emit`, with the size limit and the counts.
struct Output<F> {
    emit: F,
    max_payload: usize,
    packets: usize,
    bytes: usize,
}

impl<F: FnMut(&[u8], bool)> Output<F> {
    fn send(&mut self, payload: &[u8], marker: bool) {
        debug_assert!(payload.len() <= self.max_payload);
        self.packets += 1;
        self.bytes += payload.len();
        (self.emit)(payload, marker);
    }

    /// SPS and PPS before an IDR access unit: one STAP-A (RFC 6184 §5.7.1) when it fits,
    /// else each on its own. Never the marker: the IDR slice follows.
    fn parameter_sets(&mut self, scratch: &mut Vec<u8>, sps: &[u8], pps: &[u8]) {
        let (Some(&sps_header), Some(&pps_header)) = (sps.first(), pps.first()) else {
            return; // Seeded from an AvcConfig, whose parameter sets are never empty.
        };
        let stap_a_fits = 1 + 2 + sps.len() + 2 + pps.len() <= self.max_payload;
        // Each unit in a STAP-A has a 16-bit size (a max_payload over 64 KiB could allow more).
        match (u16::try_from(sps.len()), u16::try_from(pps.len())) {
            (Ok(sps_size), Ok(pps_size)) if stap_a_fits => {
                // §5.7.1: F is the OR of the aggregated F bits, NRI their maximum.
                let forbidden = (sps_header | pps_header) & 0x80;
                let nri = (sps_header & 0x60).max(pps_header & 0x60);
                scratch.clear();
                scratch.push(forbidden | nri | nal_type::STAP_A);
                scratch.extend_from_slice(&sps_size.to_be_bytes());
                scratch.extend_from_slice(sps);
                scratch.extend_from_slice(&pps_size.to_be_bytes());
                scratch.extend_from_slice(pps);
                self.send(scratch, false);
            }
            _ => {
                self.nal_unit(scratch, sps, false);
                self.nal_unit(scratch, pps, false);
            }
        }
    }

    /// One non-empty NAL unit: a single NAL unit packet (RFC 6184 §5.6) when it fits,
    /// else FU-A fragments (§5.8). `marker` goes on its last packet.
    fn nal_unit(&mut self, scratch: &mut Vec<u8>, nal_unit: &[u8], marker: bool) {
        if nal_unit.len() <= self.max_payload {
            self.send(nal_unit, marker);
            return;
        }
        let Some((&header, body)) = nal_unit.split_first() else {
            return; // Longer than max_payload, so not empty.
        };
        // FU indicator: F and NRI of the original NAL header, type 28. FU header: S, E, a
        // reserved zero bit, the original type. The NAL header byte itself is not sent: the
        // receiver rebuilds it from the two.
        let indicator = (header & 0xe0) | nal_type::FU_A;
        // The body is at least max_payload bytes and each fragment carries max_payload - 2,
        // so there are always two or more fragments: S and E never share one (§5.8).
        let fragment_len = self.max_payload - 2;
        let count = body.len().div_ceil(fragment_len);
        for (index, fragment) in body.chunks(fragment_len).enumerate() {
            let start = if index == 0 { 0x80 } else { 0 };
            let end = if index + 1 == count { 0x40 } else { 0 };
            scratch.clear();
            scratch.push(indicator);
            scratch.push(start | end | type_of(header));
            scratch.extend_from_slice(fragment);
            self.send(scratch, marker && end != 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVC sequence header record of `ffmpeg -f lavfi -i testsrc2=size=160x120:rate=10
    /// -c:v libx264 -f flv`: High profile, level 1.0, 4-byte lengths, one SPS, one PPS, and
    /// the High-profile extension (chroma 4:2:0, 8 bit, no SPS extensions).
    const X264_HIGH_RECORD: &[u8] = &[
        0x01, 0x64, 0x00, 0x0a, 0xff, 0xe1, 0x00, 0x19, // header, 1 SPS of 25 bytes
        0x67, 0x64, 0x00, 0x0a, 0xac, 0xd9, 0x42, 0x84, 0x7e, 0x5c, 0x04, 0x40, 0x00, 0x00, 0x03,
        0x00, 0x40, 0x00, 0x00, 0x05, 0x03, 0xc4, 0x89, 0x65, 0x80, // SPS
        0x01, 0x00, 0x06, 0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0, // 1 PPS of 6 bytes
        0xfd, 0xf8, 0xf8, 0x00, // High-profile extension
    ];
    /// `&data[start..end]`, in a constant.
    const fn range(data: &'static [u8], start: usize, end: usize) -> &'static [u8] {
        data.split_at(end).0.split_at(start).1
    }
    const X264_HIGH_SPS: &[u8] = range(X264_HIGH_RECORD, 8, 33);
    const X264_HIGH_PPS: &[u8] = range(X264_HIGH_RECORD, 36, 42);

    /// Same source, `-profile:v baseline -x264-params aud=1`, 16x16 blue: Constrained
    /// Baseline (constraint_set0 and set1), level 1.0.
    const X264_BASELINE_RECORD: &[u8] = &[
        0x01, 0x42, 0xc0, 0x0a, 0xff, 0xe1, 0x00, 0x16, // header, 1 SPS of 22 bytes
        0x67, 0x42, 0xc0, 0x0a, 0xd9, 0x1e, 0xc0, 0x44, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00, 0x00,
        0x03, 0x00, 0x50, 0x3c, 0x48, 0x99, 0x20, // SPS
        0x01, 0x00, 0x05, 0x68, 0xcb, 0x83, 0xcb, 0x20, // 1 PPS of 5 bytes
    ];
    const X264_BASELINE_SPS: &[u8] = range(X264_BASELINE_RECORD, 8, 30);
    const X264_BASELINE_PPS: &[u8] = range(X264_BASELINE_RECORD, 33, 38);

    /// The first access unit of that baseline stream, as its FLV tag carries it: an AUD and
    /// a 19-byte IDR slice, 4-byte lengths.
    const X264_BASELINE_IDR_AU: &[u8] = &[
        0x00, 0x00, 0x00, 0x02, 0x09, 0x10, // AUD
        0x00, 0x00, 0x00, 0x13, 0x65, 0x88, 0x84, 0x0f, 0xf1, 0x18, 0xa0, 0x00, 0x2d, 0x23, 0x1c,
        0x00, 0x05, 0x5c, 0xa3, 0x80, 0x00, 0x86, 0x0e, // IDR slice
    ];
    /// Its second access unit: an AUD and a P slice.
    const X264_BASELINE_P_AU: &[u8] = &[
        0x00, 0x00, 0x00, 0x02, 0x09, 0x30, 0x00, 0x00, 0x00, 0x05, 0x41, 0x9a, 0x38, 0x1d, 0xea,
    ];

    fn high() -> AvcConfig {
        AvcConfig::parse(X264_HIGH_RECORD).unwrap()
    }

    fn baseline() -> AvcConfig {
        AvcConfig::parse(X264_BASELINE_RECORD).unwrap()
    }

    /// An AVCC access unit with 4-byte lengths.
    fn avcc(nal_units: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for nal_unit in nal_units {
            out.extend_from_slice(&u32::try_from(nal_unit.len()).unwrap().to_be_bytes());
            out.extend_from_slice(nal_unit);
        }
        out
    }

    /// A NAL unit of `len` bytes: `header`, then a counting pattern.
    fn nal(header: u8, len: usize) -> Vec<u8> {
        let mut out = vec![header];
        out.extend((1..len).map(|i| (i % 251) as u8));
        out
    }

    type Packets = Vec<(Vec<u8>, bool)>;

    fn packetize(
        packetizer: &mut H264Packetizer,
        config: &AvcConfig,
        access_unit: &[u8],
    ) -> Result<(Packets, AccessUnitInfo), H264Error> {
        let mut packets = Vec::new();
        let info = packetizer.packetize(config, access_unit, |payload, marker| {
            packets.push((payload.to_vec(), marker));
        })?;
        Ok((packets, info))
    }

    /// An RFC 6184 depacketizer written for the tests: single NAL units, STAP-A and FU-A,
    /// checking S/E order and header bits along the way.
    fn depacketize(packets: &[(Vec<u8>, bool)]) -> Vec<Vec<u8>> {
        let mut nal_units = Vec::new();
        let mut fragmented: Option<Vec<u8>> = None;
        for (payload, _) in packets {
            match type_of(payload[0]) {
                nal_type::STAP_A => {
                    let mut rest = &payload[1..];
                    let mut nri_max = 0;
                    while !rest.is_empty() {
                        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                        let unit = &rest[2..2 + len];
                        nri_max = nri_max.max(unit[0] & 0x60);
                        nal_units.push(unit.to_vec());
                        rest = &rest[2 + len..];
                    }
                    assert_eq!(payload[0] & 0x60, nri_max, "STAP-A NRI is the maximum");
                }
                nal_type::FU_A => {
                    let (indicator, header) = (payload[0], payload[1]);
                    let (start, end) = (header & 0x80 != 0, header & 0x40 != 0);
                    assert!(!(start && end), "S and E in one FU-A");
                    assert_eq!(header & 0x20, 0, "FU header reserved bit");
                    if start {
                        assert!(fragmented.is_none(), "FU-A start inside another");
                        fragmented = Some(vec![(indicator & 0xe0) | type_of(header)]);
                    }
                    let unit = fragmented
                        .as_mut()
                        .expect("FU-A continuation without a start");
                    assert_eq!(type_of(unit[0]), type_of(header));
                    unit.extend_from_slice(&payload[2..]);
                    if end {
                        nal_units.extend(fragmented.take());
                    }
                }
                _ => {
                    assert!(fragmented.is_none(), "single NAL unit inside an FU-A");
                    nal_units.push(payload.clone());
                }
            }
        }
        assert!(fragmented.is_none(), "FU-A without an end");
        nal_units
    }

    fn assert_marker_only_on_last(packets: &Packets) {
        let markers: Vec<bool> = packets.iter().map(|(_, marker)| *marker).collect();
        let mut expected = vec![false; packets.len()];
        if let Some(last) = expected.last_mut() {
            *last = true;
        }
        assert_eq!(markers, expected);
    }

    // --- AvcConfig ---------------------------------------------------------------------

    #[test]
    fn parses_x264_high_record() {
        let config = high();
        assert_eq!(config.profile_idc(), 100);
        assert_eq!(config.profile_compatibility(), 0);
        assert_eq!(config.level_idc(), 10);
        assert_eq!(config.nal_length_size(), NalLengthSize::Four);
        assert_eq!(config.sps(), [X264_HIGH_SPS.to_vec()]);
        assert_eq!(config.pps(), [X264_HIGH_PPS.to_vec()]);
        assert_eq!(config.profile_name(), "High");
        assert_eq!(
            config.to_string(),
            "High profile, level 1.0, 1 SPS, 1 PPS, 4-byte NAL unit lengths"
        );
    }

    #[test]
    fn parses_x264_constrained_baseline_record() {
        let config = baseline();
        assert_eq!(config.profile_idc(), 66);
        assert_eq!(config.profile_compatibility(), 0xc0);
        assert_eq!(config.profile_name(), "Constrained Baseline");
        assert_eq!(config.sps(), [X264_BASELINE_SPS.to_vec()]);
        assert_eq!(config.pps(), [X264_BASELINE_PPS.to_vec()]);
    }

    #[test]
    fn reads_nal_length_size_and_several_parameter_sets() {
        // 2-byte lengths, two SPS, two PPS, no High extension.
        let record = [
            0x01, 0x4d, 0x40, 0x1f, 0xfd, 0xe2, 0x00, 0x02, 0x67, 0x01, 0x00, 0x01, 0x27, 0x02,
            0x00, 0x01, 0x68, 0x00, 0x02, 0x28, 0xaa,
        ];
        let config = AvcConfig::parse(&record).unwrap();
        assert_eq!(config.nal_length_size(), NalLengthSize::Two);
        assert_eq!(config.sps(), [vec![0x67, 0x01], vec![0x27]]);
        assert_eq!(config.pps(), [vec![0x68], vec![0x28, 0xaa]]);
        assert_eq!(config.profile_name(), "Main");
        assert_eq!(
            config.to_string(),
            "Main profile, level 3.1, 2 SPS, 2 PPS, 2-byte NAL unit lengths"
        );
    }

    #[test]
    fn names_profiles_from_constraint_flags() {
        let name = |profile_idc, profile_compatibility| {
            let mut record = X264_BASELINE_RECORD.to_vec();
            record[1] = profile_idc;
            record[2] = profile_compatibility;
            AvcConfig::parse(&record).unwrap().profile_name()
        };
        assert_eq!(name(66, 0x00), "Baseline");
        assert_eq!(name(66, 0x40), "Constrained Baseline");
        assert_eq!(name(88, 0x00), "Extended");
        assert_eq!(name(100, 0x0c), "Constrained High");
        assert_eq!(name(100, 0x08), "Progressive High");
        assert_eq!(name(110, 0x10), "High 10 Intra");
        assert_eq!(name(110, 0x00), "High 10");
        assert_eq!(name(122, 0x00), "High 4:2:2");
        assert_eq!(name(244, 0x00), "High 4:4:4 Predictive");
        assert_eq!(name(1, 0x00), "unknown profile");
    }

    #[test]
    fn shows_level_1b() {
        let mut record = X264_BASELINE_RECORD.to_vec();
        record[2] = 0x50; // constraint_set1 and set3
        record[3] = 11;
        let config = AvcConfig::parse(&record).unwrap();
        assert!(
            config
                .to_string()
                .starts_with("Constrained Baseline profile, level 1b,")
        );
    }

    #[test]
    fn rejects_bad_records_precisely() {
        let parse = |record: &[u8]| AvcConfig::parse(record).unwrap_err();
        let mut record = X264_HIGH_RECORD.to_vec();

        assert_eq!(
            parse(&[]),
            H264Error::RecordTruncated {
                field: "header",
                needed: 6,
                got: 0
            }
        );
        assert_eq!(
            parse(&record[..4]).to_string(),
            "AVC configuration record truncated: header needs 6 bytes, got 4"
        );
        assert_eq!(
            parse(&record[..7]),
            H264Error::RecordTruncated {
                field: "SPS length",
                needed: 8,
                got: 7
            }
        );
        assert_eq!(
            parse(&record[..20]).to_string(),
            "AVC configuration record truncated: SPS 1 is 25 bytes but only 12 remain"
        );
        assert_eq!(
            parse(&record[..33]),
            H264Error::RecordTruncated {
                field: "PPS count",
                needed: 34,
                got: 33
            }
        );
        assert_eq!(
            parse(&record[..40]),
            H264Error::ParameterSetPastEnd {
                kind: ParameterSet::Pps,
                index: 1,
                length: 6,
                remaining: 4
            }
        );

        record[0] = 0;
        assert_eq!(parse(&record), H264Error::UnsupportedRecordVersion(0));
        record[0] = 1;

        record[4] = 0xfe; // lengthSizeMinusOne 2
        assert_eq!(
            parse(&record).to_string(),
            "AVC configuration record declares 3-byte NAL unit lengths; only 1, 2 or 4 are valid"
        );
        record[4] = 0xff;

        record[5] = 0xe0; // no SPS
        assert_eq!(
            parse(&record),
            H264Error::MissingParameterSet(ParameterSet::Sps)
        );
        assert_eq!(
            parse(&record).to_string(),
            "AVC configuration record has no SPS: the stream cannot be decoded"
        );
        record[5] = 0xe1;

        record[33] = 0; // no PPS
        assert_eq!(
            parse(&record),
            H264Error::MissingParameterSet(ParameterSet::Pps)
        );
        record[33] = 1;

        record[8] = 0x68; // the SPS says it is a PPS
        assert_eq!(
            parse(&record).to_string(),
            "AVC configuration record: SPS 1 has NAL unit type 8, expected 7"
        );
        record[8] = 0x67;

        let empty_pps = [&record[..34], &[0x00, 0x00]].concat();
        assert_eq!(
            parse(&empty_pps),
            H264Error::EmptyParameterSet {
                kind: ParameterSet::Pps,
                index: 1
            }
        );
        assert_eq!(
            AvcConfig::parse(&record),
            Ok(high()),
            "restored record parses"
        );
    }

    // --- AvccNalus ---------------------------------------------------------------------

    #[test]
    fn splits_a_real_access_unit() {
        let nal_units: Vec<&[u8]> = AvccNalus::new(X264_BASELINE_IDR_AU, NalLengthSize::Four)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            nal_units,
            [&X264_BASELINE_IDR_AU[4..6], &X264_BASELINE_IDR_AU[10..]]
        );
    }

    #[test]
    fn splits_one_and_two_byte_lengths_and_empty_units() {
        let data = [0x01, 0x09, 0x00, 0x02, 0x65, 0x88];
        let nal_units: Vec<_> = AvccNalus::new(&data, NalLengthSize::One).collect();
        assert_eq!(
            nal_units,
            [Ok(&[0x09][..]), Ok(&[][..]), Ok(&[0x65, 0x88][..])]
        );
        let data = [0x00, 0x01, 0x09, 0x00, 0x00];
        let nal_units: Vec<_> = AvccNalus::new(&data, NalLengthSize::Two).collect();
        assert_eq!(nal_units, [Ok(&[0x09][..]), Ok(&[][..])]);
        assert_eq!(AvccNalus::new(&[], NalLengthSize::Four).count(), 0);
    }

    #[test]
    fn stops_at_a_length_past_the_end() {
        let data = [0x00, 0x01, 0x09, 0x00, 0x05, 0x65, 0x88];
        let mut nal_units = AvccNalus::new(&data, NalLengthSize::Two);
        assert_eq!(nal_units.next(), Some(Ok(&[0x09][..])));
        let error = nal_units.next().unwrap().unwrap_err();
        assert_eq!(
            error,
            H264Error::NalUnitPastEnd {
                offset: 3,
                length: 5,
                remaining: 2
            }
        );
        assert_eq!(
            error.to_string(),
            "access unit truncated: the NAL unit at byte 3 is 5 bytes but only 2 remain"
        );
        assert_eq!(nal_units.next(), None, "nothing after an error");
    }

    #[test]
    fn stops_at_a_cut_length_prefix() {
        let data = [0x00, 0x00, 0x00, 0x01, 0x09, 0x00, 0x00];
        let nal_units: Vec<_> = AvccNalus::new(&data, NalLengthSize::Four).collect();
        assert_eq!(
            nal_units,
            [
                Ok(&[0x09][..]),
                Err(H264Error::NalLengthTruncated {
                    offset: 5,
                    needed: 4,
                    remaining: 2
                })
            ]
        );
    }

    #[test]
    fn nal_length_sizes() {
        assert_eq!(NalLengthSize::from_bytes(1), Some(NalLengthSize::One));
        assert_eq!(
            NalLengthSize::from_bytes(4).map(NalLengthSize::bytes),
            Some(4)
        );
        assert_eq!(NalLengthSize::from_bytes(3), None);
        assert_eq!(NalLengthSize::from_bytes(0), None);
    }

    // --- H264Packetizer ----------------------------------------------------------------

    #[test]
    fn real_keyframe_gets_stap_a_and_loses_its_aud() {
        let mut packetizer = H264Packetizer::new(1200);
        let (packets, info) =
            packetize(&mut packetizer, &baseline(), X264_BASELINE_IDR_AU).unwrap();
        let stap_a = [
            &[0x78, 0x00, 0x16][..], // F 0, NRI 3, STAP-A; SPS size 22
            X264_BASELINE_SPS,
            &[0x00, 0x05],
            X264_BASELINE_PPS,
        ]
        .concat();
        assert_eq!(
            packets,
            [(stap_a, false), (X264_BASELINE_IDR_AU[10..].to_vec(), true)]
        );
        assert_eq!(
            info,
            AccessUnitInfo {
                keyframe: true,
                packets: 2,
                bytes: 32 + 19
            }
        );
    }

    #[test]
    fn real_inter_frame_is_one_packet_without_parameter_sets() {
        let mut packetizer = H264Packetizer::new(1200);
        let (packets, info) = packetize(&mut packetizer, &baseline(), X264_BASELINE_P_AU).unwrap();
        assert_eq!(packets, [(vec![0x41, 0x9a, 0x38, 0x1d, 0xea], true)]);
        assert_eq!(
            info,
            AccessUnitInfo {
                keyframe: false,
                packets: 1,
                bytes: 5
            }
        );
    }

    #[test]
    fn large_nal_units_round_trip_through_fu_a() {
        let sei = nal(0x06, 700);
        let idr = nal(0x65, 3000);
        let access_unit = avcc(&[&[0x09, 0x10], &sei, &idr]);
        let mut packetizer = H264Packetizer::new(1200);
        let (packets, info) = packetize(&mut packetizer, &high(), &access_unit).unwrap();

        assert_eq!(
            depacketize(&packets),
            [
                X264_HIGH_SPS.to_vec(),
                X264_HIGH_PPS.to_vec(),
                sei.clone(),
                idr.clone()
            ]
        );
        assert_marker_only_on_last(&packets);
        assert!(packets.iter().all(|(payload, _)| payload.len() <= 1200));
        // STAP-A, SEI single, then the IDR's 2999 body bytes in fragments of 1198.
        assert_eq!(packets.len(), 2 + 3);
        assert_eq!(packets[1].0, sei);
        let fu_headers: Vec<[u8; 2]> = packets[2..]
            .iter()
            .map(|(payload, _)| [payload[0], payload[1]])
            .collect();
        assert_eq!(fu_headers, [[0x7c, 0x85], [0x7c, 0x05], [0x7c, 0x45]]);
        assert_eq!(info.packets, packets.len());
        assert_eq!(
            info.bytes,
            packets
                .iter()
                .map(|(payload, _)| payload.len())
                .sum::<usize>()
        );
        assert_eq!(packetizer.scratch.capacity(), 1200, "scratch never grew");
    }

    #[test]
    fn fu_a_indicator_keeps_f_and_nri() {
        // A non-reference P slice (NRI 0) and a slice with F set and NRI 1.
        for (header, indicator) in [(0x01, 0x1c), (0xa1, 0xbc)] {
            let unit = nal(header, 50);
            let mut packetizer = H264Packetizer::new(20);
            let (packets, _) = packetize(&mut packetizer, &high(), &avcc(&[&unit])).unwrap();
            assert!(packets.iter().all(|(payload, _)| payload[0] == indicator));
            assert!(packets.iter().all(|(payload, _)| payload.len() <= 20));
            assert_eq!(depacketize(&packets), [unit]);
            assert_marker_only_on_last(&packets);
        }
    }

    #[test]
    fn nal_unit_one_byte_over_the_limit_takes_two_fragments() {
        let unit = nal(0x41, 101);
        let mut packetizer = H264Packetizer::new(100);
        let (packets, _) = packetize(&mut packetizer, &high(), &avcc(&[&unit])).unwrap();
        assert_eq!(packets.len(), 2);
        assert_eq!(depacketize(&packets), std::slice::from_ref(&unit));
        // Exactly at the limit: a single NAL unit packet.
        let (packets, _) = packetize(&mut packetizer, &high(), &avcc(&[&unit[..100]])).unwrap();
        assert_eq!(packets, [(unit[..100].to_vec(), true)]);
    }

    #[test]
    fn parameter_sets_go_separately_when_the_stap_a_would_not_fit() {
        let idr = nal(0x65, 10);
        let access_unit = avcc(&[&idr]);
        // STAP-A would be 1 + 2 + 25 + 2 + 6 = 36 bytes.
        let mut packetizer = H264Packetizer::new(35);
        let (packets, _) = packetize(&mut packetizer, &high(), &access_unit).unwrap();
        assert_eq!(
            packets,
            [
                (X264_HIGH_SPS.to_vec(), false),
                (X264_HIGH_PPS.to_vec(), false),
                (idr.clone(), true)
            ]
        );
        let mut packetizer = H264Packetizer::new(36);
        let (packets, _) = packetize(&mut packetizer, &high(), &access_unit).unwrap();
        assert_eq!(packets.len(), 2, "STAP-A fits exactly");
        // So small the SPS itself needs FU-A.
        let mut packetizer = H264Packetizer::new(12);
        let (packets, _) = packetize(&mut packetizer, &high(), &access_unit).unwrap();
        assert_eq!(depacketize(&packets), [X264_HIGH_SPS, X264_HIGH_PPS, &idr]);
        assert_marker_only_on_last(&packets);
    }

    #[test]
    fn stap_a_before_every_idr_and_only_there() {
        let mut packetizer = H264Packetizer::new(1200);
        let config = baseline();
        let mut stap_a_positions = Vec::new();
        for (index, access_unit) in [
            X264_BASELINE_IDR_AU,
            X264_BASELINE_P_AU,
            X264_BASELINE_P_AU,
            X264_BASELINE_IDR_AU,
            X264_BASELINE_P_AU,
        ]
        .into_iter()
        .enumerate()
        {
            let (packets, info) = packetize(&mut packetizer, &config, access_unit).unwrap();
            assert_eq!(info.keyframe, access_unit == X264_BASELINE_IDR_AU);
            assert_marker_only_on_last(&packets);
            for (position, (payload, _)) in packets.iter().enumerate() {
                if type_of(payload[0]) == nal_type::STAP_A {
                    stap_a_positions.push((index, position));
                }
            }
        }
        assert_eq!(stap_a_positions, [(0, 0), (3, 0)]);
    }

    #[test]
    fn in_band_parameter_sets_replace_the_configured_ones() {
        let config = high();
        let new_sps = [0x67, 0x42, 0xc0, 0x1f, 0xaa];
        let new_pps = [0x68, 0xce, 0x3c, 0x80];
        let idr = nal(0x65, 40);
        let mut packetizer = H264Packetizer::new(1200);

        // In-band SPS/PPS in an IDR access unit go into the STAP-A, not a second time.
        let access_unit = avcc(&[&[0x09, 0xf0], &new_sps, &new_pps, &idr]);
        let (packets, _) = packetize(&mut packetizer, &config, &access_unit).unwrap();
        assert_eq!(type_of(packets[0].0[0]), nal_type::STAP_A);
        assert_eq!(depacketize(&packets), [&new_sps[..], &new_pps, &idr]);

        // The next keyframe without in-band sets repeats the latest ones.
        let (packets, _) = packetize(&mut packetizer, &config, &avcc(&[&idr])).unwrap();
        assert_eq!(depacketize(&packets), [&new_sps[..], &new_pps, &idr]);

        // A PPS in an inter frame is forwarded where it stands and kept for the next IDR.
        let newer_pps = [0x68, 0xee, 0x01];
        let slice = nal(0x41, 30);
        let (packets, _) =
            packetize(&mut packetizer, &config, &avcc(&[&newer_pps, &slice])).unwrap();
        assert_eq!(
            packets,
            [(newer_pps.to_vec(), false), (slice.clone(), true)]
        );
        let (packets, _) = packetize(&mut packetizer, &config, &avcc(&[&idr])).unwrap();
        assert_eq!(depacketize(&packets), [&new_sps[..], &newer_pps, &idr]);

        // An inter frame ending in a PPS: the marker goes on the PPS.
        let (packets, _) =
            packetize(&mut packetizer, &config, &avcc(&[&slice, &newer_pps])).unwrap();
        assert_marker_only_on_last(&packets);

        // A new sequence header outranks older in-band sets.
        let (packets, _) = packetize(&mut packetizer, &baseline(), &avcc(&[&idr])).unwrap();
        assert_eq!(
            depacketize(&packets),
            [X264_BASELINE_SPS, X264_BASELINE_PPS, &idr]
        );
    }

    #[test]
    fn marker_goes_on_the_last_packet_sent_even_before_dropped_units() {
        let idr = nal(0x65, 2500);
        let sei = nal(0x06, 20);
        let filler = nal(0x0c, 50);
        let mut packetizer = H264Packetizer::new(1000);
        let access_unit = avcc(&[&[0x09, 0x10], &idr, &sei, &filler, &[0x09, 0x10]]);
        let (packets, _) = packetize(&mut packetizer, &high(), &access_unit).unwrap();
        assert_marker_only_on_last(&packets);
        assert_eq!(packets.last().unwrap().0, sei);
        assert_eq!(
            depacketize(&packets),
            [X264_HIGH_SPS, X264_HIGH_PPS, &idr, &sei]
        );
    }

    #[test]
    fn access_unit_of_dropped_units_emits_nothing() {
        let mut packetizer = H264Packetizer::new(1200);
        let access_unit = avcc(&[&[0x09, 0x10], &[], &nal(0x0c, 10)]);
        let (packets, info) = packetize(&mut packetizer, &high(), &access_unit).unwrap();
        assert!(packets.is_empty());
        assert_eq!(info, AccessUnitInfo::default());
    }

    #[test]
    fn malformed_access_units_emit_nothing() {
        let mut packetizer = H264Packetizer::new(1200);
        let idr = nal(0x65, 40);
        let mut truncated = avcc(&[&idr, &nal(0x41, 30)]);
        truncated.truncate(truncated.len() - 1);
        let mut emitted = 0;
        let result = packetizer.packetize(&high(), &truncated, |_, _| emitted += 1);
        assert_eq!(
            result,
            Err(H264Error::NalUnitPastEnd {
                offset: 44,
                length: 30,
                remaining: 29
            })
        );

        for unspecified in [0x00, 0x18, 0x7c, 0x1f] {
            let access_unit = avcc(&[&idr, &[unspecified, 0x01]]);
            let result = packetizer.packetize(&high(), &access_unit, |_, _| emitted += 1);
            assert_eq!(
                result,
                Err(H264Error::UnspecifiedNalType(unspecified & 0x1f))
            );
        }
        assert_eq!(emitted, 0);
    }

    #[test]
    fn follows_the_configured_nal_length_size() {
        let mut record = X264_BASELINE_RECORD.to_vec();
        record[4] = 0xfc; // 1-byte lengths
        let config = AvcConfig::parse(&record).unwrap();
        let mut packetizer = H264Packetizer::new(1200);
        let (packets, info) = packetize(
            &mut packetizer,
            &config,
            &[0x02, 0x09, 0x10, 0x03, 0x65, 0x88, 0x84],
        )
        .unwrap();
        assert!(info.keyframe);
        assert_eq!(packets.last().unwrap(), &(vec![0x65, 0x88, 0x84], true));
    }

    #[test]
    #[should_panic(expected = "cannot hold an FU-A")]
    fn rejects_a_max_payload_too_small_for_fu_a() {
        H264Packetizer::new(2);
    }
}
