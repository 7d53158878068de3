//! Every CEL rule compiles, uses only the variables a CRD rule may use, and stays within the
//! API server's cost budget (kube-cel's estimate), and every list or string a rule walks is
//! bounded.

#![allow(clippy::unwrap_used)]

mod support;

use kube_cel::{CompiledSchema, ScopeContext, WarningKind};
use serde_json::Value;

/// Names bound by CEL's macros in `rule`: `x` in `list.all(x, ...)`, `k, v` in
/// `map.all(k, v, ...)`.
fn comprehension_variables(rule: &str) -> Vec<String> {
    let macro_call = regex::Regex::new(
        r"\.(all|exists|exists_one|map|filter|transformList|transformMap)\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,)?",
    )
    .unwrap();
    let mut names = Vec::new();
    for captures in macro_call.captures_iter(rule) {
        names.extend(captures.get(2).map(|name| name.as_str().to_owned()));
        names.extend(captures.get(4).map(|name| name.as_str().to_owned()));
    }
    names
}

/// Visits the compiled tree and the JSON schema together, node by node.
fn visit(
    compiled: &CompiledSchema,
    schema: &Value,
    path: &str,
    out: &mut Vec<String>,
    rules_seen: &mut usize,
) {
    for error in compiled.compilation_errors() {
        out.push(format!("{path}: {error}"));
    }
    if let Some(rules) = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        for rule in rules
            .iter()
            .filter_map(|rule| rule.get("rule").and_then(Value::as_str))
        {
            *rules_seen += 1;
            let bound = comprehension_variables(rule);
            for warning in kube_cel::check_rule_scope(rule, ScopeContext::CrdValidation) {
                // kube-cel 0.8 counts the variables a macro binds (`all(r, ...)`) as free.
                let names_bound_variable = bound
                    .iter()
                    .any(|name| warning.message.contains(&format!("variable '{name}' ")));
                if !names_bound_variable {
                    out.push(format!("{path}: {rule}: {}", warning.message));
                }
            }
            for warning in kube_cel::estimate_rule_cost(rule, compiled) {
                if matches!(
                    warning.kind,
                    WarningKind::CostExceeded | WarningKind::MissingBounds
                ) {
                    out.push(format!("{path}: {rule}: {}", warning.message));
                }
            }
        }
    }
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, child) in properties {
            let child_compiled = compiled
                .properties
                .get(name)
                .unwrap_or_else(|| panic!("{path}.{name} missing from the compiled schema"));
            let child_path = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            visit(child_compiled, child, &child_path, out, rules_seen);
        }
    }
    if let (Some(items), Some(compiled_items)) = (schema.get("items"), compiled.items.as_deref()) {
        visit(compiled_items, items, &format!("{path}[]"), out, rules_seen);
    }
    if let (Some(values), Some(compiled_values)) = (
        schema.get("additionalProperties"),
        compiled.additional_properties.as_deref(),
    ) {
        visit(
            compiled_values,
            values,
            &format!("{path}.<key>"),
            out,
            rules_seen,
        );
    }
}

#[test]
fn every_cel_rule_compiles_in_scope_and_within_cost() {
    let mut problems = Vec::new();
    for kind in support::kinds() {
        let compiled = kube_cel::compile_schema(&kind.schema);
        let mut rules = 0;
        let mut kind_problems = Vec::new();
        visit(&compiled, &kind.schema, "", &mut kind_problems, &mut rules);
        println!("{}: {rules} CEL rules", kind.kind);
        problems.extend(
            kind_problems
                .into_iter()
                .map(|problem| format!("{} {problem}", kind.kind)),
        );
    }
    assert!(
        problems.is_empty(),
        "{} CEL rule problems:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

/// The API server refuses a CRD whose transition rule (one using `oldSelf`) sits where it
/// cannot pair the old and new value: below a list that is not `x-kubernetes-list-type: map`.
#[test]
fn every_transition_rule_sits_where_old_and_new_values_correlate() {
    fn visit(schema: &Value, path: &str, correlatable: bool, out: &mut Vec<String>) {
        let rules = schema
            .get("x-kubernetes-validations")
            .and_then(Value::as_array);
        for rule in rules.into_iter().flatten() {
            let text = rule.get("rule").and_then(Value::as_str).unwrap_or("");
            if text.contains("oldSelf") && !correlatable {
                out.push(format!(
                    "{path}: {text} is below a list without list-type map"
                ));
            }
        }
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            for (name, child) in properties {
                let child_path = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                visit(child, &child_path, correlatable, out);
            }
        }
        if let Some(items) = schema.get("items") {
            let keyed = schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map");
            visit(items, &format!("{path}[]"), correlatable && keyed, out);
        }
        if let Some(values) = schema
            .get("additionalProperties")
            .filter(|values| values.is_object())
        {
            visit(values, &format!("{path}.<key>"), correlatable, out);
        }
    }
    let mut problems = Vec::new();
    for kind in support::kinds() {
        let mut kind_problems = Vec::new();
        visit(&kind.schema, "", true, &mut kind_problems);
        problems.extend(
            kind_problems
                .into_iter()
                .map(|problem| format!("{} {problem}", kind.kind)),
        );
    }
    assert!(
        problems.is_empty(),
        "uncorrelatable transition rules:\n  {}",
        problems.join("\n  ")
    );
}
