//! Workflow driving across processes (issue 11, item 15):
//!
//! ```text
//! hive-bench backend=B scenario=workflow_drivers processes=P workflows=W seconds=T process=K partitions=… passes=… driven_p50=… pass_p50_ms=… pass_max_ms=…
//! hive-bench backend=B scenario=workflow_drivers processes=P workflows=W seconds=T driven_total=… pass_p50_ms=… pass_max_ms=…
//! ```
//!
//! `W` (`--tasks`, default 5,000) workflows are submitted, each waiting on
//! one step task that no node runs, so all stay running. Then `P`
//! processes (this binary again, with `--driver-child`) each run a `Hive`
//! with the background workflow driver for `T` seconds and report, from
//! [`hive_core::Hive::workflow_driver_stats`], how many partitions they held
//! and how long their passes took, over the last half of the run (after the
//! partitions settled). The last line sums the workflows the processes drove
//! per pass and gives the slowest process's median pass.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hive_core::workflow::{StepSpec, WorkflowSpec};
use hive_core::{Hive, HiveConfig, Principal};

use crate::{Args, children, percentile, store_url};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn hive(url: &str, drive: bool) -> Result<Hive, BoxError> {
    let store = hive_store::open(url).await?;
    let config = HiveConfig {
        run_supervisor: false,
        run_workflows: drive,
        ..HiveConfig::default()
    };
    Ok(Hive::builder()
        .store(store)
        .authorizer(Arc::new(hive_core::auth::AllowAll))
        .config(config)
        .build()?)
}

/// One child: drives for `seconds`, then prints `driver-child …`.
pub(crate) async fn child(url: &str, seconds: u64) -> Result<(), BoxError> {
    let hive = hive(url, true).await?;
    let end = Instant::now() + Duration::from_secs(seconds);
    let settle = Instant::now() + Duration::from_secs(seconds / 2);
    let (mut passes, mut times, mut driven) = (0, Vec::new(), Vec::new());
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let s = hive.workflow_driver_stats();
        if s.passes != passes {
            passes = s.passes;
            if Instant::now() >= settle {
                times.push(s.last_pass.as_secs_f64() * 1e3);
                driven.push(s.last_driven as f64);
            }
        }
    }
    let s = hive.workflow_driver_stats();
    hive.shutdown();
    times.sort_by(f64::total_cmp);
    driven.sort_by(f64::total_cmp);
    println!(
        "driver-child partitions={} passes={} driven_p50={:.0} pass_p50_ms={:.3} pass_max_ms={:.3}",
        s.partitions,
        s.passes,
        percentile(&driven, 0.5),
        percentile(&times, 0.5),
        times.last().copied().unwrap_or(f64::NAN),
    );
    Ok(())
}

/// The parent: submits the workflows, starts the drivers, prints their lines.
pub(crate) async fn bench(args: &Args) -> Result<(), BoxError> {
    if args.backend == "memory" {
        return Err("--workflow-drivers needs a store shared by processes".into());
    }
    let url = store_url(args)?;
    let workflows = args.tasks.unwrap_or(5_000);
    {
        let hive = hive(&url, false).await?;
        let p = Principal::user("bench", "driver");
        for i in 0..workflows {
            // No node runs `parked`: the step waits, the workflow stays running.
            let spec = WorkflowSpec::new(
                format!("parked-{i}"),
                vec![StepSpec::new("wait", "parked", serde_json::json!(i))],
            );
            hive.submit_workflow(&p, spec).await?;
        }
    }
    let child_args = [
        "--driver-child".to_owned(),
        url.clone(),
        "--seconds".to_owned(),
        args.seconds.to_string(),
    ];
    let lines = children::run(args.processes, &args.backend, &child_args, "driver-child ").await?;
    let (backend, processes, seconds) = (&args.backend, args.processes, args.seconds);
    let (mut total, mut slowest, mut longest) = (0.0, 0.0f64, 0.0f64);
    for (k, line) in lines.iter().enumerate() {
        let line = line.as_str();
        println!(
            "hive-bench backend={backend} scenario=workflow_drivers processes={processes} workflows={workflows} seconds={seconds} process={k} {line}"
        );
        total += children::field::<f64>(line, "driven_p50")?;
        slowest = slowest.max(children::field::<f64>(line, "pass_p50_ms")?);
        longest = longest.max(children::field::<f64>(line, "pass_max_ms")?);
    }
    println!(
        "hive-bench backend={backend} scenario=workflow_drivers processes={processes} workflows={workflows} seconds={seconds} driven_total={total:.0} pass_p50_ms={slowest:.3} pass_max_ms={longest:.3}"
    );
    Ok(())
}
