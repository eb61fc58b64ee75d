//! Server configuration: command line > environment (`ROOMCAST_*`) > config file > built-in
//! defaults. The defaults are the dev-mode configuration: loopback only, open rooms.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use roomcast_auth::turn::{self, TurnConfig};
use roomcast_sfu::SfuConfig;
use serde::Deserialize;

const DEFAULT_HTTP: &str = "127.0.0.1:8080";
const DEFAULT_RTC_PORT: u16 = 7882;
const DEFAULT_MAX_PARTICIPANTS: usize = 100;
const DEFAULT_RTMP_PORT: u16 = 1935;

#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// HTTP and WebSocket listen address (port 0 picks a free port; the chosen one is logged).
    /// [default: 127.0.0.1:8080]
    #[arg(long, env = "ROOMCAST_HTTP", value_name = "ADDR:PORT")]
    http: Option<SocketAddr>,

    /// First UDP port for WebRTC media; worker i uses PORT+i. 0 picks free ports (logged).
    /// [default: 7882]
    #[arg(long, env = "ROOMCAST_RTC_PORT", value_name = "PORT")]
    rtc_port: Option<u16>,

    /// Address announced to clients in ICE candidates (the server's public address). Without
    /// it the media socket's own address is announced (loopback in dev mode).
    #[arg(long, env = "ROOMCAST_PUBLIC_IP", value_name = "IP")]
    public_ip: Option<IpAddr>,

    /// Address the media sockets bind to. [default: 0.0.0.0 with --public-ip, else the
    /// --http address]
    #[arg(long, env = "ROOMCAST_RTC_BIND", value_name = "IP")]
    rtc_bind: Option<IpAddr>,

    /// SFU workers (event loops with their own UDP port). [default: number of CPUs]
    #[arg(long, env = "ROOMCAST_WORKERS", value_name = "N")]
    workers: Option<usize>,

    /// Participants allowed in one room. [default: 100]
    #[arg(long, env = "ROOMCAST_MAX_PARTICIPANTS", value_name = "N")]
    max_participants: Option<usize>,

    /// Rooms this server hosts at once; a join that would open one more is refused.
    /// [default: 1000]
    #[arg(long, env = "ROOMCAST_MAX_ROOMS", value_name = "N")]
    max_rooms: Option<usize>,

    /// Signaling messages per second per connection (bursts of twice that pass).
    /// [default: 50]
    #[arg(long, env = "ROOMCAST_MAX_MESSAGE_RATE", value_name = "N")]
    max_message_rate: Option<u32>,

    /// Largest signaling message in bytes, at most 1048576. [default: 65536]
    #[arg(long, env = "ROOMCAST_MAX_MESSAGE_BYTES", value_name = "BYTES")]
    max_message_bytes: Option<usize>,

    /// Concurrent WebSockets and WHIP/WHEP sessions from one IP address. [default: 50]
    #[arg(long, env = "ROOMCAST_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    max_connections_per_ip: Option<usize>,

    /// Outside dev mode, let clients without a token watch any room: join receive-only (no
    /// publishing, no admin) and play over WHEP. Without it every viewer needs a token.
    #[arg(long, env = "ROOMCAST_ANONYMOUS_VIEWERS")]
    anonymous_viewers: bool,

    /// Take client addresses from the X-Real-IP header (set by the nginx in front) for the
    /// per-IP limit. Only when every request comes through that proxy.
    #[arg(long, env = "ROOMCAST_TRUST_PROXY_HEADERS")]
    trust_proxy_headers: bool,

    /// RTMP ingest listen address (OBS: Server `rtmp://HOST/live`, Stream Key = the key).
    /// Port 0 picks a free port (logged). [default: the --http address's IP, port 1935]
    #[arg(long, env = "ROOMCAST_RTMP", value_name = "ADDR:PORT")]
    rtmp: Option<SocketAddr>,

    /// End RTMP broadcasts whose H.264 carries B-frames instead of passing them on with a
    /// warning (WebRTC players show B-frame streams with stutter).
    #[arg(long, env = "ROOMCAST_REFUSE_BFRAMES")]
    refuse_bframes: bool,

    /// API key: with --api-secret, turns dev mode off; every join, stream key and WHEP request
    /// then needs an access token (`roomcast token create`).
    #[arg(long, env = "ROOMCAST_API_KEY", value_name = "KEY")]
    api_key: Option<String>,

    /// API secret that signs access tokens (HS256). Keep it out of shell history: prefer the
    /// environment variable or the config file.
    #[arg(
        long,
        env = "ROOMCAST_API_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    api_secret: Option<String>,

    /// Secret shared with the TURN server (coturn: `use-auth-secret`,
    /// `static-auth-secret=SECRET`). With --turn-urls, every participant gets its own
    /// time-limited TURN credentials. Prefer the environment variable or the config file.
    #[arg(
        long,
        env = "ROOMCAST_TURN_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    turn_secret: Option<String>,

    /// TURN URLs given to clients, comma-separated, e.g.
    /// `turn:turn.example.com:3478?transport=udp,turns:turn.example.com:5349?transport=tcp`.
    #[arg(
        long,
        env = "ROOMCAST_TURN_URLS",
        value_name = "URL,…",
        value_delimiter = ','
    )]
    turn_urls: Vec<String>,

    /// Lifetime of the TURN credentials a participant gets (30m, 6h, 1d); a relayed call
    /// ends when they expire. [default: 12h]
    #[arg(long, env = "ROOMCAST_TURN_TTL", value_name = "DURATION", value_parser = crate::token::parse_ttl)]
    turn_ttl: Option<Duration>,

    /// Serve HTTPS and WSS on --http with this certificate chain (PEM, leaf first). Needs
    /// --tls-key.
    #[arg(long, env = "ROOMCAST_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,

    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, env = "ROOMCAST_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,

    /// Serve HTTPS and WSS on --http with a certificate generated at startup for these
    /// comma-separated DNS names and IPs (e.g. localhost,127.0.0.1). Browsers warn about it:
    /// for testing and private networks. Not with --tls-cert.
    #[arg(long, env = "ROOMCAST_TLS_SELF_SIGNED", value_name = "NAMES")]
    tls_self_signed: Option<String>,

    /// Directory where finished broadcasts are kept as HLS replays (created if missing).
    /// [default: roomcast-data/replays, relative to the working directory]
    #[arg(long, env = "ROOMCAST_REPLAY_DIR", value_name = "DIR")]
    replay_dir: Option<PathBuf>,

    /// Hours a replay is kept after its broadcast ends; 0 keeps no replays. [default: 72]
    #[arg(long, env = "ROOMCAST_REPLAY_RETENTION_HOURS", value_name = "HOURS")]
    replay_retention_hours: Option<u64>,

    /// LL-HLS part duration in milliseconds (PART-TARGET), 100 to 1000. [default: 200]
    #[arg(long, env = "ROOMCAST_HLS_PART_MS", value_name = "MS")]
    hls_part_ms: Option<u64>,

    /// HLS segments close at the first keyframe after this many milliseconds, 500 to 10000.
    /// [default: 1000]
    #[arg(long, env = "ROOMCAST_HLS_SEGMENT_MS", value_name = "MS")]
    hls_segment_ms: Option<u64>,

    /// Segments listed in the live HLS playlist (and kept in memory), 3 to 60. [default: 6]
    #[arg(long, env = "ROOMCAST_HLS_WINDOW", value_name = "N")]
    hls_window: Option<usize>,

    /// Milliseconds a broadcast waits for its source to return (an encoder reconnecting)
    /// before it ends and its replay is written. [default: 5000]
    #[arg(long, env = "ROOMCAST_BROADCAST_END_GRACE_MS", value_name = "MS")]
    broadcast_end_grace_ms: Option<u64>,

    /// SQLite database for chat questions and notices (created if missing; general chat is
    /// kept in memory only). [default: roomcast-data/chat.sqlite3, relative to the working
    /// directory]
    #[arg(long, env = "ROOMCAST_CHAT_DB", value_name = "FILE")]
    chat_db: Option<PathBuf>,

    /// Word list for the chat filter: one word or phrase a line, `#` starts a comment. Listed
    /// words are masked with `*` in every message. [default: no filter]
    #[arg(long, env = "ROOMCAST_CHAT_WORD_LIST", value_name = "FILE")]
    chat_word_list: Option<PathBuf>,

    /// Chat messages one sender may post per 10 seconds (a burst; it refills evenly).
    /// [default: 5]
    #[arg(long, env = "ROOMCAST_CHAT_RATE", value_name = "N")]
    chat_rate: Option<u32>,

    /// Recent general chat messages a late joiner receives (questions and notices of the
    /// last day always). [default: 50]
    #[arg(long, env = "ROOMCAST_CHAT_HISTORY", value_name = "N")]
    chat_history: Option<usize>,

    /// TOML file with any of the settings above (keys: http, rtc_port, public_ip, rtc_bind,
    /// workers, max_participants, max_rooms, max_message_rate, max_message_bytes,
    /// max_connections_per_ip, trust_proxy_headers, anonymous_viewers, rtmp, refuse_bframes, api_key, api_secret, turn_secret,
    /// turn_urls (an array), turn_ttl, tls_cert, tls_key, tls_self_signed, replay_dir,
    /// replay_retention_hours, hls_part_ms, hls_segment_ms, hls_window,
    /// broadcast_end_grace_ms, chat_db, chat_word_list, chat_rate, chat_history). Flags and
    /// environment variables override it.
    #[arg(long, env = "ROOMCAST_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    http: Option<SocketAddr>,
    rtc_port: Option<u16>,
    public_ip: Option<IpAddr>,
    rtc_bind: Option<IpAddr>,
    workers: Option<usize>,
    max_participants: Option<usize>,
    max_rooms: Option<usize>,
    max_message_rate: Option<u32>,
    max_message_bytes: Option<usize>,
    max_connections_per_ip: Option<usize>,
    trust_proxy_headers: Option<bool>,
    anonymous_viewers: Option<bool>,
    rtmp: Option<SocketAddr>,
    refuse_bframes: Option<bool>,
    api_key: Option<String>,
    api_secret: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_self_signed: Option<String>,
    turn_secret: Option<String>,
    turn_urls: Option<Vec<String>>,
    turn_ttl: Option<String>,
    replay_dir: Option<PathBuf>,
    replay_retention_hours: Option<u64>,
    hls_part_ms: Option<u64>,
    hls_segment_ms: Option<u64>,
    hls_window: Option<usize>,
    broadcast_end_grace_ms: Option<u64>,
    chat_db: Option<PathBuf>,
    chat_word_list: Option<PathBuf>,
    chat_rate: Option<u32>,
    chat_history: Option<usize>,
}

