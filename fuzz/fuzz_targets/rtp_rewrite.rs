//! Any sequence of incoming packets (SSRC changes, reordering, gaps, keyframes, time jumps):
//! the rewriter never panics, never sends one outgoing sequence number for two different
//! incoming packets of a source, and continues past the highest number after a restart.
#![no_main]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use roomcast_sfu::core::rewrite::{IncomingPacket, Rewrite, RtpRewriter};

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let mut rewriter = RtpRewriter::new(90_000, data.first().is_some_and(|b| b & 1 == 1));
    let mut sent: HashMap<u64, (u32, u64)> = HashMap::new();
    let mut highest = 0u64;
    let mut last_ssrc = None;
    for chunk in data.chunks_exact(8) {
        let ssrc = u32::from(chunk[0] & 0x03);
        let seq = u64::from(u16::from_le_bytes([chunk[1], chunk[2]])) + u64::from(chunk[3] & 0x0f) * 65_536;
        let timestamp = u32::from_le_bytes([chunk[4], chunk[5], chunk[6], 0]);
        let arrival = start + Duration::from_millis(u64::from(chunk[7]) * 10);
        let packet = IncomingPacket { ssrc, seq, timestamp, starts_keyframe: chunk[0] & 0x80 != 0, arrival };
        let restarted = last_ssrc.is_some_and(|s| s != ssrc);
        last_ssrc = Some(ssrc);
        if let Rewrite::Forward { seq: out, .. } = rewriter.rewrite(packet) {
            if let Some(&(previous_ssrc, previous_seq)) = sent.get(&out) {
                assert!(previous_ssrc == ssrc && previous_seq == seq, "outgoing seq {out} reused");
            }
            if restarted && rewriter_started_fresh(&sent, ssrc) {
                assert!(out > highest || sent.is_empty());
            }
            sent.insert(out, (ssrc, seq));
            highest = highest.max(out);
        }
    }
});

/// True when nothing of `ssrc` was sent yet (its first forwarded packet after a change).
fn rewriter_started_fresh(sent: &HashMap<u64, (u32, u64)>, ssrc: u32) -> bool {
    !sent.values().any(|(s, _)| *s == ssrc)
}
