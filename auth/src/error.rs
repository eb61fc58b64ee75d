//! Why a token was refused.

use std::fmt;

use crate::utc::Utc;
use crate::{Grant, LEEWAY_SECS};

/// Why a token was refused. [`TokenError::code`] is the stable code sent to clients; `Display`
/// is for the operator's log. Strings taken from an unverified token (`alg`, `iss`) are shown
/// escaped and shortened, so a hostile token cannot forge log lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Not three base64url parts, or the header or claims are not the expected JSON.
    Malformed { reason: String },
    /// The header's `alg` is not `HS256`.
    UnsupportedAlgorithm { alg: String },
    /// The signature does not match: the token was altered or signed with another secret.
    BadSignature,
    /// `iss` is not this server's API key.
    UnknownKey { iss: String },
    /// `exp` (plus the leeway) has passed.
    Expired { exp: u64, now: u64 },
    /// `nbf` (minus the leeway) has not come yet.
    NotYetValid { nbf: u64, now: u64 },
    /// The token is valid but names another room.
    WrongRoom { token_room: String, wanted: String },
    /// The token is valid but lacks a permission.
    MissingGrant { grant: Grant },
}

impl TokenError {
    /// The stable machine code: `malformed`, `unsupported_algorithm`, `bad_signature`,
    /// `unknown_key`, `expired`, `not_yet_valid`, `wrong_room` or `missing_grant`.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Malformed { .. } => "malformed",
            TokenError::UnsupportedAlgorithm { .. } => "unsupported_algorithm",
            TokenError::BadSignature => "bad_signature",
            TokenError::UnknownKey { .. } => "unknown_key",
            TokenError::Expired { .. } => "expired",
            TokenError::NotYetValid { .. } => "not_yet_valid",
            TokenError::WrongRoom { .. } => "wrong_room",
            TokenError::MissingGrant { .. } => "missing_grant",
        }
    }

    pub(crate) fn malformed(reason: impl Into<String>) -> Self {
        TokenError::Malformed {
            reason: reason.into(),
        }
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Malformed { reason } => write!(f, "malformed access token: {reason}"),
            TokenError::UnsupportedAlgorithm { alg } => write!(
                f,
                "access token uses signing algorithm {:?}; roomcast accepts only HS256",
                Untrusted(alg)
            ),
            TokenError::BadSignature => f.write_str(
                "access token signature does not match: the token was altered, or minted with \
                 a different API secret than this server's",
            ),
            TokenError::UnknownKey { iss } => write!(
                f,
                "access token was minted for API key {:?}, which is not this server's key",
                Untrusted(iss)
            ),
            TokenError::Expired { exp, now } => write!(
                f,
                "access token expired at {} ({} s ago, beyond the {LEEWAY_SECS} s leeway); \
                 mint a new one",
                Utc(*exp),
                now.saturating_sub(*exp)
            ),
            TokenError::NotYetValid { nbf, now } => write!(
                f,
                "access token is not valid before {} ({} s from now, beyond the {LEEWAY_SECS} s \
                 leeway); is the minting machine's clock ahead of the server's?",
                Utc(*nbf),
                nbf.saturating_sub(*now)
            ),
            TokenError::WrongRoom { token_room, wanted } => {
                write!(f, "access token is for room {token_room:?}, not {wanted:?}")
            }
            TokenError::MissingGrant { grant } => {
                write!(f, "access token does not grant {:?}", grant.as_str())
            }
        }
    }
}

impl std::error::Error for TokenError {}

/// A string from an unverified token, at most [`Untrusted::MAX_CHARS`] characters when shown
/// with `{:?}` (which also escapes control characters).
struct Untrusted<'a>(&'a str);

impl Untrusted<'_> {
    const MAX_CHARS: usize = 64;
}

impl fmt::Debug for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(Self::MAX_CHARS) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(f, "{:?}…", &self.0[..cut]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        let cases = [
            (TokenError::malformed("x"), "malformed"),
            (
                TokenError::UnsupportedAlgorithm { alg: "none".into() },
                "unsupported_algorithm",
            ),
            (TokenError::BadSignature, "bad_signature"),
            (TokenError::UnknownKey { iss: "k".into() }, "unknown_key"),
            (TokenError::Expired { exp: 1, now: 2 }, "expired"),
            (TokenError::NotYetValid { nbf: 2, now: 1 }, "not_yet_valid"),
            (
                TokenError::WrongRoom {
                    token_room: "a".into(),
                    wanted: "b".into(),
                },
                "wrong_room",
            ),
            (
                TokenError::MissingGrant {
                    grant: Grant::Admin,
                },
                "missing_grant",
            ),
        ];
        for (error, code) in cases {
            assert_eq!(error.code(), code, "{error}");
        }
    }

    #[test]
    fn expired_says_when() {
        let error = TokenError::Expired {
            exp: 1_700_000_000,
            now: 1_700_000_100,
        };
        assert_eq!(
            error.to_string(),
            "access token expired at 2023-11-14 22:13:20 UTC (100 s ago, beyond the 10 s \
             leeway); mint a new one"
        );
    }

    #[test]
    fn missing_grant_names_the_grant() {
        let error = TokenError::MissingGrant {
            grant: Grant::Publish,
        };
        assert_eq!(error.to_string(), "access token does not grant \"publish\"");
    }

    #[test]
    fn untrusted_strings_are_escaped_and_shortened() {
        let error = TokenError::UnknownKey {
            iss: format!("evil\n2024-01-01 INFO forged{}", "x".repeat(200)),
        };
        let text = error.to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(text.contains(r"evil\n2024"), "{text}");
        assert!(text.len() < 200, "{text}");
    }
}
