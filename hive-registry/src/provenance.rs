//! Provenance: in-toto statements with a SLSA provenance v1 predicate (what
//! publishing attaches) or a SLSA verification summary (what promotion
//! attaches), signed as DSSE envelopes.
//!
//! Mapping of an agent loop onto SLSA provenance v1:
//!
//! | SLSA field | Hive |
//! |---|---|
//! | `runDetails.builder.id` | the generating loop |
//! | `runDetails.metadata.invocationId` | the loop run |
//! | `runDetails.byproducts` | `rationale` and `metrics` links (metric values as the metrics link's annotations) |
//! | `buildDefinition.resolvedDependencies` | `base-model` and `parent-agent` |
//! | `buildDefinition.externalParameters` | the agent's name, version and tenant, and the loop's own parameters |

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hive_core::clock::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

pub use hive_core::registry::provenance::*;

use crate::catalog::{AgentRef, rfc3339};
use crate::keys::{AgentSigningKey, TrustedKey};

/// The SLSA provenance statement of an agent published at
/// `qualified_repository@digest`.
pub fn agent_provenance(
    qualified_repository: &str,
    digest: &str,
    reference: &AgentRef,
    provenance: &Provenance,
    metric_values: &BTreeMap<String, f64>,
) -> Statement {
    let mut byproducts = Vec::new();
    if let Some(l) = &provenance.rationale {
        byproducts.push(ResourceDescriptor::link("rationale", l));
    }
    let mut metrics = provenance
        .metrics
        .as_ref()
        .map(|l| ResourceDescriptor::link("metrics", l))
        .unwrap_or_else(|| ResourceDescriptor {
            name: Some("metrics".into()),
            ..ResourceDescriptor::default()
        });
    metrics.annotations = metric_values
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    if provenance.metrics.is_some() || !metric_values.is_empty() {
        byproducts.push(metrics);
    }
    let mut dependencies = Vec::new();
    if let Some(l) = &provenance.base_model {
        dependencies.push(ResourceDescriptor::link("base-model", l));
    }
    if let Some(l) = &provenance.parent_agent {
        dependencies.push(ResourceDescriptor::link("parent-agent", l));
    }
    let mut metadata = json!({ "invocationId": provenance.invocation_id });
    if let Some(t) = provenance.started_on {
        metadata["startedOn"] = json!(rfc3339(t));
    }
    if let Some(t) = provenance.finished_on {
        metadata["finishedOn"] = json!(rfc3339(t));
    }
    Statement {
        statement_type: IN_TOTO_STATEMENT_V1.into(),
        subject: vec![subject(qualified_repository, digest)],
        predicate_type: SLSA_PROVENANCE_V1.into(),
        predicate: json!({
            "buildDefinition": {
                "buildType": AGENT_LOOP_BUILD_TYPE,
                "externalParameters": {
                    "agent": reference.name,
                    "version": reference.version,
                    "tenant": reference.tenant,
                    "loop": provenance.parameters,
                },
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": { "id": provenance.builder_id },
                "metadata": metadata,
                "byproducts": byproducts,
            },
        }),
    }
}

/// The SLSA verification summary promotion attaches to the production
/// artifact `qualified_repository@digest`.
pub fn verification_summary(
    qualified_repository: &str,
    digest: &str,
    time_verified: Timestamp,
    policy: &Value,
    input_attestations: &[ResourceDescriptor],
) -> Statement {
    let policy_bytes = serde_json::to_vec(policy).unwrap_or_default();
    Statement {
        statement_type: IN_TOTO_STATEMENT_V1.into(),
        subject: vec![subject(qualified_repository, digest)],
        predicate_type: SLSA_VSA_V1.into(),
        predicate: json!({
            "verifier": { "id": PROMOTION_VERIFIER_ID },
            "timeVerified": rfc3339(time_verified),
            "resourceUri": format!("{qualified_repository}@{digest}"),
            "policy": {
                "uri": "urn:hive:apiary:promotion-policy",
                "digest": { "sha256": hex::encode(Sha256::digest(&policy_bytes)) },
                "content": policy,
            },
            "inputAttestations": input_attestations,
            "verificationResult": "PASSED",
            "verifiedLevels": ["SLSA_BUILD_LEVEL_1"],
            "slsaVersion": "1.0",
        }),
    }
}

fn subject(qualified_repository: &str, digest: &str) -> ResourceDescriptor {
    ResourceDescriptor {
        name: Some(qualified_repository.into()),
        uri: None,
        digest: [(
            "sha256".to_owned(),
            digest.trim_start_matches("sha256:").to_owned(),
        )]
        .into(),
        annotations: BTreeMap::new(),
    }
}

/// One signature of a DSSE envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    /// The signing key's id ([`TrustedKey::key_id`]).
    #[serde(default)]
    pub keyid: String,
    /// Base64 of the ASN.1 DER ECDSA-SHA256 signature over the PAE.
    pub sig: String,
}

