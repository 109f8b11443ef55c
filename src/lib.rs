//! # hive
//!
//! An orchestrator that hosts embed: run agent tasks on worker nodes, stream every
//! task's events to the end, keep tenants apart. This crate is the front door: it
//! re-exports the engine ([`hive_core`]) and opens a backend by URL
//! ([`hive_store`]).
//!
//! ```no_run
//! # async fn demo() -> hive::Result<()> {
//! use hive::{Principal, TaskSpec};
//! let hive = hive::open("memory://").await?;
//! let alice = Principal::user("acme", "alice");
//! let submitted = hive.submit(&alice, TaskSpec::new("summarize", serde_json::json!({"text": "…"}))).await?;
//! let mut events = hive.subscribe(&alice, submitted.id, 0).await?;
//! while let Some(event) = events.next().await {
//!     println!("{:?}", event?.kind);
//! }
//! # Ok(()) }
//! ```

pub use hive_core::*;
pub use hive_store as backends;

/// Opens the backend `url` names (`memory://`) and builds an engine on it with
/// the default settings, clock, scheduler and authorizer. Call inside a tokio
/// runtime (the supervisor is spawned there).
pub async fn open(url: &str) -> Result<Hive> {
    let store = hive_store::open(url).await?;
    Hive::builder().store(store).build()
}
