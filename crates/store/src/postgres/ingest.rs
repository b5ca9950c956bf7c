//! Ingestion on PostgreSQL: the same identity resolution as SQLite's writer (the core's
//! `plan`), made safe for several nodes writing at once. Each batch is one READ COMMITTED
//! transaction that first takes a transaction-scoped advisory lock on the hash of every
//! identifier the batch names, in ascending order (so two batches never wait on each other in
//! a cycle): two nodes stitching the same people serialise exactly where SQLite's single
//! writer would, and people with nothing in common proceed in parallel. A deadlock or
//! serialisation failure reported all the same is retried.

use std::collections::{HashMap, HashSet};

use confidant_core::identity::{plan, Candidate, IdentityRules, RootFacts};
use confidant_core::ids::{IdKind, Identifier, ProfileId};
use confidant_core::message::{MessageType, SealedMessage};
use tokio_postgres::Transaction;

use super::{kind_code, pg_error, root_of, Postgres, MEMBERS};
use crate::{IngestBatch, IngestReport, Result, StoreError};


/// The advisory lock key of an identifier (the same on every node: a fixed hash).
fn lock_key(kind: IdKind, value: &str) -> i64 {
    // FNV-1a, 64 bits: stable across processes and versions, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in [kind_code(kind) as u8].iter().chain(value.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// Every identifier a message may touch, the aliased id under both kinds it may have.
fn touched(msg: &SealedMessage) -> impl Iterator<Item = (IdKind, &str)> {
    let e = &msg.envelope;
    e.identifiers.iter().map(|i| (i.kind, i.value.as_str())).chain(
        e.previous_id.iter().flat_map(|p| [(IdKind::UserId, p.as_str()), (IdKind::AnonymousId, p.as_str())]),
    )
}

fn retryable(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| c.code() == "40P01" || c.code() == "40001")
}

impl Postgres {
    /// The ids of these sources, created if new.
    pub async fn ensure_sources(&self, names: &[String], now: i64) -> Result<Vec<i64>> {
        let c = self.client().await?;
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            c.execute("INSERT INTO sources(name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING", &[n, &now]).await.map_err(|e| pg_error(&e))?;
            out.push(c.query_one("SELECT id FROM sources WHERE name = $1", &[n]).await.map_err(|e| pg_error(&e))?.get(0));
        }
        Ok(out)
    }

    /// Stores a batch durably: deduplicated by `(source, messageId)`, each message on the
    /// profile its identifiers lead to (merging, within merge protection, the profiles they
    /// show to be one person). Values to encrypt are refused for now: the subject keys are not
    /// on PostgreSQL yet.
    pub async fn ingest(&self, batch: &IngestBatch, rules: &IdentityRules, now: i64) -> Result<IngestReport> {
        if batch.messages.iter().any(|m| !m.encrypted.is_empty() || !m.encrypted_traits.is_empty()) {
            return Err(StoreError::Invalid("encrypted categories are not stored on PostgreSQL yet".into()));
        }
        let mut keys: Vec<i64> = batch.messages.iter().flat_map(touched).map(|(k, v)| lock_key(k, v)).collect();
        keys.sort_unstable();
        keys.dedup();
        // One call per day of the batch makes sure its month partition exists (cheap when it does).
        let mut months: Vec<i64> = batch.messages.iter().map(|m| m.envelope.timestamp).collect();
        months.sort_unstable();
        months.dedup_by_key(|t| t.div_euclid(86_400_000));
        let mut c = self.client().await?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let tx = c.transaction().await.map_err(|e| pg_error(&e))?;
            match apply(&tx, batch, rules, &keys, &months, now).await {
                Ok(report) => match tx.commit().await {
                    Ok(()) => return Ok(report),
                    Err(e) if retryable(&e) && attempt < 5 => continue,
                    Err(e) => return Err(pg_error(&e)),
                },
                Err(e) if retryable(&e) && attempt < 5 => {
                    drop(tx);
                    continue;
                }
                Err(e) => return Err(pg_error(&e)),
            }
        }
    }

    /// The live profile an identifier belongs to (for tests and lookups).
    pub async fn owner(&self, kind: IdKind, value: &str) -> Result<Option<i64>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "WITH RECURSIVE up(id, merged_into) AS (
                     SELECT p.id, p.merged_into FROM identities i JOIN profiles p ON p.id = i.profile_id WHERE i.kind = $1 AND i.value = $2
                     UNION ALL SELECT p.id, p.merged_into FROM profiles p JOIN up ON p.id = up.merged_into)
                 SELECT id FROM up WHERE merged_into IS NULL",
                &[&kind_code(kind), &value],
            )
            .await
            .map_err(|e| pg_error(&e))?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Events stored for a live profile's whole tree, and its traits (key → JSON text).
    pub async fn profile_summary(&self, root: i64) -> Result<(i64, HashMap<String, String>)> {
        let c = self.client().await?;
        let events: i64 =
            c.query_one(&format!("{MEMBERS} SELECT count(*) FROM events WHERE profile_id IN (SELECT id FROM m)"), &[&root]).await.map_err(|e| pg_error(&e))?.get(0);
        let rows = c
            .query(&format!("{MEMBERS} SELECT DISTINCT ON (key) key, value FROM traits WHERE profile_id IN (SELECT id FROM m) ORDER BY key, ts DESC"), &[&root])
            .await
            .map_err(|e| pg_error(&e))?;
        Ok((events, rows.iter().map(|r| (r.get(0), r.get(1))).collect()))
    }

    /// Live profiles (roots).
    pub async fn live_profiles(&self) -> Result<i64> {
        let c = self.client().await?;
        Ok(c.query_one("SELECT count(*) FROM profiles WHERE merged_into IS NULL", &[]).await.map_err(|e| pg_error(&e))?.get(0))
    }
}

