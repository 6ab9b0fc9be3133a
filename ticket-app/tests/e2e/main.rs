//! End-to-end tests: real `ticket` processes (the binary Cargo built for this test run) on
//! 127.0.0.1, talking HTTP, killed with real signals.
//!
//! - `scenarios`: the seed's test scripts — write then read, read directly from every backend,
//!   an election between secondaries at different versions, concurrent creates and purchases.
//! - `failover`: `kill -9` of the primary under load, two of three replicas killed, all three
//!   killed and restarted from their data directories.
//! - `security`: the cluster key on every `/cluster/*` route, and a bad-input table over the
//!   real front end.
//! - `cli`: flags, help, refusing to start without a key, and `ticket dev` end to end.
//!
//! Every test holds [`harness::serial`] (one cluster at a time), waits only on conditions with
//! deadlines, and kills its processes on drop.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli;
mod failover;
mod harness;
mod scenarios;
mod security;
