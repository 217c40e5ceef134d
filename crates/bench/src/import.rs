//! Phase 0: generate the contacts CSV and import it into the built-in CRM with
//! `cxbridge import contact`, before the server starts.

use std::path::Path;
use std::time::Instant;

use crate::contacts::write_csv;
use crate::options::Args;
use crate::report::{Row, row, say};
use crate::server;

/// Imports `args.contacts` contacts into the data directory `data` (the CSV at `csv` is
/// removed afterwards) and records how long that took.
pub async fn phase(args: &Args, data: &Path, csv: &Path, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    // Phase 0: contacts.
    say(format!("[setup] generating {} contacts into {}", args.contacts, csv.display()));
    let t = Instant::now();
    {
        let (csv, n) = (csv.to_path_buf(), args.contacts);
        tokio::task::spawn_blocking(move || write_csv(&csv, n)).await??;
    }
    say(format!("[setup] generated in {:.1} s; importing with `cxbridge import contact`", t.elapsed().as_secs_f64()));
    let import_took = server::import(&args.cxbridge, args.server_config.as_deref(), data, csv).await?;
    let import_rate = args.contacts as f64 / import_took.as_secs_f64().max(0.001);
    say(format!("[setup] import took {:.1} s ({import_rate:.0} contacts/s)", import_took.as_secs_f64()));
    let _ = std::fs::remove_file(csv);
    rows.push(row(
        format!("import {} contacts", args.contacts),
        format!("{:.1} s ({:.0}/s)", import_took.as_secs_f64(), args.contacts as f64 / import_took.as_secs_f64().max(0.001)),
        "",
        None,
    ));
    Ok(())
}
