//! Built-in HTTPS with real clients: `openssl s_client`/`openssl x509` read the served
//! certificate, `curl` fetches over HTTP/1.1 and HTTP/2, a rustls client pinned to the logged
//! fingerprint opens the signaling WebSocket over WSS. Broken clients (garbage, a handshake that
//! never finishes) do not delay anyone else and are cut off after the handshake timeout; bad
//! certificate settings stop the server at startup with exit code 2 and a message naming the file.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Server;
use futures_util::{SinkExt, StreamExt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_tungstenite::tungstenite::Message;

const SELF_SIGNED: [&str; 2] = ["--tls-self-signed", "localhost,127.0.0.1"];

/// The fingerprint the server logged at startup.
fn logged_fingerprint(server: &Server) -> String {
    let log = server.log_text();
    let at = log
        .find("TLS certificate SHA-256 fingerprint: ")
        .unwrap_or_else(|| panic!("no fingerprint line in the log:\n{log}"));
    log[at + "TLS certificate SHA-256 fingerprint: ".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn run(command: &mut Command, stdin: &[u8]) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// The leaf certificate `openssl s_client` receives, as PEM.
fn served_certificate(host_port: &str, server_name: &str) -> String {
    let output = run(
        Command::new("openssl").args([
            "s_client",
            "-connect",
            host_port,
            "-servername",
            server_name,
        ]),
        b"",
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let begin = text.find("-----BEGIN CERTIFICATE-----");
    let end = text.find("-----END CERTIFICATE-----");
    match (begin, end) {
        (Some(begin), Some(end)) => {
            text[begin..end + "-----END CERTIFICATE-----".len()].to_string() + "\n"
        }
        _ => panic!(
            "openssl s_client got no certificate from {host_port}:\n{text}\n{}",
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// `openssl x509 -noout -fingerprint -sha256 -ext subjectAltName` on a PEM certificate:
/// (fingerprint `AA:BB:…`, the rest of the output).
fn openssl_x509(pem: &[u8]) -> (String, String) {
    let output = run(
        Command::new("openssl").args([
            "x509",
            "-noout",
            "-fingerprint",
            "-sha256",
            "-ext",
            "subjectAltName",
        ]),
        pem,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let fingerprint = text
        .lines()
        .find_map(|line| line.split_once("Fingerprint=").map(|(_, f)| f.trim()))
        .unwrap_or_else(|| panic!("no fingerprint in {text}"))
        .to_string();
    (fingerprint, text)
}

/// `curl -k` over TLS: (HTTP version curl used, status, body).
fn curl(url: &str, version_flag: &str, max_time_s: u32) -> Result<(String, u16, String), String> {
    let output = Command::new("curl")
        .args([
            "-sS",
            "-k",
            version_flag,
            "--max-time",
            &max_time_s.to_string(),
        ])
        .args(["-w", "\n%{http_version} %{http_code}", url])
        .output()
        .expect("curl runs");
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let text = String::from_utf8(output.stdout).unwrap();
    let (body, trailer) = text.rsplit_once('\n').unwrap();
    let (version, status) = trailer.split_once(' ').unwrap();
    Ok((
        version.to_string(),
        status.parse().unwrap(),
        body.to_string(),
    ))
}

#[test]
fn self_signed_certificate_is_served_with_the_logged_fingerprint_over_http1_and_http2() {
    let server = Server::start_with(&SELF_SIGNED);
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    let log = server.log_text();
    assert!(!log.contains("HTTP listening on"), "{log}");
    let fingerprint = logged_fingerprint(&server);

    let pem = served_certificate(&server.host_port(), "localhost");
    let (served, text) = openssl_x509(pem.as_bytes());
    assert_eq!(served, fingerprint, "served vs logged fingerprint");
    assert!(text.contains("DNS:localhost"), "{text}");
    assert!(text.contains("IP Address:127.0.0.1"), "{text}");
    assert!(
        log.contains("TLS certificate names: localhost, 127.0.0.1;"),
        "{log}"
    );

    let url = format!("{}/healthz", server.url);
    let (version, status, body) = curl(&url, "--http1.1", 5).unwrap();
    assert_eq!((version.as_str(), status), ("1.1", 200), "{body}");
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    let (version, status, _) = curl(&url, "--http2", 5).unwrap();
    assert_eq!(
        (version.as_str(), status),
        ("2", 200),
        "ALPN should pick h2"
    );
    // The web client itself comes over HTTPS too.
    let (_, status, page) = curl(&format!("{}/?room=a&name=b", server.url), "--http2", 5).unwrap();
    assert_eq!(status, 200);
    assert!(
        page.contains("<html") || page.contains("<!doctype"),
        "{page}"
    );
}

/// Accepts exactly the certificate whose SHA-256 the server logged (what an operator pinning
/// it would do); signatures are checked normally.
#[derive(Debug)]
struct PinnedCertificate {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, end_entity);
        let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
        if hex.join(":") == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "served certificate {} is not the logged {}",
                hex.join(":"),
                self.fingerprint
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

type Wss =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

async fn connect_wss(server: &Server) -> Wss {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCertificate {
            fingerprint: logged_fingerprint(server),
            provider,
        }))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(server.host_port())
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake with the pinned certificate");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let port = server.host_port().rsplit_once(':').unwrap().1.to_string();
    let (ws, _) = tokio_tungstenite::client_async(format!("wss://localhost:{port}/ws"), tls)
        .await
        .expect("WebSocket upgrade over TLS");
    ws
}

async fn join(ws: &mut Wss, room: &str, name: &str) -> serde_json::Value {
    ws.send(Message::text(format!(
        r#"{{"type":"join","room":"{room}","name":"{name}"}}"#
    )))
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let message: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
                    if message["type"] == "joined" {
                        return message;
                    }
                }
                Some(Ok(_)) => continue,
                other => panic!("expected `joined`, got {other:?}"),
            }
        }
    })
    .await
    .expect("joined within 5 s")
}

/// Opens a TCP connection that sends `bytes` and then nothing more.
fn raw_connection(host_port: &str, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(host_port).unwrap();
    stream.write_all(bytes).unwrap();
    stream
}

/// How long until the server closes `stream` (EOF or reset), up to `limit`.
fn time_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => continue, // a TLS alert, then the close
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None;
            }
            Err(_) => return Some(started.elapsed()), // reset
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_signaling_works_while_broken_clients_stall_and_shutdown_stays_graceful() {
    let mut server = Server::start_with(&SELF_SIGNED);
    let host_port = server.host_port();

    let opened = Instant::now();
    // Twenty handshakes that never finish: a TLS record header promising a ClientHello that
    // never comes; and a plain-HTTP client on the HTTPS port.
    let mut stalled: Vec<TcpStream> = (0..20)
        .map(|_| raw_connection(&host_port, &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]))
        .collect();
    let mut garbage = raw_connection(&host_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");

    // Everyone else is served meanwhile, well inside the 10 s handshake timeout.
    let started = Instant::now();
    let (_, status, _) = curl(&format!("{}/healthz", server.url), "--http2", 3)
        .unwrap_or_else(|e| panic!("healthz next to stalled handshakes: {e}"));
    assert_eq!(status, 200);
    let mut ws = connect_wss(&server).await;
    let joined = join(&mut ws, "tls-room", "ada").await;
    assert_eq!(joined["room"], "tls-room", "{joined}");
    assert!(joined["participant_id"].is_u64(), "{joined}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // The garbage is refused at once; the stalled handshakes are cut at the timeout (10 s).
    let garbage_closed = time_until_closed(&mut garbage, Duration::from_secs(3));
    assert!(garbage_closed.is_some(), "a non-TLS client is disconnected");
    time_until_closed(&mut stalled[0], Duration::from_secs(15))
        .expect("a stalled handshake is closed by the server");
    let since_open = opened.elapsed();
    assert!(
        since_open >= Duration::from_secs(8) && since_open <= Duration::from_secs(14),
        "stalled handshake closed after {since_open:?}; expected about 10 s"
    );
    for stream in &mut stalled[1..] {
        assert!(time_until_closed(stream, Duration::from_secs(3)).is_some());
    }

    // SIGTERM with an open WSS session and a fresh stalled handshake: a clean, prompt exit.
    let _another_stall = raw_connection(&host_port, &[0x16, 0x03, 0x01]);
    let status = server
        .terminate(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no exit within 10 s of SIGTERM:\n{}", server.log_text()));
    assert!(status.success(), "{status:?}\n{}", server.log_text());
    assert!(
        server.log_text().contains("stopped"),
        "{}",
        server.log_text()
    );
    drop(ws);
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("roomcast-tls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `openssl req -x509` with a new key of `key_type` (`ec` or `rsa`): (cert.pem, key.pem).
fn openssl_certificate(dir: &Path, prefix: &str, key_type: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{prefix}-cert.pem"));
    let key = dir.join(format!("{prefix}-key.pem"));
    let key_args: &[&str] = match key_type {
        "ec" => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        _ => &["-newkey", "rsa:2048"],
    };
    let output = Command::new("openssl")
        .args(["req", "-x509", "-nodes", "-days", "30"])
        .args(key_args)
        .args(["-subj", "/CN=roomcast test"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (cert, key)
}

#[test]
fn certificate_files_from_openssl_are_served() {
    let dir = temp_dir("files");
    for key_type in ["ec", "rsa"] {
        let (cert, key) = openssl_certificate(&dir, key_type, key_type);
        let server = Server::start_with(&[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ]);
        let (on_disk, _) = openssl_x509(&std::fs::read(&cert).unwrap());
        let (served, _) =
            openssl_x509(served_certificate(&server.host_port(), "localhost").as_bytes());
        assert_eq!(served, on_disk, "{key_type}: served vs file");
        assert_eq!(
            logged_fingerprint(&server),
            on_disk,
            "{key_type}: logged vs file"
        );
        let (_, status, _) = curl(&format!("{}/healthz", server.url), "--http1.1", 5).unwrap();
        assert_eq!(status, 200, "{key_type}");
    }
}

/// Runs `roomcast serve` expecting it to refuse to start: (exit code, stderr).
fn refused_start(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args([
            "serve",
            "--http",
            "127.0.0.1:0",
            "--rtc-port",
            "0",
            "--rtmp",
            "127.0.0.1:0",
        ])
        .args(args)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("roomcast serve {args:?} kept running; it should have refused to start");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code(), stderr)
}

#[test]
fn bad_certificate_settings_stop_the_server_with_a_clear_error() {
    let dir = temp_dir("bad");
    let (cert_a, _) = openssl_certificate(&dir, "a", "ec");
    let (_, key_b) = openssl_certificate(&dir, "b", "ec");
    let missing = dir.join("missing.pem");
    let not_pem = dir.join("not-pem.txt");
    std::fs::write(&not_pem, "this is not a certificate\n").unwrap();
    let path = |p: &Path| p.to_str().unwrap().to_string();

    let cases: [(Vec<String>, Vec<&str>); 5] = [
        (
            vec![
                "--tls-cert".into(),
                path(&missing),
                "--tls-key".into(),
                path(&key_b),
            ],
            vec!["--tls-cert", "missing.pem", "No such file"],
        ),
        (
            vec![
                "--tls-cert".into(),
                path(&not_pem),
                "--tls-key".into(),
                path(&key_b),
            ],
            vec!["--tls-cert", "not-pem.txt", "no PEM certificate"],
        ),
        (
            vec![
                "--tls-cert".into(),
                path(&cert_a),
                "--tls-key".into(),
                path(&not_pem),
            ],
            vec!["--tls-key", "not-pem.txt", "no PEM private key"],
        ),
        (
            vec![
                "--tls-cert".into(),
                path(&cert_a),
                "--tls-key".into(),
                path(&key_b),
            ],
            vec!["b-key.pem", "does not belong", "a-cert.pem"],
        ),
        (
            vec![
                "--tls-cert".into(),
                path(&cert_a),
                "--tls-key".into(),
                path(&key_b),
                "--tls-self-signed".into(),
                "localhost".into(),
            ],
            vec!["mutually exclusive"],
        ),
    ];
    for (args, expected) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, stderr) = refused_start(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        for needle in expected {
            assert!(
                stderr.contains(needle),
                "{args:?}: expected {needle:?} in:\n{stderr}"
            );
        }
    }
    let (code, stderr) = refused_start(&["--tls-key", &path(&key_b)]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("both --tls-cert and --tls-key"), "{stderr}");
}
