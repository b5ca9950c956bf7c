//! The privacy commands: the rights desk (`dsr`), `verify-erasure`, `retention`, `ropa` and
//! `audit`. They work on the data directory directly, whether or not a server runs on it: the
//! database allows one writer at a time and the server notices changes made by others.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use confidant_core::config::{Config, Role};
use confidant_core::ids::Identifier;
use confidant_service::privacy::{DsrAction, DsrRequest};
use confidant_service::ropa::RopaFormat;
use confidant_service::{App, Principal, ServiceError};
use serde_json::Value;

#[derive(Subcommand)]
pub(crate) enum DsrCommand {
    /// Everything held about a subject (Art. 15 and 20), as JSON.
    Export {
        #[command(flatten)]
        who: Who,
        /// Write the JSON here instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Also write a CSV bundle (identities, traits, events, consent) into this directory.
        #[arg(long, value_name = "DIR")]
        csv: Option<PathBuf>,
    },
    /// Erase the subject from every table, index and derived artefact (Art. 17).
    Erase {
        #[command(flatten)]
        who: Who,
        /// Also refuse any future collection about these identifiers.
        #[arg(long)]
        suppress: bool,
    },
    /// Correct traits (Art. 16): --set key=json-or-text, --unset key.
    Rectify {
        #[command(flatten)]
        who: Who,
        #[arg(long, value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[arg(long, value_name = "KEY")]
        unset: Vec<String>,
    },
    /// Restrict processing to storage (Art. 18), or lift the restriction.
    Restrict {
        #[command(flatten)]
        who: Who,
        #[arg(long)]
        lift: bool,
    },
    /// Record an objection (Art. 21) to purposes or advertising categories.
    Object {
        #[command(flatten)]
        who: Who,
        #[arg(long = "purpose", value_name = "PURPOSE")]
        purposes: Vec<String>,
        #[arg(long = "advertising-category", value_name = "CATEGORY")]
        advertising_categories: Vec<String>,
    },
    /// List rights requests with their status and deadline.
    List {
        /// Only those not yet closed.
        #[arg(long)]
        open: bool,
    },
    /// After restoring a backup: erase again everyone erased since (from the tombstones).
    ReapplyErasures,
}

#[derive(Args)]
pub(crate) struct Who {
    /// The subject: email:ADDR, phone:NUMBER, user_id:ID or anonymous_id:ID.
    #[arg(long, value_name = "KIND:VALUE")]
    identifier: String,
}

#[derive(Args)]
pub(crate) struct VerifyErasureArgs {
    /// An identifier that must no longer appear (email:..., phone:..., user_id:..., anonymous_id:...).
    #[arg(long, value_name = "KIND:VALUE")]
    identifier: Vec<String>,
    /// Any other text that must no longer appear (a name, a street).
    #[arg(long, value_name = "STRING")]
    text: Vec<String>,
}

#[derive(Subcommand)]
pub(crate) enum RetentionCommand {
    /// Delete (or, with --dry-run, count) what retention rules no longer allow.
    Run {
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Args)]
pub(crate) struct RopaArgs {
    /// md, html or json.
    #[arg(long, default_value = "md")]
    format: String,
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// Verify the hash chains of the audit log and the consent ledger: exit 1 when broken.
    Verify,
    /// The latest entries, newest first.
    List {
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        action: Option<String>,
    },
}

fn cli_principal() -> Principal {
    let user = std::env::var("USER").ok().filter(|u| !u.is_empty() && u.len() < 64).unwrap_or_else(|| "operator".into());
    Principal { name: format!("cli:{user}"), role: Role::Dpo }
}

fn identifier(raw: &str, config: &Config) -> Result<Identifier> {
    Identifier::parse_tagged(raw, &config.ingest.default_region).map_err(|e| anyhow::anyhow!("--identifier: {e}"))
}

/// Service errors as the command line reports them: the message, and exit code 1 (3 for a
/// request refused because the subject is restricted, 4 for invalid input).
fn fail(e: ServiceError) -> anyhow::Error {
    let code = match &e {
        ServiceError::Restricted(_) | ServiceError::Conflict(_) => 3,
        ServiceError::Invalid { .. } => 4,
        _ => 1,
    };
    eprintln!("error: {e}");
    std::process::exit(code)
}

