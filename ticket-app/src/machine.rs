//! [`TicketMachine`]: users, events and ticket holdings as one replicated state machine.

use std::collections::BTreeMap;

use replica_core::{SnapshotError, StateMachine};
use serde::{Deserialize, Serialize};

use crate::command::{EventId, TicketCommand, TicketError, TicketOutput, TicketSuccess, UserId};
use crate::limits::name_problem;
use crate::query::{EventView, Holding, TicketAnswer, TicketQuery, UserView};

/// First bytes of every snapshot: a format tag, so bytes from anything else (or from a future
/// incompatible format) are refused before postcard tries to read them.
const SNAPSHOT_MAGIC: [u8; 4] = *b"TKT1";

/// The ticket service's state: users, events and who holds which tickets.
///
/// # Invariants
///
/// Checked by [`TicketMachine::check_invariants`], kept by every command, and verified on every
/// snapshot before it is restored:
///
/// - per event, `avail + purchased == numtickets` and `numtickets >= 1`;
/// - per event, the tickets all users hold sum to `purchased` (a purchase moves tickets from
///   `avail` to the buyer; a transfer moves them between users and creates or destroys none);
/// - every count is an unsigned `u32` changed with checked arithmetic, so none is negative and
///   none wraps; a holding is never stored with a zero count;
/// - every id is at most its counter, ids are never reused, and every event's creator and every
///   holding's event exist;
/// - every name satisfies [`crate::limits::name_problem`].
///
/// # Determinism
///
/// Ids come from counters in the state, never from clocks or randomness; all collections are
/// `BTreeMap`s, so iteration order, query answers and snapshot bytes are the same on every
/// replica.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketMachine {
    /// The highest user id handed out (0: none yet).
    last_userid: UserId,
    /// The highest event id handed out (0: none yet).
    last_eventid: EventId,
    users: BTreeMap<UserId, User>,
    events: BTreeMap<EventId, Event>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct User {
    username: String,
    /// Tickets held per event; no zero entries.
    holdings: BTreeMap<EventId, u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Event {
    eventname: String,
    creator: UserId,
    numtickets: u32,
    avail: u32,
    purchased: u32,
}

/// The state breaks one of [`TicketMachine`]'s invariants (a bug, or a forged snapshot).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invariant violated: {0}")]
pub struct InvariantViolation(pub String);

impl TicketMachine {
    /// An empty service: no users, no events.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of users.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// Number of events.
    pub fn event_count(&self) -> usize {
        self.events.len()
    }

    /// The event `eventid`, if it exists.
    pub fn event(&self, eventid: EventId) -> Option<EventView> {
        self.events.get(&eventid).map(|e| e.view(eventid))
    }

    /// Every event, in id order.
    pub fn events(&self) -> Vec<EventView> {
        self.events.iter().map(|(&id, e)| e.view(id)).collect()
    }

    /// The user `userid` and their holdings, if the user exists.
    pub fn user(&self, userid: UserId) -> Option<UserView> {
        let user = self.users.get(&userid)?;
        let holdings = user
            .holdings
            .iter()
            .filter_map(|(&eventid, &tickets)| {
                self.events.get(&eventid).map(|e| Holding {
                    event: e.view(eventid),
                    tickets,
                })
            })
            .collect();
        Some(UserView {
            userid,
            username: user.username.clone(),
            holdings,
        })
    }

    /// Ids of every user, in order.
    pub fn user_ids(&self) -> Vec<UserId> {
        self.users.keys().copied().collect()
    }

    /// Tickets of `eventid` held by `userid` (0 when either does not exist).
    pub fn held(&self, userid: UserId, eventid: EventId) -> u32 {
        self.users
            .get(&userid)
            .and_then(|u| u.holdings.get(&eventid))
            .copied()
            .unwrap_or(0)
    }

    /// Check every invariant listed on [`TicketMachine`]. Costs O(users × holdings + events):
    /// for tests, audits and snapshot validation, not for every command.
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        let fail = |s: String| Err(InvariantViolation(s));
        let mut held_per_event: BTreeMap<EventId, u64> = BTreeMap::new();
        for (&userid, user) in &self.users {
            if userid == 0 || userid > self.last_userid {
                return fail(format!("user id {userid} outside 1..={}", self.last_userid));
            }
            if let Some(p) = name_problem(&user.username) {
                return fail(format!("user {userid} name {p}"));
            }
            for (&eventid, &n) in &user.holdings {
                if n == 0 {
                    return fail(format!(
                        "user {userid} has a zero holding of event {eventid}"
                    ));
                }
                if !self.events.contains_key(&eventid) {
                    return fail(format!(
                        "user {userid} holds tickets of missing event {eventid}"
                    ));
                }
                let sum = held_per_event.entry(eventid).or_default();
                *sum = sum.saturating_add(u64::from(n));
            }
        }
        for (&eventid, e) in &self.events {
            if eventid == 0 || eventid > self.last_eventid {
                return fail(format!(
                    "event id {eventid} outside 1..={}",
                    self.last_eventid
                ));
            }
            if let Some(p) = name_problem(&e.eventname) {
                return fail(format!("event {eventid} name {p}"));
            }
            if !self.users.contains_key(&e.creator) {
                return fail(format!(
                    "event {eventid} created by missing user {}",
                    e.creator
                ));
            }
            if e.numtickets == 0 {
                return fail(format!("event {eventid} has no tickets"));
            }
            if u64::from(e.avail) + u64::from(e.purchased) != u64::from(e.numtickets) {
                return fail(format!(
                    "event {eventid}: avail {} + purchased {} != numtickets {}",
                    e.avail, e.purchased, e.numtickets
                ));
            }
            let held = held_per_event.get(&eventid).copied().unwrap_or(0);
            if held != u64::from(e.purchased) {
                return fail(format!(
                    "event {eventid}: users hold {held} tickets but {} were purchased",
                    e.purchased
                ));
            }
        }
        Ok(())
    }

    fn create_user(&mut self, username: &str) -> TicketOutput {
        check_name("username", username)?;
        let userid = self
            .last_userid
            .checked_add(1)
            .ok_or_else(|| TicketError::IdsExhausted {
                kind: "user".into(),
            })?;
        self.users.insert(
            userid,
            User {
                username: username.to_owned(),
                holdings: BTreeMap::new(),
            },
        );
        self.last_userid = userid;
        Ok(TicketSuccess::UserCreated { userid })
    }

    fn create_event(&mut self, userid: UserId, eventname: &str, numtickets: u32) -> TicketOutput {
        check_name("eventname", eventname)?;
        check_count("numtickets", numtickets)?;
        if !self.users.contains_key(&userid) {
            return Err(TicketError::UserNotFound { userid });
        }
        let eventid =
            self.last_eventid
                .checked_add(1)
                .ok_or_else(|| TicketError::IdsExhausted {
                    kind: "event".into(),
                })?;
        let event = Event {
            eventname: eventname.to_owned(),
            creator: userid,
            numtickets,
            avail: numtickets,
            purchased: 0,
        };
        self.events.insert(eventid, event);
        self.last_eventid = eventid;
        Ok(TicketSuccess::EventCreated { eventid })
    }

    /// All checks and arithmetic happen before the first mutation, so a failing purchase
    /// changes nothing and a succeeding one changes the event and the buyer together.
    fn purchase(&mut self, eventid: EventId, userid: UserId, tickets: u32) -> TicketOutput {
        check_count("tickets", tickets)?;
        let event = self
            .events
            .get(&eventid)
            .ok_or(TicketError::EventNotFound { eventid })?;
        let user = self
            .users
            .get(&userid)
            .ok_or(TicketError::UserNotFound { userid })?;
        if tickets > event.avail {
            return Err(TicketError::NotEnoughTickets {
                eventid,
                avail: event.avail,
                requested: tickets,
            });
        }
        let overflow = TicketError::CountOverflow { eventid };
        let avail = event
            .avail
            .checked_sub(tickets)
            .ok_or_else(|| overflow.clone())?;
        let purchased = event
            .purchased
            .checked_add(tickets)
            .ok_or_else(|| overflow.clone())?;
        let held = user.holdings.get(&eventid).copied().unwrap_or(0);
        let held = held.checked_add(tickets).ok_or(overflow)?;

        if let Some(e) = self.events.get_mut(&eventid) {
            e.avail = avail;
            e.purchased = purchased;
            debug_assert_eq!(
                u64::from(e.avail) + u64::from(e.purchased),
                u64::from(e.numtickets)
            );
        }
        if let Some(u) = self.users.get_mut(&userid) {
            u.holdings.insert(eventid, held);
        }
        Ok(TicketSuccess::Purchased {
            eventid,
            userid,
            tickets,
            avail,
        })
    }

    /// Like [`Self::purchase`], validates everything first; then moves `tickets` from one
    /// holding to another, so the event's counts and the sum of holdings are untouched.
    fn transfer(
        &mut self,
        userid: UserId,
        eventid: EventId,
        tickets: u32,
        targetuser: UserId,
    ) -> TicketOutput {
        check_count("tickets", tickets)?;
        if userid == targetuser {
            return Err(TicketError::SelfTransfer { userid });
        }
        let from = self
            .users
            .get(&userid)
            .ok_or(TicketError::UserNotFound { userid })?;
        let to = self
            .users
            .get(&targetuser)
            .ok_or(TicketError::TargetUserNotFound { userid: targetuser })?;
        if !self.events.contains_key(&eventid) {
            return Err(TicketError::EventNotFound { eventid });
        }
        let held = from.holdings.get(&eventid).copied().unwrap_or(0);
        if held < tickets {
            return Err(TicketError::NotEnoughHeld {
                userid,
                eventid,
                held,
                requested: tickets,
            });
        }
        let overflow = TicketError::CountOverflow { eventid };
        let from_left = held.checked_sub(tickets).ok_or_else(|| overflow.clone())?;
        let to_held = to.holdings.get(&eventid).copied().unwrap_or(0);
        let to_held = to_held.checked_add(tickets).ok_or(overflow)?;

        if let Some(u) = self.users.get_mut(&userid) {
            if from_left == 0 {
                u.holdings.remove(&eventid);
            } else {
                u.holdings.insert(eventid, from_left);
            }
        }
        if let Some(u) = self.users.get_mut(&targetuser) {
            u.holdings.insert(eventid, to_held);
        }
        Ok(TicketSuccess::Transferred {
            eventid,
            userid,
            targetuser,
            tickets,
        })
    }
}

