//! Whether a reader's JSON Schema accepts every document a writer's schema allows: the
//! structural comparison under the compatibility check.
//!
//! [`reads`] walks both schemas together and reports each place a document the writer may
//! produce would fail the reader, as an [`Issue`] at a field path. It understands what
//! schemars derives for serde types: `type` (one or several), `properties` / `required` /
//! `additionalProperties`, `items` and `prefixItems`, string `enum`/`const`, `anyOf`/`oneOf`
//! (an `Option`, an enum's variants), integer `format`s and bounds, and local `$ref`s into
//! `$defs` (recursive ones included). Keywords it does not know (string formats, patterns,
//! lengths) are not compared: the check catches what breaks serde, not every validation rule.

use serde_json::{Map, Value};

use super::extract::def_name;

/// A place where the reader refuses what the writer may write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Issue {
    /// The field path, `owner` or `money.currency` or `lines[].amount`; empty for the
    /// payload itself.
    pub(crate) path: String,
    pub(crate) kind: IssueKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IssueKind {
    /// The reader requires a field the writer's documents lack; `instead` is a field only
    /// the writer has with a schema the reader's field accepts (a likely rename).
    Missing { instead: Option<String> },
    /// The reader requires a field the writer may leave out.
    NotAlways,
    /// The writer may write values of a type the reader refuses.
    Type { writer: String, reader: String },
    /// The writer may write a string the reader's enum does not list.
    Value { value: String },
    /// The writer may write a variant (of an enum) the reader does not know.
    Variant { variant: String },
    /// The writer writes a field the reader refuses: it denies unknown fields.
    Unknown,
}

/// Every place where a document valid under `writer` fails `reader`. `writer_root` and
/// `reader_root` hold the `$defs` their `$ref`s point into.
pub(crate) fn reads(writer_root: &Value, reader_root: &Value) -> Vec<Issue> {
    let mut walk = Walk {
        writer_root,
        reader_root,
        issues: Vec::new(),
        visiting: Vec::new(),
    };
    walk.compare(writer_root, reader_root, "");
    walk.issues
}

struct Walk<'a> {
    writer_root: &'a Value,
    reader_root: &'a Value,
    issues: Vec<Issue>,
    /// The `$ref` pairs being compared further up: a recursive type meets itself again.
    visiting: Vec<(String, String)>,
}

