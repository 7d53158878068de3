//! Every `default` in every schema is a value its own field accepts — checked by the OpenAPI
//! schema and by the CEL rules on that field, as the API server checks defaults when the CRD
//! is created.

mod support;

use support::walk;

#[test]
fn every_default_validates_against_its_own_schema() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for kind in support::kinds() {
        for node in walk::nodes(&kind.schema) {
            let Some(default) = node.schema.get("default") else {
                continue;
            };
            checked += 1;
            // A default is itself defaulted before it is checked (nested defaults fill in).
            let defaulted = support::defaults::apply(node.schema, default);
            for error in support::openapi::validate_value(node.schema, &defaulted, &node.path) {
                problems.push(format!(
                    "{} {} default {defaulted}: {}",
                    kind.kind,
                    node.shown(),
                    error.message
                ));
            }
            for rejection in support::cel_rejections(&kind, node.schema, &defaulted, None) {
                problems.push(format!(
                    "{} {} default {defaulted}: {rejection}",
                    kind.kind,
                    node.shown()
                ));
            }
        }
    }
    println!("checked {checked} defaults");
    assert!(
        problems.is_empty(),
        "{} invalid defaults:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}
