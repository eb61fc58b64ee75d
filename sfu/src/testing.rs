//! Whole rooms in memory, for tests and benchmarks: str0m client peers and a [`Router`]
//! exchange datagrams through queues while a simulated clock advances in 1 ms steps. No
//! sockets, no threads, no sleeping: seconds of media run in milliseconds, and every run is
//! the same. Compiled for this crate's tests and with the `testing` feature.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind as Str0mKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::sync::{mpsc, oneshot};

use std::sync::Arc;

pub use crate::alloc_audit::IN_ENGINE;

use crate::api::{
    Command, IngestFrame, LeaveReason, MediaKind, ParticipantId, SessionEvent, SfuError,
    Subscription, TrackId,
};
use crate::metrics::WorkerMetrics;
use crate::router::{Router, RouterConfig, Transmit};
use crate::stage::{StageChange, StageReceiver, StageRtp, StageTap};

const SERVER: &str = "10.0.0.1:5000";

#[derive(Default)]
pub struct Outbox(pub Vec<(SocketAddr, Vec<u8>)>);

impl Transmit for Outbox {
    fn send(&mut self, destination: SocketAddr, datagram: &[u8]) {
        self.0.push((destination, datagram.to_vec()));
    }
}

pub struct Client {
    pub id: ParticipantId,
    pub addr: SocketAddr,
    pub rtc: Rtc,
    pub events: mpsc::Receiver<SessionEvent>,
    pub video: Option<Mid>,
    pub audio: Option<Mid>,
    /// Server m-line → publisher.
    pub tracks: HashMap<Mid, ParticipantId>,
    pub video_frames: HashMap<ParticipantId, u64>,
    pub first_frame_keyframe: HashMap<ParticipantId, bool>,
    pub keyframe_wanted: bool,
    pub keyframe_requests: u64,
    pub left: Vec<ParticipantId>,
    pub outbox: VecDeque<(SocketAddr, Vec<u8>)>,
    pub timeout: Instant,
    pub frame_count: u64,
    /// Size of each video frame written (3000 bytes: three RTP packets).
    pub video_frame_bytes: usize,
    /// Server offers received (a host follower must never get one).
    pub offers: u64,
    /// Every `StageChanged` event received, in order.
    pub stage_events: Vec<Option<ParticipantId>>,
    /// Every `ActiveSpeaker` event received, in order.
    pub speaker_events: Vec<Option<ParticipantId>>,
    /// Every `TrackPublished` event received: (publisher, track).
    pub published: Vec<(ParticipantId, crate::TrackSummary)>,
    /// The RFC 6464 level (−dBov, 0..=127) its audio packets carry; `None` sends no level.
    pub audio_level: Option<u8>,
}

/// The publisher id under which a host follower's frames are counted.
pub const HOST: ParticipantId = ParticipantId(0);

pub struct World {
    pub now: Instant,
    pub router: Router,
    pub clients: Vec<Client>,
    pub to_clients: Outbox,
    /// What the router told the (absent) HLS packager about stages.
    pub stage: StageReceiver,
}

impl Default for World {
    fn default() -> Self {
        World::with_room_limit(3)
    }
}

impl World {
    pub fn with_room_limit(max_participants_per_room: usize) -> World {
        World::with_limits(max_participants_per_room, 1000)
    }

    pub fn with_limits(max_participants_per_room: usize, max_rooms: usize) -> World {
        let now = Instant::now();
        let cert = str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .unwrap();
        let (stage_tap, stage) = StageTap::channel(4096);
        let router = Router::new(
            RouterConfig {
                announced_addr: SERVER.parse().unwrap(),
                max_participants_per_room,
                room_budget: Arc::new(crate::router::RoomBudget::new(max_rooms)),
                stage_tap: Some(stage_tap),
            },
            cert,
            Arc::new(WorkerMetrics::default()),
        );
        World {
            now,
            router,
            clients: Vec::new(),
            to_clients: Outbox::default(),
            stage,
        }
    }

