//! Audiences: named rules over traits, computed traits and event history, each bound to a
//! purpose, so that an audience only ever holds subjects for whom its purpose is lawful.
//!
//! Membership is kept fresh three ways: subjects with new events or consent receipts are
//! evaluated again by the incremental refresh (`serve` runs it every
//! `jobs.audiences_refresh_seconds`), every audience is evaluated in full every
//! `jobs.audiences_full_minutes` (windows move with time), and a consent change or a
//! restriction re-evaluates that subject at once, before the call answers. Every join and leave
//! is recorded in the membership history; erasure deletes the subject's rows in both.

use std::collections::BTreeMap;

use confidant_core::audience::{EventFact, Facts, Rule, RuleError};
use confidant_core::identity::SourceValue;
use confidant_core::ids::ProfileId;
use confidant_store::audiences::{Applied, AudienceDef, AudienceView, FactsQuery, HistoryView, MemberView, SubjectFacts, Watermark};
use serde::Serialize;
use serde_json::json;

use crate::{App, Principal, ServiceError};

/// The audience that exists by default.
pub const EVERYONE: &str = "everyone";
/// Its purpose: analytics (legitimate interest), so it holds every subject who has not
/// objected to it and is not restricted.
pub const EVERYONE_PURPOSE: &str = "analytics";

/// A definition as a caller gives it.
#[derive(Clone, Debug, Default)]
pub struct AudienceInput {
    pub name: String,
    pub purpose: String,
    pub rule: String,
    pub description: Option<String>,
}

/// A size preview: how many subjects the rule matches, how many of them the purpose allows.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct Preview {
    pub matching: usize,
    pub size: usize,
    pub not_lawful: usize,
}

/// What a refresh did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RefreshReport {
    pub full: bool,
    pub audiences: usize,
    pub subjects_evaluated: usize,
    pub joined: u64,
    pub left: u64,
}

/// The state of the incremental refresh.
#[derive(Default)]
pub struct AudienceState {
    watermark: tokio::sync::Mutex<Watermark>,
}

fn invalid(code: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError::Invalid { code, message: message.into() }
}

/// Names of audiences, campaigns and destinations: 1 to 64 characters, lower-case letters,
/// digits, `-` and `_`, starting with a letter or digit (they appear in URLs and logs).
pub(crate) fn check_name(name: &str) -> Result<(), ServiceError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if valid {
        Ok(())
    } else {
        Err(invalid("invalid_name", "a name is 1 to 64 characters: lower-case letters, digits, - and _, starting with a letter or digit"))
    }
}

/// Parses a rule at the edge of the service: the error keeps its position.
pub fn parse_rule(text: &str) -> Result<Rule, RuleError> {
    Rule::parse(text)
}

impl App {
    fn check_audience(&self, input: AudienceInput) -> Result<(AudienceDef, Rule), ServiceError> {
        let name = input.name.trim().to_owned();
        check_name(&name)?;
        self.check_purpose(&input.purpose)?;
        if input.description.as_ref().is_some_and(|d| d.chars().count() > 500) {
            return Err(invalid("invalid_description", "a description is at most 500 characters"));
        }
        let rule = Rule::parse(&input.rule).map_err(ServiceError::InvalidRule)?;
        Ok((AudienceDef { name, purpose: input.purpose, rule: input.rule, description: input.description }, rule))
    }

    fn check_purpose(&self, purpose: &str) -> Result<(), ServiceError> {
        if purpose.is_empty() {
            return Err(invalid("missing_purpose", "an audience is bound to a purpose: give one of the declared purposes"));
        }
        if self.policy().purpose(purpose).is_none() {
            return Err(invalid("unknown_purpose", format!("{purpose} is not a declared purpose")));
        }
        Ok(())
    }

    /// The subjects among `scope` (every live profile when `None`) the rule matches, and those
    /// of them for whom the purpose is lawful now.
    async fn evaluate(&self, rule: &Rule, purpose: &str, scope: Option<Vec<ProfileId>>) -> Result<(usize, Vec<ProfileId>), ServiceError> {
        let now = crate::now_millis();
        let needs = rule.needs();
        let q = FactsQuery {
            subjects: scope,
            traits: needs.traits.iter().cloned().collect(),
            computed: needs.computed.iter().cloned().collect(),
            events: needs.events.keys().map(|name| (name.clone(), needs.since(name, now))).collect(),
        };
        let subjects = self.store().audience_facts(q).await?;
        let rules = &self.config().identity.survivorship;
        let matching: Vec<ProfileId> = subjects.into_iter().filter(|s| rule.matches(&facts_of(s, rules), now)).map(|s| s.profile).collect();
        let n = matching.len();
        let lawful = self.lawful_among(matching.clone(), purpose).await?;
        Ok((n, matching.into_iter().filter(|p| lawful.contains(p)).collect()))
    }

