//! Runnable examples for replica-core: see `examples/` (`cargo run -p examples --example kv_cluster`).
