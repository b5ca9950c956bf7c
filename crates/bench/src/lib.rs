//! Shared by the benchmark binaries: the workload, the same for the server and the baseline.

use confidant_demo::{generate, DemoOptions, DAY_MS};
use serde_json::Value;

/// Realistic shop traffic from the demo generator, in batches, with message ids unique to
/// this run (so a run never collides with an earlier one in the same database).
pub fn workload(run: &str, customers: usize, batch_size: usize) -> Vec<Vec<Value>> {
    let opts = DemoOptions { seed: 2026, customers, anonymous_visitors: customers / 2, days: 180, end: 1_790_000_000_000 - 1_790_000_000_000 % DAY_MS };
    generate(&opts, batch_size)
        .map(|mut batch| {
            for m in &mut batch {
                let id = m["messageId"].as_str().unwrap_or_default().to_owned();
                m["messageId"] = Value::String(format!("{run}-{id}"));
                for key in ["userId", "anonymousId"] {
                    if let Some(v) = m.get(key).and_then(Value::as_str).map(|v| format!("{run}-{v}")) {
                        m[key] = Value::String(v);
                    }
                }
            }
            batch
        })
        .collect()
}

/// Percentile of sorted durations, in milliseconds.
pub fn percentile(sorted_ms: &[f64], p: f64) -> f64 {
    if sorted_ms.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted_ms.len() - 1) as f64).round() as usize;
    sorted_ms[i.min(sorted_ms.len() - 1)]
}

/// An event row as the raw-insert baselines write it: message id, type, event name, time
/// (ms), body.
pub type RawRow = (String, String, Option<String>, i64, String);

/// The demo shop's messages as event rows, all at one time, for the raw-insert baselines.
pub fn raw_rows(customers: usize) -> Vec<RawRow> {
    workload("raw", customers, 100)
        .into_iter()
        .flatten()
        .map(|m| {
            let ts = 1_790_000_000_000i64;
            (m["messageId"].as_str().unwrap_or_default().to_owned(), m["type"].as_str().unwrap_or_default().to_owned(), m["event"].as_str().map(str::to_owned), ts, m.to_string())
        })
        .collect()
}

/// One message as the store ends up holding it, for the raw baseline that writes the same
/// rows as the server: the event row at its own time and under its own profile, the profile
/// and identifier rows the first time a person is seen, and the traits an `identify` sets.
pub struct StoredRow {
    pub message_id: String,
    pub kind: String,
    pub event: Option<String>,
    pub ts: i64,
    pub body: String,
    /// The person: `userId` when the message has one, else `anonymousId`.
    pub person: String,
    /// (kind code, value): 0 user id, 1 email, 3 anonymous id, as the store numbers them.
    pub identifiers: Vec<(i64, String)>,
    /// (key, JSON value) of `traits` (identify) or `context.traits`.
    pub traits: Vec<(String, String)>,
}

/// The demo shop's messages as the rows the server stores (see [`StoredRow`]).
pub fn stored_rows(customers: usize) -> Vec<StoredRow> {
    workload("raw", customers, 100)
        .into_iter()
        .flatten()
        .map(|m| {
            let text = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
            let user = text("userId");
            let anon = text("anonymousId");
            let traits_obj = m.get("traits").or_else(|| m.get("context").and_then(|c| c.get("traits"))).and_then(Value::as_object);
            let mut identifiers = Vec::new();
            if let Some(u) = &user {
                identifiers.push((0, u.clone()));
            }
            if let Some(e) = traits_obj.and_then(|t| t.get("email")).and_then(Value::as_str).and_then(|e| confidant_core::ids::Email::parse(e).ok()) {
                identifiers.push((1, e.as_str().to_owned()));
            }
            if let Some(a) = &anon {
                identifiers.push((3, a.clone()));
            }
            StoredRow {
                message_id: text("messageId").unwrap_or_default(),
                kind: text("type").unwrap_or_default(),
                event: text("event"),
                ts: text("timestamp").and_then(|t| confidant_core::time::parse_timestamp(&t)).unwrap_or(1_790_000_000_000),
                body: m.to_string(),
                person: user.or(anon).unwrap_or_default(),
                identifiers,
                traits: traits_obj.map(|t| t.iter().map(|(k, v)| (k.clone(), v.to_string())).collect()).unwrap_or_default(),
            }
        })
        .collect()
}
