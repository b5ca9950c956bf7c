//! The privacy layer end to end over HTTP: minimisation, consent, the rights desk, erasure
//! proven by a raw scan of the data directory, retention, the register, the audit log, and
//! access control for every role and endpoint.

mod common;

use common::*;
use serde_json::{json, Value};

fn identify(user: &str, traits: Value) -> Value {
    json!({"type": "identify", "userId": user, "traits": traits})
}

fn viewed(user: &str, product: &str) -> Value {
    json!({"type": "track", "userId": user, "event": "Product Viewed", "properties": {"product_id": product}})
}

#[tokio::test]
async fn an_undeclared_field_never_reaches_disk_and_is_counted() {
    let t = spawn_app().await;
    let r = t
        .post(
            "/v1/identify",
            json!({"userId": "u-min", "traits": {"email": "min@example.fr", "shoeSize": "MARKER-SHOE-93817"},
                   "context": {"ip": "10.1.2.3", "secretThing": "MARKER-CTX-11235"}, "mood": "MARKER-TOP-4471"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = t.post("/v1/track", json!({"userId": "u-min", "event": "Secret Survey", "properties": {"answer": "MARKER-EVT-7781"}})).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "undeclared_event");
    let p = t.profile_by("email=min@example.fr").await;
    assert!(p["traits"].get("shoeSize").is_none() && p["traits"]["email"] == "min@example.fr");
    assert!(t.scan(&["MARKER-SHOE-93817", "MARKER-CTX-11235", "MARKER-TOP-4471", "MARKER-EVT-7781"]).is_empty());
    // The scan does see what is stored: the declared email is there.
    assert!(!t.scan(&["min@example.fr"]).is_empty());
    let (s, m) = t.dpo("GET", "/api/privacy/minimisation", None).await;
    assert_eq!(s, 200);
    let fields: Vec<(String, String, String)> = m["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["event"].as_str().unwrap().into(), f["field"].as_str().unwrap().into(), f["reason"].as_str().unwrap().into()))
        .collect();
    for (e, f) in [("identify", "traits.shoeSize"), ("identify", "context.secretThing"), ("identify", "mood"), ("Secret Survey", "(event)")] {
        assert!(fields.contains(&(e.into(), f.into(), "undeclared".into())), "{e} {f} in {fields:?}");
    }
}

#[tokio::test]
async fn a_withdrawn_consent_stops_storage_of_that_purpose_at_once() {
    let t = spawn_app().await;
    let (s, c) = t
        .consent(json!({"userId": "u-c", "purposes": {"analytics": false, "personalisation.recommendations": true}, "method": "banner", "notice_version": "v1"}), &[("user-agent", "TestBrowser/1.0")])
        .await;
    assert_eq!(s, 200, "{c}");
    let receipts = c["receipts"].as_array().unwrap();
    assert_eq!(receipts.len(), 2);
    assert_eq!(receipts[0]["evidence"]["ip_truncated"], "127.0.0.0/24");
    assert_eq!(receipts[0]["evidence"]["user_agent"], "TestBrowser/1.0");
    assert_eq!(receipts[0]["notice_version"], "v1");
    assert_eq!(receipts[0]["notice_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(receipts[0]["at"].as_i64().unwrap() % 1000, 0, "time to the second");

    assert_eq!(t.post("/v1/track", viewed("u-c", "P1")).await.status(), 200);
    let before = t.events_stored().await;
    let (s, _) = t.consent(json!({"userId": "u-c", "purposes": {"personalisation.recommendations": false}}), &[]).await;
    assert_eq!(s, 200);
    let r = t.post("/v1/track", viewed("u-c", "P2")).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "no_legal_basis");
    assert_eq!(t.events_stored().await, before, "nothing stored once consent is withdrawn");
    // Account data (contract) is still kept.
    assert_eq!(t.post("/v1/identify", identify("u-c", json!({"email": "c@example.fr"}))).await.status(), 200);
    assert!(t.scan(&["P2"]).iter().all(|h| !h.contains("confidant.db")) || t.scan(&["\"P2\""]).is_empty());

    // Segment's context.consent on an event: recorded once, as a receipt, and obeyed.
    let ev = json!({"batch": [
        {"type": "track", "userId": "u-c", "event": "Product Viewed", "properties": {"product_id": "P3"}, "messageId": "m-seg-1",
         "context": {"consent": {"categoryPreferences": {"Personalization": true}}}},
        {"type": "track", "userId": "u-c", "event": "Product Viewed", "properties": {"product_id": "P4"}, "messageId": "m-seg-2",
         "context": {"consent": {"categoryPreferences": {"Personalization": true}}}}]});
    let r: Value = t.post("/v1/batch", ev).await.json().await.unwrap();
    assert_eq!(r["accepted"], 2, "{r}");
    let id = t.profile_by("user_id=u-c").await["id"].as_str().unwrap().to_owned();
    let (_, consent) = t.dpo("GET", &format!("/api/profiles/{id}/consent"), None).await;
    let methods: Vec<&str> = consent["receipts"].as_array().unwrap().iter().map(|r| r["method"].as_str().unwrap()).collect();
    assert_eq!(methods.iter().filter(|m| **m == "segment_context").count(), 1, "only changes are recorded: {methods:?}");
    assert_eq!(consent["lawful"]["personalisation.recommendations"], true);
    assert_eq!(consent["lawful"]["analytics"], false);

    // Sec-GPC: an objection to targeted advertising, recorded with method gpc.
    let r = t.client.post(format!("{}/v1/track", t.base)).basic_auth(WRITE_KEY, Some("")).header("Sec-GPC", "1").json(&viewed("u-g", "P1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let id = t.profile_by("user_id=u-g").await["id"].as_str().unwrap().to_owned();
    let (_, consent) = t.dpo("GET", &format!("/api/profiles/{id}/consent"), None).await;
    assert_eq!(consent["receipts"][0]["method"], "gpc");
    assert_eq!(consent["receipts"][0]["purpose"], "advertising.targeted");
    assert_eq!(consent["receipts"][0]["granted"], false);
    let gpc: Value = t.client.get(format!("{}/.well-known/gpc.json", t.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(gpc["gpc"], true);
}

fn tc_string(purposes_consent: &[u8]) -> String {
    use base64::Engine;
    let purposes: u64 = purposes_consent.iter().fold(0, |m, p| m | 1 << (24 - p));
    let fields: &[(u64, usize)] = &[(2, 6), (1, 36), (1, 36), (300, 12), (1, 12), (1, 6), (0, 12), (100, 12), (4, 6), (1, 1), (0, 1), (0, 12), (purposes, 24), (0, 24), (0, 16)];
    let mut bits = Vec::new();
    for (v, len) in fields {
        for i in (0..*len).rev() {
            bits.push((v >> i) & 1 == 1);
        }
    }
    let bytes: Vec<u8> = bits.chunks(8).map(|c| c.iter().enumerate().fold(0u8, |b, (i, x)| b | (u8::from(*x) << (7 - i)))).collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn consent_calls_are_validated_and_bad_ones_change_nothing() {
    let t = spawn_app().await;
    let before = t.receipts_total().await;
    for (body, status, code) in [
        (json!({"userId": "u", "purposes": {"marketing.pigeons": true}}), 422, "unknown_purpose"),
        (json!({"userId": "u", "advertising_categories": {"tobacco": false}}), 422, "unknown_category"),
        (json!({"userId": "u", "tcString": "!!not-a-tc-string!!"}), 422, "invalid_tc_string"),
        (json!({"purposes": {"analytics": true}}), 422, "missing_identity"),
        (json!({"userId": "u", "purposes": {"analytics": true}, "method": "telepathy"}), 422, "invalid_method"),
        (json!({"userId": "u"}), 422, "no_decision"),
        (json!({"userId": "u", "purposes": {"analytics": "yes"}}), 400, "invalid_body"),
        (json!({"userId": "u", "purposes": {}, "favourite": 1}), 400, "invalid_body"),
        (json!({"email": "not-an-email", "purposes": {"analytics": true}}), 400, "invalid_email"),
    ] {
        let (s, r) = t.consent(body.clone(), &[]).await;
        assert_eq!((s, r["error"].as_str().unwrap_or("")), (status, code), "{body}: {r}");
        assert!(!r["message"].as_str().unwrap().contains("pigeons") || code == "unknown_purpose");
    }
    let r = t.client.post(format!("{}/v1/consent", t.base)).json(&json!({"userId": "u", "purposes": {"analytics": true}})).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(t.receipts_total().await, before, "no receipt from a refused call");
    assert_eq!(t.app.store().totals().await.unwrap().profiles, 0, "no subject created by a refused call");

    // A valid TC string: purposes 1, 3, 4 and 7 consented: advertising (3, 4, 7) granted;
    // recommendations (5, 6) and analytics (8, 9) not.
    let (s, r) = t.consent(json!({"anonymousId": "a-tcf", "tcString": tc_string(&[1, 3, 4, 7])}), &[]).await;
    assert_eq!(s, 200, "{r}");
    let got: Vec<(String, bool, String)> = r["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["purpose"].as_str().unwrap().into(), x["granted"].as_bool().unwrap(), x["method"].as_str().unwrap().into()))
        .collect();
    assert!(got.contains(&("advertising.targeted".into(), true, "tcf".into())), "{got:?}");
    assert!(got.contains(&("personalisation.recommendations".into(), false, "tcf".into())), "{got:?}");
    assert!(r["receipts"][0]["evidence"]["tc_string"].is_string());
}

async fn seed_person(t: &TestApp, who: &str) {
    let anon = format!("anon-{who}-7731");
    let user = format!("{who}-uid-5521");
    // Browsing anonymously, a purchase signed in elsewhere, then a sign-in that joins both.
    assert_eq!(t.post("/v1/page", json!({"anonymousId": anon, "name": "Accueil", "properties": {"path": "/"}})).await.status(), 200);
    assert_eq!(t.post("/v1/track", viewed(&user, "SKU-9")).await.status(), 200);
    let traits = json!({"email": format!("{who}.erase@example.fr"), "phone": if who == "alice" { "+33 6 12 34 56 78" } else { "+33 7 98 76 54 32" },
                        "firstName": format!("{who}-Aliénor"), "lastName": format!("Quenneville-{who}")});
    let r = t.post("/v1/identify", json!({"userId": user, "anonymousId": anon, "traits": traits})).await;
    assert_eq!(r.status(), 200);
    let order = json!({"type": "track", "userId": user, "event": "Order Completed",
                       "properties": {"order_id": format!("{who}-order-1"), "revenue": 42.5, "currency": "EUR"}});
    assert_eq!(t.post("/v1/track", order).await.status(), 200);
    let (s, _) = t.consent(json!({"userId": user, "purposes": {"marketing.communications.email": true}}), &[]).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn an_erasure_while_running_leaves_no_byte_of_the_subject_and_spares_the_others() {
    let t = spawn_app().await;
    seed_person(&t, "alice").await;
    seed_person(&t, "bob").await;
    // Read Alice's profile, so her data has been through the read path too.
    let alice = t.profile_by("email=alice.erase@example.fr").await;
    let alice_id = alice["id"].as_str().unwrap().to_owned();
    let alice_texts = ["alice.erase@example.fr", "+33612345678", "alice-Aliénor", "Quenneville-alice", "alice-uid-5521", "anon-alice-7731", "alice-order-1"];
    assert!(!t.scan(&alice_texts).is_empty(), "the scan finds Alice before the erasure (it is no no-op)");

    let (s, r) = t.dpo("POST", "/api/dsr", Some(json!({"kind": "erasure", "identifier": "email:Alice.Erase@example.fr"}))).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["request"]["status"], "completed");
    assert!(r["erasure"]["events"].as_u64().unwrap() >= 3, "{r}");
    assert!(r["erasure"]["merges"].as_u64().unwrap() >= 1, "{r}");
    let text = r.to_string();
    assert!(!text.contains("alice.erase") && !text.contains("5521"), "the answer holds no personal data: {text}");

    let hits = t.scan(&alice_texts);
    assert!(hits.is_empty(), "left behind: {hits:#?}");
    // Bob is intact, on disk and through the API.
    assert!(!t.scan(&["bob.erase@example.fr"]).is_empty());
    let bob = t.profile_by("email=bob.erase@example.fr").await;
    assert_eq!(bob["traits"]["firstName"], "bob-Aliénor");
    assert_eq!(bob["event_count"], 4);
    let (s, _) = t.dpo("GET", &format!("/api/profiles/{alice_id}"), None).await;
    assert_eq!(s, 404);

    // The ledgers still verify; the erasure is audited without personal data.
    let (s, v) = t.dpo("GET", "/api/audit/verify", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["intact"], true);
    let (_, audit) = t.dpo("GET", "/api/audit?action=dsr.erasure", None).await;
    let actions: Vec<&str> = audit["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert!(actions.contains(&"dsr.erasure.completed") && actions.contains(&"dsr.erasure.received"), "{actions:?}");
    assert!(!audit.to_string().contains("alice"), "{audit}");

    // Erasing again: a clear answer, nothing held.
    let (s, r) = t.dpo("POST", "/api/dsr", Some(json!({"kind": "erasure", "identifier": "email:alice.erase@example.fr"}))).await;
    assert_eq!(s, 200);
    assert_eq!(r["request"]["status"], "no_data", "{r}");

    // New data about Alice is collected again (no suppression was asked)...
    assert_eq!(t.post("/v1/identify", identify("alice-uid-5521", json!({"email": "alice.erase@example.fr"}))).await.status(), 200);
    // ...unless the erasure asked for suppression.
    let (s, _) = t.dpo("POST", "/api/dsr", Some(json!({"kind": "erasure", "identifier": "user_id:bob-uid-5521", "suppress": true}))).await;
    assert_eq!(s, 200);
    let r = t.post("/v1/identify", identify("bob-uid-5521", json!({"firstName": "Bob"}))).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "suppressed");
    let r = t.post("/v1/track", json!({"type": "track", "anonymousId": "anon-bob-7731", "event": "Product Viewed"})).await;
    assert_eq!(r.status(), 400, "every identifier of the erased subject is suppressed");
}

#[tokio::test]
async fn the_export_holds_everything_and_why() {
    let t = spawn_app().await;
    seed_person(&t, "carol").await;
    let (s, r) = t.dpo("POST", "/api/dsr", Some(json!({"kind": "access", "identifier": "phone:07 98 76 54 32"}))).await;
    assert_eq!(s, 200, "{r}");
    let x = &r["export"];
    assert_eq!(x["format"], "confidant.subject-export.v1");
    let kinds: Vec<&str> = x["identities"].as_array().unwrap().iter().map(|i| i["kind"].as_str().unwrap()).collect();
    for k in ["user_id", "email", "phone", "anonymous_id"] {
        assert!(kinds.contains(&k), "{kinds:?}");
    }
    assert_eq!(x["events"].as_array().unwrap().len(), 4);
    assert!(x["traits"].as_array().unwrap().iter().any(|t| t["key"] == "firstName" && t["category"] == "user.name"));
    assert_eq!(x["consent"]["receipts"].as_array().unwrap().len(), 1);
    assert!(!x["merges"].as_array().unwrap().is_empty());
    let processing = x["processing"].as_array().unwrap();
    let email = processing.iter().find(|p| p["category"] == "user.contact.email").unwrap();
    assert!(email["purposes"].as_array().unwrap().iter().any(|p| p["purpose"] == "account" && p["legal_basis"] == "contract" && p["retention"]["days"] == 730));
    assert_eq!(r["request"]["status"], "completed");
    assert!(r["request"]["deadline"].as_i64().unwrap() - r["request"]["requested_at"].as_i64().unwrap() == 30 * 86_400_000);
}

#[tokio::test]
async fn rectification_restriction_and_objection_are_honoured() {
    let t = spawn_app().await;
    seed_person(&t, "dan").await;
    let id = "email:dan.erase@example.fr";
    let (s, r) = t.dpo("POST", "/api/dsr", Some(json!({"kind": "rectification", "identifier": id, "traits": {"firstName": "Daniel", "lastName": null}}))).await;
    assert_eq!(s, 200, "{r}");
    let p = t.profile_by("email=dan.erase@example.fr").await;
    assert_eq!(p["traits"]["firstName"], "Daniel");
    assert_eq!(p["trait_provenance"]["firstName"]["source"], "(rights desk)");
    assert!(p["traits"].get("lastName").is_none());
    assert!(t.scan(&["Quenneville-dan"]).is_empty(), "the corrected value is gone from disk too");
    let pid = p["id"].as_str().unwrap().to_owned();

    // Restriction: erasure is refused (the data must be kept) and nothing changes.
    assert_eq!(t.dpo("POST", "/api/dsr", Some(json!({"kind": "restriction", "identifier": id}))).await.0, 200);
    let (s, r) = t.dpo("POST", "/api/dsr", Some(json!({"kind": "restriction", "identifier": id}))).await;
    assert_eq!((s, r["error"].as_str().unwrap()), (409, "conflict"));
    let events = t.events_stored().await;
    let (s, r) = t.dpo("POST", "/api/dsr", Some(json!({"kind": "erasure", "identifier": id}))).await;
    assert_eq!((s, r["error"].as_str().unwrap()), (409, "restricted"), "{r}");
    assert_eq!(t.events_stored().await, events);
    let (_, l) = t.dpo("GET", &format!("/api/profiles/{pid}/lawful?purpose=marketing.communications.email"), None).await;
    assert_eq!(l["lawful"], false, "nothing but storage while restricted");
    assert_eq!(t.dpo("POST", "/api/dsr", Some(json!({"kind": "restriction", "identifier": id, "lift": true}))).await.0, 200);
    let (_, l) = t.dpo("GET", &format!("/api/profiles/{pid}/lawful?purpose=marketing.communications.email"), None).await;
    assert_eq!(l["lawful"], true);

    // Objection to email marketing and to one advertising category: at once.
    let (s, r) = t.dpo("POST", "/api/dsr", Some(json!({"kind": "objection", "identifier": id, "purposes": ["marketing.communications.email"], "advertising_categories": ["alcohol"]}))).await;
    assert_eq!(s, 200, "{r}");
    let (_, l) = t.dpo("GET", &format!("/api/profiles/{pid}/lawful?purpose=marketing.communications.email"), None).await;
    assert_eq!(l["lawful"], false);

    // Bad requests: specific answers, nothing recorded.
    let (_, before) = t.dpo("GET", "/api/dsr", None).await;
    for (body, status, code) in [
        (json!({"kind": "erasure", "identifier": "passport:123"}), 422, "invalid_identifier"),
        (json!({"kind": "erasure", "identifier": "email:nope"}), 422, "invalid_identifier"),
        (json!({"kind": "teleport", "identifier": id}), 422, "unknown_kind"),
        (json!({"kind": "rectification", "identifier": id, "traits": {"shoeSize": 44}}), 422, "undeclared_trait"),
        (json!({"kind": "objection", "identifier": id, "purposes": ["marketing.pigeons"]}), 422, "unknown_purpose"),
        (json!({"kind": "erasure"}), 400, "invalid_body"),
    ] {
        let (s, r) = t.dpo("POST", "/api/dsr", Some(body.clone())).await;
        assert_eq!((s, r["error"].as_str().unwrap_or("")), (status, code), "{body}: {r}");
    }
    let (_, after) = t.dpo("GET", "/api/dsr", None).await;
    assert_eq!(before["requests"].as_array().unwrap().len(), after["requests"].as_array().unwrap().len());
}

#[tokio::test]
async fn retention_removes_what_may_no_longer_be_kept() {
    let t = spawn_app().await;
    let old = |user: &str, ts: &str, product: &str| json!({"type": "track", "userId": user, "event": "Products Searched", "timestamp": ts, "properties": {"query": product}});
    // Searches 3 years ago and today: search history is kept 760 days (analytics).
    assert_eq!(t.post("/v1/track", old("keep-u", "2023-06-01T10:00:00Z", "OLD-QUERY-1")).await.status(), 200);
    assert_eq!(t.post("/v1/track", old("keep-u", "2026-11-01T10:00:00Z", "NEW-QUERY-1")).await.status(), 200);
    // A subject last seen four years ago: gone entirely.
    assert_eq!(t.post("/v1/identify", json!({"userId": "gone-u", "timestamp": "2022-01-01T00:00:00Z", "traits": {"email": "gone@example.fr"}})).await.status(), 200);
    assert_eq!(t.post("/v1/track", old("gone-u", "2022-01-02T00:00:00Z", "GONE-QUERY")).await.status(), 200);
    let events = t.events_stored().await;

    let (s, dry) = t.dpo("POST", "/api/retention/run?dry_run=true", None).await;
    assert_eq!(s, 200, "{dry}");
    assert_eq!(dry["subjects_erased"], 1, "{dry}");
    assert_eq!(dry["events_deleted"], 3, "{dry}");
    assert_eq!(t.events_stored().await, events, "a dry run changes nothing");

    let (s, r) = t.dpo("POST", "/api/retention/run", None).await;
    assert_eq!(s, 200);
    assert_eq!(r, json!({"dry_run": false, "subjects_examined": 2, "subjects_erased": 1, "events_deleted": 3, "events_by_category": {"user.behavior.search_history": 1}}));
    assert_eq!(t.events_stored().await, events - 3);
    assert!(t.scan(&["OLD-QUERY-1", "gone@example.fr", "GONE-QUERY"]).is_empty());
    assert!(!t.scan(&["NEW-QUERY-1"]).is_empty());
    let (_, audit) = t.dpo("GET", "/api/audit?action=retention", None).await;
    assert!(audit["entries"].as_array().unwrap().iter().any(|e| e["action"] == "retention.run"));
}

#[tokio::test]
async fn the_register_is_generated_from_what_the_system_does() {
    let t = spawn_app().await;
    seed_person(&t, "erin").await;
    let (s, r) = t.dpo("GET", "/api/ropa?format=json", None).await;
    assert_eq!(s, 200);
    let ids: Vec<&str> = r["processing"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
    let configured: Vec<String> = t.app.policy().purposes().iter().map(|p| p.id.clone()).collect();
    assert_eq!(ids, configured);
    assert_eq!(r["subjects"], 1);
    assert_eq!(r["sources"]["web"], 4);
    let account = &r["processing"][0];
    assert_eq!(account["legal_basis_article"], "Art. 6(1)(b)");
    let email = account["data_categories"].as_array().unwrap().iter().find(|c| c["key"] == "user.contact.email").unwrap();
    assert_eq!(email["subjects_now"], 1);
    let md = t.call("GET", "/api/ropa?format=md", Some(DPO_KEY), None).await.text().await.unwrap();
    assert!(md.contains("Registre des activités de traitement") && md.contains("Publicité ciblée") && md.contains("EU-US Data Privacy Framework"));
    let html = t.call("GET", "/api/ropa?format=html", Some(DPO_KEY), None).await.text().await.unwrap();
    assert!(html.starts_with("<!doctype html>") && html.contains("l&#39;Exemple"));
    assert_eq!(t.dpo("GET", "/api/ropa?format=pdf", None).await.0, 400);
}

#[tokio::test]
async fn a_tampered_audit_log_or_ledger_is_detected() {
    let t = spawn_app().await;
    seed_person(&t, "fay").await;
    let p = t.profile_by("email=fay.erase@example.fr").await;
    let (s, v) = t.dpo("GET", "/api/audit/verify", None).await;
    assert_eq!((s, &v["intact"]), (200, &json!(true)), "{v}");
    assert!(v["audit_log"]["entries"].as_u64().unwrap() >= 2);
    // Every read of personal data is in the log, with the pseudonymous id only.
    let (_, a) = t.dpo("GET", &format!("/api/audit?subject={}", p["id"].as_str().unwrap()), None).await;
    assert!(a["entries"].as_array().unwrap().iter().any(|e| e["action"] == "profile.search" && e["actor"] == "admin:ops"));

    // A few more entries, so that one can be removed from the middle. (Removing the newest
    // entries is only detectable against a head hash kept elsewhere: `audit verify` prints it.)
    for _ in 0..3 {
        t.dpo("GET", &format!("/api/profiles/{}", p["id"].as_str().unwrap()), None).await;
    }
    let actor = t.sql_text("SELECT actor FROM audit_log WHERE seq = 1");
    t.sql("UPDATE audit_log SET actor = 'nobody' WHERE seq = 1");
    let (s, v) = t.dpo("GET", "/api/audit/verify", None).await;
    assert_eq!(s, 409);
    assert!(v["audit_log"]["broken"].as_str().unwrap().contains("entry 1 was modified"), "{v}");
    // Put back exactly: intact again (the check is exact, not a heuristic). Then remove one.
    t.sql(&format!("UPDATE audit_log SET actor = '{}' WHERE seq = 1", actor.replace('\'', "''")));
    assert_eq!(t.dpo("GET", "/api/audit/verify", None).await.0, 200);
    t.sql("DELETE FROM audit_log WHERE seq = 2");
    let (s, v) = t.dpo("GET", "/api/audit/verify", None).await;
    assert_eq!(s, 409, "{v}");
    assert!(v["audit_log"]["broken"].as_str().unwrap().contains("removed"), "{v}");
    // The consent ledger: a withdrawn consent turned into a grant.
    t.sql("UPDATE consent_receipts SET granted = 1 - granted WHERE seq = 1");
    let (_, v) = t.dpo("GET", "/api/audit/verify", None).await;
    assert!(v["consent_ledger"]["broken"].as_str().unwrap().contains("modified"), "{v}");
}

/// The permission matrix of the README, every role against every endpoint.
#[tokio::test]
async fn every_role_on_every_endpoint() {
    let t = spawn_app().await;
    seed_person(&t, "gus").await;
    let pid = t.profile_by("email=gus.erase@example.fr").await["id"].as_str().unwrap().to_owned();
    // (method, path, body, roles allowed) — allowed means not 401/403.
    let dsr_body = json!({"kind": "access", "identifier": "email:gus.erase@example.fr"});
    let endpoints: Vec<(&str, String, Option<Value>, &[&str])> = vec![
        ("GET", "/api/profiles?email=gus.erase@example.fr".into(), None, &["admin", "dpo"]),
        ("GET", format!("/api/profiles/{pid}"), None, &["admin", "dpo", "analyst"]),
        ("GET", format!("/api/profiles/{pid}/events"), None, &["admin", "dpo", "analyst"]),
        ("GET", format!("/api/profiles/{pid}/merges"), None, &["admin", "dpo"]),
        ("GET", format!("/api/profiles/{pid}/conflicts"), None, &["admin", "dpo"]),
        ("GET", format!("/api/profiles/{pid}/consent"), None, &["admin", "dpo"]),
        ("GET", format!("/api/profiles/{pid}/lawful?purpose=analytics"), None, &["admin", "dpo", "marketer"]),
        ("POST", format!("/api/profiles/{pid}/unmerge"), None, &["admin", "dpo"]),
        ("GET", "/api/privacy/purposes".into(), None, &["admin", "dpo", "analyst", "marketer"]),
        ("GET", "/api/privacy/minimisation".into(), None, &["admin", "dpo", "analyst"]),
        ("GET", "/api/quality".into(), None, &["admin", "dpo", "analyst"]),
        ("POST", "/api/identity/match".into(), None, &["admin", "dpo"]),
        ("POST", "/api/analytics/run".into(), None, &["admin", "dpo"]),
        ("GET", "/api/forecast?product=none".into(), None, &["admin", "dpo", "analyst", "marketer"]),
        ("GET", "/api/recommendations?n=1".into(), None, &["admin", "dpo", "marketer"]),
        ("GET", "/api/stock/cover".into(), None, &["admin", "dpo", "analyst", "marketer"]),
        ("POST", "/api/stock".into(), Some(json!({"levels": [{"product": "P-M", "quantity": 1}]})), &["admin", "marketer"]),
        ("POST", "/api/recommendations/train".into(), None, &["admin", "dpo"]),
        ("GET", "/api/audiences".into(), None, &["admin", "dpo", "analyst", "marketer"]),
        ("GET", "/api/audiences/everyone".into(), None, &["admin", "dpo", "analyst", "marketer"]),
        ("POST", "/api/audiences/preview".into(), Some(json!({"purpose": "analytics", "rule": "everyone"})), &["admin", "dpo", "analyst", "marketer"]),
        ("POST", "/api/audiences".into(), Some(json!({"name": "matrix", "purpose": "analytics", "rule": "everyone"})), &["admin", "marketer"]),
        ("PUT", "/api/audiences/matrix".into(), Some(json!({"description": "d"})), &["admin", "marketer"]),
        ("GET", "/api/audiences/everyone/members".into(), None, &["admin", "dpo", "marketer"]),
        ("GET", "/api/audiences/everyone/history".into(), None, &["admin", "dpo", "marketer"]),
        ("POST", "/api/audiences/refresh".into(), None, &["admin", "dpo", "marketer"]),
        ("DELETE", "/api/audiences/matrix".into(), None, &["admin", "marketer"]),
        ("GET", "/api/identity/reviews".into(), None, &["admin", "dpo"]),
        ("POST", "/api/identity/reviews/1".into(), Some(json!({"decision": "merge"})), &["admin", "dpo"]),
        ("GET", "/api/dsr".into(), None, &["admin", "dpo"]),
        ("POST", "/api/dsr".into(), Some(dsr_body), &["admin", "dpo"]),
        ("GET", "/api/dsr/1".into(), None, &["admin", "dpo"]),
        ("GET", "/api/audit".into(), None, &["admin", "dpo"]),
        ("GET", "/api/console/users".into(), None, &["admin"]),
        ("POST", "/api/console/users/999/disable".into(), None, &["admin"]),
        ("POST", "/api/console/users".into(), Some(json!({"email": "m@boutique.example", "name": "M", "role": "analyst", "password": "a long enough password"})), &["admin"]),
        ("GET", "/api/audit/verify".into(), None, &["admin", "dpo"]),
        ("GET", "/api/ropa".into(), None, &["admin", "dpo"]),
        ("POST", "/api/retention/run?dry_run=true".into(), None, &["admin", "dpo"]),
        ("POST", "/api/campaigns".into(), Some(json!({"name": "matrix", "audience": "everyone", "subject": "s", "body": "b"})), &["admin", "marketer"]),
        ("GET", "/api/campaigns".into(), None, &["admin", "dpo", "marketer"]),
        ("GET", "/api/campaigns/matrix".into(), None, &["admin", "dpo", "marketer"]),
        ("POST", "/api/campaigns/matrix/send?dry_run=true".into(), None, &["admin", "marketer"]),
        ("GET", "/api/campaigns/matrix/deliveries".into(), None, &["admin", "dpo", "marketer"]),
        ("POST", "/api/campaigns/matrix/pause".into(), None, &["admin", "marketer"]),
        ("DELETE", "/api/campaigns/matrix".into(), None, &["admin", "marketer"]),
        ("POST", "/api/destinations".into(), Some(json!({"name": "matrix", "url": "https://example.com/hook", "purposes": ["analytics"]})), &["admin"]),
        ("GET", "/api/destinations".into(), None, &["admin", "dpo"]),
        ("GET", "/api/destinations/matrix".into(), None, &["admin", "dpo"]),
        ("GET", "/api/destinations/matrix/dead".into(), None, &["admin", "dpo"]),
        ("GET", "/api/destinations/matrix/rights".into(), None, &["admin", "dpo"]),
        ("POST", "/api/destinations/matrix/disable".into(), None, &["admin"]),
        ("POST", "/api/destinations/matrix/replay".into(), None, &["admin"]),
        ("POST", "/api/destinations/deliver".into(), None, &["admin"]),
        ("DELETE", "/api/destinations/matrix".into(), None, &["admin"]),
        ("GET", "/api/dsr/1/forwards".into(), None, &["admin", "dpo"]),
        ("GET", "/api/audiences/everyone/export".into(), None, &["admin", "marketer"]),
    ];
    let keys = [("admin", ADMIN_KEY), ("dpo", DPO_KEY), ("analyst", ANALYST_KEY), ("marketer", MARKETER_KEY), ("write", WRITE_ROLE_KEY), ("source write key", WRITE_KEY)];
    for (method, path, body, allowed) in &endpoints {
        for (role, key) in keys {
            let s = t.call(method, path, Some(key), body.clone()).await.status().as_u16();
            if allowed.contains(&role) {
                assert!(s != 401 && s != 403, "{role} should be allowed on {method} {path}, got {s}");
            } else {
                assert_eq!(s, 403, "{role} must be refused on {method} {path}");
            }
        }
        assert_eq!(t.call(method, path, None, body.clone()).await.status(), 401, "{method} {path} without a key");
        assert_eq!(t.call(method, path, Some("not-a-key-0123456789"), body.clone()).await.status(), 401, "{method} {path} bad key");
    }
    // Analysts get pseudonymised data: no direct identifier anywhere.
    let a = t.call("GET", &format!("/api/profiles/{pid}"), Some(ANALYST_KEY), None).await.text().await.unwrap();
    let e = t.call("GET", &format!("/api/profiles/{pid}/events"), Some(ANALYST_KEY), None).await.text().await.unwrap();
    for text in [&a, &e] {
        for secret in ["gus.erase", "gus-uid", "anon-gus", "Quenneville", "Aliénor", "+337", "127.0.0"] {
            assert!(!text.contains(secret), "{secret} leaked to an analyst: {text}");
        }
    }
    assert!(a.contains("\"pseudonymised\":true") && e.contains("SKU-9"), "{a} {e}");
}

#[tokio::test]
async fn sensitive_fields_are_encrypted_at_rest_and_erasure_destroys_the_key() {
    let t = spawn_app().await;
    let r = t
        .post("/v1/identify", json!({"userId": "hal-1", "traits": {"email": "hal@example.fr", "birthday": "1987-03-14", "firstName": "Hal"}}))
        .await;
    assert_eq!(r.status(), 200);
    let order = json!({"userId": "hal-1", "event": "Order Completed", "properties": {"order_id": "o-hal", "payment_method": "VISA-MARK-4242"}});
    assert_eq!(t.post("/v1/track", order).await.status(), 200);
    // Readable through the API...
    let p = t.profile_by("user_id=hal-1").await;
    assert_eq!(p["traits"]["birthday"], "1987-03-14");
    let id = p["id"].as_str().unwrap().to_owned();
    let events = t.api_json(&format!("/api/profiles/{id}/events")).await;
    assert!(events.to_string().contains("VISA-MARK-4242"), "{events}");
    // ...but on disk only as ciphertext, while plain fields are there (the scan works).
    assert!(t.scan(&["1987-03-14", "VISA-MARK-4242"]).is_empty(), "sensitive values on disk in clear");
    assert!(!t.scan(&["hal@example.fr"]).is_empty());
    let stored = t.sql_text("SELECT value FROM traits WHERE key = 'birthday'");
    assert!(stored.contains("\"$enc\""), "{stored}");
    let keys = t.sql_i64("SELECT count(*) FROM subject_keys");
    assert_eq!(keys, 1);
    // The export decrypts; a rectified sensitive value is encrypted too.
    let (_, x) = t.dpo("POST", "/api/dsr", Some(json!({"kind": "access", "identifier": "user_id:hal-1"}))).await;
    assert!(x["export"]["traits"].as_array().unwrap().iter().any(|t| t["key"] == "birthday" && t["value"] == "1987-03-14"));
    let (s, _) = t.dpo("POST", "/api/dsr", Some(json!({"kind": "rectification", "identifier": "user_id:hal-1", "traits": {"birthday": "1987-04-14"}}))).await;
    assert_eq!(s, 200);
    assert_eq!(t.profile_by("user_id=hal-1").await["traits"]["birthday"], "1987-04-14");
    assert!(t.scan(&["1987-04-14", "1987-03-14"]).is_empty());
    // Erasure destroys the key.
    let (_, r) = t.dpo("POST", "/api/dsr", Some(json!({"kind": "erasure", "identifier": "user_id:hal-1"}))).await;
    assert_eq!(r["erasure"]["keys_destroyed"], 1, "{r}");
    let keys = t.sql_i64("SELECT count(*) FROM subject_keys");
    assert_eq!(keys, 0);
}

fn order(user: &str, id: &str, days_ago: i64, total: &str) -> Value {
    let ts = confidant_core::time::format_millis(confidant_service::now_millis() - days_ago * 86_400_000);
    json!({"type": "track", "userId": user, "event": "Order Completed", "timestamp": ts,
           "properties": {"order_id": id, "total": total, "currency": "EUR"}})
}

#[tokio::test]
async fn computed_traits_follow_lawfulness_objection_and_erasure() {
    let t = spawn_app().await;
    // Fifteen customers with repeat orders at different paces, one who objected to analytics
    // before the run, and one order sent twice.
    let mut batch = Vec::new();
    for c in 0..15i64 {
        let user = format!("cust-{c}");
        batch.push(identify(&user, json!({"email": format!("cust{c}.analytics@example.fr")})));
        for k in 0..(1 + c % 5) {
            batch.push(order(&user, &format!("ORD-{c}-{k}"), 400 - c * 20 - k * 15, &format!("{}.{:02}", 20 + 7 * c + k, (c * 13) % 100)));
        }
    }
    batch.push(order("cust-11", "ORD-11-0", 80, "97.43"));
    batch.push(identify("cust-obj", json!({"email": "obj.analytics@example.fr"})));
    batch.push(order("cust-obj", "ORD-OBJ-1", 40, "10"));
    batch.push(order("cust-obj", "ORD-OBJ-2", 10, "12"));
    let r = t.post("/v1/batch", json!({"batch": batch})).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let (s, _) = t.consent(json!({"userId": "cust-obj", "purposes": {"analytics": false}, "method": "banner", "notice_version": "v1"}), &[]).await;
    assert_eq!(s, 200);

    let (s, run) = t.dpo("POST", "/api/analytics/run", None).await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(run["customers"], 15, "{run}");
    assert_eq!(run["customers_not_lawful"], 1);
    assert_eq!(run["orders"], (0..15).map(|c| 1 + c % 5).sum::<i64>(), "the resent order counts once");
    assert_eq!(run["not_fitted"], json!([]), "{run}");
    assert_eq!(run["currency"], "EUR");
    assert!(run["bgnbd"]["r"].as_f64().is_some(), "{run}");

    let p = t.profile_by("email=cust4.analytics@example.fr").await;
    let pid = p["id"].as_str().unwrap().to_owned();
    let (_, full) = t.dpo("GET", &format!("/api/profiles/{pid}"), None).await;
    let ct = &full["computed_traits"];
    assert_eq!(ct["orders_count"], 5, "{ct}");
    // 48.52 + 49.52 + 50.52 + 51.52 + 52.52, exact in cents.
    assert_eq!(ct["total_spent"], json!({"amount": "252.60", "currency": "EUR"}));
    assert!(ct["rfm_segment"].is_string() && ct["rfm_score"].as_str().unwrap().len() == 3, "{ct}");
    let alive = ct["p_alive"].as_f64().unwrap();
    assert!((alive + ct["churn_risk"].as_f64().unwrap() - 1.0).abs() < 1e-3);
    assert!(ct["clv_12m"]["amount"].as_str().is_some(), "{ct}");
    // The objector got nothing.
    let obj = t.profile_by("email=obj.analytics@example.fr").await;
    let (_, obj_full) = t.dpo("GET", &format!("/api/profiles/{}", obj["id"].as_str().unwrap()), None).await;
    assert_eq!(obj_full["computed_traits"], json!({}));
    // The export carries the computed traits.
    let (s, x) = t.dpo("POST", "/api/dsr", Some(json!({"kind": "access", "identifier": "email:cust4.analytics@example.fr"}))).await;
    assert_eq!(s, 200);
    let keys: Vec<&str> = x["export"]["computed_traits"].as_array().unwrap().iter().map(|c| c["key"].as_str().unwrap()).collect();
    assert!(keys.contains(&"rfm_segment") && keys.contains(&"clv_12m"), "{keys:?}");

    // An objection takes effect at once, before any new run.
    let (s, _) = t.consent(json!({"userId": "cust-4", "purposes": {"analytics": false}, "method": "banner", "notice_version": "v1"}), &[]).await;
    assert_eq!(s, 200);
    let (_, after) = t.dpo("GET", &format!("/api/profiles/{pid}"), None).await;
    assert_eq!(after["computed_traits"], json!({}), "objection clears computed traits at once");

    // Erasure removes a subject's computed traits with everything else.
    let count = |sql: &str| -> i64 { t.sql_i64(sql) };
    let before = count("SELECT count(*) FROM computed_traits");
    let (s, r) = t.dpo("POST", "/api/dsr", Some(json!({"kind": "erasure", "identifier": "email:cust7.analytics@example.fr"}))).await;
    assert_eq!(s, 200, "{r}");
    let after = count("SELECT count(*) FROM computed_traits");
    assert!(after < before && after > 0, "{before} -> {after}");
    assert_eq!(count("SELECT count(*) FROM computed_traits WHERE profile_id NOT IN (SELECT id FROM profiles)"), 0);
    assert!(t.scan(&["cust7.analytics@example.fr", "ORD-7-0"]).is_empty());
    // A new run does not bring them back, and keeps the objector out.
    let (_, run2) = t.dpo("POST", "/api/analytics/run", None).await;
    assert_eq!(run2["customers"], 13, "{run2}");
    assert_eq!(run2["customers_not_lawful"], 2);
}

#[tokio::test]
async fn product_forecasts_use_lawful_sales_and_refuse_bad_requests() {
    let t = spawn_app().await;
    // Ten weeks of daily orders of one product, more at weekends; an objector's large orders
    // must not count.
    let mut batch = Vec::new();
    let mut lawful_units = 0;
    for d in 1..=70i64 {
        let qty = if d % 7 < 2 { 5 } else { 2 };
        lawful_units += qty;
        let ts = confidant_core::time::format_millis(confidant_service::now_millis() - d * 86_400_000);
        batch.push(json!({"type": "track", "userId": format!("fc-{}", d % 9), "event": "Order Completed", "timestamp": ts,
                          "properties": {"order_id": format!("FC-{d}"), "total": 10, "currency": "EUR",
                                         "products": [{"product_id": "P-SOCK", "quantity": qty, "price": 5}]}}));
        if d % 10 == 0 {
            batch.push(json!({"type": "track", "userId": "fc-obj", "event": "Order Completed", "timestamp": ts,
                              "properties": {"order_id": format!("FC-OBJ-{d}"), "total": 10, "currency": "EUR",
                                             "products": [{"product_id": "P-SOCK", "quantity": 100}]}}));
        }
    }
    assert_eq!(t.post("/v1/batch", json!({"batch": batch})).await.status(), 200);
    let (s, _) = t.consent(json!({"userId": "fc-obj", "purposes": {"analytics": false}, "method": "banner", "notice_version": "v1"}), &[]).await;
    assert_eq!(s, 200);

    let (s, f) = t.dpo("GET", "/api/forecast?product=P-SOCK&horizon=14", None).await;
    assert_eq!(s, 200, "{f}");
    assert_eq!(f["units_sold"], lawful_units as f64, "the objector's sales are left out");
    assert_eq!(f["days"].as_array().unwrap().len(), 14);
    let point: Vec<f64> = f["forecast"]["point"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(point.len(), 14);
    assert!(point.iter().all(|v| (0.0..=20.0).contains(v)), "{point:?}");
    for k in 0..14 {
        let (lo, hi) = (f["forecast"]["lower_95"][k].as_f64().unwrap(), f["forecast"]["upper_95"][k].as_f64().unwrap());
        assert!(lo <= point[k] && point[k] <= hi && lo >= 0.0, "day {k}: {lo} {} {hi}", point[k]);
    }
    assert!(f["forecast"]["model"].is_string() && f["forecast"]["backtest_mase"].as_f64().is_some(), "{f}");

    for (path, status, code) in [
        ("/api/forecast?product=P-NONE", 404, "not_found"),
        ("/api/forecast?product=P-SOCK&horizon=0", 422, "invalid_horizon"),
        ("/api/forecast?product=P-SOCK&horizon=two", 422, "invalid_horizon"),
        ("/api/forecast?horizon=7", 422, "missing_product"),
    ] {
        let (s, body) = t.dpo("GET", path, None).await;
        assert_eq!((s, body["error"].as_str().unwrap_or("")), (status, code), "{path}: {body}");
    }
}

#[tokio::test]
async fn weekly_forecasts_and_stock_cover_from_lawful_sales() {
    let t = spawn_app().await;
    // Ten weeks of daily orders of socks: 2 a day on weekdays, 5 at weekends (20 a week).
    let mut batch = Vec::new();
    for d in 1..=70i64 {
        let ts = confidant_core::time::format_millis(confidant_service::now_millis() - d * 86_400_000);
        let dow = (confidant_service::now_millis() / 86_400_000 - d + 3).rem_euclid(7); // 0 = Monday
        let qty = if dow >= 5 { 5 } else { 2 };
        batch.push(json!({"type": "track", "userId": format!("wk-{}", d % 9), "event": "Order Completed", "timestamp": ts,
                          "properties": {"order_id": format!("WK-{d}"), "total": 10, "currency": "EUR",
                                         "products": [{"product_id": "P-SOCK", "quantity": qty}]}}));
    }
    assert_eq!(t.post("/v1/batch", json!({"batch": batch})).await.status(), 200);

    let (s, f) = t.dpo("GET", "/api/forecast?product=P-SOCK&interval=week&horizon=4", None).await;
    assert_eq!(s, 200, "{f}");
    assert_eq!(f["interval"], "week");
    let weeks: Vec<&str> = f["days"].as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
    assert_eq!(weeks.len(), 4);
    for w in &weeks {
        let day = confidant_core::time::parse_timestamp(&format!("{w}T00:00:00Z")).unwrap() / 86_400_000;
        assert_eq!((day + 3).rem_euclid(7), 0, "{w} starts a week (a Monday)");
    }
    for v in f["forecast"]["point"].as_array().unwrap() {
        assert!((12.0..=28.0).contains(&v.as_f64().unwrap()), "about 20 a week: {f}");
    }
    assert!((9..=10).contains(&f["history_days"].as_u64().unwrap()), "complete weeks only: {f}");

    // Stock: 30 pairs of socks (about 10 days at 2.9 a day), and a product that never sold.
    let (s, r) = t.as_key(ADMIN_KEY, "POST", "/api/stock", Some(json!({"levels": [{"product": "P-SOCK", "quantity": 30}, {"product": "P-IDLE", "quantity": 10}]}))).await;
    assert_eq!((s, r["recorded"].as_u64()), (200, Some(2)), "{r}");
    let (s, c) = t.dpo("GET", "/api/stock/cover?horizon=60", None).await;
    assert_eq!(s, 200, "{c}");
    let p = &c["products"];
    assert_eq!(p[0]["product"], "P-SOCK", "shortest cover first: {c}");
    let days = p[0]["days_of_cover"].as_f64().unwrap();
    assert!((7.0..=14.0).contains(&days), "{c}");
    assert!(p[0]["days_of_cover_prudent"].as_f64().unwrap() <= days, "{c}");
    assert!((2.3..=3.5).contains(&p[0]["daily_demand"].as_f64().unwrap()), "{c}");
    assert!(p[0]["stockout_on"].is_string());
    assert_eq!((p[1]["product"].as_str(), p[1]["days_of_cover"].is_null()), (Some("P-IDLE"), true), "{c}");

    for (method, path, body, status, code) in [
        ("GET", "/api/forecast?product=P-SOCK&interval=month", None, 422, "invalid_interval"),
        ("GET", "/api/forecast?product=P-SOCK&interval=week&horizon=105", None, 422, "invalid_horizon"),
        ("GET", "/api/stock/cover?horizon=0", None, 422, "invalid_horizon"),
        ("POST", "/api/stock", Some(json!({"levels": [{"product": "P-SOCK", "quantity": -1}]})), 422, "invalid_quantity"),
        ("POST", "/api/stock", Some(json!({"levels": [{"product": "P-SOCK", "quantity": 1, "at": "2099-01-01T00:00:00Z"}]})), 422, "invalid_time"),
        ("POST", "/api/stock", Some(json!({"levels": [{"product": " ", "quantity": 1}]})), 422, "invalid_product"),
        ("POST", "/api/stock", Some(json!({"levels": []})), 422, "no_levels"),
        ("POST", "/api/stock", Some(json!({"stock": 3})), 400, "invalid_body"),
    ] {
        let r = t.call(method, path, Some(ADMIN_KEY), body).await;
        let s = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        assert_eq!((s, v["error"].as_str().unwrap_or("")), (status, code), "{path}: {v}");
    }
    assert_eq!(t.call("POST", "/api/stock", Some(ANALYST_KEY), Some(json!({"levels": [{"product": "P", "quantity": 1}]}))).await.status(), 403);
    // The refused calls changed nothing.
    let (_, c2) = t.dpo("GET", "/api/stock/cover?horizon=60", None).await;
    assert_eq!(c2["products"][0]["stock"], 30.0);
    assert_eq!(c2["products"].as_array().unwrap().len(), 2);
}
