//! `confidant migrate --from sqlite:PATH --to postgres://...`: moving a shop from the embedded
//! database to PostgreSQL, verified table by table (rows and checksums) before anything is
//! committed.

use anyhow::{bail, Context, Result};
use clap::Args;
use confidant_core::config::Config;
use confidant_service::keys::MasterKey;

#[derive(Args, Debug)]
pub(crate) struct MigrateArgs {
    /// The SQLite database to copy: `sqlite:PATH` (default: the data directory's).
    #[arg(long)]
    from: Option<String>,
    /// The PostgreSQL database to fill, empty: `postgres://user@host:port/database` (default:
    /// `database_url`).
    #[arg(long)]
    to: Option<String>,
}

pub(crate) async fn run(config: Config, args: MigrateArgs) -> Result<()> {
    let from = match &args.from {
        Some(f) => match f.strip_prefix("sqlite:") {
            Some(p) if !p.is_empty() => std::path::PathBuf::from(p),
            _ => bail!("--from must be sqlite:PATH (the SQLite database file)"),
        },
        None => config.data_dir.join("confidant.db"),
    };
    let to = match args.to.or_else(|| config.database_url.clone()) {
        Some(t) if t.starts_with("postgres://") || t.starts_with("postgresql://") => t,
        Some(_) => bail!("--to must be a PostgreSQL URL (postgres://user@host:port/database)"),
        None => bail!("give --to postgres://... (or set database_url)"),
    };
    // Subject keys are wrapped by the master key: the PostgreSQL nodes must use the same one.
    let key = MasterKey::load(&config)?;
    let target = confidant_store::postgres::PostgresOptions {
        url: to,
        pool_size: 2,
        connect_attempts: config.database.connect_attempts,
        rules: config.identity_rules(),
        master_key: *key.bytes(),
    };
    println!("{:<22} {:>12} {:>12}  {:<32}  verified", "table", "sqlite", "postgres", "checksum");
    let report = confidant_store::migrate::sqlite_to_postgres(&from, target, &|t| {
        println!("{:<22} {:>12} {:>12}  {:<32}  {}", t.table, t.source_rows, t.target_rows, t.target_checksum, if t.verified() { "yes" } else { "NO" });
    })
    .await
    .context("migration failed; the PostgreSQL database was left as it was")?;
    let rows: u64 = report.iter().map(|t| t.target_rows).sum();
    println!("migrated {rows} rows in {} tables, every one verified by count and checksum; point database_url at it and keep the master key", report.len());
    Ok(())
}
