//! OData query evaluation: `$select` checked and projected (with the annotations asked for),
//! `$orderby`, `$top`, and `$filter` parsed and matched the way Dataverse reads it.

use serde_json::{Map, Value, json};

use super::tables::{Db, Row, Table, Type};
use super::wire::{Answer, Prefer, Query, Resp, is_guid, is_name, syntax};

pub(super) const MAX_PAGE: usize = 5000;
const FORMATTED_VALUE: &str = "OData.Community.Display.V1.FormattedValue";
pub(super) const LOOKUP_LOGICAL_NAME: &str = "Microsoft.Dynamics.CRM.lookuplogicalname";

pub(super) fn checked_select(t: &Table, select: Option<&[String]>) -> Result<Option<Vec<String>>, Resp> {
    let Some(cols) = select else { return Ok(None) };
    for c in cols {
        if !t.columns.contains_key(c) {
            return Err(unknown_property(t, c));
        }
    }
    Ok(Some(cols.to_vec()))
}

fn unknown_property(t: &Table, name: &str) -> Resp {
    syntax(format!("Could not find a property named '{name}' on type 'Microsoft.Dynamics.CRM.{}'.", t.logical))
}

/// A row as the Web API shows it: the selected columns (all when no `$select`) plus the
/// primary key, an etag, and the annotations `Prefer` asked for.
pub(super) fn project(db: &Db, t: &Table, row: &Row, select: Option<&[String]>, pref: &Prefer) -> Value {
    let mut out = Map::new();
    out.insert("@odata.etag".into(), Value::String(format!("W/\"{}\"", row.version)));
    let all: Vec<String>;
    let cols: &[String] = match select {
        Some(s) => s,
        None => {
            all = t.columns.keys().cloned().collect();
            &all
        }
    };
    let mut names: Vec<&String> = cols.iter().collect();
    if !names.contains(&&t.id_field) {
        names.push(&t.id_field);
    }
    for c in names {
        let v = row.fields.get(c).cloned().unwrap_or(Value::Null);
        if let (Some(id), Some(target)) = (v.as_str(), row.lookup_targets.get(c)) {
            if pref.wants(FORMATTED_VALUE)
                && let Some(tt) = db.by_logical(target)
                && let Some(name) = tt.rows.get(id).and_then(|r| r.fields.get(&tt.primary_name)).and_then(Value::as_str)
            {
                out.insert(format!("{c}@{FORMATTED_VALUE}"), Value::String(name.to_string()));
            }
            if pref.wants(LOOKUP_LOGICAL_NAME) {
                out.insert(format!("{c}@{LOOKUP_LOGICAL_NAME}"), Value::String(target.clone()));
            }
        }
        out.insert(c.clone(), v);
    }
    Value::Object(out)
}

pub(super) fn query_table(db: &Db, api_url: &str, t: &Table, q: &Query, pref: &Prefer) -> Answer {
    let select = checked_select(t, q.select.as_deref())?;
    let filter = q.filter.as_deref().map(|f| Filter::parse(f, t)).transpose()?;
    let order = q.orderby.as_deref().map(|o| parse_orderby(o, t)).transpose()?;
    let mut rows: Vec<&Row> = t.rows.values().filter(|r| filter.as_ref().is_none_or(|f| f.matches(r))).collect();
    rows.sort_by_key(|r| r.seq);
    if let Some(order) = &order {
        rows.sort_by(|a, b| {
            for (field, desc) in order {
                let o = compare(a.fields.get(field), b.fields.get(field));
                let o = if *desc { o.reverse() } else { o };
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
            }
            let o = a.seq.cmp(&b.seq);
            if order.first().is_some_and(|(_, desc)| *desc) { o.reverse() } else { o }
        });
    }
    let top = q.top.unwrap_or(MAX_PAGE).min(MAX_PAGE);
    let value: Vec<Value> = rows.into_iter().take(top).map(|r| project(db, t, r, select.as_deref(), pref)).collect();
    let shown = q.select.as_ref().map(|s| s.join(",")).unwrap_or_else(|| "*".into());
    Ok(Resp::json(200, json!({"@odata.context": format!("{api_url}/$metadata#{}({shown})", t.set), "value": value})))
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match (a.filter(|v| !v.is_null()), b.filter(|v| !v.is_null())) {
        (None, None) => Equal,
        (None, Some(_)) => Less,
        (Some(_), None) => Greater,
        (Some(a), Some(b)) => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Equal),
            _ => a.as_str().unwrap_or_default().to_lowercase().cmp(&b.as_str().unwrap_or_default().to_lowercase()),
        },
    }
}

