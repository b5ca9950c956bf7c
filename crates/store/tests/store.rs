//! The store against a real SQLite file; `store_pg.rs` runs the same tests on PostgreSQL
//! (a database of its own per test on the server of `CONFIDANT_TEST_DATABASE_URL`), except
//! the few about SQLite's own files and writer, which say so and return.

use confidant_core::identity::IdentityRules;
use confidant_core::ids::{IdKind, ProfileId};
use confidant_core::message::{parse_message, Limits, ParseContext, SealedMessage};
use confidant_store::{IngestBatch, SqliteOptions, Store, StoreError};
use serde_json::{json, Value};

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open_sqlite(&dir.path().join("confidant.db"), SqliteOptions { max_commit_messages: 10_000, rules: IdentityRules::default(), master_key: [9; 32] }).unwrap()
}

fn msg(v: Value) -> SealedMessage {
    let limits = Limits { max_message_bytes: 32 * 1024, max_properties: 300, max_depth: 64 };
    let rules = IdentityRules::default();
    let ctx = ParseContext { received_at: 1_790_000_000_000, batch_sent_at: None, endpoint_type: None, limits: &limits, rules: &rules, default_region: "FR" };
    parse_message(&v.to_string(), &ctx).unwrap().seal()
}

/// Whether this test binary runs on PostgreSQL (its name ends in `_pg`).
fn on_postgres() -> bool {
    env!("CARGO_CRATE_NAME").ends_with("_pg")
}

thread_local! {
    static DATABASES: std::cell::RefCell<Vec<confidant_store::postgres::TestDatabase>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A fresh store of the backend this binary tests.
async fn open_any(dir: &tempfile::TempDir) -> Store {
    if on_postgres() {
        if let Some(db) = confidant_store::postgres::TestDatabase::create().await {
            let options = confidant_store::postgres::PostgresOptions {
                url: db.url.clone(),
                pool_size: 8,
                connect_attempts: 3,
                rules: IdentityRules::default(),
                master_key: [9; 32],
            };
            DATABASES.with(|d| d.borrow_mut().push(db));
            return Store::open_postgres(options).await.unwrap();
        }
        eprintln!("CONFIDANT_TEST_DATABASE_URL is not set: this PostgreSQL run uses SQLite");
    }
    open(dir)
}

/// For the tests of SQLite's own machinery: true (and a note) when running on PostgreSQL.
fn sqlite_only() -> bool {
    if on_postgres() {
        eprintln!("about SQLite's files and writer: not run on PostgreSQL");
    }
    on_postgres()
}

async fn setup() -> (tempfile::TempDir, Store, i64) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_any(&dir).await;
    let src = store.ensure_sources(vec!["web".into()]).await.unwrap()[0];
    (dir, store, src)
}

async fn send(store: &Store, src: i64, msgs: Vec<Value>) -> confidant_store::IngestReport {
    store.ingest(IngestBatch { source_id: src, messages: msgs.into_iter().map(msg).collect(), rejected: vec![], drops: vec![] }).await.unwrap()
}

async fn by(store: &Store, kind: IdKind, v: &str) -> Vec<confidant_store::ProfileView> {
    store.find_profiles(kind, v.into()).await.unwrap()
}

#[tokio::test]
async fn a_message_id_is_stored_once() {
    let (_d, store, src) = setup().await;
    let m = json!({"type": "track", "event": "X", "anonymousId": "a1", "messageId": "m1", "timestamp": "2026-01-01T00:00:00Z"});
    let first = send(&store, src, vec![m.clone(), m.clone()]).await;
    assert_eq!((first.stored, first.duplicates), (1, 1));
    assert_eq!(first.duplicate_flags, vec![false, true]);
    let again = send(&store, src, vec![m]).await;
    assert_eq!((again.stored, again.duplicates), (0, 1));
    assert_eq!(store.totals().await.unwrap().events, 1);
}

