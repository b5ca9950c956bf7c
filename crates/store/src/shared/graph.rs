//! The identity graph's upkeep, written once for both backends: resolving the profile a
//! message belongs to (merging within merge protection, or creating one), storing it, undoing
//! a merge. SQLite's writer runs it for every message; on PostgreSQL it serves the writes that
//! stitch outside ingestion (consent recorded for an identifier not yet seen), while ingestion
//! itself has its own path for several nodes (`postgres::ingest`).

use std::collections::{HashMap, HashSet};

use confidant_core::identity::{plan, Candidate, IdentityRules, RootFacts};
use confidant_core::ids::{IdKind, Identifier, ProfileId};
use confidant_core::message::{MessageType, SealedMessage};

use super::{kind_code, members, read, root_of, MEMBERS};
use crate::sql::{params, Conn as Connection, OptionalExtension};
use crate::{IngestBatch, IngestReport, MergeView, Result, StoreError};

/// The writer's memory of the identity graph. The writer is the only connection that
/// changes the graph, so the cache is exact as long as every change goes through it:
/// an identifier's owner never changes (entries are only added), and a profile's root
/// changes only by a merge (applied here through `members`) or an unmerge (which clears
/// everything). Anything that rolls back clears it too, since it may hold tentative entries.
#[derive(Default)]
pub(crate) struct IdentityCache {
    /// Per kind (in `kind_code` order): identifier value → the profile that owns it.
    owners: [HashMap<String, i64>; 4],
    /// Profile → its root.
    roots: HashMap<i64, i64>,
    /// Root → the cached profiles whose root it is (so a merge can repoint them).
    members: HashMap<i64, Vec<i64>>,
}

impl IdentityCache {
    /// Bound on cached identifiers; past it the cache starts again empty.
    const MAX_OWNERS: usize = 2_000_000;

    pub(crate) fn clear(&mut self) {
        for o in &mut self.owners {
            o.clear();
        }
        self.roots.clear();
        self.members.clear();
    }

    fn owner(&self, kind: IdKind, value: &str) -> Option<i64> {
        self.owners[kind_code(kind) as usize].get(value).copied()
    }

    fn remember_owner(&mut self, kind: IdKind, value: &str, owner: i64) {
        if self.owners.iter().map(HashMap::len).sum::<usize>() >= Self::MAX_OWNERS {
            self.clear();
        }
        self.owners[kind_code(kind) as usize].insert(value.to_owned(), owner);
    }

    fn remember_root(&mut self, profile: i64, root: i64) {
        if self.roots.insert(profile, root).is_none() {
            self.members.entry(root).or_default().push(profile);
        }
    }

    /// `from` (a root) was merged into `into` (a root).
    fn merged(&mut self, from: i64, into: i64) {
        let moved = self.members.remove(&from).unwrap_or_default();
        for p in &moved {
            self.roots.insert(*p, into);
        }
        self.members.entry(into).or_default().extend(moved);
        self.remember_root(from, into);
    }
}

pub(crate) fn ensure_sources(conn: &Connection, names: &[String], now: i64) -> Result<Vec<i64>> {
    let mut insert = conn.prepare_cached("INSERT OR IGNORE INTO sources(name, created_at) VALUES (?1, ?2)")?;
    let mut select = conn.prepare_cached("SELECT id FROM sources WHERE name = ?1")?;
    names
        .iter()
        .map(|n| {
            insert.execute(params![n, now])?;
            Ok(select.query_row([n], |r| r.get(0))?)
        })
        .collect()
}

fn owner_root(conn: &Connection, cache: &mut IdentityCache, kind: IdKind, value: &str) -> Result<Option<i64>> {
    let owner = match cache.owner(kind, value) {
        Some(o) => o,
        None => {
            let found: Option<i64> = conn
                .prepare_cached("SELECT profile_id FROM identities WHERE kind = ?1 AND value = ?2")?
                .query_row(params![kind_code(kind), value], |r| r.get(0))
                .optional()?;
            match found {
                Some(o) => {
                    cache.remember_owner(kind, value, o);
                    o
                }
                None => return Ok(None),
            }
        }
    };
    if let Some(r) = cache.roots.get(&owner) {
        return Ok(Some(*r));
    }
    let root = root_of(conn, owner)?;
    if let Some(r) = root {
        cache.remember_root(owner, r);
    }
    Ok(root)
}

