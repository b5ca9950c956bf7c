//! `confidant migrate --from sqlite:PATH --to postgres://...`: copies every table of a SQLite
//! database into an empty PostgreSQL database, in one PostgreSQL transaction, and commits only
//! when every table has the same number of rows and the same checksum on both sides.
//!
//! The checksum of a table is the sum (modulo 2^128) of the SHA-256 of each row's values in a
//! canonical form, so it does not depend on row order (the two databases sort text
//! differently) and any value changed, lost or added in the copy shows.

use std::collections::BTreeSet;

use rusqlite::types::ValueRef;
use sha2::{Digest, Sha256};
use tokio_postgres::types::ToSql;

use crate::postgres::{pg_error, Postgres, PostgresOptions};
use crate::sql::{Owned, PgValue};
use crate::{Result, StoreError};

/// Tables in an order that satisfies every foreign key (profiles' own `merged_into` is set in
/// a second pass).
const TABLES: &[&str] = &[
    "sources",
    "profiles",
    "identities",
    "events",
    "traits",
    "merges",
    "merge_blocks",
    "identity_conflicts",
    "minimisation_counts",
    "ingest_counts",
    "consent_receipts",
    "subject_flags",
    "dsr_requests",
    "tombstones",
    "audit_log",
    "subject_keys",
    "quarantine",
    "match_reviews",
    "computed_traits",
    "audiences",
    "audience_members",
    "audience_history",
    "stock_levels",
    "campaigns",
    "deliveries",
    "destinations",
    "destination_subjects",
    "destination_dead",
    "rights_forwards",
    "portal_codes",
    "portal_sessions",
    "console_users",
    "console_sessions",
];

/// One table's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableCopy {
    pub table: String,
    pub source_rows: u64,
    pub target_rows: u64,
    pub source_checksum: String,
    pub target_checksum: String,
}

impl TableCopy {
    pub fn verified(&self) -> bool {
        self.source_rows == self.target_rows && self.source_checksum == self.target_checksum
    }
}

/// Sum of row digests, and the row count.
#[derive(Default)]
struct Checksum {
    sum: u128,
    rows: u64,
}

impl Checksum {
    fn add(&mut self, row: &[Owned]) {
        let mut h = Sha256::new();
        for v in row {
            match v {
                Owned::Null => h.update(b"n;"),
                Owned::Int(i) => h.update(format!("i{i};")),
                Owned::Real(f) => h.update(format!("r{};", f.to_bits())),
                // Text and bytes alike: what is compared is the bytes stored.
                Owned::Text(t) => h.update(format!("b{}:", t.len()).as_bytes().iter().chain(t.as_bytes()).copied().collect::<Vec<u8>>()),
                Owned::Blob(b) => h.update(format!("b{}:", b.len()).as_bytes().iter().chain(b.iter()).copied().collect::<Vec<u8>>()),
            }
        }
        let d = h.finalize();
        self.sum = self.sum.wrapping_add(u128::from_be_bytes(d[..16].try_into().unwrap_or_default()));
        self.rows += 1;
    }

    fn hex(&self) -> String {
        format!("{:032x}", self.sum)
    }
}

fn owned(v: ValueRef<'_>) -> Owned {
    match v {
        ValueRef::Null => Owned::Null,
        ValueRef::Integer(i) => Owned::Int(i),
        ValueRef::Real(f) => Owned::Real(f),
        ValueRef::Text(t) => Owned::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Owned::Blob(b.to_vec()),
    }
}

fn pg_value(v: &Owned) -> PgValue<'_> {
    match v {
        Owned::Null => PgValue::Null,
        Owned::Int(i) => PgValue::Int(*i),
        Owned::Real(f) => PgValue::Real(*f),
        Owned::Text(t) => PgValue::Text(t),
        Owned::Blob(b) => PgValue::Blob(b),
    }
}

