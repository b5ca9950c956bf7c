//! `confidant import`: normalisation, quarantine with reasons, idempotent re-import, a corrected
//! file clearing its quarantine, JSONL, and broken files importing nothing.

mod common;

use std::process::{Command, Output};

use serde_json::Value;

fn confidant(config: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_confidant")).args(args).arg("--config").arg(config).env("CONFIDANT_LOG", "warn").output().unwrap()
}

fn json_out(o: &Output) -> Value {
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

fn traits(config: &std::path::Path, id: &str) -> Value {
    let x = json_out(&confidant(config, &["dsr", "export", "--identifier", id]));
    let mut out = serde_json::Map::new();
    for t in x["traits"].as_array().unwrap() {
        out.insert(t["key"].as_str().unwrap().to_owned(), t["value"].clone());
    }
    Value::Object(out)
}

const CRM: &str = "Numéro client,Courriel,Téléphone,Prénom,Nom,Date de naissance,Code postal,Pays,Couleur préférée
C-1, Lea@Example.FR ,06 12 34 56 78,LÉA,de la FONTAINE,14/03/1980,75 001,France,bleu
C-2,not-an-email,0612345679,Marc,Petit,1980-01-01,75002,FR,
C-3,marc@example.fr,12,Marc,Petit,1980-01-01,75002,FR,
C-4,zoe@exämple.fr,+33 7 81 22 33 44,zoé,martin,03/14/1990,1000,france,vert
";

#[test]
fn imports_normalise_quarantine_and_can_be_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(dir.path(), "");
    let file = dir.path().join("crm.csv");
    std::fs::write(&file, CRM).unwrap();
    let f = file.to_str().unwrap();

    let r = json_out(&confidant(&config, &["import", "--source", "web", f]))["import"].clone();
    assert_eq!((r["rows"].as_u64(), r["imported"].as_u64(), r["quarantined"].as_u64()), (Some(4), Some(2), Some(2)), "{r}");
    let lea = traits(&config, "user_id:C-1");
    assert_eq!(lea["email"], "lea@example.fr");
    assert_eq!(lea["phone"], "+33612345678");
    assert_eq!(lea["firstName"], "Léa");
    assert_eq!(lea["lastName"], "De la Fontaine");
    assert_eq!(lea["birthday"], "1980-03-14");
    assert_eq!(lea["postalCode"], "75001");
    assert_eq!(lea["country"], "FR");
    assert!(lea.get("Couleur préférée").is_none(), "an undeclared column is minimised away: {lea}");
    let zoe = traits(&config, "email:zoe@xn--exmple-cua.fr");
    assert_eq!((zoe["birthday"].as_str(), zoe["postalCode"].as_str(), zoe["firstName"].as_str()), (Some("1990-03-14"), Some("01000"), Some("Zoé")));

    let q = json_out(&confidant(&config, &["import", "--quarantine", "--source", "web"]));
    let rows: Vec<(u64, String, String)> = q["quarantined"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["line"].as_u64().unwrap(), r["field"].as_str().unwrap().to_owned(), r["reason"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(rows, vec![(3, "Courriel".into(), "invalid_email".into()), (4, "Téléphone".into(), "invalid_phone".into())]);

    // The same file again changes nothing.
    let r = json_out(&confidant(&config, &["import", "--source", "web", f]))["import"].clone();
    assert_eq!((r["imported"].as_u64(), r["unchanged"].as_u64(), r["quarantined"].as_u64()), (Some(0), Some(2), Some(2)), "{r}");

    // Corrected rows import, and the quarantine of the file is cleared.
    std::fs::write(&file, CRM.replace("not-an-email", "marc.p@example.fr").replace(",12,", ",06 99 88 77 66,")).unwrap();
    let r = json_out(&confidant(&config, &["import", "--source", "web", f]))["import"].clone();
    assert_eq!((r["imported"].as_u64(), r["unchanged"].as_u64(), r["quarantined"].as_u64(), r["previously_quarantined"].as_u64()), (Some(2), Some(2), Some(0), Some(2)), "{r}");
    let q = json_out(&confidant(&config, &["import", "--quarantine"]));
    assert_eq!(q["quarantined"].as_array().unwrap().len(), 0);

    // JSONL, with a mapping file.
    let jl = dir.path().join("loyalty.jsonl");
    std::fs::write(&jl, "{\"member\": \"L-9\", \"mail\": \"Noe@Example.fr\", \"points\": 120}\n\n{\"member\": \"L-10\", \"mail\": \"bad\"}\n").unwrap();
    let map = dir.path().join("map.toml");
    std::fs::write(&map, "[columns]\nmember = \"user_id\"\npoints = \"ignore\"\n").unwrap();
    let r = json_out(&confidant(&config, &["import", "--source", "web", "--mapping", map.to_str().unwrap(), jl.to_str().unwrap()]))["import"].clone();
    assert_eq!((r["imported"].as_u64(), r["quarantined"].as_u64()), (Some(1), Some(1)), "{r}");
    assert_eq!(traits(&config, "user_id:L-9")["email"], "noe@example.fr");

    // The quality report: per source and field.
    let q = json_out(&confidant(&config, &["quality"]));
    let web = q["sources"].as_array().unwrap().iter().find(|s| s["source"] == "web").unwrap().clone();
    assert_eq!(web["profiles"], 5, "{web}");
    assert_eq!(web["quarantined"], serde_json::json!({"mail:invalid_email": 1}), "{web}");
    let field = |name: &str| web["fields"].as_array().unwrap().iter().find(|f| f["field"] == name).cloned().unwrap_or_default();
    assert_eq!(field("email")["present"], 5);
    assert_eq!(field("email")["uniqueness"], 1.0);
    assert!((field("email")["validity"].as_f64().unwrap() - 5.0 / 6.0).abs() < 1e-9, "one quarantined email: {web}");
    assert_eq!(field("country")["present"], 4);
    assert!((field("country")["completeness"].as_f64().unwrap() - 0.8).abs() < 1e-9);
    assert!(field("country")["uniqueness"].as_f64().unwrap() < 0.5, "every row is FR");
    assert!(field("phone")["uniqueness"].is_null(), "phones are encrypted: not comparable at rest");
    assert!(field("email")["last_updated"].as_i64().unwrap() > 1_700_000_000_000);
}

#[test]
fn a_source_s_mapping_comes_from_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "[[sources]]\nname = \"loyalty\"\nwrite_key = \"wk_loyalty_0123456789abcdef\"\ncolumns = { \"Carte\" = \"user_id\", \"Adresse électronique\" = \"email\", \"Points\" = \"ignore\" }\n";
    let config = common::write_config(dir.path(), extra);
    let file = dir.path().join("cards.csv");
    std::fs::write(&file, "Carte,Adresse électronique,Points\nK-1,Kim@Example.fr,300\n").unwrap();
    let r = json_out(&confidant(&config, &["import", "--source", "loyalty", file.to_str().unwrap()]))["import"].clone();
    assert_eq!(r["imported"], 1, "{r}");
    let t = traits(&config, "user_id:K-1");
    assert_eq!(t["email"], "kim@example.fr");
    assert!(t.get("Points").is_none());
}

#[test]
fn a_broken_file_imports_nothing_and_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(dir.path(), "");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("wide.csv", b"id,email\nW-1,w1@example.fr\nW-2,w2@example.fr,extra\n".to_vec(), "wide.csv: line 3: 3 fields, but the header has 2"),
        ("latin1.csv", b"id,email,name\nW-3,w3@example.fr,Ren\xe9\n".to_vec(), "latin1.csv: line 2: not valid UTF-8"),
        ("broken.jsonl", b"{\"id\": \"W-4\", \"email\": \"w4@example.fr\"}\n{not json\n".to_vec(), "broken.jsonl: line 2: not valid JSON"),
    ];
    for (name, bytes, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let o = confidant(&config, &["import", "--source", "web", path.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(expected), "{name}: {err}");
    }
    for id in ["user_id:W-1", "user_id:W-3", "user_id:W-4"] {
        let x = json_out(&confidant(&config, &["dsr", "export", "--identifier", id]));
        assert!(x.is_null() || x["events"].as_array().is_none_or(Vec::is_empty), "{id} was imported from a broken file: {x}");
    }
    let o = confidant(&config, &["import", "--source", "nowhere", dir.path().join("wide.csv").to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not a configured source"));
}

const ORDERS: &str = "Commande,Date,Courriel,Produit,Quantité,Prix,Devise
O-1,2026-10-01,lea@example.fr,P-TENT,1,\"129,90\",EUR
O-1,2026-10-01,lea@example.fr,P-STOVE,2,24.50,EUR
O-2,02/10/2026,marc@example.fr,P-TENT,1,129.90,EUR
O-3,2026-10-03,zoe@example.fr,P-LAMP,1,12.999,EUR
O-4,not a date,zoe@example.fr,P-LAMP,1,12.99,EUR
O-2,2026-10-02,other@example.fr,P-LAMP,1,12.99,EUR
O-5,2026-10-04,,P-LAMP,1,12.99,EUR
";

#[test]
fn order_lines_become_one_order_each_and_feed_the_analytics() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(dir.path(), "");
    let file = dir.path().join("orders.csv");
    std::fs::write(&file, ORDERS).unwrap();
    let f = file.to_str().unwrap();
    let r = json_out(&confidant(&config, &["import", "--source", "web", "--kind", "orders", f]))["import"].clone();
    assert_eq!((r["rows"].as_u64(), r["imported"].as_u64(), r["quarantined"].as_u64()), (Some(7), Some(2), Some(4)), "{r}");
    let q = json_out(&confidant(&config, &["import", "--quarantine", "--source", "web"]));
    let mut reasons: Vec<(u64, String)> = q["quarantined"].as_array().unwrap().iter().map(|r| (r["line"].as_u64().unwrap(), r["reason"].as_str().unwrap().to_owned())).collect();
    reasons.sort();
    assert_eq!(
        reasons,
        vec![(5, "invalid_amount".into()), (6, "invalid_date".into()), (7, "order_conflict".into()), (8, "missing_identity".into())],
        "{q}"
    );
    // Léa's two lines are one order, with exact money and the lines' sum as its total.
    let x = json_out(&confidant(&config, &["dsr", "export", "--identifier", "email:lea@example.fr"]));
    let orders: Vec<&Value> = x["events"].as_array().unwrap().iter().filter(|e| e["event"] == "Order Completed").collect();
    assert_eq!(orders.len(), 1, "{x}");
    let p = &orders[0]["properties"];
    assert_eq!((p["order_id"].as_str(), p["total"].as_str(), p["currency"].as_str()), (Some("O-1"), Some("178.90"), Some("EUR")), "{p}");
    assert_eq!(p["products"].as_array().unwrap().len(), 2);
    assert_eq!(orders[0]["timestamp"], "2026-10-01T00:00:00.000Z");
    // The same file again changes nothing; the analytics see both orders.
    let again = json_out(&confidant(&config, &["import", "--source", "web", "--kind", "orders", f]))["import"].clone();
    assert_eq!((again["imported"].as_u64(), again["unchanged"].as_u64()), (Some(0), Some(2)), "{again}");
    let a = json_out(&confidant(&config, &["analytics"]));
    assert_eq!((a["orders"].as_u64(), a["customers"].as_u64()), (Some(2), Some(2)), "{a}");
}

#[test]
fn stock_levels_are_imported_with_their_problems_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(dir.path(), "");
    let file = dir.path().join("stock.csv");
    std::fs::write(&file, "Référence,Stock,Date\nP-TENT,12,2026-11-01\nP-LAMP,\"3,5\",\nP-STOVE,-2,2026-11-01\n,4,2026-11-01\nP-BAG,5,2099-01-01\n").unwrap();
    let r = json_out(&confidant(&config, &["import", "--source", "web", "--kind", "stock", file.to_str().unwrap()]))["import"].clone();
    assert_eq!((r["rows"].as_u64(), r["imported"].as_u64(), r["quarantined"].as_u64()), (Some(5), Some(2), Some(3)), "{r}");
    let q = json_out(&confidant(&config, &["import", "--quarantine", "--source", "web"]));
    let mut reasons: Vec<String> = q["quarantined"].as_array().unwrap().iter().map(|r| r["reason"].as_str().unwrap().to_owned()).collect();
    reasons.sort();
    assert_eq!(reasons, vec!["invalid_date", "invalid_quantity", "missing_product"], "{q}");
}
