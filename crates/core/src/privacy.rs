//! Purposes, data categories, the tracking plan, and the rules that decide what may be stored
//! and used: minimisation at the door and "is purpose P lawful for subject S now?".
//!
//! The configuration's `[privacy]` table is merged over [`DEFAULT_TOML`] (a typical shop), then
//! validated with every problem reported at once, then compiled into a [`Policy`]: bit masks
//! of purposes per category, so that checking a field is two lookups and an AND.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::Problem;
use crate::ids::IdKind;
use crate::message::{MessageType, ParsedMessage, RejectReason, Rejection, Section};
use crate::time::Millis;

/// The default privacy configuration of a typical online shop.
pub const DEFAULT_TOML: &str = include_str!("privacy_default.toml");

/// Most purposes a configuration may declare (lawfulness is a 64-bit mask).
pub const MAX_PURPOSES: usize = 64;

/// A purpose id: lower-case words joined by dots or underscores (`marketing.communications.email`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PurposeId(String);

impl PurposeId {
    pub fn parse(s: &str) -> Result<PurposeId, String> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.split('.').all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
        if ok {
            Ok(PurposeId(s.to_owned()))
        } else {
            Err("a purpose id is lower-case letters, digits and underscores, in words joined by dots".into())
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PurposeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LegalBasis {
    Consent,
    Contract,
    LegalObligation,
    LegitimateInterest,
}

impl LegalBasis {
    pub fn as_str(self) -> &'static str {
        match self {
            LegalBasis::Consent => "consent",
            LegalBasis::Contract => "contract",
            LegalBasis::LegalObligation => "legal_obligation",
            LegalBasis::LegitimateInterest => "legitimate_interest",
        }
    }
    /// The article of the GDPR, for the register.
    pub fn article(self) -> &'static str {
        match self {
            LegalBasis::Consent => "Art. 6(1)(a)",
            LegalBasis::Contract => "Art. 6(1)(b)",
            LegalBasis::LegalObligation => "Art. 6(1)(c)",
            LegalBasis::LegitimateInterest => "Art. 6(1)(f)",
        }
    }
}

/// The Art. 9(2) exceptions Confidant can enforce by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Art9Basis {
    /// Art. 9(2)(a): explicit consent, recorded in the consent ledger.
    ExplicitConsent,
}

