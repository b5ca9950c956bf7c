//! The privacy layer's services: the consent book (current decisions in memory, for the gate),
//! consent recording, the rights desk, retention, the register and the audit log.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use confidant_core::audit::identifier_hash;
use confidant_core::ids::{IdKind, Identifier, ProfileId};
use confidant_core::privacy::{decode_tc_string, is_direct_identifier, SubjectState, Use};
use confidant_core::time::Millis;
use confidant_store::privacy::*;
use confidant_store::ProfileView;
use serde_json::{json, Value};

use crate::{App, Principal, ServiceError, Source};

/// Current consent decisions by identifier, for the gate: every identifier of a subject who
/// has receipts maps to the subject's decisions. Rebuilt from the ledger at start, after an
/// erasure or unmerge, and kept up to date from the ledger (also when another process writes it).
#[derive(Default)]
pub struct ConsentBook {
    inner: RwLock<BookInner>,
    refreshing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct BookInner {
    by_identifier: HashMap<(IdKind, String), SubjectState>,
    seq: i64,
    /// Tombstones seen; `-1` forces a full reload.
    tombstones: i64,
    suppressed: HashSet<[u8; 32]>,
}

impl ConsentBook {
    /// The decisions that apply to a message's subject, from all its identifiers; identifiers
    /// not yet in the book learn them (they belong to the same person from now on).
    pub(crate) fn state_for(&self, identifiers: &[Identifier], previous_id: Option<&str>) -> SubjectState {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        if inner.by_identifier.is_empty() {
            return SubjectState::default();
        }
        let mut keys: Vec<(IdKind, String)> = identifiers.iter().map(|i| (i.kind, i.value.clone())).collect();
        if let Some(p) = previous_id {
            keys.push((IdKind::UserId, p.to_owned()));
            keys.push((IdKind::AnonymousId, p.to_owned()));
        }
        let mut state = SubjectState::default();
        let mut unknown = Vec::new();
        for k in &keys {
            match inner.by_identifier.get(k) {
                Some(s) => {
                    for ((p, scope), d) in &s.decisions {
                        state.apply(p, scope, d.granted, d.at);
                    }
                }
                None => unknown.push(k.clone()),
            }
        }
        drop(inner);
        if !state.decisions.is_empty() && !unknown.is_empty() {
            let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
            for k in unknown {
                inner.by_identifier.insert(k, state.clone());
            }
        }
        state
    }

    pub(crate) fn is_suppressed(&self, key: &[u8; 32], identifiers: &[Identifier]) -> bool {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        !inner.suppressed.is_empty() && identifiers.iter().any(|i| inner.suppressed.contains(&identifier_hash(key, i.kind, &i.value)))
    }

    pub(crate) fn invalidate(&self) {
        self.inner.write().unwrap_or_else(|e| e.into_inner()).tombstones = -1;
    }

    /// Brings the book up to date with the ledger.
    pub(crate) async fn refresh(&self, store: &confidant_store::Store) -> Result<(), ServiceError> {
        let _one_at_a_time = self.refreshing.lock().await;
        let (seq, stones) = store.privacy_version().await?;
        let (known_seq, known_stones) = {
            let i = self.inner.read().unwrap_or_else(|e| e.into_inner());
            (i.seq, i.tombstones)
        };
        if stones != known_stones {
            let changes = store.consent_changes_since(0).await?;
            let suppressed = store.tombstones(true).await?.into_iter().collect();
            let mut fresh = BookInner { seq, tombstones: stones, suppressed, ..Default::default() };
            apply(&mut fresh, changes);
            *self.inner.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        } else if seq > known_seq {
            let changes = store.consent_changes_since(known_seq).await?;
            let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
            apply(&mut inner, changes);
            inner.seq = inner.seq.max(seq);
        }
        Ok(())
    }
}

fn apply(book: &mut BookInner, changes: Vec<ConsentChange>) {
    for c in changes {
        for id in &c.identifiers {
            book.by_identifier.entry((id.kind, id.value.clone())).or_default().apply(&c.purpose, &c.scope, c.granted, c.at);
        }
        book.seq = book.seq.max(c.seq);
    }
}

/// Keeps the book in step with the ledger when another process (a CLI command) writes it.
pub(crate) fn spawn_refresher(app: &App) {
    let weak = Arc::downgrade(&app.inner);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
        loop {
            tick.tick().await;
            let Some(inner) = weak.upgrade() else { return };
            if let Err(e) = inner.book.refresh(&inner.store).await {
                tracing::debug!(error = %e, "consent book refresh failed");
            }
        }
    });
}

