//! `honeycomb admin …`: the operator's tools, straight on the configured
//! store, without the HTTP API (so they work before a token exists and while
//! the service is down).
//!
//! Every command acts through the public `hive` API as the local operator
//! ([`local_operator`]: Hive's system principal recorded as `cli:<user>`), so
//! it is authorized and audited like a call from Rust. Work on a tenant's
//! objects (listing its tokens, counting or cancelling its tasks) is done
//! acting in that tenant ([`operator_in`]), so a cancellation is audited in
//! the task's tenant's trail; the rest (issuing and revoking tokens,
//! draining and removing nodes) acts in the system tenant, `_system`. No
//! command runs the supervisor or the workflow driver ([`open_engine`]).
//!
//! - [`tokens`]: `token issue`, `token list`, `token revoke`;
//! - [`audit`]: `audit verify`, `audit export`;
//! - [`nodes`]: `nodes list`, `nodes drain`, `nodes remove`;
//! - [`tasks`]: `tasks cancel` (by filter, with a dry run);
//! - [`queue`]: `queue`, the depth per tenant and agent;
//! - [`check`]: `config check`.
//!
//! Output is a table for people, or with `--json` one JSON document (JSON
//! lines for exports) for scripts; progress bars go to stderr and only to a
//! terminal. A failure is one line on stderr and the exit code of
//! [`AdminError::exit_code`].

pub mod audit;
pub mod check;
pub mod nodes;
mod output;
pub mod queue;
pub mod tasks;
pub mod tokens;

use hive::prelude::*;

use crate::config::{Config, ConfigError};
use crate::serve::ServeError;

pub use tokens::{IssueRequest, issue_token};

/// The exit code of a bad argument or configuration (clap's own usage errors
/// exit with it too).
pub const EXIT_INVALID: u8 = 2;
/// The exit code of `audit verify` when a chain is broken.
pub const EXIT_BROKEN_CHAIN: u8 = 3;
/// The exit code when the named token, node or tenant does not exist.
pub const EXIT_NOT_FOUND: u8 = 4;
/// The exit code when stdout was closed early (`… | head`): 128 + SIGPIPE,
/// as a shell reports a process the signal stopped.
pub const EXIT_BROKEN_PIPE: u8 = 141;

/// Why an admin command failed. [`AdminError::exit_code`] maps each to the
/// process's exit code.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The store could not be opened.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The configuration does not resolve.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A bad argument.
    #[error("{0}")]
    Invalid(String),
    /// The engine refused.
    #[error("{0}")]
    Hive(#[from] hive::Error),
    /// Output could not be written.
    #[error("cannot write to {target}: {error}")]
    Write {
        /// `stdout` or the file.
        target: String,
        /// Why.
        error: std::io::Error,
    },
    /// A tenant's audit chain is broken (`audit verify`).
    #[error("the audit trail of tenant {tenant} is broken at seq {seq} ({kind}): {reason}")]
    BrokenChain {
        /// The tenant.
        tenant: TenantId,
        /// The first broken seq.
        seq: u64,
        /// How it is broken (`hash_mismatch`, `missing`…).
        kind: String,
        /// Why, for people.
        reason: String,
    },
    /// Some checks of `config check` failed.
    #[error("{failed} of {total} configuration checks failed (first: {first})")]
    ChecksFailed {
        /// How many failed.
        failed: usize,
        /// How many ran.
        total: usize,
        /// The first failure, for people.
        first: String,
    },
    /// Some matched tasks could not be cancelled (`tasks cancel`).
    #[error("{failed} of {matched} matched tasks could not be cancelled (first: {first})")]
    CancelFailed {
        /// How many could not be cancelled.
        failed: usize,
        /// How many matched.
        matched: usize,
        /// The first failure, for people.
        first: String,
    },
}

impl AdminError {
    /// The process's exit code for this failure: [`EXIT_INVALID`] for a bad
    /// argument or configuration (an unknown state, a malformed tenant or
    /// id), [`EXIT_NOT_FOUND`] for an unknown token, node or tenant,
    /// [`EXIT_BROKEN_CHAIN`] for a broken audit chain, [`EXIT_BROKEN_PIPE`]
    /// when stdout was closed, 1 otherwise (the store is unavailable, the
    /// engine refused, a check or a cancellation failed).
    pub fn exit_code(&self) -> u8 {
        match self {
            AdminError::Invalid(_) | AdminError::Config(_) => EXIT_INVALID,
            AdminError::Hive(hive::Error::NotFound { .. }) => EXIT_NOT_FOUND,
            AdminError::Hive(
                hive::Error::InvalidArgument { .. } | hive::Error::InvalidSpec { .. },
            ) => EXIT_INVALID,
            AdminError::BrokenChain { .. } => EXIT_BROKEN_CHAIN,
            AdminError::Write { error, .. } if error.kind() == std::io::ErrorKind::BrokenPipe => {
                EXIT_BROKEN_PIPE
            }
            _ => 1,
        }
    }

