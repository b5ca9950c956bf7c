//! The limit of this machine: the rows the server stores, inserted straight into SQLite, no
//! server, no parsing, no privacy gate, no identity resolution, with Confidant's schema and
//! durability settings (WAL, synchronous = FULL, secure_delete). Prints one JSON line.
//!
//! `--rows stored` (the default) writes what the server writes for the same messages, into
//! the store's whole schema (every migration): each event under its own person's profile at
//! its own time, a profile and its identifiers the first time a person is seen, and the
//! traits of every message that carries some. `--rows events-only` is the earlier, cheaper
//! baseline: event rows only, into the first migration's schema, all under one profile at one
//! time, so that every index is appended in order.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use anyhow::Result;
use clap::{Parser, ValueEnum};
use confidant_bench::{raw_rows, stored_rows};
use rusqlite::{params, Connection};

#[derive(Clone, Copy, ValueEnum)]
enum Rows {
    Stored,
    EventsOnly,
}

#[derive(Parser)]
struct Args {
    /// A database file to create (removed first).
    #[arg(long)]
    db: std::path::PathBuf,
    #[arg(long, default_value_t = 5000)]
    customers: usize,
    /// Messages per transaction: 100 is one batch per commit; larger shows the bulk limit.
    #[arg(long, default_value_t = 100)]
    rows_per_commit: usize,
    #[arg(long, value_enum, default_value_t = Rows::Stored)]
    rows: Rows,
}

const FIRST_SCHEMA: &str = include_str!("../../../store/migrations/sqlite/0001_foundation.sql");

fn open(args: &Args) -> Result<Connection> {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", args.db.display()));
    }
    let conn = Connection::open(&args.db)?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA secure_delete = ON; PRAGMA foreign_keys = ON; PRAGMA cache_size = -65536;")?;
    match args.rows {
        Rows::EventsOnly => conn.execute_batch(FIRST_SCHEMA)?,
        Rows::Stored => {
            for m in confidant_store::sqlite_migrations() {
                conn.execute_batch(m)?;
            }
        }
    }
    conn.execute("INSERT OR IGNORE INTO sources(id, name, created_at) VALUES (1, 'bench', 0)", [])?;
    Ok(conn)
}

/// Spread-out 63-bit profile ids, as the store draws them at random (splitmix64).
fn profile_id(n: u64) -> i64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 1).max(1) as i64
}

/// Inserts `rows` in transactions of `per_commit`, each row by `insert`; returns the seconds.
fn timed<'a, T>(conn: &mut Connection, rows: &'a [T], per_commit: usize, mut insert: impl FnMut(&rusqlite::Transaction<'_>, &'a T) -> Result<()>) -> Result<f64> {
    let started = Instant::now();
    for chunk in rows.chunks(per_commit) {
        let tx = conn.transaction()?;
        for row in chunk {
            insert(&tx, row)?;
        }
        tx.commit()?;
    }
    Ok(started.elapsed().as_secs_f64())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut conn = open(&args)?;
    let (count, secs) = match args.rows {
        Rows::EventsOnly => {
            let rows = raw_rows(args.customers);
            conn.execute("INSERT INTO profiles(id, created_at) VALUES (1, 0)", [])?;
            let secs = timed(&mut conn, &rows, args.rows_per_commit, |tx, (id, ty, ev, ts, body)| {
                tx.prepare_cached(
                    "INSERT INTO events(source_id, message_id, profile_id, type, event, ts, received_at, body) VALUES (1, ?1, 1, ?2, ?3, ?4, ?4, ?5)",
                )?
                .execute(params![id, ty, ev, ts, body])?;
                Ok(())
            })?;
            (rows.len(), secs)
        }
        Rows::Stored => {
            let rows = stored_rows(args.customers);
            let mut profiles: HashMap<&str, i64> = HashMap::new();
            let mut known: HashSet<(i64, &str)> = HashSet::new();
            let secs = timed(&mut conn, &rows, args.rows_per_commit, |tx, r| {
                let next = profiles.len() as u64;
                let pid = *profiles.entry(r.person.as_str()).or_insert_with(|| profile_id(next));
                if profiles.len() as u64 > next {
                    tx.prepare_cached("INSERT INTO profiles(id, created_at) VALUES (?1, ?2)")?.execute(params![pid, r.ts])?;
                }
                for (kind, value) in &r.identifiers {
                    if known.insert((*kind, value.as_str())) {
                        tx.prepare_cached(
                            "INSERT INTO identities(kind, value, profile_id, created_at, source_id, message_id) VALUES (?1, ?2, ?3, ?4, 1, ?5)",
                        )?
                        .execute(params![kind, value, pid, r.ts, r.message_id])?;
                    }
                }
                tx.prepare_cached(
                    "INSERT INTO events(source_id, message_id, profile_id, type, event, ts, received_at, body, category) VALUES (1, ?1, ?2, ?3, ?4, ?5, ?5, ?6, 'behaviour')",
                )?
                .execute(params![r.message_id, pid, r.kind, r.event, r.ts, r.body])?;
                let mut upsert = tx.prepare_cached(
                    "INSERT INTO traits(profile_id, key, value, ts, source_id, message_id) VALUES (?1, ?2, ?3, ?4, 1, ?5)
                     ON CONFLICT(profile_id, key, source_id) DO UPDATE SET value = excluded.value, ts = excluded.ts,
                         message_id = excluded.message_id
                     WHERE excluded.ts >= traits.ts",
                )?;
                for (key, value) in &r.traits {
                    upsert.execute(params![pid, key, value, r.ts, r.message_id])?;
                }
                Ok(())
            })?;
            (rows.len(), secs)
        }
    };
    let rows_kind = args.rows.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default();
    println!(
        "{}",
        serde_json::json!({"rows": count, "rows_kind": rows_kind, "rows_per_commit": args.rows_per_commit, "seconds": secs, "rows_per_second": count as f64 / secs})
    );
    Ok(())
}
