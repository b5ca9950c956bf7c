//! Identifiers, parsed once at the edge. Inner code takes these types, never raw strings.

use std::fmt;

/// A syntactically valid, normalised email address (trimmed, lower-cased).
///
/// Deliberately not `Serialize`: personal data leaves the process only through explicit
/// API types.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("not a valid email address")]
    InvalidEmail,
    #[error("not a valid phone number")]
    InvalidPhone,
    #[error("not a valid profile id")]
    InvalidProfileId,
    #[error("an identifier is written kind:value, with kind one of email, phone, user_id, anonymous_id")]
    UnknownIdentifierForm,
    #[error("the identifier's value is empty or longer than 1024 characters")]
    InvalidIdentifierValue,
}

impl Email {
    /// Parses an email address: trims, lower-cases, checks the shape `local@domain.tld`.
    /// Full IDNA and deliverability checks belong to the data quality layer.
    pub fn parse(raw: &str) -> Result<Email, IdError> {
        let s = raw.trim().to_lowercase();
        // The domain in its ASCII form (IDNA), so that exämple.fr and xn--exmple-cua.fr are one.
        let s = match s.rsplit_once('@') {
            Some((local, domain)) if !domain.is_ascii() => {
                let ascii = idna::domain_to_ascii(domain).map_err(|_| IdError::InvalidEmail)?;
                format!("{local}@{ascii}")
            }
            _ => s,
        };
        if s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(IdError::InvalidEmail);
        }
        let (local, domain) = s.rsplit_once('@').ok_or(IdError::InvalidEmail)?;
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.contains('@')
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..");
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_alphanumeric() || c == '-')
            });
        if local_ok && domain_ok {
            Ok(Email(s))
        } else {
            Err(IdError::InvalidEmail)
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Email(<redacted>)")
    }
}

/// A phone number in E.164 form (`+33612345678`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Phone(String);

impl Phone {
    /// Parses a phone number, national numbers being read in `default_region`
    /// (an ISO 3166 alpha-2 code such as `FR`). Only valid numbers are accepted.
    pub fn parse(raw: &str, default_region: &str) -> Result<Phone, IdError> {
        let region = default_region.parse::<phonenumber::country::Id>().ok();
        let number = phonenumber::parse(region, raw.trim()).map_err(|_| IdError::InvalidPhone)?;
        if !phonenumber::is_valid(&number) {
            return Err(IdError::InvalidPhone);
        }
        Ok(Phone(number.format().mode(phonenumber::Mode::E164).to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Phone(<redacted>)")
    }
}

/// A profile's public id: a random 63-bit number shown as 16 hex digits. It says nothing
/// about the person and is what logs and error messages may name.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProfileId(pub i64);

impl ProfileId {
    pub fn parse(s: &str) -> Result<ProfileId, IdError> {
        if s.len() != 16 {
            return Err(IdError::InvalidProfileId);
        }
        let v = u64::from_str_radix(s, 16).map_err(|_| IdError::InvalidProfileId)?;
        i64::try_from(v).map(ProfileId).map_err(|_| IdError::InvalidProfileId)
    }
}

impl fmt::Display for ProfileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for ProfileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProfileId({self})")
    }
}

/// The kinds of identifier that stitch profiles together, in priority order: when
/// identifiers disagree, the earlier kind decides which profile an event belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdKind {
    UserId,
    Email,
    Phone,
    AnonymousId,
}

impl IdKind {
    pub const ALL: [IdKind; 4] = [IdKind::UserId, IdKind::Email, IdKind::Phone, IdKind::AnonymousId];

    pub fn as_str(self) -> &'static str {
        match self {
            IdKind::UserId => "user_id",
            IdKind::Email => "email",
            IdKind::Phone => "phone",
            IdKind::AnonymousId => "anonymous_id",
        }
    }
    pub fn from_name(s: &str) -> Option<IdKind> {
        IdKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One identifier of a person: a kind and a normalised value.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Identifier {
    pub kind: IdKind,
    pub value: String,
}

impl Identifier {
    pub fn new(kind: IdKind, value: impl Into<String>) -> Identifier {
        Identifier { kind, value: value.into() }
    }
    /// Parses `email:ADDR`, `phone:NUMBER`, `user_id:ID` or `anonymous_id:ID` (as the rights
    /// desk takes them), normalised as ingestion normalises.
    pub fn parse_tagged(s: &str, default_region: &str) -> Result<Identifier, IdError> {
        let (kind, value) = s.split_once(':').ok_or(IdError::UnknownIdentifierForm)?;
        let kind = IdKind::from_name(kind.trim()).ok_or(IdError::UnknownIdentifierForm)?;
        let value = value.trim();
        if value.is_empty() || value.len() > 1024 {
            return Err(IdError::InvalidIdentifierValue);
        }
        Ok(match kind {
            IdKind::Email => Identifier::email(&Email::parse(value)?),
            IdKind::Phone => Identifier::phone(&Phone::parse(value, default_region)?),
            k => Identifier::new(k, value),
        })
    }

    pub fn email(e: &Email) -> Identifier {
        Identifier::new(IdKind::Email, e.as_str())
    }
    pub fn phone(p: &Phone) -> Identifier {
        Identifier::new(IdKind::Phone, p.as_str())
    }
}

impl fmt::Debug for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identifier({}, <redacted>)", self.kind.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(Email::parse("  Alice.Martin@Example.FR ").unwrap().as_str(), "alice.martin@example.fr");
        for bad in ["", "alice", "alice@", "@example.fr", "alice@example", "a b@example.fr", "a..b@example.fr", "alice@-x.fr"] {
            assert_eq!(Email::parse(bad), Err(IdError::InvalidEmail), "{bad}");
        }
    }

    #[test]
    fn phones_become_e164_with_a_default_region() {
        assert_eq!(Phone::parse("06 12 34 56 78", "FR").unwrap().as_str(), "+33612345678");
        assert_eq!(Phone::parse("+44 20 7946 0958", "FR").unwrap().as_str(), "+442079460958");
        assert_eq!(Phone::parse("12", "FR"), Err(IdError::InvalidPhone));
        assert_eq!(Phone::parse("not a phone", "FR"), Err(IdError::InvalidPhone));
    }

    #[test]
    fn debug_output_never_shows_personal_data() {
        let e = Email::parse("alice@example.fr").unwrap();
        assert!(!format!("{e:?}").contains("alice"));
        let i = Identifier::email(&e);
        assert!(!format!("{i:?}").contains("alice"));
    }

    #[test]
    fn profile_ids_round_trip() {
        let id = ProfileId(0x1234_5678_9abc_def0);
        assert_eq!(ProfileId::parse(&id.to_string()).unwrap(), id);
        assert!(ProfileId::parse("xyz").is_err());
        assert!(ProfileId::parse("ffffffffffffffff").is_err());
    }
}
