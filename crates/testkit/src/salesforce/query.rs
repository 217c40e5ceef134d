//! SOQL evaluation: fields resolved (through lookups too), conditions typed and matched,
//! `ORDER BY`, `LIMIT`/`OFFSET`, and paging through query locators.

use std::cmp::Ordering;
use std::collections::HashSet;

use jiff::Timestamp;
use serde_json::{Map, Value, json};

use super::org::{Locator, Org};
use super::reply::{Reply, bad};
use super::schema::{FieldDef, Kind, ObjectDef};
use super::soql::{Parser, RESERVED_WORDS, Tok, describe, malformed_query, tokenize};

/// "QueryLocator objects expire automatically after 15 minutes of inactivity. A user can
/// have up to 10 query cursors open at a time. If 10 QueryLocator cursors are open when a
/// client application, logged in as the same user, attempts to open a new one, then the
/// oldest of the 10 cursors is released." (SOAP API Developer Guide, QueryLocator; REST's
/// `nextRecordsUrl` is the same cursor.)
const LOCATOR_IDLE: jiff::SignedDuration = jiff::SignedDuration::from_secs(15 * 60);
const MAX_OPEN_LOCATORS: usize = 10;

/// A selected field: one of the object's own, or one through a lookup (`Account.Name`).
#[derive(Clone, Debug)]
pub(super) enum Path {
    Own(FieldDef),
    Related { relationship: String, reference: String, target: FieldDef },
}

impl Path {
    fn display(&self) -> String {
        match self {
            Path::Own(f) => f.name.clone(),
            Path::Related { relationship, target, .. } => format!("{relationship}.{}", target.name),
        }
    }
}

fn no_such_column(name: &str, object: &str) -> Reply {
    bad(
        "INVALID_FIELD",
        &format!("No such column '{name}' on entity '{object}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names."),
    )
}

impl Org {
    fn resolve(&self, obj: &ObjectDef, name: &str) -> Result<Path, Reply> {
        match name.split_once('.') {
            None => obj.field(name).cloned().map(Path::Own).ok_or_else(|| no_such_column(name, obj.name)),
            Some((rel, rest)) => {
                let reference = if let Some(base) = rel.strip_suffix("__r") { format!("{base}__c") } else { format!("{rel}Id") };
                let Some(ref_field) = obj.field(&reference).filter(|f| matches!(f.kind, Kind::Reference(_))) else {
                    return Err(bad(
                        "INVALID_FIELD",
                        &format!("Didn't understand relationship '{rel}' in field path. If you are attempting to use a custom relationship, be sure to append the '__r' after the custom relationship name."),
                    ));
                };
                let Kind::Reference(targets) = ref_field.kind else { return Err(no_such_column(name, obj.name)) };
                let target_obj = targets.first().and_then(|t| self.object(t)).ok_or_else(|| no_such_column(name, obj.name))?;
                let target = target_obj.field(rest).cloned().ok_or_else(|| no_such_column(rest, target_obj.name))?;
                let relationship = ref_field.name.strip_suffix("Id").map(str::to_string).unwrap_or_else(|| rel.to_string());
                Ok(Path::Related { relationship, reference: ref_field.name.clone(), target })
            }
        }
    }

    pub(super) fn select_list(&self, p: &mut Parser, names: &mut Vec<String>) -> Result<(), Reply> {
        loop {
            let w = p.word()?;
            if RESERVED_WORDS.iter().any(|r| r.eq_ignore_ascii_case(&w)) {
                return Err(malformed_query(&format!("unexpected token: '{w}'")));
            }
            names.push(w);
            if !p.punct(",") {
                return Ok(());
            }
        }
    }

    pub(super) fn resolve_all(&self, obj: &ObjectDef, names: &[String]) -> Result<Vec<Path>, Reply> {
        let mut seen = HashSet::new();
        let mut out = vec![];
        for n in names {
            let path = self.resolve(obj, n)?;
            if !seen.insert(path.display().to_ascii_lowercase()) {
                return Err(malformed_query(&format!("duplicate field selected: {}", path.display())));
            }
            out.push(path);
        }
        Ok(out)
    }

