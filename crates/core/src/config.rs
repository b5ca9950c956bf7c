//! The typed configuration. One `confidant.toml`, every key optional with a documented
//! default (see `confidant.example.toml`), overridden by `CONFIDANT_*` environment variables
//! (`CONFIDANT_DATA_DIR`, `CONFIDANT_SERVER__LISTEN`: a double underscore descends a table).
//!
//! Decoding never stops at the first problem: every problem is collected with the path of
//! its key, so an operator fixes them all in one go. Reading files is the caller's business.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use regex::Regex;
use serde::de::DeserializeOwned;

use crate::identity::{IdLimits, IdentityRules, DEFAULT_BANNED_VALUES};
use crate::message::Limits;

/// What an API key may do. Least privilege: each key has exactly one role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sends events only (the role of a source's write key).
    Write,
    /// Reads pseudonymised data.
    Analyst,
    Marketer,
    Admin,
    /// The data protection officer.
    Dpo,
    /// The data subject, acting on their own data through the privacy centre: never the role
    /// of a key or an account.
    #[serde(skip)]
    Subject,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Write => "write",
            Role::Analyst => "analyst",
            Role::Marketer => "marketer",
            Role::Admin => "admin",
            Role::Dpo => "dpo",
            Role::Subject => "subject",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Where the database and generated credentials live. Default `./data`.
    pub data_dir: PathBuf,
    /// `postgres://user[:password]@host[:port]/database`: the data lives in PostgreSQL (several
    /// nodes may share it) instead of SQLite in `data_dir`. Default: none (SQLite). Also
    /// `CONFIDANT_DATABASE_URL`.
    pub database_url: Option<String>,
    pub database: DatabaseConfig,
    pub server: ServerConfig,
    pub sources: Vec<SourceConfig>,
    pub api_keys: Vec<ApiKeyConfig>,
    pub ingest: IngestConfig,
    pub identity: IdentityConfig,
    pub log: LogConfig,
    /// Purposes, data categories and the tracking plan. Default: a typical shop
    /// ([`crate::privacy::DEFAULT_TOML`]); a `[privacy]` table is merged over it.
    pub privacy: crate::privacy::PrivacyConfig,
    pub security: SecurityConfig,
    pub jobs: JobsConfig,
    pub recommendations: RecommendationsConfig,
    pub smtp: SmtpConfig,
    pub campaigns: CampaignsConfig,
    pub destinations: DestinationsConfig,
    pub privacy_centre: PrivacyCentreConfig,
    pub console: ConsoleConfig,
    pub consent_banner: ConsentBannerConfig,
}

/// The Google Consent Mode v2 signals the consent banner sets.
pub const CONSENT_MODE_SIGNALS: &[&str] = &["ad_storage", "ad_user_data", "ad_personalization", "analytics_storage", "personalization_storage"];

/// `[consent_banner]`: the banner script served at `/consent/banner.js`.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsentBannerConfig {
    /// Google Consent Mode v2 signal → the purpose whose lawfulness grants it. Default:
    /// `analytics_storage = "analytics"`, `ad_storage`, `ad_user_data` and `ad_personalization`
    /// = `"advertising.targeted"`, `personalization_storage = "personalisation.recommendations"`.
    /// A table given replaces the default; a signal left out stays denied.
    pub google_consent_mode: std::collections::BTreeMap<String, String>,
}

impl Default for ConsentBannerConfig {
    fn default() -> Self {
        let pairs = [
            ("analytics_storage", "analytics"),
            ("ad_storage", "advertising.targeted"),
            ("ad_user_data", "advertising.targeted"),
            ("ad_personalization", "advertising.targeted"),
            ("personalization_storage", "personalisation.recommendations"),
        ];
        ConsentBannerConfig { google_consent_mode: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() }
    }
}

/// `[console]`: the shop team's pages at `/console`.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsoleConfig {
    /// Minutes a signed-in session lasts. Default 480 (a working day).
    pub session_minutes: u32,
    /// Wrong passwords in a row before an account is locked. Default 5.
    pub max_failed_logins: u32,
    /// Minutes a locked account stays locked. Default 15.
    pub lock_minutes: u32,
}

/// `[privacy_centre]`: the customers' own pages at `/privacy`, signed in with a one-time code
/// sent by email through `[smtp]`.
#[derive(Clone, Debug, PartialEq)]
pub struct PrivacyCentreConfig {
    /// Minutes a sign-in code stays valid. Default 10.
    pub code_minutes: u32,
    /// Wrong tries before a code is burnt. Default 5.
    pub code_attempts: u32,
    /// Codes one person may be sent per window. Default 3.
    pub codes_per_window: u32,
    /// Code requests one IP address may make per window, known address or not. Default 10.
    pub requests_per_ip: u32,
    /// The window of both limits, in minutes. Default 15.
    pub window_minutes: u32,
    /// Minutes a signed-in session lasts. Default 30.
    pub session_minutes: u32,
}

/// How the SMTP connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain SMTP (a relay on the same machine or network only).
    None,
    /// STARTTLS, required: the connection fails rather than fall back to plain text.
    Starttls,
    /// Implicit TLS (SMTPS, port 465).
    Tls,
}

/// `[smtp]`: the server campaigns, triggered messages and sign-in codes are handed to.
#[derive(Clone, PartialEq)]
pub struct SmtpConfig {
    /// The server's host name. No default: without it, sending is refused with a clear error.
    pub host: Option<String>,
    /// Default 25 without TLS, 587 with STARTTLS, 465 with implicit TLS.
    pub port: u16,
    /// The sender, `address` or `Name <address>`. Required when `host` is set.
    pub from: String,
    /// `none`, `starttls` (default) or `tls`.
    pub tls: SmtpTls,
    /// Credentials for SMTP AUTH, both or neither. Default none.
    pub username: Option<String>,
    pub password: Option<String>,
    /// Seconds before a connection or command times out. Default 30.
    pub timeout_seconds: u64,
    /// Connections used in parallel for a campaign. Default 4.
    pub connections: usize,
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username.as_ref().map(|_| "(set)"))
            .field("password", &self.password.as_ref().map(|_| "(redacted)"))
            .finish_non_exhaustive()
    }
}

/// `[campaigns]`: rules every email campaign and triggered message follows.
#[derive(Clone, Debug, PartialEq)]
pub struct CampaignsConfig {
    /// At most this many marketing emails per person per window. Default 3.
    pub frequency_cap: u32,
    /// The window of the cap, in days. Default 7.
    pub frequency_window_days: u32,
    /// The language of a person whose `preferred_language` is neither `fr` nor `en`. Default `fr`.
    pub default_language: String,
}

