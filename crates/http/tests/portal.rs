//! The privacy centre against the real server and a real SMTP server process (aiosmtpd): the
//! emailed code, the customer's own data and choices, export, erasure, and every way in that
//! must fail (wrong, expired, replayed or over-tried codes, forged sessions, forms without
//! their token, another person's session).

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const MARKETING: &str = "marketing.communications.email";

fn config(port: u16) -> String {
    format!("[smtp]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\nfrom = \"La Boutique <bonjour@boutique.example>\"\n")
}

async fn person(t: &TestApp, user: &str, email: &str) {
    let r = t.post("/v1/identify", json!({"userId": user, "traits": {"email": email, "firstName": "Zoé", "lastName": "Martin"}})).await;
    assert_eq!(r.status(), 200);
    let (s, v) = t.consent(json!({"userId": user, "purposes": {MARKETING: true}, "method": "banner"}), &[]).await;
    assert_eq!(s, 200, "{v}");
}

async fn ask_code(b: &mut Browser, email: &str) -> Page {
    let home = b.get("/privacy").await;
    assert_eq!(home.status, 200);
    let csrf = home.csrf();
    b.post("/privacy/code", &[("csrf", &csrf), ("email", email), ("lang", "fr")]).await
}

async fn enter_code(b: &mut Browser, code: &str) -> Page {
    let page = b.get("/privacy/verify").await;
    let csrf = page.csrf();
    b.post("/privacy/verify", &[("csrf", &csrf), ("code", code), ("lang", "fr")]).await
}

