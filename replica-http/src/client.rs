//! The sending side: [`HttpTransport`], a [`Transport`] over one pooled reqwest client.

use std::time::Duration;

use async_trait::async_trait;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use replica_core::message::{decode, encode, CodecError, Message};
use replica_core::{NodeId, Transport, TransportError};

use crate::key::ClusterKey;
use crate::{CLUSTER_PREFIX, MESSAGE_ROUTE, OCTET_STREAM};

/// Most bytes of an error answer's body kept for the error message (the rest is discarded).
const ERROR_DETAIL_BYTES_MAX: usize = 1024;

/// Timeouts and limits of an [`HttpTransport`]. Defaults suit replicas on one host or one LAN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpOptions {
    /// How long to wait for a TCP connection to be accepted. Default 1000 ms: on a LAN a live
    /// peer accepts in well under a millisecond, so a peer that has not answered in a second is
    /// treated as down ([`TransportError::Unreachable`]) rather than slow.
    pub connect_timeout_ms: u64,
    /// How long a whole call may take, from sending the request to the last byte of the reply.
    /// Default 5000 ms.
    ///
    /// It must exceed the longest a healthy peer takes to answer: a write waits for every
    /// in-sync secondary (up to `Config::ack_timeout_ms`, 1500 ms by default, before a dead one
    /// is dropped), and an `InstallSnapshot` reply waits for the snapshot to be made durable.
    /// It should stay well below `ClientConfig::request_deadline_ms` (10 s by default) so that a
    /// front end whose primary hangs still has time to retry elsewhere.
    pub request_timeout_ms: u64,
    /// An idle pooled connection is closed after this long. Default 20,000 ms: below the
    /// server's idle limit ([`crate::ServeOptions::header_read_timeout_ms`], 30 s by default),
    /// so it is this side that closes an idle connection, never the server just as a request
    /// goes out on it (which would fail that call as a broken connection).
    pub idle_timeout_ms: u64,
    /// Idle keep-alive connections kept per peer. Default 64: enough for the bursts of
    /// concurrent calls a primary makes under load, without holding hundreds of sockets open
    /// once the burst is over.
    pub idle_connections_per_peer_max: usize,
    /// Largest reply body accepted, in bytes; a larger one is a [`TransportError::Codec`] error
    /// and is not buffered. Default 64 MiB (a read answer can be large; it bounds the memory
    /// a misbehaving peer can make us allocate).
    pub reply_bytes_max: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            connect_timeout_ms: 1000,
            request_timeout_ms: 5000,
            idle_timeout_ms: 20_000,
            idle_connections_per_peer_max: 64,
            reply_bytes_max: 64 << 20,
        }
    }
}

/// The HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct BuildError(String);

/// A [`Transport`] that sends each message as `POST http://<to>/cluster/message`.
///
/// `NodeId`s are the peers' `host:port` addresses (`127.0.0.1:4601`). Bodies are
/// [`replica_core::message::encode`] bytes (a version byte, then postcard) with content type
/// `application/octet-stream`; every request carries `Authorization: Bearer <cluster key>`.
///
/// One reqwest client is shared by every call (and every clone): HTTP/1.1 keep-alive
/// connections are pooled per peer, so a steady stream of appends reuses warm connections.
/// Plain HTTP only: no TLS stack is compiled in, and environment proxy settings are ignored
/// (cluster traffic must never be routed through `HTTP_PROXY`).
///
/// Errors say what to do next:
///
/// | what happened | error | caller should |
/// |---|---|---|
/// | connection refused, name not resolved, connect timeout, not a `host:port` | [`TransportError::Unreachable`] | back off |
/// | 503 (the peer's node stopped) and other 5xx | [`TransportError::Unreachable`] | back off |
/// | request timeout, connection broken mid-call | [`TransportError::Network`] | retry now |
/// | 401 (wrong cluster key), 413 (body too large), other 4xx, 3xx | [`TransportError::Rejected`] | fix the configuration |
/// | undecodable or oversized reply | [`TransportError::Codec`] | fix the versions |
#[derive(Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    auth: HeaderValue,
    options: HttpOptions,
}

