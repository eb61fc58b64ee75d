//! What one RTMP broadcast's audio costs: AAC-LC → Opus for one second of audio, mono 44.1 kHz
//! (resampled) and stereo 48 kHz. `cargo bench -p roomcast-media --bench transcode`; the result
//! divided by 1 s is the share of a core one broadcast's audio takes (docs/performance.md).

use criterion::{Criterion, criterion_group, criterion_main};
use roomcast_media::aac::{AacToOpus, AudioSpecificConfig};

const MONO_44K: &[u8] = include_bytes!("../tests/fixtures/mono_44100_1000hz.aac");
const STEREO_48K: &[u8] = include_bytes!("../tests/fixtures/stereo_48000_1000hz_2500hz.aac");

/// Raw frames and the AudioSpecificConfig of an ADTS stream (no CRC), as FLV would carry them.
fn adts(stream: &[u8]) -> (AudioSpecificConfig, Vec<&[u8]>) {
    let mut frames = Vec::new();
    let mut asc = None;
    let mut rest = stream;
    while rest.len() >= 7 {
        let object_type = (rest[2] >> 6) + 1;
        let frequency_index = (rest[2] >> 2) & 0x0f;
        let channels = ((rest[2] & 1) << 2) | (rest[3] >> 6);
        let len = (usize::from(rest[3] & 3) << 11)
            | (usize::from(rest[4]) << 3)
            | usize::from(rest[5] >> 5);
        let bytes = [
            (object_type << 3) | (frequency_index >> 1),
            ((frequency_index & 1) << 7) | (channels << 3),
        ];
        asc.get_or_insert_with(|| AudioSpecificConfig::parse(&bytes).expect("fixture ASC"));
        frames.push(&rest[7..len]);
        rest = &rest[len..];
    }
    (asc.expect("the fixture has frames"), frames)
}

fn one_second(c: &mut Criterion, name: &str, stream: &[u8]) {
    let (asc, frames) = adts(stream);
    let rate = i64::from(asc.sample_rate);
    let mut out = Vec::new();
    c.bench_function(name, |b| {
        b.iter(|| {
            let mut transcoder = AacToOpus::new(&asc).expect("LC fixture");
            for (i, frame) in frames.iter().enumerate() {
                let pts = i as i64 * 1024 * 1000 / rate;
                out.clear();
                transcoder
                    .push(frame, pts, &mut out)
                    .expect("fixture frames decode");
            }
            out.len()
        })
    });
}

fn transcode(c: &mut Criterion) {
    one_second(c, "aac_to_opus_1s_mono_44k1", MONO_44K);
    one_second(c, "aac_to_opus_1s_stereo_48k", STEREO_48K);
}

criterion_group!(benches, transcode);
criterion_main!(benches);
