//! The PostgreSQL backend, under construction (issue 7): the connection pool, versioned
//! migrations with the schema guard (several nodes may start at once: the first migrates
//! under an advisory lock, the others wait and find it done), monthly event partitions that
//! retention drops whole, and job leases so that background jobs run once across nodes.
//!
//! Every operation but ingestion is the shared code (`shared`, through `sql::Conn`), run in
//! one transaction per call on a blocking thread. Those writes take an exclusive advisory
//! lock (`WRITE_LOCK`) and ingestion takes it shared: writes outside ingestion (consent,
//! erasure, merges by hand, campaigns) are serialised across every node, as SQLite's single
//! writer serialises them, while batches of ingestion run side by side.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::shared::graph::IdentityCache;
use crate::shared::{Backend, ExecFlags};
use crate::sql::{Conn, PgConn};
use crate::{Result, StoreError};

mod ingest;

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

/// Migrations, applied in order; `confidant_schema` records each version applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/postgres/0001_foundation.sql"),
    include_str!("../../migrations/postgres/0002_product.sql"),
    include_str!("../../migrations/postgres/0003_counters.sql"),
    include_str!("../../migrations/postgres/0004_partition_check.sql"),
    include_str!("../../migrations/postgres/0005_meta.sql"),
];

/// What the master-key check seals (with this as associated data too).
const KEY_CHECK: &[u8] = b"confidant master key check v1";

/// Refuses a master key other than the one the database was first opened with.
async fn check_master_key(c: &deadpool_postgres::Object, master: &[u8; 32]) -> Result<()> {
    let sealed = confidant_core::crypto::seal(master, rand::random(), KEY_CHECK, KEY_CHECK);
    c.execute("INSERT INTO confidant_meta(key, value) VALUES ('master_key_check', $1) ON CONFLICT (key) DO NOTHING", &[&sealed])
        .await
        .map_err(|e| pg_error(&e))?;
    let stored: Vec<u8> = c.query_one("SELECT value FROM confidant_meta WHERE key = 'master_key_check'", &[]).await.map_err(|e| pg_error(&e))?.get(0);
    match confidant_core::crypto::open(master, KEY_CHECK, &stored) {
        Ok(v) if v == KEY_CHECK => Ok(()),
        _ => Err(StoreError::Open(
            "this database was written under another master key: give every node the same key (CONFIDANT_MASTER_KEY or security.master_key_file)".into(),
        )),
    }
}

/// The advisory lock migrations run under (any constant shared by every node).
const MIGRATION_LOCK: i64 = 0x636f_6e66_6964_616e;

/// The advisory lock that writes outside ingestion take exclusively and ingestion shared.
pub(crate) const WRITE_LOCK: i64 = 0x636f_6e66_7772_6974;

/// Tables that may hold personal data: vacuumed after an erasure, so that the space of the
/// deleted rows is reclaimed (see the README on what PostgreSQL may still hold).
const PERSONAL_TABLES: &str = "events, event_ids, traits, identities, profiles, consent_receipts, subject_keys, subject_flags, dsr_requests, \
     quarantine, computed_traits, audience_members, audience_history, deliveries, destination_subjects, destination_dead, rights_forwards, \
     portal_codes, portal_sessions, merges, merge_blocks, identity_conflicts, match_reviews";

/// How to reach PostgreSQL.
#[derive(Clone)]
pub struct PostgresOptions {
    /// `postgres://user[:password]@host[:port]/database`.
    pub url: String,
    /// Connections in the pool.
    pub pool_size: usize,
    /// Attempts to reach the server at start-up, with exponential backoff (0.1 s doubling to
    /// 5 s) between them.
    pub connect_attempts: u32,
    pub rules: crate::IdentityRules,
    /// The master key that wraps every subject's data key.
    pub master_key: [u8; 32],
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = self.url.split_once('@').map(|(_, host)| format!("postgres://…@{host}")).unwrap_or_else(|| "postgres://…".into());
        f.debug_struct("PostgresOptions").field("url", &url).field("pool_size", &self.pool_size).field("master_key", &"<secret>").finish()
    }
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

#[derive(Clone)]
pub struct Postgres {
    pool: Pool,
    rules: crate::IdentityRules,
    master_key: [u8; 32],
    /// Months (as `year * 12 + month`) whose event partition this node knows to exist.
    months: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<i64>>>,
    /// This node's name as a lease holder (random per process).
    node: u64,
}