impl std::fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTransport")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl HttpTransport {
    /// A transport that authenticates with `key`, with default options.
    pub fn new(key: &ClusterKey) -> Result<Self, BuildError> {
        Self::with_options(key, HttpOptions::default())
    }

    /// A transport that authenticates with `key`.
    pub fn with_options(key: &ClusterKey, options: HttpOptions) -> Result<Self, BuildError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(options.connect_timeout_ms))
            .timeout(Duration::from_millis(options.request_timeout_ms))
            .pool_idle_timeout(Duration::from_millis(options.idle_timeout_ms))
            .pool_max_idle_per_host(options.idle_connections_per_peer_max)
            .tcp_nodelay(true)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| BuildError(error_chain(&e)))?;
        Ok(HttpTransport {
            client,
            auth: key.header_value(),
            options,
        })
    }

    /// The options this transport was built with.
    pub fn options(&self) -> &HttpOptions {
        &self.options
    }
}

#[async_trait]
impl Transport for HttpTransport {
    async fn call(&self, to: &NodeId, msg: Message) -> Result<Message, TransportError> {
        let url = message_url(to)?;
        let body = encode(&msg).map_err(|e| TransportError::Codec(to.clone(), e))?;
        let mut response = self
            .client
            .post(url)
            .header(AUTHORIZATION, self.auth.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static(OCTET_STREAM))
            .body(body)
            .send()
            .await
            .map_err(|e| request_error(to, &e))?;
        let status = response.status();
        if status != StatusCode::OK {
            let detail = read_detail(&mut response).await;
            return Err(status_error(to, status, &detail));
        }
        let bytes = read_limited(&mut response, self.options.reply_bytes_max)
            .await
            .map_err(|e| match e {
                ReadError::TooLarge => TransportError::Codec(
                    to.clone(),
                    CodecError::Malformed(format!(
                        "reply larger than {} bytes",
                        self.options.reply_bytes_max
                    )),
                ),
                ReadError::Http(e) => request_error(to, &e),
            })?;
        decode(&bytes).map_err(|e| TransportError::Codec(to.clone(), e))
    }
}

/// `http://<to>/cluster/message`, or `Unreachable` when `to` is not a plain `host:port`.
///
/// Node ids arrive in gossip from other processes, so a malformed one (a path, a query, user
/// info smuggled in) is refused here rather than turned into some other request.
fn message_url(to: &NodeId) -> Result<reqwest::Url, TransportError> {
    let bad = |why: &str| {
        TransportError::Unreachable(to.clone(), format!("not a host:port address: {why}"))
    };
    let url = reqwest::Url::parse(&format!("http://{to}{CLUSTER_PREFIX}{MESSAGE_ROUTE}"))
        .map_err(|e| bad(&e.to_string()))?;
    let plain = url.host_str().is_some_and(|h| !h.is_empty())
        && has_port(to.as_str())
        && url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none()
        && url.path() == format!("{CLUSTER_PREFIX}{MESSAGE_ROUTE}");
    if !plain {
        return Err(bad("expected HOST:PORT"));
    }
    Ok(url)
}