async fn close(app: &App) {
    if let Err(e) = app.store().close().await {
        eprintln!("warning: closing the store: {e}");
    }
}

pub(crate) async fn dsr(config: Config, cmd: DsrCommand) -> Result<()> {
    let by = cli_principal();
    let request = |who: &Who, action| -> Result<DsrRequest> { Ok(DsrRequest { identifier: identifier(&who.identifier, &config)?, channel: "cli".into(), action }) };
    let (req, out, csv) = match &cmd {
        DsrCommand::Export { who, out, csv } => (Some(request(who, DsrAction::Export)?), out.clone(), csv.clone()),
        DsrCommand::Erase { who, suppress } => (Some(request(who, DsrAction::Erase { suppress: *suppress })?), None, None),
        DsrCommand::Rectify { who, set, unset } => {
            let mut changes = BTreeMap::new();
            for s in set {
                let (k, v) = s.split_once('=').context("--set takes KEY=VALUE")?;
                let value = serde_json::from_str::<Value>(v).unwrap_or_else(|_| Value::String(v.to_owned()));
                changes.insert(k.to_owned(), Some(value));
            }
            for k in unset {
                changes.insert(k.clone(), None);
            }
            (Some(request(who, DsrAction::Rectify { changes })?), None, None)
        }
        DsrCommand::Restrict { who, lift } => (Some(request(who, DsrAction::Restrict { lift: *lift })?), None, None),
        DsrCommand::Object { who, purposes, advertising_categories } => (
            Some(request(who, DsrAction::Object { purposes: purposes.clone(), advertising_categories: advertising_categories.clone() })?),
            None,
            None,
        ),
        DsrCommand::List { .. } | DsrCommand::ReapplyErasures => (None, None, None),
    };
    let app = crate::open_app(config).await?;
    let result = match (cmd, req) {
        (DsrCommand::List { open }, _) => {
            let list = app.dsr_list(open, 1000).await.map_err(fail)?;
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({"requests": list}))?);
            Ok(())
        }
        (DsrCommand::ReapplyErasures, _) => {
            let n = app.reapply_erasures(&by.name).await.map_err(fail)?;
            println!("{{\"subjects_erased\": {n}}}");
            Ok(())
        }
        (_, Some(req)) => {
            let outcome = app.dsr(req, &by).await.map_err(fail)?;
            if let Some(export) = &outcome.export {
                let text = serde_json::to_string_pretty(export)?;
                match &out {
                    Some(path) => {
                        write_private(path, text.as_bytes())?;
                        eprintln!("export written to {}", path.display());
                    }
                    None => println!("{text}"),
                }
                if let Some(dir) = &csv {
                    write_csv_bundle(dir, export)?;
                    eprintln!("CSV bundle written to {}", dir.display());
                }
                eprintln!("request {} completed", outcome.request.receipt_id);
            } else {
                let mut summary = serde_json::json!({"request": outcome.request.receipt_id, "status": outcome.request.status, "message": outcome.message});
                if let Some(e) = &outcome.erasure {
                    summary["removed"] = serde_json::to_value(e)?;
                }
                println!("{}", serde_json::to_string_pretty(&summary)?);
            }
            Ok(())
        }
        (_, None) => bail!("nothing to do"),
    };
    close(&app).await;
    result
}

/// Files holding personal data are created readable by their owner only.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path).with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

fn csv_field(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn write_csv_bundle(dir: &std::path::Path, export: &Value) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let table = |name: &str, rows: &Value, cols: &[&str]| -> Result<()> {
        let mut text = cols.join(",") + "\n";
        for r in rows.as_array().into_iter().flatten() {
            text.push_str(&cols.iter().map(|c| csv_field(&r[*c])).collect::<Vec<_>>().join(","));
            text.push('\n');
        }
        write_private(&dir.join(name), text.as_bytes())
    };
    table("identities.csv", &export["identities"], &["kind", "value", "source", "created_at"])?;
    table("traits.csv", &export["traits"], &["key", "value", "category", "source", "timestamp"])?;
    table("events.csv", &export["events"], &["timestamp", "type", "event", "name", "messageId", "properties", "context"])?;
    table("consent.csv", &export["consent"]["receipts"], &["receipt_id", "purpose", "scope", "granted", "at", "method", "notice_version", "notice_sha256"])?;
    Ok(())
}

