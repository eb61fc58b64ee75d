//! Per-packet cost of the forwarding path.
//!
//! - `rewrite`: one consumer's sequence/timestamp rewrite of one packet.
//! - `keyframe_detection`: reading a VP8 / H.264 payload descriptor.
//! - `fan_out/N`: one publisher's RTP datagram through the whole router to N subscribers,
//!   in memory: demultiplexing, SRTP decryption, producer lookup, N rewrites and N SRTP
//!   encryptions (str0m), reported per subscriber (criterion's "elements"). The subscribers'
//!   datagrams are discarded: only the router's work is timed.
//!
//! Run: `cargo bench -p roomcast-sfu --features testing --bench forwarding`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use roomcast_sfu::core::keyframe::{VideoCodec, starts_keyframe};
use roomcast_sfu::core::rewrite::{IncomingPacket, RtpRewriter};
use roomcast_sfu::router::Transmit;
use roomcast_sfu::testing::World;

struct Discard;

impl Transmit for Discard {
    fn send(&mut self, _: SocketAddr, datagram: &[u8]) {
        black_box(datagram);
    }
}

fn rewrite(c: &mut Criterion) {
    let start = Instant::now();
    let mut rewriter = RtpRewriter::new(90_000, true);
    let mut seq = 1_000u64;
    c.bench_function("rewrite", |b| {
        b.iter(|| {
            seq += 1;
            black_box(rewriter.rewrite(IncomingPacket {
                ssrc: 7,
                seq,
                timestamp: (seq * 3000) as u32,
                starts_keyframe: seq == 1_001,
                arrival: start,
            }))
        })
    });
}

fn keyframe_detection(c: &mut Criterion) {
    let vp8 = [0x90u8, 0x80, 0x81, 0x23, 0x11, 0x02, 0x00, 0x00];
    let stap_a = [
        0x78u8, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce, 0x00, 0x02, 0x65, 0x88,
    ];
    c.bench_function("keyframe_detection/vp8", |b| {
        b.iter(|| starts_keyframe(VideoCodec::Vp8, black_box(&vp8)))
    });
    c.bench_function("keyframe_detection/h264_stap_a", |b| {
        b.iter(|| starts_keyframe(VideoCodec::H264, black_box(&stap_a)))
    });
}

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("fan_out");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(4));
    for subscribers in [1usize, 10, 100, 500] {
        let mut world = World::with_room_limit(subscribers + 1);
        world.join("bench", "publisher").unwrap();
        for i in 0..subscribers {
            world.join_subscriber("bench", &format!("s{i}")).unwrap();
        }
        world.run_for(Duration::from_secs(2));
        // One RTP packet per frame: each iteration is one datagram in, N out.
        world.clients[0].video_frame_bytes = 1000;
        let publisher_id = world.clients[0].id;
        assert!(
            world.clients[1..].iter().all(|c| c
                .video_frames
                .get(&publisher_id)
                .copied()
                .unwrap_or(0)
                > 10),
            "warm-up failed: not every subscriber receives video"
        );
        group.throughput(Throughput::Elements(subscribers as u64));
        group.bench_function(BenchmarkId::from_parameter(subscribers), |b| {
            b.iter_custom(|iterations| {
                let mut timed = Duration::ZERO;
                for _ in 0..iterations {
                    // Simulated time moves slowly so a long measurement stays well inside
                    // the subscribers' silence timeout (they are not answering here).
                    let (source, datagrams) = world.send_delta_frame(0, Duration::from_micros(5));
                    for datagram in datagrams {
                        let started = Instant::now();
                        world
                            .router
                            .handle_datagram(world.now, source, &datagram, &mut Discard);
                        world.router.handle_timeout(world.now, &mut Discard);
                        timed += started.elapsed();
                    }
                }
                timed
            })
        });
    }
    group.finish();
}

criterion_group!(benches, rewrite, keyframe_detection, fan_out);
criterion_main!(benches);