/// The id ends in `:PORT` (checked on the id itself: the parsed URL hides a default port 80).
fn has_port(id: &str) -> bool {
    id.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// Classify a failure to send the request or read the reply.
fn request_error(to: &NodeId, e: &reqwest::Error) -> TransportError {
    let detail = error_chain(e);
    if e.is_connect() || e.is_builder() {
        // Refused, unresolvable, or no answer to the connection attempt: the peer is down.
        TransportError::Unreachable(to.clone(), detail)
    } else {
        // Timed out, or the connection broke after the request went out: the peer may have
        // processed it; the protocol tolerates a retry.
        TransportError::Network(to.clone(), detail)
    }
}

/// Classify a non-200 answer.
fn status_error(to: &NodeId, status: StatusCode, detail: &str) -> TransportError {
    let what = if detail.is_empty() {
        status.to_string()
    } else {
        format!("{status}: {detail}")
    };
    if status.is_server_error() {
        // 503 is a stopped node behind a live server; other 5xx a broken one. Either way the
        // peer cannot answer now.
        TransportError::Unreachable(to.clone(), what)
    } else {
        // 401 wrong key, 413 too large, 400 undecodable, 404 not a cluster endpoint, a redirect:
        // the same request will get the same answer.
        TransportError::Rejected(to.clone(), what)
    }
}

/// The start of an error answer's body, for the error message; empty if unreadable.
async fn read_detail(response: &mut reqwest::Response) -> String {
    let mut out = Vec::new();
    while out.len() < ERROR_DETAIL_BYTES_MAX {
        match response.chunk().await {
            Ok(Some(chunk)) => out.extend_from_slice(&chunk),
            _ => break,
        }
    }
    out.truncate(ERROR_DETAIL_BYTES_MAX);
    String::from_utf8_lossy(&out).trim().to_string()
}

enum ReadError {
    TooLarge,
    Http(reqwest::Error),
}

/// Read the whole body, refusing (before buffering) more than `max_bytes`.
async fn read_limited(
    response: &mut reqwest::Response,
    max_bytes: usize,
) -> Result<Vec<u8>, ReadError> {
    let declared = response.content_length().unwrap_or(0);
    if declared > max_bytes as u64 {
        return Err(ReadError::TooLarge);
    }
    // The declared length is at most `max_bytes`, so reserving it is bounded.
    let mut out = Vec::with_capacity(usize::try_from(declared).unwrap_or(0));
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Http)? {
        if out.len() + chunk.len() > max_bytes {
            return Err(ReadError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// An error and its sources, `outer: inner: root`, so "connection refused" is not hidden behind
/// "error sending request".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap: a failure is the test failing
mod tests {
    use super::*;

    #[test]
    fn status_codes_map_to_what_the_caller_should_do() {
        let to = NodeId::new("127.0.0.1:1");
        let cases: &[(u16, &str)] = &[
            (401, "rejected"),
            (413, "rejected"),
            (400, "rejected"),
            (404, "rejected"),
            (405, "rejected"),
            (301, "rejected"),
            (503, "unreachable"),
            (500, "unreachable"),
            (502, "unreachable"),
        ];
        for (code, want) in cases {
            let status = StatusCode::from_u16(*code).unwrap();
            let got = match status_error(&to, status, "why") {
                TransportError::Rejected(..) => "rejected",
                TransportError::Unreachable(..) => "unreachable",
                other => panic!("{code}: unexpected {other:?}"),
            };
            assert_eq!(got, *want, "status {code}");
            assert!(
                !status_error(&to, status, "why").retry_now(),
                "status {code} must not say retry now"
            );
        }
        assert!(status_error(&to, StatusCode::UNAUTHORIZED, "wrong key")
            .to_string()
            .contains("wrong key"));
    }

    #[test]
    fn only_plain_host_port_ids_become_urls() {
        let ok = [
            "127.0.0.1:4600",
            "localhost:80",
            "[::1]:4600",
            "replica-2.internal:4601",
        ];
        for id in ok {
            let url = message_url(&NodeId::new(id)).unwrap_or_else(|e| panic!("{id}: {e}"));
            assert_eq!(url.path(), "/cluster/message", "{id}");
        }
        let bad = [
            "",
            "r1",
            "127.0.0.1",
            "127.0.0.1:4600/other",
            "127.0.0.1:4600?x=1",
            "127.0.0.1:4600#frag",
            "user:pw@127.0.0.1:4600",
            "127.0.0.1:99999",
            "has space:80",
        ];
        for id in bad {
            match message_url(&NodeId::new(id)) {
                Err(TransportError::Unreachable(..)) => {}
                other => panic!("{id:?}: expected Unreachable, got {other:?}"),
            }
        }
    }
}
