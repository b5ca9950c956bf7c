//! Black-box tests of the HTTP interface: the real router on a real socket (port 0), a
//! fresh SQLite database each, driven by an HTTP client.

use std::io::Write;
use std::time::Duration;

mod common;

use common::*;
use serde_json::{json, Value};

fn track(id: &str, anon: &str) -> Value {
    json!({"type": "track", "event": "Product Viewed", "anonymousId": anon, "messageId": id, "properties": {"product_id": "P1"}})
}

async fn error_of(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["success"], false);
    (status, v["error"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn every_endpoint_accepts_its_message_type() {
    let t = spawn_app().await;
    let calls = [
        ("/v1/track", json!({"event": "Signed Up", "userId": "u1"})),
        ("/v1/identify", json!({"userId": "u1", "traits": {"email": "u1@example.fr"}})),
        ("/v1/page", json!({"userId": "u1", "name": "Home"})),
        ("/v1/screen", json!({"userId": "u1", "name": "Basket"})),
        ("/v1/group", json!({"userId": "u1", "groupId": "g1", "traits": {"name": "ACME"}})),
        ("/v1/alias", json!({"userId": "u1", "previousId": "anon-1"})),
    ];
    for (path, body) in calls {
        let r = t.post(path, body).await;
        assert_eq!(r.status(), 200, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!((v["success"].clone(), v["accepted"].clone()), (json!(true), json!(1)), "{path}");
    }
    let p = t.profile_by("email=U1@Example.fr").await;
    assert_eq!(p["event_count"], 6);
    let types: Vec<String> = t.api_json(&format!("/api/profiles/{}/events", p["id"].as_str().unwrap())).await["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    for ty in ["track", "identify", "page", "screen", "group", "alias"] {
        assert!(types.contains(&ty.to_owned()), "{ty} in {types:?}");
    }
}

#[tokio::test]
async fn the_write_key_may_come_in_the_body_and_the_browser_sdk_paths_work() {
    let t = spawn_app().await;
    // analytics.js posts text/plain to short paths with the key in the body.
    let body = json!({"writeKey": WRITE_KEY, "event": "Clicked", "anonymousId": "a1", "messageId": "b1"}).to_string();
    let r = t.post_raw("/v1/t", body.into_bytes(), &[("content-type", "text/plain")]).await;
    assert_eq!(r.status(), 200);
    let pre = t.client.request(reqwest::Method::OPTIONS, format!("{}/v1/t", t.base))
        .header("origin", "https://shop.example").header("access-control-request-method", "POST").send().await.unwrap();
    assert!(pre.status().is_success());
    assert_eq!(pre.headers()["access-control-allow-origin"], "*");
    let p = t.profile_by("anonymous_id=a1").await;
    let events = t.api_json(&format!("/api/profiles/{}/events", p["id"].as_str().unwrap())).await;
    assert!(events["events"][0].get("writeKey").is_none(), "the write key is never stored");
}

#[tokio::test]
async fn a_batch_reports_each_rejection_and_stores_the_rest() {
    let t = spawn_app().await;
    let mut deep = json!(1);
    for _ in 0..70 {
        deep = json!({"d": deep});
    }
    let many: serde_json::Map<String, Value> = (0..301).map(|i| (format!("p{i}"), json!(i))).collect();
    let batch = json!({"batch": [
        track("ok-1", "a1"),
        {"type": "launch", "anonymousId": "a1", "messageId": "bad-type"},
        {"type": "track", "event": "X", "messageId": "no-ids"},
        {"type": "track", "event": "X", "anonymousId": "a1", "messageId": "bad-ts", "timestamp": "yesterday"},
        {"type": "track", "event": "X", "anonymousId": "a1", "messageId": "deep", "properties": deep},
        {"type": "track", "event": "X", "anonymousId": "a1", "messageId": "wide", "properties": many},
        {"type": "track", "event": "X", "anonymousId": "a1", "messageId": "big", "properties": {"x": "y".repeat(33 * 1024)}},
        {"type": "identify", "userId": "u1", "messageId": "bad-email", "traits": {"email": "not-an-email"}},
        {"type": "identify", "userId": "u1", "messageId": "bad-phone", "traits": {"phone": "123"}},
        "not an object",
        track("ok-2", "a1"),
    ]});
    let r = t.post("/v1/batch", batch).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["accepted"], 2);
    let got: Vec<(u64, String, Value)> = v["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), r["reason"].as_str().unwrap().to_owned(), r["messageId"].clone()))
        .collect();
    let expected = [
        (1, "unknown_type", json!("bad-type")),
        (2, "missing_identity", json!("no-ids")),
        (3, "invalid_timestamp", json!("bad-ts")),
        (4, "too_deep", json!("deep")),
        (5, "too_many_properties", json!("wide")),
        (6, "message_too_large", json!("big")),
        (7, "invalid_email", json!("bad-email")),
        (8, "invalid_phone", json!("bad-phone")),
        (9, "not_an_object", Value::Null),
    ];
    assert_eq!(got, expected.iter().map(|(i, r, m)| (*i, r.to_string(), m.clone())).collect::<Vec<_>>());
    assert_eq!(t.events_stored().await, 2);
    let metrics = t.client.get(format!("{}/metrics", t.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"confidant_ingest_rejected_total{reason="too_deep"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"confidant_ingest_messages_total{outcome="accepted"} 2"#));
}

#[tokio::test]
async fn resending_a_batch_stores_nothing_twice() {
    let t = spawn_app().await;
    let batch = json!({"batch": (0..100).map(|i| track(&format!("m{i}"), &format!("a{}", i % 7))).collect::<Vec<_>>()});
    let first: Value = t.post("/v1/batch", batch.clone()).await.json().await.unwrap();
    assert_eq!((first["accepted"].clone(), first["duplicates"].clone()), (json!(100), json!(0)));
    let second: Value = t.post("/v1/batch", batch).await.json().await.unwrap();
    assert_eq!((second["accepted"].clone(), second["duplicates"].clone()), (json!(100), json!(100)));
    assert_eq!(t.events_stored().await, 100);
}

#[tokio::test]
async fn gzip_bodies_are_accepted_and_bombs_refused() {
    let t = spawn_app().await;
    let gz = |bytes: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    };
    let body = json!({"batch": [track("g1", "a1"), track("g2", "a1")]}).to_string();
    let auth = format!("Basic {}", base64_key());
    let r = t.post_raw("/v1/batch", gz(body.as_bytes()), &[("content-encoding", "gzip"), ("authorization", &auth)]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(t.events_stored().await, 2);

    // 10 MB of spaces compresses to about 10 KB.
    let mut bomb = b"{\"batch\": [".to_vec();
    bomb.extend(std::iter::repeat_n(b' ', 10_000_000));
    bomb.extend(b"]}");
    let r = t.post_raw("/v1/batch", gz(&bomb), &[("content-encoding", "gzip"), ("authorization", &auth)]).await;
    assert_eq!(error_of(r).await, (413, "payload_too_large".into()));
    let r = t.post_raw("/v1/batch", b"not gzip".to_vec(), &[("content-encoding", "gzip"), ("authorization", &auth)]).await;
    assert_eq!(error_of(r).await, (400, "malformed".into()));
    let r = t.post_raw("/v1/batch", body.into_bytes(), &[("content-encoding", "br"), ("authorization", &auth)]).await;
    assert_eq!(error_of(r).await, (415, "unsupported_encoding".into()));
    assert_eq!(t.events_stored().await, 2);
}

fn base64_key() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{WRITE_KEY}:"))
}

#[tokio::test]
async fn bad_requests_get_a_specific_status_and_store_nothing() {
    let t = spawn_app().await;
    let auth = format!("Basic {}", base64_key());
    let ok_batch = json!({"batch": [track("x1", "a1")]}).to_string();

    // malformed JSON
    let r = t.post_raw("/v1/batch", b"{\"batch\": [".to_vec(), &[("authorization", &auth)]).await;
    assert_eq!(error_of(r).await, (400, "malformed".into()));
    let r = t.post_raw("/v1/track", b"{oops".to_vec(), &[("authorization", &auth)]).await;
    assert_eq!(error_of(r).await, (400, "malformed".into()));
    let r = t.post_raw("/v1/batch", b"{\"batch\": 3}".to_vec(), &[("authorization", &auth)]).await;
    assert_eq!(error_of(r).await, (400, "invalid_batch".into()));
    let r = t.post_raw("/v1/batch", vec![0xff, 0xfe], &[("authorization", &auth)]).await;
    assert_eq!(error_of(r).await, (400, "malformed".into()));
    // JSON far deeper than the parser allows: that message alone is refused
    let deep = format!("{{\"batch\": [{}{}]}}", "[".repeat(5000), "]".repeat(5000));
    let r = t.post_raw("/v1/batch", deep.into_bytes(), &[("authorization", &auth)]).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!((v["accepted"].clone(), v["rejected"][0]["reason"].clone()), (json!(0), json!("too_deep")));
    let deep = format!("{{\"event\": \"X\", \"anonymousId\": \"a\", \"properties\": {}1{}}}", "[".repeat(5000), "]".repeat(5000));
    let r = t.post_raw("/v1/track", deep.into_bytes(), &[("authorization", &auth)]).await;
    assert_eq!(error_of(r).await.0, 400);

    // missing and wrong write keys
    let r = t.post_raw("/v1/batch", ok_batch.clone().into_bytes(), &[]).await;
    assert_eq!(error_of(r).await, (401, "unauthorized".into()));
    let r = t.client.post(format!("{}/v1/batch", t.base)).basic_auth("wk_wrong_key_0000000000", Some("")).body(ok_batch.clone()).send().await.unwrap();
    assert_eq!(error_of(r).await, (401, "unauthorized".into()));
    let r = t.post_raw("/v1/batch", json!({"writeKey": "nope", "batch": []}).to_string().into_bytes(), &[]).await;
    assert_eq!(error_of(r).await, (401, "unauthorized".into()));
    let r = t.client.post(format!("{}/v1/batch", t.base)).bearer_auth(WRITE_KEY).body(ok_batch.clone()).send().await.unwrap();
    assert_eq!(error_of(r).await, (401, "unauthorized".into()));

    // over the limits
    let big = json!({"batch": (0..2000).map(|i| json!({"type": "track", "event": "X", "anonymousId": "a", "messageId": format!("{i}"), "properties": {"pad": "p".repeat(200)}})).collect::<Vec<_>>()});
    let r = t.post("/v1/batch", big).await;
    assert_eq!(error_of(r).await, (413, "payload_too_large".into()));
    let many = json!({"batch": (0..2501).map(|i| json!({"type": "page", "anonymousId": "a", "messageId": format!("{i}")})).collect::<Vec<_>>()});
    let r = t.post("/v1/batch", many).await;
    assert_eq!(error_of(r).await, (413, "payload_too_large".into()));
    let r = t.post("/v1/track", json!({"event": "X", "anonymousId": "a", "properties": {"pad": "p".repeat(33 * 1024)}})).await;
    assert_eq!(error_of(r).await, (413, "payload_too_large".into()));

    // a single invalid message is a 400 with its reason
    let r = t.post("/v1/track", json!({"anonymousId": "a"})).await;
    assert_eq!(error_of(r).await, (400, "missing_event".into()));
    let r = t.post("/v1/identify", json!({"traits": {"name": "x"}})).await;
    assert_eq!(error_of(r).await, (400, "missing_identity".into()));
    let r = t.post("/v1/page", json!([1, 2])).await;
    assert_eq!(error_of(r).await.0, 400);

    assert_eq!(t.events_stored().await, 0, "nothing was stored by any bad request");
}

#[tokio::test]
async fn the_admin_api_needs_the_right_key() {
    let t = spawn_app().await;
    let url = format!("{}/api/profiles?user_id=u1", t.base);
    let r = t.client.get(&url).send().await.unwrap();
    assert_eq!(error_of(r).await, (401, "unauthorized".into()));
    let r = t.client.get(&url).bearer_auth("ak_wrong_0123456789abcdef").send().await.unwrap();
    assert_eq!(error_of(r).await, (401, "unauthorized".into()));
    let r = t.client.get(&url).basic_auth(ADMIN_KEY, Some("")).send().await.unwrap();
    assert_eq!(error_of(r).await, (401, "unauthorized".into()));
    let r = t.client.get(&url).bearer_auth(WRITE_KEY).send().await.unwrap();
    assert_eq!(error_of(r).await, (403, "forbidden".into()));
    let r = t.client.get(&url).bearer_auth(ANALYST_KEY).send().await.unwrap();
    assert_eq!(error_of(r).await, (403, "forbidden".into()), "analysts never see identified profiles");
    assert_eq!(t.api("/api/profiles?user_id=u1").await.status(), 200);
    let r = t.api("/api/profiles").await;
    assert_eq!(error_of(r).await, (400, "invalid_query".into()));
    let r = t.api("/api/profiles/not-an-id").await;
    assert_eq!(error_of(r).await, (400, "invalid_profile_id".into()));
    let r = t.api("/api/profiles/0000000000000001").await;
    assert_eq!(error_of(r).await, (404, "not_found".into()));
    let r = t.api("/api/nothing-here").await;
    assert_eq!(error_of(r).await, (404, "not_found".into()));
}

#[tokio::test]
async fn profiles_are_found_by_every_identifier_with_traits_and_provenance() {
    let t = spawn_app().await;
    t.post("/v1/batch", json!({"batch": [
        {"type": "page", "anonymousId": "anon-9", "messageId": "p1", "timestamp": "2026-05-01T10:00:00Z"},
        {"type": "identify", "userId": "u9", "anonymousId": "anon-9", "messageId": "i1", "timestamp": "2026-05-01T10:05:00Z",
         "traits": {"email": "Zoe@Example.fr", "phone": "06 12 34 56 78", "firstName": "Zoé"}},
        {"type": "identify", "userId": "u9", "messageId": "i0", "timestamp": "2026-04-01T10:05:00Z", "traits": {"firstName": "Zoe"}},
    ]})).await;
    let p = t.profile_by("user_id=u9").await;
    for q in ["anonymous_id=anon-9", "email=zoe@example.fr", "phone=%2B33612345678", "phone=0612345678"] {
        assert_eq!(t.profile_by(q).await["id"], p["id"], "{q}");
    }
    assert_eq!(p["traits"]["firstName"], "Zoé", "the later event wins, though it arrived first");
    assert_eq!(p["trait_provenance"]["firstName"]["messageId"], "i1");
    assert_eq!(p["trait_provenance"]["firstName"]["source"], "web");
    let kinds: Vec<&str> = p["identities"].as_array().unwrap().iter().map(|i| i["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["user_id", "email", "phone", "anonymous_id"]);
    assert_eq!(t.api_json("/api/profiles?email=nobody@example.fr").await["profiles"], json!([]));
    let mut by_id = t.api_json(&format!("/api/profiles/{}", p["id"].as_str().unwrap())).await;
    // The single view adds the computed traits (none before an analytics run).
    assert_eq!(by_id.as_object_mut().unwrap().remove("computed_traits"), Some(json!({})));
    assert_eq!(by_id.as_object_mut().unwrap().remove("audiences"), Some(json!([])), "no events yet: not evaluated into any audience");
    assert_eq!(by_id, p);
}

#[tokio::test]
async fn events_page_through_with_a_cursor() {
    let t = spawn_app().await;
    let msgs: Vec<Value> = (0..25)
        .map(|i| json!({"type": "track", "event": "E", "userId": "u1", "messageId": format!("e{i:02}"), "timestamp": format!("2026-01-01T00:00:{i:02}Z")}))
        .collect();
    t.post("/v1/batch", json!({"batch": msgs})).await;
    let id = t.profile_by("user_id=u1").await["id"].as_str().unwrap().to_owned();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/api/profiles/{id}/events?limit=10&cursor={c}"),
            None => format!("/api/profiles/{id}/events?limit=10"),
        };
        let page = t.api_json(&q).await;
        for e in page["events"].as_array().unwrap() {
            seen.push(e["messageId"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).rev().map(|i| format!("e{i:02}")).collect();
    assert_eq!(seen, expected);
    for bad in ["limit=0", "limit=5000", "limit=x", "cursor=zzz"] {
        let r = t.api(&format!("/api/profiles/{id}/events?{bad}")).await;
        assert_eq!(r.status(), 400, "{bad}");
    }
}

#[tokio::test]
async fn merges_are_listed_and_unmerge_restores_both_profiles() {
    let t = spawn_app().await;
    t.post("/v1/batch", json!({"batch": [
        {"type": "identify", "userId": "u1", "messageId": "1", "traits": {"email": "a@example.fr"}},
        {"type": "track", "event": "Product Viewed", "anonymousId": "device", "messageId": "2", "context": {"traits": {"city": "Lyon"}}},
    ]})).await;
    let anon_before = t.profile_by("anonymous_id=device").await;
    let user_before = t.profile_by("user_id=u1").await;
    t.post("/v1/identify", json!({"userId": "u1", "anonymousId": "device", "messageId": "3"})).await;
    let merged = t.profile_by("anonymous_id=device").await;
    assert_eq!(merged["id"], user_before["id"]);
    assert_eq!(merged["merged_profiles"], json!([anon_before["id"]]));
    let merges = t.api_json(&format!("/api/profiles/{}/merges", merged["id"].as_str().unwrap())).await;
    assert_eq!(merges["merges"][0]["rule"], "shared_anonymous_id");
    assert_eq!(merges["merges"][0]["messageId"], "3");

    let r = t.client.post(format!("{}/api/profiles/{}/unmerge", t.base, merged["id"].as_str().unwrap())).bearer_auth(ADMIN_KEY).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["unmerged"]["undone_by"], "api_key:ops");
    assert_eq!(t.profile_by("anonymous_id=device").await, anon_before);
    let user_after = t.profile_by("user_id=u1").await;
    assert_eq!((user_after["identities"].clone(), user_after["traits"].clone()), (user_before["identities"].clone(), user_before["traits"].clone()));

    let again = t.client.post(format!("{}/api/profiles/{}/unmerge", t.base, merged["id"].as_str().unwrap())).bearer_auth(ADMIN_KEY).send().await.unwrap();
    assert_eq!(error_of(again).await, (409, "conflict".into()));
    let bad = t.client.post(format!("{}/api/profiles/{}/unmerge", t.base, merged["id"].as_str().unwrap())).bearer_auth(ADMIN_KEY).body("{\"merge\": 1}").send().await.unwrap();
    assert_eq!(error_of(bad).await, (400, "invalid_body".into()));
}

#[tokio::test]
async fn device_clock_skew_is_corrected() {
    let t = spawn_app().await;
    let now = chrono_now();
    // The device clock is an hour fast; the event happened 5 s before the batch was sent.
    let sent = now + 3_600_000;
    let iso = |ms: i64| confidant_core::time::format_millis(ms);
    t.post("/v1/batch", json!({"sentAt": iso(sent), "batch": [
        {"type": "track", "event": "X", "userId": "u1", "messageId": "s1", "timestamp": iso(sent - 5_000)}
    ]})).await;
    let id = t.profile_by("user_id=u1").await["id"].as_str().unwrap().to_owned();
    let e = &t.api_json(&format!("/api/profiles/{id}/events")).await["events"][0];
    let stored = confidant_core::time::parse_timestamp(e["timestamp"].as_str().unwrap()).unwrap();
    let received = confidant_core::time::parse_timestamp(e["receivedAt"].as_str().unwrap()).unwrap();
    assert_eq!(received - stored, 5_000);
    assert!((received - now).abs() < 60_000);
    assert_eq!(e["originalTimestamp"], iso(sent - 5_000));
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test]
async fn a_full_queue_answers_429_with_retry_after_and_loses_nothing() {
    let t = spawn_app_with("[ingest]\nqueue_capacity = 2500\nretry_after_seconds = 2").await;
    let hold = t.app.store().hold_writer().await;
    let full = json!({"batch": (0..2500).map(|i| json!({"type": "page", "anonymousId": "a", "messageId": format!("f{i}")})).collect::<Vec<_>>()});
    let first = {
        let (client, url) = (t.client.clone(), format!("{}/v1/batch", t.base));
        tokio::spawn(async move { client.post(url).basic_auth(WRITE_KEY, Some("")).json(&full).send().await.unwrap() })
    };
    for _ in 0..500 {
        if t.app.metrics().queue_depth() == 2500 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(t.app.metrics().queue_depth(), 2500);
    let extra = json!({"batch": [track("late", "b")]});
    let r = t.post("/v1/batch", extra.clone()).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "2");
    drop(hold);
    assert_eq!(first.await.unwrap().status(), 200);
    // The queue drains as the writer applies what was acknowledged.
    t.app.store().settled().await;
    let r = t.post("/v1/batch", extra).await;
    assert_eq!(r.status(), 200);
    assert_eq!(t.events_stored().await, 2501);
    let metrics = t.client.get(format!("{}/metrics", t.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("confidant_ingest_throttled_total 1"), "{metrics}");
}

#[tokio::test]
async fn health_and_metrics_answer() {
    let t = spawn_app().await;
    let h: Value = t.client.get(format!("{}/health", t.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(h["status"], "ok");
    t.post("/v1/batch", json!({"batch": [track("m1", "a1")]})).await;
    // The queue holds a batch until it is applied, which follows its acknowledgement.
    t.app.store().settled().await;
    let m = t.client.get(format!("{}/metrics", t.base)).send().await.unwrap().text().await.unwrap();
    for needle in [
        "confidant_ingest_messages_total{outcome=\"accepted\"} 1",
        "confidant_ingest_queue_depth 0",
        "confidant_ingest_apply_failures 0",
        "confidant_http_request_duration_seconds_bucket{le=",
        "route=\"/v1/batch\"",
        "confidant_ingest_rejected_total{reason=\"unknown_type\"} 0",
    ] {
        assert!(m.contains(needle), "{needle} missing from\n{m}");
    }
}

#[tokio::test]
async fn golden_records_follow_the_survivorship_rules_and_keep_lineage() {
    let t = spawn_app_with(
        r#"
        [[sources]]
        name = "crm"
        write_key = "wk_crm_0123456789abcdef"
        [identity]
        source_trust = ["crm", "web"]
        [identity.trait_survivorship]
        firstName = "most_trusted"
        address = "most_complete"
        "#,
    )
    .await;
    let send = |key: &'static str, body: Value| {
        let (client, url) = (t.client.clone(), format!("{}/v1/identify", t.base));
        async move { client.post(url).basic_auth(key, Some("")).json(&body).send().await.unwrap().status() }
    };
    let crm = json!({"userId": "u-g1", "timestamp": "2026-01-01T00:00:00Z", "traits": {"firstName": "Léa", "lastName": "Martin", "address": "1 rue X"}});
    let web = json!({"userId": "u-g1", "timestamp": "2026-02-01T00:00:00Z", "traits": {"firstName": "Lea", "lastName": "Martin-Dupont", "address": "1 rue X, 75001 Paris"}});
    assert_eq!(send("wk_crm_0123456789abcdef", crm).await, 200);
    assert_eq!(send(WRITE_KEY, web).await, 200);
    let later = json!({"userId": "u-g1", "timestamp": "2026-03-01T00:00:00Z", "traits": {"address": "1 r. X"}});
    assert_eq!(send("wk_crm_0123456789abcdef", later).await, 200);
    let p = t.profile_by("user_id=u-g1").await;
    assert_eq!(p["traits"]["firstName"], "Léa", "the most trusted source wins: {p}");
    assert_eq!(p["traits"]["lastName"], "Martin-Dupont", "the most recent wins by default");
    assert_eq!(p["traits"]["address"], "1 rue X, 75001 Paris", "the most complete wins");
    assert_eq!(p["trait_provenance"]["firstName"]["source"], "crm");
    let lineage = p["trait_lineage"].as_array().unwrap();
    assert_eq!(lineage.len(), 6, "every source's value of every trait: {lineage:?}");
    assert!(lineage.iter().any(|l| l["key"] == "firstName" && l["value"] == "Lea" && l["source"] == "web"));
}

#[tokio::test]
async fn probabilistic_matching_merges_the_certain_and_queues_the_doubtful() {
    let t = spawn_app_with("[identity]\nmatch_threshold = 0.99\nreview_threshold = 0.5\n").await;
    let firsts = ["Anna", "Bruno", "Chloé", "David", "Emma", "Farid", "Gina", "Hugo", "Inès", "Jules", "Karim", "Léa", "Marc", "Nina", "Omar"];
    let lasts = ["Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy", "Moreau", "Simon", "Laurent"];
    let cities = [("75011", "Paris"), ("69003", "Lyon"), ("13001", "Marseille"), ("33000", "Bordeaux"), ("59000", "Lille")];
    let mut batch = Vec::new();
    for i in 0..60usize {
        let (pc, city) = cities[i % cities.len()];
        batch.push(json!({"type": "identify", "userId": format!("w-{i}"), "traits": {
            "firstName": firsts[i % firsts.len()], "lastName": lasts[(i * 7) % lasts.len()], "birthday": format!("19{}-0{}-1{}", 50 + i % 45, 1 + i % 9, i % 10),
            "address": format!("{} rue {}", 1 + i, lasts[(i * 3) % lasts.len()]), "postalCode": pc, "city": city, "email": format!("p{i}@example.fr")}}));
    }
    // The same person as w-5, known to another system only by a cookie id, with a typo.
    let w5 = batch[5]["traits"].clone();
    let mut dup = w5.clone();
    dup["email"] = json!("perso.5@example.org");
    dup["firstName"] = json!(w5["firstName"].as_str().unwrap().to_lowercase());
    batch.push(json!({"type": "identify", "anonymousId": "crm-5", "traits": dup}));
    let r: Value = t.post("/v1/batch", json!({"batch": batch})).await.json().await.unwrap();
    assert_eq!(r["accepted"], 61, "{r}");
    assert_eq!(t.app.store().totals().await.unwrap().profiles, 61);

    let r = t.client.post(format!("{}/api/identity/match", t.base)).bearer_auth(ADMIN_KEY).send().await.unwrap();
    let status = r.status();
    let report: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["merged"], 1, "{report}");
    assert_eq!(t.app.store().totals().await.unwrap().profiles, 60, "only the duplicate was merged");
    let p = t.profile_by("anonymous_id=crm-5").await;
    let ids: Vec<&str> = p["identities"].as_array().unwrap().iter().map(|i| i["value"].as_str().unwrap()).collect();
    assert!(ids.contains(&"w-5") && ids.contains(&"crm-5"), "{ids:?}");
    let merges = t.api_json(&format!("/api/profiles/{}/merges", p["id"].as_str().unwrap())).await;
    let m = &merges["merges"][0];
    assert_eq!(m["rule"], "probabilistic");
    assert!(m["evidence"]["probability"].as_f64().unwrap() >= 0.99 && m["evidence"]["comparisons"].is_array(), "{m}");
    assert!(!m["evidence"].to_string().contains("example"), "the evidence holds no values: {m}");
    // Exact unmerge, as for any merge.
    let r = t.client.post(format!("{}/api/profiles/{}/unmerge", t.base, p["id"].as_str().unwrap())).bearer_auth(ADMIN_KEY).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(t.app.store().totals().await.unwrap().profiles, 61);
    // Matching again does not undo the person's unmerge.
    let report: Value = t.client.post(format!("{}/api/identity/match", t.base)).bearer_auth(ADMIN_KEY).send().await.unwrap().json().await.unwrap();
    assert_eq!(report["merged"], 0, "{report}");
    assert_eq!(t.app.store().totals().await.unwrap().profiles, 61);

    // The band of doubt goes to review: two profiles both holding a user id are never merged
    // automatically, however alike.
    let twin = json!({"type": "identify", "userId": "w-twin-7", "traits": batch[7]["traits"].clone()});
    assert_eq!(t.post("/v1/identify", twin).await.status(), 200);
    let report: Value = t.client.post(format!("{}/api/identity/match", t.base)).bearer_auth(ADMIN_KEY).send().await.unwrap().json().await.unwrap();
    assert_eq!((report["merged"].as_u64(), report["protected"].as_u64()), (Some(0), Some(1)), "{report}");
    let reviews = t.api_json("/api/identity/reviews?status=open").await;
    let open = reviews["reviews"].as_array().unwrap();
    assert_eq!(open.len(), 1, "{reviews}");
    let id = open[0]["id"].as_i64().unwrap();
    let decide = |decision: &'static str| {
        let (client, url) = (t.client.clone(), format!("{}/api/identity/reviews/{id}", t.base));
        async move { client.post(url).bearer_auth(ADMIN_KEY).json(&json!({"decision": decision})).send().await.unwrap() }
    };
    assert_eq!(decide("maybe").await.status(), 422);
    let r = decide("merge").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "merged");
    assert_eq!(decide("reject").await.status(), 409, "a decided review stays decided");
    let p = t.profile_by("user_id=w-7").await;
    assert_eq!(p["merged_profiles"].as_array().unwrap().len(), 1);
}
