//! The signaling protocol: JSON text frames on the `/ws` WebSocket.
//!
//! Every frame is one JSON object whose `type` field names the message (`snake_case`). The
//! full reference with an example of every message is `docs/protocol.md`; the two must change
//! together.
//!
//! Invariants:
//! - Parsing never panics and never allocates more than the frame it was given
//!   ([`MAX_MESSAGE_BYTES`] bounds that); the `signaling_message` fuzz target holds it to that.
//! - A frame that cannot be understood yields a [`ProtocolError`] with a stable [`ErrorCode`];
//!   the socket stays open, except for oversize frames, which close it with 1009.
//! - Identifiers are the SFU's numeric ids, so a client can key maps by them directly.

use std::collections::BTreeMap;

use roomcast_chat::Kind as ChatKind;
use roomcast_sfu::{MediaKind, MutedBy, ParticipantId, TrackId, TrackSource};
use serde::{Deserialize, Serialize};

/// Largest text frame a client may send. SDP offers for a dozen m-lines are ~15 KiB; 64 KiB
/// leaves room for large simulcast offers while keeping a hostile client cheap to serve.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Messages a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Enter a room. Must be the first message on a socket, and only once.
    Join {
        room: String,
        name: String,
        /// Access token. Ignored in dev mode.
        #[serde(default)]
        token: Option<String>,
    },
    /// Join a room's chat only: no media, not a participant (the watch page). Same rules as
    /// `join`; answered with `chat_history`.
    ChatJoin {
        room: String,
        name: String,
        #[serde(default)]
        token: Option<String>,
    },
    /// The client's SDP offer: its first one creates the peer connection; later ones
    /// (renegotiation) are answered the same way. `sources` names the send m-lines (by mid)
    /// that are not a microphone or camera: a screen share.
    Offer {
        sdp: String,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        sources: BTreeMap<String, TrackSource>,
        /// Receive m-lines of this offer (by mid) and the track each is for: a joining client
        /// receives the tracks `joined` listed without waiting for the server's offer. The
        /// answer's `tracks` confirms each one bound; an m-line for a track that has left is
        /// stopped by the server's next offer.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        receive: BTreeMap<String, TrackId>,
    },
    /// The client's SDP answer to the server's latest `offer`.
    Answer { sdp: String },
    /// One trickled ICE candidate of the client (the `candidate` attribute line, as
    /// `RTCIceCandidate.candidate` gives it). An empty string means end of candidates.
    Candidate {
        candidate: String,
        #[serde(default)]
        sdp_mid: Option<String>,
    },
    /// Leave the room; the server answers with `left` and closes the socket.
    Leave {},
    /// Admin grant: remove a participant from the room (it gets `left` with reason `kicked`).
    Kick { participant_id: ParticipantId },
    /// Stop (`muted: true`) or resume forwarding a participant's track, or all its tracks when
    /// `track_id` is absent. Anyone may for their own tracks (but not undo a host's mute);
    /// other participants' tracks need the admin grant. Everyone gets `track_muted`.
    Mute {
        participant_id: ParticipantId,
        #[serde(default)]
        track_id: Option<TrackId>,
        muted: bool,
    },
    /// Admin grant: put `participant_id` on the room's stage (what HLS viewers and replays
    /// see), or return to the default (the host) with `null`. Everyone gets `stage_changed`.
    SetStage {
        participant_id: Option<ParticipantId>,
    },
    /// Post to the room's chat: needs the chat grant (or dev mode); a `notice` needs admin.
    Chat { kind: ChatKind, text: String },
    /// Admin grant: mark a question answered (or open again). Everyone gets
    /// `question_updated`.
    AnswerQuestion { id: u64, answered: bool },
    /// How the client shows a video track it receives: a hidden tile (`visible: false`)
    /// gets nothing; `width` (the tile's width in device pixels) caps the simulcast layer
    /// sent. Send it when a tile appears, is resized or scrolls in or out of view.
    TrackSettings {
        track_id: TrackId,
        visible: bool,
        #[serde(default)]
        width: Option<u32>,
    },
}

