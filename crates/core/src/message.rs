//! Segment-spec messages (`track`, `identify`, `page`, `screen`, `group`, `alias`), validated
//! into a [`ParsedMessage`] at the edge. Everything after ingestion takes parsed messages only.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::identity::IdentityRules;
use crate::ids::{Email, IdKind, Identifier, Phone};
use crate::time::{correct_skew, format_millis, parse_timestamp, Millis};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageType {
    Track,
    Identify,
    Page,
    Screen,
    Group,
    Alias,
}

impl MessageType {
    pub const ALL: [MessageType; 6] = [
        MessageType::Track,
        MessageType::Identify,
        MessageType::Page,
        MessageType::Screen,
        MessageType::Group,
        MessageType::Alias,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Track => "track",
            MessageType::Identify => "identify",
            MessageType::Page => "page",
            MessageType::Screen => "screen",
            MessageType::Group => "group",
            MessageType::Alias => "alias",
        }
    }
    pub fn from_name(s: &str) -> Option<MessageType> {
        MessageType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// Why one message was refused. Each has a stable code (for clients and metrics) and a
/// message that never quotes the payload, so no personal data leaks through errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    NotAnObject,
    MessageTooLarge,
    TooDeep,
    TooManyProperties,
    UnknownType,
    MissingIdentity,
    NoUsableIdentifier,
    MissingEvent,
    MissingPreviousId,
    MissingGroupId,
    InvalidField,
    InvalidTimestamp,
    InvalidEmail,
    InvalidPhone,
    /// A track event the tracking plan does not declare.
    UndeclaredEvent,
    /// The event's data serves no purpose that is lawful for the subject now.
    NoLegalBasis,
    /// Special-category data (Art. 9) without a purpose that declares an Art. 9 basis and the
    /// subject's explicit consent.
    SpecialCategory,
    /// The subject was erased and asked that nothing more be collected about them.
    Suppressed,
}

impl RejectReason {
    pub const ALL: [RejectReason; 18] = [
        RejectReason::NotAnObject,
        RejectReason::MessageTooLarge,
        RejectReason::TooDeep,
        RejectReason::TooManyProperties,
        RejectReason::UnknownType,
        RejectReason::MissingIdentity,
        RejectReason::NoUsableIdentifier,
        RejectReason::MissingEvent,
        RejectReason::MissingPreviousId,
        RejectReason::MissingGroupId,
        RejectReason::InvalidField,
        RejectReason::InvalidTimestamp,
        RejectReason::InvalidEmail,
        RejectReason::InvalidPhone,
        RejectReason::UndeclaredEvent,
        RejectReason::NoLegalBasis,
        RejectReason::SpecialCategory,
        RejectReason::Suppressed,
    ];
    pub fn code(self) -> &'static str {
        match self {
            RejectReason::NotAnObject => "not_an_object",
            RejectReason::MessageTooLarge => "message_too_large",
            RejectReason::TooDeep => "too_deep",
            RejectReason::TooManyProperties => "too_many_properties",
            RejectReason::UnknownType => "unknown_type",
            RejectReason::MissingIdentity => "missing_identity",
            RejectReason::NoUsableIdentifier => "no_usable_identifier",
            RejectReason::MissingEvent => "missing_event",
            RejectReason::MissingPreviousId => "missing_previous_id",
            RejectReason::MissingGroupId => "missing_group_id",
            RejectReason::InvalidField => "invalid_field",
            RejectReason::InvalidTimestamp => "invalid_timestamp",
            RejectReason::InvalidEmail => "invalid_email",
            RejectReason::InvalidPhone => "invalid_phone",
            RejectReason::UndeclaredEvent => "undeclared_event",
            RejectReason::NoLegalBasis => "no_legal_basis",
            RejectReason::SpecialCategory => "special_category",
            RejectReason::Suppressed => "suppressed",
        }
    }
}

/// A refused message: the reason and a detail naming the field or limit, never its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Rejection {
        Rejection { reason, detail: detail.into() }
    }
}

/// Limits applied to every message.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub max_properties: usize,
    pub max_depth: usize,
}

