//! FLV tag bodies as RTMP delivers them.
//!
//! The payload of an RTMP video message (type 9) or audio message (type 8) is exactly the
//! body of an FLV video or audio tag. This module reads the header of such a body and hands
//! back the codec payload, borrowed from the input:
//!
//! - Legacy headers, Adobe FLV specification v10.1, Annex E.4.3 (video: FrameType, CodecID,
//!   and for AVC an AVCPacketType and SI24 CompositionTime) and E.4.2 (audio: SoundFormat,
//!   rate, size, type, and for AAC an AACPacketType).
//! - [Enhanced RTMP](https://veovera.org/docs/enhanced/enhanced-rtmp-v2) v1 and v2: when the
//!   top bit of the first byte (`IsExHeader`) is set, the low four bits are a packet type and
//!   a FourCC names the codec (`hvc1`, `av01`, `vp09`, `avc1`, `Opus`…). Version 2 adds ModEx
//!   prefixes (skipped here) and multitrack packets (reported as unsupported).
//!
//! roomcast ingests H.264 video and AAC audio. Every other codec is recognised and *named* in
//! an `Unsupported { codec }` value, so an operator can tell a streamer which encoder setting
//! to change instead of reading "bad tag". Enhanced `avc1` is mapped onto the same variants as
//! legacy AVC.
//!
//! Invariants:
//! - Never panics and never reads past the slice, whatever the bytes (the `flv_tag` fuzz
//!   target holds it to that).
//! - Zero copy: payload variants borrow the input; only `Unsupported` allocates its name.
//! - A truncated or undefined header field is an [`FlvError`] that names the field, the bytes
//!   it needs and the bytes the tag has. The codec payload itself (AVC configuration record,
//!   NAL units, AudioSpecificConfig) is not validated here: [`crate::h264`] and
//!   [`crate::aac`] do that.

use std::fmt;

/// A parsed video tag body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoTag<'a> {
    /// AVC sequence header: an AVCDecoderConfigurationRecord, for
    /// [`crate::h264::AvcConfig::parse`].
    AvcSequenceHeader(&'a [u8]),
    /// One AVC access unit in AVCC form (NAL units each prefixed by a big-endian length of
    /// the configuration's `nal_length_size`), for [`crate::h264::AvccNalus`].
    AvcNalus {
        /// FrameType 1 (keyframe) or 4 (generated keyframe): the encoder marks this access
        /// unit as a random access point. The packetizer checks for an IDR slice itself.
        keyframe: bool,
        /// Presentation time minus decode time, in milliseconds (SI24, sign-extended).
        composition_time_ms: i32,
        data: &'a [u8],
    },
    /// AVC end of sequence: the encoder stopped this stream.
    AvcEndOfSequence,
    /// Video info/command frame (FrameType 5, client-side seek markers): no picture, ignore.
    Command,
    /// Enhanced RTMP metadata for a supported codec (AMF, e.g. HDR `colorInfo`): ignorable.
    Metadata(&'a [u8]),
    /// A codec roomcast does not ingest, named for the operator (e.g. "HEVC (hvc1) via
    /// Enhanced RTMP").
    Unsupported { codec: String },
}

/// A parsed audio tag body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioTag<'a> {
    /// AAC sequence header: an AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1).
    AacSequenceHeader(&'a [u8]),
    /// One raw AAC frame (no ADTS header).
    AacRaw(&'a [u8]),
    /// A codec roomcast does not ingest, named for the operator (e.g. "MP3").
    Unsupported { codec: String },
}

/// Why a tag body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlvError {
    /// The body ends before a field its header promises.
    Truncated {
        tag: TagKind,
        /// The field that does not fit, e.g. "AVC packet header".
        field: &'static str,
        /// Bytes the body needs, counted from its start, to hold that field.
        needed: usize,
        /// Bytes the body has.
        got: usize,
    },
    /// A field holds a value the specification does not define.
    Undefined {
        tag: TagKind,
        field: &'static str,
        value: u8,
    },
}

/// Which kind of tag an [`FlvError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagKind {
    Video,
    Audio,
}

