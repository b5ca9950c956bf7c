//! Activation end to end: campaigns through a real SMTP server process (aiosmtpd), one-click
//! unsubscribe, triggered messages, webhook destinations on a real HTTP receiver, rights
//! requests forwarded, audience exports.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use common::*;
use serde_json::{json, Value};

const EMAIL: &str = "marketing.communications.email";
const RECS: &str = "personalisation.recommendations";

fn smtp_config(port: u16) -> String {
    smtp_config_capped(port, 5)
}

fn smtp_config_capped(port: u16, cap: u32) -> String {
    format!(
        r#"
        [smtp]
        host = "127.0.0.1"
        port = {port}
        tls = "none"
        from = "La Boutique <news@boutique.example>"
        connections = 2
        timeout_seconds = 5
        [campaigns]
        frequency_cap = {cap}
        [destinations]
        allow_private_addresses = true
        "#
    )
}

async fn person(t: &TestApp, user: &str, first: &str, lang: Option<&str>) {
    let mut traits = json!({"email": format!("{user}@example.fr"), "firstName": first});
    if let Some(l) = lang {
        traits["preferred_language"] = json!(l);
    }
    let r = t.post("/v1/identify", json!({"userId": user, "traits": traits})).await;
    assert_eq!(r.status(), 200);
}

async fn consent(t: &TestApp, user: &str, purpose: &str, granted: bool) {
    let (s, v) = t.consent(json!({"userId": user, "purposes": {purpose: granted}, "method": "banner"}), &[]).await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test]
