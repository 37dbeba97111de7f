//! A throwaway PostgreSQL database per test, on the server `FLEET_TEST_PG_URL` names
//! (default `postgres://postgres@127.0.0.1:5432/postgres`, trust auth): created with a unique
//! name, dropped (connections and all) when the guard goes.

use std::sync::atomic::{AtomicU64, Ordering};

/// The variable naming the test server (an admin database on it: new ones are created there).
pub const URL_VAR: &str = "FLEET_TEST_PG_URL";
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A fresh database; dropped with this.
pub struct TestDb {
    admin: String,
    name: String,
    url: String,
}

impl TestDb {
    /// Creates a database with a unique name; panics with the reason when the server does
    /// not answer (the tests need it: `.ci/run` starts one).
    pub fn create() -> TestDb {
        static N: AtomicU64 = AtomicU64::new(0);
        let admin = std::env::var(URL_VAR).unwrap_or_else(|_| DEFAULT_URL.to_string());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "fleet_t_{}_{}_{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        admin_run(&admin, &format!("CREATE DATABASE {name}"));
        let url = match admin.rfind('/') {
            Some(i) if i > admin.find("://").map_or(0, |s| s + 2) => {
                let (base, tail) = admin.split_at(i);
                let query = tail.find('?').map(|q| &tail[q..]).unwrap_or("");
                format!("{base}/{name}{query}")
            }
            _ => format!("{admin}/{name}"),
        };
        TestDb { admin, name, url }
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

fn admin_run(admin: &str, sql: &str) {
    let admin = admin.to_string();
    let sql = sql.to_string();
    // Its own thread: the client's runtime may not start inside a test's Tokio runtime.
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&admin, postgres::NoTls)
            .unwrap_or_else(|e| panic!("PostgreSQL for tests at {admin} ({URL_VAR}): {e}"));
        c.batch_execute(&sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    })
    .join()
    .unwrap();
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let admin = self.admin.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(mut c) = postgres::Client::connect(&admin, postgres::NoTls) {
                let _ = c.batch_execute(&sql);
            }
        })
        .join();
    }
}