async fn apply(tx: &Transaction<'_>, batch: &IngestBatch, rules: &IdentityRules, keys: &[i64], months: &[i64], now: i64) -> std::result::Result<IngestReport, tokio_postgres::Error> {
    for k in keys {
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[k]).await?;
    }
    for t in months {
        tx.query_one("SELECT confidant_event_partition($1)", &[t]).await?;
    }
    let mut report = IngestReport { duplicate_flags: Vec::with_capacity(batch.messages.len()), ..Default::default() };
    for msg in &batch.messages {
        let e = &msg.envelope;
        let fresh = tx
            .execute(
                "INSERT INTO event_ids(source_id, message_id, ts) VALUES ($1, $2, $3) ON CONFLICT (source_id, message_id) DO NOTHING",
                &[&batch.source_id, &e.message_id, &e.timestamp],
            )
            .await?
            == 1;
        report.duplicate_flags.push(!fresh);
        if !fresh {
            report.duplicates += 1;
            continue;
        }
        let target = resolve_target(tx, batch.source_id, msg, rules, now, &mut report).await?;
        tx.execute(
            "INSERT INTO events(source_id, message_id, profile_id, type, event, ts, received_at, body, category) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[&batch.source_id, &e.message_id, &target, &e.kind.as_str(), &e.event, &e.timestamp, &e.received_at, &msg.body, &e.category],
        )
        .await?;
        for (key, value) in &msg.traits {
            tx.execute(
                "INSERT INTO traits(profile_id, key, value, ts, source_id, message_id) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (profile_id, key, source_id) DO UPDATE SET value = excluded.value, ts = excluded.ts, message_id = excluded.message_id
                 WHERE excluded.ts >= traits.ts",
                &[&target, key, value, &e.timestamp, &batch.source_id, &e.message_id],
            )
            .await?;
        }
        report.stored += 1;
    }
    let day = now.div_euclid(86_400_000);
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    for r in &batch.rejected {
        *outcomes.entry(format!("rejected:{}", r.code())).or_default() += 1;
    }
    outcomes.insert("accepted".into(), report.stored);
    outcomes.insert("duplicate".into(), report.duplicates);
    for (outcome, n) in outcomes.into_iter().filter(|(_, n)| *n > 0) {
        tx.execute(
            "INSERT INTO ingest_counts(day, source_id, outcome, count) VALUES ($1, $2, $3, $4)
             ON CONFLICT (day, source_id, outcome) DO UPDATE SET count = ingest_counts.count + excluded.count",
            &[&day, &batch.source_id, &outcome, &(n as i64)],
        )
        .await?;
    }
    for (k, n) in &batch.drops {
        tx.execute(
            "INSERT INTO minimisation_counts(source_id, event, field, reason, count, first_at, last_at) VALUES ($1, $2, $3, $4, $5, $6, $6)
             ON CONFLICT (source_id, event, field, reason) DO UPDATE SET count = minimisation_counts.count + excluded.count, last_at = excluded.last_at",
            &[&batch.source_id, &k.event, &k.field, &k.reason, &(*n as i64), &now],
        )
        .await?;
    }
    Ok(report)
}

async fn owner_root(tx: &Transaction<'_>, kind: IdKind, value: &str) -> Result<Option<i64>, tokio_postgres::Error> {
    let row = tx.query_opt("SELECT profile_id FROM identities WHERE kind = $1 AND value = $2", &[&kind_code(kind), &value]).await?;
    match row {
        Some(r) => root_of(tx, r.get(0)).await,
        None => Ok(None),
    }
}

async fn root_facts(tx: &Transaction<'_>, root: i64) -> Result<RootFacts, tokio_postgres::Error> {
    let created_at: i64 = tx.query_one(&format!("{MEMBERS} SELECT min(created_at) FROM profiles WHERE id IN (SELECT id FROM m)"), &[&root]).await?.get(0);
    let rows = tx.query(&format!("{MEMBERS} SELECT kind, value FROM identities WHERE profile_id IN (SELECT id FROM m)"), &[&root]).await?;
    let mut counts = [0usize; 4];
    let mut user_ids = Vec::new();
    for r in rows {
        let kind: i16 = r.get(0);
        counts[kind as usize] += 1;
        if kind == 0 {
            user_ids.push(r.get(1));
        }
    }
    Ok(RootFacts { created_at, counts, user_ids })
}

