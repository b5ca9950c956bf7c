//! Identity stitching rules, as pure functions: which identifier values may join profiles
//! (merge protection), and, given who owns each identifier of a message, which profile the
//! message belongs to, which profiles merge into it and which merges are refused.
//!
//! The store gathers the facts (owners, per-profile counts, unmerge blocks) and carries out
//! the [`Plan`]; it never decides.

use std::collections::{HashMap, HashSet};

use regex::Regex;

use crate::ids::{IdKind, Identifier, ProfileId};
use crate::time::Millis;

/// How many identifiers of each kind one profile may hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdLimits {
    pub user_ids: usize,
    pub emails: usize,
    pub phones: usize,
    pub anonymous_ids: usize,
}

impl IdLimits {
    pub fn of(&self, kind: IdKind) -> usize {
        match kind {
            IdKind::UserId => self.user_ids,
            IdKind::Email => self.emails,
            IdKind::Phone => self.phones,
            IdKind::AnonymousId => self.anonymous_ids,
        }
    }
}

impl Default for IdLimits {
    fn default() -> Self {
        IdLimits { user_ids: 1, emails: 5, phones: 5, anonymous_ids: 1000 }
    }
}

/// The placeholder values that SDKs and forms emit when they have no real id. Matching is
/// case-insensitive and ignores surrounding space.
pub const DEFAULT_BANNED_VALUES: &[&str] = &[
    "",
    "null",
    "undefined",
    "anonymous",
    "0",
    "-1",
    "none",
    "nil",
    "nan",
    "unknown",
    "n/a",
    "guest",
    "[object object]",
    "00000000-0000-0000-0000-000000000000",
];

/// Merge protection: banned values and per-profile limits.
#[derive(Clone, Debug)]
pub struct IdentityRules {
    banned: HashSet<String>,
    patterns: Vec<Regex>,
    pub limits: IdLimits,
}

impl Default for IdentityRules {
    fn default() -> Self {
        IdentityRules::new(DEFAULT_BANNED_VALUES.iter().map(|s| s.to_string()), Vec::new(), IdLimits::default())
    }
}

impl IdentityRules {
    pub fn new(banned: impl IntoIterator<Item = String>, patterns: Vec<Regex>, limits: IdLimits) -> IdentityRules {
        IdentityRules { banned: banned.into_iter().map(|s| s.trim().to_lowercase()).collect(), patterns, limits }
    }

    /// Whether `value` may serve as an identifier at all.
    pub fn admits(&self, value: &str) -> bool {
        let v = value.trim();
        !v.is_empty() && !self.banned.contains(&v.to_lowercase()) && !self.patterns.iter().any(|p| p.is_match(v))
    }
}

/// What the store knows of one existing (root) profile.
#[derive(Clone, Debug)]
pub struct RootFacts {
    pub created_at: Millis,
    /// Identifiers held, per kind, in the order of [`IdKind::ALL`].
    pub counts: [usize; 4],
    pub user_ids: Vec<String>,
}

/// One identifier of the message and the root profile that owns it, if any.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub identifier: Identifier,
    pub owner: Option<ProfileId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConflictReason {
    /// The profiles hold different user ids and the limit is one (or fewer than their union).
    UserIdConflict,
    /// Joining would exceed a per-profile limit for this kind of identifier.
    LimitReached,
    /// The two were separated by an unmerge and are kept apart.
    BlockedByUnmerge,
}

impl ConflictReason {
    pub fn code(self) -> &'static str {
        match self {
            ConflictReason::UserIdConflict => "user_id_conflict",
            ConflictReason::LimitReached => "limit_reached",
            ConflictReason::BlockedByUnmerge => "blocked_by_unmerge",
        }
    }
}

/// A merge or attachment refused by the rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub identifier: Identifier,
    /// The other profile, when the conflict is with one.
    pub other: Option<ProfileId>,
    pub reason: ConflictReason,
}

/// One root profile absorbed into the target, and the identifier that links them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedMerge {
    pub from: ProfileId,
    pub evidence: Identifier,
}

