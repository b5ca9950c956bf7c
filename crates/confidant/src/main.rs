//! `confidant`: the command line. Thin: it reads the configuration, sets up logging and
//! hands over to the library crates.

mod campaign;
mod credentials;
mod dedupe;
mod demo;
mod import;
mod migrate;
mod models;
mod rights;

use std::path::PathBuf;

/// mimalloc rather than the system allocator: ingestion allocates on the request threads
/// and frees on the store's threads, where it measured faster (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use confidant_core::config::{self, Config, LogFormat};
use confidant_service::keys::MasterKey;
use confidant_service::App;
use confidant_store::{SqliteOptions, Store};

#[derive(Parser)]
#[command(name = "confidant", version, about = "A privacy-first customer data platform for online shops")]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct GlobalArgs {
    /// The configuration file (default: ./confidant.toml when it exists).
    #[arg(long, global = true, env = "CONFIDANT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// The data directory (overrides data_dir).
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The address to listen on (overrides server.listen), such as 127.0.0.1:8080.
    #[arg(long, global = true, value_name = "ADDR")]
    listen: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the ingestion API, the admin API, /health and /metrics.
    Serve,
    /// Generate a realistic shop from a fixed seed, send it through the ingestion API, then serve.
    Demo(demo::DemoArgs),
    /// The rights desk: export, erase, rectify, restrict, object.
    #[command(subcommand)]
    Dsr(rights::DsrCommand),
    /// Prove an erasure: scan every file under the data directory for the subject's data.
    VerifyErasure(rights::VerifyErasureArgs),
    /// Retention: delete what may no longer be kept.
    #[command(subcommand)]
    Retention(rights::RetentionCommand),
    /// The register of processing activities (Art. 30), from the configuration and live counts.
    Ropa(rights::RopaArgs),
    /// The audit log and the consent ledger: verify their hash chains, list entries.
    #[command(subcommand)]
    Audit(rights::AuditCommand),
    /// Find the same person behind different records of a CSV file (or link two files).
    Dedupe(dedupe::DedupeArgs),
    /// Import a CSV or JSONL file from a source (CRM, loyalty, surveys), or show the quarantine.
    Import(import::ImportArgs),
    /// Data quality per source and field: completeness, uniqueness, freshness, duplicates.
    Quality,
    /// Probabilistic matching of profiles: merge the certain duplicates, queue the doubtful.
    Match,
    /// Customer analytics on the store: orders, RFM, lifetime value and churn as computed traits.
    Analytics,
    /// Lifetime value: fit BG/NBD and Gamma-Gamma on a transactions file.
    #[command(subcommand)]
    Clv(models::ClvCommand),
    /// Recommendations: evaluate a model on an interactions file.
    #[command(subcommand)]
    Recs(models::RecsCommand),
    /// Email campaigns: send one to an audience (or simulate it with --dry-run).
    #[command(subcommand)]
    Campaign(campaign::CampaignCommand),
    /// Demand forecasting: backtest the models on a file of series.
    #[command(subcommand)]
    Forecast(models::ForecastCommand),
    /// Copy a SQLite database into an empty PostgreSQL database, verified by counts and checksums.
    Migrate(migrate::MigrateArgs),
}

/// Loads the configuration: file, then `CONFIDANT_*` variables, then command-line flags.
fn load_config(global: &GlobalArgs, default_data_dir: Option<&str>) -> Result<Config> {
    let (path, required) = match &global.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from("confidant.toml"), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => anyhow::bail!("cannot read the configuration file {}: {e}", path.display()),
    };
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    if let Some(d) = &global.data_dir {
        env.push(("CONFIDANT_DATA_DIR".into(), d.display().to_string()));
    } else if let Some(d) = default_data_dir {
        if !text.contains("data_dir") && std::env::var_os("CONFIDANT_DATA_DIR").is_none() {
            env.push(("CONFIDANT_DATA_DIR".into(), d.into()));
        }
    }
    if let Some(l) = &global.listen {
        env.push(("CONFIDANT_SERVER__LISTEN".into(), l.clone()));
    }
    match config::load(&text, env) {
        Ok(loaded) => {
            for name in loaded.ignored_env {
                eprintln!("warning: {name} names no configuration key and is ignored");
            }
            Ok(loaded.config)
        }
        Err(e) => {
            eprint!("{}: {e}", path.display());
            std::process::exit(2);
        }
    }
}