/// A text in French and English.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Text {
    pub fr: String,
    pub en: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Category {
    /// A fideslang key such as `user.contact.email`.
    pub key: String,
    pub name: Text,
    /// An Art. 9 special category (health, religion, ...).
    #[serde(default)]
    pub special: bool,
    /// Encrypted at rest under the subject's key.
    #[serde(default)]
    pub encrypt: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetentionFrom {
    /// Counted from when each datum was collected: old events are deleted one by one.
    Collection,
    /// Counted from the subject's last activity: the whole subject goes when inactive so long.
    LastActivity,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    pub days: u32,
    pub from: RetentionFrom,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    /// ISO 3166 country outside the EU/EEA.
    pub country: String,
    /// The Chapter V safeguard: adequacy decision, SCC, BCR...
    pub safeguard: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Purpose {
    pub id: String,
    pub name: Text,
    pub description: Text,
    pub legal_basis: LegalBasis,
    #[serde(default)]
    pub art9_basis: Option<Art9Basis>,
    pub categories: Vec<String>,
    /// Categories of data subjects (customers, prospects, visitors).
    #[serde(default)]
    pub subjects: Vec<String>,
    #[serde(default)]
    pub recipients: Vec<String>,
    #[serde(default)]
    pub processors: Vec<String>,
    #[serde(default)]
    pub transfers: Vec<Transfer>,
    /// A `Sec-GPC: 1` signal is an objection to this purpose (sale, sharing, targeted ads).
    #[serde(default)]
    pub gpc: bool,
    pub retention: Retention,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Party {
    pub name: String,
    #[serde(default)]
    pub address: String,
    pub contact: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventPlan {
    pub category: String,
    /// Properties of this event only, over the plan's common properties.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrackingPlan {
    #[serde(default)]
    pub traits: BTreeMap<String, String>,
    #[serde(default)]
    pub group_traits: BTreeMap<String, String>,
    #[serde(default)]
    pub context: BTreeMap<String, String>,
    /// Properties any track, page or screen call may carry; `inherit` takes the event's category.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    #[serde(default)]
    pub page: Option<EventPlan>,
    #[serde(default)]
    pub screen: Option<EventPlan>,
    #[serde(default)]
    pub events: BTreeMap<String, EventPlan>,
}

/// The `[privacy]` table, after merging over the default.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    pub notice_version: String,
    /// The notice shown with consent requests; receipts carry its SHA-256.
    pub notice_text: String,
    #[serde(default)]
    pub advertising_categories: Vec<String>,
    #[serde(default)]
    pub security_measures: Vec<String>,
    pub controller: Party,
    pub dpo: Party,
    #[serde(default)]
    pub consent_categories: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub tcf_purposes: BTreeMap<String, Vec<String>>,
    pub categories: Vec<Category>,
    pub purposes: Vec<Purpose>,
    pub plan: TrackingPlan,
}

/// Where the value of `inherit` points: the event's own category.
pub const INHERIT: &str = "inherit";

/// Merges the user's `[privacy]` table over the default and decodes it. `None` for no table.
pub fn decode(user: Option<toml::Table>) -> Result<PrivacyConfig, Vec<Problem>> {
    let mut base: toml::Table = DEFAULT_TOML.parse().expect("the embedded default privacy configuration is valid TOML");
    let mut problems = Vec::new();
    if let Some(mut user) = user {
        let use_default = match user.remove("use_default") {
            None => true,
            Some(toml::Value::Boolean(b)) => b,
            Some(toml::Value::String(s)) if s == "true" || s == "false" => s == "true",
            Some(_) => {
                problems.push(Problem { path: "privacy.use_default".into(), message: "must be true or false".into() });
                true
            }
        };
        if !use_default {
            base = toml::Table::new();
        }
        merge(&mut base, user);
    }
    let config: PrivacyConfig = match toml::Value::Table(base).try_into() {
        Ok(c) => c,
        Err(e) => {
            problems.push(Problem { path: "privacy".into(), message: e.message().trim().to_owned() });
            return Err(problems);
        }
    };
    problems.extend(validate(&config));
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems)
    }
}

/// Tables merge key by key; `categories` and `purposes` merge by `key`/`id` (an entry with the
/// same id replaces the default's); everything else is replaced.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (Some(toml::Value::Array(b)), toml::Value::Array(o)) if k == "categories" || k == "purposes" => {
                let id_key = if k == "categories" { "key" } else { "id" };
                for item in o {
                    let id = item.get(id_key).cloned();
                    match b.iter_mut().find(|x| id.is_some() && x.get(id_key) == id.as_ref()) {
                        Some(slot) => *slot = item,
                        None => b.push(item),
                    }
                }
            }
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn validate(c: &PrivacyConfig) -> Vec<Problem> {
    let mut p = Vec::new();
    let mut problem = |path: String, message: String| p.push(Problem { path, message });
    if c.notice_version.trim().is_empty() {
        problem("privacy.notice_version".into(), "must not be empty".into());
    }
    let mut cats: HashMap<&str, &Category> = HashMap::new();
    for (i, cat) in c.categories.iter().enumerate() {
        let valid = (cat.key.starts_with("user.") || cat.key.starts_with("system."))
            && cat.key.split('.').all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        if !valid {
            problem(format!("privacy.categories[{i}].key"), "must be a fideslang key such as user.contact.email".into());
        }
        if cats.insert(cat.key.as_str(), cat).is_some() {
            problem(format!("privacy.categories[{i}].key"), format!("{} is declared twice", cat.key));
        }
    }
    if c.purposes.len() > MAX_PURPOSES {
        problem("privacy.purposes".into(), format!("at most {MAX_PURPOSES} purposes"));
    }
    let mut ids = HashSet::new();
    let mut covered: HashSet<&str> = HashSet::new();
    for (i, pur) in c.purposes.iter().enumerate() {
        let path = format!("privacy.purposes[{i}]");
        if let Err(e) = PurposeId::parse(&pur.id) {
            problem(format!("{path}.id"), e);
        }
        if !ids.insert(pur.id.as_str()) {
            problem(format!("{path}.id"), format!("{} is declared twice", pur.id));
        }
        if pur.name.fr.trim().is_empty() || pur.name.en.trim().is_empty() {
            problem(format!("{path}.name"), "needs a French and an English name".into());
        }
        if pur.retention.days == 0 {
            problem(format!("{path}.retention.days"), "must be at least 1".into());
        }
        if pur.categories.is_empty() {
            problem(format!("{path}.categories"), "must name at least one data category".into());
        }
        for (j, k) in pur.categories.iter().enumerate() {
            match cats.get(k.as_str()) {
                None => problem(format!("{path}.categories[{j}]"), format!("{k} is not a declared data category")),
                Some(cat) if cat.special && pur.art9_basis.is_none() => problem(
                    format!("{path}.categories[{j}]"),
                    format!("{k} is a special category (Art. 9): the purpose needs art9_basis"),
                ),
                Some(_) => {
                    covered.insert(k.as_str());
                }
            }
        }
        if pur.art9_basis == Some(Art9Basis::ExplicitConsent) && pur.legal_basis != LegalBasis::Consent {
            problem(format!("{path}.art9_basis"), "explicit_consent needs legal_basis = \"consent\"".into());
        }
        for (j, t) in pur.transfers.iter().enumerate() {
            if t.country.len() != 2 || t.safeguard.trim().is_empty() {
                problem(format!("{path}.transfers[{j}]"), "needs a two-letter country and a safeguard".into());
            }
        }
    }
    let mut check_field = |path: String, cat: &str, inherit_ok: bool| {
        if inherit_ok && cat == INHERIT {
            return;
        }
        match cats.get(cat) {
            None => p.push(Problem { path, message: format!("{cat} is not a declared data category") }),
            Some(_) if !covered.contains(cat) => {
                p.push(Problem { path, message: format!("no purpose covers {cat}, so it could never be stored") })
            }
            Some(_) => {}
        }
    };
    for (k, v) in &c.plan.traits {
        check_field(format!("privacy.plan.traits.{k}"), v, false);
    }
    for (k, v) in &c.plan.group_traits {
        check_field(format!("privacy.plan.group_traits.{k}"), v, false);
    }
    for (k, v) in &c.plan.context {
        check_field(format!("privacy.plan.context.{k}"), v, false);
    }
    for (k, v) in &c.plan.properties {
        check_field(format!("privacy.plan.properties.{k}"), v, true);
    }
    let mut events: Vec<(String, &EventPlan)> = c.plan.events.iter().map(|(k, v)| (format!("privacy.plan.events.\"{k}\""), v)).collect();
    events.extend(c.plan.page.iter().map(|e| ("privacy.plan.page".to_owned(), e)));
    events.extend(c.plan.screen.iter().map(|e| ("privacy.plan.screen".to_owned(), e)));
    for (path, e) in events {
        check_field(format!("{path}.category"), &e.category, false);
        for (k, v) in &e.properties {
            check_field(format!("{path}.properties.{k}"), v, true);
        }
    }
    let check_purposes = |p: &mut Vec<Problem>, path: String, list: &[String]| {
        for (j, id) in list.iter().enumerate() {
            if !ids.contains(id.as_str()) {
                p.push(Problem { path: format!("{path}[{j}]"), message: format!("{id} is not a declared purpose") });
            }
        }
    };
    for (k, v) in &c.consent_categories {
        check_purposes(&mut p, format!("privacy.consent_categories.{k}"), v);
    }
    for (k, v) in &c.tcf_purposes {
        match k.parse::<u8>() {
            Ok(n) if (1..=11).contains(&n) => {}
            _ => p.push(Problem { path: format!("privacy.tcf_purposes.{k}"), message: "TCF purposes are numbered 1 to 11".into() }),
        }
        check_purposes(&mut p, format!("privacy.tcf_purposes.{k}"), v);
    }
    p
}

