//! The chart's dashboards and alerts reference only metrics that something produces:
//!
//! - the operator's own families (read from `tusk_runtime::Metrics`, the registry it serves);
//! - the exporter's custom queries (`<query>_<column>`, from the file the Cluster controller
//!   mounts);
//! - the postgres_exporter built-ins listed in [`EXPORTER_BUILTINS`] (v0.17 collectors that
//!   are on by default);
//! - kubelet's volume stats;
//! - the Pooler pods' PgBouncer metrics (`tusk_pooler_controller::exporter::metric_names`,
//!   what `tusk-operator pgbouncer-exporter` renders).
//!
//! No cluster is needed: this runs in `cargo test --workspace`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;
use tusk_e2e::promql::metric_names;

/// postgres_exporter v0.17 built-ins the assets use, each from a default-on collector:
/// `pg_up` (the exporter itself) and `pg_stat_database_*` (collector `stat_database`,
/// labels `datid`, `datname`).
const EXPORTER_BUILTINS: &[&str] = &[
    "pg_up",
    "pg_stat_database_xact_commit",
    "pg_stat_database_xact_rollback",
    "pg_stat_database_blks_hit",
    "pg_stat_database_blks_read",
];

/// kubelet's volume stats (scraped from the kubelet by every usual Prometheus setup).
const KUBELET: &[&str] = &[
    "kubelet_volume_stats_available_bytes",
    "kubelet_volume_stats_capacity_bytes",
    "kubelet_volume_stats_used_bytes",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A stand-in controller error, to record an error the way every controller does.
#[derive(Debug)]
struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("refused")
    }
}

impl std::error::Error for Refused {}

impl tusk_runtime::ReconcileError for Refused {
    fn reason(&self) -> &'static str {
        "Refused"
    }
    fn is_permanent(&self) -> bool {
        true
    }
}

/// Metric names the operator's registry serves once a controller has reconciled, failed and
/// timed a reconcile (through the runtime's own calls), expanded as Prometheus stores them.
async fn operator_metrics() -> BTreeSet<String> {
    let metrics = tusk_runtime::Metrics::new();
    // A client that is never called: the calls below only record metrics.
    tusk_e2e::env::install_crypto_provider();
    let client =
        kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
    let ctx = tusk_runtime::Context::new(
        client,
        tusk_runtime::ControllerKind::Cluster,
        std::sync::Arc::new(tusk_runtime::OperatorConfig::default()),
        &metrics,
    );
    let cluster = tusk_e2e::manifests::cluster(
        "db",
        "e2e",
        &tusk_e2e::manifests::ClusterOptions::small(17, 1),
    )
    .unwrap();
    drop(ctx.metrics.reconcile_timer());
    let _ = ctx.requeue(&cluster);
    let _ = tusk_runtime::error_policy(&cluster, &Refused, &ctx);
    metrics.set_leader(true);

    let text = metrics.encode();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_owned());
            }
        }
    }
    // Every family appears as a sample line too (OpenMetrics text), under the stored name.
    for name in &names {
        assert!(
            text.lines().any(|l| l.starts_with(name.as_str())),
            "{name} has no sample in\n{text}"
        );
    }
    names
}

async fn known_metrics() -> BTreeSet<String> {
    let mut known = operator_metrics().await;
    known.extend(
        tusk_cluster_controller::plan::monitoring::produced_metrics(
            tusk_cluster_controller::plan::monitoring::TUSK_QUERIES,
        )
        .unwrap(),
    );
    known.extend(EXPORTER_BUILTINS.iter().map(|s| (*s).to_owned()));
    known.extend(KUBELET.iter().map(|s| (*s).to_owned()));
    known.extend(
        tusk_pooler_controller::exporter::metric_names()
            .into_iter()
            .map(str::to_owned),
    );
    known
}

/// Every PromQL expression of a dashboard: panel targets and template variable queries
/// (`label_values(<selector>, <label>)` reads the selector).
fn dashboard_expressions(dashboard: &Json) -> Vec<String> {
    let mut exprs = Vec::new();
    let mut panels: Vec<&Json> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = panels.pop() {
        // A row has no query; a collapsed one holds its panels.
        if panel["type"] == "row" {
            panels.extend(panel["panels"].as_array().into_iter().flatten());
            continue;
        }
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if var["type"] == "query" {
            let query = var["query"]["query"].as_str().unwrap();
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .and_then(|q| q.rsplit_once(','))
                .map(|(selector, _label)| selector)
                .unwrap_or_else(|| panic!("unexpected variable query {query}"));
            exprs.push(inner.to_owned());
        }
    }
    exprs
}

/// The value at a dotted path of values.yaml.
fn value_at<'a>(values: &'a Yaml, path: &str) -> &'a Yaml {
    path.split('.').fold(values, |v, key| {
        v.get(key)
            .unwrap_or_else(|| panic!(".Values.{path} is not in charts/tusk/values.yaml"))
    })
}

