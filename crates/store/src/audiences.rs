//! The audience side of the storage interface: definitions, members, history, and the facts
//! rules are evaluated on.

use confidant_core::ids::ProfileId;
use confidant_core::time::Millis;
use serde::Serialize;
use serde_json::Value;

/// What defines an audience.
#[derive(Clone, Debug, PartialEq)]
pub struct AudienceDef {
    pub name: String,
    pub purpose: String,
    pub rule: String,
    pub description: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AudienceView {
    #[serde(skip)]
    pub id: i64,
    pub name: String,
    pub purpose: String,
    pub rule: String,
    pub description: Option<String>,
    pub created_at: Millis,
    pub created_by: String,
    pub updated_at: Millis,
    pub evaluated_at: Option<Millis>,
    pub size: i64,
}

/// What to load for evaluating rules: `subjects` (any id of their trees; `None`: every live
/// profile), trait and computed keys, and events by name from a time on (`None`: all).
#[derive(Clone, Debug, Default)]
pub struct FactsQuery {
    pub subjects: Option<Vec<ProfileId>>,
    pub traits: Vec<String>,
    pub computed: Vec<String>,
    pub events: Vec<(String, Option<Millis>)>,
}

/// A live profile's facts (traits decrypted, with their time and source for survivorship).
#[derive(Clone, Debug)]
pub struct SubjectFacts {
    pub profile: ProfileId,
    pub traits: Vec<(String, Value, Millis, String)>,
    pub computed: Vec<(String, Value)>,
    /// (event name, time, properties)
    pub events: Vec<(String, Millis, Value)>,
}

/// The outcome of applying an evaluation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Applied {
    pub joined: u64,
    pub left: u64,
    pub size: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MemberView {
    pub profile: ProfileId,
    pub since: Millis,
}

#[derive(Clone, Debug, PartialEq)]
pub struct HistoryView {
    pub seq: i64,
    pub profile: ProfileId,
    pub at: Millis,
    pub change: String,
    pub reason: String,
}

/// Where the incremental refresh stands: the last event and receipt it has seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Watermark {
    pub events: i64,
    pub receipts: i64,
}
