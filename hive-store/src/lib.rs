//! # hive-store
//!
//! Storage backends for Hive, chosen by URL through [`open`], and the conformance
//! suite every backend runs (`conformance`, behind the `conformance` feature).
//!
//! | URL               | backend           | feature    | durable | processes            |
//! |-------------------|-------------------|------------|---------|----------------------|
//! | `memory://`       | [`MemoryStore`]   | `memory`   | no      | one                  |
//! | `sqlite://PATH`   | `SqliteStore`     | `sqlite`   | yes     | one host             |
//! | `postgres://…`    | `PostgresStore`   | `postgres` | yes     | many, many machines  |
//! | `redis://…`       | `RedisStore`      | `redis`    | per Redis persistence | many, many machines |
//!
//! Every backend implements [`hive_core::store::Store`] (tasks and records) and
//! passes the same conformance suite unchanged.
//!
//! ## Options in the URL
//!
//! Hive's own settings ride in the URL's query and are removed before the URL
//! reaches the driver; anything else is passed on untouched:
//!
//! | parameter         | applies to               | default | meaning |
//! |-------------------|--------------------------|---------|---------|
//! | `pool_size`       | sqlite, postgres, redis  | 10      | connections in the pool |
//! | `connect_timeout` | sqlite, postgres, redis  | `5s`    | how long `open` and a pool checkout wait for a connection |
//! | `schema`          | postgres                 | `hive`  | the schema Hive's tables live in (several Hives can share one database) |
//! | `prefix`          | redis                    | `hive`  | the key prefix of every Hive key (several Hives can share one Redis) |

#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod compaction;
#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "memory")]
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "sqlite")]
pub mod sqlite;
#[cfg(feature = "conformance")]
pub mod testing;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
mod waiters;

#[cfg(feature = "memory")]
pub use memory::{MemoryConfig, MemoryStore};

use std::sync::Arc;
use std::time::Duration;

use hive_core::store::Store;
use hive_core::{Error, Result};

/// The URL schemes [`open`] knows, whether or not they are compiled in.
pub const SCHEMES: [&str; 5] = ["memory", "sqlite", "postgres", "postgresql", "redis"];

/// Settings every durable backend takes, read from the URL's query by [`open`]
/// (see the crate docs) or set in code for [`open_with`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenOptions {
    /// Connections in the pool (≥ 1).
    pub pool_size: u32,
    /// How long opening, and each pool checkout, waits for a connection before
    /// answering `BackendUnavailable`.
    pub connect_timeout: Duration,
    /// PostgreSQL: the schema of Hive's tables.
    pub schema: String,
    /// Redis: the prefix of every key.
    pub prefix: String,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            pool_size: 10,
            connect_timeout: Duration::from_secs(5),
            schema: "hive".into(),
            prefix: "hive".into(),
        }
    }
}

impl OpenOptions {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        if self.pool_size == 0 || self.pool_size > 10_000 {
            return Err(invalid(format!(
                "pool_size must be between 1 and 10000, got {}",
                self.pool_size
            )));
        }
        if self.connect_timeout.is_zero() {
            return Err(invalid("connect_timeout must be greater than zero"));
        }
        let ident = |name: &str, v: &str| {
            let ok = !v.is_empty()
                && v.len() <= 48
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                && !v.starts_with(|c: char| c.is_ascii_digit());
            if ok {
                Ok(())
            } else {
                Err(invalid(format!(
                    "{name} must be 1 to 48 ASCII letters, digits, '_' or '-', not starting with a digit; got {v:?}"
                )))
            }
        };
        ident("schema", &self.schema)?;
        ident("prefix", &self.prefix)
    }
}

/// A store URL split into its scheme, the URL for the driver (Hive's own query
/// parameters removed) and the options those parameters set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreUrl {
    /// `memory`, `sqlite`, `postgres` (also for `postgresql`) or `redis`.
    pub scheme: String,
    /// The URL to hand to the driver.
    pub driver_url: String,
    /// The options.
    pub options: OpenOptions,
}

impl StoreUrl {
    /// Parses a store URL, starting from `defaults` for what it does not set.
    pub fn parse(url: &str, defaults: OpenOptions) -> Result<StoreUrl> {
        let expected = "expected memory://, sqlite://PATH, postgres://… or redis://…";
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid(format!("store URL {url:?} has no scheme; {expected}")))?;
        let scheme = scheme.to_ascii_lowercase();
        if !SCHEMES.contains(&scheme.as_str()) {
            return Err(invalid(format!(
                "unknown store URL scheme {scheme:?} in {url:?}; {expected}"
            )));
        }
        // The query starts at the first '?' after the credentials (a
        // password may hold a '?'), and its pairs are percent-decoded.
        let after_auth = match rest.find('/') {
            Some(slash) => rest[..slash].rfind('@').map_or(0, |at| at + 1),
            None => rest.rfind('@').map_or(0, |at| at + 1),
        };
        let (base, query) = match rest[after_auth..].find('?') {
            Some(q) => (&rest[..after_auth + q], Some(&rest[after_auth + q + 1..])),
            None => (rest, None),
        };
        let mut options = defaults;
        let mut passed = url::form_urlencoded::Serializer::new(String::new());
        let mut any_passed = false;
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let v = v.as_ref();
            match k.as_ref() {
                "pool_size" => {
                    options.pool_size = v.parse().map_err(|_| {
                        invalid(format!("pool_size must be a positive integer, got {v:?}"))
                    })?
                }
                "connect_timeout" => {
                    options.connect_timeout = humantime::parse_duration(v).map_err(|e| {
                        invalid(format!(
                            "connect_timeout must be a duration like 5s or 500ms, got {v:?}: {e}"
                        ))
                    })?
                }
                "schema" => options.schema = v.to_owned(),
                "prefix" => options.prefix = v.to_owned(),
                _ => {
                    passed.append_pair(&k, v);
                    any_passed = true;
                }
            }
        }
        options.validate()?;
        let scheme = if scheme == "postgresql" {
            "postgres".to_owned()
        } else {
            scheme
        };
        let mut driver_url = format!("{scheme}://{base}");
        if any_passed {
            driver_url.push('?');
            driver_url.push_str(&passed.finish());
        }
        Ok(StoreUrl {
            scheme,
            driver_url,
            options,
        })
    }
}

