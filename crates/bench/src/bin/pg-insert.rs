//! Where one PostgreSQL's write rate stands on this machine: the raw-insert rows (the demo
//! shop's messages) inserted into Confidant's PostgreSQL schema (month-partitioned `events`
//! plus the `event_ids` deduplication keys), 100 rows per transaction as one batch, with
//! multi-row INSERTs, over 1, 2 and 4 connections sharing the batches (one per node); durable commits
//! (`synchronous_commit = on`). No parsing and no identity resolution: the database's share
//! of ingestion only. Creates and drops a database of its own. Prints one JSON line per
//! connection count.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use confidant_bench::{raw_rows, RawRow};
use confidant_store::postgres::{Postgres, PostgresOptions};
use tokio_postgres::NoTls;

#[derive(Parser)]
struct Args {
    /// A server to create the benchmark's database on, e.g. postgres://postgres@127.0.0.1/postgres.
    #[arg(long, env = "CONFIDANT_TEST_DATABASE_URL")]
    url: String,
    #[arg(long, default_value_t = 3000)]
    customers: usize,
    #[arg(long, default_value_t = 100)]
    rows_per_commit: usize,
}

type Row = RawRow;

async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

async fn run(url: String, rows: Arc<Vec<Row>>, connections: usize, per_commit: usize, profile: i64) -> Result<f64> {
    let chunks: Vec<Vec<Row>> = rows.chunks(per_commit).map(<[Row]>::to_vec).collect();
    let chunks = Arc::new(tokio::sync::Mutex::new(chunks.into_iter()));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (url, chunks) = (url.clone(), chunks.clone());
        tasks.spawn(async move {
            let mut c = connect(&url).await?;
            loop {
                let Some(chunk) = chunks.lock().await.next() else { return Ok::<(), anyhow::Error>(()) };
                let tx = c.transaction().await?;
                let mut sql = String::from("INSERT INTO events(source_id, message_id, profile_id, type, event, ts, received_at, body) VALUES ");
                let mut params: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> = Vec::new();
                for (i, (id, ty, ev, ts, body)) in chunk.iter().enumerate() {
                    let b = i * 5;
                    sql.push_str(&format!("{}(1, ${}, {profile}, ${}, ${}, ${}, ${}, ${})", if i > 0 { "," } else { "" }, b + 1, b + 2, b + 3, b + 4, b + 4, b + 5));
                    params.push(Box::new(id.clone()));
                    params.push(Box::new(ty.clone()));
                    params.push(Box::new(ev.clone()));
                    params.push(Box::new(*ts));
                    params.push(Box::new(body.clone()));
                }
                let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params.iter().map(|p| p.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync)).collect();
                tx.execute(sql.as_str(), &refs).await?;
                // The keys take the message id and time only: $1, $4 of each row.
                let key_refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    refs.chunks(5).flat_map(|r| [r[0], r[3]]).collect();
                let ids_sql = event_ids_sql(chunk.len());
                tx.execute(ids_sql.as_str(), &key_refs).await?;
                tx.commit().await?;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(rows.len() as f64 / started.elapsed().as_secs_f64())
}

/// The event_ids statement for `n` rows, placeholders numbered 1..2n.
fn event_ids_sql(n: usize) -> String {
    let mut s = String::from("INSERT INTO event_ids(source_id, message_id, ts) VALUES ");
    for i in 0..n {
        s.push_str(&format!("{}(1, ${}, ${})", if i > 0 { "," } else { "" }, i * 2 + 1, i * 2 + 2));
    }
    s
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let rows: Vec<Row> = raw_rows(args.customers);
    let rows = Arc::new(rows);
    let admin = connect(&args.url).await?;
    let base = args.url.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap_or_else(|| args.url.clone());
    for connections in [1usize, 2, 4] {
        let name = format!("confidant_bench_{connections}");
        // Two statements: CREATE DATABASE cannot share a (implicit) transaction.
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
        admin.batch_execute(&format!("CREATE DATABASE {name}")).await?;
        let url = format!("{base}/{name}");
        let pg = Postgres::open(&PostgresOptions { url: url.clone(), pool_size: 2, connect_attempts: 3, rules: Default::default(), master_key: [0; 32] }).await?;
        pg.ensure_partition(1_790_000_000_000).await?;
        let c = connect(&url).await?;
        c.batch_execute("INSERT INTO sources(id, name, created_at) VALUES (1, 'bench', 0); INSERT INTO profiles(id, created_at) VALUES (1, 0)").await?;
        // The connections share the batches: every row is inserted once.
        let rate = run(url, rows.clone(), connections, args.rows_per_commit, 1).await?;
        println!(
            "{}",
            serde_json::json!({"backend": "postgres", "connections": connections, "rows_per_commit": args.rows_per_commit,
                               "rows": rows.len(), "rows_per_second": rate})
        );
        drop(c);
        drop(pg);
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
    }
    Ok(())
}