async fn a_campaign_reaches_only_consenting_people_and_one_click_unsubscribe_holds() {
    let mail = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(mail.path(), &[]);
    let t = spawn_app_with(&smtp_config(sink.port)).await;
    person(&t, "ana", "Ana", None).await; // consents: receives it
    person(&t, "ben", "Ben", Some("en")).await; // consents, in English
    person(&t, "cleo", "Cléo", None).await; // never consented
    person(&t, "dan", "Dan", None).await; // consented, then withdrew
    person(&t, "eve", "Eve", None).await; // consented, then restricted
    person(&t, "fay", "Fay", None).await; // consented, then erased
    for u in ["ana", "ben", "dan", "eve", "fay"] {
        consent(&t, u, EMAIL, true).await;
    }
    consent(&t, "dan", EMAIL, false).await;
    assert_eq!(t.dpo("POST", "/api/dsr", Some(json!({"kind": "restriction", "identifier": "user_id:eve"}))).await.0, 200);
    assert_eq!(t.dpo("POST", "/api/dsr", Some(json!({"kind": "erasure", "identifier": "user_id:fay"}))).await.0, 200);

    // The `everyone` audience is bound to analytics: the campaign's own purpose decides.
    let body = "Bonjour {{ firstName | \"à vous\" }},\n\nNos nouveautés vous attendent chez {{shop_name}}.\n\nSe désinscrire : {{unsubscribe_url}}\n";
    let campaign = json!({"name": "rentree", "audience": "everyone",
        "subject": {"fr": "{{firstName}}, nos nouveautés", "en": "{{firstName}}, what's new"},
        "body": {"fr": body, "en": "Hello {{firstName}},\n\nUnsubscribe: {{unsubscribe_url}}\n"}});
    let (s, c) = t.as_key(MARKETER_KEY, "POST", "/api/campaigns", Some(campaign.clone())).await;
    assert_eq!(s, 201, "{c}");
    assert_eq!(c["status"], "draft");
    // The same definition again is the same campaign; a different one under the name is refused.
    assert_eq!(t.as_key(MARKETER_KEY, "POST", "/api/campaigns", Some(campaign.clone())).await.0, 201);
    let mut other = campaign.clone();
    other["subject"] = json!("Autre");
    assert_eq!(t.as_key(MARKETER_KEY, "POST", "/api/campaigns", Some(other)).await.0, 409);

    // The dry run decides exactly as a send would, and sends and stores nothing.
    let (s, dry) = t.as_key(MARKETER_KEY, "POST", "/api/campaigns/rentree/send?dry_run=true", None).await;
    assert_eq!(s, 200, "{dry}");
    assert_eq!(dry["would_send"].as_array().unwrap().len(), 2, "{dry}");
    assert_eq!(dry["suppressed"], json!({"no_consent": 1, "withdrawn": 1}), "{dry}");
    // Erased and restricted subjects are no members any more (and would be suppressed if
    // they were).
    assert_eq!(dry["recipients"], 4, "{dry}");
    let eve = profile_of(&t, "eve").await.to_string();
    assert!(!dry.to_string().contains(&eve), "{dry}");
    assert!(sink.messages().is_empty());
    let (_, log) = t.as_key(MARKETER_KEY, "GET", "/api/campaigns/rentree/deliveries", None).await;
    assert_eq!(log["deliveries"].as_array().unwrap().len(), 0, "a dry run stores nothing: {log}");

    let (s, sent) = t.as_key(MARKETER_KEY, "POST", "/api/campaigns/rentree/send", None).await;
    assert_eq!(s, 200, "{sent}");
    assert_eq!((sent["sent"].as_u64(), sent["failed"].as_u64(), sent["status"].as_str()), (Some(2), Some(0), Some("sent")), "{sent}");
    let mut to = sink.recipients();
    to.sort();
    assert_eq!(to, vec!["ana@example.fr", "ben@example.fr"]);
    let messages = sink.messages();
    let ana = messages.iter().find(|m| m.starts_with("X-Envelope-To: ana@")).unwrap();
    let ben = messages.iter().find(|m| m.starts_with("X-Envelope-To: ben@")).unwrap();
    assert!(header(ana, "Subject").is_some_and(|s| s.contains("=?utf-8?")), "a non-ASCII subject is encoded (RFC 2047): {ana}");
    assert!(ana.contains("Bonjour Ana,") && ana.contains("La Boutique (exemple)"), "{ana}");
    assert!(ben.contains("Hello Ben,") && header(ben, "Subject").unwrap().contains("what's new"), "{ben}");
    assert_eq!(header(ana, "List-Unsubscribe-Post").as_deref(), Some("List-Unsubscribe=One-Click"));
    let link = header(ana, "List-Unsubscribe").unwrap();
    let url = link.trim_start_matches('<').trim_end_matches('>').to_owned();
    assert!(url.starts_with("https://shop.example/u/"), "{url}");
    assert!(ana.contains(&url), "the body carries the same link");
    assert!(header(ana, "Message-ID").unwrap().ends_with("@boutique.example>"));

    // The delivery log says who got it, and who did not and why.
    let (_, log) = t.as_key(MARKETER_KEY, "GET", "/api/campaigns/rentree/deliveries", None).await;
    assert_eq!(log["summary"], json!({"sent": 2, "suppressed.no_consent": 1, "suppressed.withdrawn": 1}), "{log}");
    // Sending again sends nobody twice.
    let (_, again) = t.as_key(MARKETER_KEY, "POST", "/api/campaigns/rentree/send", None).await;
    assert_eq!((again["sent"].as_u64(), again["already_sent"].as_u64()), (Some(0), Some(2)), "{again}");
    assert_eq!(sink.messages().len(), 2);

    // One click (RFC 8058): a POST with List-Unsubscribe=One-Click, no session, no page.
    let path = url.trim_start_matches("https://shop.example");
    let page = t.client.get(format!("{}{path}", t.base)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<form method=\"post\">"), "a GET only shows a confirmation");
    assert!(t.app.is_lawful(profile_of(&t, "ana").await, EMAIL).await.unwrap(), "a GET changes nothing");
    let receipts = t.receipts_total().await;
    let one_click = |p: String| {
        let (client, base) = (t.client.clone(), t.base.clone());
        async move {
            client
                .post(format!("{base}{p}"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body("List-Unsubscribe=One-Click")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(one_click(path.to_owned()).await, 200);
    assert!(!t.app.is_lawful(profile_of(&t, "ana").await, EMAIL).await.unwrap(), "the objection is in the ledger at once");
    assert_eq!(t.receipts_total().await, receipts + 1);
    // Replayed: refused, nothing recorded. Forged: refused, nothing recorded.
    assert_eq!(one_click(path.to_owned()).await, 409);
    let mut forged = path.to_owned();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(one_click(forged).await, 400);
    assert_eq!(one_click("/u/not-a-token".into()).await, 400);
    assert_eq!(t.receipts_total().await, receipts + 1);
    let (_, audit) = t.dpo("GET", "/api/audit?action=unsubscribe.refused", None).await;
    assert!(audit["entries"].as_array().is_some_and(|e| e.len() >= 3), "{audit}");

    // The next campaign skips her.
    let next = json!({"name": "soldes", "audience": "everyone", "subject": "Les soldes", "body": "Bonjour {{firstName}}\n{{unsubscribe_url}}"});
    assert_eq!(t.as_key(MARKETER_KEY, "POST", "/api/campaigns", Some(next)).await.0, 201);
    let (_, r) = t.as_key(MARKETER_KEY, "POST", "/api/campaigns/soldes/send", None).await;
    assert_eq!(r["sent"], 1, "{r}");
    assert_eq!(r["suppressed"]["withdrawn"], 2, "{r}");
    assert_eq!(sink.recipients().iter().filter(|r| r.starts_with("ana@")).count(), 1);
}

async fn profile_of(t: &TestApp, user: &str) -> confidant_core::ids::ProfileId {
    let p = t.profile_by(&format!("user_id={user}")).await;
    confidant_core::ids::ProfileId::parse(p["id"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn campaigns_refuse_bad_input_before_sending_anything() {
    let mail = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(mail.path(), &[]);
    let t = spawn_app_with(&smtp_config(sink.port)).await;
    let post = |body: Value| t.as_key(MARKETER_KEY, "POST", "/api/campaigns", Some(body));
    // An unknown variable: refused with the field and its position.
    let (s, e) = post(json!({"name": "x", "audience": "everyone", "subject": "Hi", "body": {"fr": "Bonjour,\n  {{ fristName }}", "en": "Hi"}})).await;
    assert_eq!(s, 422, "{e}");
    assert_eq!((e["error"].as_str(), e["field"].as_str()), (Some("invalid_template"), Some("body.fr")), "{e}");
    assert_eq!(e["position"], json!({"offset": 14, "line": 2, "column": 6}), "{e}");
    let (s, e) = post(json!({"name": "x", "audience": "everyone", "subject": "{{firstName", "body": "b"})).await;
    assert_eq!((s, e["field"].as_str()), (422, Some("subject.en")), "{e}");
    // An audience that does not exist, an unknown purpose, a language we do not have.
    assert_eq!(post(json!({"name": "x", "audience": "nobody", "subject": "s", "body": "b"})).await.0, 404);
    assert_eq!(post(json!({"name": "x", "audience": "everyone", "purpose": "spam", "subject": "s", "body": "b"})).await.1["error"], "unknown_purpose");
    assert_eq!(post(json!({"name": "x", "audience": "everyone", "subject": {"de": "s"}, "body": {"de": "b"}})).await.0, 422);
    assert_eq!(post(json!({"name": "Bad Name", "audience": "everyone", "subject": "s", "body": "b"})).await.1["error"], "invalid_name");
    assert_eq!(post(json!({"audience": "everyone", "subject": "s"})).await.0, 400);
    // Roles: an analyst cannot send; nobody without a key.
    assert_eq!(t.as_key(ANALYST_KEY, "POST", "/api/campaigns", Some(json!({"audience": "everyone", "subject": "s", "body": "b"}))).await.0, 403);
    assert_eq!(t.call("POST", "/api/campaigns/x/send", None, None).await.status(), 401);
    assert_eq!(t.as_key(MARKETER_KEY, "POST", "/api/campaigns/none/send", None).await.0, 404);
    let (_, list) = t.as_key(MARKETER_KEY, "GET", "/api/campaigns", None).await;
    assert_eq!(list["campaigns"].as_array().unwrap().len(), 0, "nothing was stored: {list}");

    // Without an SMTP server configured, a send is refused with a clear reason.
    let bare = spawn_app().await;
    assert_eq!(bare.as_key(MARKETER_KEY, "POST", "/api/campaigns", Some(json!({"name": "n", "audience": "everyone", "subject": "s", "body": "b"}))).await.0, 201);
    let (s, e) = bare.as_key(MARKETER_KEY, "POST", "/api/campaigns/n/send", None).await;
    assert_eq!((s, e["error"].as_str()), (422, Some("smtp_not_configured")), "{e}");
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn a_smtp_server_that_refuses_or_vanishes_mid_campaign_loses_no_one_and_doubles_no_one() {
    let mail = tempfile::tempdir().unwrap();
    // The server disappears after accepting 4 messages.
    let mut sink = SmtpSink::start(mail.path(), &["--fail-after", "4"]);
    let t = spawn_app_with(&smtp_config(sink.port)).await;
    for i in 0..12 {
        let u = format!("p{i:02}");
        person(&t, &u, &format!("P{i}"), None).await;
        consent(&t, &u, EMAIL, true).await;
    }
    let c = json!({"name": "resume", "audience": "everyone", "subject": "s", "body": "Bonjour {{firstName}} {{unsubscribe_url}}"});
    assert_eq!(t.as_key(MARKETER_KEY, "POST", "/api/campaigns", Some(c)).await.0, 201);
    let (s, first) = t.as_key(MARKETER_KEY, "POST", "/api/campaigns/resume/send", None).await;
    assert_eq!(s, 200, "{first}");
    assert_eq!(first["status"], "interrupted", "{first}");
    assert_eq!(first["sent"], 4, "{first}");
    assert_eq!(first["failed"].as_u64().unwrap(), 8, "{first}");
    assert_eq!(sink.messages().len(), 4);
    let (_, log) = t.as_key(MARKETER_KEY, "GET", "/api/campaigns/resume/deliveries?status=failed", None).await;
    let reasons: Vec<&str> = log["deliveries"].as_array().unwrap().iter().map(|d| d["reason"].as_str().unwrap()).collect();
    assert!(reasons.iter().all(|r| *r == "transient: connection" || *r == "not_attempted"), "{reasons:?}");
    assert!(reasons.contains(&"not_attempted"), "the run stops once the server is gone: {reasons:?}");
    // The server comes back on the same port, refusing no one: sending again resumes.
    sink.stop();
    let first_run = sink.recipients();
    let port = sink.port.to_string();
    let mail2 = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(mail2.path(), &["--port", &port]);
    let (_, second) = t.as_key(MARKETER_KEY, "POST", "/api/campaigns/resume/send", None).await;
    assert_eq!((second["sent"].as_u64(), second["already_sent"].as_u64(), second["status"].as_str()), (Some(8), Some(4), Some("sent")), "{second}");
    let all = first_run.into_iter().chain(sink.recipients());
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for r in all {
        *seen.entry(r).or_default() += 1;
    }
    assert_eq!(seen.len(), 12, "everyone received it: {seen:?}");
    assert!(seen.values().all(|&n| n == 1), "nobody twice: {seen:?}");
    drop(sink);

    // A server that refuses one mailbox (550): that delivery fails for good, the others go.
    let mail3 = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(mail3.path(), &["--port", &port, "--refuse", "p03@example.fr"]);
    let c = json!({"name": "refusal", "audience": "everyone", "subject": "s2", "body": "{{unsubscribe_url}}"});
    assert_eq!(t.as_key(MARKETER_KEY, "POST", "/api/campaigns", Some(c)).await.0, 201);
    let (_, r) = t.as_key(MARKETER_KEY, "POST", "/api/campaigns/refusal/send", None).await;
    assert_eq!((r["sent"].as_u64(), r["failed"].as_u64()), (Some(11), Some(1)), "{r}");
    let (_, log) = t.as_key(MARKETER_KEY, "GET", "/api/campaigns/refusal/deliveries?status=failed", None).await;
    assert!(log["deliveries"][0]["reason"].as_str().unwrap().starts_with("refused: 550"), "{log}");
    assert_eq!(sink.messages().len(), 11);
}

#[tokio::test]
async fn an_abandoned_cart_starts_one_email_and_a_completed_order_none() {
    let mail = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(mail.path(), &[]);
    let t = spawn_app_with(&smtp_config(sink.port)).await;
    for u in ["gus", "hal", "ivy", "jo"] {
        person(&t, u, u, None).await;
        consent(&t, u, EMAIL, true).await;
    }
    let trigger = json!({"name": "panier", "audience": "everyone", "subject": "Votre panier", "body": "{{firstName}}, votre panier vous attend. {{unsubscribe_url}}",
        "trigger": {"event": "Checkout Started", "unless": "Order Completed", "within_seconds": 3600}});
    let (s, c) = t.as_key(MARKETER_KEY, "POST", "/api/campaigns", Some(trigger)).await;
    assert_eq!((s, c["status"].as_str()), (201, Some("active")), "{c}");
    let ago = |mins: i64| confidant_core::time::format_millis(confidant_service::now_millis() - mins * 60_000);
    let track = |u: &str, e: &str, at: String| t.post("/v1/track", json!({"userId": u, "event": e, "timestamp": at, "properties": {"order_id": "o1"}}));
    assert_eq!(track("gus", "Checkout Started", ago(120)).await.status(), 200); // abandoned: one email
    assert_eq!(track("hal", "Checkout Started", ago(120)).await.status(), 200); // ordered within the hour
    assert_eq!(track("hal", "Order Completed", ago(110)).await.status(), 200);
    assert_eq!(track("jo", "Checkout Started", ago(120)).await.status(), 200); // withdrew since
    // Not due yet. Occurrences are taken in the order they were stored, so one that is not
    // due holds back those stored after it until it is.
    assert_eq!(track("ivy", "Checkout Started", ago(5)).await.status(), 200);
    consent(&t, "jo", EMAIL, false).await;
    let (_, triggered) = t.app.run_campaigns().await.unwrap();
    assert_eq!(triggered, 1);
    assert_eq!(sink.recipients(), vec!["gus@example.fr"]);
    // Run again: nobody twice; Ivy's cart is not due yet.
    t.app.run_campaigns().await.unwrap();
    assert_eq!(sink.recipients(), vec!["gus@example.fr"]);
    let (_, log) = t.as_key(MARKETER_KEY, "GET", "/api/campaigns/panier/deliveries", None).await;
    assert_eq!(log["summary"], json!({"sent": 1, "suppressed.withdrawn": 1}), "{log}");
    // Paused, it sends nothing.
    assert_eq!(t.as_key(MARKETER_KEY, "POST", "/api/campaigns/panier/pause", None).await.1["status"], "paused");
    assert_eq!(t.as_key(MARKETER_KEY, "POST", "/api/campaigns/panier/send", None).await.0, 409, "a trigger is not sent on demand");
}

// ------------------------------------------------------------------------------- destinations

#[derive(Clone, Default)]
struct Receiver {
    /// (idempotency key, body, signature header) of every request, in order.
    seen: Arc<Mutex<Vec<(String, String, String)>>>,
    /// Requests still to answer 500.
    fail: Arc<Mutex<usize>>,
    /// Requests still to answer too late (after recording them).
    slow: Arc<Mutex<usize>>,
    /// Answer 500 to everything.
    down: Arc<Mutex<bool>>,
}

async fn receive(axum::extract::State(r): axum::extract::State<Receiver>, headers: axum::http::HeaderMap, body: String) -> axum::http::StatusCode {
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let sig = headers.get("x-confidant-signature").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    if *r.down.lock().unwrap() {
        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
    }
    {
        let mut f = r.fail.lock().unwrap();
        if *f > 0 {
            *f -= 1;
            return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
        }
    }
    r.seen.lock().unwrap().push((key, body, sig));
    let late = {
        let mut s = r.slow.lock().unwrap();
        let late = *s > 0;
        *s = s.saturating_sub(1);
        late
    };
    if late {
        tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    }
    axum::http::StatusCode::OK
}

async fn start_receiver() -> (Receiver, String) {
    let r = Receiver::default();
    let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (r, url)
}

/// Runs delivery passes until nothing is left to do (or 15 s).
async fn drain(t: &TestApp) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut quiet = 0;
    while std::time::Instant::now() < until && quiet < 5 {
        let r = t.app.deliver_destinations().await.unwrap();
        if r.delivered + r.failed_attempts + r.rights_delivered + r.dead_lettered == 0 {
            quiet += 1;
        } else {
            quiet = 0;
        }
        tokio::time::sleep(std::time::Duration::from_millis(60)).await;
    }
}

fn verify(secret: &str, sig: &str, body: &str) -> bool {
    use hmac::Mac;
    let Some((t, v1)) = sig.strip_prefix("t=").and_then(|s| s.split_once(",v1=")) else { return false };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    hex::decode(v1).is_ok_and(|v| mac.verify_slice(&v).is_ok())
}

#[tokio::test]
async fn a_destination_gets_only_lawful_events_and_loses_nothing_through_failures() {
    let t = spawn_app_with(&smtp_config(1)).await;
    let (rx, url) = start_receiver().await;
    *rx.fail.lock().unwrap() = 3;
    *rx.slow.lock().unwrap() = 1;
    let (s, d) = t
        .call("POST", "/api/destinations", Some(ADMIN_KEY), Some(json!({"name": "crm", "url": url, "purposes": [RECS], "events": ["Product Viewed", "identify"],
            "timeout_ms": 300, "retry_base_ms": 20, "max_attempts": 20})))
        .await
        .json::<Value>()
        .await
        .map(|v| (201, v))
        .unwrap();
    assert_eq!(s, 201);
    let secret = d["secret"].as_str().expect("the secret is shown once").to_owned();
    // An audience for the destination's purpose: joins are forwarded while lawful.
    let aud = json!({"name": "recs-fans", "purpose": RECS, "rule": "everyone"});
    assert_eq!(t.as_key(MARKETER_KEY, "POST", "/api/audiences", Some(aud)).await.0, 201);
    assert!(!t.api_json("/api/destinations/crm").await.to_string().contains(&secret), "and never again");
    person(&t, "kim", "Kim", None).await;
    person(&t, "lou", "Lou", None).await;
    consent(&t, "kim", RECS, true).await;
    for i in 0..6 {
        for u in ["kim", "lou"] {
            let r = t.post("/v1/track", json!({"userId": u, "event": "Product Viewed", "messageId": format!("{u}-view-{i}"), "properties": {"product_id": format!("p{i}")}})).await;
            assert_eq!(r.status(), 200);
        }
    }
    assert_eq!(t.post("/v1/track", json!({"userId": "kim", "event": "Cart Viewed"})).await.status(), 200);
    drain(&t).await;
    let seen = rx.seen.lock().unwrap().clone();
    let mut by_key: HashMap<String, Vec<&(String, String, String)>> = HashMap::new();
    for s in &seen {
        by_key.entry(s.0.clone()).or_default().push(s);
    }
    let bodies: Vec<Value> = by_key.values().map(|v| serde_json::from_str(&v[0].1).unwrap()).collect();
    let views = bodies.iter().filter(|b| b["event"]["event"] == "Product Viewed").count();
    assert_eq!(views, 6, "every lawful event arrived: {bodies:#?}");
    assert!(bodies.iter().filter(|b| b["type"] == "event").all(|b| b["event"]["userId"] == "kim"), "only the consenting subject's data: {bodies:#?}");
    let joins: Vec<&Value> = bodies.iter().filter(|b| b["type"] == "audience").collect();
    assert_eq!(joins.len(), 1, "{joins:#?}");
    assert_eq!((joins[0]["audience"].as_str(), joins[0]["change"].as_str(), joins[0]["reason"].as_str()), (Some("recs-fans"), Some("joined"), Some("consent")));
    assert!(joins[0]["identifiers"].as_array().unwrap().iter().any(|i| i["value"] == "kim"), "{joins:#?}");
    assert!(!seen.iter().any(|s| s.1.contains("Cart Viewed")), "only the events it asked for");
    // Duplicates only where a delivery timed out after the receiver took it, under one key.
    let dups: usize = by_key.values().map(|v| v.len() - 1).sum();
    assert_eq!(dups, 1, "the one delivery that timed out after the receiver took it came again, under its key");
    assert_eq!(*rx.fail.lock().unwrap(), 0, "the 500s were answered and retried");
    assert!(by_key.values().all(|v| v.iter().all(|s| s.1 == v[0].1)), "a retry sends the same body under the same key");
    assert!(seen.iter().all(|(_, b, sig)| verify(&secret, sig, b)), "every request is signed");
    // The identify call went out minimised to the purpose's categories: no email (not a
    // category of recommendations).
    assert!(!seen.iter().any(|s| s.1.contains("kim@example.fr")), "the email is not a category of the purpose");

    // A destination that is down: the items go to the dead letters after max_attempts, then
    // a replay delivers them once it is back.
    let (down, down_url) = start_receiver().await;
    *down.down.lock().unwrap() = true;
    let body = json!({"name": "ads", "url": down_url, "purposes": [RECS], "events": ["Product Viewed"], "max_attempts": 2, "retry_base_ms": 10, "timeout_ms": 300});
    assert_eq!(t.call("POST", "/api/destinations", Some(ADMIN_KEY), Some(body)).await.status(), 201);
    assert_eq!(t.post("/v1/track", json!({"userId": "kim", "event": "Product Viewed", "messageId": "kim-late"})).await.status(), 200);
    drain(&t).await;
    let (_, dead) = t.dpo("GET", "/api/destinations/ads/dead", None).await;
    assert_eq!(dead["dead_letters"].as_array().unwrap().len(), 1, "{dead}");
    assert!(!dead.to_string().contains("kim"), "the listing shows no personal data: {dead}");
    *down.down.lock().unwrap() = false;
    let (s, replay) = t.as_key(ADMIN_KEY, "POST", "/api/destinations/ads/replay", None).await;
    assert_eq!((s, replay["replayed"].as_u64()), (200, Some(1)), "{replay}");
    assert_eq!(down.seen.lock().unwrap().len(), 1);
    assert_eq!(t.dpo("GET", "/api/destinations/ads/dead", None).await.1["dead_letters"], json!([]));

    // A rectification reaches every destination that received her data (Art. 19).
    let (s, r) = t.dpo("POST", "/api/dsr", Some(json!({"kind": "rectification", "identifier": "user_id:kim", "traits": {"firstName": "Kimberley"}}))).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["request"]["detail"]["forwarded"], 2, "{r}");
    drain(&t).await;
    for r in [&rx, &down] {
        let seen = r.seen.lock().unwrap();
        let last: Value = serde_json::from_str(&seen.last().unwrap().1).unwrap();
        assert_eq!((last["kind"].as_str(), last["request"]["changes"]["firstName"].as_str()), (Some("rectification"), Some("Kimberley")), "{last}");
    }

    // Kim is erased: every destination that received her data gets the request, with a
    // receipt each, and nothing about her stays on disk once delivered.
    let (s, e) = t.dpo("POST", "/api/dsr", Some(json!({"kind": "erasure", "identifier": "user_id:kim"}))).await;
    assert_eq!(s, 200, "{e}");
    assert_eq!(e["erasure"]["forwarded"], 2, "{e}");
    drain(&t).await;
    for r in [&rx, &down] {
        let seen = r.seen.lock().unwrap();
        let last: Value = serde_json::from_str(&seen.last().unwrap().1).unwrap();
        assert_eq!((last["type"].as_str(), last["kind"].as_str()), (Some("rights_request"), Some("erasure")), "{last}");
        assert!(last["request"]["identifiers"].as_array().unwrap().iter().any(|i| i["value"] == "kim"), "{last}");
    }
    let id = e["request"]["id"].as_i64().unwrap();
    let (_, f) = t.dpo("GET", &format!("/api/dsr/{id}/forwards"), None).await;
    let f = f["forwards"].as_array().unwrap().clone();
    assert_eq!(f.len(), 2);
    assert!(f.iter().all(|x| x["status"] == "delivered" && x["response_status"] == 200), "{f:?}");
    let hits = t.scan(&["kim@example.fr", "kim-view-", "Kimberley"]);
    assert!(hits.is_empty(), "left behind: {hits:#?}");
    // Lou, who never received anything, was never named to anyone.
    assert!(!rx.seen.lock().unwrap().iter().any(|s| s.1.contains("\"lou\"")));
}

#[tokio::test]
async fn destinations_refuse_private_addresses_and_bad_definitions() {
    let t = spawn_app().await;
    let post = |b: Value| t.as_key(ADMIN_KEY, "POST", "/api/destinations", Some(b));
    for url in ["http://127.0.0.1:9/hook", "http://169.254.169.254/latest/meta-data", "http://[::1]/x", "http://10.0.0.8/x", "http://localhost/x"] {
        let (s, e) = post(json!({"name": "x", "url": url, "purposes": [RECS]})).await;
        assert_eq!((s, e["error"].as_str()), (422, Some("private_address")), "{url}: {e}");
    }
    assert_eq!(post(json!({"name": "x", "url": "ftp://example.com/", "purposes": [RECS]})).await.1["error"], "invalid_url");
    assert_eq!(post(json!({"name": "x", "url": "https://user:pw@example.com/", "purposes": [RECS]})).await.1["error"], "invalid_url");
    assert_eq!(post(json!({"name": "x", "url": "https://example.com/", "purposes": []})).await.1["error"], "missing_purpose");
    assert_eq!(post(json!({"name": "x", "url": "https://example.com/", "purposes": ["nope"]})).await.1["error"], "unknown_purpose");
    assert_eq!(post(json!({"name": "x", "url": "https://example.com/", "purposes": [RECS], "secret": "short"})).await.1["error"], "invalid_secret");
    assert_eq!(post(json!({"name": "x", "url": "https://example.com/", "purposes": [RECS], "max_attempts": 0})).await.1["error"], "invalid_limits");
    assert_eq!(post(json!({"name": "x", "url": "https://example.com/", "purposes": [RECS], "colour": "red"})).await.0, 400);
    assert_eq!(t.as_key(MARKETER_KEY, "POST", "/api/destinations", Some(json!({"name": "x", "url": "https://example.com/", "purposes": [RECS]}))).await.0, 403);
    assert_eq!(t.dpo("GET", "/api/destinations", None).await.1["destinations"], json!([]), "nothing was stored");
    let ok = post(json!({"name": "x", "url": "https://example.com/hook", "purposes": [RECS]})).await;
    assert_eq!(ok.0, 201, "{}", ok.1);
    assert_eq!(post(json!({"name": "x", "url": "https://example.com/hook", "purposes": [RECS]})).await.0, 409);
}

#[tokio::test]
async fn audience_exports_list_lawful_members_with_optional_hashing() {
    let t = spawn_app().await;
    person(&t, "max", "Max", None).await;
    person(&t, "nia", "Nia", None).await;
    assert_eq!(t.post("/v1/identify", json!({"userId": "max", "traits": {"phone": "06 12 34 56 78"}})).await.status(), 200);
    consent(&t, "max", "advertising.targeted", true).await;
    let (s, a) = t.as_key(MARKETER_KEY, "POST", "/api/audiences", Some(json!({"name": "ads", "purpose": "advertising.targeted", "rule": "everyone"}))).await;
    assert_eq!(s, 201, "{a}");
    let csv = t.call("GET", "/api/audiences/ads/export", Some(MARKETER_KEY), None).await;
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = csv.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "profile,user_id,email,phone");
    assert_eq!(lines.len(), 2, "only the consenting member: {csv}");
    assert!(lines[1].ends_with(",max,max@example.fr,+33612345678"), "{csv}");
    let jsonl = t.call("GET", "/api/audiences/ads/export?format=jsonl&hashed=true", Some(MARKETER_KEY), None).await.text().await.unwrap();
    let row: Value = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
    use sha2::Digest;
    assert_eq!(row["email_sha256"], hex::encode(sha2::Sha256::digest(b"max@example.fr")));
    assert_eq!(row["phone_sha256"], hex::encode(sha2::Sha256::digest(b"+33612345678")));
    assert!(!jsonl.contains("max@example.fr"));
    // Withdrawn since the last refresh: the export checks again.
    consent(&t, "max", "advertising.targeted", false).await;
    let csv = t.call("GET", "/api/audiences/ads/export", Some(MARKETER_KEY), None).await.text().await.unwrap();
    assert_eq!(csv.lines().count(), 1, "{csv}");
    assert_eq!(t.call("GET", "/api/audiences/ads/export?format=xml", Some(MARKETER_KEY), None).await.status(), 400);
    assert_eq!(t.call("GET", "/api/audiences/nope/export", Some(MARKETER_KEY), None).await.status(), 404);
    assert_eq!(t.call("GET", "/api/audiences/ads/export", Some(ANALYST_KEY), None).await.status(), 403);
    let (_, audit) = t.dpo("GET", "/api/audit?action=audience.exported", None).await;
    assert_eq!(audit["entries"].as_array().unwrap().len(), 3, "{audit}");
}

#[tokio::test]
async fn the_frequency_cap_holds_across_campaigns() {
    let mail = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(mail.path(), &[]);
    let t = spawn_app_with(&smtp_config_capped(sink.port, 1)).await;
    person(&t, "oda", "Oda", None).await;
    consent(&t, "oda", EMAIL, true).await;
    for name in ["first", "second"] {
        let c = json!({"name": name, "audience": "everyone", "subject": name, "body": "{{unsubscribe_url}}"});
        assert_eq!(t.as_key(MARKETER_KEY, "POST", "/api/campaigns", Some(c)).await.0, 201);
    }
    assert_eq!(t.as_key(MARKETER_KEY, "POST", "/api/campaigns/first/send", None).await.1["sent"], 1);
    let (_, r) = t.as_key(MARKETER_KEY, "POST", "/api/campaigns/second/send", None).await;
    assert_eq!((r["sent"].as_u64(), r["suppressed"]["frequency_cap"].as_u64()), (Some(0), Some(1)), "{r}");
    assert_eq!(sink.messages().len(), 1);
}
