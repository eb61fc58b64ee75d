//! Any RTMP video or audio message body: the FLV tag parsers never panic, and AVC NAL units
//! they return go through the packetizer, whose output keeps its promises (payloads within
//! the limit, marker on the last payload only, nothing emitted on error).
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast_media::flv::{VideoTag, parse_audio, parse_video};
use roomcast_media::h264::{AvcConfig, H264Packetizer};

/// x264's Constrained Baseline record (160x120): 4-byte NAL lengths, one SPS, one PPS.
const RECORD: &[u8] = &[
    0x01, 0x42, 0xc0, 0x0a, 0xff, 0xe1, 0x00, 0x16, 0x67, 0x42, 0xc0, 0x0a, 0xd9, 0x1e, 0xc0, 0x44,
    0x00, 0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0x50, 0x3c, 0x48, 0x99, 0x20, 0x01, 0x00,
    0x05, 0x68, 0xcb, 0x83, 0xcb, 0x20,
];

/// An IDR access unit to packetize with a configuration the input supplied.
const IDR_ACCESS_UNIT: &[u8] = &[0x00, 0x00, 0x00, 0x04, 0x65, 0x88, 0x84, 0x0f];

fuzz_target!(|data: &[u8]| {
    let _ = parse_audio(data);
    match parse_video(data) {
        Ok(VideoTag::AvcNalus {
            data: access_unit, ..
        }) => {
            let config = AvcConfig::parse(RECORD).expect("the x264 record is valid");
            // 1200: the usual budget; 16: forces FU-A and separate parameter sets.
            for max_payload in [1200, 16, 3] {
                check_packetizer(&config, access_unit, max_payload);
            }
        }
        Ok(VideoTag::AvcSequenceHeader(record)) => {
            if let Ok(config) = AvcConfig::parse(record) {
                let _ = config.to_string();
                check_packetizer(&config, IDR_ACCESS_UNIT, 16);
            }
        }
        _ => {}
    }
});

fn check_packetizer(config: &AvcConfig, access_unit: &[u8], max_payload: usize) {
    let mut packetizer = H264Packetizer::new(max_payload);
    let mut packets = 0;
    let mut bytes = 0;
    let mut marker_seen = false;
    let result = packetizer.packetize(config, access_unit, |payload, marker| {
        assert!(!payload.is_empty() && payload.len() <= max_payload);
        assert!(!marker_seen, "a payload after the marker");
        marker_seen = marker;
        packets += 1;
        bytes += payload.len();
    });
    match result {
        Ok(info) => {
            assert_eq!((info.packets, info.bytes), (packets, bytes));
            assert_eq!(
                marker_seen,
                packets > 0,
                "the last payload carries the marker"
            );
        }
        Err(_) => assert_eq!(packets, 0, "nothing emitted for a malformed access unit"),
    }
}