    /// The size an audience would have, without saving anything.
    pub async fn preview_audience(&self, purpose: &str, rule: &str) -> Result<Preview, ServiceError> {
        self.check_purpose(purpose)?;
        let rule = Rule::parse(rule).map_err(ServiceError::InvalidRule)?;
        let (matching, lawful) = self.evaluate(&rule, purpose, None).await?;
        Ok(Preview { matching, size: lawful.len(), not_lawful: matching - lawful.len() })
    }

    /// Creates an audience and computes its members.
    pub async fn create_audience(&self, input: AudienceInput, by: &Principal) -> Result<(AudienceView, Applied), ServiceError> {
        let (def, rule) = self.check_audience(input)?;
        let (purpose, name) = (def.purpose.clone(), def.name.clone());
        self.store().audience_create(def, by.actor()).await?;
        let (_, members) = self.evaluate(&rule, &purpose, None).await?;
        let applied = self.store().audience_apply(name.clone(), None, members, "created").await?;
        self.audit(&by.actor(), "audience.created", None, json!({"audience": name, "purpose": purpose, "size": applied.size})).await?;
        Ok((self.audience(&name).await?, applied))
    }

    /// Changes an audience's rule, purpose or description and computes its members again.
    pub async fn update_audience(&self, name: &str, input: AudienceInput, by: &Principal) -> Result<(AudienceView, Applied), ServiceError> {
        let current = self.audience(name).await?;
        if name == EVERYONE && (input.rule.trim() != current.rule || input.purpose != current.purpose) {
            return Err(ServiceError::Conflict("the everyone audience cannot be changed".into()));
        }
        let (def, rule) = self.check_audience(AudienceInput { name: name.to_owned(), ..input })?;
        let purpose = def.purpose.clone();
        self.store().audience_update(name.to_owned(), def).await?;
        let (_, members) = self.evaluate(&rule, &purpose, None).await?;
        let applied = self.store().audience_apply(name.to_owned(), None, members, "updated").await?;
        self.audit(&by.actor(), "audience.updated", None, json!({"audience": name, "purpose": purpose, "size": applied.size})).await?;
        Ok((self.audience(name).await?, applied))
    }

    pub async fn delete_audience(&self, name: &str, by: &Principal) -> Result<(), ServiceError> {
        if name == EVERYONE {
            return Err(ServiceError::Conflict("the everyone audience cannot be deleted".into()));
        }
        self.store().audience_delete(name.to_owned()).await?;
        self.audit(&by.actor(), "audience.deleted", None, json!({"audience": name})).await
    }

    pub async fn audience(&self, name: &str) -> Result<AudienceView, ServiceError> {
        self.store().audience_get(name.to_owned()).await?.ok_or(ServiceError::NotFound("audience"))
    }

    pub async fn audiences(&self) -> Result<Vec<AudienceView>, ServiceError> {
        Ok(self.store().audience_list().await?)
    }

    /// Members, by pseudonymous id; the read is audited.
    pub async fn audience_members(&self, name: &str, after: Option<ProfileId>, limit: usize, by: &Principal) -> Result<Vec<MemberView>, ServiceError> {
        let m = self.store().audience_members(name.to_owned(), after.map(|p| p.0), limit).await?;
        self.audit(&by.actor(), "audience.members.read", None, json!({"audience": name, "count": m.len()})).await?;
        Ok(m)
    }

    pub async fn audience_history(&self, name: &str, before: Option<i64>, limit: usize, by: &Principal) -> Result<Vec<HistoryView>, ServiceError> {
        let h = self.store().audience_history(name.to_owned(), before, limit).await?;
        self.audit(&by.actor(), "audience.history.read", None, json!({"audience": name, "count": h.len()})).await?;
        Ok(h)
    }

    /// The audiences a subject belongs to (the 360 view and the export).
    pub async fn audiences_of(&self, subject: ProfileId) -> Result<Vec<(String, String, confidant_core::time::Millis)>, ServiceError> {
        Ok(self.store().audiences_of(subject).await?)
    }