/// One alternative of a schema: what a single document may be.
#[derive(Debug, Clone, Copy)]
enum Alt<'a> {
    Any,
    Null,
    Bool,
    Integer(Range),
    Number,
    String,
    /// A string from an `enum` or `const`.
    Value(&'a str),
    Array(&'a Value),
    Object(&'a Value),
    /// A variant of an externally tagged enum: `{"<tag>": <content>}` and nothing else.
    Tagged(&'a str, &'a Value),
}

/// An integer's bounds, from its `format` or `minimum`/`maximum`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    min: i128,
    max: i128,
}

impl<'a> Walk<'a> {
    fn issue(&mut self, path: &str, kind: IssueKind) {
        self.issues.push(Issue {
            path: path.to_owned(),
            kind,
        });
    }

    fn compare(&mut self, writer: &'a Value, reader: &'a Value, path: &str) {
        let (writer, writer_ref) = resolve(self.writer_root, writer);
        let (reader, reader_ref) = resolve(self.reader_root, reader);
        if let (Some(w), Some(r)) = (writer_ref, reader_ref) {
            let pair = (w.to_owned(), r.to_owned());
            if self.visiting.contains(&pair) {
                return;
            }
            self.visiting.push(pair);
            self.compare_resolved(writer, reader, path);
            self.visiting.pop();
        } else {
            self.compare_resolved(writer, reader, path);
        }
    }

    fn compare_resolved(&mut self, writer: &'a Value, reader: &'a Value, path: &str) {
        let writer_alts = alternatives(self.writer_root, writer);
        let reader_alts = alternatives(self.reader_root, reader);
        if reader_alts.iter().any(|a| matches!(a, Alt::Any)) {
            return;
        }
        let mut refused = false;
        let reader_objects: Vec<&Value> = reader_alts
            .iter()
            .filter_map(|a| match a {
                Alt::Object(o) => Some(*o),
                _ => None,
            })
            .collect();
        for alt in &writer_alts {
            match *alt {
                Alt::Any => refused = true,
                Alt::Null => refused |= !reader_alts.iter().any(|r| matches!(r, Alt::Null)),
                Alt::Bool => refused |= !reader_alts.iter().any(|r| matches!(r, Alt::Bool)),
                Alt::Number => refused |= !reader_alts.iter().any(|r| matches!(r, Alt::Number)),
                Alt::Integer(range) => {
                    let fits = reader_alts.iter().any(|r| match r {
                        Alt::Number => true,
                        Alt::Integer(r) => r.min <= range.min && range.max <= r.max,
                        _ => false,
                    });
                    refused |= !fits;
                }
                Alt::String => refused |= !reader_alts.iter().any(|r| matches!(r, Alt::String)),
                Alt::Value(value) => {
                    let strings = reader_alts
                        .iter()
                        .any(|r| matches!(r, Alt::String | Alt::Value(_)));
                    if !strings {
                        refused = true;
                    } else if !reader_alts.iter().any(|r| {
                        matches!(r, Alt::String) || matches!(r, Alt::Value(v) if *v == value)
                    }) {
                        self.issue(
                            path,
                            IssueKind::Value {
                                value: value.to_owned(),
                            },
                        );
                    }
                }
                Alt::Tagged(tag, content) => {
                    let found = reader_alts.iter().find_map(|r| match r {
                        Alt::Tagged(t, c) if *t == tag => Some(*c),
                        _ => None,
                    });
                    match found {
                        Some(reader_content) => {
                            self.compare(content, reader_content, &join(path, tag));
                        }
                        None if reader_alts.iter().any(|r| matches!(r, Alt::Tagged(..))) => {
                            self.issue(
                                path,
                                IssueKind::Variant {
                                    variant: tag.to_owned(),
                                },
                            );
                        }
                        None => refused = true,
                    }
                }
                Alt::Array(writer_array) => {
                    match reader_alts.iter().find_map(|r| match r {
                        Alt::Array(a) => Some(*a),
                        _ => None,
                    }) {
                        Some(reader_array) => {
                            refused |= !self.compare_arrays(writer_array, reader_array, path);
                        }
                        None => refused = true,
                    }
                }
                Alt::Object(writer_object) => match reader_objects.as_slice() {
                    [] => refused = true,
                    [only] => self.compare_objects(writer_object, only, path),
                    several => {
                        // An internally tagged enum: match the variant by its tag.
                        match several.iter().find(|r| {
                            tag_of(writer_object).is_some() && tag_of(r) == tag_of(writer_object)
                        }) {
                            Some(reader_object) => {
                                self.compare_objects(writer_object, reader_object, path);
                            }
                            None => match tag_of(writer_object) {
                                Some((_, value)) => self.issue(
                                    path,
                                    IssueKind::Variant {
                                        variant: value.to_owned(),
                                    },
                                ),
                                None => refused = true,
                            },
                        }
                    }
                },
            }
        }
        if refused {
            self.issue(
                path,
                IssueKind::Type {
                    writer: describe(&writer_alts),
                    reader: describe(&reader_alts),
                },
            );
        }
    }

    /// Compares two arrays; `false` when their shapes differ (a tuple of another length).
    fn compare_arrays(&mut self, writer: &'a Value, reader: &'a Value, path: &str) -> bool {
        let writer_tuple = writer.get("prefixItems").and_then(Value::as_array);
        let reader_tuple = reader.get("prefixItems").and_then(Value::as_array);
        match (writer_tuple, reader_tuple) {
            (Some(w), Some(r)) => {
                if w.len() != r.len() {
                    return false;
                }
                for (i, (w, r)) in w.iter().zip(r).enumerate() {
                    self.compare(w, r, &format!("{path}[{i}]"));
                }
                true
            }
            (None, None) => {
                if let (Some(w), Some(r)) = (writer.get("items"), reader.get("items")) {
                    self.compare(w, r, &format!("{path}[]"));
                }
                true
            }
            _ => false,
        }
    }

    fn compare_objects(&mut self, writer: &'a Value, reader: &'a Value, path: &str) {
        let writer_props = Properties(writer.get("properties").and_then(Value::as_object));
        let reader_props = Properties(reader.get("properties").and_then(Value::as_object));
        let writer_required = required(writer);
        for field in required(reader) {
            let field_path = join(path, field);
            match writer_props.get(field) {
                None => {
                    let reader_field = reader_props.get(field);
                    let instead = writer_props
                        .iter()
                        .filter(|(name, _)| !reader_props.contains_key(name))
                        .find(|(_, schema)| {
                            reader_field.is_some_and(|r| {
                                let mut probe = Walk {
                                    writer_root: self.writer_root,
                                    reader_root: self.reader_root,
                                    issues: Vec::new(),
                                    visiting: self.visiting.clone(),
                                };
                                probe.compare(schema, r, "");
                                probe.issues.is_empty()
                            })
                        })
                        .map(|(name, _)| join(path, name));
                    self.issue(&field_path, IssueKind::Missing { instead });
                }
                Some(_) if !writer_required.contains(&field) => {
                    self.issue(&field_path, IssueKind::NotAlways);
                }
                Some(_) => {}
            }
        }
        let reader_extra = reader.get("additionalProperties");
        for (field, writer_field) in writer_props.iter() {
            let field_path = join(path, field);
            match (reader_props.get(field), reader_extra) {
                (Some(reader_field), _) => self.compare(writer_field, reader_field, &field_path),
                (None, Some(Value::Bool(false))) => self.issue(&field_path, IssueKind::Unknown),
                (None, Some(extra @ Value::Object(_))) => {
                    self.compare(writer_field, extra, &field_path);
                }
                (None, _) => {}
            }
        }
        // Maps: the values' schemas.
        if let (Some(w @ Value::Object(_)), Some(r @ Value::Object(_))) =
            (writer.get("additionalProperties"), reader_extra)
        {
            self.compare(w, r, &join(path, "*"));
        }
    }
}

/// An object schema's `properties`, possibly none.
#[derive(Clone, Copy)]
struct Properties<'a>(Option<&'a Map<String, Value>>);