#[tokio::test]
async fn identify_folds_anonymous_history_into_the_known_profile() {
    let (_d, store, src) = setup().await;
    send(&store, src, vec![
        json!({"type": "identify", "userId": "u1", "messageId": "i0", "traits": {"email": "alice@example.fr"}, "timestamp": "2026-01-01T00:00:00Z"}),
        json!({"type": "page", "anonymousId": "a1", "messageId": "p1", "timestamp": "2026-01-02T00:00:00Z"}),
        json!({"type": "track", "event": "Product Viewed", "anonymousId": "a1", "messageId": "t1", "timestamp": "2026-01-02T00:01:00Z"}),
    ]).await;
    assert_eq!(store.totals().await.unwrap().profiles, 2);
    send(&store, src, vec![json!({"type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": "i1", "timestamp": "2026-01-02T00:02:00Z"})]).await;
    assert_eq!(store.totals().await.unwrap().profiles, 1, "merged");
    let p = &by(&store, IdKind::AnonymousId, "a1").await[0];
    assert_eq!(p.id, by(&store, IdKind::UserId, "u1").await[0].id);
    assert_eq!(p.id, by(&store, IdKind::Email, "alice@example.fr").await[0].id);
    assert_eq!(p.event_count, 4);
    assert_eq!(store.totals().await.unwrap().profiles, 1);
    let merges = store.merges(p.id).await.unwrap();
    assert_eq!(merges.len(), 1);
    assert_eq!(merges[0].rule, "shared_anonymous_id");
    let page = store.profile_events(p.id, 10, None).await.unwrap();
    let ids: Vec<String> = page.events.iter().map(|e| serde_json::from_str::<Value>(e.body.get()).unwrap()["messageId"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, ["i1", "t1", "p1", "i0"], "newest first, across the merged profiles");
}

#[tokio::test]
async fn emails_and_phones_stitch_and_alias_joins() {
    let (_d, store, src) = setup().await;
    send(&store, src, vec![
        json!({"type": "identify", "anonymousId": "a1", "messageId": "1", "traits": {"email": "Bob@Example.fr"}}),
        json!({"type": "identify", "anonymousId": "a2", "messageId": "2", "traits": {"email": "bob@example.fr", "phone": "06 11 22 33 44"}}),
        json!({"type": "track", "event": "X", "anonymousId": "a3", "messageId": "3", "context": {"traits": {"phone": "+33611223344"}}}),
        json!({"type": "track", "event": "X", "anonymousId": "old-device", "messageId": "4"}),
        json!({"type": "alias", "userId": "bob", "previousId": "old-device", "messageId": "5"}),
        json!({"type": "identify", "userId": "bob", "anonymousId": "a3", "messageId": "6"}),
        json!({"type": "track", "event": "X", "anonymousId": "tablet", "messageId": "7"}),
    ]).await;
    assert_eq!(store.totals().await.unwrap().profiles, 2);
    send(&store, src, vec![json!({"type": "alias", "userId": "bob", "previousId": "tablet", "messageId": "8"})]).await;
    assert_eq!(store.totals().await.unwrap().profiles, 1, "merged");
    let p = &by(&store, IdKind::UserId, "bob").await[0];
    for (k, v) in [(IdKind::AnonymousId, "a1"), (IdKind::AnonymousId, "a2"), (IdKind::AnonymousId, "a3"), (IdKind::AnonymousId, "old-device"), (IdKind::AnonymousId, "tablet"), (IdKind::Phone, "+33611223344")] {
        assert_eq!(by(&store, k, v).await[0].id, p.id, "{v}");
    }
    assert_eq!(store.totals().await.unwrap().profiles, 1);
    assert!(store.merges(p.id).await.unwrap().iter().any(|m| m.rule == "alias"));
}

#[tokio::test]
async fn two_user_ids_are_never_merged_and_the_conflict_is_recorded() {
    let (_d, store, src) = setup().await;
    send(&store, src, vec![
        json!({"type": "identify", "userId": "u1", "anonymousId": "shared-tablet", "messageId": "1"}),
        json!({"type": "identify", "userId": "u2", "anonymousId": "shared-tablet", "messageId": "2"}),
    ]).await;
    assert_eq!(store.totals().await.unwrap().conflicts, 1);
    let p1 = by(&store, IdKind::UserId, "u1").await[0].id;
    let p2 = by(&store, IdKind::UserId, "u2").await[0].id;
    assert_ne!(p1, p2);
    let conflicts = store.conflicts(p2).await.unwrap();
    assert_eq!(conflicts[0].reason, "user_id_conflict");
    assert_eq!(conflicts[0].other, Some(p1));
    // an alias between two known users is refused too
    send(&store, src, vec![json!({"type": "alias", "userId": "u2", "previousId": "u1", "messageId": "3"})]).await;
    let totals = store.totals().await.unwrap();
    assert_eq!((totals.profiles, totals.conflicts), (2, 2), "not merged, and the refusal is recorded");
}

#[tokio::test]
async fn the_latest_trait_by_event_time_wins_whatever_the_arrival_order() {
    let (_d, store, src) = setup().await;
    send(&store, src, vec![
        json!({"type": "identify", "userId": "u1", "messageId": "new", "traits": {"city": "Lyon"}, "timestamp": "2026-03-01T00:00:00Z"}),
        json!({"type": "identify", "userId": "u1", "messageId": "old", "traits": {"city": "Paris", "plan": "free"}, "timestamp": "2026-01-01T00:00:00Z"}),
    ]).await;
    let p = &by(&store, IdKind::UserId, "u1").await[0];
    let city = p.traits.iter().find(|t| t.key == "city").unwrap();
    assert_eq!(city.value, json!("Lyon"));
    assert_eq!(city.message_id, "new");
    assert_eq!(city.source, "web");
    assert_eq!(p.traits.iter().find(|t| t.key == "plan").unwrap().value, json!("free"));
}

#[tokio::test]
async fn unmerge_restores_both_profiles_exactly_and_they_stay_apart() {
    let (_d, store, src) = setup().await;
    send(&store, src, vec![
        json!({"type": "identify", "userId": "u1", "messageId": "1", "traits": {"name": "Ann", "city": "Nice"}, "timestamp": "2026-01-01T00:00:00Z"}),
        json!({"type": "identify", "anonymousId": "a1", "messageId": "2", "traits": {"city": "Brest", "email": "ann@example.fr"}, "timestamp": "2026-02-01T00:00:00Z"}),
        json!({"type": "track", "event": "X", "anonymousId": "a1", "messageId": "3", "timestamp": "2026-02-02T00:00:00Z"}),
    ]).await;
    let before_u = by(&store, IdKind::UserId, "u1").await[0].clone();
    let before_a = by(&store, IdKind::AnonymousId, "a1").await[0].clone();
    send(&store, src, vec![json!({"type": "track", "event": "Y", "userId": "u1", "anonymousId": "a1", "messageId": "4", "timestamp": "2026-01-01T00:00:00Z"})]).await;
    let merged = by(&store, IdKind::UserId, "u1").await[0].clone();
    assert_eq!(merged.members.len(), 2);
    assert_eq!(merged.traits.iter().find(|t| t.key == "city").unwrap().value, json!("Brest"));

    let undone = store.unmerge(merged.id, None, "test".into()).await.unwrap();
    assert_eq!(undone.from, before_a.id);
    assert!(undone.undone_at.is_some());
    let after_a = store.profile(before_a.id).await.unwrap().unwrap();
    assert_eq!(after_a, before_a, "the absorbed profile is exactly as it was");
    let after_u = store.profile(before_u.id).await.unwrap().unwrap();
    assert_eq!(after_u.identities, before_u.identities);
    assert_eq!(after_u.traits, before_u.traits);
    assert_eq!(after_u.event_count, before_u.event_count + 1, "only the event that came with the merge stays");

    // the same evidence again does not re-merge them
    let profiles = store.totals().await.unwrap().profiles;
    send(&store, src, vec![json!({"type": "track", "event": "Y", "userId": "u1", "anonymousId": "a1", "messageId": "5"})]).await;
    assert_eq!(store.totals().await.unwrap().profiles, profiles, "not merged again");
    assert_eq!(store.conflicts(before_u.id).await.unwrap().len(), 1);
    assert_eq!(store.conflicts(before_u.id).await.unwrap()[0].reason, "blocked_by_unmerge");
    // nothing left to undo, and an unknown profile is not found
    assert!(matches!(store.unmerge(before_u.id, None, "t".into()).await, Err(StoreError::Conflict(_))));
    assert!(matches!(store.unmerge(ProfileId(12345), None, "t".into()).await, Err(StoreError::NotFound(_))));
    assert_eq!(store.merges(before_u.id).await.unwrap()[0].undone_by.as_deref(), Some("test"));
}

#[tokio::test]
async fn banned_values_never_join_people() {
    let (_d, store, src) = setup().await;
    send(&store, src, vec![
        json!({"type": "track", "event": "X", "userId": "null", "anonymousId": "a1", "messageId": "1"}),
        json!({"type": "track", "event": "X", "userId": "null", "anonymousId": "a2", "messageId": "2"}),
    ]).await;
    assert_eq!(store.totals().await.unwrap().profiles, 2);
    assert!(by(&store, IdKind::UserId, "null").await.is_empty());
}

#[tokio::test]
async fn data_survives_reopening_and_a_newer_schema_is_refused() {
    if sqlite_only() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(&dir);
        let src = store.ensure_sources(vec!["web".into()]).await.unwrap()[0];
        send(&store, src, vec![json!({"type": "identify", "userId": "u1", "messageId": "1"})]).await;
        store.close().await.unwrap();
    }
    let store = open(&dir);
    assert_eq!(store.totals().await.unwrap().events, 1);
    store.close().await.unwrap();
    drop(store);
    let conn = rusqlite::Connection::open(dir.path().join("confidant.db")).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = Store::open_sqlite(&dir.path().join("confidant.db"), SqliteOptions { max_commit_messages: 10, rules: IdentityRules::default(), master_key: [9; 32] }).err().unwrap();
    assert!(matches!(err, StoreError::SchemaTooNew { found: 99, .. }), "{err}");
}

