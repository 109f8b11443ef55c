//! Cosign key-based signatures with sigstore-rs (the `cosign` feature):
//! signing on publish and promotion, verification on pull.
//!
//! A signature is a simple-signing payload
//! (`{"critical":{"identity":{"docker-reference":…},"image":{"docker-manifest-digest":…},…},"optional":{…}}`)
//! signed with ECDSA P-256/SHA-256, stored as the layer of an OCI manifest
//! tagged `sha256-<digest>.sig` in the artifact's repository, the signature in
//! the layer's `dev.cosignproject.cosign/signature` annotation — what
//! `cosign sign --key` writes and `cosign verify --key` reads.
//!
//! sigstore-rs fetches the signature layers (checking each layer against its
//! digest and each payload against the artifact digest) and verifies them
//! against the trusted keys. It does not check that the signed identity names
//! the repository being pulled, nor Hive's required annotations: Hive does,
//! here. When sigstore-rs finds no usable layer, Hive looks at the `.sig`
//! manifest itself to say why ([`VerifyError`]).

use std::collections::{BTreeMap, HashMap};

use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use sigstore::cosign::constraint::{AnnotationMarker, PrivateKeySigner};
use sigstore::cosign::verification_constraint::{PublicKeyVerifier, VerificationConstraint as _};
use sigstore::cosign::{ClientBuilder, Constraint as _, CosignCapabilities as _, SignatureLayer};
use sigstore::crypto::SigningScheme;
use sigstore::crypto::signing_key::SigStoreKeyPair;
use sigstore::registry::{
    Auth, Certificate, CertificateEncoding, ClientConfig, ClientProtocol, OciReference,
};

use crate::catalog::{COSIGN_SIGNATURE_ANNOTATION, COSIGN_SIGNATURE_MEDIA_TYPE, Channel};
use crate::config::RegistryConfig;
use crate::error::{AnnotationLocation, ApiaryError, Result, VerifyError};
use crate::keys::AgentSigningKey;
use crate::oci::{Session, cosign_tag};
use crate::signature::VerifiedSignature;

