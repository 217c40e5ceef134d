//! `cxbridge import ENTITY FILE.csv`: load records into the built-in CRM. The header row
//! names the fields; bad rows are reported with their line and skipped, good rows land.

use std::collections::BTreeMap;
use std::io::Read;

use cxbridge_store::{CrmStore, RowError};

pub struct ImportReport {
    pub imported: u64,
    pub errors: Vec<RowError>,
}

const BATCH: usize = 5_000;

/// Imports `reader` into `entity`, calling `progress(rows_done)` after every batch.
pub async fn import_csv<R: Read>(
    store: &dyn CrmStore,
    entity: &str,
    reader: R,
    mut progress: impl FnMut(u64),
) -> Result<ImportReport, cxbridge_store::StoreError> {
    let mut csv = csv::ReaderBuilder::new().flexible(false).trim(csv::Trim::All).from_reader(reader);
    let headers = match csv.headers() {
        Ok(h) => h.clone(),
        Err(e) => return Ok(ImportReport { imported: 0, errors: vec![RowError { line: 1, message: format!("cannot read the header row: {e}") }] }),
    };
    let mut errors = vec![];
    if headers.iter().any(|h| h.is_empty()) {
        errors.push(RowError { line: 1, message: "the header row has an empty field name".into() });
        return Ok(ImportReport { imported: 0, errors });
    }
    let bad_name = headers.iter().find(|h| !h.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
    if let Some(h) = bad_name {
        errors.push(RowError { line: 1, message: format!("field name `{h}`: use letters, digits, `_` or `-`") });
        return Ok(ImportReport { imported: 0, errors });
    }
    let mut batch: Vec<BTreeMap<String, String>> = Vec::with_capacity(BATCH);
    let mut imported = 0;
    for (i, row) in csv.records().enumerate() {
        let line = row.as_ref().ok().and_then(|r| r.position()).map_or(i as u64 + 2, |p| p.line());
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                errors.push(RowError { line, message: e.to_string() });
                continue;
            }
        };
        let fields: BTreeMap<String, String> =
            headers.iter().zip(row.iter()).filter(|(_, v)| !v.is_empty()).map(|(h, v)| (h.to_string(), v.to_string())).collect();
        if fields.is_empty() {
            errors.push(RowError { line, message: "the row is empty".into() });
            continue;
        }
        batch.push(fields);
        if batch.len() >= BATCH {
            imported += store.import_records(entity, std::mem::take(&mut batch)).await?;
            progress(imported);
        }
    }
    if !batch.is_empty() {
        imported += store.import_records(entity, batch).await?;
        progress(imported);
    }
    Ok(ImportReport { imported, errors })
}
