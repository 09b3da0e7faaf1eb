//! The schema folder: where each file goes, how it is written (stable, diff-friendly JSON)
//! and how a committed folder is read back.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{SchemaError, Subject};

/// The key holding what Keel knows about a file: aggregate, event type and version, or
/// command. JSON Schema tools ignore keywords they do not know.
pub(crate) const META: &str = "x-keel";

/// `<kind>/events/<EventType>.v<N>.json` or `<kind>/commands/<command>.json`. A `:` in a
/// type name (allowed in type names, not in every file system's names) is written `%3A`.
pub(crate) fn relative_path(aggregate: &str, subject: &Subject) -> PathBuf {
    let mut path = PathBuf::from(aggregate);
    match subject {
        Subject::Event {
            event_type,
            version,
        } => {
            path.push("events");
            path.push(format!(
                "{}.v{version}.json",
                event_type.replace(':', "%3A")
            ));
        }
        Subject::Command { name } => {
            path.push("commands");
            path.push(format!("{name}.json"));
        }
    }
    path
}

/// `x-keel` for a file.
pub(crate) fn meta(aggregate: &str, subject: &Subject, aliases: &[&str]) -> Map<String, Value> {
    let mut meta = Map::new();
    meta.insert("aggregate".into(), Value::String(aggregate.to_owned()));
    match subject {
        Subject::Event {
            event_type,
            version,
        } => {
            meta.insert("event_type".into(), Value::String(event_type.clone()));
            meta.insert("schema_version".into(), Value::from(*version));
            if !aliases.is_empty() {
                meta.insert("aliases".into(), Value::from(aliases.to_vec()));
            }
        }
        Subject::Command { name } => {
            meta.insert("command".into(), Value::String(name.clone()));
        }
    }
    let mut outer = Map::new();
    outer.insert(META.into(), Value::Object(meta));
    outer
}

/// The file's text: keys sorted at every level, two-space indents, a final newline, so the
/// same schema is always the same bytes and a change is a small diff.
pub(crate) fn canonical(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let mut out = Map::new();
                for key in keys {
                    if let Some(v) = map.get(key) {
                        out.insert(key.clone(), sorted(v));
                    }
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    // Serialising a `Value` cannot fail (its keys are strings).
    let mut text = serde_json::to_string_pretty(&sorted(value)).unwrap_or_default();
    text.push('\n');
    text
}

/// A committed folder, read back.
#[derive(Debug, Default)]
pub(crate) struct Committed {
    pub(crate) aggregates: BTreeMap<String, CommittedAggregate>,
}

/// One aggregate's committed schemas.
#[derive(Debug, Default)]
pub(crate) struct CommittedAggregate {
    /// Per event type, per version.
    pub(crate) events: BTreeMap<String, BTreeMap<u32, Value>>,
    /// Per command.
    pub(crate) commands: BTreeMap<String, Value>,
}

/// Reads every `*.json` under `<dir>/<kind>/events` and `<dir>/<kind>/commands`; other
/// files (a README) are left alone. A missing folder reads as empty.
pub(crate) fn read(dir: &Path) -> Result<Committed, SchemaError> {
    let mut committed = Committed::default();
    if !dir.exists() {
        return Ok(committed);
    }
    for kind_dir in entries(dir)? {
        if !kind_dir.is_dir() {
            continue;
        }
        for (section, is_events) in [("events", true), ("commands", false)] {
            let section_dir = kind_dir.join(section);
            if !section_dir.is_dir() {
                continue;
            }
            for path in entries(&section_dir)? {
                if path.extension().and_then(|e| e.to_str()) != Some("json") {
                    continue;
                }
                read_file(&path, is_events, &mut committed)?;
            }
        }
    }
    Ok(committed)
}

fn entries(dir: &Path) -> Result<Vec<PathBuf>, SchemaError> {
    let io = |source| SchemaError::Io {
        action: "read the folder",
        path: dir.to_owned(),
        source,
    };
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        paths.push(entry.map_err(io)?.path());
    }
    paths.sort();
    Ok(paths)
}

