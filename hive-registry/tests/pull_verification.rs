//! Publishing signs; pulling verifies and fails closed — against a real
//! `distribution` registry, with the attacks done for real (files altered in
//! the registry's storage, manifests and signatures re-pushed).

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use base64::Engine as _;
use hive_core::Principal;
use hive_registry::{
    AgentRegistry, AgentSigningKey, AnnotationLocation, ApiaryError, Channel, PromotionPolicy,
    PublishRequest, VerifyError, annotation, cosign, cosign_tag, signed_annotations,
};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use common::{Fixture, run};

fn admin() -> Principal {
    Principal::admin("acme", "alice")
}

fn raw_client() -> Client {
    Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..ClientConfig::default()
    })
}

fn reference(f: &Fixture, repo: &str, tag_or_digest: &str) -> Reference {
    let (host, repo) = (f.registry.host(), repo.to_owned());
    if tag_or_digest.starts_with("sha256:") {
        Reference::with_digest(host, repo, tag_or_digest.into())
    } else {
        Reference::with_tag(host, repo, tag_or_digest.into())
    }
}

/// The raw manifest at `repo:tag`.
async fn raw_manifest(f: &Fixture, repo: &str, tag: &str) -> (Vec<u8>, String) {
    let (bytes, digest) = raw_client()
        .pull_manifest_raw(
            &reference(f, repo, tag),
            &RegistryAuth::Anonymous,
            &["application/vnd.oci.image.manifest.v1+json"],
        )
        .await
        .expect("manifest");
    (bytes.to_vec(), digest)
}

async fn raw_blob(f: &Fixture, repo: &str, digest: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let client = raw_client();
    let r = reference(f, repo, digest);
    client
        .store_auth_if_needed(r.resolve_registry(), &RegistryAuth::Anonymous)
        .await;
    client.pull_blob(&r, digest, &mut out).await.expect("blob");
    out
}

async fn push_blob(f: &Fixture, repo: &str, data: &[u8]) -> String {
    let digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(data))
    );
    let client = raw_client();
    let r = reference(f, repo, "x");
    client
        .store_auth_if_needed(r.resolve_registry(), &RegistryAuth::Anonymous)
        .await;
    client
        .push_blob(&r, data.to_vec(), &digest)
        .await
        .expect("push blob");
    digest
}

async fn push_manifest(f: &Fixture, repo: &str, tag: &str, bytes: &[u8]) {
    let client = raw_client();
    let r = reference(f, repo, tag);
    client
        .store_auth_if_needed(r.resolve_registry(), &RegistryAuth::Anonymous)
        .await;
    client
        .push_manifest_raw(
            &r,
            bytes.to_vec(),
            "application/vnd.oci.image.manifest.v1+json"
                .parse()
                .unwrap(),
        )
        .await
        .expect("push manifest");
}

/// Copies `from_repo:from_tag` (manifest and every blob) to `to_repo:to_tag`,
/// as an attacker with push access to `to_repo` would.
async fn copy_manifest(f: &Fixture, from_repo: &str, from_tag: &str, to_repo: &str, to_tag: &str) {
    let (bytes, _) = raw_manifest(f, from_repo, from_tag).await;
    let m: OciImageManifest = serde_json::from_slice(&bytes).unwrap();
    for d in std::iter::once(&m.config).chain(m.layers.iter()) {
        let data = raw_blob(f, from_repo, &d.digest).await;
        push_blob(f, to_repo, &data).await;
    }
    push_manifest(f, to_repo, to_tag, &bytes).await;
}

fn verify_error(e: ApiaryError) -> VerifyError {
    match e {
        ApiaryError::Verification { source, .. } => source,
        other => panic!("expected a verification error, got {other:?}"),
    }
}

