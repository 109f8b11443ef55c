//! Promotion: the policy's rules in order, each refusal named and audited;
//! then the copy to production, the production signature and the
//! verification summary.

use hive_core::auth::{Action, Resource};
use hive_core::principal::Principal;
use hive_iam::registry_token::RegistryScope;
use oci_client::manifest::OciImageManifest;
use serde_json::json;

use super::{Apiary, SYSTEM_SUBJECT, is_worker, signed_annotations, subject};
use crate::catalog::{AgentEntry, AgentRef, Channel};
use crate::error::{ApiaryError, PromotionRule, Result};
use crate::index::{self, ExperimentStatus, PromotedTo, Refusal};
use crate::oci::{cosign_tag, sha256_digest};
use crate::provenance::{
    Envelope, ResourceDescriptor, SLSA_PROVENANCE_V1, SLSA_VSA_V1, verification_summary,
};
use crate::registry::Promotion;
use crate::signature;

impl Apiary {
    /// [`AgentRegistry::promote`].
    pub(super) async fn promote_agent(
        &self,
        p: &Principal,
        reference: &AgentRef,
    ) -> Result<Promotion> {
        let r = reference;
        let resource = Resource::Named {
            kind: "experiment",
            id: r.to_string(),
            tenant: r.tenant.clone(),
        };
        let refused_scope = |e: ApiaryError| match e {
            ApiaryError::Forbidden { reason, .. } => ApiaryError::PromotionRefused {
                reference: r.to_string(),
                rule: PromotionRule::CallerScope,
                reason,
            },
            other => other,
        };
        if is_worker(p) {
            // Workers are refused (and audited) before anything is looked at.
            self.inner
                .hive
                .authorize(p, Action::PromoteExperiment, &resource)
                .await
                .map_err(|e| refused_scope(e.into()))?;
        }
        if r.channel != Channel::Sandbox {
            return Err(ApiaryError::invalid(format!(
                "{r}: only sandbox agents are promoted"
            )));
        }
        let entry = self.visible_entry(p, r).await?;
        self.inner
            .hive
            .authorize_with(p, Action::PromoteExperiment, &resource, || {
                json!({ "agent": r.to_string(), "digest": entry.digest, "policy": self.inner.policy })
            })
            .await
            .map_err(|e| refused_scope(e.into()))?;
        let prod_ref = r.in_channel(Channel::Production);
        if index::entry(self.store(), &prod_ref).await?.is_some() {
            return Err(ApiaryError::Conflict {
                message: format!("{prod_ref} exists: it was promoted already"),
            });
        }
        let Some(prod_key) = self.inner.production_key.clone() else {
            return Err(ApiaryError::SigningUnavailable {
                message: "no production signing key is configured".into(),
            });
        };
        let sandbox_repo = entry.repository.clone();
        let prod_repo = self.inner.config.repository(&prod_ref);
        let session = self.session(
            SYSTEM_SUBJECT,
            vec![
                RegistryScope::repository(sandbox_repo.clone(), &["pull"]),
                RegistryScope::repository(prod_repo.clone(), &["pull", "push"]),
            ],
        )?;
        let Some((manifest_bytes, digest)) = session.manifest(&sandbox_repo, &r.version).await?
        else {
            return Err(ApiaryError::not_found(r));
        };

        // Rule: signed by a sandbox key (the full pull verification).
        if self.inner.policy.require_sandbox_signature {
            let verified = signature::verify(
                &self.inner.config,
                session.auth(),
                &sandbox_repo,
                &digest,
                Channel::Sandbox,
                &signed_annotations(r),
            )
            .await;
            let checked = match verified {
                Ok(_) if digest != entry.digest => Err(format!(
                    "tag {} points at {digest}, the catalog recorded {}",
                    r.version, entry.digest
                )),
                Ok(_) => Ok(()),
                Err(ApiaryError::Verification { source, .. }) => Err(source.to_string()),
                Err(other) => return Err(other),
            };
            if let Err(reason) = checked {
                return Err(self
                    .refuse(p, r, &resource, PromotionRule::SignedBySandboxKey, reason)
                    .await);
            }
        }

        // Rule: provenance present (and signed by a sandbox key, about this digest).
        let envelopes = self
            .attached_envelopes(&session, &sandbox_repo, &digest)
            .await;
        let provenance = match envelopes.and_then(|envs| {
            self.verified_statement(
                &envs,
                SLSA_PROVENANCE_V1,
                &digest,
                &self.inner.config.trusted_keys.sandbox,
                &r.to_string(),
            )
        }) {
            Ok(found) => found,
            Err(ApiaryError::Verification { source, .. })
                if self.inner.policy.require_provenance =>
            {
                return Err(self
                    .refuse(
                        p,
                        r,
                        &resource,
                        PromotionRule::ProvenancePresent,
                        source.to_string(),
                    )
                    .await);
            }
            Err(ApiaryError::Verification { .. }) => None,
            Err(other) => return Err(other),
        };
        if self.inner.policy.require_provenance && provenance.is_none() {
            return Err(self
                .refuse(
                    p,
                    r,
                    &resource,
                    PromotionRule::ProvenancePresent,
                    "no SLSA provenance attestation is attached".into(),
                )
                .await);
        }

        // Rules: metric thresholds.
        let metrics = match &provenance {
            Some((statement, _)) => statement.metric_values(),
            None => entry.metrics.clone(),
        };
        if let Err((rule, reason)) = self.inner.policy.check_metrics(&metrics) {
            return Err(self.refuse(p, r, &resource, rule, reason).await);
        }

        // Copy to production, re-sign, attach the verification summary.
        let mut manifest: OciImageManifest =
            serde_json::from_slice(&manifest_bytes).map_err(|e| ApiaryError::Registry {
                operation: "read sandbox manifest".into(),
                message: e.to_string(),
                source: Some(Box::new(e)),
            })?;
        for descriptor in std::iter::once(&manifest.config).chain(manifest.layers.iter()) {
            let data = session.blob(&sandbox_repo, descriptor).await?;
            session.push_blob(&prod_repo, &data).await?;
        }
        let now = self.inner.hive.clock().now();
        let sandbox_qualified = self.inner.config.qualified(&sandbox_repo);
        let mut production = AgentEntry {
            reference: prod_ref.clone(),
            repository: prod_repo.clone(),
            digest: String::new(),
            published_by: subject(p),
            created_at: now,
            promoted_from: Some(format!("{sandbox_qualified}@{digest}")),
            metrics: metrics.clone(),
            ..entry.clone()
        };
        manifest.annotations = Some(production.to_annotations());
        let (prod_digest, _) = session
            .push_manifest(&prod_repo, &prod_ref.version, &manifest)
            .await?;
        production.digest = prod_digest.clone();
        signature::sign(
            &self.inner.config,
            session.auth(),
            &prod_repo,
            &prod_digest,
            &prod_key,
            &signed_annotations(&prod_ref),
        )
        .await?;
        let mut inputs = Vec::new();
        let mut attach = Vec::new();
        if let Some((_, raw)) = &provenance {
            inputs.push(ResourceDescriptor {
                name: Some(SLSA_PROVENANCE_V1.into()),
                uri: Some(format!(
                    "{sandbox_qualified}:{}",
                    cosign_tag(&digest, "att")
                )),
                digest: [(
                    "sha256".to_owned(),
                    sha256_digest(raw).trim_start_matches("sha256:").to_owned(),
                )]
                .into(),
                ..ResourceDescriptor::default()
            });
            attach.push((raw.clone(), SLSA_PROVENANCE_V1));
        }
        let vsa = verification_summary(
            &self.inner.config.qualified(&prod_repo),
            &prod_digest,
            now,
            &serde_json::to_value(&self.inner.policy).unwrap_or_default(),
            &inputs,
        );
        let vsa_envelope = serde_json::to_vec(&Envelope::sign(&vsa, &prod_key)).unwrap_or_default();
        attach.push((vsa_envelope, SLSA_VSA_V1));
        self.push_attestations(&session, &prod_repo, &prod_digest, &attach)
            .await?;
        index::insert_version(
            self.store(),
            &production,
            json!({
                "event": "promoted",
                "version": prod_ref.version,
                "digest": prod_digest,
                "from": production.promoted_from,
                "by": subject(p),
            }),
            now,
        )
        .await?;
        let promoted = PromotedTo {
            reference: prod_ref.clone(),
            digest: prod_digest.clone(),
            by: subject(p),
            at: now,
        };
        index::update_experiment(
            self.store(),
            r,
            json!({ "event": "promoted", "to": prod_ref.to_string(), "digest": prod_digest, "by": subject(p) }),
            now,
            |e| {
                e.status = ExperimentStatus::Promoted;
                e.promoted = Some(promoted.clone());
            },
        )
        .await?;
        Ok(Promotion {
            sandbox: entry,
            production,
            verification_summary: vsa,
        })
    }

    async fn refuse(
        &self,
        p: &Principal,
        r: &AgentRef,
        resource: &Resource,
        rule: PromotionRule,
        reason: String,
    ) -> ApiaryError {
        let now = self.inner.hive.clock().now();
        let _denied = self
            .inner
            .hive
            .deny(
                p,
                Action::PromoteExperiment,
                resource,
                &format!("rule {rule}: {reason}"),
            )
            .await;
        let refusal = Refusal {
            rule: rule.to_string(),
            reason: reason.clone(),
            by: subject(p),
            at: now,
        };
        let event = json!({ "event": "promotion_refused", "rule": refusal.rule, "reason": reason, "by": refusal.by });
        if let Err(e) = index::update_experiment(self.store(), r, event, now, |e| {
            e.status = if e.promoted.is_some() {
                ExperimentStatus::Promoted
            } else {
                ExperimentStatus::Refused
            };
            e.last_refusal = Some(refusal.clone());
        })
        .await
        {
            tracing::warn!(error = %e, agent = %r, "could not record a refused promotion on its experiment");
        }
        ApiaryError::PromotionRefused {
            reference: r.to_string(),
            rule,
            reason,
        }
    }
}
