//! Activation in SQLite: campaigns, the delivery log, destinations, dead letters and
//! forwarded rights requests.

use std::collections::HashMap;

use confidant_core::ids::ProfileId;
use crate::sql::{params, Conn as Connection, OptionalExtension, Row};
use serde_json::Value;

use super::{root_of, MEMBERS};
use crate::activation::*;
use crate::{Result, StoreError};

const CAMPAIGN: &str = "id, name, audience, purpose, content, trigger, scheduled_at, status, created_at, created_by, started_at, finished_at, cursor";

fn json(text: Option<String>) -> Option<Value> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

fn campaign(r: &Row<'_>) -> crate::sql::Result<CampaignView> {
    Ok(CampaignView {
        id: r.get(0)?,
        name: r.get(1)?,
        audience: r.get(2)?,
        purpose: r.get(3)?,
        content: json(r.get(4)?).unwrap_or(Value::Null),
        trigger: json(r.get(5)?),
        scheduled_at: r.get(6)?,
        status: r.get(7)?,
        created_at: r.get(8)?,
        created_by: r.get(9)?,
        started_at: r.get(10)?,
        finished_at: r.get(11)?,
        cursor: r.get(12)?,
    })
}

pub(super) fn campaign_get(conn: &Connection, name: &str) -> Result<Option<CampaignView>> {
    Ok(conn.prepare_cached(&format!("SELECT {CAMPAIGN} FROM campaigns WHERE name = ?1"))?.query_row([name], campaign).optional()?)
}

pub(super) fn campaign_list(conn: &Connection) -> Result<Vec<CampaignView>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {CAMPAIGN} FROM campaigns ORDER BY created_at DESC, id DESC"))?;
    let rows = stmt.query_map((), campaign)?.collect::<std::result::Result<_, _>>()?;
    Ok(rows)
}

pub(super) fn campaign_create(conn: &Connection, def: &CampaignDef, actor: &str, now: i64) -> Result<CampaignView> {
    if campaign_get(conn, &def.name)?.is_some() {
        return Err(StoreError::Conflict(format!("a campaign named {} exists already", def.name)));
    }
    // A trigger looks only at events stored from its creation on.
    let cursor: i64 = if def.trigger.is_some() { conn.query_row("SELECT coalesce(max(seq), 0) FROM events", (), |r| r.get(0))? } else { 0 };
    conn.prepare_cached(
        "INSERT INTO campaigns(name, audience, purpose, content, trigger, scheduled_at, status, created_at, created_by, cursor)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        def.name,
        def.audience,
        def.purpose,
        def.content.to_string(),
        def.trigger.as_ref().map(|t| t.to_string()),
        def.scheduled_at,
        def.status,
        now,
        actor,
        cursor
    ])?;
    campaign_get(conn, &def.name)?.ok_or(StoreError::NotFound("campaign"))
}

pub(super) fn campaign_status(conn: &Connection, id: i64, status: &str, now: i64) -> Result<()> {
    let n = conn
        .prepare_cached(
            "UPDATE campaigns SET status = ?2,
               started_at = CASE WHEN ?2 = 'sending' THEN coalesce(started_at, ?3) ELSE started_at END,
               finished_at = CASE WHEN ?2 IN ('sent', 'interrupted') THEN ?3 ELSE finished_at END
             WHERE id = ?1",
        )?
        .execute(params![id, status, now])?;
    if n == 0 {
        return Err(StoreError::NotFound("campaign"));
    }
    Ok(())
}

pub(super) fn campaign_cursor(conn: &Connection, id: i64, cursor: i64) -> Result<()> {
    conn.prepare_cached("UPDATE campaigns SET cursor = max(cursor, ?2) WHERE id = ?1")?.execute(params![id, cursor])?;
    Ok(())
}

pub(super) fn campaign_delete(conn: &Connection, name: &str) -> Result<()> {
    let n = conn.prepare_cached("DELETE FROM campaigns WHERE name = ?1")?.execute([name])?;
    if n == 0 {
        return Err(StoreError::NotFound("campaign"));
    }
    Ok(())
}

