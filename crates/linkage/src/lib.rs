//! Probabilistic record linkage (Fellegi-Sunter), as Splink does it, in memory.
//!
//! 1. **Blocking**: candidate pairs are those sharing the key of at least one blocking rule;
//!    rules are ORed and a pair found by an earlier rule is not produced again by a later one.
//! 2. **Comparison**: each pair gets, per column, a level (exact, Jaro-Winkler or edit-distance
//!    bands, dates with tolerance and day/month swaps, missing).
//! 3. **Estimation**: u (the level frequencies among non-matches) from random pairs; m (among
//!    matches) by expectation-maximisation over the blocked pairs; the prior probability that
//!    two random records match from deterministic rules (exact id number and date of birth,
//!    exact email or phone); exact agreement on names, places and postcodes is adjusted by the
//!    frequency of the value.
//! 4. **Scoring**: the match weight is log2 of the prior odds plus, per column, log2(m/u) of
//!    its level; the probability follows.
//! 5. **Clustering**: links above the threshold, strongest first, join clusters (connected
//!    components), except when a pair of records across the two clusters is strong evidence of
//!    two different people, or the cluster would grow past a bound: long chains of weak links
//!    cannot join distinct people.
//!
//! No IO: records come in as strings, results go out as numbers.

pub mod compare;

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

pub use compare::Role;
use compare::{level, level_labels, normalise, NULL};

/// One column to compare.
#[derive(Clone, Debug)]
pub struct Column {
    pub name: String,
    pub role: Role,
}

/// Records to deduplicate or link, column by column, normalised.
pub struct Dataset {
    pub columns: Vec<Column>,
    values: Vec<Vec<String>>,
    /// For linking two files: which file each record came from.
    file: Vec<u8>,
    linking: bool,
    /// For a given name column, the surname column, and the other way round.
    partner: Vec<Option<usize>>,
}

impl Dataset {
    /// `rows[i][c]` is record i's raw value for column c; `file[i]` its file (0 or 1).
    pub fn new(columns: Vec<Column>, rows: impl IntoIterator<Item = Vec<String>>, file: Vec<u8>) -> Dataset {
        let mut values: Vec<Vec<String>> = columns.iter().map(|_| Vec::new()).collect();
        for row in rows {
            for (c, v) in row.into_iter().enumerate().take(columns.len()) {
                values[c].push(normalise(columns[c].role, &v));
            }
        }
        let linking = file.iter().any(|f| *f != 0);
        let find = |role: Role| columns.iter().position(|c| c.role == role);
        let partner = columns
            .iter()
            .map(|c| match c.role {
                Role::GivenName => find(Role::Surname),
                Role::Surname => find(Role::GivenName),
                _ => None,
            })
            .collect();
        Dataset { columns, values, file, linking, partner }
    }