fn check_name(field: &str, name: &str) -> Result<(), TicketError> {
    match name_problem(name) {
        None => Ok(()),
        Some(reason) => Err(TicketError::InvalidName {
            field: field.to_owned(),
            reason,
        }),
    }
}

fn check_count(field: &str, n: u32) -> Result<(), TicketError> {
    if n == 0 {
        return Err(TicketError::ZeroCount {
            field: field.to_owned(),
        });
    }
    Ok(())
}

impl Event {
    fn view(&self, eventid: EventId) -> EventView {
        EventView {
            eventid,
            eventname: self.eventname.clone(),
            userid: self.creator,
            avail: self.avail,
            purchased: self.purchased,
        }
    }
}

impl StateMachine for TicketMachine {
    type Command = TicketCommand;
    type Output = TicketOutput;
    type Query = TicketQuery;
    type Answer = TicketAnswer;

    fn apply(&mut self, cmd: &TicketCommand) -> TicketOutput {
        match cmd {
            TicketCommand::CreateUser { username } => self.create_user(username),
            TicketCommand::CreateEvent {
                userid,
                eventname,
                numtickets,
            } => self.create_event(*userid, eventname, *numtickets),
            TicketCommand::Purchase {
                eventid,
                userid,
                tickets,
            } => self.purchase(*eventid, *userid, *tickets),
            TicketCommand::Transfer {
                userid,
                eventid,
                tickets,
                targetuser,
            } => self.transfer(*userid, *eventid, *tickets, *targetuser),
        }
    }

