//! roomcast's selective forwarding unit.
//!
//! # Layout
//! - [`core`]: sans-IO logic with no str0m session and no I/O — RTP rewriting, keyframe
//!   detection, keyframe request throttling. Pure functions of their inputs and time.
//! - [`router`]: the sans-IO worker state — rooms, peers (one str0m `Rtc` each),
//!   producers and consumers, demultiplexing and the forwarding loop. Time is a parameter;
//!   datagrams go to a [`router::Transmit`] sink.
//! - `worker`: the thin I/O shell — a thread, a UDP socket, a timer, a command mailbox.
//! - [`api`]: the typed commands and events that protocol edges use. Edges never see str0m.
//!
//! # Threads and ownership
//! [`Sfu::start`] spawns one worker per configured core, each with its own UDP socket.
//! A room lives on exactly one worker, chosen by a stable hash of its name, so forwarding
//! never crosses threads and needs no lock. Participants of one room share the worker's
//! socket; the router tells them apart by remote address (learnt from the ICE username of
//! their first STUN request).
//!
//! # Errors
//! Bad input from the network (garbage datagrams, broken SDP, failing DTLS) is counted,
//! logged, and answered with an [`api::SfuError`] or the removal of that one participant.
//! A panic is a bug.

#![forbid(unsafe_code)]

mod alloc_audit;
pub mod api;
pub mod core;
pub mod metrics;
pub mod msid;
mod peer;
pub mod router;
pub mod stage;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod worker;

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};

pub use api::{
    Command, IngestFrame, LeaveReason, MediaKind, MutedBy, OfferAnswer, OfferedTrack,
    ParticipantId, ParticipantSummary, RoomInfo, SessionEvent, SfuError, Subscription, TrackId,
    TrackSource, TrackSummary,
};
pub use router::{RoomBudget, Router, RouterConfig};
use std::sync::Arc;
use tokio::sync::mpsc;

/// How the SFU binds and announces its media ports.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// Number of workers (event loops, one UDP socket each). One per core is the norm.
    pub workers: usize,
    /// Address the UDP sockets bind to.
    pub bind_ip: IpAddr,
    /// First UDP port; worker `i` binds `rtc_port + i`. 0 lets the OS pick each port.
    pub rtc_port: u16,
    /// Address announced in ICE candidates. `None` announces `bind_ip`, which must then be a
    /// concrete address (not 0.0.0.0).
    pub announce_ip: Option<IpAddr>,
    pub max_participants_per_room: usize,
    /// Rooms on this node, all workers together; the join that would open one more fails.
    pub max_rooms: usize,
    /// Where every worker reports room stages and copies stage packets (the HLS packager).
    pub stage_tap: Option<stage::StageTap>,
}

/// A running SFU: the workers and the way to reach them. Cheap to share behind an `Arc`.
pub struct Sfu {
    workers: Vec<WorkerHandle>,
    threads: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Kept for its drop counter in `/metrics`.
    stage_tap: Option<stage::StageTap>,
}

/// The mailbox of one worker. Clone it to keep talking to the worker a room lives on.
#[derive(Clone)]
pub struct WorkerHandle {
    index: usize,
    commands: mpsc::Sender<Command>,
    local_addr: SocketAddr,
    announced_addr: SocketAddr,
    metrics: std::sync::Arc<metrics::WorkerMetrics>,
}

impl WorkerHandle {
    /// Queue a command; waits while the worker's queue is full. Fails only when the worker
    /// has stopped.
    pub async fn send(&self, command: Command) -> Result<(), SfuError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| SfuError::WorkerGone)
    }

    /// Queue a command unless the worker's queue is full (for periodic requests that the next
    /// period repeats anyway).
    pub fn try_send(&self, command: Command) -> Result<(), SfuError> {
        self.commands
            .try_send(command)
            .map_err(|_| SfuError::WorkerGone)
    }

    pub fn index(&self) -> usize {
        self.index
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn announced_addr(&self) -> SocketAddr {
        self.announced_addr
    }
}

