//! The privacy side of the SQLite backend: consent ledger, audit log, rights requests,
//! erasure, retention, minimisation counts. Functions taking a connection run either on the
//! writer (inside its group commit) or on a read connection, as their callers in `mod.rs` say.

use std::collections::{BTreeMap, HashMap};

use confidant_core::audit::{self, Link};
use confidant_core::identity::IdentityRules;
use confidant_core::ids::{IdKind, Identifier, ProfileId};
use confidant_core::message::{Envelope, MessageType};
use crate::sql::{params, Conn as Connection, OptionalExtension, Row};
use serde_json::Value;

use super::graph::{resolve_target, IdentityCache};
use super::{kind_code, kind_of, root_of, MEMBERS};
use crate::privacy::*;
use crate::{IngestReport, Result, StoreError};

/// One month, as Art. 12(3) counts it (a fixed 30 days here; extensions are recorded in the
/// request's detail).
pub(crate) const DSR_DEADLINE_MS: i64 = 30 * 86_400_000;

fn random_id(prefix: &str) -> String {
    format!("{prefix}_{}", hex::encode(rand::random::<[u8; 12]>()))
}

fn hex32(b: &[u8]) -> Result<[u8; 32]> {
    b.try_into().map_err(|_| StoreError::Conflict("a stored hash is not 32 bytes".into()))
}

// ------------------------------------------------------------------------------ consent

fn receipt_content(r: &Row<'_>) -> crate::sql::Result<String> {
    // receipt_id, profile_id, purpose, scope, granted, at, method, notice_version,
    // notice_sha256, source_id, identifier_kind, identifier, evidence
    Ok(format!(
        "{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}",
        r.get::<_, String>("receipt_id")?,
        r.get::<_, Option<i64>>("profile_id")?.unwrap_or(0),
        r.get::<_, String>("purpose")?,
        r.get::<_, String>("scope")?,
        r.get::<_, i64>("granted")?,
        r.get::<_, i64>("at")?,
        r.get::<_, String>("method")?,
        r.get::<_, Option<String>>("notice_version")?.unwrap_or_default(),
        r.get::<_, Option<String>>("notice_sha256")?.unwrap_or_default(),
        r.get::<_, Option<i64>>("source_id")?.unwrap_or(0),
        r.get::<_, Option<i64>>("identifier_kind")?.unwrap_or(-1),
        r.get::<_, Option<String>>("identifier")?.unwrap_or_default(),
        r.get::<_, Option<String>>("evidence")?.unwrap_or_default(),
    ))
}

/// Current decisions of the tree rooted at `root`: the latest receipt per purpose and scope.
fn decisions(conn: &Connection, root: i64) -> Result<HashMap<(String, String), (bool, i64)>> {
    let mut stmt = conn.prepare_cached(&format!(
        "{MEMBERS} SELECT purpose, scope, granted, at FROM consent_receipts WHERE profile_id IN m ORDER BY at, seq"
    ))?;
    let mut out = HashMap::new();
    let mut rows = stmt.query([root])?;
    while let Some(r) = rows.next()? {
        out.insert((r.get(0)?, r.get(1)?), (r.get::<_, i64>(2)? != 0, r.get(3)?));
    }
    Ok(out)
}

pub(super) fn record_consent(conn: &Connection, cache: &mut IdentityCache, rules: &IdentityRules, w: ConsentWrite, now: i64) -> Result<ConsentRecorded> {
    if w.identifiers.is_empty() {
        return Err(StoreError::Invalid("a consent needs an identifier".into()));
    }
    let source_id = match w.source_id {
        Some(s) => s,
        None => conn.query_row("SELECT id FROM sources WHERE name = '(rights desk)'", (), |r| r.get(0))?,
    };
    let receipt_ids: Vec<String> = w.receipts.iter().map(|_| random_id("rcpt")).collect();
    let envelope = Envelope {
        kind: MessageType::Identify,
        message_id: receipt_ids.first().cloned().unwrap_or_else(|| random_id("rcpt")),
        event: None,
        timestamp: now,
        received_at: now,
        identifiers: w.identifiers.clone(),
        previous_id: None,
        category: None,
    };
    let mut report = IngestReport::default();
    let root = resolve_target(conn, source_id, &envelope, rules, cache, now, &mut report)?;
    let current = decisions(conn, root)?;
    let first_identifier = &w.identifiers[0];
    let (mut prev, mut seq) = chain_head(conn, "consent_receipts")?;
    let mut written = Vec::new();
    for (input, receipt_id) in w.receipts.into_iter().zip(receipt_ids) {
        if w.only_changes && current.get(&(input.purpose.clone(), input.scope.clone())).map(|d| d.0) == Some(input.granted) {
            continue;
        }
        seq += 1;
        let at = input.at - input.at.rem_euclid(1000);
        let salt: [u8; 16] = rand::random();
        let evidence = input.evidence.to_string();
        conn.prepare_cached(
            "INSERT INTO consent_receipts(seq, receipt_id, profile_id, purpose, scope, granted, at, method, notice_version, notice_sha256,
                 source_id, identifier_kind, identifier, evidence, salt, digest, prev_hash, hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, zeroblob(32), ?16, zeroblob(32))",
        )?
        .execute(params![
            seq,
            receipt_id,
            root,
            input.purpose,
            input.scope,
            input.granted as i64,
            at,
            input.method,
            input.notice_version,
            input.notice_sha256,
            source_id,
            kind_code(first_identifier.kind),
            first_identifier.value,
            evidence,
            &salt[..],
            &prev[..]
        ])?;
        let content = conn.prepare_cached("SELECT * FROM consent_receipts WHERE seq = ?1")?.query_row([seq], receipt_content)?;
        let digest = audit::salted_digest(&salt, content.as_bytes());
        let hash = audit::link(&prev, seq, &digest);
        conn.prepare_cached("UPDATE consent_receipts SET digest = ?1, hash = ?2 WHERE seq = ?3")?.execute(params![&digest[..], &hash[..], seq])?;
        prev = hash;
        written.push(receipt_by_seq(conn, seq)?);
    }
    Ok(ConsentRecorded { profile: ProfileId(root), receipts: written })
}

const RECEIPT_COLUMNS: &str = "c.seq, c.receipt_id, c.purpose, c.scope, c.granted, c.at, c.method, c.notice_version, c.notice_sha256,
    s.name, c.identifier_kind, c.evidence, c.hash FROM consent_receipts c LEFT JOIN sources s ON s.id = c.source_id";