// ------------------------------------------------------------------------------------------
// Subjects' decisions and lawfulness

/// One decision of the ledger's current state: the latest receipt for a purpose (and, for
/// advertising, optionally one advertising category).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub granted: bool,
    pub at: Millis,
}

/// What the ledger says about one subject now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubjectState {
    /// (purpose id, advertising category or "") → the latest decision.
    pub decisions: BTreeMap<(String, String), Decision>,
    /// Art. 18: processing restricted to storage.
    pub restricted: bool,
}

impl SubjectState {
    /// Applies a receipt, keeping the later decision when two arrive out of order.
    pub fn apply(&mut self, purpose: &str, scope: &str, granted: bool, at: Millis) {
        let key = (purpose.to_owned(), scope.to_owned());
        match self.decisions.get(&key) {
            Some(d) if d.at > at => {}
            _ => {
                self.decisions.insert(key, Decision { granted, at });
            }
        }
    }

    pub fn decision(&self, purpose: &str, scope: &str) -> Option<&Decision> {
        self.decisions.get(&(purpose.to_owned(), scope.to_owned()))
    }
}

/// See [`Policy::retention_for`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionDecision {
    pub subject_days: Option<u32>,
    pub categories: BTreeMap<String, Option<u32>>,
}

/// Categories whose data points straight at a person: analysts never see them.
pub fn is_direct_identifier(category: &str) -> bool {
    category.starts_with("user.contact")
        || matches!(category, "user.name" | "user.unique_id" | "user.device.ip_address" | "user.device.cookie_id" | "user.demographic.date_of_birth" | "user.account")
}

/// What a lawfulness check is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// Keeping data that arrives.
    Store,
    /// Any other processing (segments, campaigns, recommendations, exports, destinations).
    Process,
}

/// One field dropped at the door.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Dropped {
    /// The field's path in the message (`properties.coupon_code`), or `(event)` for a whole
    /// undeclared event. Names that look like personal data are redacted.
    pub field: String,
    pub reason: DropReason,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The tracking plan does not declare it.
    Undeclared,
    /// Declared, but no purpose covering its category is lawful for the subject now.
    NoLegalBasis,
}

impl DropReason {
    pub fn code(self) -> &'static str {
        match self {
            DropReason::Undeclared => "undeclared",
            DropReason::NoLegalBasis => "no_legal_basis",
        }
    }
}

/// A field name as it may be recorded in the minimisation report: clients sometimes put data
/// in keys (`{"jean@example.fr": true}`), which must not be stored either.
pub fn safe_field_name(name: &str) -> String {
    let digits = name.bytes().filter(u8::is_ascii_digit).count();
    if name.contains('@') || digits >= 6 || name.chars().count() > 64 || name.chars().any(char::is_control) {
        "(redacted name)".to_owned()
    } else {
        name.to_owned()
    }
}

/// Top-level keys of a Segment message that carry no personal data of their own.
const ENVELOPE_KEYS: &[&str] = &[
    "type", "messageId", "timestamp", "originalTimestamp", "sentAt", "receivedAt", "userId", "anonymousId", "event", "name",
    "category", "integrations", "previousId", "groupId", "version", "channel", "_metadata",
];

/// The compiled policy.
#[derive(Clone, Debug)]
pub struct Policy {
    config: PrivacyConfig,
    purpose_index: HashMap<String, usize>,
    /// Category → the purposes covering it, as a bit mask.
    category_mask: HashMap<String, u64>,
    special: HashSet<String>,
    encrypted: HashSet<String>,
    /// Purposes with an Art. 9 basis.
    art9_mask: u64,
    notice_sha256: String,
}

impl Policy {
    pub fn new(config: PrivacyConfig) -> Policy {
        use sha2::Digest;
        let purpose_index = config.purposes.iter().enumerate().map(|(i, p)| (p.id.clone(), i)).collect();
        let mut category_mask: HashMap<String, u64> = HashMap::new();
        let mut art9_mask = 0;
        for (i, p) in config.purposes.iter().enumerate() {
            for c in &p.categories {
                *category_mask.entry(c.clone()).or_default() |= 1 << i;
            }
            if p.art9_basis.is_some() {
                art9_mask |= 1 << i;
            }
        }
        let special = config.categories.iter().filter(|c| c.special).map(|c| c.key.clone()).collect();
        let encrypted = config.categories.iter().filter(|c| c.encrypt || c.special).map(|c| c.key.clone()).collect();
        let notice_sha256 = hex::encode(sha2::Sha256::digest(config.notice_text.as_bytes()));
        Policy { config, purpose_index, category_mask, special, encrypted, art9_mask, notice_sha256 }
    }

