//! The libphonenumber metadata of one region, as the parser needs it: the `phonenumber`
//! crate carries the data (its `PhoneNumberMetadata.xml`), this module compiles the
//! patterns the way libphonenumber applies them. The crate's own regexes are unanchored and
//! leftmost-first, so `find` on `\d{7}|\d{9}` stops after seven digits of a nine-digit
//! number; a national number pattern must match the whole number, a prefix pattern must
//! match at the start ("lookingAt"). Each code's regions are compiled on first use and kept.

use std::sync::OnceLock;

use phonenumber::metadata::{DATABASE, Descriptor, Format, Metadata};
use regex::Regex;

/// One number type's pattern and possible lengths.
#[derive(Debug)]
pub(super) struct Desc {
    whole: Regex,
    lengths: Vec<usize>,
}

impl Desc {
    fn new(d: &Descriptor) -> Option<Self> {
        Some(Self { whole: whole(d.national_number().as_str())?, lengths: d.possible_length().iter().map(|l| usize::from(*l)).collect() })
    }

    /// libphonenumber's `isNumberMatchingDesc`: a possible length and the whole pattern.
    pub(super) fn matches(&self, nsn: &str) -> bool {
        (self.lengths.is_empty() || self.lengths.contains(&nsn.len())) && self.whole.is_match(nsn)
    }
}

/// A format rule: which numbers it applies to and how they are written.
#[derive(Debug)]
pub(super) struct Rule {
    pub(super) whole: Regex,
    /// libphonenumber uses the last leading-digits pattern (the most specific one).
    pub(super) leading: Option<Regex>,
    /// `$1 $2` with the groups written `${1}` (the regex crate reads `$1a` as a name).
    pub(super) template: String,
    /// `$NP$FG` style rule for national formatting, if any.
    pub(super) national_prefix_rule: Option<String>,
}

/// The parts of a region's metadata the parser and formatter use.
#[derive(Debug)]
pub(super) struct Region {
    /// ISO 3166 code (`DE`), or `001` for a non-geographic code.
    pub(super) id: String,
    pub(super) country_code: u16,
    pub(super) international_prefix: Option<Regex>,
    /// The international call prefix callers of this region dial (`00`, `011`, `0011`).
    pub(super) preferred_idd: Option<String>,
    pub(super) national_prefix: Option<String>,
    pub(super) national_prefix_for_parsing: Option<Regex>,
    pub(super) national_prefix_transform_rule: Option<String>,
    /// Pattern of leading digits that decides among regions sharing a code (`+1`: CA, …).
    pub(super) leading_digits: Option<Regex>,
    pub(super) general: Option<Regex>,
    /// Possible lengths of any number type, and those only dialable locally.
    pub(super) lengths: Vec<usize>,
    pub(super) local_lengths: Vec<usize>,
    /// Fixed line, mobile and every other type: a valid number matches one of them.
    pub(super) types: Vec<Desc>,
    pub(super) formats: Vec<Rule>,
    pub(super) international_formats: Vec<Rule>,
}

/// `^(?:pattern)$` with the metadata's layout whitespace removed. `None` for a pattern the
/// regex crate refuses (none in the shipped data; the caller treats it as "no match").
fn whole(pattern: &str) -> Option<Regex> {
    Regex::new(&format!("^(?:{})$", strip_ws(pattern))).ok()
}

/// `^(?:pattern)`: matches at the start only.
fn looking_at(pattern: &str) -> Option<Regex> {
    Regex::new(&format!("^(?:{})", strip_ws(pattern))).ok()
}

fn strip_ws(pattern: &str) -> String {
    pattern.chars().filter(|c| !c.is_whitespace()).collect()
}

/// `$1` → `${1}` so that a digit or letter after a group reference stays literal.
fn braced_groups(template: &str) -> String {
    let mut out = String::with_capacity(template.len() + 8);
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push_str("${");
            while let Some(d) = chars.next_if(char::is_ascii_digit) {
                out.push(d);
            }
            out.push('}');
        } else {
            out.push(c);
        }
    }
    out
}

fn rule(f: &Format) -> Option<Rule> {
    if f.format() == "NA" {
        return None;
    }
    Some(Rule {
        whole: whole(f.pattern().as_str())?,
        leading: f.leading_digits().last().and_then(|l| looking_at(l.as_str())),
        template: braced_groups(f.format()),
        national_prefix_rule: f.national_prefix().map(str::to_string),
    })
}

