//! Any sequence of RTP packets from a publisher into the H.264 depacketizer: it never panics,
//! and what it returns keeps its promises: well-formed AVCC within the size cap with no SPS,
//! PPS or AUD, `keyframe` exactly when there is an IDR slice, a first access unit that is a
//! keyframe, configuration records that `AvcConfig::parse` accepts with the SPS's picture
//! size, and counters that match. Each keyframe with a known configuration then goes through
//! the packetizer and a fresh depacketizer and must come back unchanged.
//!
//! Input: one byte whose low bit starts the stream with a real keyframe (x264's 320x240
//! SPS and PPS in a STAP-A, then an IDR slice), so the fuzzer reaches returned access units
//! and the round trip without having to invent an SPS; then packets one after another, each
//! `flags, length, payload[length]`. `flags` bit 0 is
//! the marker; bits 1–2 the sequence step (+1, +0, +2, or the next byte as a new low byte);
//! bits 3–4 the timestamp step (none, +3000, the next byte, or a jump of 2^31 + 1). Mostly
//! in-order streams, so the fuzzer reaches whole access units, with loss, duplicates and
//! wrap-around one bit away. A timestamp unwrapper follows the timestamps.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast_media::depacketize::{
    AccessUnit, H264Depacketizer, MAX_ACCESS_UNIT_BYTES, TimestampUnwrapper, sps_dimensions,
};
use roomcast_media::h264::{AvcConfig, AvccNalus, H264Packetizer, NalLengthSize};

/// STAP-A: x264's Constrained Baseline 320x240 SPS and its PPS.
const STAP_A: &[u8] = &[
    0x78, 0x00, 0x18, 0x67, 0x42, 0xc0, 0x0b, 0xd9, 0x01, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03,
    0x00, 0x10, 0x00, 0x00, 0x03, 0x01, 0x40, 0xf1, 0x42, 0xa4, 0x80, 0x00, 0x05, 0x68, 0xcb, 0x83,
    0xcb, 0x20,
];
/// The start of an IDR slice (first_mb_in_slice 0).
const IDR_SLICE: &[u8] = &[0x65, 0x88, 0x84, 0x0f, 0xf1, 0x18, 0xa0];

fuzz_target!(|data: &[u8]| {
    let Some((&prelude, data)) = data.split_first() else {
        return;
    };
    let mut depacketizer = H264Depacketizer::new();
    let mut clock = TimestampUnwrapper::new();
    let mut config: Option<AvcConfig> = None;
    let mut seq = 0u16;
    let mut ts = 0u32;
    let mut pushed = 0;
    let mut returned = 0;
    let mut rest = data;
    if prelude & 1 == 1 {
        for (i, (payload, marker)) in [(STAP_A, false), (IDR_SLICE, true)].into_iter().enumerate() {
            seq = i as u16; // 0 and 1: the next packet at +1 follows without a gap
            pushed += 1;
            if let Some(unit) = depacketizer.push(seq, ts, marker, payload) {
                check(&unit, true);
                let new_config = unit.new_config.as_ref().expect("the first configuration");
                assert_eq!((new_config.width, new_config.height), (320, 240));
                config = Some(AvcConfig::parse(&new_config.record).expect("our own record"));
                returned += 1;
            }
        }
        assert_eq!(returned, 1);
        ts = ts.wrapping_add(3000);
    }
    while let [flags, length, after @ ..] = rest {
        let mut after = after;
        let mut next_byte = || {
            let (&byte, tail) = after.split_first().unwrap_or((&0, &[]));
            after = tail;
            byte
        };
        seq = match (flags >> 1) & 3 {
            0 => seq.wrapping_add(1),
            1 => seq,
            2 => seq.wrapping_add(2),
            _ => (seq & 0xff00) | u16::from(next_byte()),
        };
        ts = match (flags >> 3) & 3 {
            0 => ts,
            1 => ts.wrapping_add(3000),
            2 => ts.wrapping_add(u32::from(next_byte())),
            _ => ts.wrapping_add((1 << 31) + 1),
        };
        let (payload, tail) = after.split_at(usize::from(*length).min(after.len()));
        rest = tail;

        let unwrapped = clock.unwrap(ts);
        assert!(unwrapped == 0 || unwrapped as u32 == ts);

        pushed += 1;
        if let Some(unit) = depacketizer.push(seq, ts, flags & 1 == 1, payload) {
            check(&unit, returned == 0);
            if let Some(new_config) = &unit.new_config {
                config = Some(AvcConfig::parse(&new_config.record).expect("our own record"));
            }
            if let Some(config) = config.as_ref().filter(|_| unit.keyframe) {
                round_trip(config, &unit);
            }
            returned += 1;
        }
    }
    let stats = depacketizer.stats();
    assert_eq!(stats.packets, pushed);
    // At most one access unit is held back for the next push.
    assert!(stats.access_units == returned || stats.access_units == returned + 1);
});