    /// Evaluates every audience again: in full, or for the subjects with new events or
    /// consent receipts since the last incremental refresh.
    pub async fn refresh_audiences(&self, full: bool) -> Result<RefreshReport, ServiceError> {
        let mut watermark = self.inner.audiences.watermark.lock().await;
        let (scope, next) = if full {
            // Everything up to now is covered by the full pass.
            let (_, w) = self.store().touched_since(Watermark { events: i64::MAX, receipts: i64::MAX }).await?;
            (None, w)
        } else {
            let (touched, w) = self.store().touched_since(*watermark).await?;
            (Some(touched), w)
        };
        let mut report = RefreshReport { full, subjects_evaluated: scope.as_ref().map_or(0, Vec::len), ..Default::default() };
        if scope.as_ref().is_some_and(Vec::is_empty) {
            *watermark = next;
            return Ok(report);
        }
        for a in self.audiences().await? {
            let Ok(rule) = Rule::parse(&a.rule) else { continue };
            let (n, members) = self.evaluate(&rule, &a.purpose, scope.clone()).await?;
            if full {
                report.subjects_evaluated = report.subjects_evaluated.max(n);
            }
            let applied = self.store().audience_apply(a.name.clone(), scope.clone(), members, "rule").await?;
            report.audiences += 1;
            report.joined += applied.joined;
            report.left += applied.left;
        }
        *watermark = next;
        Ok(report)
    }

    /// Evaluates one subject against every audience at once (after a consent change or a
    /// restriction), so that an audience never holds them a moment longer than lawful.
    pub(crate) async fn refresh_audiences_for(&self, subject: ProfileId, reason: &'static str) -> Result<(), ServiceError> {
        for a in self.audiences().await? {
            let Ok(rule) = Rule::parse(&a.rule) else { continue };
            let (_, members) = self.evaluate(&rule, &a.purpose, Some(vec![subject])).await?;
            self.store().audience_apply(a.name, Some(vec![subject]), members, reason).await?;
        }
        Ok(())
    }

    /// After an analytics run: the audiences whose rules read computed traits, in full.
    pub(crate) async fn refresh_computed_audiences(&self) -> Result<(), ServiceError> {
        for a in self.audiences().await? {
            let Ok(rule) = Rule::parse(&a.rule) else { continue };
            if !rule.needs().computed.is_empty() {
                let (_, members) = self.evaluate(&rule, &a.purpose, None).await?;
                self.store().audience_apply(a.name, None, members, "rule").await?;
            }
        }
        Ok(())
    }

    /// Creates the `everyone` audience when missing.
    pub(crate) async fn ensure_everyone(&self) -> Result<(), ServiceError> {
        if self.store().audience_get(EVERYONE.into()).await?.is_some() || self.policy().purpose(EVERYONE_PURPOSE).is_none() {
            return Ok(());
        }
        let system = Principal { name: "system".into(), role: confidant_core::config::Role::Dpo };
        let input = AudienceInput {
            name: EVERYONE.into(),
            purpose: EVERYONE_PURPOSE.into(),
            rule: "everyone".into(),
            description: Some("Every subject for whom analytics is lawful: the base of every other segment.".into()),
        };
        match self.create_audience(input, &system).await {
            Ok(_) | Err(ServiceError::Conflict(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The facts a rule reads: one value per trait chosen by the survivorship rules, as in the
/// profile's golden record.
pub(crate) fn facts_of(s: &SubjectFacts, rules: &confidant_core::identity::SurvivorshipRules) -> Facts {
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, t) in s.traits.iter().enumerate() {
        by_key.entry(t.0.as_str()).or_default().push(i);
    }
    let texts: Vec<String> = s.traits.iter().map(|t| t.1.to_string()).collect();
    let mut traits = BTreeMap::new();
    for (key, idx) in by_key {
        let c: Vec<SourceValue<'_>> = idx.iter().map(|&i| SourceValue { value_json: &texts[i], timestamp: s.traits[i].2, source: &s.traits[i].3 }).collect();
        if let Some(best) = rules.choose(key, &c) {
            traits.insert(key.to_owned(), s.traits[idx[best]].1.clone());
        }
    }
    Facts {
        traits,
        computed: s.computed.iter().cloned().collect(),
        events: s.events.iter().map(|(name, at, p)| EventFact { name: name.clone(), at: *at, properties: p.clone() }).collect(),
    }
}
