//! The activation side of the storage interface: campaigns and their delivery log, webhook
//! destinations, dead letters, and rights requests forwarded to destinations.

use confidant_core::ids::ProfileId;
use confidant_core::time::Millis;
use serde::Serialize;
use serde_json::Value;

/// What defines a campaign or a triggered message.
#[derive(Clone, Debug, PartialEq)]
pub struct CampaignDef {
    pub name: String,
    pub audience: String,
    pub purpose: String,
    /// `{"subject": {"fr", "en"}, "body": {"fr", "en"}, "recommendations": n}`
    pub content: Value,
    /// `{"event", "unless", "within_seconds"}` for a triggered message.
    pub trigger: Option<Value>,
    pub scheduled_at: Option<Millis>,
    pub status: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CampaignView {
    pub id: i64,
    pub name: String,
    pub audience: String,
    pub purpose: String,
    pub content: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Value>,
    pub scheduled_at: Option<Millis>,
    pub status: String,
    pub created_at: Millis,
    pub created_by: String,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    #[serde(skip)]
    pub cursor: i64,
}

/// A delivery about to be attempted: its row id and the id of its unsubscribe token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryClaim {
    pub id: i64,
    pub profile: ProfileId,
    pub occurrence: String,
    pub token: Vec<u8>,
}

/// A row of the delivery log.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeliveryView {
    pub id: i64,
    pub profile: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub occurrence: String,
    pub status: String,
    pub reason: Option<String>,
    pub at: Millis,
    pub attempts: i64,
    pub unsubscribed_at: Option<Millis>,
}

/// What an unsubscribe token leads to.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenTarget {
    pub delivery: i64,
    pub campaign: String,
    pub purpose: String,
    /// The live profile the delivery's subject belongs to now; `None` once erased.
    pub profile: Option<ProfileId>,
    pub unsubscribed_at: Option<Millis>,
}

/// An occurrence of a trigger's event that is due: (events.seq, live profile, message id, time),
/// and whether the "unless" event followed within the delay.
#[derive(Clone, Debug, PartialEq)]
pub struct TriggerOccurrence {
    pub seq: i64,
    pub profile: ProfileId,
    pub message_id: String,
    pub at: Millis,
    pub followed: bool,
}

/// A webhook destination.
#[derive(Clone, Debug, PartialEq)]
pub struct DestinationDef {
    pub name: String,
    pub url: String,
    pub secret: String,
    pub purposes: Vec<String>,
    pub events: Option<Vec<String>>,
    pub audiences: bool,
    pub rate_per_second: f64,
    pub timeout_ms: i64,
    pub max_attempts: i64,
    pub retry_base_ms: i64,
    /// Forward only what is stored from now on (true), or everything already held (false).
    pub from_now: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DestinationView {
    pub id: i64,
    pub name: String,
    pub url: String,
    #[serde(skip)]
    pub secret: String,
    pub purposes: Vec<String>,
    pub events: Option<Vec<String>>,
    pub audiences: bool,
    pub rate_per_second: f64,
    pub timeout_ms: i64,
    pub max_attempts: i64,
    pub retry_base_ms: i64,
    pub enabled: bool,
    pub event_cursor: i64,
    pub audience_cursor: i64,
    pub created_at: Millis,
    pub created_by: String,
}

/// A stored event to forward, its body opened (encrypted fields decrypted).
#[derive(Clone, Debug)]
pub struct ForwardEvent {
    pub seq: i64,
    pub profile: ProfileId,
    pub kind: String,
    pub event: Option<String>,
    pub message_id: String,
    pub body: Value,
}

/// A join or leave of an audience, to forward.
#[derive(Clone, Debug)]
pub struct AudienceChange {
    pub seq: i64,
    pub audience: String,
    pub purpose: String,
    pub profile: ProfileId,
    pub change: String,
    pub reason: String,
    pub at: Millis,
}

/// A delivery that failed every attempt.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeadLetter {
    pub id: i64,
    #[serde(skip)]
    pub profile: Option<ProfileId>,
    pub kind: String,
    pub idempotency_key: String,
    #[serde(skip)]
    pub payload: String,
    pub attempts: i64,
    pub last_error: String,
    pub failed_at: Millis,
}

/// A rights request forwarded to a destination: the receipt (and, while pending, the payload).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RightsForward {
    pub id: i64,
    pub destination: String,
    #[serde(skip)]
    pub destination_id: i64,
    pub dsr: Option<i64>,
    pub kind: String,
    pub subject_ref: String,
    #[serde(skip)]
    pub payload: Option<String>,
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: Millis,
    pub delivered_at: Option<Millis>,
    pub response_status: Option<i64>,
}

/// What the service asks to forward for one subject: one row per destination that received
/// the subject's data.
#[derive(Clone, Debug)]
pub struct RightsToForward {
    pub profile: ProfileId,
    pub dsr: Option<i64>,
    pub kind: String,
    pub subject_ref: String,
    pub payload: Value,
}