fn check(unit: &AccessUnit, first: bool) {
    assert!(!unit.data.is_empty() && unit.data.len() <= MAX_ACCESS_UNIT_BYTES);
    let mut keyframe = false;
    let mut slices = 0;
    for nal_unit in AvccNalus::new(&unit.data, NalLengthSize::Four) {
        let nal_unit = nal_unit.expect("well-formed AVCC");
        let nal_type = nal_unit.first().expect("no empty NAL unit") & 0x1f;
        assert!(
            !matches!(nal_type, 0 | 7 | 8 | 9 | 24..=31),
            "type {nal_type}"
        );
        keyframe |= nal_type == 5;
        slices += usize::from((1..=5).contains(&nal_type));
    }
    assert!(slices > 0);
    assert_eq!(unit.keyframe, keyframe);
    assert!(!first || keyframe, "the first access unit is a keyframe");
    if let Some(config) = &unit.new_config {
        let parsed = AvcConfig::parse(&config.record).expect("a valid record");
        let [sps] = parsed.sps() else {
            panic!("one SPS");
        };
        assert_eq!(parsed.pps().len(), 1);
        assert_eq!(sps_dimensions(sps), Some((config.width, config.height)));
    }
}

/// Packetizes a keyframe and depacketizes it again: same data, same configuration.
fn round_trip(config: &AvcConfig, unit: &AccessUnit) {
    let mut packetizer = H264Packetizer::new(200);
    let mut depacketizer = H264Depacketizer::new();
    // A first packet might join mid-frame, so its unit must prove its start; a P slice
    // before it (dropped: no keyframe yet) makes the keyframe follow without a gap.
    let primer = [0x41, 0x88];
    assert!(
        depacketizer
            .push(0, unit.rtp_timestamp.wrapping_sub(3000), true, &primer)
            .is_none()
    );
    let mut seq = 1u16;
    let mut back = Vec::new();
    packetizer
        .packetize(config, &unit.data, |payload, marker| {
            back.extend(depacketizer.push(seq, unit.rtp_timestamp, marker, payload));
            seq = seq.wrapping_add(1);
        })
        .expect("a returned access unit packetizes");
    let [again] = back.as_slice() else {
        panic!("{} access units back", back.len());
    };
    // The packetizer drops filler data (type 12); everything else must match.
    let without_filler = |data: &[u8]| -> Vec<u8> {
        AvccNalus::new(data, NalLengthSize::Four)
            .map_while(Result::ok)
            .filter(|nal_unit| nal_unit[0] & 0x1f != 12)
            .flat_map(|nal_unit| {
                let length = u32::try_from(nal_unit.len()).unwrap().to_be_bytes();
                length.into_iter().chain(nal_unit.iter().copied())
            })
            .collect()
    };
    assert_eq!(without_filler(&again.data), without_filler(&unit.data));
    assert!(again.keyframe);
    let again_config = again
        .new_config
        .as_ref()
        .expect("a fresh depacketizer reports it");
    let again_config = AvcConfig::parse(&again_config.record).unwrap();
    assert_eq!(again_config.sps(), config.sps());
    assert_eq!(again_config.pps(), config.pps());
}