/// Where a consent came from, as evidence: the IP address truncated (IPv4 to /24, IPv6 to /48)
/// and the user agent (at most 256 characters).
#[derive(Clone, Debug, Default)]
pub struct Evidence {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl Evidence {
    pub fn to_json(&self, tc_string: Option<&str>) -> Value {
        let ip = self.ip.map(|ip| match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                format!("{}.{}.{}.0/24", o[0], o[1], o[2])
            }
            IpAddr::V6(v6) => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
            }
        });
        let ua = self.user_agent.as_ref().map(|u| u.chars().take(256).collect::<String>());
        json!({"ip_truncated": ip, "user_agent": ua, "tc_string": tc_string})
    }
}

/// A consent call (`POST /v1/consent`, the privacy centre, the rights desk).
#[derive(Clone, Debug, Default)]
pub struct ConsentRequest {
    pub identifiers: Vec<Identifier>,
    pub purposes: BTreeMap<String, bool>,
    /// Advertising categories refused (false) or allowed again (true).
    pub advertising_categories: BTreeMap<String, bool>,
    pub method: String,
    pub notice_version: Option<String>,
    pub tc_string: Option<String>,
    pub gpc: bool,
    pub evidence: Evidence,
    pub at: Millis,
}

/// The answer to a consent call.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ConsentAnswer {
    pub subject: String,
    pub receipts: Vec<ReceiptView>,
}

pub const CONSENT_METHODS: &[&str] = &["banner", "api", "privacy_centre", "form", "import", "tcf", "gpc", "dsr", "unsubscribe"];

fn invalid(code: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError::Invalid { code, message: message.into() }
}

/// A rights request.
#[derive(Clone, Debug)]
pub struct DsrRequest {
    pub identifier: Identifier,
    pub channel: String,
    pub action: DsrAction,
}

#[derive(Clone, Debug)]
pub enum DsrAction {
    Export,
    Erase { suppress: bool },
    Rectify { changes: BTreeMap<String, Option<Value>> },
    Restrict { lift: bool },
    Object { purposes: Vec<String>, advertising_categories: Vec<String> },
}

impl DsrAction {
    fn kind(&self) -> DsrKind {
        match self {
            DsrAction::Export => DsrKind::Access,
            DsrAction::Erase { .. } => DsrKind::Erasure,
            DsrAction::Rectify { .. } => DsrKind::Rectification,
            DsrAction::Restrict { .. } => DsrKind::Restriction,
            DsrAction::Object { .. } => DsrKind::Objection,
        }
    }
}

#[derive(Debug, serde::Serialize)]
pub struct DsrOutcome {
    pub request: DsrView,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erasure: Option<ErasureReport>,
}

impl App {
    pub fn policy(&self) -> &confidant_core::privacy::Policy {
        &self.inner.policy
    }

    /// A keyed hash of an identifier, hex: how requests and tombstones refer to people.
    pub fn subject_ref(&self, id: &Identifier) -> String {
        hex::encode(identifier_hash(&self.inner.tombstone_key, id.kind, &id.value))
    }

    /// Appends to the audit log (durably) before the caller answers.
    pub async fn audit(&self, actor: &str, action: &str, subject: Option<ProfileId>, detail: Value) -> Result<(), ServiceError> {
        self.inner.store.append_audit(vec![AuditEntry { actor: actor.to_owned(), action: action.to_owned(), subject, detail }]).await?;
        Ok(())
    }