async fn publish(f: &Fixture, name: &str, content: &str) -> hive_registry::AgentEntry {
    f.apiary
        .publish(
            &admin(),
            PublishRequest::new(name, "1.0.0", content.as_bytes().to_vec()),
        )
        .await
        .expect("published")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_agent_pulls_with_verified_signature_and_digests() {
    let Some(f) = common::plain(PromotionPolicy::default()).await else {
        return;
    };
    let entry = publish(&f, "summarize", "agent definition v1").await;
    assert_eq!(entry.repository, "hive/acme/sandbox/summarize");
    assert!(entry.digest.starts_with("sha256:"));
    // A host holds the contract from hive-core, not the OCI implementation.
    let registry: std::sync::Arc<dyn hive_core::registry::AgentRegistry> =
        std::sync::Arc::new(f.apiary.clone());
    let pulled = registry
        .pull(&admin(), &entry.reference)
        .await
        .expect("pull verifies");
    // The pulled agent is plain data that crosses a serde boundary intact.
    let json = serde_json::to_string(&pulled).unwrap();
    let back: hive_core::registry::PulledAgent = serde_json::from_str(&json).unwrap();
    assert_eq!(back, pulled);
    assert_eq!(pulled.digest, entry.digest);
    assert_eq!(pulled.layers.len(), 1);
    assert_eq!(pulled.layers[0].data, b"agent definition v1");
    assert_eq!(pulled.signature.key_id, f.sandbox.public_key().key_id());
    assert_eq!(
        pulled.signature.identity,
        format!("{}/hive/acme/sandbox/summarize", f.registry.host())
    );
    assert_eq!(pulled.signature.annotations[annotation::VERSION], "1.0.0");
    // The manifest is an OCI artifact of Hive's own type, annotated with the entry.
    let m: OciImageManifest = serde_json::from_slice(&pulled.manifest).unwrap();
    assert_eq!(
        m.artifact_type.as_deref(),
        Some(hive_registry::AGENT_ARTIFACT_TYPE)
    );
    assert_eq!(m.config.media_type, hive_registry::AGENT_CONFIG_MEDIA_TYPE);
    assert_eq!(m.annotations.unwrap()[annotation::VISIBILITY], "tenant");
    // Publishing the same version again is refused.
    let again = f
        .apiary
        .publish(
            &admin(),
            PublishRequest::new("summarize", "1.0.0", b"other".to_vec()),
        )
        .await;
    assert!(
        matches!(again, Err(ApiaryError::Conflict { .. })),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_artifact_is_refused() {
    let Some(f) = common::plain(PromotionPolicy::default()).await else {
        return;
    };
    let entry = publish(&f, "summarize", "v1").await;
    // Remove the signature manifest (the registry allows deletes).
    let (_, sig_digest) =
        raw_manifest(&f, &entry.repository, &cosign_tag(&entry.digest, "sig")).await;
    let url = format!(
        "{}/v2/{}/manifests/{sig_digest}",
        f.registry.url(),
        entry.repository
    );
    let code = run(Command::new("curl").args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "DELETE",
        &url,
    ]));
    assert_eq!(String::from_utf8_lossy(&code), "202");
    let err = f.apiary.pull(&admin(), &entry.reference).await.unwrap_err();
    assert!(
        matches!(verify_error(err), VerifyError::Unsigned { ref signature_tag } if *signature_tag == cosign_tag(&entry.digest, "sig"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_by_an_untrusted_key_is_refused() {
    let Some(f) = common::plain(PromotionPolicy::default()).await else {
        return;
    };
    let entry = publish(&f, "summarize", "v1").await;
    let attacker = AgentSigningKey::generate();
    cosign::sign(
        &f.config,
        &RegistryAuth::Anonymous,
        &entry.repository,
        &entry.digest,
        &attacker,
        &signed_annotations(&entry.reference),
    )
    .await
    .unwrap();
    let err = verify_error(f.apiary.pull(&admin(), &entry.reference).await.unwrap_err());
    assert_eq!(
        err,
        VerifyError::UntrustedSignature {
            channel: Channel::Sandbox,
            keys: 1
        }
    );
    // The production key does not stand in for the sandbox key either.
    cosign::sign(
        &f.config,
        &RegistryAuth::Anonymous,
        &entry.repository,
        &entry.digest,
        &f.production,
        &signed_annotations(&entry.reference),
    )
    .await
    .unwrap();
    let err = verify_error(f.apiary.pull(&admin(), &entry.reference).await.unwrap_err());
    assert!(
        matches!(err, VerifyError::UntrustedSignature { .. }),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_layer_in_registry_storage_is_refused() {
    let Some(f) = common::plain(PromotionPolicy::default()).await else {
        return;
    };
    let entry = publish(&f, "summarize", "the real agent").await;
    let (bytes, _) = raw_manifest(&f, &entry.repository, "1.0.0").await;
    let m: OciImageManifest = serde_json::from_slice(&bytes).unwrap();
    let layer = &m.layers[0].digest;
    std::fs::write(f.registry.blob_path(layer), b"the evil agent").unwrap();
    let err = verify_error(f.apiary.pull(&admin(), &entry.reference).await.unwrap_err());
    match err {
        VerifyError::DigestMismatch {
            what,
            expected,
            actual,
        } => {
            assert_eq!(what, format!("layer {layer}"));
            assert_eq!(&expected, layer);
            assert_ne!(actual, expected);
        }
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_signature_payload_is_refused() {
    let Some(f) = common::plain(PromotionPolicy::default()).await else {
        return;
    };
    let entry = publish(&f, "summarize", "v1").await;
    let sig_tag = cosign_tag(&entry.digest, "sig");
    let (sig_bytes, _) = raw_manifest(&f, &entry.repository, &sig_tag).await;
    let sig: OciImageManifest = serde_json::from_slice(&sig_bytes).unwrap();
    let payload_digest = sig.layers[0].digest.clone();
    let payload = raw_blob(&f, &entry.repository, &payload_digest).await;

    // 1. Re-pushed: the payload altered (a new blob, a new manifest), the
    //    original signature kept. The signature no longer verifies.
    let mut altered: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    altered["optional"]["dev.hive.agent.note"] = "approved".into();
    let altered = serde_json::to_vec(&altered).unwrap();
    let altered_digest = push_blob(&f, &entry.repository, &altered).await;
    let mut forged = sig.clone();
    forged.layers[0].digest = altered_digest;
    forged.layers[0].size = altered.len() as i64;
    push_manifest(
        &f,
        &entry.repository,
        &sig_tag,
        &serde_json::to_vec(&forged).unwrap(),
    )
    .await;
    let err = verify_error(f.apiary.pull(&admin(), &entry.reference).await.unwrap_err());
    assert!(
        matches!(err, VerifyError::UntrustedSignature { .. }),
        "{err:?}"
    );

    // 2. In storage: the original payload's bytes changed under its digest.
    push_manifest(&f, &entry.repository, &sig_tag, &sig_bytes).await;
    f.apiary
        .pull(&admin(), &entry.reference)
        .await
        .expect("restored signature verifies");
    let mut bytes = payload.clone();
    bytes[10] ^= 0x01;
    std::fs::write(f.registry.blob_path(&payload_digest), &bytes).unwrap();
    let err = verify_error(f.apiary.pull(&admin(), &entry.reference).await.unwrap_err());
    assert!(
        matches!(err, VerifyError::DigestMismatch { ref what, ref expected, .. } if what == "signature payload" && *expected == payload_digest),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_copied_from_another_repository_is_refused() {
    let Some(f) = common::plain(PromotionPolicy::default()).await else {
        return;
    };
    let alpha = publish(&f, "alpha", "alpha agent").await;
    let beta = publish(&f, "beta", "beta agent").await;
    // The attacker can push to beta's repository but cannot sign: it copies
    // alpha's artifact under beta's tag, and alpha's valid signature with it.
    copy_manifest(&f, &alpha.repository, "1.0.0", &beta.repository, "1.0.0").await;
    let sig_tag = cosign_tag(&alpha.digest, "sig");
    copy_manifest(&f, &alpha.repository, &sig_tag, &beta.repository, &sig_tag).await;
    let err = verify_error(f.apiary.pull(&admin(), &beta.reference).await.unwrap_err());
    assert_eq!(
        err,
        VerifyError::IdentityMismatch {
            signed: format!("{}/{}", f.registry.host(), alpha.repository),
            expected: format!("{}/{}", f.registry.host(), beta.repository),
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_annotation_missing_or_different_is_refused() {
    let Some(f) = common::plain(PromotionPolicy::default()).await else {
        return;
    };
    let entry = publish(&f, "summarize", "v1").await;
    let sign = |annotations: BTreeMap<String, String>, digest: String| {
        let (config, repo, key) = (
            f.config.clone(),
            entry.repository.clone(),
            f.sandbox.clone(),
        );
        async move {
            cosign::sign(
                &config,
                &RegistryAuth::Anonymous,
                &repo,
                &digest,
                &key,
                &annotations,
            )
            .await
            .unwrap()
        }
    };

    // Signed by the trusted key, but without Hive's annotations.
    sign(BTreeMap::new(), entry.digest.clone()).await;
    let err = verify_error(f.apiary.pull(&admin(), &entry.reference).await.unwrap_err());
    assert_eq!(
        err,
        VerifyError::AnnotationMismatch {
            location: AnnotationLocation::Signature,
            key: annotation::CHANNEL.into(),
            expected: "sandbox".into(),
            found: None,
        }
    );

    // Signed for production, pulled as sandbox.
    let mut wrong = signed_annotations(&entry.reference);
    wrong.insert(annotation::CHANNEL.into(), "production".into());
    sign(wrong, entry.digest.clone()).await;
    let err = verify_error(f.apiary.pull(&admin(), &entry.reference).await.unwrap_err());
    assert!(
        matches!(err, VerifyError::AnnotationMismatch { location: AnnotationLocation::Signature, ref key, ref found, .. }
            if key == annotation::CHANNEL && found.as_deref() == Some("production")),
        "{err:?}"
    );

    // A manifest whose catalog annotations were changed (made public), then
    // properly signed: the manifest no longer matches the catalog entry.
    let (bytes, _) = raw_manifest(&f, &entry.repository, "1.0.0").await;
    let mut m: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    m["annotations"][annotation::VISIBILITY] = "public".into();
    let bytes = serde_json::to_vec(&m).unwrap();
    push_manifest(&f, &entry.repository, "1.0.0", &bytes).await;
    let digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
    );
    sign(signed_annotations(&entry.reference), digest).await;
    let err = verify_error(f.apiary.pull(&admin(), &entry.reference).await.unwrap_err());
    assert_eq!(
        err,
        VerifyError::AnnotationMismatch {
            location: AnnotationLocation::Manifest,
            key: annotation::VISIBILITY.into(),
            expected: "tenant".into(),
            found: Some("public".into()),
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_moved_to_another_signed_version_is_refused() {
    let Some(f) = common::plain(PromotionPolicy::default()).await else {
        return;
    };
    let v1 = publish(&f, "summarize", "v1").await;
    let v2 = f
        .apiary
        .publish(
            &admin(),
            PublishRequest::new("summarize", "2.0.0", b"v2".to_vec()),
        )
        .await
        .unwrap();
    // Roll 1.0.0 forward to 2.0.0's (validly signed) manifest.
    copy_manifest(&f, &v2.repository, "2.0.0", &v1.repository, "1.0.0").await;
    let err = verify_error(f.apiary.pull(&admin(), &v1.reference).await.unwrap_err());
    assert!(
        matches!(err, VerifyError::AnnotationMismatch { location: AnnotationLocation::Signature, ref key, ref found, .. }
            if key == annotation::VERSION && found.as_deref() == Some("2.0.0")),
        "{err:?}"
    );
}

/// One case checked without sigstore-rs: the `.sig` manifest and payload
/// fetched with curl, the signature verified with `openssl dgst`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_verifies_with_curl_and_openssl() {
    let Some(f) = common::plain(PromotionPolicy::default()).await else {
        return;
    };
    let entry = publish(&f, "summarize", "cross-checked agent").await;
    let dir = tempfile::tempdir().unwrap();
    let sig_url = format!(
        "{}/v2/{}/manifests/{}",
        f.registry.url(),
        entry.repository,
        cosign_tag(&entry.digest, "sig")
    );
    let manifest = run(Command::new("curl").args([
        "-sf",
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json",
        &sig_url,
    ]));
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let layer = &manifest["layers"][0];
    assert_eq!(
        layer["mediaType"],
        "application/vnd.dev.cosign.simplesigning.v1+json"
    );
    let payload_path = dir.path().join("payload.json");
    let blob_url = format!(
        "{}/v2/{}/blobs/{}",
        f.registry.url(),
        entry.repository,
        layer["digest"].as_str().unwrap()
    );
    run(Command::new("curl")
        .args(["-sf", "-o"])
        .arg(&payload_path)
        .arg(&blob_url));
    let sig = base64::engine::general_purpose::STANDARD
        .decode(
            layer["annotations"]["dev.cosignproject.cosign/signature"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    std::fs::write(dir.path().join("sig.bin"), sig).unwrap();
    std::fs::write(dir.path().join("pub.pem"), f.sandbox.public_key().pem()).unwrap();
    std::fs::write(
        dir.path().join("other.pem"),
        f.production.public_key().pem(),
    )
    .unwrap();

    let verify = |key: &str| {
        Command::new("openssl")
            .args([
                "dgst",
                "-sha256",
                "-verify",
                key,
                "-signature",
                "sig.bin",
                "payload.json",
            ])
            .current_dir(dir.path())
            .output()
            .expect("openssl runs")
    };
    let ok = verify("pub.pem");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "Verified OK");
    let other = verify("other.pem");
    assert!(!other.status.success(), "another key must not verify");

    // The payload signs this digest and names this repository.
    let payload: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&payload_path).unwrap()).unwrap();
    assert_eq!(
        payload["critical"]["image"]["docker-manifest-digest"],
        entry.digest.as_str()
    );
    assert_eq!(
        payload["critical"]["identity"]["docker-reference"],
        format!("{}/{}", f.registry.host(), entry.repository).as_str()
    );
    assert_eq!(
        payload["critical"]["type"],
        "cosign container image signature"
    );
    assert_eq!(payload["optional"][annotation::NAME], "summarize");
}
