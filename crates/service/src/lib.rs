//! Confidant's services, between the edge (HTTP, CLI) and the store.
//!
//! - [`App`]: the running product: configuration, store, keys, the ingestion queue, metrics.
//! - [`ingest`]: raw message texts in, a durable commit and a per-message report out, with the
//!   privacy gate (minimisation, consent, suppression) between parsing and storing.
//! - [`import`]: CSV/JSONL rows mapped, normalised, validated, imported or quarantined.
//! - [`privacy`]: the consent book, consent recording, the rights desk, retention, audit.
//! - [`analytics`]: orders, RFM, lifetime value, churn and demand forecasts.
//! - [`audiences`]: purpose-bound audiences over traits, computed traits and events.
//! - [`campaigns`]: email campaigns and triggered messages, the delivery log, unsubscribe links.
//! - [`destinations`]: webhooks fed with lawful events, audience changes and rights requests;
//!   audience exports.
//! - [`mail`]: the SMTP client (the only module that knows lettre).
//! - [`recs`]: recommendation models trained on lawful subjects, served per request.
//! - [`ropa`]: the register of processing, generated from the configuration and live counts.
//! - [`matching`]: probabilistic matching of profiles, merges and the review queue.
//! - [`keys`]: the master key and the keys derived from it.
//! - [`metrics`]: Prometheus counters and histograms.
//!
//! No HTTP types and no SQL here.

pub mod analytics;
pub mod audiences;
pub mod campaigns;
pub mod console;
pub mod destinations;
pub mod import;
pub mod ingest;
pub mod keys;
pub mod mail;
pub mod matching;
pub mod metrics;
pub mod portal;
pub mod privacy;
pub mod recs;
pub mod ropa;
pub mod scan;

use std::collections::HashMap;
use std::sync::Arc;

use confidant_core::config::{Config, Role};
use confidant_core::identity::IdentityRules;
use confidant_core::ids::{IdKind, ProfileId};
use confidant_core::message::Limits;
use confidant_store::{ConflictView, EventCursor, EventPage, MergeView, ProfileView, Store, StoreError};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

pub use confidant_store as store;

/// Errors by meaning; the HTTP layer maps each to one status.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("the ingestion queue is full; retry after {retry_after_seconds} s")]
    Overloaded { retry_after_seconds: u64 },
    #[error("storage is unavailable")]
    Unavailable(#[source] StoreError),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    /// Well-formed but not acceptable (an unknown purpose, an invalid TC string...).
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// The subject's processing is restricted (Art. 18).
    #[error("{0}")]
    Restricted(String),
    /// An audience rule that does not parse, with the position of the error.
    #[error("the rule does not parse: {0}")]
    InvalidRule(confidant_core::audience::RuleError),
    /// A message template that does not parse (or names an unknown variable), with the field
    /// (`body.fr`) and the position.
    #[error("{field}: {error}")]
    InvalidTemplate { field: String, error: confidant_core::template::TemplateError },
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ServiceError::NotFound(what),
            StoreError::Conflict(m) => ServiceError::Conflict(m),
            StoreError::Invalid(m) => ServiceError::Invalid { code: "invalid", message: m },
            other => ServiceError::Unavailable(other),
        }
    }
}

/// A source that sends data, identified by its write key.
#[derive(Clone, Debug)]
pub struct Source {
    pub id: i64,
    pub name: String,
}

/// Who is calling the admin API.
#[derive(Clone, Debug)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

impl Principal {
    /// How the audit log names them: `role:name`.
    pub fn actor(&self) -> String {
        format!("{}:{}", self.role.as_str(), self.name)
    }
}

/// Why an admin API call is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    Invalid,
    /// A write key: valid, but only for sending events.
    WriteKeyOnAdminApi,
    /// A valid key whose role may not do this.
    Forbidden,
}

