//! The register of processing activities (Art. 30), generated from the configuration the
//! product enforces and from live counts, so it cannot drift from what the system does. Its
//! fields follow the CNIL's template: controller and DPO, then per processing (purpose) its
//! legal basis, categories of subjects and of data, recipients, transfers and safeguards,
//! retention, and security measures.

use serde_json::{json, Value};

use crate::{App, ServiceError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopaFormat {
    Json,
    Markdown,
    Html,
}

impl RopaFormat {
    pub fn from_name(s: &str) -> Option<RopaFormat> {
        match s {
            "json" => Some(RopaFormat::Json),
            "md" | "markdown" => Some(RopaFormat::Markdown),
            "html" => Some(RopaFormat::Html),
            _ => None,
        }
    }
}

impl App {
    /// The register as JSON: the source of the Markdown and HTML renderings.
    pub async fn ropa(&self) -> Result<Value, ServiceError> {
        let policy = self.policy();
        let c = policy.config();
        let counts = self.register_counts().await?;
        let processing: Vec<Value> = c
            .purposes
            .iter()
            .map(|p| {
                let categories: Vec<Value> = p
                    .categories
                    .iter()
                    .map(|k| {
                        let cat = policy.category(k);
                        json!({"key": k, "name": cat.map(|c| &c.name), "special": cat.is_some_and(|c| c.special),
                               "encrypted": policy.is_encrypted(k), "subjects_now": counts.subjects_by_category.get(k).copied().unwrap_or(0)})
                    })
                    .collect();
                json!({
                    "id": p.id, "name": p.name, "description": p.description,
                    "legal_basis": p.legal_basis.as_str(), "legal_basis_article": p.legal_basis.article(),
                    "art9_basis": p.art9_basis, "subjects": p.subjects, "data_categories": categories,
                    "recipients": p.recipients, "processors": p.processors,
                    "transfers": p.transfers, "retention": p.retention, "objection_by_gpc": p.gpc,
                })
            })
            .collect();
        Ok(json!({
            "format": "confidant.ropa.v1",
            "generated_at": confidant_core::time::format_millis(crate::now_millis()),
            "controller": c.controller,
            "dpo": c.dpo,
            "notice_version": c.notice_version,
            "notice_sha256": policy.notice_sha256(),
            "processing": processing,
            "sources": counts.events_by_source,
            "subjects": counts.subjects,
            "consent_receipts": counts.receipts,
            "rights_requests": counts.requests,
            "security_measures": c.security_measures,
        }))
    }

    pub async fn ropa_rendered(&self, format: RopaFormat) -> Result<String, ServiceError> {
        let r = self.ropa().await?;
        Ok(match format {
            RopaFormat::Json => serde_json::to_string_pretty(&r).unwrap_or_default(),
            RopaFormat::Markdown => markdown(&r),
            RopaFormat::Html => html(&r),
        })
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(a) => a.iter().map(s).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

fn transfers(v: &Value) -> String {
    let list: Vec<String> = v.as_array().into_iter().flatten().map(|t| format!("{} ({})", s(&t["country"]), s(&t["safeguard"]))).collect();
    if list.is_empty() {
        "none outside the EU".into()
    } else {
        list.join(", ")
    }
}

fn retention(v: &Value) -> String {
    let from = if v["from"] == "collection" { "from collection" } else { "after the last activity" };
    format!("{} days {from}", s(&v["days"]))
}

fn categories(v: &Value) -> String {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let mut t = format!("{} ({} subjects)", s(&c["key"]), s(&c["subjects_now"]));
            if c["special"] == true {
                t.push_str(" [Art. 9]");
            }
            if c["encrypted"] == true {
                t.push_str(" [encrypted]");
            }
            t
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The CNIL template's fields of one processing, in order, as (label, text).
fn fields(p: &Value) -> Vec<(&'static str, String)> {
    let mut f = vec![("Legal basis", format!("{} ({})", s(&p["legal_basis"]), s(&p["legal_basis_article"])))];
    if !p["art9_basis"].is_null() {
        f.push(("Art. 9 basis", s(&p["art9_basis"])));
    }
    f.extend([
        ("Categories of data subjects", s(&p["subjects"])),
        ("Categories of personal data", categories(&p["data_categories"])),
        ("Recipients", s(&p["recipients"])),
        ("Processors", s(&p["processors"])),
        ("Transfers outside the EU and safeguards", transfers(&p["transfers"])),
        ("Retention", retention(&p["retention"])),
    ]);
    f
}

fn markdown(r: &Value) -> String {
    let mut o = String::new();
    o.push_str("# Registre des activités de traitement / Record of processing activities (Art. 30 GDPR)\n\n");
    o.push_str(&format!("Generated {} from the configuration in force and live counts.\n\n", s(&r["generated_at"])));
    o.push_str(&format!(
        "- **Controller**: {}, {} ({})\n- **DPO**: {} ({})\n- **Notice**: version {} (SHA-256 {})\n- **Subjects held now**: {}\n\n",
        s(&r["controller"]["name"]),
        s(&r["controller"]["address"]),
        s(&r["controller"]["contact"]),
        s(&r["dpo"]["name"]),
        s(&r["dpo"]["contact"]),
        s(&r["notice_version"]),
        s(&r["notice_sha256"]),
        s(&r["subjects"])
    ));
    for p in r["processing"].as_array().into_iter().flatten() {
        o.push_str(&format!("## {} — {} (`{}`)\n\n", s(&p["name"]["fr"]), s(&p["name"]["en"]), s(&p["id"])));
        o.push_str(&format!("{}\n\n", s(&p["description"]["fr"])));
        o.push_str("| Field | Value |\n|---|---|\n");
        for (k, v) in fields(p) {
            o.push_str(&format!("| {k} | {} |\n", v.replace('|', "\\|")));
        }
        o.push('\n');
    }
    o.push_str("## Sources\n\n");
    for (name, n) in r["sources"].as_object().into_iter().flatten() {
        o.push_str(&format!("- {name}: {} events\n", s(n)));
    }
    o.push_str("\n## Security measures (Art. 32)\n\n");
    for m in r["security_measures"].as_array().into_iter().flatten() {
        o.push_str(&format!("- {}\n", s(m)));
    }
    o
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

fn html(r: &Value) -> String {
    let mut o = String::from("<!doctype html><html lang=\"fr\"><head><meta charset=\"utf-8\"><title>Registre des traitements</title></head><body>");
    o.push_str("<h1>Registre des activités de traitement / Record of processing activities</h1>");
    o.push_str(&format!(
        "<p>Generated {}.</p><dl><dt>Controller</dt><dd>{}, {} ({})</dd><dt>DPO</dt><dd>{} ({})</dd><dt>Notice</dt><dd>version {} (SHA-256 {})</dd><dt>Subjects held now</dt><dd>{}</dd></dl>",
        esc(&s(&r["generated_at"])),
        esc(&s(&r["controller"]["name"])),
        esc(&s(&r["controller"]["address"])),
        esc(&s(&r["controller"]["contact"])),
        esc(&s(&r["dpo"]["name"])),
        esc(&s(&r["dpo"]["contact"])),
        esc(&s(&r["notice_version"])),
        esc(&s(&r["notice_sha256"])),
        esc(&s(&r["subjects"]))
    ));
    for p in r["processing"].as_array().into_iter().flatten() {
        o.push_str(&format!("<section><h2>{} — {} (<code>{}</code>)</h2><p>{}</p><table>", esc(&s(&p["name"]["fr"])), esc(&s(&p["name"]["en"])), esc(&s(&p["id"])), esc(&s(&p["description"]["fr"]))));
        for (k, v) in fields(p) {
            o.push_str(&format!("<tr><th scope=\"row\">{k}</th><td>{}</td></tr>", esc(&v)));
        }
        o.push_str("</table></section>");
    }
    o.push_str("<h2>Security measures (Art. 32)</h2><ul>");
    for m in r["security_measures"].as_array().into_iter().flatten() {
        o.push_str(&format!("<li>{}</li>", esc(&s(m))));
    }
    o.push_str("</ul></body></html>");
    o
}