/// The state of each subject's delivery for a campaign: profile → (status, occurrence).
pub(super) fn delivery_states(conn: &Connection, campaign: i64, profiles: &[ProfileId]) -> Result<HashMap<(i64, String), String>> {
    let mut out = HashMap::new();
    let mut stmt = conn.prepare_cached("SELECT occurrence, status FROM deliveries WHERE campaign_id = ?1 AND profile_id = ?2")?;
    for p in profiles {
        let rows = stmt.query_map(params![campaign, p.0], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (occ, status) = row?;
            out.insert((p.0, occ), status);
        }
    }
    Ok(out)
}

/// Claims deliveries before sending: a new row, or an earlier failed or unfinished attempt
/// taken up again. A delivery already sent or suppressed is not claimed (not returned).
pub(super) fn deliveries_claim(conn: &Connection, campaign: i64, wanted: &[(ProfileId, String, Vec<u8>)], now: i64) -> Result<Vec<DeliveryClaim>> {
    let mut get = conn.prepare_cached("SELECT id, status, token FROM deliveries WHERE campaign_id = ?1 AND profile_id = ?2 AND occurrence = ?3")?;
    let ins = "INSERT INTO deliveries(campaign_id, profile_id, occurrence, status, at, attempts, token) VALUES (?1, ?2, ?3, 'sending', ?4, 1, ?5)";
    let mut again = conn.prepare_cached("UPDATE deliveries SET status = 'sending', reason = NULL, at = ?2, attempts = attempts + 1 WHERE id = ?1")?;
    let mut out = Vec::with_capacity(wanted.len());
    for (profile, occurrence, token) in wanted {
        let found = get
            .query_row(params![campaign, profile.0, occurrence], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<Vec<u8>>>(2)?)))
            .optional()?;
        match found {
            None => {
                let id = conn.insert_id(ins, params![campaign, profile.0, occurrence, now, token])?;
                out.push(DeliveryClaim { id, profile: *profile, occurrence: occurrence.clone(), token: token.clone() });
            }
            Some((_, status, _)) if status == "sent" => {}
            Some((id, _, old)) => {
                again.execute(params![id, now])?;
                let token = match old {
                    Some(t) => t,
                    None => {
                        conn.prepare_cached("UPDATE deliveries SET token = ?2 WHERE id = ?1")?.execute(params![id, token])?;
                        token.clone()
                    }
                };
                out.push(DeliveryClaim { id, profile: *profile, occurrence: occurrence.clone(), token });
            }
        }
    }
    Ok(out)
}

/// Records suppressed deliveries (never over one that was sent).
pub(super) fn deliveries_suppress(conn: &Connection, campaign: i64, rows: &[(ProfileId, String, String)], now: i64) -> Result<u64> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO deliveries(campaign_id, profile_id, occurrence, status, reason, at) VALUES (?1, ?2, ?3, 'suppressed', ?4, ?5)
         ON CONFLICT(campaign_id, profile_id, occurrence) DO UPDATE SET status = 'suppressed', reason = excluded.reason, at = excluded.at
         WHERE deliveries.status <> 'sent'",
    )?;
    let mut n = 0;
    for (p, occ, reason) in rows {
        n += stmt.execute(params![campaign, p.0, occ, reason, now])? as u64;
    }
    Ok(n)
}

