//! The `ticket` binary.
fn main() {}
