//! Phone-number normalization: the one place that turns whatever a PBX or a CRM user
//! typed into E.164. The parsing follows libphonenumber's documented algorithm
//! (`parse.rs`) over the metadata the `phonenumber` crate ships (`meta.rs`); the crate's
//! own parser applies the default region's national-prefix rules to numbers of other
//! countries and is not used. `clean.rs` turns notations into digits, `format.rs` writes
//! the national and international notations.
//!
//! Digits without `+` mean different things per source (`DigitsWithoutPlus`): the
//! region's rules for the native API and CRM data, international for sipgate, and
//! Zammad's rule for Zammad-style CTI.

mod clean;
mod format;
mod meta;
mod parse;

use std::collections::HashSet;

use clean::Digits;
use meta::Region;
use parse::Parsed;

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

/// What a source means by digits without `+` that do not start with `0`
/// (`492111234567`). A `+` is always international and a leading `0` always follows the
/// region's rules (its trunk prefix, its international call prefix such as `00` or `011`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DigitsWithoutPlus {
    /// The hub's region rules, as libphonenumber reads them: `030 1234567` and `301234567`
    /// are Berlin in a DE hub. The native API, the IVR and CRM data.
    #[default]
    National,
    /// Always international: sipgate.io sends every number as digits with country code.
    International,
    /// Zammad's CTI normalization: a leading `00` is dropped (international), a leading `0`
    /// is national, anything else is international. Where the international reading is no
    /// valid number but the national one is, the national one is taken (a PBX that sends
    /// national digits without trunk prefix), which Zammad does not do.
    ZammadStyle,
}

#[derive(Debug, thiserror::Error)]
#[error("unknown region `{0}`: use an ISO 3166 two-letter code such as DE, CZ, US or GB")]
pub struct UnknownRegion(pub String);

/// Normalizes numbers with a default region and a list of own numbers.
#[derive(Debug, Clone)]
pub struct PhoneNormalizer {
    region: Option<&'static Region>,
    own: HashSet<String>,
}

/// Words PBXs send instead of a number when the caller withheld it.
const WITHHELD: &[&str] = &["anonymous", "unknown", "restricted", "private", "withheld", "unavailable", "clip_no_screening", "no caller id"];

/// Internal extensions are at most this many digits and carry no prefix.
const MAX_EXTENSION_DIGITS: usize = 6;

/// Fewer significant digits than this are noise, not a number anyone can be called on.
const MIN_SIGNIFICANT_DIGITS: usize = 4;

/// The version of the rules that turn a stored number into its index key. Bump it whenever a
/// change to the parser or to the metadata it reads (an update of the `phonenumber` crate)
/// may give any stored number another key: stores rebuild their phone index when the rules
/// they were built with differ ([`PhoneNormalizer::index_rules`]).
pub const INDEX_RULES: u32 = 2;

impl PhoneNormalizer {
    /// What the index keys of stored numbers depend on: the rules' version and the default
    /// region (national numbers are read with it). A store built with other rules reindexes.
    pub fn index_rules(&self) -> String {
        format!("{INDEX_RULES}/{}", self.region.map_or("-", |r| r.id.as_str()))
    }

    /// `region` is an ISO 3166 code (`DE`); `own_numbers` may be in any notation.
    pub fn new(region: Option<&str>, own_numbers: &[String]) -> Result<Self, UnknownRegion> {
        let region = match region {
            Some(r) if !r.trim().is_empty() => {
                let id = r.trim().to_ascii_uppercase();
                // `001` is the metadata's name for non-geographic codes, no region.
                let known = id.len() == 2 && id.chars().all(|c| c.is_ascii_uppercase());
                Some(known.then(|| meta::region(&id)).flatten().ok_or_else(|| UnknownRegion(r.to_string()))?)
            }
            _ => None,
        };
        let mut this = Self { region, own: HashSet::new() };
        let own: HashSet<String> = own_numbers.iter().filter_map(|n| this.index_key(n)).collect();
        this.own = own;
        Ok(this)
    }

