//! The contacts CSV that `cxbridge import` reads (the import and scale-out phases) and the
//! names its rows (and the CRM phase's Dataverse contacts) are made of.

use std::io::Write as _;

use anyhow::Context as _;

use crate::numbers;

pub const FIRST: &[&str] = &["Anna", "Ben", "Carla", "David", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemal", "Lena", "Mateo", "Nora", "Omar", "Priya"];
pub const LAST: &[&str] = &["Novak", "Schmidt", "Garcia", "Smith", "Dvorak", "Kim", "Rossi", "Okafor", "Larsen", "Silva", "Chen", "Meyer", "Haddad", "Kowalski", "Brown", "Tanaka"];

/// Writes the contacts CSV (`id,name,phone,mobile`).
pub fn write_csv(path: &std::path::Path, contacts: u64) -> anyhow::Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    writeln!(w, "id,name,phone,mobile")?;
    let step = 250_000;
    for i in 0..contacts {
        let name = format!("{} {} {i}", FIRST[(i % 16) as usize], LAST[((i / 16) % 16) as usize]);
        let phone = numbers::written(numbers::stored_phone(i), i);
        let mobile = if numbers::has_mobile(i) { numbers::written(numbers::mobile_base() + i, i / 10 + 3) } else { String::new() };
        writeln!(w, "C{i:08},{name},{phone},{mobile}")?;
        if (i + 1) % step == 0 {
            println!("  generated {} of {contacts} rows", i + 1);
        }
    }
    w.flush()?;
    Ok(())
}
