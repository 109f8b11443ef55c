//! # hive-store
//!
//! Storage backends for Hive, chosen by URL through [`open`], and the conformance
//! suite every backend runs ([`conformance`], behind the `conformance` feature).
//!
//! | URL           | backend                 | feature    | durable | processes |
//! |---------------|-------------------------|------------|---------|-----------|
//! | `memory://`   | [`MemoryStore`]         | `memory`   | no      | one       |
//!
//! Every backend implements [`hive_core::store::TaskStore`] and passes the same
//! conformance suite unchanged.

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "memory")]
pub mod memory;

#[cfg(feature = "memory")]
pub use memory::{MemoryConfig, MemoryStore};

use std::sync::Arc;

use hive_core::store::TaskStore;
use hive_core::{Error, Result};

/// Opens the backend a URL names: `memory://`.
///
/// An unknown scheme, or a backend not compiled into this build, is a clear
/// [`Error::InvalidArgument`], never a panic.
pub async fn open(url: &str) -> Result<Arc<dyn TaskStore>> {
    let scheme = url
        .split_once("://")
        .map(|(s, _)| s)
        .ok_or_else(|| Error::InvalidArgument {
            message: format!("store URL {url:?} has no scheme; expected memory://"),
        })?;
    match scheme {
        #[cfg(feature = "memory")]
        "memory" => Ok(Arc::new(MemoryStore::new(MemoryConfig::default()))),
        #[cfg(not(feature = "memory"))]
        "memory" => Err(Error::InvalidArgument {
            message:
                "the memory backend is not enabled in this build of hive-store (feature `memory`)"
                    .into(),
        }),
        "sqlite" | "postgres" | "postgresql" | "redis" => Err(Error::InvalidArgument {
            message: format!("the {scheme} backend is not available in this build of hive-store"),
        }),
        other => Err(Error::InvalidArgument {
            message: format!("unknown store URL scheme {other:?} in {url:?}; expected memory://"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