fn scalar(value: &Yaml) -> String {
    match value {
        Yaml::Number(n) => n.to_string(),
        Yaml::String(s) => s.clone(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// Renders the Go-template actions files/prometheus-rules.yaml uses — raw strings
/// ``{{`...`}}``, `{{ .Values.x }}` and `{{ mul .Values.x N }}` — with the chart's defaults.
/// Anything else is refused, so the file cannot grow a construct this check does not see.
fn render_rules(template: &str, values: &Yaml) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        if let Some(raw) = after.strip_prefix('`') {
            let end = raw.find("`}}").expect("unterminated raw string");
            out.push_str(&raw[..end]);
            rest = &raw[end + 3..];
            continue;
        }
        let end = after.find("}}").expect("unterminated action");
        let action: Vec<&str> = after[..end].split_whitespace().collect();
        let values_path = |arg: &str| {
            arg.strip_prefix(".Values.")
                .unwrap_or_else(|| panic!("unexpected argument {arg}"))
                .to_owned()
        };
        let rendered = match action.as_slice() {
            [path] => scalar(value_at(values, &values_path(path))),
            ["mul", path, factor] => {
                let v = value_at(values, &values_path(path)).as_f64().unwrap();
                let f: f64 = factor.parse().unwrap();
                format!("{}", (v * f) as i64)
            }
            other => panic!("files/prometheus-rules.yaml: unsupported template action {other:?}"),
        };
        out.push_str(&rendered);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

fn rules() -> Vec<Yaml> {
    let values: Yaml = serde_yaml_ng::from_str(&read("charts/tusk/values.yaml")).unwrap();
    let rendered = render_rules(&read("charts/tusk/files/prometheus-rules.yaml"), &values);
    let parsed: Yaml = serde_yaml_ng::from_str(&rendered)
        .unwrap_or_else(|e| panic!("rendered rules are not YAML: {e}\n{rendered}"));
    parsed["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().clone())
        .collect()
}

fn check(source: &str, expr: &str, known: &BTreeSet<String>, unknown: &mut Vec<String>) {
    let names = metric_names(expr);
    assert!(!names.is_empty(), "{source}: no metric in {expr}");
    for name in names {
        if !known.contains(&name) {
            unknown.push(format!("{source}: {name}"));
        }
    }
}

#[tokio::test]
async fn operator_families_are_the_documented_ones() {
    let ops = operator_metrics().await;
    for name in [
        "tusk_reconcile_total",
        "tusk_reconcile_errors_total",
        "tusk_reconcile_duration_seconds_bucket",
        "tusk_managed_objects",
        "tusk_leader",
    ] {
        assert!(ops.contains(name), "{name} in {ops:?}");
    }
}

#[tokio::test]
async fn dashboards_reference_only_produced_metrics() {
    let known = known_metrics().await;
    let mut unknown = Vec::new();
    let mut seen = 0;
    for entry in std::fs::read_dir(repo().join("charts/tusk/files/dashboards")).unwrap() {
        let path = entry.unwrap().path();
        let dashboard: Json = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            dashboard["uid"]
                .as_str()
                .is_some_and(|u| u.starts_with("tusk-"))
        );
        for expr in dashboard_expressions(&dashboard) {
            check(&path.display().to_string(), &expr, &known, &mut unknown);
        }
        seen += 1;
    }
    assert_eq!(seen, 2, "a dashboard for clusters and one for the operator");
    assert!(
        unknown.is_empty(),
        "metrics nothing produces:\n{}",
        unknown.join("\n")
    );
}

#[tokio::test]
async fn alerts_reference_only_produced_metrics_and_say_what_to_do() {
    let known = known_metrics().await;
    let mut unknown = Vec::new();
    let mut alerts = BTreeMap::new();
    for rule in rules() {
        let name = rule["alert"].as_str().unwrap().to_owned();
        let expr = rule["expr"].as_str().unwrap();
        check(&name, expr, &known, &mut unknown);
        assert!(rule["for"].as_str().is_some(), "{name}: no `for`");
        assert!(
            matches!(
                rule["labels"]["severity"].as_str(),
                Some("critical" | "warning")
            ),
            "{name}: severity"
        );
        for annotation in ["summary", "description"] {
            assert!(
                rule["annotations"][annotation]
                    .as_str()
                    .is_some_and(|s| s.len() > 20),
                "{name}: {annotation}"
            );
        }
        alerts.insert(name, expr.to_owned());
    }
    assert!(
        unknown.is_empty(),
        "metrics nothing produces:\n{}",
        unknown.join("\n")
    );
    for required in [
        "TuskPrimaryUnavailable",
        "TuskReplicationLagHigh",
        "TuskWalArchivingFailing",
        "TuskBackupTooOld",
        "TuskStorageNearlyFull",
        "TuskOperatorReconcileErrors",
    ] {
        assert!(alerts.contains_key(required), "missing alert {required}");
    }
    // Thresholds come from values.yaml: the default backup age is 26 hours.
    assert!(
        alerts["TuskBackupTooOld"].contains("> 93600"),
        "{}",
        alerts["TuskBackupTooOld"]
    );
}

#[test]
fn the_pod_monitor_adds_the_cluster_label_the_assets_group_by() {
    let pod_monitor = read("charts/tusk/templates/podmonitor.yaml");
    assert!(pod_monitor.contains("__meta_kubernetes_pod_label_tusk_dev_cluster"));
    assert!(pod_monitor.contains("targetLabel: cluster"));
    assert!(pod_monitor.contains(&format!(
        "app.kubernetes.io/managed-by: {}",
        tusk_api::labels::MANAGER
    )));
}

#[test]
fn the_rules_renderer_refuses_what_it_does_not_understand() {
    let values: Yaml = serde_yaml_ng::from_str("a: {b: 2}").unwrap();
    assert_eq!(
        render_rules(
            "x {{ .Values.a.b }} {{ mul .Values.a.b 3600 }} {{`{{ $labels.pod }}`}}",
            &values
        ),
        "x 2 7200 {{ $labels.pod }}"
    );
    let refused = std::panic::catch_unwind(|| render_rules("{{ include \"x\" . }}", &values));
    assert!(refused.is_err());
}
