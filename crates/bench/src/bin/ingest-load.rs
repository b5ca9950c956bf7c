//! Drives `/v1/batch` from a separate process: pre-serialised batches over keep-alive
//! connections, either as fast as the server answers (`--rate 0`) or at a fixed rate of
//! batches per second. Prints one JSON line: throughput and latency percentiles.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use confidant_bench::{percentile, workload};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    url: String,
    #[arg(long)]
    write_key: String,
    /// Customers in the generated shop (about 58 messages each).
    #[arg(long, default_value_t = 5000)]
    customers: usize,
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Batches per second to offer; 0 sends as fast as the server answers.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Stop after this many seconds even if batches remain.
    #[arg(long, default_value_t = 60.0)]
    max_seconds: f64,
    /// A prefix for every id, unique per run.
    #[arg(long)]
    run: String,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let bodies: Vec<bytes_body::Body> =
        workload(&args.run, args.customers, args.batch_size).into_iter().map(|b| bytes_body::Body::new(&b)).collect();
    let bodies = Arc::new(bodies);
    let messages: usize = bodies.iter().map(|b| b.messages).sum();
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).tcp_nodelay(true).build()?;
    let next = Arc::new(AtomicUsize::new(0));
    // Open every connection before the clock starts, as a long-running client would have.
    // `--url` may list several nodes (comma-separated): batch i goes to node i mod n.
    let urls: Vec<String> = args.url.split(',').map(|u| u.trim().trim_end_matches('/').to_owned()).filter(|u| !u.is_empty()).collect();
    let warm: Vec<_> = (0..args.concurrency * urls.len()).map(|i| client.get(format!("{}/health", urls[i % urls.len()])).send()).collect();
    for w in warm {
        let _ = w.await?.bytes().await;
    }
    eprintln!("sending {messages} messages in {} batches", bodies.len());
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.max_seconds);
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client, bodies, next, key) = (client.clone(), bodies.clone(), next.clone(), args.write_key.clone());
        let batch_urls: Vec<String> = urls.iter().map(|u| format!("{u}/v1/batch")).collect();
        let rate = args.rate;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let (mut sent, mut throttled, mut errors, mut rejected) = (0usize, 0usize, 0usize, 0usize);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= bodies.len() || Instant::now() > deadline {
                    break;
                }
                if rate > 0.0 {
                    // Open-loop schedule: batch i is due at i / rate.
                    let due = started + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let body = &bodies[i];
                let url = &batch_urls[i % batch_urls.len()];
                let t = Instant::now();
                loop {
                    let r = client.post(url).basic_auth(&key, Some("")).header("content-type", "application/json").body(body.bytes.clone()).send().await;
                    match r {
                        Ok(r) if r.status() == 200 => {
                            // Count what the server accepted, not what was sent: a message the
                            // privacy gate refuses is not an ingested event.
                            let accepted = r.bytes().await.ok().and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok()).and_then(|v| v["accepted"].as_u64());
                            match accepted {
                                Some(n) => {
                                    sent += n as usize;
                                    rejected += body.messages - n as usize;
                                }
                                None => errors += 1,
                            }
                            break;
                        }
                        Ok(r) if r.status() == 429 => {
                            throttled += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        _ => {
                            errors += 1;
                            break;
                        }
                    }
                }
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            (lat, sent, throttled, errors, rejected)
        }));
    }
    let mut lat = Vec::new();
    let (mut sent, mut throttled, mut errors, mut rejected) = (0, 0, 0, 0);
    for t in tasks {
        let (l, s, th, e, r) = t.await?;
        lat.extend(l);
        sent += s;
        throttled += th;
        errors += e;
        rejected += r;
    }
    let secs = started.elapsed().as_secs_f64();
    // A server may acknowledge before it applies (Confidant on SQLite: its intake journal).
    // The rate that counts is the one at which batches are applied: wait until every node's
    // queue of unapplied messages is empty.
    for u in &urls {
        for _ in 0..6000 {
            let text = match client.get(format!("{u}/metrics")).send().await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(_) => break,
            };
            let depth = text.lines().find_map(|l| l.strip_prefix("confidant_ingest_queue_depth ")).and_then(|v| v.trim().parse::<f64>().ok());
            if depth.is_none_or(|d| d == 0.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let applied_secs = started.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{}",
        serde_json::json!({
            "messages_offered": messages, "messages_acknowledged": sent, "seconds": secs,
            "acknowledged_per_second": sent as f64 / secs, "seconds_until_applied": applied_secs,
            "events_per_second": sent as f64 / applied_secs, "batches": lat.len(), "batch_size": args.batch_size,
            "concurrency": args.concurrency, "rate_batches_per_second": args.rate,
            "latency_ms": {"p50": percentile(&lat, 50.0), "p90": percentile(&lat, 90.0), "p99": percentile(&lat, 99.0), "max": lat.last()},
            "throttled_429": throttled, "errors": errors, "rejected": rejected,
        })
    );
    Ok(())
}

mod bytes_body {
    pub struct Body {
        pub bytes: bytes::Bytes,
        pub messages: usize,
    }
    impl Body {
        pub fn new(batch: &[serde_json::Value]) -> Body {
            let bytes = serde_json::to_vec(&serde_json::json!({"batch": batch})).expect("JSON");
            Body { bytes: bytes::Bytes::from(bytes), messages: batch.len() }
        }
    }
}
