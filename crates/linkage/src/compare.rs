//! Comparisons: for each role, an ordered list of levels from the strongest agreement to
//! "else", and the function that puts a pair of values into one of them.

use strsim::{damerau_levenshtein, jaro_winkler};

/// What a column holds, which decides how it is compared and normalised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    GivenName,
    Surname,
    /// A whole name in one column.
    Name,
    Dob,
    StreetNumber,
    Address,
    City,
    Postcode,
    State,
    Phone,
    Email,
    /// A national or account number (social security number...).
    IdNumber,
    /// Any other text, compared with Jaro-Winkler bands.
    Text,
    /// Any other value, compared exactly.
    Exact,
    /// A quantity (age, amount, height), compared with relative tolerance.
    Number,
}

impl Role {
    pub const ALL: [Role; 15] = [
        Role::GivenName,
        Role::Surname,
        Role::Name,
        Role::Dob,
        Role::StreetNumber,
        Role::Address,
        Role::City,
        Role::Postcode,
        Role::State,
        Role::Phone,
        Role::Email,
        Role::IdNumber,
        Role::Text,
        Role::Exact,
        Role::Number,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::GivenName => "given_name",
            Role::Surname => "surname",
            Role::Name => "name",
            Role::Dob => "dob",
            Role::StreetNumber => "street_number",
            Role::Address => "address",
            Role::City => "city",
            Role::Postcode => "postcode",
            Role::State => "state",
            Role::Phone => "phone",
            Role::Email => "email",
            Role::IdNumber => "id_number",
            Role::Text => "text",
            Role::Exact => "exact",
            Role::Number => "number",
        }
    }

    pub fn from_name(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The role a header name suggests; `None` when it suggests nothing.
    pub fn infer(header: &str) -> Option<Role> {
        let h: String = header.trim().to_lowercase().chars().filter(|c| c.is_alphanumeric()).collect();
        Some(match h.as_str() {
            "givenname" | "firstname" | "forename" | "prenom" | "first" => Role::GivenName,
            "surname" | "lastname" | "familyname" | "nom" | "last" => Role::Surname,
            "name" | "fullname" | "nomcomplet" => Role::Name,
            "dob" | "dateofbirth" | "birthdate" | "birthday" | "datenaissance" | "datedenaissance" => Role::Dob,
            "streetnumber" | "housenumber" | "numero" => Role::StreetNumber,
            "address" | "address1" | "address2" | "addressline1" | "addressline2" | "street" | "adresse" => Role::Address,
            "suburb" | "city" | "town" | "locality" | "ville" => Role::City,
            "postcode" | "zip" | "zipcode" | "postalcode" | "codepostal" => Role::Postcode,
            "state" | "region" | "county" | "province" => Role::State,
            "phone" | "phonenumber" | "telephone" | "mobile" | "tel" => Role::Phone,
            "email" | "emailaddress" | "mail" => Role::Email,
            "socsecid" | "ssn" | "nationalid" | "nir" | "customerid" | "accountnumber" => Role::IdNumber,
            "age" | "amount" | "montant" | "income" | "revenu" | "height" | "weight" | "taille" | "poids" => Role::Number,
            _ => return None,
        })
    }

    /// Whether the exact-match level is adjusted by the value's frequency (a rare surname
    /// agreeing says more than "smith").
    pub fn term_frequency(self) -> bool {
        matches!(self, Role::GivenName | Role::Surname | Role::Name | Role::City | Role::Postcode | Role::Address)
    }
}

/// The levels of a comparison, strongest first; the last is "else". Level `NULL` means a
/// value is missing on either side: it carries no evidence (weight 0).
pub const NULL: u8 = u8::MAX;

pub fn level_labels(role: Role) -> &'static [&'static str] {
    match role {
        // Given name and surname have one more level, set by the caller: the value equals the
        // other name of the other record (names entered the wrong way round).
        Role::GivenName | Role::Surname => &["exact", "jaro-winkler >= 0.92", "jaro-winkler >= 0.80", "swapped with the other name", "else"],
        Role::Name | Role::Address | Role::City | Role::Text => &["exact", "jaro-winkler >= 0.92", "jaro-winkler >= 0.80", "else"],
        Role::Dob => &["exact", "one typo or day/month swapped", "same year and month, or within 1 year", "else"],
        Role::StreetNumber | Role::Postcode | Role::IdNumber | Role::Phone => &["exact", "one edit", "two edits", "else"],
        Role::Email => &["exact", "same local part or one edit", "else"],
        Role::State | Role::Exact => &["exact", "else"],
        Role::Number => &["exact", "within 1 %", "within 10 %", "else"],
    }
}

