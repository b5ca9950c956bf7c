//! The latency limit of this machine's disk for a durable acknowledgement: append a WAL-sized
//! write and `fdatasync` it, at a steady rate, and report the percentiles. Any server that
//! fsyncs before answering inherits this tail. Prints one JSON line.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use confidant_bench::percentile;

#[derive(Parser)]
struct Args {
    /// A scratch file to create (removed afterwards).
    #[arg(long)]
    file: std::path::PathBuf,
    #[arg(long, default_value_t = 500)]
    count: usize,
    /// Pause between syncs.
    #[arg(long, default_value_t = 10)]
    interval_ms: u64,
    /// Bytes appended before each sync.
    #[arg(long, default_value_t = 16_384)]
    bytes: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).open(&args.file)?;
    let block = vec![0x5au8; args.bytes];
    let mut lat = Vec::with_capacity(args.count);
    for _ in 0..args.count {
        let t = Instant::now();
        f.write_all(&block)?;
        f.sync_data()?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(args.interval_ms));
    }
    drop(f);
    std::fs::remove_file(&args.file)?;
    lat.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{}",
        serde_json::json!({"syncs": lat.len(), "bytes": args.bytes, "latency_ms": {
            "p50": percentile(&lat, 50.0), "p90": percentile(&lat, 90.0), "p99": percentile(&lat, 99.0), "max": lat.last()}})
    );
    Ok(())
}
