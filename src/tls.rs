//! Built-in HTTPS: the certificate (PEM files, or one generated at startup), the rustls server
//! configuration, and a listener that hands axum finished TLS connections.
//!
//! With TLS on, `axum::serve` runs exactly as for plain HTTP (same router, same graceful
//! shutdown, HTTP/1.1 and HTTP/2, WebSocket upgrades); only the listener differs. Handshakes do
//! not run in axum's accept loop: [`TlsListener`] accepts TCP connections in its own task and
//! gives each handshake a task with a [`HANDSHAKE_TIMEOUT`], so a client that sends garbage or
//! never finishes its handshake costs one task for at most that long and delays nobody else.
//! Decision 0008 explains the choices.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::serve::{ListenerExt, TapIo};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{debug, error, info, warn};

/// How long a client may take from TCP accept to a finished TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Lifetime of a generated certificate. It is made again at every start (a new key, so a new
/// fingerprint); a year only matters for a server that runs that long without a restart.
const SELF_SIGNED_VALIDITY: time::Duration = time::Duration::days(365);

/// Where the server's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateSource {
    /// `--tls-cert` (the chain, leaf first) and `--tls-key`, both PEM.
    Files { cert: PathBuf, key: PathBuf },
    /// `--tls-self-signed`: a certificate for these DNS names and IP addresses, generated with
    /// rcgen at startup (ECDSA P-256).
    SelfSigned { names: Vec<String> },
}

/// A loaded certificate, ready to serve.
#[derive(Debug)]
pub struct Tls {
    pub server_config: Arc<ServerConfig>,
    pub certificate: CertificateSummary,
}

/// What an operator needs to recognise the served certificate (it is logged at startup).
#[derive(Debug, Clone)]
pub struct CertificateSummary {
    /// SHA-256 of the leaf certificate's DER, `AA:BB:…`: the value
    /// `openssl x509 -noout -fingerprint -sha256` prints.
    pub sha256_fingerprint: String,
    /// Subject alternative names (DNS names and IP addresses), in certificate order.
    pub names: Vec<String>,
    pub subject: String,
    /// `notAfter`, RFC 3339.
    pub expires: String,
    /// The certificate is inside its validity period now.
    pub valid_now: bool,
    pub self_signed: bool,
}

impl CertificateSummary {
    /// Startup log lines: what to pin or compare (`openssl x509 -noout -fingerprint -sha256`).
    pub fn log(&self) {
        info!(
            "TLS certificate SHA-256 fingerprint: {}",
            self.sha256_fingerprint
        );
        let names = if self.names.is_empty() {
            "none (no subjectAltName: browsers will refuse it)".to_string()
        } else {
            self.names.join(", ")
        };
        info!(
            "TLS certificate names: {names}; subject: {}; expires: {}{}",
            self.subject,
            self.expires,
            if self.self_signed {
                "; self-signed, generated at startup (browsers warn; for testing)"
            } else {
                ""
            }
        );
        if !self.valid_now {
            warn!(
                "the TLS certificate is not valid now (expires {}): clients will refuse it",
                self.expires
            );
        }
    }
}

impl Tls {
    /// Reads or generates the certificate and builds the rustls configuration. Every error
    /// names the file (or setting) and what is wrong with it.
    pub fn load(source: &CertificateSource) -> Result<Tls, String> {
        let (chain, key) = match source {
            CertificateSource::Files { cert, key } => (read_chain(cert)?, read_key(key)?),
            CertificateSource::SelfSigned { names } => self_signed(names)?,
        };
        let certificate = summarize(&chain[0], source)?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| match (source, e) {
                (
                    CertificateSource::Files { cert, key },
                    rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch),
                ) => format!(
                    "--tls-key {}: this private key does not belong to the certificate in --tls-cert {}",
                    key.display(),
                    cert.display()
                ),
                (CertificateSource::Files { cert, key }, e) => format!(
                    "cannot use --tls-cert {} with --tls-key {}: {e}",
                    cert.display(),
                    key.display()
                ),
                (CertificateSource::SelfSigned { .. }, e) => {
                    format!("the generated certificate was refused by rustls: {e}")
                }
            })?;
        // Offer HTTP/2 first; browsers still open WebSockets over HTTP/1.1 or, where they
        // support it, over HTTP/2 (RFC 8441, which axum::serve enables).
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            server_config: Arc::new(config),
            certificate,
        })
    }
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_file("--tls-cert", path)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--tls-cert {}: not valid PEM: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "--tls-cert {}: no PEM certificate in it (expected a \"-----BEGIN CERTIFICATE-----\" block)",
            path.display()
        ));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read_file("--tls-key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => format!(
            "--tls-key {}: no PEM private key in it (expected \"-----BEGIN PRIVATE KEY-----\", \
             \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\"; an encrypted key must be decrypted first)",
            path.display()
        ),
        e => format!("--tls-key {}: not valid PEM: {e}", path.display()),
    })
}

fn read_file(flag: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{flag} {}: cannot read it: {e}", path.display()))
}

fn self_signed(
    names: &[String],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    // rcgen makes an IP-address SAN of every name that parses as an IP, a DNS name otherwise.
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .map_err(|e| format!("--tls-self-signed {}: {e}", names.join(",")))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("roomcast self-signed {}", names[0]),
    );
    let now = time::OffsetDateTime::now_utc();
    // A little slack for clients whose clock is behind.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + SELF_SIGNED_VALIDITY;
    let key = rcgen::KeyPair::generate().map_err(|e| format!("generating a TLS key: {e}"))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("generating a certificate for {}: {e}", names.join(",")))?;
    Ok((
        vec![cert.der().clone()],
        PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
    ))
}

