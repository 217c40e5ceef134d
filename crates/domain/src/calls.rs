//! Decisions the PBX asks for while a call is being set up: reject blocked callers,
//! rewrite the caller id of outbound calls.

use serde::Deserialize;

/// One row of the outbound caller-id table: destinations matching `destination` (with `*`
/// wildcards) leave with `caller_id`. The pattern is tried on the digits as the PBX dialled
/// them (as Zammad does) and on the E.164 digits without `+`.
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

/// The caller id for an outbound call to `dialled` (as the PBX sent it) whose E.164 form is
/// `destination_e164`: the first rule matching either, else `default`.
///
/// Matching the dialled digits keeps a Zammad table working unchanged: its `41*` row is meant
/// for `4147110000000` however the hub's region would read that number nationally.
pub fn outbound_caller_id<'a>(rules: &'a [CallerIdRule], default: Option<&'a str>, dialled: &str, destination_e164: Option<&str>) -> Option<&'a str> {
    let dialled: String = dialled.chars().filter(char::is_ascii_digit).collect();
    let e164 = destination_e164.map(|e| e.trim_start_matches('+'));
    rules
        .iter()
        .find(|r| {
            let pattern = r.destination.trim_start_matches('+');
            (!dialled.is_empty() && wildcard_match(pattern, &dialled)) || e164.is_some_and(|e| wildcard_match(pattern, e))
        })
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
        let cases = [
            // (dialled as the PBX sent it, its E.164 form, default, expected caller id)
            ("+49301234567", Some("+49301234567"), None, Some("+49309999000")),
            ("030 1234567", Some("+49301234567"), None, Some("+49309999000")),
            ("0891234567", Some("+49891234567"), None, Some("+49899999000")),
            ("+14155550100", Some("+14155550100"), Some("+1555"), Some("+1555")),
            ("+14155550100", Some("+14155550100"), None, None),
            // Not a number the hub could read, matched as dialled.
            ("4930999", None, None, Some("+49309999000")),
        ];
        for (dialled, e164, default, want) in cases {
            assert_eq!(outbound_caller_id(&rules, default, dialled, e164), want, "{dialled}");
        }
    }

    #[test]
    fn a_zammad_table_matches_the_digits_as_dialled() {
        // A DE hub reads 4147110000000 as a national number (+49 4147 110000000); Zammad's
        // `41*` row is for the dialled digits, a Swiss number.
        let rules = vec![CallerIdRule { destination: "41*".into(), caller_id: "41715550000".into(), note: None }];
        assert_eq!(outbound_caller_id(&rules, None, "4147110000000", Some("+494147110000000")), Some("41715550000"));
        assert_eq!(outbound_caller_id(&rules, None, "+41 44 668 18 00", Some("+41446681800")), Some("41715550000"));
        assert_eq!(outbound_caller_id(&rules, None, "030 4100", Some("+49304100")), None);
    }
}
