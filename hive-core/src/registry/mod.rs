//! The agent registry contract (APIary): [`AgentRegistry`] and the types it
//! speaks, serde-friendly and free of any OCI or signing dependency. Hosts
//! hold an `Arc<dyn AgentRegistry>`; `hive-registry` implements it over an
//! OCI registry with cosign signatures and SLSA provenance.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::principal::{Principal, TenantId};

pub mod catalog;
pub mod error;
mod experiment;
pub mod provenance;

pub use catalog::{AgentEntry, AgentRef, Channel, ProvenanceSummary, Visibility};
pub use error::{
    AnnotationLocation, ApiaryError, ConfigError, PromotionRule, Result, URL_PARAMETERS,
    VerifyError,
};
pub use experiment::{Experiment, ExperimentQuery, ExperimentStatus, PromotedTo, Refusal};
pub use provenance::{Link, Provenance, ResourceDescriptor, Statement};

use catalog::AGENT_CONTENT_MEDIA_TYPE;

/// What a successful signature verification established.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedSignature {
    /// The id of the trusted key that verified it (`hive_registry::TrustedKey::key_id`).
    pub key_id: String,
    /// The signed identity (`host/repository`).
    pub identity: String,
    /// The signed digest.
    pub digest: String,
    /// The signed payload's optional annotations (string values).
    pub annotations: BTreeMap<String, String>,
}

/// One content layer of an agent (its definition, prompts, code…).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentLayer {
    /// Its media type; must start with `application/vnd.hive.agent.`.
    pub media_type: String,
    /// Its bytes.
    pub data: Vec<u8>,
}

impl fmt::Debug for AgentLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentLayer")
            .field("media_type", &self.media_type)
            .field("len", &self.data.len())
            .finish()
    }
}

impl AgentLayer {
    /// A layer of the default content media type.
    pub fn new(data: impl Into<Vec<u8>>) -> Self {
        AgentLayer {
            media_type: AGENT_CONTENT_MEDIA_TYPE.into(),
            data: data.into(),
        }
    }
}

/// What to publish: a new sandbox version of an agent of the caller's tenant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PublishRequest {
    /// The agent's name (a registry path component).
    pub name: String,
    /// The version (an OCI tag); versions are immutable.
    pub version: String,
    /// Free text.
    pub description: String,
    /// Who may see it (the same for every version of the agent).
    pub visibility: Visibility,
    /// The content (at least one layer).
    pub layers: Vec<AgentLayer>,
    /// The metrics the generating loop measured.
    pub metrics: BTreeMap<String, f64>,
    /// Where it came from; attached as a signed SLSA provenance attestation.
    pub provenance: Option<Provenance>,
}

impl PublishRequest {
    /// A request with one content layer, tenant visibility, no metrics and no
    /// provenance.
    pub fn new(
        name: impl Into<String>,
        version: impl Into<String>,
        content: impl Into<Vec<u8>>,
    ) -> Self {
        PublishRequest {
            name: name.into(),
            version: version.into(),
            description: String::new(),
            visibility: Visibility::Tenant,
            layers: vec![AgentLayer::new(content)],
            metrics: BTreeMap::new(),
            provenance: None,
        }
    }
}

/// Filters for [`AgentRegistry::list`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentQuery {
    /// Only this channel.
    pub channel: Option<Channel>,
    /// Only this tenant's agents.
    pub tenant: Option<TenantId>,
    /// Only this agent name.
    pub name: Option<String>,
    /// Only entries whose name or description contains this text (case
    /// insensitive).
    pub text: Option<String>,
}

/// One pulled layer.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PulledLayer {
    /// Its media type.
    pub media_type: String,
    /// Its digest (checked).
    pub digest: String,
    /// Its bytes.
    pub data: Vec<u8>,
}

impl fmt::Debug for PulledLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PulledLayer")
            .field("media_type", &self.media_type)
            .field("digest", &self.digest)
            .field("len", &self.data.len())
            .finish()
    }
}

