//! What the hub writes into its data directory is private to the user it runs as: the
//! directory is created 0700 and every file 0600 from the start (no chmod after the fact,
//! which left a window in which another user could open a token or the CRM data).

use std::fs::{DirBuilder, OpenOptions};
use std::io;
use std::path::Path;

#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};

/// Creates the data directory (and its parents) with mode 0700. A directory that already
/// exists loses the permissions of other users; its group's are left to the admin.
pub fn private_dir(path: &Path) -> io::Result<()> {
    let mut builder = DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder.create(path)?;
    #[cfg(unix)]
    {
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o007 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o770))?;
            tracing::info!(path = %path.display(), "the data directory was open to other users; it no longer is");
        }
    }
    Ok(())
}

/// Makes sure the SQLite database at `path` exists with mode 0600 before SQLite opens it:
/// SQLite gives its `-wal` and `-shm` files the database file's permissions, so they are
/// private too. An existing database (and its `-wal`/`-shm`) is narrowed to 0600.
pub fn private_database(path: &Path) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path)?;
    #[cfg(unix)]
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = Path::new(&name);
        if file.exists() {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

/// Writes `contents` to a new or emptied file created with mode 0600.
pub fn write_private(path: &Path, contents: &str) -> io::Result<()> {
    use std::io::Write as _;
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path)?;
    // An existing (empty) file keeps its old mode on open; narrow it before writing.
    #[cfg(unix)]
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}
