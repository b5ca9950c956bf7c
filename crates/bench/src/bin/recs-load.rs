//! Serving benchmark of `GET /api/recommendations`, from a separate process against a running
//! `confidant serve`: loads an interactions file (user, item, time) as `Product Viewed` events
//! with consent to personalisation for every user, trains, then asks for recommendations at a
//! fixed rate (open loop: request i is due at i / rate, late requests are counted from their due
//! time, so a stalled server cannot hide its queue) and prints the latency percentiles as JSON.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use confidant_bench::percentile;
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    url: String,
    #[arg(long)]
    write_key: String,
    /// An admin key (to look profiles up and train).
    #[arg(long)]
    admin_key: String,
    /// A marketer key (to ask for recommendations, as a shop's site would).
    #[arg(long)]
    marketer_key: String,
    /// CSV with a header: user, item, time columns (MovieLens `ml100k.csv`).
    #[arg(long)]
    interactions: String,
    /// Requests per second to offer.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    #[arg(long, default_value_t = 30.0)]
    seconds: f64,
    /// Share of requests with a product as context (similar items, bought together).
    #[arg(long, default_value_t = 0.3)]
    context_share: f64,
    /// Connections kept open.
    #[arg(long, default_value_t = 64)]
    connections: usize,
}

fn read(path: &str) -> Result<Vec<(String, String, i64)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().context("empty file")?.split(',').collect();
    let col = |names: &[&str]| header.iter().position(|h| names.contains(&h.trim())).with_context(|| format!("no column among {names:?} in {header:?}"));
    let (u, i, t) = (col(&["user", "user_id", "userId"])?, col(&["item", "item_id", "itemId", "movie_id"])?, col(&["time", "timestamp"])?);
    let mut out = Vec::new();
    for l in lines {
        let f: Vec<&str> = l.split(',').collect();
        out.push((f[u].to_owned(), f[i].to_owned(), f[t].trim().parse::<f64>().map(|x| x as i64).unwrap_or(0)));
    }
    Ok(out)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<()> {
    let a = Args::parse();
    let rows = read(&a.interactions)?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(a.connections).tcp_nodelay(true).build()?;
    // 1. Events (times shifted so that the latest is a day ago, as retention would otherwise
    // have them: MovieLens is from 1997) and consents.
    let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as i64;
    let shift = now_s - 86_400 - rows.iter().map(|r| r.2).max().unwrap_or(0);
    let loaded = Instant::now();
    for chunk in rows.chunks(500) {
        let batch: Vec<Value> = chunk
            .iter()
            .map(|(u, i, t)| {
                let ts = confidant_core::time::format_millis((t + shift) * 1000);
                json!({"type": "track", "userId": format!("ml-{u}"), "event": "Product Viewed", "timestamp": ts,
                       "messageId": format!("ml-{u}-{i}"), "properties": {"product_id": format!("m{i}"), "category": "movies"}})
            })
            .collect();
        let r = client.post(format!("{}/v1/batch", a.url)).basic_auth(&a.write_key, Some("")).json(&json!({"batch": batch})).send().await?;
        if r.status() != 200 {
            bail!("loading events: {}", r.status());
        }
    }
    let users: Vec<String> = rows.iter().map(|r| r.0.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    for u in &users {
        let r = client
            .post(format!("{}/v1/consent", a.url))
            .basic_auth(&a.write_key, Some(""))
            .json(&json!({"userId": format!("ml-{u}"), "purposes": {"personalisation.recommendations": true}, "method": "banner"}))
            .send()
            .await?;
        if r.status() != 200 {
            bail!("consent: {}", r.status());
        }
    }
    let mut profiles = Vec::new();
    for u in &users {
        let v: Value = client.get(format!("{}/api/profiles?user_id=ml-{u}", a.url)).bearer_auth(&a.admin_key).send().await?.json().await?;
        profiles.push(v["profiles"][0]["id"].as_str().context("profile id")?.to_owned());
    }
    let load_s = loaded.elapsed().as_secs_f64();
    let trained = Instant::now();
    let train: Value = client.post(format!("{}/api/recommendations/train", a.url)).bearer_auth(&a.admin_key).send().await?.json().await?;
    let train_s = trained.elapsed().as_secs_f64();
    let items: Vec<String> = rows.iter().map(|r| r.1.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();

    // 2. The open-loop load.
    let total = (a.rate * a.seconds) as usize;
    let urls: Arc<Vec<String>> = Arc::new(
        (0..total)
            .map(|k| {
                let p = &profiles[(k * 7919) % profiles.len()];
                if (k % 100) as f64 / 100.0 < a.context_share {
                    format!("{}/api/recommendations?profile={p}&n=10&context=product:m{}", a.url, items[(k * 104_729) % items.len()])
                } else {
                    format!("{}/api/recommendations?profile={p}&n=10", a.url)
                }
            })
            .collect(),
    );
    // Open every connection first, as a running site would have.
    let warm: Vec<_> = (0..a.connections).map(|_| client.get(format!("{}/health", a.url)).send()).collect();
    for w in warm {
        let _ = w.await?.bytes().await;
    }
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.connections {
        let (client, urls, next, key, rate) = (client.clone(), urls.clone(), next.clone(), a.marketer_key.clone(), a.rate);
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors, mut personalised) = (Vec::new(), 0usize, 0usize);
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= urls.len() {
                    break;
                }
                let due = started + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
                match client.get(&urls[i]).bearer_auth(&key).send().await {
                    Ok(r) if r.status() == 200 => {
                        let body = r.bytes().await.unwrap_or_default();
                        if body.windows(19).any(|w| w == b"\"personalised\":true") {
                            personalised += 1;
                        }
                    }
                    _ => errors += 1,
                }
                // From the due time: queueing in the client counts against the server.
                lat.push(due.elapsed().as_secs_f64() * 1000.0);
            }
            (lat, errors, personalised)
        }));
    }
    let (mut lat, mut errors, mut personalised) = (Vec::new(), 0, 0);
    for t in tasks {
        let (l, e, p) = t.await?;
        lat.extend(l);
        errors += e;
        personalised += p;
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort_by(|x, y| x.total_cmp(y));
    let mut out = BTreeMap::new();
    out.insert("events", json!(rows.len()));
    out.insert("users", json!(users.len()));
    out.insert("items", json!(items.len()));
    out.insert("load_seconds", json!(load_s));
    out.insert("train", json!({"seconds": train_s, "report": train}));
    out.insert("requests", json!(lat.len()));
    out.insert("offered_per_second", json!(a.rate));
    out.insert("achieved_per_second", json!(lat.len() as f64 / secs));
    out.insert("errors", json!(errors));
    out.insert("personalised", json!(personalised));
    out.insert("latency_ms", json!({"p50": percentile(&lat, 50.0), "p90": percentile(&lat, 90.0), "p99": percentile(&lat, 99.0), "p999": percentile(&lat, 99.9), "max": lat.last()}));
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}