impl fmt::Display for TagKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TagKind::Video => "video",
            TagKind::Audio => "audio",
        })
    }
}

impl fmt::Display for FlvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlvError::Truncated {
                tag,
                field,
                needed,
                got,
            } => {
                let unit = if *needed == 1 { "byte" } else { "bytes" };
                write!(
                    f,
                    "{tag} tag truncated: {field} needs {needed} {unit}, got {got}"
                )
            }
            FlvError::Undefined { tag, field, value } => {
                write!(f, "{tag} tag has an undefined {field}: {value}")
            }
        }
    }
}

impl std::error::Error for FlvError {}

/// Legacy CodecID of AVC (FLV v10.1 §E.4.3.1).
const CODEC_ID_AVC: u8 = 7;
/// FrameType of video info/command frames (FLV v10.1 §E.4.3.1).
const FRAME_TYPE_COMMAND: u8 = 5;
/// Legacy SoundFormat of AAC (FLV v10.1 §E.4.2.1).
const SOUND_FORMAT_AAC: u8 = 10;
/// SoundFormat 9 (reserved in FLV v10.1) marks an Enhanced RTMP audio header.
const SOUND_FORMAT_EX_HEADER: u8 = 9;

/// Enhanced RTMP packet types shared by video and audio headers (values from the spec's
/// `VideoPacketType` / `AudioPacketType`; the ones marked "video" are video only).
mod ex_packet_type {
    pub const SEQUENCE_START: u8 = 0;
    pub const CODED_FRAMES: u8 = 1;
    pub const SEQUENCE_END: u8 = 2;
    /// Video: coded frames with an implied composition time of zero.
    pub const CODED_FRAMES_X: u8 = 3;
    /// Video: AMF metadata. Audio uses 4 for `MultichannelConfig`.
    pub const METADATA: u8 = 4;
    /// Audio: multiple tracks in one message (Enhanced RTMP v2).
    pub const AUDIO_MULTITRACK: u8 = 5;
    /// Video: multiple tracks in one message (Enhanced RTMP v2).
    pub const VIDEO_MULTITRACK: u8 = 6;
    /// A ModEx prefix that modifies the packet that follows (Enhanced RTMP v2).
    pub const MOD_EX: u8 = 7;
}

/// Reads the body of an FLV video tag (an RTMP video message payload).
pub fn parse_video(data: &[u8]) -> Result<VideoTag<'_>, FlvError> {
    let mut reader = Reader::new(data, TagKind::Video);
    let first = reader.u8("tag header")?;
    if first & 0x80 != 0 {
        return parse_enhanced_video(first, reader);
    }
    // FLV v10.1 §E.4.3.1 VIDEODATA: FrameType UB[4], CodecID UB[4].
    let frame_type = first >> 4;
    let codec_id = first & 0x0f;
    if frame_type == FRAME_TYPE_COMMAND {
        return Ok(VideoTag::Command);
    }
    if codec_id != CODEC_ID_AVC {
        return Ok(VideoTag::Unsupported {
            codec: legacy_video_codec_name(codec_id),
        });
    }
    check_video_frame_type(frame_type)?;
    // AVCVIDEOPACKET: AVCPacketType UI8, CompositionTime SI24.
    let header = reader.take(4, "AVC packet header")?;
    let composition_time_ms = si24([header[1], header[2], header[3]]);
    match header[0] {
        0 => Ok(VideoTag::AvcSequenceHeader(reader.rest())),
        1 => Ok(VideoTag::AvcNalus {
            keyframe: is_keyframe(frame_type),
            composition_time_ms,
            data: reader.rest(),
        }),
        2 => Ok(VideoTag::AvcEndOfSequence),
        value => Err(reader.undefined("AVC packet type", value)),
    }
}

