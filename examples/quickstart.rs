//! The README's main job: an embedded Hive with two in-process handlers, a few
//! tasks (one of which fails once and is retried), and every task's event stream
//! printed as it happens.
//!
//! Run: `cargo run --example quickstart`. The state lives in the embedded
//! durable default, a SQLite file in the system's temporary folder (its path is
//! printed); `HIVE_URL` picks another backend (`memory://`, `postgres://…`,
//! `redis://…`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use hive::worker::handler_fn;
use hive::{Principal, RetryPolicy, TaskError, TaskSpec, WorkerOptions};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("HIVE_URL").unwrap_or_else(|_| {
        let path = std::env::temp_dir().join(format!("hive-quickstart-{}.db", std::process::id()));
        format!("sqlite://{}", path.display())
    });
    let hive = hive::open(&url).await?;
    println!("hive opened on {url}");

    // Who is calling: a user submits; an admin with system:admin runs a system node.
    let alice = Principal::user("acme", "alice");
    let ops = Principal::system();

    // Two handlers on one in-process worker node.
    let flaky_calls = Arc::new(AtomicU32::new(0));
    let calls = flaky_calls.clone();
    let worker = hive
        .start_worker(
            &ops,
            WorkerOptions::new("quickstart-node")
                .system()
                .capacity(4)
                .handler(
                    "summarize",
                    handler_fn(|ctx| async move {
                        let text = ctx.input()["text"].as_str().unwrap_or_default().to_owned();
                        ctx.log("stdout", &format!("summarizing {} characters", text.len()))
                            .await
                            .map_err(|e| TaskError::new("log", e.to_string()))?;
                        let words: Vec<&str> = text.split_whitespace().take(4).collect();
                        Ok(json!({ "summary": format!("{}…", words.join(" ")) }))
                    }),
                )
                .handler(
                    "translate",
                    handler_fn(move |ctx| {
                        let calls = calls.clone();
                        async move {
                            // Fails on its first attempt to show a retry.
                            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                                return Err(TaskError::new(
                                    "upstream_busy",
                                    "translation service busy",
                                ));
                            }
                            let text = ctx.input()["text"].as_str().unwrap_or_default();
                            Ok(json!({ "fr": text.replace("hello", "bonjour") }))
                        }
                    }),
                ),
        )
        .await?;

    let retry_fast = RetryPolicy::attempts(3, Duration::from_millis(200));
    let specs = vec![
        TaskSpec::new(
            "summarize",
            json!({ "text": "Hive runs agent tasks on worker nodes and streams their events" }),
        ),
        TaskSpec::new("translate", json!({ "text": "hello world" })).retry(retry_fast),
        TaskSpec::new(
            "summarize",
            json!({ "text": "every task ends with exactly one terminal event" }),
        ),
    ];

    let mut streams = Vec::new();
    for spec in specs {
        let agent = spec.agent.clone();
        let submitted = hive.submit(&alice, spec).await?;
        println!("submitted {} ({agent})", submitted.id);
        // Subscribe from seq 0: replay what is stored, then follow live.
        let mut events = hive.subscribe(&alice, submitted.id, 0).await?;
        streams.push(tokio::spawn(async move {
            let mut lines = Vec::new();
            while let Some(event) = events.next().await {
                let event = event.map_err(|e| e.to_string())?;
                let id = event.task.to_string();
                let line = format!(
                    "  [{agent} …{}] seq={} {}",
                    &id[id.len() - 6..],
                    event.seq,
                    serde_json::to_string(&event.kind).map_err(|e| e.to_string())?
                );
                println!("{line}");
                lines.push(event);
            }
            Ok::<_, String>(lines)
        }));
    }

    let mut failed = 0;
    for stream in streams {
        let events = stream.await??;
        let last = events.last().ok_or("empty stream")?;
        if !last.kind.is_terminal() {
            return Err("a stream ended without a terminal event".into());
        }
        if last.kind.name() != "succeeded" {
            failed += 1;
        }
    }
    worker.shutdown().await;
    hive.shutdown();
    if failed > 0 {
        return Err(format!("{failed} task(s) did not succeed").into());
    }
    println!("all tasks ended; every stream closed after its terminal event");
    Ok(())
}
