//! # replica-core
//!
//! An embeddable replication library: a log of writes stamped with Lamport timestamps and
//! deduplicated by UUID, replicated from a primary to secondaries, with elections, epochs (fencing)
//! and gossip membership — behind three small traits, so any Rust program can embed it:
//!
//! - [`StateMachine`]: your application (deterministic `apply`, `query`, `snapshot`, `restore`);
//! - [`LogStore`]: where the log lives (in memory here, files in [`storage`]);
//! - [`Transport`]: how messages reach peers (in memory here, HTTP in `replica-http`).
//!
//! ## Layout
//!
//! - [`protocol`]: the deterministic core. No I/O, no clock, no tokio: inputs in, outputs out.
//! - [`Node`] (runtime): drives the core with tokio, a store task, a transport and timers.
//! - [`Client`]: what a front end uses — request ids, hold-and-retry across failover, read fences.
//! - [`message`], [`types`]: the wire vocabulary and its postcard codec.
//! - `testing` feature: [`MemNetwork`] (fault-injecting in-memory transport), [`MemLogStore`],
//!   and the [`conformance`] suites every `Transport` and `LogStore` must pass.
//!
//! See `ARCHITECTURE.md` at the repository root for the invariants of each module.

// Unit tests may unwrap: a panic there is the failure report.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

#[cfg(feature = "bug-injection")]
pub mod bug_injection;
pub mod client;
pub mod config;
#[cfg(feature = "testing")]
pub mod conformance;
pub mod message;
pub mod metrics;
pub mod node;
pub mod protocol;
pub mod rng;
pub mod state_machine;
pub mod storage;
#[cfg(feature = "testing")]
pub mod testing;
pub mod transport;
pub mod types;

pub use client::{Client, ClientConfig, ClientError};
pub use config::Config;
pub use message::{Body, Message};
pub use node::{LocalWriteError, Node, NodeError, NodeHandle, NodeOptions};
pub use protocol::{Event, Replica, Status};
pub use state_machine::{SnapshotError, StateMachine};
pub use storage::{LogStore, Recovered, StorageError, StoreOp};
pub use transport::{HandleError, Handler, NodeStopped, Transport, TransportError};
pub use types::{Entry, Epoch, Lamport, LogIndex, LogPos, NodeId, Role};

#[cfg(feature = "testing")]
pub use storage::MemLogStore;
#[cfg(feature = "testing")]
pub use transport::{Faults, MemNetwork, MemTransport};
