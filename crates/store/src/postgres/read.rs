//! Profile reads on PostgreSQL, with the same meaning as SQLite's `read.rs`: a profile is
//! the tree of everything merged into its root; per trait key the latest value across the
//! tree wins (the root's own row on equal times), every source's latest value kept as lineage.

use confidant_core::ids::{IdKind, ProfileId};

use super::{kind_code, kind_of, pg_error, root_of, Postgres, MEMBERS};
use crate::{ConflictView, EventCursor, EventPage, EventView, IdentityView, MergeView, ProfileView, RawValue, Result, StoreError, Totals, TraitView};

const MERGE_COLUMNS: &str = "g.id, g.at, g.into_profile, g.from_profile, g.rule, g.evidence, s.name, g.message_id, g.undone_at, g.undone_by
     FROM merges g LEFT JOIN sources s ON s.id = g.source_id";

fn merge_row(r: &tokio_postgres::Row) -> MergeView {
    let evidence: String = r.get(5);
    MergeView {
        id: r.get(0),
        at: r.get(1),
        into: ProfileId(r.get(2)),
        from: ProfileId(r.get(3)),
        rule: r.get(4),
        evidence: serde_json::from_str(&evidence).unwrap_or(serde_json::Value::Null),
        source: r.get(6),
        message_id: r.get(7),
        undone_at: r.get(8),
        undone_by: r.get(9),
    }
}

impl Postgres {
    /// The live profile holding an identifier, if any.
    pub async fn find_profiles(&self, kind: IdKind, value: &str) -> Result<Vec<ProfileView>> {
        let c = self.client().await?;
        let owner = c.query_opt("SELECT profile_id FROM identities WHERE kind = $1 AND value = $2", &[&kind_code(kind), &value]).await.map_err(|e| pg_error(&e))?;
        let Some(owner) = owner else { return Ok(Vec::new()) };
        Ok(self.profile(owner.get(0)).await?.into_iter().collect())
    }