async fn audit_actions(t: &TestApp) -> Vec<String> {
    let (_, a) = t.dpo("GET", "/api/audit?actor=subject:privacy-centre&limit=500", None).await;
    a["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn a_customer_signs_in_with_an_emailed_code_and_acts_on_their_own_data() {
    let mail = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(mail.path(), &[]);
    let t = spawn_app_with(&config(sink.port)).await;
    person(&t, "zoe", "zoe.martin@example.fr").await;
    person(&t, "yann", "yann.le.goff@example.fr").await;

    let mut b = Browser::new(&t);
    let home = b.get("/privacy").await;
    let csp = home.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(home.text.contains("lang=\"fr\"") && home.text.contains("Recevoir un code"), "French by default");
    let sent = ask_code(&mut b, "Zoe.Martin@example.fr").await;
    assert_eq!((sent.status, sent.location()), (303, "/privacy/verify"));
    let code = sink.code(1).await;
    assert_eq!(sink.recipients(), ["zoe.martin@example.fr"]);

    // A wrong code first: refused, attempts left said; then the right one.
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let p = enter_code(&mut b, wrong).await;
    assert_eq!(p.status, 400);
    assert!(p.text.contains("4 essai(s)"), "{}", p.text);
    let p = enter_code(&mut b, &code).await;
    assert_eq!((p.status, p.location()), (303, "/privacy"));

    let me = b.get("/privacy").await;
    assert_eq!(me.status, 200);
    assert!(me.text.contains("zoe.martin@example.fr") && me.text.contains("Martin"), "her own data");
    assert!(!me.text.contains("yann"), "nobody else's");
    assert!(me.text.contains("Base légale") && me.text.contains("Conservation"), "why and for how long");
    assert!(audit_actions(&t).await.contains(&"privacy_centre.viewed".to_owned()), "the view is audited");

    // Withdraw marketing consent: a receipt with the notice version, effective at once.
    let csrf = me.csrf();
    let p = b.post("/privacy/consent", &[("csrf", &csrf), ("shown", MARKETING), ("lang", "fr")]).await;
    assert_eq!(p.status, 303, "{}", p.text);
    let found = t.api_json("/api/profiles?email=zoe.martin@example.fr").await;
    let id = found["profiles"][0]["id"].as_str().unwrap().to_owned();
    let (_, receipts) = t.dpo("GET", &format!("/api/profiles/{id}/consent"), None).await;
    assert_eq!(receipts["lawful"][MARKETING], false, "withdrawn at once: {receipts}");
    let last = receipts["receipts"].as_array().unwrap().iter().find(|r| r["method"] == "privacy_centre").expect("a receipt from the centre").clone();
    assert_eq!((last["granted"].as_bool(), last["notice_version"].is_string()), (Some(false), true), "{last}");

    // Advertising topics: refuse one, keep the others; only that decision is recorded.
    let me = b.get("/privacy").await;
    assert!(me.text.contains("name=\"category\" value=\"alcohol\""), "a switch per advertising category");
    let before = receipts["receipts"].as_array().unwrap().len();
    let csrf = me.csrf();
    let mut form = vec![("csrf", csrf.as_str()), ("shown", MARKETING)];
    for c in ["fashion", "alcohol", "gambling"] {
        form.push(("shown_category", c));
        if c != "alcohol" {
            form.push(("category", c));
        }
    }
    assert_eq!(b.post("/privacy/consent", &form).await.status, 303);
    let (_, receipts) = t.dpo("GET", &format!("/api/profiles/{id}/consent"), None).await;
    let all = receipts["receipts"].as_array().unwrap();
    assert_eq!(all.len(), before + 1, "one new receipt: {receipts}");
    assert!(all.iter().any(|r| r["purpose"] == "advertising.targeted" && r["scope"] == "alcohol" && r["granted"] == false && r["method"] == "privacy_centre"), "{receipts}");
    let p = b.post("/privacy/consent", &[("csrf", csrf.as_str()), ("shown_category", "casinos")]).await;
    assert_eq!(p.status, 400, "an unknown topic");

    // Correct a detail, then download the export.
    let me = b.get("/privacy?lang=en").await;
    assert!(me.text.contains("lang=\"en\"") && me.text.contains("Download my data"));
    let csrf = me.csrf();
    let p = b.post("/privacy/rectify", &[("csrf", &csrf), ("t.firstName", "Zoë"), ("t.lastName", "Martin"), ("lang", "en")]).await;
    assert_eq!(p.status, 303, "{}", p.text);
    let p = b.post("/privacy/export", &[("csrf", &csrf)]).await;
    assert_eq!(p.status, 200);
    assert!(p.headers["content-disposition"].to_str().unwrap().contains("attachment"));
    let export: Value = serde_json::from_str(&p.text).unwrap();
    let text = export.to_string();
    assert!(text.contains("zoe.martin@example.fr") && text.contains("Zoë") && !text.contains("yann"), "{text}");

    // The code cannot be used again.
    let mut other = Browser::new(&t);
    other.cookies.insert("cf_pending".into(), b.cookies.get("cf_pending").cloned().unwrap_or_default());
    let replay = enter_code(&mut other, &code).await;
    assert_eq!(replay.status, 400, "a used code fails");
    assert!(other.get("/privacy").await.text.contains("Recevoir un code"), "and opens nothing");

    // Erase: confirmation required, then everything goes, the session with it.
    let p = b.post("/privacy/erase", &[("csrf", &csrf), ("lang", "fr")]).await;
    assert_eq!(p.status, 400, "the confirmation box");
    let p = b.post("/privacy/erase", &[("csrf", &csrf), ("confirm", "yes"), ("lang", "fr")]).await;
    assert_eq!(p.status, 200, "{}", p.text);
    assert!(!b.cookies.contains_key("cf_ps"), "the session cookie is cleared");
    let gone = t.api_json("/api/profiles?email=zoe.martin@example.fr").await;
    assert_eq!(gone["profiles"], json!([]));
    let hits = t.scan(&["zoe.martin@example.fr", "Zoë"]);
    assert!(hits.is_empty(), "left behind: {hits:#?}");
    let yann = t.api_json("/api/profiles?email=yann.le.goff@example.fr").await;
    assert_eq!(yann["profiles"].as_array().unwrap().len(), 1, "the other customer is untouched");
}

#[tokio::test]
async fn sign_in_refuses_bad_codes_and_forms_and_never_says_whether_an_address_is_known() {
    let mail = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(mail.path(), &[]);
    let t = spawn_app_with(&format!("{}[privacy_centre]\ncodes_per_window = 2\ncode_attempts = 3\n", config(sink.port))).await;
    person(&t, "zoe", "zoe.martin@example.fr").await;

    // An unknown address gets the same answer, and no email is sent.
    let mut stranger = Browser::new(&t);
    let p = ask_code(&mut stranger, "nobody@example.fr").await;
    assert_eq!((p.status, p.location()), (303, "/privacy/verify"));
    assert!(stranger.cookies.contains_key("cf_pending"));
    let p = enter_code(&mut stranger, "123456").await;
    assert_eq!(p.status, 400);
    // Not an address at all: said so.
    let mut b = Browser::new(&t);
    assert_eq!(ask_code(&mut b, "not-an-address").await.status, 400);

    // Too many attempts burn the code, the right one included.
    let mut b = Browser::new(&t);
    ask_code(&mut b, "zoe.martin@example.fr").await;
    let code = sink.code(1).await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    assert_eq!(enter_code(&mut b, wrong).await.status, 400);
    assert_eq!(enter_code(&mut b, wrong).await.status, 400);
    assert_eq!(enter_code(&mut b, wrong).await.status, 429);
    assert_eq!(enter_code(&mut b, &code).await.status, 429, "burnt");
    assert_eq!(enter_code(&mut b, "12ab56").await.status, 400, "malformed");

    // An expired code fails.
    let mut b = Browser::new(&t);
    ask_code(&mut b, "zoe.martin@example.fr").await;
    let code = sink.code(2).await;
    t.sql("UPDATE portal_codes SET expires_at = 0");
    let p = enter_code(&mut b, &code).await;
    assert_eq!(p.status, 400);
    assert!(p.text.contains("expiré"), "{}", p.text);

    // The per-person limit: a third code in the window is not sent (the answer is the same).
    let mut b = Browser::new(&t);
    assert_eq!(ask_code(&mut b, "zoe.martin@example.fr").await.status, 303);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.messages().len(), 2, "no third email");

    // A form without its token, or with another browser's: refused, nothing changed, audited.
    let mut b = Browser::new(&t);
    b.get("/privacy").await;
    let p = b.post("/privacy/code", &[("email", "zoe.martin@example.fr")]).await;
    assert_eq!(p.status, 403);
    assert!(p.text.contains("Rien n'a été modifié"), "{}", p.text);
    let mut other = Browser::new(&t);
    let theirs = other.get("/privacy").await.csrf();
    assert_eq!(b.post("/privacy/code", &[("csrf", &theirs), ("email", "zoe.martin@example.fr")]).await.status, 403);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.messages().len(), 2, "nothing was sent");
    assert!(audit_actions(&t).await.contains(&"privacy_centre.form_refused".to_owned()));

    // A forged session cookie opens nothing.
    let mut forged = Browser::new(&t);
    forged.cookies.insert("cf_ps".into(), "bm90LWEtcmVhbC1zZXNzaW9uLXRva2VuLWF0LWFsbA".into());
    assert!(forged.get("/privacy").await.text.contains("Recevoir un code"));
    assert!(audit_actions(&t).await.contains(&"privacy_centre.session_refused".to_owned()), "a forged session is audited");
    forged.cookies.insert("cf_ps".into(), "bm90LWEtcmVhbC1zZXNzaW9uLXRva2VuLWF0LWFsbA".into());
    let p = forged.post("/privacy/export", &[("csrf", "x")]).await;
    assert_eq!(p.status, 401);
    assert!(!p.text.contains("zoe"), "{}", p.text);
    let p = forged.post("/privacy/erase", &[("csrf", "x"), ("confirm", "yes")]).await;
    assert_eq!(p.status, 401);
    let still = t.api_json("/api/profiles?email=zoe.martin@example.fr").await;
    assert_eq!(still["profiles"].as_array().unwrap().len(), 1, "nothing was erased");
    // Oversized forms are refused before anything else.
    let big = "x".repeat(20_000);
    assert_eq!(forged.post("/privacy/code", &[("email", &big)]).await.status, 413);
}

