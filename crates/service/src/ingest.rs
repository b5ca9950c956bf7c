//! The ingestion pipeline: parse every message, pass it through the privacy gate, reserve
//! room in the bounded queue, commit durably, report per message.

use std::time::Instant;

use confidant_core::message::{parse_message, peek_message_id, MessageType, ParseContext, RejectReason};
use confidant_core::time::Millis;
use confidant_store::IngestBatch;

use crate::{App, ServiceError, Source};

/// One request's messages, as raw JSON texts.
pub struct IngestRequest<'a> {
    pub source: &'a Source,
    pub messages: Vec<&'a str>,
    /// The batch's own `sentAt`, for messages that have none.
    pub batch_sent_at: Option<Millis>,
    /// The type the endpoint implies (`/v1/track`), `None` for a batch.
    pub endpoint_type: Option<MessageType>,
    pub received_at: Millis,
}

/// A message refused, with where it stood in the request and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedMessage {
    pub index: usize,
    pub message_id: Option<String>,
    pub reason: RejectReason,
    pub detail: String,
}

/// What happened to a request: every accepted message is durably committed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    /// Messages acknowledged: stored now, or already stored (duplicates).
    pub accepted: usize,
    /// Of those, how many were already stored under the same `messageId`.
    pub duplicates: usize,
    pub rejected: Vec<RejectedMessage>,
}

impl App {
    /// Ingests a request's messages. Returns once every accepted message is committed.
    /// Fails whole only when the queue is full (nothing stored) or the store fails.
    pub async fn ingest(&self, req: IngestRequest<'_>) -> Result<IngestOutcome, ServiceError> {
        let inner = &self.inner;
        let parse_started = Instant::now();
        let ctx = ParseContext {
            received_at: req.received_at,
            batch_sent_at: req.batch_sent_at,
            endpoint_type: req.endpoint_type,
            limits: &inner.limits,
            rules: &inner.rules,
            default_region: &inner.config.ingest.default_region,
        };
        let mut accepted = Vec::with_capacity(req.messages.len());
        let mut rejected = Vec::new();
        for (index, raw) in req.messages.iter().enumerate() {
            let parsed = parse_message(raw, &ctx).and_then(|m| inner.gate.admit(req.source, m));
            match parsed {
                Ok(m) => accepted.push(m.seal()),
                Err(r) => rejected.push(RejectedMessage { index, message_id: peek_message_id(raw), reason: r.reason, detail: r.detail }),
            }
        }
        for r in &rejected {
            inner.metrics.rejected(r.reason);
        }

        let n = accepted.len();
        let _permits = if n > 0 {
            match inner.queue.clone().try_acquire_many_owned(n as u32) {
                Ok(p) => Some(p),
                Err(_) => {
                    inner.metrics.throttled();
                    return Err(ServiceError::Overloaded { retry_after_seconds: inner.config.ingest.retry_after_seconds });
                }
            }
        } else {
            None
        };
        let started = Instant::now();
        let report = inner
            .store
            .ingest(IngestBatch { source_id: req.source.id, messages: accepted, rejected: rejected.iter().map(|r| r.reason).collect() })
            .await
            .map_err(|e| {
                tracing::error!(error = %e, source = %req.source.name, "ingestion commit failed");
                ServiceError::from(e)
            })?;
        inner.metrics.committed(report.stored, report.duplicates, started.elapsed());
        if parse_started.elapsed() > std::time::Duration::from_millis(50) {
            tracing::debug!(
                messages = n,
                parse_ms = (started - parse_started).as_millis() as u64,
                commit_ms = started.elapsed().as_millis() as u64,
                "slow ingestion"
            );
        }
        Ok(IngestOutcome { accepted: n, duplicates: report.duplicates, rejected })
    }
}
