//! Probabilistic matching of live profiles: the same engine as `confidant dedupe`
//! (`confidant-linkage`) over each profile's golden values; pairs above the merge threshold
//! are merged (merge protection holds), pairs in the band of doubt go to the review queue.

use confidant_linkage::{run, Column, Dataset, Role, Settings};
use confidant_store::privacy::{MatchDecision, ReviewView};
use serde_json::json;

use crate::{App, Principal, ServiceError};

/// The profile values compared, and their roles.
const KEYS: &[(&str, Role)] = &[
    ("firstName", Role::GivenName),
    ("lastName", Role::Surname),
    ("birthday", Role::Dob),
    ("address", Role::Address),
    ("postalCode", Role::Postcode),
    ("city", Role::City),
    ("email", Role::Email),
    ("phone", Role::Phone),
];

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct MatchReport {
    pub profiles: usize,
    pub candidate_pairs: usize,
    pub merged: usize,
    pub queued: usize,
    /// Above the merge threshold but kept apart by merge protection (queued instead).
    pub protected: usize,
}

impl App {
    /// Finds probable duplicates among live profiles; merges or queues them.
    pub async fn match_profiles(&self, by: &Principal) -> Result<MatchReport, ServiceError> {
        let actor = by.actor();
        let (upper, lower) = (self.config().identity.match_threshold, self.config().identity.review_threshold);
        let candidates = self.store().match_candidates(KEYS.iter().map(|(k, _)| k.to_string()).collect()).await?;
        let mut report = MatchReport { profiles: candidates.len(), ..Default::default() };
        if candidates.len() < 2 {
            return Ok(report);
        }
        let columns: Vec<Column> = KEYS.iter().map(|(k, r)| Column { name: k.to_string(), role: *r }).collect();
        let rows = candidates.iter().map(|c| KEYS.iter().map(|(k, _)| c.values.get(*k).cloned().unwrap_or_default()).collect::<Vec<_>>());
        let dataset = Dataset::new(columns, rows, vec![0; candidates.len()]);
        let settings = Settings { threshold: lower, ..Settings::default() };
        let outcome = tokio::task::spawn_blocking(move || {
            let o = run(&dataset, &settings);
            // Evidence: per comparison, the level and its weight; never the values.
            let explained: Vec<_> = o
                .pairs
                .iter()
                .filter(|(_, _, p)| *p >= lower)
                .map(|&(a, b, p)| {
                    let e = o.model.explain(&dataset, a, b);
                    let ev: Vec<_> = e.contributions.iter().map(|c| json!({"compared": c.column, "level": c.level, "weight": (c.weight * 100.0).round() / 100.0})).collect();
                    (a, b, p, json!({"comparisons": ev, "match_weight": (e.weight * 100.0).round() / 100.0}))
                })
                .collect();
            (o.candidate_pairs, explained)
        })
        .await
        .map_err(|_| ServiceError::Conflict("the matching task failed".into()))?;
        report.candidate_pairs = outcome.0;
        for (a, b, p, evidence) in outcome.1 {
            let (pa, pb) = (candidates[a as usize].profile, candidates[b as usize].profile);
            match self.store().merge_probable(pa, pb, p, evidence, p >= upper, actor.clone()).await? {
                MatchDecision::Merged => report.merged += 1,
                MatchDecision::Queued => report.queued += 1,
                MatchDecision::Protected => report.protected += 1,
                MatchDecision::AlreadyDone => {}
            }
        }
        self.consent_book_changed().await?;
        self.audit(&actor, "identity.match", None, serde_json::to_value(&report).unwrap_or_default()).await?;
        Ok(report)
    }

    pub async fn reviews(&self, status: Option<String>) -> Result<Vec<ReviewView>, ServiceError> {
        Ok(self.store().reviews(status).await?)
    }

    /// A person's decision on a queued pair.
    pub async fn decide_review(&self, id: i64, merge: bool, by: &Principal) -> Result<ReviewView, ServiceError> {
        let actor = by.actor();
        let r = self.store().decide_review(id, merge, actor.clone()).await?;
        self.consent_book_changed().await?;
        self.audit(&actor, if merge { "identity.review.merged" } else { "identity.review.rejected" }, None, json!({"review": id})).await?;
        Ok(r)
    }
}
