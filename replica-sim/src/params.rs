//! Per-seed parameters, drawn swarm style: every seed gets its own cluster size, protocol
//! configuration, network fault rates, disk latencies, fault mix and workload shape.
//!
//! Swarm testing (Groce et al., TigerBeetle's VOPR) beats one fixed fault mix: a seed with 30%
//! loss and no crashes explores different corners than one with crashes and a perfect network.
//!
//! Invariant: in [`FaultMode::CrashStop`] every draw stays inside the envelope the core documents
//! for its default all-in-sync mode (DESIGN.md §2.3, `config.rs`): crash-stop failures with
//! reliable failure detection. Concretely: `ack_timeout_ms` exceeds failure detection plus an
//! election, process pauses and network delay spikes stay well below the failure timeout (so a
//! live replica is never mistaken for a dead one by timing alone), and there are no partitions.
//! Message loss, duplication and reordering are allowed: the transport contract permits them.

use replica_core::rng::Rng;
use replica_core::Config;

/// Which faults a run may inject, and therefore which checks apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultMode {
    /// The default all-in-sync mode's envelope: crashes and restarts (unsynced data lost), short
    /// pauses, disk stalls, message loss, duplication, delay and reordering. Every check applies.
    CrashStop,
    /// [`FaultMode::CrashStop`] plus the bootstrap and timing the crash-stop envelope avoids:
    /// replicas know only the configured primary at start (`seeds = [r0]`, `r0` none, as
    /// `ticket node --primary` and `testing::Cluster` start them), and the compound "stall a
    /// secondary past the ack timeout, then crash the primary" lets the primary come back at
    /// once. Every check applies; violations found here are reported as core findings.
    Targeted,
    /// [`FaultMode::CrashStop`] plus message loss (0–30%, requests and replies). A lost
    /// election query looks exactly like a dead peer, so loss makes the failure detector
    /// unreliable: outside the all-in-sync mode's stated assumption, but inside the transport
    /// contract. Every check applies; violations found here are reported as core findings.
    Lossy,
    /// Adds network partitions and long pauses (a paused primary is a partitioned primary). The
    /// all-in-sync mode may split its brain here by design (DESIGN.md §2.3), so only the checks
    /// that must survive a split are applied: convergence after healing, identical state on every
    /// replica, each request id executed at most once in the final log, epochs monotone, no
    /// panics or contract breaches.
    Partitions,
}

impl FaultMode {
    /// Parse a CLI name.
    pub fn parse(s: &str) -> Option<FaultMode> {
        match s {
            "crash-stop" | "crash" => Some(FaultMode::CrashStop),
            "lossy" | "loss" => Some(FaultMode::Lossy),
            "targeted" => Some(FaultMode::Targeted),
            "partitions" | "partition" => Some(FaultMode::Partitions),
            _ => None,
        }
    }

    /// CLI name.
    pub fn name(self) -> &'static str {
        match self {
            FaultMode::CrashStop => "crash-stop",
            FaultMode::Lossy => "lossy",
            FaultMode::Targeted => "targeted",
            FaultMode::Partitions => "partitions",
        }
    }
}

/// Network behaviour during the fault phase.
#[derive(Clone, Debug, PartialEq)]
pub struct NetParams {
    /// Probability that a request is lost (and, independently, that a reply is lost).
    pub loss: f64,
    /// Probability that a request is delivered twice.
    pub duplicate: f64,
    /// Smallest one-way delay, ms.
    pub delay_min_ms: u64,
    /// Largest ordinary one-way delay, ms. Independent delays reorder messages.
    pub delay_max_ms: u64,
    /// Probability that a message is delayed by a spike instead.
    pub spike: f64,
    /// Largest spike, ms.
    pub spike_max_ms: u64,
    /// A call with no reply after this long fails in transport (`Input::CallFailed`), like an
    /// HTTP client timeout, ms.
    pub call_timeout_ms: u64,
}

