//! Recommendations in the product: "for you" (implicit ALS over views, cart additions and
//! purchases), "similar items" (item-item cosine over the same data) and "frequently bought
//! together" (products in the same orders), with popularity per category as the fallback.
//!
//! Purpose-bound: only subjects for whom `personalisation.recommendations` is lawful at
//! training time enter the data, and only they get personalised answers (checked again at
//! every request). An erasure or an objection removes the subject's factors from the model at
//! once and retrains in the background, so the next model has never seen their history.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use confidant_analytics::recs::{
    top_k, Als, AlsParams, Interactions, ItemKnn, Recommender, Weighting,
};
use confidant_core::ids::ProfileId;
use confidant_core::time::Millis;
use serde::Serialize;
use serde_json::{json, Value};

use crate::analytics::text;
use crate::{App, Principal, ServiceError};

/// The purpose recommendations serve.
pub const PURPOSE: &str = "personalisation.recommendations";
/// The events the models learn from, with the confidence each adds.
pub const SIGNALS: &[(&str, f32)] = &[
    ("Product Viewed", 1.0),
    ("Product Clicked", 1.0),
    ("Product Added", 2.0),
    ("Order Completed", 4.0),
];
/// Most items one answer holds.
pub const MAX_N: usize = 100;

/// The products the models know: ids, categories and names as the events gave them.
#[derive(Debug, Default)]
struct Catalogue {
    ids: Vec<String>,
    index: HashMap<String, u32>,
    category: Vec<Option<String>>,
    name: Vec<Option<String>>,
}

impl Catalogue {
    fn intern(&mut self, product: &Value) -> Option<u32> {
        let id = text(&product["product_id"]).or_else(|| text(&product["sku"]))?;
        let i = match self.index.get(&id) {
            Some(&i) => i,
            None => {
                let i = self.ids.len() as u32;
                self.index.insert(id.clone(), i);
                self.ids.push(id);
                self.category.push(None);
                self.name.push(None);
                i
            }
        };
        // The latest description wins.
        if let Some(c) = text(&product["category"]) {
            self.category[i as usize] = Some(c);
        }
        if let Some(n) = text(&product["name"]) {
            self.name[i as usize] = Some(n);
        }
        Some(i)
    }
}

/// The products an event is about, with the confidence it adds.
fn signals(event: &str, body: &Value) -> Vec<(Value, f32)> {
    let Some(&(_, w)) = SIGNALS.iter().find(|(n, _)| *n == event) else {
        return Vec::new();
    };
    let props = &body["properties"];
    match props["products"].as_array() {
        Some(lines) => lines.iter().map(|l| (l.clone(), w)).collect(),
        None => vec![(props.clone(), w)],
    }
}

/// A trained set of models.
pub struct RecModel {
    pub trained_at: Millis,
    pub version: u64,
    catalogue: Catalogue,
    /// Subject (the root at training time) → row.
    users: HashMap<ProfileId, u32>,
    data: Interactions,
    als: Option<Als>,
    knn: ItemKnn,
    /// Per item: items in the same orders, (item, customers who bought both, confidence).
    together: Vec<Vec<(u32, u32, f32)>>,
    /// Items by distinct customers, most first; and per category.
    popular: Vec<(u32, f32)>,
    popular_in: HashMap<String, Vec<(u32, f32)>>,
}

/// What a training did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TrainReport {
    pub version: u64,
    pub subjects: usize,
    pub subjects_not_lawful: usize,
    pub products: usize,
    pub interactions: usize,
    pub orders: usize,
    /// Why ALS was not trained (too little data), if it was not.
    pub als: Option<String>,
    pub train_ms: u64,
}

/// The recommendation state of a running app.
#[derive(Default)]
pub struct RecState {
    model: RwLock<Option<Arc<RwLock<RecModel>>>>,
    training: tokio::sync::Mutex<()>,
    /// Set when a subject left the model; the background retraining clears it.
    stale: std::sync::atomic::AtomicBool,
    /// Subjects who left since the current training started: the model it produces forgets
    /// them before it serves.
    departed: std::sync::Mutex<HashSet<ProfileId>>,
    version: std::sync::atomic::AtomicU64,
}

