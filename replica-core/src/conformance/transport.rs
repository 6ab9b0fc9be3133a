//! The `Transport` conformance suite.

use crate::transport::Transport;

/// Run every `Transport` requirement against a transport. Filled in with the HTTP transport.
pub async fn transport_suite<T: Transport>(_transport: &T) {}
