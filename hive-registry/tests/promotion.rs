//! Provenance and promotion against a real `distribution` registry: the SLSA
//! provenance a loop's agent carries, the promotion policy's rules (each
//! refusal named and audited), the production copy re-signed with its
//! verification summary, and the experiments listing.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use hive_core::Principal;
use hive_core::audit::AuditOutcome;
use hive_iam::Role;
use hive_registry::provenance::{SLSA_PROVENANCE_V1, SLSA_VSA_V1};
use hive_registry::{
    AgentRef, AgentRegistry, ApiaryError, Channel, ExperimentQuery, ExperimentStatus, Link,
    PromotionPolicy, PromotionRule, Provenance, PublishRequest, VerifyError, Visibility,
    annotation, cosign, cosign_tag, signed_annotations,
};
use oci_client::secrets::RegistryAuth;

use common::{Fixture, run};

fn admin() -> Principal {
    Principal::admin("acme", "alice")
}

fn provenance(run_id: &str, loop_id: &str) -> Provenance {
    Provenance {
        builder_id: format!("https://hive.example/loops/{loop_id}"),
        invocation_id: run_id.into(),
        rationale: Some(Link::new(format!("s3://hive/rationale/{run_id}.md"))),
        metrics: Some(
            Link::new(format!("s3://hive/metrics/{run_id}.json")).with_sha256("ab".repeat(32)),
        ),
        base_model: Some(Link::new("hf://meta-llama/Llama-3.1-8B@a1b2c3")),
        parent_agent: Some(Link::new("ghcr.io/acme/agents/summarize@sha256:0f0f")),
        parameters: serde_json::json!({ "goal": "shorter summaries" }),
        ..Provenance::default()
    }
}

fn request(name: &str, version: &str, accuracy: f64, prov: Option<Provenance>) -> PublishRequest {
    PublishRequest {
        description: format!("{name} agent"),
        metrics: [("accuracy".to_owned(), accuracy)].into(),
        provenance: prov,
        ..PublishRequest::new(name, version, format!("{name} {version}").into_bytes())
    }
}

fn policy() -> PromotionPolicy {
    PromotionPolicy::new().require_metric("accuracy", 0.9)
}

