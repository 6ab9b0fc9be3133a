//! What the front end and the replica routes share: the JSON error type, strict request-body
//! and path parsing, and the rendering of answers in the seed's JSON format.
//!
//! Every failure on the public surface is an [`ApiError`], rendered as
//! `{"error": "<what was wrong>"}` with the right status. axum's own extractor rejections are
//! plain text, so no handler uses `axum::Json` or `axum::extract::Path` unwrapped: bodies go
//! through [`JsonObject`] and path ids through [`path_id`].

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use replica_core::ClientError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::command::{EventId, TicketError, UserId};
use crate::limits::{name_problem, BODY_BYTES_MAX, USER_TICKETS_LISTED_MAX};
use crate::query::{EventView, UserView};

/// A request failed; rendered as `{"error": message}` with `status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

/// The JSON body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What was wrong, for a person to read.
    pub error: String,
}

impl ApiError {
    /// An error with any status.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// 400: the request was wrong (the seed's status for every refusal).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 503: the cluster could not serve the request in time; retrying later may work.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// 502: the cluster answered something this front end cannot use (a version mismatch or
    /// a bug, never the client's fault).
    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, message)
    }

    /// The status the response carries.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message the response carries.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, error = %self.message, "request failed");
        }
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

/// Refusals by the state machine are the client's fault: 400 with the refusal's message.
impl From<TicketError> for ApiError {
    fn from(e: TicketError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Unavailable { .. } => ApiError::unavailable(e.to_string()),
            ClientError::Rejected(_) | ClientError::Codec(_) => {
                ApiError::bad_gateway(e.to_string())
            }
        }
    }
}

/// A request body that is a JSON object, with typed accessors whose errors name the field and
/// say what was expected and what arrived.
///
/// The `Content-Type` header is not checked: the body must parse as JSON whatever it claims to
/// be, which keeps `curl -d '{...}'` (sent as form data) working without weakening validation.
/// Unknown fields are ignored, as serde does by default.
#[derive(Clone, Debug, PartialEq)]
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body is larger than {BODY_BYTES_MAX} bytes"),
                )
            } else {
                ApiError::bad_request(format!("request body could not be read: {}", r.body_text()))
            }
        })?;
        JsonObject::parse(&bytes)
    }
}

impl JsonObject {
    /// Parse a body; anything but a JSON object is a 400.
    pub fn parse(bytes: &[u8]) -> Result<Self, ApiError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_request(
                "request body is empty; expected a JSON object",
            ));
        }
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => Ok(JsonObject(map)),
            Ok(other) => Err(ApiError::bad_request(format!(
                "request body must be a JSON object, got {}",
                describe(&other)
            ))),
            Err(e) => Err(ApiError::bad_request(format!(
                "request body is not valid JSON: {e}"
            ))),
        }
    }

    fn field(&self, name: &str) -> Result<&Value, ApiError> {
        self.0
            .get(name)
            .ok_or_else(|| ApiError::bad_request(format!("missing field `{name}`")))
    }

    /// An id: a JSON integer from 0 to `u64::MAX`.
    pub fn id(&self, name: &str) -> Result<u64, ApiError> {
        let v = self.field(name)?;
        v.as_u64().ok_or_else(|| {
            ApiError::bad_request(format!(
                "`{name}` must be a non-negative integer id, got {}",
                describe(v)
            ))
        })
    }

    /// A ticket count: a JSON integer from 1 to `u32::MAX`.
    pub fn count(&self, name: &str) -> Result<u32, ApiError> {
        let v = self.field(name)?;
        match v.as_u64().map(u32::try_from) {
            Some(Ok(n)) if n >= 1 => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "`{name}` must be an integer from 1 to {}, got {}",
                u32::MAX,
                describe(v)
            ))),
        }
    }

    /// A user or event name: a string satisfying [`crate::limits::name_problem`].
    pub fn name(&self, name: &str) -> Result<String, ApiError> {
        let v = self.field(name)?;
        let Value::String(s) = v else {
            return Err(ApiError::bad_request(format!(
                "`{name}` must be a string, got {}",
                describe(v)
            )));
        };
        match name_problem(s) {
            Some(reason) => Err(ApiError::bad_request(format!("`{name}` {reason}"))),
            None => Ok(s.clone()),
        }
    }
}

/// A short description of a JSON value for an error message: numbers verbatim, other values
/// by kind (echoing a 60 KiB string back would help nobody).
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("{b}"),
        Value::Number(n) => format!("{n}"),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// Parse an id from a path segment: ASCII digits only (no sign, no spaces), fitting in `u64`.
