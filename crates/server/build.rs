//! Embeds every file of `assets/panel/` (the agent panel) into the binary, so `/agent`
//! needs nothing on disk and nothing from the internet.

use std::fmt::Write as _;
use std::path::Path;

const SERVED: &[&str] = &["html", "css", "js", "svg", "png", "json", "woff2"];

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets").join("panel");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().and_then(|e| e.to_str()).is_some_and(|e| SERVED.contains(&e)));
    files.sort();
    let mut out = String::from("/// (file name, contents) of the agent panel.\npub static PANEL_ASSETS: &[(&str, &[u8])] = &[\n");
    for p in &files {
        println!("cargo:rerun-if-changed={}", p.display());
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let _ = writeln!(out, "    ({name:?}, include_bytes!({:?})),", p.display().to_string());
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into())).join("panel_assets.rs");
    if let Err(e) = std::fs::write(&dest, out) {
        panic!("cannot write {}: {e}", dest.display());
    }
}
