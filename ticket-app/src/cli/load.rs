//! `ticket load`: concurrent traffic against a front end, with a progress bar, latency
//! percentiles, a consistency check at the end, and optional SVG plots or JSON output.
//!
//! Everything is in [`crate::load`]; this file turns flags into [`LoadOptions`], prints, and
//! exits 1 when the consistency check fails (so scripts and CI can rely on the status).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::CliError;
use crate::load::{self, plot, LoadError, LoadOptions, Mode, Stop};

/// One-line description in `ticket --help`.
pub const ABOUT: &str =
    "Send concurrent create/purchase/transfer traffic to a front end and check consistency";
/// Description in `ticket load --help`.
pub const LONG_ABOUT: &str = "Send concurrent traffic to a front end: C clients, each with one \
    request in flight, until N requests or S seconds. At the end: requests/s, latency \
    percentiles (p50, p90, p99, p99.9, max), the answers by HTTP status, and a consistency \
    check read back through the public API (per event avail + purchased == numtickets, \
    holdings summing to purchases, every acknowledged write reflected). Exits 1 when the check \
    fails.\n\n\
    The run creates its own users and events, and assumes nobody else writes to them.";
/// Examples at the end of `ticket load --help`.
pub const EXAMPLES: &str = "Examples:\n  \
    ticket load --frontend 127.0.0.1:4560 --mode mixed --clients 16 --requests 10000\n  \
    ticket load --mode purchase --duration 30 --report load.svg\n  \
    ticket load --sweep-clients 1,4,16,64 --requests 2000 --report sweep.svg --json";

/// Client counts of a sweep, parsed from `1,4,16,64`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCounts(pub Vec<usize>);

fn parse_counts(s: &str) -> Result<ClientCounts, String> {
    load::parse_clients_list(s)
        .map(ClientCounts)
        .map_err(|e| e.to_string())
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    s.parse().map_err(|e: LoadError| e.to_string())
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("expected a number of seconds, got {s:?}"))?;
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(format!("expected a positive number of seconds, got {s:?}")),
    }
}

/// `ticket load` flags.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// The front end: http://HOST:PORT or HOST:PORT.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:4560")]
    pub frontend: String,
    /// What to send: create (users and events), purchase, transfer, or mixed (50 % purchases,
    /// 20 % transfers, 20 % reads, 10 % creations).
    #[arg(long, value_name = "MODE", default_value = "mixed", value_parser = parse_mode)]
    pub mode: Mode,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, value_name = "C", default_value_t = 16)]
    pub clients: usize,
    /// Stop after N requests in total [default: 10000 when --duration is not given].
    #[arg(long, value_name = "N", conflicts_with = "duration")]
    pub requests: Option<u64>,
    /// Stop after S seconds (decimals allowed).
    #[arg(long, value_name = "S", value_parser = parse_seconds)]
    pub duration: Option<Duration>,
    /// Run once per client count and plot throughput and latency against them
    /// (`--clients` is then ignored).
    #[arg(long, value_name = "C1,C2,...", value_parser = parse_counts)]
    pub sweep_clients: Option<ClientCounts>,
    /// Write the plots to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub report: Option<PathBuf>,
    /// Print the results as JSON on stdout (no progress bar).
    #[arg(long)]
    pub json: bool,
    /// Events the run creates and buys from (few events: more contention).
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub events: usize,
    /// Tickets each event is created with (set it low to exercise selling out).
    #[arg(long, value_name = "N", default_value_t = 10_000_000)]
    pub tickets_per_event: u32,
    /// One request's time limit in milliseconds (past it, its outcome counts as unknown).
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub timeout_ms: u64,
    /// Seed of the clients' random choices: the same seed sends the same mix.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Skip the consistency check.
    #[arg(long)]
    pub no_check: bool,
}

impl LoadArgs {
    /// The library's options for these flags.
    pub fn options(&self) -> LoadOptions {
        let stop = match (self.requests, self.duration) {
            (_, Some(d)) => Stop::Duration(d),
            (Some(n), None) => Stop::Requests(n),
            (None, None) => Stop::Requests(10_000),
        };
        LoadOptions {
            frontend: self.frontend.clone(),
            mode: self.mode,
            clients: self.clients,
            stop,
            events: self.events,
            tickets_per_event: self.tickets_per_event,
            request_timeout_ms: self.timeout_ms,
            seed: self.seed,
            check: !self.no_check,
            progress: !self.json && std::io::stderr().is_terminal(),
            ..LoadOptions::default()
        }
    }
}

fn json_line(value: &impl serde::Serialize) -> Result<String, LoadError> {
    serde_json::to_string_pretty(value).map_err(|e| LoadError::Internal(e.to_string()))
}

/// Run the load (or the sweep), print the results, write the report; an error when the
/// consistency check failed.
pub async fn run(args: LoadArgs) -> Result<(), CliError> {
    let opts = args.options();
    let problems = match &args.sweep_clients {
        Some(ClientCounts(counts)) => {
            let report = load::sweep(&opts, counts).await?;
            if args.json {
                println!("{}", json_line(&report)?);
            } else {
                print!("{}", report.summary());
            }
            if let Some(path) = &args.report {
                load::write_svg(path, &plot::sweep_svg(&report)?)?;
            }
            report
                .runs
                .iter()
                .flat_map(|r| r.consistency.iter())
                .map(|c| c.problems.len())
                .sum::<usize>()
        }
        None => {
            let report = load::run(&opts).await?;
            if args.json {
                println!("{}", json_line(&report)?);
            } else {
                print!("{}", report.summary());
            }
            if let Some(path) = &args.report {
                load::write_svg(path, &plot::report_svg(&report)?)?;
            }
            report.consistency.map_or(0, |c| c.problems.len())
        }
    };
    if problems > 0 {
        return Err(LoadError::Inconsistent { problems }.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_values() {
        assert_eq!(parse_seconds("1.5"), Ok(Duration::from_millis(1500)));
        for bad in ["0", "-1", "NaN", "inf", "x", "1e300"] {
            assert!(parse_seconds(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_counts("1,4"), Ok(ClientCounts(vec![1, 4])));
        assert!(parse_counts("1,0").is_err());
        assert_eq!(parse_mode("transfer"), Ok(Mode::Transfer));
        assert!(parse_mode("sell").is_err());
    }
}
