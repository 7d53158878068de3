//! The test harness in `tests/support` is itself under test: each OpenAPI keyword it claims
//! to check refuses a bad value and accepts a good one, and defaulting behaves as the API
//! server's. Without this a validator that accepts everything would make the bad-input table
//! fail for the wrong reasons and the example test pass for the wrong reasons.

mod support;

use serde_json::{Value, json};
use support::openapi::{ErrorType, validate_value};

fn errors(schema: Value, value: Value) -> Vec<(ErrorType, String, String)> {
    validate_value(&schema, &value, "f")
        .into_iter()
        .map(|error| (error.error_type, error.path, error.message))
        .collect()
}

fn accepts(schema: Value, value: Value) {
    let found = errors(schema.clone(), value.clone());
    assert!(found.is_empty(), "{value} against {schema}: {found:?}");
}

fn refuses(schema: Value, value: Value, error_type: ErrorType, message: &str) {
    let found = errors(schema.clone(), value.clone());
    assert!(
        found
            .iter()
            .any(|(found_type, _, found_message)| *found_type == error_type
                && found_message.contains(message)),
        "{value} against {schema}: expected {error_type:?} with {message:?}, got {found:?}"
    );
}

#[test]
fn integer_refuses_fractions_and_strings_but_number_takes_fractions() {
    accepts(json!({"type": "integer"}), json!(3));
    refuses(
        json!({"type": "integer"}),
        json!(2.5),
        ErrorType::TypeInvalid,
        "must be of type integer",
    );
    refuses(
        json!({"type": "integer"}),
        json!("3"),
        ErrorType::TypeInvalid,
        "must be of type integer: \"string\"",
    );
    accepts(json!({"type": "number"}), json!(2.5));
    refuses(
        json!({"type": "boolean"}),
        json!("true"),
        ErrorType::TypeInvalid,
        "must be of type boolean",
    );
}

#[test]
fn null_is_refused_unless_nullable() {
    refuses(
        json!({"type": "string"}),
        Value::Null,
        ErrorType::TypeInvalid,
        "must be of type string: \"null\"",
    );
    accepts(json!({"type": "string", "nullable": true}), Value::Null);
}

#[test]
fn int_or_string_takes_both_and_nothing_else() {
    let schema = json!({"x-kubernetes-int-or-string": true});
    accepts(schema.clone(), json!(1));
    accepts(schema.clone(), json!("1Gi"));
    refuses(
        schema,
        json!(true),
        ErrorType::TypeInvalid,
        "must be of type integer or string",
    );
}

#[test]
fn numeric_bounds_hold_inclusive_and_exclusive() {
    let schema = json!({"type": "integer", "minimum": 1, "maximum": 9});
    accepts(schema.clone(), json!(1));
    accepts(schema.clone(), json!(9));
    refuses(
        schema.clone(),
        json!(0),
        ErrorType::Invalid,
        "should be greater than or equal to 1",
    );
    refuses(
        schema,
        json!(10),
        ErrorType::Invalid,
        "should be less than or equal to 9",
    );
    let exclusive = json!({"type": "integer", "minimum": 0, "exclusiveMinimum": true});
    refuses(
        exclusive,
        json!(0),
        ErrorType::Invalid,
        "should be greater than 0",
    );
}

#[test]
fn string_length_counts_characters_and_pattern_searches() {
    let schema = json!({"type": "string", "minLength": 1, "maxLength": 3, "pattern": "^[a-z]+$"});
    accepts(schema.clone(), json!("abc"));
    accepts(json!({"type": "string", "maxLength": 3}), json!("ééé"));
    refuses(
        schema.clone(),
        json!("abcd"),
        ErrorType::TooLong,
        "may not be more than 3",
    );
    refuses(
        schema.clone(),
        json!(""),
        ErrorType::Invalid,
        "should be at least 1 chars long",
    );
    refuses(
        schema,
        json!("AB"),
        ErrorType::Invalid,
        "should match '^[a-z]+$'",
    );
    // Unanchored, as Go's regexp.MatchString.
    accepts(json!({"type": "string", "pattern": "b"}), json!("abc"));
}

#[test]
fn enum_lists_the_supported_values() {
    let schema = json!({"type": "string", "enum": ["Full", "Differential"]});
    accepts(schema.clone(), json!("Full"));
    refuses(
        schema,
        json!("full"),
        ErrorType::NotSupported,
        "Unsupported value: \"full\": supported values: \"Full\", \"Differential\"",
    );
}

