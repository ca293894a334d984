//! The `riskgate` command line: `serve` runs the service; the other commands talk to a running
//! server over gRPC, as an operator would.

mod output;
mod remote;
mod render;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use thiserror::Error;

use crate::config::{Config, ConfigError, LogFormat};
use crate::server::{self, ServeError};
use output::sayln;

#[derive(Debug, Parser)]
#[command(
    name = "riskgate",
    version,
    about = "One circuit breaker per trading account, as a gRPC service"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// In the order an operator reaches for them (`riskgate --help` lists them so): run it; look
// (status, halts, events, audit, configuration, cluster, health); act on one account; act on
// many; tools.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (without --config: 127.0.0.1:50051 and the built-in defaults).
    Serve {
        /// A TOML file overriding the built-in configuration.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Log format; overrides `log.format` in the configuration.
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
    },
    /// Show all breakers as a table, or one breaker in full.
    Status {
        account: Option<String>,
        /// One JSON object per breaker, one per line (halts: `riskgate halts --json`).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Show the halts in force (firm-wide, then groups), with who halted and why.
    Halts {
        /// One JSON object per halt, one per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Follow state changes, one line each, until Ctrl-C; reconnects and resumes.
    Watch {
        /// Only these accounts (all when none are given).
        accounts: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Show the audit trail of operator actions, newest first; with `--format jsonl`, one JSON
    /// object per line, for archiving before records pass their retention (`[audit]`).
    Audit {
        /// Only this account's records.
        account: Option<String>,
        /// At most this many records; 0 for every record.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Only records at or after this time: RFC 3339 (2026-12-01T00:00:00Z) or a duration
        /// ago (7d, 12h).
        #[arg(long, value_parser = parse_time)]
        since: Option<std::time::SystemTime>,
        /// Only records before this time, in the same forms.
        #[arg(long, value_parser = parse_time)]
        until: Option<std::time::SystemTime>,
        /// `table` for people, `jsonl` for programs.
        #[arg(long, value_enum, default_value_t = AuditFormat::Table)]
        format: AuditFormat,
        /// One JSON object per record, one per line: the same as `--format jsonl`.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Print the configuration the server runs with, and its version; with ACCOUNT, that
    /// account's settings in force and where each comes from (default, file, operator).
    Config {
        /// The account, as its bots name it (for example desk-a:momo).
        account: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Show the cluster: the node that answers and its role, the leader and its epoch, each
    /// node's mirror lag and lease time left.
    Cluster {
        /// One JSON object per member, one per line (the leader and epoch on each).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Ask the server's gRPC health service; exit 0 only when it is SERVING (for container and
    /// orchestrator health checks).
    Health {
        /// A service name, e.g. riskgate.v1.GateService (default: the whole server).
        #[arg(long, default_value = "")]
        service: String,
        #[command(flatten)]
        target: Target,
    },
    /// Open a breaker and hold it open until it is reset (or, with --for, for that long).
    Trip {
        #[command(flatten)]
        subject: AccountArgs,
        /// Hold it open this long (e.g. 15m, 2h), then test recovery as usual.
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        hold: Option<std::time::Duration>,
        #[command(flatten)]
        action: ActionArgs,
        #[command(flatten)]
        target: Target,
    },
    /// Close a breaker and clear its counters.
    Reset {
        #[command(flatten)]
        subject: AccountArgs,
        #[command(flatten)]
        action: ActionArgs,
        #[command(flatten)]
        target: Target,
    },
    /// Set how strictly an account's breaker is applied: enforce, shadow, disabled, or
    /// configured (back to what the configuration says).
    Mode {
        #[command(flatten)]
        subject: AccountArgs,
        #[arg(value_parser = ["enforce", "shadow", "disabled", "configured"])]
        mode: String,
        #[command(flatten)]
        action: ActionArgs,
        #[command(flatten)]
        target: Target,
    },
    /// Change an account's breaker settings over the configured ones, until changed again or
    /// cleared; configuration reloads keep them. `riskgate config ACCOUNT` shows the settings
    /// in force and where each comes from.
    Settings {
        #[command(flatten)]
        subject: AccountArgs,
        /// Settings to set, as KEY=VALUE with the keys of `[breaker]` (failure_threshold=3,
        /// open_timeout_secs=60, failure_kinds.order_rejected=ignore).
        #[arg(value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Clear an operator's value so the configured one applies again (repeatable;
        /// `failure_kinds` clears every kind, `all` every setting).
        #[arg(long, value_name = "KEY")]
        clear: Vec<String>,
        #[command(flatten)]
        action: ActionArgs,
        #[command(flatten)]
        target: Target,
    },
    /// Halt trading firm-wide (or, with --group, one configured group): every order but cancels
    /// is denied until `riskgate resume`.
    Halt {
        /// Halt only this group of accounts (`[groups.NAME]` in the configuration).
        #[arg(long)]
        group: Option<String>,
        #[command(flatten)]
        action: ActionArgs,
        #[command(flatten)]
        target: Target,
    },
    /// End a firm-wide halt (or, with --group, a group's halt).
    Resume {
        #[arg(long)]
        group: Option<String>,
        #[command(flatten)]
        action: ActionArgs,
        #[command(flatten)]
        target: Target,
    },
    /// Read a bearer token on stdin and print the SHA-256 that `auth.principals` stores.
    HashToken,
}

#[derive(Debug, Args)]
pub struct Target {
    /// The riskgate server (https://... for TLS).
    #[arg(long, env = "RISKGATE_ADDR", default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// The CA that signed the server's certificate (PEM); turns TLS on.
    #[arg(long, env = "RISKGATE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) for mutual TLS, with --tls-key.
    #[arg(long, env = "RISKGATE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "RISKGATE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// The name to expect in the server's certificate, when not the host of --addr.
    #[arg(long, env = "RISKGATE_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
    /// A bearer token (auth.mode = "token").
    #[arg(long, env = "RISKGATE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// How long to wait for each answer, in seconds.
    #[arg(long, env = "RISKGATE_TIMEOUT_SECS", default_value_t = 10.0)]
    pub timeout: f64,
}

/// The account an operator acts on.
#[derive(Debug, Args)]
pub struct AccountArgs {
    /// The account, as its bots name it (for example desk-a:momo).
    pub account: String,
    /// Act on an account riskgate has never seen (before its first order); without it, such
    /// an account is refused as a likely typo.
    #[arg(long)]
    pub new: bool,
}

#[derive(Debug, Args)]
pub struct ActionArgs {
    /// Why (recorded with the event).
    #[arg(long)]
    pub reason: String,
    /// Who acts (default: $USER). Required when $USER is not set, unless a --token names the
    /// principal (the server then records the principal, whatever this says).
    #[arg(long, env = "USER", default_value = "")]
    pub operator: String,
}

#[derive(Debug, Error)]
pub enum CliError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Logging(String),
    #[error("{0}")]
    Serve(#[from] ServeError),
    #[error("could not listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot reach riskgate at {addr}: {detail}")]
    Unreachable { addr: String, detail: String },
    #[error("{0}")]
    Refused(String),
}

impl Command {
    /// The server a client command talks to.
    fn target(&self) -> Option<&Target> {
        match self {
            Command::Serve { .. } | Command::HashToken => None,
            Command::Status { target, .. }
            | Command::Watch { target, .. }
            | Command::Reset { target, .. }
            | Command::Health { target, .. }
            | Command::Audit { target, .. }
            | Command::Trip { target, .. }
            | Command::Mode { target, .. }
            | Command::Settings { target, .. }
            | Command::Halt { target, .. }
            | Command::Resume { target, .. }
            | Command::Cluster { target, .. }
            | Command::Halts { target, .. }
            | Command::Config { target, .. } => Some(target),
        }
    }
}

/// Runs one command to completion.
pub async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    if let Some(target) = cli.command.target() {
        remote::configure(target)?;
    }
    match cli.command {
        Command::HashToken => hash_token(),
        Command::Serve { config, log_format } => serve(config, log_format).await,
        Command::Status {
            account,
            json,
            target,
        } => remote::status(&target.addr, account, json).await,
        Command::Halts { json, target } => remote::halts(&target.addr, json).await,
        Command::Watch { accounts, target } => watch::follow(&target.addr, accounts).await,
        Command::Reset {
            subject,
            action,
            target,
        } => {
            let AccountArgs { account, new } = subject;
            remote::act(&target.addr, remote::Action::Reset, account, new, action).await
        }
        Command::Trip {
            subject,
            hold,
            action,
            target,
        } => {
            let AccountArgs { account, new } = subject;
            remote::act(
                &target.addr,
                remote::Action::Trip(hold),
                account,
                new,
                action,
            )
            .await
        }
        Command::Mode {
            subject,
            mode,
            action,
            target,
        } => remote::set_mode(&target.addr, subject.account, &mode, subject.new, action).await,
        Command::Halt {
            group,
            action,
            target,
        } => remote::halt(&target.addr, true, group, action).await,
        Command::Resume {
            group,
            action,
            target,
        } => remote::halt(&target.addr, false, group, action).await,
        Command::Config { account, target } => match account {
            Some(account) => remote::account_config(&target.addr, account).await,
            None => remote::config(&target.addr).await,
        },
        Command::Settings {
            subject,
            set,
            clear,
            action,
            target,
        } => {
            let AccountArgs { account, new } = subject;
            remote::set_settings(&target.addr, account, set, clear, new, action).await
        }
        Command::Cluster { json, target } => remote::cluster(&target.addr, json).await,
        Command::Health { service, target } => remote::health(&target.addr, service).await,
        Command::Audit {
            account,
            limit,
            since,
            until,
            format,
            json,
            target,
        } => {
            let query = remote::AuditQuery {
                account,
                limit,
                since,
                until,
                format: if json { AuditFormat::Jsonl } else { format },
            };
            remote::audit(&target.addr, query).await
        }
    }
}

fn hash_token() -> Result<ExitCode, CliError> {
    let mut token = String::new();
    std::io::stdin()
        .read_line(&mut token)
        .map_err(|e| CliError::Refused(format!("cannot read the token from stdin: {e}")))?;
    let token = token.trim();
    if token.is_empty() {
        return Err(CliError::Refused("no token on stdin".into()));
    }
    sayln!("{}", crate::auth::token_sha256_hex(token));
    Ok(ExitCode::SUCCESS)
}

async fn serve(file: Option<PathBuf>, log_format: Option<LogFormat>) -> Result<ExitCode, CliError> {
    let mut config = Config::load(file.as_deref())?;
    if file.is_none() {
        config.console.quick_start();
    }
    crate::logging::init(log_format.unwrap_or(config.log.format), &config.log.level)
        .map_err(CliError::Logging)?;
    let addr = config.listen_addr()?;
    // The store first: one that cannot be used stops start-up before anything listens.
    let (store, membership) = open_node(&config).await?;
    let listener =
        crate::connections::bind(addr, config.limits.listen_backlog).map_err(|source| {
            CliError::Bind {
                addr: addr.to_string(),
                source,
            }
        })?;
    if !addr.ip().is_loopback() && !config.tls.enabled() {
        tracing::warn!(%addr, "listening in plaintext on a non-loopback address: set [tls] cert and key");
    }
    if config.auth.mode == crate::config::AuthMode::None && !addr.ip().is_loopback() {
        tracing::warn!(%addr, "auth.mode is \"none\": any caller that reaches this address may trade, reset and halt");
    }
    // Metrics are process-wide: the binary serves them, tests and embedders need not.
    let metrics = match config.metrics.listen_addr()? {
        Some(listen) => {
            let task = crate::metrics::serve(listen).map_err(CliError::Refused)?;
            tracing::info!(%listen, "serving Prometheus metrics on /metrics");
            Some(task)
        }
        None => None,
    };
    let clock = std::sync::Arc::new(crate::clock::SystemClock::new());
    let served = server::serve_node(
        listener,
        &config,
        store,
        clock,
        membership,
        shutdown_signal(),
    )
    .await;
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    served?;
    Ok(ExitCode::SUCCESS)
}

/// The store, and the cluster node when `[cluster]` names etcd endpoints.
async fn open_node(
    config: &Config,
) -> Result<
    (
        std::sync::Arc<dyn crate::store::Store>,
        Option<std::sync::Arc<dyn crate::cluster::Membership>>,
    ),
    CliError,
> {
    if !config.cluster.enabled() {
        return Ok((server::open_store(config)?, None));
    }
    #[cfg(feature = "cluster")]
    {
        let node = crate::cluster::Node::connect(config)
            .await
            .map_err(CliError::Refused)?;
        let store = node.store();
        Ok((store, Some(node)))
    }
    #[cfg(not(feature = "cluster"))]
    Err(CliError::Refused(
        "[cluster] names etcd endpoints, but this riskgate was built without cluster mode: build it with `cargo build --release --features cluster`".into(),
    ))
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
                    _ = terminate.recv() => tracing::info!("SIGTERM received"),
                }
                return;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM; only SIGINT stops the server")
            }
        }
    }
    if let Err(error) = tokio::signal::ctrl_c().await {
        tracing::error!(%error, "cannot listen for SIGINT");
        std::future::pending::<()>().await;
    }
}

/// How `riskgate audit` prints records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AuditFormat {
    Table,
    Jsonl,
}

/// A time on the command line: RFC 3339, or a duration before now.
fn parse_time(text: &str) -> Result<std::time::SystemTime, String> {
    if let Ok(at) = humantime::parse_rfc3339_weak(text) {
        return Ok(at);
    }
    let ago = humantime::parse_duration(text).map_err(|_| {
        format!("{text:?} is neither an RFC 3339 time (2026-12-01T00:00:00Z) nor a duration ago (7d, 12h)")
    })?;
    std::time::SystemTime::now()
        .checked_sub(ago)
        .ok_or_else(|| format!("{text} ago is before the epoch"))
}