impl Region {
    fn compile(m: &Metadata) -> Self {
        let d = m.descriptors();
        let typed = [
            d.fixed_line(),
            d.mobile(),
            d.toll_free(),
            d.premium_rate(),
            d.shared_cost(),
            d.personal_number(),
            d.voip(),
            d.pager(),
            d.uan(),
            d.voicemail(),
        ];
        let typed: Vec<&Descriptor> = typed.into_iter().flatten().collect();
        // The XML gives the general description no lengths; libphonenumber's build step
        // fills in the union of the types' lengths, and so does this.
        let union = |f: fn(&Descriptor) -> &[u16], general: &[u16]| -> Vec<usize> {
            let mut all: Vec<usize> = if general.is_empty() {
                typed.iter().flat_map(|t| f(t).iter().map(|l| usize::from(*l))).collect()
            } else {
                general.iter().map(|l| usize::from(*l)).collect()
            };
            all.sort_unstable();
            all.dedup();
            all
        };
        let lengths = union(Descriptor::possible_length, d.general().possible_length());
        let local_lengths: Vec<usize> = union(Descriptor::possible_local_length, d.general().possible_local_length())
            .into_iter()
            .filter(|l| !lengths.contains(l))
            .collect();
        Self {
            id: m.id().to_string(),
            country_code: m.country_code(),
            international_prefix: m.international_prefix().and_then(|p| looking_at(p.as_str())),
            preferred_idd: m
                .preferred_international_prefix()
                .map(|p| p.replace('~', ""))
                .or_else(|| m.international_prefix().map(|p| p.as_str().to_string()).filter(|p| p.chars().all(|c| c.is_ascii_digit()))),
            national_prefix: m.national_prefix().map(str::to_string),
            national_prefix_for_parsing: m
                .national_prefix_for_parsing()
                .map(|p| p.as_str().to_string())
                .or_else(|| m.national_prefix().map(str::to_string))
                .and_then(|p| looking_at(&p)),
            national_prefix_transform_rule: m.national_prefix_transform_rule().map(braced_groups),
            leading_digits: m.leading_digits().and_then(|p| looking_at(p.as_str())),
            general: whole(d.general().national_number().as_str()),
            lengths,
            local_lengths,
            types: typed.into_iter().filter_map(Desc::new).collect(),
            formats: m.formats().iter().filter_map(rule).collect(),
            international_formats: m.international_formats().iter().filter_map(rule).collect(),
        }
    }

    /// libphonenumber's `matchNationalNumber` against the general description.
    pub(super) fn matches_general(&self, nsn: &str) -> bool {
        self.general.as_ref().is_some_and(|g| g.is_match(nsn))
    }

    /// A number of this region of any known type.
    pub(super) fn is_valid(&self, nsn: &str) -> bool {
        self.matches_general(nsn) && self.types.iter().any(|t| t.matches(nsn))
    }
}

/// Country calling codes are one to three digits.
const CODES: usize = 1000;

/// The compiled regions of each country calling code, main country first, compiled the
/// first time the code is seen and read without a lock afterwards: every parse looks a
/// code up several times, and a shared map behind a mutex made that the hot spot.
static BY_CODE: [OnceLock<Vec<Region>>; CODES] = [const { OnceLock::new() }; CODES];

/// Every region that uses `code`, the main one first (`1` → US, CA, …); the non-geographic
/// codes (`+800`, `+882`, …) have one entry each, with the region `001`.
pub(super) fn regions_for_code(code: u16) -> &'static [Region] {
    let Some(slot) = BY_CODE.get(usize::from(code)) else { return &[] };
    slot.get_or_init(|| {
        let Some(mut metas) = DATABASE.by_code(&code) else { return vec![] };
        // Main country first; the rest in the database's order (the sort is stable).
        metas.sort_by_key(|m| !m.is_main_country_for_code());
        metas.into_iter().map(Region::compile).collect()
    })
}

/// The compiled rules of a region (`DE`).
pub(super) fn region(id: &str) -> Option<&'static Region> {
    let code = DATABASE.by_id(id)?.country_code();
    regions_for_code(code).iter().find(|r| r.id == id)
}

/// Whether `code` is a country calling code.
pub(super) fn is_country_code(code: u16) -> bool {
    !regions_for_code(code).is_empty()
}
