//! From whatever a PBX or a CRM user wrote to the digits libphonenumber's algorithm parses:
//! URI forms (`tel:` with `phone-context`, `sip:user@host`), Unicode spaces and digits,
//! the text around the number, the extension, and the punctuation between the digits.
//! Works on characters and on `str` splits at ASCII delimiters, never on byte offsets:
//! the input is whatever a caller sent.

use std::sync::LazyLock;

use regex::Regex;

/// A number as the parser takes it: a leading `+` or not, then ASCII digits only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Digits {
    pub(super) plus: bool,
    pub(super) digits: String,
}

/// Punctuation libphonenumber allows between digits (its `VALID_PUNCTUATION`), after every
/// Unicode space became an ASCII space.
const PUNCTUATION: &str = "-x\u{2010}\u{2011}\u{2012}\u{2013}\u{2014}\u{2015}\u{2212}\u{30fc}\u{ff0d}\u{ff0e}\u{ff0f} \u{ad}\u{200b}\u{2060}()\u{ff08}\u{ff09}\u{ff3b}\u{ff3d}.[]/~\u{2053}\u{223c}\u{ff5e}";

/// An extension at the end of the number, in the spellings libphonenumber knows
/// (`;ext=12`, `ext. 12`, `extension 12`, `x12`, `#12`, `~12`, `доб 12`, `anexo 12`, and the
/// auto-dialling `- 12#`), matched case-insensitively.
static EXTENSION: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?i)(?:;ext=\d{1,20}",
        r"|[ ,\t]*(?:e?xt(?:ensi(?:ó|o)?n)?n?|ｅ?ｘｔｎ?|доб|anexo)[:.．]?[ ,\t-]*\d{1,20}#?",
        r"|[ ,\t]*(?:[xｘ#＃~～]|int|ｉｎｔ)[:.．]?[ ,\t-]*\d{1,9}#?",
        r"|[- ]+\d{1,6}#)$"
    ))
    .ok()
});

/// Any Unicode decimal digit as ASCII (libphonenumber normalizes every `Nd` digit;
/// these are the blocks numbers are written in).
fn ascii_digit(c: char) -> Option<char> {
    const ZEROS: [u32; 8] = [0x30, 0x660, 0x6f0, 0x966, 0x9e6, 0xe50, 0xff10, 0x1040];
    let code = u32::from(c);
    ZEROS.iter().find(|z| (**z..**z + 10).contains(&code)).and_then(|z| char::from_digit(code - z, 10))
}

fn is_plus(c: char) -> bool {
    c == '+' || c == '\u{ff0b}'
}

/// `s` without `prefix` (ASCII, any case), compared character by character.
pub(super) fn strip_prefix_ignore_ascii_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let mut rest = s.chars();
    for want in prefix.chars() {
        if !rest.next()?.eq_ignore_ascii_case(&want) {
            return None;
        }
    }
    Some(rest.as_str())
}

/// Unicode spaces as ASCII spaces, other digits as ASCII digits, trimmed.
pub(super) fn spaces_and_digits(raw: &str) -> String {
    let mapped: String = raw.chars().map(|c| if c.is_whitespace() { ' ' } else { ascii_digit(c).unwrap_or(c) }).collect();
    mapped.trim().to_string()
}

/// The number a `tel:` or `sip:` URI carries, with an RFC 3966 `phone-context` that is a
/// global number prefix (`tel:030123;phone-context=+49`) put in front. Parameters (`ext`,
/// `isub`, `user=phone`) are dropped: E.164 has no extension.
fn unwrap_uri(s: &str) -> String {
    let mut rest = s;
    let mut sip = false;
    for scheme in ["tel:", "sips:", "sip:"] {
        if let Some(r) = strip_prefix_ignore_ascii_case(rest, scheme) {
            rest = r.trim_start();
            sip = scheme != "tel:";
            break;
        }
    }
    if sip {
        rest = rest.split_once('@').map_or(rest, |(user, _host)| user);
    }
    let Some((number, params)) = rest.split_once(';') else { return rest.to_string() };
    let context = params.split(';').find_map(|p| strip_prefix_ignore_ascii_case(p.trim(), "phone-context=")).map(str::trim);
    match context {
        Some(c) if c.starts_with('+') => format!("{c}{number}"),
        _ => number.to_string(),
    }
}