/// The month of a day since the epoch, as `year * 12 + month - 1` (UTC).
pub(crate) fn month_of(day: i64) -> i64 {
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    y * 12 + m - 1
}

impl Postgres {
    /// Connects (retrying with backoff while the server is unreachable) and migrates.
    pub async fn open(o: &PostgresOptions) -> Result<Postgres> {
        let cfg = tokio_postgres::Config::from_str(&o.url)
            .map_err(|_| StoreError::Open("database_url is not a PostgreSQL URL (postgres://user@host:port/database)".into()))?;
        let place = place(&cfg);
        let mut cfg = cfg;
        cfg.connect_timeout(Duration::from_secs(2));
        let manager = Manager::from_config(cfg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager).max_size(o.pool_size.max(1)).build().map_err(|e| StoreError::Open(e.to_string()))?;
        let mut delay = Duration::from_millis(100);
        let mut last = String::new();
        for attempt in 1..=o.connect_attempts.max(1) {
            match pool.get().await {
                Ok(mut client) => {
                    migrate(&mut client).await?;
                    check_master_key(&client, &o.master_key).await?;
                    return Ok(Postgres { pool, rules: o.rules.clone(), master_key: o.master_key, months: Default::default(), node: rand::random() });
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

    /// A connection of the pool. While PostgreSQL is unreachable, tries again with backoff
    /// (50 ms doubling, about 1.5 s in all) before giving up: the caller then answers 503 and
    /// the client retries, rather than anything being lost.
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object> {
        let mut delay = Duration::from_millis(50);
        for attempt in 0.. {
            match self.pool.get().await {
                Ok(c) => return Ok(c),
                Err(_) if attempt < 4 => {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "PostgreSQL is unreachable");
                    break;
                }
            }
        }
        Err(StoreError::Postgres("no connection to PostgreSQL".into()))
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
        self.forget_months();
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
        // Each refusal ends its transaction before answering, so that the row lock is gone
        // when the caller (or another node) asks again.
        let Some(row) = row else {
            tx.rollback().await.map_err(|e| pg_error(&e))?;
            return Ok(false);
        };
        let (current, until): (Option<String>, i64) = (row.get(0), row.get(1));
        if until > now && current.as_deref() != Some(holder) {
            tx.rollback().await.map_err(|e| pg_error(&e))?;
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

impl Postgres {
    /// A cheap query, to tell that the database answers.
    pub(crate) async fn ping(&self) -> Result<()> {
        let c = self.client().await?;
        c.query_one("SELECT 1", &[]).await.map_err(|e| pg_error(&e))?;
        Ok(())
    }

    /// This node's name as a lease holder.
    pub fn node_id(&self) -> String {
        format!("node-{:016x}", self.node)
    }

    pub(crate) fn known_month(&self, month: i64) -> bool {
        self.months.lock().unwrap_or_else(|e| e.into_inner()).contains(&month)
    }

    pub(crate) fn remember_month(&self, month: i64) {
        self.months.lock().unwrap_or_else(|e| e.into_inner()).insert(month);
    }

    pub(crate) fn forget_months(&self) {
        self.months.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Takes the write lock exclusively on a connection of its own until the sender is
    /// dropped: every batch of ingestion waits meanwhile (tests only).
    pub(crate) async fn hold_writes(&self) -> tokio::sync::oneshot::Sender<()> {
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let (held, is_held) = tokio::sync::oneshot::channel::<()>();
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let Ok(c) = pool.get().await else { return };
            if c.execute("SELECT pg_advisory_lock($1)", &[&WRITE_LOCK]).await.is_ok() {
                let _ = held.send(());
                let _ = released.await;
                let _ = c.execute("SELECT pg_advisory_unlock($1)", &[&WRITE_LOCK]).await;
            }
        });
        let _ = is_held.await;
        release
    }

    pub(crate) fn rules_ref(&self) -> &crate::IdentityRules {
        &self.rules
    }

    pub(crate) async fn unmerge(&self, id: confidant_core::ids::ProfileId, merge_id: Option<i64>, actor: String) -> Result<crate::MergeView> {
        let flags = ExecFlags { changes_identities: true, truncate_wal: false };
        self.exec(flags, move |c, _| crate::shared::graph::unmerge(c, id, merge_id, &actor, crate::shared::now_millis())).await
    }

    pub(crate) async fn close(&self) -> Result<()> {
        self.pool.close();
        Ok(())
    }

    /// Runs `f` in a transaction on a blocking thread (the shared code is synchronous).
    async fn run_in_tx<T: Send + 'static>(
        &self,
        write: bool,
        f: impl FnOnce(&Conn<'_>, &mut IdentityCache) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let mut client = self.client().await?;
        let rt = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let tx = rt
                .block_on(async {
                    let tx = client.build_transaction().read_only(!write).start().await?;
                    if write {
                        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK]).await?;
                    }
                    Ok::<_, tokio_postgres::Error>(tx)
                })
                .map_err(|e| pg_error(&e))?;
            let mut cache = IdentityCache::default();
            let out = f(&Conn::Pg(PgConn { tx: &tx, rt: rt.clone() }), &mut cache);
            match out {
                Ok(v) => {
                    rt.block_on(tx.commit()).map_err(|e| pg_error(&e))?;
                    Ok(v)
                }
                Err(e) => {
                    let _ = rt.block_on(tx.rollback());
                    Err(e)
                }
            }
        })
        .await
        .map_err(|_| StoreError::ShuttingDown)?
    }
}

impl Backend for Postgres {
    fn master_key(&self) -> [u8; 32] {
        self.master_key
    }