/// Messages the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Answer to `join`: who you are and who is already in the room.
    Joined {
        participant_id: ParticipantId,
        room: String,
        dev_mode: bool,
        participants: Vec<ParticipantInfo>,
        ice_servers: Vec<IceServer>,
        grants: Grants,
    },
    /// Answer to the client's `offer`. `tracks` maps every m-line the server sends on (as in
    /// its `offer`), including the offer's `receive` m-lines it bound.
    Answer {
        sdp: String,
        #[serde(default)]
        tracks: Vec<OfferedTrack>,
    },
    /// The server's offer: sent when tracks to forward to this client appear or vanish.
    /// `tracks` maps every m-line the server sends on to the track it carries.
    Offer {
        sdp: String,
        tracks: Vec<OfferedTrack>,
    },
    /// A server ICE candidate learnt after its SDP was sent (same format as the client's).
    Candidate {
        candidate: String,
        sdp_mid: Option<String>,
    },
    ParticipantJoined {
        participant: ParticipantInfo,
    },
    ParticipantLeft {
        participant_id: ParticipantId,
        reason: LeaveReason,
    },
    TrackPublished {
        participant_id: ParticipantId,
        track: TrackInfo,
    },
    TrackUnpublished {
        participant_id: ParticipantId,
        track_id: TrackId,
    },
    /// A track was muted or unmuted (`by` its owner or an admin): the server stopped or
    /// resumed forwarding it.
    TrackMuted {
        participant_id: ParticipantId,
        track_id: TrackId,
        muted: bool,
        by: MutedBy,
    },
    /// The room's dominant speaker (from the audio levels of RFC 6464), on change.
    ActiveSpeaker {
        participant_id: Option<ParticipantId>,
    },
    /// The room's chat so far (recent messages, questions and notices), oldest first; sent
    /// after `joined` and in answer to `chat_join`.
    ChatHistory {
        room: String,
        messages: Vec<serde_json::Value>,
        permissions: ChatPermissions,
    },
    /// A new chat message (to everyone in the room, the sender included).
    ChatMessage {
        message: serde_json::Value,
    },
    /// A question was marked answered or opened again.
    QuestionUpdated {
        message: serde_json::Value,
    },
    /// The room's stage (packaged for HLS and replays) is now `participant_id` (`null`: nobody
    /// publishes).
    StageChanged {
        participant_id: Option<ParticipantId>,
    },
    /// Dynacast, to a simulcast publisher: turn these encodings of `track_id` on or off
    /// (`RTCRtpEncodingParameters.active`, by `rid`), as subscribers need them.
    SetLayers {
        track_id: TrackId,
        layers: Vec<LayerState>,
    },
    /// This participant is out of the room: the answer to `leave`, or the server removed it
    /// (`reason` says why). The server closes the socket right after.
    Left {
        reason: LeaveReason,
    },
    Error(ProtocolError),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    pub id: ParticipantId,
    pub name: String,
    pub tracks: Vec<TrackInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackInfo {
    pub id: TrackId,
    pub kind: MediaKind,
    pub source: TrackSource,
    pub muted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferedTrack {
    pub mid: String,
    pub participant_id: ParticipantId,
    pub track_id: TrackId,
    pub kind: MediaKind,
    pub source: TrackSource,
}

impl From<roomcast_sfu::OfferedTrack> for OfferedTrack {
    fn from(track: roomcast_sfu::OfferedTrack) -> Self {
        OfferedTrack {
            mid: track.mid,
            participant_id: track.participant,
            track_id: track.track,
            kind: track.kind,
            source: track.source,
        }
    }
}

/// One simulcast encoding in `set_layers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerState {
    pub rid: String,
    pub active: bool,
}

/// What this participant may do, so the client shows only the controls that work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    pub publish: bool,
    pub chat: bool,
    pub admin: bool,
}

/// What this client may do in the chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatPermissions {
    /// Post general messages and questions.
    pub post: bool,
    /// Post notices.
    pub notice: bool,
    /// Mark questions answered and export them.
    pub moderate: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

pub use roomcast_sfu::LeaveReason;

/// An error sent to the client. `code` is stable and meant for programs; `message` is for
/// the person reading the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not JSON (or not a JSON object).
    BadJson,
    /// The `type` is not one this server knows.
    UnknownType,
    /// The `type` is known but a field is missing, of the wrong type, or unknown.
    BadMessage,
    /// Binary frames are not part of the protocol.
    BinaryNotSupported,
    /// The frame exceeds [`MAX_MESSAGE_BYTES`]; the socket is closed with 1009.
    MessageTooLarge,
    /// A message that needs `join` first.
    NotJoined,
    /// A second `join` on the same socket.
    AlreadyJoined,
    /// Room name or display name out of bounds.
    InvalidName,
    /// The SDP could not be parsed or negotiated.
    BadSdp,
    /// An `answer` with no server offer outstanding.
    NoPendingOffer,
    /// The client's `offer` crossed the server's own (glare). The server's offer wins: answer
    /// it, then send the offer again.
    OfferCollision,
    /// The ICE candidate could not be parsed.
    BadCandidate,
    /// The room is at its participant limit.
    RoomFull,
    /// The server could not do what was asked (a bug or an overload): see the server log.
    Internal,
    /// No valid access token for this room (missing, malformed, expired, badly signed, or for
    /// another room); the message says which.
    Unauthorized,
    /// The token is valid but lacks the grant the request needs (e.g. publish).
    Forbidden,
    /// The server hosts its limit of rooms (`--max-rooms`).
    TooManyRooms,
    /// More messages per second than `--max-message-rate` allows; this one was dropped.
    RateLimited,
    /// `kick`/`mute` named a participant or track that is not in this room, or
    /// `track_settings` a track this client does not receive.
    UnknownParticipant,
    /// `answer_question` named no question of this room.
    UnknownQuestion,
}

