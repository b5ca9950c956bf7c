//! The limit of this machine: the same event rows inserted straight into SQLite, no server,
//! no parsing, no identity resolution, with Confidant's schema and durability settings
//! (WAL, synchronous = FULL, secure_delete). Prints one JSON line.

use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use confidant_bench::raw_rows;
use rusqlite::{params, Connection};

#[derive(Parser)]
struct Args {
    /// A database file to create (removed first).
    #[arg(long)]
    db: std::path::PathBuf,
    #[arg(long, default_value_t = 5000)]
    customers: usize,
    /// Rows per transaction: 100 is one batch per commit; larger shows the bulk limit.
    #[arg(long, default_value_t = 100)]
    rows_per_commit: usize,
}

const SCHEMA: &str = include_str!("../../../store/migrations/sqlite/0001_foundation.sql");

fn main() -> Result<()> {
    let args = Args::parse();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", args.db.display()));
    }
    let rows = raw_rows(args.customers);
    let mut conn = Connection::open(&args.db)?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA secure_delete = ON; PRAGMA foreign_keys = ON; PRAGMA cache_size = -65536;")?;
    conn.execute_batch(SCHEMA)?;
    conn.execute("INSERT INTO sources(id, name, created_at) VALUES (1, 'bench', 0)", [])?;
    conn.execute("INSERT INTO profiles(id, created_at) VALUES (1, 0)", [])?;
    let started = Instant::now();
    for chunk in rows.chunks(args.rows_per_commit) {
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO events(source_id, message_id, profile_id, type, event, ts, received_at, body) VALUES (1, ?1, 1, ?2, ?3, ?4, ?4, ?5)",
            )?;
            for (id, ty, ev, ts, body) in chunk {
                stmt.execute(params![id, ty, ev, ts, body])?;
            }
        }
        tx.commit()?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"rows": rows.len(), "rows_per_commit": args.rows_per_commit, "seconds": secs, "rows_per_second": rows.len() as f64 / secs})
    );
    Ok(())
}