/// What a message is parsed against.
pub struct ParseContext<'a> {
    pub received_at: Millis,
    /// `sentAt` of the enclosing batch, when the message has none of its own.
    pub batch_sent_at: Option<Millis>,
    /// The type implied by the endpoint (`/v1/track`); `None` for `/v1/batch`.
    pub endpoint_type: Option<MessageType>,
    pub limits: &'a Limits,
    pub rules: &'a IdentityRules,
    /// ISO 3166 alpha-2 region for national phone numbers.
    pub default_region: &'a str,
}

/// What every message carries, before and after sealing.
#[derive(Clone, Debug)]
pub struct Envelope {
    pub kind: MessageType,
    pub message_id: String,
    pub event: Option<String>,
    /// Event time after clock-skew correction.
    pub timestamp: Millis,
    pub received_at: Millis,
    /// Stitching identifiers in priority order (user id, emails, phones, anonymous id),
    /// normalised, with banned values removed.
    pub identifiers: Vec<Identifier>,
    /// `alias`: the id being aliased; it may be a user id or an anonymous id.
    pub previous_id: Option<String>,
    /// The event's data category, set by the privacy gate from the tracking plan.
    pub category: Option<String>,
}

/// A valid message, ready for the privacy gate and the store.
#[derive(Clone, Debug)]
pub struct ParsedMessage {
    pub envelope: Envelope,
    /// Traits about the person: `traits` of an identify merged over `context.traits`.
    pub traits: Map<String, Value>,
    /// The message as received (minus `writeKey`), with `messageId`, `type`, `receivedAt`,
    /// corrected `timestamp` and `originalTimestamp` set as Segment does.
    pub body: Map<String, Value>,
}

/// A message past the privacy gate, ready for the store: the body and trait values are
/// serialised once, on the request's thread, so the single writer only writes.
#[derive(Clone, Debug)]
pub struct SealedMessage {
    pub envelope: Envelope,
    /// Trait keys and their values as JSON text.
    pub traits: Vec<(String, String)>,
    /// The stored form of the message, as JSON text. Values to encrypt are replaced by
    /// placeholders (see `encrypted`).
    pub body: String,
    /// Values to encrypt under the subject's key before storing: (the placeholder as it
    /// appears in `body`, JSON text included quotes; the value's JSON text).
    pub encrypted: Vec<(String, String)>,
    /// Trait keys whose values are to be encrypted.
    pub encrypted_traits: Vec<String>,
}

/// Where a field sits in a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    Traits,
    ContextTraits,
    Properties,
}

impl ParsedMessage {
    /// Serialises the message for storage. Call after the privacy gate.
    pub fn seal(self) -> SealedMessage {
        self.seal_with(&[], "")
    }

    /// Serialises the message, setting aside the listed fields for encryption by the store
    /// (which alone knows the subject, hence the key). `token` makes placeholders unguessable,
    /// so that no client can plant one.
    pub fn seal_with(mut self, encrypt: &[(Section, String)], token: &str) -> SealedMessage {
        let mut encrypted = Vec::new();
        let mut encrypted_traits = Vec::new();
        for (i, (section, key)) in encrypt.iter().enumerate() {
            let obj = match section {
                Section::Traits => self.body.get_mut("traits"),
                Section::ContextTraits => self.body.get_mut("context").and_then(|c| c.get_mut("traits")),
                Section::Properties => self.body.get_mut("properties"),
            };
            if let Some(v) = obj.and_then(|o| o.get_mut(key.as_str())) {
                let placeholder = format!("\u{1}enc:{token}:{i}\u{1}");
                let plain = json_text(v);
                *v = Value::String(placeholder.clone());
                encrypted.push((json_text(&Value::String(placeholder)), plain));
            }
            if *section != Section::Properties && self.traits.contains_key(key) && !encrypted_traits.contains(key) {
                encrypted_traits.push(key.clone());
            }
        }
        SealedMessage {
            envelope: self.envelope,
            traits: self.traits.into_iter().map(|(k, v)| (k, json_text(&v))).collect(),
            body: json_text(&Value::Object(self.body)),
            encrypted,
            encrypted_traits,
        }
    }
}

