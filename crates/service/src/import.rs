//! Imports (CSV, JSONL) from CRM, loyalty and survey tools: each row is mapped to identifiers
//! and traits, normalised and validated; a valid row becomes an `identify` message that goes
//! through the same ingestion path as events (privacy gate, tracking plan, stitching), with a
//! `messageId` derived from its content, so importing the same file twice changes nothing. An
//! invalid row goes to the quarantine with its line, field and reason.

use std::collections::{BTreeMap, HashMap};

use confidant_core::normalise::{self, Invalid};
use confidant_core::time::Millis;
use confidant_store::privacy::{QuarantineRow, QuarantineView};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::ingest::IngestRequest;
use crate::{App, ServiceError, Source};

/// Where a column goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    UserId,
    Email,
    Phone,
    AnonymousId,
    Trait(String),
    Ignore,
    // Columns of an order file (one row per order line).
    OrderId,
    OrderDate,
    Total,
    Currency,
    ProductId,
    Quantity,
    Price,
}

/// What the rows of a file describe.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kind {
    /// People: each row an `identify`.
    #[default]
    Profiles,
    /// Order lines: rows with the same order id become one `Order Completed` event.
    Orders,
    /// Stock levels: product, quantity, and optionally the time of the reading.
    Stock,
}

impl Target {
    /// `user_id`, `email`, `phone`, `anonymous_id`, `ignore`, or `trait:<name>` (a bare name is
    /// a trait too).
    pub fn parse(s: &str) -> Target {
        match s {
            "user_id" => Target::UserId,
            "email" => Target::Email,
            "phone" => Target::Phone,
            "anonymous_id" => Target::AnonymousId,
            "ignore" => Target::Ignore,
            "order_id" => Target::OrderId,
            "order_date" => Target::OrderDate,
            "total" => Target::Total,
            "currency" => Target::Currency,
            "product_id" => Target::ProductId,
            "quantity" => Target::Quantity,
            "price" => Target::Price,
            other => Target::Trait(other.strip_prefix("trait:").unwrap_or(other).to_owned()),
        }
    }

    /// The sensible default for a column of an order file: the order's columns, then
    /// identifiers and traits as for people.
    pub fn infer_order(column: &str) -> Target {
        use unicode_normalization::UnicodeNormalization;
        let c: String = column.trim().to_lowercase().nfd().filter(char::is_ascii_alphanumeric).collect();
        match c.as_str() {
            "orderid" | "order" | "ordernumber" | "commande" | "numerocommande" | "numerodecommande" | "idcommande" => Target::OrderId,
            "date" | "orderdate" | "datecommande" | "datedecommande" | "createdat" | "purchasedate" | "dateachat" => Target::OrderDate,
            "total" | "ordertotal" | "amount" | "montant" | "montanttotal" | "revenue" => Target::Total,
            "currency" | "devise" => Target::Currency,
            "productid" | "product" | "sku" | "produit" | "reference" | "ref" | "article" => Target::ProductId,
            "quantity" | "qty" | "quantite" | "qte" => Target::Quantity,
            "price" | "unitprice" | "prix" | "prixunitaire" => Target::Price,
            _ => Target::infer(column),
        }
    }

    /// The sensible default for a column name.
    pub fn infer(column: &str) -> Target {
        use unicode_normalization::UnicodeNormalization;
        // Accents, case, spaces and punctuation do not matter: "Téléphone" is "telephone".
        let c: String = column.trim().to_lowercase().nfd().filter(char::is_ascii_alphanumeric).collect();
        match c.as_str() {
            "userid" | "customerid" | "clientid" | "idclient" | "numeroclient" | "customernumber" | "id" | "numerodeclient" => Target::UserId,
            "email" | "mail" | "courriel" | "emailaddress" | "adressemail" | "adresseemail" => Target::Email,
            "phone" | "telephone" | "tel" | "mobile" | "portable" | "phonenumber" => Target::Phone,
            "anonymousid" => Target::AnonymousId,
            "firstname" | "givenname" | "prenom" => Target::Trait("firstName".into()),
            "lastname" | "surname" | "nom" | "familyname" | "nomdefamille" => Target::Trait("lastName".into()),
            "birthday" | "dateofbirth" | "dob" | "birthdate" | "datedenaissance" | "datenaissance" => Target::Trait("birthday".into()),
            "postcode" | "zip" | "zipcode" | "postalcode" | "codepostal" | "cp" => Target::Trait("postalCode".into()),
            "city" | "ville" | "town" => Target::Trait("city".into()),
            "country" | "pays" => Target::Trait("country".into()),
            "address" | "adresse" | "street" | "rue" => Target::Trait("address".into()),
            "gender" | "genre" | "sexe" => Target::Trait("gender".into()),
            _ => Target::Trait(column.trim().to_owned()),
        }
    }
}

