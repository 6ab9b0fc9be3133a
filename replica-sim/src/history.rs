//! What clients observed (the history the linearizability checker reads) and what the cluster
//! committed (the reference the other checks compare against).

use bytes::Bytes;
use replica_core::message::Written;
use replica_core::types::{Lamport, LogIndex, Role};
use uuid::Uuid;

/// One client operation, from invocation to result.
#[derive(Clone, Debug)]
pub struct OpRecord {
    /// The client that issued it.
    pub client: usize,
    /// Request id (writes; reads carry a nil id).
    pub id: Uuid,
    /// Write (postcard `Command`) or read (postcard `Query`).
    pub write: bool,
    /// The encoded command or query.
    pub payload: Bytes,
    /// Position of the invocation in the run's real-time order.
    pub invoke: u64,
    /// Position of the result in the real-time order; `None` if it never came.
    pub complete: Option<u64>,
    /// The result, if one came.
    pub outcome: Option<Outcome>,
    /// Simulated time of the invocation, ms (for reports).
    pub invoke_ms: u64,
}

/// The result of an operation.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// The write committed with this result.
    Written(Written),
    /// The read was served.
    Read {
        /// postcard `Answer`.
        answer: Bytes,
        /// Lamport stamp of the last entry the serving replica had applied.
        applied: Lamport,
        /// The client's read fence sent with the request.
        fence: Lamport,
        /// The replica that served it.
        server: usize,
        /// Its role when it served it.
        role: Role,
    },
    /// The cluster refused the request itself (a valid workload never sees this).
    Rejected(String),
}

/// The client-observed history of a run.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// Every operation, in invocation order.
    pub ops: Vec<OpRecord>,
    /// Real-time clock: incremented at every invocation and result.
    pub clock: u64,
}

impl History {
    /// Next position in the real-time order.
    pub fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }
}

/// One command entry of the committed log.
#[derive(Clone, Debug)]
pub struct Committed {
    /// Its index.
    pub index: LogIndex,
    /// Its Lamport stamp.
    pub lamport: Lamport,
    /// Its request id.
    pub id: Uuid,
    /// postcard `Command`.
    pub command: Bytes,
}
