//! Decisions the PBX asks for while a call is being set up: reject blocked callers,
//! rewrite the caller id of outbound calls.

use serde::Deserialize;

/// One row of the outbound caller-id table: destinations matching `destination` (with `*`
/// wildcards, on E.164 digits without `+`) leave with `caller_id`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerIdRule {
    pub destination: String,
    pub caller_id: String,
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallDecision {
    /// Let the call go on as it is.
    Continue,
    Reject { reason: String },
    /// Dial `number` presenting `caller_id`.
    Dial { caller_id: String, number: String },
}

/// `*` matches any run of characters; everything else must match exactly.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti, mut star, mut mark) = (0usize, 0usize, None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The caller id for an outbound call to `destination_e164`: the first matching rule,
/// else `default`.
pub fn outbound_caller_id<'a>(rules: &'a [CallerIdRule], default: Option<&'a str>, destination_e164: &str) -> Option<&'a str> {
    let digits = destination_e164.trim_start_matches('+');
    rules
        .iter()
        .find(|r| wildcard_match(r.destination.trim_start_matches('+'), digits))
        .map(|r| r.caller_id.as_str())
        .or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        let cases = [
            ("49*", "4930123", true),
            ("49*", "4430123", false),
            ("*", "", true),
            ("4930*7", "49301237", true),
            ("4930*7", "49301238", false),
            ("4930123", "4930123", true),
            ("4930123", "49301234", false),
            ("*123", "4930123", true),
            ("4*3*", "4930123", true),
        ];
        for (p, t, want) in cases {
            assert_eq!(wildcard_match(p, t), want, "{p} ~ {t}");
        }
    }

    #[test]
    fn caller_id_table_first_match_then_default() {
        let rules = vec![
            CallerIdRule { destination: "+4930*".into(), caller_id: "+49309999000".into(), note: None },
            CallerIdRule { destination: "49*".into(), caller_id: "+49899999000".into(), note: None },
        ];
        assert_eq!(outbound_caller_id(&rules, None, "+49301234567"), Some("+49309999000"));
        assert_eq!(outbound_caller_id(&rules, None, "+49891234567"), Some("+49899999000"));
        assert_eq!(outbound_caller_id(&rules, Some("+1555"), "+14155550100"), Some("+1555"));
        assert_eq!(outbound_caller_id(&rules, None, "+14155550100"), None);
    }
}
