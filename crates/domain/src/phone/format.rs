//! Writing a parsed number the way libphonenumber's `format` does (national and
//! international), for the notations a CRM that stores free text is searched with.

use super::meta::{self, Region, Rule};
use super::parse::Parsed;

/// The region whose patterns write a number: the main region of its country code
/// (libphonenumber's `format` takes `getRegionCodeForCountryCode`, not the number's own
/// region). Regions that share a code carry no patterns of their own in the metadata
/// (Canada, Jersey, the Vatican, Kazakhstan, …), and a number outside every region's
/// ranges (a NANP area code not assigned yet) belongs to none; with the number's own
/// region both came out as bare digits, a notation no CRM user writes, so a direct CRM
/// query missed `(416) 979-5000`.
fn formatting_region(p: &Parsed) -> Option<&'static Region> {
    meta::regions_for_code(p.code).first()
}

/// The first rule whose leading digits and whole pattern fit `nsn`.
fn rule_for<'a>(rules: &'a [Rule], nsn: &str) -> Option<&'a Rule> {
    rules.iter().find(|r| r.leading.as_ref().is_none_or(|l| l.is_match(nsn)) && r.whole.is_match(nsn))
}

/// `030 1234567`, `(415) 555-0100`, `602 123 456`: the national notation.
pub(super) fn national(p: &Parsed) -> String {
    let Some(region) = formatting_region(p) else { return p.nsn.clone() };
    let Some(rule) = rule_for(&region.formats, &p.nsn) else { return p.nsn.clone() };
    let template = match rule.national_prefix_rule.as_deref().filter(|r| !r.is_empty()) {
        // `$NP$FG` / `($NP$FG)`: the national prefix and the first group, written in place of
        // the template's first group.
        Some(np_rule) => {
            let with_prefix = np_rule.replace("$NP", region.national_prefix.as_deref().unwrap_or("")).replace("$FG", "${1}");
            rule.template.replacen("${1}", &with_prefix, 1)
        }
        None => rule.template.clone(),
    };
    rule.whole.replace(&p.nsn, template.as_str()).into_owned()
}

/// `+49 30 1234567`, `+1 415-555-0100`: the international notation.
pub(super) fn international(p: &Parsed) -> String {
    let Some(region) = formatting_region(p) else { return format!("+{} {}", p.code, p.nsn) };
    let rules = if region.international_formats.is_empty() { &region.formats } else { &region.international_formats };
    match rule_for(rules, &p.nsn) {
        Some(rule) => format!("+{} {}", p.code, rule.whole.replace(&p.nsn, rule.template.as_str())),
        None => format!("+{} {}", p.code, p.nsn),
    }
}