/// A value as compact JSON text, through serde_json's writer rather than `Display`: the same
/// text without the formatting machinery (a tenth of the request threads' time at peak
/// ingestion went to `Display`). A `Value` always serialises (its keys are strings).
fn json_text(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// Parses and validates one message. `raw` is its JSON text, as received.
pub fn parse_message(raw: &str, ctx: &ParseContext<'_>) -> Result<ParsedMessage, Rejection> {
    if raw.len() > ctx.limits.max_message_bytes {
        return Err(Rejection::new(
            RejectReason::MessageTooLarge,
            format!("message is {} bytes, the limit is {}", raw.len(), ctx.limits.max_message_bytes),
        ));
    }
    let value: Value = serde_json::from_str(raw).map_err(|e| {
        if e.to_string().contains("recursion limit") {
            Rejection::new(RejectReason::TooDeep, format!("JSON is nested more than 128 levels deep, the limit is {}", ctx.limits.max_depth))
        } else {
            Rejection::new(RejectReason::NotAnObject, format!("malformed JSON at line {} column {}", e.line(), e.column()))
        }
    })?;
    parse_value(value, raw, ctx)
}

/// Peeks at a message's `messageId` for error reports, without validating anything.
pub fn peek_message_id(raw: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Peek {
        #[serde(rename = "messageId")]
        message_id: Option<Value>,
    }
    let peek: Peek = serde_json::from_str(raw).ok()?;
    peek.message_id.and_then(|v| id_string(&v))
}

fn parse_value(value: Value, raw: &str, ctx: &ParseContext<'_>) -> Result<ParsedMessage, Rejection> {
    let Value::Object(mut body) = value else {
        return Err(Rejection::new(RejectReason::NotAnObject, "a message must be a JSON object"));
    };
    let depth = depth_of(&body);
    if depth > ctx.limits.max_depth {
        return Err(Rejection::new(
            RejectReason::TooDeep,
            format!("JSON is nested {depth} levels deep, the limit is {}", ctx.limits.max_depth),
        ));
    }
    body.remove("writeKey");

    let kind = match ctx.endpoint_type {
        Some(t) => t,
        None => match body.get("type") {
            Some(Value::String(s)) => MessageType::from_name(s)
                .ok_or_else(|| Rejection::new(RejectReason::UnknownType, "type must be one of track, identify, page, screen, group, alias"))?,
            Some(_) => return Err(Rejection::new(RejectReason::UnknownType, "type must be a string")),
            None => return Err(Rejection::new(RejectReason::UnknownType, "type is missing")),
        },
    };
    body.insert("type".into(), Value::String(kind.as_str().into()));

    for field in ["properties", "traits"] {
        check_object_field(&body, field, ctx.limits.max_properties)?;
    }
    let context = match body.get("context") {
        None | Some(Value::Null) => None,
        Some(Value::Object(c)) => Some(c),
        Some(_) => return Err(Rejection::new(RejectReason::InvalidField, "context must be an object")),
    };
    let context_traits = match context.and_then(|c| c.get("traits")) {
        None | Some(Value::Null) => None,
        Some(Value::Object(t)) => Some(t),
        Some(_) => return Err(Rejection::new(RejectReason::InvalidField, "context.traits must be an object")),
    };
    if let Some(t) = context_traits {
        if t.len() > ctx.limits.max_properties {
            return Err(too_many("context.traits", t.len(), ctx.limits.max_properties));
        }
    }

    let user_id = optional_id(&body, "userId")?;
    let anonymous_id = optional_id(&body, "anonymousId")?;
    if user_id.is_none() && anonymous_id.is_none() {
        return Err(Rejection::new(RejectReason::MissingIdentity, "userId or anonymousId is required"));
    }
    let event = match kind {
        MessageType::Track => match body.get("event") {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
            _ => return Err(Rejection::new(RejectReason::MissingEvent, "track needs a non-empty event name")),
        },
        MessageType::Page | MessageType::Screen => match body.get("name") {
            Some(Value::String(s)) => Some(s.clone()),
            None | Some(Value::Null) => None,
            Some(_) => return Err(Rejection::new(RejectReason::InvalidField, "name must be a string")),
        },
        _ => None,
    };
    let previous_id = match kind {
        MessageType::Alias => {
            let p = optional_id(&body, "previousId")?
                .ok_or_else(|| Rejection::new(RejectReason::MissingPreviousId, "alias needs previousId"))?;
            if user_id.is_none() {
                return Err(Rejection::new(RejectReason::MissingIdentity, "alias needs userId"));
            }
            Some(p)
        }
        _ => None,
    };
    if kind == MessageType::Group && optional_id(&body, "groupId")?.is_none() {
        return Err(Rejection::new(RejectReason::MissingGroupId, "group needs groupId"));
    }

    let ts_field = |name: &str| -> Result<Option<Millis>, Rejection> {
        match body.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => parse_timestamp(s)
                .map(Some)
                .ok_or_else(|| Rejection::new(RejectReason::InvalidTimestamp, format!("{name} is not an ISO 8601 date"))),
            Some(_) => Err(Rejection::new(RejectReason::InvalidTimestamp, format!("{name} must be an ISO 8601 string"))),
        }
    };
    let device_ts = ts_field("timestamp")?;
    let sent_at = ts_field("sentAt")?.or(ctx.batch_sent_at);
    ts_field("originalTimestamp")?;
    let timestamp = correct_skew(device_ts, sent_at, ctx.received_at);

    // Traits about the person, and the identifiers among them.
    let mut traits = context_traits.cloned().unwrap_or_default();
    if kind == MessageType::Identify {
        if let Some(Value::Object(t)) = body.get("traits") {
            traits.extend(t.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    let mut identifiers = Vec::with_capacity(4);
    if let Some(u) = user_id.filter(|u| ctx.rules.admits(u)) {
        identifiers.push(Identifier::new(IdKind::UserId, u));
    }
    match traits.get("email") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.trim().is_empty() => {}
        Some(Value::String(s)) => {
            let email = Email::parse(s).map_err(|_| Rejection::new(RejectReason::InvalidEmail, "traits.email is not a valid email address"))?;
            if ctx.rules.admits(email.as_str()) {
                identifiers.push(Identifier::email(&email));
            }
        }
        Some(_) => return Err(Rejection::new(RejectReason::InvalidEmail, "traits.email must be a string")),
    }
    match traits.get("phone") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.trim().is_empty() => {}
        Some(Value::String(s)) => {
            let phone = Phone::parse(s, ctx.default_region)
                .map_err(|_| Rejection::new(RejectReason::InvalidPhone, "traits.phone is not a valid phone number"))?;
            if ctx.rules.admits(phone.as_str()) {
                identifiers.push(Identifier::phone(&phone));
            }
        }
        Some(_) => return Err(Rejection::new(RejectReason::InvalidPhone, "traits.phone must be a string")),
    }
    if let Some(a) = anonymous_id.filter(|a| ctx.rules.admits(a)) {
        identifiers.push(Identifier::new(IdKind::AnonymousId, a));
    }
    let previous_id = previous_id.filter(|p| ctx.rules.admits(p));
    if identifiers.is_empty() && previous_id.is_none() {
        return Err(Rejection::new(
            RejectReason::NoUsableIdentifier,
            "every identifier is a banned placeholder value (such as null or anonymous)",
        ));
    }
    if kind == MessageType::Alias && (previous_id.is_none() || !identifiers.iter().any(|i| i.kind == IdKind::UserId)) {
        return Err(Rejection::new(RejectReason::NoUsableIdentifier, "alias needs a usable userId and previousId"));
    }

    let message_id = match optional_id(&body, "messageId")? {
        Some(id) if id.len() <= 256 => id,
        Some(_) => return Err(Rejection::new(RejectReason::InvalidField, "messageId is longer than 256 characters")),
        // No id from the client: derive one from the content, so that a resent copy is still
        // recognised as the same message.
        None => format!("gen-{}", hex::encode(&Sha256::digest(raw.as_bytes())[..16])),
    };
    body.insert("messageId".into(), Value::String(message_id.clone()));
    body.insert("receivedAt".into(), Value::String(format_millis(ctx.received_at)));
    if let Some(orig) = body.get("timestamp").cloned() {
        body.entry("originalTimestamp").or_insert(orig);
    }
    body.insert("timestamp".into(), Value::String(format_millis(timestamp)));

    Ok(ParsedMessage {
        envelope: Envelope { kind, message_id, event, timestamp, received_at: ctx.received_at, identifiers, previous_id, category: None },
        traits,
        body,
    })
}

fn too_many(field: &str, n: usize, max: usize) -> Rejection {
    Rejection::new(RejectReason::TooManyProperties, format!("{field} has {n} keys, the limit is {max}"))
}

fn check_object_field(body: &Map<String, Value>, field: &str, max: usize) -> Result<(), Rejection> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(o)) if o.len() > max => Err(too_many(field, o.len(), max)),
        Some(Value::Object(_)) => Ok(()),
        Some(_) => Err(Rejection::new(RejectReason::InvalidField, format!("{field} must be an object"))),
    }
}

