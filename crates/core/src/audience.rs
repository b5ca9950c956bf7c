//! Audience rules: a small language over a subject's traits, computed traits and event
//! history, parsed with the position of every error, and evaluated on facts the caller loads.
//!
//! ```text
//! rule      := or
//! or        := and ("or" and)*
//! and       := unary ("and" unary)*
//! unary     := "not" unary | "(" or ")" | "everyone" | field | event
//! field     := ("trait" | "computed") "." path test
//! test      := cmp value | "in" "(" value ("," value)* ")" | "exists" | "contains" string
//! event     := "did" string [where] [window]
//!            | "count" string [where] [window] cmp number
//!            | "sum" string "." path [where] [window] cmp number
//! where     := "where" "(" path test ("and" path test)* ")"
//! window    := "within" number ("minutes" | "hours" | "days" | "weeks")
//! cmp       := "=" | "!=" | "<" | "<=" | ">" | ">="
//! value     := string | number | "true" | "false"
//! ```
//!
//! For example: `computed.rfm_segment in ("Champions", "Loyal") and did "Order Completed"
//! where (total > 50) within 30 days and not did "Checkout Started" within 1 days`.
//!
//! Paths go into JSON objects (`total_spent.amount`, `products.category`); through an array,
//! a test holds when it holds for any element. Numbers compare as numbers (numeric strings
//! too, so that `"29.90"` is 29.9), other values as text. Keywords are case-insensitive.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;

use crate::time::Millis;

/// Longest rule accepted, in characters.
pub const MAX_RULE_CHARS: usize = 4096;
/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 32;
/// Longest window accepted: ten years.
pub const MAX_WINDOW_MS: i64 = 3650 * 86_400_000;

/// Why a rule does not parse, and where (1-based line and column, in characters).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct RuleError {
    /// Offset in characters from the start of the rule (0-based).
    pub offset: usize,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Test {
    Cmp(Cmp, Value),
    In(Vec<Value>),
    Exists,
    Contains(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Trait,
    Computed,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Aggregate {
    Did,
    Count(Cmp, f64),
    Sum(Vec<String>, Cmp, f64),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Rule {
    Everyone,
    Not(Box<Rule>),
    And(Vec<Rule>),
    Or(Vec<Rule>),
    Field { scope: Scope, path: Vec<String>, test: Test },
    Event { name: String, filters: Vec<(Vec<String>, Test)>, within_ms: Option<i64>, aggregate: Aggregate },
}

/// One event of a subject, as the rule sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct EventFact {
    pub name: String,
    pub at: Millis,
    pub properties: Value,
}

/// What a rule may look at for one subject.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Facts {
    pub traits: BTreeMap<String, Value>,
    pub computed: BTreeMap<String, Value>,
    pub events: Vec<EventFact>,
}

/// What a rule needs loaded: trait and computed keys, and per event name the oldest moment
/// it looks back to (`None`: all time).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Needs {
    pub traits: BTreeSet<String>,
    pub computed: BTreeSet<String>,
    pub events: BTreeMap<String, Option<i64>>,
}

impl Needs {
    /// The earliest timestamp to load for `event`, given now.
    pub fn since(&self, event: &str, now: Millis) -> Option<Millis> {
        self.events.get(event).copied().flatten().map(|w| now - w)
    }
}

// ---------------------------------------------------------------- lexing

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Num(f64),
    Sym(&'static str),
    End,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    at: usize,
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Word(w) => format!("'{w}'"),
        Tok::Str(_) => "a string".into(),
        Tok::Num(n) => format!("the number {n}"),
        Tok::Sym(s) => format!("'{s}'"),
        Tok::End => "the end of the rule".into(),
    }
}

