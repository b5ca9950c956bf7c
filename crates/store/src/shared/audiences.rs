//! Audiences in SQLite: definitions, members, history, and the facts rules read.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use confidant_core::ids::ProfileId;
use crate::sql::{params, Conn as Connection, OptionalExtension, Row};
use serde_json::Value;

use super::{root_of, MEMBERS};
use crate::audiences::*;
use crate::{Result, StoreError};

const COLUMNS: &str = "id, name, purpose, rule, description, created_at, created_by, updated_at, evaluated_at, size";

fn view(r: &Row<'_>) -> crate::sql::Result<AudienceView> {
    Ok(AudienceView {
        id: r.get(0)?,
        name: r.get(1)?,
        purpose: r.get(2)?,
        rule: r.get(3)?,
        description: r.get(4)?,
        created_at: r.get(5)?,
        created_by: r.get(6)?,
        updated_at: r.get(7)?,
        evaluated_at: r.get(8)?,
        size: r.get(9)?,
    })
}

pub(super) fn get(conn: &Connection, name: &str) -> Result<Option<AudienceView>> {
    Ok(conn.prepare_cached(&format!("SELECT {COLUMNS} FROM audiences WHERE name = ?1"))?.query_row([name], view).optional()?)
}

pub(super) fn list(conn: &Connection) -> Result<Vec<AudienceView>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM audiences ORDER BY name"))?;
    let rows = stmt.query_map((), view)?.collect::<std::result::Result<_, _>>()?;
    Ok(rows)
}

pub(super) fn create(conn: &Connection, def: &AudienceDef, actor: &str, now: i64) -> Result<AudienceView> {
    if get(conn, &def.name)?.is_some() {
        return Err(StoreError::Conflict(format!("an audience named {} exists already", def.name)));
    }
    conn.prepare_cached("INSERT INTO audiences(name, purpose, rule, description, created_at, created_by, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?5)")?
        .execute(params![def.name, def.purpose, def.rule, def.description, now, actor])?;
    get(conn, &def.name)?.ok_or(StoreError::NotFound("audience"))
}

pub(super) fn update(conn: &Connection, name: &str, def: &AudienceDef, now: i64) -> Result<AudienceView> {
    let n = conn
        .prepare_cached("UPDATE audiences SET purpose = ?2, rule = ?3, description = ?4, updated_at = ?5 WHERE name = ?1")?
        .execute(params![name, def.purpose, def.rule, def.description, now])?;
    if n == 0 {
        return Err(StoreError::NotFound("audience"));
    }
    get(conn, name)?.ok_or(StoreError::NotFound("audience"))
}

pub(super) fn delete(conn: &Connection, name: &str) -> Result<()> {
    let a = get(conn, name)?.ok_or(StoreError::NotFound("audience"))?;
    conn.prepare_cached("DELETE FROM audience_history WHERE audience_id = ?1")?.execute([a.id])?;
    conn.prepare_cached("DELETE FROM audience_members WHERE audience_id = ?1")?.execute([a.id])?;
    conn.prepare_cached("DELETE FROM audiences WHERE id = ?1")?.execute([a.id])?;
    Ok(())
}

