//! The ticket state machine's apply rate: `TicketMachine::apply` on purchases and transfers,
//! the commands a busy event sees most. This is the ceiling the state machine puts on the
//! replicated service (every replica applies every command).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)] // benchmark harness code

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use replica_core::StateMachine;
use ticket_app::{TicketCommand, TicketMachine};

/// Users and events in the machine: enough that lookups are not all in one cache line.
const USERS: u64 = 1000;
const EVENTS: u64 = 100;

fn machine() -> TicketMachine {
    let mut m = TicketMachine::new();
    for i in 0..USERS {
        m.apply(&TicketCommand::CreateUser {
            username: format!("user{i}"),
        })
        .unwrap();
    }
    for i in 0..EVENTS {
        m.apply(&TicketCommand::CreateEvent {
            userid: 1 + i % USERS,
            eventname: format!("event{i}"),
            numtickets: u32::MAX,
        })
        .unwrap();
    }
    m
}

fn apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("ticket_apply");
    group
        .throughput(Throughput::Elements(1))
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    let mut m = machine();
    let mut n = 0u64;
    group.bench_function("purchase", |b| {
        b.iter(|| {
            n += 1;
            let cmd = TicketCommand::Purchase {
                eventid: 1 + n % EVENTS,
                userid: 1 + (n * 7) % USERS,
                tickets: 1,
            };
            m.apply(&cmd).unwrap()
        })
    });

    // Every user holds some tickets of event 1; transfers pass one ticket around a ring.
    let mut m = machine();
    for u in 1..=USERS {
        m.apply(&TicketCommand::Purchase {
            eventid: 1,
            userid: u,
            tickets: 1_000_000,
        })
        .unwrap();
    }
    let mut n = 0u64;
    group.bench_function("transfer", |b| {
        b.iter(|| {
            n += 1;
            let from = 1 + n % USERS;
            let cmd = TicketCommand::Transfer {
                userid: from,
                eventid: 1,
                tickets: 1,
                targetuser: 1 + (n + 1) % USERS,
            };
            m.apply(&cmd).unwrap()
        })
    });
    group.finish();
    assert!(m.check_invariants().is_ok());
}

criterion_group!(benches, apply);
criterion_main!(benches);
