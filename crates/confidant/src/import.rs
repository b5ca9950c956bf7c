//! `confidant import`: CSV and JSONL files from a source, streamed (a first pass checks the
//! file's structure so that a broken file imports nothing; the second imports), and the
//! quarantine report.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use confidant_core::config::Config;
use confidant_service::import::Mapping;

#[derive(Args)]
pub(crate) struct ImportArgs {
    /// The file to import (CSV with a header, or JSONL: one JSON object per line).
    #[arg(value_name = "PATH", required_unless_present = "quarantine")]
    path: Option<PathBuf>,
    /// The source the rows come from (a name from [[sources]]).
    #[arg(long, value_name = "NAME", required_unless_present = "quarantine")]
    source: Option<String>,
    /// Column mapping: a TOML file with `[columns]` and `"Column" = "email"` (or user_id, phone,
    /// anonymous_id, ignore, trait:NAME). Unnamed columns take a default from their name.
    #[arg(long, value_name = "FILE")]
    mapping: Option<PathBuf>,
    /// csv or jsonl; by default from the file's extension.
    #[arg(long)]
    format: Option<String>,
    /// What the rows describe: `profiles` (people, the default) or `orders` (order lines:
    /// order id, date, customer, product, quantity, price or total; the lines of one order
    /// become one `Order Completed` event) or `stock` (product, quantity, optional date).
    #[arg(long, default_value = "profiles", value_parser = ["profiles", "orders", "stock"])]
    kind: String,
    /// Print the quarantined rows (of --source, or of every source) instead of importing.
    #[arg(long)]
    quarantine: bool,
}

type Row = (u64, Vec<(String, String)>);

use crate::dedupe::csv_problem as utf8_problem;

/// Streams the rows of a CSV file; structural problems are errors naming file and line.
fn csv_rows(path: &Path) -> Result<impl Iterator<Item = Result<Row>>> {
    let file = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(std::io::BufReader::new(file));
    let header: Vec<String> =
        reader.headers().map_err(|e| anyhow::anyhow!("{}: line 1: {}", path.display(), utf8_problem(&e)))?.iter().map(|h| h.trim_start_matches('\u{feff}').to_owned()).collect();
    if header.iter().all(|h| h.trim().is_empty()) {
        bail!("{}: line 1: the header is empty", path.display());
    }
    let p = path.to_owned();
    Ok(reader.into_records().map(move |r| {
        let r = r.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            anyhow::anyhow!("{}: line {line}: {}", p.display(), utf8_problem(&e))
        })?;
        let line = r.position().map_or(0, |p| p.line());
        if r.len() > header.len() {
            bail!("{}: line {line}: {} fields, but the header has {}", p.display(), r.len(), header.len());
        }
        Ok((line, header.iter().cloned().zip(r.iter().map(str::to_owned)).collect()))
    }))
}

/// Streams the rows of a JSONL file: each line an object of scalar values.
fn jsonl_rows(path: &Path) -> Result<impl Iterator<Item = Result<Row>>> {
    let file = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let p = path.to_owned();
    Ok(std::io::BufReader::new(file).split(b'\n').enumerate().filter_map(move |(i, line)| {
        let n = i as u64 + 1;
        let bytes = match line {
            Ok(b) => b,
            Err(e) => return Some(Err(anyhow::anyhow!("{}: line {n}: cannot read: {e}", p.display()))),
        };
        let Ok(text) = std::str::from_utf8(&bytes) else {
            return Some(Err(anyhow::anyhow!("{}: line {n}: not valid UTF-8 (convert the file to UTF-8)", p.display())));
        };
        if text.trim().is_empty() {
            return None;
        }
        let fields = match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(o)) => o
                .into_iter()
                .map(|(k, v)| {
                    let s = match v {
                        serde_json::Value::String(s) => s,
                        serde_json::Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    (k, s)
                })
                .collect(),
            Ok(_) => return Some(Err(anyhow::anyhow!("{}: line {n}: each line must be a JSON object", p.display()))),
            Err(e) => return Some(Err(anyhow::anyhow!("{}: line {n}: not valid JSON (column {})", p.display(), e.column()))),
        };
        Some(Ok((n, fields)))
    }))
}

fn rows(path: &Path, format: &str) -> Result<Box<dyn Iterator<Item = Result<Row>>>> {
    Ok(match format {
        "csv" => Box::new(csv_rows(path)?),
        "jsonl" | "ndjson" => Box::new(jsonl_rows(path)?),
        other => bail!("--format must be csv or jsonl, not {other:?}"),
    })
}

pub(crate) async fn run(config: Config, args: ImportArgs) -> Result<()> {
    if args.quarantine {
        let app = crate::open_app(config).await?;
        let rows = app.quarantine(args.source.clone()).await?;
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"quarantined": rows}))?);
        app.store().close().await?;
        return Ok(());
    }
    let (Some(path), Some(source)) = (args.path, args.source) else { bail!("give PATH and --source") };
    let format = args
        .format
        .clone()
        .or_else(|| path.extension().and_then(|e| e.to_str()).map(str::to_lowercase))
        .unwrap_or_else(|| "csv".into());
    let Some(configured) = config.sources.iter().find(|s| s.name == source) else {
        let names: Vec<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
        bail!("--source {source:?} is not a configured source (sources: {})", names.join(", "));
    };
    // The source's mapping in the configuration, then --mapping over it.
    let mut mapping = Mapping::from_pairs(configured.columns.iter());
    if let Some(m) = &args.mapping {
        let file = Mapping::from_toml(&std::fs::read_to_string(m).with_context(|| format!("cannot read {}", m.display()))?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", m.display()))?;
        mapping.columns.extend(file.columns);
    }
    mapping.kind = match args.kind.as_str() {
        "orders" => confidant_service::import::Kind::Orders,
        "stock" => confidant_service::import::Kind::Stock,
        _ => confidant_service::import::Kind::Profiles,
    };
    // First pass: the whole file must be readable, so that a broken file imports nothing.
    let mut total = 0u64;
    for r in rows(&path, &format)? {
        r?;
        total += 1;
    }
    let app = crate::open_app(config).await?;
    let src = app.source_named(&source).cloned().context("the source is not registered")?;
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} rows {per_sec} {eta}").unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
    let iter = rows(&path, &format)?.map_while(Result::ok);
    let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let report = app.import_rows(&src, &file, &mapping, iter, |n| bar.set_position(n)).await;
    bar.finish_and_clear();
    let report = report?;
    // Imported rows attach to the profiles they belong to through the probabilistic engine
    // too, not only by shared identifiers.
    let by = confidant_service::Principal { name: "import".into(), role: confidant_core::config::Role::Dpo };
    let matched = app.match_profiles(&by).await?;
    println!("{}", serde_json::to_string_pretty(&serde_json::json!({"import": report, "matching": matched}))?);
    app.store().close().await?;
    Ok(())
}

pub(crate) async fn quality(config: Config) -> Result<()> {
    let app = crate::open_app(config).await?;
    let q = app.quality().await?;
    println!("{}", serde_json::to_string_pretty(&serde_json::json!({"sources": q}))?);
    app.store().close().await?;
    Ok(())
}
