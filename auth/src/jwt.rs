//! Minting and verifying: the JWS compact framing (RFC 7515 §7.1) around HMAC-SHA256.

use std::fmt;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};

use crate::{Claims, Grant, LEEWAY_SECS, MAX_TOKEN_LEN, TokenError};

/// The only header roomcast writes.
const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// The API key (public: it is the `iss` of every token) and secret (the HMAC key).
/// `Debug` does not show the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiCredentials {
    pub key: String,
    pub secret: String,
}

impl ApiCredentials {
    pub fn new(key: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            secret: secret.into(),
        }
    }

    fn hmac_key(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, self.secret.as_bytes())
    }
}

impl fmt::Debug for ApiCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiCredentials")
            .field("key", &self.key)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Signs `claims` with the credentials' secret. `iss` is always the credentials' key
/// (whatever `claims.iss` says), so a token cannot name a key it was not signed with.
///
/// It does not check the claims: a token with an empty `sub` or `room` is minted, and then
/// refused by [`verify`] as malformed.
pub fn mint(credentials: &ApiCredentials, claims: &Claims) -> String {
    let claims = Claims {
        iss: credentials.key.clone(),
        ..claims.clone()
    };
    let payload = serde_json::to_vec(&claims)
        .expect("Claims holds only strings, integers and booleans, which always serialize");
    let mut token = String::with_capacity(64 + payload.len() * 4 / 3);
    URL_SAFE_NO_PAD.encode_string(HEADER, &mut token);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
    let tag = hmac::sign(&credentials.hmac_key(), token.as_bytes());
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(tag.as_ref(), &mut token);
    token
}

/// Checks `token` against the credentials at time `now_unix` (seconds since the Unix epoch)
/// and returns its claims. Checks, in order: framing, algorithm, claims JSON, `iss`,
/// signature (constant-time), non-empty `sub` and `room`, `nbf` and `exp` with
/// [`LEEWAY_SECS`]. Room and grants are the caller's: [`require_room`], [`require_grant`].
pub fn verify(
    credentials: &ApiCredentials,
    token: &str,
    now_unix: u64,
) -> Result<Claims, TokenError> {
    if token.is_empty() {
        return Err(TokenError::malformed("the token is empty"));
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::malformed(format!(
            "{} bytes long, more than the {MAX_TOKEN_LEN} bytes accepted",
            token.len()
        )));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::malformed(format!(
            "expected three base64url parts separated by '.', found {}",
            token.split('.').count()
        )));
    };

    let header: Header = decode_json(header, "header")?;
    if header.alg != "HS256" {
        return Err(TokenError::UnsupportedAlgorithm { alg: header.alg });
    }
    if header.crit.is_some() {
        return Err(TokenError::malformed(
            "the header lists critical extensions (crit), which roomcast does not implement",
        ));
    }
    // Parsed before the signature is checked only to tell `unknown_key` from `bad_signature`;
    // nothing is returned unless the signature matches.
    let claims: Claims = decode_json(payload, "claims")?;
    if claims.iss != credentials.key {
        return Err(TokenError::UnknownKey { iss: claims.iss });
    }
    let signature = decode_base64(signature, "signature")?;
    let signing_input = &token[..header_and_payload_len(token)];
    hmac::verify(
        &credentials.hmac_key(),
        signing_input.as_bytes(),
        &signature,
    )
    .map_err(|_| TokenError::BadSignature)?;

    if claims.sub.is_empty() {
        return Err(TokenError::malformed("the identity (sub) is empty"));
    }
    if claims.room.is_empty() {
        return Err(TokenError::malformed("the room is empty"));
    }
    if let Some(nbf) = claims.nbf
        && now_unix.saturating_add(LEEWAY_SECS) < nbf
    {
        return Err(TokenError::NotYetValid { nbf, now: now_unix });
    }
    if now_unix >= claims.exp.saturating_add(LEEWAY_SECS) {
        return Err(TokenError::Expired {
            exp: claims.exp,
            now: now_unix,
        });
    }
    Ok(claims)
}

