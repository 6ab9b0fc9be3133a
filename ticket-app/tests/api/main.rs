//! Integration tests of the ticket service over the in-memory network: the public API through
//! the front end router, the replica routes, and the OpenAPI description held to the router's
//! real behaviour. One test binary (modules below) to keep link time down.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod bad_input;
mod openapi;
mod replica_routes;
mod scenarios;
mod socket;