    pub fn len(&self) -> usize {
        self.values.first().map_or(self.file.len(), Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn value(&self, c: usize, i: u32) -> &str {
        &self.values[c][i as usize]
    }

    /// The level of column `c` for records a and b, with the swapped-names level.
    fn level(&self, c: usize, a: u32, b: u32) -> u8 {
        let l = level(self.columns[c].role, self.value(c, a), self.value(c, b));
        if let Some(p) = self.partner[c] {
            let else_level = (level_labels(self.columns[c].role).len() - 1) as u8;
            if l == else_level && !self.value(c, a).is_empty() && self.value(c, a) == self.value(p, b) && self.value(p, a) == self.value(c, b) {
                return else_level - 1;
            }
        }
        l
    }

    fn linking(&self) -> bool {
        self.linking
    }

    fn comparable(&self, a: u32, b: u32) -> bool {
        !self.linking() || self.file[a as usize] != self.file[b as usize]
    }
}

#[derive(Clone, Debug)]
pub struct Settings {
    /// Pairs at or above this probability are links.
    pub threshold: f64,
    /// Blocks larger than this are skipped (a key shared by that many records says nothing).
    pub max_block: usize,
    /// Random pairs sampled to estimate u.
    pub random_pairs: usize,
    pub em_iterations: usize,
    /// Two clusters are not joined when a pair across them scores below this.
    pub cannot_link_below: f64,
    /// Nor when the joined cluster would exceed this many records.
    pub max_cluster: usize,
    pub seed: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { threshold: 0.9, max_block: 5_000, random_pairs: 100_000, em_iterations: 30, cannot_link_below: 0.001, max_cluster: 50, seed: 42 }
    }
}

/// The estimated parameters.
#[derive(Clone, Debug)]
pub struct Model {
    /// Per column and level: m and u.
    pub m: Vec<Vec<f64>>,
    pub u: Vec<Vec<f64>>,
    /// Prior probability that two random records match.
    pub prior: f64,
    /// Per term-frequency column: value → share of records holding it.
    tf: Vec<Option<HashMap<String, f64>>>,
}

/// What a run found.
pub struct Outcome {
    pub model: Model,
    /// Candidate pairs scored (after blocking).
    pub candidate_pairs: usize,
    /// Every pair of records in the same cluster, with its probability.
    pub pairs: Vec<(u32, u32, f64)>,
    /// Cluster of each record (records alone are their own cluster).
    pub cluster: Vec<u32>,
}

/// One column's part in a pair's weight, for `--explain`.
#[derive(Clone, Debug)]
pub struct Contribution {
    pub column: String,
    pub level: &'static str,
    pub m: f64,
    pub u: f64,
    pub weight: f64,
}

#[derive(Clone, Debug)]
pub struct Explanation {
    pub prior_weight: f64,
    pub contributions: Vec<Contribution>,
    pub weight: f64,
    pub probability: f64,
}

fn hash_key(parts: &[&str]) -> Option<u64> {
    if parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parts.hash(&mut h);
    Some(h.finish())
}

/// A blocking rule: records with equal keys are compared.
struct Rule {
    keys: Vec<Option<u64>>,
}

fn blocking_rules(ds: &Dataset) -> Vec<Rule> {
    let col = |role: Role| ds.columns.iter().position(|c| c.role == role);
    let n = ds.len() as u32;
    let mut rules = Vec::new();
    let mut add = |f: &dyn Fn(u32) -> Option<u64>| rules.push(Rule { keys: (0..n).map(f).collect() });
    let first = |s: &str, k: usize| s.chars().take(k).collect::<String>();
    for (c, column) in ds.columns.iter().enumerate() {
        if matches!(column.role, Role::IdNumber | Role::Email | Role::Phone) {
            add(&|i| hash_key(&[ds.value(c, i)]));
        }
    }
    // A date of birth alone is shared by too many people in a large file (about n / 30,000
    // each): with a name's initial it stays tight.
    if let Some(d) = col(Role::Dob) {
        let initials: Vec<usize> = [Role::Surname, Role::GivenName].into_iter().filter_map(col).collect();
        if initials.is_empty() {
            add(&|i| hash_key(&[ds.value(d, i)]));
        }
        for n in initials {
            add(&|i| hash_key(&[ds.value(d, i), &first(ds.value(n, i), 1)]));
        }
    }
    if let (Some(s), Some(g)) = (col(Role::Surname), col(Role::GivenName)) {
        add(&|i| hash_key(&[ds.value(s, i), &first(ds.value(g, i), 1)]));
        add(&|i| hash_key(&[ds.value(g, i), &first(ds.value(s, i), 3)]));
        // Names entered the wrong way round.
        add(&|i| {
            let (a, b) = (ds.value(s, i), ds.value(g, i));
            if a <= b { hash_key(&[a, b]) } else { hash_key(&[b, a]) }
        });
    }
    if let Some(nm) = col(Role::Name) {
        add(&|i| hash_key(&[ds.value(nm, i)]));
    }
    if let (Some(p), Some(sn)) = (col(Role::Postcode), col(Role::StreetNumber)) {
        add(&|i| hash_key(&[ds.value(p, i), ds.value(sn, i)]));
    }
    if let (Some(p), Some(s)) = (col(Role::Postcode), col(Role::Surname)) {
        add(&|i| hash_key(&[ds.value(p, i), &first(ds.value(s, i), 3)]));
    }
    if let (Some(a), Some(sn)) = (col(Role::Address), col(Role::StreetNumber)) {
        add(&|i| hash_key(&[&first(ds.value(a, i), 5), ds.value(sn, i)]));
    }
    rules
}

/// Candidate pairs (a < b), each once across all rules.
fn candidate_pairs(ds: &Dataset, rules: &[Rule], max_block: usize) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let debug = std::env::var_os("CONFIDANT_LINKAGE_DEBUG").is_some();
    for (k, rule) in rules.iter().enumerate() {
        let before = out.len();
        let mut blocks: HashMap<u64, Vec<u32>> = HashMap::new();
        for (i, key) in rule.keys.iter().enumerate() {
            if let Some(key) = key {
                blocks.entry(*key).or_default().push(i as u32);
            }
        }
        for members in blocks.values() {
            if members.len() < 2 || members.len() > max_block {
                continue;
            }
            for (x, &a) in members.iter().enumerate() {
                for &b in &members[x + 1..] {
                    if !ds.comparable(a, b) {
                        continue;
                    }
                    // Found by an earlier rule already?
                    let earlier = rules[..k].iter().any(|r| r.keys[a as usize].is_some() && r.keys[a as usize] == r.keys[b as usize]);
                    if !earlier {
                        out.push((a.min(b), a.max(b)));
                    }
                }
            }
        }
        if debug {
            eprintln!("blocking rule {k}: {} new pairs", out.len() - before);
        }
    }
    out
}