/// `Ok` if the (verified) claims name `room`, else [`TokenError::WrongRoom`].
pub fn require_room(claims: &Claims, room: &str) -> Result<(), TokenError> {
    if claims.room == room {
        Ok(())
    } else {
        Err(TokenError::WrongRoom {
            token_room: claims.room.clone(),
            wanted: room.to_owned(),
        })
    }
}

/// `Ok` if the (verified) claims carry `grant`, else [`TokenError::MissingGrant`].
pub fn require_grant(claims: &Claims, grant: Grant) -> Result<(), TokenError> {
    if claims.grants.allows(grant) {
        Ok(())
    } else {
        Err(TokenError::MissingGrant { grant })
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    crit: Option<IgnoredAny>,
}

/// Length of `header.payload`, the signed part. The caller has checked there are two dots.
fn header_and_payload_len(token: &str) -> usize {
    token
        .rfind('.')
        .expect("verify only calls this after splitting the token into three parts")
}

fn decode_base64(part: &str, what: &str) -> Result<Vec<u8>, TokenError> {
    // URL_SAFE_NO_PAD refuses `=` padding, the `+`/`/` alphabet and non-zero trailing bits,
    // so each byte string has exactly one encoding and a signature cannot be re-spelled.
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|e| TokenError::malformed(format!("the {what} is not base64url: {e}")))
}

