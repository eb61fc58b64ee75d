//! Time-limited TURN credentials, as coturn's `use-auth-secret` checks them.
//!
//! "A REST API For Access To TURN Services" ([draft-uberti-behave-turn-rest]) lets a web
//! service hand out TURN credentials without telling the TURN server about each user: both
//! share one secret, and
//!
//! ```text
//! username   = "<expiry, Unix seconds>:<user>"
//! credential = base64(HMAC-SHA1(secret, username))
//! ```
//!
//! The TURN server recomputes the credential from the username it receives and refuses the
//! request once the expiry has passed. coturn does exactly this with `use-auth-secret` and
//! `static-auth-secret=<secret>` (its `realm` is free: the client learns it from the server's
//! challenge). coturn checks the expiry on every authenticated request, refreshes included, so
//! a relayed call ends when its credential expires: the lifetime must outlast the longest call.
//!
//! SHA-1 is what the draft and coturn use; HMAC-SHA1 is still a sound MAC. Everything here is
//! sans-IO: the current time is a parameter.
//!
//! ```
//! use roomcast_auth::turn::TurnConfig;
//! use std::time::Duration;
//!
//! let turn = TurnConfig::new(
//!     "the coturn static-auth-secret",
//!     vec!["turn:turn.example.com:3478?transport=udp".into()],
//!     Duration::from_secs(3600),
//! )
//! .unwrap();
//! let issued = turn.credentials("ada", 1_700_000_000);
//! assert_eq!(issued.username, "1700003600:ada");
//! assert_eq!(issued.expires_at, 1_700_003_600);
//! ```
//!
//! [draft-uberti-behave-turn-rest]: https://datatracker.ietf.org/doc/html/draft-uberti-behave-turn-rest-00

use std::fmt;
use std::time::Duration;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Default credential lifetime: a working day of calls, short enough that a leaked credential
/// goes stale the same day.
pub const DEFAULT_TTL: Duration = Duration::from_secs(12 * 3600);

/// What the server needs to issue TURN credentials: the secret shared with the TURN server,
/// the URLs clients use, and how long a credential lives. `Debug` does not show the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnConfig {
    secret: String,
    urls: Vec<String>,
    ttl: Duration,
}

/// Credentials for one user, valid until `expires_at` (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnCredentials {
    pub username: String,
    pub credential: String,
    pub expires_at: u64,
}

