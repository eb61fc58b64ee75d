//! The load tool behind `roomcast load`: many [`Participant`]s against one server, measured.
//!
//! Scenarios:
//! - `room`: R rooms, each with P publishers (who also receive each other, as in a meeting)
//!   and S pure subscribers;
//! - `broadcast`: one publisher and N subscribers in one room;
//! - `churn`: R rooms of K slots; each slot joins, stays a random while, leaves, and joins
//!   again until the run ends.
//!
//! Numbers come from two places: the participants (join time, frames received against frames
//! sent = loss, end-to-end delay from the send time in each frame) and the server's
//! `/metrics` (forwarded packets and bytes, the server process's CPU seconds and RSS), so
//! the server's own cost is reported, not the load generator's or the machine's.
//!
//! Bounded: at most [`MAX_PARTICIPANTS`] participants and [`MAX_DURATION`] per run; the tool
//! always stops by itself and leaves the rooms it joined.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use roomcast_sfu::ParticipantId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use roomcast_signaling::process::ProcessStats;

use crate::{ClientError, Participant, ParticipantOptions, PublishOptions};

pub const MAX_PARTICIPANTS: usize = 5000;
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Longest wait for everyone to connect before measuring anyway.
const CONNECT_DEADLINE: Duration = Duration::from_secs(60);
/// Media flows this long before the measurement window opens.
const WARMUP: Duration = Duration::from_secs(2);
/// Wait after the window closes for frames still in flight.
const IN_FLIGHT_GRACE: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub enum Scenario {
    Room {
        rooms: usize,
        publishers: usize,
        subscribers: usize,
    },
    Broadcast {
        subscribers: usize,
    },
    Churn {
        rooms: usize,
        size: usize,
        min_stay: Duration,
        max_stay: Duration,
    },
}

#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// `http://host:port` of the server.
    pub server: String,
    pub scenario: Scenario,
    /// Measurement window (room, broadcast) or total run time (churn).
    pub duration: Duration,
    pub video_bitrate_bps: u32,
    pub fps: u32,
    /// Participants started per second while ramping up.
    pub join_rate: f64,
    pub bind_ip: IpAddr,
    /// Print a progress line every second (to stderr).
    pub progress: bool,
    /// Publishers send three simulcast layers (see [`crate::SIMULCAST_LAYERS`]).
    pub simulcast: bool,
    /// Subscribers report every video tile this wide (`track_settings`), as a meeting grid would.
    pub tile_width: Option<u32>,
}

/// The server's own counters, from `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct ServerSample {
    pub at: Option<Instant>,
    pub cpu_seconds: f64,
    pub resident_bytes: f64,
    pub open_fds: f64,
    pub threads: f64,
    pub alive_tasks: f64,
    pub packets_forwarded: f64,
    pub bytes_forwarded: f64,
    pub participants: f64,
    pub rooms: f64,
    pub consumers: f64,
    /// Broadcasts being packaged for HLS (they end a grace period after their room empties).
    pub hls_broadcasts: f64,
    pub layer_switches: f64,
    pub paused_layers: f64,
    pub bwe_subscribers: f64,
    pub bwe_estimate_bps_sum: f64,
    /// `roomcast_bwe_subscribers_by_estimate`: (upper bound in bit/s, subscribers at most that),
    /// cumulative, ending with the infinite bound.
    pub bwe_by_estimate: Vec<(f64, f64)>,
}

impl ServerSample {
    /// GET `/metrics` and read the samples this tool uses.
    pub async fn fetch(server: &str) -> Result<ServerSample, ClientError> {
        let body = http_get(server, "/metrics").await?;
        Ok(Self::parse(&body))
    }

