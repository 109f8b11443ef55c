//! # hive-registry: APIary
//!
//! Hive's catalog of agents, stored as OCI artifacts in a registry (GHCR in
//! production, a local `distribution` registry in tests). [`Apiary`]
//! implements the [`AgentRegistry`] contract of `hive-core`
//! ([`hive_core::registry`], where the catalog, provenance, experiment and
//! error types live too, free of OCI and signing dependencies); this crate
//! re-exports them so one import path serves both.
//!
//! - **Artifacts.** An agent version is an OCI image manifest with
//!   `artifactType` [`AGENT_ARTIFACT_TYPE`], a config blob
//!   ([`AGENT_CONFIG_MEDIA_TYPE`]) and content layers
//!   (`application/vnd.hive.agent.*`); its annotations carry the catalog entry
//!   ([`AgentEntry::to_annotations`], keys in [`annotation`]). It lives at
//!   `PREFIX/tenant/channel/name:version` ([`RegistryConfig::repository`]).
//! - **Index.** [`AgentRegistry::list`], [`get`](AgentRegistry::get) and
//!   [`pull`](AgentRegistry::pull) decide visibility with one function,
//!   [`Visibility::allows`]; a hidden agent is `NotFound`. With
//!   [`RegistryCredentials::Tokens`] every registry request carries a
//!   short-lived ES256 token (minted by `hive-iam`'s registry token issuer)
//!   granting exactly what that decision allows, so the registry enforces it
//!   too; [`Apiary::token_service`] answers the registry's `auth.token` realm
//!   for other clients.
//! - **Signatures** (`cosign` feature, sigstore-rs). Publishing signs with the
//!   sandbox key, promotion with the production key, as cosign key-based
//!   signatures at `sha256-<digest>.sig`. A pull verifies the digests, a
//!   signature by a trusted key of the channel, the signed identity (the
//!   repository) and the signed annotations, and fails closed with a
//!   [`VerifyError`]. Without the feature, publishing and pulling fail closed.
//! - **Provenance.** An in-toto statement with a SLSA provenance v1 predicate
//!   ([`provenance::agent_provenance`]), DSSE-signed and attached at
//!   `sha256-<digest>.att`; read with [`AgentRegistry::attestations`].
//! - **Promotion.** [`AgentRegistry::promote`] applies a [`PromotionPolicy`],
//!   copies the artifact to production, re-signs it and attaches a SLSA
//!   verification summary; allowed and refused promotions are audited.
//!   [`AgentRegistry::experiments`] lists the sandbox agents loops produced.
//!
//! ```no_run
//! # async fn demo(hive: hive_core::Hive, admin: hive_core::Principal) -> hive_registry::Result<()> {
//! use hive_registry::{AgentRegistry, Apiary, AgentSigningKey, Channel, PublishRequest, RegistryConfig};
//!
//! let sandbox = AgentSigningKey::generate();
//! let config = RegistryConfig::from_env()?
//!     .with_trusted_key(Channel::Sandbox, sandbox.public_key().clone());
//! let apiary = Apiary::builder(hive, config)
//!     .signing_key(Channel::Sandbox, sandbox)
//!     .build()?;
//! let entry = apiary
//!     .publish(&admin, PublishRequest::new("summarize", "1.0.0", b"agent spec".to_vec()))
//!     .await?;
//! let pulled = apiary.pull(&admin, &entry.reference).await?;
//! assert_eq!(pulled.layers[0].data, b"agent spec");
//! # Ok(()) }
//! ```

mod apiary;
pub mod catalog;
pub mod config;
#[cfg(feature = "cosign")]
pub mod cosign;
mod error;
mod index;
pub mod keys;
mod oci;
pub mod promotion;
pub mod provenance;
mod registry;
mod signature;

pub use apiary::{Apiary, ApiaryAccess, ApiaryBuilder, SYSTEM_SUBJECT, signed_annotations};
pub use catalog::{
    AGENT_ARTIFACT_TYPE, AGENT_CONFIG_MEDIA_TYPE, AGENT_CONTENT_MEDIA_TYPE, AgentEntry, AgentRef,
    Channel, ProvenanceSummary, Visibility, annotation,
};
pub use config::{ConfigError, RegistryConfig, TlsConfig, TrustedKeys};
pub use error::{AnnotationLocation, ApiaryError, PromotionRule, Result, VerifyError};
pub use index::{
    AGENT_KIND, EXPERIMENT_KIND, Experiment, ExperimentQuery, ExperimentStatus, PromotedTo, Refusal,
};
pub use keys::{AgentSigningKey, TrustedKey};
pub use oci::{RegistryCredentials, cosign_tag};
pub use promotion::PromotionPolicy;
pub use provenance::{Link, Provenance};
pub use registry::{
    AgentLayer, AgentQuery, AgentRegistry, Attestations, Promotion, PublishRequest, PulledAgent,
    PulledLayer,
};
pub use signature::{SIGNING_BUILT_IN, VerifiedSignature};
