//! The agent registry contract lives in `hive-core`
//! ([`hive_core::registry`]); this module re-exports it.

pub use hive_core::registry::{
    AgentLayer, AgentQuery, AgentRegistry, Attestations, Promotion, PublishRequest, PulledAgent,
    PulledLayer,
};
