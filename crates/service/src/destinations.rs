//! Destinations: webhooks that receive, for the purposes they declare, the events and audience
//! changes lawful for those purposes at the moment of sending, and every rights request about a
//! subject they received data about (Art. 17(2) and 19). Also audience exports.
//!
//! Delivery is at least once, in order per destination: a worker follows the event log and the
//! audience history with a cursor per destination, signs each JSON body with HMAC-SHA256, and
//! retries failures with exponential backoff and jitter up to `max_attempts`; what still fails
//! goes to a dead-letter table from which it can be replayed. Every request carries an
//! `Idempotency-Key`, stable across retries and replays, so the receiver can drop duplicates.
//! Webhook URLs may not point at private addresses unless the configuration allows it, checked
//! when a destination is created and again at every connection (DNS answers included), and
//! redirects are not followed.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use confidant_core::ids::{IdKind, ProfileId};
use confidant_core::message::MessageType;
use confidant_core::privacy::Use;
use confidant_store::activation::{DeadLetter, DestinationDef, DestinationView, RightsForward, RightsToForward};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::privacy::state_of;
use crate::{App, Principal, ServiceError};

/// Items read from the log per pass and destination.
const BATCH: usize = 200;
/// The longest wait between two attempts.
const MAX_BACKOFF_MS: i64 = 10 * 60 * 1000;

/// Per-process delivery state: retry schedules, rate limits, the HTTP client.
#[derive(Default)]
pub struct DestinationState {
    /// destination id → (failed attempts of the item at the head, not before).
    failing: Mutex<HashMap<i64, (i64, i64)>>,
    buckets: Mutex<HashMap<i64, Bucket>>,
    pass: tokio::sync::Mutex<()>,
    client: OnceLock<(bool, reqwest::Client)>,
}

/// A token bucket: `rate` requests per second, bursts of up to `max(rate, 1)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    tokens: f64,
    last: i64,
}

impl Bucket {
    pub fn full(rate: f64, now: i64) -> Bucket {
        Bucket { tokens: rate.max(1.0), last: now }
    }

    /// Takes a token at `now` (ms), or says how many ms to wait for one.
    pub fn take(&mut self, rate: f64, now: i64) -> Result<(), u64> {
        let burst = rate.max(1.0);
        self.tokens = (self.tokens + (now - self.last).max(0) as f64 / 1000.0 * rate).min(burst);
        self.last = now.max(self.last);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - self.tokens) / rate) * 1000.0).ceil().max(1.0) as u64)
        }
    }
}

/// `POST /api/destinations`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationInput {
    pub name: String,
    pub url: String,
    /// The HMAC key; generated (and shown once) when absent.
    pub secret: Option<String>,
    pub purposes: Vec<String>,
    /// Event names to forward (`page`, `identify`... for the other calls); none: all.
    pub events: Option<Vec<String>>,
    /// Forward audience joins and leaves. Default true.
    pub audiences: Option<bool>,
    /// Default 50.
    pub rate_per_second: Option<f64>,
    /// Default 5,000.
    pub timeout_ms: Option<i64>,
    /// Default 8.
    pub max_attempts: Option<i64>,
    /// First retry after about this long, doubling each time. Default 1,000.
    pub retry_base_ms: Option<i64>,
    /// Forward only data stored from now on (default), or everything held (false).
    pub from_now: Option<bool>,
}

/// What one pass of the worker did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PassReport {
    pub delivered: u64,
    pub skipped_not_lawful: u64,
    pub failed_attempts: u64,
    pub dead_lettered: u64,
    pub rights_delivered: u64,
}

fn invalid(code: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError::Invalid { code, message: message.into() }
}

/// Loopback, private, link-local, shared (CGNAT), unspecified, multicast and documentation
/// ranges: none of them is a webhook on the internet.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => {
            let o = v.octets();
            v.is_loopback()
                || v.is_private()
                || v.is_link_local()
                || v.is_unspecified()
                || v.is_broadcast()
                || v.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (18..20).contains(&o[1]))
        }
        IpAddr::V6(v) => {
            if let Some(v4) = v.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let s = v.segments();
            v.is_loopback() || v.is_unspecified() || v.is_multicast() || (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfe80 || s[0] == 0x2001 && s[1] == 0xdb8
        }
    }
}