/// Stores a batch. `known_duplicates`, one flag per message, is the answer already given to
/// the sender (SQLite's intake journal decides it when it acknowledges the batch, from the
/// database and what it acknowledged before): the batch is applied as acknowledged, without
/// looking each message up again. Without it (a batch replayed from the journal at start),
/// each message is looked up.
#[allow(clippy::too_many_arguments)]
pub(crate) fn apply_ingest(
    conn: &Connection,
    batch: &IngestBatch,
    known_duplicates: Option<&[bool]>,
    rules: &IdentityRules,
    cache: &mut IdentityCache,
    now: i64,
    master: &[u8; 32],
) -> Result<IngestReport> {
    let mut report = IngestReport { duplicate_flags: Vec::with_capacity(batch.messages.len()), ..Default::default() };
    let known_duplicates = known_duplicates.filter(|k| k.len() == batch.messages.len());
    let mut exists = conn.prepare_cached("SELECT 1 FROM events WHERE source_id = ?1 AND message_id = ?2")?;
    for (i, msg) in batch.messages.iter().enumerate() {
        let dup = match known_duplicates {
            Some(k) => k[i],
            None => exists.exists(params![batch.source_id, msg.envelope.message_id])?,
        };
        report.duplicate_flags.push(dup);
        if dup {
            report.duplicates += 1;
            continue;
        }
        apply_message(conn, batch.source_id, msg, rules, cache, now, &mut report, master)?;
        report.stored += 1;
    }
    let day = now.div_euclid(86_400_000);
    let mut count = conn.prepare_cached(
        "INSERT INTO ingest_counts(day, source_id, outcome, count) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(day, source_id, outcome) DO UPDATE SET count = ingest_counts.count + excluded.count",
    )?;
    let mut outcomes: HashMap<String, usize> = HashMap::new();
    for r in &batch.rejected {
        *outcomes.entry(format!("rejected:{}", r.code())).or_default() += 1;
    }
    outcomes.insert("accepted".into(), report.stored);
    outcomes.insert("duplicate".into(), report.duplicates);
    for (outcome, n) in outcomes.into_iter().filter(|(_, n)| *n > 0) {
        count.execute(params![day, batch.source_id, outcome, n as i64])?;
    }
    if !batch.drops.is_empty() {
        super::privacy::add_drops(conn, batch.source_id, &batch.drops, now)?;
    }
    Ok(report)
}

fn new_profile(conn: &Connection, created_at: i64) -> Result<i64> {
    let mut stmt = conn.prepare_cached("INSERT OR IGNORE INTO profiles(id, created_at) VALUES (?1, ?2)")?;
    loop {
        let id = (rand::random::<u64>() >> 1) as i64;
        if id != 0 && stmt.execute(params![id, created_at])? == 1 {
            return Ok(id);
        }
    }
}

/// Facts about a root profile for merge planning: counts of identifiers per kind across its
/// tree, and its user ids.
fn root_facts(conn: &Connection, root: i64) -> Result<RootFacts> {
    // The tree is as old as its oldest member.
    let created_at: i64 =
        conn.prepare_cached(&format!("{MEMBERS} SELECT min(created_at) FROM profiles WHERE id IN m"))?.query_row([root], |r| r.get(0))?;
    let mut stmt = conn.prepare_cached(&format!(
        "{MEMBERS} SELECT kind, value FROM identities WHERE profile_id IN m AND kind = 0
         UNION ALL SELECT kind, CAST(count(*) AS TEXT) FROM identities WHERE profile_id IN m AND kind > 0 GROUP BY kind"
    ))?;
    let mut counts = [0usize; 4];
    let mut user_ids = Vec::new();
    let mut rows = stmt.query([root])?;
    while let Some(row) = rows.next()? {
        let kind: i64 = row.get(0)?;
        let value: String = row.get(1)?;
        if kind == 0 {
            counts[0] += 1;
            user_ids.push(value);
        } else {
            counts[kind as usize] = value.parse().unwrap_or(0);
        }
    }
    Ok(RootFacts { created_at, counts, user_ids })
}

