//! Any AudioSpecificConfig: `parse` never panics. Any bytes as a raw AAC frame, with any
//! timestamp, through transcoders built from fixed valid configs (mono 44.1 kHz with the
//! resampler, stereo 48 kHz without): `push` never panics and only ever fails per frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast_media::aac::{AacToOpus, AudioSpecificConfig};

fuzz_target!(|data: &[u8]| {
    let _ = AudioSpecificConfig::parse(data);

    // First 4 bytes: the pts; the rest is split into up to three frames at fixed points.
    let Some((pts, frame)) = data.split_first_chunk::<4>() else {
        return;
    };
    let pts = i64::from(i32::from_le_bytes(*pts));
    for asc in [[0x12u8, 0x08], [0x11, 0x90]] {
        let asc = AudioSpecificConfig::parse(&asc).expect("valid LC config");
        let mut t = AacToOpus::new(&asc).expect("transcoder for a valid config");
        let mut out = Vec::new();
        let third = frame.len() / 3;
        for (i, part) in [
            &frame[..third],
            &frame[third..2 * third],
            &frame[2 * third..],
        ]
        .into_iter()
        .enumerate()
        {
            if let Err(e) = t.push(part, pts + 21 * i as i64, &mut out) {
                assert!(e.is_recoverable(), "{e}");
            }
        }
        assert!(out.iter().all(|p| p.samples == 960 && !p.data.is_empty()));
    }
});