    /// Classifies an incoming address (a caller, a dialed number) by the region's rules.
    pub fn normalize(&self, raw: &str) -> Normalized {
        self.normalize_from(raw, DigitsWithoutPlus::National)
    }

    /// Classifies an incoming address from a source with the given convention for digits
    /// without `+`.
    pub fn normalize_from(&self, raw: &str, convention: DigitsWithoutPlus) -> Normalized {
        if is_withheld(raw) {
            return Normalized::Anonymous;
        }
        let Some(number) = clean::digits(raw) else { return Normalized::Invalid(raw.to_string()) };
        let parsed = self.parse(&number, convention);
        // Short digits are an internal extension, unless the region's numbers are that short
        // (Andorra's 715 276 is a valid national number, `201` nowhere is).
        if !number.plus && !number.digits.starts_with('0') && number.digits.len() <= MAX_EXTENSION_DIGITS && !parsed.as_ref().is_some_and(Parsed::is_valid) {
            return Normalized::Internal(clean::spaces_and_digits(raw));
        }
        match parsed.map(|p| p.e164()) {
            Some(e164) if self.own.contains(&e164) => Normalized::Own(e164),
            Some(e164) => Normalized::E164(e164),
            None => Normalized::Invalid(raw.to_string()),
        }
    }

    /// The key a stored number is indexed under, or `None` if it is no phone number.
    /// Stored numbers are read by the region's rules and not checked against own numbers:
    /// a record may legitimately carry the switchboard number; it is the incoming side
    /// that refuses to identify it.
    pub fn index_key(&self, raw: &str) -> Option<String> {
        if is_withheld(raw) {
            return None;
        }
        self.read(&clean::digits(raw)?, DigitsWithoutPlus::National)
    }

    /// The notations a CRM that stores numbers as free text most likely holds `e164` in,
    /// for searching it by exact match: E.164, international and national as libphonenumber
    /// formats them, the digits with and without country code, with the region's
    /// international call prefix, and with the trunk prefix. Only notations this hub reads
    /// back as `e164` are given, so a search never finds another number's record (a
    /// foreign number's national digits mean a national number here). The E.164 form
    /// comes first; no duplicates.
    pub fn notations(&self, e164: &str) -> Vec<String> {
        let mut out = vec![e164.to_string()];
        let Some(parsed) = clean::digits(e164).filter(|d| d.plus).and_then(|d| self.parse(&d, DigitsWithoutPlus::National)) else {
            return out;
        };
        let (cc, nsn) = (parsed.code, parsed.nsn.clone());
        let idd = self.region.as_ref().and_then(|r| r.preferred_idd.clone()).unwrap_or_else(|| "00".to_string());
        let candidates = [
            format::international(&parsed),
            format::national(&parsed),
            format!("{cc}{nsn}"),
            format!("{idd}{cc}{nsn}"),
            format!("00{cc}{nsn}"),
            nsn.clone(),
            // National digits with the trunk prefix, as most of Europe writes them.
            format!("0{nsn}"),
        ];
        for c in candidates {
            if !c.is_empty() && !out.contains(&c) && self.index_key(&c).as_deref() == Some(e164) {
                out.push(c);
            }
        }
        out
    }

    /// E.164 of `number` read with `convention`, if it is a number.
    fn read(&self, number: &Digits, convention: DigitsWithoutPlus) -> Option<String> {
        self.parse(number, convention).map(|p| p.e164())
    }

