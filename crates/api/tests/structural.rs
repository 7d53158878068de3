//! Every CRD schema is one the API server accepts (a *structural* schema) and bounds every
//! string, list and map tusk defines, so CEL cost estimates stay finite and no object can
//! grow without limit.
//!
//! Rules from "Specifying a structural schema" in the Kubernetes CRD documentation and
//! `apiextensions-apiserver`'s `ValidateCustomResourceDefinition`.

mod support;

use serde_json::Value;
use support::walk::{self, Node};

/// Subtrees holding Kubernetes' own types, embedded unchanged. Their schemas come from
/// k8s-openapi and carry no length bounds (upstream leaves them to the built-in validation of
/// the objects they end up in, e.g. the StatefulSet tusk renders), so bounding them here
/// would mean forking the types. The list around them (`tolerations`, `conditions`, …) is
/// tusk's own field and is still bounded: only the items are exempt.
///
/// `(kind, path, type, why)`; kind `*` means every kind.
const EMBEDDED_KUBERNETES_TYPES: &[(&str, &str, &str)] = &[
    ("Cluster", "spec.resources", "core/v1 ResourceRequirements"),
    ("Pooler", "spec.resources", "core/v1 ResourceRequirements"),
    (
        "Cluster",
        "spec.backup.jobResources",
        "core/v1 ResourceRequirements",
    ),
    (
        "Cluster",
        "spec.bindingPolicy.namespaceSelector",
        "meta/v1 LabelSelector",
    ),
    ("Cluster", "spec.scheduling.affinity", "core/v1 Affinity"),
    (
        "Cluster",
        "spec.scheduling.tolerations[]",
        "core/v1 Toleration",
    ),
    (
        "Cluster",
        "spec.scheduling.topologySpreadConstraints[]",
        "core/v1 TopologySpreadConstraint",
    ),
    (
        "Cluster",
        "spec.imagePullSecrets[]",
        "core/v1 LocalObjectReference",
    ),
];

fn embedded_paths(kind: &str) -> Vec<&'static str> {
    EMBEDDED_KUBERNETES_TYPES
        .iter()
        .filter(|(for_kind, _, _)| *for_kind == "*" || *for_kind == kind)
        .map(|(_, path, _)| *path)
        .collect()
}

/// Fails with every problem of every kind, each with its path, rather than the first.
fn assert_no_problems(what: &str, problems: Vec<String>) {
    if !problems.is_empty() {
        panic!("{} {what}:\n  {}", problems.len(), problems.join("\n  "));
    }
}

#[test]
fn every_crd_schema_is_structural() {
    let mut problems = Vec::new();
    for kind in support::kinds() {
        for node in walk::nodes(&kind.schema) {
            for problem in structural_problems(&node) {
                problems.push(format!("{} {}: {problem}", kind.kind, node.shown()));
            }
        }
        problems.extend(
            metadata_problems(&kind.schema)
                .into_iter()
                .map(|problem| format!("{} metadata: {problem}", kind.kind)),
        );
    }
    assert_no_problems("structural-schema violations", problems);
}

