//! The report: every check with its figures and verdict, as JSON for
//! machines and as a table for people.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{DogfoodError, Result};

/// One check's outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// The check's name (`health`, `streams`…).
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// Whether it was not run (an earlier check it needs failed, or the
    /// token lacks a scope it needs); a skipped check has `passed: false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    /// What it measured.
    pub figures: Value,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How long it took, in milliseconds.
    pub elapsed_ms: u64,
}

impl CheckResult {
    /// A check that passed with `figures`.
    pub fn pass(name: &str, figures: Value, elapsed_ms: u64) -> CheckResult {
        CheckResult {
            name: name.to_owned(),
            passed: true,
            skipped: false,
            figures,
            reason: None,
            elapsed_ms,
        }
    }

    /// A check that failed because of `reason`, with what it measured.
    pub fn fail(name: &str, figures: Value, reason: String, elapsed_ms: u64) -> CheckResult {
        CheckResult {
            name: name.to_owned(),
            passed: false,
            skipped: false,
            figures,
            reason: Some(reason),
            elapsed_ms,
        }
    }

    /// A check that was not run.
    pub fn skipped(name: &str, why: &str) -> CheckResult {
        CheckResult {
            name: name.to_owned(),
            passed: false,
            skipped: true,
            figures: Value::Object(Default::default()),
            reason: Some(format!("not run: {why}")),
            elapsed_ms: 0,
        }
    }

    /// The outcome of a check that ran: passed with `figures` when `result`
    /// is `Ok`, else failed with the error as its reason.
    pub fn from_result(
        name: &str,
        figures: Value,
        result: Result<()>,
        elapsed_ms: u64,
    ) -> CheckResult {
        match result {
            Ok(()) => CheckResult::pass(name, figures, elapsed_ms),
            Err(e @ DogfoodError::Skipped(_)) => CheckResult {
                skipped: true,
                ..CheckResult::fail(name, figures, e.to_string(), elapsed_ms)
            },
            Err(e) => CheckResult::fail(name, figures, e.to_string(), elapsed_ms),
        }
    }
}

/// The whole run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The tool.
    pub tool: String,
    /// Its version.
    pub version: String,
    /// The target's base URL.
    pub target: String,
    /// What the target says it is (`/api/version`), when it answered.
    #[serde(default)]
    pub target_version: Value,
    /// The run's id (in labels, tenant names and idempotency keys).
    pub run_id: String,
    /// When the run started (ms since the UNIX epoch).
    pub started_at_ms: u64,
    /// When it ended (ms since the UNIX epoch).
    pub ended_at_ms: u64,
    /// The options it ran with.
    pub options: Value,
    /// Every check, in the order they are judged.
    pub checks: Vec<CheckResult>,
    /// What the HTTP client saw (requests, retries, 429s, 503s).
    pub client: Value,
    /// Things worth knowing that are not checks (cleanup, limits met).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Whether every check passed.
    pub passed: bool,
}

/// Milliseconds since the UNIX epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Report {
    /// The first failed check, if any.
    pub fn first_failure(&self) -> Option<&CheckResult> {
        self.checks.iter().find(|c| !c.passed)
    }

    /// A check by name.
    pub fn check(&self, name: &str) -> Option<&CheckResult> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// The verdict line: `hive-dogfood: PASSED (<n> checks)` or
    /// `hive-dogfood: FAILED: <check>: <reason>`.
    pub fn verdict(&self) -> String {
        match self.first_failure() {
            None => format!("hive-dogfood: PASSED ({} checks)", self.checks.len()),
            Some(c) => format!(
                "hive-dogfood: FAILED: {}: {}",
                c.name,
                one_line(c.reason.as_deref().unwrap_or("failed"))
            ),
        }
    }

    /// Writes the report as pretty JSON to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| DogfoodError::Report {
            path: path.to_owned(),
            source: std::io::Error::other(e),
        })?;
        std::fs::write(path, text + "\n").map_err(|source| DogfoodError::Report {
            path: path.to_owned(),
            source,
        })
    }

    /// The summary table for people: one row per check.
    pub fn table(&self) -> String {
        let rows: Vec<[String; 4]> = self
            .checks
            .iter()
            .map(|c| {
                let result = if c.passed {
                    "PASS"
                } else if c.skipped {
                    "SKIP"
                } else {
                    "FAIL"
                };
                let detail = match &c.reason {
                    Some(r) if !c.passed => one_line(r),
                    _ => headline(&c.name, &c.figures),
                };
                [
                    c.name.clone(),
                    result.to_owned(),
                    format!("{:.1}s", c.elapsed_ms as f64 / 1000.0),
                    crate::client::excerpt(&detail, 110),
                ]
            })
            .collect();
        let head = ["check", "result", "time", "figures / reason"];
        let mut widths = head.map(str::len);
        for r in &rows {
            for (w, cell) in widths.iter_mut().zip(r.iter()) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, cells: [&str; 4]| {
            let _ = writeln!(
                out,
                "{:<w0$}  {:<w1$}  {:>w2$}  {}",
                cells[0],
                cells[1],
                cells[2],
                cells[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
            );
        };
        line(&mut out, head);
        let _ = writeln!(out, "{}", "-".repeat(widths.iter().sum::<usize>() + 6 + 10));
        for r in &rows {
            line(&mut out, [&r[0], &r[1], &r[2], &r[3]]);
        }
        out
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The few figures of a check worth a glance.
fn headline(name: &str, f: &Value) -> String {
    let pick = |keys: &[&str]| {
        keys.iter()
            .filter_map(|k| f.get(*k).map(|v| format!("{k}={v}")))
            .collect::<Vec<_>>()
            .join(" ")
    };
    match name {
        "health" => pick(&["version", "commit"]),
        "workers" => pick(&["nodes", "reports", "heartbeats", "log_lines"]),
        "tasks" => pick(&["submitted", "tenants", "by_state", "wall_ms"]),
        "workflow" => pick(&["state", "steps"]),
        "streams" => pick(&["streams", "events", "resumed", "heartbeat_repeats"]),
        "polling" => pick(&["polls", "p50_ms", "p95_ms", "p99_ms", "not_modified"]),
        "worker_token_denied" => pick(&["attempts", "denied_403", "not_found_404", "audited"]),
        "audit_chain" => pick(&["tenants", "checked"]),
        "restart" => pick(&["exit_code", "restart_ms", "streams_resumed", "tasks_ended"]),
        _ => String::new(),
    }
}
