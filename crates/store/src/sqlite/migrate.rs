//! The schema migrations of the SQLite file, run on open.
//!
//! They are recorded in `_sqlx_migrations`, the table (and the checksums: SHA-384 of each
//! file) of the migration runner earlier versions used, so a database made by any version
//! opens here and one made here still opens in an earlier version.

use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha384};

use crate::{Result, StoreError};

/// Every migration, in order: version, description, SQL.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial", include_str!("../../migrations/sqlite/0001_initial.sql")),
    (2, "crm index sync", include_str!("../../migrations/sqlite/0002_crm_index_sync.sql")),
    (3, "agent sign outs", include_str!("../../migrations/sqlite/0003_agent_sign_outs.sql")),
    (4, "ivr verifications", include_str!("../../migrations/sqlite/0004_ivr_verifications.sql")),
    (5, "health and retention", include_str!("../../migrations/sqlite/0005_health_and_retention.sql")),
    (6, "ivr verification records", include_str!("../../migrations/sqlite/0006_ivr_verification_records.sql")),
    (7, "store meta", include_str!("../../migrations/sqlite/0007_store_meta.sql")),
];

/// Applies every migration the database has not had yet, each in its own transaction.
pub(crate) fn run(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
             version BIGINT PRIMARY KEY,
             description TEXT NOT NULL,
             installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
             success BOOLEAN NOT NULL,
             checksum BLOB NOT NULL,
             execution_time BIGINT NOT NULL
         )",
    )?;
    if let Some(version) = conn.query_row("SELECT version FROM _sqlx_migrations WHERE NOT success ORDER BY version LIMIT 1", [], |r| r.get::<_, i64>(0)).optional()? {
        return Err(StoreError::Migration(format!(
            "migration {version} failed half-way in an earlier run; restore the database from a backup"
        )));
    }
    for (version, description, sql) in MIGRATIONS {
        let applied: Option<Vec<u8>> = conn.query_row("SELECT checksum FROM _sqlx_migrations WHERE version = ?1", [version], |r| r.get(0)).optional()?;
        let checksum = Sha384::digest(sql.as_bytes()).to_vec();
        if let Some(stored) = applied {
            // Applied already. A different checksum means the file changed after it ran
            // here: worth a warning, never worth refusing to open a working database.
            if stored != checksum {
                tracing::warn!(version, description, "migration differs from the one this database was built with");
            }
            continue;
        }
        let started = std::time::Instant::now();
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let applied = conn.execute_batch(sql).and_then(|()| {
            conn.execute(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (?1, ?2, TRUE, ?3, ?4)",
                params![version, description, checksum, i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX)],
            )
        });
        match applied {
            Ok(_) => conn.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(StoreError::Migration(format!("migration {version} ({description}): {e}")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// A migration file added to the folder but not to [`super::MIGRATIONS`] would never run.
    #[test]
    fn every_migration_file_is_listed() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .expect("migrations folder")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let versions: Vec<i64> = files.iter().filter_map(|f| f.split('_').next()?.parse().ok()).collect();
        let listed: Vec<i64> = super::MIGRATIONS.iter().map(|(v, _, _)| *v).collect();
        assert_eq!(versions, listed, "migrations/sqlite holds {files:?}");
    }
}