/// Pairs of roots among `roots` kept apart by an unmerge.
fn blocked_pairs(conn: &Connection, roots: &[i64]) -> Result<HashSet<(i64, i64)>> {
    let mut root_of_member = HashMap::new();
    for r in roots {
        for m in members(conn, *r)? {
            root_of_member.insert(m, *r);
        }
    }
    let mut out = HashSet::new();
    let mut stmt = conn.prepare_cached("SELECT profile_b FROM merge_blocks WHERE profile_a = ?1")?;
    for (m, r) in &root_of_member {
        let others = stmt.query_map([m], |row| row.get::<_, i64>(0))?;
        for other in others {
            if let Some(r2) = root_of_member.get(&other?) {
                if r2 != r {
                    out.insert((*r, *r2));
                    out.insert((*r2, *r));
                }
            }
        }
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn apply_message(
    conn: &Connection,
    source_id: i64,
    msg: &SealedMessage,
    rules: &IdentityRules,
    cache: &mut IdentityCache,
    now: i64,
    report: &mut IngestReport,
    master: &[u8; 32],
) -> Result<()> {
    let target = resolve_target(conn, source_id, &msg.envelope, rules, cache, now, report)?;
    store_message(conn, source_id, msg, target, master)
}

/// The live profile a message belongs to: found from its identifiers, merging profiles they
/// show to be one person (within merge protection), or created.
pub(crate) fn resolve_target(
    conn: &Connection,
    source_id: i64,
    envelope: &confidant_core::message::Envelope,
    rules: &IdentityRules,
    cache: &mut IdentityCache,
    now: i64,
    report: &mut IngestReport,
) -> Result<i64> {
    let msg = envelope;
    let mut candidates = Vec::with_capacity(msg.identifiers.len() + 1);
    for id in &msg.identifiers {
        candidates.push(Candidate { identifier: id.clone(), owner: owner_root(conn, cache, id.kind, &id.value)?.map(ProfileId) });
    }
    if let Some(prev) = &msg.previous_id {
        // The aliased id may be an earlier user id or an anonymous id.
        let as_user = owner_root(conn, cache, IdKind::UserId, prev)?;
        let cand = match as_user {
            Some(o) => Candidate { identifier: Identifier::new(IdKind::UserId, prev.clone()), owner: Some(ProfileId(o)) },
            None => Candidate {
                identifier: Identifier::new(IdKind::AnonymousId, prev.clone()),
                owner: owner_root(conn, cache, IdKind::AnonymousId, prev)?.map(ProfileId),
            },
        };
        candidates.insert(candidates.len().min(1), cand);
    }

    let first_owner = candidates.first().and_then(|c| c.owner);
    let target = if first_owner.is_some() && candidates.iter().all(|c| c.owner == first_owner) {
        // The common case: every identifier already leads to the same profile.
        first_owner.map(|p| p.0).unwrap_or_default()
    } else {
        let mut roots: Vec<i64> = candidates.iter().filter_map(|c| c.owner.map(|p| p.0)).collect();
        roots.sort_unstable();
        roots.dedup();
        let mut facts = HashMap::new();
        for r in &roots {
            facts.insert(ProfileId(*r), root_facts(conn, *r)?);
        }
        let blocked = if roots.len() > 1 { blocked_pairs(conn, &roots)? } else { HashSet::new() };
        let plan = plan(&candidates, &facts, &rules.limits, |a, b| blocked.contains(&(a.0, b.0)));
        let target = match plan.target {
            Some(t) => t.0,
            None => {
                report.profiles_created += 1;
                let id = new_profile(conn, msg.timestamp)?;
                cache.remember_root(id, id);
                id
            }
        };
        for m in &plan.merges {
            let rule = if msg.kind == MessageType::Alias { "alias".to_owned() } else { format!("shared_{}", m.evidence.kind.as_str()) };
            let evidence = serde_json::json!({
                "identifier_kind": m.evidence.kind.as_str(),
                "identifier": m.evidence.value,
                "message_type": msg.kind.as_str(),
            });
            let merge_id = conn.insert_id(
                "INSERT INTO merges(at, into_profile, from_profile, rule, evidence, source_id, message_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![now, target, m.from.0, rule, evidence.to_string(), source_id, msg.message_id],
            )?;
            conn.prepare_cached("UPDATE profiles SET merged_into = ?1, merge_id = ?2 WHERE id = ?3")?.execute(params![target, merge_id, m.from.0])?;
            cache.merged(m.from.0, target);
            report.merges += 1;
        }
        for c in &plan.conflicts {
            conn.prepare_cached(
                "INSERT INTO identity_conflicts(at, profile_id, other_id, kind, reason, source_id, message_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![now, target, c.other.map(|p| p.0), kind_code(c.identifier.kind), c.reason.code(), source_id, msg.message_id])?;
            report.conflicts += 1;
        }
        attach(conn, target, &plan.attach, source_id, &msg.message_id, now)?;
        for id in &plan.attach {
            cache.remember_owner(id.kind, &id.value, target);
        }
        target
    };

    Ok(target)
}

fn store_message(conn: &Connection, source_id: i64, msg: &SealedMessage, target: i64, master: &[u8; 32]) -> Result<()> {
    // Sensitive values are sealed under the subject's key, now that the subject is known.
    let key = if msg.encrypted.is_empty() && msg.encrypted_traits.is_empty() { None } else { Some(super::crypt::subject_key(conn, master, target)?) };
    let sealed_body;
    let body: &str = match &key {
        Some(k) if !msg.encrypted.is_empty() => {
            let mut b = msg.body.clone();
            for (placeholder, plain) in &msg.encrypted {
                b = b.replacen(placeholder.as_str(), &super::crypt::seal_json(k, target, plain), 1);
            }
            sealed_body = b;
            &sealed_body
        }
        _ => &msg.body,
    };
    conn.prepare_cached(
        "INSERT INTO events(source_id, message_id, profile_id, type, event, ts, received_at, body, category) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![source_id, msg.envelope.message_id, target, msg.envelope.kind.as_str(), msg.envelope.event, msg.envelope.timestamp, msg.envelope.received_at, body, msg.envelope.category])?;

    if !msg.traits.is_empty() {
        let mut upsert = conn.prepare_cached(
            "INSERT INTO traits(profile_id, key, value, ts, source_id, message_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(profile_id, key, source_id) DO UPDATE SET value = excluded.value, ts = excluded.ts,
                 message_id = excluded.message_id
             WHERE excluded.ts >= traits.ts",
        )?;
        for (name, value) in &msg.traits {
            let stored = match &key {
                Some(k) if msg.encrypted_traits.contains(name) => super::crypt::seal_json(k, target, value),
                _ => value.clone(),
            };
            upsert.execute(params![target, name, stored, msg.envelope.timestamp, source_id, msg.envelope.message_id])?;
        }
    }
    Ok(())
}

fn attach(conn: &Connection, profile: i64, ids: &[Identifier], source_id: i64, message_id: &str, now: i64) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT OR IGNORE INTO identities(kind, value, profile_id, created_at, source_id, message_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for id in ids {
        stmt.execute(params![kind_code(id.kind), id.value, profile, now, source_id, message_id])?;
    }
    Ok(())
}

pub(crate) fn unmerge(conn: &Connection, id: ProfileId, merge_id: Option<i64>, actor: &str, now: i64) -> Result<MergeView> {
    let root = root_of(conn, id.0)?.ok_or(StoreError::NotFound("profile"))?;
    let merge = match merge_id {
        Some(mid) => {
            let m = read::merge_by_id(conn, mid)?.ok_or(StoreError::NotFound("merge"))?;
            if m.undone_at.is_some() {
                return Err(StoreError::Conflict(format!("merge {mid} was already undone")));
            }
            if root_of(conn, m.into.0)? != Some(root) {
                return Err(StoreError::Conflict(format!("merge {mid} does not belong to profile {id}")));
            }
            m
        }
        None => {
            let mid: Option<i64> = conn
                .prepare_cached(&format!(
                    "{MEMBERS} SELECT id FROM merges WHERE into_profile IN m AND undone_at IS NULL ORDER BY id DESC LIMIT 1"
                ))?
                .query_row([root], |r| r.get(0))
                .optional()?;
            let mid = mid.ok_or_else(|| StoreError::Conflict(format!("profile {id} has no merge to undo")))?;
            read::merge_by_id(conn, mid)?.ok_or(StoreError::NotFound("merge"))?
        }
    };
    let moved = conn
        .prepare_cached("UPDATE profiles SET merged_into = NULL, merge_id = NULL WHERE id = ?1 AND merge_id = ?2")?
        .execute(params![merge.from.0, merge.id])?;
    if moved != 1 {
        return Err(StoreError::Conflict(format!("merge {} is no longer in effect", merge.id)));
    }
    conn.prepare_cached("UPDATE merges SET undone_at = ?1, undone_by = ?2 WHERE id = ?3")?.execute(params![now, actor, merge.id])?;
    let (a, b) = if merge.into.0 < merge.from.0 { (merge.into.0, merge.from.0) } else { (merge.from.0, merge.into.0) };
    let mut block = conn.prepare_cached("INSERT OR IGNORE INTO merge_blocks(profile_a, profile_b, merge_id) VALUES (?1, ?2, ?3)")?;
    block.execute(params![a, b, merge.id])?;
    block.execute(params![b, a, merge.id])?;
    read::merge_by_id(conn, merge.id)?.ok_or(StoreError::NotFound("merge"))
}