fn lex(chars: &[char]) -> Result<Vec<Token>, (usize, String)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let at = i;
        if c == '"' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err((at, "a string is not closed (a \" is missing)".into())),
                    Some('"') => break,
                    Some('\\') => {
                        match chars.get(i + 1) {
                            Some(&e @ ('"' | '\\')) => s.push(e),
                            _ => return Err((i, "only \\\" and \\\\ may follow a backslash in a string".into())),
                        }
                        i += 2;
                        continue;
                    }
                    Some(&ch) => s.push(ch),
                }
                i += 1;
            }
            i += 1;
            out.push(Token { tok: Tok::Str(s), at });
        } else if c.is_ascii_digit() || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            i += 1;
            while chars.get(i).is_some_and(|d| d.is_ascii_digit() || *d == '.') {
                i += 1;
            }
            let text: String = chars[at..i].iter().collect();
            let n = text.parse::<f64>().map_err(|_| (at, format!("'{text}' is not a number")))?;
            out.push(Token { tok: Tok::Num(n), at });
        } else if c.is_alphabetic() || c == '_' {
            while chars.get(i).is_some_and(|d| d.is_alphanumeric() || *d == '_') {
                i += 1;
            }
            out.push(Token { tok: Tok::Word(chars[at..i].iter().collect()), at });
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let sym = match (two.as_str(), c) {
                ("!=", _) => "!=",
                ("<=", _) => "<=",
                (">=", _) => ">=",
                ("==", _) => "==",
                (_, '=') => "=",
                (_, '<') => "<",
                (_, '>') => ">",
                (_, '(') => "(",
                (_, ')') => ")",
                (_, ',') => ",",
                (_, '.') => ".",
                _ => return Err((at, format!("unexpected character '{c}'"))),
            };
            i += sym.len();
            out.push(Token { tok: Tok::Sym(if sym == "==" { "=" } else { sym }), at });
        }
    }
    out.push(Token { tok: Tok::End, at: chars.len() });
    Ok(out)
}

// ---------------------------------------------------------------- parsing

struct Parser {
    toks: Vec<Token>,
    pos: usize,
    depth: usize,
}

type P<T> = Result<T, (usize, String)>;

impl Parser {
    fn peek(&self) -> &Token {
        &self.toks[self.pos]
    }
    fn next(&mut self) -> Token {
        let t = self.toks[self.pos].clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }
    fn is_word(&self, w: &str) -> bool {
        matches!(&self.peek().tok, Tok::Word(x) if x.eq_ignore_ascii_case(w))
    }
    fn eat_word(&mut self, w: &str) -> bool {
        let yes = self.is_word(w);
        if yes {
            self.next();
        }
        yes
    }
    fn eat_sym(&mut self, s: &str) -> bool {
        let yes = matches!(&self.peek().tok, Tok::Sym(x) if *x == s);
        if yes {
            self.next();
        }
        yes
    }
    fn fail<T>(&self, expected: &str) -> P<T> {
        let t = self.peek();
        Err((t.at, format!("expected {expected}, found {}", describe(&t.tok))))
    }
    fn expect_sym(&mut self, s: &str) -> P<()> {
        if self.eat_sym(s) {
            Ok(())
        } else {
            self.fail(&format!("'{s}'"))
        }
    }

