//! `confidant dedupe`: probabilistic deduplication (one file) or linkage (two files) of CSV
//! records, with no model file: column roles are inferred from the header, parameters are
//! estimated on the data itself.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use confidant_linkage::{evaluate, run, Column, Dataset, Role, Settings};

#[derive(Args)]
pub(crate) struct DedupeArgs {
    /// The records (CSV with a header); a second file links the two (only cross-file pairs).
    #[arg(required = true, num_args = 1..=2, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// The column holding each record's id.
    #[arg(long, value_name = "COLUMN")]
    id: String,
    /// A column not to compare (repeatable).
    #[arg(long, value_name = "COLUMN")]
    ignore: Vec<String>,
    /// The role of a column, over the one inferred from its name: NAME=ROLE (repeatable).
    /// Roles: given_name, surname, name, dob, street_number, address, city, postcode, state,
    /// phone, email, id_number, number, text, exact, ignore.
    #[arg(long = "column", value_name = "NAME=ROLE")]
    columns: Vec<String>,
    /// Pairs at or above this match probability are links.
    #[arg(long, default_value_t = 0.9)]
    threshold: f64,
    /// Where to write `id_l,id_r,match_probability`, one row per pair in the same cluster.
    #[arg(long, value_name = "OUT.csv")]
    pairs_out: PathBuf,
    /// True pairs (`id_l,id_r`): prints precision, recall and F1.
    #[arg(long, value_name = "PAIRS.csv")]
    truth: Option<PathBuf>,
    /// Prints the match weight each comparison contributes for this pair of ids.
    #[arg(long, num_args = 2, value_names = ["ID1", "ID2"])]
    explain: Option<Vec<String>>,
}

struct Loaded {
    header: Vec<String>,
    ids: Vec<String>,
    rows: Vec<Vec<String>>,
}

fn read_csv(path: &Path, id: &str) -> Result<Loaded> {
    let file = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(std::io::BufReader::new(file));
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| anyhow::anyhow!("{}: line 1: {}", path.display(), csv_problem(&e)))?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_owned())
        .collect();
    let id_col = header.iter().position(|h| h == id).with_context(|| format!("{}: line 1: the header has no column {id:?} (given as --id)", path.display()))?;
    let mut ids = Vec::new();
    let mut rows = Vec::new();
    let mut seen = HashSet::new();
    for (n, record) in reader.records().enumerate() {
        let line = n + 2;
        let record = record.map_err(|e| anyhow::anyhow!("{}: line {line}: {}", path.display(), csv_problem(&e)))?;
        if record.len() > header.len() {
            bail!("{}: line {line}: {} fields, but the header has {}", path.display(), record.len(), header.len());
        }
        let mut row: Vec<String> = record.iter().map(str::to_owned).collect();
        row.resize(header.len(), String::new());
        let rid = row[id_col].clone();
        if rid.is_empty() {
            bail!("{}: line {line}: the id column {id:?} is empty", path.display());
        }
        if !seen.insert(rid.clone()) {
            bail!("{}: line {line}: the id {rid:?} appears twice", path.display());
        }
        ids.push(rid);
        rows.push(row);
    }
    Ok(Loaded { header, ids, rows })
}

/// A CSV reading error as the operator should read it (also used by `import`).
pub(crate) fn csv_problem(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8 (convert the file to UTF-8)".into(),
        csv::ErrorKind::Io(io) => format!("cannot read: {io}"),
        _ => e.to_string(),
    }
}