impl<'a> Properties<'a> {
    fn get(self, name: &str) -> Option<&'a Value> {
        self.0.and_then(|map| map.get(name))
    }

    fn contains_key(self, name: &str) -> bool {
        self.get(name).is_some()
    }

    fn iter(self) -> impl Iterator<Item = (&'a String, &'a Value)> {
        self.0.into_iter().flatten()
    }
}

/// `path.field`, or `field` at the top.
fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

fn required(object: &Value) -> Vec<&str> {
    object
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The tag of an internally tagged variant: its first required property whose schema is a
/// string constant.
fn tag_of(object: &Value) -> Option<(&str, &str)> {
    let properties = object.get("properties")?;
    required(object).into_iter().find_map(|key| {
        let schema = properties.get(key)?;
        let value = match (schema.get("const"), schema.get("enum")) {
            (Some(Value::String(s)), _) => s.as_str(),
            (_, Some(Value::Array(values))) if values.len() == 1 => values.first()?.as_str()?,
            _ => return None,
        };
        Some((key, value))
    })
}

/// Follows local `$ref`s (a few levels, against loops) and says which definition it landed
/// on, if any.
fn resolve<'a>(root: &'a Value, mut schema: &'a Value) -> (&'a Value, Option<&'a str>) {
    let mut name = None;
    for _ in 0..16 {
        let Some(reference) = schema.get("$ref").and_then(Value::as_str) else {
            break;
        };
        let Some(def) = def_name(reference)
            .and_then(|n| root.get("$defs").and_then(|d| d.get(n)).map(|def| (n, def)))
        else {
            break;
        };
        name = Some(def.0);
        schema = def.1;
    }
    (schema, name)
}

/// What a schema allows, one alternative per kind of document.
fn alternatives<'a>(root: &'a Value, schema: &'a Value) -> Vec<Alt<'a>> {
    let mut found = Vec::new();
    collect(root, schema, &mut found, 0);
    found
}

