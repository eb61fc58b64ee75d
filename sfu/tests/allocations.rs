//! The steady-state forwarding path allocates nothing of its own per packet.
//!
//! A counting allocator counts, on this thread, every allocation made while the router
//! handles a publisher's datagrams, split by whether the thread was inside str0m at the
//! time (`roomcast_sfu::testing::IN_ENGINE`, set by the router around every str0m call).
//! roomcast's share must be zero; str0m's share is reported (its SRTP output buffers).
//! Run with `cargo test -p roomcast-sfu --features testing --test allocations`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::time::Duration;

use roomcast_sfu::router::Transmit;
use roomcast_sfu::testing::{IN_ENGINE, World};

struct CountingAllocator;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static OURS: Cell<u64> = const { Cell::new(0) };
    static ENGINE: Cell<u64> = const { Cell::new(0) };
}

fn record() {
    let counting = COUNTING.try_with(Cell::get).unwrap_or(false);
    if !counting {
        return;
    }
    let in_engine = IN_ENGINE.try_with(Cell::get).unwrap_or(false);
    let counter = if in_engine { &ENGINE } else { &OURS };
    let _ = counter.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counting touches
// only const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Drops the router's output: subscribers need not decrypt during the measurement.
struct Discard;

impl Transmit for Discard {
    fn send(&mut self, _: SocketAddr, _: &[u8]) {}
}

#[test]
fn forwarding_allocates_nothing_of_its_own_per_packet() {
    const SUBSCRIBERS: usize = 4;
    const PACKETS: u64 = 2_000;
    let mut world = World::with_room_limit(SUBSCRIBERS + 1);
    world.join("room", "publisher").unwrap();
    for i in 0..SUBSCRIBERS {
        world.join("room", &format!("subscriber{i}")).unwrap();
    }
    // Warm up with real delivery until every subscriber receives the publisher's video.
    world.run_for(Duration::from_secs(2));
    let publisher = world.clients[0].id;
    for client in &world.clients[1..] {
        assert!(
            client.video_frames.get(&publisher).copied().unwrap_or(0) > 20,
            "warm-up failed"
        );
    }
    let mut datagrams = 0u64;
    let mut tapped = 0u64;
    world.stage_packets();
    // The measured pattern (a frame every 200 µs) once without counting: the router's timer
    // heap and queues reach the size this pace needs (str0m's pacer and bandwidth estimator
    // move deadlines on every write; superseded heap entries wait for their time), so what
    // is counted below is the steady state, not capacity growth.
    for _ in 0..PACKETS {
        let (source, outgoing) = world.send_delta_frame(0, Duration::from_micros(200));
        let now = world.now;
        for datagram in &outgoing {
            world
                .router
                .handle_datagram(now, source, datagram, &mut Discard);
            world.router.handle_timeout(now, &mut Discard);
        }
        world.stage_packets();
    }
    let forwarded_before = world
        .router
        .metrics()
        .packets_forwarded
        .load(std::sync::atomic::Ordering::Relaxed);
    for _ in 0..PACKETS {
        let (source, outgoing) = world.send_delta_frame(0, Duration::from_micros(200));
        let now = world.now;
        for datagram in &outgoing {
            datagrams += 1;
            COUNTING.with(|c| c.set(true));
            world
                .router
                .handle_datagram(now, source, datagram, &mut Discard);
            world.router.handle_timeout(now, &mut Discard);
            COUNTING.with(|c| c.set(false));
        }
        // The HLS packager drains the stage tap as it goes (the publisher is on stage, so every
        // packet is also copied there: that copy must not allocate either).
        tapped += world.stage_packets().len() as u64;
    }
    let forwarded = world
        .router
        .metrics()
        .packets_forwarded
        .load(std::sync::atomic::Ordering::Relaxed)
        - forwarded_before;
    let ours = OURS.with(Cell::get);
    let engine = ENGINE.with(Cell::get);
    println!(
        "{datagrams} datagrams in, {forwarded} packets forwarded to {SUBSCRIBERS} subscribers: \
         roomcast allocations {ours}, str0m allocations {engine} ({:.2} per forwarded packet)",
        engine as f64 / forwarded as f64
    );
    assert!(
        forwarded >= PACKETS * SUBSCRIBERS as u64,
        "forwarding stopped: {forwarded} packets"
    );
    assert!(tapped >= PACKETS, "the stage tap saw {tapped} packets");
    assert_eq!(
        ours, 0,
        "roomcast's forwarding path allocated {ours} times for {forwarded} forwarded packets"
    );
}