fn receipt_row(r: &Row<'_>) -> crate::sql::Result<ReceiptView> {
    Ok(ReceiptView {
        seq: r.get(0)?,
        receipt_id: r.get(1)?,
        purpose: r.get(2)?,
        scope: r.get(3)?,
        granted: r.get::<_, i64>(4)? != 0,
        at: r.get(5)?,
        method: r.get(6)?,
        notice_version: r.get(7)?,
        notice_sha256: r.get(8)?,
        source: r.get(9)?,
        identifier_kind: r.get::<_, Option<i64>>(10)?.map(|k| kind_of(k).as_str()),
        evidence: r.get::<_, Option<String>>(11)?.and_then(|e| serde_json::from_str(&e).ok()).unwrap_or(Value::Null),
        hash: hex::encode(r.get::<_, Vec<u8>>(12)?),
    })
}

fn receipt_by_seq(conn: &Connection, seq: i64) -> Result<ReceiptView> {
    Ok(conn.prepare_cached(&format!("SELECT {RECEIPT_COLUMNS} WHERE c.seq = ?1"))?.query_row([seq], receipt_row)?)
}

pub(super) fn receipts(conn: &Connection, id: i64) -> Result<Vec<ReceiptView>> {
    let root = root_of(conn, id)?.ok_or(StoreError::NotFound("profile"))?;
    let mut stmt = conn.prepare_cached(&format!("{MEMBERS} SELECT {RECEIPT_COLUMNS} WHERE c.profile_id IN m ORDER BY c.seq"))?;
    let rows = stmt.query_map([root], receipt_row)?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}

pub(super) fn subject_record(conn: &Connection, id: i64) -> Result<SubjectRecord> {
    let root = root_of(conn, id)?.ok_or(StoreError::NotFound("profile"))?;
    let mut decisions: Vec<(String, String, bool, i64)> =
        decisions(conn, root)?.into_iter().map(|((p, s), (g, at))| (p, s, g, at)).collect();
    decisions.sort();
    let restricted: bool = conn
        .prepare_cached(&format!("{MEMBERS} SELECT EXISTS(SELECT 1 FROM subject_flags WHERE profile_id IN m)"))?
        .query_row([root], |r| r.get(0))?;
    Ok(SubjectRecord { root: ProfileId(root), decisions, restricted })
}

/// Receipts after `since`, each with the identifiers its subject holds now.
pub(super) fn consent_changes_since(conn: &Connection, since: i64) -> Result<Vec<ConsentChange>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, profile_id, purpose, scope, granted, at FROM consent_receipts WHERE seq > ?1 AND profile_id IS NOT NULL ORDER BY seq",
    )?;
    let rows: Vec<(i64, i64, String, String, bool, i64)> = stmt
        .query_map([since], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get::<_, i64>(4)? != 0, r.get(5)?)))?
        .collect::<std::result::Result<_, _>>()?;
    let mut ids_of_root: HashMap<i64, Vec<Identifier>> = HashMap::new();
    let mut ids_stmt = conn.prepare_cached(&format!("{MEMBERS} SELECT kind, value FROM identities WHERE profile_id IN m"))?;
    let mut out = Vec::with_capacity(rows.len());
    for (seq, profile, purpose, scope, granted, at) in rows {
        let Some(root) = root_of(conn, profile)? else { continue };
        if let std::collections::hash_map::Entry::Vacant(slot) = ids_of_root.entry(root) {
            slot.insert(ids_stmt.query_map([root], |r| Ok(Identifier::new(kind_of(r.get(0)?), r.get::<_, String>(1)?)))?.collect::<std::result::Result<Vec<_>, _>>()?);
        }
        out.push(ConsentChange { seq, identifiers: ids_of_root[&root].clone(), purpose, scope, granted, at });
    }
    Ok(out)
}

/// Numbers that change when another process records consent or erases someone.
pub(super) fn privacy_version(conn: &Connection) -> Result<(i64, i64)> {
    Ok(conn.query_row(
        "SELECT (SELECT coalesce(max(seq), 0) FROM consent_receipts), (SELECT count(*) FROM tombstones)",
        (),
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?)
}

pub(super) fn verify_receipts(conn: &Connection) -> Result<ChainReport> {
    let mut stmt = conn.prepare("SELECT * FROM consent_receipts ORDER BY seq")?;
    let mut rows = stmt.query(())?;
    let mut links = Vec::new();
    while let Some(r) = rows.next()? {
        let stored = hex32(&r.get::<_, Vec<u8>>("digest")?)?;
        let digest = match r.get::<_, Option<Vec<u8>>>("salt")? {
            // Intact: recompute from the content, so that an edited field shows.
            Some(salt) if r.get::<_, i64>("erased")? == 0 => audit::salted_digest(&salt, receipt_content(&r)?.as_bytes()),
            // Erased: only the links can be checked.
            _ => stored,
        };
        links.push(Link { seq: r.get("seq")?, content_digest: digest, prev_hash: hex32(&r.get::<_, Vec<u8>>("prev_hash")?)?, hash: hex32(&r.get::<_, Vec<u8>>("hash")?)? });
    }
    Ok(chain_report(audit::verify(links)))
}

/// The hash and sequence number of a chain's last entry (the genesis for an empty chain).
/// Read inside the writer's transaction, so that two processes never fork the chain.
fn chain_head(conn: &Connection, table: &str) -> Result<([u8; 32], i64)> {
    conn.prepare_cached(&format!("SELECT hash, seq FROM {table} ORDER BY seq DESC LIMIT 1"))?
        .query_row((), |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get(1)?)))
        .optional()?
        .map(|(h, s)| hex32(&h).map(|h| (h, s)))
        .transpose()
        .map(|o| o.unwrap_or((audit::GENESIS, 0)))
}

fn chain_report(r: std::result::Result<audit::Verified, audit::ChainBreak>) -> ChainReport {
    match r {
        Ok(v) => ChainReport { entries: v.entries, head: hex::encode(v.head), broken: None },
        Err(e) => ChainReport { entries: 0, head: String::new(), broken: Some(e.to_string()) },
    }
}

// ------------------------------------------------------------------------------ audit

fn audit_content(at: i64, actor: &str, action: &str, subject: Option<&str>, detail: &str) -> String {
    format!("{at}\u{1f}{actor}\u{1f}{action}\u{1f}{}\u{1f}{detail}", subject.unwrap_or(""))
}

pub(super) fn append_audit(conn: &Connection, entries: &[AuditEntry], now: i64) -> Result<Vec<i64>> {
    let (mut prev, mut seq) = chain_head(conn, "audit_log")?;
    let mut out = Vec::with_capacity(entries.len());
    let mut insert = conn.prepare_cached(
        "INSERT INTO audit_log(seq, at, actor, action, subject, detail, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for e in entries {
        seq += 1;
        let subject = e.subject.map(|p| p.to_string());
        let detail = e.detail.to_string();
        let digest = audit::digest(audit_content(now, &e.actor, &e.action, subject.as_deref(), &detail).as_bytes());
        let hash = audit::link(&prev, seq, &digest);
        insert.execute(params![seq, now, e.actor, e.action, subject, detail, &prev[..], &hash[..]])?;
        prev = hash;
        out.push(seq);
    }
    Ok(out)
}