    /// The record as an answer shows it: `attributes`, then the selected fields.
    pub(super) fn project(&self, version: &str, obj: &ObjectDef, record: &Map<String, Value>, paths: &[Path]) -> Value {
        let id = record.get("Id").and_then(Value::as_str).unwrap_or_default();
        let mut out = Map::new();
        out.insert("attributes".into(), self.attributes(version, obj.name, id));
        for path in paths {
            match path {
                Path::Own(f) => {
                    out.insert(f.name.clone(), record.get(&f.name).cloned().unwrap_or(Value::Null));
                }
                Path::Related { relationship, reference, target } => {
                    let related = record
                        .get(reference)
                        .and_then(Value::as_str)
                        .and_then(|rid| self.object_by_prefix(rid).and_then(|o| self.find(o.name, rid).map(|(rid, r)| (o, rid, r.clone()))));
                    let slot = out.entry(relationship.clone()).or_insert(Value::Null);
                    if let Some((o, rid, r)) = related {
                        if slot.is_null() {
                            *slot = json!({ "attributes": self.attributes(version, o.name, &rid) });
                        }
                        if let Some(m) = slot.as_object_mut() {
                            m.insert(target.name.clone(), r.get(&target.name).cloned().unwrap_or(Value::Null));
                        }
                    }
                }
            }
        }
        Value::Object(out)
    }

    pub(super) fn soql(&mut self, version: &str, q: &str) -> Reply {
        match self.run_soql(version, q) {
            Ok(r) | Err(r) => r,
        }
    }

