//! Keyframe detection from the first bytes of an RTP payload, per codec.
//!
//! A consumer that starts (or restarts) forwarding a video stream must begin on a keyframe,
//! or the subscriber's decoder shows garbage until the next one. The SFU never decodes, so it
//! reads just enough of each payload format to tell "this packet starts a keyframe":
//!
//! - VP8, [RFC 7741 §4.2–4.3](https://www.rfc-editor.org/rfc/rfc7741#section-4.2): payload
//!   descriptor, then the P bit of the VP8 payload header on the first packet of partition 0.
//! - VP9, [RFC 9628 §4.2](https://www.rfc-editor.org/rfc/rfc9628#section-4.2): B (start of
//!   frame) set and P (inter-picture predicted) clear, on spatial layer 0.
//! - H.264, [RFC 6184 §5.6–5.8](https://www.rfc-editor.org/rfc/rfc6184#section-5.6): an IDR
//!   slice (type 5) or SPS (type 7) in a single NAL unit, a STAP-A, or the start of an FU-A.
//! - AV1, [AV1 RTP §4.4](https://aomediacodec.github.io/av1-rtp-spec/#44-av1-aggregation-header):
//!   the N bit of the aggregation header (first packet of a coded video sequence).
//!
//! Invariant: never panics and never reads past the slice, whatever the bytes (the
//! `keyframe` fuzz target holds it to that). Truncated payloads are "not a keyframe".

/// The video payload formats the SFU can find keyframes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    Vp8,
    Vp9,
    H264,
    Av1,
    /// Any other format: the SFU cannot tell keyframes, so consumers forward from the first
    /// packet and rely on keyframe requests alone.
    Other,
}

impl VideoCodec {
    pub fn from_str0m(codec: str0m::format::Codec) -> Self {
        use str0m::format::Codec;
        match codec {
            Codec::Vp8 => VideoCodec::Vp8,
            Codec::Vp9 => VideoCodec::Vp9,
            Codec::H264 => VideoCodec::H264,
            Codec::Av1 => VideoCodec::Av1,
            _ => VideoCodec::Other,
        }
    }

    /// Whether keyframes of this format can be recognised (and so waited for).
    pub fn keyframes_detectable(self) -> bool {
        self != VideoCodec::Other
    }
}

/// True when `payload` is the first RTP packet of a keyframe.
pub fn starts_keyframe(codec: VideoCodec, payload: &[u8]) -> bool {
    match codec {
        VideoCodec::Vp8 => vp8_starts_keyframe(payload),
        VideoCodec::Vp9 => vp9_starts_keyframe(payload),
        VideoCodec::H264 => h264_starts_keyframe(payload),
        VideoCodec::Av1 => payload.first().is_some_and(|b| b & 0x08 != 0),
        VideoCodec::Other => false,
    }
}

fn vp8_starts_keyframe(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let start_of_partition = first & 0x10 != 0;
    let partition_index = first & 0x07;
    if !start_of_partition || partition_index != 0 {
        return false;
    }
    // VP8 payload header: P (inverse keyframe flag) is the lowest bit of the first byte.
    vp8_payload_offset(payload)
        .and_then(|offset| payload.get(offset))
        .is_some_and(|b| b & 0x01 == 0)
}

/// Where the VP8 payload starts after the RTP payload descriptor
/// ([RFC 7741 §4.2](https://www.rfc-editor.org/rfc/rfc7741#section-4.2)).
fn vp8_payload_offset(payload: &[u8]) -> Option<usize> {
    let first = *payload.first()?;
    if first & 0x80 == 0 {
        return Some(1);
    }
    let x = *payload.get(1)?;
    let mut offset = 2;
    if x & 0x80 != 0 {
        // I: PictureID, one byte or two when its M bit is set.
        offset += if *payload.get(offset)? & 0x80 != 0 {
            2
        } else {
            1
        };
    }
    if x & 0x40 != 0 {
        offset += 1; // L: TL0PICIDX
    }
    if x & 0x30 != 0 {
        offset += 1; // T or K: TID/Y/KEYIDX
    }
    Some(offset)
}

/// A VP8 keyframe's picture size, from the first packet of the frame
/// ([RFC 6386 §9.1](https://www.rfc-editor.org/rfc/rfc6386#section-9.1)): after the
/// descriptor, a 3-byte frame tag, the start code `9d 01 2a`, then width and height in
/// 14 bits each (little endian; the top 2 bits are scaling).
pub fn vp8_keyframe_size(payload: &[u8]) -> Option<(u16, u16)> {
    let offset = vp8_payload_offset(payload)?;
    let frame = payload.get(offset..offset + 10)?;
    if frame[0] & 0x01 != 0 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff;
    let height = u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff;
    Some((width, height))
}

fn vp9_starts_keyframe(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let has_picture_id = first & 0x80 != 0;
    let inter_predicted = first & 0x40 != 0;
    let has_layer_indices = first & 0x20 != 0;
    let start_of_frame = first & 0x08 != 0;
    if inter_predicted || !start_of_frame {
        return false;
    }
    if !has_layer_indices {
        return true;
    }
    let mut offset = 1;
    if has_picture_id {
        let Some(&picture_id) = payload.get(offset) else {
            return false;
        };
        offset += if picture_id & 0x80 != 0 { 2 } else { 1 };
    }
    // Layer indices: TID(3) U(1) SID(3) D(1); the keyframe starts at spatial layer 0.
    payload.get(offset).is_some_and(|b| (b >> 1) & 0x07 == 0)
}