    /// Whether the failure should be reported on stderr (a closed stdout is
    /// not: the reader chose to stop).
    pub fn is_reported(&self) -> bool {
        self.exit_code() != EXIT_BROKEN_PIPE
    }
}

/// The flag every admin command takes for its output format.
#[derive(Clone, Copy, Debug, Default, clap::Args)]
pub struct OutputArgs {
    /// Print JSON for scripts (one document) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// An admin command with its arguments (the store comes from the settings).
#[derive(Debug)]
pub enum Command {
    /// `token issue`.
    TokenIssue(tokens::IssueArgs),
    /// `token list`.
    TokenList(tokens::ListArgs),
    /// `token revoke`.
    TokenRevoke(tokens::RevokeArgs),
    /// `audit verify`.
    AuditVerify(audit::VerifyArgs),
    /// `audit export`.
    AuditExport(audit::ExportArgs),
    /// `nodes list`.
    NodesList(nodes::ListArgs),
    /// `nodes drain`.
    NodesDrain(nodes::NodeArgs),
    /// `nodes remove`.
    NodesRemove(nodes::NodeArgs),
    /// `tasks cancel`.
    TasksCancel(tasks::CancelArgs),
    /// `queue`.
    Queue(queue::QueueArgs),
    /// `config check`.
    ConfigCheck(check::CheckArgs),
}

/// Runs `command` on the store of `config` (the settings as resolved:
/// `config check` reports a configuration that does not resolve; every
/// other command fails with it), printing its result on stdout.
pub async fn run(config: Result<Config, ConfigError>, command: Command) -> Result<(), AdminError> {
    if let Command::ConfigCheck(args) = command {
        return check::run(config, args).await;
    }
    let config = config?;
    let hive = open_engine(&config).await?;
    let result = dispatch(&hive, command).await;
    hive.shutdown();
    result
}

async fn dispatch(hive: &Hive, command: Command) -> Result<(), AdminError> {
    match command {
        Command::TokenIssue(args) => tokens::issue(hive, args).await,
        Command::TokenList(args) => tokens::list(hive, args).await,
        Command::TokenRevoke(args) => tokens::revoke(hive, args).await,
        Command::AuditVerify(args) => audit::verify(hive, args).await,
        Command::AuditExport(args) => audit::export(hive, args).await,
        Command::NodesList(args) => nodes::list(hive, args).await,
        Command::NodesDrain(args) => nodes::drain(hive, args).await,
        Command::NodesRemove(args) => nodes::remove(hive, args).await,
        Command::TasksCancel(args) => tasks::cancel(hive, args).await,
        Command::Queue(args) => queue::run(hive, args).await,
        // Handled by `run` before the store is opened.
        Command::ConfigCheck(_) => Ok(()),
    }
}

/// Opens the configured store as `serve` does (creating the data directory
/// of the default SQLite file), for one admin command: without the
/// supervisor or the workflow driver, so that the command changes nothing it
/// was not asked to (the running service sweeps and drives).
pub async fn open_engine(config: &Config) -> Result<Hive, AdminError> {
    Ok(crate::serve::open_store_with(config, one_shot()).await?)
}

/// The engine settings of an admin command: no background work.
fn one_shot() -> HiveConfig {
    HiveConfig {
        run_supervisor: false,
        run_workflows: false,
        ..HiveConfig::default()
    }
}

/// The principal of the local operator who runs `honeycomb admin`: Hive
/// itself acting for the local user, recorded as `cli:<user>` in the audit
/// trail, in the system tenant.
pub fn local_operator() -> Principal {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let mut user: String = user
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .take(64)
        .collect();
    if user.is_empty() {
        user = "unknown".into();
    }
    let mut p = Principal::system();
    p.id = format!("cli:{user}").into();
    p
}

/// [`local_operator`] acting in `tenant`: what tenant-scoped engine calls
/// (listing a tenant's tasks or tokens) need; its privileged actions are
/// audited in `tenant`'s trail.
pub fn operator_in(tenant: &TenantId) -> Principal {
    let mut p = local_operator();
    p.tenant = tenant.clone();
    p
}

/// `--tenant`, checked.
fn parse_tenant(tenant: &str) -> Result<TenantId, AdminError> {
    TenantId::parse(tenant).map_err(|e| AdminError::Invalid(format!("--tenant {tenant:?}: {e}")))
}

/// The tenants a command walks: the one named, or every tenant that has an
/// audit trail (every tenant in which anything was ever submitted,
/// registered or issued: those actions are audited, fail closed).
async fn tenants(hive: &Hive, named: Option<&str>) -> Result<Vec<TenantId>, AdminError> {
    match named {
        Some(t) => Ok(vec![parse_tenant(t)?]),
        None => Ok(hive.audit_trail().tenants(hive, &local_operator()).await?),
    }
}