impl NetParams {
    /// The network of the healing phase: no loss, no duplicates, short delays.
    pub fn reliable(call_timeout_ms: u64) -> Self {
        NetParams {
            loss: 0.0,
            duplicate: 0.0,
            delay_min_ms: 1,
            delay_max_ms: 3,
            spike: 0.0,
            spike_max_ms: 0,
            call_timeout_ms,
        }
    }
}

/// Disk behaviour.
#[derive(Clone, Debug, PartialEq)]
pub struct DiskParams {
    /// Smallest fsync latency, ms.
    pub sync_min_ms: u64,
    /// Largest fsync latency, ms.
    pub sync_max_ms: u64,
    /// A crash keeps a random prefix of the unsynced operations (else it loses all of them).
    pub torn_crash: bool,
}

/// The fault mix of the fault phase.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultParams {
    /// Shortest gap between two nemesis actions, ms.
    pub gap_min_ms: u64,
    /// Longest gap between two nemesis actions, ms.
    pub gap_max_ms: u64,
    /// Relative weight of crashing a replica.
    pub crash: u32,
    /// Relative weight of pausing a replica.
    pub pause: u32,
    /// Relative weight of stalling a replica's disk.
    pub stall: u32,
    /// Relative weight of the compound fault "stall a secondary's disk past the ack timeout,
    /// then crash the primary": the scenario in which a replica that does not know it was
    /// dropped from the in-sync set competes in an election.
    pub stall_then_crash: u32,
    /// Relative weight of a partition (only in [`FaultMode::Partitions`]).
    pub partition: u32,
    /// Probability that a crash targets the primary.
    pub primary_bias: f64,
    /// Longest pause, ms.
    pub pause_max_ms: u64,
    /// Longest disk stall, ms.
    pub stall_max_ms: u64,
    /// Longest time a crashed replica stays down, ms.
    pub down_max_ms: u64,
    /// Longest partition, ms.
    pub partition_max_ms: u64,
    /// In "stall then crash", the primary stays down at least this long (0: it may restart at
    /// once), ms.
    pub stall_then_crash_down_min_ms: u64,
}

/// Shape of the client workload.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkParams {
    /// Concurrent clients.
    pub clients: usize,
    /// Distinct keys (fewer keys: more contention, stronger linearizability checks).
    pub keys: usize,
    /// Longest pause between a client's operations, ms.
    pub think_max_ms: u64,
    /// Fraction of operations that are reads.
    pub read_ratio: f64,
    /// Fraction of writes that are `Put` (the rest are `Append`).
    pub put_ratio: f64,
    /// Operations the clients issue in all (a bound on the run's length and on the
    /// linearizability search).
    pub ops_max: u64,
    /// Send reads to any replica (with the read fence), not only the primary.
    pub read_from_secondaries: bool,
}

/// Everything a seed decides before the run starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// The seed.
    pub seed: u64,
    /// The fault mode.
    pub mode: FaultMode,
    /// Number of replicas.
    pub replicas: usize,
    /// Every replica starts knowing every other (`Start::seeds`); else only the configured
    /// primary `r0`, which itself knows nobody.
    pub full_mesh_seeds: bool,
    /// Protocol configuration, the same for every replica.
    pub config: Config,
    /// Network during the fault phase.
    pub net: NetParams,
    /// Disk.
    pub disk: DiskParams,
    /// Fault mix.
    pub faults: FaultParams,
    /// Workload.
    pub work: WorkParams,
    /// Length of the fault phase (clients issue new operations only during it), ms.
    pub fault_phase_ms: u64,
    /// After healing, the cluster must converge within this bound, ms.
    pub heal_bound_ms: u64,
}

fn range(rng: &mut Rng, lo: u64, hi: u64) -> u64 {
    lo + rng.below(hi.saturating_sub(lo) + 1)
}

fn pick<T: Copy>(rng: &mut Rng, items: &[T]) -> T {
    items[rng.below(items.len() as u64) as usize]
}

