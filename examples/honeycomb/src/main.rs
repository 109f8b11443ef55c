//! The `honeycomb` binary: `serve`, `config`, `healthcheck`, `openapi` and
//! `admin` (the operator's tooling on the configured store).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use honeycomb::{Config, ConfigError, Layer, admin};

#[derive(Parser, Debug)]
#[command(
    name = "honeycomb",
    version,
    about = "Honeycomb: Hive behind HTTP",
    long_about = "Honeycomb: Hive behind HTTP.\n\nSettings come from the defaults, then a TOML file \
                  (--config or HONEYCOMB_CONFIG), then HONEYCOMB_* environment variables, then flags; \
                  each later one wins. `honeycomb config` shows the result."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serves the HTTP API.
    Serve(Settings),
    /// Prints the effective configuration (secrets masked) and where each value came from.
    Config(Settings),
    /// Exits 0 when the service at the configured address answers `/healthz`
    /// (for a container's HEALTHCHECK: the image has no shell or curl).
    Healthcheck(Settings),
    /// Prints the OpenAPI 3.1 document of the HTTP API (also served at
    /// /api/openapi.json, and kept in docs/openapi.json).
    Openapi,
    /// Administration on the configured store, without the HTTP API.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// API tokens: issue, list, revoke.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The hash-chained audit trails: verify, export.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Worker nodes: list, drain, remove.
    Nodes {
        #[command(subcommand)]
        command: NodesCommand,
    },
    /// Tasks: cancel by filter.
    Tasks {
        #[command(subcommand)]
        command: TasksCommand,
    },
    /// The queue's depth per tenant and agent (pending, delayed, scheduled,
    /// running, the oldest pending task).
    Queue {
        #[command(flatten)]
        settings: Settings,
        #[command(flatten)]
        args: admin::queue::QueueArgs,
    },
    /// The configuration: check it.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Issues an API token straight into the store (the bootstrap path for
    /// the first admin token); prints it once on stdout. Audited, with the
    /// local user as the actor.
    Issue {
        #[command(flatten)]
        settings: Settings,
        #[command(flatten)]
        args: admin::tokens::IssueArgs,
    },
    /// Lists API tokens (never their secrets) with their status.
    List {
        #[command(flatten)]
        settings: Settings,
        #[command(flatten)]
        args: admin::tokens::ListArgs,
    },
    /// Revokes an API token. Audited.
    Revoke {
        #[command(flatten)]
        settings: Settings,
        #[command(flatten)]
        args: admin::tokens::RevokeArgs,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Verifies the hash chains; exits 3 naming the first broken seq when
    /// one is broken.
    Verify {
        #[command(flatten)]
        settings: Settings,
        #[command(flatten)]
        args: admin::audit::VerifyArgs,
    },
    /// Exports audit events as JSON lines, to stdout or a file.
    Export {
        #[command(flatten)]
        settings: Settings,
        #[command(flatten)]
        args: admin::audit::ExportArgs,
    },
}

#[derive(Subcommand, Debug)]
enum NodesCommand {
    /// Lists every node: owner, status, leases, labels, last heartbeat.
    List {
        #[command(flatten)]
        settings: Settings,
        #[command(flatten)]
        args: admin::nodes::ListArgs,
    },
    /// Drains a node: it keeps its leases and claims nothing new. Audited.
    Drain {
        #[command(flatten)]
        settings: Settings,
        #[command(flatten)]
        args: admin::nodes::NodeArgs,
    },
    /// Removes a node; its leases are reclaimed at once. Audited.
    Remove {
        #[command(flatten)]
        settings: Settings,
        #[command(flatten)]
        args: admin::nodes::NodeArgs,
    },
}