/// Column → target, for one source. Columns not named take their default.
#[derive(Clone, Debug, Default)]
pub struct Mapping {
    pub columns: HashMap<String, Target>,
    pub kind: Kind,
}

impl Mapping {
    /// A mapping file: `[columns]` with `"Column name" = "email"` lines.
    pub fn from_toml(text: &str) -> Result<Mapping, String> {
        let t: toml::Table = text.parse().map_err(|e: toml::de::Error| format!("not valid TOML: {}", e.message()))?;
        let mut columns = HashMap::new();
        for (k, v) in t.get("columns").and_then(|c| c.as_table()).ok_or("the mapping needs a [columns] table")? {
            let target = v.as_str().ok_or_else(|| format!("columns.{k} must be a string"))?;
            columns.insert(k.clone(), Target::parse(target));
        }
        Ok(Mapping { columns, kind: Kind::Profiles })
    }

    /// From (column, target) pairs, as the configuration's `[[sources]] columns` gives them.
    pub fn from_pairs<'a>(pairs: impl Iterator<Item = (&'a String, &'a String)>) -> Mapping {
        Mapping { columns: pairs.map(|(k, v)| (k.clone(), Target::parse(v))).collect(), kind: Kind::Profiles }
    }

    pub fn target(&self, column: &str) -> Target {
        self.columns.get(column).cloned().unwrap_or_else(|| match self.kind {
            Kind::Profiles => Target::infer(column),
            Kind::Orders => Target::infer_order(column),
            Kind::Stock => {
                use unicode_normalization::UnicodeNormalization;
                let c: String = column.trim().to_lowercase().nfd().filter(char::is_ascii_alphanumeric).collect();
                match c.as_str() {
                    "stock" | "stocklevel" | "onhand" | "inventory" | "disponible" | "quantiteenstock" | "enstock" => Target::Quantity,
                    _ => match Target::infer_order(column) {
                        t @ (Target::ProductId | Target::Quantity | Target::OrderDate) => t,
                        _ => Target::Ignore,
                    },
                }
            }
        })
    }
}

/// Why a row is quarantined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowProblem {
    pub field: String,
    pub reason: &'static str,
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImportReport {
    pub rows: u64,
    /// Stored now.
    pub imported: u64,
    /// Already stored by an earlier import of the same rows.
    pub unchanged: u64,
    pub quarantined: u64,
    /// Valid rows the privacy gate refused, by reason.
    pub refused: BTreeMap<String, u64>,
    /// Rows of this file in quarantine before, now replaced.
    pub previously_quarantined: u64,
}

/// The person a row describes: user id, anonymous id and normalised traits.
type Person = (Option<String>, Option<String>, Map<String, Value>);

