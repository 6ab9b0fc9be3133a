//! Unit tests of the ticket state machine: a table of commands against a known state, the
//! snapshot format, and a property test over random command sequences.

use proptest::prelude::*;

use super::*;
use crate::limits::NAME_CHARS_MAX;

fn create_user(name: &str) -> TicketCommand {
    TicketCommand::CreateUser {
        username: name.into(),
    }
}

fn create_event(userid: UserId, name: &str, numtickets: u32) -> TicketCommand {
    TicketCommand::CreateEvent {
        userid,
        eventname: name.into(),
        numtickets,
    }
}

fn purchase(eventid: EventId, userid: UserId, tickets: u32) -> TicketCommand {
    TicketCommand::Purchase {
        eventid,
        userid,
        tickets,
    }
}

fn transfer(userid: UserId, eventid: EventId, tickets: u32, targetuser: UserId) -> TicketCommand {
    TicketCommand::Transfer {
        userid,
        eventid,
        tickets,
        targetuser,
    }
}

/// Users 1 (alice) and 2 (bob); event 1 ("concert", 10 tickets, by alice); alice holds 3.
fn fixture() -> TicketMachine {
    let mut m = TicketMachine::new();
    for cmd in [
        create_user("alice"),
        create_user("bob"),
        create_event(1, "concert", 10),
        purchase(1, 1, 3),
    ] {
        m.apply(&cmd).unwrap();
    }
    m.check_invariants().unwrap();
    m
}

