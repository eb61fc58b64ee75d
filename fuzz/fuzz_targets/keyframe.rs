//! Any RTP payload, for every codec: keyframe detection never panics or reads past the end.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast_sfu::core::keyframe::{VideoCodec, starts_keyframe};

fuzz_target!(|data: &[u8]| {
    for codec in [VideoCodec::Vp8, VideoCodec::Vp9, VideoCodec::H264, VideoCodec::Av1, VideoCodec::Other] {
        let _ = starts_keyframe(codec, data);
    }
});
