//! Helpers for backend tests that need a server.
//!
//! A test reads its server's URL from the environment (`scripts/test-all` sets
//! `HIVE_TEST_POSTGRES_URL` and `HIVE_TEST_REDIS_URL`). Without it the test says
//! so loudly on stderr and returns; under `CI=true` it fails instead, so a
//! missing server can never pass CI quietly.

/// The URL in environment variable `var`, or `None` (after a loud message) when
/// it is unset outside CI.
///
/// # Panics
///
/// When `var` is unset and `CI` is `true` or `1`: a backend test never skips on CI.
pub fn server_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(
                !ci,
                "{var} is not set and CI=true: backend tests must not skip on CI \
                 (run them through scripts/test-all, which starts the servers)"
            );
            eprintln!(
                "SKIPPED: {var} is not set; run scripts/test-all to start the servers \
                 (this test would fail under CI=true)"
            );
            None
        }
    }
}

/// A short random name for an isolated namespace (a PostgreSQL schema, a Redis
/// key prefix) so that every test gets an empty store on a shared server.
pub fn unique_name(prefix: &str) -> String {
    let id = hive_core::TaskId::new().as_u128();
    format!("{prefix}_{:016x}", (id as u64) ^ ((id >> 64) as u64))
}
