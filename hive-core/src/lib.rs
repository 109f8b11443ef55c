//! # hive-core
//!
//! The domain model, the task state machine, the store and policy traits, and the
//! engine ([`Hive`]) of Hive, an orchestrator that hosts embed.
//!
//! `hive-core` does no I/O of its own besides tokio timers: the state lives in a
//! [`store::TaskStore`] passed in as a trait object (see the `hive-store` crate for
//! the backends), and placement and authorization are pluggable
//! ([`scheduler::Scheduler`], [`auth::Authorizer`]).
//!
//! The contracts this crate implements (task states, the event contract, the
//! supervisor, node eligibility) are described in `ARCHITECTURE.md`; each trait
//! documents the guarantees its implementations must give.

pub mod audit;
pub mod auth;
pub mod clock;
pub mod engine;
pub mod error;
pub mod id;
pub mod node;
pub mod principal;
pub mod registry;
pub mod retry;
pub mod schedule;
pub mod scheduler;
pub mod store;
pub mod task;
pub mod worker;
pub mod workflow;

pub use audit::AuditOutcome;
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use engine::{
    ClaimOptions, FeedSubscription, Hive, HiveBuilder, HiveConfig, HumanDuration, Report,
    RetentionConfig, RetentionReport, TaskDiagnosis, TaskSubscription, Waiting,
    WorkflowSubscription,
};
pub use error::{Error, Result};
pub use id::{LeaseId, NodeId, TaskId};
pub use node::{Node, NodeOwner, NodeSpec, NodeStatus, ShareTarget};
pub use principal::{Principal, PrincipalId, PrincipalKind, Scope, Scopes, TenantId};
pub use retry::{MaxAttempts, RetryOn, RetryOverride, RetryPlacement, RetryPolicy};
pub use schedule::{
    Calendar, CatchUp, OverlapPolicy, Schedule, ScheduleAction, ScheduleFire, ScheduleQuery,
    ScheduleReport, ScheduleSpec, ScheduleStatus,
};
pub use task::{
    AgentRef, Concurrency, ConcurrencyStrategy, EventKind, FeedEvent, LeaseToken, Owner, Page,
    RateLimit, Task, TaskError, TaskEvent, TaskQuery, TaskSpec, TaskState, TimeoutPhase, Timeouts,
};
pub use worker::{TaskContext, TaskHandler, WorkerHandle, WorkerOptions};
pub use workflow::{
    JoinMode, SkipReason, StepSpec, StepState, StepView, Trigger, WorkflowId, WorkflowQuery,
    WorkflowSpec, WorkflowState, WorkflowView,
};
