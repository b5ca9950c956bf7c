//! The official Segment and RudderStack Python SDKs, pointed at Confidant by changing only
//! their host. `.ci/run` installs them (tests/sdk/requirements.txt).

mod common;

use std::collections::HashMap;
use std::process::Command;

use serde_json::Value;

fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_deliver_every_event_once_and_anonymous_history_merges() {
    let check = Command::new("python3").args(["-c", "import segment.analytics, rudderstack.analytics"]).output();
    let ok = matches!(&check, Ok(o) if o.status.success());
    assert!(ok, "the SDKs are not installed: pip install -r tests/sdk/requirements.txt (.ci/run does this)");

    let dir = tempfile::tempdir().unwrap();
    // The shop declares its own event in the tracking plan, as every shop does.
    let plan = "[privacy.plan.events.\"Page Scrolled\"]\ncategory = \"user.behavior.browsing_history\"\nproperties = { depth = \"inherit\" }\n";
    let server = common::serve(&common::write_config(dir.path(), plan));
    let base = server.base.clone();
    let out = tokio::task::spawn_blocking({
        let base = base.clone();
        move || Command::new("python3").arg(workspace_root().join("tests/sdk/drive.py")).args([&base, common::WRITE_KEY]).output().unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "drive.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let sent: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sent["errors"], serde_json::json!([]), "the SDKs reported delivery errors");

    let client = reqwest::Client::new();
    for sdk in ["segment", "rudderstack"] {
        let s = &sent[sdk];
        let user = s["user_id"].as_str().unwrap();
        let anon = s["anonymous_id"].as_str().unwrap();
        let get = |url: String| {
            let client = client.clone();
            async move { client.get(url).bearer_auth(common::ADMIN_KEY).send().await.unwrap().json::<Value>().await.unwrap() }
        };
        let by_user = get(format!("{base}/api/profiles?user_id={user}")).await;
        let by_anon = get(format!("{base}/api/profiles?anonymous_id={anon}")).await;
        let profile = &by_user["profiles"][0];
        assert_eq!(profile["id"], by_anon["profiles"][0]["id"], "{sdk}: the anonymous history joined the customer");
        assert_eq!(profile["traits"]["firstName"], "Léa");
        let id = profile["id"].as_str().unwrap();
        let events = get(format!("{base}/api/profiles/{id}/events?limit=1000")).await;
        let mut counts: HashMap<String, usize> = HashMap::new();
        for e in events["events"].as_array().unwrap() {
            *counts.entry(e["messageId"].as_str().unwrap().to_owned()).or_default() += 1;
        }
        let expected: Vec<&str> = s["message_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        for m in &expected {
            assert_eq!(counts.get(*m), Some(&1), "{sdk}: message {m} arrived exactly once");
        }
        let generated = s["sdk_generated"].as_u64().unwrap() as usize;
        assert_eq!(counts.len(), expected.len() + generated, "{sdk}: nothing more, nothing less");
        assert!(counts.values().all(|c| *c == 1));
        let lib = &events["events"][0]["context"]["library"]["name"];
        assert!(lib.is_string(), "{sdk}: the SDK's context is kept: {lib}");
    }
}