/// The comparison vectors of all pairs, flat (one level per column), on every core.
fn gammas(ds: &Dataset, pairs: &[(u32, u32)]) -> Vec<u8> {
    let width = ds.columns.len();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(16);
    let chunk = pairs.len().div_ceil(threads).max(1);
    let mut out = vec![0u8; pairs.len() * width];
    std::thread::scope(|scope| {
        for (ps, dst) in pairs.chunks(chunk).zip(out.chunks_mut(chunk * width)) {
            scope.spawn(move || {
                let mut g = Vec::with_capacity(width);
                for (&(a, b), slot) in ps.iter().zip(dst.chunks_mut(width)) {
                    gamma(ds, a, b, &mut g);
                    slot.copy_from_slice(&g);
                }
            });
        }
    });
    out
}

fn gamma(ds: &Dataset, a: u32, b: u32, out: &mut Vec<u8>) {
    out.clear();
    for c in 0..ds.columns.len() {
        out.push(ds.level(c, a, b));
    }
}

/// A small deterministic generator (SplitMix64), so runs are reproducible.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

fn estimate_u(ds: &Dataset, settings: &Settings) -> Vec<Vec<f64>> {
    let n = ds.len() as u64;
    let levels: Vec<usize> = ds.columns.iter().map(|c| level_labels(c.role).len()).collect();
    // Exact agreement: computed, not sampled: the chance that two random records share a
    // value is the sum of the squared shares of the values (rare levels are where sampling
    // is least reliable).
    let exact: Vec<f64> = (0..ds.columns.len())
        .map(|c| {
            let mut counts: HashMap<&str, f64> = HashMap::new();
            let mut total = 0.0f64;
            for v in ds.values[c].iter().filter(|v| !v.is_empty()) {
                *counts.entry(v.as_str()).or_default() += 1.0;
                total += 1.0;
            }
            if total < 2.0 {
                return 0.5;
            }
            let same: f64 = counts.values().map(|k| k * (k - 1.0)).sum::<f64>() / (total * (total - 1.0));
            same.max(0.5 / (total * total))
        })
        .collect();
    // The other levels: their shares among random pairs that do not agree exactly.
    let mut counts: Vec<Vec<f64>> = levels.iter().map(|l| vec![0.0; *l]).collect();
    let mut rng = Rng(settings.seed);
    let (mut drawn, mut attempts) = (0, 0);
    while drawn < settings.random_pairs && attempts < settings.random_pairs * 4 && n > 1 {
        attempts += 1;
        let (a, b) = (rng.below(n) as u32, rng.below(n) as u32);
        if a == b || !ds.comparable(a, b) {
            continue;
        }
        drawn += 1;
        for c in 0..ds.columns.len() {
            let (x, y) = (ds.value(c, a), ds.value(c, b));
            if x.is_empty() || y.is_empty() || x == y {
                continue;
            }
            counts[c][ds.level(c, a, b) as usize] += 1.0;
        }
    }
    counts
        .into_iter()
        .zip(exact)
        .map(|(cs, e)| {
            // Smoothed: a level never seen among random pairs is rare, not impossible.
            let total: f64 = cs[1..].iter().sum::<f64>() + (cs.len() - 1) as f64 * 0.5;
            let mut u = vec![e];
            u.extend(cs[1..].iter().map(|x| (1.0 - e) * (x + 0.5) / total));
            u
        })
        .collect()
}

