//! The Grafana dashboard and the Prometheus scrape config in `deploy/` use exactly the
//! metric names the exporter produces.

use levee_control::metrics::METRIC_NAMES;

fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr" | "query", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => exprs(x, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| exprs(x, out)),
        _ => {}
    }
}

/// The `levee_…` identifiers of a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("levee_") {
        let start = i + at;
        let word_start = start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        if word_start {
            names.push(expr[start..end].to_owned());
        }
        i = end;
    }
    names
}

#[test]
fn every_metric_the_dashboard_uses_is_exported() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/grafana/levee.json");
    let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut all = Vec::new();
    exprs(&dash, &mut all);
    assert!(all.len() > 20, "the dashboard has its queries: {all:?}");
    let mut used = std::collections::BTreeSet::new();
    for e in &all {
        for n in metric_names(e) {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s).filter(|b| METRIC_NAMES.contains(b)))
                .unwrap_or(&n)
                .to_owned();
            assert!(
                METRIC_NAMES.contains(&base.as_str()),
                "{n} (in {e:?}) is not exported"
            );
            used.insert(base);
        }
    }
    // The dashboard shows every family the exporter has.
    for n in METRIC_NAMES {
        assert!(used.contains(*n), "{n} is exported but not on the dashboard");
    }
}

#[test]
fn the_scrape_config_targets_the_default_metrics_address() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/prometheus.yml");
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains("metrics_path: /metrics"), "{text}");
    assert!(
        text.contains(levee_control::config::DEFAULT_METRICS_ADDRESS),
        "{text}"
    );
}