/// Copies the SQLite database at `sqlite_path` (migrated to this binary's schema first) into
/// the PostgreSQL database of `target`, which must hold no data yet. `progress` hears of each
/// table as it is verified. Nothing is committed unless every table verifies.
pub async fn sqlite_to_postgres(sqlite_path: &std::path::Path, target: PostgresOptions, progress: &(dyn Fn(&TableCopy) + Sync)) -> Result<Vec<TableCopy>> {
    if !sqlite_path.is_file() {
        return Err(StoreError::Open(format!("{} is not a SQLite database file", sqlite_path.display())));
    }
    // Bring the file to this binary's schema (as opening it for `serve` would), then read it
    // on a connection of its own.
    let options = crate::SqliteOptions { max_commit_messages: 1_000, rules: target.rules.clone(), master_key: target.master_key };
    let path = sqlite_path.to_owned();
    let store = tokio::task::spawn_blocking(move || crate::Store::open_sqlite(&path, options)).await.map_err(|_| StoreError::ShuttingDown)??;
    store.close().await?;
    let lite = rusqlite::Connection::open_with_flags(sqlite_path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|e| StoreError::Open(e.to_string()))?;

    let pg = Postgres::open(&target).await?;
    let mut client = pg.client().await?;
    let tx = client.transaction().await.map_err(|e| pg_error(&e))?;
    let busy: i64 = tx
        .query_one("SELECT (SELECT count(*) FROM profiles) + (SELECT count(*) FROM events) + (SELECT count(*) FROM consent_receipts) + (SELECT count(*) FROM audit_log)", &[])
        .await
        .map_err(|e| pg_error(&e))?
        .get(0);
    if busy > 0 {
        return Err(StoreError::Conflict("the target PostgreSQL database already holds data: migrate into an empty database".into()));
    }
    // The migrations' own rows (the rights desk's source) are replaced by the source's.
    tx.batch_execute("DELETE FROM sources").await.map_err(|e| pg_error(&e))?;

    let mut report = Vec::new();
    for &table in TABLES {
        let columns: Vec<String> = {
            let mut stmt = lite.prepare(&format!("PRAGMA table_info({table})"))?;
            let cols = stmt.query_map([], |r| r.get::<_, String>(1))?.collect::<rusqlite::Result<Vec<_>>>()?;
            cols
        };
        if columns.is_empty() {
            return Err(StoreError::Open(format!("the SQLite database has no table {table}")));
        }
        let pg_columns: BTreeSet<String> = tx
            .query("SELECT column_name::text FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1", &[&table])
            .await
            .map_err(|e| pg_error(&e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if let Some(missing) = columns.iter().find(|c| !pg_columns.contains(*c)) {
            return Err(StoreError::Open(format!("PostgreSQL's table {table} has no column {missing}: is it at this binary's schema?")));
        }
        let list = columns.join(", ");
        // profiles: merged_into is set once every profile exists.
        let copied: Vec<String> = columns.iter().map(|c| if table == "profiles" && c == "merged_into" { "NULL".to_owned() } else { c.clone() }).collect();
        let mut source = Checksum::default();
        let mut stmt = lite.prepare(&format!("SELECT {list} FROM {table}"))?;
        let mut rows = stmt.query([])?;
        let per_insert = (60_000 / columns.len()).clamp(1, 1_000);
        let mut chunk: Vec<Vec<Owned>> = Vec::with_capacity(per_insert);
        let mut months = BTreeSet::new();
        loop {
            let next = rows.next()?;
            if let Some(r) = next {
                let row: Vec<Owned> = (0..columns.len()).map(|i| r.get_ref(i).map(owned)).collect::<rusqlite::Result<_>>()?;
                source.add(&row);
                if table == "events" {
                    if let Some(Owned::Int(ts)) = columns.iter().position(|c| c == "ts").map(|i| &row[i]) {
                        months.insert(ts.div_euclid(86_400_000));
                    }
                }
                chunk.push(row);
            }
            let last = next.is_none();
            if chunk.len() == per_insert || (last && !chunk.is_empty()) {
                if table == "events" {
                    for day in std::mem::take(&mut months) {
                        tx.query_one("SELECT confidant_event_partition($1)", &[&(day * 86_400_000)]).await.map_err(|e| pg_error(&e))?;
                    }
                }
                insert_rows(&tx, table, &columns, &copied, &chunk).await?;
                chunk.clear();
            }
            if last {
                break;
            }
        }
        drop(rows);
        if table == "profiles" {
            // Second pass: the tree pointers.
            let mut stmt = lite.prepare("SELECT id, merged_into FROM profiles WHERE merged_into IS NOT NULL")?;
            let pairs = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?.collect::<rusqlite::Result<Vec<_>>>()?;
            let update = tx.prepare("UPDATE profiles SET merged_into = $2 WHERE id = $1").await.map_err(|e| pg_error(&e))?;
            for (id, parent) in pairs {
                tx.execute(&update, &[&id, &parent]).await.map_err(|e| pg_error(&e))?;
            }
        }
        if table == "events" {
            tx.batch_execute("INSERT INTO event_ids(source_id, message_id, ts) SELECT source_id, message_id, ts FROM events").await.map_err(|e| pg_error(&e))?;
        }
        // Read back what PostgreSQL now holds.
        let mut target_sum = Checksum::default();
        let back = tx.query(&format!("SELECT {list} FROM {table}"), &[]).await.map_err(|e| pg_error(&e))?;
        for r in &back {
            let row: Vec<Owned> = (0..columns.len()).map(|i| r.try_get::<_, Owned>(i)).collect::<std::result::Result<_, _>>().map_err(|e| pg_error(&e))?;
            target_sum.add(&row);
        }
        let t = TableCopy { table: table.to_owned(), source_rows: source.rows, target_rows: target_sum.rows, source_checksum: source.hex(), target_checksum: target_sum.hex() };
        progress(&t);
        let ok = t.verified();
        report.push(t);
        if !ok {
            return Err(StoreError::Conflict(format!("table {table} does not match after the copy (rows or checksum): nothing was committed")));
        }
    }
    // Identity columns go on from the copied values.
    let identities = tx
        .query(
            "SELECT table_name::text, column_name::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND (is_identity = 'YES' OR column_default LIKE 'nextval%')",
            &[],
        )
        .await
        .map_err(|e| pg_error(&e))?;
    for r in identities {
        let (t, c): (String, String) = (r.get(0), r.get(1));
        tx.execute(&format!("SELECT setval(pg_get_serial_sequence('{t}', '{c}'), coalesce((SELECT max({c}) FROM {t}), 0) + 1, false)"), &[])
            .await
            .map_err(|e| pg_error(&e))?;
    }
    tx.commit().await.map_err(|e| pg_error(&e))?;
    pg.close().await?;
    Ok(report)
}

async fn insert_rows(tx: &deadpool_postgres::Transaction<'_>, table: &str, columns: &[String], copied: &[String], rows: &[Vec<Owned>]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut sql = format!("INSERT INTO {table} ({}) OVERRIDING SYSTEM VALUE VALUES ", columns.join(", "));
    let mut k = 0;
    for (i, _) in rows.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for (j, c) in copied.iter().enumerate() {
            if j > 0 {
                sql.push_str(", ");
            }
            if c == "NULL" {
                sql.push_str("NULL");
            } else {
                k += 1;
                sql.push_str(&format!("${k}"));
            }
        }
        sql.push(')');
    }
    let values: Vec<PgValue<'_>> = rows.iter().flat_map(|r| r.iter().zip(copied).filter(|(_, c)| *c != "NULL").map(|(v, _)| pg_value(v))).collect();
    let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
    tx.execute(sql.as_str(), &params).await.map_err(|e| pg_error(&e))?;
    Ok(())
}
