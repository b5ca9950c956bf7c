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

use super::{kind_code, pg_error, Postgres, MEMBERS};
use crate::{IngestBatch, IngestReport, Result, StoreError};


/// The live root of the profile that holds identifier (`$1` kind, `$2` value): the owner and
/// its root in one statement.
const OWNER_ROOT: &str = "WITH RECURSIVE up(id, merged_into) AS (
         SELECT p.id, p.merged_into FROM identities i JOIN profiles p ON p.id = i.profile_id WHERE i.kind = $1 AND i.value = $2
         UNION ALL SELECT p.id, p.merged_into FROM profiles p JOIN up ON p.id = up.merged_into)
     SELECT id FROM up WHERE merged_into IS NULL";

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
    /// show to be one person). Values of encrypted categories are sealed under the subject's
    /// key, as on SQLite.
    pub async fn ingest(&self, batch: &IngestBatch, rules: &IdentityRules, now: i64) -> Result<IngestReport> {
        let mut keys: Vec<i64> = batch.messages.iter().flat_map(touched).map(|(k, v)| lock_key(k, v)).collect();
        keys.sort_unstable();
        keys.dedup();
        let mut c = self.client().await?;
        // The month partitions the batch needs exist before its transaction begins: creating
        // one locks `events` until the creating transaction ends, so it is done in a short
        // transaction of its own, once per month and node.
        let mut days: Vec<i64> = batch.messages.iter().map(|m| m.envelope.timestamp.div_euclid(86_400_000)).collect();
        days.sort_unstable();
        days.dedup();
        for day in days {
            let month = super::month_of(day);
            if self.known_month(month) {
                continue;
            }
            ensure_partition(&c, day * 86_400_000).await?;
            self.remember_month(month);
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let tx = c.transaction().await.map_err(|e| pg_error(&e))?;
            match apply(&tx, batch, rules, &keys, now, &self.master_key).await {
                Ok(report) => match tx.commit().await {
                    Ok(()) => return Ok(report),
                    Err(e) if retryable(&e) && attempt < 5 => continue,
                    Err(e) => return Err(pg_error(&e)),
                },
                Err(Failure::Pg(e)) if retryable(&e) && attempt < 5 => {
                    drop(tx);
                    continue;
                }
                // A month dropped by retention since this node last saw it: made again.
                Err(Failure::Pg(e)) if e.code().is_some_and(|c| c.code() == "23514") && attempt < 5 => {
                    drop(tx);
                    self.forget_months();
                    for m in &batch.messages {
                        ensure_partition(&c, m.envelope.timestamp).await?;
                    }
                    continue;
                }
                Err(Failure::Pg(e)) => return Err(pg_error(&e)),
                Err(Failure::Store(e)) => return Err(e),
            }
        }
    }

    /// The live profile an identifier belongs to (for tests and lookups).
    pub async fn owner(&self, kind: IdKind, value: &str) -> Result<Option<i64>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                OWNER_ROOT,
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

/// Makes sure the month partition of `ts` exists. Two nodes creating the same month at once:
/// the second finds it made ("already exists"), which is what it wanted.
async fn ensure_partition(c: &deadpool_postgres::Object, ts: i64) -> Result<()> {
    match c.query_one("SELECT confidant_event_partition($1)", &[&ts]).await {
        Ok(_) => Ok(()),
        Err(e) if e.code().is_some_and(|c| c.code() == "42P07") => Ok(()),
        Err(e) => Err(pg_error(&e)),
    }
}

/// Why applying a batch failed: PostgreSQL (perhaps worth a retry) or the data itself.
enum Failure {
    Pg(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::Pg(e)
    }
}