/// Now, in milliseconds since the epoch: the one clock read of the service and the edge (core
/// takes "now" as an argument).
pub fn now_millis() -> confidant_core::time::Millis {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The running product, shared by every request.
#[derive(Clone)]
pub struct App {
    inner: Arc<AppInner>,
}

struct AppInner {
    config: Config,
    store: Store,
    limits: Limits,
    rules: IdentityRules,
    // Keys are looked up by their SHA-256, so the maps hold no secret and the lookup time
    // says nothing about how much of a guessed key was right.
    write_keys: HashMap<[u8; 32], Source>,
    api_keys: HashMap<[u8; 32], Principal>,
    queue: Arc<Semaphore>,
    metrics: metrics::Metrics,
    policy: Arc<confidant_core::privacy::Policy>,
    book: privacy::ConsentBook,
    tombstone_key: [u8; 32],
    unsubscribe_key: [u8; 32],
    portal_key: [u8; 32],
    portal: portal::PortalState,
    destinations: destinations::DestinationState,
    /// Random, per process: makes the placeholders of values to encrypt unguessable.
    placeholder_token: String,
    recs: recs::RecState,
    audiences: audiences::AudienceState,
}

impl App {
    /// Builds the app over an open store: registers the configured sources.
    pub async fn new(config: Config, store: Store, master_key: keys::MasterKey) -> Result<App, ServiceError> {
        let names: Vec<String> = config.sources.iter().map(|s| s.name.clone()).collect();
        let ids = store.ensure_sources(names).await?;
        let write_keys = config
            .sources
            .iter()
            .zip(ids)
            .map(|(s, id)| (confidant_core::config::key_digest(&s.write_key), Source { id, name: s.name.clone() }))
            .collect();
        let mut api_keys: HashMap<[u8; 32], Principal> = HashMap::new();
        for k in &config.api_keys {
            api_keys.insert(confidant_core::config::key_digest(&k.key), Principal { name: k.name.clone(), role: k.role });
        }
        // Phone metadata is loaded on first use, which takes about 100 ms: pay it now rather
        // than in the first request that carries a phone number (and every request queued
        // behind it on the same worker).
        let _ = confidant_core::ids::Phone::parse("+33612345678", &config.ingest.default_region);
        let queue = Arc::new(Semaphore::new(config.ingest.queue_capacity));
        let metrics = metrics::Metrics::new(queue.clone(), config.ingest.queue_capacity);
        let policy = Arc::new(confidant_core::privacy::Policy::new(config.privacy.clone()));
        let app = App {
            inner: Arc::new(AppInner {
                limits: config.message_limits(),
                rules: config.identity_rules(),
                config,
                store,
                write_keys,
                api_keys,
                queue,
                metrics,
                policy,
                book: privacy::ConsentBook::default(),
                tombstone_key: master_key.tombstone_key(),
                unsubscribe_key: master_key.unsubscribe_key(),
                portal_key: master_key.portal_key(),
                portal: portal::PortalState::default(),
                destinations: destinations::DestinationState::default(),
                placeholder_token: hex::encode(rand::random::<[u8; 16]>()),
                recs: recs::RecState::default(),
                audiences: audiences::AudienceState::default(),
            }),
        };
        app.inner.book.invalidate();
        app.inner.book.refresh(&app.inner.store).await?;
        app.audit_configuration().await?;
        app.ensure_everyone().await?;
        privacy::spawn_refresher(&app);
        Ok(app)
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub(crate) fn book(&self) -> &privacy::ConsentBook {
        &self.inner.book
    }

    pub(crate) fn tombstone_key(&self) -> [u8; 32] {
        self.inner.tombstone_key
    }

    pub(crate) fn unsubscribe_key(&self) -> [u8; 32] {
        self.inner.unsubscribe_key
    }

    pub(crate) fn portal_key(&self) -> [u8; 32] {
        self.inner.portal_key
    }

    pub(crate) fn portal_state(&self) -> &portal::PortalState {
        &self.inner.portal
    }

    pub(crate) fn destination_state(&self) -> &destinations::DestinationState {
        &self.inner.destinations
    }

    pub fn metrics(&self) -> &metrics::Metrics {
        &self.inner.metrics
    }

    /// The source a write key belongs to. An API key whose role is `write` is not a source.
    pub fn source_for_write_key(&self, key: &str) -> Option<&Source> {
        self.inner.write_keys.get(&digest(key))
    }

    /// Checks a bearer key for the admin API and that its role is one of `allowed`.
    pub fn authorise(&self, key: Option<&str>, allowed: &[Role]) -> Result<Principal, AuthFailure> {
        let key = key.filter(|k| !k.is_empty()).ok_or(AuthFailure::Missing)?;
        let d = digest(key);
        match self.inner.api_keys.get(&d) {
            Some(p) if p.role == Role::Write => Err(AuthFailure::WriteKeyOnAdminApi),
            Some(p) if allowed.contains(&p.role) => Ok(p.clone()),
            Some(_) => Err(AuthFailure::Forbidden),
            None if self.inner.write_keys.contains_key(&d) => Err(AuthFailure::WriteKeyOnAdminApi),
            None => Err(AuthFailure::Invalid),
        }
    }

    pub async fn health(&self) -> Result<(), ServiceError> {
        Ok(self.inner.store.ping().await?)
    }

    pub async fn find_profiles(&self, kind: IdKind, value: &str) -> Result<Vec<ProfileView>, ServiceError> {
        // Look-ups are normalised as ingestion normalises: an email in any case finds its profile.
        let value = match kind {
            IdKind::Email => match confidant_core::ids::Email::parse(value) {
                Ok(e) => e.as_str().to_owned(),
                Err(_) => return Ok(Vec::new()),
            },
            IdKind::Phone => match confidant_core::ids::Phone::parse(value, &self.inner.config.ingest.default_region) {
                Ok(p) => p.as_str().to_owned(),
                Err(_) => return Ok(Vec::new()),
            },
            _ => value.to_owned(),
        };
        let mut found = self.inner.store.find_profiles(kind, value).await?;
        found.iter_mut().for_each(|p| self.golden(p));
        Ok(found)
    }

    pub async fn profile(&self, id: ProfileId) -> Result<ProfileView, ServiceError> {
        let mut p = self.inner.store.profile(id).await?.ok_or(ServiceError::NotFound("profile"))?;
        self.golden(&mut p);
        Ok(p)
    }

    /// The golden record: per trait, the value the survivorship rules choose among the values
    /// the sources gave (`identity.survivorship`, `trait_survivorship`, `source_trust`).
    pub fn golden(&self, p: &mut ProfileView) {
        use confidant_core::identity::SourceValue;
        let rules = &self.inner.config.identity.survivorship;
        let mut by_key: std::collections::BTreeMap<&str, Vec<usize>> = std::collections::BTreeMap::new();
        for (i, t) in p.trait_values.iter().enumerate() {
            by_key.entry(t.key.as_str()).or_default().push(i);
        }
        let texts: Vec<String> = p.trait_values.iter().map(|t| t.value.to_string()).collect();
        let mut chosen = Vec::with_capacity(by_key.len());
        for (key, idx) in by_key {
            let candidates: Vec<SourceValue<'_>> =
                idx.iter().map(|&i| SourceValue { value_json: &texts[i], timestamp: p.trait_values[i].timestamp, source: &p.trait_values[i].source }).collect();
            if let Some(best) = rules.choose(key, &candidates) {
                chosen.push(p.trait_values[idx[best]].clone());
            }
        }
        if !chosen.is_empty() || p.trait_values.is_empty() {
            p.traits = chosen;
        }
    }

    pub async fn profile_events(&self, id: ProfileId, limit: usize, cursor: Option<EventCursor>) -> Result<EventPage, ServiceError> {
        Ok(self.inner.store.profile_events(id, limit, cursor).await?)
    }

    pub async fn merges(&self, id: ProfileId) -> Result<Vec<MergeView>, ServiceError> {
        Ok(self.inner.store.merges(id).await?)
    }

    pub async fn conflicts(&self, id: ProfileId) -> Result<Vec<ConflictView>, ServiceError> {
        Ok(self.inner.store.conflicts(id).await?)
    }

    pub async fn unmerge(&self, id: ProfileId, merge_id: Option<i64>, by: &Principal) -> Result<MergeView, ServiceError> {
        let m = self.inner.store.unmerge(id, merge_id, format!("api_key:{}", by.name)).await?;
        self.inner.book.invalidate();
        self.inner.book.refresh(&self.inner.store).await?;
        tracing::info!(profile = %id, merge = m.id, actor = %by.name, "unmerged");
        Ok(m)
    }
}
