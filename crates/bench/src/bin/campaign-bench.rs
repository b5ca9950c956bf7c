//! Campaign throughput: builds N consenting profiles (a tenth refuse marketing) through the
//! real ingestion pipeline, then sends a campaign to all of them through the local SMTP server
//! given (`bench/campaign.sh` starts one), every recipient checked, claimed, rendered and logged
//! as in production. Beside it, in the same run, the reference: the same SMTP client and
//! connections handing over the same number of pre-rendered messages with no checks and no
//! delivery log. Prints one JSON line.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use confidant_core::config::{Config, Role, SmtpTls};
use confidant_service::campaigns::{CampaignInput, Localised};
use confidant_service::ingest::IngestRequest;
use confidant_service::keys::MasterKey;
use confidant_service::mail::{Mailer, Outgoing};
use confidant_service::{App, Principal, Source};
use confidant_store::{SqliteOptions, Store};
use serde_json::json;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    dir: std::path::PathBuf,
    #[arg(long, default_value_t = 100_000)]
    recipients: usize,
    #[arg(long)]
    smtp_port: u16,
    /// SMTP connections in parallel.
    #[arg(long, default_value_t = 8)]
    connections: usize,
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0)
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
    config.server.public_url = Some("https://shop.example".into());
    config.smtp.host = Some("127.0.0.1".into());
    config.smtp.port = args.smtp_port;
    config.smtp.tls = SmtpTls::None;
    config.smtp.from = "La Boutique <news@boutique.example>".into();
    config.smtp.connections = args.connections;
    let smtp = config.smtp.clone();
    let key = MasterKey::from_bytes([3; 32]);
    let store = Store::open_sqlite(
        &args.dir.join("confidant.db"),
        SqliteOptions { max_commit_messages: config.ingest.max_commit_messages, rules: config.identity_rules(), master_key: *key.bytes() },
    )?;
    let app = App::new(config, store, key).await?;
    let source: Source = app.source_for_write_key("wk_bench_0123456789abcdef").cloned().expect("source");

    let started = Instant::now();
    for chunk in (0..args.recipients).collect::<Vec<_>>().chunks(500) {
        let texts: Vec<String> = chunk
            .iter()
            .map(|i| {
                json!({"type": "identify", "userId": format!("camp-{i:07}"), "messageId": format!("c-{i}"), "timestamp": "2026-10-01T10:00:00Z",
                       "traits": {"email": format!("camp.{i:07}@example.fr"), "firstName": format!("Prénom{i}")},
                       "context": {"consent": {"categoryPreferences": {"Marketing": i % 10 != 0, "Analytics": true}}}})
                .to_string()
            })
            .collect();
        let o = app
            .ingest(IngestRequest { source: &source, messages: texts.iter().map(String::as_str).collect(), batch_sent_at: None, endpoint_type: None, received_at: 1_795_000_000_000, gpc: false })
            .await?;
        anyhow::ensure!(o.rejected.is_empty(), "rejections: {:?}", o.rejected.first());
    }
    let build_s = started.elapsed().as_secs_f64();
    // The peak of building the profiles, then the counter reset (Linux: clear_refs 5) so that
    // the campaign's own peak is measured.
    let build_rss = rss_mib();
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let by = Principal { name: "bench".into(), role: Role::Marketer };
    let input = CampaignInput {
        name: Some("bench".into()),
        audience: "everyone".into(),
        purpose: None,
        subject: Localised::One("{{firstName}}, nos nouveautés".into()),
        body: Localised::One("Bonjour {{firstName}},\n\nNos nouveautés vous attendent.\n\nSe désinscrire : {{unsubscribe_url}}\n".into()),
        recommendations: None,
        scheduled_at: None,
        trigger: None,
    };
    app.create_campaign(input, &by).await?;
    let t = Instant::now();
    let report = app.send_campaign("bench", false, &by).await?;
    let send_s = t.elapsed().as_secs_f64();
    let campaign_rss = rss_mib();
    anyhow::ensure!(report.failed == 0, "failures: {}", report.failed);

    // The references, same server, connections and number of messages: our SMTP client with
    // nothing else (the cost of the checks, claims and log), then lettre's own pooled transport
    // (what a plain lettre user gets: Nagle on, see mail.rs).
    let n = report.sent as usize;
    let mailer = Mailer::new(&smtp)?;
    let bare_s = blast(n, args.connections, move |m| {
        let mailer = mailer.clone();
        async move { mailer.send(&m).await.is_ok() }
    })
    .await?;
    let stock = lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(args.smtp_port)
        .pool_config(lettre::transport::smtp::PoolConfig::new().max_size(args.connections as u32))
        .build();
    // lettre's pool is slow enough (40 ms a message per connection) that a tenth of the
    // messages measure it well.
    let n_stock = (n / 10).max(1);
    let stock_s = blast(n_stock, args.connections, move |m| {
        let stock = stock.clone();
        async move {
            use lettre::AsyncTransport;
            let message = lettre::Message::builder()
                .from("La Boutique <news@boutique.example>".parse().unwrap())
                .to(m.to.parse().unwrap())
                .subject(m.subject)
                .body(m.body)
                .unwrap();
            stock.send(message).await.is_ok()
        }
    })
    .await?;
    let rate = |k: usize, s: f64| k as f64 / s;
    println!(
        "{}",
        json!({"recipients": args.recipients, "connections": args.connections, "build_s": build_s,
               "campaign": {"seconds": send_s, "sent": report.sent, "suppressed": report.suppressed, "emails_per_s": rate(n, send_s)},
               "reference_bare_client": {"seconds": bare_s, "sent": n, "emails_per_s": rate(n, bare_s)},
               "reference_lettre_pool": {"seconds": stock_s, "sent": n_stock, "emails_per_s": rate(n_stock, stock_s)},
               "ratio_campaign_to_bare_client": rate(n, send_s) / rate(n, bare_s),
               "ratio_campaign_to_lettre_pool": rate(n, send_s) / rate(n_stock, stock_s),
               "peak_rss_mib": {"building_profiles": build_rss, "campaign": campaign_rss}})
    );
    app.store().close().await?;
    Ok(())
}

/// Sends `n` pre-rendered messages through `send`, `connections` at a time; the seconds taken.
async fn blast<F, Fut>(n: usize, connections: usize, send: F) -> Result<f64>
where
    F: Fn(Outgoing) -> Fut,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let limit = Arc::new(tokio::sync::Semaphore::new(connections));
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let permit = limit.clone().acquire_owned().await?;
        let url = "https://shop.example/u/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let sending = send(Outgoing {
            to: format!("camp.{i:07}@example.fr"),
            subject: format!("Prénom{i}, nos nouveautés"),
            body: format!("Bonjour Prénom{i},\n\nNos nouveautés vous attendent.\n\nSe désinscrire : {url}\n"),
            message_id: format!("ref-{i}"),
            unsubscribe_url: Some(url.into()),
        });
        tasks.spawn(async move {
            let _p = permit;
            sending.await
        });
        while let Some(done) = tasks.try_join_next() {
            anyhow::ensure!(done?, "reference send failed");
        }
    }
    while let Some(done) = tasks.join_next().await {
        anyhow::ensure!(done?, "reference send failed");
    }
    Ok(t.elapsed().as_secs_f64())
}