#[tokio::test]
async fn concurrent_writers_never_see_a_locked_database() {
    let (_d, store, src) = setup().await;
    let mut tasks = Vec::new();
    for t in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for b in 0..20 {
                let msgs = (0..50).map(|i| json!({"type": "track", "event": "X", "anonymousId": format!("a{t}-{i}"), "messageId": format!("{t}-{b}-{i}")})).collect();
                send(&store, src, msgs).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.totals().await.unwrap().events, 16 * 20 * 50);
}

/// Which identifiers end up together, whatever the (random) profile ids.
async fn partition(store: &Store, ids: &[(IdKind, String)]) -> Vec<Vec<String>> {
    let mut groups: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (k, v) in ids {
        if let Some(p) = store.find_profiles(*k, v.clone()).await.unwrap().first() {
            let mut members: Vec<String> = p.identities.iter().map(|i| format!("{}:{}", i.kind.as_str(), i.value)).collect();
            members.sort();
            groups.insert(members.join(","), members);
        }
    }
    groups.into_values().collect()
}

#[tokio::test]
async fn the_writers_identity_cache_never_changes_an_outcome() {
    if sqlite_only() {
        return;
    }
    // The same merge-heavy traffic, with unmerges in between, through a store that stays
    // open (warm cache) and one reopened before every batch (cold cache).
    let mut rng_state = 7u64;
    let mut rnd = |n: u64| {
        rng_state = rng_state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (rng_state >> 33) % n
    };
    let mut batches = Vec::new();
    for b in 0..30 {
        let msgs: Vec<Value> = (0..40)
            .map(|i| {
                let mut m = json!({"type": "identify", "messageId": format!("{b}-{i}"), "anonymousId": format!("a{}", rnd(60))});
                match rnd(4) {
                    0 => m["userId"] = json!(format!("u{}", rnd(25))),
                    1 => m["traits"] = json!({"email": format!("e{}@example.fr", rnd(30))}),
                    2 => {
                        m["type"] = json!("alias");
                        m["userId"] = json!(format!("u{}", rnd(25)));
                        m["previousId"] = json!(format!("a{}", rnd(60)));
                    }
                    _ => {}
                }
                m
            })
            .collect();
        batches.push(msgs);
    }
    let warm_dir = tempfile::tempdir().unwrap();
    let cold_dir = tempfile::tempdir().unwrap();
    let warm = open(&warm_dir);
    let warm_src = warm.ensure_sources(vec!["web".into()]).await.unwrap()[0];
    for (b, msgs) in batches.iter().enumerate() {
        send(&warm, warm_src, msgs.clone()).await;
        let cold = open(&cold_dir);
        let cold_src = cold.ensure_sources(vec!["web".into()]).await.unwrap()[0];
        send(&cold, cold_src, msgs.clone()).await;
        if b % 7 == 6 {
            // undo the newest merge of the same person on both sides
            let who = (IdKind::UserId, format!("u{}", b % 25));
            for store in [&warm, &cold] {
                if let Some(p) = store.find_profiles(who.0, who.1.clone()).await.unwrap().first() {
                    let _ = store.unmerge(p.id, None, "test".into()).await;
                }
            }
        }
        cold.close().await.unwrap();
    }
    let cold = open(&cold_dir);
    let mut ids: Vec<(IdKind, String)> = (0..60).map(|i| (IdKind::AnonymousId, format!("a{i}"))).collect();
    ids.extend((0..25).map(|i| (IdKind::UserId, format!("u{i}"))));
    ids.extend((0..30).map(|i| (IdKind::Email, format!("e{i}@example.fr"))));
    let (w, c) = (partition(&warm, &ids).await, partition(&cold, &ids).await);
    assert!(w.iter().any(|g| g.len() > 3), "the traffic merged people");
    assert_eq!(w, c);
    assert_eq!(warm.totals().await.unwrap(), cold.totals().await.unwrap());
}

