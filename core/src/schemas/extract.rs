//! From the JSON Schema of a whole enum (what schemars derives) to one schema per event type
//! or command, each with the definitions it uses.
//!
//! An event enum is externally tagged: schemars writes it as a `oneOf` whose alternatives are
//! `{"type":"object","properties":{"<Variant>":<content>},"required":["<Variant>"]}`, or a
//! string `enum`/`const` for unit variants. A stored event is the variant's content alone,
//! so its schema is `<content>` (`{"type":"null"}` for a unit variant). A command enum is
//! internally tagged by `command`: each alternative is the command's own object schema.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// The content schema of each variant of an externally tagged enum, by serde tag, with the
/// variant's description (doc comment) when schemars gave one.
pub(crate) fn variants(root: &Value) -> Vec<(String, Value)> {
    let mut found = Vec::new();
    for alternative in alternatives(root) {
        let description = alternative.get("description").cloned();
        let with_description = |mut content: Value| {
            if let (Some(d), Some(map)) = (&description, content.as_object_mut()) {
                map.entry("description").or_insert_with(|| d.clone());
            }
            content
        };
        // Unit variants: a string `const`, or an `enum` of several.
        if let Some(Value::String(tag)) = alternative.get("const") {
            found.push((tag.clone(), with_description(unit())));
            continue;
        }
        if let Some(Value::Array(tags)) = alternative.get("enum") {
            for tag in tags.iter().filter_map(Value::as_str) {
                found.push((tag.to_owned(), with_description(unit())));
            }
            continue;
        }
        // Others: an object with one property, the tag.
        let Some(properties) = alternative.get("properties").and_then(Value::as_object) else {
            continue;
        };
        if properties.len() == 1
            && let Some((tag, content)) = properties.iter().next()
        {
            found.push((tag.clone(), with_description(content.clone())));
        }
    }
    found
}

/// The schema of each variant of an enum internally tagged by `tag`, by tag value.
pub(crate) fn tagged(root: &Value, tag: &str) -> Vec<(String, Value)> {
    let mut found = Vec::new();
    for alternative in alternatives(root) {
        let Some(value) = alternative
            .get("properties")
            .and_then(|p| p.get(tag))
            .and_then(const_string)
        else {
            continue;
        };
        let mut schema = alternative.clone();
        if let Some(map) = schema.as_object_mut() {
            map.remove("$defs");
            map.remove("$schema");
            map.remove("title");
        }
        found.push((value, schema));
    }
    found
}

/// A string `const`, or a one-member string `enum`.
fn const_string(schema: &Value) -> Option<String> {
    if let Some(Value::String(s)) = schema.get("const") {
        return Some(s.clone());
    }
    match schema
        .get("enum")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
    {
        Some([Value::String(s)]) => Some(s.clone()),
        _ => None,
    }
}

/// The alternatives of an enum's root schema: its `oneOf` (or `anyOf`), or the root itself
/// for an enum of one variant.
fn alternatives(root: &Value) -> Vec<&Value> {
    for key in ["oneOf", "anyOf"] {
        if let Some(Value::Array(alternatives)) = root.get(key) {
            return alternatives.iter().collect();
        }
    }
    vec![root]
}

/// The payload of a unit variant: `null`.
fn unit() -> Value {
    let mut map = Map::new();
    map.insert("type".into(), Value::String("null".into()));
    Value::Object(map)
}

