//! A fork-join workflow: one step fetches a list of documents, a map step
//! summarizes each in parallel, a second branch counts words, and a join step
//! receives every parent's result (failed ones included) and prints them.
//!
//! ```sh
//! cargo run --example fork_join            # HIVE_URL picks the backend (default memory://)
//! ```

use std::time::Duration;

use hive::worker::handler_fn;
use hive::workflow::{JoinMode, StepSpec, Trigger, WorkflowEventKind, WorkflowSpec};
use hive::{Principal, RetryPolicy, TaskError, WorkerOptions};
use serde_json::json;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("HIVE_URL").unwrap_or_else(|_| "memory://".into());
    let hive = hive::open(&url).await?;
    let alice = Principal::user("acme", "alice");

    let worker = hive
        .start_worker(
            &alice,
            WorkerOptions::new("laptop")
                .capacity(16)
                .handler(
                    "fetch",
                    handler_fn(|_| async {
                        Ok(json!({"docs": [
                            "Hive runs agent tasks on worker nodes",
                            "Every task's stream ends with one terminal event",
                            "Joins see every parent, failed ones too",
                        ]}))
                    }),
                )
                .handler(
                    "summarize",
                    handler_fn(|ctx| async move {
                        let doc = ctx.input()["item"].as_str().unwrap_or_default().to_owned();
                        let first = doc.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
                        Ok(json!(format!("{first}…")))
                    }),
                )
                .handler(
                    "count_words",
                    handler_fn(|ctx| async move {
                        let docs = ctx.input()["parents"]["fetch"]["output"]["docs"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default();
                        let words: usize = docs
                            .iter()
                            .filter_map(|d| d.as_str())
                            .map(|d| d.split_whitespace().count())
                            .sum();
                        Ok(json!({ "words": words }))
                    }),
                )
                .handler(
                    "translate",
                    handler_fn(|_| async {
                        Err(
                            TaskError::new("no_model", "no translation model on this node")
                                .non_retryable(),
                        )
                    }),
                )
                .handler(
                    "report",
                    handler_fn(|ctx| async move {
                        println!("\njoin step received its parents (declared order):");
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&ctx.input()["parents"])
                                .unwrap_or_default()
                        );
                        Ok(json!({ "reported": true }))
                    }),
                ),
        )
        .await?;

    let spec = WorkflowSpec::new(
        "digest",
        vec![
            StepSpec::new("fetch", "fetch", json!(null)),
            StepSpec::new("summaries", "summarize", json!(null))
                .map_over("fetch", "/docs")
                .join(JoinMode::List),
            StepSpec::new("count", "count_words", json!(null)).after(["fetch"]),
            StepSpec::new("translate", "translate", json!(null))
                .after(["fetch"])
                .retry(RetryPolicy::none()),
            StepSpec::new("report", "report", json!(null))
                .after(["summaries", "count", "translate"])
                .trigger(Trigger::AllDone)
                .join(JoinMode::Collect),
        ],
    );
    let submitted = hive.submit_workflow(&alice, spec).await?;
    println!("workflow {} submitted", submitted.id);
    let mut events = hive.subscribe_workflow(&alice, submitted.id, 0).await?;
    let result = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(ev) = events.next().await {
            let ev = ev?;
            match &ev.kind {
                WorkflowEventKind::Started => println!("  seq={} started", ev.seq),
                WorkflowEventKind::Step { step, state, tasks } => {
                    println!(
                        "  seq={} step {step}: {state} ({} task(s))",
                        ev.seq,
                        tasks.len()
                    )
                }
                WorkflowEventKind::Finished { state } => {
                    println!("  seq={} workflow finished: {state}", ev.seq)
                }
            }
        }
        Ok::<_, hive::Error>(())
    })
    .await;
    result.map_err(|_| "the workflow did not finish within 60 s")??;

    let view = hive.get_workflow(&alice, submitted.id).await?;
    println!("\nsteps:");
    for s in &view.steps {
        println!(
            "  {:<10} {:<10} attempts={} tasks={}",
            s.id,
            s.state.to_string(),
            s.attempts,
            s.tasks.len()
        );
    }
    worker.shutdown().await;
    Ok(())
}