pub(super) fn deliveries_finish(conn: &Connection, outcomes: &[(i64, &'static str, Option<String>)], now: i64) -> Result<()> {
    let mut stmt = conn.prepare_cached("UPDATE deliveries SET status = ?2, reason = ?3, at = ?4 WHERE id = ?1")?;
    for (id, status, reason) in outcomes {
        stmt.execute(params![id, status, reason, now])?;
    }
    Ok(())
}

/// Messages sent to each subject (any id of a tree counts for its root) since `since`.
pub(super) fn sent_since(conn: &Connection, profiles: &[ProfileId], since: i64) -> Result<HashMap<ProfileId, u32>> {
    let mut stmt = conn.prepare_cached("SELECT count(*) FROM deliveries WHERE profile_id = ?1 AND at >= ?2 AND status = 'sent'")?;
    let mut out = HashMap::new();
    for p in profiles {
        let n: i64 = stmt.query_row(params![p.0, since], |r| r.get(0))?;
        if n > 0 {
            out.insert(*p, n as u32);
        }
    }
    Ok(out)
}

pub(super) fn deliveries(conn: &Connection, campaign: i64, status: Option<&str>, after: i64, limit: usize) -> Result<Vec<DeliveryView>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, profile_id, occurrence, status, reason, at, attempts, unsubscribed_at FROM deliveries
         WHERE campaign_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR status = ?2) AND id > ?3 ORDER BY id LIMIT ?4",
    )?;
    let rows = stmt
        .query_map(params![campaign, status, after, limit as i64], |r| {
            Ok(DeliveryView {
                id: r.get(0)?,
                profile: ProfileId(r.get(1)?).to_string(),
                occurrence: r.get(2)?,
                status: r.get(3)?,
                reason: r.get(4)?,
                at: r.get(5)?,
                attempts: r.get(6)?,
                unsubscribed_at: r.get(7)?,
            })
        })?
        .collect::<std::result::Result<_, _>>()?;
    Ok(rows)
}

/// Counts by status and reason: ("sent", None) → n, ("suppressed", Some("withdrawn")) → n...
pub(super) fn delivery_counts(conn: &Connection, campaign: i64) -> Result<Vec<(String, Option<String>, i64)>> {
    let mut stmt = conn.prepare_cached("SELECT status, reason, count(*) FROM deliveries WHERE campaign_id = ?1 GROUP BY status, reason ORDER BY status, reason")?;
    let rows = stmt.query_map([campaign], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<std::result::Result<_, _>>()?;
    Ok(rows)
}

pub(super) fn token_target(conn: &Connection, token: &[u8]) -> Result<Option<TokenTarget>> {
    let row = conn
        .prepare_cached(
            "SELECT d.id, c.name, c.purpose, d.profile_id, d.unsubscribed_at FROM deliveries d JOIN campaigns c ON c.id = d.campaign_id WHERE d.token = ?1",
        )?
        .query_row([token], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?, r.get::<_, Option<i64>>(4)?)))
        .optional()?;
    let Some((delivery, campaign, purpose, profile, unsubscribed_at)) = row else { return Ok(None) };
    let profile = root_of(conn, profile)?.map(ProfileId);
    Ok(Some(TokenTarget { delivery, campaign, purpose, profile, unsubscribed_at }))
}

/// Marks a delivery's link used; false when it was used already.
pub(super) fn token_used(conn: &Connection, delivery: i64, now: i64) -> Result<bool> {
    Ok(conn.prepare_cached("UPDATE deliveries SET unsubscribed_at = ?2 WHERE id = ?1 AND unsubscribed_at IS NULL")?.execute(params![delivery, now])? == 1)
}