pub(crate) fn run_dedupe(args: DedupeArgs) -> Result<()> {
    let started = std::time::Instant::now();
    if !(0.0..=1.0).contains(&args.threshold) {
        bail!("--threshold must be a probability between 0 and 1");
    }
    let mut overrides: HashMap<String, Option<Role>> = HashMap::new();
    for c in &args.columns {
        let (name, role) = c.split_once('=').with_context(|| format!("--column {c:?}: expected NAME=ROLE"))?;
        let role = match role {
            "ignore" => None,
            r => Some(Role::from_name(r).with_context(|| {
                let roles: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
                format!("--column {c:?}: unknown role {r:?}; roles are {}, ignore", roles.join(", "))
            })?),
        };
        overrides.insert(name.to_owned(), role);
    }
    let files: Vec<Loaded> = args.files.iter().map(|f| read_csv(f, &args.id)).collect::<Result<_>>()?;
    for name in overrides.keys().chain(args.ignore.iter()) {
        if !files[0].header.contains(name) {
            bail!("{}: line 1: no column {name:?} (named in --column or --ignore)", args.files[0].display());
        }
    }
    // Columns compared: every column but the id and the ignored ones, by role.
    let mut columns = Vec::new();
    let mut source_index: Vec<Vec<Option<usize>>> = files.iter().map(|_| Vec::new()).collect();
    let mut skipped = Vec::new();
    for name in &files[0].header {
        if *name == args.id || args.ignore.contains(name) {
            continue;
        }
        let role = match overrides.get(name) {
            Some(r) => *r,
            None => Some(Role::infer(name).unwrap_or(Role::Text)),
        };
        let Some(role) = role else { continue };
        if !overrides.contains_key(name) && Role::infer(name).is_none() {
            skipped.push(name.clone());
        }
        for (f, file) in files.iter().enumerate() {
            source_index[f].push(file.header.iter().position(|h| h == name));
        }
        columns.push(Column { name: name.clone(), role });
    }
    if columns.is_empty() {
        bail!("no column left to compare");
    }
    for (f, file) in files.iter().enumerate().skip(1) {
        for (c, idx) in source_index[f].iter().enumerate() {
            if idx.is_none() {
                bail!("{}: line 1: no column {:?}, which {} has", args.files[f].display(), columns[c].name, args.files[0].display());
            }
        }
        let _ = file;
    }
    let mut ids = Vec::new();
    let mut origin = Vec::new();
    let mut rows = Vec::new();
    for (f, file) in files.iter().enumerate() {
        for (rid, row) in file.ids.iter().zip(&file.rows) {
            ids.push(rid.clone());
            origin.push(f as u8);
            rows.push(source_index[f].iter().map(|i| i.map(|i| row[i].clone()).unwrap_or_default()).collect::<Vec<_>>());
        }
    }
    let roles: Vec<String> = columns.iter().map(|c| format!("{}={}", c.name, c.role.as_str())).collect();
    eprintln!("comparing {} records on {}", ids.len(), roles.join(", "));
    if !skipped.is_empty() {
        eprintln!("note: no role inferred for {}: compared as text (use --column NAME=ROLE or --ignore)", skipped.join(", "));
    }
    let index: HashMap<&str, u32> = ids.iter().enumerate().map(|(i, s)| (s.as_str(), i as u32)).collect();
    // Check the truth file before the (longer) work, so a mismatch fails fast.
    let truth = match &args.truth {
        Some(path) => Some(read_truth(path, &index)?),
        None => None,
    };
    let explain = match &args.explain {
        Some(pair) => {
            let get = |id: &String| index.get(id.as_str()).copied().with_context(|| format!("--explain: no record has the id {id:?}"));
            Some((get(&pair[0])?, get(&pair[1])?))
        }
        None => None,
    };

    let dataset = Dataset::new(columns, rows, origin);
    let settings = Settings { threshold: args.threshold, ..Settings::default() };
    let outcome = run(&dataset, &settings);

    // Written whole to a temporary file, then renamed: never a half-written output.
    let tmp = args.pairs_out.with_extension("csv.partial");
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?);
        writeln!(w, "id_l,id_r,match_probability")?;
        for (a, b, p) in &outcome.pairs {
            writeln!(w, "{},{},{p:.6}", csv_field(&ids[*a as usize]), csv_field(&ids[*b as usize]))?;
        }
        w.flush()?;
    }
    std::fs::rename(&tmp, &args.pairs_out).with_context(|| format!("cannot write {}", args.pairs_out.display()))?;
    let clusters = outcome.cluster.iter().collect::<HashSet<_>>().len();
    println!(
        "records {}, candidate pairs {}, pairs in clusters {}, clusters {}, prior {:.3e}, seconds {:.3}",
        dataset.len(),
        outcome.candidate_pairs,
        outcome.pairs.len(),
        clusters,
        outcome.model.prior,
        started.elapsed().as_secs_f64()
    );
    if let Some(truth) = truth {
        let found: Vec<(u32, u32)> = outcome.pairs.iter().map(|(a, b, _)| (*a, *b)).collect();
        let (p, r, f1) = evaluate(&found, &truth);
        println!("precision {p:.4}, recall {r:.4}, F1 {f1:.4} (against {} true pairs)", truth.len());
    }
    if let Some((a, b)) = explain {
        let e = outcome.model.explain(&dataset, a, b);
        println!("explain {} ~ {}", ids[a as usize], ids[b as usize]);
        println!("  {:<16} {:<40} {:>10} {:>10} {:>8}", "column", "level", "m", "u", "weight");
        println!("  {:<16} {:<40} {:>10} {:>10} {:>8.2}", "(prior)", "", "", "", e.prior_weight);
        for c in &e.contributions {
            println!("  {:<16} {:<40} {:>10.4} {:>10.6} {:>8.2}", c.column, c.level, c.m, c.u, c.weight);
        }
        println!("  match weight {:.2}, probability {:.6}", e.weight, e.probability);
    }
    Ok(())
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn read_truth(path: &Path, index: &HashMap<&str, u32>) -> Result<Vec<(u32, u32)>> {
    let mut reader = csv::ReaderBuilder::new().from_path(path).map_err(|e| anyhow::anyhow!("{}: {}", path.display(), csv_problem(&e)))?;
    let mut out = Vec::new();
    for (n, record) in reader.records().enumerate() {
        let line = n + 2;
        let record = record.map_err(|e| anyhow::anyhow!("{}: line {line}: {}", path.display(), csv_problem(&e)))?;
        if record.len() < 2 {
            bail!("{}: line {line}: a true pair needs two ids", path.display());
        }
        let get = |s: &str| index.get(s).copied().with_context(|| format!("{}: line {line}: the truth file does not match the input: no record has the id {s:?}", path.display()));
        out.push((get(&record[0])?, get(&record[1])?));
    }
    Ok(out)
}
