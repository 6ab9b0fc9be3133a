//! Reads from the ticket state machine.
//!
//! Like commands, these cross the cluster encoded with postcard; add variants only at the end.

use serde::{Deserialize, Serialize};

use crate::command::{EventId, UserId};

/// A read from [`crate::TicketMachine`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TicketQuery {
    /// Every event, by id (`GET /events`).
    ListEvents,
    /// One event (`GET /events/{eventid}`).
    GetEvent {
        /// The event.
        eventid: EventId,
    },
    /// One user and what they hold (`GET /users/{userid}`).
    GetUser {
        /// The user.
        userid: UserId,
    },
}

/// The answer to a [`TicketQuery`], variant for variant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TicketAnswer {
    /// Answer to [`TicketQuery::ListEvents`], in id order.
    Events(Vec<EventView>),
    /// Answer to [`TicketQuery::GetEvent`]; `None` when there is no such event.
    Event(Option<EventView>),
    /// Answer to [`TicketQuery::GetUser`]; `None` when there is no such user.
    User(Option<UserView>),
}

/// An event as the public API shows it: exactly the seed's event object, so it serializes to
/// JSON unchanged (`{"eventid", "eventname", "userid", "avail", "purchased"}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventView {
    /// The event's id.
    pub eventid: EventId,
    /// Its name.
    pub eventname: String,
    /// The user who created it.
    pub userid: UserId,
    /// Tickets still for sale.
    pub avail: u32,
    /// Tickets sold. `avail + purchased` is the number the event was created with.
    pub purchased: u32,
}

/// A user and their tickets, compactly: one [`Holding`] per event, not one object per ticket
/// (the front end expands it into the seed's format).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    /// The user's id.
    pub userid: UserId,
    /// Their name.
    pub username: String,
    /// Tickets held, by event id; never a zero count.
    pub holdings: Vec<Holding>,
}

/// Tickets of one event held by one user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holding {
    /// The event, as it is now.
    pub event: EventView,
    /// How many of its tickets the user holds (at least 1).
    pub tickets: u32,
}
