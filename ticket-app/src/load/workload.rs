//! What the load clients send, and the ledger of what the cluster acknowledged.
//!
//! Set-up creates the users and events a run works on (before the clock starts). Each client
//! then draws requests from its own seeded RNG, so a run's request mix is a pure function of
//! its seed. Every answer is entered in the client's `Ledger`: a 200 is a write that happened,
//! a 4xx one that did not, anything else one that may have; the consistency check compares
//! the cluster's final state with those bounds.

use std::collections::BTreeMap;

use replica_core::rng::Rng;
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{expect_ok, Api, Outcome};
use super::{LoadError, Mode};
use crate::command::{EventId, UserId};

/// Tickets each client buys for its first user at set-up in transfer and mixed modes: what
/// it then moves back and forth between its two users.
pub(crate) const TRANSFER_STOCK_TICKETS: u32 = 64;

/// The users and events a run works on.
#[derive(Clone, Debug)]
pub(crate) struct World {
    /// Users created at set-up; client `c` owns users `2c` and `2c + 1` for transfers.
    pub users: Vec<UserId>,
    /// Events created at set-up, with the tickets each was created with.
    pub events: Vec<(EventId, u32)>,
}

/// Bounds on one (event, user) holding or one event's sales, from acknowledged and unknown
/// outcomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Bounds {
    /// Net change from acknowledged writes.
    pub acked: i64,
    /// Most it may have risen beyond `acked` through writes with unknown outcomes.
    pub up: u64,
    /// Most it may have fallen below `acked` through writes with unknown outcomes.
    pub down: u64,
}

impl Bounds {
    /// Whether `value` is reachable from these writes.
    pub(crate) fn admits(&self, value: i64) -> bool {
        let low = self.acked - i64::try_from(self.down).unwrap_or(i64::MAX);
        let high = self.acked + i64::try_from(self.up).unwrap_or(i64::MAX);
        (low..=high).contains(&value)
    }

    fn add(&mut self, other: &Bounds) {
        self.acked += other.acked;
        self.up += other.up;
        self.down += other.down;
    }
}

/// What one client (or, merged, the whole run) did to the state.
#[derive(Clone, Debug, Default)]
pub(crate) struct Ledger {
    /// Tickets sold, per event.
    pub sold: BTreeMap<EventId, Bounds>,
    /// Tickets held, per (event, user).
    pub held: BTreeMap<(EventId, UserId), Bounds>,
    /// Users created during the run: id and name.
    pub created_users: Vec<(UserId, String)>,
    /// Events created during the run: id, name, tickets.
    pub created_events: Vec<(EventId, String, u32)>,
    /// Purchases and transfers answered 200.
    pub acknowledged: u64,
    /// Purchases and transfers whose outcome is unknown.
    pub unknown: u64,
}

impl Ledger {
    /// Enter a purchase of `tickets` of `event` by `user`.
    pub(crate) fn purchase(&mut self, event: EventId, user: UserId, tickets: u32, o: &Outcome) {
        let n = u64::from(tickets);
        let (sold, held) = (
            self.sold.entry(event).or_default(),
            self.held.entry((event, user)).or_default(),
        );
        match o {
            Outcome::Ok(_) => {
                sold.acked += n as i64;
                held.acked += n as i64;
                self.acknowledged += 1;
            }
            Outcome::Refused(..) => {}
            Outcome::Unknown(_) => {
                sold.up += n;
                held.up += n;
                self.unknown += 1;
            }
        }
    }

    /// Enter a transfer of `tickets` of `event` from `from` to `to`.
    pub(crate) fn transfer(&mut self, event: EventId, from: UserId, to: UserId, o: &Outcome) {
        match o {
            Outcome::Ok(_) => {
                self.held.entry((event, from)).or_default().acked -= 1;
                self.held.entry((event, to)).or_default().acked += 1;
                self.acknowledged += 1;
            }
            Outcome::Refused(..) => {}
            Outcome::Unknown(_) => {
                self.held.entry((event, from)).or_default().down += 1;
                self.held.entry((event, to)).or_default().up += 1;
                self.unknown += 1;
            }
        }
    }