/// `[destinations]`: webhooks that receive events, audience changes and rights requests.
#[derive(Clone, Debug, PartialEq)]
pub struct DestinationsConfig {
    /// Whether a webhook may point at a loopback, private or link-local address. Default
    /// false: a destination URL is a way into the shop's own network otherwise.
    pub allow_private_addresses: bool,
    /// Milliseconds between two passes of the delivery worker when it is idle. Default 500.
    pub poll_milliseconds: u64,
}

/// `[recommendations]`: the models behind `GET /api/recommendations`.
#[derive(Clone, Debug, PartialEq)]
pub struct RecommendationsConfig {
    /// Latent factors of implicit ALS. Default 64.
    pub factors: usize,
    /// ALS iterations. Default 15.
    pub iterations: usize,
    /// ALS regularisation. Default 0.05.
    pub regularization: f64,
    /// Neighbours kept per item for "similar items". Default 50.
    pub neighbours: usize,
    /// "Frequently bought together" shows a pair only when at least this many distinct
    /// customers bought both in one order, so that no single customer's basket can be read off
    /// a product page. Default 3.
    pub min_customers_together: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SecurityConfig {
    /// The master key (32 bytes, hex) that wraps every subject's key, as a file. Default
    /// `<data_dir>/master.key`, created (mode 0600) on first start. In production keep it
    /// outside the data directory, so that a copy of the data alone cannot be read.
    /// `CONFIDANT_MASTER_KEY` (64 hex digits) takes precedence over the file.
    pub master_key_file: Option<PathBuf>,
}

/// `[database]`: how PostgreSQL is used (SQLite ignores it).
#[derive(Clone, Debug, PartialEq)]
pub struct DatabaseConfig {
    /// Connections each node keeps to PostgreSQL. Default 16.
    pub pool_size: u32,
    /// Attempts to reach PostgreSQL at start-up, 0.1 s apart doubling to 5 s, before giving
    /// up. Default 10 (about 25 s).
    pub connect_attempts: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct JobsConfig {
    /// Hours between two retention runs inside `serve`. Default 24; 0 turns the job off.
    pub retention_interval_hours: u64,
    /// Minutes between two runs of probabilistic profile matching inside `serve`, so that
    /// profiles built from events attach to the people they describe. Default 60; 0 turns it off.
    pub match_interval_minutes: u64,
    /// Minutes between two runs of customer analytics (orders, RFM, lifetime value, churn)
    /// inside `serve`. Default 60; 0 turns it off.
    pub analytics_interval_minutes: u64,
    /// Minutes between two trainings of the recommendation models inside `serve` (an erasure or
    /// an objection also retrains at once). Default 60; 0 turns the periodic training off.
    pub recommendations_interval_minutes: u64,
    /// Seconds between two refreshes of the audiences inside `serve`: the subjects with new
    /// events since the last refresh are evaluated again. Default 10; 0 turns it off.
    pub audiences_refresh_seconds: u64,
    /// Minutes between two full evaluations of every audience (windows such as "within 30
    /// days" move with time even without new events). Default 60; 0 turns it off.
    pub audiences_full_minutes: u64,
    /// Seconds between two looks at scheduled campaigns and triggered messages. Default 30;
    /// 0 turns both off.
    pub campaigns_seconds: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    /// Default `127.0.0.1:8080`. Port 0 picks a free port (tests).
    pub listen: SocketAddr,
    /// The URL customers and SDKs reach this server at, for links. Default: from `listen`.
    pub public_url: Option<String>,
    /// Reverse proxies (addresses or CIDR ranges) whose `X-Forwarded-For` is believed: the
    /// client is then the rightmost address of that header not in this list. Default none:
    /// the client is the socket's peer.
    pub trusted_proxies: Vec<IpRange>,
}

/// An address range, `10.0.0.0/8` or a single address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpRange {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl IpRange {
    pub fn parse(s: &str) -> Option<IpRange> {
        let (a, p) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: std::net::IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(IpRange { addr, prefix })
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let bits = |ip: std::net::IpAddr| -> (u128, u32) {
            match ip {
                std::net::IpAddr::V4(v) => (u128::from(u32::from(v)), 32),
                std::net::IpAddr::V6(v) => match v.to_ipv4_mapped() {
                    Some(v4) => (u128::from(u32::from(v4)), 32),
                    None => (u128::from(v), 128),
                },
            }
        };
        let ((a, wa), (b, wb)) = (bits(self.addr), bits(ip));
        if wa != wb {
            return false;
        }
        let shift = wa - u32::from(self.prefix);
        if shift >= 128 {
            return true;
        }
        (a >> shift) == (b >> shift)
    }
}

/// The client's address: the peer, or, behind a trusted proxy, the rightmost address of
/// `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_ip(peer: std::net::IpAddr, forwarded_for: Option<&str>, trusted: &[IpRange]) -> std::net::IpAddr {
    let is_trusted = |ip: std::net::IpAddr| trusted.iter().any(|r| r.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    for hop in forwarded_for.unwrap_or("").rsplit(',') {
        let Ok(ip) = hop.trim().parse::<std::net::IpAddr>() else { break };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    client
}

#[derive(Clone, PartialEq)]
pub struct SourceConfig {
    pub name: String,
    pub write_key: String,
    /// For imports from this source: column name → `user_id`, `email`, `phone`,
    /// `anonymous_id`, `ignore` or `trait:NAME`. Unnamed columns take a default from their name.
    pub columns: std::collections::BTreeMap<String, String>,
}

#[derive(Clone, PartialEq)]
pub struct ApiKeyConfig {
    pub name: String,
    pub key: String,
    pub role: Role,
}

/// How a key given as a digest is kept in [`SourceConfig::write_key`] and [`ApiKeyConfig::key`].
pub const DIGEST_PREFIX: &str = "sha256:";

/// The SHA-256 by which a key is recognised: of the key itself, or the digest configured.
pub fn key_digest(key: &str) -> [u8; 32] {
    use sha2::Digest;
    if let Some(hex_digest) = key.strip_prefix(DIGEST_PREFIX) {
        if let Ok(Ok(d)) = hex::decode(hex_digest).map(<[u8; 32]>::try_from) {
            return d;
        }
    }
    sha2::Sha256::digest(key.as_bytes()).into()
}

// Secrets never reach logs, even through `{:?}`.
impl fmt::Debug for SourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceConfig").field("name", &self.name).field("write_key", &"<secret>").finish()
    }
}
impl fmt::Debug for ApiKeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyConfig").field("name", &self.name).field("key", &"<secret>").field("role", &self.role).finish()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct IngestConfig {
    /// Largest single message, in bytes. Default 32 KiB (Segment's limit).
    pub max_message_bytes: usize,
    /// Largest request body after decompression, in bytes. Default 500 KB (Segment's limit).
    pub max_batch_bytes: usize,
    /// Most messages in one batch. Default 2,500.
    pub max_batch_messages: usize,
    /// Most keys in `properties`, `traits` or `context.traits`. Default 300.
    pub max_properties: usize,
    /// Deepest JSON nesting of a message. Default 64.
    pub max_depth: usize,
    /// Messages accepted but not yet committed, beyond which clients get 429. Default 50,000.
    pub queue_capacity: usize,
    /// The `Retry-After` sent with 429, in seconds. Default 1.
    pub retry_after_seconds: u64,
    /// Most messages committed in one transaction by the writer. Default 10,000.
    pub max_commit_messages: usize,
    /// Region for national phone numbers (ISO 3166 alpha-2). Default `FR`.
    pub default_region: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct IdentityConfig {
    /// Values that never identify anyone (case-insensitive). Default: [`DEFAULT_BANNED_VALUES`].
    pub banned_values: Vec<String>,
    /// Regular expressions of further banned values. Default none.
    pub banned_patterns: Vec<String>,
    /// Per-profile limits. Defaults: 1 user id, 5 emails, 5 phones, 1,000 anonymous ids.
    pub max_user_ids: usize,
    pub max_emails: usize,
    pub max_phones: usize,
    pub max_anonymous_ids: usize,
    /// How golden records choose among sources' values: `most_recent` (default),
    /// `most_trusted`, `most_complete`; per trait in `trait_survivorship`; sources ranked in
    /// `source_trust`, most trusted first.
    pub survivorship: crate::identity::SurvivorshipRules,
    /// Probabilistic matching of profiles: pairs at or above this probability are merged.
    /// Default 0.99.
    pub match_threshold: f64,
    /// Pairs at or above this (and below `match_threshold`) go to the review queue. Default 0.8.
    pub review_threshold: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    /// A tracing filter (`info`, `confidant=debug,info`). Default `info`.
    pub level: String,
    /// `text` or `json`. Default `text`.
    pub format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            database_url: None,
            database: DatabaseConfig { pool_size: 16, connect_attempts: 10 },
            server: ServerConfig { listen: SocketAddr::from(([127, 0, 0, 1], 8080)), public_url: None, trusted_proxies: Vec::new() },
            sources: Vec::new(),
            api_keys: Vec::new(),
            ingest: IngestConfig {
                max_message_bytes: 32 * 1024,
                max_batch_bytes: 500 * 1024,
                max_batch_messages: 2_500,
                max_properties: 300,
                max_depth: 64,
                queue_capacity: 50_000,
                retry_after_seconds: 1,
                max_commit_messages: 10_000,
                default_region: "FR".into(),
            },
            identity: IdentityConfig {
                banned_values: DEFAULT_BANNED_VALUES.iter().map(|s| s.to_string()).collect(),
                banned_patterns: Vec::new(),
                max_user_ids: IdLimits::default().user_ids,
                max_emails: IdLimits::default().emails,
                max_phones: IdLimits::default().phones,
                max_anonymous_ids: IdLimits::default().anonymous_ids,
                survivorship: crate::identity::SurvivorshipRules::default(),
                match_threshold: 0.99,
                review_threshold: 0.8,
            },
            log: LogConfig { level: "info".into(), format: LogFormat::Text },
            privacy: crate::privacy::decode(None).expect("the default privacy configuration is valid"),
            security: SecurityConfig { master_key_file: None },
            jobs: JobsConfig {
                retention_interval_hours: 24,
                match_interval_minutes: 60,
                analytics_interval_minutes: 60,
                recommendations_interval_minutes: 60,
                audiences_refresh_seconds: 10,
                audiences_full_minutes: 60,
                campaigns_seconds: 30,
            },
            recommendations: RecommendationsConfig { factors: 64, iterations: 15, regularization: 0.05, neighbours: 50, min_customers_together: 3 },
            smtp: SmtpConfig {
                host: None,
                port: 587,
                from: String::new(),
                tls: SmtpTls::Starttls,
                username: None,
                password: None,
                timeout_seconds: 30,
                connections: 4,
            },
            campaigns: CampaignsConfig { frequency_cap: 3, frequency_window_days: 7, default_language: "fr".into() },
            destinations: DestinationsConfig { allow_private_addresses: false, poll_milliseconds: 500 },
            consent_banner: ConsentBannerConfig::default(),
            console: ConsoleConfig { session_minutes: 480, max_failed_logins: 5, lock_minutes: 15 },
            privacy_centre: PrivacyCentreConfig { code_minutes: 10, code_attempts: 5, codes_per_window: 3, requests_per_ip: 10, window_minutes: 15, session_minutes: 30 },
        }
    }
}

