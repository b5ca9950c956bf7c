//! Email campaigns and triggered messages: an audience, a template in French and English, a
//! purpose, a schedule. Every recipient is checked at the moment of sending: the purpose must
//! be lawful for them (consent not withdrawn, no objection, no restriction), their address not
//! suppressed by an erasure, and the frequency cap not reached. Every decision lands in the
//! delivery log; a dry run makes the same decisions and stores nothing.
//!
//! Sending is resumable: a delivery is claimed durably before it is attempted and marked sent
//! once the SMTP server accepted it, so a campaign cut off by a failing server is taken up
//! again by sending it once more, and nobody receives it twice.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use base64::Engine;
use confidant_core::ids::{Email, Identifier, ProfileId};
use confidant_core::privacy::{LegalBasis, Use};
use confidant_core::template::Template;
use confidant_core::time::Millis;
use confidant_store::activation::{CampaignDef, CampaignView, DeliveryClaim, DeliveryView};
use confidant_store::audiences::FactsQuery;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::mail::{Mailer, Outgoing, SendFailure};
use crate::privacy::state_of;
use crate::{App, Principal, ServiceError};

/// The default purpose of a campaign.
pub const EMAIL_PURPOSE: &str = "marketing.communications.email";
/// Variables every template may use besides the tracking plan's traits.
pub const BUILT_INS: &[&str] = &["unsubscribe_url", "recommendations", "shop_name", "privacy_url"];
const LANGUAGES: &[&str] = &["fr", "en"];
/// Subjects prepared and claimed together.
const CHUNK: usize = 500;

/// A text per language, or one text for both.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Localised {
    One(String),
    Each(BTreeMap<String, String>),
}

impl Localised {
    fn per_language(&self) -> Result<BTreeMap<String, String>, String> {
        match self {
            Localised::One(t) => Ok(LANGUAGES.iter().map(|l| (l.to_string(), t.clone())).collect()),
            Localised::Each(m) => {
                if let Some(bad) = m.keys().find(|k| !LANGUAGES.contains(&k.as_str())) {
                    return Err(format!("{bad} is not a language of the product (fr, en)"));
                }
                if m.is_empty() {
                    return Err("give a text in fr, en or both".into());
                }
                Ok(m.clone())
            }
        }
    }
}

/// A "X without Y within T" rule.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct TriggerInput {
    pub event: String,
    pub unless: String,
    pub within_seconds: i64,
}

/// What a campaign is made of (`POST /api/campaigns`, `confidant campaign send`).
#[derive(Clone, Debug, Deserialize)]
pub struct CampaignInput {
    pub name: Option<String>,
    pub audience: String,
    pub purpose: Option<String>,
    pub subject: Localised,
    pub body: Localised,
    /// Recommended products to offer through `{{recommendations}}`. Default 3.
    pub recommendations: Option<usize>,
    /// When to send, in ms since the epoch; none: on demand.
    pub scheduled_at: Option<Millis>,
    pub trigger: Option<TriggerInput>,
}

/// The parsed templates of a campaign.
struct Content {
    subject: BTreeMap<String, Template>,
    body: BTreeMap<String, Template>,
    recommendations: usize,
}

/// What a send did (or, for a dry run, would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct SendReport {
    pub campaign: String,
    pub dry_run: bool,
    pub status: String,
    /// Members of the audience (or due occurrences, for a trigger) looked at.
    pub recipients: u64,
    pub sent: u64,
    pub already_sent: u64,
    pub failed: u64,
    pub suppressed: BTreeMap<String, u64>,
    /// Dry run: the profiles that would receive it, and those suppressed with the reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub would_send: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub would_suppress: Vec<(String, String)>,
}

impl SendReport {
    pub fn suppressed_total(&self) -> u64 {
        self.suppressed.values().sum()
    }
}

/// What a campaign's unsubscribe link leads to.
#[derive(Clone, Debug, Serialize)]
pub struct UnsubscribeTarget {
    pub campaign: String,
    pub purpose: String,
    pub purpose_name_fr: String,
    pub purpose_name_en: String,
    pub used: bool,
}

/// Why an unsubscribe link is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenProblem {
    /// Not a token this server signed.
    Forged,
    /// Signed, but the delivery is gone (erased, or the campaign deleted).
    Gone,
    /// Used already: the objection stands.
    Used,
}

