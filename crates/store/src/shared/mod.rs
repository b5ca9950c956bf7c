//! The queries written once for both backends (see `sql`): every feature but ingestion and
//! the connection's own life. `Backend` is what a backend provides (a read connection, a
//! write transaction, the master key and identity rules); its provided methods are the
//! storage operations, the same on SQLite and PostgreSQL.

pub(crate) mod activation;
pub(crate) mod audiences;
pub(crate) mod crypt;
pub(crate) mod graph;
pub(crate) mod portal;
pub(crate) mod privacy;
pub(crate) mod read;

use std::future::Future;
use std::time::{SystemTime, UNIX_EPOCH};

use confidant_core::identity::IdentityRules;
use confidant_core::ids::{IdKind, ProfileId};

use crate::privacy::*;
use crate::sql::{Conn as Connection, OptionalExtension};
use crate::{ConflictView, EventCursor, EventPage, MergeView, ProfileView, Result, StoreError, Totals};
use graph::IdentityCache;

/// The members of the tree rooted at `?1`: the root and every profile merged into it,
/// directly or not. Prefix of every query that reads a whole profile.
pub(crate) const MEMBERS: &str =
    "WITH RECURSIVE m(id) AS (SELECT ?1 UNION ALL SELECT p.id FROM profiles p JOIN m ON p.merged_into = m.id) ";

pub(crate) fn kind_code(k: IdKind) -> i64 {
    match k {
        IdKind::UserId => 0,
        IdKind::Email => 1,
        IdKind::Phone => 2,
        IdKind::AnonymousId => 3,
    }
}

pub(crate) fn kind_of(code: i64) -> IdKind {
    match code {
        0 => IdKind::UserId,
        1 => IdKind::Email,
        2 => IdKind::Phone,
        _ => IdKind::AnonymousId,
    }
}

pub(crate) fn now_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The live profile a profile belongs to: follows `merged_into` to the root.
pub(crate) fn root_of(conn: &Connection<'_>, id: i64) -> Result<Option<i64>> {
    let mut stmt = conn.prepare_cached("SELECT merged_into FROM profiles WHERE id = ?1")?;
    let mut current = id;
    // Trees are shallow; the bound only guards against a corrupted cycle.
    for _ in 0..100_000 {
        match stmt.query_row([current], |r| r.get::<_, Option<i64>>(0)).optional()? {
            None => return Ok(None),
            Some(None) => return Ok(Some(current)),
            Some(Some(parent)) => current = parent,
        }
    }
    Err(StoreError::Conflict(format!("profile {} has a merge cycle", ProfileId(id))))
}

