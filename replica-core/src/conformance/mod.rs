//! Conformance suites: the behaviour every implementation of a trait must show.
//!
//! The same suite runs against every implementation (in-memory and file store; in-memory and
//! HTTP transport), so an implementation that passes is interchangeable with the others. Each
//! suite panics with a description of the first broken requirement.

mod log_store;
mod transport;

pub use log_store::log_store_suite;
pub use transport::{transport_suite, TransportHarness};