/// Share of records holding each value, for the columns adjusted by term frequency.
fn term_frequencies(ds: &Dataset) -> Vec<Option<HashMap<String, f64>>> {
    ds.columns
        .iter()
        .enumerate()
        .map(|(c, col)| {
            if !col.role.term_frequency() {
                return None;
            }
            let mut counts: HashMap<String, f64> = HashMap::new();
            let mut total: f64 = 0.0;
            for v in &ds.values[c] {
                if !v.is_empty() {
                    *counts.entry(v.clone()).or_default() += 1.0;
                    total += 1.0;
                }
            }
            Some(counts.into_iter().map(|(k, v)| (k, v / total.max(1.0))).collect())
        })
        .collect()
}

/// The prior from deterministic rules: pairs agreeing exactly on (id number and date of
/// birth), on email, or on phone, are taken as matches, found with an assumed recall of 60 %.
fn deterministic_prior(ds: &Dataset) -> Option<f64> {
    let col = |role: Role| ds.columns.iter().position(|c| c.role == role);
    let mut keys: Vec<Vec<Option<u64>>> = Vec::new();
    let n = ds.len() as u32;
    if let (Some(id), Some(d)) = (col(Role::IdNumber), col(Role::Dob)) {
        keys.push((0..n).map(|i| hash_key(&[ds.value(id, i), ds.value(d, i)])).collect());
    }
    for role in [Role::Email, Role::Phone] {
        if let Some(c) = col(role) {
            keys.push((0..n).map(|i| hash_key(&[ds.value(c, i)])).collect());
        }
    }
    if keys.is_empty() {
        return None;
    }
    let mut pairs: HashSet<(u32, u32)> = HashSet::new();
    for k in &keys {
        let mut blocks: HashMap<u64, Vec<u32>> = HashMap::new();
        for (i, key) in k.iter().enumerate() {
            if let Some(key) = key {
                blocks.entry(*key).or_default().push(i as u32);
            }
        }
        for m in blocks.values().filter(|m| m.len() > 1 && m.len() < 1000) {
            for (x, &a) in m.iter().enumerate() {
                for &b in &m[x + 1..] {
                    if ds.comparable(a, b) {
                        pairs.insert((a.min(b), a.max(b)));
                    }
                }
            }
        }
    }
    let total = total_pairs(ds);
    (!pairs.is_empty() && total > 0.0).then(|| (pairs.len() as f64 / 0.6 / total).min(0.5))
}

fn total_pairs(ds: &Dataset) -> f64 {
    let n = ds.len() as f64;
    if ds.linking() {
        let left = ds.file.iter().filter(|f| **f == 0).count() as f64;
        left * (n - left)
    } else {
        n * (n - 1.0) / 2.0
    }
}

/// m by expectation-maximisation over the blocked pairs' comparison patterns (u fixed).
fn estimate_m(ds: &Dataset, patterns: &HashMap<Vec<u8>, f64>, u: &[Vec<f64>], iterations: usize) -> (Vec<Vec<f64>>, f64) {
    em(patterns, u, estimate_start(ds), 0.1, iterations)
}

/// A naive start for m: matches mostly agree exactly, and rarely disagree completely.
fn estimate_start(ds: &Dataset) -> Vec<Vec<f64>> {
    ds.columns
        .iter()
        .map(|c| {
            let l = level_labels(c.role).len();
            (0..l).map(|i| if i == 0 { 0.8 } else if i == l - 1 { 0.05 } else { 0.15 / (l - 2).max(1) as f64 }).collect()
        })
        .collect()
}