    /// Fold another client's ledger into this one.
    pub(crate) fn merge(&mut self, other: Ledger) {
        for (k, b) in other.sold {
            self.sold.entry(k).or_default().add(&b);
        }
        for (k, b) in other.held {
            self.held.entry(k).or_default().add(&b);
        }
        self.created_users.extend(other.created_users);
        self.created_events.extend(other.created_events);
        self.acknowledged += other.acknowledged;
        self.unknown += other.unknown;
    }
}

#[derive(Deserialize)]
struct UserCreated {
    userid: UserId,
}

#[derive(Deserialize)]
struct EventCreated {
    eventid: EventId,
}

/// Create the users and events of a run, and in transfer and mixed modes give each client's
/// first user [`TRANSFER_STOCK_TICKETS`] of its event. Every set-up write must succeed.
pub(crate) async fn set_up(
    api: &Api,
    mode: Mode,
    clients: usize,
    events: usize,
    tickets_per_event: u32,
    ledger: &mut Ledger,
) -> Result<World, LoadError> {
    let mut users = Vec::new();
    for i in 0..(2 * clients).max(2) {
        let body = json!({ "username": format!("load-user-{i}") });
        let o = api.post("/users/create", &body).await;
        let created: UserCreated = expect_ok("set-up: create a user", o)?;
        users.push(created.userid);
    }
    let mut evs = Vec::new();
    for i in 0..events.max(1) {
        let body = json!({
            "userid": users[0],
            "eventname": format!("load-event-{i}"),
            "numtickets": tickets_per_event,
        });
        let o = api.post("/events/create", &body).await;
        let created: EventCreated = expect_ok("set-up: create an event", o)?;
        evs.push((created.eventid, tickets_per_event));
    }
    let world = World { users, events: evs };
    if matches!(mode, Mode::Transfer | Mode::Mixed) {
        for c in 0..clients {
            let (event, user) = (world.client_event(c), world.users[2 * c]);
            let body = json!({ "tickets": TRANSFER_STOCK_TICKETS });
            let o = api
                .post(&format!("/events/{event}/purchase/{user}"), &body)
                .await;
            ledger.purchase(event, user, TRANSFER_STOCK_TICKETS, &o);
            let _: Value = expect_ok("set-up: buy tickets to transfer", o)?;
        }
    }
    Ok(world)
}

impl World {
    /// The event client `c` transfers tickets of.
    pub(crate) fn client_event(&self, c: usize) -> EventId {
        self.events[c % self.events.len()].0
    }
}

/// One load client: its RNG, its two transfer users and what it believes they hold.
pub(crate) struct Worker {
    pub id: usize,
    rng: Rng,
    mode: Mode,
    world: World,
    /// Tickets of [`World::client_event`] this client's two users surely hold (only this
    /// client moves them; other clients' purchases only add).
    stock: [u32; 2],
    next_name: u64,
    pub ledger: Ledger,
}

