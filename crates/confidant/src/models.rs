//! `confidant clv`, `confidant recs`, `confidant forecast`: the analytics models on files,
//! with no configuration and no store: for checking them against the references and for
//! analysts who bring their own extracts.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use confidant_analytics::{clv, forecast, recs};
use serde_json::json;

use crate::dedupe::csv_problem;

/// A CSV file read column by column name, with the line of every problem.
struct Table {
    path: PathBuf,
    reader: csv::Reader<std::io::BufReader<std::fs::File>>,
    columns: Vec<usize>,
    line: usize,
}

impl Table {
    /// Opens `path` and finds `wanted` columns; (flag, name) pairs name the flag in errors.
    fn open(path: &Path, wanted: &[(&str, &str)]) -> Result<Table> {
        let file = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
        let mut reader = csv::ReaderBuilder::new().from_reader(std::io::BufReader::new(file));
        let header: Vec<String> = reader
            .headers()
            .map_err(|e| anyhow::anyhow!("{}: line 1: {}", path.display(), csv_problem(&e)))?
            .iter()
            .map(|h| h.trim_start_matches('\u{feff}').trim().to_owned())
            .collect();
        let mut columns = Vec::new();
        for (flag, name) in wanted {
            let i = header
                .iter()
                .position(|h| h == name)
                .with_context(|| format!("{}: line 1: no column {name:?} (given as {flag}); the columns are {}", path.display(), header.join(", ")))?;
            columns.push(i);
        }
        Ok(Table { path: path.to_owned(), reader, columns, line: 1 })
    }

    /// The next row's wanted fields, or None at the end.
    fn next(&mut self) -> Result<Option<Vec<String>>> {
        let mut record = csv::StringRecord::new();
        let more = self.reader.read_record(&mut record).map_err(|e| anyhow::anyhow!("{}: line {}: {}", self.path.display(), self.line + 1, csv_problem(&e)))?;
        if !more {
            return Ok(None);
        }
        self.line += 1;
        Ok(Some(self.columns.iter().map(|&i| record.get(i).unwrap_or("").trim().to_owned()).collect()))
    }

    fn problem(&self, what: impl std::fmt::Display) -> anyhow::Error {
        anyhow::anyhow!("{}: line {}: {what}", self.path.display(), self.line)
    }

    /// A date in any notation imports accept, as a day number (days since 1970-01-01).
    fn day(&self, raw: &str, column: &str) -> Result<i64> {
        parse_day(raw).ok_or_else(|| self.problem(format!("column {column}: {raw:?} is not a date")))
    }

    fn number(&self, raw: &str, column: &str) -> Result<f64> {
        raw.parse::<f64>().ok().filter(|v| v.is_finite()).ok_or_else(|| self.problem(format!("column {column}: {raw:?} is not a number")))
    }
}

fn parse_day(raw: &str) -> Option<i64> {
    let iso = confidant_core::normalise::date(raw).ok()?.iso;
    confidant_core::time::parse_timestamp(&iso).map(|ms| ms.div_euclid(86_400_000))
}

