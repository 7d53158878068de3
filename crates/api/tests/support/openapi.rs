//! An OpenAPI v3 validator for the subset Kubernetes structural schemas use, with the API
//! server's error types and message wording (`k8s.io/apimachinery/pkg/util/validation/field`
//! and kube-openapi's validate package), so a test shows what `kubectl apply` would print.
//!
//! Checked: `type` (integer is not number), `nullable`, `x-kubernetes-int-or-string`,
//! `required`, `enum`, `minimum`/`maximum` (with the OpenAPI 3.0 boolean `exclusive*`),
//! `multipleOf`, `minLength`/`maxLength` (in characters, as Go counts runes), `pattern`,
//! `format: date-time`, `minItems`/`maxItems`, uniqueness of `x-kubernetes-list-type: set`
//! items and `map` keys, `minProperties`/`maxProperties`, unknown fields (strict field
//! validation, `kubectl`'s default), and `allOf`/`anyOf`/`oneOf`/`not`.
//!
//! Patterns: Kubernetes compiles them with Go's RE2 `regexp`; this uses the `regex` crate,
//! whose syntax is nearly the same (neither has look-around or back-references). The
//! differences that matter: `\d`, `\w`, `\s` and `\b` match Unicode in Rust but only ASCII in
//! Go, and Rust refuses some escapes Go accepts. `tests/structural.rs` refuses patterns using
//! those classes, so every pattern means the same in both.

use std::collections::BTreeSet;

use serde_json::Value;

/// `field.ErrorType`, as far as schema validation produces them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    TypeInvalid,
    Required,
    NotSupported,
    Invalid,
    TooLong,
    TooMany,
    Duplicate,
    /// Strict field validation's `unknown field`.
    UnknownField,
}