#[derive(Subcommand, Debug)]
enum TasksCommand {
    /// Cancels the unfinished tasks that match a filter (or, with
    /// --dry-run, lists them). Each cancellation is audited.
    Cancel {
        #[command(flatten)]
        settings: Settings,
        #[command(flatten)]
        args: admin::tasks::CancelArgs,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Checks the effective configuration: the settings resolve, the store
    /// opens with current migrations and answers, the registry keys load.
    /// Exits 1 when a check fails.
    Check {
        #[command(flatten)]
        settings: Settings,
        #[command(flatten)]
        args: admin::check::CheckArgs,
    },
}

impl AdminCommand {
    /// The settings that find the store, and the command to run on it.
    fn split(self) -> (Settings, admin::Command) {
        use admin::Command as C;
        match self {
            AdminCommand::Token { command } => match command {
                TokenCommand::Issue { settings, args } => (settings, C::TokenIssue(args)),
                TokenCommand::List { settings, args } => (settings, C::TokenList(args)),
                TokenCommand::Revoke { settings, args } => (settings, C::TokenRevoke(args)),
            },
            AdminCommand::Audit { command } => match command {
                AuditCommand::Verify { settings, args } => (settings, C::AuditVerify(args)),
                AuditCommand::Export { settings, args } => (settings, C::AuditExport(args)),
            },
            AdminCommand::Nodes { command } => match command {
                NodesCommand::List { settings, args } => (settings, C::NodesList(args)),
                NodesCommand::Drain { settings, args } => (settings, C::NodesDrain(args)),
                NodesCommand::Remove { settings, args } => (settings, C::NodesRemove(args)),
            },
            AdminCommand::Tasks {
                command: TasksCommand::Cancel { settings, args },
            } => (settings, C::TasksCancel(args)),
            AdminCommand::Queue { settings, args } => (settings, C::Queue(args)),
            AdminCommand::Config {
                command: ConfigCommand::Check { settings, args },
            } => (settings, C::ConfigCheck(args)),
        }
    }
}

/// The settings a flag can set (each also has a file key and a variable).
#[derive(Args, Debug)]
struct Settings {
    /// The TOML config file (also HONEYCOMB_CONFIG).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8780].
    #[arg(long)]
    listen: Option<String>,
    /// Data directory for the default SQLite store [default: honeycomb-data].
    #[arg(long)]
    data_dir: Option<String>,
    /// Store URL (memory://, sqlite://PATH, postgres://…, redis://…) [default: an SQLite file in the data directory].
    #[arg(long)]
    backend: Option<String>,
    /// The APIary registry's address [default: 127.0.0.1:5055].
    #[arg(long)]
    registry: Option<String>,
    /// The folder of APIary keys (sandbox.pub, production.pub, optionally
    /// sandbox.key, production.key) [default: none, APIary routes off].
    #[arg(long)]
    registry_keys: Option<String>,
    /// How long a stop waits for work in flight [default: 30s].
    #[arg(long)]
    shutdown_grace: Option<String>,
    /// Log filter [default: info].
    #[arg(long)]
    log: Option<String>,
    /// Requests per second per token; 0 turns the limit off [default: 2000].
    #[arg(long)]
    rate_limit: Option<String>,
    /// The bearer token /metrics needs [default: none, /metrics is open].
    #[arg(long)]
    metrics_token: Option<String>,
    /// Compact ended tasks' events after this long, e.g. 7d [default: off].
    #[arg(long)]
    retention: Option<String>,
    /// Delete compacted tasks after this long, e.g. 30d [default: off].
    #[arg(long)]
    retention_delete: Option<String>,
}

impl Settings {
    fn resolve(self) -> Result<Config, ConfigError> {
        let path = self
            .config
            .or_else(|| std::env::var_os(honeycomb::config::CONFIG_ENV).map(PathBuf::from));
        let file = match &path {
            Some(p) => Some((p.as_path(), Layer::from_file(p)?)),
            None => None,
        };
        let env = Layer::from_env(std::env::vars())?;
        let flags = Layer {
            listen: self.listen,
            data_dir: self.data_dir,
            backend: self.backend,
            registry: self.registry,
            registry_keys: self.registry_keys,
            shutdown_grace: self.shutdown_grace,
            log: self.log,
            rate_limit: self.rate_limit,
            metrics_token: self.metrics_token,
            retention: self.retention,
            retention_delete: self.retention_delete,
            ..Layer::default()
        };
        Config::resolve(file, env, flags)
    }
}

async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGTERM; stopping on Ctrl-C only");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("stopping");
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (command, settings) = match cli.command {
        Command::Serve(s) => ("serve", s),
        Command::Config(s) => ("config", s),
        Command::Healthcheck(s) => ("healthcheck", s),
        Command::Openapi => {
            println!("{}", honeycomb::api::openapi_json());
            return ExitCode::SUCCESS;
        }
        Command::Admin { command } => return run_admin(command),
    };
    let config = match settings.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("honeycomb: {e}");
            return ExitCode::FAILURE;
        }
    };
    if command == "config" {
        print!("{}", config.render());
        return ExitCode::SUCCESS;
    }
    if command == "serve" {
        let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("honeycomb: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if command == "healthcheck" {
        let probe = honeycomb::healthcheck(config.listen, std::time::Duration::from_secs(3));
        return match runtime.block_on(probe) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("honeycomb: unhealthy: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match runtime.block_on(honeycomb::serve(config, stop_signal(), |_| {})) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("honeycomb: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `honeycomb admin …`: resolves the settings, runs the command on the
/// store, and reports a failure as one line on stderr with its exit code.
fn run_admin(command: AdminCommand) -> ExitCode {
    let (settings, command) = command.split();
    let config = settings.resolve();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("honeycomb: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(admin::run(config, command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if e.is_reported() {
                let _ = writeln!(std::io::stderr(), "honeycomb: {e}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}