async fn blocked_pairs(tx: &Transaction<'_>, roots: &[i64]) -> Result<HashSet<(i64, i64)>, tokio_postgres::Error> {
    let mut root_of_member = HashMap::new();
    for r in roots {
        for row in tx.query(&format!("{MEMBERS} SELECT id FROM m"), &[r]).await? {
            root_of_member.insert(row.get::<_, i64>(0), *r);
        }
    }
    let mut out = HashSet::new();
    for (m, r) in &root_of_member {
        for row in tx.query("SELECT profile_b FROM merge_blocks WHERE profile_a = $1", &[m]).await? {
            if let Some(r2) = root_of_member.get(&row.get::<_, i64>(0)) {
                if r2 != r {
                    out.insert((*r, *r2));
                    out.insert((*r2, *r));
                }
            }
        }
    }
    Ok(out)
}

async fn resolve_target(
    tx: &Transaction<'_>,
    source_id: i64,
    msg: &SealedMessage,
    rules: &IdentityRules,
    now: i64,
    report: &mut IngestReport,
) -> std::result::Result<i64, tokio_postgres::Error> {
    let e = &msg.envelope;
    let mut candidates = Vec::with_capacity(e.identifiers.len() + 1);
    for id in &e.identifiers {
        candidates.push(Candidate { identifier: id.clone(), owner: owner_root(tx, id.kind, &id.value).await?.map(ProfileId) });
    }
    if let Some(prev) = &e.previous_id {
        let cand = match owner_root(tx, IdKind::UserId, prev).await? {
            Some(o) => Candidate { identifier: Identifier::new(IdKind::UserId, prev.clone()), owner: Some(ProfileId(o)) },
            None => Candidate {
                identifier: Identifier::new(IdKind::AnonymousId, prev.clone()),
                owner: owner_root(tx, IdKind::AnonymousId, prev).await?.map(ProfileId),
            },
        };
        candidates.insert(candidates.len().min(1), cand);
    }
    let first = candidates.first().and_then(|c| c.owner);
    if first.is_some() && candidates.iter().all(|c| c.owner == first) {
        return Ok(first.map(|p| p.0).unwrap_or_default());
    }
    let mut roots: Vec<i64> = candidates.iter().filter_map(|c| c.owner.map(|p| p.0)).collect();
    roots.sort_unstable();
    roots.dedup();
    let mut facts = HashMap::new();
    for r in &roots {
        facts.insert(ProfileId(*r), root_facts(tx, *r).await?);
    }
    let blocked = if roots.len() > 1 { blocked_pairs(tx, &roots).await? } else { HashSet::new() };
    let plan = plan(&candidates, &facts, &rules.limits, |a, b| blocked.contains(&(a.0, b.0)));
    let target = match plan.target {
        Some(t) => t.0,
        None => {
            report.profiles_created += 1;
            loop {
                let id = (rand::random::<u64>() >> 1) as i64;
                let n = tx.execute("INSERT INTO profiles(id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING", &[&id, &e.timestamp]).await?;
                if id != 0 && n == 1 {
                    break id;
                }
            }
        }
    };
    for m in &plan.merges {
        let rule = if e.kind == MessageType::Alias { "alias".to_owned() } else { format!("shared_{}", m.evidence.kind.as_str()) };
        let evidence = serde_json::json!({"identifier_kind": m.evidence.kind.as_str(), "identifier": m.evidence.value, "message_type": e.kind.as_str()}).to_string();
        let merge_id: i64 = tx
            .query_one(
                "INSERT INTO merges(at, into_profile, from_profile, rule, evidence, source_id, message_id) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                &[&now, &target, &m.from.0, &rule, &evidence, &source_id, &e.message_id],
            )
            .await?
            .get(0);
        tx.execute("UPDATE profiles SET merged_into = $1, merge_id = $2 WHERE id = $3", &[&target, &merge_id, &m.from.0]).await?;
        report.merges += 1;
    }
    for c in &plan.conflicts {
        tx.execute(
            "INSERT INTO identity_conflicts(at, profile_id, other_id, kind, reason, source_id, message_id) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[&now, &target, &c.other.map(|p| p.0), &kind_code(c.identifier.kind), &c.reason.code(), &source_id, &e.message_id],
        )
        .await?;
        report.conflicts += 1;
    }
    for id in &plan.attach {
        tx.execute(
            "INSERT INTO identities(kind, value, profile_id, created_at, source_id, message_id) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (kind, value) DO NOTHING",
            &[&kind_code(id.kind), &id.value, &target, &now, &source_id, &e.message_id],
        )
        .await?;
    }
    Ok(target)
}