    fn or(&mut self) -> P<Rule> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err((self.peek().at, format!("the rule nests deeper than {MAX_DEPTH} levels")));
        }
        let mut v = vec![self.and()?];
        while self.eat_word("or") {
            v.push(self.and()?);
        }
        self.depth -= 1;
        Ok(if v.len() == 1 { v.pop().expect("one") } else { Rule::Or(v) })
    }

    fn and(&mut self) -> P<Rule> {
        let mut v = vec![self.unary()?];
        while self.eat_word("and") {
            v.push(self.unary()?);
        }
        Ok(if v.len() == 1 { v.pop().expect("one") } else { Rule::And(v) })
    }

    fn unary(&mut self) -> P<Rule> {
        if self.eat_word("not") {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err((self.peek().at, format!("the rule nests deeper than {MAX_DEPTH} levels")));
            }
            let r = self.unary()?;
            self.depth -= 1;
            return Ok(Rule::Not(Box::new(r)));
        }
        if self.eat_sym("(") {
            let r = self.or()?;
            self.expect_sym(")")?;
            return Ok(r);
        }
        if self.eat_word("everyone") {
            return Ok(Rule::Everyone);
        }
        for (w, scope) in [("trait", Scope::Trait), ("computed", Scope::Computed)] {
            if self.eat_word(w) {
                self.expect_sym(".")?;
                let path = self.path()?;
                let test = self.test()?;
                return Ok(Rule::Field { scope, path, test });
            }
        }
        for w in ["did", "count", "sum"] {
            if self.eat_word(w) {
                let Tok::Str(name) = self.peek().tok.clone() else {
                    return self.fail("an event name in double quotes");
                };
                if name.trim().is_empty() {
                    return Err((self.peek().at, "the event name is empty".into()));
                }
                self.next();
                let sum_path = if w == "sum" {
                    self.expect_sym(".")?;
                    Some(self.path()?)
                } else {
                    None
                };
                let filters = self.filters()?;
                let within_ms = self.window()?;
                let aggregate = match (w, sum_path) {
                    ("did", _) => Aggregate::Did,
                    ("count", _) => {
                        let (c, n) = self.numeric_cmp()?;
                        Aggregate::Count(c, n)
                    }
                    (_, Some(p)) => {
                        let (c, n) = self.numeric_cmp()?;
                        Aggregate::Sum(p, c, n)
                    }
                    _ => unreachable!("sum has a path"),
                };
                return Ok(Rule::Event { name, filters, within_ms, aggregate });
            }
        }
        self.fail("a condition (everyone, trait.<name>, computed.<name>, did, count, sum, not or '(')")
    }

    fn path(&mut self) -> P<Vec<String>> {
        let mut p = Vec::new();
        loop {
            match self.peek().tok.clone() {
                Tok::Word(w) => {
                    self.next();
                    p.push(w);
                }
                _ => return self.fail("a field name"),
            }
            if !self.eat_sym(".") {
                return Ok(p);
            }
        }
    }

    fn value(&mut self) -> P<Value> {
        match self.peek().tok.clone() {
            Tok::Str(s) => {
                self.next();
                Ok(Value::String(s))
            }
            Tok::Num(n) => {
                self.next();
                Ok(serde_json::Number::from_f64(n).map(Value::Number).unwrap_or(Value::Null))
            }
            Tok::Word(w) if w.eq_ignore_ascii_case("true") || w.eq_ignore_ascii_case("false") => {
                self.next();
                Ok(Value::Bool(w.eq_ignore_ascii_case("true")))
            }
            _ => self.fail("a value (a string in double quotes, a number, true or false)"),
        }
    }

    fn cmp(&mut self) -> Option<Cmp> {
        let c = match &self.peek().tok {
            Tok::Sym("=") => Cmp::Eq,
            Tok::Sym("!=") => Cmp::Ne,
            Tok::Sym("<") => Cmp::Lt,
            Tok::Sym("<=") => Cmp::Le,
            Tok::Sym(">") => Cmp::Gt,
            Tok::Sym(">=") => Cmp::Ge,
            _ => return None,
        };
        self.next();
        Some(c)
    }

    fn test(&mut self) -> P<Test> {
        if let Some(c) = self.cmp() {
            return Ok(Test::Cmp(c, self.value()?));
        }
        if self.eat_word("exists") {
            return Ok(Test::Exists);
        }
        if self.eat_word("contains") {
            return match self.peek().tok.clone() {
                Tok::Str(s) => {
                    self.next();
                    Ok(Test::Contains(s))
                }
                _ => self.fail("a string in double quotes"),
            };
        }
        if self.eat_word("in") {
            self.expect_sym("(")?;
            let mut v = vec![self.value()?];
            while self.eat_sym(",") {
                v.push(self.value()?);
            }
            self.expect_sym(")")?;
            return Ok(Test::In(v));
        }
        self.fail("a test (=, !=, <, <=, >, >=, in, exists or contains)")
    }

    fn numeric_cmp(&mut self) -> P<(Cmp, f64)> {
        let Some(c) = self.cmp() else { return self.fail("a comparison (=, !=, <, <=, >, >=)") };
        match self.peek().tok {
            Tok::Num(n) => {
                self.next();
                Ok((c, n))
            }
            _ => self.fail("a number"),
        }
    }

    fn filters(&mut self) -> P<Vec<(Vec<String>, Test)>> {
        if !self.eat_word("where") {
            return Ok(Vec::new());
        }
        self.expect_sym("(")?;
        let mut v = Vec::new();
        loop {
            let p = self.path()?;
            v.push((p, self.test()?));
            if !self.eat_word("and") {
                break;
            }
        }
        self.expect_sym(")")?;
        Ok(v)
    }

    fn window(&mut self) -> P<Option<i64>> {
        if !self.eat_word("within") {
            return Ok(None);
        }
        let at = self.peek().at;
        let n = match self.peek().tok {
            Tok::Num(n) if n > 0.0 && n.fract() == 0.0 => n,
            _ => return self.fail("a whole number of minutes, hours, days or weeks"),
        };
        self.next();
        let unit = match &self.peek().tok {
            Tok::Word(w) => match w.to_ascii_lowercase().as_str() {
                "minute" | "minutes" => 60_000.0,
                "hour" | "hours" => 3_600_000.0,
                "day" | "days" => 86_400_000.0,
                "week" | "weeks" => 7.0 * 86_400_000.0,
                _ => return self.fail("minutes, hours, days or weeks"),
            },
            _ => return self.fail("minutes, hours, days or weeks"),
        };
        self.next();
        let ms = n * unit;
        if ms > MAX_WINDOW_MS as f64 {
            return Err((at, "a window is at most 3650 days".into()));
        }
        Ok(Some(ms as i64))
    }
}

