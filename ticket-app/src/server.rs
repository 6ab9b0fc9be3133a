//! Serving a router on a listener the caller bound.

use std::future::Future;

use axum::Router;
use tokio::net::TcpListener;

/// Serve `app` on `listener` until `shutdown` completes, then finish in-flight requests and
/// return.
///
/// The caller binds the listener (port 0 in tests, the configured port in the binary), so
/// nothing here picks addresses or parses flags.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
