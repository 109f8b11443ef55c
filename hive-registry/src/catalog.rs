//! The catalog entry: what an agent is, where it lives in the registry, who may
//! see it, and how it is written into (and read back from) the manifest
//! annotations of its OCI artifact. The types live in `hive-core`
//! ([`hive_core::registry::catalog`]), beside the [`crate::AgentRegistry`]
//! contract; this module re-exports them.

pub use hive_core::registry::catalog::*;