fn person(fields: &[(String, String)], mapping: &Mapping, source: &str, region: &str) -> Result<Person, RowProblem> {
    let bad = |field: &str, why: Invalid| RowProblem { field: field.to_owned(), reason: why.code() };
    let mut traits = Map::new();
    let (mut user_id, mut anonymous_id) = (None, None);
    let country_col = fields.iter().find(|(c, _)| mapping.target(c) == Target::Trait("country".into())).map(|(_, v)| v.trim());
    let country = country_col.and_then(|c| normalise::country(c).ok()).unwrap_or_else(|| region.to_owned());
    for (column, raw) in fields {
        let value = raw.trim();
        if value.is_empty() {
            continue;
        }
        match mapping.target(column) {
            Target::UserId => user_id = Some(value.to_owned()),
            Target::AnonymousId => anonymous_id = Some(value.to_owned()),
            Target::Email => {
                traits.insert("email".into(), normalise::email(value).map_err(|e| bad(column, e))?.into());
            }
            Target::Phone => {
                traits.insert("phone".into(), normalise::phone(value, region).map_err(|e| bad(column, e))?.into());
            }
            Target::Trait(name) => {
                let v = match name.as_str() {
                    "firstName" | "lastName" | "name" => normalise::name(value).map_err(|e| bad(column, e))?,
                    "birthday" => {
                        let d = normalise::date(value).map_err(|e| bad(column, e))?;
                        d.iso
                    }
                    "postalCode" => normalise::postcode(value, &country).map_err(|e| bad(column, e))?,
                    "country" => normalise::country(value).map_err(|e| bad(column, e))?,
                    "email" => normalise::email(value).map_err(|e| bad(column, e))?,
                    "phone" => normalise::phone(value, region).map_err(|e| bad(column, e))?,
                    _ => value.to_owned(),
                };
                traits.insert(name, Value::String(v));
            }
            // The order's own columns, and ignored ones.
            _ => {}
        }
    }
    if user_id.is_none() && anonymous_id.is_none() {
        // A row known only by email or phone: a stable anonymous id from them, so that the
        // row stitches to the person's profile by that email or phone.
        let key = traits.get("email").or_else(|| traits.get("phone")).and_then(Value::as_str).map(str::to_owned);
        match key {
            Some(k) => anonymous_id = Some(format!("import-{}", &hex::encode(Sha256::digest(format!("{source}\u{1f}{k}")))[..24])),
            None => return Err(RowProblem { field: "(row)".into(), reason: "missing_identity" }),
        }
    }
    Ok((user_id, anonymous_id, traits))
}

fn message_id(source: &str, content: &Value) -> String {
    format!("import-{}", &hex::encode(Sha256::digest(format!("{source}\u{1f}{content}")))[..32])
}

/// Turns one row into an `identify` message (JSON text), or says why it cannot be.
pub fn row_to_message(fields: &[(String, String)], mapping: &Mapping, source: &str, region: &str, now: Millis) -> Result<String, RowProblem> {
    let (user_id, anonymous_id, traits) = person(fields, mapping, source, region)?;
    // The id is the content: the same row imported again is a duplicate, a changed one is new.
    let content = json!({"userId": user_id, "anonymousId": anonymous_id, "traits": traits});
    let mut m = json!({"type": "identify", "messageId": message_id(source, &content), "traits": traits, "timestamp": confidant_core::time::format_millis(now),
                       "context": {"library": {"name": "confidant-import"}}});
    if let Some(u) = user_id {
        m["userId"] = u.into();
    }
    if let Some(a) = anonymous_id {
        m["anonymousId"] = a.into();
    }
    Ok(m.to_string())
}

/// A time in a file: a full timestamp, or a date in any notation `normalise::date` reads
/// (midnight UTC).
fn moment(value: &str) -> Option<Millis> {
    confidant_core::time::parse_timestamp(value).or_else(|| normalise::date(value).ok().and_then(|d| confidant_core::time::parse_timestamp(&format!("{}T00:00:00Z", d.iso))))
}

/// One order line of an order file.
#[derive(Clone, Debug)]
struct OrderLine {
    line: u64,
    order_id: String,
    at: Millis,
    person: Person,
    total: Option<crate::analytics::Money>,
    currency: Option<String>,
    product: Option<(String, i64, Option<crate::analytics::Money>)>,
}

