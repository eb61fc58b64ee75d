//! Per-consumer RTP rewriting: one producer's packets become one continuous outgoing stream.
//!
//! A subscriber must see a single RTP stream whose sequence numbers have no holes the SFU
//! made and whose timestamps never jump backwards, even though the consumer starts in the
//! middle of the producer's stream, skips everything before the first keyframe, and may see
//! the producer restart with a new SSRC. The rewriter is sans-IO: it is handed each packet's
//! extended sequence number, timestamp, keyframe flag and arrival time, and answers with the
//! outgoing sequence number and timestamp, or why the packet is dropped.
//!
//! Worked example (mediasoup's `doc/Consumer.md` does the same for its `SeqManager`):
//!
//! | event                          | in seq | in ts    | out seq | out ts   | note                     |
//! |--------------------------------|--------|----------|---------|----------|--------------------------|
//! | consumer created mid-stream    | 5000   | 900000   | –       | –        | delta frame: dropped     |
//! | keyframe starts                | 5003   | 903000   | 1       | 903000   | base: 5003 → 1, offset 0 |
//! | next packets                   | 5004   | 903000   | 2       | 903000   | out = 1 + (in − 5003)    |
//! | packet 5006 lost, 5007 arrives | 5007   | 906000   | 5       | 906000   | the hole is kept, so the |
//! |                                |        |          |         |          | subscriber NACKs 4       |
//! | retransmission of 5006         | 5006   | 906000   | 4       | 906000   | fills the hole           |
//! | publisher restarts, new SSRC   | 17     | 123456   | –       | –        | waits for its keyframe   |
//! | its keyframe, 500 ms later     | 19     | 168456   | 6       | 951000   | seq continues at 6; ts   |
//! |                                |        |          |         |          | advances by 500 ms·90kHz |
//!
//! Invariants: outgoing sequence numbers start at [`FIRST_OUTGOING_SEQ`] and never repeat
//! for different incoming packets of one source; after a source change the first outgoing
//! sequence number is one past the highest sent, and the timestamp advances by the wall
//! time elapsed (at least one tick), so the subscriber's jitter buffer sees no jump back.

use std::time::Instant;

/// The first sequence number a new consumer sends. Small, so the SRTP rollover counter
/// starts at 0 as the receiver assumes ([RFC 3711 §3.3.1](https://www.rfc-editor.org/rfc/rfc3711#section-3.3.1)).
pub const FIRST_OUTGOING_SEQ: u64 = 1;

