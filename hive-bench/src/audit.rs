//! Audit appends under contention (issue 11, item 9):
//!
//! ```text
//! hive-bench backend=B scenario=audit_contention processes=P submitters=S seconds=T submits=… refused=… errors=… submits_per_s=… audit_events=… chain_ok=…
//! ```
//!
//! `P` processes (this binary, started again with `--audit-child`) open the one
//! store, each with the deployment default (scope policy, hash-chained audit
//! trail), and run `S` submitters for `T` seconds, all for one tenant: every
//! submit appends to that tenant's one chain. `refused` counts submits answered
//! `Conflict` (the chain's compare-and-set lost too often), `errors` any other
//! failure. At the end the chain is verified whole and must hold one event per
//! submit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hive_core::{Error, Hive, Principal, TaskSpec, TenantId};

use crate::{Args, children, store_url};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const TENANT: &str = "bench";

async fn hive(url: &str) -> Result<(Hive, Arc<dyn hive_core::store::Store>), BoxError> {
    let store = hive_store::open(url).await?;
    let hive = Hive::builder()
        .store(store.clone())
        .authorizer(Arc::new(hive_iam::ScopePolicy::new()))
        .auditor(Arc::new(hive_iam::AuditTrail::new(store.clone())))
        .build()?;
    Ok((hive, store))
}

/// One child process: `submitters` loops submitting for `seconds`; prints
/// `audit-child submits=… refused=… errors=…`.
pub(crate) async fn child(url: &str, submitters: usize, seconds: u64) -> Result<(), BoxError> {
    let (hive, _) = hive(url).await?;
    let hive = Arc::new(hive);
    let (ok, refused, errors) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut joins = Vec::new();
    for s in 0..submitters {
        let (hive, ok, refused, errors) =
            (hive.clone(), ok.clone(), refused.clone(), errors.clone());
        joins.push(tokio::spawn(async move {
            let p = Principal::user(TENANT, format!("submitter{s}"));
            while Instant::now() < end {
                match hive
                    .submit(&p, TaskSpec::new("noop", serde_json::Value::Null))
                    .await
                {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(Error::Conflict { message }) => {
                        if refused.load(Ordering::Relaxed) == 0 {
                            eprintln!("hive-bench: refused: {message}");
                        }
                        refused.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => {
                        if errors.load(Ordering::Relaxed) == 0 {
                            eprintln!("hive-bench: submit failed: {e}");
                        }
                        errors.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    for j in joins {
        j.await?;
    }
    println!(
        "audit-child submits={} refused={} errors={}",
        ok.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed)
    );
    Ok(())
}

/// The parent: starts the children on one fresh store, sums their counts,
/// verifies the chain.
pub(crate) async fn bench(args: &Args) -> Result<(), BoxError> {
    if args.backend == "memory" {
        return Err(
            "--audit-contention needs a store shared by processes (sqlite, postgres, redis)".into(),
        );
    }
    let url = store_url(args)?;
    // Create the schema once, before the children race to.
    drop(hive(&url).await?);
    let started = Instant::now();
    let child_args = [
        "--audit-child".to_owned(),
        url.clone(),
        "--submitters".to_owned(),
        args.submitters.to_string(),
        "--seconds".to_owned(),
        args.seconds.to_string(),
    ];
    let lines = children::run(args.processes, &args.backend, &child_args, "audit-child ").await?;
    let (mut submits, mut refused, mut errors) = (0u64, 0u64, 0u64);
    for line in &lines {
        let line = line.as_str();
        submits += children::field::<u64>(line, "submits")?;
        refused += children::field::<u64>(line, "refused")?;
        errors += children::field::<u64>(line, "errors")?;
    }
    let took = started.elapsed().as_secs_f64();
    let (hive, store) = hive(&url).await?;
    let trail = hive_iam::AuditTrail::new(store);
    let report = trail
        .verify(&hive, &Principal::system(), &TenantId::new(TENANT))
        .await?;
    println!(
        "hive-bench backend={} scenario=audit_contention processes={} submitters={} seconds={} submits={submits} refused={refused} errors={errors} submits_per_s={:.0} audit_events={} chain_ok={}",
        args.backend,
        args.processes,
        args.submitters,
        args.seconds,
        submits as f64 / took,
        report.checked,
        report.ok,
    );
    if !report.ok || report.checked < submits {
        return Err(format!("the audit chain does not hold every submit: {report:?}").into());
    }
    Ok(())
}
