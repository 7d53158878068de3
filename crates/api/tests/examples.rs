//! Every YAML document in docs/examples/ is a tusk resource that deserialises into its Rust
//! type and that the API server would accept as is: zero schema errors and zero CEL
//! failures, after defaults are applied. The typed value, serialised again, is accepted too
//! (so serde and the schema agree on field names and optional fields).

mod support;

use std::collections::BTreeSet;

#[test]
fn every_example_deserialises_and_passes_schema_and_cel() {
    let kinds = support::kinds();
    let examples = support::examples();
    let mut problems = Vec::new();
    for example in &examples {
        let label = example.label();
        let Some(kind) = kinds.iter().find(|kind| kind.kind == example.kind()) else {
            problems.push(format!(
                "{label}: kind {:?} is not a tusk resource",
                example.kind()
            ));
            continue;
        };
        let api_version = example
            .value
            .get("apiVersion")
            .and_then(|value| value.as_str());
        if api_version != Some(kind.api_version().as_str()) {
            problems.push(format!(
                "{label}: apiVersion {api_version:?}, expected {}",
                kind.api_version()
            ));
        }
        if example
            .value
            .pointer("/metadata/name")
            .and_then(|value| value.as_str())
            .is_none()
        {
            problems.push(format!("{label}: no metadata.name"));
        }
        for rejection in support::admit(kind, &example.value, None) {
            problems.push(format!("{label}: {rejection}"));
        }
        match support::typed_round_trip(&example.value) {
            Err(error) => problems.push(format!(
                "{label}: does not deserialise into {}: {error}",
                kind.kind
            )),
            Ok(typed) => {
                for rejection in support::admit(kind, &typed, None) {
                    problems.push(format!(
                        "{label}: after a round trip through the Rust type: {rejection}"
                    ));
                }
            }
        }
        println!("{label}: {} ok", kind.kind);
    }
    assert!(
        problems.is_empty(),
        "{} problems in docs/examples:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

#[test]
fn every_kind_has_an_example() {
    let present: BTreeSet<String> = support::examples()
        .iter()
        .map(|example| example.kind().to_owned())
        .collect();
    let missing: Vec<String> = support::kinds()
        .into_iter()
        .map(|kind| kind.kind)
        .filter(|kind| !present.contains(kind))
        .collect();
    assert!(
        missing.is_empty(),
        "no example in docs/examples for: {}",
        missing.join(", ")
    );
}

#[test]
fn an_unknown_kind_is_refused() {
    let object = serde_json::json!({"apiVersion": "tusk.dev/v1alpha1", "kind": "Database", "metadata": {"name": "x"}});
    let error = support::typed_round_trip(&object).expect_err("Database is not a tusk kind");
    assert!(error.contains("unknown kind"), "{error}");
}
