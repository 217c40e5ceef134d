//! `cxbridge import ENTITY FILE.csv`: load records into the built-in CRM. The header row
//! names the fields and must name fields the entity has (a misspelled column would
//! otherwise be stored where nothing reads it); bad rows are reported with their line and
//! skipped, good rows land.
//!
//! A row without an `id` gets one derived from its key fields (by default the entity's
//! title, phone and e-mail fields), so running the same file again updates the records it
//! created instead of adding them a second time.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};

use cxbridge_domain::crm::EntitySpec;
use cxbridge_domain::phone::PhoneNormalizer;
use cxbridge_store::{CrmStore, RowError, StoreError};
use sha2::{Digest, Sha256};

use crate::config::Config;

pub struct ImportReport {
    pub imported: u64,
    pub errors: Vec<RowError>,
    /// The field separator the file was read with.
    pub delimiter: Delimiter,
    /// Whether the separator was detected from the header row rather than given.
    pub detected: bool,
}

/// How a file separates its fields. Spreadsheets in locales with a decimal comma (German,
/// French, …) export semicolon-separated "CSV".
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Delimiter {
    Comma,
    Semicolon,
    Tab,
    Pipe,
}

impl Delimiter {
    const ALL: [Delimiter; 4] = [Delimiter::Comma, Delimiter::Semicolon, Delimiter::Tab, Delimiter::Pipe];

    fn byte(self) -> u8 {
        match self {
            Delimiter::Comma => b',',
            Delimiter::Semicolon => b';',
            Delimiter::Tab => b'\t',
            Delimiter::Pipe => b'|',
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Delimiter::Comma => "comma",
            Delimiter::Semicolon => "semicolon",
            Delimiter::Tab => "tab",
            Delimiter::Pipe => "pipe",
        }
    }

    /// The separator the header row uses most, outside quotes; a comma when none appears.
    fn detect(header: &[u8]) -> Delimiter {
        let mut counts = [0usize; 4];
        let mut quoted = false;
        for &b in header {
            match b {
                b'"' => quoted = !quoted,
                b'\n' | b'\r' if !quoted => break,
                _ if !quoted => {
                    if let Some(i) = Self::ALL.iter().position(|d| d.byte() == b) {
                        counts[i] += 1;
                    }
                }
                _ => {}
            }
        }
        // Ties go to the earlier (more common) separator.
        let (best, n) = counts.iter().enumerate().fold((0, 0), |best, (i, &n)| if n > best.1 { (i, n) } else { best });
        if n == 0 { Delimiter::Comma } else { Self::ALL[best] }
    }
}

/// What the command line chose.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// `None`: detected from the header row.
    pub delimiter: Option<Delimiter>,
    /// Fields that recognise a row without `id` on a re-run; empty: the entity's title,
    /// phone and e-mail fields.
    pub key: Vec<String>,
    /// Fields to accept beside the ones the configuration names for the entity.
    pub extra_fields: Vec<String>,
}

/// Why an import cannot start at all.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "`cxbridge import` loads records into the built-in CRM, but this configuration's CRM is `{0}` ([crm] provider): import the records into {0} itself; the hub reads them from there"
    )]
    NotBuiltIn(String),
    #[error("the built-in CRM has no entity `{entity}`; it has {known} (add others under [[crm.entities]])")]
    UnknownEntity { entity: String, known: String },
    #[error("--key {field}: `{entity}` has no field `{field}`; its fields are {known}")]
    UnknownKey { entity: String, field: String, known: String },
    #[error("[phone] default_region: {0}")]
    Region(String),
}

/// One import: the entity's spec and the fields it accepts, checked against the configuration.
pub struct Importer {
    spec: EntitySpec,
    /// Every field the entity has, by the name the configuration gives it.
    fields: BTreeSet<String>,
    key: Vec<String>,
    delimiter: Option<Delimiter>,
    normalizer: PhoneNormalizer,
}

/// Most rows reported one by one; the rest are counted.
pub const ERRORS_SHOWN: usize = 50;
const BATCH: usize = 50_000;

