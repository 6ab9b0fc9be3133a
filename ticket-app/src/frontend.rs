//! The public REST API (the seed's front end service), generic over the cluster transport.
//!
//! Every write goes through [`replica_core::Client::write`]: it gets a UUID, is held and retried
//! with that UUID across a failover, and executes at most once. Every read goes through
//! [`replica_core::Client::read`], which honours the read fence: this front end never shows
//! state older than what it has already shown or written.
//!
//! Validation that needs no state (JSON shape, types, ranges, names, a transfer to oneself)
//! happens here, so a bad request never reaches the log. Validation that needs state (unknown
//! ids, too few tickets) happens in [`crate::TicketMachine`], whose refusal comes back as a
//! value and is answered with 400.

use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use replica_core::{Client, Transport};

use crate::api::{
    event_response, events_response, path_id, path_rejection, user_response, with_json_fallbacks,
    ApiError, EventCreated, Greeting, JsonObject, Purchased, Transferred, UserBody, UserCreated,
};
use crate::command::{TicketCommand, TicketOutput, TicketSuccess};
use crate::limits::BODY_BYTES_MAX;
use crate::openapi::OPENAPI_JSON;
use crate::query::{EventView, TicketAnswer, TicketQuery};

/// The public API as an axum [`Router`], serving through `client`.
///
/// Routes (the seed's, exactly): `GET /events`, `POST /events/create`, `GET /events/{eventid}`,
/// `POST /events/{eventid}/purchase/{userid}`, `POST /users/create`, `GET /users/{userid}`,
/// `POST /users/{userid}/tickets/transfer`, `GET /greet`; plus `GET /openapi.json`, the
/// description of all of them. Unknown paths get 404 and wrong methods 405, as JSON errors.
/// Bodies over [`BODY_BYTES_MAX`] get 413.
///
/// The caller owns the client: it registers it with its transport's server so announcements of
/// a new primary reach it, and spawns [`Client::run_membership`].
pub fn frontend_router<T: Transport>(client: Client<T>) -> Router {
    let routes = Router::new()
        .route("/events", get(list_events::<T>))
        .route("/events/create", post(create_event::<T>))
        .route("/events/{eventid}", get(get_event::<T>))
        .route("/events/{eventid}/purchase/{userid}", post(purchase::<T>))
        .route("/users/create", post(create_user::<T>))
        .route("/users/{userid}", get(get_user::<T>))
        .route("/users/{userid}/tickets/transfer", post(transfer::<T>))
        .route("/greet", get(greet))
        .route("/openapi.json", get(openapi))
        .with_state(client);
    with_json_fallbacks(routes).layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
}

/// Execute a command through the cluster; a refusal by the state machine becomes a 400.
async fn write<T: Transport>(
    client: &Client<T>,
    cmd: &TicketCommand,
) -> Result<TicketSuccess, ApiError> {
    let out: TicketOutput = client.write(cmd).await?;
    Ok(out?)
}

async fn read<T: Transport>(client: &Client<T>, q: &TicketQuery) -> Result<TicketAnswer, ApiError> {
    Ok(client.read(q).await?)
}

/// The cluster answered with the wrong kind of output: a version mismatch or a bug.
fn unexpected<R: std::fmt::Debug>(what: R) -> ApiError {
    ApiError::bad_gateway(format!("unexpected answer from the cluster: {what:?}"))
}

async fn list_events<T: Transport>(
    State(client): State<Client<T>>,
) -> Result<Json<Vec<EventView>>, ApiError> {
    match read(&client, &TicketQuery::ListEvents).await? {
        TicketAnswer::Events(events) => events_response(events),
        other => Err(unexpected(other)),
    }
}

async fn get_event<T: Transport>(
    State(client): State<Client<T>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<EventView>, ApiError> {
    let Path(raw) = path.map_err(path_rejection)?;
    let eventid = path_id("eventid", &raw)?;
    match read(&client, &TicketQuery::GetEvent { eventid }).await? {
        TicketAnswer::Event(event) => event_response(eventid, event),
        other => Err(unexpected(other)),
    }
}

async fn get_user<T: Transport>(
    State(client): State<Client<T>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<UserBody>, ApiError> {
    let Path(raw) = path.map_err(path_rejection)?;
    let userid = path_id("userid", &raw)?;
    match read(&client, &TicketQuery::GetUser { userid }).await? {
        TicketAnswer::User(user) => user_response(userid, user),
        other => Err(unexpected(other)),
    }
}

async fn create_user<T: Transport>(
    State(client): State<Client<T>>,
    body: JsonObject,
) -> Result<Json<UserCreated>, ApiError> {
    let cmd = TicketCommand::CreateUser {
        username: body.name("username")?,
    };
    match write(&client, &cmd).await? {
        TicketSuccess::UserCreated { userid } => Ok(Json(UserCreated { userid })),
        other => Err(unexpected(other)),
    }
}

async fn create_event<T: Transport>(
    State(client): State<Client<T>>,
    body: JsonObject,
) -> Result<Json<EventCreated>, ApiError> {
    let cmd = TicketCommand::CreateEvent {
        userid: body.id("userid")?,
        eventname: body.name("eventname")?,
        numtickets: body.count("numtickets")?,
    };
    match write(&client, &cmd).await? {
        TicketSuccess::EventCreated { eventid } => Ok(Json(EventCreated { eventid })),
        other => Err(unexpected(other)),
    }
}

async fn purchase<T: Transport>(
    State(client): State<Client<T>>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: JsonObject,
) -> Result<Json<Purchased>, ApiError> {
    let Path((raw_event, raw_user)) = path.map_err(path_rejection)?;
    let cmd = TicketCommand::Purchase {
        eventid: path_id("eventid", &raw_event)?,
        userid: path_id("userid", &raw_user)?,
        tickets: body.count("tickets")?,
    };
    match write(&client, &cmd).await? {
        TicketSuccess::Purchased {
            eventid,
            userid,
            tickets,
            avail,
        } => Ok(Json(Purchased {
            eventid,
            userid,
            tickets,
            avail,
        })),
        other => Err(unexpected(other)),
    }
}

async fn transfer<T: Transport>(
    State(client): State<Client<T>>,
    path: Result<Path<String>, PathRejection>,
    body: JsonObject,
) -> Result<Json<Transferred>, ApiError> {
    let Path(raw) = path.map_err(path_rejection)?;
    let userid = path_id("userid", &raw)?;
    let eventid = body.id("eventid")?;
    let tickets = body.count("tickets")?;
    let targetuser = body.id("targetuser")?;
    if targetuser == userid {
        return Err(crate::command::TicketError::SelfTransfer { userid }.into());
    }
    let cmd = TicketCommand::Transfer {
        userid,
        eventid,
        tickets,
        targetuser,
    };
    match write(&client, &cmd).await? {
        TicketSuccess::Transferred {
            eventid,
            userid,
            targetuser,
            tickets,
        } => Ok(Json(Transferred {
            eventid,
            userid,
            targetuser,
            tickets,
        })),
        other => Err(unexpected(other)),
    }
}

async fn greet() -> Json<Greeting> {
    Json(Greeting {
        status: "Front End Service is running".into(),
    })
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON)
}