fn summarize(
    leaf: &CertificateDer<'_>,
    source: &CertificateSource,
) -> Result<CertificateSummary, String> {
    let what = match source {
        CertificateSource::Files { cert, .. } => format!("--tls-cert {}", cert.display()),
        CertificateSource::SelfSigned { .. } => "the generated certificate".to_string(),
    };
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| format!("{what}: the first certificate is not valid X.509: {e}"))?;
    let names = match parsed.subject_alternative_name() {
        Ok(Some(extension)) => extension
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => Some(dns.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(bytes) => ip_from_san(bytes),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(format!("{what}: unreadable subjectAltName: {e}")),
    };
    let validity = parsed.validity();
    let expires = validity
        .not_after
        .to_datetime()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| validity.not_after.to_string());
    Ok(CertificateSummary {
        sha256_fingerprint: sha256_fingerprint(leaf),
        names,
        subject: parsed.subject().to_string(),
        expires,
        valid_now: validity.is_valid(),
        self_signed: matches!(source, CertificateSource::SelfSigned { .. }),
    })
}

fn ip_from_san(bytes: &[u8]) -> Option<String> {
    let ip = match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some(ip.to_string())
}

/// `AA:BB:…`, uppercase, like `openssl x509 -fingerprint -sha256`.
pub fn sha256_fingerprint(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    digest
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The listener `axum::serve` gets in HTTPS mode.
///
/// The `TapIo` wrapper does nothing to the stream: it is there because axum implements
/// `Connected` (what `into_make_service_with_connect_info::<SocketAddr>` needs) for
/// `TcpListener` and for any `TapIo<L, _>` whose address is a `SocketAddr`, so handlers get
/// `ConnectInfo<SocketAddr>` over TLS exactly as over plain HTTP.
pub type HttpsListener = TapIo<TlsListener, fn(&mut TlsStream<TcpStream>)>;

/// Accepts TCP connections and yields them once their TLS handshake is done.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp` (in a task that ends when the listener is dropped). Must be
    /// called inside a tokio runtime.
    pub fn start(tcp: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<HttpsListener> {
        let local_addr = tcp.local_addr()?;
        // Finished handshakes wait here for axum's accept loop, which spawns a task per
        // connection and comes straight back: a small buffer is plenty.
        let (ready_tx, ready) = mpsc::channel(64);
        tokio::spawn(accept_loop(tcp, TlsAcceptor::from(config), ready_tx));
        let no_op: fn(&mut TlsStream<TcpStream>) = |_| {};
        Ok(TlsListener { ready, local_addr }.tap_io(no_op))
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // The accept loop holds a sender until this receiver is dropped, so `recv` never
        // returns `None` while the listener exists; if that ever changes, wait forever rather
        // than spin (axum then serves the connections it has until shutdown).
        match self.ready.recv().await {
            Some(connection) => connection,
            None => {
                error!("the TLS accept loop stopped; no new HTTPS connections");
                std::future::pending().await
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let accepted = tokio::select! {
            // axum dropped the listener (shutdown): stop accepting, close the socket.
            () = ready.closed() => return,
            accepted = tcp.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // As axum does for its own TcpListener: a connection that died before accept
                // is nobody's problem; anything else (out of file descriptors) gets a pause.
                if !matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::ConnectionReset
                ) {
                    error!("accepting an HTTPS connection failed: {e}; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    // Fails only when the server is shutting down; the connection just closes.
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Err(e)) => debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => {
                    debug!(%peer, "TLS handshake not finished after {HANDSHAKE_TIMEOUT:?}; closed")
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_certificate_names_and_fingerprint() {
        let tls = Tls::load(&CertificateSource::SelfSigned {
            names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
        })
        .unwrap();
        let summary = &tls.certificate;
        assert_eq!(summary.names, ["localhost", "127.0.0.1", "::1"]);
        assert!(summary.valid_now);
        assert_eq!(summary.sha256_fingerprint.len(), 32 * 3 - 1);
        assert!(
            summary
                .sha256_fingerprint
                .split(':')
                .all(|byte| byte.len() == 2 && byte.chars().all(|c| c.is_ascii_hexdigit()))
        );
        assert_eq!(
            tls.server_config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn fingerprint_format() {
        // SHA-256 of the empty input.
        assert!(sha256_fingerprint(b"").starts_with("E3:B0:C4:42:98:FC:1C:14"));
    }

    #[test]
    fn file_errors_name_the_file_and_the_problem() {
        let dir = std::env::temp_dir().join(format!("roomcast-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "hello\n").unwrap();
        let files = |cert: &Path, key: &Path| CertificateSource::Files {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        };
        let error = Tls::load(&files(&missing, &not_pem)).unwrap_err();
        assert!(
            error.contains("--tls-cert") && error.contains("missing.pem"),
            "{error}"
        );
        let error = Tls::load(&files(&not_pem, &not_pem)).unwrap_err();
        assert!(error.contains("no PEM certificate"), "{error}");
        // The key-does-not-match-the-certificate case is in tests/tls.rs (openssl makes both).
    }
}