pub fn path_id(name: &str, raw: &str) -> Result<u64, ApiError> {
    let digits = !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit());
    match raw.parse::<u64>() {
        Ok(id) if digits => Ok(id),
        _ => {
            let shown: String = raw.chars().take(40).collect();
            Err(ApiError::bad_request(format!(
                "`{name}` in the path must be a non-negative integer id, got {shown:?}"
            )))
        }
    }
}

/// A path that axum could not even split into segments (invalid percent-encoding, say).
pub fn path_rejection(r: PathRejection) -> ApiError {
    ApiError::bad_request(format!("bad path: {}", r.body_text()))
}

/// `POST /users/create` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserCreated {
    /// The new user's id.
    pub userid: UserId,
}

/// `POST /events/create` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCreated {
    /// The new event's id.
    pub eventid: EventId,
}

/// `POST /events/{eventid}/purchase/{userid}` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purchased {
    /// The event.
    pub eventid: EventId,
    /// The buyer.
    pub userid: UserId,
    /// Tickets bought by this request.
    pub tickets: u32,
    /// Tickets of the event still available right after this purchase.
    pub avail: u32,
}

/// `POST /users/{userid}/tickets/transfer` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transferred {
    /// The event.
    pub eventid: EventId,
    /// The giver.
    pub userid: UserId,
    /// The receiver.
    pub targetuser: UserId,
    /// Tickets moved.
    pub tickets: u32,
}

/// `GET /users/{userid}` answer: the seed's user object plus exact per-event counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserBody {
    /// The user's id.
    pub userid: UserId,
    /// Their name.
    pub username: String,
    /// The seed's format: one event object per ticket held, in event-id order, at most
    /// [`USER_TICKETS_LISTED_MAX`] of them.
    pub tickets: Vec<EventView>,
    /// Tickets held per event, always complete (the seed has no such field; it is what a
    /// client should read when it needs counts).
    pub holdings: Vec<HoldingBody>,
}

/// One entry of [`UserBody::holdings`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldingBody {
    /// The event.
    pub eventid: EventId,
    /// Tickets of it the user holds.
    pub tickets: u32,
}

impl UserBody {
    /// Expand a [`UserView`] into the seed's format.
    pub fn from_view(view: UserView) -> Self {
        let mut tickets = Vec::new();
        'expand: for h in &view.holdings {
            for _ in 0..h.tickets {
                if tickets.len() >= USER_TICKETS_LISTED_MAX {
                    break 'expand;
                }
                tickets.push(h.event.clone());
            }
        }
        let holdings = view
            .holdings
            .iter()
            .map(|h| HoldingBody {
                eventid: h.event.eventid,
                tickets: h.tickets,
            })
            .collect();
        UserBody {
            userid: view.userid,
            username: view.username,
            tickets,
            holdings,
        }
    }
}

/// `GET /greet` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Greeting {
    /// Always "Front End Service is running", the seed's description of this route.
    pub status: String,
}

/// `GET /events`: 200 with the list, or the seed's 400 when there are no events.
pub fn events_response(events: Vec<EventView>) -> Result<Json<Vec<EventView>>, ApiError> {
    if events.is_empty() {
        return Err(ApiError::bad_request("no events found"));
    }
    Ok(Json(events))
}

/// `GET /events/{eventid}`: 200 with the event, or 400 when there is none.
pub fn event_response(
    eventid: EventId,
    event: Option<EventView>,
) -> Result<Json<EventView>, ApiError> {
    event
        .map(Json)
        .ok_or_else(|| TicketError::EventNotFound { eventid }.into())
}

/// `GET /users/{userid}`: 200 with the user, or 400 when there is none.
pub fn user_response(userid: UserId, user: Option<UserView>) -> Result<Json<UserBody>, ApiError> {
    user.map(|u| Json(UserBody::from_view(u)))
        .ok_or_else(|| TicketError::UserNotFound { userid }.into())
}