/// Occurrences of `event` after `cursor` whose delay ended before `due`, oldest first, with
/// whether `unless` followed within `within` milliseconds (on any profile of the tree).
pub(super) fn trigger_due(conn: &Connection, event: &str, unless: &str, within: i64, cursor: i64, due: i64, limit: usize) -> Result<(Vec<TriggerOccurrence>, i64)> {
    let mut stmt = conn.prepare_cached("SELECT seq, profile_id, message_id, ts FROM events WHERE seq > ?1 AND type = 'track' AND event = ?2 ORDER BY seq LIMIT ?3")?;
    let rows: Vec<(i64, i64, String, i64)> =
        stmt.query_map(params![cursor, event, limit as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?.collect::<std::result::Result<_, _>>()?;
    let mut followed = conn.prepare_cached(&format!(
        "{MEMBERS} SELECT EXISTS(SELECT 1 FROM events WHERE profile_id IN m AND +event = ?2 AND ts >= ?3 AND ts <= ?4 AND type = 'track')"
    ))?;
    let mut out = Vec::new();
    let mut last = cursor;
    for (seq, profile, message_id, ts) in rows {
        if ts + within > due {
            // Not due yet: everything after it waits too, so that the cursor never skips it.
            break;
        }
        last = seq;
        let Some(root) = root_of(conn, profile)? else { continue };
        let f: bool = followed.query_row(params![root, unless, ts, ts + within], |r| r.get(0))?;
        out.push(TriggerOccurrence { seq, profile: ProfileId(root), message_id, at: ts, followed: f });
    }
    if out.is_empty() && last == cursor {
        // Nothing due among the first rows; if there were none at all, stay.
        return Ok((out, cursor));
    }
    Ok((out, last))
}

// ------------------------------------------------------------------------------ destinations

const DESTINATION: &str = "id, name, url, secret, purposes, events, audiences, rate_per_second, timeout_ms, max_attempts, retry_base_ms, enabled, event_cursor, audience_cursor, created_at, created_by";

fn destination(r: &Row<'_>) -> crate::sql::Result<DestinationView> {
    Ok(DestinationView {
        id: r.get(0)?,
        name: r.get(1)?,
        url: r.get(2)?,
        secret: r.get(3)?,
        purposes: json(r.get(4)?).and_then(|v| serde_json::from_value(v).ok()).unwrap_or_default(),
        events: json(r.get(5)?).and_then(|v| serde_json::from_value(v).ok()),
        audiences: r.get::<_, i64>(6)? != 0,
        rate_per_second: r.get(7)?,
        timeout_ms: r.get(8)?,
        max_attempts: r.get(9)?,
        retry_base_ms: r.get(10)?,
        enabled: r.get::<_, i64>(11)? != 0,
        event_cursor: r.get(12)?,
        audience_cursor: r.get(13)?,
        created_at: r.get(14)?,
        created_by: r.get(15)?,
    })
}

pub(super) fn destination_get(conn: &Connection, name: &str) -> Result<Option<DestinationView>> {
    Ok(conn.prepare_cached(&format!("SELECT {DESTINATION} FROM destinations WHERE name = ?1"))?.query_row([name], destination).optional()?)
}

pub(super) fn destination_list(conn: &Connection) -> Result<Vec<DestinationView>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {DESTINATION} FROM destinations ORDER BY name"))?;
    let rows = stmt.query_map((), destination)?.collect::<std::result::Result<_, _>>()?;
    Ok(rows)
}

pub(super) fn destination_create(conn: &Connection, d: &DestinationDef, actor: &str, now: i64) -> Result<DestinationView> {
    if destination_get(conn, &d.name)?.is_some() {
        return Err(StoreError::Conflict(format!("a destination named {} exists already", d.name)));
    }
    let (ev, au): (i64, i64) = if d.from_now {
        (
            conn.query_row("SELECT coalesce(max(seq), 0) FROM events", (), |r| r.get(0))?,
            conn.query_row("SELECT coalesce(max(seq), 0) FROM audience_history", (), |r| r.get(0))?,
        )
    } else {
        (0, 0)
    };
    conn.prepare_cached(
        "INSERT INTO destinations(name, url, secret, purposes, events, audiences, rate_per_second, timeout_ms, max_attempts, retry_base_ms,
           event_cursor, audience_cursor, created_at, created_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        d.name,
        d.url,
        d.secret,
        serde_json::to_string(&d.purposes).unwrap_or_default(),
        d.events.as_ref().map(|e| serde_json::to_string(e).unwrap_or_default()),
        d.audiences as i64,
        d.rate_per_second,
        d.timeout_ms,
        d.max_attempts,
        d.retry_base_ms,
        ev,
        au,
        now,
        actor
    ])?;
    destination_get(conn, &d.name)?.ok_or(StoreError::NotFound("destination"))
}

