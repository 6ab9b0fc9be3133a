//! Deliberately broken protocol variants, compiled only with the `bug-injection` feature.
//!
//! They exist so the deterministic simulator (`replica-sim`) can prove that it catches the bugs
//! that matter: a test switches one on for its thread, runs seeds, and expects violations. The
//! switch is thread-local so tests running in parallel threads do not see each other's bugs.
//! Never enable this feature in a build that serves data.

use std::cell::Cell;

/// A deliberately broken variant of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bug {
    /// The primary commits (applies and acknowledges) an entry as soon as its own copy is
    /// durable, without waiting for the in-sync secondaries: a crash of the primary can then lose
    /// acknowledged writes.
    AckBeforeReplication,
    /// Elections rank candidates by node id only, ignoring log freshness: a replica that missed
    /// committed entries can win and overwrite them.
    ElectByIdOnly,
}

thread_local! {
    static ACTIVE: Cell<Option<Bug>> = const { Cell::new(None) };
}

/// Switch `bug` on for every replica driven by this thread (`None`: the correct protocol).
pub fn set(bug: Option<Bug>) {
    ACTIVE.with(|a| a.set(bug));
}

/// Whether `bug` is switched on for this thread.
pub fn active(bug: Bug) -> bool {
    ACTIVE.with(|a| a.get() == Some(bug))
}
