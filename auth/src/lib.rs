//! Access tokens: who may join which room, and do what there.
//! (Also TURN credentials for the TURN server clients relay through: [`turn`].)
//!
//! A roomcast access token is a JSON Web Token ([RFC 7519]) in the JWS compact serialization
//! ([RFC 7515] §7.1), signed with HMAC-SHA256 (`HS256`, [RFC 7518] §3.2) using the server's API
//! secret, in the spirit of LiveKit's tokens. Whoever holds the secret (your backend, or
//! `roomcast token create`) mints tokens; the server verifies them. Nothing else is shared.
//!
//! # Format
//!
//! ```text
//! base64url(header) "." base64url(payload) "." base64url(HMAC-SHA256(secret, header "." payload))
//! ```
//!
//! base64url without padding. The header is `{"alg":"HS256","typ":"JWT"}`; any other `alg`
//! (`none`, `HS512`, `RS256`, …) is refused with [`TokenError::UnsupportedAlgorithm`] before
//! the signature is looked at, and a header with `crit` extensions is refused as malformed
//! (RFC 7515 §4.1.11: we understand none). Tokens longer than [`MAX_TOKEN_LEN`] bytes are
//! refused unread.
//!
//! # Claims
//!
//! | claim | type | meaning |
//! |---|---|---|
//! | `iss` | string, required | the API key; must equal this server's key |
//! | `sub` | string, required, non-empty | the participant's identity |
//! | `name` | string, optional | display name |
//! | `room` | string, required, non-empty | the one room the token opens |
//! | `exp` | integer seconds since the Unix epoch, required | the token is refused from then on |
//! | `nbf` | integer seconds, optional | the token is refused before then |
//! | `iat` | integer seconds, required | when it was minted (informational) |
//! | `grants` | object, optional | `publish`, `subscribe`, `chat`, `admin`, `ingest`: booleans, absent = `false` |
//!
//! Unknown claims and unknown grant names are ignored, so a newer minting side can add claims
//! without breaking an older server (an unknown grant never grants anything here).
//!
//! # Time and leeway
//!
//! [`verify`] takes the current time as a parameter and never reads a clock. It accepts a
//! token while `nbf - LEEWAY_SECS <= now < exp + LEEWAY_SECS`: [`LEEWAY_SECS`] (10 s) absorbs
//! clock skew between the machine that minted the token and the server. It is not a grace
//! period: keep `exp` honest.
//!
//! # Errors, for the operator at 3 a.m.
//!
//! Each [`TokenError`] has a stable machine code ([`TokenError::code`]) that clients receive in
//! signaling errors and RTMP refusals, and a `Display` text meant for logs.
//!
//! | code | what happened | what to check |
//! |---|---|---|
//! | `malformed` | not three base64url parts, or the header/claims are not the JSON above | the client sent something that is not a roomcast token (truncated copy-paste, a URL-encoded token, a token from another system) |
//! | `unsupported_algorithm` | header `alg` is not `HS256` | the minting side uses another JWT library setting (`none` is an attack, not a bug) |
//! | `bad_signature` | signature does not match | the token was edited, or minted with a different API secret than the server's; compare secrets (not keys) |
//! | `unknown_key` | `iss` is not this server's API key | the token was minted for another deployment or with an old key; compare the keys |
//! | `expired` | now is past `exp` (+ leeway); the text says when | mint a fresh token; if tokens expire immediately, a clock is wrong |
//! | `not_yet_valid` | now is before `nbf` (− leeway) | the minting machine's clock is ahead of the server's |
//! | `wrong_room` | valid token, other room ([`require_room`]) | the client joined a room its token does not name |
//! | `missing_grant` | valid token without the needed grant ([`require_grant`]); the text names it | mint with the grant, e.g. `--grant publish` |
//!
//! The order of checks is fixed: framing, algorithm, claims JSON, key, signature, time. So
//! `unknown_key` is reported for a token from another deployment even though its signature
//! would not match either; the claims are parsed before the signature is checked only to read
//! `iss`, and nothing from an unverified token is returned.
//!
//! # Example
//!
//! ```
//! use roomcast_auth::{ApiCredentials, Claims, Grant, mint, require_grant, require_room, verify};
//! use std::time::Duration;
//!
//! let credentials = ApiCredentials::new("APIkey", "a secret of at least thirty-two bytes");
//! let now = 1_700_000_000;
//! let claims = Claims::new("ada", "demo", now, Duration::from_secs(3600))
//!     .with_grants([Grant::Publish, Grant::Subscribe]);
//! let token = mint(&credentials, &claims);
//!
//! let verified = verify(&credentials, &token, now + 60).unwrap();
//! require_room(&verified, "demo").unwrap();
//! require_grant(&verified, Grant::Publish).unwrap();
//! assert_eq!(require_grant(&verified, Grant::Admin).unwrap_err().code(), "missing_grant");
//! ```
//!
//! [RFC 7515]: https://www.rfc-editor.org/rfc/rfc7515
//! [RFC 7518]: https://www.rfc-editor.org/rfc/rfc7518
//! [RFC 7519]: https://www.rfc-editor.org/rfc/rfc7519

#![forbid(unsafe_code)]

mod claims;
mod error;
mod jwt;
pub mod turn;
mod utc;

pub use claims::{Claims, Grant, Grants, UnknownGrant};
pub use error::TokenError;
pub use jwt::{ApiCredentials, mint, require_grant, require_room, verify};
pub use utc::Utc;

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 10;

/// Longest token [`verify`] reads, in bytes. A token with a long display name and every grant
/// is about 400 bytes; the limit only bounds the work an unauthenticated client can cause.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Shortest API secret that gives HS256 its full strength: RFC 7518 §3.2 requires a key at
/// least as long as the hash (256 bits). [`mint`] and [`verify`] work with shorter secrets
/// (handy in tests); tools that accept a secret from an operator should warn below this.
pub const MIN_SECRET_LEN: usize = 32;