/// What the rewriter needs to know about one incoming packet.
#[derive(Debug, Clone, Copy)]
pub struct IncomingPacket {
    /// SSRC of the producer's stream: a change means the source restarted.
    pub ssrc: u32,
    /// Extended (rollover-free) sequence number.
    pub seq: u64,
    /// RTP timestamp as on the wire.
    pub timestamp: u32,
    /// The packet is the first of a keyframe (see [`super::keyframe`]).
    pub starts_keyframe: bool,
    /// When the packet arrived.
    pub arrival: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewrite {
    Forward { seq: u64, timestamp: u32 },
    Drop(DropReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Video that is not the start of a keyframe, before the consumer has one.
    WaitingForKeyframe,
    /// A packet older than the point where forwarding started (reordered or retransmitted).
    BeforeStart,
}

#[derive(Debug)]
pub struct RtpRewriter {
    clock_rate: u32,
    wait_for_keyframe: bool,
    mapping: Option<Mapping>,
    highest_sent: Option<Sent>,
}

#[derive(Debug, Clone, Copy)]
struct Mapping {
    source_ssrc: u32,
    in_seq_base: u64,
    out_seq_base: u64,
    timestamp_offset: u32,
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    seq: u64,
    timestamp: u32,
    at: Instant,
}

impl RtpRewriter {
    /// `wait_for_keyframe` is true for video whose keyframes can be recognised.
    pub fn new(clock_rate: u32, wait_for_keyframe: bool) -> Self {
        RtpRewriter {
            clock_rate,
            wait_for_keyframe,
            mapping: None,
            highest_sent: None,
        }
    }

    /// True until the first packet (or, after a source change, the first keyframe) is sent.
    pub fn is_waiting(&self) -> bool {
        self.mapping.is_none()
    }

    /// Forget the current source: the next packet (or keyframe) starts a new mapping that
    /// continues the outgoing sequence.
    pub fn restart(&mut self) {
        self.mapping = None;
    }

    pub fn rewrite(&mut self, packet: IncomingPacket) -> Rewrite {
        if self
            .mapping
            .is_some_and(|mapping| mapping.source_ssrc != packet.ssrc)
        {
            self.mapping = None;
        }
        let mapping = match self.mapping {
            Some(mapping) => mapping,
            None => {
                if self.wait_for_keyframe && !packet.starts_keyframe {
                    return Rewrite::Drop(DropReason::WaitingForKeyframe);
                }
                let mapping = self.start_mapping(&packet);
                self.mapping = Some(mapping);
                mapping
            }
        };
        if packet.seq < mapping.in_seq_base {
            return Rewrite::Drop(DropReason::BeforeStart);
        }
        let seq = mapping.out_seq_base + (packet.seq - mapping.in_seq_base);
        let timestamp = packet.timestamp.wrapping_add(mapping.timestamp_offset);
        if self.highest_sent.is_none_or(|sent| seq > sent.seq) {
            self.highest_sent = Some(Sent {
                seq,
                timestamp,
                at: packet.arrival,
            });
        }
        Rewrite::Forward { seq, timestamp }
    }

    fn start_mapping(&self, packet: &IncomingPacket) -> Mapping {
        let (out_seq_base, timestamp_offset) = match self.highest_sent {
            None => (FIRST_OUTGOING_SEQ, 0),
            Some(sent) => {
                let elapsed = packet.arrival.saturating_duration_since(sent.at);
                let ticks = (elapsed.as_micros() * self.clock_rate as u128 / 1_000_000).max(1);
                let target = sent.timestamp.wrapping_add(ticks as u32);
                (sent.seq + 1, target.wrapping_sub(packet.timestamp))
            }
        };
        Mapping {
            source_ssrc: packet.ssrc,
            in_seq_base: packet.seq,
            out_seq_base,
            timestamp_offset,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn packet(
        ssrc: u32,
        seq: u64,
        timestamp: u32,
        keyframe: bool,
        arrival: Instant,
    ) -> IncomingPacket {
        IncomingPacket {
            ssrc,
            seq,
            timestamp,
            starts_keyframe: keyframe,
            arrival,
        }
    }

    #[test]
    fn the_worked_example_in_the_module_docs() {
        let t0 = Instant::now();
        let mut rewriter = RtpRewriter::new(90_000, true);
        assert_eq!(
            rewriter.rewrite(packet(1, 5000, 900_000, false, t0)),
            Rewrite::Drop(DropReason::WaitingForKeyframe)
        );
        assert!(rewriter.is_waiting());
        assert_eq!(
            rewriter.rewrite(packet(1, 5003, 903_000, true, t0)),
            Rewrite::Forward {
                seq: 1,
                timestamp: 903_000
            }
        );
        assert_eq!(
            rewriter.rewrite(packet(1, 5004, 903_000, false, t0)),
            Rewrite::Forward {
                seq: 2,
                timestamp: 903_000
            }
        );
        assert_eq!(
            rewriter.rewrite(packet(1, 5007, 906_000, false, t0)),
            Rewrite::Forward {
                seq: 5,
                timestamp: 906_000
            }
        );
        assert_eq!(
            rewriter.rewrite(packet(1, 5006, 906_000, false, t0)),
            Rewrite::Forward {
                seq: 4,
                timestamp: 906_000
            }
        );
        // The publisher restarts with a new SSRC and fresh numbering.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(
            rewriter.rewrite(packet(2, 17, 123_456, false, t1)),
            Rewrite::Drop(DropReason::WaitingForKeyframe)
        );
        assert_eq!(
            rewriter.rewrite(packet(2, 19, 168_456, true, t1)),
            Rewrite::Forward {
                seq: 6,
                timestamp: 906_000 + 45_000
            }
        );
        assert_eq!(
            rewriter.rewrite(packet(2, 20, 171_456, false, t1)),
            Rewrite::Forward {
                seq: 7,
                timestamp: 906_000 + 48_000
            }
        );
    }

    #[test]
    fn packets_from_before_the_start_are_dropped() {
        let t0 = Instant::now();
        let mut rewriter = RtpRewriter::new(90_000, true);
        rewriter.rewrite(packet(1, 100, 0, true, t0));
        assert_eq!(
            rewriter.rewrite(packet(1, 99, 0, false, t0)),
            Rewrite::Drop(DropReason::BeforeStart)
        );
    }

    #[test]
    fn audio_starts_on_the_first_packet() {
        let t0 = Instant::now();
        let mut rewriter = RtpRewriter::new(48_000, false);
        assert_eq!(
            rewriter.rewrite(packet(7, 40_000, 1_000, false, t0)),
            Rewrite::Forward {
                seq: 1,
                timestamp: 1_000
            }
        );
    }

    #[test]
    fn sequence_continues_across_the_16_bit_wrap() {
        let t0 = Instant::now();
        let mut rewriter = RtpRewriter::new(48_000, false);
        rewriter.rewrite(packet(7, 65_534, 0, false, t0));
        assert_eq!(
            rewriter.rewrite(packet(7, 65_536 + 3, 960, false, t0)),
            Rewrite::Forward {
                seq: 6,
                timestamp: 960
            }
        );
    }

    #[test]
    fn timestamp_offset_wraps_without_overflow() {
        let t0 = Instant::now();
        let mut rewriter = RtpRewriter::new(90_000, false);
        rewriter.rewrite(packet(1, 10, u32::MAX - 10, false, t0));
        rewriter.restart();
        let Rewrite::Forward { seq, timestamp } =
            rewriter.rewrite(packet(1, 500, 5, false, t0 + Duration::from_millis(1)))
        else {
            panic!("restart must forward audio-like streams at once");
        };
        assert_eq!(seq, 2);
        assert_eq!(timestamp, (u32::MAX - 10).wrapping_add(90));
    }

    #[test]
    fn restart_without_elapsed_time_still_advances_the_timestamp() {
        let t0 = Instant::now();
        let mut rewriter = RtpRewriter::new(90_000, false);
        rewriter.rewrite(packet(1, 10, 1_000, false, t0));
        rewriter.restart();
        assert_eq!(
            rewriter.rewrite(packet(1, 11, 1_000, false, t0)),
            Rewrite::Forward {
                seq: 2,
                timestamp: 1_001
            }
        );
    }
}
