//! `ticket frontend`: the public REST API (the seed's front end service).
//!
//! A [`replica_core::Client`] over [`HttpTransport`] that knows the configured primary, greets
//! it every few hundred milliseconds (the seed's `POST /greet/frontend`) to learn the service
//! list, and follows announcements of a new primary. On its `host:port` it serves:
//!
//! - the public API ([`crate::frontend_router`], with `GET /openapi.json`);
//! - `GET /dashboard`, the cluster live in a browser, and its JSON `GET /cluster-view`
//!   ([`crate::dashboard`]);
//! - the cluster routes under `/cluster/` (key required), through which announcements reach it;
//! - `GET /metrics`, Prometheus text.

use std::future::Future;
use std::sync::Arc;

use axum::http::header;
use axum::routing::get;
use axum::Router;
use clap::Args;
use replica_core::metrics::render_client;
use replica_core::{Client, ClientConfig, Handler, NodeId, Transport};
use replica_http::{cluster_router, ClusterKey, HttpTransport};
use tokio::net::TcpListener;

use super::node::METRICS_CONTENT_TYPE;
use super::{announce_ready, parse_host_port, CliError, KeyArgs, ListenArgs};
use crate::dashboard::{dashboard_router, DashboardOptions};
use crate::frontend::frontend_router;

/// One-line description in `ticket --help`.
pub const ABOUT: &str = "Run a front end: the public REST API, served through the replicas";
/// Description in `ticket frontend --help`.
pub const LONG_ABOUT: &str =
    "Run a front end: the public REST API (GET /events, POST /events/create, \
        GET /events/{eventid}, POST /events/{eventid}/purchase/{userid}, POST /users/create, \
        GET /users/{userid}, POST /users/{userid}/tickets/transfer, GET /greet, \
        GET /openapi.json), served through the replicas.\n\n\
        It greets the configured primary to learn the other replicas, holds and retries a write \
        across a failover (same request id, executed at most once), and never shows data older \
        than it has already shown.";
/// Examples at the end of `ticket frontend --help`.
pub const EXAMPLES: &str =
    "Example:\n  ticket frontend --port 4560 --primary 127.0.0.1:4600 --cluster-key s3cret";

/// `ticket frontend` flags.
#[derive(Debug, Clone, Args)]
pub struct FrontendArgs {
    /// Where to listen.
    #[command(flatten)]
    pub listen: ListenArgs,
    /// HOST:PORT of the configured primary replica; the others are learned from it.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_host_port)]
    pub primary: String,
    /// The cluster key.
    #[command(flatten)]
    pub key: KeyArgs,
}

/// Everything a front end needs, resolved from the flags.
#[derive(Debug, Clone)]
pub struct FrontendSetup {
    /// Its own `host:port`, where replicas send announcements.
    pub me: NodeId,
    /// The configured primary.
    pub primary: NodeId,
    /// The cluster key.
    pub key: ClusterKey,
    /// Deadlines and retry pacing.
    pub client: ClientConfig,
}

/// Parse, bind, serve until a signal. See the module docs.
pub async fn run(args: FrontendArgs) -> Result<(), CliError> {
    let key = args.key.resolve()?;
    let (listener, addr) = args.listen.bind().await?;
    if args.primary == addr {
        return Err(CliError::Usage(format!(
            "--primary {addr} is this front end's own address; give a replica's"
        )));
    }
    let setup = FrontendSetup {
        me: NodeId::new(addr),
        primary: NodeId::new(args.primary),
        key,
        client: ClientConfig::default(),
    };
    serve(listener, setup, args.listen.shutdown()).await
}

/// Serve the front end described by `setup` on `listener` until `shutdown` completes.
///
/// The listener must be bound at `setup.me`, the address replicas announce a new primary to.
pub async fn serve(
    listener: TcpListener,
    setup: FrontendSetup,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CliError> {
    let transport = HttpTransport::new(&setup.key)?;
    let client = Client::new(
        setup.me.clone(),
        transport,
        vec![setup.primary.clone()],
        setup.client,
    );
    let membership = tokio::spawn(client.clone().run_membership());
    let router = frontend_app(client, setup.key, &setup.me);
    tracing::info!(frontend = %setup.me, primary = %setup.primary, "front end serving");
    announce_ready("frontend", setup.me.as_str());
    let served = replica_http::serve(listener, router, shutdown).await;
    membership.abort();
    served.map_err(CliError::Serve)
}

/// Every route a front end serves: the public API, the dashboard, the cluster routes and
/// metrics. `me` is the front end's own `host:port`, shown on the dashboard.
pub fn frontend_app<T: Transport>(client: Client<T>, key: ClusterKey, me: &NodeId) -> Router {
    let handler: Arc<dyn Handler> = Arc::new(client.clone());
    let for_metrics = client.clone();
    let dashboard = dashboard_router(client.clone(), DashboardOptions::new(me.as_str()));
    frontend_router(client)
        .route(
            "/metrics",
            get(move || {
                let text = render_client(for_metrics.stats());
                async move { ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text) }
            }),
        )
        .merge(dashboard)
        .merge(cluster_router(handler, key))
}
