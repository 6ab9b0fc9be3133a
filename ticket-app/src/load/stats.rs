//! Latency and outcome recording: one `Recorder` per client (no sharing on the hot path),
//! merged into a `Summary` at the end.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::LoadError;

/// Highest latency the histogram tracks, in microseconds (one hour; longer is clamped).
const LATENCY_US_MAX: u64 = 3_600_000_000;

/// Significant decimal digits the histogram keeps: 0.1 % resolution at any latency.
const LATENCY_SIGFIG: u8 = 3;

/// Most points of the latency-over-time plot.
const TIMELINE_POINTS_MAX: u64 = 120;

/// Shortest time bucket of the latency-over-time plot, in milliseconds.
const TIMELINE_BUCKET_MS_MIN: u64 = 10;

/// One request as the timeline keeps it (8 bytes).
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// When it started, in milliseconds since the run started.
    start_ms: u32,
    /// How long it took, in microseconds (clamped).
    latency_us: u32,
}

/// What one client measured.
pub(crate) struct Recorder {
    latency: Histogram<u64>,
    samples: Vec<Sample>,
    samples_max: usize,
    truncated: bool,
    outcomes: BTreeMap<String, u64>,
}

/// The latency histogram: 1 µs to [`LATENCY_US_MAX`] at [`LATENCY_SIGFIG`] digits. The bounds
/// are constants within the constructor's rules, so the error is for form's sake.
fn histogram() -> Result<Histogram<u64>, LoadError> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_SIGFIG)
        .map_err(|e| LoadError::Internal(format!("cannot create a latency histogram: {e}")))
}

impl Recorder {
    /// A recorder that keeps at most `samples_max` requests for the timeline.
    pub(crate) fn new(samples_max: usize) -> Result<Self, LoadError> {
        Ok(Recorder {
            latency: histogram()?,
            samples: Vec::new(),
            samples_max,
            truncated: false,
            outcomes: BTreeMap::new(),
        })
    }

    /// Record a request that started `start_us` after the run started and took `latency_us`,
    /// counted under `outcome` (a status code or a failure kind).
    pub(crate) fn record(&mut self, start_us: u64, latency_us: u64, outcome: String) {
        self.latency.saturating_record(latency_us.max(1));
        if self.samples.len() < self.samples_max {
            self.samples.push(Sample {
                start_ms: u32::try_from(start_us / 1000).unwrap_or(u32::MAX),
                latency_us: u32::try_from(latency_us).unwrap_or(u32::MAX),
            });
        } else {
            self.truncated = true;
        }
        *self.outcomes.entry(outcome).or_default() += 1;
    }
}

/// Latency percentiles of a run, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Slowest request.
    pub max_ms: f64,
    /// Fastest request.
    pub min_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

/// One point of the latency-over-time plot: the requests that started in one time bucket.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TimelinePoint {
    /// Start of the bucket, seconds since the run started.
    pub t_s: f64,
    /// Requests that started in the bucket.
    pub requests: u64,
    /// The same, per second.
    pub requests_per_s: f64,
    /// Their median latency.
    pub p50_ms: f64,
    /// Their 99th percentile latency.
    pub p99_ms: f64,
    /// Their slowest.
    pub max_ms: f64,
}

/// One point of the latency distribution: `percentile` % of requests took at most
/// `latency_ms`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DistributionPoint {
    /// Percentile, 0 to 100.
    pub percentile: f64,
    /// Latency at that percentile.
    pub latency_ms: f64,
}