/// The facts of the live profiles asked for (or all), for the keys and events asked for.
pub(super) fn facts(conn: &Connection, master: &[u8; 32], q: &FactsQuery) -> Result<Vec<SubjectFacts>> {
    let mut crypt_keys = HashMap::new();
    let mut out: BTreeMap<i64, SubjectFacts> = BTreeMap::new();
    let traits: BTreeSet<&str> = q.traits.iter().map(String::as_str).collect();
    let computed: BTreeSet<&str> = q.computed.iter().map(String::as_str).collect();
    match &q.subjects {
        Some(ids) => {
            let mut roots = BTreeSet::new();
            for id in ids {
                if let Some(r) = root_of(conn, id.0)? {
                    roots.insert(r);
                }
            }
            let mut t = conn.prepare_cached(&format!(
                "{MEMBERS} SELECT t.key, t.value, t.ts, s.name FROM traits t JOIN sources s ON s.id = t.source_id WHERE t.profile_id IN m"
            ))?;
            let mut c = conn.prepare_cached(&format!("{MEMBERS} SELECT key, value FROM computed_traits WHERE profile_id IN m"))?;
            // `+event`, `+ts`: one subject's events are found through the profile index, never by
            // scanning every event of that name (the `events_type_event_ts` index).
            let mut e = conn.prepare_cached(&format!(
                "{MEMBERS} SELECT event, ts, json_extract(body, '$.properties') FROM events WHERE profile_id IN m AND type = 'track' AND +event = ?2 AND +ts >= ?3"
            ))?;
            for root in roots {
                let f = out.entry(root).or_insert_with(|| SubjectFacts { profile: ProfileId(root), traits: Vec::new(), computed: Vec::new(), events: Vec::new() });
                if !traits.is_empty() {
                    let mut rows = t.query([root])?;
                    while let Some(r) = rows.next()? {
                        let key: String = r.get(0)?;
                        if traits.contains(key.as_str()) {
                            let mut v: Value = serde_json::from_str(&r.get::<_, String>(1)?).unwrap_or(Value::Null);
                            super::crypt::open_value(conn, master, &mut v, &mut crypt_keys)?;
                            f.traits.push((key, v, r.get(2)?, r.get(3)?));
                        }
                    }
                }
                if !computed.is_empty() {
                    let mut rows = c.query([root])?;
                    while let Some(r) = rows.next()? {
                        let key: String = r.get(0)?;
                        if computed.contains(key.as_str()) {
                            f.computed.push((key, serde_json::from_str(&r.get::<_, String>(1)?).unwrap_or(Value::Null)));
                        }
                    }
                }
                for (name, since) in &q.events {
                    let mut rows = e.query(params![root, name, since.unwrap_or(i64::MIN)])?;
                    while let Some(r) = rows.next()? {
                        let props: Option<String> = r.get(2)?;
                        f.events.push((r.get(0)?, r.get(1)?, props.and_then(|p| serde_json::from_str(&p).ok()).unwrap_or(Value::Null)));
                    }
                }
            }
        }
        None => {
            let parent = super::privacy::parents(conn)?;
            let root = |id: i64| super::privacy::root_in(&parent, id);
            for (id, p) in &parent {
                if p.is_none() {
                    out.insert(*id, SubjectFacts { profile: ProfileId(*id), traits: Vec::new(), computed: Vec::new(), events: Vec::new() });
                }
            }
            if !traits.is_empty() {
                let mut stmt = conn.prepare("SELECT t.profile_id, t.key, t.value, t.ts, s.name FROM traits t JOIN sources s ON s.id = t.source_id")?;
                let mut rows = stmt.query(())?;
                while let Some(r) = rows.next()? {
                    let key: String = r.get(1)?;
                    if traits.contains(key.as_str()) {
                        let mut v: Value = serde_json::from_str(&r.get::<_, String>(2)?).unwrap_or(Value::Null);
                        super::crypt::open_value(conn, master, &mut v, &mut crypt_keys)?;
                        if let Some(f) = out.get_mut(&root(r.get(0)?)) {
                            f.traits.push((key, v, r.get(3)?, r.get(4)?));
                        }
                    }
                }
            }
            if !computed.is_empty() {
                let mut stmt = conn.prepare("SELECT profile_id, key, value FROM computed_traits")?;
                let mut rows = stmt.query(())?;
                while let Some(r) = rows.next()? {
                    let key: String = r.get(1)?;
                    if computed.contains(key.as_str()) {
                        if let Some(f) = out.get_mut(&root(r.get(0)?)) {
                            f.computed.push((key, serde_json::from_str(&r.get::<_, String>(2)?).unwrap_or(Value::Null)));
                        }
                    }
                }
            }
            let mut stmt = conn.prepare("SELECT profile_id, event, ts, json_extract(body, '$.properties') FROM events WHERE type = 'track' AND event = ?1 AND ts >= ?2")?;
            for (name, since) in &q.events {
                let mut rows = stmt.query(params![name, since.unwrap_or(i64::MIN)])?;
                while let Some(r) = rows.next()? {
                    if let Some(f) = out.get_mut(&root(r.get(0)?)) {
                        let props: Option<String> = r.get(3)?;
                        f.events.push((r.get(1)?, r.get(2)?, props.and_then(|p| serde_json::from_str(&p).ok()).unwrap_or(Value::Null)));
                    }
                }
            }
        }
    }
    Ok(out.into_values().collect())
}

/// The live subjects with events or consent receipts after the watermark, and the new one.
pub(super) fn touched_since(conn: &Connection, w: Watermark) -> Result<(Vec<ProfileId>, Watermark)> {
    let events: i64 = conn.query_row("SELECT coalesce(max(seq), 0) FROM events", (), |r| r.get(0))?;
    let receipts: i64 = conn.query_row("SELECT coalesce(max(seq), 0) FROM consent_receipts", (), |r| r.get(0))?;
    let mut ids: BTreeSet<i64> = BTreeSet::new();
    let mut stmt = conn.prepare_cached("SELECT DISTINCT profile_id FROM events WHERE seq > ?1 AND seq <= ?2")?;
    for r in stmt.query_map([w.events, events], |r| r.get::<_, i64>(0))? {
        ids.insert(r?);
    }
    let mut stmt = conn.prepare_cached("SELECT DISTINCT profile_id FROM consent_receipts WHERE seq > ?1 AND seq <= ?2 AND profile_id IS NOT NULL")?;
    for r in stmt.query_map([w.receipts, receipts], |r| r.get::<_, i64>(0))? {
        ids.insert(r?);
    }
    let mut roots = BTreeSet::new();
    for id in ids {
        if let Some(r) = root_of(conn, id)? {
            roots.insert(r);
        }
    }
    Ok((roots.into_iter().map(ProfileId).collect(), Watermark { events, receipts }))
}

