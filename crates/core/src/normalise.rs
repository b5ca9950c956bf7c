//! Normalisation and validation of the fields imports carry: emails (IDNA domains), phones
//! (E.164), names (NFC, spacing, case, particles), postcodes, dates in several formats (with
//! day/month swaps detected), countries (ISO 3166 alpha-2). Each refusal has a reason code.

use unicode_normalization::UnicodeNormalization;

use crate::ids::{Email, Phone};

/// Why a value was refused. The code is stable; the value is never quoted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Invalid {
    Email,
    Phone,
    Name,
    Date,
    Postcode,
    Country,
}

impl Invalid {
    pub fn code(self) -> &'static str {
        match self {
            Invalid::Email => "invalid_email",
            Invalid::Phone => "invalid_phone",
            Invalid::Name => "invalid_name",
            Invalid::Date => "invalid_date",
            Invalid::Postcode => "invalid_postcode",
            Invalid::Country => "invalid_country",
        }
    }
}

/// An email: trimmed, lower-cased, its domain in ASCII (IDNA), checked.
pub fn email(raw: &str) -> Result<String, Invalid> {
    Email::parse(raw).map(|e| e.as_str().to_owned()).map_err(|_| Invalid::Email)
}

/// A phone number in E.164, national numbers read in `region` (ISO 3166 alpha-2).
pub fn phone(raw: &str, region: &str) -> Result<String, Invalid> {
    Phone::parse(raw, region).map(|p| p.as_str().to_owned()).map_err(|_| Invalid::Phone)
}

/// Particles kept in lower case inside a name (de Gaulle, van der Berg, d'Artagnan).
const PARTICLES: &[&str] = &["de", "du", "des", "la", "le", "di", "da", "del", "van", "von", "der", "den", "ten", "ter", "y", "e", "af", "zu"];

/// A person's name: Unicode NFC, spaces collapsed, each part capitalised (after hyphens and
/// apostrophes too), particles in lower case except at the start. Digits or symbols refuse it.
pub fn name(raw: &str) -> Result<String, Invalid> {
    let nfc: String = raw.nfc().collect();
    let words: Vec<&str> = nfc.split_whitespace().collect();
    if words.is_empty() || nfc.chars().count() > 100 {
        return Err(Invalid::Name);
    }
    if nfc.chars().any(|c| !(c.is_alphabetic() || c.is_whitespace() || matches!(c, '-' | '\'' | '’' | '.'))) {
        return Err(Invalid::Name);
    }
    let cap = |w: &str| -> String {
        let mut out = String::new();
        let mut start = true;
        for c in w.chars() {
            if start {
                out.extend(c.to_uppercase());
            } else {
                out.extend(c.to_lowercase());
            }
            start = matches!(c, '-' | '\'' | '’');
        }
        out
    };
    let parts: Vec<String> = words
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let lower = w.to_lowercase();
            if i > 0 && PARTICLES.contains(&lower.as_str()) {
                lower
            } else if i > 0 && (lower.starts_with("d'") || lower.starts_with("d’")) && lower.chars().count() > 2 {
                // d'Artagnan: the particle small, the name capitalised.
                let rest: String = lower.chars().skip(2).collect();
                format!("d'{}", cap(&rest))
            } else {
                cap(w)
            }
        })
        .collect();
    Ok(parts.join(" "))
}

/// A postcode for a country: French ones are 5 digits (spaces tolerated, a lost leading
/// zero restored for 4 digits); others are 2 to 10 letters, digits, spaces or hyphens.
pub fn postcode(raw: &str, country: &str) -> Result<String, Invalid> {
    let compact: String = raw.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_uppercase();
    if country.eq_ignore_ascii_case("FR") {
        if compact.len() == 5 && compact.chars().all(|c| c.is_ascii_digit()) {
            return Ok(compact);
        }
        // A spreadsheet read 01000 as the number 1000.
        if compact.len() == 4 && compact.chars().all(|c| c.is_ascii_digit()) {
            return Ok(format!("0{compact}"));
        }
        return Err(Invalid::Postcode);
    }
    let t = raw.trim().to_uppercase();
    if (2..=10).contains(&t.len()) && t.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-') {
        Ok(t)
    } else {
        Err(Invalid::Postcode)
    }
}

/// A date read from an import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Date {
    /// ISO 8601: YYYY-MM-DD.
    pub iso: String,
    /// The day and month were found in the month-first order (12/31/1980): the value was
    /// read the other way round from the default (day first, as in France).
    pub swapped: bool,
}