impl Config {
    pub fn message_limits(&self) -> Limits {
        Limits {
            max_message_bytes: self.ingest.max_message_bytes,
            max_properties: self.ingest.max_properties,
            max_depth: self.ingest.max_depth,
        }
    }

    /// The identity rules. Patterns were checked when the configuration was decoded.
    pub fn identity_rules(&self) -> IdentityRules {
        let patterns = self.identity.banned_patterns.iter().filter_map(|p| Regex::new(p).ok()).collect();
        IdentityRules::new(
            self.identity.banned_values.iter().cloned(),
            patterns,
            IdLimits {
                user_ids: self.identity.max_user_ids,
                emails: self.identity.max_emails,
                phones: self.identity.max_phones,
                anonymous_ids: self.identity.max_anonymous_ids,
            },
        )
    }
}

/// One thing wrong with the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The key's path: `server.listen`, `sources[1].write_key`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found, all at once.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "the configuration has {} problem(s):", self.problems.len())?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

/// A decoded configuration, and the environment variables that named no known key.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub ignored_env: Vec<String>,
}

/// Environment variables with this prefix override the file.
pub const ENV_PREFIX: &str = "CONFIDANT_";
/// Variables with the prefix that are not configuration keys.
const ENV_NOT_KEYS: &[&str] = &["CONFIDANT_CONFIG", "CONFIDANT_TEST_DATABASE_URL", "CONFIDANT_LOG", "CONFIDANT_MASTER_KEY", "CONFIDANT_LINKAGE_DEBUG"];

