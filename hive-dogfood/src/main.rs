//! `hive-dogfood`: drives a running Honeycomb the way real users and remote
//! workers do, and fails loudly on any contract breach.
//!
//! ```text
//! hive-dogfood stabilize --target http://127.0.0.1:8780 --token hive_… \
//!     [--duration 2m] [--report out.json] [--tenants 2] [--tasks 60] \
//!     [--polls 2000] [--capacity 16] [--max-p99 50ms] [--restart-cmd CMD] [--no-progress]
//! ```
//!
//! Exit codes: 0 every check passed, 1 a check failed, 2 bad options or the
//! report could not be written. The last line on stderr is the verdict:
//! `hive-dogfood: PASSED (<n> checks)` or `hive-dogfood: FAILED: <check>: <reason>`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use hive_dogfood::{Restart, StabilizeOptions, stabilize};

#[derive(Debug, Parser)]
#[command(
    name = "hive-dogfood",
    version,
    about = "Drives a running Honeycomb and checks its contract"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs every check against a running Honeycomb (health, workers, tasks,
    /// workflow, streams, polling, worker_token_denied, audit_chain, and
    /// restart with --restart-cmd); non-zero exit on any failure.
    Stabilize(StabilizeArgs),
}

#[derive(Debug, clap::Args)]
struct StabilizeArgs {
    /// The Honeycomb's base URL.
    #[arg(long, value_name = "URL")]
    target: String,
    /// An admin API token of a tenant (with system:admin it also acts in
    /// other tenants). Prefer the environment variable: flags are visible to
    /// other users of the machine.
    #[arg(
        long,
        env = "HIVE_DOGFOOD_TOKEN",
        hide_env_values = true,
        value_name = "T"
    )]
    token: String,
    /// The bound of the load phases (tasks, streams, polling, workflow).
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    duration: Duration,
    /// Write the JSON report here.
    #[arg(long, value_name = "PATH")]
    report: Option<PathBuf>,
    /// Tenants to act in.
    #[arg(long, default_value_t = 2)]
    tenants: usize,
    /// Tasks to run.
    #[arg(long, default_value_t = 60)]
    tasks: usize,
    /// Polls of GET /api/tasks/{id} for the latency figures.
    #[arg(long, default_value_t = 2000)]
    polls: usize,
    /// The capacity of each of the tool's nodes.
    #[arg(long, default_value_t = 16)]
    capacity: u32,
    /// Fail the polling check when its p99 latency is above this.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    max_p99: Option<Duration>,
    /// A shell command that restarts one Honeycomb process, run mid-run
    /// (e.g. `scripts/ephemeral-stack restart-one`).
    #[arg(long, value_name = "CMD")]
    restart_cmd: Option<String>,
    /// Draw no progress on stderr.
    #[arg(long)]
    no_progress: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration (2m, 30s): {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Command::Stabilize(args) = cli.command;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hive-dogfood: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = StabilizeOptions {
        target: args.target,
        token: args.token,
        duration: args.duration,
        report: args.report,
        tenants: args.tenants,
        tasks: args.tasks,
        polls: args.polls,
        capacity: args.capacity,
        restart: args.restart_cmd.map(Restart::Command),
        max_p99: args.max_p99,
        progress: !args.no_progress && std::io::stderr().is_terminal(),
    };
    match runtime.block_on(stabilize(opts)) {
        Ok(report) => {
            eprint!("{}", report.table());
            for note in &report.notes {
                eprintln!("note: {note}");
            }
            eprintln!("{}", report.verdict());
            if report.passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("hive-dogfood: FAILED: {e}");
            ExitCode::from(2)
        }
    }
}
