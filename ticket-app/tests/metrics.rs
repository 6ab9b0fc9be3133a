//! `/metrics` output is valid Prometheus text exposition format (version 0.0.4), checked by a
//! strict parser written here, and its counters move when writes happen.
//!
//! The parser enforces what Prometheus' own text parser enforces and a little more: metric
//! and label names by the grammar, escaped label values, parseable values, at most one HELP and
//! one TYPE per family and TYPE before its samples, families not interleaved, no duplicate
//! series, and for histograms cumulative `le` buckets ending in `+Inf` equal to `_count`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap: a failure is the test failing

use std::collections::{BTreeMap, BTreeSet};

use replica_core::metrics::render_client;
use replica_core::testing::{Cluster, KvCommand};
use replica_core::NodeId;

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed exposition: samples in order, and each family's declared type.
#[derive(Debug, Default)]
struct Exposition {
    samples: Vec<Sample>,
    types: BTreeMap<String, String>,
}

impl Exposition {
    /// The value of the series `name` with exactly `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    fn value(&self, name: &str) -> f64 {
        self.get(name, &[])
            .unwrap_or_else(|| panic!("no series {name}"))
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s
            .parse::<f64>()
            .map_err(|e| format!("bad value {s:?}: {e}")),
    }
}

/// `{a="x",b="y"}` → labels, and what follows the closing brace.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').ok_or("expected '{'")?;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = rest.find('=').ok_or("label without '='")?;
        let name = &rest[..eq];
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, '\n')) => return Err("raw newline in a label value".into()),
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} repeated"));
        }
        rest = &rest[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
        if !rest.starts_with('}')
            && !rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        {
            return Err(format!("unexpected {rest:?} after a label"));
        }
    }
}

/// The family a sample belongs to: histogram samples carry a suffix.
fn family_of<'a>(name: &'a str, types: &BTreeMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types
                .get(base)
                .is_some_and(|t| t == "histogram" || t == "summary")
            {
                return base;
            }
        }
    }
    name
}

fn parse(text: &str) -> Result<Exposition, String> {
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the exposition must end with a newline".into());
    }
    let mut exp = Exposition::default();
    let mut helps = BTreeSet::new();
    let mut finished: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut series = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        let mut enter = |family: &str, current: &mut Option<String>| -> Result<(), String> {
            if current.as_deref() != Some(family) {
                if finished.contains(family) {
                    return Err(format!("family {family} interleaved with another"));
                }
                if let Some(prev) = current.take() {
                    finished.insert(prev);
                }
                *current = Some(family.to_string());
            }
            Ok(())
        };
        if let Some(comment) = line.strip_prefix('#') {
            let mut parts = comment.trim_start().splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("HELP"), Some(name), help) => {
                    if !is_metric_name(name) {
                        return Err(at(format!("bad metric name {name:?}")));
                    }
                    if help.is_none_or(|h| h.trim().is_empty()) {
                        return Err(at("empty HELP".into()));
                    }
                    if !helps.insert(name.to_string()) {
                        return Err(at(format!("second HELP for {name}")));
                    }
                    enter(name, &mut current).map_err(at)?;
                }
                (Some("TYPE"), Some(name), Some(kind)) => {
                    if !is_metric_name(name) {
                        return Err(at(format!("bad metric name {name:?}")));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at(format!("unknown type {kind:?}")));
                    }
                    if exp
                        .types
                        .insert(name.to_string(), kind.to_string())
                        .is_some()
                    {
                        return Err(at(format!("second TYPE for {name}")));
                    }
                    if exp
                        .samples
                        .iter()
                        .any(|s| family_of(&s.name, &exp.types) == name)
                    {
                        return Err(at(format!("TYPE for {name} after its samples")));
                    }
                    enter(name, &mut current).map_err(at)?;
                }
                (Some("TYPE"), ..) => return Err(at("TYPE without a type".into())),
                _ => {} // any other comment
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| at("sample without a value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(at(format!("bad metric name {name:?}")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before the value".into()))?;
        let mut fields = rest.split(' ');
        let value = parse_value(fields.next().unwrap_or("")).map_err(at)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|e| at(format!("bad timestamp: {e}")))?;
        }
        if fields.next().is_some() {
            return Err(at("trailing fields".into()));
        }
        let family = family_of(name, &exp.types).to_string();
        enter(&family, &mut current).map_err(at)?;
        if exp.types.get(&family).is_some_and(|t| t == "counter") && (value.is_nan() || value < 0.0)
        {
            return Err(at("negative or NaN counter".into()));
        }
        if !series.insert((
            name.to_string(),
            labels.clone().into_iter().collect::<Vec<_>>(),
        )) {
            return Err(at("duplicate series".into()));
        }
        exp.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    check_histograms(&exp)?;
    Ok(exp)
}

