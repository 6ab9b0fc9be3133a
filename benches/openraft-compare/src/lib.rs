//! openraft's "minimal cluster" benchmark, rebuilt against the released openraft crate so that
//! `replica-bench` has an anchor measured on the same machine. See README.md.

pub mod network;
pub mod store;
