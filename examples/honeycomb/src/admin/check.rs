//! `admin config check`: is the effective configuration one `serve` can
//! start with? Each check is reported ok, fail or skipped; any failure fails
//! the command.

use hive::prelude::*;
use serde::Serialize;

use super::output::{print_json, print_table, table};
use super::{AdminError, OutputArgs, local_operator, open_engine};
use crate::config::{Config, ConfigError, mask_url};

/// `admin config check`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct CheckArgs {
    /// The output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// A check's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// It passed.
    Ok,
    /// It failed: `serve` would not start (or not serve) with this.
    Fail,
    /// It did not apply (a setting is unset, or an earlier check failed).
    Skipped,
}

/// One check.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// What was checked (`settings`, `listen`, `store`, `store read`,
    /// `registry keys`).
    pub name: &'static str,
    /// Its result.
    pub status: CheckStatus,
    /// What was found, for people.
    pub detail: String,
}

/// Every check, in order.
#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    /// Whether no check failed.
    pub ok: bool,
    /// The checks.
    pub checks: Vec<Check>,
}

fn check(name: &'static str, status: CheckStatus, detail: impl Into<String>) -> Check {
    Check {
        name,
        status,
        detail: detail.into(),
    }
}

/// Checks `config` as resolved from the settings: that it resolves at all
/// (every value parses, the listen address among them), that the store
/// opens with its migrations current (a newer schema is refused, an older
/// one migrated, as `serve` does) and answers a read (as `/readyz`), and
/// that the registry keys folder, if set, loads.
pub async fn check_config(config: Result<Config, ConfigError>) -> CheckReport {
    let mut checks = Vec::new();
    let config = match config {
        Ok(c) => {
            checks.push(check(
                "settings",
                CheckStatus::Ok,
                "the defaults, the config file, HONEYCOMB_* variables and flags resolve",
            ));
            c
        }
        Err(e) => {
            checks.push(check("settings", CheckStatus::Fail, e.to_string()));
            for name in ["listen", "store", "store read", "registry keys"] {
                checks.push(check(
                    name,
                    CheckStatus::Skipped,
                    "the settings do not resolve",
                ));
            }
            return CheckReport { ok: false, checks };
        }
    };
    checks.push(check(
        "listen",
        CheckStatus::Ok,
        format!("{} (from {})", config.listen, config.origin("listen")),
    ));
    let url = mask_url(&config.backend_url());
    let hive = match open_engine(&config).await {
        Ok(hive) => {
            checks.push(check(
                "store",
                CheckStatus::Ok,
                format!(
                    "{url} (from {}) opens; its migrations are current",
                    config.origin("backend")
                ),
            ));
            checks.push(store_read(&hive).await);
            Some(hive)
        }
        Err(e) => {
            checks.push(check("store", CheckStatus::Fail, e.to_string()));
            checks.push(check(
                "store read",
                CheckStatus::Skipped,
                "the store does not open",
            ));
            None
        }
    };
    checks.push(registry_keys(&config, hive.as_ref()).await);
    if let Some(hive) = hive {
        hive.shutdown();
    }
    CheckReport {
        ok: checks.iter().all(|c| c.status != CheckStatus::Fail),
        checks,
    }
}

/// A read through the engine of a task that does not exist (what `/readyz`
/// asks the store): `NotFound` means the store answered.
async fn store_read(hive: &Hive) -> Check {
    match hive.get_task(&local_operator(), TaskId::new()).await {
        Ok(_) | Err(hive::Error::NotFound { .. }) => {
            check("store read", CheckStatus::Ok, "the store answers a read")
        }
        Err(e) => check("store read", CheckStatus::Fail, e.to_string()),
    }
}

/// Loads the APIary keys as `serve` does (over the store's engine, or an
/// in-memory one when the store does not open, so that a bad key is
/// reported either way).
async fn registry_keys(config: &Config, hive: Option<&Hive>) -> Check {
    let Some(dir) = &config.registry_keys else {
        return check(
            "registry keys",
            CheckStatus::Skipped,
            "registry_keys is unset: the APIary routes are off",
        );
    };
    let result = match hive {
        Some(h) => crate::registry::open_registry(config, h),
        None => match hive::open_with("memory://", super::one_shot()).await {
            Ok(scratch) => {
                let r = crate::registry::open_registry(config, &scratch);
                scratch.shutdown();
                r
            }
            Err(e) => return check("registry keys", CheckStatus::Fail, e.to_string()),
        },
    };
    match result {
        Ok(_) => {
            let signing: Vec<&str> = ["sandbox.key", "production.key"]
                .into_iter()
                .filter(|k| dir.join(k).is_file())
                .collect();
            let signing = if signing.is_empty() {
                "no signing keys".to_owned()
            } else {
                format!("signing with {}", signing.join(", "))
            };
            check(
                "registry keys",
                CheckStatus::Ok,
                format!(
                    "{}: sandbox.pub and production.pub load ({signing}); registry {}",
                    dir.display(),
                    config.registry
                ),
            )
        }
        Err(e) => check("registry keys", CheckStatus::Fail, e.to_string()),
    }
}

/// `admin config check`: a table of the checks (or `--json`), then
/// [`AdminError::ChecksFailed`] when one failed.
pub(crate) async fn run(
    config: Result<Config, ConfigError>,
    args: CheckArgs,
) -> Result<(), AdminError> {
    let report = check_config(config).await;
    if args.output.json {
        print_json(&report)?;
    } else {
        let mut t = table(&["CHECK", "RESULT", "DETAIL"]);
        for c in &report.checks {
            let status = match c.status {
                CheckStatus::Ok => "ok",
                CheckStatus::Fail => "FAIL",
                CheckStatus::Skipped => "skipped",
            };
            t.add_row(vec![c.name.to_owned(), status.to_owned(), c.detail.clone()]);
        }
        print_table(&t, "no checks")?;
    }
    let failed: Vec<&Check> = report
        .checks
        .iter()
        .filter(|c| c.status == CheckStatus::Fail)
        .collect();
    match failed.first() {
        Some(first) => Err(AdminError::ChecksFailed {
            failed: failed.len(),
            total: report.checks.len(),
            first: format!("{}: {}", first.name, first.detail),
        }),
        None => Ok(()),
    }
}
