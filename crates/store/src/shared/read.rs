//! Queries over read connections.

use confidant_core::ids::{IdKind, ProfileId};
use crate::sql::{params, Conn as Connection, OptionalExtension, Row};

use super::{kind_code, kind_of, members, root_of, MEMBERS};
use crate::{ConflictView, EventCursor, EventPage, EventView, IdentityView, MergeView, ProfileView, RawValue, Result, StoreError, Totals, TraitView};

pub(super) fn find_profiles(conn: &Connection, kind: IdKind, value: &str) -> Result<Vec<ProfileView>> {
    let owner: Option<i64> = conn
        .prepare_cached("SELECT profile_id FROM identities WHERE kind = ?1 AND value = ?2")?
        .query_row(params![kind_code(kind), value], |r| r.get(0))
        .optional()?;
    let Some(owner) = owner else { return Ok(Vec::new()) };
    Ok(profile(conn, owner)?.into_iter().collect())
}

pub(super) fn profile(conn: &Connection, id: i64) -> Result<Option<ProfileView>> {
    let Some(root) = root_of(conn, id)? else { return Ok(None) };
    let members = members(conn, root)?;
    let created_at: i64 =
        conn.prepare_cached(&format!("{MEMBERS} SELECT min(created_at) FROM profiles WHERE id IN m"))?.query_row([root], |r| r.get(0))?;

    let mut identities = Vec::new();
    let mut stmt = conn.prepare_cached(&format!(
        "{MEMBERS} SELECT i.kind, i.value, i.profile_id, i.created_at, s.name
         FROM identities i JOIN sources s ON s.id = i.source_id WHERE i.profile_id IN m ORDER BY i.kind, i.created_at, i.value"
    ))?;
    let mut rows = stmt.query([root])?;
    while let Some(r) = rows.next()? {
        identities.push(IdentityView {
            kind: kind_of(r.get(0)?),
            value: r.get(1)?,
            profile: ProfileId(r.get(2)?),
            created_at: r.get(3)?,
            source: r.get(4)?,
        });
    }

    // Per key, the latest value across the tree (the root's own row on equal times); every
    // row (each source's latest value) kept as the lineage.
    let mut rows_out = Vec::new();
    let mut stmt = conn.prepare_cached(&format!(
        "{MEMBERS} SELECT t.key, t.value, t.ts, s.name, t.message_id, t.profile_id
         FROM traits t JOIN sources s ON s.id = t.source_id WHERE t.profile_id IN m"
    ))?;
    let mut rows = stmt.query([root])?;
    while let Some(r) = rows.next()? {
        let raw: String = r.get(1)?;
        let view = TraitView {
            key: r.get(0)?,
            value: serde_json::from_str(&raw).unwrap_or(serde_json::Value::Null),
            timestamp: r.get(2)?,
            source: r.get(3)?,
            message_id: r.get(4)?,
        };
        rows_out.push((view, r.get::<_, i64>(5)? == root));
    }
    let (traits, trait_values) = crate::golden_traits(rows_out);

    let (event_count, first_seen, last_seen) = conn
        .prepare_cached(&format!("{MEMBERS} SELECT count(*), min(ts), max(ts) FROM events WHERE profile_id IN m"))?
        .query_row([root], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;

    Ok(Some(ProfileView {
        id: ProfileId(root),
        created_at,
        members: members.into_iter().map(ProfileId).collect(),
        identities,
        traits,
        trait_values,
        event_count,
        first_seen,
        last_seen,
    }))
}

pub(super) fn profile_events(conn: &Connection, id: i64, limit: usize, cursor: Option<EventCursor>) -> Result<EventPage> {
    let root = root_of(conn, id)?.ok_or(StoreError::NotFound("profile"))?;
    let (ts, seq) = cursor.map_or((i64::MAX, i64::MAX), |c| (c.timestamp, c.seq));
    let mut stmt = conn.prepare_cached(&format!(
        "{MEMBERS} SELECT seq, ts, body FROM events WHERE profile_id IN m AND (ts < ?2 OR (ts = ?2 AND seq < ?3))
         ORDER BY ts DESC, seq DESC LIMIT ?4"
    ))?;
    let mut rows = stmt.query(params![root, ts, seq, (limit + 1) as i64])?;
    let mut events = Vec::with_capacity(limit);
    let mut more = false;
    while let Some(r) = rows.next()? {
        if events.len() == limit {
            more = true;
            break;
        }
        let body: String = r.get(2)?;
        events.push(EventView {
            seq: r.get(0)?,
            timestamp: r.get(1)?,
            body: RawValue::from_string(body).map_err(|e| StoreError::Conflict(format!("stored event is not JSON: {e}")))?,
        });
    }
    let next = if more { events.last().map(|e| EventCursor { timestamp: e.timestamp, seq: e.seq }) } else { None };
    Ok(EventPage { events, next })
}

fn merge_row(r: &Row<'_>) -> crate::sql::Result<MergeView> {
    let evidence: String = r.get(5)?;
    Ok(MergeView {
        id: r.get(0)?,
        at: r.get(1)?,
        into: ProfileId(r.get(2)?),
        from: ProfileId(r.get(3)?),
        rule: r.get(4)?,
        evidence: serde_json::from_str(&evidence).unwrap_or(serde_json::Value::Null),
        source: r.get(6)?,
        message_id: r.get(7)?,
        undone_at: r.get(8)?,
        undone_by: r.get(9)?,
    })
}

const MERGE_COLUMNS: &str = "g.id, g.at, g.into_profile, g.from_profile, g.rule, g.evidence, s.name, g.message_id, g.undone_at, g.undone_by
     FROM merges g LEFT JOIN sources s ON s.id = g.source_id";

pub(super) fn merge_by_id(conn: &Connection, id: i64) -> Result<Option<MergeView>> {
    Ok(conn.prepare_cached(&format!("SELECT {MERGE_COLUMNS} WHERE g.id = ?1"))?.query_row([id], merge_row).optional()?)
}

pub(super) fn merges(conn: &Connection, id: i64) -> Result<Vec<MergeView>> {
    let root = root_of(conn, id)?.ok_or(StoreError::NotFound("profile"))?;
    // Merges into or out of the tree, including undone ones whose other side has left it.
    let mut stmt = conn.prepare_cached(&format!(
        "{MEMBERS} SELECT {MERGE_COLUMNS} WHERE g.into_profile IN m OR g.from_profile IN m ORDER BY g.id DESC"
    ))?;
    let rows = stmt.query_map([root], merge_row)?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}

pub(super) fn conflicts(conn: &Connection, id: i64) -> Result<Vec<ConflictView>> {
    let root = root_of(conn, id)?.ok_or(StoreError::NotFound("profile"))?;
    let mut stmt = conn.prepare_cached(&format!(
        "{MEMBERS} SELECT at, profile_id, other_id, kind, reason, message_id FROM identity_conflicts
         WHERE profile_id IN m OR other_id IN m ORDER BY id DESC"
    ))?;
    let rows = stmt.query_map([root], |r| {
        Ok(ConflictView {
            at: r.get(0)?,
            profile: ProfileId(r.get(1)?),
            other: r.get::<_, Option<i64>>(2)?.map(ProfileId),
            kind: kind_of(r.get(3)?),
            reason: r.get(4)?,
            message_id: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}

pub(super) fn totals(conn: &Connection) -> Result<Totals> {
    let q = |sql: &str| -> Result<i64> { Ok(conn.query_row(sql, (), |r| r.get(0))?) };
    Ok(Totals {
        events: q("SELECT count(*) FROM events")?,
        profiles: q("SELECT count(*) FROM profiles WHERE merged_into IS NULL")?,
        merges: q("SELECT count(*) FROM merges WHERE undone_at IS NULL")?,
        conflicts: q("SELECT count(*) FROM identity_conflicts")?,
    })
}