#[tokio::test]
async fn after_a_failed_fsync_nothing_more_is_acknowledged() {
    if sqlite_only() {
        return;
    }
    let (_d, store, src) = setup().await;
    send(&store, src, vec![json!({"type": "identify", "userId": "u1", "messageId": "before"})]).await;
    store.fail_next_sync();
    let batch = |id: &str| IngestBatch { source_id: src, messages: vec![msg(json!({"type": "track", "event": "X", "userId": "u1", "messageId": id}))], rejected: vec![], drops: vec![] };
    assert!(matches!(store.ingest(batch("lost")).await, Err(StoreError::SyncFailed)), "the batch whose journal fsync failed is not acknowledged");
    assert!(matches!(store.ingest(batch("later")).await, Err(StoreError::SyncFailed)), "later writes are refused");
    assert!(matches!(store.ping().await, Err(StoreError::SyncFailed)), "health reports it");
    assert!(matches!(store.unmerge(ProfileId(1), None, "t".into()).await, Err(StoreError::SyncFailed)));
    // Reads still work. The batch whose journal fsync failed never reached the database
    // (its client got an error and will retry after a restart); nothing after it either.
    assert_eq!(store.totals().await.unwrap().events, 1);
    let id = by(&store, IdKind::UserId, "u1").await[0].id;
    let page = store.profile_events(id, 10, None).await.unwrap();
    assert!(page.events.iter().all(|e| !e.body.get().contains("\"later\"")));
}