/// Every command kind, succeeding and failing for each reason, against the fixture. A failing
/// command must leave the state exactly as it was; every result must keep the invariants.
#[test]
fn command_table() {
    use TicketError::*;
    let long = "x".repeat(NAME_CHARS_MAX + 1);
    let ok = |s: TicketSuccess| -> TicketOutput { Ok(s) };
    let cases: Vec<(&str, TicketCommand, TicketOutput)> = vec![
        (
            "new user gets the next id",
            create_user("carol"),
            ok(TicketSuccess::UserCreated { userid: 3 }),
        ),
        (
            "blank username",
            create_user(" "),
            Err(InvalidName {
                field: "username".into(),
                reason: "must not be empty or blank".into(),
            }),
        ),
        (
            "long username",
            create_user(&long),
            Err(InvalidName {
                field: "username".into(),
                reason: format!(
                    "is {} characters long, at most {NAME_CHARS_MAX} are allowed",
                    NAME_CHARS_MAX + 1
                ),
            }),
        ),
        (
            "new event gets the next id",
            create_event(2, "play", 5),
            ok(TicketSuccess::EventCreated { eventid: 2 }),
        ),
        (
            "event by unknown user",
            create_event(9, "play", 5),
            Err(UserNotFound { userid: 9 }),
        ),
        (
            "event with no tickets",
            create_event(1, "play", 0),
            Err(ZeroCount {
                field: "numtickets".into(),
            }),
        ),
        (
            "event with empty name",
            create_event(1, "", 5),
            Err(InvalidName {
                field: "eventname".into(),
                reason: "must not be empty or blank".into(),
            }),
        ),
        (
            "event with u32::MAX tickets",
            create_event(1, "huge", u32::MAX),
            ok(TicketSuccess::EventCreated { eventid: 2 }),
        ),
        (
            "purchase",
            purchase(1, 2, 2),
            ok(TicketSuccess::Purchased {
                eventid: 1,
                userid: 2,
                tickets: 2,
                avail: 5,
            }),
        ),
        (
            "purchase everything left",
            purchase(1, 2, 7),
            ok(TicketSuccess::Purchased {
                eventid: 1,
                userid: 2,
                tickets: 7,
                avail: 0,
            }),
        ),
        (
            "purchase more than available",
            purchase(1, 2, 8),
            Err(NotEnoughTickets {
                eventid: 1,
                avail: 7,
                requested: 8,
            }),
        ),
        (
            "purchase u32::MAX",
            purchase(1, 2, u32::MAX),
            Err(NotEnoughTickets {
                eventid: 1,
                avail: 7,
                requested: u32::MAX,
            }),
        ),
        (
            "purchase zero",
            purchase(1, 2, 0),
            Err(ZeroCount {
                field: "tickets".into(),
            }),
        ),
        (
            "purchase unknown event",
            purchase(5, 2, 1),
            Err(EventNotFound { eventid: 5 }),
        ),
        (
            "purchase unknown user",
            purchase(1, 5, 1),
            Err(UserNotFound { userid: 5 }),
        ),
        (
            "transfer some",
            transfer(1, 1, 2, 2),
            ok(TicketSuccess::Transferred {
                eventid: 1,
                userid: 1,
                targetuser: 2,
                tickets: 2,
            }),
        ),
        (
            "transfer all held",
            transfer(1, 1, 3, 2),
            ok(TicketSuccess::Transferred {
                eventid: 1,
                userid: 1,
                targetuser: 2,
                tickets: 3,
            }),
        ),
        (
            "transfer more than held",
            transfer(1, 1, 4, 2),
            Err(NotEnoughHeld {
                userid: 1,
                eventid: 1,
                held: 3,
                requested: 4,
            }),
        ),
        (
            "transfer without holding",
            transfer(2, 1, 1, 1),
            Err(NotEnoughHeld {
                userid: 2,
                eventid: 1,
                held: 0,
                requested: 1,
            }),
        ),
        (
            "transfer to oneself",
            transfer(1, 1, 1, 1),
            Err(SelfTransfer { userid: 1 }),
        ),
        (
            "transfer zero",
            transfer(1, 1, 0, 2),
            Err(ZeroCount {
                field: "tickets".into(),
            }),
        ),
        (
            "transfer from unknown user",
            transfer(7, 1, 1, 2),
            Err(UserNotFound { userid: 7 }),
        ),
        (
            "transfer to unknown user",
            transfer(1, 1, 1, 7),
            Err(TargetUserNotFound { userid: 7 }),
        ),
        (
            "transfer of unknown event",
            transfer(1, 4, 1, 2),
            Err(EventNotFound { eventid: 4 }),
        ),
    ];
    for (what, cmd, want) in cases {
        let mut m = fixture();
        let before = m.clone();
        let got = m.apply(&cmd);
        assert_eq!(got, want, "{what}");
        if got.is_err() {
            assert_eq!(m, before, "{what}: a failed command changed the state");
        } else {
            assert_ne!(m, before, "{what}: a successful command changed nothing");
        }
        m.check_invariants()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
    }
}

/// Holdings after a purchase and transfers, as the queries show them; a holding that drops to
/// zero disappears instead of lingering as a zero count.
#[test]
fn queries_show_holdings() {
    let mut m = fixture();
    m.apply(&transfer(1, 1, 3, 2)).unwrap();
    let alice = m.user(1).unwrap();
    assert!(alice.holdings.is_empty(), "{alice:?}");
    let bob = m.user(2).unwrap();
    assert_eq!(bob.username, "bob");
    assert_eq!(bob.holdings.len(), 1);
    assert_eq!(bob.holdings[0].tickets, 3);
    assert_eq!(bob.holdings[0].event, m.event(1).unwrap());
    assert_eq!(m.event(1).unwrap().purchased, 3);
    assert_eq!(m.event(1).unwrap().avail, 7);
    assert_eq!(
        m.query(&TicketQuery::GetUser { userid: 9 }),
        TicketAnswer::User(None)
    );
    assert_eq!(
        m.query(&TicketQuery::GetEvent { eventid: 9 }),
        TicketAnswer::Event(None)
    );
    assert_eq!(
        m.query(&TicketQuery::ListEvents),
        TicketAnswer::Events(m.events())
    );
}