    /// The default shop policy.
    pub fn default_shop() -> Policy {
        Policy::new(decode(None).expect("the default privacy configuration is valid"))
    }

    pub fn config(&self) -> &PrivacyConfig {
        &self.config
    }

    /// The age past which no event may be kept whoever its subject is: the longest retention
    /// of any purpose, when every purpose counts from collection. `None` when a purpose counts
    /// from last activity (an active customer's old events may then be kept): events then go
    /// one by one, never a whole month at a time.
    pub fn events_expire_after_days(&self) -> Option<u32> {
        if self.config.purposes.iter().all(|p| p.retention.from == RetentionFrom::Collection) {
            self.config.purposes.iter().map(|p| p.retention.days).max()
        } else {
            None
        }
    }

    pub fn notice_sha256(&self) -> &str {
        &self.notice_sha256
    }

    pub fn purpose(&self, id: &str) -> Option<&Purpose> {
        self.purpose_index.get(id).map(|i| &self.config.purposes[*i])
    }

    pub fn purposes(&self) -> &[Purpose] {
        &self.config.purposes
    }

    pub fn category(&self, key: &str) -> Option<&Category> {
        self.config.categories.iter().find(|c| c.key == key)
    }

    pub fn is_encrypted(&self, category: &str) -> bool {
        self.encrypted.contains(category)
    }

    /// Purposes covering a category.
    pub fn purposes_of(&self, category: &str) -> impl Iterator<Item = &Purpose> {
        let mask = self.category_mask.get(category).copied().unwrap_or(0);
        self.config.purposes.iter().enumerate().filter(move |(i, _)| mask & (1 << i) != 0).map(|(_, p)| p)
    }

    /// The category of a trait, if the plan declares it.
    pub fn trait_category(&self, key: &str) -> Option<&str> {
        self.config.plan.traits.get(key).map(String::as_str)
    }

    /// The category of an event's data: a track event's declared category, or the plan's
    /// page/screen category. `None` when undeclared (or for identify, group and alias).
    pub fn event_category(&self, kind: MessageType, event: Option<&str>) -> Option<&str> {
        self.event_plan(kind, event).map(|e| e.category.as_str())
    }

    fn event_plan(&self, kind: MessageType, event: Option<&str>) -> Option<&EventPlan> {
        match kind {
            MessageType::Track => event.and_then(|e| self.config.plan.events.get(e)),
            MessageType::Page => self.config.plan.page.as_ref(),
            MessageType::Screen => self.config.plan.screen.as_ref(),
            _ => None,
        }
    }

    /// Is the advertising category one the configuration lists?
    pub fn is_ad_category(&self, name: &str) -> bool {
        self.config.advertising_categories.iter().any(|c| c == name)
    }

    /// The purposes a consent-management category (Segment `categoryPreferences`) stands for.
    /// A purpose id is accepted as its own category.
    pub fn consent_category(&self, name: &str) -> Vec<&str> {
        match self.config.consent_categories.get(name) {
            Some(list) => list.iter().map(String::as_str).collect(),
            None => self.purpose(name).map(|p| vec![p.id.as_str()]).unwrap_or_default(),
        }
    }

    /// The purposes a TCF purpose number stands for.
    pub fn tcf_purpose(&self, n: u8) -> Vec<&str> {
        self.config.tcf_purposes.get(&n.to_string()).map(|l| l.iter().map(String::as_str).collect()).unwrap_or_default()
    }

    /// The purposes a `Sec-GPC: 1` signal objects to.
    pub fn gpc_purposes(&self) -> impl Iterator<Item = &Purpose> {
        self.config.purposes.iter().filter(|p| p.gpc)
    }

    fn lawful_index(&self, i: usize, state: &SubjectState, use_: Use) -> bool {
        let p = &self.config.purposes[i];
        if use_ == Use::Process && state.restricted && p.legal_basis != LegalBasis::LegalObligation {
            return false;
        }
        let decision = state.decision(&p.id, "");
        match p.legal_basis {
            LegalBasis::Contract | LegalBasis::LegalObligation => true,
            // Lawful until the subject objects (a withdrawn decision is an objection).
            LegalBasis::LegitimateInterest => decision.is_none_or(|d| d.granted),
            LegalBasis::Consent => decision.is_some_and(|d| d.granted),
        }
    }

    /// The purposes lawful for the subject now, as a mask.
    pub fn lawful_mask(&self, state: &SubjectState, use_: Use) -> u64 {
        (0..self.config.purposes.len()).filter(|i| self.lawful_index(*i, state, use_)).fold(0, |m, i| m | 1 << i)
    }

    /// "Is purpose P lawful for subject S now?" Unknown purposes are never lawful.
    pub fn is_lawful(&self, purpose: &str, state: &SubjectState, use_: Use) -> bool {
        self.purpose_index.get(purpose).is_some_and(|i| self.lawful_index(*i, state, use_))
    }

    /// Targeted advertising in one advertising category: lawful for the purpose and not
    /// objected to for that category.
    pub fn is_lawful_ad(&self, purpose: &str, ad_category: &str, state: &SubjectState) -> bool {
        self.is_lawful(purpose, state, Use::Process) && state.decision(purpose, ad_category).is_none_or(|d| d.granted)
    }

