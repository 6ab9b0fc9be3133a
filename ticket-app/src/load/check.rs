//! The consistency check after a run, through the public API only (what any client can see):
//!
//! - the ticket invariants: per event `avail + purchased == numtickets`, and the tickets the
//!   run's users hold sum to `purchased`;
//! - every acknowledged write is reflected: each event's `purchased` and each user's holding lie
//!   between what the 200 answers prove and what the requests with unknown outcomes (5xx,
//!   timeouts) could add or remove; every created user and event exists with its name.
//!
//! It assumes nobody else writes to the users and events the run created (other traffic on the
//! same front end is fine). Reads go through the front end, whose read fence guarantees they see
//! every write it acknowledged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::api::{expect_ok, Api};
use super::workload::{Bounds, Ledger, World};
use super::LoadError;
use crate::command::{EventId, UserId};

/// Most users and events created during a run that the check reads back (evenly spread over
/// all of them); bounds the check's duration after a long create run.
pub const CREATED_CHECKED_MAX: usize = 1000;

/// The outcome of the consistency check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Consistency {
    /// True when no problem was found.
    pub passed: bool,
    /// Events read back.
    pub events_checked: u64,
    /// Users read back.
    pub users_checked: u64,
    /// Purchases and transfers the cluster acknowledged (200) and the check accounted for.
    pub acknowledged_writes: u64,
    /// Writes whose outcome is unknown (5xx, timeout, broken connection): allowed either way.
    pub unknown_writes: u64,
    /// What was wrong, one line each (empty when `passed`).
    pub problems: Vec<String>,
}

#[derive(Deserialize)]
struct EventBody {
    eventname: String,
    avail: u32,
    purchased: u32,
}

#[derive(Deserialize)]
struct HoldingBody {
    eventid: EventId,
    tickets: u32,
}

#[derive(Deserialize)]
struct UserBody {
    username: String,
    holdings: Vec<HoldingBody>,
}

/// Every `len / max`-th index, so at most `max` of `len` items, spread evenly.
fn spread(len: usize, max: usize) -> impl Iterator<Item = usize> {
    let step = len.div_ceil(max.max(1)).max(1);
    (0..len).step_by(step)
}

/// Read back the run's events and users and compare them with the ledger.
pub(crate) async fn check(
    api: &Api,
    world: &World,
    ledger: &Ledger,
) -> Result<Consistency, LoadError> {
    let mut c = Consistency::default();
    let mut problems = Vec::new();
    c.acknowledged_writes = ledger.acknowledged;
    c.unknown_writes = ledger.unknown;

    // Phase: the run's events: conservation, and sales within the ledger's bounds.
    let mut purchased = BTreeMap::new();
    for &(eventid, numtickets) in &world.events {
        let e: EventBody = expect_ok(
            "check: read an event",
            api.get(&format!("/events/{eventid}")).await,
        )?;
        c.events_checked += 1;
        if u64::from(e.avail) + u64::from(e.purchased) != u64::from(numtickets) {
            problems.push(format!(
                "event {eventid}: avail {} + purchased {} != numtickets {numtickets}",
                e.avail, e.purchased
            ));
        }
        let sold = ledger.sold.get(&eventid).copied().unwrap_or_default();
        if !sold.admits(i64::from(e.purchased)) {
            problems.push(format!(
                "event {eventid}: purchased {} but the acknowledged purchases make {} (plus up to {} unknown)",
                e.purchased, sold.acked, sold.up
            ));
        }
        purchased.insert(eventid, u64::from(e.purchased));
    }

    // Phase: the run's users: each holding within bounds, and holdings summing to sales.
    let mut held_sum: BTreeMap<EventId, u64> = BTreeMap::new();
    for &userid in &world.users {
        let u: UserBody = expect_ok(
            "check: read a user",
            api.get(&format!("/users/{userid}")).await,
        )?;
        c.users_checked += 1;
        let holdings: BTreeMap<EventId, u32> =
            u.holdings.iter().map(|h| (h.eventid, h.tickets)).collect();
        for (&eventid, &tickets) in &holdings {
            *held_sum.entry(eventid).or_default() += u64::from(tickets);
        }
        for &(eventid, _) in &world.events {
            let held = holdings.get(&eventid).copied().unwrap_or(0);
            let bounds: Bounds = ledger
                .held
                .get(&(eventid, userid))
                .copied()
                .unwrap_or_default();
            if !bounds.admits(i64::from(held)) {
                problems.push(format!(
                    "user {userid} holds {held} of event {eventid}; acknowledged writes make {} (up to +{}/-{} unknown)",
                    bounds.acked, bounds.up, bounds.down
                ));
            }
        }
    }
    for (&eventid, &sold) in &purchased {
        let held = held_sum.get(&eventid).copied().unwrap_or(0);
        if held != sold {
            problems.push(format!(
                "event {eventid}: users hold {held} tickets but {sold} were purchased"
            ));
        }
    }

    // Phase: users and events created during the run exist as created.
    let users = &ledger.created_users;
    for i in spread(users.len(), CREATED_CHECKED_MAX) {
        let (userid, name): &(UserId, String) = &users[i];
        let u: UserBody = expect_ok(
            "check: read a created user",
            api.get(&format!("/users/{userid}")).await,
        )?;
        c.users_checked += 1;
        if u.username != *name {
            problems.push(format!(
                "user {userid} is named {:?}, created as {name:?}",
                u.username
            ));
        }
    }
    let events = &ledger.created_events;
    for i in spread(events.len(), CREATED_CHECKED_MAX) {
        let (eventid, name, numtickets) = &events[i];
        let e: EventBody = expect_ok(
            "check: read a created event",
            api.get(&format!("/events/{eventid}")).await,
        )?;
        c.events_checked += 1;
        if e.eventname != *name || e.avail != *numtickets || e.purchased != 0 {
            problems.push(format!(
                "event {eventid} reads {:?} avail {} purchased {}, created as {name:?} with {numtickets}",
                e.eventname, e.avail, e.purchased
            ));
        }
    }
    c.passed = problems.is_empty();
    c.problems = problems;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_bounds_and_covers() {
        assert_eq!(spread(5, 10).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
        assert_eq!(spread(10, 5).collect::<Vec<_>>(), vec![0, 2, 4, 6, 8]);
        assert_eq!(spread(10, 3).collect::<Vec<_>>(), vec![0, 4, 8]);
        assert_eq!(spread(0, 3).count(), 0);
        assert_eq!(spread(3, 0).count(), 1);
    }
}
