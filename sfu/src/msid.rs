//! Stream ids for the receive m-lines a client declares in its own offer.
//!
//! A browser plays a participant's audio and video in sync only when both arrive in one
//! `MediaStream`: the same msid stream id ([RFC 8830](https://www.rfc-editor.org/rfc/rfc8830)).
//! On m-lines the server offers, it sets them itself (the publisher's id). On m-lines the
//! *client* offers receive-only (offer `receive`, see [`crate::Command::Offer`]), the browser
//! writes no `a=msid`, and str0m answers with the remote line's msid, or a random one when there
//! is none: every track would be a stream of its own. So before the offer reaches str0m, each
//! declared receive section gets `a=msid:<publisher> <track>` in place of any it had, and str0m
//! answers, and later offers, with exactly that.
//!
//! Invariant: only sections whose `a=mid` is declared are touched; every other byte of the offer
//! is passed through, line endings included.

use std::fmt::Write as _;

use crate::api::{ParticipantId, TrackId};

/// `sdp` with an `a=msid:<publisher> <track>` line in each section whose mid is a key of
/// `streams` (mid → the publisher and track it will carry), replacing the section's own msid
/// lines. Returns `None` when no section matched (the offer is used as it is).
pub fn with_receive_msids(sdp: &str, streams: &[(&str, ParticipantId, TrackId)]) -> Option<String> {
    if streams.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(sdp.len() + 40 * streams.len());
    let mut changed = false;
    // Sections start at each `m=` line; the session part before the first one is passed as is.
    let mut rest = sdp;
    let mut first = true;
    while !rest.is_empty() {
        let end = next_section_start(rest, first);
        let (section, tail) = rest.split_at(end);
        rest = tail;
        let declared = (!first)
            .then(|| section_mid(section))
            .flatten()
            .and_then(|mid| streams.iter().find(|(declared, ..)| *declared == mid));
        first = false;
        let Some(&(_, publisher, track)) = declared else {
            out.push_str(section);
            continue;
        };
        let newline = if section.contains("\r\n") {
            "\r\n"
        } else {
            "\n"
        };
        for line in section.split_inclusive('\n') {
            if !line.starts_with("a=msid:") {
                out.push_str(line);
            }
        }
        if !out.ends_with('\n') {
            out.push_str(newline);
        }
        let _ = write!(out, "a=msid:{publisher} {track}{newline}");
        changed = true;
    }
    changed.then_some(out)
}

/// Where the next section begins in `sdp`: the next line starting with `m=` (after the first
/// byte, unless this is the session part, which may be followed by `m=` at once).
fn next_section_start(sdp: &str, session_part: bool) -> usize {
    if session_part && sdp.starts_with("m=") {
        return 0;
    }
    sdp.match_indices("\nm=")
        .map(|(at, _)| at + 1)
        .next()
        .unwrap_or(sdp.len())
}

/// The value of a section's `a=mid:` line.
fn section_mid(section: &str) -> Option<&str> {
    section
        .lines()
        .find_map(|line| line.strip_prefix("a=mid:"))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\na=msid:cam mic\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=recvonly\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=msid:- x\r\na=mid:3\r\na=recvonly\r\n";

    #[test]
    fn declared_receive_sections_get_the_publishers_stream_and_nothing_else_changes() {
        let out = with_receive_msids(
            OFFER,
            &[
                ("2", ParticipantId(3), TrackId(5)),
                ("3", ParticipantId(3), TrackId(6)),
            ],
        )
        .unwrap();
        assert_eq!(
            out,
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\na=msid:cam mic\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=recvonly\r\na=msid:P3 T5\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:3\r\na=recvonly\r\na=msid:P3 T6\r\n"
        );
    }

    #[test]
    fn undeclared_mids_and_offers_without_sections_are_left_alone() {
        assert_eq!(
            with_receive_msids(OFFER, &[("9", ParticipantId(1), TrackId(1))]),
            None
        );
        assert_eq!(with_receive_msids(OFFER, &[]), None);
        assert_eq!(
            with_receive_msids("v=0\r\n", &[("0", ParticipantId(1), TrackId(1))]),
            None
        );
        // A mid that only prefixes a declared one does not match it.
        assert_eq!(
            with_receive_msids(OFFER, &[("20", ParticipantId(1), TrackId(1))]),
            None
        );
    }

    #[test]
    fn a_last_line_without_a_newline_and_bare_lf_offers_keep_their_shape() {
        let out = with_receive_msids(
            "v=0\nm=video 9 RTP/AVP 96\na=mid:1",
            &[("1", ParticipantId(2), TrackId(4))],
        )
        .unwrap();
        assert_eq!(out, "v=0\nm=video 9 RTP/AVP 96\na=mid:1\na=msid:P2 T4\n");
    }
}
