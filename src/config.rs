//! Server configuration: command line > environment (`ROOMCAST_*`) > config file > built-in
//! defaults. The defaults are the dev-mode configuration: loopback only, open rooms.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::Args;
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

    /// TOML file with any of the settings above (keys: http, rtc_port, public_ip, rtc_bind,
    /// workers, max_participants, rtmp, refuse_bframes, api_key, api_secret). Flags and
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
    rtmp: Option<SocketAddr>,
    refuse_bframes: Option<bool>,
    api_key: Option<String>,
    api_secret: Option<String>,
}

#[derive(Debug)]
pub struct ServeConfig {
    pub http: SocketAddr,
    pub sfu: SfuConfig,
    pub rtmp: SocketAddr,
    pub refuse_bframes: bool,
    /// `None` is dev mode.
    pub credentials: Option<roomcast_auth::ApiCredentials>,
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
        let rtmp = args
            .rtmp
            .or(file.rtmp)
            .unwrap_or(SocketAddr::new(http.ip(), DEFAULT_RTMP_PORT));
        Ok(ServeConfig {
            http,
            rtmp,
            refuse_bframes: args.refuse_bframes || file.refuse_bframes.unwrap_or(false),
            credentials,
            sfu: SfuConfig {
                workers,
                bind_ip,
                rtc_port: args.rtc_port.or(file.rtc_port).unwrap_or(DEFAULT_RTC_PORT),
                announce_ip: public_ip,
                max_participants_per_room: max_participants,
            },
        })
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
}
