//! Schema defaulting as the API server does it (`apiextensions-apiserver`'s structural
//! `defaulting.Default`): a missing property — or a `null` one whose schema is not nullable —
//! gets its default, and defaulting then descends into every present value, including the
//! defaults just inserted (so a defaulted object gets its nested defaults too).

use serde_json::Value;

pub fn apply(schema: &Value, value: &Value) -> Value {
    let mut value = value.clone();
    default_in_place(schema, &mut value);
    value
}

fn default_in_place(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(object) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            if let Some(properties) = properties {
                for (name, property) in properties {
                    let Some(default) = property.get("default") else {
                        continue;
                    };
                    let nullable = property.get("nullable").and_then(Value::as_bool) == Some(true);
                    match object.get(name) {
                        None => {
                            object.insert(name.clone(), default.clone());
                        }
                        Some(Value::Null) if !nullable => {
                            object.insert(name.clone(), default.clone());
                        }
                        Some(_) => {}
                    }
                }
            }
            let additional = schema
                .get("additionalProperties")
                .filter(|additional| additional.is_object());
            for (name, child) in object.iter_mut() {
                if let Some(property) = properties.and_then(|properties| properties.get(name)) {
                    default_in_place(property, child);
                } else if let Some(additional) = additional {
                    default_in_place(additional, child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    default_in_place(item_schema, item);
                }
            }
        }
        _ => {}
    }
}
