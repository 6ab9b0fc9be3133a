//! Counters and histograms a replica and a front end export, and their Prometheus text form.
//!
//! The runtime updates these with relaxed atomics on paths it already walks (executing outputs,
//! the store's sync, the end of a call), so instrumentation costs a few nanoseconds per batch,
//! not per byte. Rendering is plain string building: no metrics crate, any HTTP server can
//! serve it.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::client::ClientStats;
use crate::protocol::Status;
use crate::types::Role;

/// A fixed-bucket histogram (Prometheus semantics: cumulative `le` buckets, a sum and a count).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Non-cumulative counts per bucket; the last slot is `+Inf`.
    counts: Vec<AtomicU64>,
    /// Sum of observations, in millionths of the unit (so it fits an integer atomic).
    sum_micros: AtomicU64,
}

/// Bucket bounds for latencies in seconds: 50 µs … 5 s.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];

/// Bucket bounds for sizes (entries per batch).
pub const SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

impl Histogram {
    /// A histogram with the given upper bounds (ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Record one observation.
    pub fn observe(&self, value: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let micros = (value.max(0.0) * 1e6) as u64;
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Sum of observations.
    pub fn sum(&self) -> f64 {
        self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    }

    fn render(&self, out: &mut String, name: &str, help: &str, labels: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Ordering::Relaxed);
            let le = self
                .bounds
                .get(i)
                .map_or("+Inf".to_string(), |b| format!("{b}"));
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum());
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

/// What a replica's runtime counts.
#[derive(Debug)]
pub struct NodeMetrics {
    /// Client writes this replica answered as committed (as primary).
    pub writes_committed: AtomicU64,
    /// Client writes refused (not primary, overloaded, rejected).
    pub writes_refused: AtomicU64,
    /// Entries per append message sent to a secondary (heartbeats excluded).
    pub append_batch_entries: Histogram,
    /// Round trip of an append, send to acknowledgement (includes the secondary's fsync).
    pub replication_seconds: Histogram,
    /// Duration of one store sync (fsync for the file store). Not observed for a store that
    /// [completes immediately](crate::LogStore::completes_immediately): it has nothing to wait on.
    pub store_sync_seconds: Histogram,
    /// Storage operations per sync: how much group commit shares one fsync.
    pub store_ops_per_sync: Histogram,
    /// Election rounds started.
    pub elections_started: AtomicU64,
    /// Elections won.
    pub elections_won: AtomicU64,
    /// Full copies sent.
    pub snapshots_sent: AtomicU64,
    /// Full copies installed.
    pub snapshots_installed: AtomicU64,
    /// Pieces of full copies sent: a copy larger than `Config::copy_chunk_bytes` goes in
    /// pieces, one call each.
    pub copy_chunks_sent: AtomicU64,
    /// Outbound calls that failed in transport.
    pub calls_failed: AtomicU64,
    /// Times the core looked for work again instead of sleeping (`Config::idle_polls`): the CPU
    /// idle polling spends. Grows only while writes flow.
    pub idle_polls: AtomicU64,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        NodeMetrics {
            writes_committed: AtomicU64::new(0),
            writes_refused: AtomicU64::new(0),
            append_batch_entries: Histogram::new(SIZE_BUCKETS),
            replication_seconds: Histogram::new(SECONDS_BUCKETS),
            store_sync_seconds: Histogram::new(SECONDS_BUCKETS),
            store_ops_per_sync: Histogram::new(SIZE_BUCKETS),
            elections_started: AtomicU64::new(0),
            elections_won: AtomicU64::new(0),
            snapshots_sent: AtomicU64::new(0),
            snapshots_installed: AtomicU64::new(0),
            copy_chunks_sent: AtomicU64::new(0),
            calls_failed: AtomicU64::new(0),
            idle_polls: AtomicU64::new(0),
        }
    }
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

/// Escape a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl NodeMetrics {
    /// The replica's metrics and state in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self, status: &Status) -> String {
        let mut out = String::new();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut out,
            "replica_writes_committed_total",
            "Client writes answered as committed.",
            load(&self.writes_committed),
        );
        counter(
            &mut out,
            "replica_writes_refused_total",
            "Client writes refused (not primary, overloaded, rejected).",
            load(&self.writes_refused),
        );
        self.append_batch_entries.render(
            &mut out,
            "replica_append_batch_entries",
            "Entries per append message sent to a secondary.",
            "",
        );
        self.replication_seconds.render(
            &mut out,
            "replica_replication_seconds",
            "Append round trip to a secondary, including its fsync.",
            "",
        );
        self.store_sync_seconds.render(
            &mut out,
            "replica_store_sync_seconds",
            "Duration of one log store sync (fsync).",
            "",
        );
        self.store_ops_per_sync.render(
            &mut out,
            "replica_store_ops_per_sync",
            "Storage operations covered by one sync (group commit).",
            "",
        );
        counter(
            &mut out,
            "replica_elections_started_total",
            "Election rounds started.",
            load(&self.elections_started),
        );
        counter(
            &mut out,
            "replica_elections_won_total",
            "Elections won.",
            load(&self.elections_won),
        );
        counter(
            &mut out,
            "replica_snapshots_sent_total",
            "Full copies sent to secondaries.",
            load(&self.snapshots_sent),
        );
        counter(
            &mut out,
            "replica_snapshots_installed_total",
            "Full copies installed from a primary.",
            load(&self.snapshots_installed),
        );
        counter(
            &mut out,
            "replica_copy_chunks_sent_total",
            "Pieces of full copies sent (copies larger than copy_chunk_bytes).",
            load(&self.copy_chunks_sent),
        );
        counter(
            &mut out,
            "replica_calls_failed_total",
            "Outbound calls that failed in transport.",
            load(&self.calls_failed),
        );
        counter(
            &mut out,
            "replica_idle_polls_total",
            "Times the core looked for work again instead of sleeping.",
            load(&self.idle_polls),
        );
        gauge(&mut out, "replica_epoch", "Current epoch.", status.epoch);
        gauge(
            &mut out,
            "replica_commit_index",
            "Highest committed log index known.",
            status.commit,
        );
        gauge(
            &mut out,
            "replica_applied_index",
            "Last applied log index.",
            status.applied.index,
        );
        gauge(
            &mut out,
            "replica_last_index",
            "Last log index.",
            status.last.index,
        );
        gauge(&mut out, "replica_lamport", "Lamport clock.", status.clock);
        gauge(
            &mut out,
            "replica_in_sync_replicas",
            "Members of the in-sync set.",
            status.in_sync.len(),
        );
        let _ = writeln!(
            out,
            "# HELP replica_role Current role (1 for the role held).\n# TYPE replica_role gauge"
        );
        for role in [Role::Primary, Role::Secondary, Role::Candidate] {
            let v = u8::from(status.role == role);
            let _ = writeln!(out, "replica_role{{role=\"{role}\"}} {v}");
        }
        let _ = writeln!(
            out,
            "# HELP replica_follower_commit_lag Entries a secondary lacks behind the primary's commit point (primary only).\n# TYPE replica_follower_commit_lag gauge"
        );
        for f in &status.followers {
            let lag = status.commit.saturating_sub(f.matched);
            let _ = writeln!(
                out,
                "replica_follower_commit_lag{{follower=\"{}\"}} {lag}",
                label(f.id.as_str())
            );
        }
        out
    }
}

/// A front end's client counters in the Prometheus text format.
pub fn render_client(stats: &ClientStats) -> String {
    let mut out = String::new();
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    counter(
        &mut out,
        "frontend_writes_total",
        "Writes that completed.",
        load(&stats.writes),
    );
    counter(
        &mut out,
        "frontend_retries_total",
        "Request attempts beyond the first.",
        load(&stats.retries),
    );
    gauge(
        &mut out,
        "frontend_held_writes",
        "Writes currently held and being retried.",
        load(&stats.held),
    );
    counter(
        &mut out,
        "frontend_reads_secondary_total",
        "Reads served by a secondary.",
        load(&stats.reads_secondary),
    );
    counter(
        &mut out,
        "frontend_reads_primary_total",
        "Reads served by the primary.",
        load(&stats.reads_primary),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.5, 1.7, 3.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "help", "");
        assert!(out.contains("x_bucket{le=\"1\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"2\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_count 4\n"));
        assert!((h.sum() - 6.7).abs() < 1e-6);
    }
}