fn collect<'a>(root: &'a Value, schema: &'a Value, found: &mut Vec<Alt<'a>>, depth: u8) {
    if depth > 16 {
        found.push(Alt::Any);
        return;
    }
    let (schema, _) = resolve(root, schema);
    let map = match schema {
        Value::Bool(true) => return found.push(Alt::Any),
        Value::Object(map) => map,
        _ => return,
    };
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(alternatives)) = map.get(key) {
            for alternative in alternatives {
                collect(root, alternative, found, depth + 1);
            }
            return;
        }
    }
    if let Some(value) = map.get("const") {
        return found.push(constant(value));
    }
    if let Some(Value::Array(values)) = map.get("enum") {
        found.extend(values.iter().map(constant));
        return;
    }
    let types: Vec<&str> = match map.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ if map.contains_key("properties") => vec!["object"],
        _ => return found.push(Alt::Any),
    };
    for t in types {
        found.push(match t {
            "null" => Alt::Null,
            "boolean" => Alt::Bool,
            "integer" => Alt::Integer(range(map)),
            "number" => Alt::Number,
            "string" => Alt::String,
            "array" => Alt::Array(schema),
            "object" => externally_tagged(map).unwrap_or(Alt::Object(schema)),
            _ => Alt::Any,
        });
    }
}

/// A constant as an alternative: a string is a value of its own; others by type.
fn constant(value: &Value) -> Alt<'_> {
    match value {
        Value::String(s) => Alt::Value(s),
        Value::Null => Alt::Null,
        Value::Bool(_) => Alt::Bool,
        Value::Number(n) if n.is_i64() || n.is_u64() => Alt::Integer(Range {
            min: n.as_i64().map_or(0, i128::from),
            max: n
                .as_u64()
                .map_or_else(|| n.as_i64().map_or(0, i128::from), i128::from),
        }),
        Value::Number(_) => Alt::Number,
        Value::Array(_) | Value::Object(_) => Alt::Any,
    }
}

/// `{"type":"object","properties":{"<tag>":...},"required":["<tag>"],"additionalProperties":false}`.
fn externally_tagged(map: &Map<String, Value>) -> Option<Alt<'_>> {
    let properties = map.get("properties")?.as_object()?;
    if properties.len() != 1 || map.get("additionalProperties") != Some(&Value::Bool(false)) {
        return None;
    }
    let (tag, content) = properties.iter().next()?;
    let required = map.get("required")?.as_array()?;
    (required.len() == 1 && required.first()?.as_str() == Some(tag))
        .then_some(Alt::Tagged(tag, content))
}

/// An integer schema's bounds: its `format` (`uint32`, `int64`...), narrowed by `minimum`
/// and `maximum`.
fn range(map: &Map<String, Value>) -> Range {
    let (mut min, mut max) = match map.get("format").and_then(Value::as_str) {
        Some("int8") => (i128::from(i8::MIN), i128::from(i8::MAX)),
        Some("int16") => (i128::from(i16::MIN), i128::from(i16::MAX)),
        Some("int32" | "int") => (i128::from(i32::MIN), i128::from(i32::MAX)),
        Some("int64") => (i128::from(i64::MIN), i128::from(i64::MAX)),
        Some("uint8") => (0, i128::from(u8::MAX)),
        Some("uint16") => (0, i128::from(u16::MAX)),
        Some("uint32" | "uint") => (0, i128::from(u32::MAX)),
        Some("uint64") => (0, i128::from(u64::MAX)),
        Some("uint128") => (0, i128::MAX),
        _ => (i128::MIN, i128::MAX),
    };
    if let Some(m) = map.get("minimum").and_then(bound) {
        min = min.max(m);
    }
    if let Some(m) = map.get("maximum").and_then(bound) {
        max = max.min(m);
    }
    Range { min, max }
}

fn bound(value: &Value) -> Option<i128> {
    value
        .as_i64()
        .map(i128::from)
        .or_else(|| value.as_u64().map(i128::from))
}

