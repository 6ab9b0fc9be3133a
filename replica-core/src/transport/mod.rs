//! How messages reach peers.
//!
//! The contract is deliberately weak (TigerBeetle's, chitchat's): a message may be lost,
//! duplicated, delayed and reordered, and `call` may fail even though the peer processed the
//! message. The protocol core is correct under all of that; a transport only has to deliver most
//! messages quickly most of the time.

use async_trait::async_trait;

use crate::message::{CodecError, Message};
use crate::types::NodeId;

#[cfg(feature = "testing")]
mod mem;
#[cfg(feature = "testing")]
pub use mem::{Faults, MemNetwork, MemTransport};

/// Sends protocol messages to peers and returns their replies.
///
/// # Correctness requirements
///
/// - `call` delivers `msg` to the [`Handler`] registered at `to` zero, one or more times
///   (duplicates are allowed) and returns one of its replies, or an error.
/// - An error says nothing about whether the peer processed the message.
/// - Replies must be the handler's replies to *this* message (no cross-talk between calls).
/// - Every message crosses the transport through [`crate::message::encode`] /
///   [`crate::message::decode`] (or an equivalent stable encoding), so an in-process test
///   exercises the same codec as production.
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Deliver one protocol message to `to` and return its reply.
    async fn call(&self, to: &NodeId, msg: Message) -> Result<Message, TransportError>;

    /// Whether messages reach this process without the runtime's I/O driver (channels between
    /// tasks rather than sockets). The runtime polls differently for each: over sockets an idle
    /// poll must give the I/O driver a turn (a system call) or it would never see the next
    /// request arrive; within the process it need not, and a poll costs a tenth as much
    /// (`Config::idle_polls`). Default `false`, right for any network transport.
    fn in_process(&self) -> bool {
        false
    }
}

/// The receiving side: what a transport's server hands inbound messages to. Implemented by the
/// replica runtime ([`crate::NodeHandle`]) and by the front-end [`crate::Client`].
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Process one inbound message and produce the reply, or fail because the receiver has
    /// stopped (a transport reports that as the peer being unreachable).
    async fn handle(&self, msg: Message) -> Result<Message, NodeStopped>;

    /// Process one message that arrived encoded ([`crate::message::encode`]'s bytes) and return
    /// the reply encoded. A transport that carries bytes within the process hands them over as
    /// they are, so that the receiver decodes them where a network receiver would, on its own
    /// time: the replica runtime decodes an append on the receiving replica's task, not on the
    /// sending primary's (whose thread is the cluster's bottleneck under load).
    ///
    /// The default decodes, calls [`Handler::handle`] and encodes the reply.
    async fn handle_encoded(&self, bytes: Vec<u8>) -> Result<Vec<u8>, HandleError> {
        handle_decoded(self, &bytes).await
    }
}

/// [`Handler::handle_encoded`]'s default: decode `bytes`, [`Handler::handle`] the message,
/// encode the reply. For an implementation that decodes some messages itself and leaves the
/// rest to this.
pub(crate) async fn handle_decoded<H: Handler + ?Sized>(
    handler: &H,
    bytes: &[u8],
) -> Result<Vec<u8>, HandleError> {
    let msg = crate::message::decode(bytes)?;
    let reply = handler.handle(msg).await?;
    Ok(crate::message::encode(&reply)?)
}

/// Why [`Handler::handle_encoded`] produced no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// The receiver stopped.
    #[error(transparent)]
    Stopped(#[from] NodeStopped),
    /// The message could not be decoded, or the reply encoded.
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
}

/// The receiver stopped (shut down, crashed in a test, or halted after a storage failure).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node stopped")]
pub struct NodeStopped;

/// Why a call failed, and what the caller should do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The peer is not there (connection refused, unknown address, link cut). **Back off**
    /// before trying it again; it is probably down.
    #[error("peer {0} unreachable: {1}")]
    Unreachable(NodeId, String),
    /// No reply in time, or the connection broke mid-call. **Retry now** (the message may or may
    /// not have been processed; the protocol tolerates both).
    #[error("call to {0} failed: {1}")]
    Network(NodeId, String),
    /// The peer refused the request itself (bad cluster key, body too large). Retrying will not
    /// help until the configuration is fixed.
    #[error("peer {0} rejected the request: {1}")]
    Rejected(NodeId, String),
    /// A message could not be encoded or the reply could not be decoded.
    #[error("codec error talking to {0}: {1}")]
    Codec(NodeId, CodecError),
}

impl TransportError {
    /// True when retrying immediately is reasonable; false when the caller should back off.
    pub fn retry_now(&self) -> bool {
        matches!(self, TransportError::Network(..))
    }
}