fn decode_json<T: DeserializeOwned>(part: &str, what: &str) -> Result<T, TokenError> {
    let bytes = decode_base64(part, what)?;
    // Both must be JSON objects (RFC 7515 §4, RFC 7519 §7.2); serde would also take a struct
    // from an array of its fields in order.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(TokenError::malformed(format!(
            "the {what} is not a JSON object"
        )));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        let mut detail = e.to_string();
        if let Some((cut, _)) = detail.char_indices().nth(160) {
            detail.truncate(cut);
            detail.push('…');
        }
        TokenError::malformed(format!("the {what} is not the expected JSON: {detail}"))
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn credentials() -> ApiCredentials {
        ApiCredentials::new("APItest", "test-secret-0123456789abcdef-0123456789")
    }

    fn claims() -> Claims {
        Claims::new("ada", "demo", NOW, Duration::from_secs(3600))
            .with_name("Ada Lovelace")
            .with_grants([Grant::Publish, Grant::Subscribe])
    }

    fn b64(bytes: impl AsRef<[u8]>) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A token with any header and claims JSON, correctly signed with `secret`.
    fn signed(header: &str, claims: &str, secret: &str) -> String {
        let input = format!("{}.{}", b64(header), b64(claims));
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        let tag = hmac::sign(&key, input.as_bytes());
        format!("{input}.{}", b64(tag))
    }

    fn code(result: Result<Claims, TokenError>) -> &'static str {
        match result {
            Ok(claims) => panic!("expected an error, got {claims:?}"),
            Err(error) => error.code(),
        }
    }

    #[test]
    fn mint_then_verify_round_trip() {
        let token = mint(&credentials(), &claims());
        let verified = verify(&credentials(), &token, NOW).unwrap();
        assert_eq!(
            verified,
            Claims {
                iss: "APItest".into(),
                ..claims()
            }
        );
        assert_eq!(token.split('.').count(), 3);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        );
    }

    #[test]
    fn mint_sets_iss_from_the_credentials() {
        let forged = Claims {
            iss: "someone-else".into(),
            ..claims()
        };
        let verified = verify(&credentials(), &mint(&credentials(), &forged), NOW).unwrap();
        assert_eq!(verified.iss, "APItest");
    }

    #[test]
    fn optional_claims_are_optional() {
        let minimal =
            r#"{"iss":"APItest","sub":"ada","room":"demo","exp":1700003600,"iat":1700000000}"#;
        let token = signed(r#"{"alg":"HS256"}"#, minimal, &credentials().secret);
        let verified = verify(&credentials(), &token, NOW).unwrap();
        assert_eq!(verified.name, None);
        assert_eq!(verified.nbf, None);
        assert_eq!(verified.grants.iter().count(), 0);
    }

    #[test]
    fn each_grant_present_and_absent() {
        for grant in Grant::ALL {
            let with = claims().with_grants([grant]);
            let verified = verify(&credentials(), &mint(&credentials(), &with), NOW).unwrap();
            assert_eq!(require_grant(&verified, grant), Ok(()), "{grant}");

            let without = claims().with_grants(Grant::ALL.into_iter().filter(|&g| g != grant));
            let verified = verify(&credentials(), &mint(&credentials(), &without), NOW).unwrap();
            assert_eq!(
                require_grant(&verified, grant),
                Err(TokenError::MissingGrant { grant }),
                "{grant}"
            );
        }
    }

    #[test]
    fn room_must_match_exactly() {
        let verified = verify(&credentials(), &mint(&credentials(), &claims()), NOW).unwrap();
        assert_eq!(require_room(&verified, "demo"), Ok(()));
        for other in ["Demo", "demo ", "demo2", ""] {
            let error = require_room(&verified, other).unwrap_err();
            assert_eq!(error.code(), "wrong_room");
            assert_eq!(
                error.to_string(),
                format!("access token is for room \"demo\", not {other:?}")
            );
        }
    }

    #[test]
    fn expired_after_exp_plus_leeway() {
        let token = mint(&credentials(), &claims());
        let exp = NOW + 3600;
        assert!(verify(&credentials(), &token, exp).is_ok());
        assert!(verify(&credentials(), &token, exp + LEEWAY_SECS - 1).is_ok());
        assert_eq!(
            verify(&credentials(), &token, exp + LEEWAY_SECS),
            Err(TokenError::Expired {
                exp,
                now: exp + LEEWAY_SECS
            })
        );
        assert_eq!(code(verify(&credentials(), &token, u64::MAX)), "expired");
    }

    #[test]
    fn not_yet_valid_before_nbf_minus_leeway() {
        let nbf = NOW + 600;
        let early = Claims {
            nbf: Some(nbf),
            ..claims()
        };
        let token = mint(&credentials(), &early);
        assert!(verify(&credentials(), &token, nbf).is_ok());
        assert!(verify(&credentials(), &token, nbf - LEEWAY_SECS).is_ok());
        assert_eq!(
            verify(&credentials(), &token, nbf - LEEWAY_SECS - 1),
            Err(TokenError::NotYetValid {
                nbf,
                now: nbf - LEEWAY_SECS - 1
            })
        );
        assert_eq!(code(verify(&credentials(), &token, 0)), "not_yet_valid");
    }

    #[test]
    fn tampered_claims_keep_the_signature_and_fail() {
        let token = mint(&credentials(), &claims());
        let (input, signature) = token.rsplit_once('.').unwrap();
        let (header, payload) = input.split_once('.').unwrap();
        let json = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        for (from, to) in [
            (r#""admin":false"#, r#""admin":true"#),
            (r#""room":"demo""#, r#""room":"other""#),
            (r#""sub":"ada""#, r#""sub":"bob""#),
            (r#""exp":1700003600"#, r#""exp":1800003600"#),
        ] {
            assert!(json.contains(from), "{json} lacks {from}");
            let forged = format!("{header}.{}.{signature}", b64(json.replace(from, to)));
            assert_eq!(
                verify(&credentials(), &forged, NOW),
                Err(TokenError::BadSignature),
                "{to}"
            );
        }
    }

    #[test]
    fn another_secret_is_a_bad_signature() {
        let other = ApiCredentials::new("APItest", "another-secret-0123456789abcdef-012345");
        let token = mint(&other, &claims());
        assert_eq!(
            verify(&credentials(), &token, NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn bad_signature_bytes() {
        let token = mint(&credentials(), &claims());
        let (input, signature) = token.rsplit_once('.').unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(signature).unwrap();
        bytes[0] ^= 1;
        for forged in [
            format!("{input}.{}", b64(&bytes)),
            format!("{input}.{}", b64(&bytes[..31])),
            format!("{input}."),
        ] {
            assert_eq!(code(verify(&credentials(), &forged, NOW)), "bad_signature");
        }
    }

    #[test]
    fn a_signature_has_one_spelling() {
        // 32 bytes are 43 base64 characters; the last carries 2 bits of padding that must be
        // zero. Setting one gives another string for the same bytes to a lenient decoder.
        let token = mint(&credentials(), &claims());
        let last = token.chars().last().unwrap();
        let index = URL_SAFE_NO_PAD_ALPHABET.find(last).unwrap();
        let respelled = URL_SAFE_NO_PAD_ALPHABET.as_bytes()[index ^ 1] as char;
        assert_ne!(last, respelled);
        let forged = format!("{}{respelled}", &token[..token.len() - 1]);
        assert!(verify(&credentials(), &forged, NOW).is_err());
    }

    const URL_SAFE_NO_PAD_ALPHABET: &str =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    #[test]
    fn another_key_is_unknown() {
        // Same secret, other key: the signature would match, the key does not.
        let token = mint(
            &ApiCredentials::new("APIother", credentials().secret),
            &claims(),
        );
        assert_eq!(
            verify(&credentials(), &token, NOW),
            Err(TokenError::UnknownKey {
                iss: "APIother".into()
            })
        );
        // Another deployment altogether: reported as the key, the more useful of the two.
        let token = mint(&ApiCredentials::new("APIother", "x"), &claims());
        assert_eq!(code(verify(&credentials(), &token, NOW)), "unknown_key");
    }

    #[test]
    fn only_hs256_is_accepted() {
        let claims_json = serde_json::to_string(&Claims {
            iss: "APItest".into(),
            ..claims()
        })
        .unwrap();
        let secret = &credentials().secret;
        for alg in [
            "none", "None", "HS512", "HS384", "RS256", "ES256", "hs256", "",
        ] {
            let header = format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#);
            // Signed correctly with our secret, so only the algorithm is wrong.
            let token = signed(&header, &claims_json, secret);
            assert_eq!(
                verify(&credentials(), &token, NOW),
                Err(TokenError::UnsupportedAlgorithm { alg: alg.into() })
            );
        }
        // The classic `alg: none` attack: empty signature.
        let token = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&claims_json)
        );
        assert_eq!(
            code(verify(&credentials(), &token, NOW)),
            "unsupported_algorithm"
        );
    }

    #[test]
    fn garbage_is_malformed() {
        let token = mint(&credentials(), &claims());
        let (header, rest) = token.split_once('.').unwrap();
        let secret = &credentials().secret;
        let cases = [
            String::new(),
            "garbage".into(),
            "a.b".into(),
            "a.b.c.d".into(),
            "...".into(),
            format!("{token}."),
            format!("{token}.{token}"),
            format!("!!!.{rest}"),
            format!("{header}.***.sig"),
            format!("{header}=.{rest}"),
            format!("{}.{rest}", header.replace('e', "+")),
            format!("{}.{rest}", b64("not json")),
            format!("{}.{rest}", b64("[\"HS256\"]")),
            signed(
                r#"{"alg":"HS256"}"#,
                r#"["APItest","ada",null,"demo",1700003600,null,0,{}]"#,
                secret,
            ),
            format!("{}.{rest}", b64("{\"typ\":\"JWT\"}")),
            signed(r#"{"alg":"HS256"}"#, "not json", secret),
            signed(r#"{"alg":"HS256"}"#, r#"{"iss":"APItest"}"#, secret),
            signed(
                r#"{"alg":"HS256"}"#,
                r#"{"iss":"APItest","sub":"ada","room":"demo","exp":"soon","iat":0}"#,
                secret,
            ),
            signed(
                r#"{"alg":"HS256"}"#,
                r#"{"iss":"APItest","sub":"ada","room":"demo","exp":1.7e9,"iat":0}"#,
                secret,
            ),
            signed(
                r#"{"alg":"HS256"}"#,
                r#"{"iss":"APItest","sub":"ada","room":"demo","room":"admin","exp":1700003600,"iat":0}"#,
                secret,
            ),
            signed(
                r#"{"alg":"HS256","crit":["exp"]}"#,
                r#"{"iss":"APItest","sub":"ada","room":"demo","exp":1700003600,"iat":0}"#,
                secret,
            ),
            signed(
                r#"{"alg":"HS256"}"#,
                r#"{"iss":"APItest","sub":"","room":"demo","exp":1700003600,"iat":0}"#,
                secret,
            ),
            signed(
                r#"{"alg":"HS256"}"#,
                r#"{"iss":"APItest","sub":"ada","room":"","exp":1700003600,"iat":0}"#,
                secret,
            ),
            "a".repeat(MAX_TOKEN_LEN + 1),
        ];
        for case in cases {
            let result = verify(&credentials(), &case, NOW);
            assert_eq!(code(result), "malformed", "{case}");
        }
    }

    #[test]
    fn oversized_token_is_refused_before_parsing() {
        let huge = Claims {
            name: Some("x".repeat(MAX_TOKEN_LEN)),
            ..claims()
        };
        let error = verify(&credentials(), &mint(&credentials(), &huge), NOW).unwrap_err();
        assert!(
            error.to_string().contains("more than the 8192 bytes"),
            "{error}"
        );
    }

    /// Minted by an independent implementation (Python's `hmac`/`base64`/`json`, checked with
    /// `openssl dgst -sha256 -hmac … -binary | basenc --base64url`): other header field order,
    /// other claim order, a grant left out and an unknown claim (`video`).
    #[test]
    fn known_answer_from_another_implementation() {
        const TOKEN: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.\
            eyJncmFudHMiOnsicHVibGlzaCI6dHJ1ZSwic3Vic2NyaWJlIjp0cnVlfSwicm9vbSI6ImthdC1yb29tIiwic3ViIjoiZ3JhY2UiLCJuYW1lIjoiR3JhY2UgSG9wcGVyIiwiaXNzIjoiQVBJa2F0IiwiaWF0IjoxNzAwMDAwMDAwLCJuYmYiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMzYwMCwidmlkZW8iOnsicm9vbUpvaW4iOnRydWV9fQ.\
            vMTn7tvTXPrT3fGPzgGyNUhbibgAWlhhsv3hk8H6bIk";
        let credentials = ApiCredentials::new("APIkat", "kat-secret-0123456789abcdef-0123456789");
        let verified = verify(&credentials, TOKEN, 1_700_000_100).unwrap();
        assert_eq!(
            verified,
            Claims {
                iss: "APIkat".into(),
                sub: "grace".into(),
                name: Some("Grace Hopper".into()),
                room: "kat-room".into(),
                exp: 1_700_003_600,
                nbf: Some(1_700_000_000),
                iat: 1_700_000_000,
                grants: [Grant::Publish, Grant::Subscribe].into_iter().collect(),
            }
        );
        let wrong_secret = ApiCredentials::new("APIkat", "kat-secret-0123456789abcdef-012345678");
        assert_eq!(
            verify(&wrong_secret, TOKEN, 1_700_000_100),
            Err(TokenError::BadSignature)
        );
    }

    /// `mint` writes the header every JWT library writes for HS256, byte for byte.
    #[test]
    fn mint_header_is_the_standard_one() {
        let token = mint(&credentials(), &claims());
        assert!(token.starts_with("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."));
    }

    #[test]
    fn debug_hides_the_secret() {
        let text = format!("{:?}", credentials());
        assert!(text.contains("APItest"));
        assert!(!text.contains("test-secret"), "{text}");
    }
}