/// A snapshot restores to an equal machine that then behaves identically.
#[test]
fn snapshot_roundtrip() {
    let m = fixture();
    let bytes = m.snapshot();
    assert!(bytes.starts_with(b"TKT1"));
    let mut restored = TicketMachine::new();
    restored.restore(&bytes).unwrap();
    assert_eq!(restored, m);
    assert_eq!(restored.snapshot(), bytes, "snapshots are deterministic");
    let (mut a, mut b) = (m.clone(), restored);
    for cmd in [
        create_user("dave"),
        purchase(1, 3, 4),
        transfer(3, 1, 1, 1),
        purchase(1, 2, 99),
    ] {
        assert_eq!(a.apply(&cmd), b.apply(&cmd));
    }
    assert_eq!(a, b);
}

/// Garbage, truncated, padded and forged snapshots are refused and the state stays as it was.
#[test]
fn restore_rejects_bad_snapshots() {
    let good = fixture().snapshot();
    let mut truncated = good.clone();
    truncated.truncate(good.len() - 3);
    let mut padded = good.clone();
    padded.push(0);
    let mut wrong_tag = good.clone();
    wrong_tag[3] = b'9';

    // Forgeries that decode fine but break one invariant each.
    let forge = |f: &dyn Fn(&mut TicketMachine)| {
        let mut m = fixture();
        f(&mut m);
        m.snapshot()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("random bytes", vec![0xde, 0xad, 0xbe, 0xef, 1, 2, 3]),
        ("tag only", b"TKT1".to_vec()),
        ("wrong tag", wrong_tag),
        ("truncated", truncated),
        ("trailing byte", padded),
        (
            "tickets from nowhere",
            forge(&|m| {
                m.users.get_mut(&2).unwrap().holdings.insert(1, 1);
            }),
        ),
        (
            "avail + purchased != numtickets",
            forge(&|m| m.events.get_mut(&1).unwrap().avail = 9),
        ),
        (
            "zero holding",
            forge(&|m| {
                m.users.get_mut(&2).unwrap().holdings.insert(1, 0);
            }),
        ),
        ("id above counter", forge(&|m| m.last_userid = 1)),
        (
            "missing creator",
            forge(&|m| m.events.get_mut(&1).unwrap().creator = 42),
        ),
        (
            "blank name",
            forge(&|m| m.users.get_mut(&2).unwrap().username = String::new()),
        ),
    ];
    for (what, bytes) in cases {
        let mut m = fixture();
        m.apply(&create_user("sentinel")).unwrap();
        let before = m.clone();
        let err = m.restore(&bytes);
        assert!(err.is_err(), "{what}: accepted");
        assert_eq!(m, before, "{what}: state changed");
    }
}

/// Ids come from counters: sequential from 1, never reused, identical on every replica.
#[test]
fn ids_are_sequential_and_deterministic() {
    let mut a = TicketMachine::new();
    let mut b = TicketMachine::new();
    for i in 1..=5u64 {
        let cmd = create_user(&format!("u{i}"));
        assert_eq!(a.apply(&cmd), Ok(TicketSuccess::UserCreated { userid: i }));
        assert_eq!(b.apply(&cmd), Ok(TicketSuccess::UserCreated { userid: i }));
    }
    // A failed creation consumes no id.
    assert!(a.apply(&create_event(1, "", 1)).is_err());
    assert_eq!(
        a.apply(&create_event(1, "e", 1)),
        Ok(TicketSuccess::EventCreated { eventid: 1 })
    );
    assert_eq!(
        a.apply(&create_event(1, "e", 1)),
        Ok(TicketSuccess::EventCreated { eventid: 2 })
    );
    assert_eq!(a.user_ids(), vec![1, 2, 3, 4, 5]);
}

/// The exhausted-counter path returns an error value instead of wrapping to 0 or panicking.
#[test]
fn exhausted_id_counter_is_an_error() {
    let mut m = TicketMachine::new();
    m.last_userid = u64::MAX;
    let before = m.clone();
    assert_eq!(
        m.apply(&create_user("x")),
        Err(TicketError::IdsExhausted {
            kind: "user".into()
        })
    );
    assert_eq!(m, before);
}

