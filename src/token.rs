//! `roomcast token create`: mint an access token from the command line. The token is the only
//! thing written to stdout, so scripts can capture it; a summary goes to stderr.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::builder::NonEmptyStringValueParser;
use clap::{Args, Subcommand};
use roomcast_auth::{ApiCredentials, Claims, Grant, MIN_SECRET_LEN, Utc, mint};

/// Grants of a token minted without `--grant`: a viewer who can chat.
const DEFAULT_GRANTS: [Grant; 2] = [Grant::Subscribe, Grant::Chat];

#[derive(Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Mint an access token and print it on stdout.
    Create(CreateArgs),
}

#[derive(Args)]
struct CreateArgs {
    /// API key: the token's issuer; the server must be configured with the same key.
    #[arg(long, env = "ROOMCAST_API_KEY", value_name = "KEY",
          value_parser = NonEmptyStringValueParser::new())]
    api_key: String,

    /// API secret that signs the token (at least 32 bytes). Prefer the environment variable:
    /// command-line arguments are visible to other users of the machine.
    #[arg(long, env = "ROOMCAST_API_SECRET", hide_env_values = true, value_name = "SECRET",
          value_parser = NonEmptyStringValueParser::new())]
    api_secret: String,

    /// The room the token opens (only that one); `*` scopes an admin token to every room.
    #[arg(long, value_parser = NonEmptyStringValueParser::new())]
    room: String,

    /// The participant's identity, unique in the room.
    #[arg(long, value_parser = NonEmptyStringValueParser::new())]
    identity: String,

    /// Display name shown to other participants.
    #[arg(long)]
    name: Option<String>,

    /// Permissions, comma-separated or repeated: publish, subscribe, chat, admin, ingest.
    /// [default: subscribe,chat]
    #[arg(long = "grant", value_name = "GRANT", value_delimiter = ',')]
    grants: Vec<Grant>,

    /// How long the token is valid: a number with a unit, s, m, h or d (30s, 15m, 6h, 7d).
    #[arg(long, value_name = "DURATION", default_value = "6h", value_parser = parse_ttl)]
    ttl: Duration,
}

pub fn run(args: TokenArgs) -> ExitCode {
    match args.command {
        TokenCommand::Create(args) => create(args),
    }
}

fn create(args: CreateArgs) -> ExitCode {
    let now = match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since_epoch) => since_epoch.as_secs(),
        Err(_) => {
            eprintln!("error: the system clock is before 1970; cannot date the token");
            return ExitCode::FAILURE;
        }
    };
    // `*` is the scope of an admin token for every room (the admin API).
    if args.room != roomcast_signaling::admin::ALL_ROOMS
        && let Err(why) = roomcast_signaling::validate_room_name(&args.room)
    {
        eprintln!("error: --room {:?}: {why}", args.room);
        return ExitCode::from(2);
    }
    if args.api_secret.len() < MIN_SECRET_LEN {
        eprintln!(
            "warning: the API secret is {} bytes; HS256 needs at least {MIN_SECRET_LEN} to be \
             as strong as its hash",
            args.api_secret.len()
        );
    }
    let grants = if args.grants.is_empty() {
        DEFAULT_GRANTS.to_vec()
    } else {
        args.grants
    };
    let mut claims = Claims::new(args.identity, args.room, now, args.ttl).with_grants(grants);
    claims.name = args.name;
    let token = mint(&ApiCredentials::new(args.api_key, args.api_secret), &claims);

    println!("{token}");
    eprintln!(
        "access token for identity {:?} in room {:?}, grants {}, valid until {}",
        claims.sub,
        claims.room,
        claims.grants,
        Utc(claims.exp)
    );
    ExitCode::SUCCESS
}

/// `30s`, `15m`, `6h`, `7d`: a positive whole number and one unit.
pub(crate) fn parse_ttl(text: &str) -> Result<Duration, String> {
    let usage = "expected a positive number with a unit s, m, h or d, like 30s, 15m, 6h or 7d";
    let Some(unit_at) = text.find(|c: char| !c.is_ascii_digit()) else {
        return Err(format!("{text:?} has no unit; {usage}"));
    };
    let (number, unit) = text.split_at(unit_at);
    let seconds_per_unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: {usage}")),
    };
    let seconds = number
        .parse::<u64>()
        .ok()
        .filter(|&n| n > 0)
        .and_then(|n| n.checked_mul(seconds_per_unit))
        .ok_or_else(|| format!("{text:?}: {usage}"))?;
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::parse_ttl;
    use std::time::Duration;

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_ttl("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_ttl("6h"), Ok(Duration::from_secs(21_600)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(604_800)));
    }

    #[test]
    fn ttl_refusals() {
        for text in [
            "",
            "6",
            "h",
            "0h",
            "-1h",
            "1.5h",
            "6 h",
            "6H",
            "6hours",
            "1w",
            "+6h",
            "99999999999999999999d",
            "999999999999999999d",
        ] {
            assert!(parse_ttl(text).is_err(), "{text:?} was accepted");
        }
    }
}