/// libphonenumber's `extractPossibleNumber`: from the first `+` or digit, without trailing
/// characters that belong to no number, and without a second number after `/ x`.
fn possible_number(s: &str) -> &str {
    let Some((start, _)) = s.char_indices().find(|(_, c)| is_plus(*c) || c.is_ascii_digit()) else { return "" };
    let from = s.get(start..).unwrap_or("");
    let trimmed = from.trim_end_matches(|c: char| !(c.is_alphanumeric() || c == '#'));
    // A second number: `/` then optional spaces then `x` (libphonenumber's SECOND_NUMBER_START).
    let mut end = trimmed.len();
    for (i, c) in trimmed.char_indices() {
        if c == '\\' || c == '/' {
            let after = trimmed.get(i + c.len_utf8()..).unwrap_or("").trim_start();
            if after.starts_with('x') || after.starts_with('X') {
                end = i;
                break;
            }
        }
    }
    trimmed.get(..end).unwrap_or(trimmed).trim_end()
}

/// The keypad digit of a letter (vanity numbers such as `1-800-FLOWERS`).
fn keypad(c: char) -> Option<char> {
    let d = match c.to_ascii_uppercase() {
        'A'..='C' => '2',
        'D'..='F' => '3',
        'G'..='I' => '4',
        'J'..='L' => '5',
        'M'..='O' => '6',
        'P'..='S' => '7',
        'T'..='V' => '8',
        'W'..='Z' => '9',
        _ => return None,
    };
    Some(d)
}

/// libphonenumber's viability test (`VALID_PHONE_NUMBER`): optional plus signs, at least
/// three digits with only punctuation between them (or exactly two digits), then digits,
/// punctuation or letters.
fn is_viable(s: &str) -> bool {
    if s.chars().count() == 2 && s.chars().all(|c| c.is_ascii_digit()) {
        return true;
    }
    let body = s.trim_start_matches(is_plus);
    let mut digits = 0;
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.peek().copied() {
        if c.is_ascii_digit() {
            digits += 1;
        } else if !(PUNCTUATION.contains(c) || c == '*') {
            break;
        }
        chars.next();
    }
    // Trailing punctuation before the first letter does not count towards the three.
    digits >= 3 && chars.all(|c| c.is_alphanumeric() || PUNCTUATION.contains(c) || c == '*')
}

/// The digits (and whether a `+` leads) of `raw`, or `None` when it is no phone number.
pub(super) fn digits(raw: &str) -> Option<Digits> {
    let spaced = spaces_and_digits(raw);
    let unwrapped = unwrap_uri(&spaced);
    let number = possible_number(&unwrapped);
    let number = match EXTENSION.as_ref().and_then(|re| re.find(number)) {
        // Only an extension after a viable number is one (libphonenumber's rule).
        Some(m) if is_viable(number.get(..m.start()).unwrap_or("")) => number.get(..m.start()).unwrap_or(""),
        _ => number,
    };
    if !is_viable(number) {
        return None;
    }
    let plus = number.starts_with(is_plus);
    // Three or more letters make a vanity number; otherwise letters are noise.
    let vanity = number.chars().filter(char::is_ascii_alphabetic).count() >= 3;
    let digits: String = if vanity {
        number.chars().filter_map(|c| if c.is_ascii_digit() { Some(c) } else { keypad(c) }).collect()
    } else {
        number.chars().filter(char::is_ascii_digit).collect()
    };
    Some(Digits { plus, digits })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str, want: Option<(bool, &str)>) {
        let got = digits(raw);
        assert_eq!(got.as_ref().map(|d| (d.plus, d.digits.as_str())), want, "{raw:?}");
    }

    #[test]
    fn digits_of_every_notation() {
        check("+49 (0)30 1234567", Some((true, "490301234567")));
        check("tel:+1-201-555-9141;ext=12", Some((true, "12015559141")));
        check("tel:2015559141;phone-context=+1", Some((true, "12015559141")));
        check("tel:030123456;phone-context=example.com", Some((false, "030123456")));
        check("sip:+4930123456@pbx.example.com;user=phone", Some((true, "4930123456")));
        check("SIP:030123456@pbx", Some((false, "030123456")));
        check("+1 201-555-9141 ext. 12", Some((true, "12015559141")));
        check("(201) 555-9141 x12", Some((false, "2015559141")));
        check("+49 30 1234567 extension 7", Some((true, "49301234567")));
        check("030 1234567 #12", Some((false, "0301234567")));
        check("+49\u{a0}30\u{202f}123\u{2009}4567\u{3000}", Some((true, "49301234567")));
        check("\u{ff0b}\u{ff14}\u{ff19} 30 1234567", Some((true, "49301234567")));
        check("Tel.: +49 30 1234567.", Some((true, "49301234567")));
        check("030 1234567 / x 12", Some((false, "0301234567")));
        check("1-800-FLOWERS", Some((false, "18003569377")));
        check("12", Some((false, "12")));
        check("hello", None);
        check("é", None);
        check("+é49", None);
        check("00é", None);
        check("", None);
    }
}