/// Expectation-maximisation of m and the share of matches, u fixed, from a starting point.
fn em(patterns: &HashMap<Vec<u8>, f64>, u: &[Vec<f64>], mut m: Vec<Vec<f64>>, mut lambda: f64, iterations: usize) -> (Vec<Vec<f64>>, f64) {
    for _ in 0..iterations {
        let mut acc: Vec<Vec<f64>> = m.iter().map(|x| vec![0.0; x.len()]).collect();
        let mut seen: Vec<f64> = vec![0.0; m.len()];
        let (mut matched, mut total) = (0.0, 0.0);
        for (g, count) in patterns {
            let (mut pm, mut pu) = (lambda, 1.0 - lambda);
            for (c, l) in g.iter().enumerate() {
                if *l != NULL {
                    pm *= m[c][*l as usize];
                    pu *= u[c][*l as usize];
                }
            }
            let w = if pm + pu > 0.0 { pm / (pm + pu) } else { 0.0 };
            matched += w * count;
            total += count;
            for (c, l) in g.iter().enumerate() {
                if *l != NULL {
                    acc[c][*l as usize] += w * count;
                    seen[c] += w * count;
                }
            }
        }
        for c in 0..m.len() {
            let k = m[c].len() as f64;
            for l in 0..m[c].len() {
                m[c][l] = (acc[c][l] + 0.01) / (seen[c] + 0.01 * k);
            }
        }
        lambda = (matched / total.max(1.0)).clamp(1e-9, 1.0 - 1e-9);
    }
    (m, lambda)
}

/// Most pairs one training session looks at.
const TRAINING_PAIRS: usize = 1_000_000;

/// m estimated as Splink does, one training session per high-precision blocking rule (same
/// id number; same date of birth; same given name and surname; same email; same phone): in
/// each, EM over the pairs of that rule estimates m for the columns the rule does not
/// involve (those it involves agree by construction, which would bias them). A column's m
/// is the mean over the sessions that estimated it; `None` where none did.
fn train_m(ds: &Dataset, u: &[Vec<f64>], settings: &Settings) -> Option<Vec<Option<Vec<f64>>>> {
    let col = |role: Role| ds.columns.iter().position(|c| c.role == role);
    let mut sessions: Vec<Vec<usize>> = Vec::new();
    for role in [Role::IdNumber, Role::Dob, Role::Email, Role::Phone] {
        if let Some(c) = col(role) {
            sessions.push(vec![c]);
        }
    }
    if let (Some(g), Some(s)) = (col(Role::GivenName), col(Role::Surname)) {
        sessions.push(vec![g, s]);
    }
    if sessions.is_empty() {
        return None;
    }
    let mut sums: Vec<Option<(Vec<f64>, f64)>> = vec![None; ds.columns.len()];
    let mut g = Vec::new();
    let mut sessions_done = 0;
    for keys in sessions {
        let mut blocks: HashMap<u64, Vec<u32>> = HashMap::new();
        for i in 0..ds.len() as u32 {
            let parts: Vec<&str> = keys.iter().map(|c| ds.value(*c, i)).collect();
            if let Some(k) = hash_key(&parts) {
                blocks.entry(k).or_default().push(i);
            }
        }
        let mut patterns: HashMap<Vec<u8>, f64> = HashMap::new();
        let mut taken = 0usize;
        let mut keys_in_order: Vec<&u64> = blocks.keys().collect();
        keys_in_order.sort_unstable();
        for members in keys_in_order.into_iter().map(|k| &blocks[k]).filter(|m| m.len() > 1 && m.len() <= settings.max_block.min(500)) {
            // A sample of blocks is enough to estimate m, and keeps training bounded.
            if taken >= TRAINING_PAIRS {
                break;
            }
            taken += members.len() * (members.len() - 1) / 2;
            for (x, &a) in members.iter().enumerate() {
                for &b in &members[x + 1..] {
                    if ds.comparable(a, b) {
                        gamma(ds, a, b, &mut g);
                        *patterns.entry(g.clone()).or_default() += 1.0;
                    }
                }
            }
        }
        if patterns.values().sum::<f64>() < 10.0 {
            continue;
        }
        // Start from what the earlier (tighter) sessions found, where they found it: EM only
        // finds a local optimum, and from a naive start a loose session (a shared date of birth
        // in a large file) can converge on "everything matches".
        let naive = estimate_start(ds);
        let start: Vec<Vec<f64>> = (0..ds.columns.len())
            .map(|c| match &sums[c] {
                Some((acc, n)) if *n > 0.0 => acc.iter().map(|x| x / n).collect(),
                _ => naive[c].clone(),
            })
            .collect();
        let (m, lambda) = em(&patterns, u, start, 0.5, settings.em_iterations);
        let pairs_in_session: f64 = patterns.values().sum();
        if std::env::var_os("CONFIDANT_LINKAGE_DEBUG").is_some() {
            let names: Vec<&str> = keys.iter().map(|c| ds.columns[*c].name.as_str()).collect();
            eprintln!("session {names:?}: pairs {taken}, lambda {lambda:.4}");
            for (c, mc) in m.iter().enumerate() {
                eprintln!("  {:<14} m {:?}  u {:?}", ds.columns[c].name, mc.iter().map(|x| (x * 1e4).round() / 1e4).collect::<Vec<_>>(), u[c].iter().map(|x| (x * 1e6).round() / 1e6).collect::<Vec<_>>());
            }
        }
        // Sessions are weighted by the matches EM found in them. A session where it finds
        // nothing but matches has collapsed (no blocking rule but an exact identifier makes
        // every pair a match) and is left out.
        if lambda > 0.99 && sessions_done > 0 {
            continue;
        }
        sessions_done += 1;
        let weight = lambda * pairs_in_session;
        for (c, mc) in m.into_iter().enumerate() {
            if keys.contains(&c) {
                continue;
            }
            let scaled: Vec<f64> = mc.iter().map(|x| x * weight).collect();
            match &mut sums[c] {
                Some((acc, n)) => {
                    acc.iter_mut().zip(&scaled).for_each(|(a, x)| *a += x);
                    *n += weight;
                }
                slot => *slot = Some((scaled, weight)),
            }
        }
    }
    Some(sums.into_iter().map(|s| s.map(|(acc, n)| acc.into_iter().map(|x| x / n).collect())).collect())
}