/// Labels other than `le`, in order: identifies one series of a histogram.
type LabelSet = Vec<(String, String)>;

/// Each histogram: per label set (le aside), buckets in increasing `le`, non-decreasing counts,
/// a `+Inf` bucket equal to `_count`, and a `_sum`.
fn check_histograms(exp: &Exposition) -> Result<(), String> {
    for (family, kind) in &exp.types {
        if kind != "histogram" {
            continue;
        }
        let mut groups: BTreeMap<LabelSet, Vec<(f64, f64)>> = BTreeMap::new();
        for s in exp
            .samples
            .iter()
            .filter(|s| s.name == format!("{family}_bucket"))
        {
            let le = s
                .labels
                .get("le")
                .ok_or_else(|| format!("{family}: bucket without le"))?;
            let mut rest = s.labels.clone();
            rest.remove("le");
            groups
                .entry(rest.into_iter().collect())
                .or_default()
                .push((parse_value(le)?, s.value));
        }
        if groups.is_empty() {
            return Err(format!("histogram {family} has no buckets"));
        }
        for (labels, buckets) in groups {
            if !buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
            {
                return Err(format!(
                    "{family}{labels:?}: buckets not cumulative: {buckets:?}"
                ));
            }
            let (le, inf) = *buckets.last().unwrap();
            if le != f64::INFINITY {
                return Err(format!("{family}{labels:?}: no +Inf bucket"));
            }
            let find = |suffix: &str| {
                exp.samples
                    .iter()
                    .find(|s| {
                        s.name == format!("{family}{suffix}")
                            && s.labels.clone().into_iter().collect::<Vec<_>>() == labels
                    })
                    .map(|s| s.value)
            };
            if find("_count") != Some(inf) {
                return Err(format!(
                    "{family}{labels:?}: _count differs from the +Inf bucket"
                ));
            }
            if find("_sum").is_none() {
                return Err(format!("{family}{labels:?}: no _sum"));
            }
        }
    }
    Ok(())
}

/// The parser refuses each kind of malformed exposition (so passing it means something).
#[test]
fn the_parser_is_strict() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total 3\n\
                # HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1.5\nh_count 2\n\
                # HELP g G.\n# TYPE g gauge\ng{x=\"a\\\"b\\\\c\\nd\"} -1.5e3 1700000000000\n";
    let exp = parse(good).unwrap();
    assert_eq!(exp.value("a_total"), 3.0);
    assert_eq!(exp.get("g", &[("x", "a\"b\\c\nd")]), Some(-1500.0));
    let bad = [
        ("a 1", "no final newline"),
        ("1a 1\n", "metric name starting with a digit"),
        ("a-b 1\n", "dash in a name"),
        ("a{1x=\"v\"} 1\n", "bad label name"),
        ("a{x=v} 1\n", "unquoted label value"),
        ("a{x=\"v} 1\n", "unterminated label value"),
        ("a{x=\"\\t\"} 1\n", "bad escape"),
        ("a{x=\"1\",x=\"2\"} 1\n", "repeated label"),
        ("a one\n", "bad value"),
        ("a 1 2 3\n", "trailing fields"),
        ("a  1\n", "double space"),
        ("a\n", "no value"),
        ("a 1\na 2\n", "duplicate series"),
        ("# TYPE a counter\na -1\n", "negative counter"),
        ("# TYPE a gauge\n# TYPE a gauge\na 1\n", "second TYPE"),
        ("a 1\n# TYPE a gauge\n", "TYPE after samples"),
        ("# TYPE a flavour\na 1\n", "unknown type"),
        ("# HELP a\na 1\n", "empty HELP"),
        ("a 1\nb 1\na{x=\"y\"} 1\n", "interleaved families"),
        ("# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 0\nh_count 1\n", "decreasing buckets"),
        ("# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_sum 0\nh_count 2\n", "no +Inf bucket"),
        ("# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0\nh_count 3\n", "count differs"),
        ("# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 2\n", "no sum"),
    ];
    for (text, why) in bad {
        assert!(parse(text).is_err(), "accepted ({why}): {text:?}");
    }
}