    /// The samples this tool uses from a Prometheus text body (NaN where one is missing).
    fn parse(body: &str) -> ServerSample {
        let value = |name: &str| -> f64 {
            body.lines()
                .find_map(|line| {
                    let (key, value) = line.split_once(' ')?;
                    (key == name).then(|| value.trim().parse().ok())?
                })
                .unwrap_or(f64::NAN)
        };
        ServerSample {
            at: Some(Instant::now()),
            cpu_seconds: value("process_cpu_seconds_total"),
            resident_bytes: value("process_resident_memory_bytes"),
            open_fds: value("process_open_fds"),
            threads: value("process_threads"),
            alive_tasks: value("roomcast_tokio_alive_tasks"),
            packets_forwarded: value("roomcast_rtp_packets_forwarded_total"),
            bytes_forwarded: value("roomcast_rtp_bytes_forwarded_total"),
            participants: value("roomcast_participants"),
            rooms: value("roomcast_rooms"),
            consumers: value("roomcast_consumers"),
            hls_broadcasts: value("roomcast_hls_live_broadcasts"),
            layer_switches: value("roomcast_simulcast_layer_switches_total"),
            paused_layers: value("roomcast_simulcast_paused_layers"),
            bwe_subscribers: value("roomcast_bwe_subscribers"),
            bwe_estimate_bps_sum: value("roomcast_bwe_estimate_bps_sum"),
            bwe_by_estimate: body
                .lines()
                .filter_map(|line| {
                    let rest = line.strip_prefix("roomcast_bwe_subscribers_by_estimate{le=\"")?;
                    let (bound, count) = rest.split_once("\"} ")?;
                    Some((bound.parse().ok()?, count.trim().parse().ok()?))
                })
                .collect(),
        }
    }
}

/// A minimal HTTP/1.0 GET (the tool needs nothing more, and no TLS: point it at the server's
/// own port, not at a proxy).
async fn http_get(server: &str, path: &str) -> Result<String, ClientError> {
    let host = server
        .strip_prefix("http://")
        .ok_or_else(|| {
            ClientError::Connect(format!(
                "the load tool needs an http:// server URL, got {server}"
            ))
        })?
        .trim_end_matches('/');
    let mut stream =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(host))
            .await
            .map_err(|_| ClientError::Connect(format!("{host}: connection timed out")))?
            .map_err(|e| ClientError::Connect(format!("{host}: {e}")))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| ClientError::Connect(e.to_string()))?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
        .await
        .map_err(|_| ClientError::Connect(format!("{host}{path}: no answer within 5 s")))?
        .map_err(|e| ClientError::Connect(e.to_string()))?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status_ok = head.starts_with("HTTP/1.") && head.split_whitespace().nth(1) == Some("200");
    if !status_ok {
        return Err(ClientError::Connect(format!(
            "{host}{path} answered {:?}: is this a roomcast server?",
            head.lines().next().unwrap_or("")
        )));
    }
    Ok(body.to_string())
}

struct Member {
    participant: Participant,
    room: usize,
    publishes: bool,
    join_started: Instant,
}

/// Frames whose send time falls in a window, sent and received, per subscription; and the
/// delays of those received. Counting by the send time carried in each frame makes the count
/// exact: a frame still in flight when the window closes is counted once it arrives.
#[derive(Default)]
struct WindowCount {
    expected: u64,
    received: u64,
    delays_ms: Vec<f64>,
    streams: usize,
}

fn count_window(members: &[Member], from_us: u64, to_us: u64) -> WindowCount {
    let in_window = |t: u64| t >= from_us && t < to_us;
    let mut sent: HashMap<ParticipantId, u64> = HashMap::new();
    for member in members.iter().filter(|m| m.publishes) {
        let count = member.participant.with_stats(|s| {
            s.video_frames_sent_us
                .iter()
                .filter(|&&t| in_window(t))
                .count()
        });
        sent.insert(member.participant.id(), count as u64);
    }
    let room_of: HashMap<ParticipantId, usize> = members
        .iter()
        .map(|m| (m.participant.id(), m.room))
        .collect();
    let mut count = WindowCount::default();
    for member in members {
        let subscriber = member.participant.id();
        for (&publisher, &frames) in &sent {
            if publisher == subscriber || room_of[&publisher] != member.room {
                continue;
            }
            count.streams += 1;
            count.expected += frames;
            member.participant.with_stats(|s| {
                if let Some(remote) = s.remote.get(&publisher) {
                    // Across a simulcast switch the old layer's frame and the new layer's
                    // keyframe of the same capture can both arrive: one picture, counted once.
                    let mut seen = std::collections::HashSet::new();
                    for frame in remote.frames.iter().filter(|f| in_window(f.sent_us)) {
                        if !seen.insert(frame.sent_us) {
                            continue;
                        }
                        count.received += 1;
                        count.delays_ms.push(frame.delay_us as f64 / 1000.0);
                    }
                }
            });
        }
    }
    count
}

