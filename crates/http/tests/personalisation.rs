//! Personalisation end to end over HTTP: recommendations and audiences, each bound to its
//! purpose, with objection and erasure taking effect at once.

mod common;

use common::*;
use serde_json::{json, Value};

const RECS: &str = "personalisation.recommendations";

fn product(id: &str) -> Value {
    let category = if id.starts_with("book") {
        "books"
    } else {
        "camping"
    };
    json!({"product_id": id, "category": category, "name": format!("Name of {id}")})
}

fn viewed(user: &str, id: &str) -> Value {
    json!({"type": "track", "userId": user, "event": "Product Viewed", "properties": product(id)})
}

fn bought(user: &str, order: &str, ids: &[&str]) -> Value {
    let lines: Vec<Value> = ids.iter().map(|i| product(i)).collect();
    json!({"type": "track", "userId": user, "event": "Order Completed", "properties": {"order_id": order, "total": 10, "currency": "EUR", "products": lines}})
}

async fn pid(t: &TestApp, user: &str) -> String {
    t.profile_by(&format!("user_id={user}")).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn recs(t: &TestApp, query: &str) -> Value {
    let (s, v) = t
        .as_key(
            MARKETER_KEY,
            "GET",
            &format!("/api/recommendations?{query}"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{query}: {v}");
    v
}

fn products(section: &Value) -> Vec<String> {
    section["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["product"].as_str().unwrap().to_owned())
        .collect()
}

/// Two tastes: campers and readers, each knowing three of their four products; campers buy
/// the tent and the stove together. One visitor gave no consent and alone saw a product.
async fn seed_shop(t: &TestApp) {
    let camping = ["tent", "stove", "lamp", "sleeping-bag"];
    let books = ["book-a", "book-b", "book-c", "book-d"];
    let mut batch = Vec::new();
    for c in 0..24 {
        let user = format!("shopper-{c}");
        let items = if c % 2 == 0 { camping } else { books };
        for k in 0..3 {
            batch.push(viewed(&user, items[(c / 2 + k) % 4]));
        }
        if c % 2 == 0 && c < 10 {
            batch.push(bought(&user, &format!("ORD-{c}"), &["tent", "stove"]));
        }
    }
    for _ in 0..5 {
        batch.push(viewed("no-consent", "secret-item"));
        batch.push(viewed("no-consent", "book-a"));
    }
    let r = t.post("/v1/batch", json!({"batch": batch})).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    for c in 0..24 {
        let (s, v) = t.consent(json!({"userId": format!("shopper-{c}"), "purposes": {RECS: true}, "method": "banner"}), &[]).await;
        assert_eq!(s, 200, "{v}");
    }
}

#[tokio::test]
async fn recommendations_are_personal_only_where_lawful_and_forget_at_once() {
    let t = spawn_app().await;
    seed_shop(&t).await;
    let (s, train) = t.dpo("POST", "/api/recommendations/train", None).await;
    assert_eq!(s, 200, "{train}");
    assert_eq!(
        train["subjects"], 24,
        "the visitor without consent is not in the data: {train}"
    );
    assert_eq!(train["subjects_not_lawful"], 1);
    assert_eq!(
        train["products"], 8,
        "secret-item is known only from the visitor without consent"
    );

    // A camper who viewed tent, stove and lamp gets the sleeping bag first.
    let camper = pid(&t, "shopper-0").await;
    let r = recs(&t, &format!("profile={camper}&n=3")).await;
    assert_eq!(
        (r["personalised"].as_bool(), r["reason"].as_str()),
        (Some(true), Some("lawful")),
        "{r}"
    );
    assert_eq!(r["for_you"]["strategy"], "als");
    let mine = products(&r["for_you"]);
    assert_eq!(mine[0], "sleeping-bag", "{r}");
    assert!(
        !mine
            .iter()
            .any(|p| ["tent", "stove", "lamp"].contains(&p.as_str())),
        "seen items are not recommended: {mine:?}"
    );
    assert_eq!(r["for_you"]["items"][0]["category"], "camping");

    // On a product page: similar products, and products bought together by enough customers.
    let r = recs(&t, "context=product:tent&n=3").await;
    assert_eq!(r["personalised"], false);
    let similar = products(&r["similar"]);
    assert!(
        similar
            .iter()
            .all(|p| ["stove", "lamp", "sleeping-bag"].contains(&p.as_str())),
        "{similar:?}"
    );
    assert_eq!(r["bought_together"]["items"][0]["product"], "stove", "{r}");
    assert_eq!(r["bought_together"]["items"][0]["customers"], 5);
    assert_eq!(r["for_you"]["strategy"], "popular_in_category");
    assert!(
        !products(&r["for_you"]).contains(&"tent".to_owned()),
        "the context product is not recommended to itself"
    );

    // The visitor without consent: popularity, and no trace of what only they did.
    let nc = pid(&t, "no-consent").await;
    let r = recs(&t, &format!("profile={nc}&n=20&context=product:book-a")).await;
    assert_eq!(
        (r["personalised"].as_bool(), r["reason"].as_str()),
        (Some(false), Some("not_lawful")),
        "{r}"
    );
    assert!(!r.to_string().contains("secret-item"), "{r}");

    // A shopper who arrives after the training gets recommendations from their history.
    t.post(
        "/v1/batch",
        json!({"batch": [viewed("newcomer", "book-a"), viewed("newcomer", "book-b")]}),
    )
    .await;
    t.consent(
        json!({"userId": "newcomer", "purposes": {RECS: true}, "method": "banner"}),
        &[],
    )
    .await;
    let newcomer = pid(&t, "newcomer").await;
    let r = recs(&t, &format!("profile={newcomer}&n=2")).await;
    assert_eq!(r["personalised"], true, "{r}");
    assert!(
        products(&r["for_you"])
            .iter()
            .all(|p| p.starts_with("book-")),
        "{r}"
    );

    // An objection: the subject leaves the model at once.
    let objector = pid(&t, "shopper-2").await;
    let objector_id = confidant_core::ids::ProfileId::parse(&objector).unwrap();
    assert!(t.app.recommendations_know(&[objector_id]));
    let (s, _) = t
        .consent(
            json!({"userId": "shopper-2", "purposes": {RECS: false}, "method": "privacy_centre"}),
            &[],
        )
        .await;
    assert_eq!(s, 200);
    assert!(
        !t.app.recommendations_know(&[objector_id]),
        "the objector's factors are gone at once"
    );
    let r = recs(&t, &format!("profile={objector}")).await;
    assert_eq!(
        (r["personalised"].as_bool(), r["reason"].as_str()),
        (Some(false), Some("not_lawful")),
        "{r}"
    );

    // An erasure: out of the model at once, and the retrained model never saw them.
    let erased = pid(&t, "shopper-4").await;
    let erased_id = confidant_core::ids::ProfileId::parse(&erased).unwrap();
    let (s, v) = t
        .dpo(
            "POST",
            "/api/dsr",
            Some(json!({"kind": "erasure", "identifier": "user_id:shopper-4"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(!t.app.recommendations_know(&[erased_id]));
    // The background retraining that follows leaves out the objector and the erased subject
    // (24 shoppers and the newcomer, less those two).
    let mut latest = Value::Null;
    for _ in 0..200 {
        let (_, audit) = t
            .dpo("GET", "/api/audit?action=recommendations.trained", None)
            .await;
        latest = audit["entries"][0]["detail"].clone();
        if latest["subjects"] == 23 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(latest["subjects"], 23, "{latest}");
    assert!(
        recs(&t, "n=1").await["model_version"].as_u64().unwrap()
            >= latest["version"].as_u64().unwrap()
    );
    assert!(!t.app.recommendations_know(&[erased_id, objector_id]));
}

#[tokio::test]
async fn bad_recommendation_requests_get_clear_errors() {
    let t = spawn_app().await;
    seed_shop(&t).await;
    for (query, status, code) in [
        ("n=0", 422, "invalid_n"),
        ("n=101", 422, "invalid_n"),
        ("n=ten", 422, "invalid_n"),
        ("context=tent", 422, "invalid_context"),
        ("context=product:", 422, "invalid_context"),
        ("profile=not-an-id", 400, "invalid_profile_id"),
        ("profile=0000000000000001", 404, "not_found"),
    ] {
        let (s, v) = t
            .as_key(
                MARKETER_KEY,
                "GET",
                &format!("/api/recommendations?{query}"),
                None,
            )
            .await;
        assert_eq!(
            (s, v["error"].as_str().unwrap_or("")),
            (status, code),
            "{query}: {v}"
        );
    }
    // An unknown product as context: popular products, nothing bought with it.
    let r = recs(&t, "context=product:never-seen&n=2").await;
    assert_eq!(r["similar"]["strategy"], "popular");
    assert_eq!(r["bought_together"]["items"], json!([]));
    let (s, _) = t
        .as_key(ANALYST_KEY, "GET", "/api/recommendations?n=1", None)
        .await;
    assert_eq!(s, 403, "analysts see no per-profile recommendations");
    let (s, _) = t
        .as_key(MARKETER_KEY, "POST", "/api/recommendations/train", None)
        .await;
    assert_eq!(s, 403);
}

const EMAIL: &str = "marketing.communications.email";

fn order_at(user: &str, id: &str, days_ago: i64, total: f64) -> Value {
    let ts = confidant_core::time::format_millis(confidant_service::now_millis() - days_ago * 86_400_000);
    json!({"type": "track", "userId": user, "event": "Order Completed", "timestamp": ts, "properties": {"order_id": id, "total": total, "currency": "EUR"}})
}

async fn members(t: &TestApp, name: &str) -> Vec<String> {
    let (s, v) = t.as_key(MARKETER_KEY, "GET", &format!("/api/audiences/{name}/members"), None).await;
    assert_eq!(s, 200, "{v}");
    let mut m: Vec<String> = v["members"].as_array().unwrap().iter().map(|x| x["profile"].as_str().unwrap().to_owned()).collect();
    m.sort();
    m
}

async fn ids(t: &TestApp, users: &[String]) -> Vec<String> {
    let mut v = Vec::new();
    for u in users {
        v.push(pid(t, u).await);
    }
    v.sort();
    v
}

#[tokio::test]
async fn audiences_hold_only_lawful_subjects_and_stay_fresh() {
    let t = spawn_app().await;
    let (s, list) = t.as_key(ANALYST_KEY, "GET", "/api/audiences", None).await;
    assert_eq!(s, 200);
    assert_eq!(list["audiences"][0]["name"], "everyone", "{list}");
    assert_eq!(list["audiences"][0]["purpose"], "analytics");

    // Twelve customers in France and Germany with 0 to 3 recent orders; the first eight
    // consented to email marketing.
    let mut batch = Vec::new();
    for c in 0..12 {
        let user = format!("aud-{c}");
        batch.push(json!({"type": "identify", "userId": user, "traits": {"email": format!("aud{c}@example.fr"), "country": if c % 2 == 0 { "FR" } else { "DE" }}}));
        for k in 0..(c % 4) {
            batch.push(order_at(&user, &format!("A-{c}-{k}"), 5 + 10 * k as i64, 20.0 + c as f64));
        }
        // An old order, outside a 90-day window.
        batch.push(order_at(&user, &format!("A-{c}-old"), 200, 99.0));
    }
    assert_eq!(t.post("/v1/batch", json!({"batch": batch})).await.status(), 200);
    for c in 0..8 {
        t.consent(json!({"userId": format!("aud-{c}"), "purposes": {EMAIL: true}, "method": "banner"}), &[]).await;
    }
    let rule = r#"trait.country = "FR" and count "Order Completed" within 90 days >= 2"#;
    // FR with at least two recent orders: c in {2, 6, 10}; lawful for email: 2 and 6.
    let expected = ids(&t, &["aud-2".into(), "aud-6".into()]).await;
    let (s, p) = t.as_key(ANALYST_KEY, "POST", "/api/audiences/preview", Some(json!({"purpose": EMAIL, "rule": rule}))).await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p, json!({"matching": 3, "size": 2, "not_lawful": 1}));

    let (s, a) = t.as_key(MARKETER_KEY, "POST", "/api/audiences", Some(json!({"name": "fr-repeaters", "purpose": EMAIL, "rule": rule, "description": "French repeat buyers"}))).await;
    assert_eq!(s, 201, "{a}");
    assert_eq!((a["size"].as_i64(), a["joined"].as_i64()), (Some(2), Some(2)), "{a}");
    assert_eq!(members(&t, "fr-repeaters").await, expected);

    // Kept fresh as events arrive: aud-4 (FR, consented, no recent order) orders twice.
    t.post("/v1/track", order_at("aud-4", "A-4-new", 1, 10.0)).await;
    t.post("/v1/track", order_at("aud-4", "A-4-newer", 0, 12.0)).await;
    let (s, r) = t.as_key(MARKETER_KEY, "POST", "/api/audiences/refresh", None).await;
    assert_eq!(s, 200, "{r}");
    assert!(r["subjects_evaluated"].as_u64().unwrap() >= 1, "{r}");
    let aud4 = pid(&t, "aud-4").await;
    assert!(members(&t, "fr-repeaters").await.contains(&aud4));
    // A second refresh with nothing new evaluates nobody.
    let (_, r) = t.as_key(MARKETER_KEY, "POST", "/api/audiences/refresh", None).await;
    assert_eq!(r["subjects_evaluated"], 0, "{r}");

    // An objection takes effect at once, without a refresh, and is in the history.
    let aud2 = pid(&t, "aud-2").await;
    t.consent(json!({"userId": "aud-2", "purposes": {EMAIL: false}, "method": "privacy_centre"}), &[]).await;
    assert!(!members(&t, "fr-repeaters").await.contains(&aud2), "the objector left at once");
    let (s, h) = t.as_key(MARKETER_KEY, "GET", "/api/audiences/fr-repeaters/history", None).await;
    assert_eq!(s, 200, "{h}");
    let entries = h["entries"].as_array().unwrap();
    let of = |p: &str| entries.iter().filter(|e| e["profile"] == p).map(|e| (e["change"].as_str().unwrap(), e["reason"].as_str().unwrap())).collect::<Vec<_>>();
    assert_eq!(of(&aud2), vec![("left", "consent"), ("joined", "created")]);
    assert_eq!(of(&aud4), vec![("joined", "rule")]);
    // Consenting again brings them back at once.
    t.consent(json!({"userId": "aud-2", "purposes": {EMAIL: true}, "method": "privacy_centre"}), &[]).await;
    assert!(members(&t, "fr-repeaters").await.contains(&aud2));

    // `everyone`: every subject lawful for analytics; an objection to analytics leaves it.
    // The incremental refreshes above already brought everyone in: a full pass changes nothing.
    let (_, r) = t.dpo("POST", "/api/audiences/refresh?full=true", None).await;
    assert_eq!((r["subjects_evaluated"].as_u64(), r["joined"].as_u64(), r["left"].as_u64()), (Some(12), Some(0), Some(0)), "{r}");
    let (_, e) = t.as_key(ANALYST_KEY, "GET", "/api/audiences/everyone", None).await;
    assert_eq!(e["size"], 12, "{e}");
    t.consent(json!({"userId": "aud-11", "purposes": {"analytics": false}, "method": "banner"}), &[]).await;
    let (_, e) = t.as_key(ANALYST_KEY, "GET", "/api/audiences/everyone", None).await;
    assert_eq!(e["size"], 11);

    // Did and did not: an abandoned checkout, until the order arrives.
    let abandoned = r#"did "Checkout Started" within 1 hours and not did "Order Completed" within 1 hours"#;
    t.post("/v1/track", json!({"type": "track", "userId": "aud-6", "event": "Checkout Started", "properties": {"cart_id": "c1"}})).await;
    let (s, a) = t.as_key(ADMIN_KEY, "POST", "/api/audiences", Some(json!({"name": "abandoned-cart", "purpose": EMAIL, "rule": abandoned}))).await;
    assert_eq!(s, 201, "{a}");
    let aud6 = pid(&t, "aud-6").await;
    assert_eq!(members(&t, "abandoned-cart").await, vec![aud6.clone()]);
    t.post("/v1/track", order_at("aud-6", "A-6-now", 0, 10.0)).await;
    t.as_key(MARKETER_KEY, "POST", "/api/audiences/refresh", None).await;
    assert_eq!(members(&t, "abandoned-cart").await, Vec::<String>::new());

    // The 360 view and the export name the subject's audiences.
    let (_, view) = t.dpo("GET", &format!("/api/profiles/{aud4}"), None).await;
    let names: Vec<&str> = view["audiences"].as_array().unwrap().iter().map(|a| a["audience"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["everyone", "fr-repeaters"]);
    let (_, x) = t.dpo("POST", "/api/dsr", Some(json!({"kind": "access", "identifier": "user_id:aud-4"}))).await;
    assert_eq!(x["export"]["audiences"].as_array().unwrap().len(), 2, "{}", x["export"]["audiences"]);

    // Erasure removes the subject from every audience and its history.
    let (s, r) = t.dpo("POST", "/api/dsr", Some(json!({"kind": "erasure", "identifier": "user_id:aud-4"}))).await;
    assert_eq!(s, 200, "{r}");
    assert!(r["erasure"]["audience_rows"].as_u64().unwrap() >= 4, "{r}");
    let n = i64::from_str_radix(&aud4, 16).unwrap();
    for table in ["audience_members", "audience_history"] {
        assert_eq!(t.sql_i64(&format!("SELECT count(*) FROM {table} WHERE profile_id = {n}")), 0, "{table}");
    }
    assert!(t.scan(&["aud4@example.fr", "A-4-new"]).is_empty());
    assert!(!members(&t, "fr-repeaters").await.contains(&aud4));

    // Deleting an audience; `everyone` stays.
    let (s, _) = t.as_key(MARKETER_KEY, "DELETE", "/api/audiences/abandoned-cart", None).await;
    assert_eq!(s, 204);
    let (s, _) = t.as_key(MARKETER_KEY, "GET", "/api/audiences/abandoned-cart", None).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn bad_audiences_are_refused_with_the_position_and_change_nothing() {
    let t = spawn_app().await;
    let body = |name: &str, purpose: &str, rule: &str| Some(json!({"name": name, "purpose": purpose, "rule": rule}));
    let (s, _) = t.as_key(MARKETER_KEY, "POST", "/api/audiences", body("ok", EMAIL, "everyone")).await;
    assert_eq!(s, 201);
    let (s, v) = t.as_key(MARKETER_KEY, "POST", "/api/audiences", body("broken", EMAIL, r#"trait.country = "FR" and did "Order Completed" within 30 dayz"#)).await;
    assert_eq!((s, v["error"].as_str()), (422, Some("invalid_rule")), "{v}");
    assert_eq!(v["position"], json!({"offset": 57, "line": 1, "column": 58}), "{v}");
    assert!(v["message"].as_str().unwrap().contains("minutes, hours, days or weeks"), "{v}");
    for (b, status, code) in [
        (body("x", EMAIL, "purchases > 3"), 422, "invalid_rule"),
        (body("x", "no.such.purpose", "everyone"), 422, "unknown_purpose"),
        (Some(json!({"name": "x", "rule": "everyone"})), 422, "missing_purpose"),
        (Some(json!({"name": "x", "purpose": EMAIL})), 422, "missing_rule"),
        (body("Bad Name!", EMAIL, "everyone"), 422, "invalid_name"),
        (body("ok", EMAIL, "everyone"), 409, "conflict"),
        (Some(json!({"name": "x", "purpose": EMAIL, "rule": "everyone", "colour": "red"})), 400, "invalid_body"),
        (Some(json!({"name": "x", "purpose": EMAIL, "rule": "x".repeat(5000)})), 422, "invalid_rule"),
    ] {
        let (s, v) = t.as_key(MARKETER_KEY, "POST", "/api/audiences", b.clone()).await;
        assert_eq!((s, v["error"].as_str().unwrap_or("")), (status, code), "{b:?}: {v}");
    }
    let r = t.client.post(format!("{}/api/audiences", t.base)).bearer_auth(MARKETER_KEY).body("{not json").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let (s, v) = t.as_key(MARKETER_KEY, "POST", "/api/audiences/preview", body("", EMAIL, "count \"X\" > many")).await;
    assert_eq!((s, v["position"]["column"].as_u64()), (422, Some(13)), "{v}");
    let (s, _) = t.as_key(MARKETER_KEY, "DELETE", "/api/audiences/everyone", None).await;
    assert_eq!(s, 409);
    let (s, _) = t.as_key(MARKETER_KEY, "PUT", "/api/audiences/everyone", Some(json!({"rule": "trait.x exists"}))).await;
    assert_eq!(s, 409);
    let (s, _) = t.as_key(MARKETER_KEY, "PUT", "/api/audiences/ok", Some(json!({"rule": "did \"X\" within"}))).await;
    assert_eq!(s, 422);
    for path in ["/api/audiences/nope", "/api/audiences/nope/members", "/api/audiences/nope/history"] {
        let (s, _) = t.as_key(MARKETER_KEY, "GET", path, None).await;
        assert_eq!(s, 404, "{path}");
    }
    let (s, v) = t.as_key(MARKETER_KEY, "GET", "/api/audiences/ok/members?limit=0", None).await;
    assert_eq!((s, v["error"].as_str()), (422, Some("invalid_limit")));
    let (s, _) = t.as_key(ANALYST_KEY, "POST", "/api/audiences", body("y", EMAIL, "everyone")).await;
    assert_eq!(s, 403, "analysts do not define audiences");
    let (s, _) = t.as_key(ANALYST_KEY, "GET", "/api/audiences/ok/members", None).await;
    assert_eq!(s, 403, "analysts do not see who is in an audience");
    // Nothing of the refused calls was stored; the failed update left the rule as it was.
    let (_, list) = t.dpo("GET", "/api/audiences", None).await;
    let names: Vec<&str> = list["audiences"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["everyone", "ok"]);
    assert_eq!(list["audiences"][1]["rule"], "everyone");
    assert_eq!(list["audiences"][0]["rule"], "everyone");
}
