//! `ticket node`: one replica of the event service.
//!
//! A [`TicketMachine`] replicated by a [`replica_core::Node`], with its log in a store under the
//! data directory, talking to its peers over [`HttpTransport`]. Its id is its `host:port`, the
//! address the other replicas and the front ends call it at. On that address it serves:
//!
//! - the cluster routes under `/cluster/` (key required), through which the whole protocol runs;
//! - the read-only routes `GET /events`, `/events/{eventid}`, `/users/{userid}` and
//!   `GET /status`, answered from its own applied state ([`crate::replica_router`]);
//! - `GET /metrics`, Prometheus text.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use clap::Args;
use replica_core::storage::file::{FileLogStore, FileStoreOptions};
use replica_core::{Config, Handler, Node, NodeHandle, NodeId, NodeOptions};
use replica_http::{cluster_router, ClusterKey, HttpTransport};
use tokio::net::TcpListener;

use super::{announce_ready, parse_host_port, CliError, KeyArgs, ListenArgs};
use crate::api::{with_json_fallbacks, ApiError};
use crate::machine::TicketMachine;
use crate::replica_routes::replica_router;

/// Content type of the Prometheus text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Directory under which a node keeps its data when `--data-dir` is not given.
pub const DATA_ROOT_DEFAULT: &str = "ticket-data";

/// One-line description in `ticket --help`.
pub const ABOUT: &str = "Run one replica of the event service";
/// Description in `ticket node --help`.
pub const LONG_ABOUT: &str = "Run one replica of the event service.\n\n\
        Start the first replica with `--primary this`, the others with `--primary HOST:PORT` of \
        the first. The replica keeps its log in --data-dir and continues from it after a \
        restart; it serves the cluster protocol under /cluster/ (cluster key required), \
        read-only GET /events, /events/{eventid}, /users/{userid} from its own state, \
        GET /status and GET /metrics.";
/// Examples at the end of `ticket node --help`.
pub const EXAMPLES: &str =
    "Example:\n  ticket node --port 4600 --primary this --cluster-key s3cret\n  \
        ticket node --port 4601 --primary 127.0.0.1:4600 --cluster-key s3cret";

/// `ticket node` flags.
#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// Where to listen.
    #[command(flatten)]
    pub listen: ListenArgs,
    /// `this` to start as the primary (only takes effect on an empty log), or the HOST:PORT of
    /// the configured primary to greet.
    #[arg(long, value_name = "this|HOST:PORT", value_parser = parse_primary)]
    pub primary: Primary,
    /// Where the log and snapshots live [default: ./ticket-data/node-PORT].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The cluster key.
    #[command(flatten)]
    pub key: KeyArgs,
}

/// The `--primary` flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Primary {
    /// This replica is the configured primary.
    This,
    /// The configured primary is elsewhere; greet it at start.
    At(String),
}

fn parse_primary(s: &str) -> Result<Primary, String> {
    if s == "this" {
        return Ok(Primary::This);
    }
    parse_host_port(s)
        .map(Primary::At)
        .map_err(|e| format!("{e} (or `this`)"))
}

/// Everything a replica needs, resolved from the flags.
#[derive(Debug, Clone)]
pub struct NodeSetup {
    /// Its id: the `host:port` its peers reach it at.
    pub id: NodeId,
    /// The configured primary.
    pub primary: Primary,
    /// Where its store lives.
    pub data_dir: PathBuf,
    /// The cluster key.
    pub key: ClusterKey,
    /// Protocol timeouts and limits.
    pub config: Config,
}

/// Parse, bind, serve until a signal. See the module docs.
pub async fn run(args: NodeArgs) -> Result<(), CliError> {
    let key = args.key.resolve()?;
    let (listener, addr) = args.listen.bind().await?;
    let data_dir = args.data_dir.clone().unwrap_or_else(|| {
        let port = addr.rsplit_once(':').map_or("0", |(_, p)| p);
        Path::new(DATA_ROOT_DEFAULT).join(format!("node-{port}"))
    });
    if args.primary == Primary::At(addr.clone()) {
        return Err(CliError::Usage(format!(
            "--primary {addr} is this node itself; use --primary this"
        )));
    }
    let setup = NodeSetup {
        id: NodeId::new(addr),
        primary: args.primary,
        data_dir,
        key,
        config: Config::default(),
    };
    serve(listener, setup, args.listen.shutdown()).await
}

/// The replica's log store: the durable file store in `dir` (created if missing). The one
/// place that chooses it.
///
/// The store locks the directory, so a second replica pointed at the same directory refuses to
/// start instead of corrupting it.
pub fn open_store(dir: &Path) -> Result<FileLogStore, CliError> {
    std::fs::create_dir_all(dir).map_err(|source| CliError::DataDir {
        dir: dir.display().to_string(),
        source,
    })?;
    Ok(FileLogStore::open(dir, FileStoreOptions::default())?)
}

/// Start the replica described by `setup` and serve its routes on `listener` until `shutdown`
/// completes; then stop the replica.
///
/// The listener must be bound at `setup.id`, the address peers call.
pub async fn serve(
    listener: TcpListener,
    setup: NodeSetup,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CliError> {
    let store = open_store(&setup.data_dir)?;
    let transport = HttpTransport::new(&setup.key)?;
    let (initial_primary, seeds) = match &setup.primary {
        Primary::This => (true, Vec::new()),
        Primary::At(addr) => (false, vec![NodeId::new(addr.clone())]),
    };
    let node = Node::start(NodeOptions {
        id: setup.id.clone(),
        config: setup.config,
        state_machine: TicketMachine::new(),
        store,
        transport,
        initial_primary,
        seeds,
        rng_seed: rng_seed(&setup.id),
    })
    .await?;
    let router = node_router(node.clone(), setup.key);
    tracing::info!(node = %setup.id, data_dir = %setup.data_dir.display(), primary = ?setup.primary, "replica serving");
    announce_ready("node", setup.id.as_str());
    let served = replica_http::serve(listener, router, shutdown).await;
    node.stop();
    served.map_err(CliError::Serve)
}

/// Every route a replica serves: cluster, read-only, status and metrics.
pub fn node_router(node: NodeHandle<TicketMachine>, key: ClusterKey) -> Router {
    let handler: Arc<dyn Handler> = Arc::new(node.clone());
    let metrics = Router::new()
        .route("/metrics", get(metrics))
        .with_state(node.clone());
    with_json_fallbacks(
        replica_router(node)
            .merge(metrics)
            .merge(cluster_router(handler, key)),
    )
}

async fn metrics(State(node): State<NodeHandle<TicketMachine>>) -> Response {
    match node.render_metrics().await {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
            text,
        )
            .into_response(),
        Err(_) => ApiError::unavailable("replica stopped").into_response(),
    }
}

/// Election jitter seed: distinct per replica and per incarnation, so replicas restarted
/// together do not draw the same timeouts.
fn rng_seed(id: &NodeId) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // FNV-1a over the id, mixed with the start time.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.as_str().bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h ^ nanos ^ u64::from(std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primary_flag() {
        assert_eq!(parse_primary("this"), Ok(Primary::This));
        assert_eq!(
            parse_primary("127.0.0.1:4600"),
            Ok(Primary::At("127.0.0.1:4600".into()))
        );
        for bad in ["This", "", "4600", "127.0.0.1"] {
            let e = parse_primary(bad).unwrap_err();
            assert!(e.contains("`this`"), "{bad:?}: {e}");
        }
    }
}