/// Normalises a value for comparison: trimmed, lower-cased, inner spaces collapsed; digits
/// only for numbers and dates; empty means missing.
pub fn normalise(role: Role, raw: &str) -> String {
    let t = raw.trim();
    match role {
        Role::Dob | Role::Phone | Role::IdNumber | Role::StreetNumber | Role::Postcode => t.chars().filter(char::is_ascii_alphanumeric).collect::<String>().to_lowercase(),
        // A decimal comma read as a point; a value that is not a number is missing.
        Role::Number => t.replace(',', ".").parse::<f64>().ok().filter(|x| x.is_finite()).map(|x| x.to_string()).unwrap_or_default(),
        _ => t.to_lowercase().split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

/// Edit distance (with transpositions) when it is at most 2, else 3: all the levels need.
/// Short ASCII strings take a stack-only path; others go to strsim.
/// Jaro-Winkler similarity (as strsim computes it), with a stack-only path for short ASCII
/// strings: the comparison of names and addresses is the hot loop of large deduplications.
pub fn jw(a: &str, b: &str) -> f64 {
    let (x, y) = (a.as_bytes(), b.as_bytes());
    if !(a.is_ascii() && b.is_ascii() && x.len() <= 64 && y.len() <= 64) {
        return jaro_winkler(a, b);
    }
    if x.is_empty() && y.is_empty() {
        return 1.0;
    }
    if x.is_empty() || y.is_empty() {
        return 0.0;
    }
    let range = (x.len().max(y.len()) / 2).saturating_sub(1);
    let mut y_used = [false; 64];
    let mut x_matched = [0u8; 64];
    let mut matches = 0usize;
    for (i, &c) in x.iter().enumerate() {
        let lo = i.saturating_sub(range);
        let hi = (i + range + 1).min(y.len());
        for j in lo..hi {
            if !y_used[j] && y[j] == c {
                y_used[j] = true;
                x_matched[matches] = c;
                matches += 1;
                break;
            }
        }
    }
    if matches == 0 {
        return 0.0;
    }
    let mut transpositions = 0usize;
    let mut k = 0usize;
    for (j, &c) in y.iter().enumerate() {
        if y_used[j] {
            if c != x_matched[k] {
                transpositions += 1;
            }
            k += 1;
        }
    }
    let m = matches as f64;
    let jaro = (m / x.len() as f64 + m / y.len() as f64 + (m - (transpositions / 2) as f64) / m) / 3.0;
    if jaro > 0.7 {
        let prefix = x.iter().zip(y).take_while(|(p, q)| p == q).count().min(4);
        jaro + 0.1 * prefix as f64 * (1.0 - jaro)
    } else {
        jaro
    }
}

fn edits(a: &str, b: &str) -> usize {
    let (x, y) = (a.as_bytes(), b.as_bytes());
    if x.len().abs_diff(y.len()) > 2 {
        return 3;
    }
    if !(a.is_ascii() && b.is_ascii() && x.len() < 32 && y.len() < 32) {
        return damerau_levenshtein(a, b).min(3);
    }
    // Optimal string alignment over three rolling rows.
    let mut prev2 = [0usize; 33];
    let mut prev = [0usize; 33];
    let mut cur = [0usize; 33];
    for (j, p) in prev.iter_mut().enumerate().take(y.len() + 1) {
        *p = j;
    }
    for i in 1..=x.len() {
        cur[0] = i;
        let mut row_min = cur[0];
        for j in 1..=y.len() {
            let cost = usize::from(x[i - 1] != y[j - 1]);
            let mut v = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && x[i - 1] == y[j - 2] && x[i - 2] == y[j - 1] {
                v = v.min(prev2[j - 2] + 1);
            }
            cur[j] = v;
            row_min = row_min.min(v);
        }
        if row_min > 2 {
            return 3;
        }
        prev2 = prev;
        prev = cur;
    }
    prev[y.len()].min(3)
}

/// The level of a pair of (normalised) values.
pub fn level(role: Role, a: &str, b: &str) -> u8 {
    if a.is_empty() || b.is_empty() {
        return NULL;
    }
    if a == b {
        return 0;
    }
    match role {
        Role::GivenName | Role::Surname | Role::Name | Role::Address | Role::City | Role::Text => {
            let jw = jw(a, b);
            if jw >= 0.92 {
                1
            } else if jw >= 0.80 {
                2
            } else {
                (level_labels(role).len() - 1) as u8
            }
        }
        Role::Dob => dob_level(a, b),
        Role::StreetNumber | Role::Postcode | Role::IdNumber | Role::Phone => match edits(a, b) {
            1 => 1,
            2 => 2,
            _ => 3,
        },
        Role::Email => {
            let local = |s: &str| s.split('@').next().unwrap_or("").to_owned();
            if local(a) == local(b) || edits(a, b) <= 1 {
                1
            } else {
                2
            }
        }
        Role::State | Role::Exact => 1,
        Role::Number => {
            let (x, y) = (a.parse::<f64>().unwrap_or(f64::NAN), b.parse::<f64>().unwrap_or(f64::NAN));
            let rel = (x - y).abs() / x.abs().max(y.abs()).max(f64::MIN_POSITIVE);
            if rel <= 0.01 {
                1
            } else if rel <= 0.10 {
                2
            } else {
                3
            }
        }
    }
}

/// Dates as digits (YYYYMMDD after normalisation, or any 8 digits).
fn dob_level(a: &str, b: &str) -> u8 {
    if edits(a, b) <= 1 {
        return 1;
    }
    if a.len() == 8 && b.len() == 8 {
        // Day and month swapped: YYYYMMDD against YYYYDDMM.
        let swapped = format!("{}{}{}", &b[..4], &b[6..8], &b[4..6]);
        if a == swapped {
            return 1;
        }
        if a[..6] == b[..6] {
            return 2;
        }
        if let (Ok(ya), Ok(yb)) = (a[..4].parse::<i32>(), b[..4].parse::<i32>()) {
            if (ya - yb).abs() <= 1 && a[4..] == b[4..] {
                return 2;
            }
        }
    }
    3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_grade_agreement() {
        assert_eq!(level(Role::Surname, "rokobaro", "rokobaro"), 0);
        assert_eq!(level(Role::Surname, "rokobaro", "rokobarro"), 1);
        assert_eq!(level(Role::Surname, "rokobaro", "smith"), 4);
        assert_eq!(level(Role::City, "lyon", "brest"), 3);
        assert_eq!(level(Role::Surname, "", "smith"), NULL);
        assert_eq!(level(Role::Dob, "19720812", "19720821"), 1, "a transposition is one edit");
        assert_eq!(level(Role::Dob, "19720812", "19721208"), 1, "day and month swapped");
        assert_eq!(level(Role::Dob, "19720812", "19730812"), 1);
        assert_eq!(level(Role::Dob, "19720812", "19850812"), 3);
        assert_eq!(level(Role::IdNumber, "1451137", "1415137"), 1);
        assert_eq!(level(Role::Postcode, "2272", "2227"), 1);
        assert_eq!(normalise(Role::Phone, " +33 6 12-34 "), "3361234");
        let n = |a: &str, b: &str| level(Role::Number, &normalise(Role::Number, a), &normalise(Role::Number, b));
        assert_eq!((n("100", "100.0"), n("100", "100,5"), n("100", "108"), n("100", "150"), n("100", "n/a")), (0, 1, 2, 3, NULL));
        for (a, b, d) in [("abc", "abc", 0), ("abc", "acb", 1), ("abc", "abd", 1), ("abc", "ab", 1), ("abcd", "badc", 2), ("abc", "xyz", 3), ("a", "abcd", 3), ("élan", "elan", 1)] {
            assert_eq!(edits(a, b), d, "{a} {b}");
        }
    }

    #[test]
    fn the_fast_jaro_winkler_equals_strsim() {
        let words = ["martha", "marhta", "dwayne", "duane", "dixon", "dicksonx", "a", "ab", "ba", "", "rokobaro", "rokobarro", "jones", "johnson", "abcdefghij", "jihgfedcba", "aaaa", "aaab"];
        for a in words {
            for b in words {
                assert!((jw(a, b) - jaro_winkler(a, b)).abs() < 1e-12, "{a} {b}: {} vs {}", jw(a, b), jaro_winkler(a, b));
            }
        }
    }

    #[test]
    fn headers_suggest_roles() {
        assert_eq!(Role::infer("given_name"), Some(Role::GivenName));
        assert_eq!(Role::infer("Date of Birth"), Some(Role::Dob));
        assert_eq!(Role::infer("soc_sec_id"), Some(Role::IdNumber));
        assert_eq!(Role::infer("address_2"), Some(Role::Address));
        assert_eq!(Role::infer("favourite_colour"), None);
    }
}