/// A pulled and verified agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PulledAgent {
    /// Its catalog entry.
    pub entry: AgentEntry,
    /// The manifest digest that was verified.
    pub digest: String,
    /// The raw manifest.
    pub manifest: Vec<u8>,
    /// The content layers, in manifest order.
    pub layers: Vec<PulledLayer>,
    /// The signature that verified it.
    pub signature: VerifiedSignature,
}

/// The verified attestations of an agent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Attestations {
    /// The SLSA provenance (for a production agent: the sandbox artifact's,
    /// whose subject is the digest it was promoted from).
    pub provenance: Option<Statement>,
    /// The SLSA verification summary promotion attached (production only).
    pub verification_summary: Option<Statement>,
}

/// A successful promotion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Promotion {
    /// The sandbox agent that was promoted.
    pub sandbox: AgentEntry,
    /// The production agent it became.
    pub production: AgentEntry,
    /// The verification summary attached to the production agent.
    pub verification_summary: Statement,
}

/// A catalog of agents stored as OCI artifacts.
///
/// # Guarantees every implementation gives
///
/// - **One visibility decision.** What [`list`](Self::list) shows a caller is
///   exactly what [`get`](Self::get) and [`pull`](Self::pull) give it: all
///   three (and the registry token grants) decide with
///   [`Visibility::allows`]. An agent the caller may not see is `NotFound`,
///   never `Forbidden`.
/// - **Operations, not objects, are forbidden.** A principal without the
///   operation's scope (and every worker) gets `Forbidden` (for promotion:
///   `PromotionRefused` naming the rule), whatever it asks about; the refusal
///   is audited through the engine.
/// - **Fail closed.** A pull returns content only after the digest of every
///   manifest and layer matched, a signature by a trusted key of the agent's
///   channel verified, the signature named the agent's repository, and the
///   signed and manifest annotations matched the entry; otherwise
///   `Verification` with a [`VerifyError`].
/// - **Audited privileged actions.** Publish and promote are authorized and
///   audited through the engine (`registry.publish`,
///   `experiment.promote`) before they change anything; a refused promotion
///   is audited with the rule that failed.
#[async_trait]
pub trait AgentRegistry: Send + Sync + fmt::Debug + 'static {
    /// Publishes a new sandbox version of an agent of `p`'s tenant: pushes the
    /// artifact, signs it with the sandbox key, attaches the signed provenance,
    /// and adds it to the index (and to the experiments when it has
    /// provenance). Needs `registry:publish`. An existing version is
    /// `Conflict`.
    async fn publish(&self, p: &Principal, request: PublishRequest) -> Result<AgentEntry>;

    /// The entries `p` may see that match `query`, ordered by reference.
    async fn list(&self, p: &Principal, query: &AgentQuery) -> Result<Vec<AgentEntry>>;

    /// One entry (`NotFound` if missing or hidden from `p`).
    async fn get(&self, p: &Principal, reference: &AgentRef) -> Result<AgentEntry>;

    /// Pulls and verifies an agent (see the type docs).
    async fn pull(&self, p: &Principal, reference: &AgentRef) -> Result<PulledAgent>;

    /// The agent's verified attestations.
    async fn attestations(&self, p: &Principal, reference: &AgentRef) -> Result<Attestations>;

    /// Promotes a sandbox agent to production under the configured policy:
    /// copies it to the production repository, signs it with the production
    /// key and attaches a verification summary.
    async fn promote(&self, p: &Principal, reference: &AgentRef) -> Result<Promotion>;

    /// The experiments (sandbox agents with provenance) `p` may see.
    async fn experiments(&self, p: &Principal, query: &ExperimentQuery) -> Result<Vec<Experiment>>;

    /// The registry's repository catalog, which spans tenants: only for
    /// `system:admin` and Hive itself.
    async fn catalog(&self, p: &Principal) -> Result<Vec<String>>;

    /// The metric thresholds promotion checks (metric name → minimum), for
    /// showing an experiment's metrics against them. None by default.
    fn promotion_thresholds(&self) -> BTreeMap<String, f64> {
        BTreeMap::new()
    }
}