fn arb_command() -> impl Strategy<Value = TicketCommand> {
    // Small id ranges so commands hit existing and missing ids alike; small counts so purchases
    // both succeed and run events dry.
    let id = 0u64..4;
    let count = prop_oneof![8 => 0u32..6, 1 => Just(u32::MAX)];
    let name = prop_oneof![8 => "[a-z]{1,8}", 1 => Just(String::new())];
    prop_oneof![
        1 => name.clone().prop_map(|username| TicketCommand::CreateUser { username }),
        1 => (id.clone(), name, 0u32..40).prop_map(|(userid, eventname, numtickets)| {
            TicketCommand::CreateEvent { userid, eventname, numtickets }
        }),
        4 => (id.clone(), id.clone(), count.clone())
            .prop_map(|(eventid, userid, tickets)| TicketCommand::Purchase { eventid, userid, tickets }),
        4 => (id.clone(), id.clone(), count, id).prop_map(|(userid, eventid, tickets, targetuser)| {
            TicketCommand::Transfer { userid, eventid, tickets, targetuser }
        }),
    ]
}

fn total_held(m: &TicketMachine, eventid: EventId) -> u64 {
    m.user_ids()
        .iter()
        .map(|&u| u64::from(m.held(u, eventid)))
        .sum()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// After any sequence of commands: the invariants hold; a failed command changed nothing;
    /// a purchase moved exactly its tickets from the event to the buyer; a transfer moved
    /// exactly its tickets between two users and created or destroyed none; and the snapshot
    /// restores to an equal machine.
    #[test]
    fn random_commands_keep_invariants(cmds in proptest::collection::vec(arb_command(), 1..200)) {
        // A prelude of three users and three events, so most random commands name ids that
        // exist and both successes and refusals are common.
        let mut m = TicketMachine::new();
        for i in 1..=3 {
            m.apply(&create_user(&format!("u{i}"))).unwrap();
            m.apply(&create_event(i, &format!("e{i}"), 30)).unwrap();
        }
        for cmd in &cmds {
            let before = m.clone();
            let out = m.apply(cmd);
            if let Err(e) = m.check_invariants() {
                prop_assert!(false, "{e} after {cmd:?}");
            }
            match (&out, cmd) {
                (Err(_), _) => prop_assert_eq!(&m, &before, "failed command changed state: {:?}", cmd),
                (Ok(_), TicketCommand::Purchase { eventid, userid, tickets }) => {
                    let (e0, e1) = (before.event(*eventid).unwrap(), m.event(*eventid).unwrap());
                    prop_assert_eq!(e1.avail + tickets, e0.avail);
                    prop_assert_eq!(e1.purchased, e0.purchased + tickets);
                    prop_assert_eq!(m.held(*userid, *eventid), before.held(*userid, *eventid) + tickets);
                }
                (Ok(_), TicketCommand::Transfer { userid, eventid, tickets, targetuser }) => {
                    prop_assert_eq!(m.event(*eventid), before.event(*eventid));
                    prop_assert_eq!(total_held(&m, *eventid), total_held(&before, *eventid));
                    prop_assert_eq!(m.held(*userid, *eventid) + tickets, before.held(*userid, *eventid));
                    prop_assert_eq!(m.held(*targetuser, *eventid), before.held(*targetuser, *eventid) + tickets);
                }
                (Ok(_), _) => {}
            }
        }
        let mut restored = TicketMachine::new();
        prop_assert!(restored.restore(&m.snapshot()).is_ok());
        prop_assert_eq!(&restored, &m);
    }

    /// Restore never panics on arbitrary bytes, and refuses anything that is not a valid
    /// ticket snapshot without touching the state.
    #[test]
    fn restore_survives_arbitrary_bytes(tail in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut bytes = b"TKT1".to_vec();
        bytes.extend_from_slice(&tail);
        let mut m = fixture();
        let before = m.clone();
        if m.restore(&bytes).is_ok() {
            prop_assert!(m.check_invariants().is_ok());
        } else {
            prop_assert_eq!(m, before);
        }
    }
}
