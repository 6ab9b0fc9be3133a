//! The public API as the load tool calls it: one pooled HTTP client, and every answer sorted
//! into what it proves about the cluster's state.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::LoadError;

/// What one request tells us about its effect on the cluster.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Outcome {
    /// 200: the write happened (or the read answered); the JSON body.
    Ok(Value),
    /// A 4xx answer: the front end or the state machine refused, nothing changed. The status
    /// and the `error` the body gave.
    Refused(u16, String),
    /// A 5xx answer, a timeout or a broken connection: the write may or may not have happened.
    Unknown(Failure),
}

/// Why a request's effect is unknown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The front end answered with this 5xx status.
    Status(u16),
    /// No answer within the request timeout.
    Timeout,
    /// The connection could not be made or broke.
    Connection,
    /// A 200 whose body was not JSON.
    Body,
}

impl Outcome {
    /// The key this outcome is counted under in the report: the status code, or the kind of
    /// transport failure.
    pub(crate) fn key(&self) -> String {
        match self {
            Outcome::Ok(_) => "200".to_string(),
            Outcome::Refused(s, _) | Outcome::Unknown(Failure::Status(s)) => s.to_string(),
            Outcome::Unknown(Failure::Timeout) => "timeout".to_string(),
            Outcome::Unknown(Failure::Connection) => "connection".to_string(),
            Outcome::Unknown(Failure::Body) => "bad-body".to_string(),
        }
    }
}

/// A front end's public API over one pooled keep-alive client.
#[derive(Clone, Debug)]
pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    /// A client for the front end at `base` (`http://host:port`, no trailing slash).
    pub(crate) fn new(base: String, request_timeout_ms: u64) -> Result<Self, LoadError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(request_timeout_ms))
            .connect_timeout(Duration::from_millis(request_timeout_ms.min(5_000)))
            .tcp_nodelay(true)
            .no_proxy()
            .build()
            .map_err(|e| LoadError::Http(e.to_string()))?;
        Ok(Api { http, base })
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> Outcome {
        let req = self
            .http
            .post(format!("{}{}", self.base, path))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        Self::outcome(req.send().await).await
    }

    pub(crate) async fn get(&self, path: &str) -> Outcome {
        Self::outcome(self.http.get(format!("{}{}", self.base, path)).send().await).await
    }

    async fn outcome(sent: Result<reqwest::Response, reqwest::Error>) -> Outcome {
        let resp = match sent {
            Ok(resp) => resp,
            Err(e) if e.is_timeout() => return Outcome::Unknown(Failure::Timeout),
            Err(_) => return Outcome::Unknown(Failure::Connection),
        };
        let status = resp.status().as_u16();
        match status {
            200 => match resp.bytes().await {
                Ok(bytes) => match serde_json::from_slice(&bytes) {
                    Ok(v) => Outcome::Ok(v),
                    Err(_) => Outcome::Unknown(Failure::Body),
                },
                Err(e) if e.is_timeout() => Outcome::Unknown(Failure::Timeout),
                Err(_) => Outcome::Unknown(Failure::Connection),
            },
            400..=499 => {
                let error = match resp.json::<Value>().await {
                    Ok(v) => v
                        .get("error")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    Err(_) => String::new(),
                };
                Outcome::Refused(status, error)
            }
            _ => Outcome::Unknown(Failure::Status(status)),
        }
    }
}

/// The 200 body of a request that must succeed (set-up and the consistency check), as `T`.
pub(crate) fn expect_ok<T: DeserializeOwned>(what: &str, outcome: Outcome) -> Result<T, LoadError> {
    match outcome {
        Outcome::Ok(v) => serde_json::from_value(v.clone()).map_err(|e| LoadError::Request {
            what: what.to_string(),
            answer: format!("unexpected body {v}: {e}"),
        }),
        Outcome::Refused(status, error) => Err(LoadError::Request {
            what: what.to_string(),
            answer: format!("{status} {error}"),
        }),
        other => Err(LoadError::Request {
            what: what.to_string(),
            answer: other.key(),
        }),
    }
}