#[derive(Debug)]
pub struct ServeConfig {
    pub http: SocketAddr,
    pub sfu: SfuConfig,
    pub rtmp: SocketAddr,
    pub refuse_bframes: bool,
    /// `None` is dev mode.
    pub credentials: Option<roomcast_auth::ApiCredentials>,
    /// `None`: plain HTTP. Loaded (files read, or the certificate generated) by `resolve`.
    pub tls: Option<crate::tls::Tls>,
    /// `None`: no TURN server, clients get no ICE servers.
    pub turn: Option<TurnConfig>,
    pub limits: roomcast_signaling::limits::Limits,
    pub anonymous_viewers: bool,
    pub hls: roomcast_signaling::hls::HlsSettings,
    pub chat: ChatSettings,
}

/// Where chat questions are stored and how chat is moderated (`--chat-*`).
#[derive(Debug)]
pub struct ChatSettings {
    pub db: PathBuf,
    pub word_list: Option<PathBuf>,
    /// Messages per sender per [`CHAT_RATE_WINDOW`].
    pub rate: u32,
    pub history: usize,
}

/// The window `--chat-rate` counts messages in.
pub const CHAT_RATE_WINDOW: Duration = Duration::from_secs(10);

fn resolve_chat(args: &ServeArgs, file: &FileConfig) -> Result<ChatSettings, String> {
    let rate = args.chat_rate.or(file.chat_rate).unwrap_or(5);
    if !(1..=1000).contains(&rate) {
        return Err(format!(
            "--chat-rate must be between 1 and 1000 (got {rate})"
        ));
    }
    let history = args.chat_history.or(file.chat_history).unwrap_or(50);
    if history > 1000 {
        return Err(format!(
            "--chat-history must be at most 1000 (got {history})"
        ));
    }
    Ok(ChatSettings {
        db: args
            .chat_db
            .clone()
            .or_else(|| file.chat_db.clone())
            .unwrap_or_else(|| PathBuf::from("roomcast-data/chat.sqlite3")),
        word_list: args
            .chat_word_list
            .clone()
            .or_else(|| file.chat_word_list.clone()),
        rate,
        history,
    })
}