/// The measured results of a run, printed as a table and written as JSON.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub scenario: String,
    pub publishers_connected: usize,
    pub publishers_wanted: usize,
    pub subscribers_connected: usize,
    pub subscribers_wanted: usize,
    pub join_ms_p50: f64,
    pub join_ms_p95: f64,
    pub window_seconds: f64,
    pub forwarded_packets_per_second: f64,
    pub forwarded_bits_per_second: f64,
    pub video_frames_expected: u64,
    pub video_frames_received: u64,
    pub video_frame_loss_percent: f64,
    pub delay_ms_p50: f64,
    pub delay_ms_p99: f64,
    pub forwarded_video_streams: usize,
    pub server_cpu_seconds: f64,
    pub server_cpu_percent_of_one_core: f64,
    pub server_cpu_seconds_per_million_packets: f64,
    pub server_rss_bytes: f64,
    pub streams_per_core_estimate: f64,
    /// CPU used by this load generator during the window, in % of one core: near 100 % per
    /// core it uses, the generator (not the server) limits the run.
    pub generator_cpu_percent: f64,
    /// Pixels per second a receiving participant would decode (its layers' picture sizes
    /// times the frames it received), mean over the participants that receive video.
    pub decoded_megapixels_per_second_per_receiver: f64,
    /// Simulcast layer switches during the window, layers paused at its end, and the mean
    /// bandwidth estimate of the subscribers at its end.
    pub layer_switches: f64,
    pub paused_layers: f64,
    pub mean_estimate_bps: f64,
    /// Subscribers per estimate bucket at the window's end: (upper bound in bit/s, subscribers
    /// above the previous bound and at most this one); empty buckets are left out.
    pub subscribers_by_estimate: Vec<(f64, f64)>,
    /// Churn only.
    pub joins: u64,
    pub join_failures: u64,
    pub errors: Vec<String>,
}