    fn rules(&self) -> crate::IdentityRules {
        self.rules.clone()
    }

    fn read<T: Send + 'static>(&self, f: impl FnOnce(&Conn<'_>) -> Result<T> + Send + 'static) -> impl std::future::Future<Output = Result<T>> + Send {
        self.run_in_tx(false, move |c, _| f(c))
    }

    /// Takes the write lock exclusively for the read: every batch of ingestion in flight (they
    /// hold it shared) has committed or rolled back, so every `seq` up to the highest visible
    /// is final. Ingestion waits only for the read itself.
    fn read_settled<T: Send + 'static>(&self, f: impl FnOnce(&Conn<'_>) -> Result<T> + Send + 'static) -> impl std::future::Future<Output = Result<T>> + Send {
        self.run_in_tx(true, move |c, _| f(c))
    }

    fn exec<T: Send + 'static>(
        &self,
        flags: ExecFlags,
        f: impl FnOnce(&Conn<'_>, &mut IdentityCache) -> Result<T> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T>> + Send {
        async move {
            let out = self.run_in_tx(true, f).await?;
            if flags.truncate_wal {
                // Erasure: reclaim the space of the deleted rows now rather than at the next
                // autovacuum. VACUUM cannot run inside a transaction.
                let c = self.client().await?;
                if let Err(e) = c.batch_execute(&format!("VACUUM {PERSONAL_TABLES}")).await {
                    tracing::warn!(error = %pg_error(&e), "VACUUM after an erasure failed; autovacuum will reclaim the space later");
                }
            }
            Ok(out)
        }
    }
}

/// A database of its own on the server of `CONFIDANT_TEST_DATABASE_URL`, dropped with the
/// guard. For tests only (each black-box test on PostgreSQL starts from an empty database).
#[doc(hidden)]
pub struct TestDatabase {
    admin_url: String,
    name: String,
    /// The URL of the new database.
    pub url: String,
}

impl TestDatabase {
    /// None when `CONFIDANT_TEST_DATABASE_URL` is not set. The name carries the time of
    /// creation, so that databases left by a test that never dropped its guard (a crash, a
    /// process killed) are dropped by a later test once they are two hours old.
    pub async fn create() -> Option<TestDatabase> {
        let admin_url = std::env::var("CONFIDANT_TEST_DATABASE_URL").ok()?;
        let now = crate::shared::now_millis() / 1000;
        let name = format!("confidant_test_{now}_{:08x}", rand::random::<u32>());
        let (client, conn) = tokio_postgres::connect(&admin_url, NoTls).await.expect("the test PostgreSQL server answers");
        tokio::spawn(conn);
        if let Ok(rows) = client.query("SELECT datname::text FROM pg_database WHERE datname LIKE 'confidant_test_%'", &[]).await {
            for r in rows {
                let old: String = r.get(0);
                let born = old.split('_').nth(2).and_then(|t| t.parse::<i64>().ok());
                if born.is_some_and(|b| b < now - 7_200) {
                    let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {old} WITH (FORCE)")).await;
                }
            }
        }
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("CREATE DATABASE");
        let base = admin_url.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap_or(admin_url.clone());
        Some(TestDatabase { url: format!("{base}/{name}"), admin_url, name })
    }