impl Worker {
    pub(crate) fn new(id: usize, seed: u64, mode: Mode, world: World) -> Self {
        let stock = if matches!(mode, Mode::Transfer | Mode::Mixed) {
            [TRANSFER_STOCK_TICKETS, 0]
        } else {
            [0, 0]
        };
        Worker {
            id,
            rng: Rng::new(seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            mode,
            world,
            stock,
            next_name: 0,
            ledger: Ledger::default(),
        }
    }

    /// Send one request of this client's mode and enter its outcome in the ledger.
    pub(crate) async fn step(&mut self, api: &Api) -> Outcome {
        let pick = self.rng.below(100);
        match self.mode {
            Mode::Create if pick < 50 => self.create_user(api).await,
            Mode::Create => self.create_event(api).await,
            Mode::Purchase => self.purchase(api).await,
            Mode::Transfer => self.transfer(api).await,
            Mode::Mixed => match pick {
                0..=49 => self.purchase(api).await,
                50..=69 => self.transfer(api).await,
                70..=89 => self.read(api).await,
                90..=94 => self.create_user(api).await,
                _ => self.create_event(api).await,
            },
        }
    }

    fn name(&mut self, kind: &str) -> String {
        self.next_name += 1;
        format!("load-{kind}-c{}-{}", self.id, self.next_name)
    }

    async fn create_user(&mut self, api: &Api) -> Outcome {
        let name = self.name("user");
        let o = api
            .post("/users/create", &json!({ "username": name }))
            .await;
        if let Outcome::Ok(v) = &o {
            if let Some(id) = v.get("userid").and_then(Value::as_u64) {
                self.ledger.created_users.push((id, name));
            }
        }
        o
    }

    async fn create_event(&mut self, api: &Api) -> Outcome {
        let name = self.name("event");
        let owner = self.world.users[self.rng.below(self.world.users.len() as u64) as usize];
        let tickets = 1 + self.rng.below(1000) as u32;
        let body = json!({ "userid": owner, "eventname": name, "numtickets": tickets });
        let o = api.post("/events/create", &body).await;
        if let Outcome::Ok(v) = &o {
            if let Some(id) = v.get("eventid").and_then(Value::as_u64) {
                self.ledger.created_events.push((id, name, tickets));
            }
        }
        o
    }

    async fn purchase(&mut self, api: &Api) -> Outcome {
        let event = self.world.events[self.rng.below(self.world.events.len() as u64) as usize].0;
        let user = self.world.users[self.rng.below(self.world.users.len() as u64) as usize];
        let o = api
            .post(
                &format!("/events/{event}/purchase/{user}"),
                &json!({ "tickets": 1 }),
            )
            .await;
        self.ledger.purchase(event, user, 1, &o);
        o
    }

    /// Move one ticket from whichever of this client's users holds more to the other.
    async fn transfer(&mut self, api: &Api) -> Outcome {
        let event = self.world.client_event(self.id);
        let from_slot = usize::from(self.stock[1] > self.stock[0]);
        let to_slot = 1 - from_slot;
        let (from, to) = (
            self.world.users[2 * self.id + from_slot],
            self.world.users[2 * self.id + to_slot],
        );
        let body = json!({ "eventid": event, "tickets": 1, "targetuser": to });
        let o = api
            .post(&format!("/users/{from}/tickets/transfer"), &body)
            .await;
        self.ledger.transfer(event, from, to, &o);
        match o {
            Outcome::Ok(_) => {
                self.stock[from_slot] = self.stock[from_slot].saturating_sub(1);
                self.stock[to_slot] += 1;
            }
            // Unknown: the ticket may have moved; count it as gone from both, so every later
            // transfer is still covered by tickets the giver surely holds.
            Outcome::Unknown(_) => self.stock[from_slot] = self.stock[from_slot].saturating_sub(1),
            Outcome::Refused(..) => {}
        }
        o
    }

    async fn read(&mut self, api: &Api) -> Outcome {
        let event = self.world.events[self.rng.below(self.world.events.len() as u64) as usize].0;
        api.get(&format!("/events/{event}")).await
    }
}

#[cfg(test)]
mod tests {
    use super::super::api::Failure;
    use super::*;

    /// The bounds a ledger derives from each kind of outcome.
    #[test]
    fn ledger_bounds_follow_outcomes() {
        let mut l = Ledger::default();
        let ok = Outcome::Ok(json!({}));
        let unknown = Outcome::Unknown(Failure::Timeout);
        l.purchase(1, 10, 3, &ok);
        l.purchase(1, 10, 1, &Outcome::Refused(400, String::new()));
        l.purchase(1, 11, 2, &unknown);
        l.transfer(1, 10, 11, &ok);
        l.transfer(1, 10, 11, &unknown);
        assert_eq!(
            l.sold[&1],
            Bounds {
                acked: 3,
                up: 2,
                down: 0
            }
        );
        assert_eq!(
            l.held[&(1, 10)],
            Bounds {
                acked: 2,
                up: 0,
                down: 1
            }
        );
        assert_eq!(
            l.held[&(1, 11)],
            Bounds {
                acked: 1,
                up: 3,
                down: 0
            }
        );
        assert_eq!((l.acknowledged, l.unknown), (2, 2));
        assert!(l.held[&(1, 10)].admits(1) && l.held[&(1, 10)].admits(2));
        assert!(!l.held[&(1, 10)].admits(3) && !l.held[&(1, 10)].admits(0));

        let mut merged = Ledger::default();
        merged.merge(l.clone());
        merged.merge(l);
        assert_eq!(merged.sold[&1].acked, 6);
        assert_eq!(merged.held[&(1, 11)].up, 6);
    }
}
