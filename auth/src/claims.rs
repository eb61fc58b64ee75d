//! The token's claims and grants.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a token says. Field names are the JSON claim names (see the crate docs for each).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The API key the token was minted with. [`crate::mint`] sets it from the credentials.
    pub iss: String,
    /// The participant's identity, unique in the room.
    pub sub: String,
    /// Display name shown to other participants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The only room this token opens.
    pub room: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Not valid before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// What the participant may do in the room.
    #[serde(default)]
    pub grants: Grants,
}

impl Claims {
    /// Claims for `identity` in `room`, issued at `issued_at` (Unix seconds) and expiring `ttl`
    /// later, with no grants. `iss` is left empty: [`crate::mint`] fills it in.
    pub fn new(
        identity: impl Into<String>,
        room: impl Into<String>,
        issued_at: u64,
        ttl: Duration,
    ) -> Self {
        Self {
            iss: String::new(),
            sub: identity.into(),
            name: None,
            room: room.into(),
            exp: issued_at.saturating_add(ttl.as_secs()),
            nbf: None,
            iat: issued_at,
            grants: Grants::default(),
        }
    }

    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    pub fn with_grants(mut self, grants: impl IntoIterator<Item = Grant>) -> Self {
        self.grants = grants.into_iter().collect();
        self
    }
}

/// One permission a token can carry. `Display`/`FromStr` use the JSON names (`"publish"`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Grant {
    /// Send audio/video tracks into the room.
    Publish,
    /// Receive the room's tracks.
    Subscribe,
    /// Send chat/data messages.
    Chat,
    /// Moderate the room (remove participants, mute tracks).
    Admin,
    /// Push a stream into the room from an ingest protocol (RTMP, WHIP).
    Ingest,
}

impl Grant {
    pub const ALL: [Grant; 5] = [
        Grant::Publish,
        Grant::Subscribe,
        Grant::Chat,
        Grant::Admin,
        Grant::Ingest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Grant::Publish => "publish",
            Grant::Subscribe => "subscribe",
            Grant::Chat => "chat",
            Grant::Admin => "admin",
            Grant::Ingest => "ingest",
        }
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Grant {
    type Err = UnknownGrant;

    /// Exact, lower-case names only: a grant list is security configuration, so a typo fails
    /// loudly instead of being guessed at.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Grant::ALL
            .into_iter()
            .find(|grant| grant.as_str() == s)
            .ok_or_else(|| UnknownGrant(s.to_owned()))
    }
}

/// A string that names no [`Grant`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownGrant(pub String);

impl fmt::Display for UnknownGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown grant {:?}; expected one of publish, subscribe, chat, admin, ingest",
            self.0
        )
    }
}

impl std::error::Error for UnknownGrant {}

/// The `grants` claim. Every field defaults to `false`; unknown fields are ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Grants {
    pub publish: bool,
    pub subscribe: bool,
    pub chat: bool,
    pub admin: bool,
    pub ingest: bool,
}

impl Grants {
    pub fn allows(&self, grant: Grant) -> bool {
        *self.field(grant)
    }

    pub fn insert(&mut self, grant: Grant) {
        *self.field_mut(grant) = true;
    }

    /// The granted permissions, in [`Grant::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = Grant> + '_ {
        Grant::ALL.into_iter().filter(|&grant| self.allows(grant))
    }

    fn field(&self, grant: Grant) -> &bool {
        match grant {
            Grant::Publish => &self.publish,
            Grant::Subscribe => &self.subscribe,
            Grant::Chat => &self.chat,
            Grant::Admin => &self.admin,
            Grant::Ingest => &self.ingest,
        }
    }

    fn field_mut(&mut self, grant: Grant) -> &mut bool {
        match grant {
            Grant::Publish => &mut self.publish,
            Grant::Subscribe => &mut self.subscribe,
            Grant::Chat => &mut self.chat,
            Grant::Admin => &mut self.admin,
            Grant::Ingest => &mut self.ingest,
        }
    }
}

impl FromIterator<Grant> for Grants {
    fn from_iter<I: IntoIterator<Item = Grant>>(iter: I) -> Self {
        let mut grants = Grants::default();
        for grant in iter {
            grants.insert(grant);
        }
        grants
    }
}

/// `publish,subscribe`, or `none`.
impl fmt::Display for Grants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut granted = self.iter();
        match granted.next() {
            None => f.write_str("none"),
            Some(first) => {
                write!(f, "{first}")?;
                granted.try_for_each(|grant| write!(f, ",{grant}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_names_round_trip() {
        for grant in Grant::ALL {
            assert_eq!(grant.to_string().parse::<Grant>(), Ok(grant));
        }
        assert_eq!(
            "Publish".parse::<Grant>(),
            Err(UnknownGrant("Publish".into()))
        );
        assert!("".parse::<Grant>().is_err());
        assert!("publish ".parse::<Grant>().is_err());
    }

    #[test]
    fn grants_json_defaults_missing_fields_to_false_and_ignores_unknown_ones() {
        let grants: Grants = serde_json::from_str(r#"{"publish":true,"record":true}"#).unwrap();
        assert_eq!(grants, [Grant::Publish].into_iter().collect());
        let json = serde_json::to_string(&Grants::default()).unwrap();
        assert_eq!(
            json,
            r#"{"publish":false,"subscribe":false,"chat":false,"admin":false,"ingest":false}"#
        );
    }

    #[test]
    fn grants_display() {
        assert_eq!(Grants::default().to_string(), "none");
        let grants: Grants = [Grant::Ingest, Grant::Subscribe].into_iter().collect();
        assert_eq!(grants.to_string(), "subscribe,ingest");
    }

    #[test]
    fn each_grant_sets_only_its_own_field() {
        for grant in Grant::ALL {
            let grants: Grants = [grant].into_iter().collect();
            for other in Grant::ALL {
                assert_eq!(grants.allows(other), other == grant, "{grant} vs {other}");
            }
        }
    }
}