fn denied_reasons(f: &Fixture, actor: &str) -> Vec<String> {
    f.audit
        .find(actor, "experiment.promote", AuditOutcome::Denied)
        .into_iter()
        .map(|e| e.details["reason"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn refused_rule(e: ApiaryError) -> PromotionRule {
    match e {
        ApiaryError::PromotionRefused { rule, .. } => rule,
        other => panic!("expected a refused promotion, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provenance_is_attached_signed_and_readable_through_the_index() {
    let Some(f) = common::plain(policy()).await else {
        return;
    };
    let entry = f
        .apiary
        .publish(
            &admin(),
            request(
                "summarize",
                "2.0.0",
                0.93,
                Some(provenance("run-7", "summarizer")),
            ),
        )
        .await
        .unwrap();
    let summary = entry.provenance.clone().expect("summary in the entry");
    assert_eq!(summary.invocation_id, "run-7");
    let got = f.apiary.get(&admin(), &entry.reference).await.unwrap();
    assert_eq!(got, entry);

    let att = f
        .apiary
        .attestations(&admin(), &entry.reference)
        .await
        .unwrap();
    let p = att.provenance.expect("provenance");
    assert!(att.verification_summary.is_none());
    assert_eq!(p.predicate_type, SLSA_PROVENANCE_V1);
    assert!(p.is_about(&entry.digest));
    assert_eq!(
        p.builder_id(),
        Some("https://hive.example/loops/summarizer")
    );
    assert_eq!(p.invocation_id(), Some("run-7"));
    assert_eq!(
        p.resource("rationale").unwrap().uri.as_deref(),
        Some("s3://hive/rationale/run-7.md")
    );
    let metrics = p.resource("metrics").unwrap();
    assert_eq!(metrics.uri.as_deref(), Some("s3://hive/metrics/run-7.json"));
    assert_eq!(metrics.digest["sha256"], "ab".repeat(32));
    assert_eq!(p.metric_values()["accuracy"], 0.93);
    assert_eq!(
        p.resource("base-model").unwrap().uri.as_deref(),
        Some("hf://meta-llama/Llama-3.1-8B@a1b2c3")
    );
    assert!(p.resource("parent-agent").is_some());

    // It is a cosign-style attestation: a DSSE layer at sha256-<digest>.att.
    let url = format!(
        "{}/v2/{}/manifests/{}",
        f.registry.url(),
        entry.repository,
        cosign_tag(&entry.digest, "att")
    );
    let m = run(Command::new("curl").args([
        "-sf",
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json",
        &url,
    ]));
    let m: serde_json::Value = serde_json::from_slice(&m).unwrap();
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.dsse.envelope.v1+json"
    );
    assert_eq!(
        m["layers"][0]["annotations"]["predicateType"],
        SLSA_PROVENANCE_V1
    );

    // An altered attestation is refused, not skipped.
    let layer = m["layers"][0]["digest"].as_str().unwrap();
    let path = f.registry.blob_path(layer);
    let mut env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    env["signatures"][0]["sig"] = "MEUCIQ==".into();
    std::fs::write(&path, serde_json::to_vec(&env).unwrap()).unwrap();
    let err = f
        .apiary
        .attestations(&admin(), &entry.reference)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.verify_error(),
            Some(VerifyError::DigestMismatch { .. }) | Some(VerifyError::BadAttestation { .. })
        ),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_copies_resigns_attaches_a_vsa_and_is_audited() {
    let Some(f) = common::plain(policy()).await else {
        return;
    };
    let sandbox = f
        .apiary
        .publish(
            &admin(),
            request(
                "summarize",
                "2.0.0",
                0.95,
                Some(provenance("run-8", "summarizer")),
            ),
        )
        .await
        .unwrap();
    let promotion = f
        .apiary
        .promote(&admin(), &sandbox.reference)
        .await
        .expect("promoted");
    let prod = &promotion.production;
    assert_eq!(
        prod.reference,
        sandbox.reference.in_channel(Channel::Production)
    );
    assert_eq!(prod.repository, "hive/acme/production/summarize");
    assert_eq!(
        prod.promoted_from.as_deref(),
        Some(
            format!(
                "{}/{}@{}",
                f.registry.host(),
                sandbox.repository,
                sandbox.digest
            )
            .as_str()
        )
    );

    // Production pulls verify with the production key.
    let pulled = f
        .apiary
        .pull(&admin(), &prod.reference)
        .await
        .expect("production pull");
    assert_eq!(pulled.signature.key_id, f.production.public_key().key_id());
    assert_eq!(pulled.layers[0].data, b"summarize 2.0.0");
    assert_eq!(
        pulled.signature.annotations[annotation::CHANNEL],
        "production"
    );
    // …and only with it: the production copy carries no sandbox signature.
    let as_sandbox = cosign::verify(
        &f.config,
        &RegistryAuth::Anonymous,
        &prod.repository,
        &prod.digest,
        Channel::Sandbox,
        &signed_annotations(&prod.reference),
    )
    .await
    .unwrap_err();
    assert!(matches!(
        as_sandbox.verify_error(),
        Some(VerifyError::UntrustedSignature { .. })
    ));

    // The verification summary and the original provenance are readable.
    let att = f
        .apiary
        .attestations(&admin(), &prod.reference)
        .await
        .unwrap();
    let vsa = att.verification_summary.expect("VSA");
    assert_eq!(vsa, promotion.verification_summary);
    assert_eq!(vsa.predicate_type, SLSA_VSA_V1);
    assert!(vsa.is_about(&prod.digest));
    assert_eq!(vsa.predicate["verificationResult"], "PASSED");
    assert_eq!(vsa.predicate["verifier"]["id"], "urn:hive:apiary:promotion");
    assert_eq!(
        vsa.predicate["policy"]["content"]["min_metrics"]["accuracy"],
        0.9
    );
    assert_eq!(
        vsa.predicate["inputAttestations"].as_array().unwrap().len(),
        1
    );
    let p = att.provenance.expect("provenance travels with the agent");
    assert!(p.is_about(&sandbox.digest));
    assert_eq!(p.invocation_id(), Some("run-8"));

    // Audited, and the experiment says where it went.
    assert_eq!(
        f.audit
            .find("alice", "experiment.promote", AuditOutcome::Allowed)
            .len(),
        1
    );
    let exps = f
        .apiary
        .experiments(&admin(), &ExperimentQuery::default())
        .await
        .unwrap();
    assert_eq!(exps.len(), 1);
    assert_eq!(exps[0].status, ExperimentStatus::Promoted);
    assert_eq!(exps[0].promoted.as_ref().unwrap().digest, prod.digest);

    // Twice is a conflict.
    let again = f.apiary.promote(&admin(), &sandbox.reference).await;
    assert!(
        matches!(again, Err(ApiaryError::Conflict { .. })),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_promotions_name_the_failed_rule_and_are_audited() {
    let Some(f) = common::plain(policy()).await else {
        return;
    };
    let user = Principal::user("acme", "bob");
    let good = f
        .apiary
        .publish(
            &admin(),
            request("good", "1.0.0", 0.95, Some(provenance("run-1", "l1"))),
        )
        .await
        .unwrap();
    let weak = f
        .apiary
        .publish(
            &admin(),
            request("weak", "1.0.0", 0.42, Some(provenance("run-2", "l1"))),
        )
        .await
        .unwrap();
    let bare = f
        .apiary
        .publish(&admin(), request("bare", "1.0.0", 0.99, None))
        .await
        .unwrap();
    let unsigned = f
        .apiary
        .publish(
            &admin(),
            request("unsigned", "1.0.0", 0.99, Some(provenance("run-3", "l1"))),
        )
        .await
        .unwrap();
    let (_, sig) = {
        let url = format!(
            "{}/v2/{}/manifests/{}",
            f.registry.url(),
            unsigned.repository,
            cosign_tag(&unsigned.digest, "sig")
        );
        let headers = run(Command::new("curl").args([
            "-sfI",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
            &url,
        ]));
        let headers = String::from_utf8_lossy(&headers).to_string();
        let digest = headers
            .lines()
            .find_map(|l| {
                l.strip_prefix("Docker-Content-Digest: ")
                    .or_else(|| l.strip_prefix("docker-content-digest: "))
            })
            .expect("digest header")
            .trim()
            .to_owned();
        ((), digest)
    };
    let url = format!(
        "{}/v2/{}/manifests/{sig}",
        f.registry.url(),
        unsigned.repository
    );
    run(Command::new("curl").args(["-sf", "-X", "DELETE", &url]));

    // Caller without experiment:promote.
    let rule = refused_rule(f.apiary.promote(&user, &good.reference).await.unwrap_err());
    assert_eq!(rule, PromotionRule::CallerScope);
    assert_eq!(
        denied_reasons(&f, "bob"),
        ["missing scope experiment:promote"]
    );

    // Metric below its threshold.
    let err = f
        .apiary
        .promote(&admin(), &weak.reference)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("metric:accuracy>=0.9"), "{err}");
    assert_eq!(
        refused_rule(err),
        PromotionRule::MetricThreshold {
            metric: "accuracy".into(),
            min: 0.9
        }
    );
    // No provenance.
    let rule = refused_rule(
        f.apiary
            .promote(&admin(), &bare.reference)
            .await
            .unwrap_err(),
    );
    assert_eq!(rule, PromotionRule::ProvenancePresent);
    // Not signed by a sandbox key any more.
    let rule = refused_rule(
        f.apiary
            .promote(&admin(), &unsigned.reference)
            .await
            .unwrap_err(),
    );
    assert_eq!(rule, PromotionRule::SignedBySandboxKey);

    let reasons = denied_reasons(&f, "alice");
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons[0].starts_with("rule metric:accuracy>=0.9: "),
        "{reasons:?}"
    );
    assert!(
        reasons[1].starts_with("rule provenance-present: "),
        "{reasons:?}"
    );
    assert!(
        reasons[2].starts_with("rule signed-by-sandbox-key: unsigned"),
        "{reasons:?}"
    );

    // Nothing reached production; the refusals are on the experiments.
    let prod = f
        .apiary
        .list(
            &admin(),
            &hive_registry::AgentQuery {
                channel: Some(Channel::Production),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(prod.is_empty(), "{prod:?}");
    let refused = f
        .apiary
        .experiments(
            &admin(),
            &ExperimentQuery {
                status: Some(ExperimentStatus::Refused),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let rules: BTreeMap<String, String> = refused
        .iter()
        .map(|e| {
            (
                e.reference.name.clone(),
                e.last_refusal.clone().unwrap().rule,
            )
        })
        .collect();
    assert_eq!(rules["weak"], "metric:accuracy>=0.9");
    assert_eq!(rules["unsigned"], "signed-by-sandbox-key");
    assert_eq!(refused.len(), 2, "bare has no provenance, so no experiment");

    // The good one still goes through.
    f.apiary
        .promote(&admin(), &good.reference)
        .await
        .expect("promoted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn experiments_are_listable_with_metrics_and_filtered_by_visibility() {
    let Some(f) = common::plain(policy()).await else {
        return;
    };
    let user = Principal::user("acme", "bob");
    let other = Principal::admin("globex", "gina");
    f.apiary
        .publish(
            &admin(),
            request("a", "1", 0.91, Some(provenance("r1", "loop-a"))),
        )
        .await
        .unwrap();
    f.apiary
        .publish(
            &admin(),
            request("b", "1", 0.81, Some(provenance("r2", "loop-a"))),
        )
        .await
        .unwrap();
    f.apiary
        .publish(
            &admin(),
            PublishRequest {
                visibility: Visibility::private([Role::Admin]),
                ..request("c", "1", 0.99, Some(provenance("r3", "loop-b")))
            },
        )
        .await
        .unwrap();

    let all = f
        .apiary
        .experiments(&admin(), &ExperimentQuery::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|e| e.status == ExperimentStatus::Candidate));
    let a = all.iter().find(|e| e.reference.name == "a").unwrap();
    assert_eq!(a.metrics["accuracy"], 0.91);
    assert_eq!(a.builder_id, "https://hive.example/loops/loop-a");
    assert_eq!(a.invocation_id, "r1");
    assert_eq!(
        a.rationale_uri.as_deref(),
        Some("s3://hive/rationale/r1.md")
    );

    let by_loop = f
        .apiary
        .experiments(
            &admin(),
            &ExperimentQuery {
                builder_id: Some("https://hive.example/loops/loop-a".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(by_loop.len(), 2);
    let for_user = f
        .apiary
        .experiments(&user, &ExperimentQuery::default())
        .await
        .unwrap();
    let names: Vec<&str> = for_user.iter().map(|e| e.reference.name.as_str()).collect();
    assert_eq!(
        names,
        ["a", "b"],
        "the private experiment is hidden from users"
    );
    assert!(
        f.apiary
            .experiments(&other, &ExperimentQuery::default())
            .await
            .unwrap()
            .is_empty()
    );

    // Search sees the same set as listing.
    let found = f.apiary.search(&user, "AGENT").await.unwrap();
    assert_eq!(found.len(), 2);
    let hidden = AgentRef::new("acme", Channel::Sandbox, "c", "1");
    assert!(matches!(
        f.apiary.get(&user, &hidden).await,
        Err(ApiaryError::NotFound { .. })
    ));
}
