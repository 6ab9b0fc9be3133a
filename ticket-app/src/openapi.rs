//! The OpenAPI 3.0 description of the public API, served at `GET /openapi.json`.
//!
//! Hand-maintained in `ticket-app/openapi.json` rather than derived with a macro crate: the API
//! is eight routes whose paths, bodies and codes are fixed by the seed, a derive would only
//! describe the Rust types (not the statuses the handlers really return), and the test
//! `tests/api/openapi.rs` holds the file to the truth instead — it drives the real router through
//! every documented operation, checks each response's status is documented and its body matches
//! the documented schema, and checks every documented status is actually produced.

/// The description, as served.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");
