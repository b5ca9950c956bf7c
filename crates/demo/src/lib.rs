//! A realistic online shop, generated from a fixed seed, as Segment-spec messages.
//!
//! Customers with French names, emails and mobile numbers; a catalogue of products in
//! categories with prices; months of sessions (pages, product views, cart adds, checkouts,
//! `Order Completed` with E-commerce v2 properties); visitors who browse anonymously and
//! sign in later on the same device; a share of customers known under two emails; and
//! anonymous visitors who never sign in. The same seed always gives the same messages, with
//! the same `messageId`s, so sending the demo twice stores it once.
//!
//! Pure: no IO. The caller sends the batches.

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

pub const DAY_MS: i64 = 86_400_000;

#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub seed: u64,
    pub customers: usize,
    /// Visitors who never sign in.
    pub anonymous_visitors: usize,
    pub days: i64,
    /// The end of the period, ms since the epoch.
    pub end: i64,
}

#[derive(Clone, Debug)]
pub struct Product {
    pub id: String,
    pub sku: String,
    pub name: String,
    pub category: String,
    pub brand: String,
    /// Price in cents.
    pub price_cents: i64,
}

const CATEGORIES: &[(&str, &[&str], (i64, i64))] = &[
    ("Vêtements femme", &["Robe", "Chemisier", "Jupe", "Pull", "Manteau"], (2500, 18000)),
    ("Vêtements homme", &["Chemise", "Pantalon", "Veste", "Polo", "Sweat"], (2500, 16000)),
    ("Chaussures", &["Baskets", "Bottines", "Sandales", "Mocassins", "Escarpins"], (3500, 15000)),
    ("Accessoires", &["Sac", "Ceinture", "Écharpe", "Chapeau", "Portefeuille"], (1500, 12000)),
    ("Maison", &["Coussin", "Plaid", "Vase", "Bougie", "Lampe"], (1200, 9000)),
    ("Beauté", &["Crème", "Sérum", "Parfum", "Savon", "Huile"], (800, 9500)),
    ("Sport", &["Legging", "Brassière", "Short", "Tapis", "Gourde"], (1000, 7000)),
    ("Enfants", &["Body", "Pyjama", "Doudou", "Salopette", "Bonnet"], (900, 4500)),
    ("Bijoux", &["Collier", "Bague", "Bracelet", "Boucles", "Montre"], (1900, 25000)),
    ("Épicerie fine", &["Thé", "Chocolat", "Miel", "Confiture", "Café"], (500, 3500)),
];
const ADJECTIVES: &[&str] = &["lin", "coton bio", "laine", "vintage", "classique", "essentiel", "douce", "élégant", "naturel", "signature"];
const BRANDS: &[&str] = &["Maison Aube", "Atelier Sud", "Lumen", "Bérénice", "Ferrand & Fils", "Nordique", "Clair de Lune"];
const FIRST_NAMES: &[&str] = &[
    "Camille", "Léa", "Manon", "Chloé", "Emma", "Inès", "Sarah", "Julie", "Louise", "Alice", "Lucas", "Hugo", "Louis", "Nathan", "Gabriel",
    "Jules", "Arthur", "Thomas", "Paul", "Raphaël", "Zoé", "Jade", "Nina", "Élise", "Margaux", "Antoine", "Maxime", "Théo", "Léon", "Adam",
];
const LAST_NAMES: &[&str] = &[
    "Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy", "Moreau", "Simon", "Laurent", "Lefebvre",
    "Michel", "Garcia", "David", "Bertrand", "Roux", "Vincent", "Fournier", "Morel", "Girard", "André", "Mercier", "Dupont", "Lambert",
    "Bonnet", "François", "Martinez", "de La Fontaine",
];
const CITIES: &[(&str, &str)] = &[
    ("Paris", "75011"), ("Lyon", "69003"), ("Marseille", "13006"), ("Toulouse", "31000"), ("Nantes", "44000"), ("Bordeaux", "33000"),
    ("Lille", "59000"), ("Rennes", "35000"), ("Strasbourg", "67000"), ("Montpellier", "34000"), ("Nice", "06000"), ("Grenoble", "38000"),
];
const DOMAINS: &[&str] = &["gmail.com", "orange.fr", "free.fr", "laposte.net", "outlook.fr", "yahoo.fr", "sfr.fr"];
const PAGES: &[(&str, &str)] = &[("Accueil", "/"), ("Nouveautés", "/nouveautes"), ("Soldes", "/soldes"), ("Aide", "/aide")];
const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.0 Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 15; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Mobile Safari/537.36",
];