fn print_json(v: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

#[derive(Subcommand)]
pub(crate) enum ClvCommand {
    /// Fit BG/NBD and Gamma-Gamma on a transactions file and print the parameters as JSON.
    Fit(ClvFitArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum Period {
    Day,
    Week,
    Month,
}

#[derive(Args)]
pub(crate) struct ClvFitArgs {
    /// Transactions: one row per purchase (CSV with a header).
    #[arg(long, value_name = "FILE")]
    transactions: PathBuf,
    #[arg(long, value_name = "COLUMN")]
    customer_col: String,
    #[arg(long, value_name = "COLUMN")]
    date_col: String,
    /// The purchase amount; without it, only BG/NBD is fitted.
    #[arg(long, value_name = "COLUMN")]
    value_col: Option<String>,
    /// The last day of the calibration period (purchases after it are left out).
    #[arg(long, value_name = "DATE")]
    calibration_end: String,
    /// The unit of time of the parameters: week is 7 days (counted as days / 7), month 30 days.
    #[arg(long, value_enum, default_value = "week")]
    period: Period,
}

pub(crate) fn clv(cmd: ClvCommand) -> Result<()> {
    let ClvCommand::Fit(a) = cmd;
    let mut wanted = vec![("--customer-col", a.customer_col.as_str()), ("--date-col", a.date_col.as_str())];
    if let Some(v) = &a.value_col {
        wanted.push(("--value-col", v.as_str()));
    }
    let end = parse_day(&a.calibration_end).with_context(|| format!("--calibration-end: {:?} is not a date", a.calibration_end))?;
    let mut table = Table::open(&a.transactions, &wanted)?;
    let mut purchases = Vec::new();
    while let Some(row) = table.next()? {
        if row[0].is_empty() {
            return Err(table.problem(format!("column {}: empty customer", a.customer_col)));
        }
        let day = table.day(&row[1], &a.date_col)?;
        let value = match &a.value_col {
            Some(c) => table.number(&row[2], c)?,
            None => 0.0,
        };
        purchases.push(clv::Purchase { customer: row[0].clone(), day, value });
    }
    let period_days = match a.period {
        Period::Day => 1.0,
        Period::Week => 7.0,
        Period::Month => 30.0,
    };
    let summaries = clv::summarise(&purchases, end, period_days).map_err(|e| match e {
        confidant_analytics::AnalyticsError::CalibrationBeforeFirstPurchase { first_purchase, .. } => {
            anyhow::anyhow!("--calibration-end {} is before the first purchase in the file ({})", a.calibration_end, format_day(first_purchase))
        }
        e => e.into(),
    })?;
    let data: Vec<clv::Summary> = summaries.iter().map(|s| s.1).collect();
    let bg = clv::BgNbd::fit(&data)?;
    let mut out = json!({
        "customers": data.len(),
        "period_days": period_days,
        "bgnbd": {"r": bg.r, "alpha": bg.alpha, "a": bg.a, "b": bg.b, "log_likelihood": bg.log_likelihood},
    });
    if a.value_col.is_some() {
        let gg = clv::GammaGamma::fit(&data)?;
        out["gamma_gamma"] = json!({"p": gg.p, "q": gg.q, "v": gg.v, "customers": gg.customers});
    }
    print_json(&out)
}

fn format_day(day: i64) -> String {
    confidant_core::time::format_millis(day * 86_400_000)[..10].to_owned()
}

#[derive(Subcommand)]
pub(crate) enum RecsCommand {
    /// Evaluate a recommender on an interactions file (leave-last-out) and print JSON.
    Eval(RecsEvalArgs),
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum RecModel {
    Als,
    Itemknn,
    Popular,
}

#[derive(Clone, Copy, ValueEnum)]
enum Protocol {
    /// Each user's last interaction (latest time; ties to the larger item id) is held out.
    Loo,
}

#[derive(Clone, Copy, ValueEnum)]
enum KnnWeighting {
    Cosine,
    Bm25,
}

#[derive(Args)]
pub(crate) struct RecsEvalArgs {
    #[arg(long, value_name = "FILE")]
    interactions: PathBuf,
    #[arg(long, value_name = "COLUMN")]
    user_col: String,
    #[arg(long, value_name = "COLUMN")]
    item_col: String,
    /// A date, a timestamp or a number (such as Unix seconds).
    #[arg(long, value_name = "COLUMN")]
    time_col: String,
    #[arg(long, value_enum, default_value = "loo")]
    protocol: Protocol,
    #[arg(long, value_enum)]
    model: RecModel,
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// ALS: latent factors.
    #[arg(long, default_value_t = 64)]
    factors: usize,
    /// ALS: iterations.
    #[arg(long, default_value_t = 15)]
    iterations: usize,
    /// ALS: regularisation.
    #[arg(long, default_value_t = 0.05)]
    regularization: f32,
    /// ALS: confidence of an observed interaction.
    #[arg(long, default_value_t = 1.0)]
    alpha: f32,
    /// ALS: conjugate-gradient steps per solve (0: exact Cholesky solves).
    #[arg(long, default_value_t = 3)]
    cg_steps: usize,
    /// ALS: random seed of the initial factors.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Item kNN: neighbours kept per item.
    #[arg(long, default_value_t = 50)]
    neighbours: usize,
    #[arg(long, value_enum, default_value = "cosine")]
    weighting: KnnWeighting,
}

/// Ids compare as numbers when both are numbers, else as text.
fn natural(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<i64>(), b.parse::<i64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

pub(crate) fn recs(cmd: RecsCommand) -> Result<()> {
    let RecsCommand::Eval(a) = cmd;
    if a.k == 0 {
        bail!("--k must be at least 1");
    }
    let mut table = Table::open(&a.interactions, &[("--user-col", &a.user_col), ("--item-col", &a.item_col), ("--time-col", &a.time_col)])?;
    let mut rows: Vec<(String, String, f64)> = Vec::new();
    while let Some(r) = table.next()? {
        if r[0].is_empty() || r[1].is_empty() {
            return Err(table.problem("empty user or item"));
        }
        let t = match r[2].parse::<f64>() {
            Ok(v) if v.is_finite() => v,
            _ => confidant_core::time::parse_timestamp(&r[2]).map(|ms| ms as f64 / 1000.0).ok_or_else(|| table.problem(format!("column {}: {:?} is neither a number nor a date", a.time_col, r[2])))?,
        };
        rows.push((r[0].clone(), r[1].clone(), t));
    }
    let mut users: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    users.sort_by(|x, y| natural(x, y));
    users.dedup();
    let mut items: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    items.sort_by(|x, y| natural(x, y));
    items.dedup();
    if users.len() < 2 || items.len() < 2 {
        bail!("{}: not enough data: {} users and {} items, at least 2 of each needed", a.interactions.display(), users.len(), items.len());
    }
    let uidx: HashMap<&str, u32> = users.iter().enumerate().map(|(i, u)| (*u, i as u32)).collect();
    let iidx: HashMap<&str, u32> = items.iter().enumerate().map(|(i, u)| (*u, i as u32)).collect();
    // Leave-last-out: per user, the latest interaction, ties to the larger item id.
    let mut last: Vec<Option<(f64, u32, usize)>> = vec![None; users.len()];
    for (n, (u, i, t)) in rows.iter().enumerate() {
        let (u, i) = (uidx[u.as_str()] as usize, iidx[i.as_str()]);
        let better = match last[u] {
            None => true,
            Some((bt, bi, _)) => *t > bt || (*t == bt && i > bi),
        };
        if better {
            last[u] = Some((*t, i, n));
        }
    }
    let held_rows: std::collections::HashSet<usize> = last.iter().flatten().map(|x| x.2).collect();
    let held: Vec<(usize, u32)> = last.iter().enumerate().filter_map(|(u, x)| x.map(|x| (u, x.1))).collect();
    // Implicit feedback: an interaction counts once, whatever its rating or repetitions.
    let mut triples: Vec<(u32, u32, f32)> = rows.iter().enumerate().filter(|(n, _)| !held_rows.contains(n)).map(|(_, (u, i, _))| (uidx[u.as_str()], iidx[i.as_str()], 1.0)).collect();
    triples.sort_unstable_by_key(|t| (t.0, t.1));
    triples.dedup_by_key(|t| (t.0, t.1));
    let data = recs::Interactions::new(users.len(), items.len(), &triples);
    let started = std::time::Instant::now();
    enum Trained {
        Als(recs::Als),
        Other(Box<dyn recs::Recommender>),
    }
    let model = match a.model {
        RecModel::Popular => Trained::Other(Box::new(recs::Popular::fit(&data))),
        RecModel::Itemknn => Trained::Other(Box::new(recs::ItemKnn::fit(
            &data,
            a.neighbours,
            match a.weighting {
                KnnWeighting::Cosine => recs::Weighting::Cosine,
                KnnWeighting::Bm25 => recs::Weighting::Bm25,
            },
        ))),
        RecModel::Als => Trained::Als(recs::Als::fit(
            &data,
            &recs::AlsParams { factors: a.factors, iterations: a.iterations, regularization: a.regularization, alpha: a.alpha, cg_steps: a.cg_steps, seed: a.seed },
        )?),
    };
    let train_s = started.elapsed().as_secs_f64();
    let scored = std::time::Instant::now();
    let metrics = recs::evaluate(&held, a.k, |u| {
        let history: Vec<(u32, f32)> = data.user(u).collect();
        let seen: Vec<u32> = history.iter().map(|x| x.0).collect();
        let scores = match &model {
            // The trained user factors, as the reference ranks.
            Trained::Als(m) => m.score_user(u),
            Trained::Other(m) => m.score(&history),
        };
        recs::top_k(&scores, a.k, &seen)
    });
    print_json(&json!({
        "model": match a.model { RecModel::Als => "als", RecModel::Itemknn => "itemknn", RecModel::Popular => "popular" },
        "protocol": "loo",
        "users": users.len(),
        "items": items.len(),
        "training_interactions": data.nnz(),
        "k": a.k,
        "hr_at_k": metrics.hr_at_k,
        "ndcg_at_k": metrics.ndcg_at_k,
        "precision_at_k": metrics.precision_at_k,
        "train_s": train_s,
        "score_s": scored.elapsed().as_secs_f64(),
    }))
}

#[derive(Subcommand)]
pub(crate) enum ForecastCommand {
    /// Backtest every model and the automatic choice on a file of series; print MASE as JSON.
    Eval(ForecastEvalArgs),
}

#[derive(Args)]
pub(crate) struct ForecastEvalArgs {
    /// One row per series and period (CSV with a header).
    #[arg(long, value_name = "FILE")]
    series: PathBuf,
    #[arg(long, value_name = "COLUMN")]
    id_col: String,
    #[arg(long, value_name = "COLUMN")]
    date_col: String,
    #[arg(long, value_name = "COLUMN")]
    value_col: String,
    /// Periods ahead.
    #[arg(long)]
    horizon: usize,
    /// Test windows of `horizon` periods at the end of each series (rolling origin).
    #[arg(long, default_value_t = 3)]
    windows: usize,
    /// The season length; by default from the smallest spacing of the dates: 7 for daily series,
    /// 52 for weekly, 12 for monthly, 4 for quarterly, 1 otherwise.
    #[arg(long)]
    season: Option<usize>,
}

/// Builds each series in date order. Daily and weekly series get the missing periods as
/// zeros (no sale recorded is no sale); others must have no gaps.
fn read_series(a: &ForecastEvalArgs) -> Result<(BTreeMap<String, Vec<f64>>, usize)> {
    let mut table = Table::open(&a.series, &[("--id-col", &a.id_col), ("--date-col", &a.date_col), ("--value-col", &a.value_col)])?;
    let mut points: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
    while let Some(r) = table.next()? {
        if r[0].is_empty() {
            return Err(table.problem(format!("column {}: empty series id", a.id_col)));
        }
        let day = table.day(&r[1], &a.date_col)?;
        let value = table.number(&r[2], &a.value_col)?;
        *points.entry(r[0].clone()).or_default().entry(day).or_insert(0.0) += value;
    }
    if points.is_empty() {
        bail!("{}: no rows", a.series.display());
    }
    let mut gaps: Vec<i64> = points.values().flat_map(|p| p.keys().collect::<Vec<_>>().windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>()).collect();
    gaps.sort_unstable();
    // The smallest spacing: slow movers are sold one day in many, but still daily series.
    let step = gaps.first().copied().unwrap_or(1);
    let (season, fill) = match step {
        1 => (7, Some(1)),
        7 => (52, Some(7)),
        28..=31 => (12, None),
        89..=92 => (4, None),
        _ => (1, None),
    };
    let series = points
        .into_iter()
        .map(|(id, p)| {
            let v = match fill {
                Some(step) => {
                    let (first, last) = (*p.keys().next().expect("non-empty"), *p.keys().last().expect("non-empty"));
                    (0..=(last - first) / step).map(|k| p.get(&(first + k * step)).copied().unwrap_or(0.0)).collect()
                }
                None => p.into_values().collect(),
            };
            (id, v)
        })
        .collect();
    Ok((series, a.season.unwrap_or(season)))
}

pub(crate) fn forecast(cmd: ForecastCommand) -> Result<()> {
    let ForecastCommand::Eval(a) = cmd;
    if a.horizon == 0 || a.windows == 0 {
        bail!("--horizon and --windows must be at least 1");
    }
    let (series, season) = read_series(&a)?;
    let need = a.horizon * a.windows + 2;
    let short: Vec<&String> = series.iter().filter(|(_, v)| v.len() < need).map(|(k, _)| k).collect();
    if short.len() == series.len() {
        bail!("every series is shorter than horizon × windows + 2 = {need} periods: nothing to evaluate");
    }
    let ys: Vec<Vec<f64>> = series.values().filter(|v| v.len() >= need).cloned().collect();
    let eval = forecast::evaluate(&ys, season, a.horizon, a.windows, 2);
    let naive = eval.models.iter().find(|m| m.0 == "seasonal_naive").map(|m| m.1);
    let models: serde_json::Map<String, serde_json::Value> = eval.models.iter().map(|(name, mase, n)| (name.clone(), json!({"mase": mase, "scored": n}))).collect();
    print_json(&json!({
        "series": ys.len(),
        "skipped_short_series": short.len(),
        "season_length": season,
        "horizon": a.horizon,
        "windows": a.windows,
        "models": models,
        "auto": {"mase": eval.auto, "scored": eval.auto_scored, "chosen": eval.chosen.iter().map(|c| (c.0.clone(), json!(c.1))).collect::<serde_json::Map<_, _>>()},
        "auto_over_seasonal_naive": naive.map(|n| eval.auto / n),
    }))
}