/// Every client's measurements merged.
pub(crate) struct Summary {
    pub requests: u64,
    pub latency: Latency,
    pub outcomes: BTreeMap<String, u64>,
    pub timeline: Vec<TimelinePoint>,
    pub timeline_truncated: bool,
    pub distribution: Vec<DistributionPoint>,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl Summary {
    /// Merge the recorders of a run that lasted `elapsed_us`.
    pub(crate) fn merge(recorders: Vec<Recorder>, elapsed_us: u64) -> Result<Summary, LoadError> {
        let mut latency = histogram()?;
        let mut samples = Vec::new();
        let mut outcomes = BTreeMap::new();
        let mut truncated = false;
        for r in recorders {
            // Both histograms have the same bounds, so `add` cannot fail for range reasons.
            let _ = latency.add(&r.latency);
            samples.extend(r.samples);
            truncated |= r.truncated;
            for (k, n) in r.outcomes {
                *outcomes.entry(k).or_default() += n;
            }
        }
        let requests = latency.len();
        let summary = if requests == 0 {
            Latency::default()
        } else {
            Latency {
                p50_ms: ms(latency.value_at_quantile(0.5)),
                p90_ms: ms(latency.value_at_quantile(0.9)),
                p99_ms: ms(latency.value_at_quantile(0.99)),
                p999_ms: ms(latency.value_at_quantile(0.999)),
                max_ms: ms(latency.max()),
                min_ms: ms(latency.min()),
                mean_ms: latency.mean() / 1000.0,
            }
        };
        Ok(Summary {
            requests,
            latency: summary,
            outcomes,
            timeline: timeline(samples, elapsed_us),
            timeline_truncated: truncated,
            distribution: distribution(&latency),
        })
    }
}

/// Bucket the samples by start time and take each bucket's percentiles.
fn timeline(mut samples: Vec<Sample>, elapsed_us: u64) -> Vec<TimelinePoint> {
    let elapsed_ms = elapsed_us / 1000 + 1;
    let bucket_ms = elapsed_ms
        .div_ceil(TIMELINE_POINTS_MAX)
        .max(TIMELINE_BUCKET_MS_MIN);
    samples.sort_unstable_by_key(|s| s.start_ms);
    let mut out = Vec::new();
    let mut rest = samples.as_slice();
    while let Some(first) = rest.first() {
        let bucket = u64::from(first.start_ms) / bucket_ms;
        let end = rest
            .iter()
            .position(|s| u64::from(s.start_ms) / bucket_ms != bucket)
            .unwrap_or(rest.len());
        let mut lat: Vec<u32> = rest[..end].iter().map(|s| s.latency_us).collect();
        lat.sort_unstable();
        let at = |q: f64| {
            let i = ((lat.len() as f64 * q).ceil() as usize).clamp(1, lat.len()) - 1;
            f64::from(lat[i]) / 1000.0
        };
        out.push(TimelinePoint {
            t_s: (bucket * bucket_ms) as f64 / 1000.0,
            requests: lat.len() as u64,
            requests_per_s: lat.len() as f64 * 1000.0 / bucket_ms as f64,
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        });
        rest = &rest[end..];
    }
    out
}

/// The latency at percentiles 0, 90, 99, 99.9, … (ten steps per "nine") up to the resolution
/// the request count supports, then the maximum.
fn distribution(h: &Histogram<u64>) -> Vec<DistributionPoint> {
    let n = h.len();
    if n == 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut k = 0u32;
    loop {
        let tail = 10f64.powf(-f64::from(k) / 10.0);
        if tail * (n as f64) < 1.0 {
            break;
        }
        let q = 1.0 - tail;
        out.push(DistributionPoint {
            percentile: q * 100.0,
            latency_ms: ms(h.value_at_quantile(q)),
        });
        k += 1;
    }
    out.push(DistributionPoint {
        percentile: 100.0,
        latency_ms: ms(h.max()),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Percentiles of a known set of latencies (1..=1000 ms), the timeline's buckets and the
    /// distribution's ends.
    #[test]
    fn merged_percentiles_and_timeline() {
        let mut a = Recorder::new(10_000).unwrap();
        let mut b = Recorder::new(10_000).unwrap();
        for i in 1..=1000u64 {
            let r = if i % 2 == 0 { &mut a } else { &mut b };
            // Requests start one per millisecond over one second; request i takes i ms.
            r.record(
                i * 1000,
                i * 1000,
                if i % 10 == 0 { "400" } else { "200" }.into(),
            );
        }
        let s = Summary::merge(vec![a, b], 1_000_000).unwrap();
        assert_eq!(s.requests, 1000);
        assert_eq!(s.outcomes["200"], 900);
        assert_eq!(s.outcomes["400"], 100);
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.002 + 1e-9;
        assert!(close(s.latency.p50_ms, 500.0), "{:?}", s.latency);
        assert!(close(s.latency.p90_ms, 900.0), "{:?}", s.latency);
        assert!(close(s.latency.p99_ms, 990.0), "{:?}", s.latency);
        assert!(close(s.latency.max_ms, 1000.0), "{:?}", s.latency);
        assert!(close(s.latency.min_ms, 1.0), "{:?}", s.latency);
        assert!(!s.timeline_truncated);

        // 1001 ms over at most 120 buckets: 9 ms, raised to the 10 ms minimum.
        assert_eq!(s.timeline.len(), 101);
        let second = &s.timeline[1];
        assert_eq!(second.t_s, 0.01);
        assert_eq!((second.requests, second.requests_per_s), (10, 1000.0));
        assert_eq!(s.timeline.iter().map(|p| p.requests).sum::<u64>(), 1000);
        assert_eq!((second.p50_ms, second.max_ms), (14.0, 19.0));

        let d = &s.distribution;
        assert_eq!(d[0].percentile, 0.0);
        assert!(close(d[0].latency_ms, 1.0));
        assert_eq!(d.last().unwrap().percentile, 100.0);
        assert!(d.windows(2).all(|w| w[0].latency_ms <= w[1].latency_ms));
        assert!(d.windows(2).all(|w| w[0].percentile < w[1].percentile));
        // 1000 requests resolve three nines: 0, 0.1 … 3.0 nines, then the max.
        assert_eq!(d.len(), 32);
    }

    /// Past the sample bound the timeline stops growing and says so; counts stay exact.
    #[test]
    fn samples_are_bounded() {
        let mut r = Recorder::new(3).unwrap();
        for i in 0..5 {
            r.record(i, 10, "200".into());
        }
        let s = Summary::merge(vec![r], 100).unwrap();
        assert_eq!(s.requests, 5);
        assert!(s.timeline_truncated);
        assert_eq!(
            s.timeline.iter().map(|p| p.requests_per_s).sum::<f64>(),
            300.0
        );
    }
}