fn init_logging(config: &Config) {
    let filter = std::env::var("CONFIDANT_LOG").unwrap_or_else(|_| config.log.level.clone());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| {
        eprintln!("warning: log.level {filter:?} is not a valid filter; using info");
        tracing_subscriber::EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Opens the store (PostgreSQL at `database_url`, or SQLite in the data directory) and builds
/// the app.
pub(crate) async fn open_app(config: Config) -> Result<App> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("cannot create the data directory {}", config.data_dir.display()))?;
    let key = MasterKey::load(&config)?;
    let store = match &config.database_url {
        Some(url) => Store::open_postgres(confidant_store::postgres::PostgresOptions {
            url: url.clone(),
            pool_size: config.database.pool_size as usize,
            connect_attempts: config.database.connect_attempts,
            rules: config.identity_rules(),
            master_key: *key.bytes(),
        })
        .await
        .context("cannot open the database")?,
        None => {
            let db = config.data_dir.join("confidant.db");
            let options = SqliteOptions { max_commit_messages: config.ingest.max_commit_messages, rules: config.identity_rules(), master_key: *key.bytes() };
            tokio::task::spawn_blocking(move || Store::open_sqlite(&db, options)).await?.context("cannot open the database")?
        }
    };
    Ok(App::new(config, store, key).await?)
}

/// A background job of `serve`: `run` every `every` (zero turns it off), the first run one
/// interval after start, so that a restart loop cannot hammer the database. Each run's
/// outcome is logged as a summary, never with personal data.
/// Several nodes on one PostgreSQL: each run takes the job's lease for one interval first,
/// and a node that does not get it skips the run (another node does it).
fn spawn_every<F, Fut>(app: &App, every: std::time::Duration, job: impl Into<Option<&'static str>>, run: F)
where
    F: Fn(App) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    if every.is_zero() {
        return;
    }
    let app = app.clone();
    let job = job.into();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(job) = job else {
                run(app.clone()).await;
                continue;
            };
            match app.store().lease(job, every.as_millis() as i64).await {
                Ok(true) => run(app.clone()).await,
                Ok(false) => tracing::debug!(job, "another node holds the job's lease"),
                Err(e) => tracing::warn!(job, error = %e, "cannot take the job's lease; skipped"),
            }
        }
    });
}

fn job_principal(name: &str) -> confidant_service::Principal {
    confidant_service::Principal { name: name.into(), role: confidant_core::config::Role::Dpo }
}