fn structural_problems(node: &Node<'_>) -> Vec<String> {
    let schema = node.schema;
    let mut problems = Vec::new();
    let has = |key: &str| schema.get(key).is_some();
    let flag = |key: &str| schema.get(key).and_then(Value::as_bool) == Some(true);

    if has("$ref") {
        problems.push("uses $ref: structural schemas must be fully inlined".to_owned());
    }
    if has("definitions") || has("$defs") {
        problems.push("carries definitions: structural schemas must be fully inlined".to_owned());
    }

    if node.in_junctor {
        for key in [
            "type",
            "description",
            "default",
            "nullable",
            "title",
            "additionalProperties",
            "x-kubernetes-preserve-unknown-fields",
            "x-kubernetes-int-or-string",
            "x-kubernetes-embedded-resource",
            "x-kubernetes-list-type",
            "x-kubernetes-list-map-keys",
            "x-kubernetes-map-type",
            "x-kubernetes-validations",
        ] {
            if has(key) {
                problems.push(format!(
                    "`{key}` inside allOf/anyOf/oneOf/not: only value validations are allowed there"
                ));
            }
        }
        return problems;
    }

    let int_or_string = flag("x-kubernetes-int-or-string");
    if int_or_string && has("type") {
        problems.push("x-kubernetes-int-or-string together with a `type`".to_owned());
    }
    if !has("type") && !int_or_string && !flag("x-kubernetes-preserve-unknown-fields") {
        problems.push(
            "no `type` (only int-or-string and preserve-unknown-fields nodes may omit it)"
                .to_owned(),
        );
    }
    if has("properties") && has("additionalProperties") {
        problems.push("`properties` and `additionalProperties` together".to_owned());
    }
    if flag("uniqueItems") {
        problems
            .push("uniqueItems: true is not allowed; use x-kubernetes-list-type: set".to_owned());
    }
    if let Some(type_) = schema.get("type").and_then(Value::as_str) {
        let object_only = [
            "properties",
            "additionalProperties",
            "required",
            "maxProperties",
            "minProperties",
        ];
        if type_ != "object" {
            for key in object_only.iter().filter(|key| has(key)) {
                problems.push(format!("`{key}` on a node of type {type_}"));
            }
        }
        if type_ == "array" && !has("items") {
            problems.push("an array without `items`".to_owned());
        }
    }

    let list_type = schema.get("x-kubernetes-list-type").and_then(Value::as_str);
    let map_keys: Vec<&str> = schema
        .get("x-kubernetes-list-map-keys")
        .and_then(Value::as_array)
        .map(|keys| keys.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match list_type {
        Some("map") => {
            let items = schema.get("items").unwrap_or(&Value::Null);
            if items.get("type").and_then(Value::as_str) != Some("object") {
                problems.push("x-kubernetes-list-type: map needs object items".to_owned());
            }
            if map_keys.is_empty() {
                problems.push(
                    "x-kubernetes-list-type: map without x-kubernetes-list-map-keys".to_owned(),
                );
            }
            let required = support::openapi::required_names(items);
            for key in &map_keys {
                let key_schema = items.pointer(&format!("/properties/{key}"));
                match key_schema {
                    None => problems.push(format!(
                        "list map key `{key}` is not a property of the items"
                    )),
                    // The API server also accepts a key with a default; tusk's keys are required.
                    Some(_) if !required.contains(*key) => {
                        problems.push(format!("list map key `{key}` is not required in the items"));
                    }
                    Some(key_schema)
                        if !matches!(
                            key_schema.get("type").and_then(Value::as_str),
                            Some("string" | "integer" | "boolean")
                        ) =>
                    {
                        problems.push(format!("list map key `{key}` is not a scalar"));
                    }
                    Some(_) => {}
                }
            }
        }
        Some("set") => {
            let item_type = schema.pointer("/items/type").and_then(Value::as_str);
            if !matches!(item_type, Some("string" | "integer" | "number" | "boolean")) {
                problems.push("x-kubernetes-list-type: set needs scalar items".to_owned());
            }
        }
        Some("atomic") | None => {
            if !map_keys.is_empty() {
                problems.push(
                    "x-kubernetes-list-map-keys without x-kubernetes-list-type: map".to_owned(),
                );
            }
        }
        Some(other) => problems.push(format!("unknown x-kubernetes-list-type {other:?}")),
    }
    if list_type.is_some() && schema.get("type").and_then(Value::as_str) != Some("array") {
        problems.push("x-kubernetes-list-type on a node that is not an array".to_owned());
    }

    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        if let Err(error) = regex::Regex::new(pattern) {
            problems.push(format!("pattern {pattern:?} does not compile: {error}"));
        }
        // Go's RE2 (the API server) reads these classes as ASCII, Rust's regex as Unicode.
        for class in [r"\d", r"\D", r"\w", r"\W", r"\s", r"\S", r"\b", r"\B"] {
            if pattern.contains(class) {
                problems.push(format!(
                    "pattern {pattern:?} uses {class}, which means ASCII to the API server but Unicode to \
                     Rust; spell the class out (e.g. [0-9])"
                ));
            }
        }
    }

    if let Some(rules) = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        for rule in rules {
            if rule
                .get("rule")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                problems.push("an x-kubernetes-validations entry without a rule".to_owned());
            }
            if rule.get("message").is_none() && rule.get("messageExpression").is_none() {
                problems.push(format!(
                    "CEL rule {} has no message: the user would see the bare expression",
                    rule.get("rule").unwrap_or(&Value::Null)
                ));
            }
        }
    }

    problems
}

