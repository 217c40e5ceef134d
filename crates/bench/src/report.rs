//! What the phases print: progress lines, the results table and the targets it shows
//! next to the figures.

use std::io::Write as _;

/// Targets from the issue; the table prints them next to the figures.
pub const TARGET_POP_P99_MS: f64 = 5.0;
pub const TARGET_IDENTIFY_P99_MS: f64 = 1.0;
pub const TARGET_EVENTS_PER_SEC: f64 = 5000.0;
pub const TARGET_RSS_MB: f64 = 300.0;

pub fn say(msg: impl AsRef<str>) {
    println!("{}", msg.as_ref());
    let _ = std::io::stdout().flush();
}

pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

pub struct Row {
    name: String,
    measured: String,
    target: String,
    verdict: String,
}

pub fn row(name: impl Into<String>, measured: impl Into<String>, target: &str, verdict: Option<bool>) -> Row {
    Row {
        name: name.into(),
        measured: measured.into(),
        target: target.into(),
        verdict: match verdict {
            None => String::new(),
            Some(true) => "met".into(),
            Some(false) => "MISSED".into(),
        },
    }
}

pub fn print_table(rows: &[Row]) {
    let cells: Vec<Vec<String>> = rows.iter().map(|r| vec![r.name.clone(), r.measured.clone(), r.target.clone(), r.verdict.clone()]).collect();
    print_grid(&["figure", "measured", "target", "result"], &cells);
}

/// A Markdown table: each column as wide as its widest cell or heading, in bytes (as the
/// tables in docs/BENCHMARKS.md always were; a cell with `→` gets a little more room).
pub fn print_grid(headings: &[&str], rows: &[Vec<String>]) {
    for line in grid_lines(headings, rows) {
        say(line);
    }
}

fn grid_lines(headings: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let widths: Vec<usize> =
        headings.iter().enumerate().map(|(i, h)| rows.iter().filter_map(|r| r.get(i)).map(String::len).max().unwrap_or(0).max(h.len())).collect();
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let parts: Vec<String> = widths.iter().map(|&w| format!(" {:<w$} ", cells.next().unwrap_or(""))).collect();
        format!("|{}|", parts.join("|"))
    };
    let mut out = vec![line(&mut headings.iter().copied())];
    out.push(format!("|{}|", widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("|")));
    for r in rows {
        out.push(line(&mut r.iter().map(String::as_str)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The main table prints as it did before `grid_lines` (widths in bytes, minimum widths
    /// from the headings).
    #[test]
    fn the_main_table_is_unchanged() {
        let rows = [
            row("outbox pending at load end → drained after", "12 → 0.50 s", "0 within 30 s", Some(true)),
            row("pop latency max", "3.0 ms", "", None),
            row("x", "y", "", Some(false)),
        ];
        let (w0, w1, w2) = (
            rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(6),
            rows.iter().map(|r| r.measured.len()).max().unwrap_or(0).max(8),
            rows.iter().map(|r| r.target.len()).max().unwrap_or(0).max(6),
        );
        let mut before = vec![
            format!("| {:<w0$} | {:<w1$} | {:<w2$} | {:<6} |", "figure", "measured", "target", "result"),
            format!("|{}|{}|{}|{}|", "-".repeat(w0 + 2), "-".repeat(w1 + 2), "-".repeat(w2 + 2), "-".repeat(8)),
        ];
        before.extend(rows.iter().map(|r| format!("| {:<w0$} | {:<w1$} | {:<w2$} | {:<6} |", r.name, r.measured, r.target, r.verdict)));
        let cells: Vec<Vec<String>> = rows.iter().map(|r| vec![r.name.clone(), r.measured.clone(), r.target.clone(), r.verdict.clone()]).collect();
        assert_eq!(grid_lines(&["figure", "measured", "target", "result"], &cells), before);
    }
}
