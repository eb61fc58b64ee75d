//! `roomcast load`: the command line of the load tool (`roomcast_client::load`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use roomcast_client::load::{LoadConfig, Scenario};

#[derive(Args, Debug)]
pub struct LoadArgs {
    #[command(subcommand)]
    scenario: ScenarioArgs,

    /// The roomcast server's HTTP address (its own port, not a TLS proxy).
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:8080",
        env = "ROOMCAST_LOAD_SERVER"
    )]
    server: String,

    /// Measurement window in seconds (room, broadcast) or total run time (churn).
    #[arg(long, global = true, default_value_t = 20)]
    duration: u64,

    /// Video bitrate of each publisher, bits per second.
    #[arg(long, global = true, default_value_t = 1_000_000)]
    bitrate: u32,

    /// Video frames per second of each publisher.
    #[arg(long, global = true, default_value_t = 30)]
    fps: u32,

    /// Participants joined per second while ramping up.
    #[arg(long, global = true, default_value_t = 50.0)]
    join_rate: f64,

    /// Local address for the participants' media sockets.
    #[arg(long, global = true, default_value = "127.0.0.1")]
    bind_ip: IpAddr,

    /// Also write the results as JSON to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,

    /// No progress lines.
    #[arg(long, global = true)]
    quiet: bool,

    /// Publishers send three simulcast layers (320×180, 640×360, 1280×720 at 10 %, 33 % and
    /// 100 % of --bitrate) instead of one 1280×720 stream.
    #[arg(long, global = true)]
    simulcast: bool,

    /// Participants report every video they receive as shown in a tile this many pixels wide
    /// (what a meeting grid does), so the server sends no wider layer.
    #[arg(long, global = true)]
    tile_width: Option<u32>,
}

#[derive(Subcommand, Debug)]
enum ScenarioArgs {
    /// R rooms, each with P publishers (who receive each other) and S pure subscribers.
    Room {
        #[arg(long, default_value_t = 1)]
        rooms: usize,
        #[arg(long, default_value_t = 6)]
        publishers: usize,
        #[arg(long, default_value_t = 0)]
        subscribers: usize,
    },
    /// One publisher, N subscribers.
    Broadcast {
        #[arg(long, default_value_t = 100)]
        subscribers: usize,
    },
    /// R rooms of K slots that join, stay a random while, leave and join again.
    Churn {
        #[arg(long, default_value_t = 2)]
        rooms: usize,
        #[arg(long, default_value_t = 4)]
        size: usize,
        /// Shortest stay in a room, milliseconds.
        #[arg(long, default_value_t = 200)]
        min_stay_ms: u64,
        /// Longest stay in a room, milliseconds.
        #[arg(long, default_value_t = 1000)]
        max_stay_ms: u64,
        /// Check for leaks: churn for --warmup seconds, record the server's RSS, fds,
        /// threads, tasks and gauges, churn for --duration, and compare. Exits 1 on a leak.
        /// Use a server that nothing else is using.
        #[arg(long)]
        leak_check: bool,
        /// Warm-up churn before the leak baseline, seconds.
        #[arg(long, default_value_t = 10)]
        warmup: u64,
    },
}

pub async fn run(args: LoadArgs) -> Result<(), String> {
    let mut leak_check = None;
    let scenario = match args.scenario {
        ScenarioArgs::Room {
            rooms,
            publishers,
            subscribers,
        } => Scenario::Room {
            rooms,
            publishers,
            subscribers,
        },
        ScenarioArgs::Broadcast { subscribers } => Scenario::Broadcast { subscribers },
        ScenarioArgs::Churn {
            rooms,
            size,
            min_stay_ms,
            max_stay_ms,
            leak_check: check,
            warmup,
        } => {
            leak_check = check.then_some(Duration::from_secs(warmup));
            Scenario::Churn {
                rooms,
                size,
                min_stay: Duration::from_millis(min_stay_ms),
                max_stay: Duration::from_millis(max_stay_ms),
            }
        }
    };
    let config = LoadConfig {
        server: args.server,
        scenario,
        duration: Duration::from_secs(args.duration),
        video_bitrate_bps: args.bitrate,
        fps: args.fps,
        join_rate: args.join_rate,
        bind_ip: args.bind_ip,
        progress: !args.quiet,
        simulcast: args.simulcast,
        tile_width: args.tile_width,
    };
    let (report, leaks) = match leak_check {
        None => (
            roomcast_client::load::run(config)
                .await
                .map_err(|e| e.to_string())?,
            None,
        ),
        Some(warmup) => {
            let (report, leaks) = roomcast_client::load::churn_leak_check(config, warmup)
                .await
                .map_err(|e| e.to_string())?;
            (report, Some(leaks))
        }
    };
    print!("{}", report.table());
    if let Some(leaks) = &leaks {
        print!("\n{}", leaks.table());
    }
    if let Some(path) = args.json {
        let json = serde_json::to_string_pretty(&report.to_json()).expect("reports serialize");
        std::fs::write(&path, json).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("results written to {}", path.display());
    }
    if leaks.is_some_and(|l| !l.problems.is_empty()) {
        return Err("the churn run leaked (see LEAK lines above)".into());
    }
    Ok(())
}