impl Sfu {
    /// Bind every worker's socket and start the workers.
    pub fn start(config: &SfuConfig) -> io::Result<Sfu> {
        if config.workers == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "at least one SFU worker is needed",
            ));
        }
        let announce_ip = config.announce_ip.unwrap_or(config.bind_ip);
        if announce_ip.is_unspecified() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "media bound to {} but no address to announce to clients: set --public-ip \
                     (ROOMCAST_PUBLIC_IP) to the address browsers can reach",
                    config.bind_ip
                ),
            ));
        }
        let provider = str0m::crypto::from_feature_flags();
        let room_budget = Arc::new(router::RoomBudget::new(config.max_rooms));
        let mut workers = Vec::with_capacity(config.workers);
        let mut threads = Vec::with_capacity(config.workers);
        for index in 0..config.workers {
            let port = if config.rtc_port == 0 {
                0
            } else {
                config.rtc_port.checked_add(index as u16).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "--rtc-port + workers exceeds 65535",
                    )
                })?
            };
            let bind = SocketAddr::new(config.bind_ip, port);
            let socket = UdpSocket::bind(bind).map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!("cannot bind the SFU's UDP port {bind}: {error}"),
                )
            })?;
            let local_addr = socket.local_addr()?;
            let router_config = RouterConfig {
                announced_addr: SocketAddr::new(announce_ip, local_addr.port()),
                max_participants_per_room: config.max_participants_per_room,
                room_budget: room_budget.clone(),
                stage_tap: config.stage_tap.clone(),
            };
            // One DTLS certificate per worker: generating one per peer costs a key pair on
            // every join. Browsers pin the fingerprint per connection, not per server.
            let dtls_cert = provider
                .dtls_provider
                .generate_certificate()
                .ok_or_else(|| {
                    io::Error::other("the crypto provider could not generate a DTLS certificate")
                })?;
            let worker = worker::spawn(index, socket, router_config, dtls_cert)?;
            workers.push(WorkerHandle {
                index,
                commands: worker.commands,
                local_addr: worker.local_addr,
                announced_addr: worker.announced_addr,
                metrics: worker.metrics,
            });
            threads.push(worker.thread);
        }
        Ok(Sfu {
            workers,
            threads: std::sync::Mutex::new(threads),
            stage_tap: config.stage_tap.clone(),
        })
    }

    /// The worker that owns `room`. Stable for a given name and worker count.
    pub fn worker_for_room(&self, room: &str) -> &WorkerHandle {
        // FNV-1a: stable across runs and platforms, unlike the std hasher.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in room.as_bytes() {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        &self.workers[(hash % self.workers.len() as u64) as usize]
    }

    pub fn workers(&self) -> &[WorkerHandle] {
        &self.workers
    }

    /// Prometheus text for all workers.
    pub fn render_metrics(&self) -> String {
        let mut text = metrics::render_prometheus(self.workers.iter().map(|w| &*w.metrics));
        if let Some(tap) = &self.stage_tap {
            text.push_str(&format!(
                "# HELP roomcast_stage_packets_dropped_total Stage RTP packets not copied to the \
                 HLS packager because it was behind (it resumes at the next keyframe).\n\
                 # TYPE roomcast_stage_packets_dropped_total counter\n\
                 roomcast_stage_packets_dropped_total {}\n",
                tap.dropped()
            ));
        }
        text
    }

    /// Current participant count over all workers.
    pub fn participants(&self) -> u64 {
        self.workers
            .iter()
            .map(|w| {
                w.metrics
                    .participants
                    .load(std::sync::atomic::Ordering::Relaxed)
            })
            .sum()
    }

    /// Remove every participant (they get [`SessionEvent::Removed`]) and stop the workers.
    pub async fn shutdown(&self) {
        for worker in &self.workers {
            let _ = worker.commands.send(Command::Shutdown).await;
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for thread in threads {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}
