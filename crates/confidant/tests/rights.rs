//! The rights desk on the command line, against the real binary, with a server running on the
//! same data directory: erasure proven by `verify-erasure` (a raw scan of every file), the
//! export, the audit chain check, the register, retention.

mod common;

use std::process::{Command, Output};

use serde_json::{json, Value};

fn confidant(config: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_confidant"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("CONFIDANT_CONFIG")
        .env("CONFIDANT_LOG", "warn")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

async fn person(client: &reqwest::Client, base: &str, who: &str, phone: &str) {
    let user = format!("{who}-uid-90210");
    common::send(client, base, "/v1/page", json!({"anonymousId": format!("anon-{who}-4242"), "name": "Accueil", "properties": {"path": "/"}})).await;
    common::send(client, base, "/v1/track", json!({"userId": user, "event": "Product Viewed", "properties": {"product_id": "SKU-1"}})).await;
    common::send(
        client,
        base,
        "/v1/identify",
        json!({"userId": user, "anonymousId": format!("anon-{who}-4242"),
               "traits": {"email": format!("{who}@example.fr"), "phone": phone, "firstName": format!("Prénom-{who}"), "lastName": format!("Nom-{who}")}}),
    )
    .await;
    common::send(client, base, "/v1/track", json!({"userId": user, "event": "Order Completed", "properties": {"order_id": format!("{who}-o1"), "revenue": 10}})).await;
    common::send(client, base, "/v1/consent", json!({"userId": user, "purposes": {"marketing.communications.email": true}})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_from_the_command_line_while_the_server_runs_leaves_nothing_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(dir.path(), "");
    let server = common::serve(&config);
    let client = reqwest::Client::new();
    person(&client, &server.base, "zoe", "06 11 22 33 44").await;
    person(&client, &server.base, "yann", "07 55 66 77 88").await;

    let zoe = ["--identifier", "email:zoe@example.fr", "--identifier", "phone:+33611223344", "--identifier", "user_id:zoe-uid-90210",
               "--identifier", "anonymous_id:anon-zoe-4242", "--text", "Prénom-zoe", "--text", "Nom-zoe", "--text", "zoe-o1"];
    let mut verify = vec!["verify-erasure"];
    verify.extend(zoe);
    let before = confidant(&config, &verify);
    assert_eq!(before.status.code(), Some(1), "the scan finds Zoé before the erasure: {}", text(&before));
    assert!(text(&before).contains("identifier #1 (email)"), "{}", text(&before));
    assert!(!text(&before).contains("zoe@example.fr"), "hits are reported by position, never by value");

    // The export first (Art. 15), on standard output and as a CSV bundle.
    let csv = dir.path().join("bundle");
    let out = confidant(&config, &["dsr", "export", "--identifier", "email:ZOE@example.fr", "--csv", csv.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let export: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(export["events"].as_array().unwrap().len(), 4);
    assert!(std::fs::read_to_string(csv.join("traits.csv")).unwrap().contains("Prénom-zoe"));
    std::fs::remove_dir_all(&csv).unwrap();

    let out = confidant(&config, &["dsr", "erase", "--identifier", "email:zoe@example.fr"]);
    assert!(out.status.success(), "{}", text(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["status"], "completed", "{summary}");
    assert_eq!(summary["removed"]["events"], 4);

    let after = confidant(&config, &verify);
    assert_eq!(after.status.code(), Some(0), "left behind:\n{}", text(&after));
    assert!(text(&after).contains("clean"));
    // Yann is intact, on disk and through the running server.
    let yann = confidant(&config, &["verify-erasure", "--identifier", "email:yann@example.fr"]);
    assert_eq!(yann.status.code(), Some(1), "{}", text(&yann));
    let r: Value = client
        .get(format!("{}/api/profiles?email=yann@example.fr", server.base))
        .bearer_auth(common::ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["profiles"][0]["event_count"], 4, "{r}");
    // The running server noticed: Zoé's old profile is gone, new data makes a new one.
    let r: Value = client.get(format!("{}/api/profiles?user_id=zoe-uid-90210", server.base)).bearer_auth(common::ADMIN_KEY).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["profiles"].as_array().unwrap().len(), 0, "{r}");
    common::send(&client, &server.base, "/v1/track", json!({"userId": "zoe-uid-90210", "event": "Product Viewed", "properties": {"product_id": "SKU-2"}})).await;
    let r: Value = client.get(format!("{}/api/profiles?user_id=zoe-uid-90210", server.base)).bearer_auth(common::ADMIN_KEY).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["profiles"][0]["event_count"], 1, "{r}");

    // Erasing someone unknown: a clear answer and exit 0.
    let out = confidant(&config, &["dsr", "erase", "--identifier", "email:nobody@example.fr"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("no_data"), "{}", text(&out));
    // An identifier in an unknown form: refused before anything is done.
    let out = confidant(&config, &["dsr", "erase", "--identifier", "passport:123"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("kind:value"), "{}", text(&out));

    // Requests are listed with their deadlines; the audit chain verifies.
    let out = confidant(&config, &["dsr", "list"]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<&str> = list["requests"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["no_data", "completed", "completed"]);
    let out = confidant(&config, &["audit", "verify"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("audit log:") && text(&out).contains("consent ledger:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_fails_on_a_tampered_log_and_the_register_and_retention_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(dir.path(), "");
    {
        let server = common::serve(&config);
        let client = reqwest::Client::new();
        person(&client, &server.base, "xavier", "06 99 88 77 66").await;
        for _ in 0..3 {
            client.get(format!("{}/api/profiles?email=xavier@example.fr", server.base)).bearer_auth(common::ADMIN_KEY).send().await.unwrap();
        }
    }
    // A key added to the configuration: the next start audits the change (never the key).
    let text_config = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text_config}[[api_keys]]\nname = \"dpo\"\nkey = \"ak_dpo_secret_0123456789\"\nrole = \"dpo\"\n")).unwrap();
    let out = confidant(&config, &["audit", "list", "--action", "config.applied"]);
    assert!(out.status.success(), "{}", text(&out));
    let entries: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(entries.as_array().unwrap().len(), 2, "{entries}");
    assert_eq!(entries[0]["detail"]["changes"], json!(["api key added: dpo"]), "{entries}");
    assert!(!text(&out).contains("ak_dpo_secret"));

    let out = confidant(&config, &["ropa", "--format", "md"]);
    assert!(out.status.success(), "{}", text(&out));
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(md.contains("Offres par e-mail") && md.contains("user.contact.email (1 subjects)"), "{md}");
    let out = confidant(&config, &["retention", "run", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((r["dry_run"].as_bool(), r["subjects_examined"].as_u64(), r["subjects_erased"].as_u64()), (Some(true), Some(1), Some(0)));

    assert!(confidant(&config, &["audit", "verify"]).status.success());
    let tamper = "UPDATE audit_log SET detail = '{\"by\":\"nobody\"}' WHERE seq = 2";
    match common::database_url() {
        Some(url) => std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(conn);
                c.batch_execute(tamper).await.unwrap();
            })
        })
        .join()
        .unwrap(),
        None => {
            let db = rusqlite::Connection::open(dir.path().join("data/confidant.db")).unwrap();
            db.execute(tamper, []).unwrap();
        }
    }
    let out = confidant(&config, &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("BROKEN: entry 2 was modified"), "{}", text(&out));
}
