//! Shared pieces of the benchmarks.

pub mod http_cluster;

use replica_core::{SnapshotError, StateMachine};

/// The empty state machine of the openraft-style benchmark: applies nothing, answers nothing.
/// What remains to measure is the replication itself.
#[derive(Debug, Default, Clone, Copy)]
pub struct Noop;

impl StateMachine for Noop {
    type Command = ();
    type Output = ();
    type Query = ();
    type Answer = ();

    fn apply(&mut self, _: &()) {}

    fn query(&self, _: &()) {}

    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }

    fn restore(&mut self, _: &[u8]) -> Result<(), SnapshotError> {
        Ok(())
    }
}