/// Fields `kubectl explain` would show without a word. List items and map values are
/// described by their list or map; embedded Kubernetes types bring their own text.
#[test]
fn every_field_of_tusk_has_a_description() {
    let mut problems = Vec::new();
    for kind in support::kinds() {
        let embedded = embedded_paths(&kind.kind);
        for node in walk::nodes(&kind.schema) {
            let is_field = !node.path.is_empty()
                && !node.path.ends_with("[]")
                && !node.path.ends_with(".<key>");
            if !is_field || node.in_junctor || embedded.iter().any(|path| node.is_under(path)) {
                continue;
            }
            let description = node
                .schema
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("");
            if description.trim().is_empty() && node.path != "spec" && node.path != "status" {
                problems.push(format!("{} {}: no description", kind.kind, node.shown()));
            }
        }
    }
    assert_no_problems(
        "fields without a description (`kubectl explain` would show nothing)",
        problems,
    );
}

/// At the root, `metadata` may only constrain `name` and `generateName`.
fn metadata_problems(root: &Value) -> Vec<String> {
    let Some(metadata) = root.pointer("/properties/metadata") else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    if metadata.get("type").and_then(Value::as_str) != Some("object") {
        problems.push("must be of type object".to_owned());
    }
    for key in metadata
        .as_object()
        .into_iter()
        .flat_map(|object| object.keys())
    {
        if !matches!(key.as_str(), "type" | "properties") {
            problems.push(format!("may not specify `{key}`"));
        }
    }
    if let Some(properties) = metadata.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            if !matches!(name.as_str(), "name" | "generateName") {
                problems.push(format!(
                    "may only constrain name and generateName, not `{name}`"
                ));
            }
            for key in property
                .as_object()
                .into_iter()
                .flat_map(|object| object.keys())
            {
                if !matches!(key.as_str(), "type" | "pattern" | "maxLength") {
                    problems.push(format!(
                        "{name} may only have type, pattern and maxLength, not `{key}`"
                    ));
                }
            }
        }
    }
    problems
}

#[test]
fn every_string_list_and_map_of_tusk_is_bounded() {
    let mut problems = Vec::new();
    for kind in support::kinds() {
        let embedded = embedded_paths(&kind.kind);
        for node in walk::nodes(&kind.schema) {
            if node.in_junctor || embedded.iter().any(|path| node.is_under(path)) {
                continue;
            }
            let schema = node.schema;
            let has = |key: &str| schema.get(key).is_some();
            let problem = match schema.get("type").and_then(Value::as_str) {
                // A date-time is bounded by its format; everything else needs a length.
                Some("string")
                    if !has("maxLength")
                        && !has("enum")
                        && schema.get("format").and_then(Value::as_str) != Some("date-time") =>
                {
                    Some("a string without maxLength or enum")
                }
                Some("array") if !has("maxItems") => Some("a list without maxItems"),
                Some("object") if has("additionalProperties") && !has("maxProperties") => {
                    Some("a map without maxProperties")
                }
                _ => None,
            };
            if let Some(problem) = problem {
                problems.push(format!("{} {}: {problem}", kind.kind, node.shown()));
            }
        }
    }
    assert_no_problems(
        "unbounded fields (add a bound, or allow-list an embedded Kubernetes type)",
        problems,
    );
}

/// An allow-list entry that matches nothing would silently exempt whatever appears there
/// later: each must name a node that exists and really is the Kubernetes type it says.
#[test]
fn every_embedded_type_allow_list_entry_names_an_existing_node() {
    let kinds = support::kinds();
    let mut problems = Vec::new();
    for (kind, path, type_) in EMBEDDED_KUBERNETES_TYPES {
        for schema in kinds
            .iter()
            .filter(|schema| *kind == "*" || schema.kind == *kind)
        {
            let nodes = walk::nodes(&schema.schema);
            let Some(node) = nodes.iter().find(|node| node.path == *path) else {
                // `status.conditions` is common to every kind; a kind may not have it yet.
                if *kind != "*" {
                    problems.push(format!("{} {path} ({type_}): no such node", schema.kind));
                }
                continue;
            };
            if node.schema.get("type").and_then(Value::as_str) != Some("object") {
                problems.push(format!("{} {path} ({type_}): not an object", schema.kind));
            }
        }
    }
    assert_no_problems("stale allow-list entries", problems);
}