impl ErrorType {
    /// Errors after which the API server does not evaluate CEL rules (`hasBlockingErr`);
    /// an unknown field fails decoding before any validation.
    pub fn blocks_cel(self) -> bool {
        matches!(
            self,
            ErrorType::TypeInvalid
                | ErrorType::Required
                | ErrorType::NotSupported
                | ErrorType::TooLong
                | ErrorType::TooMany
                | ErrorType::UnknownField
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SchemaError {
    pub error_type: ErrorType,
    pub path: String,
    pub message: String,
}

/// Validates a whole custom resource against its CRD's `openAPIV3Schema`. `apiVersion`,
/// `kind` and `metadata` are the API server's business, not the schema's.
pub fn validate_resource(schema: &Value, object: &Value) -> Vec<SchemaError> {
    let mut errors = Vec::new();
    validate_node(schema, object, "", Mode::Root, &mut errors);
    errors
}

/// Validates `value` against one schema node, e.g. a `default` against the node declaring it.
pub fn validate_value(schema: &Value, value: &Value, path: &str) -> Vec<SchemaError> {
    let mut errors = Vec::new();
    validate_node(schema, value, path, Mode::Field, &mut errors);
    errors
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The resource root: `apiVersion`, `kind` and `metadata` are not schema fields.
    Root,
    Field,
    /// Inside `allOf`/`anyOf`/`oneOf`/`not`: value validations only; fields the branch does
    /// not mention are not unknown.
    Junctor,
}

fn validate_node(
    schema: &Value,
    value: &Value,
    path: &str,
    mode: Mode,
    errors: &mut Vec<SchemaError>,
) {
    let nullable = flag(schema, "nullable");
    let int_or_string = flag(schema, "x-kubernetes-int-or-string");
    let declared_type = schema.get("type").and_then(Value::as_str);

    if value.is_null() {
        if nullable || mode == Mode::Junctor || (declared_type.is_none() && !int_or_string) {
            return;
        }
        let expected = if int_or_string {
            "integer or string"
        } else {
            declared_type.unwrap_or("")
        };
        errors.push(type_error(path, expected, value));
        return;
    }

    if int_or_string {
        if !(value.is_string() || is_integer(value)) {
            errors.push(type_error(path, "integer or string", value));
            return;
        }
    } else if let Some(expected) = declared_type
        && !has_type(value, expected)
    {
        errors.push(type_error(path, expected, value));
        return;
    }

    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.iter().any(|candidate| json_equal(candidate, value))
    {
        let supported: Vec<String> = allowed.iter().map(go_quote).collect();
        errors.push(SchemaError {
            error_type: ErrorType::NotSupported,
            path: path.to_owned(),
            message: format!(
                "Unsupported value: {}: supported values: {}",
                go_quote(value),
                supported.join(", ")
            ),
        });
    }

    match value {
        Value::Number(_) => validate_number(schema, value, path, errors),
        Value::String(text) => validate_string(schema, text, path, errors),
        Value::Array(items) => validate_array(schema, items, path, mode, errors),
        Value::Object(_) => validate_object(schema, value, path, mode, errors),
        _ => {}
    }

    validate_junctors(schema, value, path, errors);
}

fn validate_number(schema: &Value, value: &Value, path: &str, errors: &mut Vec<SchemaError>) {
    let number = value.as_f64().unwrap_or(f64::NAN);
    let shown = value.to_string();
    let mut invalid = |message: String| {
        errors.push(SchemaError {
            error_type: ErrorType::Invalid,
            path: path.to_owned(),
            message: format!(
                "Invalid value: {shown}: {} in body {message}",
                body_path(path)
            ),
        });
    };
    if let Some(minimum) = schema.get("minimum").and_then(Value::as_f64) {
        if flag(schema, "exclusiveMinimum") {
            if number <= minimum {
                invalid(format!("should be greater than {}", number_text(minimum)));
            }
        } else if number < minimum {
            invalid(format!(
                "should be greater than or equal to {}",
                number_text(minimum)
            ));
        }
    }
    if let Some(maximum) = schema.get("maximum").and_then(Value::as_f64) {
        if flag(schema, "exclusiveMaximum") {
            if number >= maximum {
                invalid(format!("should be less than {}", number_text(maximum)));
            }
        } else if number > maximum {
            invalid(format!(
                "should be less than or equal to {}",
                number_text(maximum)
            ));
        }
    }
    if let Some(factor) = schema.get("multipleOf").and_then(Value::as_f64)
        && factor > 0.0
        && (number / factor).fract() != 0.0
    {
        invalid(format!("should be a multiple of {}", number_text(factor)));
    }
}

fn validate_string(schema: &Value, text: &str, path: &str, errors: &mut Vec<SchemaError>) {
    let characters = text.chars().count() as u64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && characters > max
    {
        errors.push(SchemaError {
            error_type: ErrorType::TooLong,
            path: path.to_owned(),
            message: format!("Too long: may not be more than {max} bytes"),
        });
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && characters < min
    {
        errors.push(SchemaError {
            error_type: ErrorType::Invalid,
            path: path.to_owned(),
            message: format!(
                "Invalid value: {}: {} in body should be at least {min} chars long",
                go_quote_str(text),
                body_path(path)
            ),
        });
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        let regex = regex::Regex::new(pattern).unwrap_or_else(|error| {
            panic!("{path}: pattern {pattern:?} does not compile: {error}")
        });
        if !regex.is_match(text) {
            errors.push(SchemaError {
                error_type: ErrorType::Invalid,
                path: path.to_owned(),
                message: format!(
                    "Invalid value: {}: {} in body should match '{pattern}'",
                    go_quote_str(text),
                    body_path(path)
                ),
            });
        }
    }
    if schema.get("format").and_then(Value::as_str) == Some("date-time") && !is_date_time(text) {
        errors.push(SchemaError {
            error_type: ErrorType::Invalid,
            path: path.to_owned(),
            message: format!(
                "Invalid value: {}: {} in body must be of type date-time: {}",
                go_quote_str(text),
                body_path(path),
                go_quote_str(text)
            ),
        });
    }
}

fn validate_array(
    schema: &Value,
    items: &[Value],
    path: &str,
    mode: Mode,
    errors: &mut Vec<SchemaError>,
) {
    let count = items.len() as u64;
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
        && count > max
    {
        errors.push(SchemaError {
            error_type: ErrorType::TooMany,
            path: path.to_owned(),
            message: format!("Too many: {count}: must have at most {max} items"),
        });
    }
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
        && count < min
    {
        errors.push(SchemaError {
            error_type: ErrorType::Invalid,
            path: path.to_owned(),
            message: format!(
                "Invalid value: {count}: {} in body should have at least {min} items",
                body_path(path)
            ),
        });
    }
    match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => {
            for (index, item) in items.iter().enumerate() {
                if items[..index]
                    .iter()
                    .any(|earlier| json_equal(earlier, item))
                {
                    errors.push(SchemaError {
                        error_type: ErrorType::Duplicate,
                        path: format!("{path}[{index}]"),
                        message: format!("Duplicate value: {}", go_quote(item)),
                    });
                }
            }
        }
        Some("map") => {
            let keys: Vec<&str> = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|keys| keys.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let key_of = |item: &Value| -> Value {
                Value::Object(
                    keys.iter()
                        .map(|key| {
                            (
                                (*key).to_owned(),
                                item.get(*key).cloned().unwrap_or(Value::Null),
                            )
                        })
                        .collect(),
                )
            };
            for (index, item) in items.iter().enumerate() {
                let key = key_of(item);
                if items[..index].iter().any(|earlier| key_of(earlier) == key) {
                    errors.push(SchemaError {
                        error_type: ErrorType::Duplicate,
                        path: format!("{path}[{index}]"),
                        message: format!("Duplicate value: {key}"),
                    });
                }
            }
        }
        _ => {}
    }
    if let Some(item_schema) = schema.get("items") {
        let item_mode = if mode == Mode::Junctor {
            Mode::Junctor
        } else {
            Mode::Field
        };
        for (index, item) in items.iter().enumerate() {
            validate_node(
                item_schema,
                item,
                &format!("{path}[{index}]"),
                item_mode,
                errors,
            );
        }
    }
}

fn validate_object(
    schema: &Value,
    value: &Value,
    path: &str,
    mode: Mode,
    errors: &mut Vec<SchemaError>,
) {
    let Some(object) = value.as_object() else {
        return;
    };
    let count = object.len() as u64;
    if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
        && count > max
    {
        errors.push(SchemaError {
            error_type: ErrorType::TooMany,
            path: path.to_owned(),
            message: format!("Too many: {count}: must have at most {max} items"),
        });
    }
    if let Some(min) = schema.get("minProperties").and_then(Value::as_u64)
        && count < min
    {
        errors.push(SchemaError {
            error_type: ErrorType::Invalid,
            path: path.to_owned(),
            message: format!(
                "Invalid value: {count}: {} in body should have at least {min} properties",
                body_path(path)
            ),
        });
    }
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            if !object.contains_key(name) {
                errors.push(SchemaError {
                    error_type: ErrorType::Required,
                    path: child_path(path, name),
                    message: "Required value".to_owned(),
                });
            }
        }
    }

    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    let preserve_unknown = flag(schema, "x-kubernetes-preserve-unknown-fields");
    let child_mode = if mode == Mode::Junctor {
        Mode::Junctor
    } else {
        Mode::Field
    };
    for (name, child) in object {
        if mode == Mode::Root && matches!(name.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        if let Some(property) = properties.and_then(|properties| properties.get(name)) {
            validate_node(property, child, &child_path(path, name), child_mode, errors);
        } else if let Some(additional) = additional.filter(|additional| additional.is_object()) {
            validate_node(
                additional,
                child,
                &format!("{path}[{name}]"),
                child_mode,
                errors,
            );
        } else if mode != Mode::Junctor
            && !preserve_unknown
            && additional.and_then(Value::as_bool) != Some(true)
            && (properties.is_some()
                || schema.get("type").and_then(Value::as_str) == Some("object"))
        {
            errors.push(SchemaError {
                error_type: ErrorType::UnknownField,
                path: child_path(path, name),
                message: format!("unknown field \"{}\"", child_path(path, name)),
            });
        }
    }
}

fn validate_junctors(schema: &Value, value: &Value, path: &str, errors: &mut Vec<SchemaError>) {
    let passes = |branch: &Value| {
        let mut branch_errors = Vec::new();
        validate_node(branch, value, path, Mode::Junctor, &mut branch_errors);
        branch_errors.is_empty()
    };
    let mut invalid = |message: &str| {
        errors.push(SchemaError {
            error_type: ErrorType::Invalid,
            path: path.to_owned(),
            message: format!(
                "Invalid value: {}: {} in body {message}",
                compact(value),
                body_path(path)
            ),
        });
    };
    if let Some(branches) = schema.get("allOf").and_then(Value::as_array) {
        for branch in branches {
            if !passes(branch) {
                invalid("must validate all the schemas (allOf)");
            }
        }
    }
    if let Some(branches) = schema.get("anyOf").and_then(Value::as_array)
        && !branches.iter().any(passes)
    {
        invalid("must validate at least one schema (anyOf)");
    }
    if let Some(branches) = schema.get("oneOf").and_then(Value::as_array) {
        let passing = branches.iter().filter(|branch| passes(branch)).count();
        if passing != 1 {
            invalid("must validate one and only one schema (oneOf)");
        }
    }
    if let Some(branch) = schema.get("not")
        && passes(branch)
    {
        invalid("must not validate the schema (not)");
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn flag(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool) == Some(true)
}

fn is_integer(value: &Value) -> bool {
    value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|float| float.fract() == 0.0)
}

fn has_type(value: &Value, expected: &str) -> bool {
    match expected {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_number() && is_integer(value),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => true,
    }
}

/// JSON's name for the type of `value`, as the API server reports it.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) if is_integer(value) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_error(path: &str, expected: &str, value: &Value) -> SchemaError {
    let actual = json_type(value);
    SchemaError {
        error_type: ErrorType::TypeInvalid,
        path: path.to_owned(),
        message: format!(
            "Invalid value: \"{actual}\": {} in body must be of type {expected}: \"{actual}\"",
            body_path(path)
        ),
    }
}

/// Numbers compare by value (`1` equals `1.0`), everything else structurally.
fn json_equal(left: &Value, right: &Value) -> bool {
    match (left, right) {
        (Value::Number(left), Value::Number(right)) => left.as_f64() == right.as_f64(),
        _ => left == right,
    }
}

fn child_path(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn body_path(path: &str) -> &str {
    if path.is_empty() { "body" } else { path }
}

fn go_quote(value: &Value) -> String {
    match value {
        Value::String(text) => go_quote_str(text),
        other => compact(other),
    }
}

fn go_quote_str(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

fn compact(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn number_text(number: f64) -> String {
    if number.fract() == 0.0 && number.abs() < 1e15 {
        format!("{number:.0}")
    } else {
        number.to_string()
    }
}

/// RFC 3339 date-time, as `strfmt.IsDateTime` accepts it.
fn is_date_time(text: &str) -> bool {
    static DATE_TIME: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    DATE_TIME
        .get_or_init(|| {
            regex::Regex::new(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$")
                .unwrap()
        })
        .is_match(text)
}

/// The properties a schema node names as required, for callers walking schemas.
pub fn required_names(schema: &Value) -> BTreeSet<String> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|names| {
            names
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}
