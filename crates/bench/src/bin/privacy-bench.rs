//! Rights-desk benchmark: builds a shop of N profiles and 10 events each through the real
//! ingestion pipeline (parse, privacy gate, encryption, store), then times the export and the
//! erasure (with its WAL truncation) of randomly chosen subjects, and the raw scan that proves
//! an erasure; and the evaluation of an audience over the whole shop (preview, creation,
//! incremental and full refreshes). Prints one JSON line.

use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use confidant_core::config::{Config, Role};
use confidant_core::ids::Identifier;
use confidant_service::ingest::IngestRequest;
use confidant_service::keys::MasterKey;
use confidant_service::privacy::{DsrAction, DsrRequest};
use confidant_service::{App, Principal, Source};
use confidant_store::{SqliteOptions, Store};
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// Where to build the database (a fresh directory).
    #[arg(long)]
    dir: std::path::PathBuf,
    #[arg(long, default_value_t = 100_000)]
    profiles: usize,
    /// Subjects to export and then erase.
    #[arg(long, default_value_t = 20)]
    samples: usize,
}

fn messages(i: usize) -> Vec<String> {
    let user = format!("bench-user-{i:07}");
    let mut out = vec![json!({"type": "identify", "userId": user, "messageId": format!("m-{i}-0"), "timestamp": "2026-10-01T10:00:00Z",
        "traits": {"email": format!("bench.{i:07}@example.fr"), "phone": format!("+3361{:07}", i % 10_000_000), "firstName": format!("Prénom{i}"), "birthday": "1990-01-01"}})
    .to_string()];
    for k in 1..10 {
        let event = if k == 9 { "Order Completed" } else { "Product Viewed" };
        out.push(
            json!({"type": "track", "userId": user, "event": event, "messageId": format!("m-{i}-{k}"), "timestamp": format!("2026-10-{:02}T10:00:00Z", k + 1),
                   "properties": {"product_id": format!("SKU-{}", (i * 7 + k) % 5000), "price": 19.9, "currency": "EUR", "order_id": format!("o-{i}")},
                   "context": {"ip": "203.0.113.9", "userAgent": "Mozilla/5.0 (X11; Linux x86_64) Bench/1.0", "page": {"path": "/produit"}}})
            .to_string(),
        );
    }
    out
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir)?;
    }
    std::fs::create_dir_all(&args.dir)?;
    let mut config = Config { data_dir: args.dir.clone(), ..Config::default() };
    config.sources.push(confidant_core::config::SourceConfig { name: "web".into(), write_key: "wk_bench_0123456789abcdef".into(), columns: Default::default() });
    let key = MasterKey::from_bytes([3; 32]);
    let store = Store::open_sqlite(
        &args.dir.join("confidant.db"),
        SqliteOptions { max_commit_messages: config.ingest.max_commit_messages, rules: config.identity_rules(), master_key: *key.bytes() },
    )?;
    let app = App::new(config, store, key).await?;
    let source: Source = app.source_for_write_key("wk_bench_0123456789abcdef").cloned().expect("source");

    // Build: batches of 50 profiles (500 messages), 4 in flight.
    let started = Instant::now();
    let mut pending = Vec::new();
    for chunk in (0..args.profiles).collect::<Vec<_>>().chunks(50) {
        let texts: Vec<String> = chunk.iter().flat_map(|i| messages(*i)).collect();
        let (app, source) = (app.clone(), source.clone());
        pending.push(tokio::spawn(async move {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            app.ingest(IngestRequest { source: &source, messages: refs, batch_sent_at: None, endpoint_type: None, received_at: 1_795_000_000_000, gpc: false }).await
        }));
        if pending.len() >= 4 {
            let o = pending.remove(0).await??;
            anyhow::ensure!(o.rejected.is_empty(), "rejections: {:?}", o.rejected.first());
        }
    }
    for p in pending {
        p.await??;
    }
    let build_s = started.elapsed().as_secs_f64();
    let totals = app.store().totals().await?;
    let db_bytes = std::fs::metadata(args.dir.join("confidant.db"))?.len();

    let by = Principal { name: "bench".into(), role: Role::Dpo };

    // Audiences over the whole shop: a preview, a creation (full evaluation), the first
    // incremental refresh after start (every subject is new to it), then an incremental refresh
    // after 1,000 subjects sent one event each.
    let rule = r#"did "Order Completed" within 3650 days and count "Product Viewed" >= 8 and trait.firstName exists"#;
    let t = Instant::now();
    let preview = app.preview_audience("analytics", rule).await?;
    let preview_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let marketer = Principal { name: "bench".into(), role: Role::Marketer };
    let input = confidant_service::audiences::AudienceInput { name: "buyers".into(), purpose: "analytics".into(), rule: rule.into(), description: None };
    let (created, _) = app.create_audience(input, &marketer).await?;
    let create_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(created.size as usize == args.profiles, "every bench subject matches: {}", created.size);
    let t = Instant::now();
    let first = app.refresh_audiences(false).await?;
    let first_refresh_s = t.elapsed().as_secs_f64();
    let touched: Vec<String> = (0..1000.min(args.profiles))
        .map(|j| {
            let i = j * (args.profiles / 1000.min(args.profiles)).max(1);
            json!({"type": "track", "userId": format!("bench-user-{i:07}"), "event": "Product Viewed", "messageId": format!("touch-{i}"),
                   "timestamp": "2026-10-20T10:00:00Z", "properties": {"product_id": "SKU-1"}})
            .to_string()
        })
        .collect();
    for chunk in touched.chunks(500) {
        app.ingest(IngestRequest { source: &source, messages: chunk.iter().map(String::as_str).collect(), batch_sent_at: None, endpoint_type: None, received_at: 1_795_000_000_000, gpc: false })
            .await?;
    }
    let t = Instant::now();
    let incremental = app.refresh_audiences(false).await?;
    let incremental_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let full = app.refresh_audiences(true).await?;
    let full_s = t.elapsed().as_secs_f64();
    let audiences = json!({
        "preview_s": preview_s, "preview_size": preview.size, "create_s": create_s,
        "first_incremental": {"seconds": first_refresh_s, "subjects": first.subjects_evaluated},
        "incremental_after_1000": {"seconds": incremental_s, "subjects": incremental.subjects_evaluated, "changes": incremental.joined + incremental.left},
        "full": {"seconds": full_s, "subjects": full.subjects_evaluated, "audiences": full.audiences},
    });
    let step = args.profiles / args.samples.max(1);
    let subjects: Vec<usize> = (0..args.samples).map(|s| s * step + step / 2).collect();
    let mut export_ms = Vec::new();
    let mut erase_ms = Vec::new();
    for i in &subjects {
        let id = Identifier::parse_tagged(&format!("email:bench.{i:07}@example.fr"), "FR")?;
        let t = Instant::now();
        let o = app.dsr(DsrRequest { identifier: id.clone(), channel: "bench".into(), action: DsrAction::Export }, &by).await?;
        export_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(o.export.map(|e| e["events"].as_array().map_or(0, Vec::len)).is_some_and(|n| n >= 10), "export incomplete");
    }
    for i in &subjects {
        let id = Identifier::parse_tagged(&format!("email:bench.{i:07}@example.fr"), "FR")?;
        let t = Instant::now();
        let o = app.dsr(DsrRequest { identifier: id, channel: "bench".into(), action: DsrAction::Erase { suppress: false } }, &by).await?;
        erase_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(o.erasure.map(|e| e.events).is_some_and(|n| n >= 10), "erasure incomplete");
    }
    let t = Instant::now();
    let last = subjects.last().copied().unwrap_or(0);
    let scan = confidant_service::scan::scan(&args.dir, &[format!("bench.{last:07}@example.fr"), format!("Prénom{last}")])?;
    let scan_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(scan.hits.is_empty(), "erased data found by the scan");
    app.store().close().await?;
    println!(
        "{}",
        json!({
            "profiles": totals.profiles, "events": totals.events, "db_mib": db_bytes as f64 / 1048576.0, "build_s": build_s,
            "export_ms": {"p50": percentile(&mut export_ms.clone(), 0.5), "max": percentile(&mut export_ms, 1.0)},
            "erase_ms": {"first": erase_ms[0], "p50": percentile(&mut erase_ms.clone(), 0.5), "max": percentile(&mut erase_ms, 1.0)},
            "scan": {"seconds": scan_s, "files": scan.files, "mib": scan.bytes as f64 / 1048576.0},
            "audiences": audiences,
        })
    );
    Ok(())
}