#[tokio::test]
async fn a_signed_in_customer_cannot_use_another_sessions_form_token() {
    let mail = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(mail.path(), &[]);
    let t = spawn_app_with(&config(sink.port)).await;
    person(&t, "zoe", "zoe.martin@example.fr").await;
    person(&t, "yann", "yann.le.goff@example.fr").await;
    let mut zoe = Browser::new(&t);
    ask_code(&mut zoe, "zoe.martin@example.fr").await;
    let c = sink.code(1).await;
    assert_eq!(enter_code(&mut zoe, &c).await.status, 303);
    let mut yann = Browser::new(&t);
    ask_code(&mut yann, "yann.le.goff@example.fr").await;
    let c = sink.code(2).await;
    assert_eq!(enter_code(&mut yann, &c).await.status, 303);
    // Naming Yann in the request changes nothing: the centre acts on the session's subject only.
    let yann_id = t.api_json("/api/profiles?email=yann.le.goff@example.fr").await["profiles"][0]["id"].as_str().unwrap().to_owned();
    let token = zoe.get("/privacy").await.csrf();
    let p = zoe.post("/privacy/export?profile=x", &[("csrf", &token), ("profile", &yann_id), ("identifier", "email:yann.le.goff@example.fr"), ("email", "yann.le.goff@example.fr")]).await;
    assert_eq!(p.status, 200);
    assert!(p.text.contains("zoe.martin@example.fr") && !p.text.contains("yann"), "her own export only");
    assert_eq!(zoe.get(&format!("/privacy?profile={yann_id}")).await.text.contains("yann"), false);
    // Yann's page token does not work with Zoé's session, and vice versa.
    let yann_token = yann.get("/privacy").await.csrf();
    assert_eq!(zoe.post("/privacy/erase", &[("csrf", &yann_token), ("confirm", "yes")]).await.status, 403);
    let z = t.api_json("/api/profiles?email=zoe.martin@example.fr").await;
    assert_eq!(z["profiles"].as_array().unwrap().len(), 1);
    // Signing out ends the session on the server: the old cookie no longer works.
    let token = zoe.get("/privacy").await.csrf();
    let old = zoe.cookies.get("cf_ps").cloned().unwrap();
    assert_eq!(zoe.post("/privacy/signout", &[("csrf", &token)]).await.status, 303);
    let mut replay = Browser::new(&t);
    replay.cookies.insert("cf_ps".into(), old);
    assert_eq!(replay.post("/privacy/export", &[("csrf", &token)]).await.status, 401);
}