/// Shorter secrets are refused: HS256 wants at least 256 bits of key material.
const MIN_SECRET_BYTES: usize = roomcast_auth::MIN_SECRET_LEN;

impl ServeConfig {
    pub fn resolve(args: ServeArgs) -> Result<Self, String> {
        let file = match &args.config {
            None => FileConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
                toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))?
            }
        };
        let hls = resolve_hls(&args, &file)?;
        let chat = resolve_chat(&args, &file)?;
        let http = args
            .http
            .or(file.http)
            .unwrap_or_else(|| DEFAULT_HTTP.parse().expect("the default address parses"));
        let public_ip = args.public_ip.or(file.public_ip);
        let bind_ip = args
            .rtc_bind
            .or(file.rtc_bind)
            .unwrap_or(if public_ip.is_some() {
                IpAddr::from([0, 0, 0, 0])
            } else {
                http.ip()
            });
        let workers = args
            .workers
            .or(file.workers)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
        if workers == 0 || workers > 256 {
            return Err(format!(
                "--workers must be between 1 and 256 (got {workers})"
            ));
        }
        let max_participants = args
            .max_participants
            .or(file.max_participants)
            .unwrap_or(DEFAULT_MAX_PARTICIPANTS);
        if max_participants == 0 {
            return Err("--max-participants must be at least 1".into());
        }
        let max_rooms = args.max_rooms.or(file.max_rooms).unwrap_or(1000);
        let defaults = roomcast_signaling::limits::Limits::default();
        let limits = roomcast_signaling::limits::Limits {
            max_message_bytes: args
                .max_message_bytes
                .or(file.max_message_bytes)
                .unwrap_or(defaults.max_message_bytes),
            max_message_rate: args
                .max_message_rate
                .or(file.max_message_rate)
                .unwrap_or(defaults.max_message_rate),
            max_connections_per_ip: args
                .max_connections_per_ip
                .or(file.max_connections_per_ip)
                .unwrap_or(defaults.max_connections_per_ip),
            trust_proxy_headers: args.trust_proxy_headers
                || file.trust_proxy_headers.unwrap_or(false),
        };
        if max_rooms == 0 || limits.max_message_rate == 0 || limits.max_connections_per_ip == 0 {
            return Err(
                "--max-rooms, --max-message-rate and --max-connections-per-ip must be at least 1"
                    .into(),
            );
        }
        if !(1024..=1024 * 1024).contains(&limits.max_message_bytes) {
            return Err(format!(
                "--max-message-bytes must be between 1024 and 1048576 (got {})",
                limits.max_message_bytes
            ));
        }
        let credentials = match (
            args.api_key.or(file.api_key),
            args.api_secret.or(file.api_secret),
        ) {
            (None, None) => None,
            (Some(key), Some(secret)) => {
                if secret.len() < MIN_SECRET_BYTES {
                    return Err(format!(
                        "--api-secret must be at least {MIN_SECRET_BYTES} bytes (got {}); \
                         generate one with `openssl rand -base64 32`",
                        secret.len()
                    ));
                }
                Some(roomcast_auth::ApiCredentials::new(key, secret))
            }
            _ => {
                return Err(
                    "set both --api-key and --api-secret (or neither, for dev mode)".into(),
                );
            }
        };
        let turn = resolve_turn(
            args.turn_secret.or(file.turn_secret),
            if args.turn_urls.is_empty() {
                file.turn_urls.unwrap_or_default()
            } else {
                args.turn_urls
            },
            match (args.turn_ttl, file.turn_ttl) {
                (Some(ttl), _) => Some(ttl),
                (None, Some(text)) => Some(
                    crate::token::parse_ttl(&text)
                        .map_err(|e| format!("config file: turn_ttl {e}"))?,
                ),
                (None, None) => None,
            },
        )?;
        let tls = match tls_source(
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
            args.tls_self_signed.or(file.tls_self_signed),
        )? {
            Some(source) => Some(crate::tls::Tls::load(&source)?),
            None => None,
        };
        let rtmp = args
            .rtmp
            .or(file.rtmp)
            .unwrap_or(SocketAddr::new(http.ip(), DEFAULT_RTMP_PORT));
        Ok(ServeConfig {
            http,
            tls,
            rtmp,
            refuse_bframes: args.refuse_bframes || file.refuse_bframes.unwrap_or(false),
            credentials,
            turn,
            limits,
            anonymous_viewers: args.anonymous_viewers || file.anonymous_viewers.unwrap_or(false),
            hls,
            chat,
            sfu: SfuConfig {
                workers,
                bind_ip,
                rtc_port: args.rtc_port.or(file.rtc_port).unwrap_or(DEFAULT_RTC_PORT),
                announce_ip: public_ip,
                max_participants_per_room: max_participants,
                max_rooms,
                stage_tap: None,
            },
        })
    }
}

