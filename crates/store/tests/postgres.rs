//! The PostgreSQL backend's foundation against a real server: each test gets a database of
//! its own on the server of `CONFIDANT_TEST_DATABASE_URL` (`.ci/run` sets it and starts
//! PostgreSQL). Without that variable these tests say so and pass: they need a server.

use confidant_store::postgres::{Postgres, PostgresOptions};
use confidant_store::StoreError;
use tokio_postgres::NoTls;

/// A fresh database on the test server (the product's `TestDatabase`, dropped with the guard),
/// with this file's options and a way to look inside.
struct TestDb {
    db: confidant_store::postgres::TestDatabase,
}

impl TestDb {
    async fn new() -> Option<TestDb> {
        match confidant_store::postgres::TestDatabase::create().await {
            Some(db) => Some(TestDb { db }),
            None => {
                eprintln!("CONFIDANT_TEST_DATABASE_URL is not set: PostgreSQL tests skipped (.ci/run sets it)");
                None
            }
        }
    }

    fn options(&self) -> PostgresOptions {
        PostgresOptions { url: self.db.url.clone(), pool_size: 4, connect_attempts: 3, rules: Default::default(), master_key: [9; 32] }
    }

    async fn sql(&self, sql: &str) -> Vec<tokio_postgres::Row> {
        let (client, conn) = tokio_postgres::connect(&self.db.url, NoTls).await.unwrap();
        tokio::spawn(conn);
        client.query(sql, &[]).await.unwrap()
    }
}


#[tokio::test]
async fn migrations_run_once_even_when_several_nodes_start_together() {
    let Some(db) = TestDb::new().await else { return };
    // Three nodes starting at the same moment: one migrates, the others find it done.
    let opts = db.options();
    let (a, b, c) = tokio::join!(Postgres::open(&opts), Postgres::open(&opts), Postgres::open(&opts));
    let (a, _b, _c) = (a.unwrap(), b.unwrap(), c.unwrap());
    assert_eq!(a.schema_version().await.unwrap(), 5);
    let versions = db.sql("SELECT version FROM confidant_schema").await;
    assert_eq!(versions.len(), 5, "each applied once");
    let tables = db.sql("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1").await;
    let names: Vec<String> = tables.iter().map(|r| r.get(0)).collect();
    for t in ["events", "event_ids", "identities", "profiles", "traits", "merges", "job_leases", "consent_receipts", "audit_log", "deliveries", "console_users"] {
        assert!(names.iter().any(|n| n == t), "{t} missing from {names:?}");
    }
    // Opening again changes nothing.
    let again = Postgres::open(&opts).await.unwrap();
    assert_eq!(again.schema_version().await.unwrap(), 5);
}

#[tokio::test]
async fn a_database_at_a_newer_schema_is_refused_with_the_reason() {
    let Some(db) = TestDb::new().await else { return };
    Postgres::open(&db.options()).await.unwrap();
    db.sql("INSERT INTO confidant_schema(version) VALUES (99)").await;
    match Postgres::open(&db.options()).await {
        Err(e @ StoreError::SchemaTooNew { found: 99, supported: 5 }) => {
            assert!(e.to_string().contains("newer than this binary supports"), "{e}");
        }
        Err(other) => panic!("wrong refusal: {other}"),
        Ok(_) => panic!("a newer schema must be refused"),
    }
}

