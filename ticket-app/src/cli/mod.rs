//! The `ticket` command line: one binary, one subcommand per kind of process.
//!
//! Each subcommand lives in its own file and has the same shape (mini-redis style): a clap
//! `Args` struct, a `run` function that turns the flags into a setup and binds the listener, and
//! a `serve` function that takes the bound listener, the setup and a shutdown future. `serve`
//! is what tests and embedding programs call; `run` is all the binary adds.
//!
//! - [`node`]: one replica (`ticket node`);
//! - [`frontend`]: the public REST API over the cluster (`ticket frontend`);
//! - [`dev`]: a whole local cluster as child processes (`ticket dev`);
//! - [`load`]: concurrent traffic against a front end and a consistency check (`ticket load`).
//!
//! Adding a subcommand: a new file with its `Args` and `run`, a variant in [`Command`], an arm
//! in [`Command::run`].
//!
//! ## Conventions every subcommand follows
//!
//! - Once its listener is bound and it is ready to serve, a process prints exactly one line on
//!   stdout: `ready <kind> http://<host:port>` ([`READY_PREFIX`]). Logs go to stderr
//!   (`RUST_LOG`, default `info`). Scripts and tests wait for that line instead of guessing a
//!   start-up delay, and `--port 0` works: the line carries the port the kernel chose.
//! - It stops cleanly on Ctrl-C or SIGTERM, and also when its stdin reaches end-of-file if
//!   started with the hidden flag `--exit-on-stdin-eof`: a parent that holds the other end of a
//!   pipe (`ticket dev`, the end-to-end tests) thereby takes its children down with it even when
//!   it is killed with `kill -9` and cannot clean up.
//! - A failure to start prints one line saying what was wrong and exits with status 1.

pub mod dev;
pub mod frontend;
pub mod load;
pub mod node;

use std::future::Future;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use replica_core::{NodeError, StorageError};
use replica_http::{BuildError, ClusterKey, KeyError};

/// Environment variable that may hold the cluster key instead of `--cluster-key` (keeps the key
/// out of `ps` output; `ticket dev` hands it to its children this way).
pub const CLUSTER_KEY_ENV: &str = "TICKET_CLUSTER_KEY";

/// First word of the line a process prints on stdout once it serves.
pub const READY_PREFIX: &str = "ready";

/// How long the runtime waits for stray blocking tasks after the server has stopped, before the
/// process exits anyway.
const RUNTIME_SHUTDOWN_GRACE_MS: u64 = 1000;

/// `ticket`: a replicated ticket-selling service.
#[derive(Debug, Parser)]
#[command(
    name = "ticket",
    version,
    about = "A replicated ticket-selling service: replicas, a REST front end, or a local dev cluster.",
    long_about = "A replicated ticket-selling service.\n\n\
        Start a whole local cluster with `ticket dev`, or run the processes yourself: one \
        `ticket node --primary this`, more `ticket node --primary HOST:PORT`, and a \
        `ticket frontend --primary HOST:PORT` that serves the public API.\n\n\
        Logs go to stderr; set RUST_LOG (default: info) to change what is shown."
)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// `ticket node`.
    #[command(about = node::ABOUT, long_about = node::LONG_ABOUT, after_help = node::EXAMPLES)]
    Node(node::NodeArgs),
    /// `ticket frontend`.
    #[command(about = frontend::ABOUT, long_about = frontend::LONG_ABOUT, after_help = frontend::EXAMPLES)]
    Frontend(frontend::FrontendArgs),
    /// `ticket dev`.
    #[command(about = dev::ABOUT, long_about = dev::LONG_ABOUT, after_help = dev::EXAMPLES)]
    Dev(dev::DevArgs),
    /// `ticket load`.
    #[command(about = load::ABOUT, long_about = load::LONG_ABOUT, after_help = load::EXAMPLES)]
    Load(load::LoadArgs),
}

impl Command {
    /// Run the subcommand until it is told to stop.
    pub async fn run(self) -> Result<(), CliError> {
        match self {
            Command::Node(args) => node::run(args).await,
            Command::Frontend(args) => frontend::run(args).await,
            Command::Dev(args) => dev::run(args).await,
            Command::Load(args) => load::run(args).await,
        }
    }
}