/// HLS and replay settings, each checked against its range.
fn resolve_hls(
    args: &ServeArgs,
    file: &FileConfig,
) -> Result<roomcast_signaling::hls::HlsSettings, String> {
    let defaults = roomcast_signaling::hls::HlsSettings::default();
    let ms = |flag: Option<u64>,
              file: Option<u64>,
              default: Duration,
              name: &str,
              range: std::ops::RangeInclusive<u64>| {
        let value = flag.or(file).unwrap_or(default.as_millis() as u64);
        if range.contains(&value) {
            Ok(Duration::from_millis(value))
        } else {
            Err(format!(
                "--{name} must be between {} and {} (got {value})",
                range.start(),
                range.end()
            ))
        }
    };
    let part_target = ms(
        args.hls_part_ms,
        file.hls_part_ms,
        defaults.part_target,
        "hls-part-ms",
        100..=1000,
    )?;
    let segment_target = ms(
        args.hls_segment_ms,
        file.hls_segment_ms,
        defaults.segment_target,
        "hls-segment-ms",
        500..=10_000,
    )?;
    if segment_target < part_target * 2 {
        return Err("--hls-segment-ms must be at least twice --hls-part-ms".into());
    }
    let end_grace = ms(
        args.broadcast_end_grace_ms,
        file.broadcast_end_grace_ms,
        defaults.end_grace,
        "broadcast-end-grace-ms",
        0..=600_000,
    )?;
    let window = args
        .hls_window
        .or(file.hls_window)
        .unwrap_or(defaults.window);
    if !(3..=60).contains(&window) {
        return Err(format!(
            "--hls-window must be between 3 and 60 (got {window})"
        ));
    }
    let retention_hours = args
        .replay_retention_hours
        .or(file.replay_retention_hours)
        .unwrap_or(defaults.replay_retention.as_secs() / 3600);
    let replay_dir = args
        .replay_dir
        .clone()
        .or_else(|| file.replay_dir.clone())
        .unwrap_or_else(|| PathBuf::from("roomcast-data/replays"));
    Ok(roomcast_signaling::hls::HlsSettings {
        part_target,
        segment_target,
        window,
        end_grace,
        replay_dir: (retention_hours > 0).then_some(replay_dir),
        replay_retention: Duration::from_secs(retention_hours.saturating_mul(3600)),
    })
}