    /// At start-up: compares the configuration in force (keys by name, role and digest prefix;
    /// sources; the privacy configuration's digest) with the last one recorded, and audits
    /// every change. Secrets never enter the log: a key appears as 12 hex digits of the SHA-256
    /// of its SHA-256.
    pub(crate) async fn audit_configuration(&self) -> Result<(), ServiceError> {
        use sha2::Digest;
        let c = &self.inner.config;
        let fp = |k: &str| hex::encode(&sha2::Sha256::digest(confidant_core::config::key_digest(k))[..6]);
        let keys: BTreeMap<String, Value> = c.api_keys.iter().map(|k| (k.name.clone(), json!({"role": k.role.as_str(), "key": fp(&k.key)}))).collect();
        let sources: BTreeMap<String, Value> = c.sources.iter().map(|s| (s.name.clone(), json!({"key": fp(&s.write_key)}))).collect();
        let privacy = hex::encode(sha2::Sha256::digest(serde_json::to_vec(&c.privacy).unwrap_or_default()));
        let now = json!({"api_keys": keys, "sources": sources, "privacy_sha256": privacy, "notice_version": c.privacy.notice_version});
        let last = self
            .inner
            .store
            .audit_list(AuditFilter { action: Some("config.applied".into()), limit: 1, ..Default::default() })
            .await?
            .into_iter()
            .next()
            .map(|e| e.detail["configuration"].clone());
        if last.as_ref() == Some(&now) {
            return Ok(());
        }
        let mut changes = Vec::new();
        let empty = json!({});
        let before = last.as_ref().unwrap_or(&empty);
        for (section, label) in [("api_keys", "api key"), ("sources", "source")] {
            let (b, a) = (&before[section], &now[section]);
            for (name, v) in a.as_object().into_iter().flatten() {
                match b.get(name) {
                    None => changes.push(format!("{label} added: {name}")),
                    Some(old) if old != v => changes.push(format!("{label} changed: {name}")),
                    _ => {}
                }
            }
            for name in b.as_object().into_iter().flatten().map(|(k, _)| k) {
                if a.get(name).is_none() {
                    changes.push(format!("{label} removed: {name}"));
                }
            }
        }
        if before.get("privacy_sha256") != now.get("privacy_sha256") {
            changes.push("privacy configuration (purposes, categories, tracking plan) changed".into());
        }
        self.audit("system", "config.applied", None, json!({"configuration": now, "changes": changes})).await
    }

