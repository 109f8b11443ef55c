//! The errors of APIary. The types live in `hive-core`
//! ([`hive_core::registry::error`]), beside the [`crate::AgentRegistry`]
//! contract; this module re-exports them.

pub use hive_core::registry::error::*;