impl TurnConfig {
    /// Checks the settings: a non-empty secret, at least one URL, every URL a `turn:` or
    /// `turns:` URI ([RFC 7065]), a lifetime of at least one second. The error is a sentence
    /// for the operator.
    ///
    /// [RFC 7065]: https://www.rfc-editor.org/rfc/rfc7065
    pub fn new(
        secret: impl Into<String>,
        urls: Vec<String>,
        ttl: Duration,
    ) -> Result<Self, String> {
        let secret = secret.into();
        if secret.is_empty() {
            return Err("the TURN secret is empty".into());
        }
        if urls.is_empty() {
            return Err("no TURN URL given".into());
        }
        for url in &urls {
            validate_url(url)?;
        }
        if ttl.as_secs() == 0 {
            return Err("the TURN credential lifetime must be at least 1 s".into());
        }
        Ok(TurnConfig { secret, urls, ttl })
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Credentials for `user` (free text after the first `:`; keep it printable ASCII, it
    /// travels in STUN and HTTP headers), valid for the configured lifetime from `now_unix`.
    pub fn credentials(&self, user: &str, now_unix: u64) -> TurnCredentials {
        let expires_at = now_unix.saturating_add(self.ttl.as_secs());
        let username = format!("{expires_at}:{user}");
        let credential = credential(&self.secret, &username);
        TurnCredentials {
            username,
            credential,
            expires_at,
        }
    }
}

impl fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnConfig")
            .field("secret", &"<redacted>")
            .field("urls", &self.urls)
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// `base64(HMAC-SHA1(secret, username))`: the password the TURN server expects for
/// `username`.
pub fn credential(secret: &str, username: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    STANDARD.encode(hmac::sign(&key, username.as_bytes()))
}

/// `turn:` / `turns:` host [`:` port] [`?transport=udp|tcp`] (RFC 7065 §3.1).
pub fn validate_url(url: &str) -> Result<(), String> {
    let refuse = |why: &str| {
        Err(format!(
            "TURN URL {url:?} {why}; expected turn:HOST[:PORT][?transport=udp|tcp] or turns:…"
        ))
    };
    let Some(rest) = url
        .strip_prefix("turn:")
        .or_else(|| url.strip_prefix("turns:"))
    else {
        return refuse("does not start with turn: or turns:");
    };
    let (authority, query) = match rest.split_once('?') {
        Some((authority, query)) => (authority, Some(query)),
        None => (rest, None),
    };
    if let Some(query) = query
        && query != "transport=udp"
        && query != "transport=tcp"
    {
        return refuse("has a query other than transport=udp or transport=tcp");
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        match v6.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, port)) => match port.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return refuse("has text after the IPv6 address"),
            },
            None => return refuse("has an unclosed '['"),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    if !host_ok {
        return refuse("has no valid host");
    }
    if let Some(port) = port
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return refuse("has a port that is not 1 to 65535");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed independently while writing this test:
    /// `python3 -c 'import hmac,hashlib,base64; print(base64.b64encode(hmac.new(b"north-wind-4f8a",
    /// b"1700086400:ada", hashlib.sha1).digest()).decode())'`, and the same with
    /// `openssl dgst -sha1 -hmac north-wind-4f8a -binary | base64`.
    #[test]
    fn known_answer() {
        assert_eq!(
            credential("north-wind-4f8a", "1700086400:ada"),
            "F1zj8hGg1EdIGyM6NiXR2D1Ut4E="
        );
        let turn = TurnConfig::new(
            "north-wind-4f8a",
            vec!["turn:127.0.0.1:3478".into()],
            Duration::from_secs(86_400),
        )
        .unwrap();
        assert_eq!(
            turn.credentials("ada", 1_700_000_000),
            TurnCredentials {
                username: "1700086400:ada".into(),
                credential: "F1zj8hGg1EdIGyM6NiXR2D1Ut4E=".into(),
                expires_at: 1_700_086_400,
            }
        );
        // python3: hmac.new(b"roomcast-test-secret", b"1700000000:42", hashlib.sha1)
        assert_eq!(
            credential("roomcast-test-secret", "1700000000:42"),
            "76JsdkJ96w/6SxUArQ65j1E4VCA="
        );
    }

    #[test]
    fn urls() {
        for good in [
            "turn:turn.example.com",
            "turn:turn.example.com:3478?transport=udp",
            "turn:turn.example.com:3478?transport=tcp",
            "turns:turn.example.com:5349?transport=tcp",
            "turn:127.0.0.1:3478",
            "turn:[2001:db8::1]:3478?transport=udp",
            "turn:[::1]",
        ] {
            assert_eq!(validate_url(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "stun:stun.example.com:3478",
            "https://turn.example.com",
            "turn:",
            "turn::3478",
            "turn:host:0",
            "turn:host:70000",
            "turn:host:port",
            "turn:host:3478?transport=sctp",
            "turn://host:3478",
            "turn:user@host",
            "turn:[::1",
            "turn:[::1]x",
            " turn:host",
        ] {
            assert!(validate_url(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn config_checks() {
        let urls = || vec!["turn:127.0.0.1:3478".to_string()];
        let day = Duration::from_secs(86_400);
        assert!(TurnConfig::new("", urls(), day).is_err());
        assert!(TurnConfig::new("s", Vec::new(), day).is_err());
        assert!(TurnConfig::new("s", urls(), Duration::from_millis(500)).is_err());
        let error = TurnConfig::new("s", vec!["stun:x".into()], day).unwrap_err();
        assert!(error.contains("stun:x"), "{error}");
        let turn = TurnConfig::new("s3cret", urls(), day).unwrap();
        assert!(!format!("{turn:?}").contains("s3cret"));
    }
}