/// Asks for a code as a browser at `client` behind the test's proxy: the status answered.
async fn ask_from(t: &TestApp, client: &str, email: &str) -> u16 {
    let mut b = Browser::new(t);
    let home = b.get("/privacy").await;
    let csrf = home.csrf();
    let body: String = form_urlencoded::Serializer::new(String::new()).extend_pairs([("csrf", csrf.as_str()), ("email", email)]).finish();
    let r = b
        .client
        .post(format!("{}/privacy/code", t.base))
        .header("cookie", b.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; "))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-forwarded-for", format!("6.6.6.6, {client}"))
        .body(body)
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

#[tokio::test]
async fn the_per_address_limit_counts_the_client_behind_a_trusted_proxy_and_ignores_the_header_otherwise() {
    let mail = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(mail.path(), &[]);
    // Behind a trusted proxy (the test connects from 127.0.0.1): each client has its own count.
    let t = spawn_app_with_server("trusted_proxies = [\"127.0.0.1\"]", &format!("{}[privacy_centre]\nrequests_per_ip = 2\n", config(sink.port))).await;
    assert_eq!(ask_from(&t, "198.51.100.1", "a@example.fr").await, 303);
    assert_eq!(ask_from(&t, "198.51.100.1", "b@example.fr").await, 303);
    assert_eq!(ask_from(&t, "198.51.100.1", "c@example.fr").await, 429, "the third from one client");
    assert_eq!(ask_from(&t, "198.51.100.2", "c@example.fr").await, 303, "another client behind the same proxy");
    // Without trusted proxies the header is anyone's to forge: the peer is what counts.
    let t = spawn_app_with(&format!("{}[privacy_centre]\nrequests_per_ip = 2\n", config(sink.port))).await;
    assert_eq!(ask_from(&t, "198.51.100.1", "a@example.fr").await, 303);
    assert_eq!(ask_from(&t, "198.51.100.2", "b@example.fr").await, 303);
    assert_eq!(ask_from(&t, "198.51.100.3", "c@example.fr").await, 429, "a forged header does not reset the count");
}