/// One recommended product.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Item {
    pub product: String,
    pub score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// For "frequently bought together": customers who bought both in one order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customers: Option<u32>,
}

/// A list and how it was made.
#[derive(Clone, Debug, Serialize)]
pub struct Section {
    /// `als`, `itemknn`, `popular_in_category`, `popular`, `co_purchase`.
    pub strategy: &'static str,
    pub items: Vec<Item>,
}

/// The answer to `GET /api/recommendations`.
#[derive(Clone, Debug, Serialize)]
pub struct Recommendations {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    pub personalised: bool,
    /// Why the answer is or is not personalised: `lawful`, `not_lawful`, `no_profile`,
    /// `no_history`.
    pub reason: &'static str,
    pub model_version: u64,
    pub trained_at: String,
    pub for_you: Section,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub similar: Option<Section>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bought_together: Option<Section>,
}

impl RecModel {
    fn item(&self, i: u32, score: f32, customers: Option<u32>) -> Item {
        let k = i as usize;
        Item {
            product: self.catalogue.ids[k].clone(),
            score: (score * 10_000.0).round() / 10_000.0,
            category: self.catalogue.category[k].clone(),
            name: self.catalogue.name[k].clone(),
            customers,
        }
    }

    fn popular(&self, category: Option<&str>, n: usize, skip: &[u32]) -> Section {
        let (strategy, list) = match category.and_then(|c| self.popular_in.get(c)) {
            Some(l) => ("popular_in_category", l),
            None => ("popular", &self.popular),
        };
        let mut items: Vec<Item> = list
            .iter()
            .filter(|(i, _)| !skip.contains(i))
            .take(n)
            .map(|&(i, s)| self.item(i, s, None))
            .collect();
        if items.len() < n && strategy == "popular_in_category" {
            // Fill up from the whole catalogue.
            for &(i, s) in &self.popular {
                if items.len() >= n {
                    break;
                }
                if !skip.contains(&i)
                    && !items
                        .iter()
                        .any(|x| x.product == self.catalogue.ids[i as usize])
                {
                    items.push(self.item(i, s, None));
                }
            }
        }
        Section { strategy, items }
    }

    /// Personal scores from a known row or a history folded in; `None` without any signal.
    fn for_user(
        &self,
        row: Option<u32>,
        history: &[(u32, f32)],
        n: usize,
        skip_extra: &[u32],
    ) -> Option<Section> {
        let mut seen: Vec<u32> = match row {
            Some(u) => self.data.user(u as usize).map(|x| x.0).collect(),
            None => history.iter().map(|x| x.0).collect(),
        };
        if seen.is_empty() {
            return None;
        }
        seen.extend_from_slice(skip_extra);
        seen.sort_unstable();
        seen.dedup();
        let (strategy, scores) = match (&self.als, row) {
            (Some(als), Some(u)) => ("als", als.score_user(u as usize)),
            (Some(als), None) => ("als", als.score(history)),
            (None, Some(u)) => (
                "itemknn",
                self.knn
                    .score(&self.data.user(u as usize).collect::<Vec<_>>()),
            ),
            (None, None) => ("itemknn", self.knn.score(history)),
        };
        let items: Vec<Item> = top_k(&scores, n, &seen)
            .into_iter()
            .filter(|x| x.1 > 0.0)
            .map(|(i, s)| self.item(i, s, None))
            .collect();
        if items.is_empty() {
            return None;
        }
        Some(Section { strategy, items })
    }

    /// Removes subjects' rows: their factors become zero and their history unreachable.
    fn forget(&mut self, subjects: &[ProfileId]) -> bool {
        let mut any = false;
        for s in subjects {
            if let Some(u) = self.users.remove(s) {
                if let Some(als) = &mut self.als {
                    als.forget_user(u as usize);
                }
                any = true;
            }
        }
        any
    }
}