fn valid(y: u32, m: u32, d: u32) -> bool {
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400) => 29,
        2 => 28,
        _ => return false,
    };
    (1800..=2200).contains(&y) && (1..=days).contains(&d)
}

/// Dates in the common notations: 1980-03-14, 1980/03/14, 19800314, 14/03/1980, 14-03-1980,
/// 14.03.1980, 14/03/80 (two-digit years below 30 read as 20xx), and ISO timestamps. Numbers
/// are read day first; when that cannot be a date but month first can (03/14/1980), the swap
/// is reported.
pub fn date(raw: &str) -> Result<Date, Invalid> {
    let t = raw.trim();
    let t = t.split(['T', ' ']).next().unwrap_or(t);
    let nums: Vec<&str> = t.split(['-', '/', '.']).collect();
    let parse = |s: &str| s.parse::<u32>().map_err(|_| Invalid::Date);
    let ok = |y: u32, m: u32, d: u32, swapped: bool| -> Result<Date, Invalid> {
        if valid(y, m, d) {
            Ok(Date { iso: format!("{y:04}-{m:02}-{d:02}"), swapped })
        } else {
            Err(Invalid::Date)
        }
    };
    match nums.as_slice() {
        [one] if one.len() == 8 && one.chars().all(|c| c.is_ascii_digit()) => ok(parse(&one[..4])?, parse(&one[4..6])?, parse(&one[6..])?, false),
        [y, m, d] if y.len() == 4 => ok(parse(y)?, parse(m)?, parse(d)?, false),
        [a, b, y] if y.len() == 4 || y.len() == 2 => {
            let mut year = parse(y)?;
            if y.len() == 2 {
                year += if year < 30 { 2000 } else { 1900 };
            }
            let (a, b) = (parse(a)?, parse(b)?);
            if valid(year, b, a) {
                ok(year, b, a, false)
            } else if valid(year, a, b) {
                ok(year, a, b, true)
            } else {
                Err(Invalid::Date)
            }
        }
        _ => Err(Invalid::Date),
    }
}

/// Country names (French and English) and codes of the countries a French shop sees most.
const COUNTRIES: &[(&str, &[&str])] = &[
    ("FR", &["france", "fra", "république française"]),
    ("BE", &["belgique", "belgium", "bel", "belgië"]),
    ("CH", &["suisse", "switzerland", "che", "schweiz"]),
    ("LU", &["luxembourg", "lux"]),
    ("DE", &["allemagne", "germany", "deu", "deutschland"]),
    ("ES", &["espagne", "spain", "esp", "españa"]),
    ("IT", &["italie", "italy", "ita", "italia"]),
    ("PT", &["portugal", "prt"]),
    ("NL", &["pays-bas", "netherlands", "nld", "nederland", "holland"]),
    ("GB", &["royaume-uni", "united kingdom", "gbr", "uk", "angleterre", "england", "great britain"]),
    ("IE", &["irlande", "ireland", "irl"]),
    ("US", &["états-unis", "etats-unis", "united states", "usa", "united states of america"]),
    ("CA", &["canada", "can"]),
    ("MC", &["monaco", "mco"]),
    ("AT", &["autriche", "austria", "aut"]),
    ("PL", &["pologne", "poland", "pol"]),
    ("SE", &["suède", "suede", "sweden", "swe"]),
    ("DK", &["danemark", "denmark", "dnk"]),
    ("MA", &["maroc", "morocco", "mar"]),
    ("DZ", &["algérie", "algerie", "algeria", "dza"]),
    ("TN", &["tunisie", "tunisia", "tun"]),
    ("SN", &["sénégal", "senegal", "sen"]),
    ("CI", &["côte d'ivoire", "cote d'ivoire", "ivory coast", "civ"]),
    ("RE", &["la réunion", "réunion", "reunion"]),
    ("GP", &["guadeloupe"]),
    ("MQ", &["martinique"]),
    ("GF", &["guyane", "french guiana"]),
    ("JP", &["japon", "japan", "jpn"]),
    ("CN", &["chine", "china", "chn"]),
    ("BR", &["brésil", "bresil", "brazil", "bra"]),
];

