//! The console against the real server: accounts created with an admin key, sign-in with
//! lockout, the pages by role, every view of personal data audited, audiences previewed and
//! saved, unmerge from the 360 view, and forms refused without their token.

mod common;

use common::*;
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery staple";

async fn account(t: &TestApp, email: &str, role: &str) {
    let (s, v) = t.as_key(ADMIN_KEY, "POST", "/api/console/users", Some(json!({"email": email, "name": format!("{role} one"), "role": role, "password": PASSWORD}))).await;
    assert_eq!(s, 201, "{v}");
}

async fn sign_in(t: &TestApp, email: &str, password: &str) -> (Browser, Page) {
    let mut b = Browser::new(t);
    let login = b.get("/console/login").await;
    assert_eq!(login.status, 200);
    let csrf = login.csrf();
    let p = b.post("/console/login", &[("csrf", &csrf), ("email", email), ("password", password)]).await;
    (b, p)
}

async fn actions(t: &TestApp) -> Vec<(String, String, Option<String>)> {
    let (_, a) = t.dpo("GET", "/api/audit?limit=500", None).await;
    a["entries"].as_array().unwrap().iter().map(|e| (e["actor"].as_str().unwrap().to_owned(), e["action"].as_str().unwrap().to_owned(), e["subject"].as_str().map(str::to_owned))).collect()
}

#[tokio::test]
async fn accounts_are_created_with_an_admin_key_and_checked() {
    let t = spawn_app().await;
    let post = |b: Value, key: &'static str| t.as_key(key, "POST", "/api/console/users", Some(b));
    let ok = json!({"email": "ana@boutique.example", "name": "Ana", "role": "admin", "password": PASSWORD});
    assert_eq!(post(ok.clone(), DPO_KEY).await.0, 403, "admin keys only");
    assert_eq!(t.call("POST", "/api/console/users", None, Some(ok.clone())).await.status(), 401);
    assert_eq!(post(json!({"email": "ana@boutique.example", "name": "Ana", "role": "admin", "password": "short"}), ADMIN_KEY).await.1["error"], "weak_password");
    assert_eq!(post(json!({"email": "ana", "name": "Ana", "role": "admin", "password": PASSWORD}), ADMIN_KEY).await.1["error"], "invalid_email");
    assert_eq!(post(json!({"email": "ana@boutique.example", "name": "Ana", "role": "subject", "password": PASSWORD}), ADMIN_KEY).await.1["error"], "invalid_role");
    assert_eq!(post(json!({"email": "ana@boutique.example", "name": "Ana", "role": "write", "password": PASSWORD}), ADMIN_KEY).await.1["error"], "invalid_role");
    assert_eq!(post(json!({"email": "ana@boutique.example", "extra": 1}), ADMIN_KEY).await.0, 400);
    let (_, none) = t.as_key(ADMIN_KEY, "GET", "/api/console/users", None).await;
    assert_eq!(none["users"], json!([]), "nothing stored by the refusals");
    let (s, v) = post(ok.clone(), ADMIN_KEY).await;
    assert_eq!(s, 201, "{v}");
    assert!(!v.to_string().contains(PASSWORD) && !v.to_string().contains("argon2"), "{v}");
    assert_eq!(post(ok, ADMIN_KEY).await.0, 409);
    let (_, list) = t.as_key(ADMIN_KEY, "GET", "/api/console/users", None).await;
    assert!(!list.to_string().contains("argon2"), "hashes never leave: {list}");
    let hits = t.scan(&[PASSWORD]);
    assert!(hits.is_empty(), "the password is stored only as a hash: {hits:?}");

    // Disabling an account ends its sessions at once.
    let (mut b, p) = sign_in(&t, "ana@boutique.example", PASSWORD).await;
    assert_eq!(p.status, 303);
    assert_eq!(b.get("/console").await.status, 200);
    let uid = v["id"].as_i64().unwrap();
    assert_eq!(t.as_key(DPO_KEY, "POST", &format!("/api/console/users/{uid}/disable"), None).await.0, 403);
    assert_eq!(t.as_key(ADMIN_KEY, "POST", "/api/console/users/999/disable", None).await.0, 404);
    assert_eq!(t.as_key(ADMIN_KEY, "POST", "/api/console/users/abc/disable", None).await.0, 400);
    assert_eq!(t.as_key(ADMIN_KEY, "POST", &format!("/api/console/users/{uid}/disable"), None).await.0, 200);
    assert_eq!(b.get("/console").await.location(), "/console/login", "the session ended");
    assert_eq!(sign_in(&t, "ana@boutique.example", PASSWORD).await.1.status, 401, "and it cannot sign in");
}