fn order_line(line: u64, fields: &[(String, String)], mapping: &Mapping, source: &str, region: &str) -> Result<OrderLine, RowProblem> {
    let person = person(fields, mapping, source, region)?;
    let (mut order_id, mut at, mut total, mut currency, mut product, mut quantity, mut price) = (None, None, None, None, None, None, None);
    for (column, raw) in fields {
        let value = raw.trim();
        if value.is_empty() {
            continue;
        }
        let bad = |reason: &'static str| RowProblem { field: column.clone(), reason };
        let money = || crate::analytics::Money::parse(&Value::String(value.replace(',', "."))).ok_or_else(|| bad("invalid_amount"));
        match mapping.target(column) {
            Target::OrderId => order_id = Some(value.to_owned()),
            Target::OrderDate => {
                at = Some(moment(value).ok_or_else(|| bad("invalid_date"))?);
            }
            Target::Total => total = Some(money()?),
            Target::Price => price = Some(money()?),
            Target::Currency => {
                if value.len() != 3 || !value.bytes().all(|b| b.is_ascii_alphabetic()) {
                    return Err(bad("invalid_currency"));
                }
                currency = Some(value.to_uppercase());
            }
            Target::ProductId => product = Some(value.to_owned()),
            Target::Quantity => quantity = Some(value.parse::<i64>().ok().filter(|q| *q > 0 && *q <= 1_000_000).ok_or_else(|| bad("invalid_quantity"))?),
            _ => {}
        }
    }
    let order_id = order_id.ok_or(RowProblem { field: "(row)".into(), reason: "missing_order_id" })?;
    let at = at.ok_or(RowProblem { field: "(row)".into(), reason: "missing_date" })?;
    if product.is_none() && total.is_none() {
        return Err(RowProblem { field: "(row)".into(), reason: "missing_product_or_total" });
    }
    Ok(OrderLine { line, order_id, at, person, total, currency, product: product.map(|p| (p, quantity.unwrap_or(1), price)) })
}

/// Groups order lines by order id into `Order Completed` messages. Lines of one order that
/// disagree on the customer, the date or the currency are refused (the first line decides).
fn orders_to_messages(lines: Vec<OrderLine>, source: &str) -> (Vec<String>, Vec<(u64, RowProblem)>) {
    let mut orders: BTreeMap<String, Vec<OrderLine>> = BTreeMap::new();
    let mut problems = Vec::new();
    for l in lines {
        let group = orders.entry(l.order_id.clone()).or_default();
        if let Some(first) = group.first() {
            let same_person = (&first.person.0, &first.person.1) == (&l.person.0, &l.person.1);
            if !same_person || first.at != l.at || (l.currency.is_some() && first.currency.is_some() && l.currency != first.currency) {
                problems.push((l.line, RowProblem { field: "(row)".into(), reason: "order_conflict" }));
                continue;
            }
        }
        group.push(l);
    }
    let mut out = Vec::with_capacity(orders.len());
    for (order_id, group) in orders {
        let first = &group[0];
        let currency = group.iter().find_map(|l| l.currency.clone());
        let products: Vec<Value> = group
            .iter()
            .filter_map(|l| l.product.as_ref())
            .map(|(id, q, price)| {
                let mut p = json!({"product_id": id, "quantity": q});
                if let Some(pr) = price {
                    p["price"] = pr.to_decimal_string().into();
                }
                p
            })
            .collect();
        // The order's total as the file gives it; else the sum of its lines when every line has a price.
        let total = group.iter().find_map(|l| l.total).or_else(|| {
            let lines: Option<Vec<i64>> = group.iter().filter_map(|l| l.product.as_ref()).map(|(_, q, p)| p.map(|p| p.minor * q)).collect();
            lines.filter(|v| !v.is_empty()).map(|v| crate::analytics::Money { minor: v.iter().sum() })
        });
        let (user_id, anonymous_id, traits) = &first.person;
        let mut properties = json!({"order_id": order_id, "products": products});
        if let Some(t) = total {
            properties["total"] = t.to_decimal_string().into();
        }
        if let Some(c) = &currency {
            properties["currency"] = c.clone().into();
        }
        let content = json!({"userId": user_id, "anonymousId": anonymous_id, "traits": traits, "at": first.at, "properties": properties});
        let mut m = json!({"type": "track", "event": "Order Completed", "messageId": message_id(source, &content), "properties": properties,
                           "timestamp": confidant_core::time::format_millis(first.at),
                           "context": {"library": {"name": "confidant-import"}, "traits": traits}});
        if let Some(u) = user_id {
            m["userId"] = u.clone().into();
        }
        if let Some(a) = anonymous_id {
            m["anonymousId"] = a.clone().into();
        }
        out.push(m.to_string());
    }
    (out, problems)
}

