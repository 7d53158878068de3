//! Every node of a CRD schema with its path, for the tests that check rules node by node.
//!
//! Paths follow the object: `spec.storage.size`; list items add `[]`
//! (`spec.backup.repositories[].name`); values of a free-form map add `.<key>`; branches of
//! `allOf`/`anyOf`/`oneOf`/`not` add `(oneOf[1])`. The root's path is empty.

use serde_json::Value;

#[derive(Debug, Clone)]
pub struct Node<'s> {
    pub path: String,
    pub schema: &'s Value,
    /// Inside an `allOf`/`anyOf`/`oneOf`/`not` branch, where only value validations belong.
    pub in_junctor: bool,
}

impl Node<'_> {
    /// The path for messages: the root is called `<root>`.
    pub fn shown(&self) -> &str {
        if self.path.is_empty() {
            "<root>"
        } else {
            &self.path
        }
    }

    /// Whether this node is at or below `prefix` (a path as produced here).
    pub fn is_under(&self, prefix: &str) -> bool {
        self.path == prefix
            || self.path.strip_prefix(prefix).is_some_and(|rest| {
                rest.starts_with('.') || rest.starts_with('[') || rest.starts_with('(')
            })
    }
}

pub fn nodes(root: &Value) -> Vec<Node<'_>> {
    let mut out = Vec::new();
    visit(root, String::new(), false, &mut out);
    out
}

fn visit<'s>(schema: &'s Value, path: String, in_junctor: bool, out: &mut Vec<Node<'s>>) {
    out.push(Node {
        path: path.clone(),
        schema,
        in_junctor,
    });
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, child) in properties {
            let child_path = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            visit(child, child_path, in_junctor, out);
        }
    }
    if let Some(items) = schema.get("items") {
        visit(items, format!("{path}[]"), in_junctor, out);
    }
    if let Some(values) = schema
        .get("additionalProperties")
        .filter(|values| values.is_object())
    {
        visit(values, format!("{path}.<key>"), in_junctor, out);
    }
    for junctor in ["allOf", "anyOf", "oneOf"] {
        if let Some(branches) = schema.get(junctor).and_then(Value::as_array) {
            for (index, branch) in branches.iter().enumerate() {
                visit(branch, format!("{path}({junctor}[{index}])"), true, out);
            }
        }
    }
    if let Some(branch) = schema.get("not") {
        visit(branch, format!("{path}(not)"), true, out);
    }
}