fn record(conn: &Connection, audience: i64, profile: i64, now: i64, change: &str, reason: &str) -> Result<()> {
    conn.prepare_cached("INSERT INTO audience_history(audience_id, profile_id, at, change, reason) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![audience, profile, now, change, reason])?;
    Ok(())
}

/// Makes `members` the audience's members among `scope` (every member when `None`), recording
/// each join and leave.
pub(super) fn apply(conn: &Connection, name: &str, scope: Option<&[ProfileId]>, members: &[ProfileId], reason: &str, now: i64) -> Result<Applied> {
    let a = get(conn, name)?.ok_or(StoreError::NotFound("audience"))?;
    let current: BTreeSet<i64> = match scope {
        None => {
            let mut stmt = conn.prepare_cached("SELECT profile_id FROM audience_members WHERE audience_id = ?1")?;
            let rows = stmt.query_map([a.id], |r| r.get::<_, i64>(0))?.collect::<std::result::Result<_, _>>()?;
            rows
        }
        Some(ids) => {
            // Every id of the scoped subjects' trees: a member recorded under an id merged
            // since is still theirs.
            let mut stmt = conn.prepare_cached(&format!("{MEMBERS} SELECT profile_id FROM audience_members WHERE audience_id = ?2 AND profile_id IN m"))?;
            let mut set = BTreeSet::new();
            for id in ids {
                for r in stmt.query_map(params![id.0, a.id], |r| r.get::<_, i64>(0))? {
                    set.insert(r?);
                }
            }
            set
        }
    };
    let wanted: BTreeSet<i64> = members.iter().map(|p| p.0).collect();
    let mut applied = Applied::default();
    let mut del = conn.prepare_cached("DELETE FROM audience_members WHERE audience_id = ?1 AND profile_id = ?2")?;
    for p in current.difference(&wanted) {
        del.execute(params![a.id, p])?;
        record(conn, a.id, *p, now, "left", reason)?;
        applied.left += 1;
    }
    let mut ins = conn.prepare_cached("INSERT OR IGNORE INTO audience_members(audience_id, profile_id, since) SELECT CAST(?1 AS BIGINT), CAST(?2 AS BIGINT), CAST(?3 AS BIGINT) WHERE EXISTS (SELECT 1 FROM profiles WHERE id = ?2)")?;
    for p in wanted.difference(&current) {
        if ins.execute(params![a.id, p, now])? > 0 {
            record(conn, a.id, *p, now, "joined", reason)?;
            applied.joined += 1;
        }
    }
    applied.size = conn.prepare_cached("SELECT count(*) FROM audience_members WHERE audience_id = ?1")?.query_row([a.id], |r| r.get(0))?;
    conn.prepare_cached("UPDATE audiences SET size = ?2, evaluated_at = ?3 WHERE id = ?1")?.execute(params![a.id, applied.size, now])?;
    Ok(applied)
}

pub(super) fn members(conn: &Connection, name: &str, after: Option<i64>, limit: usize) -> Result<Vec<MemberView>> {
    let a = get(conn, name)?.ok_or(StoreError::NotFound("audience"))?;
    let mut stmt = conn.prepare_cached("SELECT profile_id, since FROM audience_members WHERE audience_id = ?1 AND profile_id > ?2 ORDER BY profile_id LIMIT ?3")?;
    let rows = stmt
        .query_map(params![a.id, after.unwrap_or(i64::MIN), limit as i64], |r| Ok(MemberView { profile: ProfileId(r.get(0)?), since: r.get(1)? }))?
        .collect::<std::result::Result<_, _>>()?;
    Ok(rows)
}

pub(super) fn history(conn: &Connection, name: &str, before: Option<i64>, limit: usize) -> Result<Vec<HistoryView>> {
    let a = get(conn, name)?.ok_or(StoreError::NotFound("audience"))?;
    let mut stmt = conn.prepare_cached(
        "SELECT seq, profile_id, at, change, reason FROM audience_history WHERE audience_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3",
    )?;
    let rows = stmt
        .query_map(params![a.id, before.unwrap_or(i64::MAX), limit as i64], |r| {
            Ok(HistoryView { seq: r.get(0)?, profile: ProfileId(r.get(1)?), at: r.get(2)?, change: r.get(3)?, reason: r.get(4)? })
        })?
        .collect::<std::result::Result<_, _>>()?;
    Ok(rows)
}

/// The audiences a subject (any id of the tree) belongs to: (name, purpose, since).
pub(super) fn of_subject(conn: &Connection, id: i64) -> Result<Vec<(String, String, i64)>> {
    let Some(root) = root_of(conn, id)? else { return Ok(Vec::new()) };
    let mut stmt = conn.prepare_cached(&format!(
        "{MEMBERS} SELECT a.name, a.purpose, min(m2.since) FROM audience_members m2 JOIN audiences a ON a.id = m2.audience_id WHERE m2.profile_id IN m GROUP BY a.name, a.purpose ORDER BY a.name"
    ))?;
    let rows = stmt.query_map([root], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<std::result::Result<_, _>>()?;
    Ok(rows)
}