/// A short description of what a schema allows: `integer (uint64)`, `string or null`.
fn describe(alternatives: &[Alt<'_>]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut values: Vec<&str> = Vec::new();
    for alt in alternatives {
        let part = match alt {
            Alt::Any => "anything".to_owned(),
            Alt::Null => "null".to_owned(),
            Alt::Bool => "boolean".to_owned(),
            Alt::Integer(range) => format!("integer ({})", describe_range(*range)),
            Alt::Number => "number".to_owned(),
            Alt::String => "string".to_owned(),
            Alt::Value(v) => {
                values.push(v);
                continue;
            }
            Alt::Array(a) => match a.get("prefixItems").and_then(Value::as_array) {
                Some(items) => format!("tuple of {}", items.len()),
                None => "array".to_owned(),
            },
            Alt::Object(_) => "object".to_owned(),
            Alt::Tagged(..) => "enum variant".to_owned(),
        };
        if !parts.contains(&part) {
            parts.push(part);
        }
    }
    if !values.is_empty() {
        let listed: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
        parts.insert(0, format!("one of {}", listed.join(", ")));
    }
    if parts.is_empty() {
        "nothing".to_owned()
    } else {
        parts.join(" or ")
    }
}

fn describe_range(range: Range) -> String {
    let known = [
        ("int8", i128::from(i8::MIN), i128::from(i8::MAX)),
        ("int16", i128::from(i16::MIN), i128::from(i16::MAX)),
        ("int32", i128::from(i32::MIN), i128::from(i32::MAX)),
        ("int64", i128::from(i64::MIN), i128::from(i64::MAX)),
        ("uint8", 0, i128::from(u8::MAX)),
        ("uint16", 0, i128::from(u16::MAX)),
        ("uint32", 0, i128::from(u32::MAX)),
        ("uint64", 0, i128::from(u64::MAX)),
    ];
    match known
        .iter()
        .find(|(_, min, max)| *min == range.min && *max == range.max)
    {
        Some((name, ..)) => (*name).to_owned(),
        None if range.min == i128::MIN && range.max == i128::MAX => "any".to_owned(),
        None => format!("{} to {}", range.min, range.max),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn issues(writer: Value, reader: Value) -> Vec<(String, IssueKind)> {
        reads(&writer, &reader)
            .into_iter()
            .map(|i| (i.path, i.kind))
            .collect()
    }

    fn object(properties: Value, required: &[&str]) -> Value {
        json!({"type": "object", "properties": properties, "required": required})
    }

    const U64: fn() -> Value = || json!({"type": "integer", "format": "uint64", "minimum": 0});
    const U32: fn() -> Value = || json!({"type": "integer", "format": "uint32", "minimum": 0});

    #[test]
    fn the_same_schema_reads_itself() {
        let s = object(
            json!({"a": U64(), "b": {"type": ["string", "null"]}}),
            &["a"],
        );
        assert_eq!(issues(s.clone(), s), []);
    }

    #[test]
    fn a_required_field_the_writer_lacks_is_missing_and_a_rename_is_guessed() {
        let old = object(
            json!({"owner": {"type": "string"}, "n": U64()}),
            &["owner", "n"],
        );
        let new = object(
            json!({"holder": {"type": "string"}, "n": U64()}),
            &["holder", "n"],
        );
        assert_eq!(
            issues(old.clone(), new.clone()),
            [(
                "holder".into(),
                IssueKind::Missing {
                    instead: Some("owner".into())
                }
            )]
        );
        let added = object(
            json!({"owner": {"type": "string"}, "n": U64(), "c": {"type": "string"}}),
            &["owner", "n", "c"],
        );
        assert_eq!(
            issues(old.clone(), added),
            [("c".into(), IssueKind::Missing { instead: None })]
        );
        let defaulted = object(
            json!({"owner": {"type": "string"}, "n": U64(), "c": {"type": "string", "default": ""}}),
            &["owner", "n"],
        );
        assert_eq!(issues(old.clone(), defaulted), []);
        let optional_before = object(
            json!({"owner": {"type": ["string", "null"]}, "n": U64()}),
            &["n"],
        );
        let required_after = object(
            json!({"owner": {"type": ["string", "null"]}, "n": U64()}),
            &["owner", "n"],
        );
        assert_eq!(
            issues(optional_before, required_after),
            [("owner".into(), IssueKind::NotAlways)]
        );
    }

    #[test]
    fn types_are_compared_with_integer_ranges() {
        let wide = object(json!({"n": U64()}), &["n"]);
        let narrow = object(json!({"n": U32()}), &["n"]);
        assert_eq!(issues(narrow.clone(), wide.clone()), []);
        assert_eq!(
            issues(wide.clone(), narrow),
            [(
                "n".into(),
                IssueKind::Type {
                    writer: "integer (uint64)".into(),
                    reader: "integer (uint32)".into()
                }
            )]
        );
        let number = object(json!({"n": {"type": "number", "format": "double"}}), &["n"]);
        assert_eq!(issues(wide.clone(), number.clone()), []);
        let string = object(json!({"n": {"type": "string"}}), &["n"]);
        assert_eq!(
            issues(wide, string),
            [(
                "n".into(),
                IssueKind::Type {
                    writer: "integer (uint64)".into(),
                    reader: "string".into()
                }
            )]
        );
        let nullable = object(json!({"n": {"type": ["number", "null"]}}), &[]);
        assert_eq!(
            issues(nullable, number),
            [
                ("n".into(), IssueKind::NotAlways),
                (
                    "n".into(),
                    IssueKind::Type {
                        writer: "number or null".into(),
                        reader: "number".into()
                    }
                ),
            ]
        );
    }

    #[test]
    fn enums_lose_values_and_variants() {
        let root = |values: Value, variants: Value| {
            json!({
                "type": "object",
                "properties": {"c": {"$ref": "#/$defs/C"}, "s": {"$ref": "#/$defs/S"}},
                "required": ["c", "s"],
                "$defs": {"C": {"type": "string", "enum": values}, "S": {"oneOf": variants}},
            })
        };
        let tagged = |tag: &str, content: Value| json!({"type": "object", "properties": {tag: content}, "required": [tag], "additionalProperties": false});
        let old = root(
            json!(["Eur", "Usd"]),
            json!([{"type": "string", "const": "Idle"}, tagged("Busy", U32())]),
        );
        let new = root(
            json!(["Eur"]),
            json!([{"type": "string", "const": "Idle"}, tagged("Busy", U64()), tagged("Away", U64())]),
        );
        assert_eq!(
            issues(old.clone(), new.clone()),
            [(
                "c".into(),
                IssueKind::Value {
                    value: "Usd".into()
                }
            )]
        );
        assert_eq!(
            issues(new, old),
            [
                (
                    "s.Busy".into(),
                    IssueKind::Type {
                        writer: "integer (uint64)".into(),
                        reader: "integer (uint32)".into()
                    }
                ),
                (
                    "s".into(),
                    IssueKind::Variant {
                        variant: "Away".into()
                    }
                ),
            ]
        );
    }

    #[test]
    fn nested_objects_arrays_maps_and_unknown_fields() {
        let line = |amount: Value| object(json!({"amount": amount}), &["amount"]);
        let doc = |amount: Value, strict: bool| {
            let mut d = object(
                json!({
                    "lines": {"type": "array", "items": line(amount.clone())},
                    "pair": {"type": "array", "prefixItems": [amount.clone(), {"type": "string"}]},
                    "by_name": {"type": "object", "additionalProperties": amount},
                }),
                &["lines", "pair", "by_name"],
            );
            if strict {
                d["additionalProperties"] = json!(false);
            }
            d
        };
        assert_eq!(
            issues(doc(U64(), false), doc(U32(), false))
                .into_iter()
                .map(|(p, _)| p)
                .collect::<Vec<_>>(),
            ["by_name.*", "lines[].amount", "pair[0]"]
        );
        let mut extra = doc(U64(), false);
        extra["properties"]["note"] = json!({"type": "string"});
        assert_eq!(issues(extra.clone(), doc(U64(), false)), []);
        assert_eq!(
            issues(extra, doc(U64(), true)),
            [("note".into(), IssueKind::Unknown)]
        );
    }

    #[test]
    fn recursive_types_terminate() {
        let tree = json!({
            "$ref": "#/$defs/Node",
            "$defs": {"Node": {"type": "object", "properties": {
                "kids": {"type": "array", "items": {"$ref": "#/$defs/Node"}}}, "required": ["kids"]}}
        });
        assert_eq!(issues(tree.clone(), tree), []);
    }

    #[test]
    fn unit_payloads_and_descriptions() {
        assert_eq!(issues(json!({"type": "null"}), json!({"type": "null"})), []);
        assert_eq!(
            issues(json!({"type": "null"}), object(json!({}), &[])),
            [(
                String::new(),
                IssueKind::Type {
                    writer: "null".into(),
                    reader: "object".into()
                }
            )]
        );
        assert_eq!(
            describe(&alternatives(
                &json!({}),
                &json!({"enum": ["a", "b", null]})
            )),
            "one of \"a\", \"b\" or null"
        );
        assert_eq!(describe_range(Range { min: 1, max: 9 }), "1 to 9");
    }
}
