//! libphonenumber's parsing algorithm (`PhoneNumberUtil.parseHelper`, as documented and as
//! its reference implementations behave), over the metadata in `meta`:
//!
//! 1. a leading `+`, or else the default region's own international call prefix (its
//!    `international_prefix` pattern: `00`, `011`, AU `0011`, BR `0021`, …, never a blanket
//!    `00`), means a country calling code follows;
//! 2. without either, digits that begin with the default region's own code are taken as
//!    that code only when the rest is a better national number (IT `392 684 2481` stays a
//!    national number, `39 392 684 2481` loses the `39`);
//! 3. the national prefix (trunk prefix, carrier codes) is stripped with the rules of the
//!    country the number belongs to, never the default region's: `+49 1512 3456789` keeps
//!    its `1` in a US hub, `+39 02 1234 5678` its `0`, `+44 (0)121…` loses the `0`;
//! 4. the national number is kept only if its length is possible for that country.

use super::clean::Digits;
use super::meta::{self, Region};

/// Longest and shortest national significant number libphonenumber accepts.
const MAX_NSN: usize = 17;
const MIN_NSN: usize = 2;

/// A parsed number: its country calling code and national significant number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Parsed {
    pub(super) code: u16,
    pub(super) nsn: String,
}

impl Parsed {
    pub(super) fn e164(&self) -> String {
        format!("+{}{}", self.code, self.nsn)
    }

    /// The region the number belongs to among those sharing its code (libphonenumber's
    /// `getRegionCodeForNumber`): the one whose leading digits match, else the first whose
    /// patterns know the number.
    pub(super) fn region(&self) -> Option<&'static Region> {
        let regions = meta::regions_for_code(self.code);
        if regions.len() <= 1 {
            return regions.first();
        }
        regions.iter().find(|r| match &r.leading_digits {
            Some(l) => l.is_match(&self.nsn),
            None => r.is_valid(&self.nsn),
        })
    }

    /// A valid number of the region it belongs to (`isValidNumber`).
    pub(super) fn is_valid(&self) -> bool {
        self.region().is_some_and(|r| r.is_valid(&self.nsn))
    }
}

/// How a number's length fits a region (`testNumberLength` for any type).
#[derive(Debug, PartialEq, Eq)]
enum Length {
    Possible,
    LocalOnly,
    TooShort,
    TooLong,
    Invalid,
}

fn test_length(nsn: &str, r: &Region) -> Length {
    let len = nsn.len();
    let (Some(min), Some(max)) = (r.lengths.first(), r.lengths.last()) else { return Length::Invalid };
    if r.local_lengths.contains(&len) {
        Length::LocalOnly
    } else if len == *min || r.lengths.contains(&len) {
        Length::Possible
    } else if len < *min {
        Length::TooShort
    } else if len > *max {
        Length::TooLong
    } else {
        Length::Invalid
    }
}

/// `maybeStripNationalPrefixAndCarrierCode`: the national number without the prefix the
/// region's `national_prefix_for_parsing` matches (applying its transform rule where it
/// has one, as AR and MX do), unless that would turn a number its patterns know into one
/// they do not.
fn strip_national_prefix(nsn: &str, r: &Region) -> String {
    let Some(prefix) = &r.national_prefix_for_parsing else { return nsn.to_string() };
    let Some(caps) = prefix.captures(nsn) else { return nsn.to_string() };
    let Some(whole) = caps.get(0) else { return nsn.to_string() };
    let viable_before = r.matches_general(nsn);
    let last_group = caps.len().checked_sub(1).filter(|n| *n > 0).and_then(|n| caps.get(n));
    let candidate = match (&r.national_prefix_transform_rule, last_group) {
        (Some(rule), Some(_)) => {
            let mut out = String::new();
            caps.expand(rule, &mut out);
            out.push_str(nsn.get(whole.end()..).unwrap_or(""));
            out
        }
        _ => nsn.get(whole.end()..).unwrap_or("").to_string(),
    };
    if viable_before && !r.matches_general(&candidate) {
        return nsn.to_string();
    }
    candidate
}

/// A country calling code at the start of `digits` (one to three digits) and the rest.
fn split_country_code(digits: &str) -> Option<(u16, &str)> {
    if digits.starts_with('0') {
        return None;
    }
    (1..=3).find_map(|n| {
        let code: u16 = digits.get(..n)?.parse().ok()?;
        meta::is_country_code(code).then(|| (code, digits.get(n..).unwrap_or("")))
    })
}

/// The digits after the default region's international call prefix, if they start with
/// one (libphonenumber's `parsePrefixAsIdd`: a country code never begins with `0`, so a
/// prefix followed by `0` is no prefix).
fn after_idd<'a>(digits: &'a str, r: &Region) -> Option<&'a str> {
    let m = r.international_prefix.as_ref()?.find(digits)?;
    let rest = digits.get(m.end()..)?;
    (!rest.starts_with('0')).then_some(rest)
}

/// Parses `number` as a hub in region `default` reads it. `None` when libphonenumber
/// refuses it (no country code after `+`, too short, too long).
pub(super) fn parse(number: &Digits, default: &'static Region) -> Option<Parsed> {
    let (code, national, region) = country_code(number, default)?;
    if national.len() < MIN_NSN {
        return None;
    }
    let potential = strip_national_prefix(&national, region);
    let nsn = match test_length(&potential, region) {
        Length::TooShort | Length::LocalOnly | Length::Invalid => national,
        Length::Possible | Length::TooLong => potential,
    };
    if !(MIN_NSN..=MAX_NSN).contains(&nsn.len()) {
        return None;
    }
    Some(Parsed { code, nsn })
}

/// The country calling code, the national number after it, and the rules that apply to
/// that national number: those of the code's main region, or the default region's.
fn country_code(number: &Digits, default: &'static Region) -> Option<(u16, String, &'static Region)> {
    let with_code = |rest: &str| -> Option<(u16, String, &'static Region)> {
        if rest.len() <= MIN_NSN {
            return None;
        }
        let (code, national) = split_country_code(rest)?;
        Some((code, national.to_string(), meta::regions_for_code(code).first()?))
    };
    if number.plus {
        // `+` followed by no country code: libphonenumber tries again without the plus
        // (`+011 64 …` in a US hub, `+ 00 64 …`).
        if let Some(found) = with_code(&number.digits) {
            return Some(found);
        }
        return with_code(after_idd(&number.digits, default)?);
    }
    if let Some(rest) = after_idd(&number.digits, default) {
        return with_code(rest);
    }
    Some((default.country_code, own_code_stripped(&number.digits, default), default))
}

/// Digits without `+` or prefix that begin with the default region's own country code:
/// the code is dropped only when the number is not a national number as written but is
/// one without the code, or is too long as written (`maybeExtractCountryCode`).
fn own_code_stripped(digits: &str, r: &Region) -> String {
    let code = r.country_code.to_string();
    if let Some(rest) = digits.strip_prefix(&code) {
        let potential = strip_national_prefix(rest, r);
        if (!r.matches_general(digits) && r.matches_general(&potential)) || test_length(digits, r) == Length::TooLong {
            return potential;
        }
    }
    digits.to_string()
}