pub(super) fn audit_list(conn: &Connection, f: &AuditFilter) -> Result<Vec<AuditView>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, at, actor, action, subject, detail, hash FROM audit_log
         WHERE (CAST(?1 AS TEXT) IS NULL OR actor = ?1) AND (CAST(?2 AS TEXT) IS NULL OR action = ?2 OR action LIKE ?2 || '.%') AND (CAST(?3 AS TEXT) IS NULL OR subject = ?3)
           AND (CAST(?4 AS BIGINT) IS NULL OR at >= ?4) AND (CAST(?5 AS BIGINT) IS NULL OR at < ?5) AND (CAST(?6 AS BIGINT) IS NULL OR seq < ?6)
         ORDER BY seq DESC LIMIT ?7",
    )?;
    let rows = stmt.query_map(
        params![f.actor, f.action, f.subject.map(|p| p.to_string()), f.since, f.until, f.before, f.limit.clamp(1, 1000) as i64],
        |r| {
            Ok(AuditView {
                seq: r.get(0)?,
                at: r.get(1)?,
                actor: r.get(2)?,
                action: r.get(3)?,
                subject: r.get(4)?,
                detail: serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or(Value::Null),
                hash: hex::encode(r.get::<_, Vec<u8>>(6)?),
            })
        },
    )?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}

pub(super) fn verify_audit(conn: &Connection) -> Result<ChainReport> {
    let mut stmt = conn.prepare("SELECT seq, at, actor, action, subject, detail, prev_hash, hash FROM audit_log ORDER BY seq")?;
    let mut rows = stmt.query(())?;
    let mut links = Vec::new();
    while let Some(r) = rows.next()? {
        let content = audit_content(r.get(1)?, &r.get::<_, String>(2)?, &r.get::<_, String>(3)?, r.get::<_, Option<String>>(4)?.as_deref(), &r.get::<_, String>(5)?);
        links.push(Link {
            seq: r.get(0)?,
            content_digest: audit::digest(content.as_bytes()),
            prev_hash: hex32(&r.get::<_, Vec<u8>>(6)?)?,
            hash: hex32(&r.get::<_, Vec<u8>>(7)?)?,
        });
    }
    Ok(chain_report(audit::verify(links)))
}

// ------------------------------------------------------------------------------ minimisation

pub(super) fn add_drops(conn: &Connection, source_id: i64, drops: &[(DropKey, u64)], now: i64) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO minimisation_counts(source_id, event, field, reason, count, first_at, last_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
         ON CONFLICT(source_id, event, field, reason) DO UPDATE SET count = minimisation_counts.count + excluded.count, last_at = excluded.last_at",
    )?;
    for (k, n) in drops {
        stmt.execute(params![source_id, k.event, k.field, k.reason, *n as i64, now])?;
    }
    Ok(())
}

pub(super) fn minimisation(conn: &Connection) -> Result<Vec<MinimisationRow>> {
    let mut stmt = conn.prepare_cached(
        // Summed: on PostgreSQL each batch appends its own row (see its migration 0003).
        "SELECT s.name, m.event, m.field, m.reason, CAST(sum(m.count) AS INTEGER) AS n, min(m.first_at), max(m.last_at) FROM minimisation_counts m
         JOIN sources s ON s.id = m.source_id GROUP BY s.name, m.event, m.field, m.reason ORDER BY n DESC, s.name, m.event, m.field",
    )?;
    let rows = stmt.query_map((), |r| {
        Ok(MinimisationRow { source: r.get(0)?, event: r.get(1)?, field: r.get(2)?, reason: r.get(3)?, count: r.get(4)?, first_at: r.get(5)?, last_at: r.get(6)? })
    })?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}

// ------------------------------------------------------------------------------ rights requests

fn dsr_row(r: &Row<'_>) -> crate::sql::Result<DsrView> {
    let kind: String = r.get(2)?;
    let deadline: i64 = r.get(8)?;
    let completed: Option<i64> = r.get(9)?;
    Ok(DsrView {
        id: r.get(0)?,
        receipt_id: r.get(1)?,
        kind: DsrKind::from_name(&kind).unwrap_or(DsrKind::Access),
        status: r.get(3)?,
        profile: r.get::<_, Option<i64>>(4)?.map(|p| ProfileId(p).to_string()),
        subject_ref: r.get(5)?,
        actor: r.get(6)?,
        channel: r.get(10)?,
        requested_at: r.get(7)?,
        deadline,
        completed_at: completed,
        overdue: completed.is_none() && super::now_millis() > deadline,
        detail: serde_json::from_str(&r.get::<_, String>(11)?).unwrap_or(Value::Null),
    })
}

const DSR_COLUMNS: &str = "id, receipt_id, kind, status, profile_id, subject_ref, actor, requested_at, deadline, completed_at, channel, detail FROM dsr_requests";

pub(super) fn dsr_get(conn: &Connection, id: i64) -> Result<Option<DsrView>> {
    Ok(conn.prepare_cached(&format!("SELECT {DSR_COLUMNS} WHERE id = ?1"))?.query_row([id], dsr_row).optional()?)
}

pub(super) fn dsr_list(conn: &Connection, open_only: bool, limit: usize) -> Result<Vec<DsrView>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {DSR_COLUMNS} WHERE (?1 = 0 OR completed_at IS NULL) ORDER BY id DESC LIMIT ?2"))?;
    let rows = stmt.query_map(params![open_only as i64, limit.clamp(1, 1000) as i64], dsr_row)?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}

pub(super) fn dsr_create(conn: &Connection, d: &DsrInput) -> Result<DsrView> {
    let id = conn.insert_id(
        "INSERT INTO dsr_requests(receipt_id, kind, status, profile_id, subject_ref, actor, channel, requested_at, deadline)
         VALUES (?1, ?2, 'received', ?3, ?4, ?5, ?6, ?7, ?8)",
        params![random_id("dsr"), d.kind.as_str(), d.profile.map(|p| p.0), d.subject_ref, d.actor, d.channel, d.requested_at, d.requested_at + DSR_DEADLINE_MS],
    )?;
    dsr_get(conn, id)?.ok_or(StoreError::NotFound("request"))
}

pub(super) fn dsr_finish(conn: &Connection, id: i64, status: &str, detail: &Value, now: i64) -> Result<DsrView> {
    let n = conn
        .prepare_cached("UPDATE dsr_requests SET status = ?1, detail = ?2, completed_at = ?3 WHERE id = ?4 AND completed_at IS NULL")?
        .execute(params![status, detail.to_string(), now, id])?;
    if n == 0 {
        return Err(StoreError::Conflict(format!("request {id} does not exist or is already closed")));
    }
    dsr_get(conn, id)?.ok_or(StoreError::NotFound("request"))
}