pub(super) fn destination_enable(conn: &Connection, name: &str, enabled: bool) -> Result<DestinationView> {
    if conn.prepare_cached("UPDATE destinations SET enabled = ?2 WHERE name = ?1")?.execute(params![name, enabled as i64])? == 0 {
        return Err(StoreError::NotFound("destination"));
    }
    destination_get(conn, name)?.ok_or(StoreError::NotFound("destination"))
}

pub(super) fn destination_delete(conn: &Connection, name: &str) -> Result<()> {
    let d = destination_get(conn, name)?.ok_or(StoreError::NotFound("destination"))?;
    let pending: i64 = conn.query_row("SELECT count(*) FROM rights_forwards WHERE destination_id = ?1 AND status <> 'delivered'", [d.id], |r| r.get(0))?;
    if pending > 0 {
        return Err(StoreError::Conflict(format!(
            "{pending} rights requests to this destination are not delivered yet; deliver or replay them before deleting it"
        )));
    }
    conn.prepare_cached("DELETE FROM destinations WHERE id = ?1")?.execute([d.id])?;
    Ok(())
}

pub(super) fn events_after(conn: &Connection, master: &[u8; 32], after: i64, limit: usize) -> Result<Vec<ForwardEvent>> {
    let mut stmt = conn.prepare_cached("SELECT seq, profile_id, type, event, message_id, body FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
    let rows: Vec<(i64, i64, String, Option<String>, String, String)> = stmt
        .query_map(params![after, limit as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))?
        .collect::<std::result::Result<_, _>>()?;
    let mut keys = HashMap::new();
    let mut roots: HashMap<i64, Option<i64>> = HashMap::new();
    let mut out = Vec::with_capacity(rows.len());
    for (seq, profile, kind, event, message_id, body) in rows {
        let root = match roots.get(&profile) {
            Some(r) => *r,
            None => {
                let r = root_of(conn, profile)?;
                roots.insert(profile, r);
                r
            }
        };
        let Some(root) = root else { continue };
        let text = super::crypt::open_text(conn, master, body, &mut keys)?;
        let body: Value = serde_json::from_str(&text).map_err(|e| StoreError::Conflict(format!("stored event is not JSON: {e}")))?;
        out.push(ForwardEvent { seq, profile: ProfileId(root), kind, event, message_id, body });
    }
    Ok(out)
}

pub(super) fn max_event_seq(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("SELECT coalesce(max(seq), 0) FROM events", (), |r| r.get(0))?)
}

pub(super) fn audience_changes_after(conn: &Connection, after: i64, limit: usize) -> Result<Vec<AudienceChange>> {
    let mut stmt = conn.prepare_cached(
        "SELECT h.seq, a.name, a.purpose, h.profile_id, h.change, h.reason, h.at FROM audience_history h JOIN audiences a ON a.id = h.audience_id
         WHERE h.seq > ?1 ORDER BY h.seq LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(params![after, limit as i64], |r| {
            Ok(AudienceChange {
                seq: r.get(0)?,
                audience: r.get(1)?,
                purpose: r.get(2)?,
                profile: ProfileId(r.get(3)?),
                change: r.get(4)?,
                reason: r.get(5)?,
                at: r.get(6)?,
            })
        })?
        .collect::<std::result::Result<_, _>>()?;
    Ok(rows)
}

pub(super) fn max_audience_seq(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("SELECT coalesce(max(seq), 0) FROM audience_history", (), |r| r.get(0))?)
}