/// The catalogue: ten categories of twenty products.
pub fn catalogue(seed: u64) -> Vec<Product> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xCA7A_1065);
    let mut out = Vec::new();
    for (ci, (category, nouns, (lo, hi))) in CATEGORIES.iter().enumerate() {
        for i in 0..20 {
            let noun = nouns[i % nouns.len()];
            let adj = ADJECTIVES.choose(&mut rng).copied().unwrap_or("classique");
            let cents = rng.random_range(*lo..*hi) / 100 * 100 + 90;
            out.push(Product {
                id: format!("P{:02}{:03}", ci, i),
                sku: format!("SKU-{:02}-{:04}", ci, rng.random_range(1000..9999)),
                name: format!("{noun} {adj}"),
                category: (*category).to_owned(),
                brand: BRANDS.choose(&mut rng).copied().unwrap_or("Lumen").to_owned(),
                price_cents: cents,
            });
        }
    }
    out
}

fn money(cents: i64) -> Value {
    // Two decimals, as JSON numbers (Segment's convention for revenue and price).
    serde_json::Number::from_f64(cents as f64 / 100.0).map(Value::Number).unwrap_or(Value::Null)
}

fn iso(ms: i64) -> String {
    // Civil-from-days (Howard Hinnant), to stay free of a date crate.
    let days = ms.div_euclid(DAY_MS);
    let rem = ms.rem_euclid(DAY_MS);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

fn ascii_lower(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'é' | 'è' | 'ê' | 'É' => 'e',
            'ï' | 'î' => 'i',
            'ç' => 'c',
            'à' | 'â' => 'a',
            ' ' => '-',
            c => c.to_ascii_lowercase(),
        })
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .collect()
}

/// Builds messages with sequential, seed-scoped ids.
struct Emitter {
    seed: u64,
    next: u64,
    out: Vec<Value>,
}

impl Emitter {
    fn push(&mut self, mut m: Value, ts: i64, ua: &str) {
        self.next += 1;
        let obj = m.as_object_mut().expect("messages are objects");
        obj.insert("messageId".into(), json!(format!("demo-{:x}-{:08}", self.seed, self.next)));
        obj.insert("timestamp".into(), json!(iso(ts)));
        let ctx = obj.entry("context").or_insert_with(|| json!({}));
        ctx["userAgent"] = json!(ua);
        ctx["library"] = json!({"name": "confidant-demo", "version": env!("CARGO_PKG_VERSION")});
        ctx["locale"] = json!("fr-FR");
        self.out.push(m);
    }
}