pub(crate) fn members(conn: &Connection<'_>, root: i64) -> Result<Vec<i64>> {
    let mut stmt = conn.prepare_cached(&format!("{MEMBERS} SELECT id FROM m"))?;
    let rows = stmt.query_map([root], |r| r.get(0))?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ExecFlags {
    /// The job may change the identity graph other than through `resolve_target`: the
    /// writer's cache is cleared.
    pub(crate) changes_identities: bool,
    /// After the commit, checkpoint and truncate the WAL before answering (erasure).
    pub(crate) truncate_wal: bool,
}

/// A profile with its sealed trait values opened.
pub(crate) fn open_profile(c: &Connection, master: &[u8; 32], mut p: ProfileView) -> Result<ProfileView> {
    let mut keys = std::collections::HashMap::new();
    for t in p.traits.iter_mut().chain(p.trait_values.iter_mut()) {
        crypt::open_value(c, master, &mut t.value, &mut keys)?;
    }
    Ok(p)
}

pub(crate) fn open_events(c: &Connection, master: &[u8; 32], events: &mut [crate::EventView]) -> Result<()> {
    let mut keys = std::collections::HashMap::new();
    for e in events {
        if e.body.get().contains("\"$enc\"") {
            let text = crypt::open_text(c, master, e.body.get().to_owned(), &mut keys)?;
            e.body = crate::RawValue::from_string(text).map_err(|err| StoreError::Conflict(format!("stored event is not JSON: {err}")))?;
        }
    }
    Ok(())
}

/// What a backend provides; the provided methods are the storage operations on top.
pub(crate) trait Backend: Sync {
    fn master_key(&self) -> [u8; 32];
    fn rules(&self) -> IdentityRules;
    /// Runs `f` on a read connection, off the async runtime.
    fn read<T: Send + 'static>(&self, f: impl FnOnce(&Connection<'_>) -> Result<T> + Send + 'static) -> impl Future<Output = Result<T>> + Send;
    /// Runs `f` on a read connection that sees every write begun before it settled: what
    /// reads by a `seq` cursor need (destinations, triggers, audience refresh), so that a row
    /// committed later with a lower `seq` is never skipped. SQLite's single writer commits in
    /// `seq` order, so a plain read is settled already.
    fn read_settled<T: Send + 'static>(&self, f: impl FnOnce(&Connection<'_>) -> Result<T> + Send + 'static) -> impl Future<Output = Result<T>> + Send {
        self.read(f)
    }

    /// Runs `f` in a write transaction; returns once it is durable.
    fn exec<T: Send + 'static>(
        &self,
        flags: ExecFlags,
        f: impl FnOnce(&Connection<'_>, &mut IdentityCache) -> Result<T> + Send + 'static,
    ) -> impl Future<Output = Result<T>> + Send;

    fn record_consent(&self, w: ConsentWrite) -> impl Future<Output = Result<ConsentRecorded>> + Send {
        async move {
            let rules = self.rules();
            self.exec(ExecFlags::default(), move |c, cache| privacy::record_consent(c, cache, &rules, w, now_millis())).await
    
        }
    }

    fn append_audit(&self, entries: Vec<AuditEntry>) -> impl Future<Output = Result<Vec<i64>>> + Send {
        async move {
            self.exec(ExecFlags::default(), move |c, _| privacy::append_audit(c, &entries, now_millis())).await
    
        }
    }

    fn dsr_create(&self, d: DsrInput, audit: AuditEntry) -> impl Future<Output = Result<DsrView>> + Send {
        async move {
            self.exec(ExecFlags::default(), move |c, _| {
                let v = privacy::dsr_create(c, &d)?;
                let mut a = audit;
                if let serde_json::Value::Object(m) = &mut a.detail {
                    m.insert("request".into(), v.receipt_id.clone().into());
                }
                privacy::append_audit(c, &[a], now_millis())?;
                Ok(v)
            })
            .await
    
        }
    }

    fn dsr_finish(&self, id: i64, status: String, detail: serde_json::Value, audit: AuditEntry) -> impl Future<Output = Result<DsrView>> + Send {
        async move {
            self.exec(ExecFlags::default(), move |c, _| {
                let now = now_millis();
                let v = privacy::dsr_finish(c, id, &status, &detail, now)?;
                privacy::append_audit(c, &[audit], now)?;
                Ok(v)
            })
            .await
    
        }
    }

    fn erase(&self, req: ErasureRequest) -> impl Future<Output = Result<ErasureReport>> + Send {
        async move {
            self.exec(ExecFlags { changes_identities: true, truncate_wal: true }, move |c, _| privacy::erase(c, &req, now_millis())).await
    
        }
    }

    fn reapply_tombstones(&self, key: [u8; 32], actor: String) -> impl Future<Output = Result<u64>> + Send {
        async move {
            self.exec(ExecFlags { changes_identities: true, truncate_wal: true }, move |c, _| privacy::reapply_tombstones(c, &key, &actor, now_millis()))
                .await
    
        }
    }

    fn set_restricted(&self, id: ProfileId, on: bool, audit: AuditEntry) -> impl Future<Output = Result<bool>> + Send {
        async move {
            self.exec(ExecFlags::default(), move |c, _| {
                let now = now_millis();
                let changed = privacy::set_restricted(c, id.0, on, &audit.actor, now)?;
                if changed {
                    privacy::append_audit(c, &[audit], now)?;
                }
                Ok(changed)
            })
            .await
    
        }
    }

    fn rectify(&self, id: ProfileId, key: String, value: Option<serde_json::Value>, encrypt: bool, dsr: i64, audit: AuditEntry) -> impl Future<Output = Result<()>> + Send {
        async move {
            let master = self.master_key();
            if key.contains('"') || key.contains('\\') {
                return Err(StoreError::Invalid("a trait key cannot hold quotes or backslashes".into()));
            }
            // The old value is gone from the WAL too, as after an erasure.
            self.exec(ExecFlags { changes_identities: false, truncate_wal: true }, move |c, _| {
                let now = now_millis();
                privacy::rectify(c, id.0, &key, value.as_ref(), encrypt.then_some(&master), dsr, now)?;
                privacy::append_audit(c, &[audit], now)?;
                Ok(())
            })
            .await
    
        }
    }

    fn retention(
        &self,
        rule: std::sync::Arc<dyn Fn(&SubjectRecord) -> RetentionRule + Send + Sync>,
        dry_run: bool,
    ) -> impl Future<Output = Result<RetentionReport>> + Send {
        async move {
            let mut report = RetentionReport { dry_run, ..Default::default() };
            let mut after = i64::MIN;
            loop {
                // Decide on a read connection, apply on the writer, a chunk at a time, so that
                // ingestion is never held up for long.
                let batch = self.read(move |c| privacy::retention_batch(c, after, 2_000)).await?;
                let Some(last) = batch.last().map(|b| b.0) else { break };
                after = last;
                let decided: Vec<(i64, i64, RetentionRule)> = batch.into_iter().map(|(root, last, rec)| (root, last, rule(&rec))).collect();
                let mut chunk = RetentionReport::default();
                chunk = self
                    .exec(ExecFlags { changes_identities: true, truncate_wal: false }, move |c, _| {
                        let now = now_millis();
                        if dry_run {
                            c.execute_batch("SAVEPOINT dry_run")?;
                        }
                        let r = privacy::apply_retention(c, &decided, now, &mut chunk);
                        if dry_run {
                            c.execute_batch("ROLLBACK TO dry_run; RELEASE dry_run")?;
                        }
                        r.map(|_| chunk)
                    })
                    .await?;
                report.subjects_examined += chunk.subjects_examined;
                report.subjects_erased += chunk.subjects_erased;
                report.events_deleted += chunk.events_deleted;
                for (k, v) in chunk.events_by_category {
                    *report.events_by_category.entry(k).or_default() += v;
                }
            }
            if !dry_run && (report.events_deleted > 0 || report.subjects_erased > 0) {
                self.exec(ExecFlags { changes_identities: false, truncate_wal: true }, |_, _| Ok(())).await?;
            }
            Ok(report)
    
        }
    }

    fn quarantine_replace(&self, source_id: i64, file: String, rows: Vec<QuarantineRow>) -> impl Future<Output = Result<u64>> + Send {
        async move {
            self.exec(ExecFlags::default(), move |c, _| {
                let removed = c.prepare_cached("DELETE FROM quarantine WHERE source_id = ?1 AND file = ?2")?.execute(crate::sql::params![source_id, file])? as u64;
                let mut ins = c.prepare_cached("INSERT INTO quarantine(source_id, file, line, field, reason, raw, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?;
                let now = now_millis();
                for r in &rows {
                    ins.execute(crate::sql::params![source_id, file, r.line as i64, r.field, r.reason, r.raw, now])?;
                }
                Ok(removed)
            })
            .await
    
        }
    }

    fn quarantine_list(&self, source: Option<String>) -> impl Future<Output = Result<Vec<QuarantineView>>> + Send {
        async move {
            self.read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT s.name, q.file, q.line, q.field, q.reason, q.raw, q.at FROM quarantine q JOIN sources s ON s.id = q.source_id
                     WHERE CAST(?1 AS TEXT) IS NULL OR s.name = ?1 ORDER BY s.name, q.file, q.line",
                )?;
                let rows = stmt.query_map([source], |r| {
                    Ok(QuarantineView { source: r.get(0)?, file: r.get(1)?, line: r.get::<_, i64>(2)? as u64, field: r.get(3)?, reason: r.get(4)?, raw: r.get(5)?, at: r.get(6)? })
                })?;
                Ok(rows.collect::<std::result::Result<_, _>>()?)
            })
            .await
    
        }
    }

    fn events_named(&self, names: Vec<String>) -> impl Future<Output = Result<Vec<crate::NamedEvent>>> + Send {
        async move {
            self.read(move |c| privacy::events_named(c, &names)).await
    
        }
    }

    fn replace_computed(&self, keys: Vec<String>, rows: Vec<(ProfileId, String, serde_json::Value)>) -> impl Future<Output = Result<u64>> + Send {
        async move {
            self.exec(ExecFlags::default(), move |c, _| privacy::replace_computed(c, &keys, &rows, now_millis())).await
    
        }
    }

    fn computed_traits(&self, id: ProfileId) -> impl Future<Output = Result<Vec<crate::ComputedTrait>>> + Send {
        async move {
            self.read(move |c| privacy::computed_traits(c, id.0)).await
    
        }
    }

    fn clear_computed(&self, id: ProfileId) -> impl Future<Output = Result<u64>> + Send {
        async move {
            self.exec(ExecFlags::default(), move |c, _| privacy::clear_computed(c, id.0)).await
    
        }
    }

    fn match_candidates(&self, keys: Vec<String>) -> impl Future<Output = Result<Vec<MatchCandidate>>> + Send {
        async move {
            let master = self.master_key();
            self.read(move |c| privacy::match_candidates(c, &master, &keys)).await
    
        }
    }

    fn merge_probable(&self, a: ProfileId, b: ProfileId, probability: f64, evidence: serde_json::Value, upper: bool, actor: String) -> impl Future<Output = Result<MatchDecision>> + Send {
        async move {
            self.exec(ExecFlags { changes_identities: true, truncate_wal: false }, move |c, _| privacy::merge_probable(c, a.0, b.0, probability, &evidence, upper, &actor, now_millis())).await
    
        }
    }

    fn reviews(&self, status: Option<String>) -> impl Future<Output = Result<Vec<ReviewView>>> + Send {
        async move {
            self.read(move |c| privacy::reviews(c, status.as_deref())).await
    
        }
    }

    fn decide_review(&self, id: i64, merge: bool, actor: String) -> impl Future<Output = Result<ReviewView>> + Send {
        async move {
            self.exec(ExecFlags { changes_identities: true, truncate_wal: false }, move |c, _| privacy::decide_review(c, id, merge, &actor, now_millis())).await
    
        }
    }

    fn quality(&self) -> impl Future<Output = Result<Vec<QualitySource>>> + Send {
        async move {
            self.read(privacy::quality).await
    
        }
    }

    fn subject_record(&self, id: ProfileId) -> impl Future<Output = Result<SubjectRecord>> + Send {
        async move {
            self.read(move |c| privacy::subject_record(c, id.0)).await
    
        }
    }

    fn subject_records(&self, ids: Vec<ProfileId>) -> impl Future<Output = Result<Vec<Option<SubjectRecord>>>> + Send {
        async move {
            self.read(move |c| {
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    match privacy::subject_record(c, id.0) {
                        Ok(r) => out.push(Some(r)),
                        Err(StoreError::NotFound(_)) => out.push(None),
                        Err(e) => return Err(e),
                    }
                }
                Ok(out)
            })
            .await
    
        }
    }

    fn audience_get(&self, name: String) -> impl Future<Output = Result<Option<crate::audiences::AudienceView>>> + Send {
        async move {
            self.read(move |c| audiences::get(c, &name)).await
    
        }
    }

    fn audience_list(&self) -> impl Future<Output = Result<Vec<crate::audiences::AudienceView>>> + Send {
        async move {
            self.read(audiences::list).await
    
        }
    }

    fn audience_create(&self, def: crate::audiences::AudienceDef, actor: String) -> impl Future<Output = Result<crate::audiences::AudienceView>> + Send {
        async move {
            self.exec(ExecFlags::default(), move |c, _| audiences::create(c, &def, &actor, now_millis())).await
    
        }
    }

    fn audience_update(&self, name: String, def: crate::audiences::AudienceDef) -> impl Future<Output = Result<crate::audiences::AudienceView>> + Send {
        async move {
            self.exec(ExecFlags::default(), move |c, _| audiences::update(c, &name, &def, now_millis())).await
    
        }
    }

    fn audience_delete(&self, name: String) -> impl Future<Output = Result<()>> + Send {
        async move {
            self.exec(ExecFlags::default(), move |c, _| audiences::delete(c, &name)).await
    
        }
    }

    fn audience_facts(&self, q: crate::audiences::FactsQuery) -> impl Future<Output = Result<Vec<crate::audiences::SubjectFacts>>> + Send {
        async move {
            let master = self.master_key();
            self.read(move |c| audiences::facts(c, &master, &q)).await
    
        }
    }

    fn touched_since(&self, w: crate::audiences::Watermark) -> impl Future<Output = Result<(Vec<ProfileId>, crate::audiences::Watermark)>> + Send {
        async move {
            self.read_settled(move |c| audiences::touched_since(c, w)).await
    
        }
    }

    fn audience_apply(&self, name: String, scope: Option<Vec<ProfileId>>, members: Vec<ProfileId>, reason: &'static str) -> impl Future<Output = Result<crate::audiences::Applied>> + Send {
        async move {
            self.exec(ExecFlags::default(), move |c, _| audiences::apply(c, &name, scope.as_deref(), &members, reason, now_millis())).await
    
        }
    }

    fn audience_members(&self, name: String, after: Option<i64>, limit: usize) -> impl Future<Output = Result<Vec<crate::audiences::MemberView>>> + Send {
        async move {
            self.read(move |c| audiences::members(c, &name, after, limit)).await
    
        }
    }

    fn audience_history(&self, name: String, before: Option<i64>, limit: usize) -> impl Future<Output = Result<Vec<crate::audiences::HistoryView>>> + Send {
        async move {
            self.read(move |c| audiences::history(c, &name, before, limit)).await
    
        }
    }

    fn audiences_of(&self, id: ProfileId) -> impl Future<Output = Result<Vec<(String, String, i64)>>> + Send {
        async move {
            self.read(move |c| audiences::of_subject(c, id.0)).await
    
        }
    }

    fn stock_put(&self, levels: Vec<(String, f64, i64)>, source: String) -> impl Future<Output = Result<u64>> + Send {
        async move {
            self.exec(ExecFlags::default(), move |c, _| {
                let mut stmt = c.prepare_cached("INSERT INTO stock_levels(product, at, quantity, source) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (product, at) DO UPDATE SET quantity = excluded.quantity, source = excluded.source")?;
                let mut n = 0;
                for (product, quantity, at) in &levels {
                    n += stmt.execute(crate::sql::params![product, at, quantity, source])? as u64;
                }
                Ok(n)
            })
            .await
    
        }
    }

    fn stock_current(&self) -> impl Future<Output = Result<Vec<(String, f64, i64)>>> + Send {
        async move {
            self.read(|c| {
                let mut stmt = c.prepare_cached("SELECT s.product, s.quantity, s.at FROM stock_levels s WHERE s.at = (SELECT max(at) FROM stock_levels WHERE product = s.product) ORDER BY s.product")?;
                let rows = stmt.query_map((), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<std::result::Result<_, _>>()?;
                Ok(rows)
            })
            .await
    
        }
    }

    // ------------------------------------------------------------------ activation
    fn campaign_get(&self, name: String) -> impl Future<Output = Result<Option<crate::activation::CampaignView>>> + Send {
        async move {
            self.read(move |c| activation::campaign_get(c, &name)).await
    
        }
    }
    fn campaign_list(&self) -> impl Future<Output = Result<Vec<crate::activation::CampaignView>>> + Send {
        async move {
            self.read(activation::campaign_list).await
    
        }
    }
    fn campaign_create(&self, def: crate::activation::CampaignDef, actor: String) -> impl Future<Output = Result<crate::activation::CampaignView>> + Send {
        async move {
            self.exec(ExecFlags::default(), move |c, _| activation::campaign_create(c, &def, &actor, now_millis())).await
    
        }
    }
    fn campaign_status(&self, id: i64, status: &'static str) -> impl Future<Output = Result<()>> + Send {
        async move {
            self.exec(ExecFlags::default(), move |c, _| activation::campaign_status(c, id, status, now_millis())).await
    
        }
    }
    fn campaign_cursor(&self, id: i64, cursor: i64) -> impl Future<Output = Result<()>> + Send {
        async move {
            self.exec(ExecFlags::default(), move |c, _| activation::campaign_cursor(c, id, cursor)).await
    
        }
    }
    fn campaign_delete(&self, name: String) -> impl Future<Output = Result<()>> + Send {
        async move {
            self.exec(ExecFlags::default(), move |c, _| activation::campaign_delete(c, &name)).await
    
        }
    }
    fn delivery_states(&self, campaign: i64, profiles: Vec<ProfileId>) -> impl Future<Output = Result<std::collections::HashMap<(i64, String), String>>> + Send {
        async move {
            self.read(move |c| activation::delivery_states(c, campaign, &profiles)).await
    
        }
    }
    fn deliveries_claim(&self, campaign: i64, wanted: Vec<(ProfileId, String, Vec<u8>)>) -> impl Future<Output = Result<Vec<crate::activation::DeliveryClaim>>> + Send {
        async move {
            self.exec(ExecFlags::default(), move |c, _| activation::deliveries_claim(c, campaign, &wanted, now_millis())).await
    
        }
    }
    fn deliveries_suppress(&self, campaign: i64, rows: Vec<(ProfileId, String, String)>) -> impl Future<Output = Result<u64>> + Send {
        async move {
            self.exec(ExecFlags::default(), move |c, _| activation::deliveries_suppress(c, campaign, &rows, now_millis())).await
    
        }
    }
    fn portal_code_issue(&self, code: crate::portal::NewCode, max_recent: u32, since: i64) -> impl Future<Output = Result<bool>> + Send {
        async move {
            self.exec(ExecFlags::default(), move |c, _| portal::code_issue(c, &code, max_recent, since, now_millis())).await
    
        }
    }
    fn portal_code_redeem(
        &self,
        id: Vec<u8>,
        matches: Box<dyn Fn(&[u8]) -> bool + Send>,
        session: crate::portal::NewSession,
        max_attempts: u32,
    ) -> impl Future<Output = Result<crate::portal::Redeemed>> + Send {
        async move {
            self.exec(ExecFlags::default(), move |c, _| portal::code_redeem(c, &id, &*matches, &session, max_attempts, now_millis())).await
    
        }
    }
    fn portal_session(&self, token_hash: Vec<u8>) -> impl Future<Output = Result<Option<crate::portal::SessionView>>> + Send {
        async move {
            self.read(move |c| portal::session(c, &token_hash, now_millis())).await
    
        }
    }
    fn portal_session_end(&self, token_hash: Vec<u8>) -> impl Future<Output = Result<()>> + Send {
        async move {
            self.exec(ExecFlags::default(), move |c, _| portal::session_end(c, &token_hash)).await
    
        }
    }
    fn console_user_create(&self, email: String, name: String, role: String, password_hash: String, by: String) -> impl Future<Output = Result<crate::portal::ConsoleUser>> + Send {
        async move {
            self.exec(ExecFlags::default(), move |c, _| portal::user_create(c, &email, &name, &role, &password_hash, &by, now_millis())).await
    
        }
    }
    fn console_user_by_email(&self, email: String) -> impl Future<Output = Result<Option<crate::portal::ConsoleUser>>> + Send {
        async move {
            self.read(move |c| portal::user_by_email(c, &email)).await
    
        }
    }
    fn console_users(&self) -> impl Future<Output = Result<Vec<crate::portal::ConsoleUser>>> + Send {
        async move {
            self.read(portal::users).await
    
        }
    }
    fn console_login(&self, id: i64, session: Option<crate::portal::NewSession>, max_failures: i64, lock_until: i64) -> impl Future<Output = Result<()>> + Send {
        async move {
            self.exec(ExecFlags::default(), move |c, _| portal::user_login(c, id, session.as_ref(), max_failures, lock_until, now_millis())).await
    
        }
    }
    fn console_session(&self, token_hash: Vec<u8>) -> impl Future<Output = Result<Option<crate::portal::ConsoleSessionView>>> + Send {
        async move {
            self.read(move |c| portal::console_session(c, &token_hash, now_millis())).await
    
        }
    }
    fn console_user_disable(&self, id: i64) -> impl Future<Output = Result<()>> + Send {
        async move {
            self.exec(ExecFlags::default(), move |c, _| portal::user_disable(c, id, now_millis())).await
    
        }
    }
    fn console_session_end(&self, token_hash: Vec<u8>) -> impl Future<Output = Result<()>> + Send {
        async move {
            self.exec(ExecFlags::default(), move |c, _| portal::console_session_end(c, &token_hash)).await
    
        }
    }
    fn events_per_day(&self, since: i64) -> impl Future<Output = Result<Vec<(i64, u64)>>> + Send {
        async move {
            self.read(move |c| portal::events_per_day(c, since)).await
    
        }
    }
    fn consent_rates(&self) -> impl Future<Output = Result<Vec<(String, u64, u64)>>> + Send {
        async move {
            self.read(portal::consent_rates).await
    
        }
    }
    fn deliveries_finish(&self, outcomes: Vec<(i64, &'static str, Option<String>)>) -> impl Future<Output = Result<()>> + Send {
        async move {
            self.exec(ExecFlags::default(), move |c, _| activation::deliveries_finish(c, &outcomes, now_millis())).await
    
        }
    }
    fn sent_since(&self, profiles: Vec<ProfileId>, since: i64) -> impl Future<Output = Result<std::collections::HashMap<ProfileId, u32>>> + Send {
        async move {
            self.read(move |c| activation::sent_since(c, &profiles, since)).await
    
        }
    }
    fn deliveries(&self, campaign: i64, status: Option<String>, after: i64, limit: usize) -> impl Future<Output = Result<Vec<crate::activation::DeliveryView>>> + Send {
        async move {
            self.read(move |c| activation::deliveries(c, campaign, status.as_deref(), after, limit)).await
    
        }
    }
    fn delivery_counts(&self, campaign: i64) -> impl Future<Output = Result<Vec<(String, Option<String>, i64)>>> + Send {
        async move {
            self.read(move |c| activation::delivery_counts(c, campaign)).await
    
        }
    }
    fn token_target(&self, token: Vec<u8>) -> impl Future<Output = Result<Option<crate::activation::TokenTarget>>> + Send {
        async move {
            self.read(move |c| activation::token_target(c, &token)).await
    
        }
    }
    fn token_used(&self, delivery: i64) -> impl Future<Output = Result<bool>> + Send {
        async move {
            self.exec(ExecFlags::default(), move |c, _| activation::token_used(c, delivery, now_millis())).await
    
        }
    }
    fn trigger_due(&self, event: String, unless: String, within: i64, cursor: i64, due: i64, limit: usize) -> impl Future<Output = Result<(Vec<crate::activation::TriggerOccurrence>, i64)>> + Send {
        async move {
            self.read_settled(move |c| activation::trigger_due(c, &event, &unless, within, cursor, due, limit)).await
    
        }
    }
    fn destination_get(&self, name: String) -> impl Future<Output = Result<Option<crate::activation::DestinationView>>> + Send {
        async move {
            self.read(move |c| activation::destination_get(c, &name)).await
    
        }
    }
    fn destination_list(&self) -> impl Future<Output = Result<Vec<crate::activation::DestinationView>>> + Send {
        async move {
            self.read(activation::destination_list).await
    
        }
    }
    fn destination_create(&self, def: crate::activation::DestinationDef, actor: String) -> impl Future<Output = Result<crate::activation::DestinationView>> + Send {
        async move {
            self.exec(ExecFlags::default(), move |c, _| activation::destination_create(c, &def, &actor, now_millis())).await
    
        }
    }
    fn destination_enable(&self, name: String, enabled: bool) -> impl Future<Output = Result<crate::activation::DestinationView>> + Send {
        async move {
            self.exec(ExecFlags::default(), move |c, _| activation::destination_enable(c, &name, enabled)).await
    
        }
    }
    fn destination_delete(&self, name: String) -> impl Future<Output = Result<()>> + Send {
        async move {
            self.exec(ExecFlags::default(), move |c, _| activation::destination_delete(c, &name)).await
    
        }
    }
    fn events_after(&self, after: i64, limit: usize) -> impl Future<Output = Result<Vec<crate::activation::ForwardEvent>>> + Send {
        async move {
            let master = self.master_key();
            self.read_settled(move |c| activation::events_after(c, &master, after, limit)).await
    
        }
    }
    fn max_seqs(&self) -> impl Future<Output = Result<(i64, i64)>> + Send {
        async move {
            self.read_settled(|c| Ok((activation::max_event_seq(c)?, activation::max_audience_seq(c)?))).await
    
        }
    }
    fn audience_changes_after(&self, after: i64, limit: usize) -> impl Future<Output = Result<Vec<crate::activation::AudienceChange>>> + Send {
        async move {
            self.read_settled(move |c| activation::audience_changes_after(c, after, limit)).await
    
        }
    }
    fn destination_advance(&self, id: i64, events: Option<i64>, audiences: Option<i64>, subjects: Vec<ProfileId>) -> impl Future<Output = Result<()>> + Send {
        async move {
            self.exec(ExecFlags::default(), move |c, _| activation::destination_advance(c, id, events, audiences, &subjects, now_millis())).await
    
        }
    }
    fn dead_add(&self, destination: i64, rows: Vec<crate::activation::DeadLetter>) -> impl Future<Output = Result<()>> + Send {
        async move {
            self.exec(ExecFlags::default(), move |c, _| activation::dead_add(c, destination, &rows)).await
    
        }
    }
    fn dead_list(&self, destination: i64, limit: usize) -> impl Future<Output = Result<Vec<crate::activation::DeadLetter>>> + Send {
        async move {
            self.read(move |c| activation::dead_list(c, destination, limit)).await
    
        }
    }
    fn dead_delete(&self, ids: Vec<i64>) -> impl Future<Output = Result<u64>> + Send {
        async move {
            self.exec(ExecFlags::default(), move |c, _| activation::dead_delete(c, &ids)).await
    
        }
    }
    fn rights_enqueue(&self, r: crate::activation::RightsToForward) -> impl Future<Output = Result<u64>> + Send {
        async move {
            self.exec(ExecFlags::default(), move |c, _| activation::rights_enqueue(c, &r, now_millis())).await
    
        }
    }
    fn rights_due(&self, now: i64, limit: usize) -> impl Future<Output = Result<Vec<crate::activation::RightsForward>>> + Send {
        async move {
            self.read(move |c| activation::rights_due(c, now, limit)).await
    
        }
    }
    fn rights_list(&self, dsr: Option<i64>, destination: Option<String>, limit: usize) -> impl Future<Output = Result<Vec<crate::activation::RightsForward>>> + Send {
        async move {
            self.read(move |c| activation::rights_list(c, dsr, destination.as_deref(), limit)).await
    
        }
    }
    fn rights_attempt(&self, id: i64, outcome: &'static str, response: Option<i64>, error: Option<String>, next_at: i64) -> impl Future<Output = Result<()>> + Send {
        async move {
            // A delivered request's payload (identifiers of an erased subject) is cleared; the WAL
            // is truncated after the commit so that no older page image keeps it.
            let flags = ExecFlags { truncate_wal: outcome == "delivered", ..ExecFlags::default() };
            self.exec(flags, move |c, _| activation::rights_attempt(c, id, outcome, response, error.as_deref(), next_at, now_millis())).await
    
        }
    }
    fn rights_replay(&self, destination: i64) -> impl Future<Output = Result<u64>> + Send {
        async move {
            self.exec(ExecFlags::default(), move |c, _| activation::rights_replay(c, destination, now_millis())).await
    
        }
    }

    fn receipts(&self, id: ProfileId) -> impl Future<Output = Result<Vec<ReceiptView>>> + Send {
        async move {
            self.read(move |c| privacy::receipts(c, id.0)).await
    
        }
    }

    fn consent_changes_since(&self, seq: i64) -> impl Future<Output = Result<Vec<ConsentChange>>> + Send {
        async move {
            self.read_settled(move |c| privacy::consent_changes_since(c, seq)).await
    
        }
    }

    fn privacy_version(&self) -> impl Future<Output = Result<(i64, i64)>> + Send {
        async move {
            self.read(privacy::privacy_version).await
    
        }
    }

    fn verify_receipts(&self) -> impl Future<Output = Result<ChainReport>> + Send {
        async move {
            self.read(privacy::verify_receipts).await
    
        }
    }

    fn verify_audit(&self) -> impl Future<Output = Result<ChainReport>> + Send {
        async move {
            self.read(privacy::verify_audit).await
    
        }
    }

    fn audit_list(&self, f: AuditFilter) -> impl Future<Output = Result<Vec<AuditView>>> + Send {
        async move {
            self.read(move |c| privacy::audit_list(c, &f)).await
    
        }
    }

    fn minimisation(&self) -> impl Future<Output = Result<Vec<MinimisationRow>>> + Send {
        async move {
            self.read(privacy::minimisation).await
    
        }
    }

    fn dsr_get(&self, id: i64) -> impl Future<Output = Result<Option<DsrView>>> + Send {
        async move {
            self.read(move |c| privacy::dsr_get(c, id)).await
    
        }
    }

    fn dsr_list(&self, open_only: bool, limit: usize) -> impl Future<Output = Result<Vec<DsrView>>> + Send {
        async move {
            self.read(move |c| privacy::dsr_list(c, open_only, limit)).await
    
        }
    }

    fn export(&self, id: ProfileId) -> impl Future<Output = Result<SubjectExport>> + Send {
        async move {
            let master = self.master_key();
            self.read(move |c| {
                let mut x = privacy::export(c, id.0)?;
                x.profile = open_profile(c, &master, x.profile)?;
                open_events(c, &master, &mut x.events)?;
                Ok(x)
            })
            .await
    
        }
    }

    fn tombstones(&self, suppress_only: bool) -> impl Future<Output = Result<Vec<[u8; 32]>>> + Send {
        async move {
            self.read(move |c| privacy::tombstone_hashes(c, suppress_only)).await
    
        }
    }

    fn register_counts(&self, trait_categories: std::collections::BTreeMap<String, String>) -> impl Future<Output = Result<RegisterCounts>> + Send {
        async move {
            self.read(move |c| privacy::register_counts(c, &trait_categories)).await
    
        }
    }

    fn find_profiles(&self, kind: IdKind, value: String) -> impl Future<Output = Result<Vec<ProfileView>>> + Send {
        async move {
            let master = self.master_key();
            self.read(move |c| read::find_profiles(c, kind, &value)?.into_iter().map(|p| open_profile(c, &master, p)).collect()).await
    
        }
    }

    fn profile(&self, id: ProfileId) -> impl Future<Output = Result<Option<ProfileView>>> + Send {
        async move {
            let master = self.master_key();
            self.read(move |c| read::profile(c, id.0)?.map(|p| open_profile(c, &master, p)).transpose()).await
    
        }
    }

    fn profile_events(&self, id: ProfileId, limit: usize, cursor: Option<EventCursor>) -> impl Future<Output = Result<EventPage>> + Send {
        async move {
            let master = self.master_key();
            self.read(move |c| {
                let mut page = read::profile_events(c, id.0, limit, cursor)?;
                open_events(c, &master, &mut page.events)?;
                Ok(page)
            })
            .await
    
        }
    }

    fn merges(&self, id: ProfileId) -> impl Future<Output = Result<Vec<MergeView>>> + Send {
        async move {
            self.read(move |c| read::merges(c, id.0)).await
    
        }
    }

    fn conflicts(&self, id: ProfileId) -> impl Future<Output = Result<Vec<ConflictView>>> + Send {
        async move {
            self.read(move |c| read::conflicts(c, id.0)).await
    
        }
    }

    fn totals(&self) -> impl Future<Output = Result<Totals>> + Send {
        async move {
            self.read(read::totals).await
    
        }
    }

}