impl Importer {
    pub fn new(config: &Config, entity: &str, options: ImportOptions) -> Result<Self, SetupError> {
        if config.crm.provider != cxbridge_connectors::sinks::crm::Provider::Builtin {
            return Err(SetupError::NotBuiltIn(config.crm.provider.to_string()));
        }
        let entities = config.entities();
        let Some(spec) = entities.iter().find(|e| e.name == entity).cloned() else {
            let known = entities.iter().map(|e| format!("`{}`", e.name)).collect::<Vec<_>>().join(", ");
            return Err(SetupError::UnknownEntity { entity: entity.to_string(), known });
        };
        let normalizer =
            PhoneNormalizer::new(Some(&config.phone.default_region), &config.phone.own_numbers).map_err(|e| SetupError::Region(e.to_string()))?;
        let mut fields: BTreeSet<String> = BTreeSet::from(["id".to_string(), spec.title_field.clone()]);
        fields.extend(spec.phone_fields.iter().cloned());
        fields.extend(spec.email_fields.iter().cloned());
        fields.extend(spec.display_fields.iter().map(|d| d.field.clone()));
        fields.extend(spec.relations.iter().map(|r| r.field.clone()));
        fields.extend(spec.sensitive.iter().cloned());
        // What the IVR reads and what workflows write are fields of the entity too.
        fields.insert(config.ivr.owner_field.clone().unwrap_or_else(|| "owner".into()));
        for w in config.workflows.iter().filter(|w| w.entity == spec.name) {
            fields.extend(w.fields.keys().cloned());
            fields.extend(w.required.iter().cloned());
        }
        fields.extend(options.extra_fields.iter().map(|f| f.trim().to_string()).filter(|f| !f.is_empty()));
        for k in &options.key {
            if !fields.contains(k) || k == "id" {
                return Err(SetupError::UnknownKey { entity: spec.name.clone(), field: k.clone(), known: list(&fields) });
            }
        }
        Ok(Importer { spec, fields, key: options.key, delimiter: options.delimiter, normalizer })
    }