    /// A profile by any id of its tree: the live one.
    pub async fn profile(&self, id: i64) -> Result<Option<ProfileView>> {
        let c = self.client().await?;
        let Some(root) = root_of(&**c, id).await.map_err(|e| pg_error(&e))? else { return Ok(None) };
        let q = |sql: &str| format!("{MEMBERS} {sql}");
        let members: Vec<i64> = c.query(&q("SELECT id FROM m"), &[&root]).await.map_err(|e| pg_error(&e))?.iter().map(|r| r.get(0)).collect();
        let created_at: i64 = c.query_one(&q("SELECT min(created_at) FROM profiles WHERE id IN (SELECT id FROM m)"), &[&root]).await.map_err(|e| pg_error(&e))?.get(0);
        let identities = c
            .query(
                &q("SELECT i.kind, i.value, i.profile_id, i.created_at, s.name FROM identities i JOIN sources s ON s.id = i.source_id
                    WHERE i.profile_id IN (SELECT id FROM m) ORDER BY i.kind, i.created_at, i.value"),
                &[&root],
            )
            .await
            .map_err(|e| pg_error(&e))?
            .iter()
            .map(|r| IdentityView { kind: kind_of(r.get(0)), value: r.get(1), profile: ProfileId(r.get(2)), created_at: r.get(3), source: r.get(4) })
            .collect();
        let rows = c
            .query(
                &q("SELECT t.key, t.value, t.ts, s.name, t.message_id, t.profile_id FROM traits t JOIN sources s ON s.id = t.source_id
                    WHERE t.profile_id IN (SELECT id FROM m)"),
                &[&root],
            )
            .await
            .map_err(|e| pg_error(&e))?;
        let (traits, trait_values) = crate::golden_traits(rows.iter().map(|r| {
            let raw: String = r.get(1);
            let view = TraitView { key: r.get(0), value: serde_json::from_str(&raw).unwrap_or(serde_json::Value::Null), timestamp: r.get(2), source: r.get(3), message_id: r.get(4) };
            (view, r.get::<_, i64>(5) == root)
        }));
        let r = c.query_one(&q("SELECT count(*), min(ts), max(ts) FROM events WHERE profile_id IN (SELECT id FROM m)"), &[&root]).await.map_err(|e| pg_error(&e))?;
        Ok(Some(ProfileView {
            id: ProfileId(root),
            created_at,
            members: members.into_iter().map(ProfileId).collect(),
            identities,
            traits,
            trait_values,
            event_count: r.get(0),
            first_seen: r.get(1),
            last_seen: r.get(2),
        }))
    }

    /// A profile's events, newest first, `limit` at a time from `cursor`.
    pub async fn profile_events(&self, id: i64, limit: usize, cursor: Option<EventCursor>) -> Result<EventPage> {
        let c = self.client().await?;
        let root = root_of(&**c, id).await.map_err(|e| pg_error(&e))?.ok_or(StoreError::NotFound("profile"))?;
        let (ts, seq) = cursor.map_or((i64::MAX, i64::MAX), |c| (c.timestamp, c.seq));
        let rows = c
            .query(
                &format!(
                    "{MEMBERS} SELECT seq, ts, body FROM events WHERE profile_id IN (SELECT id FROM m) AND (ts < $2 OR (ts = $2 AND seq < $3))
                     ORDER BY ts DESC, seq DESC LIMIT $4"
                ),
                &[&root, &ts, &seq, &((limit + 1) as i64)],
            )
            .await
            .map_err(|e| pg_error(&e))?;
        let more = rows.len() > limit;
        let mut events = Vec::with_capacity(limit);
        for r in rows.into_iter().take(limit) {
            let body: String = r.get(2);
            events.push(EventView {
                seq: r.get(0),
                timestamp: r.get(1),
                body: RawValue::from_string(body).map_err(|e| StoreError::Conflict(format!("stored event is not JSON: {e}")))?,
            });
        }
        let next = if more { events.last().map(|e| EventCursor { timestamp: e.timestamp, seq: e.seq }) } else { None };
        Ok(EventPage { events, next })
    }

    /// Merges into or out of a profile's tree, newest first.
    pub async fn merges(&self, id: i64) -> Result<Vec<MergeView>> {
        let c = self.client().await?;
        let root = root_of(&**c, id).await.map_err(|e| pg_error(&e))?.ok_or(StoreError::NotFound("profile"))?;
        let rows = c
            .query(&format!("{MEMBERS} SELECT {MERGE_COLUMNS} WHERE g.into_profile IN (SELECT id FROM m) OR g.from_profile IN (SELECT id FROM m) ORDER BY g.id DESC"), &[&root])
            .await
            .map_err(|e| pg_error(&e))?;
        Ok(rows.iter().map(merge_row).collect())
    }

    /// Merges refused by merge protection that concern a profile's tree.
    pub async fn conflicts(&self, id: i64) -> Result<Vec<ConflictView>> {
        let c = self.client().await?;
        let root = root_of(&**c, id).await.map_err(|e| pg_error(&e))?.ok_or(StoreError::NotFound("profile"))?;
        let rows = c
            .query(
                &format!(
                    "{MEMBERS} SELECT at, profile_id, other_id, kind, reason, message_id FROM identity_conflicts
                     WHERE profile_id IN (SELECT id FROM m) OR other_id IN (SELECT id FROM m) ORDER BY id DESC"
                ),
                &[&root],
            )
            .await
            .map_err(|e| pg_error(&e))?;
        Ok(rows
            .iter()
            .map(|r| ConflictView {
                at: r.get(0),
                profile: ProfileId(r.get(1)),
                other: r.get::<_, Option<i64>>(2).map(ProfileId),
                kind: kind_of(r.get(3)),
                reason: r.get(4),
                message_id: r.get(5),
            })
            .collect())
    }

    pub async fn totals(&self) -> Result<Totals> {
        let c = self.client().await?;
        let q = |sql: &'static str| {
            let c = &c;
            async move { c.query_one(sql, &[]).await.map(|r| r.get::<_, i64>(0)).map_err(|e| pg_error(&e)) }
        };
        Ok(Totals {
            events: q("SELECT count(*) FROM events").await?,
            profiles: q("SELECT count(*) FROM profiles WHERE merged_into IS NULL").await?,
            merges: q("SELECT count(*) FROM merges WHERE undone_at IS NULL").await?,
            conflicts: q("SELECT count(*) FROM identity_conflicts").await?,
        })
    }
}