impl Params {
    /// Draw the parameters of `seed` (from an RNG of its own, so they do not shift when the run
    /// itself consumes randomness differently).
    pub fn draw(seed: u64, mode: FaultMode) -> Params {
        let mut rng = Rng::new(seed ^ 0x5157_4152_4d5f_5052);
        let replicas = pick(&mut rng, &[1, 2, 3, 3, 3, 3, 4, 5]);

        let heartbeat = range(&mut rng, 20, 100);
        let failure_timeout = heartbeat * range(&mut rng, 8, 16);
        let failure_jitter = range(&mut rng, 0, failure_timeout / 2);
        let election_wait = range(&mut rng, 100, 400);
        // The documented relation: the ack timeout outlasts failure detection plus an election.
        let ack_timeout =
            failure_timeout + failure_jitter + election_wait + range(&mut rng, 0, 500);
        let config = Config {
            heartbeat_interval_ms: heartbeat,
            failure_timeout_ms: failure_timeout,
            failure_jitter_ms: failure_jitter,
            ack_timeout_ms: ack_timeout,
            election_wait_ms: election_wait,
            gossip_interval_ms: range(&mut rng, 50, 300),
            suspicion_timeout_ms: range(&mut rng, 1000, 4000),
            batch_entries_max: pick(&mut rng, &[1, 2, 4, 16, 1024]),
            batch_bytes_max: pick(&mut rng, &[200, 4096, 1 << 20]),
            pending_writes_max: pick(&mut rng, &[4, 65_536, 65_536]),
            // From its own stream, so adding it moved no other draw (old seeds replay as before).
            appends_in_flight_max: pick(&mut Rng::new(seed ^ 0x4445_5054_485f_4d58), &[1, 2, 2, 4]),
            // Far above `ops_max` (400): the table never evicts, so every retry must dedup. Not
            // larger: a primary sizes its index for twice this when it takes office.
            dedup_entries_max: 10_000,
            snapshot_interval_entries: pick(&mut rng, &[0, 5, 16, 50, 10_000]),
            log_retain_entries: pick(&mut rng, &[0, 2, 10, 10_000]),
            tick_interval_ms: pick(&mut rng, &[5, 10, 10, 20]),
            // The runtime's knobs: the simulator steps the protocol core without that runtime.
            idle_polls: 0,
            copy_chunk_bytes: Config::default().copy_chunk_bytes,
        };

        let delay_min = range(&mut rng, 0, 2);
        let net = NetParams {
            loss: {
                let loss = pick(&mut rng, &[0.0, 0.0, 0.01, 0.05, 0.1, 0.2, 0.3]);
                if mode == FaultMode::CrashStop {
                    0.0
                } else {
                    loss
                }
            },
            duplicate: pick(&mut rng, &[0.0, 0.0, 0.05, 0.2, 0.5]),
            delay_min_ms: delay_min,
            delay_max_ms: range(&mut rng, delay_min, heartbeat.min(40)),
            spike: pick(&mut rng, &[0.0, 0.0, 0.01, 0.05]),
            // Spikes reorder badly but stay well below failure detection.
            spike_max_ms: range(&mut rng, 0, failure_timeout / 4),
            call_timeout_ms: range(&mut rng, 50, 500),
        };
        let mut net = net;
        if mode != FaultMode::Lossy && mode != FaultMode::Partitions {
            // Reliable failure detection: a live peer always answers within the call timeout
            // (a round trip is two one-way delays, each at most the larger of the ordinary
            // maximum and the spike maximum).
            let worst_trip = 2 * net.delay_max_ms.max(net.spike_max_ms) + 10;
            net.call_timeout_ms = net.call_timeout_ms.max(worst_trip);
        }
        let disk = DiskParams {
            sync_min_ms: range(&mut rng, 0, 2),
            sync_max_ms: range(&mut rng, 2, 15),
            torn_crash: rng.chance(0.5),
        };
        let partitions = mode == FaultMode::Partitions;
        let only = std::env::var("SIM_ONLY").unwrap_or_default();
        let allow = |k: &str| only.is_empty() || only.split(',').any(|o| o == k);
        let faults = FaultParams {
            gap_min_ms: range(&mut rng, 50, 400),
            gap_max_ms: range(&mut rng, 400, 2000),
            crash: pick(&mut rng, &[0, 1, 3, 5]) * u32::from(allow("crash")),
            pause: pick(&mut rng, &[0, 1, 2]) * u32::from(allow("pause")),
            stall: pick(&mut rng, &[0, 1, 2]) * u32::from(allow("stall")),
            stall_then_crash: if mode == FaultMode::Targeted {
                pick(&mut rng, &[1, 2, 4]) * u32::from(allow("stall_then_crash"))
            } else {
                0
            },
            partition: if partitions {
                pick(&mut rng, &[1, 2, 4])
            } else {
                0
            },
            primary_bias: pick(&mut rng, &[0.0, 0.3, 0.6]),
            // A short pause is a GC or scheduling stall; only partition mode pauses for longer
            // than failure detection (indistinguishable from a partition).
            pause_max_ms: if partitions {
                3 * ack_timeout
            } else {
                failure_timeout / 3
            },
            // A slow disk in crash-stop (below the ack timeout: nobody is dropped for it); in
            // targeted mode long enough to drop a live secondary from the in-sync set.
            stall_max_ms: if mode == FaultMode::Targeted {
                range(&mut rng, 50, 2 * ack_timeout)
            } else {
                range(&mut rng, 50, ack_timeout / 2)
            },
            down_max_ms: range(&mut rng, 100, 4000),
            partition_max_ms: range(&mut rng, 200, 3 * ack_timeout),
            stall_then_crash_down_min_ms: if mode == FaultMode::Targeted {
                0
            } else {
                // Down through failure detection and an election: crash-stop, not a bounce.
                failure_timeout + failure_jitter + 3 * election_wait + 500
            },
        };
        let work = WorkParams {
            clients: range(&mut rng, 1, 4) as usize,
            keys: range(&mut rng, 1, 3) as usize,
            think_max_ms: pick(&mut rng, &[0, 5, 20, 60]),
            read_ratio: pick(&mut rng, &[0.0, 0.2, 0.4]),
            put_ratio: pick(&mut rng, &[0.0, 0.3, 0.6]),
            read_from_secondaries: rng.chance(0.5),
            ops_max: 400,
        };
        Params {
            seed,
            mode,
            replicas,
            full_mesh_seeds: mode != FaultMode::Targeted,
            config,
            net,
            disk,
            faults,
            work,
            fault_phase_ms: range(&mut rng, 2000, 8000),
            heal_bound_ms: 60_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every draw is a valid configuration inside the documented envelope.
    #[test]
    fn draws_are_valid_and_inside_the_envelope() {
        for seed in 0..2000 {
            let p = Params::draw(seed, FaultMode::CrashStop);
            p.config.validate().unwrap();
            let c = &p.config;
            assert!(
                c.ack_timeout_ms
                    > c.failure_timeout_ms + c.failure_jitter_ms + c.election_wait_ms - 1
            );
            assert!(p.faults.pause_max_ms < c.failure_timeout_ms / 2);
            assert!(p.net.spike_max_ms < c.failure_timeout_ms / 2);
            assert_eq!(p.faults.partition, 0);
            assert_eq!(p.faults.stall_then_crash, 0);
            assert!(p.faults.stall_max_ms <= c.ack_timeout_ms / 2);
            assert_eq!(p.net.loss, 0.0);
            assert!(p.full_mesh_seeds);
            assert!(p.net.call_timeout_ms > 2 * p.net.delay_max_ms.max(p.net.spike_max_ms));
            assert_eq!(
                p,
                Params::draw(seed, FaultMode::CrashStop),
                "a pure function of the seed"
            );
        }
    }
}