/// Opens the backend a URL names: `memory://`, `sqlite://PATH`,
/// `postgres://USER@HOST:PORT/DB`, `redis://HOST:PORT/`. Options ride in the
/// query (see the crate docs).
///
/// An unknown scheme, a backend not compiled into this build, a bad option, an
/// unreachable server or a database whose schema is newer than this code is a
/// clear error, never a panic.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    open_with(url, OpenOptions::default()).await
}

/// [`open`], with `defaults` for every option the URL does not set.
pub async fn open_with(url: &str, defaults: OpenOptions) -> Result<Arc<dyn Store>> {
    let parsed = StoreUrl::parse(url, defaults)?;
    match parsed.scheme.as_str() {
        #[cfg(feature = "memory")]
        "memory" => Ok(Arc::new(MemoryStore::new(MemoryConfig::default()))),
        #[cfg(feature = "sqlite")]
        "sqlite" => Ok(Arc::new(
            sqlite::SqliteStore::connect(&parsed.driver_url, &parsed.options).await?,
        )),
        #[cfg(feature = "postgres")]
        "postgres" => Ok(Arc::new(
            postgres::PostgresStore::connect(&parsed.driver_url, &parsed.options).await?,
        )),
        #[cfg(feature = "redis")]
        "redis" => Ok(Arc::new(
            redis::RedisStore::connect(&parsed.driver_url, &parsed.options).await?,
        )),
        other => Err(invalid(format!(
            "the {other} backend is not enabled in this build of hive-store (feature `{other}`)"
        ))),
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidArgument {
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11, item 11: the query is parsed as a query (percent-decoded),
    /// and a '?' in the password does not start it.
    #[test]
    fn query_values_are_percent_decoded_and_passwords_may_hold_a_question_mark() {
        let u = StoreUrl::parse(
            "postgres://u:p%3Fw@h:5432/db?schema=t%5F1&application_name=my%20app",
            OpenOptions::default(),
        )
        .unwrap();
        assert_eq!(u.options.schema, "t_1");
        assert_eq!(
            u.driver_url,
            "postgres://u:p%3Fw@h:5432/db?application_name=my+app"
        );
        let u = StoreUrl::parse(
            "redis://:se?cret@127.0.0.1:6379/0?prefix=a%2Db",
            OpenOptions::default(),
        )
        .unwrap();
        assert_eq!(u.options.prefix, "a-b");
        assert_eq!(u.driver_url, "redis://:se?cret@127.0.0.1:6379/0");
        let e = StoreUrl::parse("redis://h/?prefix=a%2Fb", OpenOptions::default()).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidArgument { message } if message.contains("prefix")),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn bad_urls_are_clear_errors() {
        for url in ["", "nonsense", "ftp://x", "memory"] {
            match open(url).await {
                Err(Error::InvalidArgument { message }) => {
                    assert!(message.contains("scheme"), "{message}")
                }
                other => panic!("{url:?}: expected InvalidArgument, got {other:?}"),
            }
        }
        assert!(open("memory://").await.is_ok());
    }

    #[test]
    fn hive_options_are_taken_out_of_the_query() {
        let u = StoreUrl::parse(
            "postgresql://u@h:5432/db?pool_size=32&sslmode=disable&connect_timeout=250ms&schema=t1",
            OpenOptions::default(),
        )
        .unwrap();
        assert_eq!(u.scheme, "postgres");
        assert_eq!(u.driver_url, "postgres://u@h:5432/db?sslmode=disable");
        assert_eq!(u.options.pool_size, 32);
        assert_eq!(u.options.connect_timeout, Duration::from_millis(250));
        assert_eq!(u.options.schema, "t1");
        let r =
            StoreUrl::parse("redis://127.0.0.1:6379/?prefix=x", OpenOptions::default()).unwrap();
        assert_eq!(r.driver_url, "redis://127.0.0.1:6379/");
        assert_eq!(r.options.prefix, "x");
    }

    #[test]
    fn bad_options_name_the_option() {
        for (url, needle) in [
            ("redis://h/?pool_size=0", "pool_size"),
            ("redis://h/?pool_size=lots", "pool_size"),
            ("postgres://h/db?connect_timeout=soon", "connect_timeout"),
            ("postgres://h/db?schema=drop%20table", "schema"),
            ("redis://h/?prefix=", "prefix"),
        ] {
            match StoreUrl::parse(url, OpenOptions::default()) {
                Err(Error::InvalidArgument { message }) => {
                    assert!(message.contains(needle), "{url}: {message}")
                }
                other => panic!("{url}: expected InvalidArgument, got {other:?}"),
            }
        }
    }
}