/// Trains every model from (subject, product JSON, confidence) signals and orders' baskets.
fn train(
    signals_by_subject: BTreeMap<ProfileId, Vec<(Value, f32)>>,
    baskets: Vec<(ProfileId, Vec<Value>)>,
    cfg: &confidant_core::config::RecommendationsConfig,
    version: u64,
    now: Millis,
) -> (RecModel, TrainReport) {
    let started = std::time::Instant::now();
    let mut catalogue = Catalogue::default();
    let mut users = HashMap::new();
    let mut triples = Vec::new();
    for (row, (subject, sigs)) in signals_by_subject.into_iter().enumerate() {
        users.insert(subject, row as u32);
        for (p, w) in sigs {
            if let Some(i) = catalogue.intern(&p) {
                triples.push((row as u32, i, w));
            }
        }
    }
    let data = Interactions::new(users.len(), catalogue.ids.len(), &triples);
    let knn = ItemKnn::fit(&data, cfg.neighbours, Weighting::Cosine);
    let params = AlsParams {
        factors: cfg.factors,
        iterations: cfg.iterations,
        regularization: cfg.regularization as f32,
        ..AlsParams::default()
    };
    let (als, why) = if data.users < 2 || data.items < 2 {
        (None, Some(format!("{} subjects and {} products: too few to learn factors; item similarity serves instead", data.users, data.items)))
    } else {
        match Als::fit(&data, &params) {
            Ok(a) => (Some(a), None),
            Err(e) => (None, Some(e.to_string())),
        }
    };
    // Baskets: pairs of products in one order, counted once per customer.
    let mut pairs: HashMap<(u32, u32), HashSet<ProfileId>> = HashMap::new();
    let mut bought: HashMap<u32, HashSet<ProfileId>> = HashMap::new();
    for (subject, lines) in &baskets {
        let mut items: Vec<u32> = lines.iter().filter_map(|l| catalogue.intern(l)).collect();
        items.sort_unstable();
        items.dedup();
        for &a in &items {
            bought.entry(a).or_default().insert(*subject);
            for &b in &items {
                if a != b {
                    pairs.entry((a, b)).or_default().insert(*subject);
                }
            }
        }
    }
    let mut together: Vec<Vec<(u32, u32, f32)>> = vec![Vec::new(); catalogue.ids.len()];
    for ((a, b), who) in pairs {
        let n = who.len() as u32;
        if n >= cfg.min_customers_together {
            let confidence = n as f32 / bought[&a].len().max(1) as f32;
            together[a as usize].push((b, n, confidence));
        }
    }
    for row in &mut together {
        row.sort_unstable_by(|x, y| y.1.cmp(&x.1).then(y.2.total_cmp(&x.2)).then(x.0.cmp(&y.0)));
        row.truncate(MAX_N);
    }
    let counts = data.item_counts();
    let mut popular: Vec<(u32, f32)> = counts
        .iter()
        .enumerate()
        .filter(|(_, &c)| c > 0)
        .map(|(i, &c)| (i as u32, c as f32))
        .collect();
    popular.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut popular_in: HashMap<String, Vec<(u32, f32)>> = HashMap::new();
    for &(i, c) in &popular {
        if let Some(cat) = &catalogue.category[i as usize] {
            let l = popular_in.entry(cat.clone()).or_default();
            if l.len() < MAX_N {
                l.push((i, c));
            }
        }
    }
    popular.truncate(MAX_N);
    let report = TrainReport {
        version,
        subjects: data.users,
        subjects_not_lawful: 0,
        products: data.items,
        interactions: data.nnz(),
        orders: baskets.len(),
        als: why,
        train_ms: started.elapsed().as_millis() as u64,
    };
    (
        RecModel {
            trained_at: now,
            version,
            catalogue,
            users,
            data,
            als,
            knn,
            together,
            popular,
            popular_in,
        },
        report,
    )
}

/// Who trains when the product retrains on its own (an erasure, a first request).
fn trainer() -> Principal {
    Principal { name: "recommendations".into(), role: confidant_core::config::Role::Dpo }
}