pub(super) fn requests_of(conn: &Connection, root: i64) -> Result<Vec<DsrView>> {
    let mut stmt = conn.prepare_cached(&format!("{MEMBERS} SELECT {DSR_COLUMNS} WHERE profile_id IN m ORDER BY id"))?;
    let rows = stmt.query_map([root], dsr_row)?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}

// ------------------------------------------------------------------------------ restriction, rectification

pub(super) fn set_restricted(conn: &Connection, id: i64, on: bool, actor: &str, now: i64) -> Result<bool> {
    let root = root_of(conn, id)?.ok_or(StoreError::NotFound("profile"))?;
    let n = if on {
        let already: bool = conn
            .prepare_cached(&format!("{MEMBERS} SELECT EXISTS(SELECT 1 FROM subject_flags WHERE profile_id IN m)"))?
            .query_row([root], |r| r.get(0))?;
        if already {
            0
        } else {
            conn.prepare_cached("INSERT INTO subject_flags(profile_id, restricted_at, restricted_by) VALUES (?1, ?2, ?3)")?.execute(params![root, now, actor])?
        }
    } else {
        conn.prepare_cached(&format!("{MEMBERS} DELETE FROM subject_flags WHERE profile_id IN m"))?.execute([root])?
    };
    Ok(n > 0)
}