/// Moves a destination's cursors on and records whom it received data about.
pub(super) fn destination_advance(conn: &Connection, id: i64, events: Option<i64>, audiences: Option<i64>, subjects: &[ProfileId], now: i64) -> Result<()> {
    if let Some(e) = events {
        conn.prepare_cached("UPDATE destinations SET event_cursor = max(event_cursor, ?2) WHERE id = ?1")?.execute(params![id, e])?;
    }
    if let Some(a) = audiences {
        conn.prepare_cached("UPDATE destinations SET audience_cursor = max(audience_cursor, ?2) WHERE id = ?1")?.execute(params![id, a])?;
    }
    let mut stmt = conn.prepare_cached(
        "INSERT INTO destination_subjects(destination_id, profile_id, first_at, last_at) VALUES (?1, ?2, ?3, ?3)
         ON CONFLICT(destination_id, profile_id) DO UPDATE SET last_at = excluded.last_at",
    )?;
    for s in subjects {
        // Only subjects that still exist: an erasure may have run while the batch was in flight.
        if root_of(conn, s.0)?.is_some() {
            stmt.execute(params![id, s.0, now])?;
        }
    }
    Ok(())
}

pub(super) fn dead_add(conn: &Connection, destination: i64, rows: &[DeadLetter]) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO destination_dead(destination_id, profile_id, kind, idempotency_key, payload, attempts, last_error, failed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for d in rows {
        // A subject erased while the delivery was failing leaves no dead letter behind.
        if let Some(p) = d.profile {
            if root_of(conn, p.0)?.is_none() {
                continue;
            }
        }
        stmt.execute(params![destination, d.profile.map(|p| p.0), d.kind, d.idempotency_key, d.payload, d.attempts, d.last_error, d.failed_at])?;
    }
    Ok(())
}

pub(super) fn dead_list(conn: &Connection, destination: i64, limit: usize) -> Result<Vec<DeadLetter>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, profile_id, kind, idempotency_key, payload, attempts, last_error, failed_at FROM destination_dead WHERE destination_id = ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(params![destination, limit as i64], |r| {
            Ok(DeadLetter {
                id: r.get(0)?,
                profile: r.get::<_, Option<i64>>(1)?.map(ProfileId),
                kind: r.get(2)?,
                idempotency_key: r.get(3)?,
                payload: r.get(4)?,
                attempts: r.get(5)?,
                last_error: r.get(6)?,
                failed_at: r.get(7)?,
            })
        })?
        .collect::<std::result::Result<_, _>>()?;
    Ok(rows)
}

pub(super) fn dead_delete(conn: &Connection, ids: &[i64]) -> Result<u64> {
    let mut stmt = conn.prepare_cached("DELETE FROM destination_dead WHERE id = ?1")?;
    let mut n = 0;
    for id in ids {
        n += stmt.execute([id])? as u64;
    }
    Ok(n)
}

/// Queues a rights request for every destination that received the subject's data.
pub(super) fn rights_enqueue(conn: &Connection, r: &RightsToForward, now: i64) -> Result<u64> {
    let root = root_of(conn, r.profile.0)?.unwrap_or(r.profile.0);
    rights_enqueue_root(conn, root, r.dsr, &r.kind, &r.subject_ref, &r.payload, now)
}

pub(super) fn rights_enqueue_root(conn: &Connection, root: i64, dsr: Option<i64>, kind: &str, subject_ref: &str, payload: &Value, now: i64) -> Result<u64> {
    let sql = format!(
        "{MEMBERS} INSERT INTO rights_forwards(destination_id, dsr_id, kind, subject_ref, payload, status, next_at, created_at)
         SELECT DISTINCT destination_id, CAST(?2 AS BIGINT), CAST(?3 AS TEXT), CAST(?4 AS TEXT), CAST(?5 AS TEXT), 'pending', CAST(?6 AS BIGINT), CAST(?6 AS BIGINT) FROM destination_subjects WHERE profile_id IN m"
    );
    Ok(conn.prepare_cached(&sql)?.execute(params![root, dsr, kind, subject_ref, payload.to_string(), now])? as u64)
}

const FORWARD: &str = "f.id, d.name, f.destination_id, f.dsr_id, f.kind, f.subject_ref, f.payload, f.status, f.attempts, f.last_error, f.created_at, f.delivered_at, f.response_status";