impl App {
    /// Trains the recommendation models on the subjects lawful for the purpose now, and swaps
    /// them in. One training at a time.
    pub async fn train_recommendations(&self, by: &Principal) -> Result<TrainReport, ServiceError> {
        let state = &self.inner.recs;
        let _one = state.training.lock().await;
        state
            .stale
            .store(false, std::sync::atomic::Ordering::SeqCst);
        state
            .departed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let names: Vec<String> = SIGNALS.iter().map(|(n, _)| (*n).to_owned()).collect();
        let events = self.store().events_named(names).await?;
        let subjects: Vec<ProfileId> = events
            .iter()
            .map(|e| e.profile)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let lawful = self.lawful_among(subjects.clone(), PURPOSE).await?;
        let mut by_subject: BTreeMap<ProfileId, Vec<(Value, f32)>> = BTreeMap::new();
        let mut baskets = Vec::new();
        for e in events.into_iter().filter(|e| lawful.contains(&e.profile)) {
            if e.event == "Order Completed" {
                if let Some(lines) = e.body["properties"]["products"].as_array() {
                    baskets.push((e.profile, lines.clone()));
                }
            }
            by_subject
                .entry(e.profile)
                .or_default()
                .extend(signals(&e.event, &e.body));
        }
        let version = state
            .version
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        let cfg = self.config().recommendations.clone();
        let now = crate::now_millis();
        let (model, mut report) =
            tokio::task::spawn_blocking(move || train(by_subject, baskets, &cfg, version, now))
                .await
                .map_err(|e| ServiceError::Conflict(format!("the training task failed: {e}")))?;
        report.subjects_not_lawful = subjects.len() - lawful.len();
        let mut model = model;
        {
            // Subjects who left while this model trained (they were read as lawful) leave it
            // before it serves; holding the lock keeps a departure from slipping in between.
            let departed = state.departed.lock().unwrap_or_else(|e| e.into_inner());
            model.forget(&departed.iter().copied().collect::<Vec<_>>());
            *state.model.write().unwrap_or_else(|e| e.into_inner()) =
                Some(Arc::new(RwLock::new(model)));
        }
        self.audit(
            &by.actor(),
            "recommendations.trained",
            None,
            json!({"version": version, "subjects": report.subjects, "products": report.products}),
        )
        .await?;
        Ok(report)
    }

