//! The application side: what gets replicated.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The application whose state is replicated.
///
/// Every replica applies the same committed commands in the same order, so every replica ends in
/// the same state. The primary applies a command only once it is committed (held by every in-sync
/// replica), so no state — and no answer — ever reflects a write that could still be lost.
///
/// # Correctness requirements
///
/// - `apply` is **deterministic**: the same state and the same command give the same output and
///   the same new state on every replica, today and after a restart. No clocks, no randomness, no
///   iteration over `HashMap`s whose order can differ, no I/O. Ids are drawn from counters in the
///   state. Time, if needed, must be inside the command.
/// - `apply` never panics on a command a client could send: invalid commands return an error
///   *output* (and leave the state unchanged), because they are already in the log.
/// - `snapshot` followed by `restore` on another replica yields a state that answers every query
///   and applies every later command exactly as the original would.
/// - `restore` rejects bytes it cannot read with [`SnapshotError`] and leaves the state unchanged.
pub trait StateMachine: Send + 'static {
    /// A write. Encoded with postcard into the log.
    type Command: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;
    /// The result of a write, returned to the client and remembered for deduplication.
    type Output: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;
    /// A read.
    type Query: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// The result of a read.
    type Answer: Serialize + DeserializeOwned + Send + Sync + 'static;

    /// Execute one committed command.
    fn apply(&mut self, cmd: &Self::Command) -> Self::Output;

    /// Answer a read from the current state. Must not change the state.
    fn query(&self, q: &Self::Query) -> Self::Answer;

    /// Serialize the whole state.
    fn snapshot(&self) -> Vec<u8>;

    /// Replace the whole state with a snapshot.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), SnapshotError>;
}

/// A snapshot could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("snapshot rejected: {0}")]
pub struct SnapshotError(pub String);