/// The decision for one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The profile the message belongs to; `None`: a new profile is created.
    pub target: Option<ProfileId>,
    pub merges: Vec<PlannedMerge>,
    /// Identifiers nobody owned yet, now attached to the target.
    pub attach: Vec<Identifier>,
    pub conflicts: Vec<Conflict>,
}

/// Decides where a message's identifiers lead. `candidates` come in priority order (user
/// id first, anonymous id last): the first decides the profile, each further one joins it
/// only if the union respects the limits. Of the existing profiles that end up joined, the
/// survivor is the one holding a user id, else the oldest.
pub fn plan(
    candidates: &[Candidate],
    roots: &HashMap<ProfileId, RootFacts>,
    limits: &IdLimits,
    blocked: impl Fn(ProfileId, ProfileId) -> bool,
) -> Plan {
    let mut group: Vec<(ProfileId, Identifier)> = Vec::new();
    let mut attach: Vec<Identifier> = Vec::new();
    let mut conflicts = Vec::new();
    let mut counts = [0usize; 4];
    let mut user_ids: HashSet<&str> = HashSet::new();
    let idx = |k: IdKind| IdKind::ALL.iter().position(|x| *x == k).unwrap_or(0);

    for cand in candidates {
        let id = &cand.identifier;
        match cand.owner {
            None => {
                if attach.contains(id) {
                    continue;
                }
                if id.kind == IdKind::UserId && user_ids.contains(id.value.as_str()) {
                    continue;
                }
                let limit = limits.of(id.kind);
                if counts[idx(id.kind)] + 1 > limit {
                    let reason = if id.kind == IdKind::UserId { ConflictReason::UserIdConflict } else { ConflictReason::LimitReached };
                    conflicts.push(Conflict { identifier: id.clone(), other: None, reason });
                    continue;
                }
                counts[idx(id.kind)] += 1;
                if id.kind == IdKind::UserId {
                    user_ids.insert(id.value.as_str());
                }
                attach.push(id.clone());
            }
            Some(root) => {
                if group.iter().any(|(g, _)| *g == root) {
                    continue;
                }
                let Some(facts) = roots.get(&root) else { continue };
                if group.is_empty() && attach.is_empty() {
                    counts = facts.counts;
                    user_ids.extend(facts.user_ids.iter().map(String::as_str));
                    group.push((root, id.clone()));
                    continue;
                }
                let reason = if group.iter().any(|(g, _)| blocked(*g, root)) {
                    Some(ConflictReason::BlockedByUnmerge)
                } else if user_ids.len() + facts.user_ids.iter().filter(|u| !user_ids.contains(u.as_str())).count() > limits.user_ids {
                    Some(ConflictReason::UserIdConflict)
                } else if IdKind::ALL.iter().enumerate().any(|(i, k)| counts[i] + facts.counts[i] > limits.of(*k)) {
                    Some(ConflictReason::LimitReached)
                } else {
                    None
                };
                match reason {
                    Some(reason) => conflicts.push(Conflict { identifier: id.clone(), other: Some(root), reason }),
                    None => {
                        for (c, f) in counts.iter_mut().zip(facts.counts) {
                            *c += f;
                        }
                        user_ids.extend(facts.user_ids.iter().map(String::as_str));
                        group.push((root, id.clone()));
                    }
                }
            }
        }
    }

    let survivor = group
        .iter()
        .map(|(p, _)| *p)
        .min_by_key(|p| {
            let f = &roots[p];
            (f.user_ids.is_empty(), f.created_at, *p)
        });
    let merges = group
        .into_iter()
        .filter(|(p, _)| Some(*p) != survivor)
        .map(|(from, evidence)| PlannedMerge { from, evidence })
        .collect();
    Plan { target: survivor, merges, attach, conflicts }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(kind: IdKind, v: &str) -> Identifier {
        Identifier::new(kind, v)
    }
    fn cand(kind: IdKind, v: &str, owner: Option<i64>) -> Candidate {
        Candidate { identifier: id(kind, v), owner: owner.map(ProfileId) }
    }
    fn facts(created_at: Millis, user_ids: &[&str], anon: usize, emails: usize) -> RootFacts {
        RootFacts { created_at, counts: [user_ids.len(), emails, 0, anon], user_ids: user_ids.iter().map(|s| s.to_string()).collect() }
    }
    fn no_blocks(_: ProfileId, _: ProfileId) -> bool {
        false
    }

    #[test]
    fn banned_values_are_not_identifiers() {
        let r = IdentityRules::default();
        for v in ["", "  ", "null", "NULL", "undefined", "anonymous", "0", "-1", "[object Object]"] {
            assert!(!r.admits(v), "{v:?}");
        }
        assert!(r.admits("user-42"));
        let r = IdentityRules::new(Vec::<String>::new(), vec![Regex::new("^test-").unwrap()], IdLimits::default());
        assert!(!r.admits("test-1"));
        assert!(r.admits("null"));
    }

    #[test]
    fn unknown_identifiers_make_a_new_profile() {
        let p = plan(&[cand(IdKind::UserId, "u1", None), cand(IdKind::AnonymousId, "a1", None)], &HashMap::new(), &IdLimits::default(), no_blocks);
        assert_eq!(p.target, None);
        assert_eq!(p.attach.len(), 2);
        assert!(p.merges.is_empty() && p.conflicts.is_empty());
    }

    #[test]
    fn identify_folds_the_anonymous_profile_into_the_known_one() {
        let roots = HashMap::from([(ProfileId(1), facts(10, &["u1"], 1, 0)), (ProfileId(2), facts(5, &[], 1, 0))]);
        let p = plan(&[cand(IdKind::UserId, "u1", Some(1)), cand(IdKind::AnonymousId, "a9", Some(2))], &roots, &IdLimits::default(), no_blocks);
        assert_eq!(p.target, Some(ProfileId(1)), "the profile with the user id survives even though it is younger");
        assert_eq!(p.merges, vec![PlannedMerge { from: ProfileId(2), evidence: id(IdKind::AnonymousId, "a9") }]);
    }

    #[test]
    fn a_new_user_id_is_attached_to_the_anonymous_profile() {
        let roots = HashMap::from([(ProfileId(2), facts(5, &[], 1, 0))]);
        let p = plan(&[cand(IdKind::UserId, "u1", None), cand(IdKind::AnonymousId, "a9", Some(2))], &roots, &IdLimits::default(), no_blocks);
        assert_eq!(p.target, Some(ProfileId(2)));
        assert_eq!(p.attach, vec![id(IdKind::UserId, "u1")]);
        assert!(p.merges.is_empty());
    }

    #[test]
    fn two_user_ids_never_merge() {
        let roots = HashMap::from([(ProfileId(1), facts(1, &["u1"], 1, 0)), (ProfileId(2), facts(2, &["u2"], 1, 0))]);
        let p = plan(&[cand(IdKind::UserId, "u2", Some(2)), cand(IdKind::AnonymousId, "a1", Some(1))], &roots, &IdLimits::default(), no_blocks);
        assert_eq!(p.target, Some(ProfileId(2)));
        assert!(p.merges.is_empty());
        assert_eq!(p.conflicts[0].reason, ConflictReason::UserIdConflict);
        assert_eq!(p.conflicts[0].other, Some(ProfileId(1)));
    }

    #[test]
    fn an_unknown_user_id_beside_another_users_device_gets_its_own_profile() {
        let roots = HashMap::from([(ProfileId(1), facts(1, &["u1"], 1, 0))]);
        let p = plan(&[cand(IdKind::UserId, "u2", None), cand(IdKind::AnonymousId, "a1", Some(1))], &roots, &IdLimits::default(), no_blocks);
        assert_eq!(p.target, None);
        assert_eq!(p.attach, vec![id(IdKind::UserId, "u2")]);
        assert_eq!(p.conflicts.len(), 1);
    }

    #[test]
    fn limits_refuse_a_sixth_email() {
        let roots = HashMap::from([(ProfileId(1), facts(1, &["u1"], 1, 5))]);
        let p = plan(&[cand(IdKind::UserId, "u1", Some(1)), cand(IdKind::Email, "f@x.fr", None)], &roots, &IdLimits::default(), no_blocks);
        assert_eq!(p.target, Some(ProfileId(1)));
        assert!(p.attach.is_empty());
        assert_eq!(p.conflicts[0].reason, ConflictReason::LimitReached);
    }

    #[test]
    fn unmerged_profiles_stay_apart() {
        let roots = HashMap::from([(ProfileId(1), facts(1, &["u1"], 1, 0)), (ProfileId(2), facts(2, &[], 1, 0))]);
        let p = plan(&[cand(IdKind::UserId, "u1", Some(1)), cand(IdKind::AnonymousId, "a2", Some(2))], &roots, &IdLimits::default(), |a, b| {
            (a, b) == (ProfileId(1), ProfileId(2))
        });
        assert!(p.merges.is_empty());
        assert_eq!(p.conflicts[0].reason, ConflictReason::BlockedByUnmerge);
    }
}

