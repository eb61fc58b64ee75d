//! The I/O shell around a [`Router`]: one OS thread, one UDP socket, one event loop.
//!
//! Each worker runs a current-thread tokio runtime whose single task waits for whichever
//! comes first: datagrams on its socket, a command from an edge, or the router's next
//! deadline. There are no per-peer tasks and nothing here is shared with other threads
//! except the command channel and the worker's metrics. Rooms are placed on workers by a
//! stable hash of their name, so every participant of a room is on one worker and
//! forwarding never crosses threads.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::api::Command;
use crate::metrics::WorkerMetrics;
use crate::router::{Router, RouterConfig, Transmit};

/// Datagrams read per wake-up before timers get a turn; bounds how long a flood on the
/// socket can delay RTCP and ICE deadlines.
const MAX_DATAGRAMS_PER_WAKE: usize = 256;

/// Larger than any datagram a WebRTC peer sends (MTU ~1200–1500); bigger ones are truncated
/// and then rejected by SRTP authentication.
const RECEIVE_BUFFER_BYTES: usize = 2048;

/// Commands queued per worker before a sender waits: backpressure reaches the WebSocket
/// reader of whoever is flooding, not the worker.
pub(crate) const COMMAND_QUEUE: usize = 1024;

pub(crate) struct Worker {
    pub commands: mpsc::Sender<Command>,
    pub local_addr: SocketAddr,
    pub announced_addr: SocketAddr,
    pub metrics: Arc<WorkerMetrics>,
    pub thread: thread::JoinHandle<()>,
}

pub(crate) fn spawn(
    index: usize,
    socket: UdpSocket,
    config: RouterConfig,
    dtls_cert: str0m::config::DtlsCert,
) -> io::Result<Worker> {
    socket.set_nonblocking(true)?;
    let local_addr = socket.local_addr()?;
    let announced_addr = config.announced_addr;
    let metrics = Arc::new(WorkerMetrics::default());
    let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
    let router = Router::new(config, dtls_cert, metrics.clone());
    let thread = thread::Builder::new()
        .name(format!("sfu-worker-{index}"))
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime builds unless the OS is out of resources");
            let span = tracing::info_span!("worker", index);
            let _entered = span.enter();
            if let Err(error) = runtime.block_on(run(socket, router, receiver)) {
                tracing::error!(%error, "SFU worker stopped on a socket error; its rooms are gone");
            }
        })?;
    Ok(Worker {
        commands,
        local_addr,
        announced_addr,
        metrics,
        thread,
    })
}

struct SocketTransmit<'a> {
    socket: &'a tokio::net::UdpSocket,
    metrics: &'a WorkerMetrics,
}

impl Transmit for SocketTransmit<'_> {
    fn send(&mut self, destination: SocketAddr, datagram: &[u8]) {
        if let Err(error) = self.socket.try_send_to(datagram, destination) {
            // A full socket buffer drops the datagram, as the network would; RTP recovers
            // with NACK/RTX and keyframe requests.
            WorkerMetrics::add(&self.metrics.datagrams_dropped, 1);
            debug!(%destination, %error, "UDP send failed");
        }
    }
}

async fn run(
    socket: UdpSocket,
    mut router: Router,
    mut commands: mpsc::Receiver<Command>,
) -> io::Result<()> {
    let socket = tokio::net::UdpSocket::from_std(socket)?;
    info!(addr = %socket.local_addr()?, "SFU worker running");
    let metrics = router.metrics().clone();
    let mut buffer = vec![0u8; RECEIVE_BUFFER_BYTES];
    loop {
        let deadline = router.next_timeout(Instant::now());
        tokio::select! {
            biased;
            command = commands.recv() => {
                let mut out = SocketTransmit { socket: &socket, metrics: &metrics };
                match command {
                    Some(Command::Shutdown) | None => {
                        router.handle_command(Instant::now(), Command::Shutdown, &mut out);
                        info!("SFU worker stopped");
                        return Ok(());
                    }
                    Some(command) => router.handle_command(Instant::now(), command, &mut out),
                }
            }
            readable = socket.readable() => {
                readable?;
                let mut out = SocketTransmit { socket: &socket, metrics: &metrics };
                for _ in 0..MAX_DATAGRAMS_PER_WAKE {
                    match socket.try_recv_from(&mut buffer) {
                        Ok((len, source)) => {
                            router.handle_datagram(Instant::now(), source, &buffer[..len], &mut out);
                        }
                        Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                        Err(error) => {
                            // ICMP errors surface here on some systems; they concern one
                            // remote address, never the socket.
                            warn!(%error, "UDP receive error");
                            break;
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
        let mut out = SocketTransmit {
            socket: &socket,
            metrics: &metrics,
        };
        router.handle_timeout(Instant::now(), &mut out);
    }
}
