//! `confidant migrate`: a shop that ran on SQLite moves to PostgreSQL. Every table is copied
//! and verified (rows and checksums), the server started on PostgreSQL serves the same
//! profiles, the hash chains still verify, and a second migration into the filled database is
//! refused with nothing changed. Needs `CONFIDANT_TEST_DATABASE_URL` (set by `.ci/run`).

mod common;

use std::process::{Command, Output};

use serde_json::{json, Value};

fn confidant(config: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_confidant")).args(args).arg("--config").arg(config).env("CONFIDANT_LOG", "warn").output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

async fn profile(client: &reqwest::Client, base: &str, q: &str) -> Value {
    let r: Value = client.get(format!("{base}/api/profiles?{q}")).bearer_auth(common::ADMIN_KEY).send().await.unwrap().json().await.unwrap();
    r["profiles"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_shop_moves_to_postgresql_verified_table_by_table() {
    let Some(db) = confidant_store::postgres::TestDatabase::create().await else {
        eprintln!("CONFIDANT_TEST_DATABASE_URL is not set: PostgreSQL tests skipped (.ci/run sets it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(dir.path(), "");
    let client = reqwest::Client::new();
    let before;
    {
        let server = common::serve(&config);
        let base = server.base.clone();
        for p in 0..12 {
            let user = format!("mig-{p}");
            common::send(&client, &base, "/v1/page", json!({"anonymousId": format!("anon-{p}"), "name": "Accueil", "timestamp": "2026-09-03T10:00:00Z"})).await;
            common::send(&client, &base, "/v1/identify", json!({"userId": user, "anonymousId": format!("anon-{p}"),
                "traits": {"email": format!("mig{p}@example.fr"), "phone": "06 12 34 56 78", "firstName": format!("Prénom {p}")}, "timestamp": "2026-10-03T10:00:00Z"})).await;
            common::send(&client, &base, "/v1/track", json!({"userId": user, "event": "Order Completed", "properties": {"order_id": format!("o{p}"), "revenue": 10 + p}, "timestamp": "2026-11-03T10:00:00Z"})).await;
            common::send(&client, &base, "/v1/consent", json!({"userId": user, "purposes": {"marketing.communications.email": p % 2 == 0}})).await;
        }
        // An erasure leaves a tombstone, a request and audit entries to carry over too.
        let r = client.post(format!("{base}/api/dsr")).bearer_auth(common::ADMIN_KEY).json(&json!({"kind": "erasure", "identifier": "user_id:mig-11"})).send().await.unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        before = profile(&client, &base, "email=mig3@example.fr").await;
        assert_eq!(before["traits"]["firstName"], "Prénom 3");
    }

    let from = format!("sqlite:{}", dir.path().join("data/confidant.db").display());
    let out = confidant(&config, &["migrate", "--from", &from, "--to", &db.url]);
    assert!(out.status.success(), "{}", text(&out));
    let report = text(&out);
    for table in ["sources", "profiles", "identities", "events", "traits", "consent_receipts", "audit_log", "subject_keys", "tombstones", "dsr_requests"] {
        let line = report.lines().find(|l| l.starts_with(&format!("{table} "))).unwrap_or_else(|| panic!("{table} in {report}"));
        assert!(line.ends_with("yes"), "{line}");
    }
    assert!(!report.contains(" NO"), "{report}");
    assert!(report.contains("every one verified by count and checksum"), "{report}");

    // The same data directory (the master key) with database_url: the same shop.
    let pg_config = dir.path().join("pg.toml");
    std::fs::write(&pg_config, format!("database_url = \"{}\"\n{}", db.url, std::fs::read_to_string(&config).unwrap().lines().filter(|l| !l.starts_with("database_url")).collect::<Vec<_>>().join("\n"))).unwrap();
    {
        let server = common::serve(&pg_config);
        let after = profile(&client, &server.base, "email=mig3@example.fr").await;
        assert_eq!(after["id"], before["id"], "the same profile id");
        assert_eq!(after["traits"], before["traits"], "the same traits, sealed values opened with the same keys");
        assert_eq!(after["identities"], before["identities"]);
        let gone: Value = client.get(format!("{}/api/profiles?user_id=mig-11", server.base)).bearer_auth(common::ADMIN_KEY).send().await.unwrap().json().await.unwrap();
        assert_eq!(gone["profiles"], json!([]), "the erased subject stays erased");
        // New traffic goes on from where SQLite stopped (identity columns carried on).
        common::send(&client, &server.base, "/v1/track", json!({"userId": "mig-3", "event": "Product Viewed", "timestamp": "2026-11-20T10:00:00Z"})).await;
        assert_eq!(profile(&client, &server.base, "user_id=mig-3").await["id"], before["id"]);
    }
    let verify = confidant(&pg_config, &["audit", "verify"]);
    assert!(verify.status.success(), "the hash chains verify on PostgreSQL: {}", text(&verify));

    // Into a database that holds data: refused, nothing changed.
    let again = confidant(&config, &["migrate", "--from", &from, "--to", &db.url]);
    assert!(!again.status.success());
    assert!(text(&again).contains("already holds data"), "{}", text(&again));
    let bad = confidant(&config, &["migrate", "--from", "/no/such.db", "--to", &db.url]);
    assert!(text(&bad).contains("--from must be sqlite:PATH"), "{}", text(&bad));
}