/// The subject's data key, created on first use.
async fn subject_key(tx: &Transaction<'_>, master: &[u8; 32], profile: i64) -> std::result::Result<[u8; 32], Failure> {
    use crate::shared::crypt;
    if let Some(row) = tx.query_opt("SELECT wrapped FROM subject_keys WHERE profile_id = $1", &[&profile]).await? {
        return crypt::unwrap_key(master, profile, row.get::<_, &[u8]>(0)).map_err(Failure::Store);
    }
    let (key, wrapped) = crypt::new_key(master, profile);
    tx.execute("INSERT INTO subject_keys(profile_id, wrapped, created_at) VALUES ($1, $2, $3)", &[&profile, &wrapped, &crate::shared::now_millis()]).await?;
    Ok(key)
}

/// The live root of every identifier the batch names (`None`: no profile holds it), read in
/// one query at the start and kept exact through the batch's own changes (an identifier
/// attached, a tree merged into another), as SQLite's writer keeps its cache. Exact because
/// the batch holds the lock of every identifier it names: no other writer attaches them or
/// merges the trees they lead to meanwhile... except through an identifier this batch does
/// not name, which the profile's tree may hold; so a cached root is checked again (one
/// query) before a merge is decided on it.
type RootCache = HashMap<(i16, String), Option<i64>>;