const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_STAP_A: u8 = 24;
const NAL_FU_A: u8 = 28;

fn h264_starts_keyframe(payload: &[u8]) -> bool {
    let Some(&header) = payload.first() else {
        return false;
    };
    match header & 0x1f {
        NAL_IDR | NAL_SPS => true,
        NAL_STAP_A => {
            let mut rest = &payload[1..];
            while rest.len() >= 3 {
                let size = u16::from_be_bytes([rest[0], rest[1]]) as usize;
                // A unit whose size overruns the packet is malformed: trust none of it.
                let (Some(unit), Some(next)) = (rest.get(2..2 + size), rest.get(2 + size..)) else {
                    return false;
                };
                let nal_type = unit.first().map_or(0, |b| b & 0x1f);
                if nal_type == NAL_IDR || nal_type == NAL_SPS {
                    return true;
                }
                rest = next;
            }
            false
        }
        NAL_FU_A => payload.get(1).is_some_and(|fu| {
            let start = fu & 0x80 != 0;
            let nal_type = fu & 0x1f;
            start && (nal_type == NAL_IDR || nal_type == NAL_SPS)
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_keyframe_and_delta_frame() {
        // X=1 S=1 PID=0; I=1; 15-bit PictureID; then VP8 header with P=0 (keyframe).
        assert!(starts_keyframe(
            VideoCodec::Vp8,
            &[0x90, 0x80, 0x81, 0x23, 0x10, 0x02]
        ));
        // Same with P=1: a delta frame.
        assert!(!starts_keyframe(
            VideoCodec::Vp8,
            &[0x90, 0x80, 0x81, 0x23, 0x11, 0x02]
        ));
        // Minimal descriptor, keyframe.
        assert!(starts_keyframe(VideoCodec::Vp8, &[0x10, 0x00]));
        // Continuation packet of a keyframe (S=0) does not start one.
        assert!(!starts_keyframe(VideoCodec::Vp8, &[0x00, 0x00]));
        // L, T and K present: TL0PICIDX and TID bytes are skipped.
        assert!(starts_keyframe(
            VideoCodec::Vp8,
            &[0x90, 0xf0, 0x12, 0x05, 0x20, 0x50]
        ));
    }

    #[test]
    fn vp9_keyframe_rules() {
        // I=0 P=0 L=0 B=1: start of a keyframe.
        assert!(starts_keyframe(VideoCodec::Vp9, &[0x08]));
        // P=1: inter-predicted.
        assert!(!starts_keyframe(VideoCodec::Vp9, &[0x48]));
        // L=1 with SID=1: not the base spatial layer.
        assert!(!starts_keyframe(VideoCodec::Vp9, &[0x28, 0x02]));
        // I=1 (7-bit picture id), L=1, SID=0.
        assert!(starts_keyframe(VideoCodec::Vp9, &[0xa8, 0x11, 0x00]));
    }

    #[test]
    fn h264_single_stap_and_fu() {
        assert!(starts_keyframe(VideoCodec::H264, &[0x65, 0x88]));
        assert!(starts_keyframe(VideoCodec::H264, &[0x67, 0x42]));
        assert!(!starts_keyframe(VideoCodec::H264, &[0x41, 0x9a]));
        // STAP-A: SPS(2 bytes) + PPS(2 bytes).
        assert!(starts_keyframe(
            VideoCodec::H264,
            &[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce]
        ));
        // STAP-A with only a PPS and a bogus size: no keyframe, no panic.
        assert!(!starts_keyframe(
            VideoCodec::H264,
            &[0x78, 0x00, 0x02, 0x68, 0xce, 0xff, 0xff, 0x65]
        ));
        // FU-A start of an IDR, and a middle fragment of one.
        assert!(starts_keyframe(VideoCodec::H264, &[0x7c, 0x85, 0x00]));
        assert!(!starts_keyframe(VideoCodec::H264, &[0x7c, 0x05, 0x00]));
    }

    #[test]
    fn av1_new_coded_video_sequence() {
        assert!(starts_keyframe(VideoCodec::Av1, &[0x18]));
        assert!(!starts_keyframe(VideoCodec::Av1, &[0x10]));
    }

    #[test]
    fn truncated_payloads_are_not_keyframes() {
        for codec in [
            VideoCodec::Vp8,
            VideoCodec::Vp9,
            VideoCodec::H264,
            VideoCodec::Av1,
        ] {
            assert!(!starts_keyframe(codec, &[]));
        }
        assert!(!starts_keyframe(VideoCodec::Vp8, &[0x90]));
        assert!(!starts_keyframe(VideoCodec::Vp8, &[0x90, 0x80]));
        assert!(!starts_keyframe(VideoCodec::Vp8, &[0x90, 0x80, 0x81]));
        assert!(!starts_keyframe(VideoCodec::Vp9, &[0xa8]));
        assert!(!starts_keyframe(VideoCodec::H264, &[0x7c]));
    }

    #[test]
    fn vp8_keyframe_size_is_read_from_the_frame_header() {
        // Extended descriptor with a 15-bit PictureID, frame tag, start code, 640×480.
        let payload = [
            0x90, 0x80, 0x81, 0x23, 0x50, 0x2a, 0x01, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01,
        ];
        assert_eq!(vp8_keyframe_size(&payload), Some((640, 480)));
        assert_eq!(vp8_keyframe_size(&payload[..12]), None, "truncated");
        let mut delta = payload;
        delta[4] |= 0x01;
        assert_eq!(vp8_keyframe_size(&delta), None, "a delta frame has no size");
    }
}