impl Model {
    /// The match weight of a pair (log2 odds) and each column's part in it.
    /// m and u of column `c` at level `l` for record `a`: at exact agreement on a column
    /// adjusted by term frequency, u is the share of records holding the value (a rare value
    /// agreeing is stronger evidence than a common one).
    fn m_u(&self, ds: &Dataset, c: usize, l: u8, a: u32) -> (f64, f64) {
        let m = self.m[c][l as usize];
        let tf = if l == 0 { self.tf[c].as_ref().and_then(|t| t.get(ds.value(c, a))) } else { None };
        (m, tf.map_or(self.u[c][l as usize], |t| t.max(1e-9)))
    }

    pub fn explain(&self, ds: &Dataset, a: u32, b: u32) -> Explanation {
        let prior_weight = (self.prior / (1.0 - self.prior)).log2();
        let mut contributions = Vec::new();
        let mut weight = prior_weight;
        for (c, column) in ds.columns.iter().enumerate() {
            let l = ds.level(c, a, b);
            if l == NULL {
                contributions.push(Contribution { column: column.name.clone(), level: "missing", m: 1.0, u: 1.0, weight: 0.0 });
                continue;
            }
            let (m, u) = self.m_u(ds, c, l, a);
            let w = (m / u).log2();
            weight += w;
            contributions.push(Contribution { column: column.name.clone(), level: level_labels(column.role)[l as usize], m, u, weight: w });
        }
        let probability = 1.0 / (1.0 + (-weight).exp2());
        Explanation { prior_weight, contributions, weight, probability }
    }

    /// The match weight alone (the hot path: no allocation).
    pub fn weight(&self, ds: &Dataset, a: u32, b: u32) -> f64 {
        let mut weight = (self.prior / (1.0 - self.prior)).log2();
        for c in 0..ds.columns.len() {
            let l = ds.level(c, a, b);
            if l != NULL {
                let (m, u) = self.m_u(ds, c, l, a);
                weight += (m / u).log2();
            }
        }
        weight
    }