fn parse_orderby(raw: &str, t: &Table) -> Result<Vec<(String, bool)>, Resp> {
    raw.split(',')
        .map(|item| {
            let mut words = item.split_whitespace();
            let field = words.next().ok_or_else(|| syntax(format!("Syntax error in $orderby '{raw}'.")))?;
            if !t.columns.contains_key(field) {
                return Err(unknown_property(t, field));
            }
            let desc = match words.next().map(str::to_ascii_lowercase).as_deref() {
                None | Some("asc") => false,
                Some("desc") => true,
                Some(other) => return Err(syntax(format!("Syntax error in $orderby: '{other}'."))),
            };
            Ok((field.to_string(), desc))
        })
        .collect()
}

/// A parsed `$filter`.
#[derive(Debug)]
enum Filter {
    Or(Vec<Filter>),
    And(Vec<Filter>),
    Not(Box<Filter>),
    Compare { field: String, op: Op, value: Lit },
    Text { func: TextFn, field: String, value: String },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, Copy)]
enum TextFn {
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug, Clone)]
enum Lit {
    Str(String),
    Guid(String),
    Num(f64),
    Bool(bool),
    DateTime(String),
    Null,
}

impl Lit {
    pub(super) fn edm(&self) -> &'static str {
        match self {
            Lit::Str(_) => "Edm.String",
            Lit::Guid(_) => "Edm.Guid",
            Lit::Num(_) => "Edm.Int32",
            Lit::Bool(_) => "Edm.Boolean",
            Lit::DateTime(_) => "Edm.DateTimeOffset",
            Lit::Null => "null",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Open,
    Close,
    Comma,
    Str(String),
    Word(String),
}

struct Parser<'a> {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    pub(super) source: &'a str,
    pub(super) table: &'a Table,
}

impl Filter {
    pub(super) fn parse(source: &str, table: &Table) -> Result<Filter, Resp> {
        let toks = tokenize(source)?;
        let mut p = Parser { toks, pos: 0, source, table };
        let f = p.or()?;
        if p.pos < p.toks.len() {
            return Err(p.error());
        }
        Ok(f)
    }

    pub(super) fn matches(&self, row: &Row) -> bool {
        match self {
            Filter::Or(fs) => fs.iter().any(|f| f.matches(row)),
            Filter::And(fs) => fs.iter().all(|f| f.matches(row)),
            Filter::Not(f) => !f.matches(row),
            Filter::Text { func, field, value } => {
                let Some(s) = row.fields.get(field).and_then(Value::as_str) else { return false };
                let (s, v) = (s.to_lowercase(), value.to_lowercase());
                match func {
                    TextFn::Contains => s.contains(&v),
                    TextFn::StartsWith => s.starts_with(&v),
                    TextFn::EndsWith => s.ends_with(&v),
                }
            }
            Filter::Compare { field, op, value } => {
                let v = row.fields.get(field).filter(|v| !v.is_null());
                let ord = match (value, v) {
                    (Lit::Null, None) => Some(std::cmp::Ordering::Equal),
                    (Lit::Null, Some(_)) | (_, None) => None,
                    (Lit::Str(s) | Lit::Guid(s) | Lit::DateTime(s), Some(v)) => v.as_str().map(|x| x.to_lowercase().cmp(&s.to_lowercase())),
                    (Lit::Num(n), Some(v)) => v.as_f64().and_then(|x| x.partial_cmp(n)),
                    (Lit::Bool(b), Some(v)) => v.as_bool().map(|x| x.cmp(b)),
                };
                match (op, ord) {
                    (Op::Ne, None) => true,
                    (_, None) => false,
                    (Op::Eq, Some(o)) => o.is_eq(),
                    (Op::Ne, Some(o)) => o.is_ne(),
                    (Op::Gt, Some(o)) => o.is_gt(),
                    (Op::Ge, Some(o)) => o.is_ge(),
                    (Op::Lt, Some(o)) => o.is_lt(),
                    (Op::Le, Some(o)) => o.is_le(),
                }
            }
        }
    }
}