#[tokio::test]
async fn an_admin_signs_in_finds_a_customer_and_works_from_the_console() {
    let t = spawn_app().await;
    account(&t, "ana@boutique.example", "admin").await;
    // A customer known first anonymously, then by email: one merge to undo.
    assert_eq!(t.post("/v1/page", json!({"anonymousId": "anon-lea-77", "name": "Accueil"})).await.status(), 200);
    assert_eq!(t.post("/v1/identify", json!({"userId": "lea", "traits": {"email": "lea.roux@example.fr", "firstName": "Léa", "city": "Lyon"}})).await.status(), 200);
    assert_eq!(t.post("/v1/track", json!({"userId": "lea", "anonymousId": "anon-lea-77", "event": "Signed In"})).await.status(), 200);
    assert_eq!(t.post("/v1/track", json!({"userId": "lea", "event": "Order Completed", "properties": {"order_id": "o1", "revenue": 42}})).await.status(), 200);

    let (_, p) = sign_in(&t, "ana@boutique.example", "wrong password!!").await;
    assert_eq!(p.status, 401);
    assert!(p.text.contains("Adresse ou mot de passe incorrect"), "{}", p.text);
    let (mut b, p) = sign_in(&t, "ana@boutique.example", PASSWORD).await;
    assert_eq!((p.status, p.location()), (303, "/console"), "{}", p.text);
    let home = b.get("/console").await;
    assert_eq!(home.status, 200, "{}", home.text);
    assert!(home.text.contains("<svg") && home.text.contains("Consentement par finalité"), "charts on the dashboard");
    assert!(home.text.contains("Qualité des données par source"), "data quality on the dashboard");
    assert!(home.headers["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));

    let found = b.get("/console/customers?q=lea.roux%40example.fr").await;
    assert_eq!(found.status, 200);
    let id = found.text.split("/console/customers/").nth(1).and_then(|s| s.get(..16)).expect("a result").to_owned();
    let view = b.get(&format!("/console/customers/{id}")).await;
    assert_eq!(view.status, 200);
    for needle in ["lea.roux@example.fr", "Léa", "Lyon", "Order Completed", "Défaire"] {
        assert!(view.text.contains(needle), "{needle} missing from the 360 view");
    }
    let audit = actions(&t).await;
    assert!(audit.iter().any(|(actor, action, subject)| actor == "admin:admin one" && action == "console.profile_viewed" && subject.as_deref() == Some(id.as_str())), "{audit:?}");
    assert!(audit.iter().any(|(_, action, _)| action == "console.profiles_searched"));

    // Unmerge from the 360 view.
    let token = view.csrf();
    let merge = view.text.split("name=\"merge\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let p = b.post(&format!("/console/customers/{id}/unmerge"), &[("csrf", &token), ("merge", &merge)]).await;
    assert_eq!(p.status, 303, "{}", p.text);
    let (_, merges) = t.as_key(ADMIN_KEY, "GET", &format!("/api/profiles/{id}/merges"), None).await;
    assert!(merges["merges"].as_array().unwrap().iter().all(|m| !m["undone_at"].is_null()), "{merges}");

    // Audiences: preview the size, then save.
    let page = b.get("/console/audiences").await;
    let token = page.csrf();
    let rule = "trait.city = \"Lyon\"";
    let p = b.post("/console/audiences", &[("csrf", &token), ("name", "lyon"), ("purpose", "analytics"), ("rule", rule), ("action", "preview")]).await;
    assert_eq!(p.status, 200);
    assert!(p.text.contains("correspondent"), "{}", p.text);
    let names = |v: &Value| v["audiences"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    let (_, list) = t.as_key(ADMIN_KEY, "GET", "/api/audiences", None).await;
    assert_eq!(names(&list), ["everyone"], "a preview saves nothing");
    let p = b.post("/console/audiences", &[("csrf", &token), ("name", "lyon"), ("purpose", "analytics"), ("rule", rule), ("action", "save")]).await;
    assert_eq!(p.status, 303, "{}", p.text);
    let (_, list) = t.as_key(ADMIN_KEY, "GET", "/api/audiences", None).await;
    assert!(names(&list).contains(&"lyon".to_owned()), "{list}");
    let p = b.post("/console/audiences", &[("csrf", &token), ("name", "bad"), ("purpose", "analytics"), ("rule", "trait.city ="), ("action", "preview")]).await;
    assert_eq!(p.status, 422, "a rule that does not parse is said");
    // The live preview behind the form: JSON, with the form's token only.
    let p = b.post("/console/audiences/preview", &[("csrf", &token), ("purpose", "analytics"), ("rule", rule)]).await;
    assert_eq!(p.status, 200);
    let v: Value = serde_json::from_str(&p.text).unwrap();
    assert_eq!((v["matching"].as_u64(), v["size"].as_u64()), (Some(1), Some(1)), "{v}");
    assert_eq!(b.post("/console/audiences/preview", &[("csrf", &token), ("purpose", "analytics"), ("rule", "nonsense (")]).await.status, 422);
    assert_eq!(b.post("/console/audiences/preview", &[("purpose", "analytics"), ("rule", rule)]).await.status, 403);

    // The DPO pages.
    for (path, needle) in [("/console/requests", "Demandes"), ("/console/audit?action=console.profile_viewed", "console.profile_viewed"), ("/console/register", "Registre"), ("/console/retention", "Aperçu")] {
        let p = b.get(path).await;
        assert_eq!(p.status, 200, "{path}");
        assert!(p.text.contains(needle), "{path}");
    }

    // A forged or missing token changes nothing.
    let p = b.post("/console/audiences", &[("csrf", "forged"), ("name", "forged"), ("purpose", "analytics"), ("rule", rule), ("action", "save")]).await;
    assert_eq!(p.status, 403);
    let p = b.post("/console/audiences", &[("name", "forged"), ("purpose", "analytics"), ("rule", rule), ("action", "save")]).await;
    assert_eq!(p.status, 403);
    let (_, list) = t.as_key(ADMIN_KEY, "GET", "/api/audiences", None).await;
    assert!(!names(&list).contains(&"forged".to_owned()), "nothing saved: {list}");
    assert!(actions(&t).await.iter().any(|(_, a, _)| a == "console.form_refused"));

    // Rights requests handled from the console: an access export, then the erasure.
    let page = b.get("/console/requests").await;
    let token = page.csrf();
    let p = b.post("/console/requests", &[("csrf", &token), ("kind", "access"), ("identifier", "email:lea.roux@example.fr")]).await;
    assert_eq!(p.status, 200);
    assert!(p.headers["content-disposition"].to_str().unwrap().contains("attachment") && p.text.contains("lea.roux@example.fr"));
    assert_eq!(b.post("/console/requests", &[("csrf", &token), ("kind", "access"), ("identifier", "lea")]).await.status, 400, "an untagged identifier");
    let p = b.post("/console/requests", &[("csrf", &token), ("kind", "erasure"), ("identifier", "email:lea.roux@example.fr")]).await;
    assert_eq!(p.status, 200, "{}", p.text);
    assert_eq!(t.api_json("/api/profiles?email=lea.roux@example.fr").await["profiles"], json!([]));
    // (anon-lea-77 is its own profile again since the unmerge: not hers to erase.)
    let hits = t.scan(&["lea.roux@example.fr", "Léa"]);
    assert!(hits.is_empty(), "left behind: {hits:#?}");
    let (_, dsr) = t.dpo("GET", "/api/dsr", None).await;
    assert!(dsr["requests"].as_array().unwrap().iter().any(|r| r["channel"] == "console" && r["actor"] == "admin:admin one"), "{dsr}");

    // Signing out ends the session on the server.
    let old = b.cookies.get("cf_cs").cloned().unwrap();
    let token = b.get("/console").await.csrf();
    assert_eq!(b.post("/console/logout", &[("csrf", &token)]).await.status, 303);
    let mut replay = Browser::new(&t);
    replay.cookies.insert("cf_cs".into(), old);
    assert_eq!(replay.get("/console").await.location(), "/console/login");
}

#[tokio::test]
async fn roles_lockout_and_forged_sessions() {
    let t = spawn_app_with("[console]\nmax_failed_logins = 3\n").await;
    account(&t, "al@boutique.example", "analyst").await;
    account(&t, "bo@boutique.example", "admin").await;
    assert_eq!(t.post("/v1/identify", json!({"userId": "u1", "traits": {"email": "u1@example.fr"}})).await.status(), 200);
    let id = t.profile_by("email=u1@example.fr").await["id"].as_str().unwrap().to_owned();

    // An analyst has the dashboard and audiences, not the people.
    let (mut al, p) = sign_in(&t, "al@boutique.example", PASSWORD).await;
    assert_eq!(p.status, 303);
    assert_eq!(al.get("/console").await.status, 200);
    assert_eq!(al.get("/console/audiences").await.status, 200);
    for path in ["/console/customers?q=u1%40example.fr".to_owned(), format!("/console/customers/{id}"), "/console/audit".into(), "/console/requests".into()] {
        let p = al.get(&path).await;
        assert_eq!(p.status, 403, "{path}");
        assert!(!p.text.contains("u1@example.fr"));
    }
    let token = al.get("/console/audiences").await.csrf();
    let p = al.post("/console/audiences", &[("csrf", &token), ("name", "x"), ("purpose", "analytics"), ("rule", "everyone"), ("action", "save")]).await;
    assert_eq!(p.status, 403, "an analyst previews but does not save");

    // Without a session, or with a forged one: the sign-in page; nothing of a customer.
    let mut nobody = Browser::new(&t);
    assert_eq!(nobody.get(&format!("/console/customers/{id}")).await.location(), "/console/login");
    nobody.cookies.insert("cf_cs".into(), "Zm9yZ2VkLXNlc3Npb24tdG9rZW4tdGhhdC1kb2VzLW5vdC1leGlzdA".into());
    assert_eq!(nobody.get(&format!("/console/customers/{id}")).await.location(), "/console/login");
    assert!(actions(&t).await.iter().any(|(_, a, _)| a == "console.session_refused"), "a forged session is audited");
    // A customer's privacy-centre session opens nothing in the console.
    let mut customer = Browser::new(&t);
    customer.cookies.insert("cf_ps".into(), al.cookies.get("cf_cs").cloned().unwrap());
    assert_eq!(customer.get(&format!("/console/customers/{id}")).await.location(), "/console/login");

    // Lockout: after 3 wrong passwords even the right one is refused for a while.
    for _ in 0..2 {
        assert_eq!(sign_in(&t, "bo@boutique.example", "not the password").await.1.status, 401);
    }
    assert_eq!(sign_in(&t, "bo@boutique.example", "not the password").await.1.status, 429);
    assert_eq!(sign_in(&t, "bo@boutique.example", PASSWORD).await.1.status, 429);
    // An unknown account gets the same answer as a wrong password.
    let (_, p) = sign_in(&t, "nobody@boutique.example", PASSWORD).await;
    assert_eq!(p.status, 401);
    // The login form without its token.
    let mut b = Browser::new(&t);
    b.get("/console/login").await;
    assert_eq!(b.post("/console/login", &[("email", "al@boutique.example"), ("password", PASSWORD)]).await.status, 403);
}