impl ProtocolError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProtocolError {
            code,
            message: message.into(),
        }
    }
}

/// Parse one text frame. Distinguishes "not JSON", "unknown type" and "bad fields" so the
/// client is told precisely what was wrong.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, ProtocolError> {
    parse_client_message_within(text, MAX_MESSAGE_BYTES)
}

/// [`parse_client_message`] with the server's configured size limit.
pub fn parse_client_message_within(
    text: &str,
    max_bytes: usize,
) -> Result<ClientMessage, ProtocolError> {
    if text.len() > max_bytes {
        return Err(ProtocolError::new(
            ErrorCode::MessageTooLarge,
            format!(
                "message of {} bytes exceeds the limit of {max_bytes} bytes",
                text.len()
            ),
        ));
    }
    match serde_json::from_str::<ClientMessage>(text) {
        Ok(message) => Ok(message),
        Err(parse_error) => Err(classify_parse_error(text, parse_error)),
    }
}

const KNOWN_TYPES: &[&str] = &[
    "join",
    "offer",
    "answer",
    "candidate",
    "leave",
    "kick",
    "mute",
    "set_stage",
    "chat_join",
    "chat",
    "answer_question",
    "track_settings",
];

fn classify_parse_error(text: &str, parse_error: serde_json::Error) -> ProtocolError {
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(_) => {
            return ProtocolError::new(
                ErrorCode::BadJson,
                format!("message is not valid JSON: {parse_error}"),
            );
        }
    };
    let Some(object) = value.as_object() else {
        return ProtocolError::new(ErrorCode::BadJson, "message must be a JSON object");
    };
    match object.get("type").and_then(|t| t.as_str()) {
        None => ProtocolError::new(
            ErrorCode::BadMessage,
            "message has no string field \"type\"",
        ),
        Some(kind) if !KNOWN_TYPES.contains(&kind) => ProtocolError::new(
            ErrorCode::UnknownType,
            format!(
                "unknown message type {kind:?}; known types: {}",
                KNOWN_TYPES.join(", ")
            ),
        ),
        Some(kind) => ProtocolError::new(
            ErrorCode::BadMessage,
            format!("malformed {kind:?} message: {parse_error}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_client_message() {
        assert_eq!(
            parse_client_message(r#"{"type":"join","room":"demo","name":"Ada"}"#).unwrap(),
            ClientMessage::Join {
                room: "demo".into(),
                name: "Ada".into(),
                token: None
            }
        );
        assert_eq!(
            parse_client_message(r#"{"type":"offer","sdp":"v=0"}"#).unwrap(),
            ClientMessage::Offer {
                sdp: "v=0".into(),
                sources: BTreeMap::new(),
                receive: BTreeMap::new()
            }
        );
        assert_eq!(
            parse_client_message(r#"{"type":"offer","sdp":"v=0","sources":{"2":"screen"}}"#)
                .unwrap(),
            ClientMessage::Offer {
                sdp: "v=0".into(),
                sources: BTreeMap::from([("2".into(), TrackSource::Screen)]),
                receive: BTreeMap::new()
            }
        );
        assert_eq!(
            parse_client_message(r#"{"type":"offer","sdp":"v=0","receive":{"2":7,"3":8}}"#)
                .unwrap(),
            ClientMessage::Offer {
                sdp: "v=0".into(),
                sources: BTreeMap::new(),
                receive: BTreeMap::from([("2".into(), TrackId(7)), ("3".into(), TrackId(8))])
            }
        );
        assert_eq!(
            parse_client_message(r#"{"type":"chat","kind":"question","text":"Why?"}"#).unwrap(),
            ClientMessage::Chat {
                kind: ChatKind::Question,
                text: "Why?".into()
            }
        );
        assert_eq!(
            parse_client_message(r#"{"type":"answer_question","id":7,"answered":true}"#).unwrap(),
            ClientMessage::AnswerQuestion {
                id: 7,
                answered: true
            }
        );
        assert_eq!(
            parse_client_message(r#"{"type":"chat_join","room":"r","name":"Ada"}"#).unwrap(),
            ClientMessage::ChatJoin {
                room: "r".into(),
                name: "Ada".into(),
                token: None
            }
        );
        assert_eq!(
            parse_client_message(r#"{"type":"answer","sdp":"v=0"}"#).unwrap(),
            ClientMessage::Answer { sdp: "v=0".into() }
        );
        assert_eq!(
            parse_client_message(r#"{"type":"candidate","candidate":"","sdp_mid":"0"}"#).unwrap(),
            ClientMessage::Candidate {
                candidate: String::new(),
                sdp_mid: Some("0".into())
            }
        );
        assert_eq!(
            parse_client_message(r#"{"type":"leave"}"#).unwrap(),
            ClientMessage::Leave {}
        );
    }

    #[test]
    fn not_json_is_bad_json() {
        let error = parse_client_message("{nope").unwrap_err();
        assert_eq!(error.code, ErrorCode::BadJson);
        assert_eq!(
            parse_client_message("[1,2]").unwrap_err().code,
            ErrorCode::BadJson
        );
    }

    #[test]
    fn unknown_type_is_named() {
        let error = parse_client_message(r#"{"type":"dance"}"#).unwrap_err();
        assert_eq!(error.code, ErrorCode::UnknownType);
        assert!(error.message.contains("dance"), "{}", error.message);
    }

    #[test]
    fn missing_or_extra_fields_are_bad_message() {
        assert_eq!(
            parse_client_message(r#"{"type":"join","room":"demo"}"#)
                .unwrap_err()
                .code,
            ErrorCode::BadMessage
        );
        assert_eq!(
            parse_client_message(r#"{"type":"offer","sdp":1}"#)
                .unwrap_err()
                .code,
            ErrorCode::BadMessage
        );
        assert_eq!(
            parse_client_message(r#"{"type":"leave","extra":true}"#)
                .unwrap_err()
                .code,
            ErrorCode::BadMessage
        );
        assert_eq!(
            parse_client_message(r#"{"room":"demo"}"#).unwrap_err().code,
            ErrorCode::BadMessage
        );
    }

    #[test]
    fn every_known_type_reports_bad_fields_not_unknown_type() {
        for kind in KNOWN_TYPES {
            let error =
                parse_client_message(&format!(r#"{{"type":"{kind}","bogus":1}}"#)).unwrap_err();
            assert_eq!(
                error.code,
                ErrorCode::BadMessage,
                "{kind}: {}",
                error.message
            );
        }
        // And every message type is listed.
        let error = parse_client_message(r#"{"type":"dance"}"#).unwrap_err();
        for kind in [
            "join",
            "chat_join",
            "offer",
            "answer",
            "candidate",
            "leave",
            "kick",
            "mute",
            "set_stage",
            "chat",
            "answer_question",
            "track_settings",
        ] {
            assert!(
                error.message.contains(kind),
                "{kind} missing: {}",
                error.message
            );
        }
    }

    #[test]
    fn bad_chat_kinds_are_bad_message() {
        let error =
            parse_client_message(r#"{"type":"chat","kind":"shout","text":"hi"}"#).unwrap_err();
        assert_eq!(error.code, ErrorCode::BadMessage);
    }

    #[test]
    fn oversize_is_refused_before_parsing() {
        let huge = format!(
            r#"{{"type":"offer","sdp":"{}"}}"#,
            "a".repeat(MAX_MESSAGE_BYTES)
        );
        assert_eq!(
            parse_client_message(&huge).unwrap_err().code,
            ErrorCode::MessageTooLarge
        );
    }

    #[test]
    fn server_messages_serialize_with_snake_case_type() {
        let json = serde_json::to_string(&ServerMessage::Error(ProtocolError::new(
            ErrorCode::NotJoined,
            "join first",
        )))
        .unwrap();
        assert_eq!(
            json,
            r#"{"type":"error","code":"not_joined","message":"join first"}"#
        );
        let json = serde_json::to_string(&ServerMessage::TrackUnpublished {
            participant_id: ParticipantId(3),
            track_id: TrackId(7),
        })
        .unwrap();
        assert_eq!(
            json,
            r#"{"type":"track_unpublished","participant_id":3,"track_id":7}"#
        );
    }
}