fn stock_row(fields: &[(String, String)], mapping: &Mapping, now: Millis) -> Result<(String, f64, Option<Millis>), RowProblem> {
    let (mut product, mut quantity, mut at) = (None, None, None);
    for (column, raw) in fields {
        let value = raw.trim();
        if value.is_empty() {
            continue;
        }
        let bad = |reason: &'static str| RowProblem { field: column.clone(), reason };
        match mapping.target(column) {
            Target::ProductId => product = Some(value.to_owned()),
            Target::Quantity => quantity = Some(value.replace(',', ".").parse::<f64>().ok().filter(|q| q.is_finite() && *q >= 0.0).ok_or_else(|| bad("invalid_quantity"))?),
            Target::OrderDate => {
at = Some(moment(value).filter(|t| *t <= now).ok_or_else(|| bad("invalid_date"))?)
            }
            _ => {}
        }
    }
    let product = product.ok_or(RowProblem { field: "(row)".into(), reason: "missing_product" })?;
    let quantity = quantity.ok_or(RowProblem { field: "(row)".into(), reason: "missing_quantity" })?;
    Ok((product, quantity, at))
}

fn quarantined(line: u64, p: RowProblem, fields: Vec<(String, String)>) -> QuarantineRow {
    let raw: Map<String, Value> = fields.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
    QuarantineRow { line, field: p.field, reason: p.reason.to_owned(), raw: Value::Object(raw).to_string() }
}

impl App {
    /// Imports rows (line number and (column, value) pairs) from one file for a source, in
    /// batches through the ingestion path; invalid rows replace the file's quarantine.
    pub async fn import_rows(
        &self,
        source: &Source,
        file: &str,
        mapping: &Mapping,
        mut rows: impl Iterator<Item = (u64, Vec<(String, String)>)>,
        mut progress: impl FnMut(u64),
    ) -> Result<ImportReport, ServiceError> {
        let region = self.config().ingest.default_region.clone();
        let now = crate::now_millis();
        let mut report = ImportReport::default();
        let mut quarantine = Vec::new();
        let mut batch: Vec<String> = Vec::with_capacity(500);
        if mapping.kind == Kind::Stock {
            let mut levels = Vec::new();
            for (line, fields) in rows.by_ref() {
                report.rows += 1;
                match stock_row(&fields, mapping, now) {
                    Ok(l) => levels.push(l),
                    Err(p) => quarantine.push(quarantined(line, p, fields)),
                }
            }
            report.quarantined = quarantine.len() as u64;
            let by = crate::Principal { name: format!("import:{}", source.name), role: confidant_core::config::Role::Admin };
            for chunk in levels.chunks(10_000) {
                report.imported += self.record_stock(chunk.to_vec(), &by).await?;
            }
            progress(report.rows);
        }
        if mapping.kind == Kind::Orders {
            // Lines of one order may be anywhere in the file: group them all, then send.
            let mut lines = Vec::new();
            let mut raw_of: HashMap<u64, Vec<(String, String)>> = HashMap::new();
            for (line, fields) in rows.by_ref() {
                report.rows += 1;
                match order_line(line, &fields, mapping, &source.name, &region) {
                    Ok(l) => {
                        raw_of.insert(line, fields);
                        lines.push(l);
                    }
                    Err(p) => quarantine.push(quarantined(line, p, fields)),
                }
            }
            let (messages, problems) = orders_to_messages(lines, &source.name);
            for (line, p) in problems {
                quarantine.push(quarantined(line, p, raw_of.remove(&line).unwrap_or_default()));
            }
            report.quarantined = quarantine.len() as u64;
            for chunk in messages.chunks(500) {
                batch.extend(chunk.iter().cloned());
                self.import_batch(source, &mut batch, &mut report).await?;
                progress(report.rows);
            }
        }
        // (An order file has consumed every row above.)
        for (line, fields) in rows {
            report.rows += 1;
            match row_to_message(&fields, mapping, &source.name, &region, now) {
                Ok(m) => batch.push(m),
                Err(p) => {
                    quarantine.push(quarantined(line, p, fields));
                    report.quarantined += 1;
                }
            }
            if batch.len() >= 500 {
                self.import_batch(source, &mut batch, &mut report).await?;
                progress(report.rows);
            }
        }
        self.import_batch(source, &mut batch, &mut report).await?;
        progress(report.rows);
        report.previously_quarantined = self.store().quarantine_replace(source.id, file.to_owned(), quarantine).await?;
        self.audit("import", "import.completed", None, json!({"source": source.name, "rows": report.rows, "imported": report.imported, "quarantined": report.quarantined}))
            .await?;
        Ok(report)
    }

