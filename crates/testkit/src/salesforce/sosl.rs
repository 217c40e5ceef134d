//! SOSL: `FIND {…} IN PHONE FIELDS RETURNING …`, reserved characters checked, and phone
//! fields matched by their digits (the rule in this module's documentation).

use serde_json::{Value, json};

use super::org::Org;
use super::query::Path;
use super::reply::{Reply, bad};
use super::schema::ObjectDef;
use super::soql::{Parser, tokenize};

const SOSL_DEFAULT_LIMIT: usize = 2000;
const MIN_PHONE_MATCH_DIGITS: usize = 7;

/// Characters SOSL gives a meaning to; a search term must escape them with `\`.
const SOSL_RESERVED: &[char] = &['?', '&', '|', '!', '{', '}', '[', ']', '(', ')', '^', '~', '*', ':', '\\', '"', '\'', '+', '-'];

fn malformed_search(msg: &str) -> Reply {
    bad("MALFORMED_SEARCH", msg)
}

/// The search words of `FIND {…}` (operators `OR`/`AND` kept as words) and what follows.
fn search_term(q: &str) -> Result<(Vec<String>, &str), Reply> {
    let rest = q.trim_start();
    let Some(after_find) = rest.get(..4).filter(|f| f.eq_ignore_ascii_case("FIND")).map(|_| &rest[4..]) else {
        return Err(malformed_search("line 1:0 no viable alternative at character ' '; a search must start with FIND"));
    };
    let after_find = after_find.trim_start();
    let Some(body) = after_find.strip_prefix('{') else {
        return Err(malformed_search("No search term found. The search term must be enclosed in braces."));
    };
    let mut words = vec![];
    let mut word = String::new();
    let mut chars = body.char_indices();
    let offset = q.len() - body.len();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, e)) => word.push(e),
                None => return Err(malformed_search("unterminated escape sequence in the search term")),
            },
            '}' => {
                if !word.is_empty() {
                    words.push(word);
                }
                if words.iter().map(|w| w.chars().count()).sum::<usize>() < 2 {
                    return Err(malformed_search("search term must be longer than one character"));
                }
                return Ok((words, &body[i + 1..]));
            }
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c if SOSL_RESERVED.contains(&c) => {
                return Err(malformed_search(&format!("line 1:{} no viable alternative at character '{c}'", offset + i)));
            }
            c => word.push(c),
        }
    }
    Err(malformed_search("No search term found. The search term must be enclosed in braces."))
}

pub(super) fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// The phone matching rule documented at the top of `mod.rs`.
fn phone_matches(stored: &str, word: &str) -> bool {
    let (s, w) = (digits(stored), digits(word));
    let shorter = s.len().min(w.len());
    shorter >= MIN_PHONE_MATCH_DIGITS && (s.ends_with(&w) || w.ends_with(&s))
}

impl Org {
    pub(super) fn sosl(&mut self, version: &str, q: &str) -> Reply {
        match self.run_sosl(version, q) {
            Ok(r) | Err(r) => r,
        }
    }

    fn run_sosl(&mut self, version: &str, q: &str) -> Result<Reply, Reply> {
        let (words, rest) = search_term(q)?;
        let mut p = Parser { toks: tokenize(rest).map_err(|r| retag(r, "MALFORMED_SEARCH"))?, pos: 0 };
        let search = |p: &mut Parser, kw: &str| p.expect_keyword(kw).map_err(|r| retag(r, "MALFORMED_SEARCH"));
        if p.keyword("IN") {
            search(&mut p, "PHONE")?;
            search(&mut p, "FIELDS")?;
        } else {
            return Err(malformed_search("this test server only answers FIND {…} IN PHONE FIELDS"));
        }
        search(&mut p, "RETURNING")?;
        let mut wanted: Vec<(ObjectDef, Vec<Path>, Option<usize>)> = vec![];
        loop {
            let object = p.word()?;
            let obj = self.object(&object).ok_or_else(|| bad("INVALID_TYPE", &format!("sObject type '{object}' is not supported.")))?;
            let mut names = vec![];
            let mut limit = None;
            if p.punct("(") {
                self.select_list(&mut p, &mut names)?;
                if p.keyword("LIMIT") {
                    limit = Some(p.number()?);
                }
                if !p.punct(")") {
                    return Err(malformed_search(&format!("expecting ')', found '{}'", p.describe_next())));
                }
            } else {
                names.push("Id".into());
            }
            let paths = self.resolve_all(&obj, &names)?;
            wanted.push((obj, paths, limit));
            if !p.punct(",") {
                break;
            }
        }
        let limit = if p.keyword("LIMIT") { p.number()? } else { SOSL_DEFAULT_LIMIT };
        if !p.at_end() {
            return Err(malformed_search(&format!("unexpected token: '{}'", p.describe_next())));
        }
        let mut found = vec![];
        for (obj, paths, per_object) in &wanted {
            let hits = self
                .table(obj.name)
                .values()
                .filter(|r| {
                    let phones: Vec<&str> = obj.phone_fields().filter_map(|f| r.get(&f.name).and_then(Value::as_str)).collect();
                    term_matches(&words, &phones)
                })
                .take(per_object.unwrap_or(usize::MAX))
                .map(|r| self.project(version, obj, r, paths))
                .collect::<Vec<_>>();
            found.extend(hits);
        }
        found.truncate(limit);
        Ok(Reply::ok(json!({ "searchRecords": found })))
    }
}

/// Words joined by `OR` / `AND` (the default), evaluated left to right.
fn term_matches(words: &[String], phones: &[&str]) -> bool {
    let hit = |w: &str| phones.iter().any(|p| phone_matches(p, w));
    let mut result: Option<bool> = None;
    let mut op_or = false;
    for w in words {
        if w.eq_ignore_ascii_case("OR") {
            op_or = true;
            continue;
        }
        if w.eq_ignore_ascii_case("AND") {
            op_or = false;
            continue;
        }
        let h = hit(w);
        result = Some(match result {
            None => h,
            Some(r) if op_or => r || h,
            Some(r) => r && h,
        });
        op_or = false;
    }
    result.unwrap_or(false)
}

fn retag(reply: Reply, code: &str) -> Reply {
    let message = reply.body.as_ref().and_then(|b| b.get(0)).and_then(|e| e.get("message")).and_then(Value::as_str).unwrap_or_default().to_string();
    bad(code, &message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_search_compares_digits() {
        let check = |stored: &str, word: &str, want: bool| assert_eq!(phone_matches(stored, word), want, "{stored} vs {word}");
        check("+49 30 12345678", "493012345678", true);
        check("(030) 1234-5678", "3012345678", true);
        check("+43 30 12345678", "3012345678", true);
        check("+49 30 12345678", "03012345678", false);
        check("123", "123", false);
    }

    #[test]
    fn search_terms_must_escape_reserved_characters() {
        assert!(search_term("FIND {+4930} IN PHONE FIELDS").is_err());
        let (words, rest) = search_term("FIND {\\+4930 OR 030} IN PHONE FIELDS").map_err(|_| ()).expect("valid");
        assert_eq!(words, vec!["+4930", "OR", "030"]);
        assert_eq!(rest, " IN PHONE FIELDS");
    }

}