    /// Records a consent call: validates everything first, then writes one receipt per
    /// decision, hash-chained, and updates the book before answering.
    pub async fn record_consent(&self, source: Option<&Source>, req: ConsentRequest, actor: &str) -> Result<ConsentAnswer, ServiceError> {
        let policy = &self.inner.policy;
        if req.identifiers.is_empty() {
            return Err(invalid("missing_identity", "userId, anonymousId or email is required"));
        }
        if !CONSENT_METHODS.contains(&req.method.as_str()) {
            return Err(invalid("invalid_method", format!("method must be one of {}", CONSENT_METHODS.join(", "))));
        }
        let mut decisions: Vec<(String, String, bool, &'static str)> = Vec::new();
        for (p, granted) in &req.purposes {
            if policy.purpose(p).is_none() {
                return Err(invalid("unknown_purpose", format!("{p} is not a declared purpose")));
            }
            decisions.push((p.clone(), String::new(), *granted, "explicit"));
        }
        for (c, allowed) in &req.advertising_categories {
            if !policy.is_ad_category(c) {
                return Err(invalid("unknown_category", format!("{c} is not a configured advertising category")));
            }
            decisions.push(("advertising.targeted".into(), c.clone(), *allowed, "explicit"));
        }
        if let Some(tc) = &req.tc_string {
            let decoded = decode_tc_string(tc).map_err(|e| invalid("invalid_tc_string", e))?;
            // Every mapped TCF purpose decides ours; a purpose of ours named by several TCF
            // purposes is granted only if all of them are.
            let mut ours: BTreeMap<String, bool> = BTreeMap::new();
            for n in 1..=11u8 {
                for p in policy.tcf_purpose(n) {
                    let given = decoded.purposes_consent.contains(&n);
                    let e = ours.entry(p.to_owned()).or_insert(true);
                    *e = *e && given;
                }
            }
            for (p, g) in ours {
                if !req.purposes.contains_key(&p) {
                    decisions.push((p, String::new(), g, "tcf"));
                }
            }
        }
        if req.gpc {
            for p in policy.gpc_purposes() {
                decisions.push((p.id.clone(), String::new(), false, "gpc"));
            }
        }
        if decisions.is_empty() {
            return Err(invalid("no_decision", "purposes, advertising_categories, a TC string or Sec-GPC is required"));
        }
        let notice_sha = policy.notice_sha256().to_owned();
        let evidence = req.evidence.to_json(req.tc_string.as_deref());
        let receipts = decisions
            .into_iter()
            .map(|(purpose, scope, granted, origin)| ReceiptInput {
                purpose,
                scope,
                granted,
                at: req.at,
                method: match origin {
                    "tcf" => "tcf".into(),
                    "gpc" => "gpc".into(),
                    _ => req.method.clone(),
                },
                notice_version: Some(req.notice_version.clone().unwrap_or_else(|| policy.config().notice_version.clone())),
                notice_sha256: Some(notice_sha.clone()),
                evidence: evidence.clone(),
            })
            .collect();
        let recorded = self
            .inner
            .store
            .record_consent(ConsentWrite { source_id: source.map(|s| s.id), identifiers: req.identifiers, receipts, only_changes: false })
            .await?;
        let purposes: Vec<Value> = recorded.receipts.iter().map(|r| json!({"purpose": r.purpose, "scope": r.scope, "granted": r.granted})).collect();
        self.audit(actor, "consent.recorded", Some(recorded.profile), json!({"receipts": purposes, "method": req.method})).await?;
        self.inner.book.refresh(&self.inner.store).await?;
        self.forget_computed_if_unlawful(recorded.profile).await?;
        self.forget_recommendations_if_unlawful(recorded.profile).await?;
        self.refresh_audiences_for(recorded.profile, "consent").await?;
        Ok(ConsentAnswer { subject: recorded.profile.to_string(), receipts: recorded.receipts })
    }

    /// "Is purpose P lawful for subject S now?" The helper every feature that uses personal
    /// data calls (segments, campaigns, recommendations, exports, destinations).
    pub async fn is_lawful(&self, subject: ProfileId, purpose: &str) -> Result<bool, ServiceError> {
        let state = self.subject_state(subject).await?;
        Ok(self.inner.policy.is_lawful(purpose, &state, Use::Process))
    }

    /// The same question for many subjects in one read: those of `subjects` for whom the
    /// purpose is lawful now (subjects that no longer exist are not).
    pub async fn lawful_among(&self, subjects: Vec<ProfileId>, purpose: &str) -> Result<HashSet<ProfileId>, ServiceError> {
        let records = self.inner.store.subject_records(subjects.clone()).await?;
        Ok(subjects
            .into_iter()
            .zip(records)
            .filter(|(_, r)| r.as_ref().is_some_and(|r| self.inner.policy.is_lawful(purpose, &state_of(r), Use::Process)))
            .map(|(s, _)| s)
            .collect())
    }

    pub async fn subject_state(&self, subject: ProfileId) -> Result<SubjectState, ServiceError> {
        let rec = self.inner.store.subject_record(subject).await?;
        Ok(state_of(&rec))
    }

    /// The subject an identifier leads to, if any.
    pub async fn resolve(&self, id: &Identifier) -> Result<Option<ProfileView>, ServiceError> {
        Ok(self.find_profiles(id.kind, &id.value).await?.into_iter().next())
    }

    /// Handles a rights request end to end: recorded with a deadline, carried out, completed
    /// (or refused with the reason), each step in the audit log.
    pub async fn dsr(&self, req: DsrRequest, by: &Principal) -> Result<DsrOutcome, ServiceError> {
        let actor = by.actor();
        let kind = req.action.kind();
        // Validate before recording anything.
        match &req.action {
            DsrAction::Rectify { changes } => {
                if changes.is_empty() {
                    return Err(invalid("no_change", "a rectification needs at least one trait"));
                }
                for k in changes.keys() {
                    if self.inner.policy.trait_category(k).is_none() {
                        return Err(invalid("undeclared_trait", format!("{k} is not a trait of the tracking plan")));
                    }
                }
            }
            DsrAction::Object { purposes, advertising_categories } => {
                if purposes.is_empty() && advertising_categories.is_empty() {
                    return Err(invalid("no_purpose", "an objection names at least one purpose or advertising category"));
                }
                for p in purposes {
                    if self.inner.policy.purpose(p).is_none() {
                        return Err(invalid("unknown_purpose", format!("{p} is not a declared purpose")));
                    }
                }
                for c in advertising_categories {
                    if !self.inner.policy.is_ad_category(c) {
                        return Err(invalid("unknown_category", format!("{c} is not a configured advertising category")));
                    }
                }
            }
            _ => {}
        }
        let subject = self.resolve(&req.identifier).await?;
        let profile = subject.as_ref().map(|p| p.id);
        let request = self
            .inner
            .store
            .dsr_create(
                DsrInput {
                    kind,
                    profile,
                    subject_ref: self.subject_ref(&req.identifier),
                    actor: actor.clone(),
                    channel: req.channel.clone(),
                    requested_at: crate::now_millis(),
                },
                AuditEntry { actor: actor.clone(), action: format!("dsr.{}.received", kind.as_str()), subject: profile, detail: json!({"channel": req.channel}) },
            )
            .await?;
        let finish = |status: &str, detail: Value, action: String| {
            let store = self.inner.store.clone();
            let (status, actor) = (status.to_owned(), actor.clone());
            async move { store.dsr_finish(request.id, status, detail.clone(), AuditEntry { actor, action, subject: profile, detail }).await }
        };
        let Some(subject) = subject else {
            let done = finish("no_data", json!({"reason": "no data is held for this identifier"}), format!("dsr.{}.no_data", kind.as_str())).await?;
            return Ok(DsrOutcome { request: done, message: "No data is held for this identifier; nothing was changed.".into(), export: None, erasure: None });
        };
        let restricted = self.inner.store.subject_record(subject.id).await?.restricted;
        match req.action {
            DsrAction::Export => {
                let export = self.build_export(subject.id, &request.receipt_id).await?;
                let n = export["events"].as_array().map_or(0, Vec::len);
                let done = finish("completed", json!({"events": n}), "dsr.access.completed".into()).await?;
                Ok(DsrOutcome { request: done, message: "Export ready.".into(), export: Some(export), erasure: None })
            }
            DsrAction::Erase { suppress } => {
                if restricted {
                    finish("refused", json!({"reason": "restricted"}), "dsr.erasure.refused".into()).await?;
                    return Err(ServiceError::Restricted(
                        "the subject's data is restricted (Art. 18) and must be kept; lift the restriction before erasing".into(),
                    ));
                }
                let report = self
                    .inner
                    .store
                    .erase(ErasureRequest {
                        profile: subject.id,
                        tombstone_key: self.inner.tombstone_key,
                        suppress,
                        tombstones: true,
                        dsr: Some(request.id),
                        audit: AuditEntry { actor: actor.clone(), action: "dsr.erasure.completed".into(), subject: None, detail: json!({"suppress": suppress}) },
                    })
                    .await?;
                self.inner.book.invalidate();
                self.inner.book.refresh(&self.inner.store).await?;
                self.forget_recommendations(&subject.members);
                let done = self.inner.store.dsr_get(request.id).await?.ok_or(ServiceError::NotFound("request"))?;
                Ok(DsrOutcome { request: done, message: "The subject was erased.".into(), export: None, erasure: Some(report) })
            }
            DsrAction::Rectify { changes } => {
                for (k, v) in &changes {
                    let encrypt = self.inner.policy.trait_category(k).is_some_and(|c| self.inner.policy.is_encrypted(c));
                    self.inner
                        .store
                        .rectify(
                            subject.id,
                            k.clone(),
                            v.clone(),
                            encrypt,
                            request.id,
                            AuditEntry { actor: actor.clone(), action: "dsr.rectification.applied".into(), subject: Some(subject.id), detail: json!({"trait": k, "removed": v.is_none()}) },
                        )
                        .await?;
                }
                let keys: Vec<&String> = changes.keys().collect();
                // Art. 19: every destination that received the data is told of the correction.
                let forwarded = self.forward_rights(subject.id, request.id, "rectification", self.subject_ref(&req.identifier), json!({"changes": changes})).await?;
                let done = finish("completed", json!({"traits": keys, "forwarded": forwarded}), "dsr.rectification.completed".into()).await?;
                Ok(DsrOutcome { request: done, message: "Rectified.".into(), export: None, erasure: None })
            }
            DsrAction::Restrict { lift } => {
                let changed = self
                    .inner
                    .store
                    .set_restricted(subject.id, !lift, AuditEntry { actor: actor.clone(), action: if lift { "dsr.restriction.lifted".into() } else { "dsr.restriction.applied".into() }, subject: Some(subject.id), detail: json!({}) })
                    .await?;
                if !changed {
                    let why = if lift { "not_restricted" } else { "already_restricted" };
                    finish("refused", json!({"reason": why}), "dsr.restriction.refused".into()).await?;
                    return Err(ServiceError::Conflict(if lift { "the subject is not restricted".into() } else { "the subject is already restricted".into() }));
                }
                self.refresh_audiences_for(subject.id, "restriction").await?;
                let forwarded = self.forward_rights(subject.id, request.id, "restriction", self.subject_ref(&req.identifier), json!({"lifted": lift})).await?;
                let done = finish("completed", json!({"lifted": lift, "forwarded": forwarded}), "dsr.restriction.completed".into()).await?;
                Ok(DsrOutcome { request: done, message: if lift { "Restriction lifted." } else { "Processing restricted." }.into(), export: None, erasure: None })
            }
            DsrAction::Object { purposes, advertising_categories } => {
                let consent = ConsentRequest {
                    identifiers: vec![req.identifier.clone()],
                    purposes: purposes.iter().map(|p| (p.clone(), false)).collect(),
                    advertising_categories: advertising_categories.iter().map(|c| (c.clone(), false)).collect(),
                    method: "dsr".into(),
                    at: crate::now_millis(),
                    ..Default::default()
                };
                let answer = self.record_consent(None, consent, &actor).await?;
                let forwarded = self
                    .forward_rights(subject.id, request.id, "objection", self.subject_ref(&req.identifier), json!({"purposes": purposes, "advertising_categories": advertising_categories}))
                    .await?;
                let done = finish(
                    "completed",
                    json!({"purposes": purposes, "advertising_categories": advertising_categories, "receipts": answer.receipts.len(), "forwarded": forwarded}),
                    "dsr.objection.completed".into(),
                )
                .await?;
                Ok(DsrOutcome { request: done, message: "Objection recorded; it applies at once.".into(), export: None, erasure: None })
            }
        }
    }

    /// Everything held about a subject (Art. 15 and 20), with, for each category, why it is held.
    pub async fn build_export(&self, subject: ProfileId, request: &str) -> Result<Value, ServiceError> {
        let mut x = self.inner.store.export(subject).await?;
        let computed = self.inner.store.computed_traits(subject).await?;
        let audiences = self.inner.store.audiences_of(subject).await?;
        self.golden(&mut x.profile);
        let policy = &self.inner.policy;
        let state = state_of(&self.inner.store.subject_record(subject).await?);
        let mut categories: BTreeMap<String, ()> = BTreeMap::new();
        let traits: Vec<Value> = x
            .profile
            .traits
            .iter()
            .map(|t| {
                let cat = policy.trait_category(&t.key).unwrap_or("");
                categories.insert(cat.to_owned(), ());
                json!({"key": t.key, "value": t.value, "source": t.source, "timestamp": confidant_core::time::format_millis(t.timestamp), "category": cat})
            })
            .collect();
        let events: Vec<&confidant_store::RawValue> = x.events.iter().map(|e| e.body.as_ref()).collect();
        for e in &x.events {
            if let Ok(v) = serde_json::from_str::<Value>(e.body.get()) {
                let kind = v["type"].as_str().and_then(confidant_core::message::MessageType::from_name);
                if let Some(c) = kind.and_then(|k| policy.event_category(k, v["event"].as_str().or(v["name"].as_str()))) {
                    categories.insert(c.to_owned(), ());
                }
            }
        }
        let processing: Vec<Value> = categories
            .keys()
            .filter(|c| !c.is_empty())
            .map(|c| {
                let purposes: Vec<Value> = policy
                    .purposes_of(c)
                    .map(|p| {
                        json!({"purpose": p.id, "name": p.name, "legal_basis": p.legal_basis.as_str(), "lawful_now": policy.is_lawful(&p.id, &state, Use::Process),
                               "recipients": p.recipients, "processors": p.processors, "transfers": p.transfers, "retention": p.retention})
                    })
                    .collect();
                json!({"category": c, "name": policy.category(c).map(|k| &k.name), "purposes": purposes})
            })
            .collect();
        let current: Vec<Value> = state.decisions.iter().map(|((p, s), d)| json!({"purpose": p, "scope": s, "granted": d.granted, "at": confidant_core::time::format_millis(d.at)})).collect();
        Ok(json!({
            "format": "confidant.subject-export.v1",
            "request": request,
            "generated_at": confidant_core::time::format_millis(crate::now_millis()),
            "controller": policy.config().controller,
            "dpo": policy.config().dpo,
            "subject": {"id": x.profile.id.to_string(), "created_at": confidant_core::time::format_millis(x.profile.created_at),
                        "first_seen": x.profile.first_seen.map(confidant_core::time::format_millis), "last_seen": x.profile.last_seen.map(confidant_core::time::format_millis),
                        "merged_profiles": x.profile.members.iter().map(|m| m.to_string()).collect::<Vec<_>>()},
            "identities": x.profile.identities.iter().map(|i| json!({"kind": i.kind.as_str(), "value": i.value, "source": i.source, "created_at": confidant_core::time::format_millis(i.created_at)})).collect::<Vec<_>>(),
            "traits": traits,
            "trait_lineage": x.profile.trait_values.iter().map(|t| json!({"key": t.key, "value": t.value, "source": t.source, "timestamp": confidant_core::time::format_millis(t.timestamp)})).collect::<Vec<_>>(),
            "computed_traits": computed.iter().map(|c| json!({"key": c.key, "value": c.value, "computed_at": confidant_core::time::format_millis(c.computed_at)})).collect::<Vec<_>>(),
            "audiences": audiences.iter().map(|(name, purpose, since)| json!({"audience": name, "purpose": purpose, "since": confidant_core::time::format_millis(*since)})).collect::<Vec<_>>(),
            "events": events,
            "consent": {"current": current, "receipts": x.receipts},
            "merges": x.merges.iter().map(|m| json!({"id": m.id, "at": confidant_core::time::format_millis(m.at), "into": m.into.to_string(), "from": m.from.to_string(), "rule": m.rule, "evidence": m.evidence, "undone_at": m.undone_at.map(confidant_core::time::format_millis)})).collect::<Vec<_>>(),
            "conflicts": x.conflicts.iter().map(|c| json!({"at": confidant_core::time::format_millis(c.at), "kind": c.kind.as_str(), "reason": c.reason})).collect::<Vec<_>>(),
            "restriction": x.restricted.map(|(at, by)| json!({"since": confidant_core::time::format_millis(at), "by": by})),
            "requests": x.requests,
            "processing": processing,
        }))
    }

    /// A profile as an analyst may see it: no direct identifiers (identities hidden, traits of
    /// identifying categories removed), only the pseudonymous id.
    pub fn pseudonymise(&self, p: &ProfileView) -> Value {
        let traits: Vec<Value> = p
            .traits
            .iter()
            .filter(|t| self.inner.policy.trait_category(&t.key).is_some_and(|c| !is_direct_identifier(c) && !self.inner.policy.is_encrypted(c)))
            .map(|t| json!({"key": t.key, "value": t.value, "source": t.source}))
            .collect();
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for i in &p.identities {
            *kinds.entry(i.kind.as_str()).or_default() += 1;
        }
        json!({
            "id": p.id.to_string(),
            "pseudonymised": true,
            "identifier_counts": kinds,
            "traits": traits,
            "event_count": p.event_count,
            "first_seen": p.first_seen.map(confidant_core::time::format_millis),
            "last_seen": p.last_seen.map(confidant_core::time::format_millis),
        })
    }

    /// An event as an analyst may see it: type, name, time and the properties of
    /// non-identifying categories.
    pub fn pseudonymise_event(&self, body: &str) -> Value {
        let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let kind = v["type"].as_str().and_then(confidant_core::message::MessageType::from_name);
        let event = v["event"].as_str().or(v["name"].as_str());
        let event_cat = kind.and_then(|k| self.inner.policy.event_category(k, event)).unwrap_or("");
        let plan = &self.inner.policy.config().plan;
        let props: serde_json::Map<String, Value> = v["properties"]
            .as_object()
            .map(|o| {
                o.iter()
                    .filter(|(k, _)| {
                        let declared = event.and_then(|e| plan.events.get(e)).and_then(|e| e.properties.get(*k)).or_else(|| plan.properties.get(*k));
                        let cat = match declared.map(String::as_str) {
                            Some(confidant_core::privacy::INHERIT) => event_cat,
                            Some(c) => c,
                            None => return false,
                        };
                        !is_direct_identifier(cat) && !self.inner.policy.is_encrypted(cat)
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        json!({"type": v["type"], "event": event, "timestamp": v["timestamp"], "messageId": v["messageId"], "properties": props})
    }

    pub async fn minimisation(&self) -> Result<Vec<MinimisationRow>, ServiceError> {
        Ok(self.inner.store.minimisation().await?)
    }

    pub async fn audit_list(&self, f: AuditFilter) -> Result<Vec<AuditView>, ServiceError> {
        Ok(self.inner.store.audit_list(f).await?)
    }

    /// Verifies the audit log and the consent ledger.
    pub async fn verify_chains(&self) -> Result<(ChainReport, ChainReport), ServiceError> {
        Ok((self.inner.store.verify_audit().await?, self.inner.store.verify_receipts().await?))
    }

    pub async fn dsr_list(&self, open_only: bool, limit: usize) -> Result<Vec<DsrView>, ServiceError> {
        Ok(self.inner.store.dsr_list(open_only, limit).await?)
    }

    pub async fn dsr_get(&self, id: i64) -> Result<DsrView, ServiceError> {
        self.inner.store.dsr_get(id).await?.ok_or(ServiceError::NotFound("request"))
    }

    /// Applies retention (or, with `dry_run`, reports what it would remove).
    pub async fn retention_run(&self, dry_run: bool, actor: &str) -> Result<RetentionReport, ServiceError> {
        let policy = self.inner.policy.clone();
        let rule = Arc::new(move |rec: &SubjectRecord| {
            let d = policy.retention_for(&state_of(rec));
            RetentionRule { subject_days: d.subject_days, categories: d.categories }
        });
        let mut report = self.inner.store.retention(rule, dry_run).await?;
        if !dry_run {
            // Whole months past any retention go at once (PostgreSQL's partitions).
            if let Some(days) = self.inner.policy.events_expire_after_days() {
                let cutoff = crate::now_millis() - i64::from(days) * 86_400_000;
                report.partitions_dropped = self.inner.store.drop_event_months_before(cutoff).await?;
            }
            self.audit(actor, "retention.run", None, serde_json::to_value(&report).unwrap_or(Value::Null)).await?;
            if report.subjects_erased > 0 {
                self.inner.book.invalidate();
                self.inner.book.refresh(&self.inner.store).await?;
            }
            if report.subjects_erased > 0 || report.events_deleted > 0 {
                // The models learnt from what retention just deleted.
                self.retrain_soon();
            }
        }
        Ok(report)
    }

    /// The identity graph changed (merges): consent decisions follow the merged identifiers.
    pub(crate) async fn consent_book_changed(&self) -> Result<(), ServiceError> {
        self.inner.book.invalidate();
        self.inner.book.refresh(&self.inner.store).await
    }

    /// After restoring a backup: erases again everyone erased since it was taken.
    pub async fn reapply_erasures(&self, actor: &str) -> Result<u64, ServiceError> {
        let n = self.inner.store.reapply_tombstones(self.inner.tombstone_key, actor.to_owned()).await?;
        self.inner.book.invalidate();
        self.inner.book.refresh(&self.inner.store).await?;
        if n > 0 {
            self.retrain_soon();
        }
        Ok(n)
    }

    pub async fn register_counts(&self) -> Result<RegisterCounts, ServiceError> {
        Ok(self.inner.store.register_counts(self.inner.policy.config().plan.traits.clone()).await?)
    }
}

pub(crate) fn state_of(rec: &SubjectRecord) -> SubjectState {
    let mut s = SubjectState { restricted: rec.restricted, ..Default::default() };
    for (p, scope, granted, at) in &rec.decisions {
        s.apply(p, scope, *granted, *at);
    }
    s
}
