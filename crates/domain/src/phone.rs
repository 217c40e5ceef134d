//! Phone-number normalization: the one place that turns whatever a PBX or a CRM user
//! typed into E.164. Backed by the `phonenumber` crate (a libphonenumber port), which is
//! kept behind this module so it can be swapped without touching callers.

use std::collections::HashSet;

use phonenumber::{Mode, country};

/// What a raw address turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Normalized {
    /// A real number, in E.164 (`+420602123456`).
    E164(String),
    /// Withheld / anonymous / unknown caller: never identified.
    Anonymous,
    /// One of our own or switchboard numbers: never identified.
    Own(String),
    /// A short internal extension (`201`): never identified.
    Internal(String),
    /// Not a phone number at all.
    Invalid(String),
}

impl Normalized {
    /// The E.164 form, if this is an identifiable external number.
    pub fn e164(&self) -> Option<&str> {
        match self {
            Normalized::E164(n) => Some(n),
            _ => None,
        }
    }

    /// Why the number is not identified, for logs and the API (`None` when it is).
    pub fn skip_reason(&self) -> Option<&'static str> {
        match self {
            Normalized::E164(_) => None,
            Normalized::Anonymous => Some("anonymous"),
            Normalized::Own(_) => Some("own_number"),
            Normalized::Internal(_) => Some("internal"),
            Normalized::Invalid(_) => Some("invalid"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown region `{0}`: use an ISO 3166 two-letter code such as DE, CZ, US or GB")]
pub struct UnknownRegion(pub String);

/// Normalizes numbers with a default region and a list of own numbers.
#[derive(Debug, Clone)]
pub struct PhoneNormalizer {
    region: Option<country::Id>,
    own: HashSet<String>,
}

/// Words PBXs send instead of a number when the caller withheld it.
const WITHHELD: &[&str] = &["anonymous", "unknown", "restricted", "private", "withheld", "unavailable", "clip_no_screening", "no caller id"];

/// Internal extensions are at most this many digits and carry no prefix.
const MAX_EXTENSION_DIGITS: usize = 6;

impl PhoneNormalizer {
    /// `region` is an ISO 3166 code (`DE`); `own_numbers` may be in any notation.
    pub fn new(region: Option<&str>, own_numbers: &[String]) -> Result<Self, UnknownRegion> {
        let region = match region {
            Some(r) if !r.trim().is_empty() => {
                Some(r.trim().to_ascii_uppercase().parse::<country::Id>().map_err(|_| UnknownRegion(r.to_string()))?)
            }
            _ => None,
        };
        let mut this = Self { region, own: HashSet::new() };
        let own: HashSet<String> = own_numbers.iter().filter_map(|n| this.index_key(n)).collect();
        this.own = own;
        Ok(this)
    }

    /// Classifies an incoming address (a caller, a dialed number).
    pub fn normalize(&self, raw: &str) -> Normalized {
        let cleaned = clean(raw);
        if cleaned.is_empty() || is_withheld(&cleaned) {
            return Normalized::Anonymous;
        }
        let digits = cleaned.chars().filter(char::is_ascii_digit).count();
        if digits == 0 {
            return Normalized::Invalid(raw.to_string());
        }
        if !cleaned.starts_with('+') && !cleaned.starts_with('0') && digits <= MAX_EXTENSION_DIGITS {
            return Normalized::Internal(cleaned);
        }
        match self.parse(&cleaned) {
            Some(e164) if self.own.contains(&e164) => Normalized::Own(e164),
            Some(e164) => Normalized::E164(e164),
            None => Normalized::Invalid(raw.to_string()),
        }
    }

    /// The key a stored number is indexed under, or `None` if it is no phone number.
    /// Stored numbers are not checked against own numbers: a record may legitimately carry
    /// the switchboard number; it is the incoming side that refuses to identify it.
    pub fn index_key(&self, raw: &str) -> Option<String> {
        let cleaned = clean(raw);
        if cleaned.is_empty() || is_withheld(&cleaned) {
            return None;
        }
        self.parse(&cleaned)
    }

    /// The notations a CRM that stores numbers as free text most likely holds `e164` in,
    /// for searching it by exact match: E.164, international and national as libphonenumber
    /// formats them, the digits with and without country code and with `00`. The E.164
    /// form comes first; no duplicates.
    pub fn notations(&self, e164: &str) -> Vec<String> {
        let mut out = vec![e164.to_string()];
        let Ok(number) = phonenumber::parse(None, e164) else { return out };
        let cc = number.code().value().to_string();
        let national_digits = number.national().to_string();
        let candidates = [
            number.format().mode(Mode::International).to_string(),
            number.format().mode(Mode::National).to_string(),
            format!("{cc}{national_digits}"),
            format!("00{cc}{national_digits}"),
            national_digits.clone(),
            // National digits with the trunk prefix, as most of Europe writes them.
            format!("0{national_digits}"),
        ];
        for c in candidates {
            if !c.is_empty() && !out.contains(&c) {
                out.push(c);
            }
        }
        out
    }

    fn parse(&self, cleaned: &str) -> Option<String> {
        let number = phonenumber::parse(self.region, cleaned).ok()?;
        // Keep numbers libphonenumber can parse even when its metadata calls them invalid
        // (test ranges, new ranges): both sides go through the same function, so they still
        // meet in the index. Too-short national numbers are noise.
        if number.national().value() < 1000 {
            return None;
        }
        Some(number.format().mode(Mode::E164).to_string())
    }
}

fn is_withheld(cleaned: &str) -> bool {
    let lower = cleaned.to_ascii_lowercase();
    WITHHELD.iter().any(|w| lower == *w)
}

/// Removes what libphonenumber would trip over: URI schemes and parameters, SIP hosts,
/// the `(0)` trunk prefix written after a country code, `00` international prefixes, and
/// a `+` that a query string turned into a leading space. Any Unicode space (a
/// non-breaking space from a pasted document) counts as a space. Works on characters and
/// on the splits `str` gives at ASCII delimiters, never on byte offsets: the input is
/// whatever a caller sent.
fn clean(raw: &str) -> String {
    let spaced: String = raw.chars().map(|c| if c.is_whitespace() { ' ' } else { c }).collect();
    let mut s = spaced.trim();
    for scheme in ["tel:", "sip:", "sips:"] {
        if let Some(rest) = strip_prefix_ignore_ascii_case(s, scheme) {
            s = rest;
        }
    }
    let s = s.split_once('@').map_or(s, |(user, _host)| user);
    // RFC 3966 parameters other than the extension (`;phone-context=…`).
    let s = match s.split_once(';') {
        Some((number, params)) => match params.split(';').find_map(|p| p.strip_prefix("ext=")) {
            Some(e) => format!("{number} ext. {e}"),
            None => number.to_string(),
        },
        None => s.to_string(),
    };
    let s = s.trim().to_string();
    let international = s.starts_with('+') || s.starts_with("00");
    let mut s = if international { s.replace("(0)", "").replace("( 0 )", "") } else { s };
    if let Some(rest) = s.strip_prefix("00") {
        s = format!("+{rest}");
    }
    if s.starts_with('+') {
        // In international form the digits alone say everything, and libphonenumber's port
        // misreads a country code glued to a hyphenated group (`+4930-555-0100`): keep only
        // the digits, and an extension after the first letter (`ext. 12`, `x204`).
        let starts_extension = |c: &char| c.is_ascii_alphabetic() || *c == '#';
        let digits: String = s.chars().take_while(|c| !starts_extension(c)).filter(char::is_ascii_digit).collect();
        let extension: String = s.chars().skip_while(|c| !starts_extension(c)).collect();
        s = if extension.is_empty() { format!("+{digits}") } else { format!("+{digits} {extension}") };
    }
    s
}

/// `s` without `prefix` (ASCII, any case), compared character by character.
fn strip_prefix_ignore_ascii_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let mut rest = s.chars();
    for want in prefix.chars() {
        if !rest.next()?.eq_ignore_ascii_case(&want) {
            return None;
        }
    }
    Some(rest.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(region: &str, raw: &str, expected: &str) {
        let n = PhoneNormalizer::new(Some(region), &["+49 30 9999000".to_string()]).expect("region");
        let got = match n.normalize(raw) {
            Normalized::E164(e) => e,
            Normalized::Anonymous => "anonymous".into(),
            Normalized::Own(e) => format!("own {e}"),
            Normalized::Internal(e) => format!("internal {e}"),
            Normalized::Invalid(_) => "invalid".into(),
        };
        assert_eq!(got, expected, "region {region}, raw {raw:?}");
    }

    #[test]
    fn notations_meet_in_e164() {
        check("CZ", "+420 602 123 456", "+420602123456");
        check("CZ", "00420602123456", "+420602123456");
        check("CZ", "602/123 456", "+420602123456");
        check("CZ", "602 123 456", "+420602123456");
        check("CZ", "602.123.456", "+420602123456");
        check("CZ", "602-123-456", "+420602123456");
        check("CZ", "tel:+420-602-123-456", "+420602123456");
        check("CZ", "sip:+420602123456@pbx.example.com", "+420602123456");
        check("CZ", "+420 602 123 456 ext. 12", "+420602123456");
        check("CZ", "tel:+420602123456;ext=12", "+420602123456");
        check("CZ", " 420602123456", "+420602123456");
        check("DE", "+49 (0)30 1234567", "+49301234567");
        check("DE", "0049 (0)30 1234567", "+49301234567");
        check("DE", "(030) 1234567", "+49301234567");
        check("DE", "030/1234567", "+49301234567");
        check("DE", "030-123 45 67", "+49301234567");
        check("DE", "+49 30 1234567", "+49301234567");
        check("DE", "+4930-555-0100", "+49305550100");
        check("DE", "+4930-123-4567", "+49301234567");
        check("DE", "+1 (415) 555-0100", "+14155550100");
        check("US", "(415) 555-0100", "+14155550100");
        check("US", "1-415-555-0100", "+14155550100");
        check("US", "415.555.0100 x204", "+14155550100");
        check("GB", "020 7946 0000", "+442079460000");
        check("GB", "+44 (0)20 7946 0000", "+442079460000");
    }

    #[test]
    fn withheld_own_internal_and_garbage_are_not_identified() {
        check("DE", "anonymous", "anonymous");
        check("DE", "Anonymous", "anonymous");
        check("DE", "", "anonymous");
        check("DE", "  ", "anonymous");
        check("DE", "unknown", "anonymous");
        check("DE", "restricted", "anonymous");
        check("DE", "+49309999000", "own +49309999000");
        check("DE", "030 9999000", "own +49309999000");
        check("DE", "201", "internal 201");
        check("DE", "hello", "invalid");
    }

    #[test]
    fn unicode_spaces_count_as_spaces_and_other_letters_never_panic() {
        // Numbers pasted from documents carry non-breaking and other Unicode spaces.
        check("DE", "+49\u{a0}30\u{a0}123456", "+4930123456");
        check("DE", "+49\u{202f}30\u{2009}1234567", "+49301234567");
        check("DE", "\u{a0}030\u{a0}1234567\u{3000}", "+49301234567");
        check("DE", "tel:+49\u{a0}30\u{a0}1234567", "+49301234567");
        check("DE", "\u{a0}\u{a0}", "anonymous");
        // Not numbers: classified, never a panic on a character boundary.
        check("DE", "é", "invalid");
        check("DE", "\u{fffd}\u{fffd}", "invalid");
        check("DE", "+é49", "invalid");
        check("DE", "sïp:alice@example.com", "invalid");
        check("DE", "00é", "invalid");
        let n = PhoneNormalizer::new(Some("DE"), &["+49\u{a0}30\u{a0}9999000".to_string()]).expect("region");
        assert_eq!(n.index_key("+49\u{a0}30\u{a0}1234567").as_deref(), Some("+49301234567"));
        assert_eq!(n.index_key("é"), None);
        assert_eq!(n.normalize("030 9999000"), Normalized::Own("+49309999000".into()), "an own number given with non-breaking spaces");
    }

    #[test]
    fn unknown_region_is_an_error_naming_it() {
        let err = PhoneNormalizer::new(Some("XX"), &[]).expect_err("XX is no region");
        assert!(err.to_string().contains("`XX`"));
    }

    #[test]
    fn index_key_keeps_own_numbers_and_drops_noise() {
        let n = PhoneNormalizer::new(Some("DE"), &["+49309999000".into()]).expect("region");
        assert_eq!(n.index_key("030 9999000").as_deref(), Some("+49309999000"));
        assert_eq!(n.index_key("n/a"), None);
        assert_eq!(n.index_key(""), None);
    }
}

#[cfg(test)]
mod notation_tests {
    use super::*;

    #[test]
    fn a_number_is_searched_in_the_notations_crms_store_it_in() {
        let n = PhoneNormalizer::new(Some("US"), &[]).expect("region");
        let us = n.notations("+14155550100");
        for want in ["+14155550100", "+1 415-555-0100", "(415) 555-0100", "14155550100", "0014155550100", "4155550100"] {
            assert!(us.contains(&want.to_string()), "{want} missing from {us:?}");
        }
        assert_eq!(us[0], "+14155550100", "E.164 first");
        let cz = n.notations("+420602123456");
        for want in ["+420 602 123 456", "420602123456", "00420602123456", "602123456"] {
            assert!(cz.contains(&want.to_string()), "{want} missing from {cz:?}");
        }
        let de = n.notations("+49301234567");
        assert!(de.contains(&"030 1234567".to_string()) || de.contains(&"030 123 4567".to_string()) || de.contains(&"0301234567".to_string()), "{de:?}");
        let mut dedup = de.clone();
        dedup.dedup();
        assert_eq!(dedup.len(), de.len());
        assert_eq!(n.notations("garbage"), vec!["garbage".to_string()]);
    }
}

#[cfg(test)]
mod property_tests {
    use proptest::prelude::*;

    use super::*;

    /// Characters phone numbers are written with, and the ones that tripped byte offsets.
    const PHONEISH: &str = "[+0-9 ()./;:@=#a-zA-Z\\-\u{a0}\u{202f}\u{2009}\u{3000}é€\u{fffd}\u{200b}]{0,40}";

    fn classify(n: &Normalized) -> (Option<String>, Option<&'static str>) {
        (n.e164().map(str::to_string), n.skip_reason())
    }

    fn normalizer() -> PhoneNormalizer {
        PhoneNormalizer::new(Some("DE"), &["+49 30 9999000".to_string()]).expect("region")
    }

    proptest! {
        #[test]
        fn every_public_function_takes_any_string(raw in any::<String>()) {
            let n = normalizer();
            let _ = n.normalize(&raw);
            let _ = n.index_key(&raw);
            let _ = n.notations(&raw);
            let _ = PhoneNormalizer::new(Some(&raw), std::slice::from_ref(&raw));
            let _ = PhoneNormalizer::new(None, &[raw]);
        }

        #[test]
        fn every_public_function_takes_any_phone_like_string(raw in PHONEISH) {
            let n = normalizer();
            if let Some(e164) = n.normalize(&raw).e164() {
                let notations = n.notations(e164);
                prop_assert_eq!(notations.first().map(String::as_str), Some(e164));
            }
            let _ = n.index_key(&raw);
            let _ = n.notations(&raw);
            let _ = PhoneNormalizer::new(Some("US"), &[raw]);
        }

        #[test]
        fn a_unicode_space_classifies_like_a_space(raw in "[+0-9 ()/\\-]{0,24}") {
            let n = normalizer();
            for space in ['\u{a0}', '\u{202f}', '\u{2009}', '\u{3000}'] {
                let unicode = raw.replace(' ', &space.to_string());
                prop_assert_eq!(classify(&n.normalize(&unicode)), classify(&n.normalize(&raw)), "{:?} vs {:?}", unicode, raw);
                prop_assert_eq!(n.index_key(&unicode), n.index_key(&raw));
            }
        }
    }
}