fn sigstore_config(config: &RegistryConfig) -> ClientConfig {
    ClientConfig {
        protocol: if config.is_plain_http() {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        accept_invalid_certificates: config.tls.accept_invalid_certificates,
        extra_root_certificates: config
            .tls
            .ca_certificates_pem
            .iter()
            .map(|pem| Certificate {
                encoding: CertificateEncoding::Pem,
                data: pem.as_bytes().to_vec(),
            })
            .collect(),
        ..ClientConfig::default()
    }
}

fn sigstore_auth(auth: &RegistryAuth) -> Auth {
    match auth {
        RegistryAuth::Anonymous => Auth::Anonymous,
        RegistryAuth::Basic(u, p) => Auth::Basic(u.clone(), p.clone()),
        RegistryAuth::Bearer(t) => Auth::Bearer(t.clone()),
    }
}

fn sigstore_err(
    operation: &str,
    repository: &str,
    e: sigstore::errors::SigstoreError,
) -> ApiaryError {
    let message = e.to_string();
    // sigstore-rs carries registry failures as text: recognise refusals.
    if message.contains("401") || message.contains("Not authorized") || message.contains("DENIED") {
        return ApiaryError::RegistryDenied {
            operation: operation.into(),
            repository: repository.into(),
            message,
        };
    }
    ApiaryError::Registry {
        operation: operation.into(),
        message,
        source: Some(Box::new(e)),
    }
}

/// Signs `repository@digest` with `key`: the signed identity is
/// `host/repository`, `annotations` go into the payload's `optional` section.
/// Replaces any signature at `sha256-<digest>.sig`.
pub async fn sign(
    config: &RegistryConfig,
    auth: &RegistryAuth,
    repository: &str,
    digest: &str,
    key: &AgentSigningKey,
    annotations: &BTreeMap<String, String>,
) -> Result<()> {
    let host = config.registry_host();
    let image = OciReference::with_digest(host.clone(), repository.into(), digest.into());
    let mut layer = SignatureLayer::new_unsigned(&image, digest)
        .map_err(|e| sigstore_err("build signature", repository, e))?;
    layer.simple_signing.critical.identity.docker_reference = config.qualified(repository);
    let marker = AnnotationMarker::new(
        annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<HashMap<_, _>>(),
    );
    marker
        .add_constraint(&mut layer)
        .map_err(|e| sigstore_err("annotate signature", repository, e))?;
    let signer = SigStoreKeyPair::from_pem(key.to_pkcs8_pem().as_bytes())
        .and_then(|k| k.to_sigstore_signer(&SigningScheme::ECDSA_P256_SHA256_ASN1))
        .map_err(|e| ApiaryError::SigningUnavailable {
            message: format!("the signing key is not usable by sigstore: {e}"),
        })?;
    PrivateKeySigner::new_with_signer(signer)
        .add_constraint(&mut layer)
        .map_err(|e| sigstore_err("sign", repository, e))?;
    let mut client = ClientBuilder::default()
        .with_oci_client_config(sigstore_config(config))
        .build()
        .map_err(|e| sigstore_err("build sigstore client", repository, e))?;
    let target = OciReference::with_tag(host, repository.into(), cosign_tag(digest, "sig"));
    client
        .push_signature(None, &sigstore_auth(auth), &target, vec![layer])
        .await
        .map_err(|e| sigstore_err("push signature", repository, e))?;
    Ok(())
}

/// Verifies the cosign signature of `repository@digest`: a signature layer
/// for exactly this digest must verify against a trusted key of `channel`,
/// name `host/repository` as its identity, and carry every `required`
/// annotation with its value.
pub async fn verify(
    config: &RegistryConfig,
    auth: &RegistryAuth,
    repository: &str,
    digest: &str,
    channel: Channel,
    required: &BTreeMap<String, String>,
) -> Result<VerifiedSignature> {
    let keys = config.trusted_keys.of(channel);
    let fail = |source: VerifyError| ApiaryError::Verification {
        reference: format!("{}@{digest}", config.qualified(repository)),
        source,
    };
    if keys.is_empty() {
        return Err(fail(VerifyError::NoTrustedKeys { channel }));
    }
    let mut client = ClientBuilder::default()
        .with_oci_client_config(sigstore_config(config))
        .build()
        .map_err(|e| sigstore_err("build sigstore client", repository, e))?;
    let image = OciReference::with_digest(config.registry_host(), repository.into(), digest.into());
    let layers = client
        .trusted_signature_layers(&sigstore_auth(auth), &image)
        .await
        .map_err(|e| sigstore_err("fetch signatures", repository, e))?;
    if layers.is_empty() {
        return Err(explain_missing(config, auth, repository, digest).await);
    }
    let verifiers: Vec<(PublicKeyVerifier, &str)> = keys
        .iter()
        .filter_map(|k| {
            PublicKeyVerifier::new(k.pem().as_bytes(), &SigningScheme::ECDSA_P256_SHA256_ASN1)
                .ok()
                .map(|v| (v, k.key_id()))
        })
        .collect();
    let verified: Vec<(&SignatureLayer, &str)> = layers
        .iter()
        .filter_map(|layer| {
            verifiers
                .iter()
                .find(|(v, _)| v.verify(layer).unwrap_or(false))
                .map(|(_, id)| (layer, *id))
        })
        .collect();
    let Some(first) = verified.first() else {
        return Err(fail(VerifyError::UntrustedSignature {
            channel,
            keys: keys.len(),
        }));
    };
    let expected = config.qualified(repository);
    let matching: Vec<&(&SignatureLayer, &str)> = verified
        .iter()
        .filter(|(l, _)| l.simple_signing.critical.identity.docker_reference == expected)
        .collect();
    if matching.is_empty() {
        return Err(fail(VerifyError::IdentityMismatch {
            signed: first
                .0
                .simple_signing
                .critical
                .identity
                .docker_reference
                .clone(),
            expected,
        }));
    }
    let mut first_mismatch = None;
    for (layer, key_id) in matching {
        // sigstore-rs checks this too; Hive does not rely on it: the signed
        // payload must name the manifest that was pulled.
        if let Err(e) = check_signed_digest(
            &layer.simple_signing.critical.image.docker_manifest_digest,
            digest,
        ) {
            first_mismatch.get_or_insert(e);
            continue;
        }
        let annotations: BTreeMap<String, String> = layer
            .simple_signing
            .optional
            .as_ref()
            .map(|o| {
                o.extra
                    .iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        let mismatch = required.iter().find_map(|(k, v)| {
            let found = annotations.get(k);
            (found != Some(v)).then(|| VerifyError::AnnotationMismatch {
                location: AnnotationLocation::Signature,
                key: k.clone(),
                expected: v.clone(),
                found: found.cloned(),
            })
        });
        match mismatch {
            None => {
                return Ok(VerifiedSignature {
                    key_id: (*key_id).to_owned(),
                    identity: expected,
                    digest: digest.to_owned(),
                    annotations,
                });
            }
            Some(m) => {
                first_mismatch.get_or_insert(m);
            }
        }
    }
    Err(fail(first_mismatch.unwrap_or(
        VerifyError::MalformedSignature {
            reason: "no signature layer".into(),
        },
    )))
}

/// The digest a verified signature signs must be the digest of the pulled
/// manifest.
fn check_signed_digest(signed: &str, pulled: &str) -> std::result::Result<(), VerifyError> {
    if signed == pulled {
        Ok(())
    } else {
        Err(VerifyError::SignedDigestMismatch {
            signed: signed.to_owned(),
            pulled: pulled.to_owned(),
        })
    }
}

/// sigstore-rs found no usable signature layer: look at the `.sig` manifest to
/// say why.
async fn explain_missing(
    config: &RegistryConfig,
    auth: &RegistryAuth,
    repository: &str,
    digest: &str,
) -> ApiaryError {
    let tag = cosign_tag(digest, "sig");
    let reference = format!("{}@{digest}", config.qualified(repository));
    let fail = |source: VerifyError| ApiaryError::Verification {
        reference: reference.clone(),
        source,
    };
    let session = Session::new(config, auth.clone());
    let bytes = match session.manifest(repository, &tag).await {
        Ok(Some((bytes, _))) => bytes,
        Ok(None) => {
            return fail(VerifyError::Unsigned { signature_tag: tag });
        }
        Err(ApiaryError::Verification { source, .. }) => return fail(source),
        Err(e) => return e,
    };
    let manifest: OciImageManifest = match serde_json::from_slice(&bytes) {
        Ok(m) => m,
        Err(e) => {
            return fail(VerifyError::MalformedSignature {
                reason: format!("the {tag} manifest is not an OCI image manifest: {e}"),
            });
        }
    };
    if manifest.layers.is_empty() {
        return fail(VerifyError::Unsigned { signature_tag: tag });
    }
    for descriptor in &manifest.layers {
        if descriptor.media_type != COSIGN_SIGNATURE_MEDIA_TYPE {
            continue;
        }
        let payload = match session.blob(repository, descriptor).await {
            Ok(p) => p,
            Err(ApiaryError::Verification { source, .. }) => {
                return fail(match source {
                    VerifyError::DigestMismatch {
                        expected, actual, ..
                    } => VerifyError::DigestMismatch {
                        what: "signature payload".into(),
                        expected,
                        actual,
                    },
                    other => other,
                });
            }
            Err(e) => return e,
        };
        let payload: serde_json::Value = match serde_json::from_slice(&payload) {
            Ok(p) => p,
            Err(e) => {
                return fail(VerifyError::MalformedSignature {
                    reason: format!("the signature payload is not JSON: {e}"),
                });
            }
        };
        let signed = payload["critical"]["image"]["docker-manifest-digest"]
            .as_str()
            .unwrap_or_default();
        if signed != digest {
            return fail(VerifyError::SignedDigestMismatch {
                signed: signed.to_owned(),
                pulled: digest.to_owned(),
            });
        }
        let has_signature = descriptor
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(COSIGN_SIGNATURE_ANNOTATION));
        if !has_signature {
            return fail(VerifyError::Unsigned { signature_tag: tag });
        }
    }
    fail(VerifyError::MalformedSignature {
        reason: format!("the {tag} manifest has no usable simple-signing layer"),
    })
}

#[cfg(test)]
mod tests {
    use super::check_signed_digest;
    use hive_core::registry::VerifyError;

    /// Issue 11, item 11: a verified signature whose payload names another
    /// manifest is refused by Hive's own comparison.
    #[test]
    fn a_signature_for_another_digest_is_refused() {
        assert!(check_signed_digest("sha256:aa", "sha256:aa").is_ok());
        match check_signed_digest("sha256:aa", "sha256:bb") {
            Err(VerifyError::SignedDigestMismatch { signed, pulled }) => {
                assert_eq!(signed, "sha256:aa");
                assert_eq!(pulled, "sha256:bb");
            }
            other => panic!("expected SignedDigestMismatch, got {other:?}"),
        }
    }
}