/// Enhanced RTMP `ExVideoTagHeader`: IsExHeader UB[1], VideoFrameType UB[3],
/// VideoPacketType UB[4], then ModEx prefixes, then a FourCC.
fn parse_enhanced_video<'a>(first: u8, mut reader: Reader<'a>) -> Result<VideoTag<'a>, FlvError> {
    let frame_type = (first >> 4) & 0x07;
    let packet_type = skip_mod_ex(&mut reader, first & 0x0f)?;
    if frame_type == FRAME_TYPE_COMMAND && packet_type != ex_packet_type::METADATA {
        return Ok(VideoTag::Command);
    }
    if packet_type == ex_packet_type::VIDEO_MULTITRACK {
        return Ok(VideoTag::Unsupported {
            codec: "multitrack video via Enhanced RTMP v2".to_owned(),
        });
    }
    let fourcc = reader.fourcc("video FourCC")?;
    if &fourcc != b"avc1" {
        return Ok(VideoTag::Unsupported {
            codec: enhanced_video_codec_name(fourcc),
        });
    }
    check_video_frame_type(frame_type)?;
    match packet_type {
        ex_packet_type::SEQUENCE_START => Ok(VideoTag::AvcSequenceHeader(reader.rest())),
        ex_packet_type::CODED_FRAMES => {
            let time = reader.take(3, "composition time")?;
            Ok(VideoTag::AvcNalus {
                keyframe: is_keyframe(frame_type),
                composition_time_ms: si24([time[0], time[1], time[2]]),
                data: reader.rest(),
            })
        }
        ex_packet_type::CODED_FRAMES_X => Ok(VideoTag::AvcNalus {
            keyframe: is_keyframe(frame_type),
            composition_time_ms: 0,
            data: reader.rest(),
        }),
        ex_packet_type::SEQUENCE_END => Ok(VideoTag::AvcEndOfSequence),
        ex_packet_type::METADATA => Ok(VideoTag::Metadata(reader.rest())),
        value => Err(reader.undefined("Enhanced RTMP video packet type for avc1", value)),
    }
}

/// FrameType 1–5 are defined (FLV v10.1 §E.4.3.1; the same values in Enhanced RTMP).
fn check_video_frame_type(frame_type: u8) -> Result<(), FlvError> {
    if (1..=5).contains(&frame_type) {
        Ok(())
    } else {
        Err(FlvError::Undefined {
            tag: TagKind::Video,
            field: "frame type",
            value: frame_type,
        })
    }
}

/// FrameType 1 is a keyframe, 4 a keyframe generated by a server.
fn is_keyframe(frame_type: u8) -> bool {
    frame_type == 1 || frame_type == 4
}

fn legacy_video_codec_name(codec_id: u8) -> String {
    match codec_id {
        1 => "JPEG".to_owned(),
        2 => "Sorenson H.263".to_owned(),
        3 => "Screen video".to_owned(),
        4 => "On2 VP6".to_owned(),
        5 => "On2 VP6 with alpha".to_owned(),
        6 => "Screen video version 2".to_owned(),
        // Not in the Adobe spec: some Chinese CDNs and encoders put HEVC in CodecID 12.
        12 => "HEVC (non-standard FLV codec id 12)".to_owned(),
        id => format!("unknown video codec id {id}"),
    }
}

fn enhanced_video_codec_name(fourcc: [u8; 4]) -> String {
    let name = match &fourcc {
        b"hvc1" => "HEVC",
        b"av01" => "AV1",
        b"vp09" => "VP9",
        b"vp08" => "VP8",
        _ => "unknown video codec",
    };
    format!("{name} ({}) via Enhanced RTMP", fourcc.escape_ascii())
}

/// Reads the body of an FLV audio tag (an RTMP audio message payload).
pub fn parse_audio(data: &[u8]) -> Result<AudioTag<'_>, FlvError> {
    let mut reader = Reader::new(data, TagKind::Audio);
    // FLV v10.1 §E.4.2.1 AUDIODATA: SoundFormat UB[4], SoundRate UB[2], SoundSize UB[1],
    // SoundType UB[1]. For AAC the last three are fixed (44 kHz, 16 bit, stereo) and the real
    // values are in the AudioSpecificConfig, so they are not read.
    let first = reader.u8("tag header")?;
    let sound_format = first >> 4;
    if sound_format == SOUND_FORMAT_EX_HEADER {
        return parse_enhanced_audio(first, reader);
    }
    if sound_format != SOUND_FORMAT_AAC {
        return Ok(AudioTag::Unsupported {
            codec: legacy_audio_codec_name(sound_format),
        });
    }
    // AACAUDIODATA: AACPacketType UI8.
    match reader.u8("AAC packet type")? {
        0 => Ok(AudioTag::AacSequenceHeader(reader.rest())),
        1 => Ok(AudioTag::AacRaw(reader.rest())),
        value => Err(reader.undefined("AAC packet type", value)),
    }
}