impl Rule {
    /// Parses a rule; an error names its line and column.
    pub fn parse(text: &str) -> Result<Rule, RuleError> {
        let chars: Vec<char> = text.chars().collect();
        let at = |offset: usize, message: String| {
            let before = &chars[..offset.min(chars.len())];
            let line = before.iter().filter(|c| **c == '\n').count() + 1;
            let column = before.iter().rev().take_while(|c| **c != '\n').count() + 1;
            RuleError { offset, line, column, message }
        };
        if chars.len() > MAX_RULE_CHARS {
            return Err(at(MAX_RULE_CHARS, format!("a rule is at most {MAX_RULE_CHARS} characters")));
        }
        let toks = lex(&chars).map_err(|(o, m)| at(o, m))?;
        let mut p = Parser { toks, pos: 0, depth: 0 };
        if matches!(p.peek().tok, Tok::End) {
            return Err(at(0, "the rule is empty; `everyone` matches every subject".into()));
        }
        let r = p.or().map_err(|(o, m)| at(o, m))?;
        if !matches!(p.peek().tok, Tok::End) {
            let t = p.peek().clone();
            return Err(at(t.at, format!("expected 'and', 'or' or the end of the rule, found {}", describe(&t.tok))));
        }
        Ok(r)
    }

    /// What must be loaded to evaluate the rule.
    pub fn needs(&self) -> Needs {
        let mut n = Needs::default();
        self.collect(&mut n);
        n
    }

    fn collect(&self, n: &mut Needs) {
        match self {
            Rule::Everyone => {}
            Rule::Not(r) => r.collect(n),
            Rule::And(v) | Rule::Or(v) => v.iter().for_each(|r| r.collect(n)),
            Rule::Field { scope, path, .. } => {
                let set = if *scope == Scope::Trait { &mut n.traits } else { &mut n.computed };
                set.insert(path[0].clone());
            }
            Rule::Event { name, within_ms, .. } => {
                let e = n.events.entry(name.clone()).or_insert(*within_ms);
                *e = match (*e, within_ms) {
                    (Some(a), Some(b)) => Some(a.max(*b)),
                    _ => None,
                };
            }
        }
    }

