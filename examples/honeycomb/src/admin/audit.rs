//! `admin audit verify | export`: the hash-chained audit trails.

use std::ffi::OsString;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

use hive::iam::{AuditEvent, VerifyReport};
use hive::prelude::*;
use serde::Serialize;

use super::output::{json_error, note, print_json, print_table, progress, table};
use super::{AdminError, OutputArgs, local_operator, tenants};

/// `admin audit verify`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct VerifyArgs {
    /// Only this tenant's trail [default: every tenant that has one].
    #[arg(long)]
    pub tenant: Option<String>,
    /// The output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `admin audit export`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct ExportArgs {
    /// Only this tenant's trail [default: every tenant's, one after another].
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only events after this seq (of each tenant's chain) [default: 0, from the start].
    #[arg(long, default_value_t = 0)]
    pub after_seq: u64,
    /// Write the JSON lines to this file instead of stdout (written whole or
    /// not at all: to FILE.partial, renamed when complete).
    #[arg(long = "output", value_name = "FILE")]
    pub file: Option<PathBuf>,
}

/// One tenant's verification.
#[derive(Clone, Debug, Serialize)]
pub struct TrailReport {
    /// The tenant.
    pub tenant: TenantId,
    /// What `AuditTrail::verify` found.
    #[serde(flatten)]
    pub report: VerifyReport,
}

/// What `audit verify` found.
#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    /// Whether every trail verified is intact.
    pub ok: bool,
    /// Each tenant's report, by tenant name.
    pub trails: Vec<TrailReport>,
}

/// Verifies the trail of `tenant`, or of every tenant that has one.
pub async fn verify_trails(hive: &Hive, tenant: Option<&str>) -> Result<Verification, AdminError> {
    let tenants = tenants(hive, tenant).await?;
    let bar = progress(Some(tenants.len() as u64), "verifying audit trails");
    let trail = hive.audit_trail();
    let caller = local_operator();
    let mut trails = Vec::with_capacity(tenants.len());
    for tenant in tenants {
        bar.set_message(tenant.to_string());
        let report = trail.verify(hive, &caller, &tenant).await;
        bar.inc(1);
        let report = match report {
            Ok(r) => r,
            Err(e) => {
                bar.finish_and_clear();
                return Err(e.into());
            }
        };
        trails.push(TrailReport { tenant, report });
    }
    bar.finish_and_clear();
    Ok(Verification {
        ok: trails.iter().all(|t| t.report.ok),
        trails,
    })
}

fn kind_name(report: &VerifyReport) -> String {
    report
        .broken
        .and_then(|k| serde_json::to_value(k).ok())
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// `admin audit verify`: a table (or `--json`) of every trail verified,
/// then, when one is broken, [`AdminError::BrokenChain`] naming the first.
pub(crate) async fn verify(hive: &Hive, args: VerifyArgs) -> Result<(), AdminError> {
    let found = verify_trails(hive, args.tenant.as_deref()).await?;
    if args.output.json {
        print_json(&found)?;
    } else {
        let mut t = table(&[
            "TENANT",
            "EVENTS",
            "CHAIN",
            "FIRST BROKEN SEQ",
            "HOW",
            "REASON",
        ]);
        for trail in &found.trails {
            let r = &trail.report;
            t.add_row(vec![
                trail.tenant.to_string(),
                r.checked.to_string(),
                if r.ok { "intact" } else { "BROKEN" }.to_owned(),
                r.first_broken.map_or_else(|| "-".into(), |s| s.to_string()),
                kind_name(r),
                r.reason.clone().unwrap_or_default(),
            ]);
        }
        print_table(&t, "no audit trails")?;
    }
    match found.trails.iter().find(|t| !t.report.ok) {
        Some(trail) => Err(AdminError::BrokenChain {
            tenant: trail.tenant.clone(),
            seq: trail.report.first_broken.unwrap_or(0),
            kind: kind_name(&trail.report),
            reason: trail.report.reason.clone().unwrap_or_default(),
        }),
        None => Ok(()),
    }
}

/// Where an export goes: stdout, or a file written whole or not at all.
struct Sink {
    out: BufWriter<Box<dyn Write>>,
    target: String,
    /// The `.partial` file and the name it gets when complete.
    file: Option<(PathBuf, PathBuf)>,
}

impl Sink {
    fn open(file: Option<&Path>) -> Result<Sink, AdminError> {
        let Some(path) = file else {
            return Ok(Sink {
                out: BufWriter::new(Box::new(std::io::stdout())),
                target: "stdout".into(),
                file: None,
            });
        };
        let mut partial = OsString::from(path.as_os_str());
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let target = path.display().to_string();
        let f = std::fs::File::create(&partial).map_err(|error| AdminError::Write {
            target: partial.display().to_string(),
            error,
        })?;
        Ok(Sink {
            out: BufWriter::new(Box::new(f)),
            target,
            file: Some((partial, path.to_owned())),
        })
    }

    fn line(&mut self, event: &AuditEvent) -> Result<(), AdminError> {
        let text = serde_json::to_string(event).map_err(json_error)?;
        writeln!(self.out, "{text}").map_err(|error| self.error(error))
    }

    fn error(&self, error: std::io::Error) -> AdminError {
        AdminError::Write {
            target: self.target.clone(),
            error,
        }
    }

    /// Flushes, and renames a file into place.
    fn finish(mut self) -> Result<(), AdminError> {
        self.out.flush().map_err(|e| self.error(e))?;
        if let Some((partial, path)) = self.file.take() {
            std::fs::rename(&partial, &path).map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    /// Removes the `.partial` file of a failed export.
    fn abandon(self) {
        if let Some((partial, _)) = &self.file {
            let _ = std::fs::remove_file(partial);
        }
    }
}

/// `admin audit export`: every event of the chosen trails after
/// `--after-seq`, oldest first, as JSON lines (each event carries its
/// tenant, seq and hash, so the file can be re-verified elsewhere).
pub(crate) async fn export(hive: &Hive, args: ExportArgs) -> Result<(), AdminError> {
    let tenants = tenants(hive, args.tenant.as_deref()).await?;
    let mut sink = Sink::open(args.file.as_deref())?;
    let bar = progress(None, "exporting audit events");
    let written = export_into(hive, &tenants, args.after_seq, &mut sink, &bar).await;
    bar.finish_and_clear();
    let target = sink.target.clone();
    let written = match written {
        Ok(n) => {
            sink.finish()?;
            n
        }
        Err(e) => {
            sink.abandon();
            return Err(e);
        }
    };
    if std::io::stderr().is_terminal() {
        note(&format!(
            "exported {written} audit events of {} tenants to {target}",
            tenants.len()
        ));
    }
    Ok(())
}

async fn export_into(
    hive: &Hive,
    tenants: &[TenantId],
    after_seq: u64,
    sink: &mut Sink,
    bar: &indicatif::ProgressBar,
) -> Result<u64, AdminError> {
    let trail = hive.audit_trail();
    let caller = local_operator();
    let mut written = 0;
    for tenant in tenants {
        bar.set_message(tenant.to_string());
        let mut query = AuditQuery {
            tenant: Some(tenant.clone()),
            after_seq,
            limit: Some(1000),
            ..AuditQuery::default()
        };
        loop {
            let page = trail.list(hive, &caller, &query).await?;
            for event in &page.events {
                sink.line(event)?;
                written += 1;
                bar.inc(1);
            }
            match page.next_after_seq {
                Some(next) => query.after_seq = next,
                None => break,
            }
        }
    }
    Ok(written)
}