fn invalid(code: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError::Invalid { code, message: message.into() }
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

type HmacSha256 = Hmac<Sha256>;

impl App {
    fn template_known(&self) -> impl Fn(&str) -> bool + '_ {
        move |n: &str| BUILT_INS.contains(&n) || self.policy().config().plan.traits.contains_key(n)
    }

    fn parse_content(&self, subject: &Localised, body: &Localised, recommendations: Option<usize>) -> Result<Content, ServiceError> {
        let known = self.template_known();
        let parsed = |field: &str, l: &Localised| -> Result<BTreeMap<String, Template>, ServiceError> {
            let texts = l.per_language().map_err(|m| invalid("invalid_template", format!("{field}: {m}")))?;
            let mut out = BTreeMap::new();
            for (lang, text) in texts {
                if text.trim().is_empty() {
                    return Err(invalid("invalid_template", format!("{field}.{lang} is empty")));
                }
                let t = Template::parse(&text, &known).map_err(|error| ServiceError::InvalidTemplate { field: format!("{field}.{lang}"), error })?;
                out.insert(lang, t);
            }
            Ok(out)
        };
        let subject = parsed("subject", subject)?;
        let body = parsed("body", body)?;
        if subject.keys().ne(body.keys()) {
            return Err(invalid("invalid_template", "subject and body must be given in the same languages"));
        }
        let recommendations = recommendations.unwrap_or(3);
        if !(1..=20).contains(&recommendations) {
            return Err(invalid("invalid_recommendations", "recommendations must be from 1 to 20"));
        }
        Ok(Content { subject, body, recommendations })
    }

    fn content_of(&self, c: &CampaignView) -> Result<Content, ServiceError> {
        let subject: Localised = serde_json::from_value(c.content["subject"].clone()).map_err(|_| invalid("invalid_template", "stored subject"))?;
        let body: Localised = serde_json::from_value(c.content["body"].clone()).map_err(|_| invalid("invalid_template", "stored body"))?;
        self.parse_content(&subject, &body, c.content["recommendations"].as_u64().map(|n| n as usize))
    }

    /// Validates everything (templates, purpose, audience, trigger) before storing anything.
    fn campaign_def(&self, input: &CampaignInput) -> Result<CampaignDef, ServiceError> {
        let name = match &input.name {
            Some(n) => {
                crate::audiences::check_name(n)?;
                n.clone()
            }
            None => {
                // The same audience, purpose and texts make the same campaign: sending it again
                // resumes it rather than starting over.
                let mut h = Sha256::new();
                h.update(serde_json::to_vec(&(&input.audience, &input.purpose, &input.subject, &input.body, &input.trigger)).unwrap_or_default());
                format!("campaign-{}", &hex::encode(h.finalize())[..12])
            }
        };
        self.parse_content(&input.subject, &input.body, input.recommendations)?;
        let purpose = input.purpose.clone().unwrap_or_else(|| EMAIL_PURPOSE.into());
        if self.policy().purpose(&purpose).is_none() {
            return Err(invalid("unknown_purpose", format!("{purpose} is not a declared purpose")));
        }
        if let Some(t) = &input.trigger {
            for e in [&t.event, &t.unless] {
                if e.trim().is_empty() || e.len() > 200 {
                    return Err(invalid("invalid_trigger", "a trigger names two events (event, unless)"));
                }
            }
            if !(60..=90 * 86_400).contains(&t.within_seconds) {
                return Err(invalid("invalid_trigger", "within_seconds must be from 60 to 7,776,000 (90 days)"));
            }
        }
        let status = match (&input.trigger, input.scheduled_at) {
            (Some(_), _) => "active",
            (None, Some(_)) => "scheduled",
            (None, None) => "draft",
        };
        Ok(CampaignDef {
            name,
            audience: input.audience.clone(),
            purpose,
            content: json!({"subject": input.subject, "body": input.body, "recommendations": input.recommendations.unwrap_or(3)}),
            trigger: input.trigger.as_ref().map(|t| serde_json::to_value(t).unwrap_or(Value::Null)),
            scheduled_at: input.scheduled_at,
            status: status.into(),
        })
    }

    /// Creates a campaign; the same definition given again returns the existing one.
    pub async fn create_campaign(&self, input: CampaignInput, by: &Principal) -> Result<CampaignView, ServiceError> {
        let def = self.campaign_def(&input)?;
        self.audience(&def.audience).await?;
        if let Some(existing) = self.store().campaign_get(def.name.clone()).await? {
            if existing.audience == def.audience && existing.purpose == def.purpose && existing.content == def.content && existing.trigger == def.trigger {
                return Ok(existing);
            }
            return Err(ServiceError::Conflict(format!("a different campaign named {} exists already", def.name)));
        }
        let c = self.store().campaign_create(def, by.actor()).await?;
        self.audit(&by.actor(), "campaign.created", None, json!({"campaign": c.name, "audience": c.audience, "purpose": c.purpose, "trigger": c.trigger.is_some()})).await?;
        Ok(c)
    }

    pub async fn campaign(&self, name: &str) -> Result<CampaignView, ServiceError> {
        self.store().campaign_get(name.to_owned()).await?.ok_or(ServiceError::NotFound("campaign"))
    }

    pub async fn campaigns(&self) -> Result<Vec<CampaignView>, ServiceError> {
        Ok(self.store().campaign_list().await?)
    }

    pub async fn delete_campaign(&self, name: &str, by: &Principal) -> Result<(), ServiceError> {
        self.store().campaign_delete(name.to_owned()).await?;
        self.audit(&by.actor(), "campaign.deleted", None, json!({"campaign": name})).await
    }

    /// Pauses or resumes a triggered message.
    pub async fn set_trigger_active(&self, name: &str, active: bool, by: &Principal) -> Result<CampaignView, ServiceError> {
        let c = self.campaign(name).await?;
        if c.trigger.is_none() {
            return Err(ServiceError::Conflict("only a triggered message can be paused or resumed".into()));
        }
        self.store().campaign_status(c.id, if active { "active" } else { "paused" }).await?;
        self.audit(&by.actor(), if active { "campaign.resumed" } else { "campaign.paused" }, None, json!({"campaign": name})).await?;
        self.campaign(name).await
    }

    /// The delivery log of a campaign, and its counts by status and reason.
    pub async fn campaign_deliveries(&self, name: &str, status: Option<String>, after: i64, limit: usize, by: &Principal) -> Result<(Vec<DeliveryView>, Value), ServiceError> {
        let c = self.campaign(name).await?;
        let rows = self.store().deliveries(c.id, status, after, limit).await?;
        let counts = self.store().delivery_counts(c.id).await?;
        let mut summary = serde_json::Map::new();
        for (status, reason, n) in counts {
            let key = match reason {
                Some(r) if status == "suppressed" => format!("suppressed.{r}"),
                _ => status,
            };
            let prev = summary.get(&key).and_then(Value::as_i64).unwrap_or(0);
            summary.insert(key, json!(prev + n));
        }
        self.audit(&by.actor(), "campaign.deliveries.viewed", None, json!({"campaign": name, "rows": rows.len()})).await?;
        Ok((rows, Value::Object(summary)))
    }

    fn mailer(&self) -> Result<Mailer, ServiceError> {
        Mailer::new(&self.config().smtp)
    }

    fn public_url(&self) -> Result<String, ServiceError> {
        self.config().server.public_url.clone().ok_or_else(|| {
            invalid("public_url_required", "server.public_url must be set to send email: every message carries an unsubscribe link on it")
        })
    }

    /// Sends a campaign to its audience now (or, with `dry_run`, says who would receive it).
    pub async fn send_campaign(&self, name: &str, dry_run: bool, by: &Principal) -> Result<SendReport, ServiceError> {
        let c = self.campaign(name).await?;
        if c.trigger.is_some() {
            return Err(ServiceError::Conflict("a triggered message is sent by its trigger, not on demand".into()));
        }
        let content = self.content_of(&c)?;
        self.audience(&c.audience).await?;
        let mailer = if dry_run { None } else { Some(self.mailer()?) };
        let base = self.public_url()?;
        // Memberships follow the latest events and consents before anyone is chosen.
        self.refresh_audiences(false).await?;
        let mut report = SendReport { campaign: c.name.clone(), dry_run, ..Default::default() };
        if !dry_run {
            self.store().campaign_status(c.id, "sending").await?;
        }
        let mut after = None;
        let mut interrupted = false;
        loop {
            let page = self.store().audience_members(c.audience.clone(), after, CHUNK).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.profile.0);
            let recipients: Vec<(ProfileId, String)> = page.iter().map(|m| (m.profile, String::new())).collect();
            if self.deliver(&c, &content, recipients, mailer.as_ref(), &base, &mut report).await? {
                interrupted = true;
                break;
            }
        }
        report.status = match (dry_run, interrupted) {
            (true, _) => "dry_run".into(),
            (false, true) => "interrupted".into(),
            (false, false) if report.failed > 0 => "interrupted".into(),
            _ => "sent".into(),
        };
        if !dry_run {
            let status = if report.status == "sent" { "sent" } else { "interrupted" };
            self.store().campaign_status(c.id, status).await?;
        }
        let action = if dry_run { "campaign.dry_run" } else { "campaign.sent" };
        self.audit(
            &by.actor(),
            action,
            None,
            json!({"campaign": c.name, "status": report.status, "recipients": report.recipients, "sent": report.sent, "failed": report.failed,
                   "already_sent": report.already_sent, "suppressed": report.suppressed}),
        )
        .await?;
        tracing::info!(campaign = %c.name, status = %report.status, sent = report.sent, failed = report.failed, suppressed = report.suppressed_total(), "campaign run");
        Ok(report)
    }

    /// Checks, claims and sends to `recipients` (subject, occurrence). Returns true when the
    /// SMTP server failed so persistently that the run stopped.
    async fn deliver(
        &self,
        c: &CampaignView,
        content: &Content,
        recipients: Vec<(ProfileId, String)>,
        mailer: Option<&Mailer>,
        base: &str,
        report: &mut SendReport,
    ) -> Result<bool, ServiceError> {
        report.recipients += recipients.len() as u64;
        let subjects: Vec<ProfileId> = recipients.iter().map(|r| r.0).collect();
        let records = self.store().subject_records(subjects.clone()).await?;
        let needed: Vec<String> = {
            let mut keys: Vec<String> = vec!["email".into(), "preferred_language".into()];
            for t in content.subject.values().chain(content.body.values()) {
                keys.extend(t.variables().into_iter().filter(|v| !BUILT_INS.contains(v)).map(str::to_owned));
            }
            keys.sort();
            keys.dedup();
            keys
        };
        let facts = self.store().audience_facts(FactsQuery { subjects: Some(subjects.clone()), traits: needed, computed: vec![], events: vec![] }).await?;
        let rules = &self.config().identity.survivorship;
        let traits: std::collections::HashMap<ProfileId, BTreeMap<String, Value>> =
            facts.iter().map(|f| (f.profile, crate::audiences::facts_of(f, rules).traits)).collect();
        let cap = self.config().campaigns.frequency_cap;
        let window = i64::from(self.config().campaigns.frequency_window_days) * 86_400_000;
        let sent_recently = if cap > 0 { self.store().sent_since(subjects.clone(), crate::now_millis() - window).await? } else { Default::default() };
        let states = self.store().delivery_states(c.id, subjects).await?;
        let purpose = self.policy().purpose(&c.purpose).cloned();
        let mut to_claim = Vec::new();
        let mut suppress = Vec::new();
        for ((profile, occurrence), record) in recipients.into_iter().zip(records) {
            if states.get(&(profile.0, occurrence.clone())).is_some_and(|s| s == "sent") {
                report.already_sent += 1;
                continue;
            }
            let email = traits.get(&profile).and_then(|t| t.get("email")).and_then(text_of).and_then(|e| Email::parse(&e).ok());
            let reason: Option<&'static str> = match &record {
                None => Some("erased"),
                Some(r) if r.restricted => Some("restricted"),
                Some(r) => {
                    let state = state_of(r);
                    if self.policy().is_lawful(&c.purpose, &state, Use::Process) {
                        match &email {
                            None => Some("no_email"),
                            Some(e) if self.is_address_suppressed(e) => Some("suppressed_address"),
                            Some(_) if cap > 0 && sent_recently.get(&profile).copied().unwrap_or(0) >= cap => Some("frequency_cap"),
                            Some(_) => None,
                        }
                    } else {
                        match state.decision(&c.purpose, "") {
                            Some(d) if !d.granted => Some(if purpose.as_ref().is_some_and(|p| p.legal_basis == LegalBasis::Consent) { "withdrawn" } else { "objected" }),
                            None => Some("no_consent"),
                            Some(_) => Some("not_lawful"),
                        }
                    }
                }
            };
            match reason {
                Some(r) => {
                    *report.suppressed.entry(r.into()).or_default() += 1;
                    if mailer.is_none() {
                        report.would_suppress.push((profile.to_string(), r.into()));
                    }
                    suppress.push((profile, occurrence, r.to_owned()));
                }
                None => {
                    if mailer.is_none() {
                        report.would_send.push(profile.to_string());
                    }
                    let token: [u8; 16] = rand::random();
                    to_claim.push((profile, occurrence, token.to_vec(), email.expect("checked above")));
                }
            }
        }
        let Some(mailer) = mailer else { return Ok(false) };
        if !suppress.is_empty() {
            self.store().deliveries_suppress(c.id, suppress).await?;
        }
        if to_claim.is_empty() {
            return Ok(false);
        }
        let emails: std::collections::HashMap<(ProfileId, String), Email> = to_claim.iter().map(|(p, o, _, e)| ((*p, o.clone()), e.clone())).collect();
        let claims = self.store().deliveries_claim(c.id, to_claim.into_iter().map(|(p, o, t, _)| (p, o, t)).collect()).await?;
        report.already_sent += (emails.len() - claims.len()) as u64;
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let consecutive = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let limit = Arc::new(tokio::sync::Semaphore::new(self.config().smtp.connections));
        let give_up = (self.config().smtp.connections as u32 * 2).max(4);
        let mut tasks = tokio::task::JoinSet::new();
        // Outcomes are committed in groups by one recorder, off the connections' path: the
        // claim, durable before any message leaves, is what keeps a resumed run from sending
        // twice; an outcome still unrecorded at a crash leaves its row `sending`, sent again
        // on resume under the same Message-ID.
        let (outcomes_tx, mut outcomes_rx) = tokio::sync::mpsc::unbounded_channel::<(i64, &'static str, Option<String>)>();
        let recorder = {
            let app = self.clone();
            tokio::spawn(async move {
                while let Some(first) = outcomes_rx.recv().await {
                    let mut group = vec![first];
                    while group.len() < 1024 {
                        match outcomes_rx.try_recv() {
                            Ok(o) => group.push(o),
                            Err(_) => break,
                        }
                    }
                    app.store().deliveries_finish(group).await?;
                }
                Ok::<(), ServiceError>(())
            })
        };
        for claim in claims {
            let email = emails.get(&(claim.profile, claim.occurrence.clone())).cloned().expect("claimed from this list");
            let lang = traits
                .get(&claim.profile)
                .and_then(|t| t.get("preferred_language"))
                .and_then(text_of)
                .map(|l| l.to_ascii_lowercase())
                .filter(|l| content.subject.contains_key(l.get(..2).unwrap_or("")))
                .map(|l| l[..2].to_owned())
                .unwrap_or_else(|| self.config().campaigns.default_language.clone());
            let lang = if content.subject.contains_key(&lang) { lang } else { content.subject.keys().next().cloned().unwrap_or_default() };
            let vars = traits.get(&claim.profile).cloned().unwrap_or_default();
            let url = format!("{base}/u/{}", self.unsubscribe_token(&claim.token));
            let recommendations = if content.body[&lang].uses("recommendations") { self.recommendation_lines(claim.profile, content.recommendations, &lang).await } else { String::new() };
            let shop = self.policy().config().controller.name.clone();
            let value = |n: &str| -> Option<String> {
                match n {
                    "unsubscribe_url" => Some(url.clone()),
                    "recommendations" => Some(recommendations.clone()),
                    "shop_name" => Some(shop.clone()),
                    "privacy_url" => Some(format!("{base}/privacy")),
                    _ => vars.get(n).and_then(text_of),
                }
            };
            let out = Outgoing {
                to: email.as_str().to_owned(),
                subject: content.subject[&lang].render_line(&value),
                body: content.body[&lang].render(&value),
                message_id: hex::encode(&claim.token),
                unsubscribe_url: Some(url.clone()),
            };
            let permit = limit.clone().acquire_owned().await.map_err(|_| invalid("internal", "the send limiter closed"))?;
            let mailer = mailer.clone();
            let (sent, failed, consecutive, stop) = (sent.clone(), failed.clone(), consecutive.clone(), stop.clone());
            let outcomes = outcomes_tx.clone();
            tasks.spawn(async move {
                let _permit = permit;
                let DeliveryClaim { id, .. } = claim;
                let outcome = if stop.load(Ordering::Relaxed) {
                    failed.fetch_add(1, Ordering::Relaxed);
                    (id, "failed", Some("not_attempted".to_owned()))
                } else {
                    match mailer.send(&out).await {
                        Ok(()) => {
                            consecutive.store(0, Ordering::Relaxed);
                            sent.fetch_add(1, Ordering::Relaxed);
                            (id, "sent", None)
                        }
                        Err(f) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            if matches!(f, SendFailure::Transient(_)) && consecutive.fetch_add(1, Ordering::Relaxed) + 1 >= give_up {
                                stop.store(true, Ordering::Relaxed);
                            }
                            (id, "failed", Some(f.code()))
                        }
                    }
                };
                // The recorder's end is only dropped once every sender is done.
                let _ = outcomes.send(outcome);
            });
            // Reap finished tasks as we go, so that memory stays flat on large audiences.
            while let Some(done) = tasks.try_join_next() {
                done.map_err(|_| invalid("internal", "a send task failed"))?;
            }
        }
        while let Some(done) = tasks.join_next().await {
            done.map_err(|_| invalid("internal", "a send task failed"))?;
        }
        drop(outcomes_tx);
        recorder.await.map_err(|_| invalid("internal", "the delivery recorder failed"))??;
        report.sent += sent.load(Ordering::Relaxed);
        report.failed += failed.load(Ordering::Relaxed);
        Ok(stop.load(Ordering::Relaxed))
    }

    fn is_address_suppressed(&self, e: &Email) -> bool {
        self.book().is_suppressed(&self.tombstone_key(), &[Identifier::email(e)])
    }

    /// Recommended products as lines of text: personal where the purpose is lawful, the shop's
    /// best sellers otherwise (the recommender decides).
    async fn recommendation_lines(&self, profile: ProfileId, n: usize, lang: &str) -> String {
        match self.recommend(Some(profile), None, n).await {
            Ok(r) => {
                let items: Vec<String> = r.for_you.items.iter().map(|i| format!("- {}", i.name.clone().unwrap_or_else(|| i.product.clone()))).collect();
                if items.is_empty() {
                    String::new()
                } else {
                    let head = if lang == "en" { "You may like:" } else { "Vous aimerez peut-être :" };
                    format!("{head}\n{}", items.join("\n"))
                }
            }
            Err(_) => String::new(),
        }
    }

    // ------------------------------------------------------------------ unsubscribe links

    /// The link's token: 16 random bytes and 16 bytes of their HMAC, base64url.
    pub fn unsubscribe_token(&self, id: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.unsubscribe_key()).expect("any key length");
        mac.update(id);
        let tag = mac.finalize().into_bytes();
        let mut raw = id.to_vec();
        raw.extend_from_slice(&tag[..16]);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    fn token_id(&self, token: &str) -> Result<Vec<u8>, TokenProblem> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.as_bytes()).map_err(|_| TokenProblem::Forged)?;
        if raw.len() != 32 {
            return Err(TokenProblem::Forged);
        }
        let mut mac = HmacSha256::new_from_slice(&self.unsubscribe_key()).expect("any key length");
        mac.update(&raw[..16]);
        mac.verify_truncated_left(&raw[16..]).map_err(|_| TokenProblem::Forged)?;
        Ok(raw[..16].to_vec())
    }

    /// What a link leads to (the confirmation page).
    pub async fn unsubscribe_target(&self, token: &str) -> Result<Result<UnsubscribeTarget, TokenProblem>, ServiceError> {
        let id = match self.token_id(token) {
            Ok(id) => id,
            Err(p) => return Ok(Err(p)),
        };
        let Some(t) = self.store().token_target(id).await? else { return Ok(Err(TokenProblem::Gone)) };
        if t.profile.is_none() {
            return Ok(Err(TokenProblem::Gone));
        }
        let p = self.policy().purpose(&t.purpose);
        Ok(Ok(UnsubscribeTarget {
            campaign: t.campaign,
            purpose: t.purpose.clone(),
            purpose_name_fr: p.map(|p| p.name.fr.clone()).unwrap_or_else(|| t.purpose.clone()),
            purpose_name_en: p.map(|p| p.name.en.clone()).unwrap_or_else(|| t.purpose.clone()),
            used: t.unsubscribed_at.is_some(),
        }))
    }

    /// The one-click unsubscribe (RFC 8058): records the objection to the campaign's purpose in
    /// the consent ledger before answering. A link works once; forged and used links change
    /// nothing and are audited.
    pub async fn unsubscribe(&self, token: &str, one_click: bool) -> Result<Result<UnsubscribeTarget, TokenProblem>, ServiceError> {
        let target = match self.unsubscribe_target(token).await? {
            Ok(t) => t,
            Err(p) => {
                self.audit("unsubscribe", "unsubscribe.refused", None, json!({"reason": format!("{p:?}").to_lowercase()})).await?;
                return Ok(Err(p));
            }
        };
        if target.used {
            self.audit("unsubscribe", "unsubscribe.refused", None, json!({"reason": "used", "campaign": target.campaign})).await?;
            return Ok(Err(TokenProblem::Used));
        }
        let id = self.token_id(token).map_err(|_| invalid("forged", "forged"))?;
        let t = self.store().token_target(id).await?.ok_or(ServiceError::NotFound("delivery"))?;
        let Some(profile) = t.profile else { return Ok(Err(TokenProblem::Gone)) };
        if !self.store().token_used(t.delivery).await? {
            return Ok(Err(TokenProblem::Used));
        }
        let view = self.profile(profile).await?;
        let identifier = view
            .identities
            .iter()
            .min_by_key(|i| i.kind as u8)
            .map(|i| Identifier::new(i.kind, i.value.clone()))
            .ok_or(ServiceError::NotFound("identity"))?;
        let consent = crate::privacy::ConsentRequest {
            identifiers: vec![identifier],
            purposes: [(t.purpose.clone(), false)].into_iter().collect(),
            method: "unsubscribe".into(),
            at: crate::now_millis(),
            evidence: crate::privacy::Evidence { ..Default::default() },
            ..Default::default()
        };
        self.record_consent(None, consent, "unsubscribe").await?;
        self.audit("unsubscribe", "unsubscribe.recorded", Some(profile), json!({"campaign": t.campaign, "purpose": t.purpose, "one_click": one_click})).await?;
        Ok(Ok(UnsubscribeTarget { used: true, ..target }))
    }

    // ------------------------------------------------------------------ schedules and triggers

    /// Sends the scheduled campaigns that are due and runs every active trigger once.
    pub async fn run_campaigns(&self) -> Result<(u64, u64), ServiceError> {
        let now = crate::now_millis();
        let system = Principal { name: "scheduler".into(), role: confidant_core::config::Role::Admin };
        let (mut campaigns, mut triggered) = (0, 0);
        for c in self.store().campaign_list().await? {
            if c.status == "scheduled" && c.scheduled_at.is_some_and(|t| t <= now) {
                self.send_campaign(&c.name, false, &system).await?;
                campaigns += 1;
            } else if c.status == "active" && c.trigger.is_some() {
                triggered += self.run_trigger(&c).await?;
            }
        }
        Ok((campaigns, triggered))
    }

    /// One pass of a triggered message: the due occurrences of its event not followed by its
    /// "unless" event within the delay, each sent once.
    async fn run_trigger(&self, c: &CampaignView) -> Result<u64, ServiceError> {
        let t: TriggerInput = serde_json::from_value(c.trigger.clone().unwrap_or(Value::Null)).map_err(|_| invalid("invalid_trigger", "stored trigger"))?;
        let content = self.content_of(c)?;
        let mailer = self.mailer()?;
        let base = self.public_url()?;
        let mut sent = 0;
        let mut cursor = c.cursor;
        loop {
            let (due, next) = self.store().trigger_due(t.event.clone(), t.unless.clone(), t.within_seconds * 1000, cursor, crate::now_millis(), 1000).await?;
            if next == cursor {
                break;
            }
            let mut recipients = Vec::new();
            let mut outside = Vec::new();
            for o in due.into_iter().filter(|o| !o.followed) {
                let member = self.store().audiences_of(o.profile).await?.iter().any(|(name, _, _)| *name == c.audience);
                if member {
                    recipients.push((o.profile, o.message_id));
                } else {
                    outside.push((o.profile, o.message_id, "not_in_audience".to_owned()));
                }
            }
            if !outside.is_empty() {
                self.store().deliveries_suppress(c.id, outside).await?;
            }
            let mut report = SendReport::default();
            let stopped = self.deliver(c, &content, recipients, Some(&mailer), &base, &mut report).await?;
            sent += report.sent;
            if stopped || report.failed > 0 {
                // The cursor stays: the failed occurrences are taken up again next time, and
                // those already sent are skipped by the delivery log.
                break;
            }
            self.store().campaign_cursor(c.id, next).await?;
            cursor = next;
        }
        Ok(sent)
    }
}