fn read_file(path: &Path, is_events: bool, committed: &mut Committed) -> Result<(), SchemaError> {
    let malformed = |reason: &str| SchemaError::Malformed {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let text = fs::read_to_string(path).map_err(|source| SchemaError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })?;
    let schema: Value = serde_json::from_str(&text).map_err(|e| malformed(&e.to_string()))?;
    let meta = schema
        .get(META)
        .and_then(Value::as_object)
        .ok_or_else(|| malformed("no `x-keel` object"))?;
    let text_of = |key: &str| {
        meta.get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| malformed(&format!("no `x-keel.{key}` string")))
    };
    let aggregate = committed
        .aggregates
        .entry(text_of("aggregate")?)
        .or_default();
    if is_events {
        let event_type = text_of("event_type")?;
        let version = meta
            .get("schema_version")
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| malformed("no `x-keel.schema_version` (a u32)"))?;
        aggregate
            .events
            .entry(event_type)
            .or_default()
            .insert(version, schema);
    } else {
        aggregate.commands.insert(text_of("command")?, schema);
    }
    Ok(())
}

/// Writes `text` to `path` through a temporary file, synced and renamed over it, so a crash
/// leaves the old file or the new one, never half of one.
pub(crate) fn write_atomic(path: &Path, text: &str) -> Result<(), SchemaError> {
    let io = |action, source| SchemaError::Io {
        action,
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    fs::create_dir_all(dir).map_err(|e| io("create the folder of", e))?;
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    let tmp = dir.join(name);
    let mut file = fs::File::create(&tmp).map_err(|e| io("write", e))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io("write", e))?;
    fs::rename(&tmp, path).map_err(|e| io("write", e))?;
    if let Ok(dir) = fs::File::open(dir) {
        // Best effort: not every platform syncs a directory.
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn paths_name_the_aggregate_type_and_version() {
        let event = Subject::Event {
            event_type: "shop:Ordered".into(),
            version: 3,
        };
        assert_eq!(
            relative_path("order", &event),
            Path::new("order/events/shop%3AOrdered.v3.json")
        );
        let command = Subject::Command {
            name: "place".into(),
        };
        assert_eq!(
            relative_path("order", &command),
            Path::new("order/commands/place.json")
        );
    }

    #[test]
    fn canonical_text_sorts_keys_at_every_level() {
        let value = json!({"b": 1, "a": {"z": [ {"y": 1, "x": 2} ], "c": null}});
        assert_eq!(
            canonical(&value),
            "{\n  \"a\": {\n    \"c\": null,\n    \"z\": [\n      {\n        \"x\": 2,\n        \"y\": 1\n      }\n    ]\n  },\n  \"b\": 1\n}\n"
        );
    }

    #[test]
    fn a_folder_reads_back_and_bad_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let event = Subject::Event {
            event_type: "Opened".into(),
            version: 2,
        };
        let mut schema = json!({"type": "object"});
        if let Some(map) = schema.as_object_mut() {
            map.extend(meta("account", &event, &["Old"]));
        }
        let path = dir.path().join(relative_path("account", &event));
        write_atomic(&path, &canonical(&schema)).expect("written");
        fs::write(dir.path().join("README.md"), "notes").expect("readme");
        let read_back = read(dir.path()).expect("reads");
        let account = read_back.aggregates.get("account").expect("account");
        assert_eq!(account.events["Opened"][&2], schema);
        assert!(
            read(&dir.path().join("missing"))
                .expect("empty")
                .aggregates
                .is_empty()
        );

        fs::write(dir.path().join("account/events/Bad.v1.json"), "{}").expect("bad");
        let error = read(dir.path()).expect_err("no x-keel");
        assert!(error.to_string().contains("Bad.v1.json"), "{error}");
        assert!(error.to_string().contains("x-keel"), "{error}");
    }
}