    /// Stage changes reported since the last call.
    pub fn stage_changes(&mut self) -> Vec<StageChange> {
        std::iter::from_fn(|| self.stage.changes.try_recv().ok()).collect()
    }

    /// Stage packets copied since the last call.
    pub fn stage_packets(&mut self) -> Vec<StageRtp> {
        std::iter::from_fn(|| self.stage.packets.try_recv().ok()).collect()
    }

    pub fn command<T>(
        &mut self,
        make: impl FnOnce(oneshot::Sender<Result<T, SfuError>>) -> Command,
    ) -> Result<T, SfuError> {
        let (reply, mut response) = oneshot::channel();
        self.router
            .handle_command(self.now, make(reply), &mut self.to_clients);
        response
            .try_recv()
            .expect("the router answers every request synchronously")
    }

    /// Join and send the first offer, publishing audio and video.
    pub fn join(&mut self, room: &str, name: &str) -> Result<usize, SfuError> {
        self.join_with(room, name, true)
    }

    /// Join as a pure subscriber (the first offer carries only a data channel).
    pub fn join_subscriber(&mut self, room: &str, name: &str) -> Result<usize, SfuError> {
        self.join_with(room, name, false)
    }

    /// Join as a host follower (a WHEP viewer): the client offers one receive-only audio and
    /// video m-line, and frames on them count under [`HOST`].
    pub fn join_host_follower(&mut self, room: &str, name: &str) -> Result<usize, SfuError> {
        let index = self.join_as(room, name, Subscription::Host, JoinMedia::ReceiveHost)?;
        let client = &mut self.clients[index];
        client.tracks = [client.video, client.audio]
            .into_iter()
            .flatten()
            .map(|mid| (mid, HOST))
            .collect();
        client.video = None;
        client.audio = None;
        Ok(index)
    }

    /// Join an ingest participant (no WebRTC session) and publish its H.264 and Opus tracks.
    pub fn join_ingest(&mut self, room: &str, name: &str) -> Result<IngestHost, SfuError> {
        let id = ParticipantId::next();
        let (events, events_rx) = mpsc::channel(4096);
        self.command(|reply| Command::Join {
            room: room.into(),
            participant: id,
            name: name.into(),
            subscription: Subscription::Nothing,
            events,
            reply,
        })?;
        let video = self.command(|reply| Command::PublishIngest {
            participant: id,
            kind: MediaKind::Video,
            reply,
        })?;
        let audio = self.command(|reply| Command::PublishIngest {
            participant: id,
            kind: MediaKind::Audio,
            reply,
        })?;
        Ok(IngestHost {
            id,
            video,
            audio,
            _events: events_rx,
            source_id: id.0 as u32,
            frames: 0,
        })
    }

    /// Feed one H.264 access unit of an ingest host: a keyframe is a STAP-A with SPS and PPS
    /// and an IDR slice; a delta frame one non-IDR slice.
    pub fn ingest_video(&mut self, host: &IngestHost, keyframe: bool, rtp_timestamp: u32) {
        let mut payloads: Vec<(Arc<[u8]>, bool)> = Vec::new();
        if keyframe {
            let stap_a = [24u8, 0, 4, 0x67, 0x42, 0xe0, 0x1f, 0, 2, 0x68, 0xce];
            payloads.push((Arc::from(&stap_a[..]), false));
            payloads.push((Arc::from(&[0x65u8, 0x88, 0x84, 0x21][..]), true));
        } else {
            payloads.push((Arc::from(&[0x41u8, 0x9a, 0x02, 0x03][..]), true));
        }
        let frame = IngestFrame {
            source_id: host.source_id,
            rtp_timestamp,
            capture_time: self.now,
            keyframe,
            payloads,
        };
        self.router.handle_command(
            self.now,
            Command::IngestFrame {
                participant: host.id,
                track: host.video,
                frame,
            },
            &mut self.to_clients,
        );
    }