struct Customer {
    user_id: String,
    first: String,
    last: String,
    email: String,
    second_email: Option<String>,
    phone: String,
    city: (&'static str, &'static str),
    devices: Vec<(String, &'static str)>,
    /// Sessions per 30 days.
    rate: f64,
    signup: i64,
}

/// Every message of the demo, in batches of `batch_size`, customer by customer.
pub fn generate(opts: &DemoOptions, batch_size: usize) -> impl Iterator<Item = Vec<Value>> {
    let products = catalogue(opts.seed);
    let opts = opts.clone();
    let total = opts.customers + opts.anonymous_visitors;
    let mut emitter = Emitter { seed: opts.seed, next: 0, out: Vec::new() };
    let mut person = 0usize;
    std::iter::from_fn(move || {
        while emitter.out.len() < batch_size && person < total {
            let mut rng = StdRng::seed_from_u64(opts.seed.wrapping_mul(1_000_003).wrapping_add(person as u64));
            if person < opts.customers {
                customer(&mut rng, &opts, person, &products, &mut emitter);
            } else {
                visitor(&mut rng, &opts, person, &products, &mut emitter);
            }
            person += 1;
        }
        if emitter.out.is_empty() {
            return None;
        }
        let n = batch_size.min(emitter.out.len());
        Some(emitter.out.drain(..n).collect())
    })
}

fn device_id(rng: &mut StdRng) -> String {
    let a: u128 = rng.random();
    let h = format!("{a:032x}");
    format!("{}-{}-4{}-a{}-{}", &h[..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32])
}

fn customer(rng: &mut StdRng, opts: &DemoOptions, n: usize, products: &[Product], em: &mut Emitter) {
    let first = FIRST_NAMES.choose(rng).copied().unwrap_or("Camille").to_owned();
    let last = LAST_NAMES.choose(rng).copied().unwrap_or("Martin").to_owned();
    let domain = DOMAINS.choose(rng).copied().unwrap_or("gmail.com");
    let email = format!("{}.{}{}@{}", ascii_lower(&first), ascii_lower(&last), n, domain);
    let second_email = rng.random_bool(0.15).then(|| format!("{}{}.pro@{}", ascii_lower(&first), n, "entreprise.fr"));
    // Valid French mobile ranges: 06 followed by anything but 3 or 9, and 073 to 079.
    let phone = if rng.random_bool(0.7) {
        format!("+336{}{:07}", [0, 1, 2, 4, 5, 6, 7, 8][rng.random_range(0..8)], rng.random_range(0..10_000_000))
    } else {
        format!("+337{}{:07}", rng.random_range(3..=9), rng.random_range(0..10_000_000))
    };
    let devices = (0..rng.random_range(1..=3)).map(|_| (device_id(rng), *USER_AGENTS.choose(rng).unwrap_or(&USER_AGENTS[0]))).collect();
    let start = opts.end - opts.days * DAY_MS;
    // Lognormal-ish activity: most customers visit a few times, a few very often.
    let rate = (rng.random::<f64>() * 2.2 - 0.4).exp();
    let c = Customer {
        user_id: format!("cust_{n:05}"),
        first,
        last,
        email,
        second_email,
        phone,
        city: *CITIES.choose(rng).unwrap_or(&CITIES[0]),
        devices,
        rate,
        signup: start + rng.random_range(0..opts.days * DAY_MS * 3 / 4),
    };
    let mut signed_in = vec![false; c.devices.len()];
    let mut t = c.signup - rng.random_range(0..7 * DAY_MS);
    let mut order = 0;
    let mut second_email_sent = false;
    while t < opts.end {
        let d = rng.random_range(0..c.devices.len());
        let (anon, ua) = (c.devices[d].0.clone(), c.devices[d].1);
        let known = signed_in[d];
        let ids = |known: bool| if known { json!({"anonymousId": anon, "userId": c.user_id}) } else { json!({"anonymousId": anon}) };
        let mut ts = t;
        let mut step = |rng: &mut StdRng| {
            ts += rng.random_range(5_000..180_000);
            ts
        };
        let landing = PAGES.choose(rng).unwrap_or(&PAGES[0]);
        let mut m = ids(known);
        m["type"] = json!("page");
        m["name"] = json!(landing.0);
        m["properties"] = json!({"path": landing.1, "url": format!("https://boutique.example{}", landing.1), "title": landing.0});
        em.push(m, step(rng), ua);

        // Signing in on this device: the anonymous history joins the customer.
        if !known && t >= c.signup {
            let mut m = ids(false);
            m["type"] = json!("identify");
            m["userId"] = json!(c.user_id);
            m["traits"] = json!({
                "email": c.email, "firstName": c.first, "lastName": c.last, "phone": c.phone,
                "address": {"city": c.city.0, "postalCode": c.city.1, "country": "FR"},
                "createdAt": iso(c.signup),
            });
            em.push(m, step(rng), ua);
            signed_in[d] = true;
        }
        let known = signed_in[d];
        if known && !second_email_sent {
            if let Some(e2) = &c.second_email {
                if rng.random_bool(0.3) {
                    let mut m = ids(true);
                    m["type"] = json!("identify");
                    m["traits"] = json!({"email": e2});
                    em.push(m, step(rng), ua);
                    second_email_sent = true;
                }
            }
        }

        let category = rng.random_range(0..CATEGORIES.len());
        let mut viewed = Vec::new();
        for _ in 0..rng.random_range(1..=6) {
            let p = &products[category * 20 + rng.random_range(0..20)];
            let mut m = ids(known);
            m["type"] = json!("track");
            m["event"] = json!("Product Viewed");
            m["properties"] = json!({"product_id": p.id, "sku": p.sku, "name": p.name, "category": p.category, "brand": p.brand,
                                     "price": money(p.price_cents), "currency": "EUR"});
            em.push(m, step(rng), ua);
            viewed.push(p);
        }
        if rng.random_bool(0.35) {
            let mut cart = Vec::new();
            let picked: Vec<&Product> = viewed.iter().copied().filter(|_| rng.random_bool(0.5)).take(3).collect();
            for p in picked {
                let qty = if rng.random_bool(0.85) { 1 } else { 2 };
                let mut m = ids(known);
                m["type"] = json!("track");
                m["event"] = json!("Product Added");
                m["properties"] = json!({"product_id": p.id, "sku": p.sku, "name": p.name, "category": p.category,
                                         "price": money(p.price_cents), "quantity": qty, "currency": "EUR"});
                em.push(m, step(rng), ua);
                cart.push((p, qty));
            }
            if !cart.is_empty() && rng.random_bool(0.6) {
                let total: i64 = cart.iter().map(|(p, q)| p.price_cents * q).sum();
                let lines: Vec<Value> = cart
                    .iter()
                    .map(|(p, q)| json!({"product_id": p.id, "sku": p.sku, "name": p.name, "category": p.category, "price": money(p.price_cents), "quantity": q}))
                    .collect();
                let mut m = ids(known);
                m["type"] = json!("track");
                m["event"] = json!("Checkout Started");
                m["properties"] = json!({"value": money(total), "revenue": money(total), "currency": "EUR", "products": lines});
                em.push(m, step(rng), ua);
                if known && rng.random_bool(0.7) {
                    order += 1;
                    let shipping = if total >= 6000 { 0 } else { 490 };
                    let tax = total - total * 100 / 120;
                    let mut m = ids(true);
                    m["type"] = json!("track");
                    m["event"] = json!("Order Completed");
                    m["properties"] = json!({
                        "order_id": format!("{}-{order:03}", c.user_id.replace("cust_", "CMD")),
                        "checkout_id": format!("chk-{}-{order}", c.user_id),
                        "total": money(total + shipping), "revenue": money(total), "shipping": money(shipping), "tax": money(tax),
                        "currency": "EUR", "products": lines,
                    });
                    em.push(m, step(rng), ua);
                }
            }
        }
        let gap = (30.0 * DAY_MS as f64 / c.rate.max(0.05)) * (0.2 + rng.random::<f64>() * 1.6);
        t += gap as i64;
    }
}

fn visitor(rng: &mut StdRng, opts: &DemoOptions, _n: usize, products: &[Product], em: &mut Emitter) {
    let anon = device_id(rng);
    let ua = *USER_AGENTS.choose(rng).unwrap_or(&USER_AGENTS[0]);
    let mut t = opts.end - rng.random_range(0..opts.days * DAY_MS);
    for _ in 0..rng.random_range(1..=3) {
        if t >= opts.end {
            break;
        }
        let page = PAGES.choose(rng).unwrap_or(&PAGES[0]);
        em.push(json!({"type": "page", "anonymousId": anon, "name": page.0, "properties": {"path": page.1}}), t, ua);
        for _ in 0..rng.random_range(0..4) {
            t += rng.random_range(5_000..120_000);
            let p = products.choose(rng).expect("a catalogue");
            em.push(
                json!({"type": "track", "event": "Product Viewed", "anonymousId": anon,
                       "properties": {"product_id": p.id, "name": p.name, "category": p.category, "price": money(p.price_cents), "currency": "EUR"}}),
                t,
                ua,
            );
        }
        t += rng.random_range(DAY_MS..20 * DAY_MS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> DemoOptions {
        DemoOptions { seed: 7, customers: 50, anonymous_visitors: 20, days: 120, end: 1_790_000_000_000 }
    }

    #[test]
    fn the_same_seed_gives_the_same_messages() {
        let a: Vec<Value> = generate(&opts(), 100).flatten().collect();
        let b: Vec<Value> = generate(&opts(), 100).flatten().collect();
        assert_eq!(a, b);
        assert!(a.len() > 500, "{} messages", a.len());
    }

    #[test]
    fn the_shop_has_what_the_demo_promises() {
        let all: Vec<Value> = generate(&opts(), 100).flatten().collect();
        let count = |f: &dyn Fn(&Value) -> bool| all.iter().filter(|m| f(m)).count();
        assert!(count(&|m| m["event"] == "Order Completed") > 10);
        assert!(count(&|m| m["event"] == "Order Completed" && m["properties"]["products"].as_array().is_some_and(|p| !p.is_empty())) > 10);
        assert!(count(&|m| m["type"] == "identify" && m.get("anonymousId").is_some()) >= 50, "anonymous visitors sign in");
        assert!(count(&|m| m["type"] == "identify" && m["traits"]["email"].as_str().is_some_and(|e| e.contains(".pro@"))) > 0, "second emails");
        assert!(count(&|m| m.get("userId").is_none()) > 100, "anonymous browsing");
        let ids: std::collections::HashSet<&str> = all.iter().map(|m| m["messageId"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), all.len(), "message ids are unique");
        assert!(all.iter().all(|m| m["timestamp"].as_str().unwrap().ends_with('Z')));
        let phones: Vec<&str> = all.iter().filter_map(|m| m["traits"]["phone"].as_str()).collect();
        assert!(phones.len() >= 50);
        for p in phones {
            assert!(p.len() == 12 && p.starts_with("+33"), "{p}");
        }
    }

    #[test]
    fn iso_dates_are_right() {
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso(1_790_000_000_123), "2026-09-21T14:13:20.123Z");
        assert_eq!(iso(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
