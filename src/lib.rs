//! # hive
//!
//! An orchestrator that hosts embed: run agent tasks on worker nodes, drive
//! workflow DAGs, stream every task's events to the end, keep tenants apart and
//! audit every privileged action. This crate is the front door: it re-exports
//! the engine ([`hive_core`]), opens a backend by URL ([`hive_store`]) and wires
//! the default identity and audit policy ([`hive_iam`]).
//!
//! ```no_run
//! # async fn demo() -> hive::Result<()> {
//! use hive::{Principal, TaskSpec};
//! let hive = hive::open("sqlite://hive.db").await?;
//! let alice = Principal::user("acme", "alice");
//! let submitted = hive.submit(&alice, TaskSpec::new("summarize", serde_json::json!({"text": "…"}))).await?;
//! let mut events = hive.subscribe(&alice, submitted.id, 0).await?;
//! while let Some(event) = events.next().await {
//!     println!("{:?}", event?.kind);
//! }
//! # Ok(()) }
//! ```

use std::sync::Arc;

pub use hive_core::*;
pub use hive_iam as iam;
pub use hive_store as backends;

/// Opens the backend `url` names (`memory://`, `sqlite://PATH`, `postgres://…`,
/// `redis://…`; see [`hive_store::open`]) and builds an engine on it with the
/// default settings, clock and scheduler, the scope policy
/// ([`hive_iam::ScopePolicy`]) and the hash-chained audit trail
/// ([`hive_iam::AuditTrail`]) in the same store. Call inside a tokio runtime
/// (the supervisor and the workflow driver are spawned there).
pub async fn open(url: &str) -> Result<Hive> {
    open_with(url, HiveConfig::default()).await
}

/// [`open`] with engine settings.
pub async fn open_with(url: &str, config: HiveConfig) -> Result<Hive> {
    let store = hive_store::open(url).await?;
    Hive::builder()
        .store(store.clone())
        .authorizer(Arc::new(hive_iam::ScopePolicy::new()))
        .auditor(Arc::new(hive_iam::AuditTrail::new(store)))
        .config(config)
        .build()
}

/// What a host needs in scope, in one import: `use hive::prelude::*;`.
pub mod prelude {
    pub use hive_core::worker::handler_fn;
    pub use hive_core::{
        AgentRef, AuditOutcome, ClaimOptions, Error, EventKind, FeedEvent, FeedSubscription, Hive,
        HiveConfig, LeaseToken, Node, NodeId, NodeOwner, NodeSpec, NodeStatus, Owner, Principal,
        Report, Result, RetryPolicy, SkipReason, StepSpec, StepView, Task, TaskDiagnosis,
        TaskError, TaskEvent, TaskId, TaskQuery, TaskSpec, TaskState, TaskSubscription, TenantId,
        Timeouts, WorkerOptions, WorkflowId, WorkflowQuery, WorkflowSpec, WorkflowState,
        WorkflowSubscription, WorkflowView,
    };
    pub use hive_iam::{AuditQuery, AuditTrail, HiveIamExt, TokenService};
}
