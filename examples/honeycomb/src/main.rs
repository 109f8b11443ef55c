//! The `honeycomb` binary: `honeycomb serve`, `honeycomb config`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use honeycomb::{Config, ConfigError, Layer};

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
    /// API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
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
        /// The tenant the token acts in.
        #[arg(long)]
        tenant: String,
        /// The principal it stands for.
        #[arg(long)]
        principal: String,
        /// user, operator or admin.
        #[arg(long, default_value = "admin")]
        kind: String,
        /// How long it is valid (e.g. 30d); forever when absent.
        #[arg(long)]
        ttl: Option<String>,
        /// What it is for.
        #[arg(long, default_value = "issued by honeycomb admin token issue")]
        description: String,
    },
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
        Command::Admin {
            command:
                AdminCommand::Token {
                    command:
                        TokenCommand::Issue {
                            settings,
                            tenant,
                            principal,
                            kind,
                            ttl,
                            description,
                        },
                },
        } => {
            let request = honeycomb::admin::IssueRequest {
                tenant,
                principal,
                kind,
                ttl,
                description,
            };
            return admin_issue(settings, request);
        }
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

fn admin_issue(settings: Settings, request: honeycomb::admin::IssueRequest) -> ExitCode {
    let config = match settings.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("honeycomb: {e}");
            return ExitCode::FAILURE;
        }
    };
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
    match runtime.block_on(honeycomb::admin::issue_token(&config, request)) {
        Ok(issued) => {
            eprintln!(
                "honeycomb: issued token {} for {}/{} ({}); it is shown once:",
                issued.info.id, issued.info.tenant, issued.info.principal, issued.info.kind
            );
            println!("{}", issued.token);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("honeycomb: {e}");
            ExitCode::FAILURE
        }
    }
}