    /// Imports `reader`, calling `progress(rows_done)` after every batch.
    pub async fn run<R: Read>(&self, store: &dyn CrmStore, reader: R, mut progress: impl FnMut(u64)) -> Result<ImportReport, StoreError> {
        let mut reader = BufReader::with_capacity(64 * 1024, reader);
        let head = reader.fill_buf().map(<[u8]>::to_vec).unwrap_or_default();
        let head = head.strip_prefix("\u{feff}".as_bytes()).unwrap_or(&head);
        let (delimiter, detected) = match self.delimiter {
            Some(d) => (d, false),
            None => (Delimiter::detect(head), true),
        };
        let mut report = ImportReport { imported: 0, errors: vec![], delimiter, detected };
        let mut csv = csv::ReaderBuilder::new().delimiter(delimiter.byte()).flexible(false).trim(csv::Trim::All).from_reader(reader);
        let header = match csv.headers() {
            Ok(h) => h.iter().map(|h| h.trim_start_matches('\u{feff}').to_string()).collect::<Vec<_>>(),
            Err(e) => {
                report.errors.push(RowError { line: 1, message: format!("cannot read the header row: {e}") });
                return Ok(report);
            }
        };
        let columns = match self.columns(&header) {
            Ok(c) => c,
            Err(message) => {
                report.errors.push(RowError { line: 1, message });
                return Ok(report);
            }
        };
        let mut batch: Vec<BTreeMap<String, String>> = Vec::with_capacity(BATCH);
        // The previous batch, handed to the store and not yet confirmed.
        let mut writing = None;
        for (i, row) in csv.records().enumerate() {
            let line = row.as_ref().ok().and_then(|r| r.position()).map_or(i as u64 + 2, |p| p.line());
            let row = match row {
                Ok(r) => r,
                Err(e) => {
                    let message = match e.kind() {
                        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
                            format!("the row has {len} fields, the header row {expected_len}")
                        }
                        csv::ErrorKind::Utf8 { .. } => "the row is not UTF-8 text; save the file as \"CSV UTF-8\"".to_string(),
                        _ => e.to_string(),
                    };
                    report.errors.push(RowError { line, message });
                    continue;
                }
            };
            let mut fields: BTreeMap<String, String> =
                columns.iter().zip(row.iter()).filter(|(_, v)| !v.is_empty()).map(|(h, v)| (h.to_string(), v.to_string())).collect();
            if fields.is_empty() {
                report.errors.push(RowError { line, message: "the row is empty".into() });
                continue;
            }
            if !fields.contains_key("id") {
                match self.derived_id(&fields) {
                    Some(id) => {
                        fields.insert("id".into(), id);
                    }
                    None => {
                        let message = format!("the row has no `id` and none of {} to recognise it by on a re-run", list(&self.key_fields(&columns)));
                        report.errors.push(RowError { line, message });
                        continue;
                    }
                }
            }
            batch.push(fields);
            if batch.len() >= BATCH {
                if let Some(write) = writing.take() {
                    report.imported += write.await?;
                    progress(report.imported);
                }
                // Started now and awaited only when the next batch is ready: the store writes
                // one batch while this thread parses the next.
                let mut write = store.import_records(&self.spec.name, std::mem::take(&mut batch));
                match futures::poll!(&mut write) {
                    std::task::Poll::Ready(written) => {
                        report.imported += written?;
                        progress(report.imported);
                    }
                    std::task::Poll::Pending => writing = Some(write),
                }
            }
        }
        if let Some(write) = writing.take() {
            report.imported += write.await?;
            progress(report.imported);
        }
        if !batch.is_empty() {
            report.imported += store.import_records(&self.spec.name, batch).await?;
            progress(report.imported);
        }
        Ok(report)
    }

    /// The header's columns by the entity's field names, or what is wrong with it.
    fn columns(&self, header: &[String]) -> Result<Vec<String>, String> {
        let mut columns = Vec::with_capacity(header.len());
        for h in header {
            if h.is_empty() {
                return Err("the header row has an empty field name".into());
            }
            if !h.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return Err(format!("field name `{h}`: use letters, digits, `_` or `-`"));
            }
            // Spreadsheet headers are often capitalised (`Phone`): the field is the same.
            let Some(field) = self.fields.iter().find(|f| f.eq_ignore_ascii_case(h)) else {
                let hint = self.closest(h).map(|f| format!("did you mean `{f}`? ")).unwrap_or_default();
                return Err(format!(
                    "`{}` has no field `{h}`; {hint}its fields are {} (to store another field, pass --field {h})",
                    self.spec.name,
                    list(&self.fields)
                ));
            };
            if columns.contains(field) {
                return Err(format!("the header row names `{field}` twice"));
            }
            columns.push(field.clone());
        }
        if !columns.iter().any(|c| c == "id") && self.key_fields(&columns).is_empty() {
            return Err(format!(
                "the file has no `id` column and none of {}: a re-run would add every row again; add an `id` column or pass --key FIELD",
                list(&self.key_fields(&self.fields.iter().cloned().collect::<Vec<_>>()))
            ));
        }
        Ok(columns)
    }

    /// The entity's field most like a misspelled column name.
    fn closest(&self, name: &str) -> Option<&String> {
        let name = name.to_ascii_lowercase();
        self.fields.iter().map(|f| (strsim::levenshtein(&name, f), f)).filter(|(d, f)| *d <= 2.max(f.len() / 3)).min_by_key(|(d, _)| *d).map(|(_, f)| f)
    }

    /// The key fields among `columns`, in key order.
    fn key_fields(&self, columns: &[String]) -> Vec<String> {
        let default: Vec<String> =
            std::iter::once(self.spec.title_field.clone()).chain(self.spec.phone_fields.iter().cloned()).chain(self.spec.email_fields.iter().cloned()).collect();
        let key = if self.key.is_empty() { &default } else { &self.key };
        key.iter().filter(|k| columns.contains(k)).cloned().collect()
    }

    /// A stable id from the row's key fields, written the way identification compares them
    /// (`030 1234567` and `+49 30 1234567` are one key), or `None` when all are empty.
    fn derived_id(&self, fields: &BTreeMap<String, String>) -> Option<String> {
        let keys: Vec<String> = self.key_fields(&fields.keys().cloned().collect::<Vec<_>>());
        if keys.is_empty() {
            return None;
        }
        let mut hash = Sha256::new();
        hash.update(self.spec.name.as_bytes());
        for k in &keys {
            let value = fields.get(k).map(String::as_str).unwrap_or_default();
            let value = if self.spec.phone_fields.contains(k) {
                self.normalizer.index_key(value).unwrap_or_else(|| value.to_string())
            } else {
                value.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
            };
            hash.update([0x1f]);
            hash.update(k.as_bytes());
            hash.update([0x1e]);
            hash.update(value.as_bytes());
        }
        let digest = hash.finalize();
        Some(format!("csv-{}", digest.iter().take(12).map(|b| format!("{b:02x}")).collect::<String>()))
    }
}

fn list<'a>(fields: impl IntoIterator<Item = &'a String>) -> String {
    fields.into_iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_separator_is_the_one_the_header_uses() {
        for (header, want) in [
            ("id,name,phone\n1,a;b,c", Delimiter::Comma),
            ("id;name;phone\n1;\"a,b\";c", Delimiter::Semicolon),
            ("\"name;x\",phone\n", Delimiter::Comma),
            ("\"a,b\";\"c,d\";e\n", Delimiter::Semicolon),
            ("id\tname\tphone\n", Delimiter::Tab),
            ("id|name\n", Delimiter::Pipe),
            ("name\n", Delimiter::Comma),
            ("", Delimiter::Comma),
        ] {
            assert_eq!(Delimiter::detect(header.as_bytes()), want, "{header:?}");
        }
    }
}