#[test]
fn lists_are_bounded_and_sets_and_maps_refuse_duplicates() {
    let schema =
        json!({"type": "array", "minItems": 1, "maxItems": 2, "items": {"type": "string"}});
    refuses(
        schema.clone(),
        json!(["a", "b", "c"]),
        ErrorType::TooMany,
        "must have at most 2 items",
    );
    refuses(
        schema,
        json!([]),
        ErrorType::Invalid,
        "should have at least 1 items",
    );
    let set =
        json!({"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}});
    accepts(set.clone(), json!(["a", "b"]));
    refuses(
        set,
        json!(["a", "a"]),
        ErrorType::Duplicate,
        "Duplicate value: \"a\"",
    );
    let map = json!({
        "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
        "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "n": {"type": "integer"}}},
    });
    accepts(
        map.clone(),
        json!([{"name": "a", "n": 1}, {"name": "b", "n": 1}]),
    );
    refuses(
        map,
        json!([{"name": "a", "n": 1}, {"name": "a", "n": 2}]),
        ErrorType::Duplicate,
        "Duplicate value: {\"name\":\"a\"}",
    );
}

#[test]
fn objects_check_required_unknown_fields_and_map_size() {
    let schema =
        json!({"type": "object", "required": ["a"], "properties": {"a": {"type": "string"}}});
    accepts(schema.clone(), json!({"a": "x"}));
    refuses(
        schema.clone(),
        json!({}),
        ErrorType::Required,
        "Required value",
    );
    refuses(
        schema,
        json!({"a": "x", "b": 1}),
        ErrorType::UnknownField,
        "unknown field \"f.b\"",
    );
    let map =
        json!({"type": "object", "maxProperties": 1, "additionalProperties": {"type": "string"}});
    accepts(map.clone(), json!({"k": "v"}));
    refuses(
        map.clone(),
        json!({"k": "v", "l": "w"}),
        ErrorType::TooMany,
        "must have at most 1 items",
    );
    refuses(
        map,
        json!({"k": 1}),
        ErrorType::TypeInvalid,
        "must be of type string",
    );
    accepts(
        json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        json!({"anything": 1}),
    );
}

#[test]
fn junctors_hold_value_validations() {
    let one_of = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
        "oneOf": [{"required": ["a"]}, {"required": ["b"]}]});
    accepts(one_of.clone(), json!({"a": "x"}));
    refuses(
        one_of.clone(),
        json!({"a": "x", "b": "y"}),
        ErrorType::Invalid,
        "must validate one and only one schema (oneOf)",
    );
    refuses(one_of, json!({}), ErrorType::Invalid, "(oneOf)");
    let any_of = json!({"type": "string", "anyOf": [{"pattern": "^a"}, {"pattern": "^b"}]});
    accepts(any_of.clone(), json!("bx"));
    refuses(any_of, json!("cx"), ErrorType::Invalid, "(anyOf)");
    refuses(
        json!({"type": "string", "not": {"enum": ["x"]}}),
        json!("x"),
        ErrorType::Invalid,
        "(not)",
    );
}

#[test]
fn defaulting_fills_nested_defaults_and_replaces_non_nullable_nulls() {
    let schema = json!({"type": "object", "properties": {
        "outer": {"type": "object", "default": {}, "properties": {"inner": {"type": "integer", "default": 3}}},
        "plain": {"type": "string", "default": "d"},
        "optional": {"type": "string", "nullable": true, "default": "d"},
    }});
    let defaulted = support::defaults::apply(&schema, &json!({"plain": null, "optional": null}));
    assert_eq!(
        defaulted,
        json!({"outer": {"inner": 3}, "plain": "d", "optional": null})
    );
}

#[test]
fn merge_patch_merges_objects_and_removes_nulls() {
    let mut object = json!({"spec": {"a": 1, "b": {"c": 2}, "list": [1, 2]}});
    support::merge_patch(
        &mut object,
        &json!({"spec": {"a": null, "b": {"d": 3}, "list": [3]}}),
    );
    assert_eq!(
        object,
        json!({"spec": {"b": {"c": 2, "d": 3}, "list": [3]}})
    );
}

#[test]
fn admit_skips_cel_after_a_blocking_schema_error_as_the_api_server_does() {
    let kind = support::kind_schema("Cluster");
    let object = json!({"apiVersion": "tusk.dev/v1alpha1", "kind": "Cluster", "metadata": {"name": "x"},
        "spec": {"postgresVersion": "17", "storage": {"size": "1Gi"}}});
    let said = support::admit(&kind, &object, None);
    assert!(
        said.iter()
            .any(|rejection| rejection.message == support::CEL_SKIPPED),
        "{said:?}"
    );
    assert!(
        !said
            .iter()
            .any(|rejection| rejection.source == support::Source::Cel),
        "{said:?}"
    );
}