    fn parse(&self, number: &Digits, convention: DigitsWithoutPlus) -> Option<Parsed> {
        let parse = |d: &Digits| self.parse_plain(d);
        let international = |digits: &str| parse(&Digits { plus: true, digits: digits.to_string() });
        if number.plus {
            return parse(number);
        }
        match convention {
            DigitsWithoutPlus::National => parse(number),
            DigitsWithoutPlus::International if number.digits.starts_with('0') => parse(number),
            DigitsWithoutPlus::International => international(&number.digits),
            DigitsWithoutPlus::ZammadStyle => match number.digits.strip_prefix("00") {
                Some(rest) => international(rest),
                None if number.digits.starts_with('0') => parse(number),
                None => match international(&number.digits) {
                    Some(i) if i.is_valid() => Some(i),
                    i => parse(number).filter(Parsed::is_valid).or(i),
                },
            },
        }
    }

    /// libphonenumber's reading with the default region. Without one, only numbers with
    /// `+` parse; any region's rules do for them (only a `+` followed by an international
    /// call prefix uses the region, and the number's own country's rules apply after the
    /// code).
    fn parse_plain(&self, number: &Digits) -> Option<Parsed> {
        let region = match &self.region {
            Some(r) => r,
            None if number.plus => meta::region("US")?,
            None => return None,
        };
        parse::parse(number, region).filter(plausible)
    }
}

/// Keep numbers the algorithm parses even when the metadata calls them invalid (test
/// ranges, new ranges): both sides go through the same function, so they still meet in
/// the index. Too few significant digits are noise.
fn plausible(p: &Parsed) -> bool {
    p.nsn.trim_start_matches('0').len() >= MIN_SIGNIFICANT_DIGITS
}