/// Decodes a configuration from TOML text (empty for none) and environment variables.
pub fn load(toml_text: &str, env: impl IntoIterator<Item = (String, String)>) -> Result<Loaded, ConfigError> {
    let mut table: toml::Table = match toml_text.parse() {
        Ok(t) => t,
        Err(e) => {
            return Err(ConfigError { problems: vec![Problem { path: "(file)".into(), message: format!("not valid TOML: {}", e.message()) }] })
        }
    };
    let mut env_paths = HashSet::new();
    let mut problems = Vec::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else { continue };
        if ENV_NOT_KEYS.contains(&name.as_str()) || rest.is_empty() {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|s| s.to_lowercase()).collect();
        if let Err(seg) = insert_path(&mut table, &path, toml::Value::String(value)) {
            problems.push(Problem { path: name.clone(), message: format!("{seg} is not a table") });
            continue;
        }
        env_paths.insert(path.join("."));
    }
    let mut d = Decoder { problems, env_paths, ignored_env: Vec::new() };
    let config = d.config(table);
    if d.problems.is_empty() {
        Ok(Loaded { config, ignored_env: d.ignored_env })
    } else {
        Err(ConfigError { problems: d.problems })
    }
}

fn insert_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    match path {
        [] => Ok(()),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [first, rest @ ..] => match table.entry(first.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new())) {
            toml::Value::Table(inner) => insert_path(inner, rest, value),
            _ => Err(first.clone()),
        },
    }
}