/// A DSSE envelope (`application/vnd.dsse.envelope.v1+json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// The payload's type ([`IN_TOTO_PAYLOAD_TYPE`]).
    pub payload_type: String,
    /// Base64 of the payload.
    pub payload: String,
    /// The signatures.
    pub signatures: Vec<EnvelopeSignature>,
}

/// DSSE's pre-authentication encoding: `DSSEv1 SP len(type) SP type SP
/// len(body) SP body`.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

impl Envelope {
    /// Signs `statement` with `key`.
    pub fn sign(statement: &Statement, key: &AgentSigningKey) -> Envelope {
        let payload = serde_json::to_vec(statement).unwrap_or_default();
        let signature = key.sign_der(&pae(IN_TOTO_PAYLOAD_TYPE, &payload));
        Envelope {
            payload_type: IN_TOTO_PAYLOAD_TYPE.into(),
            payload: B64.encode(&payload),
            signatures: vec![EnvelopeSignature {
                keyid: key.public_key().key_id().into(),
                sig: B64.encode(signature),
            }],
        }
    }

    /// The statement, if a signature verifies against one of `keys`; the
    /// error says why not.
    pub fn verify(&self, keys: &[TrustedKey]) -> Result<Statement, String> {
        if self.payload_type != IN_TOTO_PAYLOAD_TYPE {
            return Err(format!(
                "payload type {:?} is not {IN_TOTO_PAYLOAD_TYPE}",
                self.payload_type
            ));
        }
        let payload = B64
            .decode(&self.payload)
            .map_err(|e| format!("payload is not base64: {e}"))?;
        let message = pae(&self.payload_type, &payload);
        let verified = self.signatures.iter().any(|s| {
            let Ok(sig) = B64.decode(&s.sig) else {
                return false;
            };
            keys.iter()
                .filter(|k| s.keyid.is_empty() || s.keyid == k.key_id())
                .any(|k| k.verify_der(&message, &sig))
        });
        if !verified {
            return Err(format!(
                "no signature verifies against the {} trusted key(s)",
                keys.len()
            ));
        }
        let statement: Statement = serde_json::from_slice(&payload)
            .map_err(|e| format!("payload is not an in-toto statement: {e}"))?;
        if statement.statement_type != IN_TOTO_STATEMENT_V1 {
            return Err(format!(
                "statement type {:?} is not {IN_TOTO_STATEMENT_V1}",
                statement.statement_type
            ));
        }
        Ok(statement)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Channel;

    fn sample() -> Statement {
        let p = Provenance {
            builder_id: "https://hive.example/loops/summarizer".into(),
            invocation_id: "run-42".into(),
            rationale: Some(Link::new("s3://r/run-42.md")),
            metrics: Some(Link::new("s3://m/run-42.json").with_sha256("ab".repeat(32))),
            base_model: Some(Link::new("hf://meta/llama-3@abc")),
            parent_agent: Some(Link::new("reg/hive/acme/production/summarize@sha256:01")),
            parameters: json!({ "goal": "shorter summaries" }),
            ..Provenance::default()
        };
        let metrics = [("accuracy".to_owned(), 0.91)].into();
        agent_provenance(
            "reg/hive/acme/sandbox/summarize",
            "sha256:abcd",
            &AgentRef::new("acme", Channel::Sandbox, "summarize", "2"),
            &p,
            &metrics,
        )
    }

    #[test]
    fn provenance_maps_the_loop_onto_slsa_fields() {
        let s = sample();
        assert_eq!(s.predicate_type, SLSA_PROVENANCE_V1);
        assert!(s.is_about("sha256:abcd") && !s.is_about("sha256:abce"));
        assert_eq!(
            s.builder_id(),
            Some("https://hive.example/loops/summarizer")
        );
        assert_eq!(s.invocation_id(), Some("run-42"));
        assert_eq!(
            s.resource("rationale").unwrap().uri.as_deref(),
            Some("s3://r/run-42.md")
        );
        assert_eq!(
            s.resource("base-model").unwrap().uri.as_deref(),
            Some("hf://meta/llama-3@abc")
        );
        assert!(s.resource("parent-agent").is_some());
        assert_eq!(s.metric_values()["accuracy"], 0.91);
    }

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
    }

    #[test]
    fn envelopes_verify_only_with_the_signing_key_and_untouched_payload() {
        let key = AgentSigningKey::generate();
        let other = AgentSigningKey::generate();
        let env = Envelope::sign(&sample(), &key);
        assert_eq!(env.verify(&[key.public_key().clone()]).unwrap(), sample());
        assert!(env.verify(&[other.public_key().clone()]).is_err());
        assert!(env.verify(&[]).is_err());
        let mut tampered = env.clone();
        let mut s = sample();
        s.subject[0].digest.insert("sha256".into(), "ffff".into());
        tampered.payload = B64.encode(serde_json::to_vec(&s).unwrap());
        assert!(tampered.verify(&[key.public_key().clone()]).is_err());
    }
}