/// The jobs of `serve`: retention (`jobs.retention_interval_hours`), probabilistic profile
/// matching (`jobs.match_interval_minutes`), customer analytics
/// (`jobs.analytics_interval_minutes`), recommendation training
/// (`jobs.recommendations_interval_minutes`) and audience refreshes
/// (`jobs.audiences_refresh_seconds`, `jobs.audiences_full_minutes`), scheduled campaigns and
/// triggered messages (`jobs.campaigns_seconds`), and the destinations' delivery worker.
pub(crate) fn spawn_jobs(app: &App) {
    let jobs = &app.config().jobs;
    app.spawn_destination_worker();
    if app.config().smtp.host.is_some() {
        spawn_every(app, std::time::Duration::from_secs(jobs.campaigns_seconds), "campaigns", |app| async move {
            match app.run_campaigns().await {
                Ok((0, 0)) => {}
                Ok((campaigns, triggered)) => tracing::info!(campaigns, triggered, "scheduled campaigns and triggers run"),
                Err(e) => tracing::error!(error = %e, "running scheduled campaigns and triggers failed"),
            }
        });
    }
    spawn_every(app, std::time::Duration::from_secs(jobs.retention_interval_hours * 3600), "retention", |app| async move {
        match app.retention_run(false, "retention").await {
            Ok(r) => tracing::info!(erased = r.subjects_erased, events = r.events_deleted, "retention run"),
            Err(e) => tracing::error!(error = %e, "retention run failed"),
        }
    });
    spawn_every(app, std::time::Duration::from_secs(jobs.match_interval_minutes * 60), "matching", |app| async move {
        match app.match_profiles(&job_principal("matching")).await {
            Ok(r) => tracing::info!(merged = r.merged, queued = r.queued, "profile matching run"),
            Err(e) => tracing::error!(error = %e, "profile matching run failed"),
        }
    });
    spawn_every(app, std::time::Duration::from_secs(jobs.analytics_interval_minutes * 60), "analytics", |app| async move {
        match app.run_customer_analytics(&job_principal("analytics")).await {
            Ok(r) => tracing::info!(customers = r.customers, orders = r.orders, "customer analytics run"),
            Err(e) => tracing::error!(error = %e, "customer analytics run failed"),
        }
    });
    spawn_every(app, std::time::Duration::from_secs(jobs.audiences_refresh_seconds), "audiences-refresh", |app| async move {
        match app.refresh_audiences(false).await {
            Ok(r) if r.joined + r.left > 0 => tracing::info!(subjects = r.subjects_evaluated, joined = r.joined, left = r.left, "audiences refreshed"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "refreshing the audiences failed"),
        }
    });
    spawn_every(app, std::time::Duration::from_secs(jobs.audiences_full_minutes * 60), "audiences-full", |app| async move {
        match app.refresh_audiences(true).await {
            Ok(r) => tracing::info!(audiences = r.audiences, joined = r.joined, left = r.left, "audiences evaluated in full"),
            Err(e) => tracing::error!(error = %e, "evaluating the audiences failed"),
        }
    });
    // Every node trains its own: the model serves from memory (it only reads the store).
    spawn_every(app, std::time::Duration::from_secs(jobs.recommendations_interval_minutes * 60), None, |app| async move {
        match app.train_recommendations(&job_principal("recommendations")).await {
            Ok(r) => tracing::info!(subjects = r.subjects, products = r.products, version = r.version, "recommendations trained"),
            Err(e) => tracing::error!(error = %e, "training the recommendations failed"),
        }
    });
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: finishing requests in flight and committing the queue");
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let default_dir = match cli.command {
        Command::Demo(_) => Some("./demo-data"),
        _ => None,
    };
    let mut config = load_config(&cli.global, default_dir)?;
    init_logging(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // These work on files alone: no configuration, no store.
    match cli.command {
        Command::Dedupe(args) => return dedupe::run_dedupe(args),
        Command::Clv(cmd) => return models::clv(cmd),
        Command::Recs(cmd) => return models::recs(cmd),
        Command::Forecast(cmd) => return models::forecast(cmd),
        _ => {}
    }
    if let Command::VerifyErasure(args) = cli.command {
        // Reads files only: opening the store would write to the directory it inspects. On
        // PostgreSQL it reads every row through SQL besides.
        return rights::verify_erasure(&config, args, &runtime);
    }
    runtime.block_on(async move {
        let generated = match cli.command {
            Command::Serve | Command::Demo(_) => credentials::ensure(&mut config)?,
            _ => None,
        };
        match cli.command {
            Command::Serve => {
                if let Some(g) = &generated {
                    credentials::announce(g, &config);
                }
                let app = open_app(config).await?;
                spawn_jobs(&app);
                let server = confidant_http::Server::bind(app.clone()).await.context("cannot listen")?;
                eprintln!("confidant listening on http://{}", server.local_addr());
                tracing::info!(addr = %server.local_addr(), "listening");
                server.run(shutdown_signal()).await?;
                Ok(())
            }
            Command::Demo(args) => demo::run(config, generated, args).await,
            Command::Dsr(cmd) => rights::dsr(config, cmd).await,
            Command::Retention(cmd) => rights::retention(config, cmd).await,
            Command::Ropa(args) => rights::ropa(config, args).await,
            Command::Audit(cmd) => rights::audit(config, cmd).await,
            Command::Import(args) => import::run(config, args).await,
            Command::Quality => import::quality(config).await,
            Command::Migrate(args) => migrate::run(config, args).await,
            Command::Campaign(cmd) => {
                let code = campaign::run(config, cmd).await?;
                if code != 0 {
                    std::process::exit(code);
                }
                Ok(())
            }
            cmd @ (Command::Analytics | Command::Match) => {
                // The same runs as serve's jobs, once, with their report as JSON.
                let app = open_app(config).await?;
                let by = job_principal("cli");
                let report = match cmd {
                    Command::Analytics => serde_json::to_value(app.run_customer_analytics(&by).await?)?,
                    _ => serde_json::to_value(app.match_profiles(&by).await?)?,
                };
                println!("{}", serde_json::to_string_pretty(&report)?);
                app.store().close().await?;
                Ok(())
            }
            Command::VerifyErasure(_) | Command::Dedupe(_) | Command::Clv(_) | Command::Recs(_) | Command::Forecast(_) => unreachable!("handled above"),
        }
    })
}