    fn query(&self, q: &TicketQuery) -> TicketAnswer {
        match q {
            TicketQuery::ListEvents => TicketAnswer::Events(self.events()),
            TicketQuery::GetEvent { eventid } => TicketAnswer::Event(self.event(*eventid)),
            TicketQuery::GetUser { userid } => TicketAnswer::User(self.user(*userid)),
        }
    }

    /// `TKT1` followed by the postcard encoding of the whole state. Byte-for-byte identical on
    /// replicas with identical state (every collection is ordered).
    fn snapshot(&self) -> Vec<u8> {
        match postcard::to_extend(self, SNAPSHOT_MAGIC.to_vec()) {
            Ok(bytes) => bytes,
            // Unreachable for these types (maps and strings of known length); an empty snapshot
            // is refused by `restore`, so the failure cannot go unnoticed.
            Err(e) => {
                tracing::error!(error = %e, "ticket state could not be encoded");
                Vec::new()
            }
        }
    }

    /// Decodes into a fresh machine and checks every invariant before replacing `self`, so
    /// garbage, a truncated snapshot or a forged one is refused and the state stays as it was.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), SnapshotError> {
        let body = snapshot
            .strip_prefix(&SNAPSHOT_MAGIC)
            .ok_or_else(|| SnapshotError("not a ticket snapshot (bad format tag)".into()))?;
        let (machine, rest): (TicketMachine, &[u8]) = postcard::take_from_bytes(body)
            .map_err(|e| SnapshotError(format!("undecodable ticket snapshot: {e}")))?;
        if !rest.is_empty() {
            return Err(SnapshotError(format!(
                "{} trailing bytes after ticket snapshot",
                rest.len()
            )));
        }
        machine
            .check_invariants()
            .map_err(|e| SnapshotError(format!("inconsistent ticket snapshot: {e}")))?;
        *self = machine;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
