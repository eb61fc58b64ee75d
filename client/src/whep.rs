//! A WHEP viewer without a browser: one `POST /whep/<room>` with a receive-only audio and
//! video offer, then str0m receives whatever the room's host sends. Used by the ingest tests
//! to check what an RTMP or WHIP broadcast delivers, frame by frame.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use str0m::change::SdpAnswer;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Event, Input, Output, Rtc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::watch;

use crate::ClientError;

/// What a viewer received so far.
#[derive(Debug, Clone, Default)]
pub struct ViewerStats {
    pub connected: bool,
    /// Whole video frames (access units) received, with their codec.
    pub video_frames: u64,
    pub video_codec: Option<Codec>,
    /// Video frames that start with an H.264 SPS or are VP8 keyframes.
    pub keyframes: u64,
    /// Whether the very first video frame was a keyframe.
    pub first_frame_keyframe: Option<bool>,
    pub audio_packets: u64,
    pub audio_codec: Option<Codec>,
    /// Arrival of the last video frame and audio packet.
    pub last_video: Option<Instant>,
    pub last_audio: Option<Instant>,
    /// Set when the session ends, with why.
    pub ended: Option<String>,
}

/// A running WHEP session.
pub struct WhepViewer {
    /// The session URL path from the `Location` header.
    pub location: String,
    stats: Arc<Mutex<ViewerStats>>,
    stop: watch::Sender<bool>,
}

impl WhepViewer {
    /// Open a session on `http://host:port` for `room`, with an optional bearer token.
    pub async fn connect(
        server: &str,
        room: &str,
        token: Option<&str>,
    ) -> Result<WhepViewer, ClientError> {
        let host = server
            .strip_prefix("http://")
            .ok_or_else(|| ClientError::Connect(format!("need an http:// URL: {server}")))?
            .trim_end_matches('/')
            .to_string();
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .map_err(|e| ClientError::Media(e.to_string()))?;
        let (mut rtc, local_addr) = crate::client_rtc(&socket)?;
        let mut change = rtc.sdp_api();
        change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        change.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        let (offer, pending) = change
            .apply()
            .ok_or_else(|| ClientError::Media("nothing to offer".into()))?;
        let response = http_request(
            &host,
            "POST",
            &format!("/whep/{room}"),
            token,
            Some(("application/sdp", &offer.to_sdp_string())),
        )
        .await?;
        if response.status != 201 {
            return Err(ClientError::Protocol(format!(
                "WHEP POST answered {}: {}",
                response.status,
                response.body.trim()
            )));
        }
        let location = response
            .header("location")
            .ok_or_else(|| ClientError::Protocol("WHEP answer without Location".into()))?
            .to_string();
        let answer = SdpAnswer::from_sdp_string(&response.body)
            .map_err(|e| ClientError::Protocol(format!("bad SDP answer: {e}")))?;
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| ClientError::Protocol(format!("answer not accepted: {e}")))?;

        let stats = Arc::new(Mutex::new(ViewerStats::default()));
        let (stop, stop_rx) = watch::channel(false);
        let task_stats = stats.clone();
        tokio::spawn(async move {
            let result = receive(rtc, socket, local_addr, task_stats.clone(), stop_rx).await;
            let why = match result {
                Ok(()) => "stopped".to_string(),
                Err(e) => e,
            };
            task_stats.lock().expect("never poisoned").ended = Some(why);
        });
        Ok(WhepViewer {
            location,
            stats,
            stop,
        })
    }

    pub fn stats(&self) -> ViewerStats {
        self.stats.lock().expect("never poisoned").clone()
    }

    /// Stop receiving (the server notices through its media timeout, or [`delete`]).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

async fn receive(
    mut rtc: Rtc,
    socket: UdpSocket,
    local_addr: SocketAddr,
    stats: Arc<Mutex<ViewerStats>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let mut buffer = vec![0u8; 2048];
    loop {
        let timeout = loop {
            match rtc.poll_output().map_err(|e| e.to_string())? {
                Output::Timeout(at) => break at,
                Output::Transmit(t) => {
                    let _ = socket.send_to(&t.contents, t.destination).await;
                }
                Output::Event(event) => record(&stats, event),
            }
        };
        let sleep = timeout.saturating_duration_since(Instant::now());
        tokio::select! {
            _ = stop.changed() => return Ok(()),
            received = socket.recv_from(&mut buffer) => {
                let (n, source) = received.map_err(|e| e.to_string())?;
                let Ok(contents) = buffer[..n].try_into() else { continue };
                let input = Input::Receive(
                    Instant::now(),
                    Receive { proto: Protocol::Udp, source, destination: local_addr, contents },
                );
                rtc.handle_input(input).map_err(|e| e.to_string())?;
            }
            _ = tokio::time::sleep(sleep) => {
                rtc.handle_input(Input::Timeout(Instant::now())).map_err(|e| e.to_string())?;
            }
        }
        if !rtc.is_alive() {
            return Err("the media connection closed".into());
        }
    }
}

fn record(stats: &Mutex<ViewerStats>, event: Event) {
    let mut stats = stats.lock().expect("never poisoned");
    match event {
        Event::Connected => stats.connected = true,
        Event::MediaData(data) => {
            let codec = data.params.spec().codec;
            let now = Instant::now();
            if codec.is_audio() {
                stats.audio_packets += 1;
                stats.audio_codec = Some(codec);
                stats.last_audio = Some(now);
                return;
            }
            let keyframe = match codec {
                // Annex B from str0m's depacketizer: an SPS (type 7) leads each keyframe.
                Codec::H264 => data.data.get(4).is_some_and(|b| b & 0x1f == 7),
                Codec::Vp8 => data.data.first().is_some_and(|b| b & 1 == 0),
                _ => false,
            };
            stats.video_frames += 1;
            stats.video_codec = Some(codec);
            stats.keyframes += u64::from(keyframe);
            stats.first_frame_keyframe.get_or_insert(keyframe);
            stats.last_video = Some(now);
        }
        _ => {}
    }
}

/// End a WHEP (or WHIP) session: `DELETE` its Location.
pub async fn delete(server: &str, location: &str) -> Result<u16, ClientError> {
    let host = server.trim_start_matches("http://").trim_end_matches('/');
    Ok(http_request(host, "DELETE", location, None, None)
        .await?
        .status)
}

/// An HTTP/1.1 response, read whole (`Connection: close`).
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 client for tests and tools on loopback.
pub async fn http_request(
    host: &str,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<(&str, &str)>,
) -> Result<HttpResponse, ClientError> {
    let connect = TcpStream::connect(host);
    let mut stream = tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .map_err(|_| ClientError::Connect(format!("{host}: connect timed out")))?
        .map_err(|e| ClientError::Connect(format!("{host}: {e}")))?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(token) = bearer {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let (content_type, body) = body.unwrap_or(("text/plain", ""));
    if !body.is_empty() || method == "POST" {
        request.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body);
    let io_error = |e: std::io::Error| ClientError::Connect(format!("{host}: {e}"));
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(io_error)?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .map_err(|_| ClientError::Connect(format!("{host}: no complete response in 10 s")))?
        .map_err(io_error)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| ClientError::Protocol(format!("malformed HTTP response: {text}")))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ClientError::Protocol(format!("malformed status line: {head}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body: body.to_string(),
    })
}