    pub fn probability(&self, ds: &Dataset, a: u32, b: u32) -> f64 {
        1.0 / (1.0 + (-self.weight(ds, a, b)).exp2())
    }
}

/// Estimates the model on the data itself (no training labels), scores the candidate pairs
/// and clusters the links.
pub fn run(ds: &Dataset, settings: &Settings) -> Outcome {
    let rules = blocking_rules(ds);
    let pairs = candidate_pairs(ds, &rules, settings.max_block);
    let u = estimate_u(ds, settings);
    let width = ds.columns.len();
    let gammas = gammas(ds, &pairs);
    let mut patterns: HashMap<Vec<u8>, f64> = HashMap::new();
    for g in gammas.chunks(width.max(1)) {
        *patterns.entry(g.to_vec()).or_default() += 1.0;
    }
    let (union_m, lambda_blocked) = estimate_m(ds, &patterns, &u, settings.em_iterations);
    let total = total_pairs(ds).max(1.0);
    let prior = deterministic_prior(ds).unwrap_or_else(|| (lambda_blocked * pairs.len() as f64 / total).clamp(1e-12, 0.5));
    let m = train_m(ds, &u, settings).map_or(union_m.clone(), |trained| {
        trained.into_iter().zip(union_m).map(|(t, fallback)| t.unwrap_or(fallback)).collect()
    });
    let model = Model { m, u, prior, tf: term_frequencies(ds) };

    // Scoring from the comparison vectors already computed: per level, log2(m/u), with the
    // term-frequency adjustment of exact agreement looked up per record.
    let base: Vec<Vec<f64>> = model.m.iter().zip(&model.u).map(|(m, u)| m.iter().zip(u).map(|(m, u)| (m / u).log2()).collect()).collect();
    let record_tf: Vec<Option<Vec<f64>>> = model
        .tf
        .iter()
        .enumerate()
        .map(|(c, t)| t.as_ref().map(|t| ds.values[c].iter().map(|v| t.get(v).copied().unwrap_or(0.0)).collect()))
        .collect();
    let prior_weight = (model.prior / (1.0 - model.prior)).log2();
    let mut links: Vec<(u32, u32, f64)> = Vec::new();
    for (&(a, b), g) in pairs.iter().zip(gammas.chunks(width.max(1))) {
        let mut w = prior_weight;
        for (c, l) in g.iter().enumerate() {
            if *l == NULL {
                continue;
            }
            w += match (&record_tf[c], *l) {
                (Some(tf), 0) if tf[a as usize] > 0.0 => (model.m[c][0] / tf[a as usize].max(1e-9)).log2(),
                _ => base[c][*l as usize],
            };
        }
        let p = 1.0 / (1.0 + (-w).exp2());
        if p >= settings.threshold {
            links.push((a, b, p));
        }
    }
    links.sort_by(|x, y| y.2.total_cmp(&x.2));
    let cluster = cluster(ds, &model, &links, settings);

    let mut members: HashMap<u32, Vec<u32>> = HashMap::new();
    for (i, c) in cluster.iter().enumerate() {
        members.entry(*c).or_default().push(i as u32);
    }
    let mut out = Vec::new();
    for group in members.values().filter(|g| g.len() > 1) {
        for (x, &a) in group.iter().enumerate() {
            for &b in &group[x + 1..] {
                if ds.comparable(a, b) {
                    out.push((a.min(b), a.max(b), model.probability(ds, a, b)));
                }
            }
        }
    }
    out.sort_by_key(|p| (p.0, p.1));
    Outcome { model, candidate_pairs: pairs.len(), pairs: out, cluster }
}