/// A node's `render_metrics` parses, and its counters, histograms and gauges move with writes;
/// the primary reports each secondary's commit lag.
#[tokio::test(start_paused = true)]
async fn node_metrics_parse_and_move_with_writes() {
    let cluster = Cluster::start(3).await;
    cluster.wait_in_sync(3).await;
    let primary = cluster.node(&NodeId::new("r0")).unwrap();
    let secondary = cluster.node(&NodeId::new("r1")).unwrap();

    // Phase: before.
    let before = parse(&primary.render_metrics().await.unwrap()).unwrap();
    assert_eq!(
        before.get("replica_role", &[("role", "primary")]),
        Some(1.0)
    );
    assert_eq!(
        before.get("replica_role", &[("role", "secondary")]),
        Some(0.0)
    );
    assert_eq!(before.types["replica_writes_committed_total"], "counter");
    assert_eq!(before.types["replica_replication_seconds"], "histogram");
    assert_eq!(before.value("replica_in_sync_replicas"), 3.0);
    for follower in ["r1", "r2"] {
        assert!(
            before
                .get("replica_follower_commit_lag", &[("follower", follower)])
                .is_some(),
            "no lag for {follower}"
        );
    }

    // Phase: 20 writes through a client.
    let client = cluster.client("fe");
    for i in 0..20 {
        let _: Option<String> = client
            .write(&KvCommand::Put {
                key: format!("k{i}"),
                value: "v".into(),
            })
            .await
            .unwrap();
    }
    cluster.wait_in_sync(3).await;

    // Phase: after.
    let after = parse(&primary.render_metrics().await.unwrap()).unwrap();
    let moved = |name: &str| after.value(name) - before.value(name);
    assert_eq!(moved("replica_writes_committed_total"), 20.0);
    assert_eq!(moved("replica_writes_refused_total"), 0.0);
    assert!(moved("replica_commit_index") >= 20.0);
    assert!(moved("replica_applied_index") >= 20.0);
    assert!(moved("replica_append_batch_entries_count") >= 1.0);
    assert!(
        moved("replica_append_batch_entries_sum") >= 40.0,
        "20 entries to each of 2 secondaries"
    );
    assert!(moved("replica_replication_seconds_count") >= 1.0);
    assert!(moved("replica_store_ops_per_sync_count") >= 1.0);
    assert!(after.value("replica_lamport") > before.value("replica_lamport"));

    // A secondary renders valid metrics too, as a secondary, with no follower lags.
    let sec = parse(&secondary.render_metrics().await.unwrap()).unwrap();
    assert_eq!(sec.get("replica_role", &[("role", "secondary")]), Some(1.0));
    assert_eq!(sec.value("replica_writes_committed_total"), 0.0);
    assert!(sec.value("replica_applied_index") >= after.value("replica_commit_index") - 1.0);
    assert!(!sec
        .samples
        .iter()
        .any(|s| s.name == "replica_follower_commit_lag"));
    assert!(sec.value("replica_store_ops_per_sync_count") >= 1.0);

    // Phase: the front end's counters parse and count the same writes.
    let fe = parse(&render_client(client.stats())).unwrap();
    assert_eq!(fe.value("frontend_writes_total"), 20.0);
    assert_eq!(fe.value("frontend_held_writes"), 0.0);
    assert_eq!(fe.types["frontend_writes_total"], "counter");
}
