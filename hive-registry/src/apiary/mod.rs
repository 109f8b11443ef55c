//! [`Apiary`]: the [`AgentRegistry`] over an OCI registry, and
//! [`ApiaryAccess`], the registry token policy that makes the registry enforce
//! the same decisions.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use hive_core::Hive;
use hive_core::auth::{Action, Resource};
use hive_core::principal::{Principal, PrincipalKind};
use hive_core::store::RecordStore;
use hive_iam::registry_token::{RegistryAccess, RegistryScope, RegistryTokenService};
use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageManifest};
use serde_json::json;

use crate::catalog::{
    AGENT_ARTIFACT_TYPE, AGENT_CONFIG_MEDIA_TYPE, AGENT_MEDIA_TYPE_PREFIX, AgentEntry, AgentRef,
    COSIGN_SIGNATURE_ANNOTATION, Channel, DSSE_MEDIA_TYPE, PREDICATE_TYPE_ANNOTATION, annotation,
};
use crate::config::RegistryConfig;
use crate::error::{AnnotationLocation, ApiaryError, Result, VerifyError};
use crate::index::{self, Experiment, ExperimentQuery, ExperimentStatus};
use crate::keys::{AgentSigningKey, TrustedKey};
use crate::oci::{RegistryCredentials, Session, cosign_tag};
use crate::promotion::PromotionPolicy;
use crate::provenance::{Envelope, SLSA_PROVENANCE_V1, SLSA_VSA_V1, Statement, agent_provenance};
use crate::registry::{
    AgentQuery, AgentRegistry, Attestations, Promotion, PublishRequest, PulledAgent, PulledLayer,
};
use crate::signature;

/// The subject of registry tokens Hive mints for its own writes (promotion).
pub const SYSTEM_SUBJECT: &str = "_system/hive";

/// Builds an [`Apiary`].
#[derive(Debug)]
pub struct ApiaryBuilder {
    hive: Hive,
    config: RegistryConfig,
    credentials: RegistryCredentials,
    sandbox_key: Option<AgentSigningKey>,
    production_key: Option<AgentSigningKey>,
    policy: PromotionPolicy,
}