    /// Run for `duration`, feeding the ingest host 30 fps video with a keyframe every
    /// `gop` frames, starting with one.
    pub fn run_with_ingest(&mut self, host: &mut IngestHost, duration: Duration, gop: u32) {
        let end = self.now + duration;
        while self.now < end {
            for _ in 0..33 {
                self.now += Duration::from_millis(1);
                self.step();
            }
            let keyframe = host.frames.is_multiple_of(gop);
            let timestamp = host.frames * 3000;
            host.frames += 1;
            self.ingest_video(host, keyframe, timestamp);
        }
    }

    /// Join and publish, with a receive m-line in the first offer for every track the join
    /// reported (and one for each of `absent`, tracks that are not in the room), declared in
    /// the offer's `receive` as the web client does.
    pub fn join_receiving_existing(
        &mut self,
        room: &str,
        name: &str,
        absent: &[TrackId],
    ) -> Result<usize, SfuError> {
        let receive = JoinMedia::PublishAndReceive {
            absent: absent.to_vec(),
        };
        self.join_as(room, name, Subscription::AllTracks, receive)
    }

    fn join_with(&mut self, room: &str, name: &str, publish: bool) -> Result<usize, SfuError> {
        let media = if publish {
            JoinMedia::Publish
        } else {
            JoinMedia::DataChannel
        };
        self.join_as(room, name, Subscription::AllTracks, media)
    }

    fn join_as(
        &mut self,
        room: &str,
        name: &str,
        subscription: Subscription,
        media: JoinMedia,
    ) -> Result<usize, SfuError> {
        let id = ParticipantId::next();
        let (events, events_rx) = mpsc::channel(4096);
        let present = self.command(|reply| Command::Join {
            room: room.into(),
            participant: id,
            name: name.into(),
            subscription,
            events,
            reply,
        })?;
        let n = self.clients.len();
        let addr: SocketAddr = format!("10.1.{}.{}:4000", n / 250, n % 250 + 1)
            .parse()
            .unwrap();
        let mut rtc = Rtc::builder().build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        let mut change = rtc.sdp_api();
        let mut receive = Vec::new();
        if let JoinMedia::PublishAndReceive { absent } = &media {
            let tracks = present.iter().flat_map(|p| &p.tracks);
            let tracks = tracks
                .map(|t| (t.id, t.kind))
                .chain(absent.iter().map(|&id| (id, MediaKind::Video)));
            for (track, kind) in tracks {
                let mid = change.add_media(kind.into(), Direction::RecvOnly, None, None, None);
                receive.push((mid.to_string(), track));
            }
        }
        let (video, audio) = match media {
            JoinMedia::Publish | JoinMedia::PublishAndReceive { .. } | JoinMedia::ReceiveHost => {
                let direction = if media == JoinMedia::ReceiveHost {
                    Direction::RecvOnly
                } else {
                    Direction::SendOnly
                };
                (
                    Some(change.add_media(Str0mKind::Video, direction, None, None, None)),
                    Some(change.add_media(Str0mKind::Audio, direction, None, None, None)),
                )
            }
            JoinMedia::DataChannel => {
                change.add_channel("roomcast".into());
                (None, None)
            }
        };
        let (offer, pending) = change.apply().unwrap();
        let answer = self.command(|reply| Command::Offer {
            participant: id,
            sdp: offer.to_sdp_string(),
            sources: Vec::new(),
            receive,
            reply,
        })?;
        accept_answer(&mut rtc, pending, &answer.sdp);
        self.clients.push(Client {
            id,
            addr,
            rtc,
            events: events_rx,
            video,
            audio,
            tracks: answer
                .tracks
                .iter()
                .map(|t| (Mid::from(t.mid.as_str()), t.participant))
                .collect(),
            video_frames: HashMap::new(),
            first_frame_keyframe: HashMap::new(),
            keyframe_wanted: true,
            keyframe_requests: 0,
            left: Vec::new(),
            outbox: VecDeque::new(),
            timeout: self.now,
            frame_count: 0,
            video_frame_bytes: 3000,
            offers: 0,
            stage_events: Vec::new(),
            speaker_events: Vec::new(),
            published: Vec::new(),
            audio_level: None,
        });
        Ok(self.clients.len() - 1)
    }