fn forward(r: &Row<'_>) -> crate::sql::Result<RightsForward> {
    Ok(RightsForward {
        id: r.get(0)?,
        destination: r.get(1)?,
        destination_id: r.get(2)?,
        dsr: r.get(3)?,
        kind: r.get(4)?,
        subject_ref: r.get(5)?,
        payload: r.get(6)?,
        status: r.get(7)?,
        attempts: r.get(8)?,
        last_error: r.get(9)?,
        created_at: r.get(10)?,
        delivered_at: r.get(11)?,
        response_status: r.get(12)?,
    })
}

pub(super) fn rights_due(conn: &Connection, now: i64, limit: usize) -> Result<Vec<RightsForward>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {FORWARD} FROM rights_forwards f JOIN destinations d ON d.id = f.destination_id
         WHERE f.status = 'pending' AND f.next_at <= ?1 AND d.enabled = 1 ORDER BY f.next_at, f.id LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![now, limit as i64], forward)?.collect::<std::result::Result<_, _>>()?;
    Ok(rows)
}

/// `dsr`: one request's forwards; `destination`: one destination's; both `None`: all.
pub(super) fn rights_list(conn: &Connection, dsr: Option<i64>, destination: Option<&str>, limit: usize) -> Result<Vec<RightsForward>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {FORWARD} FROM rights_forwards f JOIN destinations d ON d.id = f.destination_id
         WHERE (CAST(?1 AS BIGINT) IS NULL OR f.dsr_id = ?1) AND (CAST(?2 AS TEXT) IS NULL OR d.name = ?2) ORDER BY f.id DESC LIMIT ?3"
    ))?;
    let rows = stmt.query_map(params![dsr, destination, limit as i64], forward)?.collect::<std::result::Result<_, _>>()?;
    Ok(rows)
}

/// Records an attempt: delivered (the payload is cleared), retried at `next_at`, or dead.
pub(super) fn rights_attempt(conn: &Connection, id: i64, outcome: &str, response: Option<i64>, error: Option<&str>, next_at: i64, now: i64) -> Result<()> {
    match outcome {
        "delivered" => conn
            .prepare_cached(
                "UPDATE rights_forwards SET status = 'delivered', payload = NULL, attempts = attempts + 1, delivered_at = ?2, response_status = ?3, last_error = NULL WHERE id = ?1",
            )?
            .execute(params![id, now, response])?,
        "dead" => conn
            .prepare_cached("UPDATE rights_forwards SET status = 'dead', attempts = attempts + 1, response_status = ?2, last_error = ?3 WHERE id = ?1")?
            .execute(params![id, response, error])?,
        _ => conn
            .prepare_cached("UPDATE rights_forwards SET attempts = attempts + 1, response_status = ?2, last_error = ?3, next_at = ?4 WHERE id = ?1")?
            .execute(params![id, response, error, next_at])?,
    };
    Ok(())
}

/// Dead forwards of a destination go back to the queue (replay).
pub(super) fn rights_replay(conn: &Connection, destination: i64, now: i64) -> Result<u64> {
    Ok(conn
        .prepare_cached("UPDATE rights_forwards SET status = 'pending', attempts = 0, next_at = ?2 WHERE destination_id = ?1 AND status = 'dead'")?
        .execute(params![destination, now])? as u64)
}

/// The erasure side: rows about the tree rooted at `?1` (called inside the erasure).
pub(super) fn erase_subject(conn: &Connection, root: i64) -> Result<u64> {
    let run = |sql: &str| -> Result<u64> { Ok(conn.prepare_cached(&format!("{MEMBERS} {sql}"))?.execute([root])? as u64) };
    let mut n = run("DELETE FROM deliveries WHERE profile_id IN m")?;
    n += run("DELETE FROM destination_dead WHERE profile_id IN m")?;
    n += run("DELETE FROM destination_subjects WHERE profile_id IN m")?;
    Ok(n)
}
