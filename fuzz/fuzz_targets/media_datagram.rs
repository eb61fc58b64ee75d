//! Any datagram on the media port, from a known or an unknown address, to a router with a
//! participant mid-handshake: never panics; the datagram is dropped or handled.
#![no_main]

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use roomcast_sfu::metrics::WorkerMetrics;
use roomcast_sfu::router::{Router, RouterConfig, Transmit};

struct Discard;

impl Transmit for Discard {
    fn send(&mut self, _: SocketAddr, _: &[u8]) {}
}

thread_local! {
    static ROUTER: RefCell<Router> = RefCell::new({
        let cert = str0m::crypto::from_feature_flags().dtls_provider.generate_certificate().unwrap();
        let config = RouterConfig {
            announced_addr: "127.0.0.1:5000".parse().unwrap(),
            max_participants_per_room: 10,
            room_budget: Arc::new(roomcast_sfu::RoomBudget::new(10)),
            stage_tap: None,
        };
        let mut router = Router::new(config, cert, Arc::new(WorkerMetrics::default()));
        join_one_participant(&mut router);
        router
    });
}

/// A participant whose offer was accepted, so STUN checks meet real ICE credentials.
fn join_one_participant(router: &mut Router) {
    use roomcast_sfu::{Command, ParticipantId};
    use str0m::media::{Direction, MediaKind};
    let now = Instant::now();
    let participant = ParticipantId::next();
    let (events, events_rx) = tokio::sync::mpsc::channel(1024);
    std::mem::forget(events_rx); // keep the participant's event stream open
    let (reply, _) = tokio::sync::oneshot::channel();
    router.handle_command(now, Command::Join { room: "fuzz".into(), participant, name: "fuzz".into(), subscription: roomcast_sfu::Subscription::AllTracks, events, reply }, &mut Discard);
    let mut client = str0m::Rtc::new(now);
    client.add_local_candidate(str0m::Candidate::host("127.0.0.1:40000".parse().unwrap(), "udp").unwrap());
    let mut change = client.sdp_api();
    change.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (offer, _pending) = change.apply().unwrap();
    let (reply, _) = tokio::sync::oneshot::channel();
    router.handle_command(now, Command::Offer { participant, sdp: offer.to_sdp_string(), sources: Vec::new(), receive: Vec::new(), reply }, &mut Discard);
}

fuzz_target!(|data: &[u8]| {
    let Some((&port, datagram)) = data.split_first() else {
        return;
    };
    let source: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 40_000 + u16::from(port % 4)));
    ROUTER.with(|router| {
        let mut router = router.borrow_mut();
        let now = Instant::now();
        router.handle_datagram(now, source, datagram, &mut Discard);
        router.handle_timeout(now, &mut Discard);
    });
});
