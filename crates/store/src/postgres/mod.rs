//! The PostgreSQL backend, under construction (issue 7): the connection pool, versioned
//! migrations with the schema guard (several nodes may start at once: the first migrates
//! under an advisory lock, the others wait and find it done), monthly event partitions that
//! retention drops whole, and job leases so that background jobs run once across nodes.
//! It is not selectable by `database_url` yet: the storage methods are still SQLite's only
//! (ARCHITECTURE.md says what is left).

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::{Result, StoreError};

mod ingest;
mod read;

use confidant_core::ids::IdKind;
use tokio_postgres::GenericClient;

/// The members of the tree rooted at `$1`: prefix of every query that reads a whole profile.
pub(crate) const MEMBERS: &str = "WITH RECURSIVE m(id) AS (SELECT $1::bigint UNION ALL SELECT p.id FROM profiles p JOIN m ON p.merged_into = m.id) ";

/// Identifier kinds as stored (`identities.kind`), as on SQLite.
pub(crate) fn kind_code(k: IdKind) -> i16 {
    match k {
        IdKind::UserId => 0,
        IdKind::Email => 1,
        IdKind::Phone => 2,
        IdKind::AnonymousId => 3,
    }
}

pub(crate) fn kind_of(code: i16) -> IdKind {
    match code {
        0 => IdKind::UserId,
        1 => IdKind::Email,
        2 => IdKind::Phone,
        _ => IdKind::AnonymousId,
    }
}

/// The live root of the tree that profile `id` belongs to, if the profile exists.
pub(crate) async fn root_of<C: GenericClient>(c: &C, id: i64) -> std::result::Result<Option<i64>, tokio_postgres::Error> {
    let row = c
        .query_opt(
            "WITH RECURSIVE up(id, merged_into) AS (SELECT id, merged_into FROM profiles WHERE id = $1
                 UNION ALL SELECT p.id, p.merged_into FROM profiles p JOIN up ON p.id = up.merged_into)
             SELECT id FROM up WHERE merged_into IS NULL",
            &[&id],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Migrations, applied in order; `confidant_schema` records each version applied.
const MIGRATIONS: &[&str] = &[include_str!("../../migrations/postgres/0001_foundation.sql")];

/// The advisory lock migrations run under (any constant shared by every node).
const MIGRATION_LOCK: i64 = 0x636f_6e66_6964_616e;

/// How to reach PostgreSQL.
#[derive(Clone, Debug)]
pub struct PostgresOptions {
    /// `postgres://user[:password]@host[:port]/database`.
    pub url: String,
    /// Connections in the pool.
    pub pool_size: usize,
    /// Attempts to reach the server at start-up, with exponential backoff (0.1 s doubling to
    /// 5 s) between them.
    pub connect_attempts: u32,
}

/// A PostgreSQL error as text without the row values a `DETAIL` may quote (personal data).
pub(crate) fn pg_error(e: &tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(d) => StoreError::Postgres(format!("{} (SQLSTATE {})", d.message(), d.code().code())),
        None if e.is_closed() => StoreError::Postgres("the connection is closed".into()),
        None => StoreError::Postgres("connection or protocol error".into()),
    }
}

/// Where the server is, for messages: host, port and database, never the password.
fn place(cfg: &tokio_postgres::Config) -> String {
    let host = cfg
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(s) => s.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", cfg.get_dbname().unwrap_or("postgres"))
}

pub struct Postgres {
    pool: Pool,
}

