//! The gossiped service list: replicas and front ends, merged by
//! `(generation, heartbeat)`, suspected when their heartbeat stalls, removed after the suspicion
//! timeout.
//!
//! Invariant: an entry only ever moves forward in `(generation, heartbeat)`; a removed entry is
//! remembered (tombstone) so stale gossip about a dead process cannot resurrect it, while the same
//! process restarted (higher generation) is admitted at once.

use std::collections::{BTreeMap, HashMap};

use crate::message::{ServiceEntry, ServiceKind};
use crate::types::NodeId;

#[derive(Clone, Debug)]
struct Member {
    entry: ServiceEntry,
    /// Local time (ms) at which `(generation, heartbeat)` last moved forward.
    seen_ms: u64,
}

/// What a merge changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct MergeOutcome {
    /// Services not in the list before.
    pub(crate) added: Vec<NodeId>,
    /// Services that came back with a higher generation (restarted processes).
    pub(crate) restarted: Vec<NodeId>,
}

/// The service list as one process sees it.
#[derive(Debug)]
pub(crate) struct Services {
    me: ServiceEntry,
    others: BTreeMap<NodeId, Member>,
    /// Removed services: `(generation, heartbeat)` at removal and when (ms).
    tombstones: HashMap<NodeId, ((u64, u64), u64)>,
}

fn version(e: &ServiceEntry) -> (u64, u64) {
    (e.generation, e.heartbeat)
}

impl Services {
    pub(crate) fn new(me: NodeId, kind: ServiceKind, generation: u64) -> Self {
        Services {
            me: ServiceEntry {
                kind,
                address: me,
                primary: false,
                generation,
                heartbeat: 0,
            },
            others: BTreeMap::new(),
            tombstones: HashMap::new(),
        }
    }

    /// Add an address we were told about at start-up (a `--primary` address): it has to
    /// answer gossip before the suspicion timeout or it is removed like any silent service.
    pub(crate) fn add_seed(&mut self, id: NodeId, now: u64) {
        if id == self.me.address || self.others.contains_key(&id) {
            return;
        }
        let entry = ServiceEntry {
            kind: ServiceKind::Replica,
            address: id.clone(),
            primary: false,
            generation: 0,
            heartbeat: 0,
        };
        self.others.insert(
            id,
            Member {
                entry,
                seen_ms: now,
            },
        );
    }

    /// Advance our own heartbeat: we are alive.
    pub(crate) fn beat(&mut self) {
        self.me.heartbeat += 1;
    }

    /// Merge a received list.
    pub(crate) fn merge(&mut self, now: u64, list: &[ServiceEntry]) -> MergeOutcome {
        let mut out = MergeOutcome::default();
        for e in list {
            if e.address == self.me.address {
                continue;
            }
            if let Some((v, _)) = self.tombstones.get(&e.address) {
                if version(e) <= *v {
                    continue;
                }
                self.tombstones.remove(&e.address);
            }
            match self.others.get_mut(&e.address) {
                None => {
                    out.added.push(e.address.clone());
                    self.others.insert(
                        e.address.clone(),
                        Member {
                            entry: e.clone(),
                            seen_ms: now,
                        },
                    );
                }
                Some(m) if version(e) > version(&m.entry) => {
                    if e.generation > m.entry.generation && m.entry.generation > 0 {
                        out.restarted.push(e.address.clone());
                    }
                    m.entry = e.clone();
                    m.seen_ms = now;
                }
                Some(_) => {}
            }
        }
        out
    }

    /// Remove services silent for `timeout_ms`; returns them.
    pub(crate) fn expire(&mut self, now: u64, timeout_ms: u64) -> Vec<ServiceEntry> {
        let dead: Vec<NodeId> = self
            .others
            .iter()
            .filter(|(_, m)| now.saturating_sub(m.seen_ms) >= timeout_ms)
            .map(|(id, _)| id.clone())
            .collect();
        let mut removed = Vec::with_capacity(dead.len());
        for id in dead {
            if let Some(m) = self.others.remove(&id) {
                self.tombstones.insert(id, (version(&m.entry), now));
                removed.push(m.entry);
            }
        }
        // Tombstones only need to outlive gossip still in flight about the dead service.
        self.tombstones
            .retain(|_, (_, at)| now.saturating_sub(*at) < 10 * timeout_ms.max(1));
        removed
    }

