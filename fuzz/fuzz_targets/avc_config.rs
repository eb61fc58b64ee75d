//! Any AVC sequence header record or AVCC access unit: parsing never panics, a parsed
//! configuration keeps its invariant (at least one SPS and PPS of the right types), and the
//! NAL unit iterator stops at the first error and never yields more bytes than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast_media::h264::{AvcConfig, AvccNalus, NalLengthSize};

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = AvcConfig::parse(data) {
        assert!(
            config
                .sps()
                .iter()
                .all(|sps| sps.first().is_some_and(|h| h & 0x1f == 7))
        );
        assert!(
            config
                .pps()
                .iter()
                .all(|pps| pps.first().is_some_and(|h| h & 0x1f == 8))
        );
        assert!(!config.sps().is_empty() && !config.pps().is_empty());
        let _ = config.to_string();
    }
    for nal_length_size in [NalLengthSize::One, NalLengthSize::Two, NalLengthSize::Four] {
        let mut consumed = 0;
        let mut failed = false;
        for nal_unit in AvccNalus::new(data, nal_length_size) {
            assert!(!failed, "a NAL unit after an error");
            match nal_unit {
                Ok(nal_unit) => consumed += nal_length_size.bytes() + nal_unit.len(),
                Err(_) => failed = true,
            }
        }
        assert!(consumed <= data.len());
        assert!(
            failed || consumed == data.len(),
            "stopped early without an error"
        );
    }
});