    async fn import_batch(&self, source: &Source, batch: &mut Vec<String>, report: &mut ImportReport) -> Result<(), ServiceError> {
        if batch.is_empty() {
            return Ok(());
        }
        let received_at = crate::now_millis();
        // A full queue is waited out, not failed: an import is a batch job.
        let outcome = loop {
            let req = IngestRequest {
                source,
                messages: batch.iter().map(String::as_str).collect(),
                batch_sent_at: None,
                endpoint_type: None,
                received_at,
                gpc: false,
            };
            match self.ingest(req).await {
                Err(ServiceError::Overloaded { retry_after_seconds }) => tokio::time::sleep(std::time::Duration::from_secs(retry_after_seconds)).await,
                other => break other?,
            }
        };
        report.unchanged += outcome.duplicates as u64;
        report.imported += (outcome.accepted - outcome.duplicates) as u64;
        for r in outcome.rejected {
            *report.refused.entry(r.reason.code().to_owned()).or_default() += 1;
        }
        batch.clear();
        Ok(())
    }

    /// Data quality per source and field (no personal data: counts and rates).
    pub async fn quality(&self) -> Result<Vec<confidant_store::privacy::QualitySource>, ServiceError> {
        let mut q = self.store().quality().await?;
        // Validity: quarantined rows count against the trait their column maps to.
        for source in &mut q {
            let mapping = self.config().sources.iter().find(|s| s.name == source.source).map(|s| Mapping::from_pairs(s.columns.iter())).unwrap_or_default();
            for (key, n) in &source.quarantined {
                let column = key.rsplit_once(':').map_or(key.as_str(), |(c, _)| c);
                let field = match mapping.target(column) {
                    Target::Email => "email".to_owned(),
                    Target::Phone => "phone".to_owned(),
                    Target::Trait(t) => t,
                    _ => continue,
                };
                match source.fields.iter_mut().find(|f| f.field == field) {
                    Some(f) => f.invalid += n,
                    None => source.fields.push(confidant_store::privacy::QualityField {
                        field,
                        present: 0,
                        completeness: 0.0,
                        uniqueness: None,
                        last_updated: 0,
                        invalid: *n,
                        validity: 0.0,
                    }),
                }
            }
            for f in &mut source.fields {
                f.validity = if f.present + f.invalid == 0 { 1.0 } else { f.present as f64 / (f.present + f.invalid) as f64 };
            }
        }
        Ok(q)
    }

    pub async fn quarantine(&self, source: Option<String>) -> Result<Vec<QuarantineView>, ServiceError> {
        Ok(self.store().quarantine_list(source).await?)
    }

    /// The source a name refers to.
    pub fn source_named(&self, name: &str) -> Option<&Source> {
        self.inner.write_keys.values().find(|s| s.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn rows_become_normalised_identify_messages_with_stable_ids() {
        let m = Mapping::default();
        let r = row(&[("Numéro client", "C-1"), ("Courriel", " Lea@Example.FR "), ("Téléphone", "06 12 34 56 78"), ("Prénom", "LÉA"), ("Date de naissance", "14/03/1980"), ("Code postal", "7500")]);
        let mut mapping = m.clone();
        mapping.columns.insert("Numéro client".into(), Target::UserId);
        let a = row_to_message(&r, &mapping, "crm", "FR", 1).unwrap();
        let v: Value = serde_json::from_str(&a).unwrap();
        assert_eq!(v["userId"], "C-1");
        assert_eq!(v["traits"]["email"], "lea@example.fr");
        assert_eq!(v["traits"]["phone"], "+33612345678");
        assert_eq!(v["traits"]["firstName"], "Léa");
        assert_eq!(v["traits"]["birthday"], "1980-03-14");
        assert_eq!(v["traits"]["postalCode"], "07500");
        let b: Value = serde_json::from_str(&row_to_message(&r, &mapping, "crm", "FR", 999).unwrap()).unwrap();
        assert_eq!(v["messageId"], b["messageId"], "the same row is the same message");
        let e = row_to_message(&row(&[("email", "not-an-email")]), &m, "crm", "FR", 1).unwrap_err();
        assert_eq!(e, RowProblem { field: "email".into(), reason: "invalid_email" });
        assert_eq!(row_to_message(&row(&[("colour", "blue")]), &m, "crm", "FR", 1).unwrap_err().reason, "missing_identity");
    }
}
