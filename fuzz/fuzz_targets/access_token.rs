//! Access tokens. Any string given to `verify` is refused without a panic (or, if it ever
//! verified, carries only what `verify` promises). And the same bytes read as claims: the
//! minted token verifies exactly inside its time window, and changing any one of its
//! characters gets it refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast_auth::{
    ApiCredentials, Claims, Grant, LEEWAY_SECS, MAX_TOKEN_LEN, TokenError, mint, verify,
};
use std::time::Duration;

const NOW: u64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    let credentials = ApiCredentials::new("APIfuzz", "fuzz-secret-0123456789abcdef-012345");
    if let Ok(text) = std::str::from_utf8(data) {
        match verify(&credentials, text, NOW) {
            Ok(claims) => {
                assert_eq!(claims.iss, credentials.key);
                assert!(!claims.sub.is_empty() && !claims.room.is_empty());
            }
            Err(error) => assert!(!error.code().is_empty() && !error.to_string().is_empty()),
        }
    }
    minted_tokens_verify_exactly_when_they_should(&credentials, data);
});

fn minted_tokens_verify_exactly_when_they_should(credentials: &ApiCredentials, data: &[u8]) {
    let number = |at: usize| {
        let mut bytes = [0u8; 8];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = data.get(at + i).copied().unwrap_or(0);
        }
        u64::from_le_bytes(bytes)
    };
    let (ttl, nbf_offset, check_offset) = (number(0) % 100_000, number(8) % 1_000, number(16));
    let flags = data.get(24).copied().unwrap_or(0);
    let text = String::from_utf8_lossy(data.get(25..).unwrap_or_default());
    let mut fields = text.splitn(3, '\u{1}');
    let (sub, room) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));

    let mut claims = Claims::new(sub, room, NOW, Duration::from_secs(ttl)).with_grants(
        Grant::ALL
            .into_iter()
            .enumerate()
            .filter(|(i, _)| flags & (1 << i) != 0)
            .map(|(_, grant)| grant),
    );
    claims.name = fields.next().map(str::to_owned);
    if flags & 0x80 != 0 {
        claims.nbf = Some(NOW + nbf_offset);
    }
    let token = mint(credentials, &claims);
    let expected_claims = Claims {
        iss: credentials.key.clone(),
        ..claims.clone()
    };

    let window_start = claims.nbf.unwrap_or(0).saturating_sub(LEEWAY_SECS);
    let window_end = claims.exp + LEEWAY_SECS;
    let check_times = [
        NOW,
        window_start.saturating_sub(1),
        window_start,
        window_end - 1,
        window_end,
        NOW.wrapping_add(check_offset),
    ];
    for now in check_times {
        let expected = if token.len() > MAX_TOKEN_LEN || sub.is_empty() || room.is_empty() {
            Err("malformed")
        } else if now < window_start {
            Err("not_yet_valid")
        } else if now >= window_end {
            Err("expired")
        } else {
            Ok(())
        };
        let result = verify(credentials, &token, now);
        match (&result, expected) {
            (Ok(verified), Ok(())) => assert_eq!(verified, &expected_claims),
            (Err(error), Err(code)) => assert_eq!(error.code(), code, "{error}"),
            _ => panic!("at {now}: expected {expected:?}, got {result:?} for {token}"),
        }
    }

    // One character changed anywhere (header, claims, signature, a dot) must be refused.
    if token.len() <= MAX_TOKEN_LEN {
        let at = (number(0) as usize) % token.len();
        let original = token.as_bytes()[at];
        let replacement = [b'A', b'g', b'-', b'_', b'.', b'Q', b'w', b'0']
            .into_iter()
            .cycle()
            .skip(flags as usize % 8)
            .find(|&b| b != original)
            .expect("the candidates hold more than one distinct byte");
        let mut mutated = token.clone().into_bytes();
        mutated[at] = replacement;
        let mutated = String::from_utf8(mutated).expect("tokens are ASCII");
        let result: Result<Claims, TokenError> = verify(credentials, &mutated, NOW);
        assert!(result.is_err(), "{mutated} (byte {at} of {token}) verified");
    }
}