    /// Whether a subject with these facts is in the audience, at `now`.
    pub fn matches(&self, f: &Facts, now: Millis) -> bool {
        match self {
            Rule::Everyone => true,
            Rule::Not(r) => !r.matches(f, now),
            Rule::And(v) => v.iter().all(|r| r.matches(f, now)),
            Rule::Or(v) => v.iter().any(|r| r.matches(f, now)),
            Rule::Field { scope, path, test } => {
                let map = if *scope == Scope::Trait { &f.traits } else { &f.computed };
                let root = map.get(&path[0]).cloned().unwrap_or(Value::Null);
                holds(&root, &path[1..], test)
            }
            Rule::Event { name, filters, within_ms, aggregate } => {
                let from = within_ms.map(|w| now - w);
                let mut matching = f.events.iter().filter(|e| {
                    &e.name == name && from.is_none_or(|from| e.at >= from) && e.at <= now && filters.iter().all(|(p, t)| holds(&e.properties, p, t))
                });
                match aggregate {
                    Aggregate::Did => matching.next().is_some(),
                    Aggregate::Count(c, n) => compare_f64(matching.count() as f64, *c, *n),
                    Aggregate::Sum(p, c, n) => {
                        let total: f64 = matching.map(|e| leaves(&e.properties, p).iter().filter_map(|v| number(v)).sum::<f64>()).sum();
                        compare_f64(total, *c, *n)
                    }
                }
            }
        }
    }
}

/// The values a path leads to (through arrays, every element).
fn leaves<'a>(v: &'a Value, path: &[String]) -> Vec<&'a Value> {
    match (v, path.split_first()) {
        (Value::Array(a), _) => a.iter().flat_map(|x| leaves(x, path)).collect(),
        (_, None) => vec![v],
        (Value::Object(o), Some((k, rest))) => o.get(k.as_str()).map(|x| leaves(x, rest)).unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|x| x.is_finite()),
        _ => None,
    }
}

fn compare_f64(a: f64, c: Cmp, b: f64) -> bool {
    match c {
        Cmp::Eq => a == b,
        Cmp::Ne => a != b,
        Cmp::Lt => a < b,
        Cmp::Le => a <= b,
        Cmp::Gt => a > b,
        Cmp::Ge => a >= b,
    }
}

fn compare(a: &Value, c: Cmp, b: &Value) -> bool {
    if let (Some(x), Some(y)) = (number(a), number(b)) {
        return compare_f64(x, c, y);
    }
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let (Some(x), Some(y)) = (text(a), text(b)) else { return false };
    match c {
        Cmp::Eq => x == y,
        Cmp::Ne => x != y,
        Cmp::Lt => x < y,
        Cmp::Le => x <= y,
        Cmp::Gt => x > y,
        Cmp::Ge => x >= y,
    }
}

fn holds(root: &Value, path: &[String], test: &Test) -> bool {
    let vs: Vec<&Value> = leaves(root, path).into_iter().filter(|v| !v.is_null()).collect();
    match test {
        Test::Exists => !vs.is_empty(),
        // `!=` holds when no value equals (a missing value is different).
        Test::Cmp(Cmp::Ne, b) => !vs.iter().any(|v| compare(v, Cmp::Eq, b)),
        Test::Cmp(c, b) => vs.iter().any(|v| compare(v, *c, b)),
        Test::In(list) => vs.iter().any(|v| list.iter().any(|b| compare(v, Cmp::Eq, b))),
        Test::Contains(s) => vs.iter().any(|v| v.as_str().is_some_and(|x| x.to_lowercase().contains(&s.to_lowercase()))),
    }
}