/// Scans the data directory for the subject's identifiers and texts, and on PostgreSQL every
/// row of every table. Exit 1 listing every hit (file and offset, or table, never the text),
/// 0 when clean.
pub(crate) fn verify_erasure(config: &Config, args: VerifyErasureArgs, runtime: &tokio::runtime::Runtime) -> Result<()> {
    if args.identifier.is_empty() && args.text.is_empty() {
        bail!("give at least one --identifier or --text");
    }
    let mut texts = Vec::new();
    let mut labels = Vec::new();
    for raw in &args.identifier {
        let id = identifier(raw, config)?;
        labels.push(format!("identifier #{} ({})", labels.len() + 1, id.kind.as_str()));
        texts.push(id.value);
    }
    for t in &args.text {
        if t.chars().count() < 3 {
            bail!("--text needs at least 3 characters (shorter texts match everywhere)");
        }
        labels.push(format!("text #{}", labels.len() + 1));
        texts.push(t.clone());
    }
    if !config.data_dir.is_dir() {
        bail!("the data directory {} does not exist", config.data_dir.display());
    }
    let report = confidant_service::scan::scan(&config.data_dir, &texts).context("scanning the data directory")?;
    let rows = match &config.database_url {
        Some(url) => runtime.block_on(confidant_store::postgres::scan_url(url, &texts)).context("scanning the PostgreSQL tables")?,
        None => Vec::new(),
    };
    if report.hits.is_empty() && rows.is_empty() {
        let tables = if config.database_url.is_some() { " and every row of every PostgreSQL table" } else { "" };
        println!("clean: {} files, {} bytes scanned under {}{tables}; none of the {} texts found", report.files, report.bytes, config.data_dir.display(), texts.len());
        return Ok(());
    }
    for h in &report.hits {
        println!("found {} ({}) in {} at offset {}", labels[h.needle], h.variant, h.file.display(), h.offset);
    }
    for h in &rows {
        println!("found {} ({}) in table {}: {} row(s)", labels[h.needle], h.variant, h.table, h.rows);
    }
    eprintln!("NOT ERASED: {} occurrence(s) in {} files and {} table(s)", report.hits.len(), report.files, rows.len());
    std::process::exit(1);
}

pub(crate) async fn retention(config: Config, cmd: RetentionCommand) -> Result<()> {
    let RetentionCommand::Run { dry_run } = cmd;
    let app = crate::open_app(config).await?;
    let report = app.retention_run(dry_run, &cli_principal().name).await.map_err(fail)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    close(&app).await;
    Ok(())
}

pub(crate) async fn ropa(config: Config, args: RopaArgs) -> Result<()> {
    let format = RopaFormat::from_name(&args.format).context("--format must be md, html or json")?;
    let app = crate::open_app(config).await?;
    let text = app.ropa_rendered(format).await.map_err(fail)?;
    match &args.out {
        Some(p) => std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display()))?,
        None => println!("{text}"),
    }
    close(&app).await;
    Ok(())
}

pub(crate) async fn audit(config: Config, cmd: AuditCommand) -> Result<()> {
    let app = crate::open_app(config).await?;
    let result = match cmd {
        AuditCommand::Verify => {
            let (log, ledger) = app.verify_chains().await.map_err(fail)?;
            println!("audit log: {} entries, head {}{}", log.entries, log.head, log.broken.as_ref().map(|b| format!(" — BROKEN: {b}")).unwrap_or_default());
            println!("consent ledger: {} entries, head {}{}", ledger.entries, ledger.head, ledger.broken.as_ref().map(|b| format!(" — BROKEN: {b}")).unwrap_or_default());
            if log.broken.is_some() || ledger.broken.is_some() {
                close(&app).await;
                std::process::exit(1);
            }
            Ok(())
        }
        AuditCommand::List { limit, action } => {
            let entries = app
                .audit_list(confidant_service::store::privacy::AuditFilter { action, limit, ..Default::default() })
                .await
                .map_err(fail)?;
            println!("{}", serde_json::to_string_pretty(&entries)?);
            Ok(())
        }
    };
    close(&app).await;
    result
}
