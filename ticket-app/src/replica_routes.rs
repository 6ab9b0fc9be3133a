//! The read-only routes every replica serves from its own state (the seed's "read directly from
//! backend"), and `GET /status`.
//!
//! These answer from the replica's applied state through [`NodeHandle::inspect`], with no read
//! fence: a secondary may be a few entries behind its primary. That is what they are for —
//! comparing replicas, and debugging — while clients that need fresh reads use the front end.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use replica_core::message::{ServiceEntry, ServiceKind};
use replica_core::{LogPos, NodeHandle, StateMachine, Status};
use serde::{Deserialize, Serialize};

use crate::api::{
    event_response, events_response, path_id, path_rejection, user_response, ApiError, UserBody,
};
use crate::machine::TicketMachine;
use crate::query::{EventView, TicketAnswer, TicketQuery};

/// `GET /events`, `GET /events/{eventid}`, `GET /users/{userid}` (same bodies and statuses as the
/// front end's) and `GET /status`, served by the replica `node`.
///
/// No fallback is set, so the router merges with the transport's cluster routes; wrap the merged
/// router in [`crate::api::with_json_fallbacks`].
pub fn replica_router(node: NodeHandle<TicketMachine>) -> Router {
    Router::new()
        .route("/events", get(list_events))
        .route("/events/{eventid}", get(get_event))
        .route("/users/{userid}", get(get_user))
        .route("/status", get(status))
        .with_state(node)
}

async fn local_query(
    node: &NodeHandle<TicketMachine>,
    q: TicketQuery,
) -> Result<TicketAnswer, ApiError> {
    node.inspect(move |m| m.query(&q))
        .await
        .map_err(|_| ApiError::unavailable("replica stopped"))
}

fn unexpected(answer: TicketAnswer) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        format!("query answered with {answer:?}"),
    )
}

async fn list_events(
    State(node): State<NodeHandle<TicketMachine>>,
) -> Result<Json<Vec<EventView>>, ApiError> {
    match local_query(&node, TicketQuery::ListEvents).await? {
        TicketAnswer::Events(events) => events_response(events),
        other => Err(unexpected(other)),
    }
}

async fn get_event(
    State(node): State<NodeHandle<TicketMachine>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<EventView>, ApiError> {
    let Path(raw) = path.map_err(path_rejection)?;
    let eventid = path_id("eventid", &raw)?;
    match local_query(&node, TicketQuery::GetEvent { eventid }).await? {
        TicketAnswer::Event(event) => event_response(eventid, event),
        other => Err(unexpected(other)),
    }
}

async fn get_user(
    State(node): State<NodeHandle<TicketMachine>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<UserBody>, ApiError> {
    let Path(raw) = path.map_err(path_rejection)?;
    let userid = path_id("userid", &raw)?;
    match local_query(&node, TicketQuery::GetUser { userid }).await? {
        TicketAnswer::User(user) => user_response(userid, user),
        other => Err(unexpected(other)),
    }
}

async fn status(
    State(node): State<NodeHandle<TicketMachine>>,
) -> Result<Json<StatusBody>, ApiError> {
    let st = node
        .status()
        .await
        .map_err(|_| ApiError::unavailable("replica stopped"))?;
    Ok(Json(StatusBody::from_status(&st)))
}

/// `GET /status`: a replica's view of itself and of the cluster, in lowercase JSON meant for
/// people and scripts (the core's [`Status`] has more detail and Rust-style names).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusBody {
    /// This replica's address.
    pub id: String,
    /// "primary", "secondary" or "candidate".
    pub role: String,
    /// Its epoch (term); a higher one fences every older primary.
    pub epoch: u64,
    /// The primary it follows (itself when primary), if it knows one.
    pub primary: Option<String>,
    /// Lamport stamp of the last entry in its log.
    pub lamport: u64,
    /// Its Lamport clock (at least `lamport`).
    pub clock: u64,
    /// Highest log index it knows to be committed.
    pub commit: u64,
    /// Last entry in its log.
    pub last: PosBody,
    /// Last entry applied to its state (what the read routes show).
    pub applied: PosBody,
    /// Replicas that must hold an entry before it commits.
    pub in_sync: Vec<String>,
    /// Whether it may win an election.
    pub eligible: bool,
    /// The gossiped service list.
    pub services: Vec<ServiceBody>,
}

/// A log position in [`StatusBody`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PosBody {
    /// Index in the log (0: empty).
    pub index: u64,
    /// Epoch of the primary that wrote it.
    pub epoch: u64,
    /// Its Lamport stamp.
    pub lamport: u64,
}

/// One row of the service list in [`StatusBody`] (the seed's `{service, address, primary}`,
/// with the gossip counters).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceBody {
    /// "replica" or "frontend".
    pub service: String,
    /// Where it is reached.
    pub address: String,
    /// Whether it is the primary.
    pub primary: bool,
    /// Its incarnation.
    pub generation: u64,
    /// Its latest heartbeat counter.
    pub heartbeat: u64,
}

impl StatusBody {
    /// Render a core [`Status`].
    pub fn from_status(st: &Status) -> Self {
        let pos = |p: &LogPos| PosBody {
            index: p.index,
            epoch: p.epoch,
            lamport: p.lamport,
        };
        StatusBody {
            id: st.id.to_string(),
            role: st.role.as_str().to_string(),
            epoch: st.epoch,
            primary: st.primary.as_ref().map(|p| p.to_string()),
            lamport: st.last.lamport,
            clock: st.clock,
            commit: st.commit,
            last: pos(&st.last),
            applied: pos(&st.applied),
            in_sync: st.in_sync.iter().map(|n| n.to_string()).collect(),
            eligible: st.eligible,
            services: st.services.iter().map(ServiceBody::from_entry).collect(),
        }
    }
}

impl ServiceBody {
    fn from_entry(e: &ServiceEntry) -> Self {
        let service = match e.kind {
            ServiceKind::Replica => "replica",
            ServiceKind::Frontend => "frontend",
        };
        ServiceBody {
            service: service.to_string(),
            address: e.address.to_string(),
            primary: e.primary,
            generation: e.generation,
            heartbeat: e.heartbeat,
        }
    }
}