/// A withheld caller: empty, or a word PBXs send instead of a number, also as the user
/// of a SIP URI (`sip:anonymous@anonymous.invalid`).
fn is_withheld(raw: &str) -> bool {
    let s = clean::spaces_and_digits(raw);
    let mut user = s.as_str();
    for scheme in ["tel:", "sips:", "sip:"] {
        if let Some(rest) = clean::strip_prefix_ignore_ascii_case(user, scheme) {
            user = rest.split_once('@').map_or(rest, |(u, _)| u);
            break;
        }
    }
    let lower = user.trim().to_lowercase();
    lower.is_empty() || WITHHELD.iter().any(|w| lower == *w)
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

    fn check_from(region: &str, convention: DigitsWithoutPlus, raw: &str, expected: &str) {
        let n = PhoneNormalizer::new(Some(region), &[]).expect("region");
        let got = match n.normalize_from(raw, convention) {
            Normalized::E164(e) => e,
            other => format!("{other:?}"),
        };
        assert_eq!(got, expected, "region {region}, {convention:?}, raw {raw:?}");
    }

    /// Issue 13 item 1: a number with a country code follows that country's trunk-prefix
    /// rules, never the default region's.
    #[test]
    fn a_country_code_brings_its_own_trunk_prefix_rules() {
        // US strips a national `1`: not from a German mobile.
        check("US", "+49 1512 3456789", "+4915123456789");
                check("US", "011 49 1512 3456789", "+4915123456789");
        check("CA", "+49 1512 3456789", "+4915123456789");
        // Zero-prefix regions: Italy's leading zero is part of the number.
        check("DE", "+39 02 1234 5678", "+390212345678");
        check("FR", "+39 02 1234 5678", "+390212345678");
        check("DE", "0039 06 1234 5678", "+390612345678");
        // Regions without a trunk prefix: GB's `(0)` is still GB's trunk prefix.
        check("IT", "+44 (0)121 496 0000", "+441214960000");
        check("ES", "+44 (0)121 496 0000", "+441214960000");
        check("US", "+44 (0)20 7946 0000", "+442079460000");
        check("DE", "+44 0121 496 0000", "+441214960000");
        // Russia's trunk prefix is 8; its toll-free numbers begin with 8.
        check("DE", "+7 800 123-45-67", "+78001234567");
        check("RU", "8 (800) 123-45-67", "+78001234567");
        check("RU", "8 (495) 123-45-67", "+74951234567");
        // Argentina's mobile prefix 15 becomes the 9 of international mobile numbers.
        check("AR", "011 15-2345-6789", "+5491123456789");
        check("AR", "+54 9 11 2345-6789", "+5491123456789");
    }

    /// Issue 13 item 2: digits without `+` follow the source's convention.
    #[test]
    fn digits_without_plus_follow_the_source() {
        use DigitsWithoutPlus::{International, National, ZammadStyle};
        check_from("DE", International, "492111234567", "+492111234567");
        check_from("DE", International, "41446681800", "+41446681800");
        check_from("DE", International, "14155550100", "+14155550100");
        check_from("DE", International, "+41446681800", "+41446681800");
        check_from("DE", International, "0211 1234567", "+492111234567");
        check_from("DE", International, "anonymous", "Anonymous");
        check_from("DE", ZammadStyle, "41446681800", "+41446681800");
        check_from("DE", ZammadStyle, "0041446681800", "+41446681800");
        check_from("DE", ZammadStyle, "02111234567", "+492111234567");
        check_from("US", ZammadStyle, "0049 30 1234567", "+49301234567");
        check_from("US", ZammadStyle, "14155550100", "+14155550100");
        // No valid number with the digits as country code, but a valid national one.
        check_from("US", ZammadStyle, "6502530000", "+16502530000");
        check_from("DE", National, "41446681800", "+4941446681800");
        check_from("CH", National, "41446681800", "+41446681800");
        check_from("DE", International, "201", "Internal(\"201\")");
    }

    /// Issue 13 item 3: each region's own international call prefix, and national numbers
    /// that begin with the digits of the country code stay national.
    #[test]
    fn international_prefixes_are_the_regions_own() {
        check("US", "011 49 30 1234567", "+49301234567");
        check("CA", "011 44 20 7946 0000", "+442079460000");
        check("AU", "0011 49 30 1234567", "+49301234567");
        check("BR", "0021 49 30 1234567", "+49301234567");
        check("BR", "0014 1 415 555 0100", "+14155550100");
        check("JP", "010 49 30 1234567", "+49301234567");
        check("RU", "810 49 30 1234567", "+49301234567");
        check("SG", "001 49 30 1234567", "+49301234567");
        check("DE", "00 49 30 1234567", "+49301234567");
        // `00` is no international prefix in the US: the digits are a (too long) national number.
        check("US", "0049301234567", "+10049301234567");
        check("AU", "0049301234567", "+61049301234567");
        // IT mobiles begin with 3, some with 39.
        check("IT", "392 684 2481", "+393926842481");
        check("IT", "3926842481", "+393926842481");
        check("IT", "39 392 684 2481", "+393926842481");
        check("IT", "02 1234 5678", "+390212345678");
        check("CH", "41 44 668 18 00", "+41446681800");
        check("CH", "044 668 18 00", "+41446681800");
    }

    #[test]
    fn withheld_own_internal_and_garbage_are_not_identified() {
        check("DE", "anonymous", "anonymous");
        check("DE", "Anonymous", "anonymous");
        check("DE", "", "anonymous");
        check("DE", "  ", "anonymous");
        check("DE", "unknown", "anonymous");
        check("DE", "restricted", "anonymous");
        check("DE", "sip:anonymous@anonymous.invalid", "anonymous");
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
        for want in ["+14155550100", "+1 415-555-0100", "(415) 555-0100", "14155550100", "01114155550100", "4155550100"] {
            assert!(us.contains(&want.to_string()), "{want} missing from {us:?}");
        }
        assert_eq!(us[0], "+14155550100", "E.164 first");
        let cz = n.notations("+420602123456");
        for want in ["+420 602 123 456", "011420602123456"] {
            assert!(cz.contains(&want.to_string()), "{want} missing from {cz:?}");
        }
        // In a US hub these digits are no Czech number: searching for them would find the
        // record of whoever has them as a US number.
        for never in ["602123456", "00420602123456", "0602123456", "420602123456"] {
            assert!(!cz.contains(&never.to_string()), "{never} in {cz:?}");
        }
        let in_cz = PhoneNormalizer::new(Some("CZ"), &[]).expect("region").notations("+420602123456");
        for want in ["+420 602 123 456", "602 123 456", "602123456", "420602123456", "00420602123456"] {
            assert!(in_cz.contains(&want.to_string()), "{want} missing from {in_cz:?}");
        }
        let de = PhoneNormalizer::new(Some("DE"), &[]).expect("region").notations("+49301234567");
        for want in ["+49 30 1234567", "030 1234567", "0301234567", "0049301234567", "49301234567"] {
            assert!(de.contains(&want.to_string()), "{want} missing from {de:?}");
        }
        let mut dedup = de.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), de.len());
        assert_eq!(n.notations("garbage"), vec!["garbage".to_string()]);
    }

    /// Numbers of a region that shares its country code with a main region (Canada and
    /// Jamaica under +1's US, Jersey and the Isle of Man under +44's GB, the Vatican under
    /// +39's IT, Kazakhstan under +7's RU, the Cocos Islands under +61's AU), and a NANP
    /// number outside the metadata's ranges (area code 381, not assigned yet; the parser
    /// keeps such numbers): libphonenumber formats them all with the main region's
    /// patterns, and that is how a CRM user or an import writes them. Each row is
    /// Python `phonenumbers` 9.0.33 `format_number(…, INTERNATIONAL / NATIONAL)` (the
    /// metadata release the `phonenumber` crate carries), searched in a hub of `region`.
    #[test]
    fn numbers_of_a_shared_country_code_are_searched_as_libphonenumber_formats_them() {
        let rows = [
            ("US", "+14169795000", "+1 416-979-5000"),
            ("US", "+14169795000", "(416) 979-5000"),
            ("CA", "+14169795000", "+1 416-979-5000"),
            ("CA", "+14169795000", "(416) 979-5000"),
            ("US", "+18765551234", "+1 876-555-1234"),
            ("US", "+18765551234", "(876) 555-1234"),
            ("US", "+13819019618", "+1 381-901-9618"),
            ("US", "+13819019618", "(381) 901-9618"),
            ("GB", "+447797123456", "+44 7797 123456"),
            ("GB", "+447797123456", "07797 123456"),
            ("GB", "+441624756789", "+44 1624 756789"),
            ("GB", "+441624756789", "01624 756789"),
            ("US", "+447797123456", "+44 7797 123456"),
            ("IT", "+390669812345", "+39 06 6981 2345"),
            ("IT", "+390669812345", "06 6981 2345"),
            ("RU", "+77012345678", "+7 701 234 5678"),
            ("RU", "+77012345678", "8 (701) 234 5678"),
            ("AU", "+61891621234", "+61 8 9162 1234"),
            ("AU", "+61891621234", "(08) 9162 1234"),
        ];
        let mut missing = vec![];
        for (region, e164, written) in rows {
            let n = PhoneNormalizer::new(Some(region), &[]).expect("region");
            let all = n.notations(e164);
            if !all.iter().any(|c| c == written) {
                missing.push(format!("{region} {e164}: {written:?} not in {all:?}"));
            }
        }
        assert!(missing.is_empty(), "notations missing:\n{}", missing.join("\n"));
    }

    #[test]
    fn every_notation_reads_back_as_its_number() {
        for (region, e164) in [("DE", "+4915123456789"), ("US", "+442079460000"), ("AU", "+61212345678"), ("IT", "+390212345678"), ("RU", "+78001234567"), ("GB", "+12015550123")] {
            let n = PhoneNormalizer::new(Some(region), &[]).expect("region");
            let all = n.notations(e164);
            assert!(all.len() >= 3, "{region} {e164}: {all:?}");
            for c in &all {
                assert_eq!(n.index_key(c).as_deref(), Some(e164), "{region}: {c:?} of {all:?}");
            }
        }
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
