//! # ticket-app
//!
//! The seed's ticket-selling service on `replica-core`: users create events, buy tickets and
//! transfer them, and every change is a command in the replicated log.
//!
//! ## Layout
//!
//! - [`machine`]: [`TicketMachine`], the replicated state (users, events, holdings) and its
//!   invariants; [`command`] and [`query`]: what goes through the log and what reads ask.
//! - [`frontend`]: the public REST API as an axum router over a [`replica_core::Client`], generic
//!   over the transport (in-memory in tests, HTTP in the binary).
//! - [`replica_routes`]: the read-only routes and `GET /status` each replica serves from its own
//!   state.
//! - [`api`]: JSON errors, strict body and path parsing, response bodies; [`limits`]: the
//!   bounds on names, counts and bodies; [`openapi`]: the API description.
//! - [`server`]: serving a router on a caller-bound listener.
//! - [`cli`]: the `ticket` binary's subcommands (`node`, `frontend`, `dev`, `load`); the server
//!   ones are functions that take a bound listener and a shutdown future.
//! - [`dashboard`]: `GET /dashboard`, a self-contained page showing the cluster live, and its
//!   JSON source `GET /cluster-view`.
//! - [`load`]: the `ticket load` tool: concurrent traffic, latency percentiles, a consistency
//!   check and SVG plots.
//!
//! ## Example
//!
//! The state machine is plain Rust; the cluster applies the same commands in the same order on
//! every replica:
//!
//! ```
//! use replica_core::StateMachine;
//! use ticket_app::{TicketCommand, TicketError, TicketMachine, TicketSuccess};
//!
//! let mut m = TicketMachine::new();
//! assert_eq!(m.apply(&TicketCommand::CreateUser { username: "ada".into() }),
//!            Ok(TicketSuccess::UserCreated { userid: 1 }));
//! m.apply(&TicketCommand::CreateEvent { userid: 1, eventname: "gig".into(), numtickets: 2 }).unwrap();
//! m.apply(&TicketCommand::Purchase { eventid: 1, userid: 1, tickets: 2 }).unwrap();
//! // A refusal is a value: the command is in the log either way, and changed nothing.
//! assert_eq!(m.apply(&TicketCommand::Purchase { eventid: 1, userid: 1, tickets: 1 }),
//!            Err(TicketError::NotEnoughTickets { eventid: 1, avail: 0, requested: 1 }));
//! assert!(m.check_invariants().is_ok());
//! ```

// Tests may unwrap: a panic there is a test failure with a message, which is what we want.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod api;
pub mod cli;
pub mod command;
pub mod dashboard;
pub mod frontend;
pub mod limits;
pub mod load;
pub mod machine;
pub mod openapi;
pub mod query;
pub mod replica_routes;
pub mod server;

pub use command::{EventId, TicketCommand, TicketError, TicketOutput, TicketSuccess, UserId};
pub use dashboard::{dashboard_router, DashboardOptions};
pub use frontend::frontend_router;
pub use machine::{InvariantViolation, TicketMachine};
pub use query::{EventView, Holding, TicketAnswer, TicketQuery, UserView};
pub use replica_routes::{replica_router, StatusBody};
pub use server::serve;