impl Postgres {
    /// Connects (retrying with backoff while the server is unreachable) and migrates.
    pub async fn open(o: &PostgresOptions) -> Result<Postgres> {
        let cfg = tokio_postgres::Config::from_str(&o.url)
            .map_err(|_| StoreError::Open("database_url is not a PostgreSQL URL (postgres://user@host:port/database)".into()))?;
        let place = place(&cfg);
        let mut cfg = cfg;
        cfg.connect_timeout(Duration::from_secs(5));
        let manager = Manager::from_config(cfg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager).max_size(o.pool_size.max(1)).build().map_err(|e| StoreError::Open(e.to_string()))?;
        let mut delay = Duration::from_millis(100);
        let mut last = String::new();
        for attempt in 1..=o.connect_attempts.max(1) {
            match pool.get().await {
                Ok(mut client) => {
                    migrate(&mut client).await?;
                    return Ok(Postgres { pool });
                }
                Err(e) => {
                    last = match &e {
                        deadpool_postgres::PoolError::Backend(b) => match pg_error(b) {
                            StoreError::Postgres(m) => m,
                            other => other.to_string(),
                        },
                        other => other.to_string(),
                    };
                    tracing::warn!(attempt, place = %place, "PostgreSQL is not reachable yet");
                    if attempt < o.connect_attempts {
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
        Err(StoreError::Open(format!("cannot reach PostgreSQL at {place} after {} attempts: {last}", o.connect_attempts.max(1))))
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|_| StoreError::Postgres("no connection to PostgreSQL".into()))
    }

    /// The schema version the database is at.
    pub async fn schema_version(&self) -> Result<i64> {
        let c = self.client().await?;
        let row = c.query_one("SELECT coalesce(max(version), 0)::bigint FROM confidant_schema", &[]).await.map_err(|e| pg_error(&e))?;
        Ok(row.get(0))
    }

    /// The name of the month partition that holds `ts` (ms), created if it does not exist.
    pub async fn ensure_partition(&self, ts: i64) -> Result<String> {
        let c = self.client().await?;
        let row = c.query_one("SELECT confidant_event_partition($1)", &[&ts]).await.map_err(|e| pg_error(&e))?;
        Ok(row.get(0))
    }

    /// Retention by partition: drops every month partition that ends at or before `cutoff`
    /// (ms), with the deduplication keys of its events. Returns the partitions dropped.
    pub async fn drop_partitions_before(&self, cutoff: i64) -> Result<Vec<String>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(|e| pg_error(&e))?;
        let rows = tx
            .query(
                "SELECT child.relname::text, pg_get_expr(child.relpartbound, child.oid)
                 FROM pg_inherits JOIN pg_class parent ON parent.oid = pg_inherits.inhparent
                 JOIN pg_class child ON child.oid = pg_inherits.inhrelid
                 WHERE parent.relname = 'events' ORDER BY 1",
                &[],
            )
            .await
            .map_err(|e| pg_error(&e))?;
        let mut dropped = Vec::new();
        for r in rows {
            let (name, bound): (String, String) = (r.get(0), r.get(1));
            // FOR VALUES FROM ('1793491200000') TO ('1796083200000')
            let upper = bound.rsplit("TO (").next().map(|s| s.trim_matches(|c: char| !c.is_ascii_digit() && c != '-')).and_then(|s| s.parse::<i64>().ok());
            if upper.is_some_and(|u| u <= cutoff) {
                tx.batch_execute(&format!("DROP TABLE \"{}\"", name.replace('"', ""))).await.map_err(|e| pg_error(&e))?;
                dropped.push(name);
            }
        }
        if !dropped.is_empty() {
            tx.execute("DELETE FROM event_ids WHERE ts < $1", &[&cutoff]).await.map_err(|e| pg_error(&e))?;
        }
        tx.commit().await.map_err(|e| pg_error(&e))?;
        Ok(dropped)
    }

    /// Takes the lease of a background job for `for_ms` unless another node holds a live one
    /// (or is taking it at this moment): true when this node may run the job now.
    pub async fn take_lease(&self, job: &str, holder: &str, now: i64, for_ms: i64) -> Result<bool> {
        let mut c = self.client().await?;
        c.execute("INSERT INTO job_leases(job) VALUES ($1) ON CONFLICT (job) DO NOTHING", &[&job]).await.map_err(|e| pg_error(&e))?;
        let tx = c.transaction().await.map_err(|e| pg_error(&e))?;
        let row = tx
            .query_opt("SELECT holder, leased_until FROM job_leases WHERE job = $1 FOR UPDATE SKIP LOCKED", &[&job])
            .await
            .map_err(|e| pg_error(&e))?;
        let Some(row) = row else { return Ok(false) };
        let (current, until): (Option<String>, i64) = (row.get(0), row.get(1));
        if until > now && current.as_deref() != Some(holder) {
            return Ok(false);
        }
        tx.execute("UPDATE job_leases SET holder = $2, leased_until = $3 WHERE job = $1", &[&job, &holder, &(now + for_ms)]).await.map_err(|e| pg_error(&e))?;
        tx.commit().await.map_err(|e| pg_error(&e))?;
        Ok(true)
    }

    /// Gives a lease back before it runs out.
    pub async fn release_lease(&self, job: &str, holder: &str) -> Result<()> {
        let c = self.client().await?;
        c.execute("UPDATE job_leases SET holder = NULL, leased_until = 0 WHERE job = $1 AND holder = $2", &[&job, &holder]).await.map_err(|e| pg_error(&e))?;
        Ok(())
    }
}

/// Applies the migrations this database has not seen, in one transaction, under an advisory
/// lock; refuses a database at a newer version than this binary knows.
async fn migrate(client: &mut deadpool_postgres::Object) -> Result<()> {
    let tx = client.transaction().await.map_err(|e| pg_error(&e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(|e| pg_error(&e))?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS confidant_schema (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
        .await
        .map_err(|e| pg_error(&e))?;
    let found: i64 = tx.query_one("SELECT coalesce(max(version), 0)::bigint FROM confidant_schema", &[]).await.map_err(|e| pg_error(&e))?.get(0);
    let supported = MIGRATIONS.len() as i64;
    if found > supported {
        return Err(StoreError::SchemaTooNew { found, supported });
    }
    for (i, m) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.batch_execute(m).await.map_err(|e| pg_error(&e))?;
        tx.execute("INSERT INTO confidant_schema(version) VALUES ($1)", &[&((i + 1) as i32)]).await.map_err(|e| pg_error(&e))?;
    }
    tx.commit().await.map_err(|e| pg_error(&e))?;
    Ok(())
}
