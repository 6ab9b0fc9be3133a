//! Writes to the ticket state machine and their results.
//!
//! These types are encoded with postcard into the replicated log, the dedup table and
//! snapshots, so they are a storage format: add variants only at the end of an enum, never
//! reorder or remove one, and never change a field's type.

use serde::{Deserialize, Serialize};

/// A user id. Assigned by the state machine from a counter, starting at 1.
pub type UserId = u64;

/// An event id. Assigned by the state machine from a counter, starting at 1.
pub type EventId = u64;

/// A write to [`crate::TicketMachine`].
///
/// Each variant is one atomic change: a purchase moves tickets from the event to the user in one
/// command, a transfer moves them between two users in one command, so no replica ever holds a
/// state where tickets are in flight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TicketCommand {
    /// Register a user (`POST /users/create`).
    CreateUser {
        /// Display name; see [`crate::limits::name_problem`].
        username: String,
    },
    /// Create an event owned by an existing user (`POST /events/create`).
    CreateEvent {
        /// The user creating the event; must exist.
        userid: UserId,
        /// Display name; see [`crate::limits::name_problem`].
        eventname: String,
        /// Tickets on sale, at least 1.
        numtickets: u32,
    },
    /// Buy tickets of an event for a user (`POST /events/{eventid}/purchase/{userid}`).
    Purchase {
        /// The event; must exist and have at least `tickets` available.
        eventid: EventId,
        /// The buyer; must exist.
        userid: UserId,
        /// How many, at least 1.
        tickets: u32,
    },
    /// Give tickets to another user (`POST /users/{userid}/tickets/transfer`).
    Transfer {
        /// The giver; must exist and hold at least `tickets` of the event.
        userid: UserId,
        /// The event the tickets are for.
        eventid: EventId,
        /// How many, at least 1.
        tickets: u32,
        /// The receiver; must exist and differ from `userid`.
        targetuser: UserId,
    },
}

/// What a successful command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TicketSuccess {
    /// A user was created.
    UserCreated {
        /// Its new id.
        userid: UserId,
    },
    /// An event was created.
    EventCreated {
        /// Its new id.
        eventid: EventId,
    },
    /// Tickets were bought.
    Purchased {
        /// The event.
        eventid: EventId,
        /// The buyer.
        userid: UserId,
        /// How many were bought.
        tickets: u32,
        /// Tickets of the event still available after this purchase.
        avail: u32,
    },
    /// Tickets changed hands.
    Transferred {
        /// The event.
        eventid: EventId,
        /// The giver.
        userid: UserId,
        /// The receiver.
        targetuser: UserId,
        /// How many moved.
        tickets: u32,
    },
}

/// The output of every command.
///
/// A command that fails is still in the log (it was replicated before it was executed), so its
/// failure is a value: every replica computes the same error, and a retried request gets the same
/// error back from the dedup table.
pub type TicketOutput = Result<TicketSuccess, TicketError>;

/// Why a command changed nothing. The message is what the public API returns as `error`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum TicketError {
    /// The acting user (the creator, buyer or giver) does not exist.
    #[error("user {userid} not found")]
    UserNotFound {
        /// The id asked for.
        userid: UserId,
    },
    /// The receiver of a transfer does not exist.
    #[error("target user {userid} not found")]
    TargetUserNotFound {
        /// The id asked for.
        userid: UserId,
    },
    /// The event does not exist.
    #[error("event {eventid} not found")]
    EventNotFound {
        /// The id asked for.
        eventid: EventId,
    },
    /// A name breaks [`crate::limits::name_problem`].
    #[error("`{field}` {reason}")]
    InvalidName {
        /// The field holding the name.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A ticket count of zero.
    #[error("`{field}` must be at least 1")]
    ZeroCount {
        /// The field holding the count.
        field: String,
    },
    /// A purchase asked for more tickets than the event has left.
    #[error("event {eventid} has {avail} tickets available, {requested} requested")]
    NotEnoughTickets {
        /// The event.
        eventid: EventId,
        /// Tickets left.
        avail: u32,
        /// Tickets asked for.
        requested: u32,
    },
    /// A transfer asked to move more tickets than the giver holds.
    #[error("user {userid} holds {held} tickets of event {eventid}, {requested} requested")]
    NotEnoughHeld {
        /// The giver.
        userid: UserId,
        /// The event.
        eventid: EventId,
        /// Tickets the giver holds.
        held: u32,
        /// Tickets asked for.
        requested: u32,
    },
    /// A transfer from a user to themselves.
    #[error("user {userid} cannot transfer tickets to themselves")]
    SelfTransfer {
        /// The user.
        userid: UserId,
    },
    /// The id counter of `kind` ("user" or "event") reached `u64::MAX`.
    #[error("no {kind} ids left")]
    IdsExhausted {
        /// Which counter.
        kind: String,
    },
    /// A count would leave the range of `u32`. Unreachable while the invariants hold (every
    /// count is bounded by its event's `numtickets`); reported rather than wrapped or panicked.
    #[error("ticket count out of range for event {eventid}")]
    CountOverflow {
        /// The event.
        eventid: EventId,
    },
}