/// How a golden record chooses a trait's value among the values its sources gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Survivorship {
    /// The value with the latest event time.
    MostRecent,
    /// The value from the source ranked highest in `identity.source_trust` (then most recent).
    MostTrusted,
    /// The longest non-empty value (then most recent).
    MostComplete,
}

/// Survivorship rules: a default and per-trait exceptions, with the sources' trust ranking.
#[derive(Clone, Debug, PartialEq)]
pub struct SurvivorshipRules {
    pub default: Survivorship,
    pub per_trait: std::collections::BTreeMap<String, Survivorship>,
    /// Source names, most trusted first; unlisted sources come after them.
    pub trust: Vec<String>,
}

impl Default for SurvivorshipRules {
    fn default() -> Self {
        SurvivorshipRules { default: Survivorship::MostRecent, per_trait: Default::default(), trust: Vec::new() }
    }
}

/// One source's value of a trait, as survivorship sees it.
pub struct SourceValue<'a> {
    pub value_json: &'a str,
    pub timestamp: i64,
    pub source: &'a str,
}

impl SurvivorshipRules {
    /// The index of the surviving value among candidates of one trait (`None` if empty).
    pub fn choose(&self, key: &str, candidates: &[SourceValue<'_>]) -> Option<usize> {
        let rule = self.per_trait.get(key).copied().unwrap_or(self.default);
        let rank = |s: &str| self.trust.iter().position(|t| t == s).unwrap_or(self.trust.len());
        let empty = |v: &str| matches!(v, "null" | "\"\"");
        (0..candidates.len()).max_by(|&a, &b| {
            let (x, y) = (&candidates[a], &candidates[b]);
            let primary = match rule {
                Survivorship::MostRecent => std::cmp::Ordering::Equal,
                // Lower rank is more trusted: reverse.
                Survivorship::MostTrusted => rank(y.source).cmp(&rank(x.source)),
                Survivorship::MostComplete => {
                    let len = |c: &SourceValue<'_>| if empty(c.value_json) { 0 } else { c.value_json.chars().count() };
                    len(x).cmp(&len(y))
                }
            };
            primary.then(x.timestamp.cmp(&y.timestamp))
        })
    }
}

#[cfg(test)]
mod survivorship_tests {
    use super::*;

    #[test]
    fn each_rule_chooses_as_documented() {
        let c = [
            SourceValue { value_json: "\"Lea\"", timestamp: 30, source: "web" },
            SourceValue { value_json: "\"Léa Marie\"", timestamp: 10, source: "crm" },
            SourceValue { value_json: "\"L\"", timestamp: 20, source: "survey" },
        ];
        let mut rules = SurvivorshipRules { trust: vec!["crm".into(), "web".into()], ..Default::default() };
        assert_eq!(rules.choose("firstName", &c), Some(0), "most recent by default");
        rules.per_trait.insert("firstName".into(), Survivorship::MostTrusted);
        assert_eq!(rules.choose("firstName", &c), Some(1));
        rules.per_trait.insert("firstName".into(), Survivorship::MostComplete);
        assert_eq!(rules.choose("firstName", &c), Some(1));
        assert_eq!(rules.choose("x", &[]), None);
    }
}