/// Fills the cache for every identifier the batch names, in one query.
async fn prefetch(tx: &Transaction<'_>, batch: &IngestBatch, cache: &mut RootCache) -> Result<(), tokio_postgres::Error> {
    let mut kinds: Vec<i16> = Vec::new();
    let mut values: Vec<&str> = Vec::new();
    for m in &batch.messages {
        for (k, v) in touched(m) {
            if cache.insert((kind_code(k), v.to_owned()), None).is_none() {
                kinds.push(kind_code(k));
                values.push(v);
            }
        }
    }
    let rows = tx
        .query(
            "WITH RECURSIVE up(kind, value, id, merged_into) AS (
                 SELECT i.kind, i.value, p.id, p.merged_into
                 FROM unnest($1::smallint[], $2::text[]) AS w(kind, value)
                 JOIN identities i ON i.kind = w.kind AND i.value = w.value JOIN profiles p ON p.id = i.profile_id
                 UNION ALL SELECT up.kind, up.value, p.id, p.merged_into FROM up JOIN profiles p ON p.id = up.merged_into)
             SELECT kind, value, id FROM up WHERE merged_into IS NULL",
            &[&kinds, &values],
        )
        .await?;
    for r in rows {
        cache.insert((r.get(0), r.get(1)), Some(r.get(2)));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn apply(
    tx: &Transaction<'_>,
    batch: &IngestBatch,
    rules: &IdentityRules,
    keys: &[i64],
    now: i64,
    master: &[u8; 32],
) -> std::result::Result<IngestReport, Failure> {
    // Shared: batches run side by side, but not beside a write that reshapes profiles.
    tx.execute("SELECT pg_advisory_xact_lock_shared($1)", &[&super::WRITE_LOCK]).await?;
    // Every identifier's lock in one statement, in ascending order (the array is sorted).
    tx.query_one("SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::bigint[]) AS k", &[&keys]).await?;
    // Deduplication in one statement: the message ids new to the source come back.
    let ids: Vec<&str> = batch.messages.iter().map(|m| m.envelope.message_id.as_str()).collect();
    let times: Vec<i64> = batch.messages.iter().map(|m| m.envelope.timestamp).collect();
    let mut fresh: HashSet<String> = tx
        .query(
            "INSERT INTO event_ids(source_id, message_id, ts) SELECT $1, m, t FROM unnest($2::text[], $3::bigint[]) AS u(m, t)
             ON CONFLICT (source_id, message_id) DO NOTHING RETURNING message_id",
            &[&batch.source_id, &ids, &times],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut report = IngestReport { duplicate_flags: Vec::with_capacity(batch.messages.len()), ..Default::default() };
    let mut cache = RootCache::new();
    prefetch(tx, batch, &mut cache).await?;
    let mut subject_keys: HashMap<i64, [u8; 32]> = HashMap::new();
    // The rows of the batch, written at the end in one statement per table.
    let mut events: (Vec<&str>, Vec<i64>, Vec<&str>, Vec<Option<&str>>, Vec<i64>, Vec<i64>, Vec<String>, Vec<Option<&str>>) = Default::default();
    // Per (profile, key): the value that sequential upserts would leave (latest time; on
    // equal times the later message). Ordered, so that two batches touching the same rows
    // lock them in the same order.
    let mut traits: std::collections::BTreeMap<(i64, &str), (String, i64, &str)> = std::collections::BTreeMap::new();
    for msg in &batch.messages {
        let e = &msg.envelope;
        // The first occurrence of a new id is stored; any other is a duplicate.
        let is_fresh = fresh.remove(&e.message_id);
        report.duplicate_flags.push(!is_fresh);
        if !is_fresh {
            report.duplicates += 1;
            continue;
        }
        let target = resolve_target(tx, batch.source_id, msg, rules, now, &mut report, &mut cache).await?;
        // Sensitive values are sealed under the subject's key, now that the subject is known.
        let key = if msg.encrypted.is_empty() && msg.encrypted_traits.is_empty() {
            None
        } else {
            match subject_keys.get(&target) {
                Some(k) => Some(*k),
                None => {
                    let k = subject_key(tx, master, target).await?;
                    subject_keys.insert(target, k);
                    Some(k)
                }
            }
        };
        let mut body = msg.body.clone();
        if let Some(k) = &key {
            for (placeholder, plain) in &msg.encrypted {
                body = body.replacen(placeholder.as_str(), &crate::shared::crypt::seal_json(k, target, plain), 1);
            }
        }
        events.0.push(&e.message_id);
        events.1.push(target);
        events.2.push(e.kind.as_str());
        events.3.push(e.event.as_deref());
        events.4.push(e.timestamp);
        events.5.push(e.received_at);
        events.6.push(body);
        events.7.push(e.category.as_deref());
        for (name, value) in &msg.traits {
            let value = match &key {
                Some(k) if msg.encrypted_traits.contains(name) => crate::shared::crypt::seal_json(k, target, value),
                _ => value.clone(),
            };
            let slot = traits.entry((target, name.as_str()));
            match slot {
                std::collections::btree_map::Entry::Occupied(mut o) if e.timestamp >= o.get().1 => {
                    o.insert((value, e.timestamp, e.message_id.as_str()));
                }
                std::collections::btree_map::Entry::Occupied(_) => {}
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert((value, e.timestamp, e.message_id.as_str()));
                }
            }
        }
        report.stored += 1;
    }
    if !events.0.is_empty() {
        tx.execute(
            "INSERT INTO events(source_id, message_id, profile_id, type, event, ts, received_at, body, category)
             SELECT $1, m, p, ty, ev, ts, r, b, c FROM unnest($2::text[], $3::bigint[], $4::text[], $5::text[], $6::bigint[], $7::bigint[], $8::text[], $9::text[])
                 AS u(m, p, ty, ev, ts, r, b, c)",
            &[&batch.source_id, &events.0, &events.1, &events.2, &events.3, &events.4, &events.5, &events.6, &events.7],
        )
        .await?;
    }
    if !traits.is_empty() {
        let mut cols: (Vec<i64>, Vec<&str>, Vec<&str>, Vec<i64>, Vec<&str>) = Default::default();
        for ((profile, key), (value, ts, message_id)) in &traits {
            cols.0.push(*profile);
            cols.1.push(key);
            cols.2.push(value);
            cols.3.push(*ts);
            cols.4.push(message_id);
        }
        tx.execute(
            "INSERT INTO traits(profile_id, key, value, ts, source_id, message_id)
             SELECT p, k, v, t, $1, m FROM unnest($2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::text[]) AS u(p, k, v, t, m)
             ON CONFLICT (profile_id, key, source_id) DO UPDATE SET value = excluded.value, ts = excluded.ts, message_id = excluded.message_id
             WHERE excluded.ts >= traits.ts",
            &[&batch.source_id, &cols.0, &cols.1, &cols.2, &cols.3, &cols.4],
        )
        .await?;
    }
    // Counters: appended, summed when read (migration 0003), in one statement each.
    let day = now.div_euclid(86_400_000);
    let mut outcomes: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    for r in &batch.rejected {
        *outcomes.entry(format!("rejected:{}", r.code())).or_default() += 1;
    }
    outcomes.insert("accepted".into(), report.stored as i64);
    outcomes.insert("duplicate".into(), report.duplicates as i64);
    outcomes.retain(|_, n| *n > 0);
    if !outcomes.is_empty() {
        let (names, counts): (Vec<&str>, Vec<i64>) = outcomes.iter().map(|(k, n)| (k.as_str(), *n)).unzip();
        tx.execute(
            "INSERT INTO ingest_counts(day, source_id, outcome, count) SELECT $1, $2, o, n FROM unnest($3::text[], $4::bigint[]) AS u(o, n)",
            &[&day, &batch.source_id, &names, &counts],
        )
        .await?;
    }
    if !batch.drops.is_empty() {
        let events: Vec<&str> = batch.drops.iter().map(|(k, _)| k.event.as_str()).collect();
        let fields: Vec<&str> = batch.drops.iter().map(|(k, _)| k.field.as_str()).collect();
        let reasons: Vec<&str> = batch.drops.iter().map(|(k, _)| k.reason.as_str()).collect();
        let counts: Vec<i64> = batch.drops.iter().map(|(_, n)| *n as i64).collect();
        tx.execute(
            "INSERT INTO minimisation_counts(source_id, event, field, reason, count, first_at, last_at)
             SELECT $1, e, f, r, n, $6, $6 FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[]) AS u(e, f, r, n)",
            &[&batch.source_id, &events, &fields, &reasons, &counts, &now],
        )
        .await?;
    }
    Ok(report)
}