    fn rec_model(&self) -> Option<Arc<RwLock<RecModel>>> {
        self.inner
            .recs
            .model
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Recommendations for a profile (personalised only where the purpose is lawful for them),
    /// and, with a product as context, similar products and products bought together with it.
    pub async fn recommend(
        &self,
        profile: Option<ProfileId>,
        context: Option<&str>,
        n: usize,
    ) -> Result<Recommendations, ServiceError> {
        if !(1..=MAX_N).contains(&n) {
            return Err(ServiceError::Invalid {
                code: "invalid_n",
                message: format!("n must be from 1 to {MAX_N}"),
            });
        }
        let model = match self.rec_model() {
            Some(m) => m,
            None => {
                self.train_recommendations(&trainer())
                .await?;
                self.rec_model()
                    .ok_or(ServiceError::NotFound("recommendation model"))?
            }
        };
        // Who is asking for whom: the live subject and whether the purpose is lawful now.
        let subject = match profile {
            None => None,
            Some(p) => match self.store().subject_records(vec![p]).await?.pop().flatten() {
                None => return Err(ServiceError::NotFound("profile")),
                Some(rec) => {
                    let lawful = self.policy().is_lawful(
                        PURPOSE,
                        &crate::privacy::state_of(&rec),
                        confidant_core::privacy::Use::Process,
                    );
                    Some((rec.root, lawful))
                }
            },
        };
        // A subject new since the training: their recent history, folded in.
        let needs_history = {
            let m = model.read().unwrap_or_else(|e| e.into_inner());
            matches!(subject, Some((root, true)) if !m.users.contains_key(&root))
        };
        let history_json = match (needs_history, subject) {
            (true, Some((root, _))) => self.recent_signals(root).await?,
            _ => Vec::new(),
        };
        let m = model.read().unwrap_or_else(|e| e.into_inner());
        let context_item = context.map(|c| m.catalogue.index.get(c).copied());
        let history: Vec<(u32, f32)> = history_json
            .iter()
            .filter_map(|(p, w)| {
                text(&p["product_id"])
                    .or_else(|| text(&p["sku"]))
                    .and_then(|id| m.catalogue.index.get(&id))
                    .map(|&i| (i, *w))
            })
            .collect();
        let skip: Vec<u32> = context_item.flatten().into_iter().collect();
        let category = context_item
            .flatten()
            .and_then(|i| m.catalogue.category[i as usize].as_deref());
        let (personal, reason) = match subject {
            None => (None, "no_profile"),
            Some((_, false)) => (None, "not_lawful"),
            Some((root, true)) => match m.for_user(m.users.get(&root).copied(), &history, n, &skip)
            {
                Some(s) => (Some(s), "lawful"),
                None => (None, "no_history"),
            },
        };
        let personalised = personal.is_some();
        let for_you = personal.unwrap_or_else(|| m.popular(category, n, &skip));
        let (similar, bought_together) = match context_item {
            None => (None, None),
            Some(None) => (
                Some(m.popular(None, n, &[])),
                Some(Section {
                    strategy: "co_purchase",
                    items: Vec::new(),
                }),
            ),
            Some(Some(i)) => {
                let sim: Vec<Item> = m
                    .knn
                    .similar(i, n)
                    .into_iter()
                    .map(|(j, s)| m.item(j, s, None))
                    .collect();
                let similar = if sim.is_empty() {
                    m.popular(category, n, &[i])
                } else {
                    Section {
                        strategy: "itemknn",
                        items: sim,
                    }
                };
                let together = m.together[i as usize]
                    .iter()
                    .take(n)
                    .map(|&(j, c, conf)| m.item(j, conf, Some(c)))
                    .collect();
                (
                    Some(similar),
                    Some(Section {
                        strategy: "co_purchase",
                        items: together,
                    }),
                )
            }
        };
        Ok(Recommendations {
            profile: profile.map(|p| p.to_string()),
            personalised,
            reason,
            model_version: m.version,
            trained_at: confidant_core::time::format_millis(m.trained_at),
            for_you,
            similar,
            bought_together,
        })
    }

    /// The products of a subject's latest events, for a subject the model has not seen yet.
    async fn recent_signals(&self, subject: ProfileId) -> Result<Vec<(Value, f32)>, ServiceError> {
        let page = self.store().profile_events(subject, 200, None).await?;
        let mut out = Vec::new();
        for e in page.events {
            let body: Value = serde_json::from_str(e.body.get()).unwrap_or(Value::Null);
            if body["type"] == "track" {
                if let Some(name) = body["event"].as_str() {
                    out.extend(signals(name, &body));
                }
            }
        }
        Ok(out)
    }

    /// Takes subjects (every id of their trees) out of the model at once and has it retrained
    /// without them in the background.
    pub(crate) fn forget_recommendations(&self, members: &[ProfileId]) {
        let left = {
            let mut departed = self
                .inner
                .recs
                .departed
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            departed.extend(members.iter().copied());
            match self.rec_model() {
                Some(model) => model
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .forget(members),
                None => false,
            }
        };
        if left {
            self.retrain_soon();
        }
    }

    /// Retrains in the background (once, however many calls arrive during a training).
    pub(crate) fn retrain_soon(&self) {
        let state = &self.inner.recs;
        if self.rec_model().is_none() || state.stale.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let app = self.clone();
        tokio::spawn(async move {
            if let Err(e) = app
                .train_recommendations(&trainer())
                .await
            {
                tracing::error!(error = %e, "retraining the recommendations failed");
            }
        });
    }

    /// After a consent change: a subject for whom the purpose is no longer lawful leaves the model.
    pub(crate) async fn forget_recommendations_if_unlawful(
        &self,
        subject: ProfileId,
    ) -> Result<(), ServiceError> {
        if self.is_lawful(subject, PURPOSE).await? {
            return Ok(());
        }
        let members = match self.store().profile(subject).await? {
            Some(p) => p.members,
            None => vec![subject],
        };
        self.forget_recommendations(&members);
        Ok(())
    }

    /// Whether the current model holds a row for any of these subjects (tests and the DPO's checks).
    pub fn recommendations_know(&self, subjects: &[ProfileId]) -> bool {
        self.rec_model().is_some_and(|m| {
            let m = m.read().unwrap_or_else(|e| e.into_inner());
            subjects.iter().any(|s| m.users.contains_key(s))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(min: u32) -> confidant_core::config::RecommendationsConfig {
        confidant_core::config::RecommendationsConfig {
            factors: 8,
            iterations: 10,
            regularization: 0.05,
            neighbours: 10,
            min_customers_together: min,
        }
    }

    fn p(id: &str, cat: &str) -> Value {
        json!({"product_id": id, "category": cat, "name": format!("Product {id}")})
    }

    #[test]
    fn baskets_need_enough_customers_and_popularity_is_per_category() {
        let mut sig = BTreeMap::new();
        let mut baskets = Vec::new();
        for s in 1..=4 {
            let lines = vec![p("tent", "camping"), p("stove", "camping")];
            sig.insert(
                ProfileId(s),
                lines.iter().map(|l| (l.clone(), 4.0)).collect::<Vec<_>>(),
            );
            baskets.push((ProfileId(s), lines));
        }
        // One customer alone bought the tent with a book: below the threshold, never shown.
        sig.insert(
            ProfileId(9),
            vec![(p("tent", "camping"), 4.0), (p("book", "books"), 4.0)],
        );
        baskets.push((ProfileId(9), vec![p("tent", "camping"), p("book", "books")]));
        let (m, report) = train(sig, baskets, &cfg(3), 1, 0);
        assert_eq!((report.subjects, report.products, report.orders), (5, 3, 5));
        let tent = m.catalogue.index["tent"];
        let stove = m.catalogue.index["stove"];
        assert_eq!(
            m.together[tent as usize]
                .iter()
                .map(|x| (x.0, x.1))
                .collect::<Vec<_>>(),
            vec![(stove, 4)]
        );
        assert!(
            (m.together[tent as usize][0].2 - 0.8).abs() < 1e-6,
            "4 of the 5 tent buyers bought the stove"
        );
        let books = m.popular(Some("books"), 2, &[]);
        assert_eq!(books.strategy, "popular_in_category");
        assert_eq!(
            books
                .items
                .iter()
                .map(|i| i.product.as_str())
                .collect::<Vec<_>>(),
            vec!["book", "tent"],
            "filled up from the whole catalogue"
        );
        assert_eq!(m.popular(None, 10, &[]).items[0].product, "tent");
    }

    #[test]
    fn forgetting_zeroes_factors_and_hides_history() {
        let mut sig = BTreeMap::new();
        for s in 1..=6 {
            sig.insert(
                ProfileId(s),
                vec![
                    (p(&format!("a{}", s % 3), "x"), 1.0),
                    (p(&format!("b{}", s % 2), "y"), 2.0),
                ],
            );
        }
        let (mut m, _) = train(sig, Vec::new(), &cfg(1), 1, 0);
        let u = m.users[&ProfileId(2)];
        assert!(m.for_user(Some(u), &[], 3, &[]).is_some());
        assert!(m.forget(&[ProfileId(2), ProfileId(77)]));
        assert!(!m.users.contains_key(&ProfileId(2)));
        let als = m.als.as_ref().unwrap();
        assert!(als.user_factors[u as usize * 8..(u as usize + 1) * 8]
            .iter()
            .all(|x| *x == 0.0));
        assert!(!m.forget(&[ProfileId(2)]), "already gone");
    }
}