fn intake_files(dir: &tempfile::TempDir) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.path().join("confidant.db-intake")).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn acknowledged_batches_survive_a_crash_before_they_are_applied() {
    if sqlite_only() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let src = store.ensure_sources(vec!["web".into()]).await.unwrap()[0];
    send(&store, src, vec![json!({"type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": "m0"})]).await;
    store.settled().await;
    // The writer stops; the journal still acknowledges.
    let hold = store.hold_writer().await;
    let report = send(&store, src, vec![
        json!({"type": "track", "event": "Order Completed", "anonymousId": "a1", "messageId": "m1"}),
        json!({"type": "identify", "userId": "u1", "traits": {"email": "ada@example.com"}, "messageId": "m2"}),
        json!({"type": "track", "event": "X", "userId": "u1", "messageId": "m0"}),
    ])
    .await;
    assert_eq!((report.stored, report.duplicates, report.duplicate_flags.clone()), (2, 1, vec![false, false, true]), "duplicates are known before the batch is applied");
    // A second batch naming the same unapplied message id is a duplicate too.
    let again = send(&store, src, vec![json!({"type": "track", "event": "Order Completed", "anonymousId": "a1", "messageId": "m1"})]).await;
    assert_eq!(again.duplicates, 1);
    // Crash: nothing more runs in this store (its writer stays held, its threads stay as they
    // are), and another opens the same files, as a restart would.
    std::mem::forget(hold);
    std::mem::forget(store);
    let restarted = open(&dir);
    let p = &by(&restarted, IdKind::UserId, "u1").await[0];
    assert_eq!(p.event_count, 3, "every acknowledged event, once");
    assert!(p.identities.iter().any(|i| i.value == "ada@example.com"));
    assert_eq!(restarted.totals().await.unwrap().events, 3);
    // Once applied and synced, the old segments go.
    for _ in 0..100 {
        if intake_files(&dir).len() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(intake_files(&dir).len(), 1, "{:?}", intake_files(&dir));
    restarted.close().await.unwrap();
    // And a clean restart applies nothing twice.
    let third = open(&dir);
    assert_eq!(third.totals().await.unwrap().events, 3);
}

#[tokio::test]
async fn an_erasure_deletes_the_journal_segments_that_held_the_subject() {
    if sqlite_only() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let src = store.ensure_sources(vec!["web".into()]).await.unwrap()[0];
    send(&store, src, vec![json!({"type": "identify", "userId": "u1", "traits": {"email": "ada@example.com"}, "messageId": "m0"})]).await;
    // Segments written before the erasure (a restart begins a new one).
    store.close().await.unwrap();
    let store = open(&dir);
    send(&store, src, vec![json!({"type": "track", "event": "X", "userId": "u1", "messageId": "m1"})]).await;
    let before = intake_files(&dir);
    assert_eq!(before.len(), 2);
    let id = by(&store, IdKind::UserId, "u1").await[0].id;
    let audit = confidant_store::privacy::AuditEntry { actor: "test".into(), action: "dsr.erasure".into(), subject: Some(id), detail: json!({}) };
    store
        .erase(confidant_store::privacy::ErasureRequest { profile: id, tombstone_key: [1; 32], suppress: false, tombstones: true, dsr: None, audit })
        .await
        .unwrap();
    let after = intake_files(&dir);
    assert!(before.iter().all(|f| !after.contains(f)), "every segment that held the subject's batches is gone: {before:?} {after:?}");
}