/// Why a subcommand could not start or stopped with an error. Each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Neither `--cluster-key` nor `TICKET_CLUSTER_KEY` was given.
    #[error(
        "no cluster key: pass --cluster-key KEY or set {CLUSTER_KEY_ENV} \
         (every replica and front end of one cluster must use the same key)"
    )]
    NoClusterKey,
    /// The key cannot be used.
    #[error("unusable cluster key: {0}")]
    BadClusterKey(#[from] KeyError),
    /// A flag's value makes no sense together with the others.
    #[error("{0}")]
    Usage(String),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// What we tried to bind.
        addr: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The data directory could not be created or opened.
    #[error("cannot use the data directory {dir}: {source}")]
    DataDir {
        /// The directory.
        dir: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The log store could not be opened or read.
    #[error("cannot open the log store: {0}")]
    Store(#[from] StorageError),
    /// The replica could not start from what the store holds.
    #[error("cannot start the replica: {0}")]
    Node(#[from] NodeError),
    /// The HTTP client could not be built.
    #[error(transparent)]
    Transport(#[from] BuildError),
    /// The server loop failed.
    #[error("server failed: {0}")]
    Serve(#[source] std::io::Error),
    /// `ticket dev` could not start or keep its processes.
    #[error("{0}")]
    Dev(String),
    /// `ticket load` could not run, or its consistency check failed.
    #[error(transparent)]
    Load(#[from] crate::load::LoadError),
}

/// The cluster key flag, shared by `node` and `frontend`.
#[derive(Debug, Clone, Args)]
pub struct KeyArgs {
    /// Shared secret of the cluster, required on every request under /cluster/ (printable
    /// ASCII, no spaces). Prefer the environment variable: flags show up in `ps`.
    #[arg(long, value_name = "KEY", env = CLUSTER_KEY_ENV, hide_env_values = true)]
    pub cluster_key: Option<String>,
}

impl KeyArgs {
    /// The key, or why there is none.
    pub fn resolve(&self) -> Result<ClusterKey, CliError> {
        match self.cluster_key.as_deref() {
            None | Some("") => Err(CliError::NoClusterKey),
            Some(k) => Ok(ClusterKey::new(k)?),
        }
    }
}

/// Flags every server process shares: where it listens and how it is stopped.
#[derive(Debug, Clone, Args)]
pub struct ListenArgs {
    /// Port to listen on (0: any free port; the `ready` line on stdout says which).
    #[arg(long)]
    pub port: u16,
    /// Host or IP address to listen on; with the port it is also the address the other
    /// processes use to reach this one, so it must be reachable from them.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Stop when stdin reaches end-of-file: set by a parent process that wants its children to
    /// exit when it dies.
    #[arg(long, hide = true)]
    pub exit_on_stdin_eof: bool,
}

impl ListenArgs {
    /// Bind the listener; its address (with the real port when `--port 0`) names this process.
    pub async fn bind(&self) -> Result<(tokio::net::TcpListener, String), CliError> {
        let want = format!("{}:{}", self.host, self.port);
        let listener = tokio::net::TcpListener::bind((self.host.as_str(), self.port))
            .await
            .map_err(|source| CliError::Bind {
                addr: want.clone(),
                source,
            })?;
        let port = listener
            .local_addr()
            .map_err(|source| CliError::Bind { addr: want, source })?
            .port();
        Ok((listener, format!("{}:{port}", self.host)))
    }

    /// The future that completes when this process should stop (see [`shutdown_signal`]).
    pub fn shutdown(&self) -> impl Future<Output = ()> + Send + 'static {
        shutdown_signal(self.exit_on_stdin_eof)
    }
}

/// A `HOST:PORT` address as given on the command line.
///
/// Only the shape is checked (a non-empty host, a colon, a port from 1 to 65535); whether the
/// host resolves is found out when it is called, and retried like any unreachable peer.
pub fn parse_host_port(s: &str) -> Result<String, String> {
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("expected HOST:PORT, got {s:?}"));
    };
    if host.is_empty() || host.contains('/') || host.chars().any(char::is_whitespace) {
        return Err(format!(
            "expected HOST:PORT with a host name or IP, got {s:?}"
        ));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(s.to_string()),
        _ => Err(format!(
            "expected HOST:PORT with a port from 1 to 65535, got {s:?}"
        )),
    }
}

/// Completes on Ctrl-C, on SIGTERM, or (when `exit_on_stdin_eof`) when stdin is closed.
///
/// A signal handler that cannot be installed is logged and ignored (the process then stops only
/// by the other means, or by SIGKILL): it never stops the process by itself.
pub async fn shutdown_signal(exit_on_stdin_eof: bool) {
    let ctrl_c = async {
        match tokio::signal::ctrl_c().await {
            Ok(()) => tracing::info!("ctrl-c: stopping"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for ctrl-c");
                std::future::pending::<()>().await;
            }
        }
    };
    let term = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
                tracing::info!("SIGTERM: stopping");
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    let eof = async {
        if exit_on_stdin_eof {
            stdin_closed().await;
            tracing::info!("stdin closed: stopping");
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
        () = eof => {}
    }
}

/// Completes when stdin reaches end-of-file or fails. Reads on a plain thread rather than
/// tokio's stdin: a blocked read on the runtime's blocking pool would hold up runtime shutdown.
async fn stdin_closed() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("stdin-watch".into())
        .spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            let _ = tx.send(());
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot watch stdin");
        std::future::pending::<()>().await;
    }
    let _ = rx.await;
}

/// Print the `ready` line (see the module docs).
pub fn announce_ready(kind: &str, addr: &str) {
    println!("{READY_PREFIX} {kind} http://{addr}");
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`); colours only on a terminal.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// The whole binary: parse the flags, start logging and the runtime, run the subcommand, and
/// turn an error into a message and exit status 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ticket: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(cli.command.run());
    runtime.shutdown_timeout(Duration::from_millis(RUNTIME_SHUTDOWN_GRACE_MS));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ticket: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn host_port_shapes() {
        for ok in ["127.0.0.1:4600", "localhost:1", "node-a.example:65535"] {
            assert_eq!(parse_host_port(ok), Ok(ok.to_string()));
        }
        for bad in [
            "",
            "4600",
            ":4600",
            "127.0.0.1:",
            "127.0.0.1:0",
            "127.0.0.1:65536",
            "127.0.0.1:x",
            "http://127.0.0.1:4600",
            "a b:1",
        ] {
            assert!(parse_host_port(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn key_resolution() {
        let key = |k: Option<&str>| KeyArgs {
            cluster_key: k.map(String::from),
        };
        assert!(matches!(key(None).resolve(), Err(CliError::NoClusterKey)));
        assert!(matches!(
            key(Some("")).resolve(),
            Err(CliError::NoClusterKey)
        ));
        assert!(matches!(
            key(Some("has space")).resolve(),
            Err(CliError::BadClusterKey(KeyError::InvalidCharacter {
                position: 3
            }))
        ));
        assert!(key(Some("s3cret")).resolve().is_ok());
    }
}