    fn run_soql(&mut self, version: &str, q: &str) -> Result<Reply, Reply> {
        let mut p = Parser { toks: tokenize(q)?, pos: 0 };
        p.expect_keyword("SELECT")?;
        let mut names = vec![];
        self.select_list(&mut p, &mut names)?;
        p.expect_keyword("FROM")?;
        let object = p.word()?;
        let obj = self.object(&object).ok_or_else(|| {
            bad("INVALID_TYPE", &format!("sObject type '{object}' is not supported. If you are attempting to use a custom object, be sure to append the '__c' after the entity name."))
        })?;
        let paths = self.resolve_all(&obj, &names)?;
        let filter = if p.keyword("WHERE") { Some(self.condition(&mut p, &obj)?) } else { None };
        let mut order = vec![];
        if p.keyword("ORDER") {
            p.expect_keyword("BY")?;
            loop {
                let name = p.word()?;
                let field = match self.resolve(&obj, &name)? {
                    Path::Own(f) => f,
                    Path::Related { .. } => return Err(malformed_query("ordering by related fields is not supported by this test server")),
                };
                let descending = if p.keyword("DESC") {
                    true
                } else {
                    p.keyword("ASC");
                    false
                };
                let nulls_last = if p.keyword("NULLS") {
                    if p.keyword("LAST") {
                        true
                    } else {
                        p.expect_keyword("FIRST")?;
                        false
                    }
                } else {
                    descending
                };
                order.push((field, descending, nulls_last));
                if !p.punct(",") {
                    break;
                }
            }
        }
        let limit = if p.keyword("LIMIT") { Some(p.number()?) } else { None };
        let offset = if p.keyword("OFFSET") { p.number()? } else { 0 };
        if !p.at_end() {
            return Err(malformed_query(&format!("unexpected token: '{}'", p.describe_next())));
        }
        let mut rows: Vec<&Map<String, Value>> = self.table(obj.name).values().filter(|r| filter.as_ref().is_none_or(|f| f.matches(r))).collect();
        rows.sort_by(|a, b| {
            for (f, desc, nulls_last) in &order {
                let ord = compare_stored(f.kind, a.get(&f.name), b.get(&f.name), *nulls_last != *desc);
                let ord = if *desc { ord.reverse() } else { ord };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
            Ordering::Equal
        });
        let rows: Vec<Value> = rows.into_iter().skip(offset).take(limit.unwrap_or(usize::MAX)).map(|r| self.project(version, &obj, r, &paths)).collect();
        Ok(Reply::ok(self.page(version, rows, None)))
    }

    /// The first page of `rows` (or the page starting at `offset` of a stored locator).
    pub(super) fn page(&mut self, version: &str, rows: Vec<Value>, locator: Option<(String, usize)>) -> Value {
        let total = locator.as_ref().map_or(rows.len(), |(id, _)| self.locators.get(id).map_or(0, |l| l.rows.len()));
        let start = locator.as_ref().map_or(0, |(_, offset)| *offset);
        let all = match &locator {
            Some((id, _)) => self.locators.get_mut(id).map(|l| {
                l.used = Timestamp::now();
                l.rows.clone()
            }).unwrap_or_default(),
            None => rows,
        };
        let end = (start + self.page_size).min(all.len());
        let records: Vec<Value> = all.get(start..end).map(<[Value]>::to_vec).unwrap_or_default();
        let mut answer = json!({ "totalSize": total, "done": end >= all.len(), "records": records });
        if end < all.len() {
            let id = match locator {
                Some((id, _)) => id,
                None => {
                    self.counter += 1;
                    let id = format!("01gxx{:010}", self.counter + 100);
                    if self.locators.len() >= MAX_OPEN_LOCATORS
                        && let Some(oldest) = self.locators.iter().min_by_key(|(_, l)| l.opened).map(|(k, _)| k.clone())
                    {
                        self.locators.remove(&oldest);
                    }
                    self.locators.insert(id.clone(), Locator { rows: all, used: Timestamp::now(), opened: self.counter });
                    id
                }
            };
            answer["nextRecordsUrl"] = json!(format!("/services/data/{version}/query/{id}-{end}"));
        }
        answer
    }

    pub(super) fn next_page(&mut self, version: &str, locator: &str) -> Reply {
        let Some((id, offset)) = locator.rsplit_once('-') else { return bad("INVALID_QUERY_LOCATOR", "invalid query locator") };
        let Ok(offset) = offset.parse::<usize>() else { return bad("INVALID_QUERY_LOCATOR", "invalid query locator") };
        let idle = self.locators.get(id).map(|l| Timestamp::now().duration_since(l.used) > LOCATOR_IDLE);
        match idle {
            None => return bad("INVALID_QUERY_LOCATOR", "invalid query locator"),
            Some(true) => {
                self.locators.remove(id);
                return bad("INVALID_QUERY_LOCATOR", "invalid query locator");
            }
            Some(false) => {}
        }
        Reply::ok(self.page(version, vec![], Some((id.to_string(), offset))))
    }

    fn condition(&self, p: &mut Parser, obj: &ObjectDef) -> Result<Cond, Reply> {
        let first = self.atom(p, obj)?;
        let mut parts = vec![first];
        let mut joiner: Option<&str> = None;
        loop {
            let this = if p.keyword("AND") {
                "AND"
            } else if p.keyword("OR") {
                "OR"
            } else {
                break;
            };
            if joiner.is_some_and(|j| j != this) {
                return Err(malformed_query(&format!("unexpected token: '{this}'; use parentheses when mixing AND and OR")));
            }
            joiner = Some(this);
            parts.push(self.atom(p, obj)?);
        }
        Ok(match (joiner, parts.len()) {
            (_, 1) => parts.remove(0),
            (Some("OR"), _) => Cond::Or(parts),
            _ => Cond::And(parts),
        })
    }

    fn atom(&self, p: &mut Parser, obj: &ObjectDef) -> Result<Cond, Reply> {
        if p.punct("(") {
            let c = self.condition(p, obj)?;
            if !p.punct(")") {
                return Err(malformed_query(&format!("expecting ')', found '{}'", p.describe_next())));
            }
            return Ok(c);
        }
        if p.keyword("NOT") {
            return Ok(Cond::Not(Box::new(self.atom(p, obj)?)));
        }
        let name = p.word()?;
        let field = match self.resolve(obj, &name)? {
            Path::Own(f) => f,
            Path::Related { .. } => return Err(malformed_query("filters on related fields are not supported by this test server")),
        };
        let op = if p.keyword("LIKE") {
            Op::Like
        } else {
            match p.next() {
                Some(Tok::Punct("=")) => Op::Eq,
                Some(Tok::Punct("!=" | "<>")) => Op::Ne,
                Some(Tok::Punct("<")) => Op::Lt,
                Some(Tok::Punct("<=")) => Op::Le,
                Some(Tok::Punct(">")) => Op::Gt,
                Some(Tok::Punct(">=")) => Op::Ge,
                other => return Err(malformed_query(&format!("unexpected token: '{}'", describe(other.as_ref())))),
            }
        };
        let value = match p.next() {
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("null") => Lit::Null,
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("true") || w.eq_ignore_ascii_case("false") => Lit::Bool(w.eq_ignore_ascii_case("true")),
            Some(Tok::Str(s)) => Lit::Str(s),
            Some(Tok::Num(n)) => Lit::Num(n),
            Some(Tok::Date(d)) => Lit::Date(d),
            Some(Tok::DateTime(t)) => Lit::DateTime(t),
            other => return Err(malformed_query(&format!("unexpected token: '{}'", describe(other.as_ref())))),
        };
        check_literal(&field, op, &value)?;
        Ok(Cond::Cmp { field, op, value })
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Like,
}

#[derive(Clone, Debug)]
enum Lit {
    Null,
    Bool(bool),
    Str(String),
    Num(f64),
    Date(jiff::civil::Date),
    DateTime(Timestamp),
}

enum Cond {
    Cmp { field: FieldDef, op: Op, value: Lit },
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Not(Box<Cond>),
}

/// SOQL is typed: a datetime field takes an unquoted datetime literal, a text field a
/// quoted string, and so on.
fn check_literal(field: &FieldDef, op: Op, value: &Lit) -> Result<(), Reply> {
    let wrong = |what: &str| {
        Err(bad("INVALID_FIELD", &format!("value of filter criterion for field '{}' must be of type {what}", field.name)))
    };
    if matches!(value, Lit::Null) {
        return if matches!(op, Op::Eq | Op::Ne) { Ok(()) } else { wrong("non-null") };
    }
    if op == Op::Like && !field.kind.is_textual() {
        return Err(bad("INVALID_FIELD", &format!("invalid operator on {} field: LIKE", field.kind.type_name())));
    }
    match (field.kind, value) {
        (k, Lit::Str(_)) if k.is_textual() => Ok(()),
        (k, _) if k.is_textual() => wrong("string and should be enclosed in quotes"),
        (Kind::DateTime, Lit::DateTime(_)) => Ok(()),
        (Kind::DateTime, _) => wrong("dateTime and should not be enclosed in quotes"),
        (Kind::Date, Lit::Date(_)) => Ok(()),
        (Kind::Date, _) => wrong("date and should not be enclosed in quotes"),
        (Kind::Int, Lit::Num(_)) => Ok(()),
        (Kind::Int, _) => wrong("double and should not be enclosed in quotes"),
        (Kind::Bool, Lit::Bool(_)) => Ok(()),
        (Kind::Bool, _) => wrong("boolean and should not be enclosed in quotes"),
        _ => wrong(field.kind.type_name()),
    }
}

impl Cond {
    pub(super) fn matches(&self, record: &Map<String, Value>) -> bool {
        match self {
            Cond::And(parts) => parts.iter().all(|c| c.matches(record)),
            Cond::Or(parts) => parts.iter().any(|c| c.matches(record)),
            Cond::Not(c) => !c.matches(record),
            Cond::Cmp { field, op, value } => compare(field, *op, record.get(&field.name).filter(|v| !v.is_null()), value),
        }
    }
}

fn compare(field: &FieldDef, op: Op, stored: Option<&Value>, lit: &Lit) -> bool {
    if matches!(lit, Lit::Null) {
        return (op == Op::Eq) == stored.is_none();
    }
    let Some(stored) = stored else { return op == Op::Ne };
    if op == Op::Like {
        let (Some(text), Lit::Str(pattern)) = (stored.as_str(), lit) else { return false };
        return like(&text.to_lowercase(), &pattern.to_lowercase());
    }
    let ord = match (field.kind, lit) {
        (Kind::Id | Kind::Reference(_), Lit::Str(s)) => {
            let a = stored.as_str().unwrap_or_default();
            // 15- and 18-character forms of one id are equal.
            let n = a.len().min(s.len()).min(15);
            if a.len() != s.len() && n == 15 { Some(a[..15].cmp(&s[..15])) } else { Some(a.cmp(s.as_str())) }
        }
        (k, Lit::Str(s)) if k.is_textual() => Some(stored.as_str().unwrap_or_default().to_lowercase().cmp(&s.to_lowercase())),
        (Kind::DateTime, Lit::DateTime(t)) => stored.as_str().and_then(|s| s.parse::<Timestamp>().ok()).map(|v| v.cmp(t)),
        (Kind::Date, Lit::Date(d)) => stored.as_str().and_then(|s| s.parse::<jiff::civil::Date>().ok()).map(|v| v.cmp(d)),
        (Kind::Int, Lit::Num(n)) => stored.as_f64().and_then(|v| v.partial_cmp(n)),
        (Kind::Bool, Lit::Bool(b)) => stored.as_bool().map(|v| v.cmp(b)),
        _ => None,
    };
    let Some(ord) = ord else { return false };
    match op {
        Op::Eq => ord == Ordering::Equal,
        Op::Ne => ord != Ordering::Equal,
        Op::Lt => ord == Ordering::Less,
        Op::Le => ord != Ordering::Greater,
        Op::Gt => ord == Ordering::Greater,
        Op::Ge => ord != Ordering::Less,
        Op::Like => false,
    }
}

/// SOQL `LIKE`: `%` any run, `_` one character, `\%` and `\_` literal.
pub(super) fn like(text: &str, pattern: &str) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum P {
        Any,
        One,
        Char(char),
    }
    let mut pat = vec![];
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        pat.push(match c {
            '%' => P::Any,
            '_' => P::One,
            '\\' => P::Char(chars.next().unwrap_or('\\')),
            c => P::Char(c),
        });
    }
    let text: Vec<char> = text.chars().collect();
    // matches[i][j]: text[i..] matches pat[j..]
    let mut next = vec![false; pat.len() + 1];
    next[pat.len()] = true;
    for j in (0..pat.len()).rev() {
        next[j] = pat[j] == P::Any && next[j + 1];
    }
    for i in (0..text.len()).rev() {
        let mut cur = vec![false; pat.len() + 1];
        for j in (0..pat.len()).rev() {
            cur[j] = match pat[j] {
                P::Any => cur[j + 1] || next[j],
                P::One => next[j + 1],
                P::Char(c) => c == text[i] && next[j + 1],
            };
        }
        next = cur;
    }
    next[0]
}

fn compare_stored(kind: Kind, a: Option<&Value>, b: Option<&Value>, nulls_first: bool) -> Ordering {
    let a = a.filter(|v| !v.is_null());
    let b = b.filter(|v| !v.is_null());
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => {
            if nulls_first {
                Ordering::Less
            } else {
                Ordering::Greater
            }
        }
        (Some(_), None) => {
            if nulls_first {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
        (Some(a), Some(b)) => match kind {
            Kind::DateTime => {
                let pa = a.as_str().and_then(|s| s.parse::<Timestamp>().ok());
                let pb = b.as_str().and_then(|s| s.parse::<Timestamp>().ok());
                pa.cmp(&pb)
            }
            Kind::Int => a.as_f64().partial_cmp(&b.as_f64()).unwrap_or(Ordering::Equal),
            Kind::Id | Kind::Reference(_) => a.as_str().cmp(&b.as_str()),
            _ => a.as_str().map(str::to_lowercase).cmp(&b.as_str().map(str::to_lowercase)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns() {
        assert!(like("ada lovelace", "%love%"));
        assert!(like("ada", "a_a"));
        assert!(!like("ada", "a\\_a"));
        assert!(like("50%", "50\\%"));
        assert!(!like("abc", "%x%"));
    }

}
