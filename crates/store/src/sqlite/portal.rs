//! The privacy centre's codes and sessions in SQLite.

use confidant_core::ids::ProfileId;
use rusqlite::{params, Connection, OptionalExtension};

use super::MEMBERS;
use crate::portal::*;
use crate::Result;

/// Stores a code unless `max_recent` codes were issued for the subject since `since`; sweeps
/// expired codes and sessions. True when stored.
pub(super) fn code_issue(conn: &Connection, code: &NewCode, max_recent: u32, since: i64, now: i64) -> Result<bool> {
    // Kept a day after issue (the longest window of the per-person limit), then swept.
    conn.prepare_cached("DELETE FROM portal_codes WHERE created_at < ?1")?.execute([now - 86_400_000])?;
    conn.prepare_cached("DELETE FROM portal_sessions WHERE expires_at < ?1")?.execute([now])?;
    let recent: i64 = conn
        .prepare_cached(&format!("{MEMBERS} SELECT count(*) FROM portal_codes WHERE profile_id IN m AND created_at >= ?2"))?
        .query_row(params![code.profile.0, since], |r| r.get(0))?;
    if recent >= i64::from(max_recent) {
        return Ok(false);
    }
    conn.prepare_cached("INSERT INTO portal_codes(id, profile_id, email, code_hash, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
        .execute(params![code.id, code.profile.0, code.email, code.code_hash, now, code.expires_at])?;
    Ok(true)
}

/// Checks a code with `matches` (given its stored hash) and, when right, unexpired, unused and
/// within its attempts, marks it used and opens the session, in one transaction.
pub(super) fn code_redeem(
    conn: &Connection,
    id: &[u8],
    matches: &dyn Fn(&[u8]) -> bool,
    session: &NewSession,
    max_attempts: u32,
    now: i64,
) -> Result<Redeemed> {
    let row = conn
        .prepare_cached("SELECT profile_id, email, code_hash, expires_at, attempts, used_at FROM portal_codes WHERE id = ?1")?
        .query_row([id], |r| {
            Ok((ProfileId(r.get(0)?), r.get::<_, String>(1)?, r.get::<_, Vec<u8>>(2)?, r.get::<_, i64>(3)?, r.get::<_, i64>(4)?, r.get::<_, Option<i64>>(5)?))
        })
        .optional()?;
    let Some((profile, email, hash, expires_at, attempts, used_at)) = row else { return Ok(Redeemed::Unknown) };
    if used_at.is_some() {
        return Ok(Redeemed::Used { profile });
    }
    if attempts >= i64::from(max_attempts) {
        return Ok(Redeemed::TooMany { profile });
    }
    if expires_at < now {
        return Ok(Redeemed::Expired { profile });
    }
    let attempts = attempts + 1;
    if !matches(&hash) {
        conn.prepare_cached("UPDATE portal_codes SET attempts = ?2 WHERE id = ?1")?.execute(params![id, attempts])?;
        let left = (i64::from(max_attempts) - attempts).max(0) as u32;
        return Ok(if left == 0 { Redeemed::TooMany { profile } } else { Redeemed::Wrong { profile, left } });
    }
    conn.prepare_cached("UPDATE portal_codes SET attempts = ?2, used_at = ?3 WHERE id = ?1")?.execute(params![id, attempts, now])?;
    conn.prepare_cached("INSERT INTO portal_sessions(token_hash, profile_id, email, csrf, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
        .execute(params![session.token_hash, profile.0, email, session.csrf, now, session.expires_at])?;
    Ok(Redeemed::Opened { profile })
}

pub(super) fn session(conn: &Connection, token_hash: &[u8], now: i64) -> Result<Option<SessionView>> {
    Ok(conn
        .prepare_cached("SELECT profile_id, email, csrf, created_at, expires_at FROM portal_sessions WHERE token_hash = ?1 AND expires_at > ?2")?
        .query_row(params![token_hash, now], |r| {
            Ok(SessionView { profile: ProfileId(r.get(0)?), email: r.get(1)?, csrf: r.get(2)?, created_at: r.get(3)?, expires_at: r.get(4)? })
        })
        .optional()?)
}

pub(super) fn session_end(conn: &Connection, token_hash: &[u8]) -> Result<()> {
    conn.prepare_cached("DELETE FROM portal_sessions WHERE token_hash = ?1")?.execute([token_hash])?;
    Ok(())
}

/// Erasure: the subject's codes and sessions.
pub(super) fn erase_subject(conn: &Connection, root: i64) -> Result<u64> {
    let run = |sql: &str| -> Result<u64> { Ok(conn.prepare_cached(&format!("{MEMBERS} {sql}"))?.execute([root])? as u64) };
    Ok(run("DELETE FROM portal_codes WHERE profile_id IN m")? + run("DELETE FROM portal_sessions WHERE profile_id IN m")?)
}
