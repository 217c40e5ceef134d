//! The SOQL and SOSL lexer and parser: tokens, literals (with SOQL's datetime forms), and
//! the parser both languages read with.

use jiff::Timestamp;

use super::reply::{Reply, bad};

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
    Word(String),
    Str(String),
    Num(f64),
    Date(jiff::civil::Date),
    DateTime(Timestamp),
    Punct(&'static str),
}

pub(super) fn malformed_query(msg: &str) -> Reply {
    bad("MALFORMED_QUERY", msg)
}

pub(super) fn tokenize(s: &str) -> Result<Vec<Tok>, Reply> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = vec![];
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' {
            let mut text = String::new();
            i += 1;
            loop {
                let Some(&c) = chars.get(i) else { return Err(malformed_query("unexpected end of query: unterminated string literal")) };
                match c {
                    '\'' => {
                        i += 1;
                        break;
                    }
                    '\\' => {
                        let Some(&e) = chars.get(i + 1) else { return Err(malformed_query("unterminated escape sequence")) };
                        match e {
                            '\'' | '"' | '\\' => text.push(e),
                            'n' => text.push('\n'),
                            'r' => text.push('\r'),
                            't' => text.push('\t'),
                            // Kept escaped: only LIKE patterns give them a meaning.
                            '%' | '_' => {
                                text.push('\\');
                                text.push(e);
                            }
                            other => return Err(malformed_query(&format!("Invalid string literal: Illegal character sequence '\\{other}' in string literal."))),
                        }
                        i += 2;
                    }
                    other => {
                        text.push(other);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Str(text));
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], ':' | '.' | '+' | '-')) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            out.push(literal(&word)?);
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '.') {
                i += 1;
            }
            out.push(Tok::Word(chars[start..i].iter().collect()));
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let punct = ["!=", "<>", "<=", ">="].into_iter().find(|p| *p == two).or_else(|| [",", "(", ")", "=", "<", ">"].into_iter().find(|p| p.starts_with(c)));
            let Some(p) = punct else { return Err(malformed_query(&format!("unexpected token: '{c}'"))) };
            i += p.len();
            out.push(Tok::Punct(p));
        }
    }
    Ok(out)
}

/// A literal starting with a digit: a number, a date or a datetime in one of SOQL's three
/// accepted forms (`YYYY-MM-DDThh:mm:ssZ`, `…+hh:mm`, `…-hh:mm`).
pub(super) fn literal(word: &str) -> Result<Tok, Reply> {
    if let Ok(n) = word.parse::<f64>() {
        return Ok(Tok::Num(n));
    }
    if word.len() == 10
        && let Ok(d) = word.parse::<jiff::civil::Date>()
    {
        return Ok(Tok::Date(d));
    }
    let shape_ok = (word.len() == 20 && word.ends_with('Z')) || (word.len() == 25 && matches!(word.as_bytes()[19], b'+' | b'-'));
    match word.parse::<Timestamp>() {
        Ok(t) if shape_ok && word.as_bytes().get(10) == Some(&b'T') => Ok(Tok::DateTime(t)),
        _ => Err(malformed_query(&format!("line 1: value of filter criterion is invalid: {word}"))),
    }
}

pub(super) struct Parser {
    pub(super) toks: Vec<Tok>,
    pub(super) pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    pub(super) fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    pub(super) fn keyword(&mut self, kw: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    pub(super) fn expect_keyword(&mut self, kw: &str) -> Result<(), Reply> {
        if self.keyword(kw) { Ok(()) } else { Err(malformed_query(&format!("expecting '{kw}', found '{}'", self.describe_next()))) }
    }
    pub(super) fn punct(&mut self, p: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Punct(q)) if *q == p) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    pub(super) fn word(&mut self) -> Result<String, Reply> {
        match self.next() {
            Some(Tok::Word(w)) => Ok(w),
            other => Err(malformed_query(&format!("unexpected token: '{}'", describe(other.as_ref())))),
        }
    }
    pub(super) fn number(&mut self) -> Result<usize, Reply> {
        match self.next() {
            Some(Tok::Num(n)) if n >= 0.0 && n.fract() == 0.0 => Ok(n as usize),
            other => Err(malformed_query(&format!("expecting a number, found '{}'", describe(other.as_ref())))),
        }
    }
    pub(super) fn describe_next(&self) -> String {
        describe(self.peek())
    }
    pub(super) fn at_end(&self) -> bool {
        self.pos >= self.toks.len()
    }
}

pub(super) fn describe(t: Option<&Tok>) -> String {
    match t {
        None => "EOF".into(),
        Some(Tok::Word(w)) => w.clone(),
        Some(Tok::Str(s)) => format!("'{s}'"),
        Some(Tok::Num(n)) => n.to_string(),
        Some(Tok::Date(d)) => d.to_string(),
        Some(Tok::DateTime(t)) => t.to_string(),
        Some(Tok::Punct(p)) => (*p).to_string(),
    }
}

pub(super) const RESERVED_WORDS: &[&str] = &["FROM", "WHERE", "ORDER", "LIMIT", "OFFSET", "AND", "OR", "NOT", "BY", "SELECT", "GROUP"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soql_datetime_literals_take_the_three_documented_forms() {
        assert!(matches!(literal("2024-05-01T10:00:00Z"), Ok(Tok::DateTime(_))));
        assert!(matches!(literal("2024-05-01T10:00:00+02:00"), Ok(Tok::DateTime(_))));
        assert!(matches!(literal("2024-05-01"), Ok(Tok::Date(_))));
        assert!(literal("2024-05-01T10:00:00.000+0000").is_err());
    }
}
