//! Message templates: plain text with `{{ variable }}` placeholders, checked before anything is
//! sent. A placeholder is `{{ name }}` or `{{ name | "fallback" }}`; the names a template may use
//! are given by the caller (the tracking plan's traits and the built-ins of the message), so an
//! unknown or misspelt variable is refused with its line and column instead of reaching a
//! customer as an empty gap. No logic, no loops, no HTML: what the shop writes is what is sent.

use std::fmt;

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Var { name: String, fallback: Option<String> },
}

/// Why a template does not parse, and where (1-based line and column, in characters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateError {
    pub offset: usize,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at line {}, column {}", self.message, self.line, self.column)
    }
}

impl std::error::Error for TemplateError {}

/// The longest template accepted, in bytes.
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;

fn error_at(text: &str, offset: usize, message: String) -> TemplateError {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    TemplateError { offset, line, column, message }
}

impl Template {
    /// Parses `text`; `known` says whether a variable name may be used.
    pub fn parse(text: &str, known: &dyn Fn(&str) -> bool) -> Result<Template, TemplateError> {
        if text.len() > MAX_TEMPLATE_BYTES {
            return Err(error_at(text, 0, format!("the template is longer than {MAX_TEMPLATE_BYTES} bytes")));
        }
        let mut parts = Vec::new();
        let mut rest = 0;
        while let Some(open) = text[rest..].find("{{").map(|i| i + rest) {
            if open > rest {
                parts.push(Part::Text(text[rest..open].to_owned()));
            }
            let inner_start = open + 2;
            let Some(close) = text[inner_start..].find("}}").map(|i| i + inner_start) else {
                return Err(error_at(text, open, "`{{` is not closed by `}}`".into()));
            };
            let inner = &text[inner_start..close];
            if let Some(nested) = inner.find("{{") {
                return Err(error_at(text, inner_start + nested, "`{{` inside a placeholder".into()));
            }
            let (name_part, fallback) = match inner.find('|') {
                Some(bar) => {
                    let f = inner[bar + 1..].trim();
                    let quoted = f.len() >= 2 && f.starts_with('"') && f.ends_with('"');
                    if !quoted {
                        let at = inner_start + bar + 1 + (inner[bar + 1..].len() - inner[bar + 1..].trim_start().len());
                        return Err(error_at(text, at, "a fallback must be a quoted text, as in {{ firstName | \"client\" }}".into()));
                    }
                    (&inner[..bar], Some(f[1..f.len() - 1].to_owned()))
                }
                None => (inner, None),
            };
            let name = name_part.trim();
            let name_at = inner_start + (name_part.len() - name_part.trim_start().len());
            if name.is_empty() {
                return Err(error_at(text, name_at, "an empty placeholder".into()));
            }
            if !name.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '.') {
                return Err(error_at(text, name_at, format!("`{}` is not a variable name", name.chars().take(40).collect::<String>())));
            }
            if !known(name) {
                return Err(error_at(text, name_at, format!("unknown variable `{name}`")));
            }
            parts.push(Part::Var { name: name.to_owned(), fallback });
            rest = close + 2;
        }
        if rest < text.len() {
            parts.push(Part::Text(text[rest..].to_owned()));
        }
        Ok(Template { parts })
    }

    /// The variables the template uses, in order, each once.
    pub fn variables(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for p in &self.parts {
            if let Part::Var { name, .. } = p {
                if !out.contains(&name.as_str()) {
                    out.push(name);
                }
            }
        }
        out
    }

    pub fn uses(&self, name: &str) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Var { name: n, .. } if n == name))
    }

    /// Renders with `value` giving each variable's text; a variable without a value takes its
    /// fallback, or nothing.
    pub fn render(&self, value: &dyn Fn(&str) -> Option<String>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Var { name, fallback } => match value(name).filter(|v| !v.is_empty()) {
                    Some(v) => out.push_str(&v),
                    None => out.push_str(fallback.as_deref().unwrap_or("")),
                },
            }
        }
        out
    }

    /// Renders for a header (a subject line): one line, control characters removed, so that
    /// a value can never add a header.
    pub fn render_line(&self, value: &dyn Fn(&str) -> Option<String>) -> String {
        let text = self.render(value);
        let one: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        one.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(n: &str) -> bool {
        ["firstName", "lastName", "unsubscribe_url", "recommendations"].contains(&n)
    }

    #[test]
    fn renders_variables_and_fallbacks() {
        let t = Template::parse("Bonjour {{ firstName | \"cher client\" }},\n{{recommendations}}\n-- {{unsubscribe_url}}", &known).unwrap();
        assert_eq!(t.variables(), vec!["firstName", "recommendations", "unsubscribe_url"]);
        let with = t.render(&|n| match n {
            "firstName" => Some("Alice".into()),
            "recommendations" => Some("- Lamp".into()),
            _ => None,
        });
        assert_eq!(with, "Bonjour Alice,\n- Lamp\n-- ");
        let without = t.render(&|_| None);
        assert!(without.starts_with("Bonjour cher client,"));
    }

    #[test]
    fn unknown_variables_are_refused_with_their_position() {
        let e = Template::parse("Bonjour,\n  merci {{ fristName }} !", &known).unwrap_err();
        assert_eq!((e.line, e.column), (2, 12), "{e}");
        assert!(e.message.contains("unknown variable `fristName`"), "{e}");
        let e = Template::parse("a {{ firstName", &known).unwrap_err();
        assert_eq!((e.line, e.column), (1, 3));
        let e = Template::parse("{{ firstName | client }}", &known).unwrap_err();
        assert!(e.message.contains("quoted"), "{e}");
        let e = Template::parse("{{ }}", &known).unwrap_err();
        assert!(e.message.contains("empty"));
        let e = Template::parse("{{ a b }}", &known).unwrap_err();
        assert!(e.message.contains("not a variable name"));
        assert!(Template::parse(&"x".repeat(MAX_TEMPLATE_BYTES + 1), &known).is_err());
        // Columns count characters, not bytes.
        let e = Template::parse("éé {{ nope }}", &known).unwrap_err();
        assert_eq!(e.column, 7);
    }

    #[test]
    fn a_subject_line_stays_one_line() {
        let t = Template::parse("Hello {{firstName}}", &known).unwrap();
        assert_eq!(t.render_line(&|_| Some("Eve\r\nBcc: x@y.z".into())), "Hello Eve Bcc: x@y.z");
    }
}
