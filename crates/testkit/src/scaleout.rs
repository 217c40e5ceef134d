//! The scale-out peers: a real PostgreSQL server and a real `nats-server -js`, named by
//! `CXBRIDGE_TEST_POSTGRES_URL` and `CXBRIDGE_TEST_NATS_URL` (`scripts/setup-scaleout`
//! starts both on loopback and prints the two variables; `scripts/test` does that for you).
//!
//! Unset, the tests that need them say "skipped" — unless `CXBRIDGE_REQUIRE_PEERS=1` (CI),
//! where that is a failure.

use std::sync::atomic::{AtomicU64, Ordering};

fn required(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            let why = format!("{var} is not set: start {what} with `eval \"$(scripts/setup-scaleout)\"`");
            if std::env::var("CXBRIDGE_REQUIRE_PEERS").is_ok_and(|v| v == "1") {
                panic!("CXBRIDGE_REQUIRE_PEERS=1 but {why}");
            }
            eprintln!("skipped: {why}");
            None
        }
    }
}

/// A name no other test of any process uses: `{prefix}_{pid}_{n}_{nanos}`, lower case,
/// letters, digits and `_` only (valid as a database, stream and consumer name).
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or_default();
    format!("{prefix}_{}_{}_{nanos}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)).to_lowercase()
}

/// The NATS server's URL, or `None` (the test is skipped) when there is none.
pub fn nats_url() -> Option<String> {
    required("CXBRIDGE_TEST_NATS_URL", "nats-server -js")
}

/// A database of its own for one test on the PostgreSQL server; dropped with the value.
pub struct TestDatabase {
    /// URL of the new, empty database.
    pub url: String,
    admin_url: String,
    name: String,
}

impl TestDatabase {
    /// Creates a fresh database, or `None` (the test is skipped) when there is no server.
    pub async fn create(purpose: &str) -> Option<TestDatabase> {
        use sqlx::Connection as _;
        let admin_url = required("CXBRIDGE_TEST_POSTGRES_URL", "PostgreSQL")?;
        let name = unique_name(&format!("cxb_{purpose}"));
        let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap_or_else(|e| panic!("cannot connect to {admin_url}: {e}"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        let _ = admin.close().await;
        let url = with_database(&admin_url, &name);
        Some(TestDatabase { url, admin_url, name })
    }
}

/// `admin_url` with its database (path) replaced by `name`.
fn with_database(admin_url: &str, name: &str) -> String {
    let (base, query) = admin_url.split_once('?').map_or((admin_url, None), |(b, q)| (b, Some(q)));
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let base = match base[after_scheme..].find('/') {
        Some(slash) => &base[..after_scheme + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs outside async; a throwaway runtime on its own thread removes the database.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                use sqlx::Connection as _;
                if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).execute(&mut admin).await;
                    let _ = admin.close().await;
                }
            });
        })
        .join();
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        for (given, want) in [
            ("postgres://u:p@127.0.0.1:5432/postgres", "postgres://u:p@127.0.0.1:5432/t1"),
            ("postgres://u:p@127.0.0.1:5432", "postgres://u:p@127.0.0.1:5432/t1"),
            ("postgres://u@h/db?sslmode=disable", "postgres://u@h/t1?sslmode=disable"),
        ] {
            assert_eq!(with_database(given, "t1"), want);
        }
    }
}