pub(super) fn restriction(conn: &Connection, root: i64) -> Result<Option<(i64, String)>> {
    Ok(conn
        .prepare_cached(&format!("{MEMBERS} SELECT restricted_at, restricted_by FROM subject_flags WHERE profile_id IN m LIMIT 1"))?
        .query_row([root], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// Sets (or, with `None`, removes) a trait on the live profile, with the rights desk as its
/// source and the request as its provenance; the stored messages that carried the key are
/// corrected too. Trait keys are plan keys (checked by the caller), so they quote safely.
pub(super) fn rectify(conn: &Connection, id: i64, key: &str, value: Option<&Value>, encrypt_with: Option<&[u8; 32]>, dsr: i64, now: i64) -> Result<()> {
    let root = root_of(conn, id)?.ok_or(StoreError::NotFound("profile"))?;
    let stored: Option<String> = match (value, encrypt_with) {
        (Some(v), Some(master)) => Some(super::crypt::seal_json(&super::crypt::subject_key(conn, master, root)?, root, &v.to_string())),
        (Some(v), None) => Some(v.to_string()),
        (None, _) => None,
    };
    let source: i64 = conn.query_row("SELECT id FROM sources WHERE name = '(rights desk)'", (), |r| r.get(0))?;
    // The tree's other rows for the key would lose to the new one by time; remove them so that
    // the inaccurate value is not kept either.
    conn.prepare_cached(&format!("{MEMBERS} DELETE FROM traits WHERE profile_id IN m AND key = ?2"))?.execute(params![root, key])?;
    if let Some(v) = &stored {
        conn.prepare_cached("INSERT INTO traits(profile_id, key, value, ts, source_id, message_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
            .execute(params![root, key, v, now, source, format!("dsr-{dsr}")])?;
    }
    // The stored messages that carried the inaccurate value are corrected too (Art. 16: the
    // data must be accurate wherever it is kept), in `traits` and `context.traits`.
    if conn.is_postgres() {
        // The same on PostgreSQL, through jsonb (the body is kept as text).
        for path in [format!("{{traits,\"{key}\"}}"), format!("{{context,traits,\"{key}\"}}")] {
            let sql = match value {
                Some(_) => format!("{MEMBERS} UPDATE events SET body = jsonb_set(body::jsonb, CAST(?2 AS TEXT)::text[], CAST(?3 AS TEXT)::jsonb)::text WHERE profile_id IN m AND (body::jsonb #> CAST(?2 AS TEXT)::text[]) IS NOT NULL"),
                None => format!("{MEMBERS} UPDATE events SET body = (body::jsonb #- CAST(?2 AS TEXT)::text[])::text WHERE profile_id IN m AND (body::jsonb #> CAST(?2 AS TEXT)::text[]) IS NOT NULL AND CAST(?3 AS TEXT) IS NULL"),
            };
            conn.prepare_cached(&sql)?.execute(params![root, path, stored])?;
        }
        return Ok(());
    }
    for path in [format!("$.traits.\"{key}\""), format!("$.context.traits.\"{key}\"")] {
        let sql = match value {
            Some(_) => format!("{MEMBERS} UPDATE events SET body = json_set(body, ?2, json(?3)) WHERE profile_id IN m AND json_type(body, ?2) IS NOT NULL"),
            None => format!("{MEMBERS} UPDATE events SET body = json_remove(body, ?2) WHERE profile_id IN m AND json_type(body, ?2) IS NOT NULL AND ?3 IS NULL"),
        };
        conn.prepare_cached(&sql)?.execute(params![root, path, stored])?;
    }
    Ok(())
}

// ------------------------------------------------------------------------------ erasure

pub(super) fn erase(conn: &Connection, req: &ErasureRequest, now: i64) -> Result<ErasureReport> {
    let root = root_of(conn, req.profile.0)?.ok_or(StoreError::NotFound("profile"))?;
    let mut report = ErasureReport::default();
    let mut stmt = conn.prepare_cached(&format!("{MEMBERS} SELECT kind, value FROM identities WHERE profile_id IN m"))?;
    report.identifiers =
        stmt.query_map([root], |r| Ok(Identifier::new(kind_of(r.get(0)?), r.get::<_, String>(1)?)))?.collect::<std::result::Result<_, _>>()?;
    let run = |sql: &str| -> Result<u64> { Ok(conn.prepare_cached(&format!("{MEMBERS} {sql}"))?.execute([root])? as u64) };
    // Every destination that received the subject's data is told (Art. 17(2)), in the same
    // transaction: the request carries the identifiers it needs until it is delivered.
    let subject_ref = match report.identifiers.first() {
        Some(id) if req.tombstone_key != [0; 32] => hex::encode(audit::identifier_hash(&req.tombstone_key, id.kind, &id.value)),
        _ => format!("profile:{}", ProfileId(root)),
    };
    let ids: Vec<Value> = report.identifiers.iter().map(|i| serde_json::json!({"type": i.kind.as_str(), "value": i.value})).collect();
    let payload = serde_json::json!({"type": "erasure", "identifiers": ids, "request": req.dsr});
    report.forwarded = super::activation::rights_enqueue_root(conn, root, req.dsr, "erasure", &subject_ref, &payload, now)?;
    report.activation_rows = super::activation::erase_subject(conn, root)?;
    report.activation_rows += super::portal::erase_subject(conn, root)?;
    // The keys first: whatever else may survive somewhere (a backup) cannot be decrypted.
    report.keys_destroyed = run("DELETE FROM subject_keys WHERE profile_id IN m")?;
    if conn.is_postgres() {
        // PostgreSQL deduplicates through a table of its own: the message ids go too.
        run("DELETE FROM event_ids WHERE (source_id, message_id) IN (SELECT source_id, message_id FROM events WHERE profile_id IN m)")?;
    }
    report.events = run("DELETE FROM events WHERE profile_id IN m")?;
    report.traits = run("DELETE FROM traits WHERE profile_id IN m")?;
    report.traits += run("DELETE FROM computed_traits WHERE profile_id IN m")?;
    report.audience_rows = run("DELETE FROM audience_members WHERE profile_id IN m")?;
    report.audience_rows += run("DELETE FROM audience_history WHERE profile_id IN m")?;
    report.identities = run("DELETE FROM identities WHERE profile_id IN m")?;
    report.conflicts = run("DELETE FROM identity_conflicts WHERE profile_id IN m")?;
    run("DELETE FROM match_reviews WHERE profile_a IN m OR profile_b IN m")?;
    run("UPDATE identity_conflicts SET other_id = NULL WHERE other_id IN m")?;
    run("DELETE FROM merge_blocks WHERE profile_a IN m OR profile_b IN m")?;
    report.merges = run("DELETE FROM merges WHERE into_profile IN m OR from_profile IN m")?;
    report.receipts_cleared = run(
        "UPDATE consent_receipts SET profile_id = NULL, identifier_kind = NULL, identifier = NULL, evidence = NULL, salt = NULL, erased = 1
         WHERE profile_id IN m",
    )?;
    run("DELETE FROM subject_flags WHERE profile_id IN m")?;
    run("UPDATE dsr_requests SET profile_id = NULL WHERE profile_id IN m")?;
    report.profiles = run("DELETE FROM profiles WHERE id IN m")?;
    // Quarantined import rows that name the subject.
    let mut q = conn.prepare_cached("DELETE FROM quarantine WHERE instr(lower(raw), lower(?1)) > 0")?;
    for id in &report.identifiers {
        report.quarantined_rows += q.execute([&id.value])? as u64;
    }
    if req.tombstones {
        let mut ins = conn.prepare_cached(
            "INSERT INTO tombstones(hash, erased_at, suppress) VALUES (?1, ?2, ?3)
             ON CONFLICT(hash) DO UPDATE SET suppress = max(tombstones.suppress, excluded.suppress), erased_at = excluded.erased_at",
        )?;
        for id in &report.identifiers {
            ins.execute(params![&audit::identifier_hash(&req.tombstone_key, id.kind, &id.value)[..], now, req.suppress as i64])?;
            report.tombstones += 1;
        }
    }
    let detail = serde_json::to_value(&report).unwrap_or(Value::Null);
    if let Some(dsr) = req.dsr {
        dsr_finish(conn, dsr, "completed", &detail, now)?;
    }
    let mut entry = req.audit.clone();
    entry.subject = Some(ProfileId(root));
    if let Value::Object(m) = &mut entry.detail {
        m.insert("removed".into(), detail);
    }
    append_audit(conn, &[entry], now)?;
    Ok(report)
}

/// After a backup is restored: erases again every subject holding an identifier that has a
/// tombstone. Returns the subjects erased.
pub(super) fn reapply_tombstones(conn: &Connection, key: &[u8; 32], actor: &str, now: i64) -> Result<u64> {
    let stones: std::collections::HashSet<Vec<u8>> =
        conn.prepare("SELECT hash FROM tombstones")?.query_map((), |r| r.get(0))?.collect::<std::result::Result<_, _>>()?;
    if stones.is_empty() {
        return Ok(0);
    }
    let mut hits = Vec::new();
    let mut stmt = conn.prepare("SELECT kind, value, profile_id FROM identities")?;
    let mut rows = stmt.query(())?;
    while let Some(r) = rows.next()? {
        let kind: IdKind = kind_of(r.get(0)?);
        let value: String = r.get(1)?;
        if stones.contains(&audit::identifier_hash(key, kind, &value)[..]) {
            hits.push(r.get::<_, i64>(2)?);
        }
    }
    drop(rows);
    let mut erased = 0;
    for p in hits {
        if root_of(conn, p)?.is_none() {
            continue;
        }
        let req = ErasureRequest {
            profile: ProfileId(p),
            tombstone_key: *key,
            suppress: false,
            tombstones: false,
            dsr: None,
            audit: AuditEntry { actor: actor.to_owned(), action: "dsr.erasure.reapplied".into(), subject: None, detail: serde_json::json!({}) },
        };
        erase(conn, &req, now)?;
        erased += 1;
    }
    Ok(erased)
}

pub(super) fn tombstone_hashes(conn: &Connection, suppress_only: bool) -> Result<Vec<[u8; 32]>> {
    let mut stmt = conn.prepare_cached("SELECT hash FROM tombstones WHERE ?1 = 0 OR suppress = 1")?;
    let rows = stmt.query_map([suppress_only as i64], |r| r.get::<_, Vec<u8>>(0))?;
    rows.map(|r| hex32(&r?)).collect()
}

// ------------------------------------------------------------------------------ export

pub(super) fn export(conn: &Connection, id: i64) -> Result<SubjectExport> {
    let profile = super::read::profile(conn, id)?.ok_or(StoreError::NotFound("profile"))?;
    let root = profile.id.0;
    let mut events = Vec::new();
    let mut stmt = conn.prepare_cached(&format!("{MEMBERS} SELECT seq, ts, body FROM events WHERE profile_id IN m ORDER BY ts, seq"))?;
    let mut rows = stmt.query([root])?;
    while let Some(r) = rows.next()? {
        events.push(crate::EventView {
            seq: r.get(0)?,
            timestamp: r.get(1)?,
            body: crate::RawValue::from_string(r.get(2)?).map_err(|e| StoreError::Conflict(format!("stored event is not JSON: {e}")))?,
        });
    }
    Ok(SubjectExport {
        receipts: receipts(conn, root)?,
        merges: super::read::merges(conn, root)?,
        conflicts: super::read::conflicts(conn, root)?,
        restricted: restriction(conn, root)?,
        requests: requests_of(conn, root)?,
        profile,
        events,
    })
}

// ------------------------------------------------------------------------------ retention

/// Live profiles (roots) after `after`, in id order, with their last activity and record.
pub(super) fn retention_batch(conn: &Connection, after: i64, limit: usize) -> Result<Vec<(i64, i64, SubjectRecord)>> {
    let roots: Vec<(i64, i64)> = conn
        .prepare_cached("SELECT id, created_at FROM profiles WHERE merged_into IS NULL AND id > ?1 ORDER BY id LIMIT ?2")?
        .query_map(params![after, limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<std::result::Result<_, _>>()?;
    let mut last = conn.prepare_cached(&format!("{MEMBERS} SELECT max(ts) FROM events WHERE profile_id IN m"))?;
    let mut out = Vec::with_capacity(roots.len());
    for (root, created) in roots {
        let last_activity: Option<i64> = last.query_row([root], |r| r.get(0))?;
        out.push((root, last_activity.unwrap_or(created).max(created), subject_record(conn, root)?));
    }
    Ok(out)
}

pub(super) fn apply_retention(
    conn: &Connection,
    subjects: &[(i64, i64, RetentionRule)],
    now: i64,
    report: &mut RetentionReport,
) -> Result<()> {
    const DAY: i64 = 86_400_000;
    for (root, last_activity, rule) in subjects {
        report.subjects_examined += 1;
        if let Some(days) = rule.subject_days {
            if *last_activity < now - i64::from(days) * DAY {
                let req = ErasureRequest {
                    profile: ProfileId(*root),
                    tombstone_key: [0; 32],
                    suppress: false,
                    tombstones: false,
                    dsr: None,
                    audit: AuditEntry {
                        actor: "retention".into(),
                        action: "retention.erase".into(),
                        subject: None,
                        detail: serde_json::json!({"inactive_days": (now - last_activity) / DAY, "limit_days": days}),
                    },
                };
                let r = erase(conn, &req, now)?;
                report.subjects_erased += 1;
                report.events_deleted += r.events;
                continue;
            }
        }
        for (category, days) in &rule.categories {
            let cutoff = days.map_or(i64::MAX, |d| now - i64::from(d) * DAY);
            if conn.is_postgres() {
                conn.prepare_cached(&format!(
                    "{MEMBERS} DELETE FROM event_ids WHERE (source_id, message_id) IN (SELECT source_id, message_id FROM events WHERE profile_id IN m AND category = ?2 AND ts < ?3)"
                ))?
                .execute(params![root, category, cutoff])?;
            }
            let n = conn
                .prepare_cached(&format!("{MEMBERS} DELETE FROM events WHERE profile_id IN m AND category = ?2 AND ts < ?3"))?
                .execute(params![root, category, cutoff])? as u64;
            if n > 0 {
                report.events_deleted += n;
                *report.events_by_category.entry(category.clone()).or_default() += n;
            }
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------ register

pub(super) fn register_counts(conn: &Connection, trait_categories: &BTreeMap<String, String>) -> Result<RegisterCounts> {
    let mut c = RegisterCounts {
        subjects: conn.query_row("SELECT count(*) FROM profiles WHERE merged_into IS NULL", (), |r| r.get::<_, i64>(0))? as u64,
        receipts: conn.query_row("SELECT count(*) FROM consent_receipts WHERE erased = 0", (), |r| r.get::<_, i64>(0))? as u64,
        requests: conn.query_row("SELECT count(*) FROM dsr_requests", (), |r| r.get::<_, i64>(0))? as u64,
        ..Default::default()
    };
    // Subjects (live roots) per event category and per trait category.
    let root_of_profile = |p: i64| -> Result<Option<i64>> { root_of(conn, p) };
    let mut per_cat: BTreeMap<String, std::collections::HashSet<i64>> = BTreeMap::new();
    let mut stmt = conn.prepare("SELECT DISTINCT category, profile_id FROM events WHERE category IS NOT NULL")?;
    let mut rows = stmt.query(())?;
    while let Some(r) = rows.next()? {
        if let Some(root) = root_of_profile(r.get(1)?)? {
            per_cat.entry(r.get(0)?).or_default().insert(root);
        }
    }
    drop(rows);
    let mut stmt = conn.prepare("SELECT DISTINCT key, profile_id FROM traits")?;
    let mut rows = stmt.query(())?;
    while let Some(r) = rows.next()? {
        let key: String = r.get(0)?;
        if let (Some(cat), Some(root)) = (trait_categories.get(&key), root_of_profile(r.get(1)?)?) {
            per_cat.entry(cat.clone()).or_default().insert(root);
        }
    }
    drop(rows);
    c.subjects_by_category = per_cat.into_iter().map(|(k, v)| (k, v.len() as u64)).collect();
    let mut stmt = conn.prepare("SELECT s.name, count(e.seq) FROM sources s LEFT JOIN events e ON e.source_id = s.id GROUP BY s.id ORDER BY s.name")?;
    c.events_by_source = stmt.query_map((), |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?.collect::<std::result::Result<_, _>>()?;
    Ok(c)
}

// ------------------------------------------------------------------------------ quality

pub(super) fn quality(conn: &Connection) -> Result<Vec<QualitySource>> {
    let sources: Vec<(i64, String)> =
        conn.prepare("SELECT id, name FROM sources ORDER BY name")?.query_map((), |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<std::result::Result<_, _>>()?;
    let mut out = Vec::new();
    for (id, name) in sources {
        let (events, profiles, last_event): (i64, i64, Option<i64>) = conn
            .prepare_cached("SELECT count(*), count(DISTINCT profile_id), max(received_at) FROM events WHERE source_id = ?1")?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        let merges: i64 = conn.prepare_cached("SELECT count(*) FROM merges WHERE source_id = ?1 AND undone_at IS NULL")?.query_row([id], |r| r.get(0))?;
        let mut quarantined = BTreeMap::new();
        let mut stmt = conn.prepare_cached("SELECT field || ':' || reason, count(*) FROM quarantine WHERE source_id = ?1 GROUP BY 1")?;
        for row in stmt.query_map([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (k, n) = row?;
            quarantined.insert(k, n as u64);
        }
        let mut rejected = BTreeMap::new();
        let mut stmt = conn.prepare_cached("SELECT substr(outcome, 10), sum(count) FROM ingest_counts WHERE source_id = ?1 AND outcome LIKE 'rejected:%' GROUP BY 1")?;
        for row in stmt.query_map([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (k, n) = row?;
            rejected.insert(k, n as u64);
        }
        let mut fields = Vec::new();
        let mut stmt = conn.prepare_cached(
            "SELECT key, count(*), count(DISTINCT value), max(ts), sum(CASE WHEN value LIKE '{\"$enc\"%' THEN 1 ELSE 0 END) FROM traits WHERE source_id = ?1 GROUP BY key ORDER BY key",
        )?;
        for row in stmt.query_map([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?, r.get::<_, i64>(4)?)))? {
            let (field, present, distinct, last, encrypted) = row?;
            fields.push(QualityField {
                field,
                present: present as u64,
                completeness: if profiles > 0 { (present as f64 / profiles as f64).min(1.0) } else { 0.0 },
                uniqueness: (encrypted == 0 && present > 0).then(|| distinct as f64 / present as f64),
                last_updated: last,
                invalid: 0,
                validity: 1.0,
            });
        }
        out.push(QualitySource { source: name, profiles: profiles as u64, events: events as u64, last_event, merges: merges as u64, quarantined, rejected, fields });
    }
    Ok(out)
}

// ------------------------------------------------------------------------------ probabilistic matching

/// Every profile's parent (None for roots), read at once, for jobs that walk all profiles.
pub(super) fn parents(conn: &Connection) -> Result<HashMap<i64, Option<i64>>> {
    let mut parent = HashMap::new();
    let mut stmt = conn.prepare("SELECT id, merged_into FROM profiles")?;
    for row in stmt.query_map((), |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?)))? {
        let (id, p) = row?;
        parent.insert(id, p);
    }
    Ok(parent)
}

/// The root of a profile's tree in a parent map (bounded: a corrupted cycle stops).
pub(super) fn root_in(parent: &HashMap<i64, Option<i64>>, mut id: i64) -> i64 {
    for _ in 0..10_000 {
        match parent.get(&id) {
            Some(Some(p)) => id = *p,
            _ => break,
        }
    }
    id
}

/// The events named `names`, each with the root of its profile's tree, in time order.
pub(super) fn events_named(conn: &Connection, names: &[String]) -> Result<Vec<crate::NamedEvent>> {
    let parent = parents(conn)?;
    let mut out = Vec::new();
    let mut stmt = conn.prepare("SELECT profile_id, ts, event, body FROM events WHERE type = 'track' AND event = ?1")?;
    for name in names {
        let mut rows = stmt.query([name])?;
        while let Some(r) = rows.next()? {
            let body: String = r.get(3)?;
            out.push(crate::NamedEvent {
                profile: ProfileId(root_in(&parent, r.get(0)?)),
                timestamp: r.get(1)?,
                event: r.get(2)?,
                body: serde_json::from_str(&body).unwrap_or(Value::Null),
            });
        }
    }
    out.sort_by_key(|e| e.timestamp);
    Ok(out)
}

/// Replaces every value of the computed `keys` with `rows` (profile, key, value).
pub(super) fn replace_computed(conn: &Connection, keys: &[String], rows: &[(ProfileId, String, Value)], now: i64) -> Result<u64> {
    let mut del = conn.prepare_cached("DELETE FROM computed_traits WHERE key = ?1")?;
    for k in keys {
        del.execute([k])?;
    }
    let mut ins = conn.prepare_cached("INSERT INTO computed_traits(profile_id, key, value, computed_at) SELECT CAST(?1 AS BIGINT), CAST(?2 AS TEXT), CAST(?3 AS TEXT), CAST(?4 AS BIGINT) WHERE EXISTS (SELECT 1 FROM profiles WHERE id = ?1)
         ON CONFLICT (profile_id, key) DO UPDATE SET value = excluded.value, computed_at = excluded.computed_at")?;
    let mut n = 0;
    for (p, k, v) in rows {
        n += ins.execute(params![p.0, k, v.to_string(), now])? as u64;
    }
    Ok(n)
}

/// The computed traits of a profile's tree (key → value and when it was computed).
pub(super) fn computed_traits(conn: &Connection, id: i64) -> Result<Vec<crate::ComputedTrait>> {
    let Some(root) = root_of(conn, id)? else { return Ok(Vec::new()) };
    let mut stmt = conn.prepare_cached(&format!("{MEMBERS} SELECT key, value, computed_at FROM computed_traits WHERE profile_id IN m ORDER BY key"))?;
    let rows = stmt.query_map([root], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (key, value, computed_at) = row?;
        out.push(crate::ComputedTrait { key, value: serde_json::from_str(&value).unwrap_or(Value::Null), computed_at });
    }
    Ok(out)
}

/// Deletes a profile tree's computed traits (objection to the purpose they serve).
pub(super) fn clear_computed(conn: &Connection, id: i64) -> Result<u64> {
    let Some(root) = root_of(conn, id)? else { return Ok(0) };
    Ok(conn.prepare_cached(&format!("{MEMBERS} DELETE FROM computed_traits WHERE profile_id IN m"))?.execute([root])? as u64)
}

pub(super) fn match_candidates(conn: &Connection, master: &[u8; 32], keys: &[String]) -> Result<Vec<MatchCandidate>> {
    let parent = parents(conn)?;
    let root = |id: i64| root_in(&parent, id);
    let mut values: BTreeMap<i64, BTreeMap<String, (i64, String)>> = BTreeMap::new();
    for id in parent.keys() {
        if parent[id].is_none() {
            values.entry(*id).or_default();
        }
    }
    let mut crypt_keys = HashMap::new();
    let mut stmt = conn.prepare("SELECT profile_id, key, value, ts FROM traits")?;
    let mut rows = stmt.query(())?;
    while let Some(r) = rows.next()? {
        let key: String = r.get(1)?;
        if !keys.contains(&key) {
            continue;
        }
        let mut v: Value = serde_json::from_str(&r.get::<_, String>(2)?).unwrap_or(Value::Null);
        super::crypt::open_value(conn, master, &mut v, &mut crypt_keys)?;
        let text = match v {
            Value::String(s) => s,
            Value::Null => continue,
            other => other.to_string(),
        };
        let ts: i64 = r.get(3)?;
        let slot = values.entry(root(r.get(0)?)).or_default();
        match slot.get(&key) {
            Some((t, _)) if *t > ts => {}
            _ => {
                slot.insert(key, (ts, text));
            }
        }
    }
    drop(rows);
    let mut stmt = conn.prepare("SELECT kind, value, profile_id FROM identities WHERE kind IN (1, 2)")?;
    for row in stmt.query_map((), |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))? {
        let (kind, value, profile) = row?;
        let key = if kind == 1 { "email" } else { "phone" };
        if keys.iter().any(|k| k == key) {
            values.entry(root(profile)).or_default().entry(key.to_owned()).or_insert((0, value));
        }
    }
    Ok(values.into_iter().map(|(p, v)| MatchCandidate { profile: ProfileId(p), values: v.into_iter().map(|(k, (_, v))| (k, v)).collect() }).collect())
}

/// Merges two live profiles judged the same person (`upper`), or queues the pair for review.
/// Merge protection holds: two trees that both hold a user id are queued, never merged
/// automatically; trees a person separated are left alone.
#[allow(clippy::too_many_arguments)]
pub(super) fn merge_probable(conn: &Connection, a: i64, b: i64, probability: f64, evidence: &Value, upper: bool, actor: &str, now: i64) -> Result<MatchDecision> {
    let (Some(ra), Some(rb)) = (root_of(conn, a)?, root_of(conn, b)?) else { return Err(StoreError::NotFound("profile")) };
    if ra == rb {
        return Ok(MatchDecision::AlreadyDone);
    }
    let (x, y) = (ra.min(rb), ra.max(rb));
    let reviewed: bool = conn.prepare_cached("SELECT EXISTS(SELECT 1 FROM match_reviews WHERE profile_a = ?1 AND profile_b = ?2)")?.query_row(params![x, y], |r| r.get(0))?;
    if reviewed {
        return Ok(MatchDecision::AlreadyDone);
    }
    if blocked(conn, ra, rb)? {
        // A person separated them (an unmerge, a rejected review): not proposed again.
        return Ok(MatchDecision::AlreadyDone);
    }
    let protected = both_have_user_ids(conn, ra, rb)?;
    if upper && !protected {
        merge_roots(conn, ra, rb, "probabilistic", &json_with(evidence, probability), actor, now)?;
        return Ok(MatchDecision::Merged);
    }
    conn.prepare_cached("INSERT INTO match_reviews(at, profile_a, profile_b, probability, evidence, status) VALUES (?1, ?2, ?3, ?4, ?5, 'open')")?
        .execute(params![now, x, y, probability, evidence.to_string()])?;
    Ok(if protected && upper { MatchDecision::Protected } else { MatchDecision::Queued })
}

fn json_with(evidence: &Value, probability: f64) -> Value {
    let mut e = evidence.clone();
    if let Value::Object(m) = &mut e {
        m.insert("probability".into(), probability.into());
    }
    e
}

/// Merge protection: two trees that each hold a user id are two accounts.
fn both_have_user_ids(conn: &Connection, ra: i64, rb: i64) -> Result<bool> {
    let user_ids = |r: i64| -> Result<i64> {
        Ok(conn.prepare_cached(&format!("{MEMBERS} SELECT count(*) FROM identities WHERE profile_id IN m AND kind = 0"))?.query_row([r], |x| x.get(0))?)
    };
    Ok(user_ids(ra)? > 0 && user_ids(rb)? > 0)
}

/// An unmerge (or a rejected review) keeps some member of one tree apart from the other.
fn blocked(conn: &Connection, ra: i64, rb: i64) -> Result<bool> {
    Ok(conn
        .prepare_cached(&format!(
            "{MEMBERS} SELECT EXISTS(SELECT 1 FROM merge_blocks WHERE profile_a IN m AND profile_b IN (WITH RECURSIVE n(id) AS (SELECT CAST(?2 AS BIGINT) UNION ALL SELECT p.id FROM profiles p JOIN n ON p.merged_into = n.id) SELECT id FROM n))"
        ))?
        .query_row(params![ra, rb], |r| r.get(0))?)
}

/// Joins the tree of `from`'s root under the older root, recording the merge.
fn merge_roots(conn: &Connection, ra: i64, rb: i64, rule: &str, evidence: &Value, actor: &str, now: i64) -> Result<i64> {
    let created = |r: i64| -> Result<i64> { Ok(conn.prepare_cached("SELECT created_at FROM profiles WHERE id = ?1")?.query_row([r], |x| x.get(0))?) };
    let (into, from) = if (created(ra)?, ra) <= (created(rb)?, rb) { (ra, rb) } else { (rb, ra) };
    let mut ev = evidence.clone();
    if let Value::Object(m) = &mut ev {
        m.insert("decided_by".into(), actor.into());
    }
    let merge_id = conn.insert_id("INSERT INTO merges(at, into_profile, from_profile, rule, evidence) VALUES (?1, ?2, ?3, ?4, ?5)", params![now, into, from, rule, ev.to_string()])?;
    conn.prepare_cached("UPDATE profiles SET merged_into = ?1, merge_id = ?2 WHERE id = ?3")?.execute(params![into, merge_id, from])?;
    Ok(merge_id)
}

fn review_row(r: &Row<'_>) -> crate::sql::Result<ReviewView> {
    Ok(ReviewView {
        id: r.get(0)?,
        at: r.get(1)?,
        profile_a: ProfileId(r.get(2)?).to_string(),
        profile_b: ProfileId(r.get(3)?).to_string(),
        probability: r.get(4)?,
        evidence: serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or(Value::Null),
        status: r.get(6)?,
        decided_at: r.get(7)?,
        decided_by: r.get(8)?,
    })
}

const REVIEW_COLUMNS: &str = "id, at, profile_a, profile_b, probability, evidence, status, decided_at, decided_by FROM match_reviews";

pub(super) fn reviews(conn: &Connection, status: Option<&str>) -> Result<Vec<ReviewView>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {REVIEW_COLUMNS} WHERE CAST(?1 AS TEXT) IS NULL OR status = ?1 ORDER BY probability DESC, id"))?;
    let rows = stmt.query_map([status], review_row)?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}

/// A person's decision on a queued pair: merge them (recorded as a merge that can be undone
/// exactly), or keep them apart for good (recorded as a refused merge and a block).
pub(super) fn decide_review(conn: &Connection, id: i64, merge: bool, actor: &str, now: i64) -> Result<ReviewView> {
    let review = conn.prepare_cached(&format!("SELECT {REVIEW_COLUMNS} WHERE id = ?1"))?.query_row([id], review_row).optional()?.ok_or(StoreError::NotFound("review"))?;
    if review.status != "open" {
        return Err(StoreError::Conflict(format!("review {id} was already decided ({})", review.status)));
    }
    let a = ProfileId::parse(&review.profile_a).map_err(|_| StoreError::NotFound("profile"))?.0;
    let b = ProfileId::parse(&review.profile_b).map_err(|_| StoreError::NotFound("profile"))?.0;
    let (ra, rb) = (root_of(conn, a)?.ok_or(StoreError::NotFound("profile"))?, root_of(conn, b)?.ok_or(StoreError::NotFound("profile"))?);
    let evidence = json_with(&review.evidence, review.probability);
    if merge {
        if ra != rb {
            merge_roots(conn, ra, rb, "probabilistic_reviewed", &evidence, actor, now)?;
        }
    } else {
        let merge_id = merge_roots(conn, ra, rb, "probabilistic_rejected", &evidence, actor, now)?;
        // Recorded as a merge undone at once, and the pair blocked, as an unmerge does.
        conn.prepare_cached("UPDATE profiles SET merged_into = NULL, merge_id = NULL WHERE merge_id = ?1")?.execute([merge_id])?;
        conn.prepare_cached("UPDATE merges SET undone_at = ?1, undone_by = ?2 WHERE id = ?3")?.execute(params![now, actor, merge_id])?;
        let mut block = conn.prepare_cached("INSERT OR IGNORE INTO merge_blocks(profile_a, profile_b, merge_id) VALUES (?1, ?2, ?3)")?;
        block.execute(params![ra, rb, merge_id])?;
        block.execute(params![rb, ra, merge_id])?;
    }
    conn.prepare_cached("UPDATE match_reviews SET status = ?1, decided_at = ?2, decided_by = ?3 WHERE id = ?4")?
        .execute(params![if merge { "merged" } else { "rejected" }, now, actor, id])?;
    Ok(conn.prepare_cached(&format!("SELECT {REVIEW_COLUMNS} WHERE id = ?1"))?.query_row([id], review_row)?)
}
