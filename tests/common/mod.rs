//! Helpers for end-to-end tests: a real `roomcast serve` process on loopback, and polling
//! with deadlines (never sleeps standing in for readiness).

#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A server process; killed when dropped. Its log is kept for failure messages.
pub struct Server {
    child: Child,
    pub url: String,
    /// RTMP ingest `host:port`.
    pub rtmp: String,
    pub log: Arc<Mutex<Vec<String>>>,
    /// A replay directory of the server's own (removed on drop), unless the test gave one.
    own_replay_dir: Option<std::path::PathBuf>,
}

/// What [`Server::fetch`] returns.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Lowercase names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

/// A fresh directory under the system's temp dir, unique per call.
pub fn temp_dir(label: &str) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("roomcast-{label}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the temp dir is writable");
    dir
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    pub fn start_with(extra_args: &[&str]) -> Server {
        // Replays go to a directory of the test's, never into the working tree.
        let own_replay_dir = (!extra_args.contains(&"--replay-dir")).then(|| temp_dir("replays"));
        let mut replay_args: Vec<String> = own_replay_dir
            .iter()
            .flat_map(|dir| ["--replay-dir".to_string(), dir.display().to_string()])
            .collect();
        // And the chat database too.
        if !extra_args.contains(&"--chat-db") {
            let db = temp_dir("chat").join("chat.sqlite3");
            replay_args.extend(["--chat-db".to_string(), db.display().to_string()]);
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_roomcast"))
            .args(["serve", "--http", "127.0.0.1:0", "--rtc-port", "0"])
            .args(["--rtmp", "127.0.0.1:0"])
            .args(&replay_args)
            .args(extra_args)
            .env("RUST_LOG", "info,roomcast_sfu=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the roomcast binary starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr is piped");
        let log_writer = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find("HTTP listening on ") {
                    let url = line[at + "HTTP listening on ".len()..].trim().to_string();
                    let _ = url_tx.send(url);
                }
                // With --tls-*: `url` is then `https://…`.
                if let Some(at) = line.find("HTTPS listening on ") {
                    let url = line[at + "HTTPS listening on ".len()..].trim().to_string();
                    let _ = url_tx.send(url);
                }
                log_writer.lock().unwrap().push(line);
            }
        });
        let url = url_rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| {
                panic!(
                    "server did not log its HTTP address within 20 s; log:\n{}",
                    log.lock().unwrap().join("\n")
                )
            });
        // The RTMP line comes before the HTTP one.
        let rtmp = log
            .lock()
            .unwrap()
            .iter()
            .find_map(|line| {
                let at = line.find("RTMP listening on rtmp://")?;
                Some(
                    line[at + "RTMP listening on rtmp://".len()..]
                        .trim()
                        .to_string(),
                )
            })
            .expect("the server logs its RTMP address before its HTTP address");
        Server {
            child,
            url,
            rtmp,
            log,
            own_replay_dir,
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn host_port(&self) -> String {
        self.url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_string()
    }

    /// The UDP media address of the first worker, from the startup log.
    pub fn media_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|line| {
                let at = line.find("SFU media on udp ")?;
                let rest = &line[at + "SFU media on udp ".len()..];
                rest.split_whitespace().next()?.parse().ok()
            })
            .collect()
    }

    /// A plain HTTP/1.0 GET; returns (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        let response = self.fetch(path);
        (response.status, response.text())
    }

    /// A plain HTTP/1.0 GET with the headers and the raw body.
    pub fn fetch(&self, path: &str) -> HttpResponse {
        self.fetch_with_headers(path, &[])
    }

    /// [`Server::fetch`] with extra request headers (name, value).
    pub fn fetch_with_headers(&self, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        let mut stream = TcpStream::connect(self.host_port()).expect("server accepts TCP");
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let extra: String = headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        write!(
            stream,
            "GET {path} HTTP/1.0\r\nHost: {}\r\n{extra}\r\n",
            self.host_port()
        )
        .unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("an HTTP response has a header block");
        let head = String::from_utf8_lossy(&response[..split]).to_string();
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        HttpResponse {
            status,
            headers,
            body: response[split + 4..].to_vec(),
        }
    }

    /// The value of an unlabelled Prometheus sample from `/metrics`.
    pub fn metric(&self, name: &str) -> u64 {
        let (_, body) = self.get("/metrics");
        body.lines()
            .find_map(|line| {
                let (key, value) = line.split_once(' ')?;
                (key == name).then(|| value.trim().parse().ok())?
            })
            .unwrap_or_else(|| panic!("metric {name} missing from /metrics:\n{body}"))
    }
}

impl Server {
    /// Sends SIGTERM and waits up to `timeout` for the process to exit; `None` if it did not.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.own_replay_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Poll `check` until it returns `Ok`, or fail with its last complaint after `timeout`.
pub async fn eventually<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// The API key and secret of servers started with credentials (`--api-key KEY --api-secret
/// SECRET`), and [`mint`] for their tokens.
pub const KEY: &str = "ops-key";
pub const SECRET: &str = "an-api-secret-for-tests-32-bytes-or-more";

/// An access token from `roomcast token create`, as an operator mints one.
pub fn mint(room: &str, identity: &str, grants: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args(["token", "create", "--api-key", KEY, "--api-secret", SECRET])
        .args(["--room", room, "--identity", identity, "--grant", grants])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}
