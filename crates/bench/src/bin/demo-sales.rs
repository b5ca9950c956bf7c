//! Daily unit sales of the demo shop (the same generator and defaults as `confidant demo`),
//! per product and per category, as `id,date,value` CSV files (value: units sold) for `confidant forecast eval`.
//! Usage: demo-sales --out DIR [--seed N --customers N --days N]

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, Result};
use clap::Parser;
use confidant_demo::{generate, DemoOptions};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    out: std::path::PathBuf,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, default_value_t = 3000)]
    customers: usize,
    #[arg(long, default_value_t = 180)]
    days: i64,
}

fn main() -> Result<()> {
    let a = Args::parse();
    // A fixed end, so the files are the same on every run.
    let end = 1_767_225_600_000; // 2026-01-01
    let opts = DemoOptions { seed: a.seed, customers: a.customers, anonymous_visitors: 0, days: a.days, end };
    let mut by_product: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut by_category: BTreeMap<(String, String), f64> = BTreeMap::new();
    for batch in generate(&opts, 500) {
        for m in batch {
            if m["event"] != "Order Completed" {
                continue;
            }
            let day = m["timestamp"].as_str().context("a timestamp")?[..10].to_owned();
            for line in m["properties"]["products"].as_array().into_iter().flatten() {
                let q = line["quantity"].as_f64().unwrap_or(1.0);
                *by_product.entry((line["product_id"].as_str().unwrap_or("?").to_owned(), day.clone())).or_default() += q;
                *by_category.entry((line["category"].as_str().unwrap_or("?").to_owned(), day.clone())).or_default() += q;
            }
        }
    }
    std::fs::create_dir_all(&a.out)?;
    for (name, rows) in [("demo_products.csv", &by_product), ("demo_categories.csv", &by_category)] {
        let mut f = std::io::BufWriter::new(std::fs::File::create(a.out.join(name))?);
        writeln!(f, "id,date,value")?;
        for ((id, day), units) in rows {
            writeln!(f, "\"{id}\",{day},{units}")?;
        }
    }
    eprintln!("{} product-days, {} category-days written to {}", by_product.len(), by_category.len(), a.out.display());
    Ok(())
}
