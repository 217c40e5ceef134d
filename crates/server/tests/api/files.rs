//! The data directory and what the hub writes there are private to its user from the start.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use crate::helpers::*;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

#[tokio::test]
async fn a_fresh_data_directory_and_its_files_are_private() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("fresh").join("data");
    let t = spawn_with_server(&format!("data_dir = \"{}\"\n", data.display()), "").await;
    // A write, so SQLite has its -wal and -shm files.
    t.create("contact", serde_json::json!({"name": "Ada", "phone": "+49 30 1234567"})).await;
    assert_eq!(mode(&data), 0o700, "the data directory");
    for name in ["cxbridge.sqlite", "cxbridge.sqlite-wal", "cxbridge.sqlite-shm", "ivr-token", "session-secret"] {
        assert_eq!(mode(&data.join(name)), 0o600, "{name}");
    }
    let mut names: Vec<String> = std::fs::read_dir(&data).expect("list").filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    for name in &names {
        assert_eq!(mode(&data.join(name)) & 0o077, 0, "{name} is readable by others");
    }
}

#[tokio::test]
async fn an_existing_database_open_to_others_is_narrowed() {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(data.join("cxbridge.sqlite"), b"").expect("write");
    std::fs::set_permissions(data.join("cxbridge.sqlite"), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let _t = spawn_with_server(&format!("data_dir = \"{}\"\n", data.display()), "").await;
    assert_eq!(mode(&data) & 0o007, 0, "others can still enter the data directory");
    assert_eq!(mode(&data.join("cxbridge.sqlite")), 0o600);
}
