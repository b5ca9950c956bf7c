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
            other => Target::Trait(other.strip_prefix("trait:").unwrap_or(other).to_owned()),
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
        Ok(Mapping { columns })
    }

    /// From (column, target) pairs, as the configuration's `[[sources]] columns` gives them.
    pub fn from_pairs<'a>(pairs: impl Iterator<Item = (&'a String, &'a String)>) -> Mapping {
        Mapping { columns: pairs.map(|(k, v)| (k.clone(), Target::parse(v))).collect() }
    }

    pub fn target(&self, column: &str) -> Target {
        self.columns.get(column).cloned().unwrap_or_else(|| Target::infer(column))
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

/// Turns one row into an `identify` message (JSON text), or says why it cannot be.
pub fn row_to_message(fields: &[(String, String)], mapping: &Mapping, source: &str, region: &str, now: Millis) -> Result<String, RowProblem> {
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
            Target::Ignore => {}
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
    // The id is the content: the same row imported again is a duplicate, a changed one is new.
    let content = json!({"userId": user_id, "anonymousId": anonymous_id, "traits": traits});
    let message_id = format!("import-{}", &hex::encode(Sha256::digest(format!("{source}\u{1f}{content}")))[..32]);
    let mut m = json!({"type": "identify", "messageId": message_id, "traits": traits, "timestamp": confidant_core::time::format_millis(now),
                       "context": {"library": {"name": "confidant-import"}}});
    if let Some(u) = user_id {
        m["userId"] = u.into();
    }
    if let Some(a) = anonymous_id {
        m["anonymousId"] = a.into();
    }
    Ok(m.to_string())
}

impl App {
    /// Imports rows (line number and (column, value) pairs) from one file for a source, in
    /// batches through the ingestion path; invalid rows replace the file's quarantine.
    pub async fn import_rows(
        &self,
        source: &Source,
        file: &str,
        mapping: &Mapping,
        rows: impl Iterator<Item = (u64, Vec<(String, String)>)>,
        mut progress: impl FnMut(u64),
    ) -> Result<ImportReport, ServiceError> {
        let region = self.config().ingest.default_region.clone();
        let now = crate::now_millis();
        let mut report = ImportReport::default();
        let mut quarantine = Vec::new();
        let mut batch: Vec<String> = Vec::with_capacity(500);
        for (line, fields) in rows {
            report.rows += 1;
            match row_to_message(&fields, mapping, &source.name, &region, now) {
                Ok(m) => batch.push(m),
                Err(p) => {
                    let raw: Map<String, Value> = fields.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
                    quarantine.push(QuarantineRow { line, field: p.field, reason: p.reason.to_owned(), raw: Value::Object(raw).to_string() });
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