    /// Is data of this category storable now?
    pub fn category_lawful(&self, category: &str, lawful: u64) -> bool {
        self.category_mask.get(category).is_some_and(|m| m & lawful != 0)
    }

    /// How long a subject's data may be kept, from their decisions: the whole subject until
    /// inactive for the longest retention of a lawful purpose; per event category, events older
    /// than the longest collection-based retention of the lawful purposes covering it (kept
    /// with the subject when one of those counts from last activity; all deleted when none is
    /// lawful any more).
    pub fn retention_for(&self, state: &SubjectState) -> RetentionDecision {
        let lawful = self.lawful_mask(state, Use::Store);
        let lawful_purposes = || self.config.purposes.iter().enumerate().filter(move |(i, _)| lawful & (1 << i) != 0).map(|(_, p)| p);
        let subject_days = lawful_purposes().map(|p| p.retention.days).max();
        let mut categories = BTreeMap::new();
        for cat in &self.config.categories {
            let covering = self.category_mask.get(&cat.key).copied().unwrap_or(0);
            let live: Vec<&Purpose> =
                self.config.purposes.iter().enumerate().filter(|(i, _)| covering & lawful & (1 << i) != 0).map(|(_, p)| p).collect();
            if live.is_empty() {
                categories.insert(cat.key.clone(), None);
            } else if live.iter().all(|p| p.retention.from == RetentionFrom::Collection) {
                categories.insert(cat.key.clone(), live.iter().map(|p| p.retention.days).max());
            }
        }
        RetentionDecision { subject_days, categories }
    }

    /// The category of a property of an event, `inherit` resolved.
    pub fn property_category(&self, kind: MessageType, event: Option<&str>, key: &str) -> Option<&str> {
        let plan = self.event_plan(kind, event);
        let declared = plan.and_then(|e| e.properties.get(key)).or_else(|| self.config.plan.properties.get(key))?;
        if declared == INHERIT {
            plan.map(|e| e.category.as_str())
        } else {
            Some(declared.as_str())
        }
    }

    /// The fields of a (minimised) message to encrypt at rest: those of special or `encrypt`
    /// categories.
    pub fn encrypted_fields(&self, m: &ParsedMessage) -> Vec<(Section, String)> {
        let mut out = Vec::new();
        let kind = m.envelope.kind;
        let traits_plan = if kind == MessageType::Group { &self.config.plan.group_traits } else { &self.config.plan.traits };
        let mut check = |section: Section, obj: Option<&Value>, lookup: &dyn Fn(&str) -> Option<String>| {
            if let Some(Value::Object(o)) = obj {
                for k in o.keys() {
                    if lookup(k).is_some_and(|c| self.is_encrypted(&c)) {
                        out.push((section, k.clone()));
                    }
                }
            }
        };
        check(Section::Traits, m.body.get("traits"), &|k| traits_plan.get(k).cloned());
        check(Section::ContextTraits, m.body.get("context").and_then(|c| c.get("traits")), &|k| self.config.plan.traits.get(k).cloned());
        check(Section::Properties, m.body.get("properties"), &|k| self.property_category(kind, m.envelope.event.as_deref(), k).map(str::to_owned));
        out
    }

    /// Minimisation at the door: drops every field the plan does not declare or that no
    /// lawful purpose covers, and refuses messages that cannot be stored at all (an
    /// undeclared event, an event with no lawful purpose, special-category data without an
    /// Art. 9 basis and explicit consent). Returns the message to store and what was dropped.
    pub fn minimise(&self, mut m: ParsedMessage, state: &SubjectState) -> Result<(ParsedMessage, Vec<Dropped>), Rejection> {
        let lawful = self.lawful_mask(state, Use::Store);
        let mut dropped = Vec::new();
        let kind = m.envelope.kind;
        let event_plan = self.event_plan(kind, m.envelope.event.as_deref());
        let event_cat = event_plan.map(|e| e.category.as_str());
        if kind == MessageType::Track && event_plan.is_none() {
            return Err(Rejection::new(RejectReason::UndeclaredEvent, "the tracking plan does not declare this event"));
        }
        if let Some(cat) = event_cat {
            self.check_special(cat, lawful)?;
            if !self.category_lawful(cat, lawful) {
                return Err(Rejection::new(
                    RejectReason::NoLegalBasis,
                    format!("no purpose covering {cat} is lawful for this subject now (consent withdrawn or objection)"),
                ));
            }
        }
        let mut special_seen = Vec::new();
        let mut filter = |obj: &mut Map<String, Value>, prefix: &str, lookup: &dyn Fn(&str) -> Option<String>, dropped: &mut Vec<Dropped>| {
            obj.retain(|k, _| {
                let field = || format!("{prefix}{}", safe_field_name(k));
                match lookup(k) {
                    None => {
                        dropped.push(Dropped { field: field(), reason: DropReason::Undeclared });
                        false
                    }
                    Some(cat) => {
                        if self.special.contains(&cat) {
                            special_seen.push(cat.clone());
                        }
                        if self.category_lawful(&cat, lawful) {
                            true
                        } else {
                            dropped.push(Dropped { field: field(), reason: DropReason::NoLegalBasis });
                            false
                        }
                    }
                }
            });
        };
        let plan = &self.config.plan;
        let prop_lookup = |k: &str| -> Option<String> {
            let declared = event_plan.and_then(|e| e.properties.get(k)).or_else(|| plan.properties.get(k))?;
            if declared == INHERIT {
                event_cat.map(str::to_owned)
            } else {
                Some(declared.clone())
            }
        };
        let trait_lookup = |k: &str| plan.traits.get(k).cloned();
        let group_lookup = |k: &str| plan.group_traits.get(k).cloned();
        let context_lookup = |k: &str| if k == "traits" { Some(String::new()) } else { plan.context.get(k).cloned() };

        m.body.retain(|k, _| {
            let keep = ENVELOPE_KEYS.contains(&k.as_str()) || matches!(k.as_str(), "properties" | "traits" | "context");
            if !keep {
                dropped.push(Dropped { field: safe_field_name(k), reason: DropReason::Undeclared });
            }
            keep
        });
        if let Some(Value::Object(props)) = m.body.get_mut("properties") {
            filter(props, "properties.", &prop_lookup, &mut dropped);
        }
        if let Some(Value::Object(traits)) = m.body.get_mut("traits") {
            let lookup: &dyn Fn(&str) -> Option<String> = if kind == MessageType::Group { &group_lookup } else { &trait_lookup };
            filter(traits, "traits.", lookup, &mut dropped);
        }
        if let Some(Value::Object(ctx)) = m.body.get_mut("context") {
            // context.traits is filtered as traits; the empty category marks it as kept.
            let mut ctx_dropped = Vec::new();
            let mut inner_traits = ctx.remove("traits");
            filter(ctx, "context.", &|k| context_lookup(k).filter(|c| !c.is_empty()), &mut ctx_dropped);
            dropped.extend(ctx_dropped);
            if let Some(Value::Object(t)) = &mut inner_traits {
                filter(t, "context.traits.", &trait_lookup, &mut dropped);
            }
            if let Some(t) = inner_traits {
                ctx.insert("traits".into(), t);
            }
        }
        // The person's traits, as the store keeps them, follow the same plan (the drops were
        // counted above, on the body).
        let mut trait_drops = Vec::new();
        filter(&mut m.traits, "", &trait_lookup, &mut trait_drops);
        if !m.traits.contains_key("email") {
            m.envelope.identifiers.retain(|i| i.kind != IdKind::Email);
        }
        if !m.traits.contains_key("phone") {
            m.envelope.identifiers.retain(|i| i.kind != IdKind::Phone);
        }
        for cat in special_seen {
            self.check_special(&cat, lawful)?;
        }
        if m.envelope.identifiers.is_empty() && m.envelope.previous_id.is_none() {
            return Err(Rejection::new(RejectReason::NoLegalBasis, "no identifier of this message may be stored"));
        }
        Ok((m, dropped))
    }

