//! Identifiers parsed once at the edge and trusted inside.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::DomainError;

fn valid_id(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@' | b'|'))
        // `.` and `..` name no organization or user: they are path steps.
        && !s.bytes().all(|b| b == b'.')
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, DomainError> {
                if valid_id(s, $max) {
                    Ok(Self(s.to_string()))
                } else {
                    Err(DomainError::InvalidId { what: $what, max: $max })
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = DomainError;
            fn try_from(s: String) -> Result<Self, DomainError> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// An alert's name within its organization (`low-20`).
    AlertId, "alert id", 64
);

id_type!(
    /// The organization (tenant) that owns an account: from the token, never a body.
    OrgId, "organization id", 128
);
id_type!(
    /// A user of an organization, or the user a service call acts for.
    UserId, "user id", 128
);
id_type!(
    /// A meter (credit type): `credits`, `email_sends`, `lead_slots`, ...
    MeterId, "meter", 64
);
id_type!(
    /// An action of the catalog: `ai_email_generation`, `email_verification`, ...
    ActionId, "action", 64
);
id_type!(
    /// A plan of the catalog.
    PlanId, "plan", 64
);
id_type!(
    /// A credit package of the catalog.
    PackageId, "package", 64
);
id_type!(
    /// A campaign the spend is for (free-form id from the product).
    CampaignId, "campaign", 128
);

/// The client's idempotency key: 1-255 printable ASCII characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        // Printable ASCII but the comma: a gateway joins a repeated header
        // with commas, so a key holding one may be two keys.
        if !s.is_empty() && s.len() <= 255 && s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',') {
            Ok(Self(s.to_string()))
        } else {
            Err(DomainError::InvalidIdempotencyKey)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IdempotencyKey {
    type Error = DomainError;
    fn try_from(s: String) -> Result<Self, DomainError> {
        Self::parse(&s)
    }
}

impl From<IdempotencyKey> for String {
    fn from(k: IdempotencyKey) -> String {
        k.0
    }
}

/// What a spend or a result is about (a contact's email or id), normalised
/// so that one piece of information has one name: trimmed, and an email
/// lower-cased (`Jane@Example.com ` is `jane@example.com`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Subject(String);

impl Subject {
    /// Up to 512 ASCII characters, or up to 128 characters if any is not
    /// ASCII: either way at most 512 bytes (a subject is part of keys of at
    /// most 1,024), counted as sent, and a limit OpenAPI can state. Not
    /// blank, no control characters.
    pub fn parse(s: &str) -> Result<Self, DomainError> {
        let short_enough = if s.is_ascii() {
            s.len() <= 512
        } else {
            s.chars().count() <= 128
        };
        let trimmed = s.trim();
        if !trimmed.is_empty() && short_enough && !s.chars().any(char::is_control) {
            let s = trimmed;
            Ok(Self(if s.contains('@') {
                s.to_lowercase()
            } else {
                s.to_string()
            }))
        } else {
            Err(DomainError::InvalidSubject)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Subject {
    type Error = DomainError;
    fn try_from(s: String) -> Result<Self, DomainError> {
        Self::parse(&s)
    }
}

impl From<Subject> for String {
    fn from(s: Subject) -> String {
        s.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_reject_empty_long_and_odd_characters() {
        assert!(OrgId::parse("acme-1").is_ok());
        assert!(OrgId::parse("").is_err());
        assert!(OrgId::parse("a b").is_err());
        assert!(OrgId::parse(&"x".repeat(129)).is_err());
    }

    #[test]
    fn subjects_are_normalised_emails_lower_cased() {
        assert_eq!(
            Subject::parse(" Jane@Example.COM ").unwrap().as_str(),
            "jane@example.com"
        );
        assert_eq!(Subject::parse("Contact-ABC").unwrap().as_str(), "Contact-ABC");
        assert!(Subject::parse("  ").is_err());
        assert!(Subject::parse("a\nb").is_err());
        assert!(Subject::parse(&"a".repeat(512)).is_ok());
        assert!(Subject::parse(&"a".repeat(513)).is_err());
        assert!(Subject::parse(&"é".repeat(128)).is_ok());
        assert!(Subject::parse(&"é".repeat(129)).is_err());
        assert!(Subject::parse("\u{3000}").is_err(), "blank in any script");
    }

    #[test]
    fn idempotency_keys_are_printable_and_bounded() {
        assert!(IdempotencyKey::parse("req-1:{a}").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
        assert!(IdempotencyKey::parse("has space").is_err());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("tab\t").is_err());
    }
}
