//! `confidant demo`: a realistic shop sent through the real ingestion API, then served.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use confidant_core::config::Config;
use confidant_demo::{generate, DemoOptions, DAY_MS};
use indicatif::{ProgressBar, ProgressStyle};

use crate::credentials::Generated;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// The seed: the same seed gives the same shop, and resending it stores nothing twice.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Customers who sign in and buy.
    #[arg(long, default_value_t = 3000)]
    customers: usize,
    /// Visitors who only browse, anonymously.
    #[arg(long, default_value_t = 1500)]
    visitors: usize,
    /// Days of history, ending today.
    #[arg(long, default_value_t = 180)]
    days: i64,
    /// Load the demo, print the summary and exit instead of serving.
    #[arg(long)]
    no_serve: bool,
}

const BATCH: usize = 200;
const SENDERS: usize = 4;

pub async fn run(config: Config, _generated: Option<Generated>, args: DemoArgs) -> Result<()> {
    let write_key = config.sources[0].write_key.clone();
    let admin_key = config.api_keys.iter().find(|k| k.role == confidant_core::config::Role::Admin).map(|k| k.key.clone());
    let data_dir = config.data_dir.clone();
    let app = crate::open_app(config).await?;
    let server = confidant_http::Server::bind(app.clone()).await.context("cannot listen")?;
    let addr = server.local_addr();
    let base = format!("http://{addr}");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async {
        let _ = stop_rx.await;
    }));

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
    let opts = DemoOptions { seed: args.seed, customers: args.customers, anonymous_visitors: args.visitors, days: args.days, end: now - now % DAY_MS };
    eprintln!("Generating the demo shop (seed {}, {} customers, {} visitors, {} days) and sending it to {base}/v1/batch", opts.seed, opts.customers, opts.anonymous_visitors, opts.days);

    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {pos} messages sent ({per_sec}) {elapsed}").expect("a valid template"));
    bar.enable_steady_tick(Duration::from_millis(120));
    let started = Instant::now();
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(SENDERS * 2);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let client = reqwest::Client::new();
    let accepted = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for _ in 0..SENDERS {
        let (rx, client, url, key, bar, accepted) = (rx.clone(), client.clone(), format!("{base}/v1/batch"), write_key.clone(), bar.clone(), accepted.clone());
        senders.push(tokio::spawn(async move {
            loop {
                let Some(body) = rx.lock().await.recv().await else { return Ok::<_, anyhow::Error>(()) };
                let n = match send_batch(&client, &url, &key, body).await {
                    Ok(n) => n,
                    Err(e) => {
                        // Stop the producer and the other senders too.
                        rx.lock().await.close();
                        return Err(e);
                    }
                };
                accepted.fetch_add(n, Ordering::Relaxed);
                bar.inc(n);
            }
        }));
    }
    let producer = tokio::task::spawn_blocking(move || {
        for batch in generate(&opts, BATCH) {
            let body = serde_json::to_vec(&serde_json::json!({"batch": batch})).expect("JSON");
            if tx.blocking_send(body).is_err() {
                break;
            }
        }
    });
    producer.await?;
    for s in senders {
        s.await??;
    }
    bar.finish_and_clear();
    let took = started.elapsed();
    let totals = app.store().totals().await?;
    let sent = accepted.load(Ordering::Relaxed);
    eprintln!(
        "Sent {sent} messages in {:.1} s ({:.0}/s): {} events stored, {} profiles, {} merges, {} merges refused by merge protection.",
        took.as_secs_f64(),
        sent as f64 / took.as_secs_f64(),
        totals.events,
        totals.profiles,
        totals.merges,
        totals.conflicts
    );
    println!();
    println!("Confidant demo is {}:", if args.no_serve { "loaded" } else { "running" });
    println!("  data directory   {}", data_dir.display());
    println!("  ingestion        {base}/v1/batch   (write key: {write_key})");
    if let Some(k) = &admin_key {
        println!("  admin API        {base}/api/profiles?email=...   (Authorization: Bearer {k})");
        println!("  try              curl -s -H 'Authorization: Bearer {k}' '{base}/api/profiles?user_id=cust_00001'");
        println!("  register         curl -s -H 'Authorization: Bearer {k}' '{base}/api/ropa?format=md'");
    }
    let dir = data_dir.display();
    println!("  rights desk      confidant dsr export --data-dir {dir} --identifier user_id:cust_00001");
    println!("                   confidant dsr erase --data-dir {dir} --identifier user_id:cust_00001, then");
    println!("                   confidant verify-erasure --data-dir {dir} --identifier user_id:cust_00001");
    println!("  health, metrics  {base}/health  {base}/metrics");

    if !args.no_serve {
        println!("Press Ctrl-C to stop.");
        crate::shutdown_signal().await;
    }
    let _ = stop_tx.send(());
    serving.await??;
    Ok(())
}

/// Posts one batch, retrying as a well-behaved SDK does on 429 and 5xx. Returns how many
/// messages were accepted.
async fn send_batch(client: &reqwest::Client, url: &str, key: &str, body: Vec<u8>) -> Result<u64> {
    for attempt in 0..20u32 {
        let resp = client.post(url).basic_auth(key, Some("")).header("content-type", "application/json").body(body.clone()).send().await;
        match resp {
            Ok(r) if r.status().is_success() => {
                let v: serde_json::Value = r.json().await?;
                if let Some(rej) = v["rejected"].as_array().filter(|r| !r.is_empty()) {
                    bail!("the server rejected demo messages: {}", serde_json::Value::Array(rej.clone()));
                }
                return Ok(v["accepted"].as_u64().unwrap_or(0));
            }
            Ok(r) if r.status().as_u16() == 429 || r.status().is_server_error() => {
                let wait = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok()).unwrap_or(1);
                tokio::time::sleep(Duration::from_millis(wait * 1000 + 50 * u64::from(attempt))).await;
            }
            Ok(r) => bail!("the server answered {} to a demo batch: {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) if attempt < 5 => {
                tracing::warn!(error = %e, "retrying a demo batch");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    bail!("a demo batch was refused 20 times")
}