    fn check_special(&self, cat: &str, lawful: u64) -> Result<(), Rejection> {
        if !self.special.contains(cat) {
            return Ok(());
        }
        let covering = self.category_mask.get(cat).copied().unwrap_or(0) & self.art9_mask;
        if covering == 0 {
            return Err(Rejection::new(RejectReason::SpecialCategory, format!("{cat} is special-category data and no purpose declares an Art. 9 basis for it")));
        }
        if covering & lawful == 0 {
            return Err(Rejection::new(RejectReason::SpecialCategory, format!("{cat} is special-category data and the subject has not given explicit consent")));
        }
        Ok(())
    }
}

// ------------------------------------------------------------------------------------------
// IAB TCF v2.2

/// What a TC string says, as far as purposes go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TcString {
    pub version: u8,
    pub created_deciseconds: u64,
    pub cmp_id: u16,
    pub policy_version: u8,
    /// TCF purposes (1-24) with consent.
    pub purposes_consent: Vec<u8>,
    /// TCF purposes (1-24) with legitimate interest established (not objected).
    pub purposes_li: Vec<u8>,
}

/// Decodes the core segment of an IAB TCF v2 TC string (base64url, bit fields as the
/// specification lays them out). Vendors are not needed here and not read.
pub fn decode_tc_string(s: &str) -> Result<TcString, String> {
    use base64::Engine;
    let core = s.split('.').next().unwrap_or("");
    if core.is_empty() || core.len() > 4096 {
        return Err("the TC string is empty or too long".into());
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(core.trim_end_matches('='))
        .map_err(|_| "the TC string is not base64url".to_owned())?;
    let bit = |i: usize| -> Option<bool> { bytes.get(i / 8).map(|b| b & (0x80 >> (i % 8)) != 0) };
    let field = |start: usize, len: usize| -> Result<u64, String> {
        (start..start + len).try_fold(0u64, |acc, i| bit(i).map(|b| acc << 1 | u64::from(b)).ok_or_else(|| "the TC string is truncated".to_owned()))
    };
    let version = field(0, 6)? as u8;
    if version != 2 {
        return Err(format!("TC string version {version} is not supported (version 2 is)"));
    }
    let created = field(6, 36)?;
    let cmp_id = field(78, 12)? as u16;
    let policy_version = field(132, 6)? as u8;
    if !(2..=5).contains(&policy_version) {
        return Err(format!("TCF policy version {policy_version} is unknown"));
    }
    let purposes = |start: usize| -> Result<Vec<u8>, String> {
        let bits = field(start, 24)?;
        Ok((1..=24u8).filter(|n| bits & (1 << (24 - n)) != 0).collect())
    };
    Ok(TcString { version, created_deciseconds: created, cmp_id, policy_version, purposes_consent: purposes(152)?, purposes_li: purposes(176)? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::IdentityRules;
    use crate::message::{parse_message, Limits, ParseContext};
    use serde_json::json;

    fn parse(v: Value) -> ParsedMessage {
        let limits = Limits { max_message_bytes: 32_000, max_properties: 300, max_depth: 64 };
        let rules = IdentityRules::default();
        let ctx = ParseContext { received_at: 1_700_000_000_000, batch_sent_at: None, endpoint_type: None, limits: &limits, rules: &rules, default_region: "FR" };
        parse_message(&v.to_string(), &ctx).unwrap()
    }

    #[test]
    fn the_default_is_valid_and_declares_the_standard_traits_and_ecommerce_events() {
        let p = Policy::default_shop();
        for t in ["email", "firstName", "lastName", "phone", "address", "birthday"] {
            assert!(p.trait_category(t).is_some(), "{t}");
        }
        for e in ["Product Viewed", "Order Completed", "Order Refunded", "Checkout Started", "Products Searched"] {
            assert!(p.event_category(MessageType::Track, Some(e)).is_some(), "{e}");
        }
        assert_eq!(p.purpose("analytics").unwrap().legal_basis, LegalBasis::LegitimateInterest);
        assert_eq!(p.purpose("marketing.communications.email").unwrap().legal_basis, LegalBasis::Consent);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let user: toml::Table = r#"
            [[purposes]]
            id = "Bad Id"
            name = { fr = "x", en = "x" }
            description = { fr = "", en = "" }
            legal_basis = "consent"
            categories = ["user.nope"]
            retention = { days = 0, from = "collection" }
            [plan.traits]
            shoe_size = "user.feet"
            [tcf_purposes]
            12 = ["ghost"]
        "#
        .parse()
        .unwrap();
        let problems = decode(Some(user)).unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "privacy.purposes[7].id",
            "privacy.purposes[7].retention.days",
            "privacy.purposes[7].categories[0]",
            "privacy.plan.traits.shoe_size",
            "privacy.tcf_purposes.12",
            "privacy.tcf_purposes.12[0]",
        ] {
            assert!(paths.contains(&want), "{want} missing from {paths:?}");
        }
        let bad_basis: toml::Table = "[[purposes]]\nid = \"x\"\nlegal_basis = \"because\"".parse().unwrap();
        assert!(decode(Some(bad_basis)).unwrap_err()[0].message.contains("because"));
    }

    #[test]
    fn a_user_table_merges_over_the_default_by_id() {
        let user: toml::Table = r#"
            [plan.events."Quiz Answered"]
            category = "user.preferences"
            [[purposes]]
            id = "analytics"
            name = { fr = "Mesure", en = "Measurement" }
            description = { fr = "d", en = "d" }
            legal_basis = "consent"
            categories = ["user.behavior.browsing_history", "user.device.ip_address", "user.location.imprecise"]
            retention = { days = 30, from = "collection" }
        "#
        .parse()
        .unwrap();
        let p = Policy::new(decode(Some(user)).unwrap());
        assert_eq!(p.purpose("analytics").unwrap().legal_basis, LegalBasis::Consent);
        assert!(p.event_category(MessageType::Track, Some("Quiz Answered")).is_some());
        assert!(p.event_category(MessageType::Track, Some("Order Completed")).is_some());
        assert_eq!(p.purposes().len(), Policy::default_shop().purposes().len());
    }

    #[test]
    fn events_expire_as_a_whole_only_when_every_purpose_counts_from_collection() {
        assert_eq!(Policy::default_shop().events_expire_after_days(), None, "the default shop keeps active customers' history");
        let mut config = decode(None).unwrap();
        for (i, p) in config.purposes.iter_mut().enumerate() {
            p.retention.from = RetentionFrom::Collection;
            p.retention.days = 100 + i as u32;
        }
        let n = config.purposes.len() as u32;
        assert_eq!(Policy::new(config).events_expire_after_days(), Some(100 + n - 1));
    }

    #[test]
    fn undeclared_fields_are_dropped_everywhere_and_named_safely() {
        let p = Policy::default_shop();
        let m = parse(json!({"type": "identify", "userId": "u1", "shoeSize": 42,
            "traits": {"email": "a@b.fr", "favourite_colour": "red", "jean@dupont.fr": 1},
            "context": {"ip": "1.2.3.4", "secret": "x", "traits": {"mood": "ok", "firstName": "Jean"}}}));
        let (m, dropped) = p.minimise(m, &SubjectState::default()).unwrap();
        let fields: HashSet<String> = dropped.iter().map(|d| d.field.clone()).collect();
        for f in ["shoeSize", "traits.favourite_colour", "traits.(redacted name)", "context.secret", "context.traits.mood"] {
            assert!(fields.contains(f), "{f} not in {fields:?}");
        }
        let body = Value::Object(m.body.clone()).to_string();
        for gone in ["favourite_colour", "shoeSize", "secret", "mood", "dupont"] {
            assert!(!body.contains(gone), "{gone} still in {body}");
        }
        assert!(m.traits.contains_key("email") && m.traits.contains_key("firstName") && !m.traits.contains_key("mood"));
        assert!(body.contains("1.2.3.4"), "declared context stays");
    }

    #[test]
    fn consent_and_objection_decide_what_is_stored() {
        let p = Policy::default_shop();
        let mut state = SubjectState::default();
        let viewed = json!({"type": "track", "userId": "u1", "event": "Product Viewed", "properties": {"product_id": "p1"}});
        // Analytics (legitimate interest) covers browsing by default.
        assert!(p.minimise(parse(viewed.clone()), &state).is_ok());
        // Objecting to analytics with no consent to ads or recommendations: nothing may be stored.
        state.apply("analytics", "", false, 10);
        let r = p.minimise(parse(viewed.clone()), &state).unwrap_err();
        assert_eq!(r.reason, RejectReason::NoLegalBasis);
        state.apply("personalisation.recommendations", "", true, 11);
        assert!(p.minimise(parse(viewed.clone()), &state).is_ok());
        // An older receipt does not override a newer one.
        state.apply("personalisation.recommendations", "", false, 5);
        assert!(p.is_lawful("personalisation.recommendations", &state, Use::Process));
        assert!(!p.is_lawful("marketing.communications.email", &state, Use::Process));
        assert!(!p.is_lawful("no.such.purpose", &state, Use::Process));
        state.restricted = true;
        assert!(!p.is_lawful("account", &state, Use::Process));
        assert!(p.is_lawful("account", &state, Use::Store));
    }

    #[test]
    fn retention_follows_the_lawful_purposes() {
        let p = Policy::default_shop();
        let mut s = SubjectState::default();
        let d = p.retention_for(&s);
        // Account and orders (contract) keep the subject three years after last activity.
        assert_eq!(d.subject_days, Some(1095));
        // Search history is analytics only (collection-based): 760 days.
        assert_eq!(d.categories.get("user.behavior.search_history"), Some(&Some(760)));
        // Browsing: analytics only without consent to recommendations: 760 days...
        assert_eq!(d.categories.get("user.behavior.browsing_history"), Some(&Some(760)));
        // ...kept with the subject once recommendations (last activity) are consented to.
        s.apply("personalisation.recommendations", "", true, 1);
        assert_eq!(p.retention_for(&s).categories.get("user.behavior.browsing_history"), None);
        // Objecting to analytics with nothing else lawful: search history goes at once.
        let mut o = SubjectState::default();
        o.apply("analytics", "", false, 1);
        assert_eq!(p.retention_for(&o).categories.get("user.behavior.search_history"), Some(&None));
    }

    #[test]
    fn advertising_categories_can_be_refused_one_by_one() {
        let p = Policy::default_shop();
        let mut s = SubjectState::default();
        s.apply("advertising.targeted", "", true, 1);
        s.apply("advertising.targeted", "alcohol", false, 2);
        assert!(p.is_lawful_ad("advertising.targeted", "fashion", &s));
        assert!(!p.is_lawful_ad("advertising.targeted", "alcohol", &s));
    }

    #[test]
    fn special_categories_need_an_art9_basis_and_explicit_consent() {
        let user: toml::Table = r#"
            [plan.traits]
            allergies = "user.health_and_medical"
        "#
        .parse()
        .unwrap();
        // No purpose covers health data: the configuration itself is refused.
        assert!(decode(Some(user)).unwrap_err().iter().any(|p| p.message.contains("no purpose covers")));
        let user: toml::Table = r#"
            [plan.traits]
            allergies = "user.health_and_medical"
            [[purposes]]
            id = "health.advice"
            name = { fr = "Conseils santé", en = "Health advice" }
            description = { fr = "d", en = "d" }
            legal_basis = "consent"
            art9_basis = "explicit_consent"
            categories = ["user.health_and_medical"]
            retention = { days = 365, from = "last_activity" }
        "#
        .parse()
        .unwrap();
        let p = Policy::new(decode(Some(user)).unwrap());
        let msg = json!({"type": "identify", "userId": "u1", "traits": {"allergies": "gluten"}});
        let r = p.minimise(parse(msg.clone()), &SubjectState::default()).unwrap_err();
        assert_eq!(r.reason, RejectReason::SpecialCategory);
        assert!(!r.detail.contains("gluten"));
        let mut s = SubjectState::default();
        s.apply("health.advice", "", true, 1);
        let (m, _) = p.minimise(parse(msg), &s).unwrap();
        assert_eq!(m.traits["allergies"], "gluten");
    }

    #[test]
    fn undeclared_events_are_refused() {
        let p = Policy::default_shop();
        let r = p.minimise(parse(json!({"type": "track", "userId": "u", "event": "Secret Thing"})), &SubjectState::default()).unwrap_err();
        assert_eq!(r.reason, RejectReason::UndeclaredEvent);
    }

    fn tc_bits(fields: &[(u64, usize)]) -> String {
        use base64::Engine;
        let mut bits = Vec::new();
        for (v, len) in fields {
            for i in (0..*len).rev() {
                bits.push((v >> i) & 1 == 1);
            }
        }
        let bytes: Vec<u8> = bits.chunks(8).map(|c| c.iter().enumerate().fold(0u8, |b, (i, x)| b | (u8::from(*x) << (7 - i)))).collect();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn tc_strings_decode_to_purpose_consents() {
        // version, created, updated, cmp id, cmp version, screen, language, vendor list,
        // policy version, service specific, non-standard texts, special features, purposes
        // consent (1, 3, 4), purposes LI (7), ...
        let purposes = (1u64 << 23) | (1 << 21) | (1 << 20);
        let s = tc_bits(&[(2, 6), (1, 36), (1, 36), (300, 12), (1, 12), (1, 6), (0, 12), (100, 12), (4, 6), (1, 1), (0, 1), (0, 12), (purposes, 24), (1 << 17, 24), (0, 16)]);
        let tc = decode_tc_string(&s).unwrap();
        assert_eq!(tc.cmp_id, 300);
        assert_eq!(tc.policy_version, 4);
        assert_eq!(tc.purposes_consent, vec![1, 3, 4]);
        assert_eq!(tc.purposes_li, vec![7]);
        assert!(decode_tc_string("not base64 !").is_err());
        assert!(decode_tc_string(&tc_bits(&[(1, 6), (0, 60)])).unwrap_err().contains("version 1"));
        assert!(decode_tc_string("CAAA").unwrap_err().contains("truncated"));
    }
}