    /// [`TestDatabase::create`] from outside any runtime (tests of the binary).
    pub fn create_blocking() -> Option<TestDatabase> {
        std::thread::spawn(|| tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?.block_on(TestDatabase::create()))
            .join()
            .ok()
            .flatten()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        // On a thread of its own: the test's runtime may be shutting down.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                if let Ok((client, conn)) = tokio_postgres::connect(&admin, NoTls).await {
                    tokio::spawn(conn);
                    let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                }
            });
        })
        .join();
    }
}

/// A text found in a table by [`scan_rows`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowHit {
    pub table: String,
    /// Index of the text in the list scanned.
    pub needle: usize,
    /// How it was found: `text` (any case), `json` (escaped as in JSON) or `hex` (in a bytea).
    pub variant: &'static str,
    pub rows: i64,
}

/// `verify-erasure` on PostgreSQL: every row of every table of the schema, as text, searched
/// for each text (whatever its case, as JSON escapes it, and hex-encoded as a bytea shows it).
/// What this cannot see (WAL segments, backups, freed space before it is reused) is what the
/// README's section on erasure tells the operator to handle.
pub async fn scan_rows<C: GenericClient>(c: &C, texts: &[String]) -> Result<Vec<RowHit>> {
    let tables = c
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = current_schema() AND c.relkind = 'r' ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| pg_error(&e))?;
    let mut hits = Vec::new();
    for t in tables {
        let table: String = t.get(0);
        let sql = format!("SELECT count(*) FROM \"{}\" t WHERE strpos(lower(t::text), $1) > 0", table.replace('"', ""));
        let stmt = c.prepare(&sql).await.map_err(|e| pg_error(&e))?;
        for (i, text) in texts.iter().enumerate() {
            let lower = text.to_lowercase();
            let json: String = lower
                .chars()
                .flat_map(|ch| {
                    let mut buf = [0u16; 2];
                    let units: Vec<u16> = ch.encode_utf16(&mut buf).to_vec();
                    match ch {
                        '"' => vec!["\\\"".to_owned()],
                        '\\' => vec!["\\\\".to_owned()],
                        c if c.is_ascii() && !c.is_ascii_control() => vec![c.to_string()],
                        _ => units.iter().map(|u| format!("\\u{u:04x}")).collect(),
                    }
                })
                .collect();
            let hex = hex::encode(text.as_bytes());
            let mut variants = vec![("text", lower.clone()), ("hex", hex)];
            if json != lower {
                variants.push(("json", json));
            }
            for (variant, needle) in variants {
                let n: i64 = c.query_one(&stmt, &[&needle]).await.map_err(|e| pg_error(&e))?.get(0);
                if n > 0 {
                    hits.push(RowHit { table: table.clone(), needle: i, variant, rows: n });
                }
            }
        }
    }
    Ok(hits)
}

impl Postgres {
    /// [`scan_rows`] on a connection of the pool.
    pub async fn scan(&self, texts: &[String]) -> Result<Vec<RowHit>> {
        let c = self.client().await?;
        scan_rows(&**c, texts).await
    }
}

/// [`scan_rows`] on a connection of its own to `url` (for `verify-erasure`, which opens no
/// store: it must not change what it inspects).
pub async fn scan_url(url: &str, texts: &[String]) -> Result<Vec<RowHit>> {
    let cfg = tokio_postgres::Config::from_str(url).map_err(|_| StoreError::Open("database_url is not a PostgreSQL URL".into()))?;
    let (client, conn) = cfg.connect(NoTls).await.map_err(|e| StoreError::Open(format!("cannot reach PostgreSQL at {}: {}", place(&cfg), pg_error(&e))))?;
    tokio::spawn(conn);
    scan_rows(&client, texts).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn months_of_days() {
        // 1970-01-01, 2026-11-30, 2026-12-01, 2024-02-29
        assert_eq!(super::month_of(0), 1970 * 12);
        assert_eq!(super::month_of(20_787), 2026 * 12 + 10);
        assert_eq!(super::month_of(20_788), 2026 * 12 + 11);
        assert_eq!(super::month_of(19_782), 2024 * 12 + 1);
    }
}
