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