/// Enhanced RTMP `ExAudioTagHeader`: SoundFormat 9, AudioPacketType UB[4], ModEx prefixes,
/// then a FourCC. Enhanced audio is only named: encoders send AAC in the legacy header.
fn parse_enhanced_audio(first: u8, mut reader: Reader<'_>) -> Result<AudioTag<'_>, FlvError> {
    let packet_type = skip_mod_ex(&mut reader, first & 0x0f)?;
    if packet_type == ex_packet_type::AUDIO_MULTITRACK {
        return Ok(AudioTag::Unsupported {
            codec: "multitrack audio via Enhanced RTMP v2".to_owned(),
        });
    }
    let fourcc = reader.fourcc("audio FourCC")?;
    let name = match &fourcc {
        b"Opus" => "Opus",
        b"fLaC" => "FLAC",
        b"ac-3" => "AC-3",
        b"ec-3" => "E-AC-3",
        b".mp3" => "MP3",
        // roomcast ingests AAC, but from the legacy header (SoundFormat 10) that every
        // encoder sends; say so rather than call AAC unsupported.
        b"mp4a" => {
            return Ok(AudioTag::Unsupported {
                codec:
                    "AAC (mp4a) via Enhanced RTMP; roomcast takes AAC in the legacy audio header"
                        .to_owned(),
            });
        }
        _ => "unknown audio codec",
    };
    Ok(AudioTag::Unsupported {
        codec: format!("{name} ({}) via Enhanced RTMP", fourcc.escape_ascii()),
    })
}

fn legacy_audio_codec_name(sound_format: u8) -> String {
    match sound_format {
        0 => "linear PCM, platform endian".to_owned(),
        1 => "ADPCM".to_owned(),
        2 => "MP3".to_owned(),
        3 => "linear PCM, little endian".to_owned(),
        4 => "Nellymoser 16 kHz mono".to_owned(),
        5 => "Nellymoser 8 kHz mono".to_owned(),
        6 => "Nellymoser".to_owned(),
        7 => "G.711 A-law".to_owned(),
        8 => "G.711 mu-law".to_owned(),
        11 => "Speex".to_owned(),
        14 => "MP3 8 kHz".to_owned(),
        15 => "device-specific sound".to_owned(),
        format => format!("unknown sound format {format}"),
    }
}

/// Skips Enhanced RTMP v2 ModEx prefixes and returns the real packet type.
///
/// Each prefix: `modExDataSize` UI8 + 1 (if that is 256, UI16 + 1 follows), the data, then
/// one byte: modExType UB[4] and the next packet type UB[4]. The only ModEx type defined so
/// far is a nanosecond timestamp offset, which roomcast does not need.
fn skip_mod_ex(reader: &mut Reader<'_>, mut packet_type: u8) -> Result<u8, FlvError> {
    // Each round consumes at least three bytes, so the loop ends with the input.
    while packet_type == ex_packet_type::MOD_EX {
        let mut size = usize::from(reader.u8("ModEx size")?) + 1;
        if size == 256 {
            let wide = reader.take(2, "ModEx size")?;
            size = usize::from(u16::from_be_bytes([wide[0], wide[1]])) + 1;
        }
        reader.take(size, "ModEx data")?;
        packet_type = reader.u8("ModEx type")? & 0x0f;
    }
    Ok(packet_type)
}

/// Sign-extends a big-endian SI24.
fn si24(bytes: [u8; 3]) -> i32 {
    // Place the 24 bits at the top of an i32, then shift back arithmetically.
    i32::from_be_bytes([bytes[0], bytes[1], bytes[2], 0]) >> 8
}

/// A cursor over a tag body whose errors name the field being read.
struct Reader<'a> {
    data: &'a [u8],
    offset: usize,
    tag: TagKind,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8], tag: TagKind) -> Self {
        Reader {
            data,
            offset: 0,
            tag,
        }
    }

    fn take(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], FlvError> {
        let end = self.offset.saturating_add(len);
        let bytes = self.data.get(self.offset..end).ok_or(FlvError::Truncated {
            tag: self.tag,
            field,
            needed: end,
            got: self.data.len(),
        })?;
        self.offset = end;
        Ok(bytes)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, FlvError> {
        Ok(self.take(1, field)?[0])
    }

    fn fourcc(&mut self, field: &'static str) -> Result<[u8; 4], FlvError> {
        let bytes = self.take(4, field)?;
        Ok([bytes[0], bytes[1], bytes[2], bytes[3]])
    }

    fn rest(&self) -> &'a [u8] {
        // `offset` only grows through `take`, which checked it against the length.
        &self.data[self.offset..]
    }

    fn undefined(&self, field: &'static str, value: u8) -> FlvError {
        FlvError::Undefined {
            tag: self.tag,
            field,
            value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first video tag of `ffmpeg -f lavfi -i testsrc2=size=160x120:rate=10 -c:v libx264
    /// -f flv`: keyframe + AVC, sequence header, composition time 0, then the record.
    const X264_SEQUENCE_HEADER_TAG: &[u8] = &[
        0x17, 0x00, 0x00, 0x00, 0x00, // header
        0x01, 0x64, 0x00, 0x0a, 0xff, 0xe1, 0x00, 0x19, // record start, first SPS length
    ];

    /// Legacy AVC NALU tag from the same file: keyframe, composition time 200 ms (x264 with
    /// B-frames), then the first length prefix.
    const X264_NALU_TAG: &[u8] = &[0x17, 0x01, 0x00, 0x00, 0xc8, 0x00, 0x00, 0x02, 0xaa];

    #[test]
    fn avc_sequence_header_borrows_the_record() {
        let tag = parse_video(X264_SEQUENCE_HEADER_TAG).unwrap();
        assert_eq!(
            tag,
            VideoTag::AvcSequenceHeader(&X264_SEQUENCE_HEADER_TAG[5..])
        );
    }

    #[test]
    fn avc_nalus_carry_keyframe_and_composition_time() {
        let tag = parse_video(X264_NALU_TAG).unwrap();
        assert_eq!(
            tag,
            VideoTag::AvcNalus {
                keyframe: true,
                composition_time_ms: 200,
                data: &[0x00, 0x00, 0x02, 0xaa],
            }
        );
        // Inter frame (FrameType 2), negative composition time -1 ms.
        let tag = parse_video(&[0x27, 0x01, 0xff, 0xff, 0xff, 0xab]).unwrap();
        assert_eq!(
            tag,
            VideoTag::AvcNalus {
                keyframe: false,
                composition_time_ms: -1,
                data: &[0xab]
            }
        );
    }

    #[test]
    fn composition_time_is_sign_extended_si24() {
        assert_eq!(si24([0x00, 0x00, 0x00]), 0);
        assert_eq!(si24([0x7f, 0xff, 0xff]), 8_388_607);
        assert_eq!(si24([0x80, 0x00, 0x00]), -8_388_608);
        assert_eq!(si24([0xff, 0xff, 0x38]), -200);
    }

    #[test]
    fn avc_end_of_sequence() {
        assert_eq!(
            parse_video(&[0x17, 0x02, 0, 0, 0]).unwrap(),
            VideoTag::AvcEndOfSequence
        );
    }

    #[test]
    fn command_frames_are_reported_whatever_the_codec() {
        assert_eq!(parse_video(&[0x57, 0x00]).unwrap(), VideoTag::Command);
        assert_eq!(parse_video(&[0x52]).unwrap(), VideoTag::Command);
    }

    #[test]
    fn legacy_codecs_are_named() {
        let codec = |data: &[u8]| match parse_video(data).unwrap() {
            VideoTag::Unsupported { codec } => codec,
            other => panic!("expected Unsupported, got {other:?}"),
        };
        assert_eq!(codec(&[0x12, 0xaa]), "Sorenson H.263");
        assert_eq!(codec(&[0x14]), "On2 VP6");
        assert_eq!(codec(&[0x1c, 0x00]), "HEVC (non-standard FLV codec id 12)");
        assert_eq!(codec(&[0x19]), "unknown video codec id 9");
    }

    #[test]
    fn enhanced_codecs_are_named_by_fourcc() {
        let codec = |data: &[u8]| match parse_video(data).unwrap() {
            VideoTag::Unsupported { codec } => codec,
            other => panic!("expected Unsupported, got {other:?}"),
        };
        // IsExHeader | keyframe << 4 | SequenceStart, as OBS sends for HEVC.
        assert_eq!(codec(b"\x90hvc1\x01\x02"), "HEVC (hvc1) via Enhanced RTMP");
        assert_eq!(codec(b"\x91av01"), "AV1 (av01) via Enhanced RTMP");
        assert_eq!(codec(b"\xa3vp09"), "VP9 (vp09) via Enhanced RTMP");
        assert_eq!(
            codec(b"\x91ab\x00\xff"),
            "unknown video codec (ab\\x00\\xff) via Enhanced RTMP"
        );
        assert_eq!(
            codec(&[0x96, 0x00]),
            "multitrack video via Enhanced RTMP v2"
        );
    }

    #[test]
    fn enhanced_avc1_maps_onto_avc_variants() {
        assert_eq!(
            parse_video(b"\x90avc1\x01\x64").unwrap(),
            VideoTag::AvcSequenceHeader(&[0x01, 0x64])
        );
        assert_eq!(
            parse_video(b"\x91avc1\xff\xff\xfe\x00\x00\x00\x01\x09").unwrap(),
            VideoTag::AvcNalus {
                keyframe: true,
                composition_time_ms: -2,
                data: &[0, 0, 0, 1, 9]
            }
        );
        // CodedFramesX: no composition time field.
        assert_eq!(
            parse_video(b"\xa3avc1\x00\x00\x00\x01\x09").unwrap(),
            VideoTag::AvcNalus {
                keyframe: false,
                composition_time_ms: 0,
                data: &[0, 0, 0, 1, 9]
            }
        );
        assert_eq!(
            parse_video(b"\x92avc1").unwrap(),
            VideoTag::AvcEndOfSequence
        );
        assert_eq!(
            parse_video(b"\x94avc1\x02").unwrap(),
            VideoTag::Metadata(&[0x02])
        );
    }

    #[test]
    fn enhanced_mod_ex_prefixes_are_skipped() {
        // ModEx with 3 bytes of data (size byte 2), then modExType 0 | CodedFramesX.
        let tag = parse_video(b"\x97\x02abc\x03avc1\x00\x00\x00\x01\x65").unwrap();
        assert_eq!(
            tag,
            VideoTag::AvcNalus {
                keyframe: true,
                composition_time_ms: 0,
                data: &[0, 0, 0, 1, 0x65]
            }
        );
        // The wide form: size byte 255 then UI16 + 1 = 300 bytes of data.
        let mut data = vec![0x97, 0xff, 0x01, 0x2b];
        data.extend_from_slice(&[0u8; 300]);
        data.push(0x02);
        data.extend_from_slice(b"avc1");
        assert_eq!(parse_video(&data).unwrap(), VideoTag::AvcEndOfSequence);
        // Truncated ModEx data.
        assert_eq!(
            parse_video(b"\x97\x05ab").unwrap_err(),
            FlvError::Truncated {
                tag: TagKind::Video,
                field: "ModEx data",
                needed: 8,
                got: 4
            }
        );
    }

    #[test]
    fn truncated_video_headers_name_the_field() {
        let err = parse_video(&[0x17, 0x01, 0x00]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "video tag truncated: AVC packet header needs 5 bytes, got 3"
        );
        let err = parse_video(&[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "video tag truncated: tag header needs 1 byte, got 0"
        );
        let err = parse_video(b"\x90hv").unwrap_err();
        assert_eq!(
            err.to_string(),
            "video tag truncated: video FourCC needs 5 bytes, got 3"
        );
        let err = parse_video(b"\x91avc1\x00").unwrap_err();
        assert_eq!(
            err.to_string(),
            "video tag truncated: composition time needs 8 bytes, got 6"
        );
    }

    #[test]
    fn undefined_video_values_are_errors() {
        let err = parse_video(&[0x17, 0x03, 0, 0, 0]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "video tag has an undefined AVC packet type: 3"
        );
        let err = parse_video(&[0x07, 0x01, 0, 0, 0]).unwrap_err();
        assert_eq!(err.to_string(), "video tag has an undefined frame type: 0");
        let err = parse_video(b"\x95avc1").unwrap_err();
        assert_eq!(
            err,
            FlvError::Undefined {
                tag: TagKind::Video,
                field: "Enhanced RTMP video packet type for avc1",
                value: 5
            }
        );
    }

    #[test]
    fn aac_sequence_header_and_raw_frames() {
        // The first audio tag of the ffmpeg file above: AAC, 44 kHz, 16 bit, stereo flags,
        // sequence header, AudioSpecificConfig AAC-LC 44.1 kHz mono + SBR sync extension.
        let tag = parse_audio(&[0xaf, 0x00, 0x12, 0x08, 0x56, 0xe5, 0x00]).unwrap();
        assert_eq!(
            tag,
            AudioTag::AacSequenceHeader(&[0x12, 0x08, 0x56, 0xe5, 0x00])
        );
        let tag = parse_audio(&[0xaf, 0x01, 0xde, 0x02]).unwrap();
        assert_eq!(tag, AudioTag::AacRaw(&[0xde, 0x02]));
    }

    #[test]
    fn other_audio_formats_are_named() {
        let codec = |data: &[u8]| match parse_audio(data).unwrap() {
            AudioTag::Unsupported { codec } => codec,
            other => panic!("expected Unsupported, got {other:?}"),
        };
        assert_eq!(codec(&[0x2f, 0xff]), "MP3");
        assert_eq!(codec(&[0x0e]), "linear PCM, platform endian");
        assert_eq!(codec(&[0x3e]), "linear PCM, little endian");
        assert_eq!(codec(&[0xb6]), "Speex");
        assert_eq!(codec(&[0x16]), "ADPCM");
        assert_eq!(codec(&[0x72]), "G.711 A-law");
        assert_eq!(codec(&[0x82]), "G.711 mu-law");
        assert_eq!(codec(&[0xd0]), "unknown sound format 13");
        assert_eq!(codec(b"\x90Opus\x01"), "Opus (Opus) via Enhanced RTMP");
        assert_eq!(codec(b"\x91.mp3"), "MP3 (.mp3) via Enhanced RTMP");
        assert_eq!(codec(b"\x90ac-3"), "AC-3 (ac-3) via Enhanced RTMP");
        assert_eq!(
            codec(b"\x90mp4a"),
            "AAC (mp4a) via Enhanced RTMP; roomcast takes AAC in the legacy audio header"
        );
        assert_eq!(codec(b"\x97\x00x\x01fLaC"), "FLAC (fLaC) via Enhanced RTMP");
        assert_eq!(
            codec(&[0x95, 0x00]),
            "multitrack audio via Enhanced RTMP v2"
        );
    }

    #[test]
    fn audio_errors_name_the_field() {
        let err = parse_audio(&[0xaf]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "audio tag truncated: AAC packet type needs 2 bytes, got 1"
        );
        let err = parse_audio(&[0xaf, 0x02]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "audio tag has an undefined AAC packet type: 2"
        );
        let err = parse_audio(b"\x90Op").unwrap_err();
        assert_eq!(
            err.to_string(),
            "audio tag truncated: audio FourCC needs 5 bytes, got 3"
        );
        assert!(parse_audio(&[]).is_err());
    }
}
