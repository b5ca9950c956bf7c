//! Synthetic customer records with known duplicates, from a fixed seed, in the FEBRL layout:
//! `rec_id,given_name,surname,street_number,address_1,address_2,suburb,postcode,state,
//! date_of_birth,soc_sec_id`, and the true pairs (`id_l,id_r`). About `--dup-rate` of the
//! records are duplicates of another one, each with typos, swapped names, missing fields,
//! day/month swaps or a changed address.

use std::io::Write;

use anyhow::Result;
use clap::Parser;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1_000_000)]
    records: usize,
    #[arg(long, default_value_t = 0.10)]
    dup_rate: f64,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    #[arg(long)]
    out: std::path::PathBuf,
    #[arg(long)]
    truth: std::path::PathBuf,
}

/// The linkage crate's seeded generator, with what the generator needs on top.
struct Rng(confidant_linkage::Rng);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn below(&mut self, n: usize) -> usize {
        self.0.below(n as u64) as usize
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    /// Skewed: small indexes more often, as with real names (the 1 % most common values
    /// are about 10 % of the draws).
    fn skewed(&mut self, n: usize) -> usize {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((n as f64) * u * u) as usize % n
    }
}

const ONSETS: &[&str] = &["b", "br", "c", "ch", "d", "f", "g", "gr", "j", "k", "l", "m", "n", "p", "r", "s", "st", "t", "th", "v", "w", "z", "h", "cl", "fr"];
const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "ai", "ea", "ou", "ie", "y"];
const CODAS: &[&str] = &["", "n", "r", "l", "s", "t", "m", "nd", "rt", "ck", "ll", "ss", "x"];

fn word(rng: &mut Rng, syllables: usize) -> String {
    (0..syllables).map(|_| format!("{}{}{}", ONSETS[rng.below(ONSETS.len())], VOWELS[rng.below(VOWELS.len())], CODAS[rng.below(CODAS.len())])).collect()
}

fn pool(rng: &mut Rng, n: usize, min: usize, max: usize) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let syllables = min + rng.below(max - min + 1);
        let w = word(rng, syllables);
        if seen.insert(w.clone()) {
            out.push(w);
        }
    }
    out
}

fn typo(rng: &mut Rng, s: &str) -> String {
    let mut c: Vec<char> = s.chars().collect();
    if c.len() < 2 {
        return s.to_owned();
    }
    let i = rng.below(c.len() - 1);
    match rng.below(4) {
        0 => c.swap(i, i + 1),
        1 => {
            c.remove(i);
        }
        2 => c.insert(i, (b'a' + rng.below(26) as u8) as char),
        _ => c[i] = (b'a' + rng.below(26) as u8) as char,
    }
    c.into_iter().collect()
}

fn digit_typo(rng: &mut Rng, s: &str) -> String {
    let mut c: Vec<char> = s.chars().collect();
    if c.len() < 2 {
        return s.to_owned();
    }
    let i = rng.below(c.len() - 1);
    if rng.chance(0.5) {
        c.swap(i, i + 1);
    } else {
        c[i] = (b'0' + rng.below(10) as u8) as char;
    }
    c.into_iter().collect()
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut rng = Rng(confidant_linkage::Rng(args.seed));
    let given = pool(&mut rng, 6_000, 1, 3);
    let surnames = pool(&mut rng, 60_000, 2, 3);
    let streets = pool(&mut rng, 20_000, 2, 3);
    let suburbs = pool(&mut rng, 3_000, 2, 3);
    let kinds = ["street", "road", "avenue", "place", "crescent", "circuit", "drive", "lane"];
    let states = ["nsw", "vic", "qld", "wa", "sa", "tas", "act", "nt"];
    let buildings = pool(&mut rng, 2_000, 2, 3);

    let mut out = std::io::BufWriter::new(std::fs::File::create(&args.out)?);
    let mut truth = std::io::BufWriter::new(std::fs::File::create(&args.truth)?);
    writeln!(out, "rec_id,given_name,surname,street_number,address_1,address_2,suburb,postcode,state,date_of_birth,soc_sec_id")?;
    writeln!(truth, "id_l,id_r")?;
    let mut written = 0usize;
    // Each original is followed by its duplicates (0 for most, 1 to 3 for some).
    let mut next_id = 0usize;
    while written < args.records {
        let suburb_i = rng.skewed(suburbs.len());
        let rec = vec![
            given[rng.skewed(given.len())].clone(),
            surnames[rng.skewed(surnames.len())].clone(),
            (1 + rng.below(300)).to_string(),
            format!("{} {}", streets[rng.skewed(streets.len())], kinds[rng.below(kinds.len())]),
            if rng.chance(0.4) { buildings[rng.below(buildings.len())].clone() } else { String::new() },
            suburbs[suburb_i].clone(),
            format!("{}", 2000 + (suburb_i * 7) % 7000),
            states[suburb_i % states.len()].to_owned(),
            if rng.chance(0.97) { format!("{}{:02}{:02}", 1930 + rng.below(80), 1 + rng.below(12), 1 + rng.below(28)) } else { String::new() },
            format!("{:07}", 1_000_000 + rng.below(9_000_000)),
        ];
        let id = format!("r{next_id}");
        next_id += 1;
        writeln!(out, "{id},{}", rec.join(","))?;
        written += 1;
        // A duplicate for dup_rate of the originals (a second one for a tenth of those).
        let dups = if rng.chance(args.dup_rate) { if rng.chance(0.1) { 2 } else { 1 } } else { 0 };
        let mut family = vec![id];
        for _ in 0..dups {
            if written >= args.records {
                break;
            }
            let mut d = rec.clone();
            // 1 to 4 modifications, FEBRL-style.
            for _ in 0..1 + rng.below(4) {
                let f = rng.below(10);
                match rng.below(6) {
                    0 | 1 => d[f] = if matches!(f, 2 | 6 | 8 | 9) { digit_typo(&mut rng, &d[f]) } else { typo(&mut rng, &d[f]) },
                    2 => d[f] = String::new(),
                    3 => d.swap(0, 1),
                    4 if d[8].len() == 8 => d[8] = format!("{}{}{}", &d[8][..4], &d[8][6..8], &d[8][4..6]),
                    _ => d[f] = typo(&mut rng, &d[f]),
                }
            }
            let did = format!("r{next_id}");
            next_id += 1;
            writeln!(out, "{did},{}", d.join(","))?;
            written += 1;
            family.push(did);
        }
        for (i, a) in family.iter().enumerate() {
            for b in &family[i + 1..] {
                let (l, r) = if a < b { (a, b) } else { (b, a) };
                writeln!(truth, "{l},{r}")?;
            }
        }
    }
    out.flush()?;
    truth.flush()?;
    eprintln!("{written} records");
    Ok(())
}