#[tokio::test]
async fn an_unreachable_server_is_retried_then_reported_without_the_password() {
    // Nothing listens on port 9 of loopback.
    let opts = PostgresOptions { url: "postgres://shop:s3cret-pw@127.0.0.1:9/confidant".into(), pool_size: 1, connect_attempts: 3, rules: Default::default(), master_key: [9; 32] };
    let started = std::time::Instant::now();
    let e = Postgres::open(&opts).await.err().expect("refused");
    let text = e.to_string();
    assert!(text.contains("cannot reach PostgreSQL at 127.0.0.1:9/confidant after 3 attempts"), "{text}");
    assert!(!text.contains("s3cret"), "never the password: {text}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(300), "it waited between attempts (0.1 s, then 0.2 s)");
    let bad = PostgresOptions { url: "mysql://nope".into(), pool_size: 1, connect_attempts: 1, rules: Default::default(), master_key: [9; 32] };
    assert!(Postgres::open(&bad).await.err().unwrap().to_string().contains("not a PostgreSQL URL"));
}

#[tokio::test]
async fn events_go_to_month_partitions_that_retention_drops_whole() {
    let Some(db) = TestDb::new().await else { return };
    let pg = Postgres::open(&db.options()).await.unwrap();
    // 2026-09-15, 2026-10-15 and 2026-11-15 (UTC), in ms.
    let (sep, oct, nov) = (1_789_430_400_000_i64, 1_792_022_400_000_i64, 1_794_700_800_000_i64);
    let mut names = Vec::new();
    for t in [sep, oct, nov, oct] {
        names.push(pg.ensure_partition(t).await.unwrap());
    }
    assert_eq!(names, ["events_2026_09", "events_2026_10", "events_2026_11", "events_2026_10"], "one per month, created once");
    db.sql("INSERT INTO sources(name, created_at) VALUES ('web', 0)").await;
    db.sql("INSERT INTO profiles(id, created_at) VALUES (1, 0)").await;
    for (i, ts) in [sep, oct, nov].iter().enumerate() {
        db.sql(&format!("INSERT INTO events(source_id, message_id, profile_id, type, ts, received_at, body) VALUES (1, 'm{i}', 1, 'track', {ts}, {ts}, '{{}}')")).await;
        db.sql(&format!("INSERT INTO event_ids(source_id, message_id, ts) VALUES (1, 'm{i}', {ts})")).await;
    }
    // Retention to 2026-11-01: September and October go whole, November stays.
    let cutoff = 1_793_491_200_000_i64;
    let dropped = pg.drop_partitions_before(cutoff).await.unwrap();
    assert_eq!(dropped, ["events_2026_09", "events_2026_10"]);
    assert_eq!(db.sql("SELECT count(*) FROM events").await[0].get::<_, i64>(0), 1);
    assert_eq!(db.sql("SELECT count(*) FROM event_ids").await[0].get::<_, i64>(0), 1, "their deduplication keys too");
}

#[tokio::test]
async fn a_job_lease_is_held_by_one_node_at_a_time() {
    let Some(db) = TestDb::new().await else { return };
    let opts = db.options();
    let (a, b) = (Postgres::open(&opts).await.unwrap(), Postgres::open(&opts).await.unwrap());
    let now = 1_000_000;
    assert!(a.take_lease("retention", "node-a", now, 60_000).await.unwrap());
    assert!(!b.take_lease("retention", "node-b", now + 1, 60_000).await.unwrap(), "node A holds it");
    assert!(a.take_lease("retention", "node-a", now + 2, 60_000).await.unwrap(), "the holder renews");
    assert!(b.take_lease("audiences", "node-b", now, 60_000).await.unwrap(), "another job is free");
    assert!(b.take_lease("retention", "node-b", now + 60_003, 60_000).await.unwrap(), "an expired lease is taken over");
    b.release_lease("retention", "node-b").await.unwrap();
    assert!(a.take_lease("retention", "node-a", now + 60_004, 60_000).await.unwrap(), "a released lease is free");
    // Many nodes racing for a free job at the same moment: exactly one wins.
    let mut nodes = Vec::new();
    for _ in 0..6 {
        nodes.push(Postgres::open(&opts).await.unwrap());
    }
    let holders: Vec<String> = (0..nodes.len()).map(|i| format!("node-{i}")).collect();
    let mut set = tokio::task::JoinSet::new();
    for (n, h) in nodes.into_iter().zip(holders) {
        set.spawn(async move { n.take_lease("race", &h, 5_000_000, 60_000).await.unwrap() });
    }
    let mut wins = 0;
    while let Some(won) = set.join_next().await {
        wins += usize::from(won.unwrap());
    }
    assert_eq!(wins, 1, "one winner among six");
}

fn sealed(v: serde_json::Value) -> confidant_core::message::SealedMessage {
    use confidant_core::identity::IdentityRules;
    use confidant_core::message::{parse_message, Limits, ParseContext};
    let limits = Limits { max_message_bytes: 32 * 1024, max_properties: 300, max_depth: 64 };
    let rules = IdentityRules::default();
    let ctx = ParseContext { received_at: 1_790_000_000_000, batch_sent_at: None, endpoint_type: None, limits: &limits, rules: &rules, default_region: "FR" };
    parse_message(&v.to_string(), &ctx).unwrap().seal()
}

/// The traffic of person `p` as three nodes might each receive part of it: an anonymous
/// visit, an identify that names the user and the visitor, an alias from an old device id,
/// a second device known by the email, and events under each id. Whatever the order, it is
/// one person (no two user ids meet, so merge protection never has to refuse).
fn person_traffic(p: usize) -> Vec<serde_json::Value> {
    use serde_json::json;
    let (user, anon, old) = (format!("user-{p}"), format!("anon-{p}"), format!("legacy-{p}"));
    let mut out = vec![
        json!({"type": "page", "anonymousId": anon, "name": "Accueil", "messageId": format!("{p}-page"), "timestamp": "2026-10-01T10:00:00Z"}),
        json!({"type": "track", "anonymousId": anon, "event": "Product Viewed", "messageId": format!("{p}-view"), "timestamp": "2026-10-01T10:01:00Z"}),
        json!({"type": "identify", "userId": user, "anonymousId": anon, "messageId": format!("{p}-identify"), "timestamp": "2026-10-01T10:02:00Z",
               "traits": {"email": format!("p{p}@example.fr"), "firstName": format!("P{p}")}}),
        json!({"type": "track", "userId": user, "event": "Order Completed", "messageId": format!("{p}-order"), "timestamp": "2026-11-02T09:00:00Z"}),
        json!({"type": "alias", "userId": user, "previousId": old, "messageId": format!("{p}-alias"), "timestamp": "2026-10-01T10:03:00Z"}),
        json!({"type": "track", "anonymousId": old, "event": "Cart Viewed", "messageId": format!("{p}-legacy"), "timestamp": "2026-09-20T08:00:00Z"}),
        json!({"type": "identify", "traits": {"email": format!("p{p}@example.fr"), "lastName": "Durand"}, "anonymousId": format!("device2-{p}"),
               "messageId": format!("{p}-device2"), "timestamp": "2026-10-05T12:00:00Z"}),
    ];
    for i in 0..3 {
        out.push(json!({"type": "track", "anonymousId": format!("device2-{p}"), "event": "Product Viewed", "messageId": format!("{p}-d2-{i}"), "timestamp": "2026-10-06T12:00:00Z"}));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_stitching_the_same_people_at_once_make_one_profile_each_with_every_event() {
    use confidant_core::identity::IdentityRules;
    use confidant_core::ids::IdKind;
    use confidant_store::IngestBatch;
    let Some(db) = TestDb::new().await else { return };
    let opts = db.options();
    let nodes: Vec<Postgres> = vec![Postgres::open(&opts).await.unwrap(), Postgres::open(&opts).await.unwrap(), Postgres::open(&opts).await.unwrap()];
    let src = nodes[0].ensure_sources(&["web".into()], 0).await.unwrap()[0];
    assert_eq!(nodes[1].ensure_sources(&["web".into()], 0).await.unwrap()[0], src, "one source, whoever creates it");
    let people = 40;
    // Deal every message of every person to the three nodes in turn, in small batches, and
    // send each message twice (a retry after a lost answer) to another node.
    let mut per_node: Vec<Vec<serde_json::Value>> = vec![Vec::new(), Vec::new(), Vec::new()];
    let mut n = 0;
    for round in 0..10 {
        for p in 0..people {
            if let Some(m) = person_traffic(p).get(round) {
                per_node[n % 3].push(m.clone());
                per_node[(n + 1) % 3].push(m.clone());
                n += 1;
            }
        }
    }
    let nodes = std::sync::Arc::new(nodes);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, msgs) in per_node.into_iter().enumerate() {
        let nodes = nodes.clone();
        tasks.spawn(async move {
            let rules = IdentityRules::default();
            let mut stored = 0;
            for chunk in msgs.chunks(7) {
                let batch = IngestBatch { source_id: src, messages: chunk.iter().cloned().map(sealed).collect(), rejected: vec![], drops: vec![] };
                stored += nodes[i].ingest(&batch, &rules, 1_795_000_000_000).await.unwrap().stored;
            }
            stored
        });
    }
    let mut stored = 0;
    while let Some(s) = tasks.join_next().await {
        stored += s.unwrap();
    }
    let per_person = person_traffic(0).len();
    assert_eq!(stored, people * per_person, "every message stored once, the resent copies deduplicated");
    assert_eq!(nodes[0].live_profiles().await.unwrap(), people as i64, "one live profile per person");
    for p in 0..people {
        // Every identifier of the person leads to the same profile, seen alike from every node.
        let ids = [(IdKind::UserId, format!("user-{p}")), (IdKind::AnonymousId, format!("anon-{p}")), (IdKind::AnonymousId, format!("legacy-{p}")),
                   (IdKind::Email, format!("p{p}@example.fr")), (IdKind::AnonymousId, format!("device2-{p}"))];
        let mut owners = std::collections::HashSet::new();
        for node in nodes.iter() {
            for (k, v) in &ids {
                owners.insert(node.owner(*k, v).await.unwrap().unwrap_or_else(|| panic!("{v} has no profile")));
            }
        }
        assert_eq!(owners.len(), 1, "person {p}: {owners:?}");
        let root = *owners.iter().next().unwrap();
        let (events, traits) = nodes[p % 3].profile_summary(root).await.unwrap();
        assert_eq!(events, per_person as i64, "person {p}: every event on the one profile");
        assert_eq!(traits.get("firstName").map(String::as_str), Some(format!("\"P{p}\"").as_str()), "person {p}: {traits:?}");
        assert_eq!(traits.get("lastName").map(String::as_str), Some("\"Durand\""), "person {p}: no trait lost");
    }
    let months = db.sql("SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhparent WHERE c.relname = 'events'").await[0].get::<_, i64>(0);
    assert_eq!(months, 3, "September, October and November 2026 partitions");
}

/// What two backends must agree on about a person (profile ids are random, so they are left
/// out; so are the times each backend stamps itself).
async fn view(store: &confidant_store::Store, kind: confidant_core::ids::IdKind, value: &str) -> serde_json::Value {
    let p = store.find_profiles(kind, value.to_owned()).await.unwrap().pop().unwrap();
    let mut bodies = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.profile_events(p.id, 3, cursor).await.unwrap();
        bodies.extend(page.events.iter().map(|e| e.body.get().to_owned()));
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let merges: Vec<String> = store.merges(p.id).await.unwrap().iter().map(|m| format!("{} {}", m.rule, m.evidence)).collect();
    let conflicts: Vec<String> = store.conflicts(p.id).await.unwrap().iter().map(|c| format!("{} {} {}", c.kind.as_str(), c.reason, c.message_id)).collect();
    view_json(&p, bodies, merges, conflicts)
}

fn view_json(p: &confidant_store::ProfileView, bodies: Vec<String>, mut merges: Vec<String>, mut conflicts: Vec<String>) -> serde_json::Value {
    merges.sort();
    conflicts.sort();
    let mut ids: Vec<String> = p.identities.iter().map(|i| format!("{} {} {}", i.kind.as_str(), i.value, i.source)).collect();
    ids.sort();
    let traits: Vec<String> = p.traits.iter().map(|t| format!("{} {} {} {}", t.key, t.value, t.source, t.timestamp)).collect();
    let mut lineage: Vec<String> = p.trait_values.iter().map(|t| format!("{} {} {} {}", t.key, t.value, t.source, t.timestamp)).collect();
    lineage.sort();
    serde_json::json!({"members": p.members.len(), "identities": ids, "traits": traits, "lineage": lineage, "events": p.event_count,
                       "first_seen": p.first_seen, "last_seen": p.last_seen, "bodies": bodies, "merges": merges, "conflicts": conflicts})
}

#[tokio::test]
async fn postgresql_and_sqlite_agree_on_every_profile_after_the_same_traffic() {
    use confidant_core::identity::IdentityRules;
    use confidant_core::ids::IdKind;
    use confidant_store::{IngestBatch, SqliteOptions, Store};
    use serde_json::json;
    let Some(db) = TestDb::new().await else { return };
    let pg = Store::open_postgres(db.options()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::open_sqlite(&dir.path().join("c.db"), SqliteOptions { max_commit_messages: 10_000, rules: IdentityRules::default(), master_key: [9; 32] }).unwrap();
    let pg_src = pg.ensure_sources(vec!["web".into()]).await.unwrap()[0];
    let sq_src = sqlite.ensure_sources(vec!["web".into()]).await.unwrap()[0];
    // Each person's messages in an order that makes separate profiles first, then merges.
    let order = [5, 6, 7, 1, 0, 4, 2, 3, 8, 9];
    let mut traffic: Vec<serde_json::Value> = (0..8).flat_map(|p| { let t = person_traffic(p); order.map(|i| t[i].clone()) }).collect();
    // Merge protection: person 0's profile meets another user id through a shared email.
    traffic.push(json!({"type": "identify", "userId": "intruder", "traits": {"email": "p0@example.fr"}, "messageId": "clash", "timestamp": "2026-10-07T10:00:00Z"}));
    // A resend, and a later value of a trait from another source's point of view.
    traffic.push(traffic[0].clone());
    for chunk in traffic.chunks(5) {
        let msgs: Vec<_> = chunk.iter().cloned().map(sealed).collect();
        let a = pg.ingest(IngestBatch { source_id: pg_src, messages: msgs.clone(), rejected: vec![], drops: vec![] }).await.unwrap();
        let b = sqlite.ingest(IngestBatch { source_id: sq_src, messages: msgs, rejected: vec![], drops: vec![] }).await.unwrap();
        // (SQLite acknowledges from its intake journal, before the merges are made: those
        // are compared below, profile by profile.)
        assert_eq!((a.stored, a.duplicates, &a.duplicate_flags), (b.stored, b.duplicates, &b.duplicate_flags), "batch reports");
    }
    for p in 0..8 {
        for (kind, value) in [(IdKind::UserId, format!("user-{p}")), (IdKind::AnonymousId, format!("device2-{p}"))] {
            let (a, b) = (view(&pg, kind, &value).await, view(&sqlite, kind, &value).await);
            assert_eq!(a, b, "person {p} by {value}");
            assert!(a["merges"].as_array().unwrap().len() >= 2 && a["bodies"].as_array().unwrap().len() >= 9 && a["traits"].as_array().unwrap().len() >= 3, "a full profile: {a}");
        }
    }
    let intruder = (view(&pg, IdKind::UserId, "intruder").await, view(&sqlite, IdKind::UserId, "intruder").await);
    assert_eq!(intruder.0, intruder.1);
    assert!(!intruder.0["conflicts"].as_array().unwrap().is_empty(), "the refused merge is recorded: {}", intruder.0);
    let (ta, tb) = (pg.totals().await.unwrap(), sqlite.totals().await.unwrap());
    assert_eq!((ta.events, ta.profiles, ta.merges, ta.conflicts), (tb.events, tb.profiles, tb.merges, tb.conflicts));
    sqlite.close().await.unwrap();
    pg.close().await.unwrap();
}

#[tokio::test]
async fn serve_jobs_take_turns_through_the_store_lease() {
    use confidant_store::Store;
    let Some(db) = TestDb::new().await else { return };
    let (a, b) = (Store::open_postgres(db.options()).await.unwrap(), Store::open_postgres(db.options()).await.unwrap());
    assert!(a.lease("retention", 60_000).await.unwrap(), "the first node takes the job");
    assert!(!b.lease("retention", 60_000).await.unwrap(), "the second skips it");
    assert!(a.lease("retention", 60_000).await.unwrap(), "the holder keeps it");
    assert!(b.lease("matching", 60_000).await.unwrap(), "another job is the other node's");
    // On SQLite (one node) a job always runs.
    let dir = tempfile::tempdir().unwrap();
    let lite = Store::open_sqlite(&dir.path().join("c.db"), confidant_store::SqliteOptions { max_commit_messages: 10, rules: Default::default(), master_key: [9; 32] }).unwrap();
    assert!(lite.lease("retention", 60_000).await.unwrap());
    lite.close().await.unwrap();
}

#[tokio::test]
async fn a_node_with_another_master_key_is_refused_at_start() {
    let Some(db) = TestDb::new().await else { return };
    Postgres::open(&db.options()).await.unwrap();
    let mut other = db.options();
    other.master_key = [8; 32];
    let e = Postgres::open(&other).await.err().expect("refused");
    assert!(e.to_string().contains("another master key"), "{e}");
    assert!(!e.to_string().contains("0808"), "the key is never shown");
    Postgres::open(&db.options()).await.expect("the right key still opens it");
}