/// Answer unknown paths with 404 and unsupported methods with 405, both as JSON errors, like
/// every other response. Applied by the front end; a node applies it once, after merging the
/// replica routes with the cluster routes (axum refuses to merge two routers with fallbacks).
pub fn with_json_fallbacks(router: Router) -> Router {
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route for {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(body: &str) -> JsonObject {
        JsonObject::parse(body.as_bytes()).unwrap()
    }

    /// Field accessors over a table of JSON values: what is accepted, and that every refusal
    /// names the field.
    #[test]
    fn field_rules() {
        let counts: &[(&str, Option<u32>)] = &[
            ("1", Some(1)),
            ("4294967295", Some(u32::MAX)),
            ("0", None),
            ("-1", None),
            ("1.5", None),
            ("1e3", None),
            ("4294967296", None),
            ("99999999999999999999999", None),
            ("\"3\"", None),
            ("null", None),
            ("true", None),
            ("[1]", None),
        ];
        for (raw, want) in counts {
            let got = obj(&format!(r#"{{"tickets": {raw}}}"#)).count("tickets");
            match (want, got) {
                (Some(w), Ok(g)) => assert_eq!(*w, g, "{raw}"),
                (None, Err(e)) => {
                    assert_eq!(e.status(), StatusCode::BAD_REQUEST);
                    assert!(e.message().contains("`tickets`"), "{raw}: {}", e.message());
                }
                (w, g) => panic!("{raw}: want {w:?}, got {g:?}"),
            }
        }
        let ids: &[(&str, Option<u64>)] = &[
            ("0", Some(0)),
            ("18446744073709551615", Some(u64::MAX)),
            ("-1", None),
            ("2.0", None),
            ("\"1\"", None),
        ];
        for (raw, want) in ids {
            let got = obj(&format!(r#"{{"userid": {raw}}}"#)).id("userid").ok();
            assert_eq!(got, *want, "{raw}");
        }
        assert_eq!(
            obj("{}").count("tickets").unwrap_err().message(),
            "missing field `tickets`"
        );
        assert_eq!(
            obj(r#"{"n": 5}"#).name("n").unwrap_err().message(),
            "`n` must be a string, got 5"
        );
    }

    #[test]
    fn body_shapes() {
        for (body, want) in [
            ("", "request body is empty; expected a JSON object"),
            ("  \n", "request body is empty; expected a JSON object"),
            ("[]", "request body must be a JSON object, got an array"),
            ("7", "request body must be a JSON object, got 7"),
        ] {
            assert_eq!(
                JsonObject::parse(body.as_bytes()).unwrap_err().message(),
                want,
                "{body:?}"
            );
        }
        let e = JsonObject::parse(b"{\"a\": ").unwrap_err();
        assert!(
            e.message().starts_with("request body is not valid JSON"),
            "{}",
            e.message()
        );
        // Nesting deeper than serde_json's recursion limit is an error, not a stack overflow.
        let deep = "[".repeat(100_000);
        assert_eq!(
            JsonObject::parse(deep.as_bytes()).unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn path_ids() {
        assert_eq!(path_id("eventid", "0"), Ok(0));
        assert_eq!(path_id("eventid", "007"), Ok(7));
        assert_eq!(path_id("eventid", "18446744073709551615"), Ok(u64::MAX));
        for raw in [
            "",
            "-1",
            "+1",
            " 1",
            "1.0",
            "abc",
            "18446744073709551616",
            "0x10",
        ] {
            let e = path_id("eventid", raw).unwrap_err();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{raw:?}");
            assert!(e.message().contains("`eventid`"), "{raw:?}");
        }
    }

    /// One object per ticket held, capped, while `holdings` stays exact.
    #[test]
    fn user_body_expands_tickets_up_to_the_cap() {
        use crate::query::Holding;
        let ev = |id| EventView {
            eventid: id,
            eventname: "e".into(),
            userid: 1,
            avail: 0,
            purchased: 0,
        };
        let view = UserView {
            userid: 4,
            username: "u".into(),
            holdings: vec![
                Holding {
                    event: ev(1),
                    tickets: 2,
                },
                Holding {
                    event: ev(2),
                    tickets: 1,
                },
            ],
        };
        let body = UserBody::from_view(view);
        let ids: Vec<_> = body.tickets.iter().map(|e| e.eventid).collect();
        assert_eq!(ids, vec![1, 1, 2]);
        assert_eq!(
            body.holdings,
            vec![
                HoldingBody {
                    eventid: 1,
                    tickets: 2
                },
                HoldingBody {
                    eventid: 2,
                    tickets: 1
                }
            ]
        );

        let big = UserView {
            userid: 4,
            username: "u".into(),
            holdings: vec![Holding {
                event: ev(1),
                tickets: u32::MAX,
            }],
        };
        let body = UserBody::from_view(big);
        assert_eq!(body.tickets.len(), USER_TICKETS_LISTED_MAX);
        assert_eq!(body.holdings[0].tickets, u32::MAX);
    }
}
