//! `roomcast token create`, run as a user would: the printed token verifies with the same
//! credentials and carries what the flags asked for.

use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use roomcast_auth::{ApiCredentials, Claims, Grant, require_grant, require_room, verify};

const KEY: &str = "APIcli";
const SECRET: &str = "cli-test-secret-0123456789abcdef-0123";

fn roomcast(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_roomcast"));
    command
        .args(args)
        .env_remove("ROOMCAST_API_KEY")
        .env_remove("ROOMCAST_API_SECRET");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("the roomcast binary runs")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Runs `token create` with `args`, checks stdout is the token alone, verifies it.
fn create(args: &[&str], env: &[(&str, &str)]) -> Claims {
    let before = unix_now();
    let mut all = vec!["token", "create"];
    all.extend_from_slice(args);
    let output = roomcast(&all, env);
    let after = unix_now();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{all:?} failed: {stderr}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let token = stdout
        .strip_suffix('\n')
        .expect("the token ends with a newline");
    assert!(
        !token.is_empty() && !token.contains(char::is_whitespace),
        "stdout must be the token alone: {stdout:?}"
    );
    let claims = verify(&ApiCredentials::new(KEY, SECRET), token, after)
        .unwrap_or_else(|e| panic!("{e}: {token}"));
    assert!((before..=after).contains(&claims.iat), "{claims:?}");
    claims
}

#[test]
fn flags_end_up_in_the_token() {
    let claims = create(
        &[
            "--api-key",
            KEY,
            "--api-secret",
            SECRET,
            "--room",
            "stage",
            "--identity",
            "host-1",
            "--name",
            "Ada Lovelace",
            "--grant",
            "publish,admin",
            "--grant",
            "ingest",
            "--ttl",
            "2h",
        ],
        &[],
    );
    assert_eq!(claims.iss, KEY);
    assert_eq!(claims.sub, "host-1");
    assert_eq!(claims.name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(require_room(&claims, "stage"), Ok(()));
    assert_eq!(claims.exp - claims.iat, 2 * 3600);
    assert_eq!(claims.nbf, None);
    for (grant, granted) in [
        (Grant::Publish, true),
        (Grant::Admin, true),
        (Grant::Ingest, true),
        (Grant::Subscribe, false),
        (Grant::Chat, false),
    ] {
        assert_eq!(require_grant(&claims, grant).is_ok(), granted, "{grant}");
    }
}

#[test]
fn defaults_are_a_viewer_for_six_hours_with_credentials_from_the_environment() {
    let claims = create(
        &["--room", "demo", "--identity", "viewer"],
        &[("ROOMCAST_API_KEY", KEY), ("ROOMCAST_API_SECRET", SECRET)],
    );
    assert_eq!(claims.room, "demo");
    assert_eq!(claims.name, None);
    assert_eq!(claims.exp - claims.iat, 6 * 3600);
    assert_eq!(
        claims.grants.iter().collect::<Vec<_>>(),
        [Grant::Subscribe, Grant::Chat]
    );
}

#[test]
fn ttl_units() {
    for (ttl, seconds) in [("30s", 30), ("15m", 900), ("7d", 7 * 86_400)] {
        let claims = create(
            &["--room", "r", "--identity", "i", "--ttl", ttl],
            &[("ROOMCAST_API_KEY", KEY), ("ROOMCAST_API_SECRET", SECRET)],
        );
        assert_eq!(claims.exp - claims.iat, seconds, "{ttl}");
    }
}

#[test]
fn mistakes_print_no_token() {
    let env = [("ROOMCAST_API_KEY", KEY), ("ROOMCAST_API_SECRET", SECRET)];
    for (args, complaint) in [
        (
            &["--room", "r", "--identity", "i", "--grant", "publsh"][..],
            "publsh",
        ),
        (&["--room", "r", "--identity", "i", "--ttl", "6"], "6"),
        (&["--room", "", "--identity", "i"], "--room"),
        (&["--identity", "i"], "--room"),
    ] {
        let mut all = vec!["token", "create"];
        all.extend_from_slice(args);
        let output = roomcast(&all, &env);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(output.stdout.is_empty(), "{args:?} printed to stdout");
        assert!(stderr.contains(complaint), "{args:?}: {stderr}");
    }
    let output = roomcast(&["token", "create", "--room", "r", "--identity", "i"], &[]);
    assert!(!output.status.success(), "no credentials, yet it succeeded");
    assert!(String::from_utf8_lossy(&output.stderr).contains("--api-key"));
}

#[test]
fn help_does_not_show_the_secret_from_the_environment() {
    let output = roomcast(
        &["token", "create", "--help"],
        &[("ROOMCAST_API_KEY", KEY), ("ROOMCAST_API_SECRET", SECRET)],
    );
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("ROOMCAST_API_SECRET"), "{help}");
    assert!(!help.contains(SECRET), "{help}");
}
