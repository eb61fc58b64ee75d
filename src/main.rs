//! `roomcast`: the server binary. Parses the command line and configuration, starts the SFU
//! workers and the HTTP/WebSocket edge, and shuts both down on SIGINT/SIGTERM.

#![forbid(unsafe_code)]

mod config;
mod load;
mod tls;
mod token;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use roomcast_sfu::Sfu;
use roomcast_signaling::AppState;
use roomcast_signaling::rtmp::RtmpConfig;
use tracing::{error, info, warn};

use crate::config::{ServeArgs, ServeConfig};

#[derive(Parser)]
#[command(
    name = "roomcast",
    version,
    about = "Real-time video server: WebRTC rooms through an SFU"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run the server. With no flags and no config file it runs in dev mode on loopback.
    Serve(Box<ServeArgs>),
    /// Load a running server with str0m participants and measure it (rooms, broadcast, churn).
    Load(load::LoadArgs),
    /// Access tokens: `roomcast token create --room R --identity I` mints one.
    Token(token::TokenArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Commands::Token(args) => token::run(args),
        Commands::Load(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("the tokio runtime builds unless the OS is out of resources");
            match runtime.block_on(load::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    error!("{message}");
                    ExitCode::FAILURE
                }
            }
        }
        Commands::Serve(args) => {
            let config = match ServeConfig::resolve(*args) {
                Ok(config) => config,
                Err(message) => {
                    error!("{message}");
                    return ExitCode::from(2);
                }
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("roomcast-http")
                .build()
                .expect("the tokio runtime builds unless the OS is out of resources");
            match runtime.block_on(serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    error!("{message}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,str0m=warn,dimpl=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

async fn serve(mut config: ServeConfig) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(config.http)
        .await
        .map_err(|e| format!("cannot listen for HTTP on {}: {e}", config.http))?;
    let http_addr = listener.local_addr().map_err(|e| e.to_string())?;

    let (stage_tap, stage_events) = roomcast_sfu::stage::StageTap::channel(8192);
    config.sfu.stage_tap = Some(stage_tap);
    let sfu = Arc::new(Sfu::start(&config.sfu).map_err(|e| e.to_string())?);
    for worker in sfu.workers() {
        info!(
            worker = worker.index(),
            "SFU media on udp {} (announced to clients as {})",
            worker.local_addr(),
            worker.announced_addr()
        );
    }
    if config.credentials.is_none() {
        warn!(
            "DEV MODE: rooms are open, no token is needed; anyone who can reach {http_addr} can join any room. \
             Fine on a laptop; do not expose it."
        );
    }
    let rtmp_listener = tokio::net::TcpListener::bind(config.rtmp)
        .await
        .map_err(|e| {
            format!(
                "cannot listen for RTMP on {}: {e} (change it with --rtmp)",
                config.rtmp
            )
        })?;
    let rtmp_addr = rtmp_listener.local_addr().map_err(|e| e.to_string())?;
    if let Some(turn) = &config.turn {
        info!(
            "TURN: clients get credentials valid {} s for {}",
            turn.ttl().as_secs(),
            turn.urls().join(", ")
        );
    }
    let mut state = AppState::new(
        sfu.clone(),
        config.credentials,
        config.turn,
        RtmpConfig {
            refuse_bframes: config.refuse_bframes,
        },
    );
    state.limits = config.limits;
    state.anonymous_viewers = config.anonymous_viewers;
    state.hls = Arc::new(roomcast_signaling::hls::Hls::new(config.hls).map_err(|e| e.to_string())?);
    if let Some(dir) = &state.hls.settings.replay_dir {
        info!(
            "replays: kept {} h in {}",
            state.hls.settings.replay_retention.as_secs() / 3600,
            dir.display()
        );
    }
    state.chat = Arc::new(open_chat(&config.chat)?);
    let state = Arc::new(state);
    tokio::spawn(roomcast_signaling::hls::run_stage_dispatcher(
        state.clone(),
        stage_events,
    ));
    tokio::spawn(roomcast_signaling::hls::run_janitor(state.hls.clone()));
    tokio::spawn(roomcast_signaling::rtmp::serve(
        rtmp_listener,
        state.clone(),
    ));
    info!("RTMP listening on rtmp://{rtmp_addr}");
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    info!(
        "OBS: Server rtmp://{rtmp_addr}/live, Stream Key = {}; viewers open {scheme}://{http_addr}/watch/<room>",
        if state.dev_mode {
            "the room name"
        } else {
            "a token from `roomcast token create --grant ingest`"
        }
    );

    let shutdown_sfu = sfu.clone();
    let shutdown = async move {
        wait_for_signal().await;
        info!("shutting down: removing participants and stopping workers");
        shutdown_sfu.shutdown().await;
    };
    // Handlers see `ConnectInfo<SocketAddr>` in both modes.
    let app = roomcast_signaling::app(state)
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    let served = match config.tls {
        None => {
            info!("HTTP listening on http://{http_addr}");
            info!("open http://{http_addr}/?room=demo&name=Ada in a browser to join room \"demo\"");
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(tls) => {
            tls.certificate.log();
            let listener = tls::TlsListener::start(listener, tls.server_config)
                .map_err(|e| format!("cannot listen for HTTPS on {http_addr}: {e}"))?;
            info!("HTTPS listening on https://{http_addr}");
            info!(
                "open https://{http_addr}/?room=demo&name=Ada in a browser to join room \"demo\""
            );
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    };
    served.map_err(|e| format!("HTTP server failed: {e}"))?;
    info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing a SIGTERM handler only fails outside a tokio runtime");
        tokio::select! {
            _ = ctrl_c => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// The chat service from `--chat-*`: its SQLite database and word filter.
fn open_chat(settings: &config::ChatSettings) -> Result<roomcast_signaling::chat::ChatHub, String> {
    let store = roomcast_chat::ChatStore::open(&settings.db).map_err(|e| {
        format!(
            "cannot open the chat database {}: {e} (change it with --chat-db)",
            settings.db.display()
        )
    })?;
    let filter = match &settings.word_list {
        Some(path) => roomcast_chat::WordFilter::load(path)
            .map_err(|e| format!("{e} (check --chat-word-list)"))?,
        None => roomcast_chat::WordFilter::default(),
    };
    info!(
        "chat: questions and notices in {}, {} filtered words, {} messages per sender per {} s",
        settings.db.display(),
        filter.len(),
        settings.rate,
        config::CHAT_RATE_WINDOW.as_secs()
    );
    let config = roomcast_chat::ChatConfig {
        history_len: settings.history,
        rate: roomcast_chat::RatePolicy {
            burst: settings.rate,
            per: config::CHAT_RATE_WINDOW,
        },
        filter,
    };
    Ok(roomcast_signaling::chat::ChatHub::new(
        roomcast_chat::ChatService::new(config, store),
    ))
}