    /// Advance the clock by `advance`, have client `index` send one delta video frame, and
    /// return its address and the datagrams it produced, without delivering them: for
    /// benchmarks and tests that feed the router by hand.
    pub fn send_delta_frame(
        &mut self,
        index: usize,
        advance: Duration,
    ) -> (SocketAddr, Vec<Vec<u8>>) {
        self.now += advance;
        let now = self.now;
        let client = &mut self.clients[index];
        client.keyframe_wanted = false;
        write_video(client, now);
        client.rtc.handle_input(Input::Timeout(now)).unwrap();
        drain_client(client, now);
        let datagrams = client
            .outbox
            .drain(..)
            .map(|(_, datagram)| datagram)
            .collect();
        (client.addr, datagrams)
    }

    pub fn leave(&mut self, index: usize) {
        let client = self.clients.remove(index);
        self.router.handle_command(
            self.now,
            Command::Leave {
                participant: client.id,
                reason: LeaveReason::Left,
            },
            &mut self.to_clients,
        );
    }

    /// Advance simulated time by `duration` in 1 ms steps.
    pub fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.now < end {
            self.now += Duration::from_millis(1);
            self.step();
        }
    }

    pub fn step(&mut self) {
        let now = self.now;
        // Signaling: server offers are answered at once.
        for i in 0..self.clients.len() {
            while let Ok(event) = self.clients[i].events.try_recv() {
                match event {
                    SessionEvent::Offer { sdp, tracks } => {
                        let client = &mut self.clients[i];
                        client.offers += 1;
                        client.tracks = tracks
                            .iter()
                            .map(|t| (Mid::from(t.mid.as_str()), t.participant))
                            .collect();
                        let offer = SdpOffer::from_sdp_string(&sdp).unwrap();
                        let answer = client.rtc.sdp_api().accept_offer(offer).unwrap();
                        let id = client.id;
                        drain_client(client, now);
                        self.command(|reply| Command::Answer {
                            participant: id,
                            sdp: answer.to_sdp_string(),
                            reply,
                        })
                        .unwrap();
                    }
                    SessionEvent::ParticipantLeft { participant, .. } => {
                        self.clients[i].left.push(participant)
                    }
                    SessionEvent::StageChanged { participant } => {
                        self.clients[i].stage_events.push(participant)
                    }
                    SessionEvent::ActiveSpeaker { participant } => {
                        self.clients[i].speaker_events.push(participant)
                    }
                    SessionEvent::TrackPublished { participant, track } => {
                        self.clients[i].published.push((participant, track))
                    }
                    _ => {}
                }
            }
        }
        // Media: 30 fps video, 50 packets/s audio.
        for client in &mut self.clients {
            if client.rtc.is_connected() {
                client.frame_count += 1;
                if client.frame_count % 33 == 0 {
                    write_video(client, now);
                }
                if client.frame_count % 20 == 0 {
                    write_audio(client, now);
                }
            }
            if client.timeout <= now {
                client.rtc.handle_input(Input::Timeout(now)).unwrap();
            }
            drain_client(client, now);
        }
        // Network: client → router, router → client.
        let server: SocketAddr = SERVER.parse().unwrap();
        for i in 0..self.clients.len() {
            while let Some((destination, datagram)) = self.clients[i].outbox.pop_front() {
                assert_eq!(destination, server);
                let source = self.clients[i].addr;
                self.router
                    .handle_datagram(now, source, &datagram, &mut self.to_clients);
            }
        }
        self.router.handle_timeout(now, &mut self.to_clients);
        for (destination, datagram) in std::mem::take(&mut self.to_clients.0) {
            let Some(client) = self.clients.iter_mut().find(|c| c.addr == destination) else {
                continue; // a client that left
            };
            let input = Input::Receive(
                now,
                Receive {
                    proto: Protocol::Udp,
                    source: server,
                    destination,
                    contents: datagram.as_slice().try_into().unwrap(),
                },
            );
            client.rtc.handle_input(input).unwrap();
            drain_client(client, now);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum JoinMedia {
    Publish,
    /// Publish, and receive every existing track (plus `absent` ones) on the first offer.
    PublishAndReceive {
        absent: Vec<TrackId>,
    },
    DataChannel,
    ReceiveHost,
}

/// An ingest participant in a [`World`]: what an RTMP edge holds.
pub struct IngestHost {
    pub id: ParticipantId,
    pub video: TrackId,
    pub audio: TrackId,
    /// Kept open so the router's events have somewhere to go.
    _events: mpsc::Receiver<SessionEvent>,
    pub source_id: u32,
    pub frames: u32,
}

fn accept_answer(rtc: &mut Rtc, pending: SdpPendingOffer, answer: &str) {
    let answer = SdpAnswer::from_sdp_string(answer).unwrap();
    rtc.sdp_api().accept_answer(pending, answer).unwrap();
}

pub fn drain_client(client: &mut Client, now: Instant) {
    loop {
        match client.rtc.poll_output().unwrap() {
            Output::Timeout(at) => {
                client.timeout = at.max(now);
                return;
            }
            Output::Transmit(t) => client
                .outbox
                .push_back((t.destination, t.contents.to_vec())),
            Output::Event(Event::MediaData(data)) => {
                let Some(&from) = client.tracks.get(&data.mid) else {
                    continue;
                };
                let keyframe = match data.params.spec().codec {
                    Codec::Vp8 => data.data.first().is_some_and(|b| b & 1 == 0),
                    // Annex B out of str0m's depacketizer: an SPS (type 7) starts a keyframe.
                    Codec::H264 => data.data.get(4).is_some_and(|b| b & 0x1f == 7),
                    _ => continue,
                };
                client.first_frame_keyframe.entry(from).or_insert(keyframe);
                *client.video_frames.entry(from).or_default() += 1;
            }
            Output::Event(Event::KeyframeRequest(_)) => {
                client.keyframe_wanted = true;
                client.keyframe_requests += 1;
            }
            Output::Event(_) => {}
        }
    }
}

pub fn write_video(client: &mut Client, now: Instant) {
    let Some(mid) = client.video else { return };
    let keyframe = std::mem::take(&mut client.keyframe_wanted);
    let mut frame = vec![0x55u8; client.video_frame_bytes];
    frame[0] = if keyframe { 0x10 } else { 0x11 }; // VP8 frame tag: P bit clear on keyframes
    let time = MediaTime::new(client.frame_count * 90, Frequency::NINETY_KHZ);
    let writer = client.rtc.writer(mid).unwrap();
    let pt = writer
        .payload_params()
        .find(|p| p.spec().codec == Codec::Vp8)
        .unwrap()
        .pt();
    writer.write(pt, now, time, frame).unwrap();
    drain_client(client, now);
}

pub fn write_audio(client: &mut Client, now: Instant) {
    let Some(mid) = client.audio else { return };
    let time = MediaTime::new(client.frame_count * 48, Frequency::FORTY_EIGHT_KHZ);
    let mut writer = client.rtc.writer(mid).unwrap();
    if let Some(level) = client.audio_level {
        writer = writer.audio_level(-(level.min(127) as i8), level <= 50);
    }
    let pt = writer
        .payload_params()
        .find(|p| p.spec().codec == Codec::Opus)
        .unwrap()
        .pt();
    writer.write(pt, now, time, vec![0xfcu8; 80]).unwrap();
    drain_client(client, now);
}