/// `schema` made a file of its own: the definitions of `root` it refers to (transitively)
/// under `$defs`, `$schema` and `title`, and `extra` keys merged in.
pub(crate) fn standalone(
    root: &Value,
    schema: Value,
    title: &str,
    extra: Map<String, Value>,
) -> Value {
    let defs = root.get("$defs").and_then(Value::as_object);
    let mut used = BTreeSet::new();
    if let Some(defs) = defs {
        let mut pending = Vec::new();
        refs(&schema, &mut pending);
        while let Some(name) = pending.pop() {
            if used.insert(name.clone())
                && let Some(def) = defs.get(&name)
            {
                refs(def, &mut pending);
            }
        }
    }
    let mut map = match schema {
        Value::Object(map) => map,
        // `true`/`false` schemas: accept anything / nothing.
        other => {
            let mut map = Map::new();
            if other == Value::Bool(false) {
                map.insert("not".into(), Value::Object(Map::new()));
            }
            map
        }
    };
    map.insert(
        "$schema".into(),
        Value::String("https://json-schema.org/draft/2020-12/schema".into()),
    );
    map.insert("title".into(), Value::String(title.to_owned()));
    if let Some(defs) = defs {
        let picked: Map<String, Value> = defs
            .iter()
            .filter(|(name, _)| used.contains(*name))
            .map(|(name, def)| (name.clone(), def.clone()))
            .collect();
        if !picked.is_empty() {
            map.insert("$defs".into(), Value::Object(picked));
        }
    }
    map.extend(extra);
    Value::Object(map)
}

/// The names of the local definitions `schema` refers to (`"$ref": "#/$defs/Name"`).
fn refs(schema: &Value, found: &mut Vec<String>) {
    match schema {
        Value::Object(map) => {
            for (key, value) in map {
                if key == "$ref"
                    && let Some(name) = value.as_str().and_then(def_name)
                {
                    found.push(name.to_owned());
                } else {
                    refs(value, found);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| refs(item, found)),
        _ => {}
    }
}

/// `Name` of `#/$defs/Name`.
pub(crate) fn def_name(reference: &str) -> Option<&str> {
    reference.strip_prefix("#/$defs/")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_externally_tagged_enum_splits_into_its_variants() {
        let root = json!({
            "oneOf": [
                {"type": "string", "enum": ["Closed", "Frozen"]},
                {"type": "string", "const": "Reopened", "description": "Back."},
                {"type": "object", "description": "Opened.",
                 "properties": {"Opened": {"type": "object", "properties": {"m": {"$ref": "#/$defs/Money"}}}},
                 "required": ["Opened"], "additionalProperties": false},
                {"type": "object", "properties": {"Deposited": {"type": "integer"}},
                 "required": ["Deposited"], "additionalProperties": false},
            ],
            "$defs": {
                "Money": {"type": "object", "properties": {"c": {"$ref": "#/$defs/Currency"}}},
                "Currency": {"enum": ["Eur"]},
                "Unused": {"type": "string"},
            }
        });
        let found = variants(&root);
        let tags: Vec<&str> = found.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            tags,
            ["Closed", "Frozen", "Reopened", "Opened", "Deposited"]
        );
        assert_eq!(found[0].1, json!({"type": "null"}));
        assert_eq!(found[2].1, json!({"type": "null", "description": "Back."}));
        assert_eq!(found[4].1, json!({"type": "integer"}));
        let file = standalone(&root, found[3].1.clone(), "Opened", Map::new());
        let defs = file["$defs"].as_object().expect("defs");
        assert_eq!(defs.keys().collect::<Vec<_>>(), ["Currency", "Money"]);
        assert_eq!(file["description"], "Opened.");
        assert_eq!(file["title"], "Opened");
        let plain = standalone(&root, found[4].1.clone(), "Deposited", Map::new());
        assert!(plain.get("$defs").is_none());
    }

    #[test]
    fn a_one_variant_enum_is_its_own_alternative() {
        let root = json!({"type": "object", "properties": {"Only": {"type": "string"}},
                          "required": ["Only"], "additionalProperties": false});
        assert_eq!(
            variants(&root),
            [("Only".to_owned(), json!({"type": "string"}))]
        );
    }

    #[test]
    fn an_internally_tagged_enum_splits_by_its_tag() {
        let root = json!({"oneOf": [
            {"type": "object", "properties": {"command": {"type": "string", "const": "close"}},
             "required": ["command"]},
            {"type": "object", "properties": {"command": {"type": "string", "enum": ["deposit"]},
                                               "amount": {"type": "integer"}},
             "required": ["command", "amount"]},
        ]});
        let found = tagged(&root, "command");
        let tags: Vec<&str> = found.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(tags, ["close", "deposit"]);
        assert_eq!(found[1].1["required"], json!(["command", "amount"]));
    }
}