/// An id field: a non-empty string, or a number (coerced to its decimal text, as Segment does).
fn optional_id(body: &Map<String, Value>, field: &str) -> Result<Option<String>, Rejection> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match id_string(v) {
            Some(s) if s.trim().is_empty() => Ok(None),
            Some(s) if s.len() > 1024 => Err(Rejection::new(RejectReason::InvalidField, format!("{field} is longer than 1024 characters"))),
            Some(s) => Ok(Some(s)),
            None => Err(Rejection::new(RejectReason::InvalidField, format!("{field} must be a string or a number"))),
        },
    }
}

fn id_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Nesting depth of a JSON object: `{}` is 1, `{"a": {}}` is 2. Iterative, so a hostile
/// document cannot overflow the stack here.
pub fn depth_of(root: &Map<String, Value>) -> usize {
    let mut max = 1;
    let mut stack: Vec<(&Value, usize)> = root.values().map(|v| (v, 2)).collect();
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Object(o) => {
                max = max.max(d);
                stack.extend(o.values().map(|c| (c, d + 1)));
            }
            Value::Array(a) => {
                max = max.max(d);
                stack.extend(a.iter().map(|c| (c, d + 1)));
            }
            _ => {}
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::IdentityRules;
    use serde_json::json;

    const RECEIVED: Millis = 1_790_000_000_000;

    fn limits() -> Limits {
        Limits { max_message_bytes: 32 * 1024, max_properties: 300, max_depth: 64 }
    }

    fn parse(v: Value, endpoint: Option<MessageType>) -> Result<ParsedMessage, Rejection> {
        let rules = IdentityRules::default();
        let limits = limits();
        let ctx = ParseContext {
            received_at: RECEIVED,
            batch_sent_at: None,
            endpoint_type: endpoint,
            limits: &limits,
            rules: &rules,
            default_region: "FR",
        };
        parse_message(&v.to_string(), &ctx)
    }

    fn reason(v: Value) -> RejectReason {
        parse(v, None).unwrap_err().reason
    }

    #[test]
    fn a_track_is_parsed_with_ids_in_priority_order() {
        let m = parse(
            json!({"type": "track", "event": "Order Completed", "messageId": "m1", "anonymousId": "a1", "userId": "u1",
                   "context": {"traits": {"email": "Alice@Example.fr", "phone": "06 12 34 56 78"}},
                   "timestamp": "2026-01-01T00:00:00Z", "writeKey": "secret"}),
            None,
        )
        .unwrap();
        assert_eq!(m.envelope.kind, MessageType::Track);
        assert_eq!(m.envelope.event.as_deref(), Some("Order Completed"));
        let ids: Vec<_> = m.envelope.identifiers.iter().map(|i| (i.kind, i.value.as_str())).collect();
        assert_eq!(
            ids,
            [(IdKind::UserId, "u1"), (IdKind::Email, "alice@example.fr"), (IdKind::Phone, "+33612345678"), (IdKind::AnonymousId, "a1")]
        );
        assert!(!m.body.contains_key("writeKey"), "the write key is a secret and is never stored");
        assert_eq!(m.body["originalTimestamp"], "2026-01-01T00:00:00Z");
        assert_eq!(m.body["receivedAt"], format_millis(RECEIVED));
    }

    #[test]
    fn the_endpoint_sets_the_type() {
        let m = parse(json!({"userId": "u1", "traits": {"firstName": "Alice"}}), Some(MessageType::Identify)).unwrap();
        assert_eq!(m.envelope.kind, MessageType::Identify);
        assert_eq!(m.traits["firstName"], "Alice");
        assert_eq!(m.body["type"], "identify");
    }

    #[test]
    fn a_missing_message_id_is_derived_from_the_content() {
        let v = json!({"type": "page", "anonymousId": "a1", "timestamp": "2026-01-01T00:00:00Z"});
        let a = parse(v.clone(), None).unwrap();
        let b = parse(v, None).unwrap();
        assert!(a.envelope.message_id.starts_with("gen-"));
        assert_eq!(a.envelope.message_id, b.envelope.message_id);
    }

    #[test]
    fn numeric_ids_are_coerced_to_strings() {
        let m = parse(json!({"type": "identify", "userId": 42}), None).unwrap();
        assert_eq!(m.envelope.identifiers[0].value, "42");
    }

    #[test]
    fn each_bad_message_has_its_reason() {
        assert_eq!(reason(json!([1, 2])), RejectReason::NotAnObject);
        assert_eq!(reason(json!({"type": "launch", "userId": "u"})), RejectReason::UnknownType);
        assert_eq!(reason(json!({"userId": "u"})), RejectReason::UnknownType);
        assert_eq!(reason(json!({"type": "track", "event": "X"})), RejectReason::MissingIdentity);
        assert_eq!(reason(json!({"type": "track", "event": "X", "userId": ""})), RejectReason::MissingIdentity);
        assert_eq!(reason(json!({"type": "track", "event": "X", "userId": "undefined"})), RejectReason::NoUsableIdentifier);
        assert_eq!(reason(json!({"type": "track", "userId": "u"})), RejectReason::MissingEvent);
        assert_eq!(reason(json!({"type": "alias", "userId": "u"})), RejectReason::MissingPreviousId);
        assert_eq!(reason(json!({"type": "group", "userId": "u"})), RejectReason::MissingGroupId);
        assert_eq!(reason(json!({"type": "page", "userId": "u", "timestamp": "last tuesday"})), RejectReason::InvalidTimestamp);
        assert_eq!(reason(json!({"type": "page", "userId": "u", "timestamp": 17})), RejectReason::InvalidTimestamp);
        assert_eq!(reason(json!({"type": "identify", "userId": "u", "traits": {"email": "nope"}})), RejectReason::InvalidEmail);
        assert_eq!(reason(json!({"type": "identify", "userId": "u", "traits": {"phone": "12"}})), RejectReason::InvalidPhone);
        assert_eq!(reason(json!({"type": "track", "event": "X", "userId": "u", "properties": [1]})), RejectReason::InvalidField);
        let props: Map<String, Value> = (0..301).map(|i| (format!("p{i}"), json!(i))).collect();
        assert_eq!(reason(json!({"type": "track", "event": "X", "userId": "u", "properties": props})), RejectReason::TooManyProperties);
        let mut deep = json!(1);
        for _ in 0..64 {
            deep = json!({ "d": deep });
        }
        assert_eq!(reason(json!({"type": "track", "event": "X", "userId": "u", "properties": deep})), RejectReason::TooDeep);
        let big = "x".repeat(33 * 1024);
        assert_eq!(reason(json!({"type": "track", "event": "X", "userId": "u", "properties": {"big": big}})), RejectReason::MessageTooLarge);
    }

    #[test]
    fn rejections_never_quote_the_payload() {
        let r = parse(json!({"type": "identify", "userId": "u", "traits": {"email": "secret-person@"}}), None).unwrap_err();
        assert!(!r.detail.contains("secret-person"));
    }

    #[test]
    fn depth_counts_levels() {
        let m = |v: Value| depth_of(v.as_object().unwrap());
        assert_eq!(m(json!({})), 1);
        assert_eq!(m(json!({"a": 1})), 1);
        assert_eq!(m(json!({"a": {"b": [1]}})), 3);
    }
}