impl fmt::Display for Cmp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cmp::Eq => "=",
            Cmp::Ne => "!=",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DAY: i64 = 86_400_000;

    fn facts() -> Facts {
        let now = 100 * DAY;
        Facts {
            traits: [("country".to_owned(), json!("FR")), ("age".to_owned(), json!(34)), ("plan".to_owned(), json!("gold"))].into(),
            computed: [("rfm_segment".to_owned(), json!("Champions")), ("total_spent".to_owned(), json!({"amount": "252.60", "currency": "EUR"}))].into(),
            events: vec![
                EventFact { name: "Order Completed".into(), at: now - 5 * DAY, properties: json!({"total": "60.50", "products": [{"category": "Shoes"}, {"category": "Socks"}]}) },
                EventFact { name: "Order Completed".into(), at: now - 40 * DAY, properties: json!({"total": 30, "products": [{"category": "Hats"}]}) },
                EventFact { name: "Checkout Started".into(), at: now - 2 * 3_600_000, properties: json!({}) },
            ],
        }
    }

    fn m(rule: &str) -> bool {
        Rule::parse(rule).unwrap_or_else(|e| panic!("{rule}: {e}")).matches(&facts(), 100 * DAY)
    }

    #[test]
    fn rules_over_traits_computed_traits_and_events() {
        assert!(m("everyone"));
        assert!(m("trait.country = \"FR\" and trait.age >= 18"));
        assert!(!m("trait.country != \"FR\""));
        assert!(m("trait.missing != \"x\""), "a missing value differs from anything");
        assert!(!m("trait.missing exists") && m("trait.plan exists"));
        assert!(m("computed.rfm_segment in (\"Champions\", \"Loyal\")"));
        assert!(m("computed.total_spent.amount > 250") && !m("computed.total_spent.amount > 253"));
        assert!(m("did \"Order Completed\" within 7 days"));
        assert!(!m("did \"Order Completed\" where (total > 100)"));
        assert!(m("did \"Order Completed\" where (products.category = \"Shoes\" and total >= 60.5) within 30 days"));
        assert!(!m("did \"Order Completed\" where (products.category = \"Hats\") within 30 days"));
        assert!(m("count \"Order Completed\" = 2") && m("count \"Order Completed\" within 30 days = 1"));
        assert!(m("sum \"Order Completed\".total > 90") && !m("sum \"Order Completed\".total within 30 days > 90"));
        // An abandoned checkout: started within a day, no order since.
        assert!(m("did \"Checkout Started\" within 1 day and not did \"Order Completed\" within 1 day"));
        assert!(m("(trait.country = \"DE\" or trait.plan contains \"GOL\") and NOT did \"Refund\""));
        assert!(!m("did \"Order Completed\" within 90 minutes"));
    }

    #[test]
    fn needs_say_what_to_load() {
        let r = Rule::parse("trait.a = 1 and computed.b.c = 2 and did \"X\" within 2 days or count \"X\" within 1 days > 1 or did \"Y\"").unwrap();
        let n = r.needs();
        assert_eq!(n.traits, ["a".to_owned()].into());
        assert_eq!(n.computed, ["b".to_owned()].into());
        assert_eq!(n.events["X"], Some(2 * DAY));
        assert_eq!(n.events["Y"], None);
    }

    #[test]
    fn errors_give_the_position() {
        let e = |rule: &str| Rule::parse(rule).unwrap_err();
        let x = e("trait.country = \"FR\" and trait.age >> 3");
        assert_eq!((x.line, x.column), (1, 37), "{x}");
        assert!(x.message.contains("expected a value"), "{x}");
        let x = e("did \"Order Completed\" within 30 dayz");
        assert_eq!(x.column, 33, "{x}");
        assert!(x.message.contains("minutes, hours, days or weeks"));
        let x = e("trait.country = \"FR\"\n  and (did \"X\"");
        assert_eq!((x.line, x.column), (2, 15), "{x}");
        assert!(x.message.contains("')'"), "{x}");
        let x = e("trait.name = \"Zoé");
        assert_eq!(x.column, 14, "{x}");
        assert!(e("").message.contains("empty"));
        assert!(e("purchases > 3").message.contains("expected a condition"));
        assert_eq!(e("everyone everyone").column, 10);
        assert!(e("count \"X\" > many").message.contains("a number"));
        assert!(e("did \"X\" within 4000 days").message.contains("3650"));
        assert!(e(&"(".repeat(40)).message.contains("deeper"));
        assert!(e(&"a".repeat(MAX_RULE_CHARS + 1)).message.contains("at most"));
        assert!(e("trait.x = 1 ; drop").message.contains("unexpected character ';'"));
    }
}