struct Decoder {
    problems: Vec<Problem>,
    env_paths: HashSet<String>,
    ignored_env: Vec<String>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl Decoder {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem { path: path.into(), message: message.into() });
    }

    /// Takes `key` out of `table` as a `T`. A string (as environment variables give) is also
    /// read as a TOML literal, so `CONFIDANT_INGEST__MAX_DEPTH=32` is a number.
    fn take<T: DeserializeOwned>(&mut self, table: &mut toml::Table, path: &str, key: &str) -> Option<T> {
        let v = table.remove(key)?;
        let full = join(path, key);
        match v.clone().try_into::<T>() {
            Ok(t) => Some(t),
            Err(first) => {
                if let toml::Value::String(s) = &v {
                    if let Ok(t) = format!("v = {s}").parse::<toml::Table>().map_err(|_| ()).and_then(|mut t| {
                        t.remove("v").ok_or(()).and_then(|v| v.try_into::<T>().map_err(|_| ()))
                    }) {
                        return Some(t);
                    }
                }
                self.problem(full, first.message().trim().to_owned());
                None
            }
        }
    }

    fn table(&mut self, table: &mut toml::Table, path: &str, key: &str) -> toml::Table {
        match table.remove(key) {
            None => toml::Table::new(),
            Some(toml::Value::Table(t)) => t,
            Some(_) => {
                self.problem(join(path, key), "must be a table");
                toml::Table::new()
            }
        }
    }

    fn array_of_tables(&mut self, table: &mut toml::Table, key: &str) -> Vec<toml::Table> {
        match table.remove(key) {
            None => Vec::new(),
            Some(toml::Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .filter_map(|(i, v)| match v {
                    toml::Value::Table(t) => Some(t),
                    _ => {
                        self.problem(format!("{key}[{i}]"), "must be a table");
                        None
                    }
                })
                .collect(),
            Some(_) => {
                self.problem(key, "must be an array of tables ([[{key}]])");
                Vec::new()
            }
        }
    }

    fn finish(&mut self, table: toml::Table, path: &str) {
        for key in table.keys() {
            let full = join(path, key);
            if self.env_paths.contains(&full) {
                self.ignored_env.push(format!("{ENV_PREFIX}{}", full.replace('.', "__").to_uppercase()));
            } else {
                self.problem(full, "unknown key");
            }
        }
    }

    fn required_string(&mut self, t: &mut toml::Table, path: &str, key: &str) -> String {
        match self.take::<String>(t, path, key) {
            Some(s) if !s.trim().is_empty() => s,
            Some(_) => {
                self.problem(join(path, key), "must not be empty");
                String::new()
            }
            None => {
                if !self.problems.iter().any(|p| p.path == join(path, key)) {
                    self.problem(join(path, key), "is required");
                }
                String::new()
            }
        }
    }

    /// A key given in clear (`key`) or as the hex SHA-256 of the key (`key_sha256`), so that
    /// configuration files need not hold secrets. A digest is kept as `sha256:<hex>`.
    fn key_or_digest(&mut self, t: &mut toml::Table, path: &str, key: &str) -> String {
        let digest_key = format!("{key}_sha256");
        let digest = self.take::<String>(t, path, &digest_key);
        match (t.contains_key(key), digest) {
            (false, Some(d)) => {
                let d = d.trim().to_ascii_lowercase();
                if d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()) {
                    format!("{DIGEST_PREFIX}{d}")
                } else {
                    self.problem(join(path, &digest_key), "must be 64 hexadecimal digits (the SHA-256 of the key)");
                    String::new()
                }
            }
            (true, Some(_)) => {
                self.problem(join(path, &digest_key), format!("give {key} or {digest_key}, not both"));
                String::new()
            }
            (_, None) => {
                let k = self.required_string(t, path, key);
                if k.starts_with(DIGEST_PREFIX) {
                    self.problem(join(path, key), format!("a key may not start with {DIGEST_PREFIX}; give a digest as {digest_key}"));
                }
                k
            }
        }
    }

    fn positive(&mut self, t: &mut toml::Table, path: &str, key: &str, default: usize) -> usize {
        match self.take::<i64>(t, path, key) {
            None => default,
            Some(v) if v >= 1 => v as usize,
            Some(_) => {
                self.problem(join(path, key), "must be at least 1");
                default
            }
        }
    }

    /// A count from 1 to `max`.
    fn bounded(&mut self, t: &mut toml::Table, path: &str, key: &str, default: u32, max: u32) -> u32 {
        match self.take::<i64>(t, path, key) {
            None => default,
            Some(v) if (1..=i64::from(max)).contains(&v) => v as u32,
            Some(_) => {
                self.problem(join(path, key), &format!("must be from 1 to {max}"));
                default
            }
        }
    }

    fn config(&mut self, mut root: toml::Table) -> Config {
        let mut c = Config::default();
        if let Some(dir) = self.take::<String>(&mut root, "", "data_dir") {
            if dir.trim().is_empty() {
                self.problem("data_dir", "must not be empty");
            } else {
                c.data_dir = PathBuf::from(dir);
            }
        }

        if let Some(url) = self.take::<String>(&mut root, "", "database_url") {
            let url = url.trim();
            if url.is_empty() {
                // An empty value (say, an unset variable in a template) means SQLite.
            } else if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                self.problem("database_url", "must be a PostgreSQL URL (postgres://user@host:port/database); leave it out for SQLite");
            } else {
                c.database_url = Some(url.to_owned());
            }
        }
        let mut database = self.table(&mut root, "", "database");
        c.database.pool_size = self.bounded(&mut database, "database", "pool_size", 16, 1_000);
        c.database.connect_attempts = self.bounded(&mut database, "database", "connect_attempts", 10, 1_000);
        self.finish(database, "database");

        let mut server = self.table(&mut root, "", "server");
        if let Some(listen) = self.take::<String>(&mut server, "server", "listen") {
            match listen.parse::<SocketAddr>() {
                Ok(a) => c.server.listen = a,
                Err(_) => self.problem("server.listen", "must be an address and port such as 127.0.0.1:8080"),
            }
        }
        if let Some(url) = self.take::<String>(&mut server, "server", "public_url") {
            if url.starts_with("http://") || url.starts_with("https://") {
                c.server.public_url = Some(url.trim_end_matches('/').to_owned());
            } else {
                self.problem("server.public_url", "must start with http:// or https://");
            }
        }
        if let Some(list) = self.take::<Vec<String>>(&mut server, "server", "trusted_proxies") {
            for (i, s) in list.iter().enumerate() {
                match IpRange::parse(s) {
                    Some(r) => c.server.trusted_proxies.push(r),
                    None => self.problem(format!("server.trusted_proxies[{i}]"), "must be an address or a CIDR range such as 10.0.0.0/8"),
                }
            }
        }
        self.finish(server, "server");

        for (i, mut t) in self.array_of_tables(&mut root, "sources").into_iter().enumerate() {
            let path = format!("sources[{i}]");
            let name = self.required_string(&mut t, &path, "name");
            let write_key = self.key_or_digest(&mut t, &path, "write_key");
            let columns = self.take::<std::collections::BTreeMap<String, String>>(&mut t, &path, "columns").unwrap_or_default();
            self.finish(t, &path);
            c.sources.push(SourceConfig { name, write_key, columns });
        }
        for (i, mut t) in self.array_of_tables(&mut root, "api_keys").into_iter().enumerate() {
            let path = format!("api_keys[{i}]");
            let name = self.required_string(&mut t, &path, "name");
            let key = self.key_or_digest(&mut t, &path, "key");
            let role = match self.take::<Role>(&mut t, &path, "role") {
                Some(r) => r,
                None => {
                    if !self.problems.iter().any(|p| p.path == join(&path, "role")) {
                        self.problem(join(&path, "role"), "is required (write, analyst, marketer, admin or dpo)");
                    }
                    Role::Analyst
                }
            };
            self.finish(t, &path);
            c.api_keys.push(ApiKeyConfig { name, key, role });
        }

        let mut ingest = self.table(&mut root, "", "ingest");
        let p = "ingest";
        let i = &mut c.ingest;
        i.max_message_bytes = self.positive(&mut ingest, p, "max_message_bytes", i.max_message_bytes);
        i.max_batch_bytes = self.positive(&mut ingest, p, "max_batch_bytes", i.max_batch_bytes);
        i.max_batch_messages = self.positive(&mut ingest, p, "max_batch_messages", i.max_batch_messages);
        i.max_properties = self.positive(&mut ingest, p, "max_properties", i.max_properties);
        i.max_depth = self.positive(&mut ingest, p, "max_depth", i.max_depth);
        i.queue_capacity = self.positive(&mut ingest, p, "queue_capacity", i.queue_capacity);
        i.retry_after_seconds = self.positive(&mut ingest, p, "retry_after_seconds", i.retry_after_seconds as usize) as u64;
        i.max_commit_messages = self.positive(&mut ingest, p, "max_commit_messages", i.max_commit_messages);
        if let Some(r) = self.take::<String>(&mut ingest, p, "default_region") {
            if r.len() == 2 && r.parse::<phonenumber::country::Id>().is_ok() {
                i.default_region = r.to_uppercase();
            } else {
                self.problem("ingest.default_region", "must be an ISO 3166 alpha-2 country code such as FR");
            }
        }
        self.finish(ingest, p);
        if c.ingest.max_message_bytes > c.ingest.max_batch_bytes {
            self.problem("ingest.max_message_bytes", "must not exceed ingest.max_batch_bytes");
        }
        if c.ingest.queue_capacity < c.ingest.max_batch_messages {
            self.problem("ingest.queue_capacity", "must be at least ingest.max_batch_messages, or a full batch could never be accepted");
        }
        if c.ingest.max_depth > 128 {
            self.problem("ingest.max_depth", "must be at most 128");
        }

        let mut identity = self.table(&mut root, "", "identity");
        let p = "identity";
        if let Some(v) = self.take::<Vec<String>>(&mut identity, p, "banned_values") {
            c.identity.banned_values = v;
        }
        if let Some(v) = self.take::<Vec<String>>(&mut identity, p, "banned_patterns") {
            for (i, pat) in v.iter().enumerate() {
                if let Err(e) = Regex::new(pat) {
                    let first = e.to_string().lines().last().unwrap_or("invalid").trim().to_owned();
                    self.problem(format!("identity.banned_patterns[{i}]"), format!("not a valid regular expression: {first}"));
                }
            }
            c.identity.banned_patterns = v;
        }
        let id = &mut c.identity;
        id.max_user_ids = self.positive(&mut identity, p, "max_user_ids", id.max_user_ids);
        id.max_emails = self.positive(&mut identity, p, "max_emails", id.max_emails);
        id.max_phones = self.positive(&mut identity, p, "max_phones", id.max_phones);
        id.max_anonymous_ids = self.positive(&mut identity, p, "max_anonymous_ids", id.max_anonymous_ids);
        if let Some(rule) = self.take::<crate::identity::Survivorship>(&mut identity, p, "survivorship") {
            c.identity.survivorship.default = rule;
        }
        if let Some(per) = self.take::<std::collections::BTreeMap<String, crate::identity::Survivorship>>(&mut identity, p, "trait_survivorship") {
            c.identity.survivorship.per_trait = per;
        }
        if let Some(trust) = self.take::<Vec<String>>(&mut identity, p, "source_trust") {
            c.identity.survivorship.trust = trust;
        }
        for (key, slot) in [("match_threshold", 0), ("review_threshold", 1)] {
            if let Some(v) = self.take::<f64>(&mut identity, p, key) {
                if (0.0..=1.0).contains(&v) {
                    if slot == 0 { c.identity.match_threshold = v } else { c.identity.review_threshold = v }
                } else {
                    self.problem(join(p, key), "must be a probability between 0 and 1");
                }
            }
        }
        if c.identity.review_threshold > c.identity.match_threshold {
            self.problem("identity.review_threshold", "must not exceed identity.match_threshold");
        }
        self.finish(identity, p);

        let mut log = self.table(&mut root, "", "log");
        if let Some(level) = self.take::<String>(&mut log, "log", "level") {
            c.log.level = level;
        }
        if let Some(f) = self.take::<LogFormat>(&mut log, "log", "format") {
            c.log.format = f;
        }
        self.finish(log, "log");

        let mut security = self.table(&mut root, "", "security");
        if let Some(f) = self.take::<String>(&mut security, "security", "master_key_file") {
            c.security.master_key_file = Some(PathBuf::from(f));
        }
        self.finish(security, "security");
        let mut jobs = self.table(&mut root, "", "jobs");
        if let Some(h) = self.take::<u64>(&mut jobs, "jobs", "retention_interval_hours") {
            c.jobs.retention_interval_hours = h;
        }
        if let Some(m) = self.take::<u64>(&mut jobs, "jobs", "match_interval_minutes") {
            c.jobs.match_interval_minutes = m;
        }
        if let Some(m) = self.take::<u64>(&mut jobs, "jobs", "analytics_interval_minutes") {
            c.jobs.analytics_interval_minutes = m;
        }
        if let Some(m) = self.take::<u64>(&mut jobs, "jobs", "recommendations_interval_minutes") {
            c.jobs.recommendations_interval_minutes = m;
        }
        if let Some(m) = self.take::<u64>(&mut jobs, "jobs", "audiences_refresh_seconds") {
            c.jobs.audiences_refresh_seconds = m;
        }
        if let Some(m) = self.take::<u64>(&mut jobs, "jobs", "audiences_full_minutes") {
            c.jobs.audiences_full_minutes = m;
        }
        if let Some(m) = self.take::<u64>(&mut jobs, "jobs", "campaigns_seconds") {
            c.jobs.campaigns_seconds = m;
        }
        self.finish(jobs, "jobs");

        let mut recs = self.table(&mut root, "", "recommendations");
        let r = &mut c.recommendations;
        if let Some(v) = self.take::<u64>(&mut recs, "recommendations", "factors") {
            match v {
                1..=512 => r.factors = v as usize,
                _ => self.problem("recommendations.factors", "must be from 1 to 512"),
            }
        }
        if let Some(v) = self.take::<u64>(&mut recs, "recommendations", "iterations") {
            match v {
                1..=100 => r.iterations = v as usize,
                _ => self.problem("recommendations.iterations", "must be from 1 to 100"),
            }
        }
        if let Some(v) = self.take::<f64>(&mut recs, "recommendations", "regularization") {
            if v.is_finite() && v >= 0.0 {
                r.regularization = v
            } else {
                self.problem("recommendations.regularization", "must be a number ≥ 0")
            }
        }
        if let Some(v) = self.take::<u64>(&mut recs, "recommendations", "neighbours") {
            match v {
                1..=1000 => r.neighbours = v as usize,
                _ => self.problem("recommendations.neighbours", "must be from 1 to 1000"),
            }
        }
        if let Some(v) = self.take::<u64>(&mut recs, "recommendations", "min_customers_together") {
            match v {
                1..=1000 => r.min_customers_together = v as u32,
                _ => self.problem("recommendations.min_customers_together", "must be from 1 to 1000"),
            }
        }
        self.finish(recs, "recommendations");
        self.activation(&mut root, &mut c);

        let privacy = match root.remove("privacy") {
            None => None,
            Some(toml::Value::Table(t)) => Some(t),
            Some(_) => {
                self.problem("privacy", "must be a table");
                None
            }
        };
        match crate::privacy::decode(privacy) {
            Ok(p) => c.privacy = p,
            Err(problems) => self.problems.extend(problems),
        }

        let mut banner = self.table(&mut root, "", "consent_banner");
        if let Some(map) = self.take::<std::collections::BTreeMap<String, String>>(&mut banner, "consent_banner", "google_consent_mode") {
            for (signal, purpose) in &map {
                let path = format!("consent_banner.google_consent_mode.{signal}");
                if !CONSENT_MODE_SIGNALS.contains(&signal.as_str()) {
                    self.problem(path, format!("is not a Google Consent Mode v2 signal ({})", CONSENT_MODE_SIGNALS.join(", ")));
                } else if !c.privacy.purposes.iter().any(|p| &p.id == purpose) {
                    self.problem(path, format!("names {purpose}, which is not a declared purpose"));
                }
            }
            c.consent_banner.google_consent_mode = map;
        }
        self.finish(banner, "consent_banner");

        self.finish(root, "");
        self.check_keys(&c);
        c
    }

    /// `[smtp]`, `[campaigns]`, `[destinations]`, `[privacy_centre]` and `[console]`.
    fn activation(&mut self, root: &mut toml::Table, c: &mut Config) {
        let mut smtp = self.table(root, "", "smtp");
        let p = "smtp";
        let s = &mut c.smtp;
        if let Some(t) = self.take::<SmtpTls>(&mut smtp, p, "tls") {
            s.tls = t;
        }
        s.port = match s.tls {
            SmtpTls::None => 25,
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
        };
        if let Some(h) = self.take::<String>(&mut smtp, p, "host") {
            if h.trim().is_empty() || h.contains(|c: char| c.is_whitespace() || c == '/') {
                self.problem("smtp.host", "must be a host name or an IP address");
            } else {
                s.host = Some(h);
            }
        }
        if let Some(port) = self.take::<i64>(&mut smtp, p, "port") {
            match u16::try_from(port) {
                Ok(v) if v > 0 => s.port = v,
                _ => self.problem("smtp.port", "must be from 1 to 65535"),
            }
        }
        if let Some(from) = self.take::<String>(&mut smtp, p, "from") {
            let address = match (from.find('<'), from.rfind('>')) {
                (Some(a), Some(b)) if a < b && from[b + 1..].trim().is_empty() => &from[a + 1..b],
                _ => from.as_str(),
            };
            if crate::ids::Email::parse(address.trim()).is_err() {
                self.problem("smtp.from", "must be an email address, or `Name <address>`");
            } else {
                s.from = from.trim().to_owned();
            }
        } else if s.host.is_some() {
            self.problem("smtp.from", "is required when smtp.host is set");
        }
        s.username = self.take::<String>(&mut smtp, p, "username");
        s.password = self.take::<String>(&mut smtp, p, "password");
        if s.username.is_some() != s.password.is_some() {
            self.problem("smtp.username", "give smtp.username and smtp.password together, or neither");
        }
        s.timeout_seconds = self.positive(&mut smtp, p, "timeout_seconds", s.timeout_seconds as usize) as u64;
        s.connections = self.positive(&mut smtp, p, "connections", s.connections);
        if s.connections > 64 {
            self.problem("smtp.connections", "must be at most 64");
        }
        self.finish(smtp, p);

        let mut campaigns = self.table(root, "", "campaigns");
        let p = "campaigns";
        if let Some(v) = self.take::<i64>(&mut campaigns, p, "frequency_cap") {
            match u32::try_from(v) {
                Ok(v) => c.campaigns.frequency_cap = v,
                Err(_) => self.problem("campaigns.frequency_cap", "must be a count ≥ 0 (0: no cap)"),
            }
        }
        if let Some(v) = self.take::<i64>(&mut campaigns, p, "frequency_window_days") {
            match v {
                1..=365 => c.campaigns.frequency_window_days = v as u32,
                _ => self.problem("campaigns.frequency_window_days", "must be from 1 to 365"),
            }
        }
        if let Some(l) = self.take::<String>(&mut campaigns, p, "default_language") {
            if l == "fr" || l == "en" {
                c.campaigns.default_language = l;
            } else {
                self.problem("campaigns.default_language", "must be fr or en");
            }
        }
        self.finish(campaigns, p);

        let mut dest = self.table(root, "", "destinations");
        let p = "destinations";
        if let Some(v) = self.take::<bool>(&mut dest, p, "allow_private_addresses") {
            c.destinations.allow_private_addresses = v;
        }
        c.destinations.poll_milliseconds = self.positive(&mut dest, p, "poll_milliseconds", c.destinations.poll_milliseconds as usize) as u64;
        self.finish(dest, p);

        let mut pc = self.table(root, "", "privacy_centre");
        let p = "privacy_centre";
        let v = &mut c.privacy_centre;
        v.code_minutes = self.bounded(&mut pc, p, "code_minutes", v.code_minutes, 1440);
        v.code_attempts = self.bounded(&mut pc, p, "code_attempts", v.code_attempts, 100);
        v.codes_per_window = self.bounded(&mut pc, p, "codes_per_window", v.codes_per_window, 1000);
        v.requests_per_ip = self.bounded(&mut pc, p, "requests_per_ip", v.requests_per_ip, 100000);
        v.window_minutes = self.bounded(&mut pc, p, "window_minutes", v.window_minutes, 1440);
        v.session_minutes = self.bounded(&mut pc, p, "session_minutes", v.session_minutes, 1440);
        self.finish(pc, p);

        let mut con = self.table(root, "", "console");
        let p = "console";
        let v = &mut c.console;
        v.session_minutes = self.bounded(&mut con, p, "session_minutes", v.session_minutes, 10080);
        v.max_failed_logins = self.bounded(&mut con, p, "max_failed_logins", v.max_failed_logins, 100);
        v.lock_minutes = self.bounded(&mut con, p, "lock_minutes", v.lock_minutes, 10080);
        self.finish(con, p);
    }

    /// Names are unique, keys are unique across sources and API keys, and long enough.
    fn check_keys(&mut self, c: &Config) {
        const MIN_KEY: usize = 16;
        let mut names = HashMap::new();
        let mut keys: HashMap<[u8; 32], String> = HashMap::new();
        let mut check_key = |d: &mut Decoder, path: String, key: &str| {
            if key.is_empty() {
                return;
            }
            if key.len() < MIN_KEY {
                d.problem(path.clone(), format!("is too short: a key needs at least {MIN_KEY} characters"));
            }
            let digest = key_digest(key);
            if let Some(first) = keys.get(&digest) {
                d.problem(path.clone(), format!("is the same key as {first}; every key must be unique"));
            } else {
                keys.insert(digest, path);
            }
        };
        for (i, s) in c.sources.iter().enumerate() {
            if !s.name.is_empty() {
                if let Some(first) = names.insert(s.name.as_str(), i) {
                    self.problem(format!("sources[{i}].name"), format!("duplicates sources[{first}].name"));
                }
            }
            check_key(self, format!("sources[{i}].write_key"), &s.write_key);
        }
        let mut key_names = HashMap::new();
        for (i, k) in c.api_keys.iter().enumerate() {
            if !k.name.is_empty() {
                if let Some(first) = key_names.insert(k.name.as_str(), i) {
                    self.problem(format!("api_keys[{i}].name"), format!("duplicates api_keys[{first}].name"));
                }
            }
            check_key(self, format!("api_keys[{i}].key"), &k.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn activation_settings_are_checked_all_at_once() {
        let ok = load("[smtp]\nhost = \"smtp.example.fr\"\nfrom = \"Boutique <news@example.fr>\"\ntls = \"tls\"\n[campaigns]\nfrequency_cap = 0\n", Vec::new()).unwrap().config;
        assert_eq!((ok.smtp.port, ok.smtp.tls, ok.campaigns.frequency_cap), (465, SmtpTls::Tls, 0));
        assert!(!format!("{:?}", ok.smtp).contains("password: Some"), "the password never prints");
        let text = "[smtp]\nhost = \"smtp example\"\nport = 70000\ntls = \"ssl\"\nusername = \"u\"\n[campaigns]\nfrequency_window_days = 0\ndefault_language = \"de\"\n[destinations]\nallow_private_addresses = \"maybe\"\n[privacy_centre]\ncode_minutes = 0\nsession_minutes = 2000\n[console]\nlock_minutes = 0\n[consent_banner]\ngoogle_consent_mode = { ad_storage = \"nope\", wall_storage = \"analytics\" }\n";
        let e = load(text, Vec::new()).unwrap_err();
        let paths: Vec<&str> = e.problems.iter().map(|p| p.path.as_str()).collect();
        for p in ["smtp.host", "smtp.port", "smtp.tls", "smtp.username", "campaigns.frequency_window_days", "campaigns.default_language", "destinations.allow_private_addresses", "privacy_centre.code_minutes", "privacy_centre.session_minutes", "console.lock_minutes", "consent_banner.google_consent_mode.ad_storage", "consent_banner.google_consent_mode.wall_storage"] {
            assert!(paths.contains(&p), "{p} missing from {paths:?}");
        }
        let e = load("[smtp]\nhost = \"smtp.example.fr\"\n", Vec::new()).unwrap_err();
        assert_eq!(e.problems[0].path, "smtp.from");
        assert!(load("[smtp]\nhost = \"h\"\nfrom = \"not an address\"\n", Vec::new()).is_err());
    }

    #[test]
    fn the_client_is_found_behind_trusted_proxies_only() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let trusted = vec![IpRange::parse("10.0.0.0/8").unwrap(), IpRange::parse("::1").unwrap()];
        assert!(IpRange::parse("10.0.0.0/33").is_none() && IpRange::parse("nope").is_none());
        assert!(trusted[0].contains(ip("10.200.3.4")) && !trusted[0].contains(ip("11.0.0.1")) && trusted[0].contains(ip("::ffff:10.1.1.1")));
        // Not behind a trusted proxy: the header is ignored (anyone can send it).
        assert_eq!(client_ip(ip("203.0.113.9"), Some("1.2.3.4"), &trusted), ip("203.0.113.9"));
        // Behind one: the rightmost untrusted hop; a forged leftmost entry is not believed.
        assert_eq!(client_ip(ip("10.0.0.2"), Some("6.6.6.6, 198.51.100.7, 10.0.0.9"), &trusted), ip("198.51.100.7"));
        assert_eq!(client_ip(ip("::1"), Some("garbage, 198.51.100.7"), &trusted), ip("198.51.100.7"));
        assert_eq!(client_ip(ip("10.0.0.2"), None, &trusted), ip("10.0.0.2"));
        let c = load("[server]\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]\n", Vec::new()).unwrap().config;
        assert_eq!(c.server.trusted_proxies.len(), 2);
        let e = load("[server]\ntrusted_proxies = [\"10.0.0.0/40\"]\n", Vec::new()).unwrap_err();
        assert_eq!(e.problems[0].path, "server.trusted_proxies[0]");
    }

    #[test]
    fn keys_may_be_given_as_digests() {
        use sha2::Digest;
        let digest = hex::encode(sha2::Sha256::digest(b"ak_secret_0123456789"));
        let text = format!("[[api_keys]]\nname = \"ops\"\nkey_sha256 = \"{digest}\"\nrole = \"dpo\"\n[[sources]]\nname = \"web\"\nwrite_key = \"wk_clear_0123456789\"");
        let c = load(&text, Vec::new()).unwrap().config;
        assert_eq!(key_digest(&c.api_keys[0].key), key_digest("ak_secret_0123456789"));
        assert_ne!(key_digest(&c.api_keys[0].key), key_digest("ak_other_0123456789"));
        let bad = "[[api_keys]]\nname = \"ops\"\nkey_sha256 = \"zz\"\nrole = \"dpo\"\n[[api_keys]]\nname = \"b\"\nkey = \"sha256:0123456789abcdef\"\nrole = \"dpo\"";
        let paths: Vec<String> = load(bad, Vec::new()).unwrap_err().problems.into_iter().map(|p| p.path).collect();
        assert!(paths.contains(&"api_keys[0].key_sha256".to_owned()) && paths.contains(&"api_keys[1].key".to_owned()), "{paths:?}");
    }

    #[test]
    fn nothing_at_all_gives_the_documented_defaults() {
        let c = load("", Vec::new()).unwrap().config;
        assert_eq!(c, Config::default());
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./data"));
    }

    #[test]
    fn the_example_file_documents_exactly_the_defaults() {
        let text = include_str!("../../../confidant.example.toml");
        assert_eq!(load(text, Vec::new()).unwrap().config, Config::default());
    }

    #[test]
    fn the_documented_keys_work_as_written() {
        let text = r#"
            data_dir = "/var/lib/confidant"
            [server]
            listen = "0.0.0.0:9000"
            [[sources]]
            name = "web"
            write_key = "wk_0123456789abcdef"
            [[api_keys]]
            name = "ops"
            key = "ak_0123456789abcdef"
            role = "admin"
        "#;
        let c = load(text, Vec::new()).unwrap().config;
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/confidant"));
        assert_eq!(c.server.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.sources[0].name, "web");
        assert_eq!(c.api_keys[0].role, Role::Admin);
    }

    #[test]
    fn environment_overrides_the_file() {
        let loaded = load(
            "[server]\nlisten = \"127.0.0.1:1\"",
            env(&[
                ("CONFIDANT_SERVER__LISTEN", "127.0.0.1:2"),
                ("CONFIDANT_INGEST__MAX_DEPTH", "32"),
                ("CONFIDANT_DATA_DIR", "/tmp/x"),
                ("CONFIDANT_TEST_DATABASE_URL", "postgres://x"),
                ("CONFIDANT_NO_SUCH_KEY", "1"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(loaded.config.server.listen.port(), 2);
        assert_eq!(loaded.config.ingest.max_depth, 32);
        assert_eq!(loaded.config.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(loaded.ignored_env, vec!["CONFIDANT_NO_SUCH_KEY".to_string()]);
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_path() {
        let text = r#"
            colour = "blue"
            [server]
            listen = "not an address"
            [[sources]]
            name = "web"
            [[sources]]
            name = "web"
            write_key = "short"
            [[api_keys]]
            name = "ops"
            key = "ak_0123456789abcdef"
            role = "superuser"
            [ingest]
            max_depth = -1
            max_batch_messages = "many"
            [identity]
            banned_patterns = ["("]
        "#;
        let err = load(text, Vec::new()).unwrap_err();
        let paths: Vec<&str> = err.problems.iter().map(|p| p.path.as_str()).collect();
        for expected in [
            "colour",
            "server.listen",
            "sources[0].write_key",
            "sources[1].name",
            "sources[1].write_key",
            "api_keys[0].role",
            "ingest.max_depth",
            "ingest.max_batch_messages",
            "identity.banned_patterns[0]",
        ] {
            assert!(paths.contains(&expected), "{expected} missing from {paths:?}");
        }
        let shown = err.to_string();
        assert!(!shown.contains("ak_0123456789abcdef"), "secrets are never echoed");
    }

    #[test]
    fn malformed_toml_is_one_clear_problem() {
        let err = load("[server\nlisten=", Vec::new()).unwrap_err();
        assert_eq!(err.problems.len(), 1);
        assert!(err.problems[0].message.starts_with("not valid TOML"));
    }

    #[test]
    fn debug_output_hides_keys() {
        let c = load("[[sources]]\nname = \"web\"\nwrite_key = \"wk_0123456789abcdef\"", Vec::new()).unwrap().config;
        assert!(!format!("{c:?}").contains("wk_0123456789abcdef"));
    }
}
