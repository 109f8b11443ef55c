//! Experiments: the sandbox agents a loop produced, with their metrics, as the
//! experiments UI lists them and promotion acts on them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::catalog::{AgentRef, Visibility};
use crate::clock::Timestamp;
use crate::principal::TenantId;

/// Where an experiment stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExperimentStatus {
    /// Published to the sandbox, not promoted.
    Candidate,
    /// Promoted to production.
    Promoted,
    /// The last promotion attempt was refused.
    Refused,
}

impl ExperimentStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ExperimentStatus::Candidate => "candidate",
            ExperimentStatus::Promoted => "promoted",
            ExperimentStatus::Refused => "refused",
        }
    }
}

/// The result of a successful promotion, as the experiment records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotedTo {
    /// The production agent.
    pub reference: AgentRef,
    /// Its manifest digest.
    pub digest: String,
    /// `tenant/principal` of the promoter.
    pub by: String,
    /// When.
    pub at: Timestamp,
}

/// A refused promotion, as the experiment records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The rule that failed (its display form, e.g. `metric:accuracy>=0.9`).
    pub rule: String,
    /// Why.
    pub reason: String,
    /// `tenant/principal` of the caller.
    pub by: String,
    /// When.
    pub at: Timestamp,
}

/// A sandbox agent a loop produced, with its metrics: what the experiments UI
/// lists and promotion acts on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    /// The sandbox agent.
    pub reference: AgentRef,
    /// Its manifest digest.
    pub digest: String,
    /// Its visibility (the agent's).
    pub visibility: Visibility,
    /// The generating loop.
    pub builder_id: String,
    /// The loop run.
    pub invocation_id: String,
    /// The metrics the loop measured.
    pub metrics: BTreeMap<String, f64>,
    /// The rationale link.
    pub rationale_uri: Option<String>,
    /// The metrics document link.
    pub metrics_uri: Option<String>,
    /// Where it stands.
    pub status: ExperimentStatus,
    /// The production agent, once promoted.
    pub promoted: Option<PromotedTo>,
    /// The last refused promotion, if any.
    pub last_refusal: Option<Refusal>,
    /// When it was published.
    pub created_at: Timestamp,
}

/// Filters for listing experiments.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExperimentQuery {
    /// Only this tenant's.
    pub tenant: Option<TenantId>,
    /// Only those of this loop (builder id).
    pub builder_id: Option<String>,
    /// Only those with this status.
    pub status: Option<ExperimentStatus>,
}
