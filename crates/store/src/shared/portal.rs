//! The privacy centre's codes and sessions in SQLite.

use confidant_core::ids::ProfileId;
use crate::sql::{params, Conn as Connection, OptionalExtension, Row};

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

// ------------------------------------------------------------------------------ console

const USER: &str = "id, email, name, role, password_hash, created_at, created_by, disabled_at, failed_logins, locked_until";

fn user(r: &Row<'_>) -> crate::sql::Result<ConsoleUser> {
    Ok(ConsoleUser {
        id: r.get(0)?,
        email: r.get(1)?,
        name: r.get(2)?,
        role: r.get(3)?,
        password_hash: r.get(4)?,
        created_at: r.get(5)?,
        created_by: r.get(6)?,
        disabled_at: r.get(7)?,
        failed_logins: r.get(8)?,
        locked_until: r.get(9)?,
    })
}

pub(super) fn user_create(conn: &Connection, email: &str, name: &str, role: &str, password_hash: &str, by: &str, now: i64) -> Result<ConsoleUser> {
    let exists: bool = conn.prepare_cached("SELECT EXISTS(SELECT 1 FROM console_users WHERE email = ?1)")?.query_row([email], |r| r.get(0))?;
    if exists {
        return Err(crate::StoreError::Conflict("an account with this email exists already".into()));
    }
    let id = conn.insert_id(
        "INSERT INTO console_users(email, name, role, password_hash, created_at, created_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![email, name, role, password_hash, now, by],
    )?;
    Ok(conn.prepare_cached(&format!("SELECT {USER} FROM console_users WHERE id = ?1"))?.query_row([id], user)?)
}

pub(super) fn user_by_email(conn: &Connection, email: &str) -> Result<Option<ConsoleUser>> {
    Ok(conn.prepare_cached(&format!("SELECT {USER} FROM console_users WHERE email = ?1"))?.query_row([email], user).optional()?)
}

pub(super) fn users(conn: &Connection) -> Result<Vec<ConsoleUser>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {USER} FROM console_users ORDER BY id"))?;
    let rows = stmt.query_map((), user)?.collect::<std::result::Result<_, _>>()?;
    Ok(rows)
}

/// Records a sign-in attempt: a success resets the failures and opens the session; a failure
/// counts, and locks the account until `lock_until` once `max_failures` is reached.
pub(super) fn user_login(conn: &Connection, id: i64, session: Option<&NewSession>, max_failures: i64, lock_until: i64, now: i64) -> Result<()> {
    match session {
        Some(s) => {
            conn.prepare_cached("UPDATE console_users SET failed_logins = 0, locked_until = NULL WHERE id = ?1")?.execute([id])?;
            conn.prepare_cached("DELETE FROM console_sessions WHERE expires_at < ?1")?.execute([now])?;
            conn.prepare_cached("INSERT INTO console_sessions(token_hash, user_id, csrf, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)")?
                .execute(params![s.token_hash, id, s.csrf, now, s.expires_at])?;
        }
        None => {
            conn.prepare_cached(
                "UPDATE console_users SET failed_logins = failed_logins + 1,
                 locked_until = CASE WHEN failed_logins + 1 >= ?2 THEN ?3 ELSE locked_until END WHERE id = ?1",
            )?
            .execute(params![id, max_failures, lock_until])?;
        }
    }
    Ok(())
}

pub(super) fn console_session(conn: &Connection, token_hash: &[u8], now: i64) -> Result<Option<ConsoleSessionView>> {
    let cols: String = USER.split(", ").map(|c| format!("u.{c}")).collect::<Vec<_>>().join(", ");
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {cols}, s.csrf, s.expires_at FROM console_sessions s JOIN console_users u ON u.id = s.user_id
             WHERE s.token_hash = ?1 AND s.expires_at > ?2 AND u.disabled_at IS NULL"
        ))?
        .query_row(params![token_hash, now], |r| Ok(ConsoleSessionView { user: user(r)?, csrf: r.get(10)?, expires_at: r.get(11)? }))
        .optional()?)
}

/// Disables an account (its sessions end with it); `NotFound` when there is none.
pub(super) fn user_disable(conn: &Connection, id: i64, now: i64) -> Result<()> {
    let n = conn.prepare_cached("UPDATE console_users SET disabled_at = coalesce(disabled_at, ?2) WHERE id = ?1")?.execute(params![id, now])?;
    if n == 0 {
        return Err(crate::StoreError::NotFound("account"));
    }
    conn.prepare_cached("DELETE FROM console_sessions WHERE user_id = ?1")?.execute([id])?;
    Ok(())
}

pub(super) fn console_session_end(conn: &Connection, token_hash: &[u8]) -> Result<()> {
    conn.prepare_cached("DELETE FROM console_sessions WHERE token_hash = ?1")?.execute([token_hash])?;
    Ok(())
}

/// Events stored per day (UTC, days since the epoch) since `since`.
pub(super) fn events_per_day(conn: &Connection, since: i64) -> Result<Vec<(i64, u64)>> {
    let mut stmt = conn.prepare_cached("SELECT ts / 86400000 AS d, count(*) FROM events WHERE ts >= ?1 GROUP BY d ORDER BY d")?;
    let rows = stmt.query_map([since], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? as u64)))?.collect::<std::result::Result<_, _>>()?;
    Ok(rows)
}

/// For each purpose, the subjects whose latest decision (scope '') grants it and refuses it.
pub(super) fn consent_rates(conn: &Connection) -> Result<Vec<(String, u64, u64)>> {
    let mut stmt = conn.prepare_cached(
        "WITH latest AS (SELECT c.profile_id, c.purpose, c.granted FROM consent_receipts c
                         WHERE c.scope = '' AND c.profile_id IS NOT NULL
                           AND c.seq = (SELECT max(d.seq) FROM consent_receipts d WHERE d.profile_id = c.profile_id AND d.purpose = c.purpose AND d.scope = ''))
         SELECT purpose, sum(granted), sum(1 - granted) FROM latest GROUP BY purpose ORDER BY purpose",
    )?;
    let rows = stmt
        .query_map((), |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64)))?
        .collect::<std::result::Result<_, _>>()?;
    Ok(rows)
}