async fn owner_root(tx: &Transaction<'_>, cache: &mut RootCache, kind: IdKind, value: &str) -> Result<Option<i64>, tokio_postgres::Error> {
    if let Some(r) = cache.get(&(kind_code(kind), value.to_owned())) {
        return Ok(*r);
    }
    let row = tx
        .query_opt(
            OWNER_ROOT,
            &[&kind_code(kind), &value],
        )
        .await?;
    let root = row.map(|r| r.get::<_, i64>(0));
    cache.insert((kind_code(kind), value.to_owned()), root);
    Ok(root)
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
    cache: &mut RootCache,
) -> std::result::Result<i64, tokio_postgres::Error> {
    let e = &msg.envelope;
    let mut candidates = Vec::with_capacity(e.identifiers.len() + 1);
    for id in &e.identifiers {
        candidates.push(Candidate { identifier: id.clone(), owner: owner_root(tx, cache, id.kind, &id.value).await?.map(ProfileId) });
    }
    if let Some(prev) = &e.previous_id {
        let cand = match owner_root(tx, cache, IdKind::UserId, prev).await? {
            Some(o) => Candidate { identifier: Identifier::new(IdKind::UserId, prev.clone()), owner: Some(ProfileId(o)) },
            None => Candidate {
                identifier: Identifier::new(IdKind::AnonymousId, prev.clone()),
                owner: owner_root(tx, cache, IdKind::AnonymousId, prev).await?.map(ProfileId),
            },
        };
        candidates.insert(candidates.len().min(1), cand);
    }
    let first = candidates.first().and_then(|c| c.owner);
    if first.is_some() && candidates.iter().all(|c| c.owner == first) {
        return Ok(first.map(|p| p.0).unwrap_or_default());
    }
    // Decisions are taken on fresh roots: a tree may have been merged elsewhere through an
    // identifier this batch does not name.
    for c in candidates.iter_mut() {
        if c.owner.is_some() {
            cache.remove(&(kind_code(c.identifier.kind), c.identifier.value.clone()));
            c.owner = owner_root(tx, cache, c.identifier.kind, &c.identifier.value).await?.map(ProfileId);
        }
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
        for root in cache.values_mut() {
            if *root == Some(m.from.0) {
                *root = Some(target);
            }
        }
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
        cache.insert((kind_code(id.kind), id.value.clone()), Some(target));
    }
    Ok(target)
}