fn tokenize(source: &str) -> Result<Vec<(usize, Tok)>, Resp> {
    let chars: Vec<(usize, char)> = source.char_indices().collect();
    let mut out = vec![];
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push((at, Tok::Open));
                i += 1;
            }
            ')' => {
                out.push((at, Tok::Close));
                i += 1;
            }
            ',' => {
                out.push((at, Tok::Comma));
                i += 1;
            }
            '\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    let Some(&(_, c)) = chars.get(i) else {
                        return Err(syntax(format!("Syntax error: unterminated string literal at position {at} in '{source}'.")));
                    };
                    if c == '\'' {
                        if chars.get(i + 1).map(|(_, c)| *c) == Some('\'') {
                            s.push('\'');
                            i += 2;
                            continue;
                        }
                        i += 1;
                        break;
                    }
                    s.push(c);
                    i += 1;
                }
                out.push((at, Tok::Str(s)));
            }
            _ => {
                let mut s = String::new();
                while let Some(&(_, c)) = chars.get(i) {
                    if c.is_whitespace() || matches!(c, '(' | ')' | ',' | '\'') {
                        break;
                    }
                    s.push(c);
                    i += 1;
                }
                out.push((at, Tok::Word(s)));
            }
        }
    }
    Ok(out)
}

impl Parser<'_> {
    pub(super) fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }

    pub(super) fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).map(|(_, t)| t.clone());
        self.pos += 1;
        t
    }

    pub(super) fn error(&self) -> Resp {
        let at = self.toks.get(self.pos).map_or(self.source.len(), |(at, _)| *at);
        syntax(format!("Syntax error at position {at} in '{}'.", self.source))
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w == word)
    }

    pub(super) fn or(&mut self) -> Result<Filter, Resp> {
        let mut items = vec![self.and()?];
        while self.keyword("or") {
            self.pos += 1;
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Filter::Or(items) })
    }

    pub(super) fn and(&mut self) -> Result<Filter, Resp> {
        let mut items = vec![self.unary()?];
        while self.keyword("and") {
            self.pos += 1;
            items.push(self.unary()?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Filter::And(items) })
    }

    fn unary(&mut self) -> Result<Filter, Resp> {
        if self.keyword("not") {
            self.pos += 1;
            return Ok(Filter::Not(Box::new(self.unary()?)));
        }
        if self.peek() == Some(&Tok::Open) {
            self.pos += 1;
            let inner = self.or()?;
            if self.next() != Some(Tok::Close) {
                self.pos -= 1;
                return Err(self.error());
            }
            return Ok(inner);
        }
        let Some(Tok::Word(word)) = self.next() else {
            self.pos -= 1;
            return Err(self.error());
        };
        let func = match word.as_str() {
            "contains" => Some(TextFn::Contains),
            "startswith" => Some(TextFn::StartsWith),
            "endswith" => Some(TextFn::EndsWith),
            _ => None,
        };
        if let Some(func) = func
            && self.peek() == Some(&Tok::Open)
        {
            self.pos += 1;
            let field = self.field()?;
            if self.next() != Some(Tok::Comma) {
                self.pos -= 1;
                return Err(self.error());
            }
            let Some(Tok::Str(value)) = self.next() else {
                self.pos -= 1;
                return Err(self.error());
            };
            if self.next() != Some(Tok::Close) {
                self.pos -= 1;
                return Err(self.error());
            }
            let ty = self.table.columns.get(&field).map(|c| c.ty);
            if !matches!(ty, Some(Type::Text(_))) {
                return Err(syntax(format!("The function '{word}' needs a string property; '{field}' is {}.", ty.map_or("unknown", Type::edm))));
            }
            return Ok(Filter::Text { func, field, value });
        }
        self.pos -= 1;
        let field = self.field()?;
        let op = match self.next() {
            Some(Tok::Word(w)) => match w.as_str() {
                "eq" => Op::Eq,
                "ne" => Op::Ne,
                "gt" => Op::Gt,
                "ge" => Op::Ge,
                "lt" => Op::Lt,
                "le" => Op::Le,
                _ => {
                    self.pos -= 1;
                    return Err(self.error());
                }
            },
            _ => {
                self.pos -= 1;
                return Err(self.error());
            }
        };
        let value = match self.next() {
            Some(Tok::Str(s)) => Lit::Str(s),
            Some(Tok::Word(w)) => match w.as_str() {
                "null" => Lit::Null,
                "true" => Lit::Bool(true),
                "false" => Lit::Bool(false),
                w if is_guid(w) => Lit::Guid(w.to_string()),
                w if w.parse::<f64>().is_ok() => Lit::Num(w.parse().unwrap_or_default()),
                w if w.parse::<jiff::Timestamp>().is_ok() || jiff::civil::Date::strptime("%Y-%m-%d", w).is_ok() => Lit::DateTime(w.to_string()),
                _ => {
                    self.pos -= 1;
                    return Err(self.error());
                }
            },
            _ => {
                self.pos -= 1;
                return Err(self.error());
            }
        };
        let ty = self.table.columns.get(&field).map(|c| c.ty).unwrap_or(Type::Text(0));
        let fits = matches!(
            (ty, &value),
            (_, Lit::Null) | (Type::Text(_), Lit::Str(_)) | (Type::Guid, Lit::Guid(_)) | (Type::Int, Lit::Num(_)) | (Type::Bool, Lit::Bool(_)) | (Type::DateTime, Lit::DateTime(_))
        );
        if !fits {
            let kind = match op {
                Op::Eq => "Equal",
                Op::Ne => "NotEqual",
                Op::Gt => "GreaterThan",
                Op::Ge => "GreaterThanOrEqual",
                Op::Lt => "LessThan",
                Op::Le => "LessThanOrEqual",
            };
            return Err(syntax(format!("A binary operator with incompatible types was detected. Found operand types '{}' and '{}' for operator kind '{kind}'.", ty.edm(), value.edm())));
        }
        Ok(Filter::Compare { field, op, value })
    }

    fn field(&mut self) -> Result<String, Resp> {
        match self.next() {
            Some(Tok::Word(w)) if is_name(&w) => {
                if !self.table.columns.contains_key(&w) {
                    return Err(unknown_property(self.table, &w));
                }
                Ok(w)
            }
            _ => {
                self.pos -= 1;
                Err(self.error())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use super::super::tables::Db;

    fn contacts() -> Table {
        Db::standard().table("contacts").clone()
    }

    #[test]
    fn filters_parse_like_dataverse_reads_them() {
        let t = contacts();
        assert!(Filter::parse("(telephone1 eq '+1 415' or mobilephone eq 'O''Brien') and contains(fullname,'x')", &t).is_ok());
        assert!(Filter::parse("_parentcustomerid_value eq 6f9619ff-8b86-d011-b42d-00c04fc964ff", &t).is_ok());
        assert!(Filter::parse("not (statecode eq 1)", &t).is_ok());
        let err = |f: &str| Filter::parse(f, &t).expect_err(f).body;
        assert!(err("nosuch eq 'x'").contains("Could not find a property named 'nosuch' on type 'Microsoft.Dynamics.CRM.contact'"));
        assert!(err("_parentcustomerid_value eq 'abc'").contains("incompatible types"));
        assert!(err("telephone1 eq").contains("Syntax error"));
        assert!(err("(telephone1 eq 'x'").contains("Syntax error"));
        assert!(err("telephone1 eq 'x").contains("unterminated"));
    }

}
