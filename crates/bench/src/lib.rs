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