/// Connected components over the links, strongest first, with the guard described above.
fn cluster(ds: &Dataset, model: &Model, links: &[(u32, u32, f64)], settings: &Settings) -> Vec<u32> {
    let n = ds.len();
    let mut parent: Vec<u32> = (0..n as u32).collect();
    let mut members: Vec<Vec<u32>> = (0..n as u32).map(|i| vec![i]).collect();
    fn find(parent: &mut [u32], mut x: u32) -> u32 {
        while parent[x as usize] != x {
            parent[x as usize] = parent[parent[x as usize] as usize];
            x = parent[x as usize];
        }
        x
    }
    for &(a, b, _) in links {
        let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
        if ra == rb {
            continue;
        }
        let (sa, sb) = (members[ra as usize].len(), members[rb as usize].len());
        if sa + sb > settings.max_cluster {
            continue;
        }
        // Every record of one side against every record of the other: one pair that is clearly
        // two different people keeps the clusters apart.
        let conflict = (sa > 1 || sb > 1)
            && members[ra as usize].iter().any(|&x| {
                members[rb as usize].iter().any(|&y| ds.comparable(x, y) && model.probability(ds, x, y) < settings.cannot_link_below)
            });
        if conflict {
            continue;
        }
        let (big, small) = if sa >= sb { (ra, rb) } else { (rb, ra) };
        parent[small as usize] = big;
        let moved = std::mem::take(&mut members[small as usize]);
        members[big as usize].extend(moved);
    }
    (0..n as u32).map(|i| find(&mut parent, i)).collect()
}

/// Precision, recall and F1 of found pairs against true pairs (both unordered).
pub fn evaluate(found: &[(u32, u32)], truth: &[(u32, u32)]) -> (f64, f64, f64) {
    let norm = |&(a, b): &(u32, u32)| (a.min(b), a.max(b));
    let t: HashSet<(u32, u32)> = truth.iter().map(norm).collect();
    let f: HashSet<(u32, u32)> = found.iter().map(norm).collect();
    let tp = f.intersection(&t).count() as f64;
    let precision = if f.is_empty() { 1.0 } else { tp / f.len() as f64 };
    let recall = if t.is_empty() { 1.0 } else { tp / t.len() as f64 };
    let f1 = if precision + recall == 0.0 { 0.0 } else { 2.0 * precision * recall / (precision + recall) };
    (precision, recall, f1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(rows: &[[&str; 4]]) -> Dataset {
        let columns = ["given_name", "surname", "dob", "soc_sec_id"]
            .iter()
            .map(|n| Column { name: n.to_string(), role: Role::infer(n).unwrap() })
            .collect();
        Dataset::new(columns, rows.iter().map(|r| r.iter().map(|s| s.to_string()).collect()), vec![0; rows.len()])
    }

    #[test]
    fn finds_a_typo_duplicate_among_distinct_people() {
        let mut rows = vec![["thomas", "rokobaro", "19720812", "1451137"], ["thomas", "rokobarro", "19720821", "1451137"]];
        let names = ["anna", "bruno", "chloe", "david", "emma", "farid", "gina", "hugo", "ines", "jules", "karim", "lea", "marc", "nina"];
        let surnames = ["martin", "bernard", "dubois", "thomas", "robert", "richard", "petit", "durand", "leroy", "moreau", "simon", "laurent", "lefebvre", "michel"];
        let mut all = Vec::new();
        for (i, g) in names.iter().enumerate() {
            for (j, s) in surnames.iter().enumerate() {
                all.push([g.to_string(), s.to_string(), format!("19{:02}0{}1{}", 50 + i, 1 + j % 9, j % 10), format!("{}", 2_000_000 + i * 100 + j)]);
            }
        }
        let owned: Vec<[&str; 4]> = all.iter().map(|r| [r[0].as_str(), r[1].as_str(), r[2].as_str(), r[3].as_str()]).collect();
        rows.extend(owned);
        let d = ds(&rows);
        let out = run(&d, &Settings::default());
        assert_eq!(out.pairs.iter().map(|p| (p.0, p.1)).collect::<Vec<_>>(), vec![(0, 1)], "{:?}", &out.pairs[..out.pairs.len().min(5)]);
        let e = out.model.explain(&d, 0, 1);
        assert!(e.contributions.iter().any(|c| c.column == "dob" && c.level.contains("typo")));
        assert!(e.probability > 0.9);
    }

    #[test]
    fn evaluation_counts_unordered_pairs() {
        let (p, r, f) = evaluate(&[(1, 0), (2, 3)], &[(0, 1), (4, 5)]);
        assert_eq!((p, r, f), (0.5, 0.5, 0.5));
    }
}