impl ApiaryBuilder {
    /// How Hive authenticates to the registry (default: anonymous).
    pub fn credentials(mut self, credentials: RegistryCredentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// The key that signs `channel`'s agents: the sandbox key signs on
    /// publish, the production key on promotion. Its public half must be
    /// trusted for the channel in the configuration.
    pub fn signing_key(mut self, channel: Channel, key: AgentSigningKey) -> Self {
        match channel {
            Channel::Sandbox => self.sandbox_key = Some(key),
            Channel::Production => self.production_key = Some(key),
        }
        self
    }

    /// The promotion policy (default: [`PromotionPolicy::default`]).
    pub fn promotion_policy(mut self, policy: PromotionPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Builds the service. A signing key whose public half is not trusted
    /// for its channel is refused: what it signed would never verify.
    pub fn build(self) -> Result<Apiary> {
        for (channel, key) in [
            (Channel::Sandbox, &self.sandbox_key),
            (Channel::Production, &self.production_key),
        ] {
            if let Some(key) = key
                && !self
                    .config
                    .trusted_keys
                    .of(channel)
                    .contains(key.public_key())
            {
                return Err(ApiaryError::invalid(format!(
                    "the {channel} signing key ({}) is not among the trusted {channel} keys: \
                     what it signs would not verify",
                    key.public_key().key_id()
                )));
            }
        }
        for (metric, min) in &self.policy.min_metrics {
            if metric.is_empty() || !min.is_finite() {
                return Err(ApiaryError::invalid(format!(
                    "promotion policy: metric {metric:?} needs a name and a finite threshold"
                )));
            }
        }
        let access = Arc::new(ApiaryAccess {
            hive: self.hive.clone(),
            config: self.config.clone(),
        });
        Ok(Apiary {
            inner: Arc::new(Inner {
                hive: self.hive,
                config: self.config,
                credentials: self.credentials,
                sandbox_key: self.sandbox_key,
                production_key: self.production_key,
                policy: self.policy,
                access,
            }),
        })
    }
}

#[derive(Debug)]
struct Inner {
    hive: Hive,
    config: RegistryConfig,
    credentials: RegistryCredentials,
    sandbox_key: Option<AgentSigningKey>,
    production_key: Option<AgentSigningKey>,
    policy: PromotionPolicy,
    access: Arc<ApiaryAccess>,
}

/// APIary: Hive's agent catalog over an OCI registry. Cheap to clone.
///
/// The index lives in the engine's record store (`hive.store()`); the
/// artifacts, signatures and attestations in the registry. Every privileged
/// action and every denial goes through the engine's `authorize`/`deny`, so it
/// is checked by the deployment's authorizer and recorded by its auditor.
#[derive(Clone, Debug)]
pub struct Apiary {
    inner: Arc<Inner>,
}

fn subject(p: &Principal) -> String {
    format!("{}/{}", p.tenant, p.id)
}

fn agent_resource(r: &AgentRef) -> Resource {
    Resource::Named {
        kind: "agent",
        id: r.to_string(),
        tenant: r.tenant.clone(),
    }
}

/// The annotations a signature of `r` must carry (name, version, tenant,
/// channel).
pub fn signed_annotations(r: &AgentRef) -> BTreeMap<String, String> {
    [
        (annotation::NAME, r.name.clone()),
        (annotation::VERSION, r.version.clone()),
        (annotation::TENANT, r.tenant.to_string()),
        (annotation::CHANNEL, r.channel.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn is_worker(p: &Principal) -> bool {
    matches!(p.kind, PrincipalKind::Worker { .. })
}

impl Apiary {
    /// A builder for the registry described by `config`, on the engine `hive`.
    pub fn builder(hive: Hive, config: RegistryConfig) -> ApiaryBuilder {
        ApiaryBuilder {
            hive,
            config,
            credentials: RegistryCredentials::Anonymous,
            sandbox_key: None,
            production_key: None,
            policy: PromotionPolicy::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RegistryConfig {
        &self.inner.config
    }

    /// The promotion policy.
    pub fn promotion_policy(&self) -> &PromotionPolicy {
        &self.inner.policy
    }

    /// The registry token policy: what the realm endpoint's
    /// [`RegistryTokenService`] asks.
    pub fn access_policy(&self) -> Arc<dyn RegistryAccess> {
        self.inner.access.clone()
    }

    /// The token service for the realm endpoint, when Hive mints registry
    /// tokens ([`RegistryCredentials::Tokens`]).
    pub fn token_service(&self) -> Option<RegistryTokenService> {
        match &self.inner.credentials {
            RegistryCredentials::Tokens(issuer) => Some(RegistryTokenService::new(
                issuer.clone(),
                self.inner.access.clone(),
            )),
            _ => None,
        }
    }

    /// Entries whose name or description contains `text` (case insensitive).
    pub async fn search(&self, p: &Principal, text: &str) -> Result<Vec<AgentEntry>> {
        self.list(
            p,
            &AgentQuery {
                text: Some(text.into()),
                ..AgentQuery::default()
            },
        )
        .await
    }

    fn store(&self) -> &dyn RecordStore {
        &**self.inner.hive.store()
    }

    fn session(&self, subject: &str, access: Vec<RegistryScope>) -> Result<Session> {
        let auth = self.inner.credentials.for_access(subject, access)?;
        Ok(Session::new(&self.inner.config, auth))
    }

    /// Refuses workers before anything else is looked at (audited), and
    /// checks registry read access.
    async fn gate_read(&self, p: &Principal, resource: &Resource) -> Result<()> {
        self.inner
            .hive
            .authorize(p, Action::ReadRegistry, resource)
            .await?;
        Ok(())
    }

    /// The entry of `r` if `p` may see it; `NotFound` otherwise.
    async fn visible_entry(&self, p: &Principal, r: &AgentRef) -> Result<AgentEntry> {
        r.validate().map_err(|_| ApiaryError::not_found(r))?;
        match index::entry(self.store(), r).await? {
            Some(e) if e.visible_to(p) => Ok(e),
            _ => Err(ApiaryError::not_found(r)),
        }
    }

    async fn push_attestations(
        &self,
        session: &Session,
        repository: &str,
        digest: &str,
        envelopes: &[(Vec<u8>, &str)],
    ) -> Result<()> {
        let config = b"{}".to_vec();
        let config_digest = session.push_blob(repository, &config).await?;
        let mut layers = Vec::new();
        for (bytes, predicate_type) in envelopes {
            let d = session.push_blob(repository, bytes).await?;
            layers.push(OciDescriptor {
                media_type: DSSE_MEDIA_TYPE.into(),
                digest: d,
                size: bytes.len() as i64,
                annotations: Some(
                    [
                        (
                            PREDICATE_TYPE_ANNOTATION.to_owned(),
                            (*predicate_type).to_owned(),
                        ),
                        (COSIGN_SIGNATURE_ANNOTATION.to_owned(), String::new()),
                    ]
                    .into(),
                ),
                ..OciDescriptor::default()
            });
        }
        let manifest = OciImageManifest {
            schema_version: 2,
            media_type: Some(OCI_IMAGE_MEDIA_TYPE.into()),
            config: OciDescriptor {
                media_type: "application/vnd.oci.image.config.v1+json".into(),
                digest: config_digest,
                size: config.len() as i64,
                ..OciDescriptor::default()
            },
            layers,
            ..OciImageManifest::default()
        };
        session
            .push_manifest(repository, &cosign_tag(digest, "att"), &manifest)
            .await?;
        Ok(())
    }

    /// The DSSE envelopes attached to `repository@digest` (empty if none).
    async fn attached_envelopes(
        &self,
        session: &Session,
        repository: &str,
        digest: &str,
    ) -> Result<Vec<(String, Envelope, Vec<u8>)>> {
        let Some((bytes, _)) = session
            .manifest(repository, &cosign_tag(digest, "att"))
            .await?
        else {
            return Ok(Vec::new());
        };
        let bad = |reason: String| ApiaryError::Verification {
            reference: format!("{}@{digest}", self.inner.config.qualified(repository)),
            source: VerifyError::BadAttestation { reason },
        };
        let manifest: OciImageManifest = serde_json::from_slice(&bytes)
            .map_err(|e| bad(format!("the .att manifest is not an OCI manifest: {e}")))?;
        let mut out = Vec::new();
        for layer in manifest
            .layers
            .iter()
            .filter(|l| l.media_type == DSSE_MEDIA_TYPE)
        {
            let data = session.blob(repository, layer).await?;
            let envelope: Envelope = serde_json::from_slice(&data)
                .map_err(|e| bad(format!("an attestation layer is not a DSSE envelope: {e}")))?;
            let predicate_type = layer
                .annotations
                .as_ref()
                .and_then(|a| a.get(PREDICATE_TYPE_ANNOTATION))
                .cloned()
                .unwrap_or_default();
            out.push((predicate_type, envelope, data));
        }
        Ok(out)
    }

    /// The verified statement of `predicate_type` about `subject_digest`
    /// among `envelopes`, signed by one of `keys`. An envelope of that type
    /// that does not verify is an error, not a silent skip.
    fn verified_statement(
        &self,
        envelopes: &[(String, Envelope, Vec<u8>)],
        predicate_type: &str,
        subject_digest: &str,
        keys: &[TrustedKey],
        reference: &str,
    ) -> Result<Option<(Statement, Vec<u8>)>> {
        for (t, envelope, raw) in envelopes {
            if t != predicate_type {
                continue;
            }
            let bad = |reason: String| ApiaryError::Verification {
                reference: reference.to_owned(),
                source: VerifyError::BadAttestation { reason },
            };
            let statement = envelope
                .verify(keys)
                .map_err(|e| bad(format!("{predicate_type}: {e}")))?;
            if statement.predicate_type != predicate_type {
                return Err(bad(format!(
                    "the layer says {predicate_type}, the statement {}",
                    statement.predicate_type
                )));
            }
            if !statement.is_about(subject_digest) {
                return Err(bad(format!(
                    "{predicate_type} is not about {subject_digest}"
                )));
            }
            return Ok(Some((statement, raw.clone())));
        }
        Ok(None)
    }

    /// Checks the manifest annotations against the entry.
    fn check_manifest(&self, entry: &AgentEntry, manifest: &OciImageManifest) -> Result<()> {
        let expected = entry.to_annotations();
        let found = manifest.annotations.clone().unwrap_or_default();
        let mut keys: Vec<&str> = annotation::SIGNED.to_vec();
        keys.push(annotation::VISIBILITY);
        if expected.contains_key(annotation::ROLES) {
            keys.push(annotation::ROLES);
        }
        for key in keys {
            let want = expected.get(key).cloned().unwrap_or_default();
            let got = found.get(key);
            if got != Some(&want) {
                return Err(ApiaryError::Verification {
                    reference: entry.reference.to_string(),
                    source: VerifyError::AnnotationMismatch {
                        location: AnnotationLocation::Manifest,
                        key: key.to_owned(),
                        expected: want,
                        found: got.cloned(),
                    },
                });
            }
        }
        if manifest.artifact_type.as_deref() != Some(AGENT_ARTIFACT_TYPE) {
            return Err(ApiaryError::Verification {
                reference: entry.reference.to_string(),
                source: VerifyError::MalformedSignature {
                    reason: format!(
                        "the manifest's artifactType is {:?}, not {AGENT_ARTIFACT_TYPE}",
                        manifest.artifact_type
                    ),
                },
            });
        }
        Ok(())
    }
}

#[async_trait]
impl AgentRegistry for Apiary {
    fn promotion_thresholds(&self) -> std::collections::BTreeMap<String, f64> {
        self.promotion_policy().min_metrics.clone()
    }

    async fn publish(&self, p: &Principal, request: PublishRequest) -> Result<AgentEntry> {
        let r = AgentRef::new(
            p.tenant.clone(),
            Channel::Sandbox,
            request.name.clone(),
            request.version.clone(),
        );
        let resource = agent_resource(&r);
        self.inner
            .hive
            .authorize_with(p, Action::PublishAgent, &resource, || {
                json!({
                    "agent": r.to_string(),
                    "visibility": request.visibility,
                    "provenance": request.provenance.is_some(),
                })
            })
            .await?;
        let now = self.inner.hive.clock().now();
        let mut entry = AgentEntry {
            reference: r.clone(),
            description: request.description.clone(),
            visibility: request.visibility.clone(),
            provenance: request.provenance.as_ref().map(|p| p.summary()),
            metrics: request.metrics.clone(),
            repository: self.inner.config.repository(&r),
            digest: String::new(),
            published_by: subject(p),
            created_at: now,
            promoted_from: None,
        };
        entry.validate()?;
        if request.layers.is_empty() {
            return Err(ApiaryError::invalid(
                "an agent needs at least one content layer",
            ));
        }
        if let Some(bad) = request
            .layers
            .iter()
            .find(|l| !l.media_type.starts_with(AGENT_MEDIA_TYPE_PREFIX))
        {
            return Err(ApiaryError::invalid(format!(
                "layer media type {:?} does not start with {AGENT_MEDIA_TYPE_PREFIX}",
                bad.media_type
            )));
        }
        if let Some(prov) = &request.provenance {
            prov.validate().map_err(ApiaryError::invalid)?;
        }
        if let Some(existing) = index::agent(self.store(), &r.agent_key()).await? {
            if !existing.visibility.allows(p, &r.tenant) {
                return Err(ApiaryError::not_found(&r));
            }
            index::check_new_version(&existing, &entry)?;
        }
        let Some(key) = self.inner.sandbox_key.clone() else {
            return Err(ApiaryError::SigningUnavailable {
                message: "no sandbox signing key is configured".into(),
            });
        };
        if !signature::SIGNING_BUILT_IN {
            return Err(ApiaryError::SigningUnavailable {
                message: "built without hive-registry's `cosign` feature".into(),
            });
        }

        let repo = entry.repository.clone();
        let session = self.session(
            &subject(p),
            vec![RegistryScope::repository(repo.clone(), &["pull", "push"])],
        )?;
        let config_blob = serde_json::to_vec(&json!({
            "name": r.name,
            "version": r.version,
            "tenant": r.tenant,
        }))
        .unwrap_or_default();
        let config_digest = session.push_blob(&repo, &config_blob).await?;
        let mut layers = Vec::new();
        for layer in &request.layers {
            let digest = session.push_blob(&repo, &layer.data).await?;
            layers.push(OciDescriptor {
                media_type: layer.media_type.clone(),
                digest,
                size: layer.data.len() as i64,
                ..OciDescriptor::default()
            });
        }
        let manifest = OciImageManifest {
            schema_version: 2,
            media_type: Some(OCI_IMAGE_MEDIA_TYPE.into()),
            artifact_type: Some(AGENT_ARTIFACT_TYPE.into()),
            config: OciDescriptor {
                media_type: AGENT_CONFIG_MEDIA_TYPE.into(),
                digest: config_digest,
                size: config_blob.len() as i64,
                ..OciDescriptor::default()
            },
            layers,
            annotations: Some(entry.to_annotations()),
            ..OciImageManifest::default()
        };
        let (digest, _) = session.push_manifest(&repo, &r.version, &manifest).await?;
        entry.digest = digest.clone();
        signature::sign(
            &self.inner.config,
            session.auth(),
            &repo,
            &digest,
            &key,
            &signed_annotations(&r),
        )
        .await?;
        if let Some(prov) = &request.provenance {
            let statement = agent_provenance(
                &self.inner.config.qualified(&repo),
                &digest,
                &r,
                prov,
                &request.metrics,
            );
            let envelope =
                serde_json::to_vec(&Envelope::sign(&statement, &key)).unwrap_or_default();
            self.push_attestations(&session, &repo, &digest, &[(envelope, SLSA_PROVENANCE_V1)])
                .await?;
        }
        index::insert_version(
            self.store(),
            &entry,
            json!({ "event": "published", "version": r.version, "digest": digest, "by": subject(p) }),
            now,
        )
        .await?;
        if let Some(prov) = &request.provenance {
            index::create_experiment(
                self.store(),
                &Experiment {
                    reference: r.clone(),
                    digest: digest.clone(),
                    visibility: entry.visibility.clone(),
                    builder_id: prov.builder_id.clone(),
                    invocation_id: prov.invocation_id.clone(),
                    metrics: request.metrics.clone(),
                    rationale_uri: prov.rationale.as_ref().map(|l| l.uri.clone()),
                    metrics_uri: prov.metrics.as_ref().map(|l| l.uri.clone()),
                    status: ExperimentStatus::Candidate,
                    promoted: None,
                    last_refusal: None,
                    created_at: now,
                },
                now,
            )
            .await?;
        }
        Ok(entry)
    }

    async fn list(&self, p: &Principal, query: &AgentQuery) -> Result<Vec<AgentEntry>> {
        let scope = query.tenant.clone().unwrap_or_else(|| p.tenant.clone());
        self.gate_read(p, &Resource::Tenant(scope)).await?;
        let text = query.text.as_ref().map(|t| t.to_lowercase());
        let mut out: Vec<AgentEntry> =
            index::all_agents(self.store(), query.channel, query.tenant.as_ref())
                .await?
                .into_iter()
                .flat_map(|a| a.versions.into_values())
                .filter(|e| e.visible_to(p))
                .filter(|e| query.name.as_ref().is_none_or(|n| *n == e.reference.name))
                .filter(|e| {
                    text.as_ref().is_none_or(|t| {
                        e.reference.name.to_lowercase().contains(t)
                            || e.description.to_lowercase().contains(t)
                    })
                })
                .collect();
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    async fn get(&self, p: &Principal, reference: &AgentRef) -> Result<AgentEntry> {
        self.gate_read(p, &agent_resource(reference)).await?;
        self.visible_entry(p, reference).await
    }

    async fn pull(&self, p: &Principal, reference: &AgentRef) -> Result<PulledAgent> {
        self.gate_read(p, &agent_resource(reference)).await?;
        let entry = self.visible_entry(p, reference).await?;
        let repo = entry.repository.clone();
        // The same decision the realm makes for this principal: the registry
        // enforces it on every request of the pull.
        let scope = RegistryScope::repository(repo.clone(), &["pull"]);
        if !self
            .inner
            .access
            .grant(p, &scope)
            .await?
            .iter()
            .any(|a| a == "pull")
        {
            return Err(ApiaryError::not_found(reference));
        }
        let session = self.session(&subject(p), vec![scope])?;
        let Some((manifest_bytes, digest)) = session.manifest(&repo, &reference.version).await?
        else {
            return Err(ApiaryError::not_found(reference));
        };
        let signature = signature::verify(
            &self.inner.config,
            session.auth(),
            &repo,
            &digest,
            reference.channel,
            &signed_annotations(reference),
        )
        .await?;
        let manifest: OciImageManifest =
            serde_json::from_slice(&manifest_bytes).map_err(|e| ApiaryError::Verification {
                reference: reference.to_string(),
                source: VerifyError::MalformedSignature {
                    reason: format!("the signed manifest is not an OCI image manifest: {e}"),
                },
            })?;
        self.check_manifest(&entry, &manifest)?;
        if digest != entry.digest {
            return Err(ApiaryError::Verification {
                reference: reference.to_string(),
                source: VerifyError::DigestMismatch {
                    what: format!("tag {}", reference.version),
                    expected: entry.digest.clone(),
                    actual: digest,
                },
            });
        }
        let mut layers = Vec::new();
        for descriptor in &manifest.layers {
            if !descriptor.media_type.starts_with(AGENT_MEDIA_TYPE_PREFIX) {
                return Err(ApiaryError::Verification {
                    reference: reference.to_string(),
                    source: VerifyError::MalformedSignature {
                        reason: format!(
                            "layer media type {:?} is not an agent's",
                            descriptor.media_type
                        ),
                    },
                });
            }
            // A refused blob is named as this agent's layer.
            let data = session.blob(&repo, descriptor).await.map_err(|e| match e {
                ApiaryError::Verification { mut source, .. } => {
                    if let VerifyError::DigestMismatch { what, .. }
                    | VerifyError::SizeMismatch { what, .. } = &mut source
                    {
                        *what = format!("layer {}", descriptor.digest);
                    }
                    ApiaryError::Verification {
                        reference: reference.to_string(),
                        source,
                    }
                }
                other => other,
            })?;
            layers.push(PulledLayer {
                media_type: descriptor.media_type.clone(),
                digest: descriptor.digest.clone(),
                data,
            });
        }
        Ok(PulledAgent {
            entry,
            digest: signature.digest.clone(),
            manifest: manifest_bytes,
            layers,
            signature,
        })
    }

    async fn attestations(&self, p: &Principal, reference: &AgentRef) -> Result<Attestations> {
        self.gate_read(p, &agent_resource(reference)).await?;
        let entry = self.visible_entry(p, reference).await?;
        let repo = entry.repository.clone();
        let session = self.session(
            &subject(p),
            vec![RegistryScope::repository(repo.clone(), &["pull"])],
        )?;
        let envelopes = self
            .attached_envelopes(&session, &repo, &entry.digest)
            .await?;
        let keys = &self.inner.config.trusted_keys;
        let shown = reference.to_string();
        let mut out = Attestations::default();
        match reference.channel {
            Channel::Sandbox => {
                out.provenance = self
                    .verified_statement(
                        &envelopes,
                        SLSA_PROVENANCE_V1,
                        &entry.digest,
                        &keys.sandbox,
                        &shown,
                    )?
                    .map(|(s, _)| s);
            }
            Channel::Production => {
                out.verification_summary = self
                    .verified_statement(
                        &envelopes,
                        SLSA_VSA_V1,
                        &entry.digest,
                        &keys.production,
                        &shown,
                    )?
                    .map(|(s, _)| s);
                let from = entry
                    .promoted_from
                    .as_deref()
                    .and_then(|f| f.rsplit_once('@'))
                    .map(|(_, d)| d.to_owned());
                if let Some(sandbox_digest) = from {
                    out.provenance = self
                        .verified_statement(
                            &envelopes,
                            SLSA_PROVENANCE_V1,
                            &sandbox_digest,
                            &keys.sandbox,
                            &shown,
                        )?
                        .map(|(s, _)| s);
                }
            }
        }
        Ok(out)
    }

    async fn promote(&self, p: &Principal, reference: &AgentRef) -> Result<Promotion> {
        self.promote_agent(p, reference).await
    }

    async fn experiments(&self, p: &Principal, query: &ExperimentQuery) -> Result<Vec<Experiment>> {
        let scope = query.tenant.clone().unwrap_or_else(|| p.tenant.clone());
        self.gate_read(p, &Resource::Tenant(scope)).await?;
        Ok(index::experiments(self.store(), query)
            .await?
            .into_iter()
            .filter(|e| e.visibility.allows(p, &e.reference.tenant))
            .collect())
    }

    async fn catalog(&self, p: &Principal) -> Result<Vec<String>> {
        self.gate_read(p, &Resource::System).await?;
        let scope = RegistryScope::catalog();
        if self.inner.access.grant(p, &scope).await?.is_empty() {
            return Err(self
                .inner
                .hive
                .deny(
                    p,
                    Action::ReadRegistry,
                    &Resource::System,
                    "the registry catalog spans tenants: system:admin only",
                )
                .await
                .into());
        }
        let session = self.session(&subject(p), vec![scope])?;
        session.catalog().await
    }
}

mod access;
mod promote;

pub use access::ApiaryAccess;