impl Report {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "scenario": self.scenario,
            "publishers": {"connected": self.publishers_connected, "wanted": self.publishers_wanted},
            "subscribers": {"connected": self.subscribers_connected, "wanted": self.subscribers_wanted},
            "join_ms": {"p50": self.join_ms_p50, "p95": self.join_ms_p95},
            "window_seconds": self.window_seconds,
            "forwarded": {"packets_per_second": self.forwarded_packets_per_second, "bits_per_second": self.forwarded_bits_per_second},
            "video_frames": {"expected": self.video_frames_expected, "received": self.video_frames_received, "loss_percent": self.video_frame_loss_percent},
            "end_to_end_delay_ms": {"p50": self.delay_ms_p50, "p99": self.delay_ms_p99},
            "forwarded_video_streams": self.forwarded_video_streams,
            "server": {
                "cpu_seconds": self.server_cpu_seconds,
                "cpu_percent_of_one_core": self.server_cpu_percent_of_one_core,
                "cpu_seconds_per_million_forwarded_packets": self.server_cpu_seconds_per_million_packets,
                "rss_bytes": self.server_rss_bytes,
                "video_streams_per_core_estimate": self.streams_per_core_estimate,
            },
            "generator_cpu_percent_of_one_core": self.generator_cpu_percent,
            "decoded_megapixels_per_second_per_receiver": self.decoded_megapixels_per_second_per_receiver,
            "simulcast": {
                "layer_switches": self.layer_switches,
                "paused_layers": self.paused_layers,
                "mean_estimate_bps": self.mean_estimate_bps,
                "subscribers_by_estimate": self.subscribers_by_estimate.iter()
                    .map(|&(at_most_bps, subscribers)| serde_json::json!({"at_most_bps": at_most_bps, "subscribers": subscribers}))
                    .collect::<Vec<_>>(),
            },
            "churn": {"joins": self.joins, "join_failures": self.join_failures},
            "errors": self.errors,
        })
    }

    pub fn table(&self) -> String {
        let mut rows = vec![
            ("scenario", self.scenario.clone()),
            (
                "publishers connected",
                format!("{}/{}", self.publishers_connected, self.publishers_wanted),
            ),
            (
                "subscribers connected",
                format!("{}/{}", self.subscribers_connected, self.subscribers_wanted),
            ),
            (
                "join time p50 / p95",
                format!("{:.0} ms / {:.0} ms", self.join_ms_p50, self.join_ms_p95),
            ),
        ];
        let churn = self.joins > 0 || self.join_failures > 0;
        if churn {
            rows = vec![
                ("scenario", self.scenario.clone()),
                (
                    "join time p50 / p95",
                    format!("{:.0} ms / {:.0} ms", self.join_ms_p50, self.join_ms_p95),
                ),
                (
                    "churn joins / failures",
                    format!("{} / {}", self.joins, self.join_failures),
                ),
                ("run time", format!("{:.1} s", self.window_seconds)),
                (
                    "server CPU",
                    format!(
                        "{:.2} s ({:.1} % of one core)",
                        self.server_cpu_seconds, self.server_cpu_percent_of_one_core
                    ),
                ),
                (
                    "server RSS",
                    format!("{:.1} MiB", self.server_rss_bytes / 1048576.0),
                ),
            ];
        }
        if !churn {
            rows.extend([
                ("measured window", format!("{:.1} s", self.window_seconds)),
                (
                    "forwarded video streams",
                    self.forwarded_video_streams.to_string(),
                ),
                (
                    "forwarded packets/s",
                    format!("{:.0}", self.forwarded_packets_per_second),
                ),
                (
                    "forwarded payload",
                    format!("{:.2} Mbit/s", self.forwarded_bits_per_second / 1e6),
                ),
                (
                    "decode load per receiver",
                    format!(
                        "{:.1} Mpixel/s",
                        self.decoded_megapixels_per_second_per_receiver
                    ),
                ),
                (
                    "layer switches / paused layers",
                    format!("{:.0} / {:.0}", self.layer_switches, self.paused_layers),
                ),
                (
                    "mean bandwidth estimate",
                    format!("{:.2} Mbit/s", self.mean_estimate_bps / 1e6),
                ),
                (
                    "subscribers by estimate",
                    self.subscribers_by_estimate
                        .iter()
                        .map(|&(at_most, n)| {
                            let bound = if at_most.is_finite() {
                                format!("≤{} Mbit/s", at_most / 1e6)
                            } else {
                                "more".to_string() // above the last bound (64 Mbit/s)
                            };
                            format!("{bound}: {n}")
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
                (
                    "video frame loss",
                    format!(
                        "{:.3} % ({} of {})",
                        self.video_frame_loss_percent,
                        self.video_frames_expected
                            .saturating_sub(self.video_frames_received),
                        self.video_frames_expected
                    ),
                ),
                (
                    "end-to-end delay p50 / p99",
                    format!("{:.2} ms / {:.2} ms", self.delay_ms_p50, self.delay_ms_p99),
                ),
                (
                    "server CPU",
                    format!(
                        "{:.2} s ({:.1} % of one core)",
                        self.server_cpu_seconds, self.server_cpu_percent_of_one_core
                    ),
                ),
                (
                    "server CPU per 1M forwarded packets",
                    format!("{:.3} s", self.server_cpu_seconds_per_million_packets),
                ),
                (
                    "server RSS",
                    format!("{:.1} MiB", self.server_rss_bytes / 1048576.0),
                ),
                (
                    "video streams per core (estimate)",
                    format!("{:.0}", self.streams_per_core_estimate),
                ),
                (
                    "load generator CPU",
                    format!("{:.1} % of one core", self.generator_cpu_percent),
                ),
            ]);
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut text = String::new();
        for (key, value) in rows {
            text.push_str(&format!("{key:<width$}  {value}\n"));
        }
        for error in &self.errors {
            text.push_str(&format!("error: {error}\n"));
        }
        text
    }
}

fn options(config: &LoadConfig, room: String, name: String, publish: bool) -> ParticipantOptions {
    ParticipantOptions {
        server: config.server.clone(),
        room,
        name,
        publish: publish.then(|| PublishOptions {
            video_bitrate_bps: config.video_bitrate_bps,
            fps: config.fps,
            keyframe_interval: Some(Duration::from_secs(2)),
            simulcast: config.simulcast,
        }),
        bind_ip: config.bind_ip,
        token: None,
        tile_width: config.tile_width,
    }
}

fn run_id() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
        % 1_000_000
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Run a scenario and measure it.
pub async fn run(config: LoadConfig) -> Result<Report, ClientError> {
    if config.duration > MAX_DURATION {
        return Err(ClientError::Protocol(format!(
            "--duration is limited to {MAX_DURATION:?}"
        )));
    }
    // Fails fast with a clear message when the server is not there.
    ServerSample::fetch(&config.server).await?;
    match config.scenario.clone() {
        Scenario::Room {
            rooms,
            publishers,
            subscribers,
        } => {
            run_rooms(
                &config,
                format!("room: {rooms} × ({publishers} publishers + {subscribers} subscribers)"),
                rooms,
                publishers,
                subscribers,
            )
            .await
        }
        Scenario::Broadcast { subscribers } => {
            run_rooms(
                &config,
                format!("broadcast: 1 → {subscribers}"),
                1,
                1,
                subscribers,
            )
            .await
        }
        Scenario::Churn {
            rooms,
            size,
            min_stay,
            max_stay,
        } => run_churn(&config, rooms, size, min_stay, max_stay).await,
    }
}

async fn run_rooms(
    config: &LoadConfig,
    scenario: String,
    rooms: usize,
    publishers: usize,
    subscribers: usize,
) -> Result<Report, ClientError> {
    let total = rooms * (publishers + subscribers);
    if total == 0 || total > MAX_PARTICIPANTS {
        return Err(ClientError::Protocol(format!(
            "{total} participants: between 1 and {MAX_PARTICIPANTS} are allowed"
        )));
    }
    let run = run_id();
    let mut members = Vec::with_capacity(total);
    let mut report = Report {
        scenario,
        publishers_wanted: rooms * publishers,
        subscribers_wanted: rooms * subscribers,
        ..Default::default()
    };
    let pace = Duration::from_secs_f64(1.0 / config.join_rate.max(0.1));
    let mut next_join = Instant::now();
    // Publishers first, so subscribers' join times include receiving the room's tracks.
    for publish in [true, false] {
        let per_room = if publish { publishers } else { subscribers };
        for index in 0..per_room {
            for room in 0..rooms {
                tokio::time::sleep_until(next_join.into()).await;
                next_join += pace;
                let kind = if publish { "pub" } else { "sub" };
                let name = format!("load-{kind}-{room}-{index}");
                let join_started = Instant::now();
                match Participant::join(options(
                    config,
                    format!("load-{run}-{room}"),
                    name,
                    publish,
                ))
                .await
                {
                    Ok(participant) => members.push(Member {
                        participant,
                        room,
                        publishes: publish,
                        join_started,
                    }),
                    Err(error @ (ClientError::Connect(_) | ClientError::Refused { .. }))
                        if members.is_empty() =>
                    {
                        return Err(error);
                    }
                    Err(error) => report.errors.push(error.to_string()),
                }
                if config.progress && members.len() % 50 == 0 {
                    eprintln!("joining: {}/{total}", members.len());
                }
            }
        }
    }
    // Wait for everyone's media to connect.
    let deadline = Instant::now() + CONNECT_DEADLINE;
    loop {
        let connected = members
            .iter()
            .filter(|m| m.participant.with_stats(|s| s.connected_at.is_some()))
            .count();
        if connected == members.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut join_ms: Vec<f64> = members
        .iter()
        .filter_map(|m| {
            m.participant
                .with_stats(|s| s.connected_at)
                .map(|at| (at - m.join_started).as_secs_f64() * 1000.0)
        })
        .collect();
    join_ms.sort_by(f64::total_cmp);
    report.join_ms_p50 = percentile(&join_ms, 50.0);
    report.join_ms_p95 = percentile(&join_ms, 95.0);
    for member in &members {
        let connected = member.participant.with_stats(|s| s.connected_at.is_some());
        match (member.publishes, connected) {
            (true, true) => report.publishers_connected += 1,
            (false, true) => report.subscribers_connected += 1,
            _ => {}
        }
    }

    tokio::time::sleep(WARMUP).await;
    let server_before = ServerSample::fetch(&config.server).await?;
    let generator_before = ProcessStats::read();
    let pixels_before = decoded_pixels(&members);
    let window_start_us = crate::unix_micros();
    let window_end = Instant::now() + config.duration;
    while Instant::now() < window_end {
        tokio::time::sleep(
            Duration::from_secs(1).min(window_end.saturating_duration_since(Instant::now())),
        )
        .await;
        if config.progress {
            let now = ServerSample::fetch(&config.server).await?;
            let seconds = (now.at.unwrap() - server_before.at.unwrap())
                .as_secs_f64()
                .max(1e-3);
            eprintln!(
                "t={:>4.0}s  participants {:>5}  forwarded {:>8.0} pkt/s {:>7.1} Mbit/s  server CPU {:>5.1} %  RSS {:>6.1} MiB",
                seconds,
                now.participants,
                (now.packets_forwarded - server_before.packets_forwarded) / seconds,
                (now.bytes_forwarded - server_before.bytes_forwarded) * 8.0 / seconds / 1e6,
                (now.cpu_seconds - server_before.cpu_seconds) / seconds * 100.0,
                now.resident_bytes / 1048576.0,
            );
        }
    }
    let server_after = ServerSample::fetch(&config.server).await?;
    let generator_after = ProcessStats::read();
    let window_end_us = crate::unix_micros();
    let pixels_after = decoded_pixels(&members);
    let receivers = pixels_after.iter().filter(|&&p| p > 0).count().max(1);
    let pixels: u64 = pixels_after
        .iter()
        .zip(&pixels_before)
        .map(|(after, before)| after - before)
        .sum();
    report.decoded_megapixels_per_second_per_receiver =
        pixels as f64 / 1e6 / config.duration.as_secs_f64().max(1e-3) / receivers as f64;
    if let (Some(before), Some(after)) = (generator_before, generator_after) {
        report.generator_cpu_percent = (after.cpu_seconds - before.cpu_seconds)
            / config.duration.as_secs_f64().max(1e-3)
            * 100.0;
    }
    // Let frames sent just before the window closed arrive.
    tokio::time::sleep(IN_FLIGHT_GRACE).await;
    let count = count_window(&members, window_start_us, window_end_us);
    report.forwarded_video_streams = count.streams;
    report.video_frames_expected = count.expected;
    report.video_frames_received = count.received;
    let mut delays = count.delays_ms;
    delays.sort_by(f64::total_cmp);
    report.delay_ms_p50 = percentile(&delays, 50.0);
    report.delay_ms_p99 = percentile(&delays, 99.0);
    report.video_frame_loss_percent = if report.video_frames_expected == 0 {
        f64::NAN
    } else {
        (1.0 - report.video_frames_received as f64 / report.video_frames_expected as f64) * 100.0
    };
    fill_server_numbers(&mut report, &server_before, &server_after);

    for member in members {
        member.participant.leave().await;
    }
    Ok(report)
}

/// Each member's total decoded pixels so far (see [`crate::RemoteStats::video_pixels`]).
fn decoded_pixels(members: &[Member]) -> Vec<u64> {
    members
        .iter()
        .map(|m| {
            m.participant
                .with_stats(|s| s.remote.values().map(|r| r.video_pixels).sum())
        })
        .collect()
}

fn fill_server_numbers(report: &mut Report, before: &ServerSample, after: &ServerSample) {
    let seconds = (after.at.unwrap_or_else(Instant::now) - before.at.unwrap_or_else(Instant::now))
        .as_secs_f64()
        .max(1e-3);
    let packets = after.packets_forwarded - before.packets_forwarded;
    report.window_seconds = seconds;
    report.forwarded_packets_per_second = packets / seconds;
    report.forwarded_bits_per_second =
        (after.bytes_forwarded - before.bytes_forwarded) * 8.0 / seconds;
    report.server_cpu_seconds = after.cpu_seconds - before.cpu_seconds;
    report.server_cpu_percent_of_one_core = report.server_cpu_seconds / seconds * 100.0;
    report.server_cpu_seconds_per_million_packets = if packets > 0.0 {
        report.server_cpu_seconds / (packets / 1e6)
    } else {
        f64::NAN
    };
    report.server_rss_bytes = after.resident_bytes;
    report.layer_switches = after.layer_switches - before.layer_switches;
    report.paused_layers = after.paused_layers;
    report.mean_estimate_bps = after.bwe_estimate_bps_sum / after.bwe_subscribers.max(1.0);
    report.subscribers_by_estimate = per_bucket(&after.bwe_by_estimate);
    // Streams per core: the forwarded video streams (with their share of audio) that one
    // fully busy core would carry at the measured cost per stream.
    let core_fraction = report.server_cpu_seconds / seconds;
    report.streams_per_core_estimate = if core_fraction > 0.0 && report.forwarded_video_streams > 0
    {
        report.forwarded_video_streams as f64 / core_fraction
    } else {
        f64::NAN
    };
}

async fn run_churn(
    config: &LoadConfig,
    rooms: usize,
    size: usize,
    min_stay: Duration,
    max_stay: Duration,
) -> Result<Report, ClientError> {
    let slots = rooms * size;
    if slots == 0 || slots > MAX_PARTICIPANTS {
        return Err(ClientError::Protocol(format!(
            "{slots} churn slots: between 1 and {MAX_PARTICIPANTS} are allowed"
        )));
    }
    if min_stay > max_stay {
        return Err(ClientError::Protocol(
            "--min-stay must not exceed --max-stay".into(),
        ));
    }
    let run = run_id();
    let server_before = ServerSample::fetch(&config.server).await?;
    let end = Instant::now() + config.duration;
    let mut tasks = Vec::with_capacity(slots);
    for slot in 0..slots {
        let config = config.clone();
        let room = format!("churn-{run}-{}", slot % rooms);
        tasks.push(tokio::spawn(async move {
            let mut seed =
                (run as u32).wrapping_mul(2_654_435_761) ^ (slot as u32).wrapping_mul(40_503) | 1;
            let mut joins = 0u64;
            let mut failures = 0u64;
            let mut join_ms = Vec::new();
            let mut errors = Vec::new();
            while Instant::now() < end {
                // xorshift: spread the stays without a dependency.
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let spread = max_stay.saturating_sub(min_stay).as_millis() as u32;
                let stay = min_stay + Duration::from_millis(u64::from(seed % spread.max(1)));
                let started = Instant::now();
                match Participant::join(options(
                    &config,
                    room.clone(),
                    format!("churn-{slot}"),
                    true,
                ))
                .await
                {
                    Ok(participant) => {
                        joins += 1;
                        tokio::time::sleep(stay).await;
                        if let Some(at) = participant.with_stats(|s| s.connected_at) {
                            join_ms.push((at - started).as_secs_f64() * 1000.0);
                        }
                        participant.leave().await;
                    }
                    Err(error) => {
                        failures += 1;
                        if errors.len() < 5 {
                            errors.push(error.to_string());
                        }
                        tokio::time::sleep(stay).await;
                    }
                }
            }
            (joins, failures, join_ms, errors)
        }));
    }
    let mut report = Report {
        scenario: format!("churn: {rooms} rooms × {size} slots, stays {min_stay:?}–{max_stay:?}"),
        ..Default::default()
    };
    let mut join_ms = Vec::new();
    for task in tasks {
        let (joins, failures, times, errors) = task
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        report.joins += joins;
        report.join_failures += failures;
        join_ms.extend(times);
        report.errors.extend(errors);
    }
    join_ms.sort_by(f64::total_cmp);
    report.join_ms_p50 = percentile(&join_ms, 50.0);
    report.join_ms_p95 = percentile(&join_ms, 95.0);
    let server_after = ServerSample::fetch(&config.server).await?;
    fill_server_numbers(&mut report, &server_before, &server_after);
    Ok(report)
}

/// Cumulative (bound, count) buckets as the count in each, leaving out the empty ones.
fn per_bucket(cumulative: &[(f64, f64)]) -> Vec<(f64, f64)> {
    cumulative
        .iter()
        .scan(0.0, |below, &(at_most, count)| {
            let here = count - *below;
            *below = count;
            Some((at_most, here))
        })
        .filter(|&(_, n)| n > 0.0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_by_estimate_are_read_from_metrics_and_counted_per_bucket() {
        let body = "roomcast_bwe_subscribers 3\n\
            roomcast_bwe_subscribers_by_estimate{le=\"500000\"} 1\n\
            roomcast_bwe_subscribers_by_estimate{le=\"1000000\"} 1\n\
            roomcast_bwe_subscribers_by_estimate{le=\"2000000\"} 2\n\
            roomcast_bwe_subscribers_by_estimate{le=\"+Inf\"} 3\n";
        let sample = ServerSample::parse(body);
        assert_eq!(sample.bwe_subscribers, 3.0);
        assert_eq!(
            per_bucket(&sample.bwe_by_estimate),
            [(500_000.0, 1.0), (2_000_000.0, 1.0), (f64::INFINITY, 1.0)]
        );
    }

    #[test]
    fn percentiles_of_sorted_samples() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&samples, 50.0), 51.0);
        assert_eq!(percentile(&samples, 99.0), 99.0);
        assert_eq!(percentile(&samples, 100.0), 100.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_clear_error() {
        let error = ServerSample::fetch("http://127.0.0.1:9").await.unwrap_err();
        assert!(
            error.to_string().contains("cannot reach the server"),
            "{error}"
        );
        let error = ServerSample::fetch("ftp://example").await.unwrap_err();
        assert!(error.to_string().contains("http://"), "{error}");
    }
}

/// What a churn run left behind on the server.
#[derive(Debug, Clone)]
pub struct LeakReport {
    pub baseline: ServerSample,
    pub after: ServerSample,
    pub joins: u64,
    /// Empty when everything returned to its baseline within tolerance.
    pub problems: Vec<String>,
}

/// Allowed RSS growth between the post-warm-up baseline and the end. The allocator keeps
/// freed memory for reuse, so RSS settles after the warm-up rather than returning to the
/// value before it; a leak of even 20 KiB per participant over a few hundred joins exceeds this.
pub const RSS_TOLERANCE_BYTES: f64 = 8.0 * 1024.0 * 1024.0;
/// Open descriptors and threads may differ by the connections of the `/metrics` scrape itself.
pub const FD_TOLERANCE: f64 = 2.0;
/// Longest wait for the server to return to an empty state after the last leave.
const SETTLE_DEADLINE: Duration = Duration::from_secs(20);

impl LeakReport {
    pub fn table(&self) -> String {
        let rows = [
            (
                "joins during the measured churn",
                self.joins.to_string(),
                String::new(),
            ),
            (
                "RSS",
                mib(self.baseline.resident_bytes),
                mib(self.after.resident_bytes),
            ),
            (
                "open fds",
                self.baseline.open_fds.to_string(),
                self.after.open_fds.to_string(),
            ),
            (
                "threads",
                self.baseline.threads.to_string(),
                self.after.threads.to_string(),
            ),
            (
                "signaling tasks",
                self.baseline.alive_tasks.to_string(),
                self.after.alive_tasks.to_string(),
            ),
            (
                "participants / rooms / consumers",
                format!(
                    "{} / {} / {}",
                    self.baseline.participants, self.baseline.rooms, self.baseline.consumers
                ),
                format!(
                    "{} / {} / {}",
                    self.after.participants, self.after.rooms, self.after.consumers
                ),
            ),
        ];
        let mut text = format!("{:<34}  {:>14}  {:>14}\n", "", "baseline", "after churn");
        for (name, before, after) in rows {
            text.push_str(&format!("{name:<34}  {before:>14}  {after:>14}\n"));
        }
        if self.problems.is_empty() {
            text.push_str("no leak: everything returned to its baseline within tolerance\n");
        }
        for problem in &self.problems {
            text.push_str(&format!("LEAK: {problem}\n"));
        }
        text
    }
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / 1048576.0)
}

/// Wait until the server has no participants, rooms, consumers or live HLS broadcasts left.
async fn settle(server: &str) -> Result<ServerSample, ClientError> {
    let deadline = Instant::now() + SETTLE_DEADLINE;
    loop {
        let sample = ServerSample::fetch(server).await?;
        // A server without HLS has no such metric (NaN): nothing to wait for.
        let no_broadcasts = sample.hls_broadcasts.is_nan() || sample.hls_broadcasts == 0.0;
        let empty = sample.participants == 0.0
            && sample.rooms == 0.0
            && sample.consumers == 0.0
            && no_broadcasts;
        if empty || Instant::now() > deadline {
            return Ok(sample);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Churn for `warmup`, take the server's baseline, churn for `config.duration`, and compare.
/// The server should be otherwise idle.
pub async fn churn_leak_check(
    config: LoadConfig,
    warmup: Duration,
) -> Result<(Report, LeakReport), ClientError> {
    let mut warmup_config = config.clone();
    warmup_config.duration = warmup;
    run(warmup_config).await?;
    let baseline = settle(&config.server).await?;
    let report = run(config.clone()).await?;
    let after = settle(&config.server).await?;
    let mut problems = Vec::new();
    if after.participants != 0.0 || after.rooms != 0.0 || after.consumers != 0.0 {
        problems.push(format!(
            "{} participants, {} rooms, {} consumers still exist {SETTLE_DEADLINE:?} after the last leave",
            after.participants, after.rooms, after.consumers
        ));
    }
    if after.hls_broadcasts > 0.0 {
        problems.push(format!(
            "{} HLS broadcasts still live {SETTLE_DEADLINE:?} after the last leave",
            after.hls_broadcasts
        ));
    }
    if after.resident_bytes - baseline.resident_bytes > RSS_TOLERANCE_BYTES {
        problems.push(format!(
            "RSS grew by {} (tolerance {})",
            mib(after.resident_bytes - baseline.resident_bytes),
            mib(RSS_TOLERANCE_BYTES)
        ));
    }
    if after.open_fds - baseline.open_fds > FD_TOLERANCE {
        problems.push(format!(
            "open fds grew from {} to {}",
            baseline.open_fds, after.open_fds
        ));
    }
    if after.threads > baseline.threads {
        problems.push(format!(
            "threads grew from {} to {}",
            baseline.threads, after.threads
        ));
    }
    if after.alive_tasks > baseline.alive_tasks {
        problems.push(format!(
            "signaling tasks grew from {} to {}",
            baseline.alive_tasks, after.alive_tasks
        ));
    }
    let joins = report.joins;
    Ok((
        report,
        LeakReport {
            baseline,
            after,
            joins,
            problems,
        },
    ))
}