/// Both the TURN secret and URLs, or neither.
fn resolve_turn(
    secret: Option<String>,
    urls: Vec<String>,
    ttl: Option<Duration>,
) -> Result<Option<TurnConfig>, String> {
    let urls: Vec<String> = urls
        .iter()
        .map(|url| url.trim().to_string())
        .filter(|url| !url.is_empty())
        .collect();
    match (secret, urls.is_empty()) {
        (None, true) if ttl.is_some() => {
            Err("--turn-ttl is set without --turn-secret and --turn-urls".into())
        }
        (None, true) => Ok(None),
        (Some(secret), false) => TurnConfig::new(secret, urls, ttl.unwrap_or(turn::DEFAULT_TTL))
            .map(Some)
            .map_err(|e| format!("--turn-secret/--turn-urls: {e}")),
        (Some(_), true) => Err(
            "--turn-secret is set but --turn-urls is not: set both (or neither, for no TURN)"
                .into(),
        ),
        (None, false) => Err(
            "--turn-urls is set but --turn-secret is not: set both (or neither, for no TURN); \
             the secret is coturn's static-auth-secret"
                .into(),
        ),
    }
}

/// Which certificate, if any: both files, or names to generate one for, or none.
fn tls_source(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    self_signed: Option<String>,
) -> Result<Option<crate::tls::CertificateSource>, String> {
    use crate::tls::CertificateSource;
    match (cert, key, self_signed) {
        (None, None, None) => Ok(None),
        (Some(cert), Some(key), None) => Ok(Some(CertificateSource::Files { cert, key })),
        (None, None, Some(names)) => {
            let names: Vec<String> = names
                .split(',')
                .map(str::trim)
                .filter(|name| !name.is_empty())
                .map(String::from)
                .collect();
            if names.is_empty() {
                return Err(
                    "--tls-self-signed needs at least one DNS name or IP, e.g. localhost,127.0.0.1"
                        .into(),
                );
            }
            Ok(Some(CertificateSource::SelfSigned { names }))
        }
        (_, _, Some(_)) => Err(
            "--tls-self-signed and --tls-cert/--tls-key are mutually exclusive: serve your \
             certificate files, or a generated one, not both"
                .into(),
        ),
        _ => Err("set both --tls-cert and --tls-key (or neither)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_flags_means_loopback_dev_mode() {
        let config = ServeConfig::resolve(ServeArgs::default()).unwrap();
        assert_eq!(config.http, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.sfu.bind_ip, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(config.sfu.announce_ip, None);
        assert_eq!(config.sfu.rtc_port, DEFAULT_RTC_PORT);
        assert!(config.credentials.is_none(), "dev mode");
        assert_eq!(config.rtmp, "127.0.0.1:1935".parse().unwrap());
    }

    #[test]
    fn public_ip_binds_media_on_all_interfaces() {
        let args = ServeArgs {
            public_ip: Some("203.0.113.7".parse().unwrap()),
            ..Default::default()
        };
        let config = ServeConfig::resolve(args).unwrap();
        assert_eq!(config.sfu.bind_ip, IpAddr::from([0, 0, 0, 0]));
        assert_eq!(config.sfu.announce_ip, Some("203.0.113.7".parse().unwrap()));
    }

    #[test]
    fn flags_override_the_config_file() {
        let dir = std::env::temp_dir().join(format!("roomcast-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("roomcast.toml");
        std::fs::write(
            &path,
            "http = \"127.0.0.1:9000\"\nrtc_port = 40000\nworkers = 3\n",
        )
        .unwrap();
        let args = ServeArgs {
            rtc_port: Some(0),
            config: Some(path.clone()),
            ..Default::default()
        };
        let config = ServeConfig::resolve(args).unwrap();
        assert_eq!(config.http.port(), 9000);
        assert_eq!(config.sfu.rtc_port, 0);
        assert_eq!(config.sfu.workers, 3);
        std::fs::write(&path, "htp = 1\n").unwrap();
        let error = ServeConfig::resolve(ServeArgs {
            config: Some(path),
            ..Default::default()
        })
        .unwrap_err();
        assert!(error.contains("htp"), "{error}");
    }

    #[test]
    fn turn_needs_secret_and_urls() {
        let urls = vec!["turn:127.0.0.1:3478?transport=udp".to_string()];
        let config = ServeConfig::resolve(ServeArgs::default()).unwrap();
        assert!(config.turn.is_none());
        let only_secret = ServeArgs {
            turn_secret: Some("s".into()),
            ..Default::default()
        };
        let error = ServeConfig::resolve(only_secret).unwrap_err();
        assert!(error.contains("--turn-urls"), "{error}");
        let only_urls = ServeArgs {
            turn_urls: urls.clone(),
            ..Default::default()
        };
        let error = ServeConfig::resolve(only_urls).unwrap_err();
        assert!(error.contains("--turn-secret"), "{error}");
        let bad_url = ServeArgs {
            turn_secret: Some("s".into()),
            turn_urls: vec!["stun:127.0.0.1".into()],
            ..Default::default()
        };
        let error = ServeConfig::resolve(bad_url).unwrap_err();
        assert!(error.contains("stun:127.0.0.1"), "{error}");
        let both = ServeArgs {
            turn_secret: Some("s".into()),
            turn_urls: urls.clone(),
            ..Default::default()
        };
        let turn = ServeConfig::resolve(both).unwrap().turn.unwrap();
        assert_eq!(turn.urls(), urls.as_slice());
        assert_eq!(turn.ttl(), turn::DEFAULT_TTL);
    }

    #[test]
    fn turn_from_the_config_file() {
        let dir = std::env::temp_dir().join(format!("roomcast-turn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("roomcast.toml");
        std::fs::write(
            &path,
            "turn_secret = \"s\"\nturn_urls = [\"turn:a.example:3478\", \"turns:a.example:5349?transport=tcp\"]\nturn_ttl = \"2h\"\n",
        )
        .unwrap();
        let config = ServeConfig::resolve(ServeArgs {
            config: Some(path),
            ..Default::default()
        })
        .unwrap();
        let turn = config.turn.unwrap();
        assert_eq!(turn.urls().len(), 2);
        assert_eq!(turn.ttl(), Duration::from_secs(7200));
    }

    #[test]
    fn tls_is_both_files_or_generated_names() {
        use crate::tls::CertificateSource;
        assert_eq!(tls_source(None, None, None), Ok(None));
        assert_eq!(
            tls_source(None, None, Some(" localhost, 127.0.0.1,".into())),
            Ok(Some(CertificateSource::SelfSigned {
                names: vec!["localhost".into(), "127.0.0.1".into()]
            }))
        );
        let half = tls_source(Some("cert.pem".into()), None, None).unwrap_err();
        assert!(half.contains("both --tls-cert and --tls-key"), "{half}");
        let both = tls_source(
            Some("cert.pem".into()),
            Some("key.pem".into()),
            Some("localhost".into()),
        )
        .unwrap_err();
        assert!(both.contains("mutually exclusive"), "{both}");
        assert!(tls_source(None, None, Some(",".into())).is_err());
        let config = ServeConfig::resolve(ServeArgs {
            tls_self_signed: Some("localhost".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(config.tls.unwrap().certificate.names, ["localhost"]);
    }
}
