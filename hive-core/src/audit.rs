//! The audit hook: the engine reports every privileged action and every denied
//! attempt to an [`Auditor`]. `hive-iam` provides the hash-chained trail over a
//! record store; [`NoAudit`] keeps nothing (tests, benchmarks with `iam=off`).
//!
//! Privileged actions are audited after authorization and validation and
//! *before* they run (a valid request as `Allowed`, an invalid one as
//! `Refused`), and fail closed: if the auditor cannot record the entry, the action is
//! refused with the auditor's error, so nothing privileged happens unrecorded.
//! A denial is reported whether or not recording it succeeds (the caller gets
//! `Forbidden` either way).

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::error::Result;
use crate::principal::{PrincipalId, TenantId};

/// What became of the audited attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// The action was authorized (and is about to run).
    Allowed,
    /// The action was refused: the caller may not do it.
    Denied,
    /// The caller may do it, but the request was invalid (a spec that fails
    /// validation, a batch over the limit); nothing ran. The details carry
    /// the reason.
    Refused,
}

impl fmt::Display for AuditOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuditOutcome::Allowed => "allowed",
            AuditOutcome::Denied => "denied",
            AuditOutcome::Refused => "refused",
        })
    }
}

/// One audited attempt, before the trail numbers and chains it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When.
    pub at: Timestamp,
    /// The tenant whose trail it goes to (the actor's tenant).
    pub tenant: TenantId,
    /// Who.
    pub actor: PrincipalId,
    /// The actor's kind (`user`, `operator`, `admin`, `worker`, `system`).
    pub actor_kind: String,
    /// What (`task.submit`, `node.register`…).
    pub action: String,
    /// On what (`task/<id>`, `node/<id>`, `tenant/<name>`, `system`).
    pub resource: String,
    /// Allowed or denied.
    pub outcome: AuditOutcome,
    /// Anything else worth keeping: the denial's reason, the number of tasks
    /// submitted, the token issued…
    pub details: serde_json::Value,
}

/// Where the engine reports audited attempts.
#[async_trait]
pub trait Auditor: Send + Sync + fmt::Debug + 'static {
    /// Records entries, in order. An error means they were not recorded.
    async fn record(&self, entries: Vec<AuditEntry>) -> Result<()>;
}

/// Records nothing. For tests and `iam=off` benchmarks; never for a deployment
/// that needs a trail.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoAudit;

#[async_trait]
impl Auditor for NoAudit {
    async fn record(&self, _entries: Vec<AuditEntry>) -> Result<()> {
        Ok(())
    }
}