    /// Whether `id` has been silent for at least `after_ms`.
    pub(crate) fn is_suspected(&self, id: &NodeId, now: u64, after_ms: u64) -> bool {
        self.others
            .get(id)
            .is_some_and(|m| now.saturating_sub(m.seen_ms) >= after_ms)
    }

    /// Services silent for at least `after_ms`: suspected, not yet removed.
    pub(crate) fn suspected(&self, now: u64, after_ms: u64) -> Vec<NodeId> {
        self.others
            .keys()
            .filter(|id| self.is_suspected(id, now, after_ms))
            .cloned()
            .collect()
    }

    /// The list as we show it, ourselves included, with `primary` marking our belief.
    pub(crate) fn to_vec(&self, primary: Option<&NodeId>) -> Vec<ServiceEntry> {
        std::iter::once(&self.me)
            .chain(self.others.values().map(|m| &m.entry))
            .map(|e| ServiceEntry {
                primary: Some(&e.address) == primary,
                ..e.clone()
            })
            .collect()
    }

    /// Other replicas in the list.
    pub(crate) fn replicas(&self) -> impl Iterator<Item = &NodeId> {
        self.others
            .values()
            .filter(|m| m.entry.kind == ServiceKind::Replica)
            .map(|m| &m.entry.address)
    }

    /// Front ends in the list.
    pub(crate) fn frontends(&self) -> impl Iterator<Item = &NodeId> {
        self.others
            .values()
            .filter(|m| m.entry.kind == ServiceKind::Frontend)
            .map(|m| &m.entry.address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(addr: &str, generation: u64, heartbeat: u64) -> ServiceEntry {
        ServiceEntry {
            kind: ServiceKind::Replica,
            address: NodeId::new(addr),
            primary: false,
            generation,
            heartbeat,
        }
    }

    #[test]
    fn merge_moves_forward_only() {
        let mut s = Services::new(NodeId::new("a"), ServiceKind::Replica, 1);
        let out = s.merge(0, &[entry("b", 1, 5), entry("a", 9, 9)]);
        assert_eq!(out.added, vec![NodeId::new("b")]);
        s.merge(10, &[entry("b", 1, 3)]);
        assert_eq!(s.to_vec(None)[1].heartbeat, 5, "older heartbeat ignored");
        let out = s.merge(20, &[entry("b", 2, 0)]);
        assert_eq!(
            out.restarted,
            vec![NodeId::new("b")],
            "higher generation is a restart"
        );
    }

    #[test]
    fn silent_services_are_suspected_then_removed_and_not_resurrected_by_stale_gossip() {
        let mut s = Services::new(NodeId::new("a"), ServiceKind::Replica, 1);
        s.merge(0, &[entry("b", 1, 5)]);
        assert!(!s.is_suspected(&NodeId::new("b"), 999, 1000));
        assert!(s.is_suspected(&NodeId::new("b"), 1000, 1000));
        assert!(s.expire(1999, 2000).is_empty());
        assert_eq!(s.expire(2000, 2000).len(), 1);
        assert!(!s.to_vec(None).iter().any(|e| e.address == NodeId::new("b")));
        s.merge(2100, &[entry("b", 1, 5)]);
        assert!(
            !s.to_vec(None).iter().any(|e| e.address == NodeId::new("b")),
            "stale gossip does not resurrect"
        );
        s.merge(2200, &[entry("b", 2, 1)]);
        assert!(
            s.to_vec(None).iter().any(|e| e.address == NodeId::new("b")),
            "a restarted process is admitted"
        );
    }

    #[test]
    fn primary_flag_reflects_our_belief() {
        let mut s = Services::new(NodeId::new("a"), ServiceKind::Replica, 1);
        s.merge(0, &[entry("b", 1, 1)]);
        let list = s.to_vec(Some(&NodeId::new("b")));
        assert!(!list[0].primary && list[1].primary);
    }
}