/// A country as its ISO 3166 alpha-2 code, from a code (any case) or a common name.
pub fn country(raw: &str) -> Result<String, Invalid> {
    let t: String = raw.trim().nfc().collect::<String>().to_lowercase();
    if t.len() == 2 && t.chars().all(|c| c.is_ascii_alphabetic()) {
        let code = t.to_uppercase();
        // Every region libphonenumber knows is an assigned alpha-2 code.
        if code.parse::<phonenumber::country::Id>().is_ok() {
            return Ok(code);
        }
        return Err(Invalid::Country);
    }
    COUNTRIES.iter().find(|(_, names)| names.contains(&t.as_str())).map(|(c, _)| (*c).to_owned()).ok_or(Invalid::Country)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn french_phone_numbers_in_every_common_notation() {
        for raw in ["06 12 34 56 78", "0612345678", "06.12.34.56.78", "06-12-34-56-78", "+33 6 12 34 56 78", "+33612345678", "0033 6 12 34 56 78", "+33 (0)6 12 34 56 78", " 06 12 34 56 78 "] {
            assert_eq!(phone(raw, "FR"), Ok("+33612345678".into()), "{raw}");
        }
        assert_eq!(phone("01 42 68 53 00", "FR"), Ok("+33142685300".into()));
        assert_eq!(phone("+32 470 12 34 56", "FR"), Ok("+32470123456".into()), "a Belgian number stays Belgian");
        for bad in ["12", "06 12 34", "not a phone", ""] {
            assert_eq!(phone(bad, "FR"), Err(Invalid::Phone), "{bad}");
        }
    }

    #[test]
    fn emails_are_trimmed_lowercased_and_idna_encoded() {
        assert_eq!(email("  Zoé.Martin@Example.FR "), Ok("zoé.martin@example.fr".into()));
        assert_eq!(email("lea@exämple.fr"), Ok("lea@xn--exmple-cua.fr".into()));
        assert_eq!(email("lea@xn--exmple-cua.fr"), email("lea@EXÄMPLE.fr"), "both forms are one address");
        for bad in ["lea", "lea@", "@example.fr", "lea@@example.fr", "lea@example", "lé a@example.fr"] {
            assert_eq!(email(bad), Err(Invalid::Email), "{bad}");
        }
    }

    #[test]
    fn names_are_nfc_spaced_and_cased_with_particles() {
        let decomposed = "Ze\u{301}lie"; // e + combining acute
        assert_eq!(name(decomposed), Ok("Zélie".into()));
        assert_eq!(name("  jean-PIERRE   de la  FONTAINE "), Ok("Jean-Pierre de la Fontaine".into()));
        assert_eq!(name("charles D'ARTAGNAN"), Ok("Charles d'Artagnan".into()));
        assert_eq!(name("o'neil"), Ok("O'Neil".into()));
        assert_eq!(name("ÉLODIE"), Ok("Élodie".into()));
        for bad in ["", "   ", "R2D2", "jean@martin"] {
            assert_eq!(name(bad), Err(Invalid::Name), "{bad}");
        }
    }

    #[test]
    fn dates_in_several_formats_and_swaps_detected() {
        for raw in ["1980-03-14", "1980/03/14", "19800314", "14/03/1980", "14-03-1980", "14.03.1980", "14/03/80", "1980-03-14T10:00:00Z"] {
            assert_eq!(date(raw), Ok(Date { iso: "1980-03-14".into(), swapped: false }), "{raw}");
        }
        assert_eq!(date("03/14/1980"), Ok(Date { iso: "1980-03-14".into(), swapped: true }));
        assert_eq!(date("05/04/2001").unwrap().iso, "2001-04-05", "ambiguous: day first");
        assert_eq!(date("29/02/2023"), Err(Invalid::Date));
        assert_eq!(date("29/02/2024").unwrap().iso, "2024-02-29");
        for bad in ["", "yesterday", "31/31/1980", "1980-13-01", "32/01/1980"] {
            assert_eq!(date(bad), Err(Invalid::Date), "{bad}");
        }
    }

    #[test]
    fn postcodes_and_countries() {
        assert_eq!(postcode("75 001", "FR"), Ok("75001".into()));
        assert_eq!(postcode("1000", "FR"), Ok("01000".into()));
        assert_eq!(postcode("7500", "FR"), Ok("07500".into()));
        assert_eq!(postcode("750011", "FR"), Err(Invalid::Postcode));
        assert_eq!(postcode("sw1a 1aa", "GB"), Ok("SW1A 1AA".into()));
        assert_eq!(country("France"), Ok("FR".into()));
        assert_eq!(country("be"), Ok("BE".into()));
        assert_eq!(country("Royaume-Uni"), Ok("GB".into()));
        assert_eq!(country("Côte d'Ivoire"), Ok("CI".into()));
        assert_eq!(country("ZZ"), Err(Invalid::Country));
        assert_eq!(country("Atlantis"), Err(Invalid::Country));
    }
}
