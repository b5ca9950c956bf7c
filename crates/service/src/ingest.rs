//! The ingestion pipeline: parse every message, pass it through the privacy gate, reserve
//! room in the bounded queue, commit durably, report per message.

use std::time::Instant;

use std::collections::HashMap;

use confidant_core::ids::Identifier;
use confidant_core::message::{parse_message, peek_message_id, MessageType, ParseContext, ParsedMessage, RejectReason, Rejection};
use confidant_core::privacy::{safe_field_name, Dropped};
use confidant_core::time::Millis;
use confidant_store::privacy::{ConsentWrite, DropKey, ReceiptInput};
use confidant_store::IngestBatch;
use serde_json::Value;

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
    /// The request carried `Sec-GPC: 1`: an objection to the purposes marked `gpc`.
    pub gpc: bool,
}

/// Consent carried by messages, to record before their data is stored.
struct PendingConsent {
    identifiers: Vec<Identifier>,
    receipts: Vec<ReceiptInput>,
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
        let mut drops: HashMap<DropKey, u64> = HashMap::new();
        let mut consents = Vec::new();
        for (index, raw) in req.messages.iter().enumerate() {
            let parsed = parse_message(raw, &ctx).and_then(|m| self.gate(m, req.gpc, req.received_at, &mut drops, &mut consents));
            match parsed {
                Ok(m) => {
                    let encrypt = inner.policy.encrypted_fields(&m);
                    accepted.push(m.seal_with(&encrypt, &inner.placeholder_token));
                }
                Err(r) => rejected.push(RejectedMessage { index, message_id: peek_message_id(raw), reason: r.reason, detail: r.detail }),
            }
        }
        // Consent carried by the messages is recorded first, so that it governs them and
        // every message after them.
        if !consents.is_empty() {
            for c in consents {
                inner
                    .store
                    .record_consent(ConsentWrite { source_id: Some(req.source.id), identifiers: c.identifiers, receipts: c.receipts, only_changes: true })
                    .await?;
            }
            inner.book.refresh(&inner.store).await?;
        }
        for r in &rejected {
            inner.metrics.rejected(r.reason);
        }

        let n = accepted.len();
        // The queue's shares are held until the store has applied the batch (on SQLite that
        // is after the acknowledgement), so the queue bounds what is waiting to be applied.
        let permits = if n > 0 {
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
            .ingest_holding(
                IngestBatch {
                    source_id: req.source.id,
                    messages: accepted,
                    rejected: rejected.iter().map(|r| r.reason).collect(),
                    drops: drops.into_iter().collect(),
                },
                permits.map(|p| Box::new(p) as confidant_store::Hold),
            )
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

impl App {
    /// The privacy gate, between parsing and storing: refuses suppressed subjects, takes the
    /// consent a message carries (`context.consent.categoryPreferences`, `Sec-GPC`), then
    /// minimises the message against the tracking plan and the subject's decisions.
    fn gate(
        &self,
        m: ParsedMessage,
        gpc: bool,
        now: Millis,
        drops: &mut HashMap<DropKey, u64>,
        consents: &mut Vec<PendingConsent>,
    ) -> Result<ParsedMessage, Rejection> {
        let inner = &self.inner;
        let policy = &inner.policy;
        if inner.book.is_suppressed(&inner.tombstone_key, &m.envelope.identifiers) {
            return Err(Rejection::new(RejectReason::Suppressed, "this subject was erased and asked that nothing more be collected"));
        }
        let mut state = inner.book.state_for(&m.envelope.identifiers, m.envelope.previous_id.as_deref());
        let mut receipts = Vec::new();
        let mut decide = |state: &mut confidant_core::privacy::SubjectState, purpose: &str, granted: bool, method: &str| {
            if state.decision(purpose, "").map(|d| d.granted) != Some(granted) {
                state.apply(purpose, "", granted, now);
                receipts.push(ReceiptInput {
                    purpose: purpose.to_owned(),
                    scope: String::new(),
                    granted,
                    at: now,
                    method: method.to_owned(),
                    notice_version: Some(policy.config().notice_version.clone()),
                    notice_sha256: Some(policy.notice_sha256().to_owned()),
                    evidence: serde_json::json!({"message_id": m.envelope.message_id}),
                });
            }
        };
        if let Some(Value::Object(prefs)) = m.body.get("context").and_then(|c| c.get("consent")).and_then(|c| c.get("categoryPreferences")) {
            for (category, v) in prefs {
                if let Value::Bool(granted) = v {
                    for p in policy.consent_category(category) {
                        decide(&mut state, p, *granted, "segment_context");
                    }
                }
            }
        }
        if gpc {
            for p in policy.gpc_purposes() {
                decide(&mut state, &p.id, false, "gpc");
            }
        }
        if !receipts.is_empty() {
            let mut identifiers = m.envelope.identifiers.clone();
            if let Some(p) = &m.envelope.previous_id {
                identifiers.push(Identifier::new(confidant_core::ids::IdKind::AnonymousId, p.clone()));
            }
            consents.push(PendingConsent { identifiers, receipts });
        }
        let event_key = match (&m.envelope.event, m.envelope.kind) {
            (Some(e), MessageType::Track) => safe_field_name(e),
            (_, k) => k.as_str().to_owned(),
        };
        let mut count = |d: Dropped| {
            *drops.entry(DropKey { event: event_key.clone(), field: d.field, reason: d.reason.code().to_owned() }).or_default() += 1;
        };
        match policy.minimise(m, &state) {
            Ok((mut m, dropped)) => {
                dropped.into_iter().for_each(&mut count);
                m.envelope.category = policy.event_category(m.envelope.kind, m.envelope.event.as_deref()).map(str::to_owned);
                Ok(m)
            }
            Err(r) => {
                if r.reason == RejectReason::UndeclaredEvent {
                    count(Dropped { field: "(event)".into(), reason: confidant_core::privacy::DropReason::Undeclared });
                }
                Err(r)
            }
        }
    }
}