/// Resolves host names and refuses private answers (DNS rebinding included).
struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.filter(|a| !is_private(a.ip())).collect();
            if addrs.is_empty() {
                return Err("the host resolves to no public address".into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

type HmacSha256 = Hmac<Sha256>;

/// `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`: the receiver recomputes it with the
/// secret and rejects stale timestamps, as with Stripe's webhooks.
pub fn signature(secret: &str, at_seconds: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(at_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={at_seconds},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Exponential backoff with full jitter in its upper half: base·2^(n-1) · [0.5, 1).
fn backoff(base_ms: i64, attempts: i64) -> i64 {
    let exp = base_ms.saturating_mul(1i64 << (attempts - 1).clamp(0, 20)).min(MAX_BACKOFF_MS);
    exp / 2 + (rand::random::<u64>() % (exp as u64 / 2 + 1)) as i64
}

enum Outcome {
    Delivered(u16),
    /// Worth another attempt: timeout, connection, 408, 429, 5xx.
    Retry(String, Option<u16>),
    /// A 4xx other than 408 and 429: the receiver will not accept it as it is.
    Refused(String, u16),
}

impl App {
    fn http_client(&self) -> reqwest::Client {
        let allow = self.config().destinations.allow_private_addresses;
        let (_, c) = self.destination_state().client.get_or_init(|| {
            let mut b = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).user_agent(concat!("confidant/", env!("CARGO_PKG_VERSION")));
            if !allow {
                b = b.dns_resolver(Arc::new(GuardedResolver));
            }
            (allow, b.build().expect("the HTTP client builds"))
        });
        c.clone()
    }

    /// Checks a webhook URL: http(s), a host, no credentials, and not a private address
    /// unless allowed.
    fn check_url(&self, url: &str) -> Result<reqwest::Url, ServiceError> {
        let u = reqwest::Url::parse(url).map_err(|_| invalid("invalid_url", "the URL does not parse"))?;
        if u.scheme() != "https" && u.scheme() != "http" {
            return Err(invalid("invalid_url", "a webhook URL is http:// or https://"));
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err(invalid("invalid_url", "put credentials in the secret, not in the URL"));
        }
        let host = u.host_str().ok_or_else(|| invalid("invalid_url", "the URL has no host"))?;
        if !self.config().destinations.allow_private_addresses {
            let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok();
            let local_name = host == "localhost" || host.ends_with(".localhost") || host.ends_with(".local") || host.ends_with(".internal");
            if literal.is_some_and(is_private) || local_name {
                return Err(invalid(
                    "private_address",
                    "the URL points at a loopback, private or link-local address; set destinations.allow_private_addresses = true to allow it",
                ));
            }
        }
        Ok(u)
    }

    /// Creates a destination. Returns it with its secret (shown this once).
    pub async fn create_destination(&self, input: DestinationInput, by: &Principal) -> Result<(DestinationView, String), ServiceError> {
        crate::audiences::check_name(&input.name)?;
        self.check_url(&input.url)?;
        if input.purposes.is_empty() {
            return Err(invalid("missing_purpose", "a destination declares the purposes it serves"));
        }
        for p in &input.purposes {
            if self.policy().purpose(p).is_none() {
                return Err(invalid("unknown_purpose", format!("{p} is not a declared purpose")));
            }
        }
        let secret = match input.secret {
            Some(s) if s.len() >= 16 && s.len() <= 256 => s,
            Some(_) => return Err(invalid("invalid_secret", "a secret is 16 to 256 characters")),
            None => hex::encode(rand::random::<[u8; 24]>()),
        };
        let rate = input.rate_per_second.unwrap_or(50.0);
        if !(rate.is_finite() && (0.1..=10_000.0).contains(&rate)) {
            return Err(invalid("invalid_rate", "rate_per_second is from 0.1 to 10,000"));
        }
        let timeout = input.timeout_ms.unwrap_or(5_000);
        let attempts = input.max_attempts.unwrap_or(8);
        let base = input.retry_base_ms.unwrap_or(1_000);
        if !(100..=60_000).contains(&timeout) || !(1..=30).contains(&attempts) || !(10..=600_000).contains(&base) {
            return Err(invalid("invalid_limits", "timeout_ms is 100 to 60,000, max_attempts 1 to 30, retry_base_ms 10 to 600,000"));
        }
        let def = DestinationDef {
            name: input.name,
            url: input.url,
            secret: secret.clone(),
            purposes: input.purposes,
            events: input.events,
            audiences: input.audiences.unwrap_or(true),
            rate_per_second: rate,
            timeout_ms: timeout,
            max_attempts: attempts,
            retry_base_ms: base,
            from_now: input.from_now.unwrap_or(true),
        };
        let d = self.store().destination_create(def, by.actor()).await?;
        self.audit(&by.actor(), "destination.created", None, json!({"destination": d.name, "purposes": d.purposes})).await?;
        Ok((d, secret))
    }

    pub async fn destinations(&self) -> Result<Vec<DestinationView>, ServiceError> {
        Ok(self.store().destination_list().await?)
    }

    pub async fn destination(&self, name: &str) -> Result<DestinationView, ServiceError> {
        self.store().destination_get(name.to_owned()).await?.ok_or(ServiceError::NotFound("destination"))
    }

    pub async fn enable_destination(&self, name: &str, enabled: bool, by: &Principal) -> Result<DestinationView, ServiceError> {
        let d = self.store().destination_enable(name.to_owned(), enabled).await?;
        self.audit(&by.actor(), if enabled { "destination.enabled" } else { "destination.disabled" }, None, json!({"destination": name})).await?;
        Ok(d)
    }

    pub async fn delete_destination(&self, name: &str, by: &Principal) -> Result<(), ServiceError> {
        self.store().destination_delete(name.to_owned()).await?;
        self.audit(&by.actor(), "destination.deleted", None, json!({"destination": name})).await
    }

    pub async fn dead_letters(&self, name: &str, limit: usize) -> Result<Vec<DeadLetter>, ServiceError> {
        let d = self.destination(name).await?;
        Ok(self.store().dead_list(d.id, limit).await?)
    }

    /// Sends the dead letters of a destination again (still only if lawful now); those
    /// delivered leave the table. Dead rights requests go back to the queue.
    pub async fn replay_dead(&self, name: &str, by: &Principal) -> Result<Value, ServiceError> {
        let d = self.destination(name).await?;
        let rights = self.store().rights_replay(d.id).await?;
        let dead = self.store().dead_list(d.id, 10_000).await?;
        let subjects: Vec<ProfileId> = dead.iter().filter_map(|x| x.profile).collect();
        let records = self.store().subject_records(subjects.clone()).await?;
        let states: HashMap<ProfileId, _> = subjects.into_iter().zip(records).filter_map(|(p, r)| r.map(|r| (p, state_of(&r)))).collect();
        let (mut delivered, mut dropped, mut failed, mut received) = (Vec::new(), Vec::new(), 0u64, Vec::new());
        for x in dead {
            let purposes: Vec<String> = serde_json::from_str::<Value>(&x.payload).ok().and_then(|v| serde_json::from_value(v["purposes"].clone()).ok()).unwrap_or_default();
            let lawful = match x.profile {
                Some(p) => states.get(&p).is_some_and(|s| purposes.iter().any(|pp| self.policy().is_lawful(pp, s, Use::Process))),
                None => true,
            };
            if !lawful {
                dropped.push(x.id);
                continue;
            }
            self.take_token(&d).await;
            match self.post(&d, &x.idempotency_key, x.payload.as_bytes()).await {
                Outcome::Delivered(_) => {
                    delivered.push(x.id);
                    received.extend(x.profile);
                }
                _ => failed += 1,
            }
        }
        self.store().destination_advance(d.id, None, None, received).await?;
        let n = delivered.len();
        let dropped_n = dropped.len();
        delivered.extend(dropped);
        self.store().dead_delete(delivered).await?;
        let report = json!({"replayed": n, "dropped_not_lawful": dropped_n, "still_failing": failed, "rights_requeued": rights});
        self.audit(&by.actor(), "destination.replayed", None, json!({"destination": name, "report": report})).await?;
        Ok(report)
    }

    /// Waits for the destination's rate limit.
    async fn take_token(&self, d: &DestinationView) {
        loop {
            let wait = {
                let now = crate::now_millis();
                let mut b = self.destination_state().buckets.lock().unwrap_or_else(|e| e.into_inner());
                match b.entry(d.id).or_insert_with(|| Bucket::full(d.rate_per_second, now)).take(d.rate_per_second, now) {
                    Ok(()) => return,
                    Err(ms) => ms,
                }
            };
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }

    async fn post(&self, d: &DestinationView, key: &str, body: &[u8]) -> Outcome {
        if let Err(e) = self.check_url(&d.url) {
            return Outcome::Refused(e.to_string(), 0);
        }
        let at = crate::now_millis() / 1000;
        let r = self
            .http_client()
            .post(&d.url)
            .timeout(Duration::from_millis(d.timeout_ms as u64))
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .header("x-confidant-signature", signature(&d.secret, at, body))
            .body(body.to_vec())
            .send()
            .await;
        match r {
            Ok(resp) => {
                let s = resp.status().as_u16();
                match s {
                    200..=299 => Outcome::Delivered(s),
                    408 | 429 | 500..=599 => Outcome::Retry(format!("HTTP {s}"), Some(s)),
                    _ => Outcome::Refused(format!("HTTP {s}"), s),
                }
            }
            Err(e) if e.is_timeout() => Outcome::Retry("timeout".into(), None),
            Err(e) if e.is_redirect() => Outcome::Refused("redirect (not followed)".into(), 0),
            Err(_) => Outcome::Retry("connection failed".into(), None),
        }
    }

    /// The categories a destination's purposes cover.
    fn covered(&self, d: &DestinationView) -> HashSet<String> {
        d.purposes.iter().filter_map(|p| self.policy().purpose(p)).flat_map(|p| p.categories.iter().cloned()).collect()
    }

    /// The event as the destination may see it: traits and context fields outside its
    /// purposes' categories removed.
    fn minimise_for(&self, covered: &HashSet<String>, mut body: Value) -> Value {
        let plan = &self.policy().config().plan;
        let keep = |cat: Option<&String>| cat.is_some_and(|c| covered.contains(c));
        if let Some(t) = body.get_mut("traits").and_then(Value::as_object_mut) {
            t.retain(|k, _| keep(plan.traits.get(k)));
        }
        if let Some(ctx) = body.get_mut("context").and_then(Value::as_object_mut) {
            if let Some(t) = ctx.get_mut("traits").and_then(Value::as_object_mut) {
                t.retain(|k, _| keep(plan.traits.get(k)));
            }
            ctx.retain(|k, _| k == "traits" || keep(plan.context.get(k)));
        }
        body
    }

    /// One pass over every enabled destination: rights requests due, then events and audience
    /// changes from each cursor, until caught up or a failure asks to wait.
    pub async fn deliver_destinations(&self) -> Result<PassReport, ServiceError> {
        let _one = self.destination_state().pass.lock().await;
        let mut report = PassReport::default();
        self.forward_rights_due(&mut report).await?;
        for d in self.store().destination_list().await?.into_iter().filter(|d| d.enabled) {
            let waiting = self.destination_state().failing.lock().unwrap_or_else(|e| e.into_inner()).get(&d.id).is_some_and(|(_, at)| *at > crate::now_millis());
            if waiting {
                continue;
            }
            if self.deliver_events(&d, &mut report).await? && d.audiences {
                let d = self.destination(&d.name).await?;
                self.deliver_audience_changes(&d, &mut report).await?;
            }
        }
        Ok(report)
    }

    /// Records a failed attempt on the head item; true when it has used every attempt.
    fn note_failure(&self, d: &DestinationView) -> bool {
        let mut f = self.destination_state().failing.lock().unwrap_or_else(|e| e.into_inner());
        let e = f.entry(d.id).or_insert((0, 0));
        e.0 += 1;
        if e.0 >= d.max_attempts {
            f.remove(&d.id);
            true
        } else {
            e.1 = crate::now_millis() + backoff(d.retry_base_ms, e.0);
            false
        }
    }

    fn note_success(&self, d: &DestinationView) -> i64 {
        self.destination_state().failing.lock().unwrap_or_else(|e| e.into_inner()).remove(&d.id).map_or(0, |(n, _)| n)
    }

    /// Sends one item; on failure, either waits (false) or dead-letters it (true: move on).
    async fn send_item(&self, d: &DestinationView, profile: Option<ProfileId>, kind: &str, key: String, payload: String, report: &mut PassReport) -> Result<Option<bool>, ServiceError> {
        self.take_token(d).await;
        let (error, permanent) = match self.post(d, &key, payload.as_bytes()).await {
            Outcome::Delivered(_) => {
                self.note_success(d);
                report.delivered += 1;
                return Ok(Some(true));
            }
            Outcome::Retry(e, _) => (e, false),
            Outcome::Refused(e, _) => (e, true),
        };
        report.failed_attempts += 1;
        let attempts = if permanent { self.note_success(d) + 1 } else { 0 };
        if permanent || self.note_failure(d) {
            let attempts = if permanent { attempts } else { d.max_attempts };
            tracing::warn!(destination = %d.name, error = %error, attempts, "delivery dead-lettered");
            let dead = DeadLetter { id: 0, profile, kind: kind.into(), idempotency_key: key, payload, attempts, last_error: error, failed_at: crate::now_millis() };
            self.store().dead_add(d.id, vec![dead]).await?;
            report.dead_lettered += 1;
            return Ok(Some(false));
        }
        Ok(None)
    }

    /// Events from the destination's cursor; true when caught up.
    async fn deliver_events(&self, d: &DestinationView, report: &mut PassReport) -> Result<bool, ServiceError> {
        let covered = self.covered(d);
        let mut cursor = d.event_cursor;
        loop {
            let batch = self.store().events_after(cursor, BATCH).await?;
            if batch.is_empty() {
                return Ok(true);
            }
            let subjects: Vec<ProfileId> = batch.iter().map(|e| e.profile).collect::<HashSet<_>>().into_iter().collect();
            let records = self.store().subject_records(subjects.clone()).await?;
            let states: HashMap<ProfileId, _> = subjects.into_iter().zip(records).filter_map(|(p, r)| r.map(|r| (p, state_of(&r)))).collect();
            let mut received = Vec::new();
            let mut done = cursor;
            let mut blocked = false;
            for e in batch {
                let kind = MessageType::ALL.into_iter().find(|k| k.as_str() == e.kind);
                let wanted = match &d.events {
                    None => true,
                    Some(names) => names.iter().any(|n| Some(n.as_str()) == e.event.as_deref() || (e.kind != "track" && *n == e.kind)),
                };
                let category = kind.and_then(|k| self.policy().event_category(k, e.event.as_deref()).map(str::to_owned));
                // identify, group and alias carry identifiers and traits, which minimise_for
                // narrows to the covered categories.
                let category_ok = match &category {
                    Some(c) => covered.contains(c),
                    None => matches!(kind, Some(MessageType::Identify | MessageType::Group | MessageType::Alias)),
                };
                let lawful: Vec<&String> = match states.get(&e.profile) {
                    Some(s) => d
                        .purposes
                        .iter()
                        .filter(|p| self.policy().is_lawful(p, s, Use::Process))
                        .filter(|p| category.as_ref().is_none_or(|c| self.policy().purpose(p).is_some_and(|pp| pp.categories.contains(c))))
                        .collect(),
                    None => Vec::new(),
                };
                if !wanted || !category_ok || lawful.is_empty() {
                    if wanted {
                        report.skipped_not_lawful += 1;
                    }
                    done = e.seq;
                    continue;
                }
                let payload = json!({"type": "event", "destination": d.name, "profile": e.profile.to_string(), "purposes": lawful, "event": self.minimise_for(&covered, e.body)}).to_string();
                match self.send_item(d, Some(e.profile), "event", format!("event:{}", e.seq), payload, report).await? {
                    Some(delivered) => {
                        if delivered {
                            received.push(e.profile);
                        }
                        done = e.seq;
                    }
                    None => {
                        blocked = true;
                        break;
                    }
                }
            }
            if done > cursor || !received.is_empty() {
                self.store().destination_advance(d.id, Some(done), None, received).await?;
            }
            cursor = done;
            if blocked {
                return Ok(false);
            }
        }
    }

    /// Whether an identifier of this kind may go to a destination covering these categories.
    fn identifier_shared(&self, covered: &HashSet<String>, kind: IdKind) -> bool {
        let plan = &self.policy().config().plan;
        match kind {
            IdKind::UserId => true,
            IdKind::Email => plan.traits.get("email").is_some_and(|c| covered.contains(c)),
            IdKind::Phone => plan.traits.get("phone").is_some_and(|c| covered.contains(c)),
            IdKind::AnonymousId => false,
        }
    }

    async fn deliver_audience_changes(&self, d: &DestinationView, report: &mut PassReport) -> Result<(), ServiceError> {
        let covered = self.covered(d);
        let mut cursor = d.audience_cursor;
        loop {
            let batch = self.store().audience_changes_after(cursor, BATCH).await?;
            if batch.is_empty() {
                return Ok(());
            }
            let mut done = cursor;
            let mut received = Vec::new();
            let mut blocked = false;
            for c in batch {
                let wanted = d.purposes.contains(&c.purpose);
                // A join is sent only while lawful; a leave is always sent, so that the
                // destination stops using the person.
                let lawful = wanted && (c.change != "joined" || self.is_lawful(c.profile, &c.purpose).await?);
                if !lawful {
                    report.skipped_not_lawful += u64::from(wanted);
                    done = c.seq;
                    continue;
                }
                // The shop's user id always; the email and phone only where the destination's
                // purposes cover their categories (minimisation, as for event traits).
                let ids = match self.profile(c.profile).await {
                    Ok(p) => p.identities.iter().filter(|i| self.identifier_shared(&covered, i.kind)).map(|i| json!({"type": i.kind.as_str(), "value": i.value})).collect(),
                    Err(_) => Vec::new(),
                };
                let payload = json!({"type": "audience", "destination": d.name, "audience": c.audience, "purposes": [c.purpose], "change": c.change,
                    "reason": c.reason, "at": c.at, "profile": c.profile.to_string(), "identifiers": ids})
                .to_string();
                match self.send_item(d, Some(c.profile), "audience", format!("audience:{}", c.seq), payload, report).await? {
                    Some(delivered) => {
                        if delivered {
                            received.push(c.profile);
                        }
                        done = c.seq;
                    }
                    None => {
                        blocked = true;
                        break;
                    }
                }
            }
            self.store().destination_advance(d.id, None, Some(done), received).await?;
            cursor = done;
            if blocked {
                return Ok(());
            }
        }
    }

    async fn forward_rights_due(&self, report: &mut PassReport) -> Result<(), ServiceError> {
        let due = self.store().rights_due(crate::now_millis(), 100).await?;
        let mut by_name: HashMap<i64, DestinationView> = HashMap::new();
        for f in due {
            let d = match by_name.get(&f.destination_id) {
                Some(d) => d.clone(),
                None => {
                    let d = self.destination(&f.destination).await?;
                    by_name.insert(f.destination_id, d.clone());
                    d
                }
            };
            self.forward_one(&d, f, report).await?;
        }
        Ok(())
    }

    async fn forward_one(&self, d: &DestinationView, f: RightsForward, report: &mut PassReport) -> Result<(), ServiceError> {
        let inner: Value = f.payload.as_deref().and_then(|p| serde_json::from_str(p).ok()).unwrap_or(Value::Null);
        let body = json!({"type": "rights_request", "kind": f.kind, "destination": d.name, "receipt": f.id, "subject_ref": f.subject_ref, "request": inner}).to_string();
        self.take_token(d).await;
        let (outcome, status, error, next) = match self.post(d, &format!("rights:{}", f.id), body.as_bytes()).await {
            Outcome::Delivered(s) => ("delivered", Some(i64::from(s)), None, 0),
            Outcome::Refused(e, s) if f.attempts + 1 >= d.max_attempts => ("dead", Some(i64::from(s)), Some(e), 0),
            Outcome::Retry(e, s) if f.attempts + 1 >= d.max_attempts => ("dead", s.map(i64::from), Some(e), 0),
            // A refusal of a rights request is retried too: the receiver must act on it.
            Outcome::Refused(e, s) => ("retry", Some(i64::from(s)), Some(e), crate::now_millis() + backoff(d.retry_base_ms, f.attempts + 1)),
            Outcome::Retry(e, s) => ("retry", s.map(i64::from), Some(e), crate::now_millis() + backoff(d.retry_base_ms, f.attempts + 1)),
        };
        self.store().rights_attempt(f.id, outcome, status, error, next).await?;
        if outcome == "delivered" {
            report.rights_delivered += 1;
            self.audit("destinations", "dsr.forwarded", None, json!({"destination": d.name, "kind": f.kind, "request": f.dsr, "receipt": f.id})).await?;
        } else if outcome == "dead" {
            tracing::error!(destination = %d.name, kind = %f.kind, "a rights request could not be delivered; replay it once the destination is fixed");
        }
        Ok(())
    }

    /// Queues a rights request (other than erasure, which the store queues itself) to every
    /// destination that received the subject's data.
    pub(crate) async fn forward_rights(&self, subject: ProfileId, dsr: i64, kind: &str, subject_ref: String, mut detail: Value) -> Result<u64, ServiceError> {
        let ids: Vec<Value> = self
            .profile(subject)
            .await
            .map(|p| p.identities.iter().filter(|i| i.kind != IdKind::AnonymousId || p.identities.len() == 1).map(|i| json!({"type": i.kind.as_str(), "value": i.value})).collect())
            .unwrap_or_default();
        if let Value::Object(m) = &mut detail {
            m.insert("type".into(), json!(kind));
            m.insert("identifiers".into(), Value::Array(ids));
            m.insert("request".into(), json!(dsr));
        }
        Ok(self.store().rights_enqueue(RightsToForward { profile: subject, dsr: Some(dsr), kind: kind.into(), subject_ref, payload: detail }).await?)
    }

    /// The forwards of a rights request (its receipts per destination), or of a destination.
    pub async fn rights_forwards(&self, dsr: Option<i64>, destination: Option<String>, limit: usize) -> Result<Vec<RightsForward>, ServiceError> {
        Ok(self.store().rights_list(dsr, destination, limit).await?)
    }

    /// The delivery worker of `serve`: a pass every `destinations.poll_milliseconds`.
    pub fn spawn_destination_worker(&self) {
        let app = self.clone();
        let every = Duration::from_millis(self.config().destinations.poll_milliseconds);
        // One node delivers at a time (the lease, renewed every pass; another node takes over
        // once a holder that stopped lets it lapse).
        let lease = (every.as_millis() as i64 * 10).max(5_000);
        tokio::spawn(async move {
            loop {
                match app.store().lease("destinations", lease).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tokio::time::sleep(every).await;
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot take the destinations' lease");
                        tokio::time::sleep(every).await;
                        continue;
                    }
                }
                match app.deliver_destinations().await {
                    Ok(r) if r.delivered + r.dead_lettered + r.rights_delivered > 0 => {
                        tracing::debug!(delivered = r.delivered, dead = r.dead_lettered, rights = r.rights_delivered, "destinations pass")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "delivering to destinations failed"),
                }
                tokio::time::sleep(every).await;
            }
        });
    }

    // ------------------------------------------------------------------ audience exports

    /// An audience's members lawful for its purpose now, as CSV or JSONL: the profile id, the
    /// user id, the email and the phone (E.164), or with `hashed` the hex SHA-256 of the
    /// normalised email (trimmed, lower-case) and phone (E.164 with `+`), as advertising
    /// platforms' customer matching expects. Audited.
    pub async fn export_audience(&self, name: &str, jsonl: bool, hashed: bool, by: &Principal) -> Result<String, ServiceError> {
        let a = self.audience(name).await?;
        let mut members = Vec::new();
        let mut after = None;
        loop {
            let page = self.store().audience_members(a.name.clone(), after, 1000).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.profile.0);
            members.extend(page.into_iter().map(|m| m.profile));
        }
        let lawful = self.lawful_among(members.clone(), &a.purpose).await?;
        let sha = |s: &str| hex::encode(Sha256::digest(s.as_bytes()));
        let mut out = String::new();
        if !jsonl {
            out.push_str(if hashed { "profile,user_id,email_sha256,phone_sha256\n" } else { "profile,user_id,email,phone\n" });
        }
        let mut rows = 0u64;
        for p in members.into_iter().filter(|p| lawful.contains(p)) {
            let Ok(view) = self.profile(p).await else { continue };
            let first = |k: IdKind| view.identities.iter().find(|i| i.kind == k).map(|i| i.value.clone());
            let golden_email = view.traits.iter().find(|t| t.key == "email").and_then(|t| t.value.as_str()).and_then(|e| confidant_core::ids::Email::parse(e).ok()).map(|e| e.as_str().to_owned());
            let email = golden_email.or_else(|| first(IdKind::Email));
            let phone = first(IdKind::Phone);
            let user = first(IdKind::UserId);
            let (email, phone) = if hashed { (email.map(|e| sha(&e)), phone.map(|p| sha(&p))) } else { (email, phone) };
            if jsonl {
                let key = |k: &str| if hashed { format!("{k}_sha256") } else { k.to_owned() };
                let mut o = serde_json::Map::new();
                o.insert("profile".into(), json!(p.to_string()));
                o.insert("user_id".into(), json!(user));
                o.insert(key("email"), json!(email));
                o.insert(key("phone"), json!(phone));
                out.push_str(&Value::Object(o).to_string());
                out.push('\n');
            } else {
                let cell = |v: Option<String>| {
                    let v = v.unwrap_or_default();
                    if v.contains([',', '"', '\n', '\r']) {
                        format!("\"{}\"", v.replace('"', "\"\""))
                    } else {
                        v
                    }
                };
                out.push_str(&format!("{},{},{},{}\n", p, cell(user), cell(email), cell(phone)));
            }
            rows += 1;
        }
        self.audit(&by.actor(), "audience.exported", None, json!({"audience": name, "rows": rows, "format": if jsonl { "jsonl" } else { "csv" }, "hashed": hashed})).await?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_recognised() {
        for a in ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "::1", "fd00::1", "fe80::1", "::ffff:10.0.0.1"] {
            assert!(is_private(a.parse().unwrap()), "{a}");
        }
        for a in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(!is_private(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn signatures_are_hmac_sha256_over_time_and_body() {
        let s = signature("secret", 1_700_000_000, b"{}");
        let mut mac = HmacSha256::new_from_slice(b"secret").unwrap();
        mac.update(b"1700000000.{}");
        assert_eq!(s, format!("t=1700000000,v1={}", hex::encode(mac.finalize().into_bytes())));
    }

    #[test]
    fn the_rate_limit_allows_a_burst_then_the_rate() {
        let mut b = Bucket::full(5.0, 0);
        let sent = (0..20).filter(|_| b.take(5.0, 0).is_ok()).count();
        assert_eq!(sent, 5, "a burst of one second's worth");
        assert_eq!(b.take(5.0, 0), Err(200));
        assert_eq!(b.take(5.0, 200), Ok(()));
        // Over ten seconds at most rate × 10 (+ the burst) go out.
        let mut b = Bucket::full(2.0, 0);
        let sent = (0..10_000).filter(|ms| b.take(2.0, *ms).is_ok()).count();
        assert!((20..=22).contains(&sent), "{sent}");
        // Below one per second, one at a time.
        let mut b = Bucket::full(0.5, 0);
        assert_eq!(b.take(0.5, 0), Ok(()));
        assert_eq!(b.take(0.5, 0), Err(2000));
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        for n in 1..=12 {
            let exp = (1000i64 << (n - 1)).min(MAX_BACKOFF_MS);
            let b = backoff(1000, n);
            assert!(b >= exp / 2 && b <= exp, "attempt {n}: {b}");
        }
        assert!(backoff(1000, 40) <= MAX_BACKOFF_MS);
    }
}
