//! Schemas are the API: export the JSON Schema of every event and command an app has, and
//! check a change against the committed ones, the way a schema registry checks a Kafka
//! topic's, but at build time.
//!
//! An app lists its aggregates once, in a [`Registry`]; the derives provide the rest (each
//! event type's name, version, aliases and upcasters, and the schemas schemars derives):
//!
//! ```
//! use keel::prelude::*;
//! use keel::schemas::{Compatibility, Registry};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug)]
//! pub enum CounterEvent { Incremented { by: u32 } }
//!
//! #[derive(Aggregate, Default)]
//! #[aggregate(kind = "counter", event = CounterEvent, error = std::convert::Infallible)]
//! pub struct Counter { total: u64 }
//!
//! impl Apply<CounterEvent> for Counter {
//!     fn apply(&mut self, CounterEvent::Incremented { by }: &CounterEvent) {
//!         self.total += u64::from(*by);
//!     }
//! }
//!
//! #[keel::commands]
//! impl Counter {
//!     pub fn increment(&self, by: u32) -> CounterEvent { CounterEvent::Incremented { by } }
//! }
//!
//! let registry = Registry::new().aggregate::<Counter>();
//! let dir = tempfile::tempdir()?;
//! registry.export(dir.path())?;
//! assert!(dir.path().join("counter/events/Incremented.v1.json").exists());
//! assert!(dir.path().join("counter/commands/increment.json").exists());
//!
//! let report = registry.check(dir.path(), Compatibility::Backward)?;
//! assert!(report.is_compatible() && report.is_up_to_date());
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```
//!
//! ## The folder
//!
//! ```text
//! schemas/
//!   account/                       one folder per aggregate kind
//!     events/
//!       Opened.v1.json             one file per event type and schema version
//!       Opened.v2.json             (older versions stay: stored records still have them)
//!       Deposited.v1.json
//!     commands/
//!       deposit.json               one file per command (commands have no versions)
//! ```
//!
//! Each file is a JSON Schema (draft 2020-12) of what is stored or sent: an event's payload
//! (the variant's content, `{"amount":5}`; `null` for a unit variant), a command's JSON
//! (`{"command":"deposit","amount":5}`), with the definitions it uses under `$defs`, and an
//! `x-keel` object naming the aggregate, the event type, its schema version and old names
//! (or the command). The schemas are those a reader needs (serde's deserialising side: a
//! field with a default is not required). Keys are sorted at every level, indented by two
//! spaces, with a final newline: the same schema is always the same bytes, and a change is a
//! small diff in review. [`Registry::export`] writes the code's current files and never
//! deletes one.
//!
//! ## The check
//!
//! [`Registry::check`] compares the code with the committed folder under a [`Compatibility`]
//! mode and lists each breaking change as a [`Finding`] naming the aggregate, the event type
//! (or command), the field and the [`Rule`]:
//!
//! | change | backward | forward |
//! |---|---|---|
//! | new optional field, or one with `#[serde(default)]` | ✓ | ✓ |
//! | new required field without a default | ✗ | ✓ |
//! | removed optional field | ✓ | ✓ |
//! | removed required field | ✓ | ✗ |
//! | renamed required field | ✗ | ✗ |
//! | changed type (`u64` → `String`) | ✗ | ✗ |
//! | widened integer (`u32` → `u64`) | ✓ | ✗ |
//! | removed event type | ✗ (unless `ignore`d) | ✓ |
//! | renamed event type, the old name an alias | ✓ | ✗ |
//! | new event type | ✓ | ✗ |
//! | removed / new enum value or variant in a field | ✗ / ✓ | ✓ / ✗ |
//! | schema version bumped, with upcasters from every committed version | ✓ | ✗ |
//! | schema version bumped without them | ✗ | ✗ |
//!
//! `backward` (the default) protects the events already stored: this code must read them.
//! `forward` protects readers still on the committed schemas (another service consuming
//! the topic, the old build during a rolling deploy); `full` is both. A bumped version is
//! never forward compatible: an old build refuses records newer than its code. A change the
//! check cannot judge (the body of an upcaster) is the upcaster's tests' business. Commands
//! are checked by the same rules, the caller being the writer and the aggregate the reader.
//!
//! A compatible change that is not exported yet is listed in [`CheckReport::outdated`]: run
//! export and commit, so that the next change is judged against it.
//!
//! With the `cli` feature, `keel::schemas::cli` (`schemas export DIR`, `schemas check DIR
//! [--mode backward|forward|full] [--exported]`) is the command line an app embeds.

mod check;
#[cfg(feature = "cli")]
pub mod cli;
mod compat;
mod extract;
mod layout;

use std::fmt;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::Value;

use crate::aggregate::Handle;
use crate::event::{Event, EventTypeInfo};

pub use check::{CheckReport, Compatibility, Direction, Finding, Rule};

/// The aggregates of an app, whose event and command schemas it exports and checks.
///
/// Build it once, listing each aggregate: `Registry::new().aggregate::<Account>()`. It needs
/// from an aggregate what the derives give: its kind, its event enum (`#[derive(Event,
/// JsonSchema)]`) and its command enum (`#[keel::commands]`).
#[derive(Debug, Clone, Default)]
pub struct Registry {
    entries: Vec<Entry>,
}

/// One registered aggregate.
#[derive(Debug, Clone)]
struct Entry {
    kind: &'static str,
    event_enum: &'static str,
    types: &'static [EventTypeInfo],
    ignored: &'static [&'static str],
    /// The root JSON Schema of the event enum.
    events: Value,
    /// The root JSON Schema of the command enum.
    commands: Value,
}

/// What one exported file describes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Subject {
    /// An event type at a schema version.
    Event {
        /// The stored type name.
        event_type: String,
        /// The schema version.
        version: u32,
    },
    /// A command.
    Command {
        /// The command's name (`deposit`).
        name: String,
    },
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Event {
                event_type,
                version,
            } => write!(f, "event `{event_type}` v{version}"),
            Self::Command { name } => write!(f, "command `{name}`"),
        }
    }
}

/// One schema file, as [`Registry::export`] writes it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SchemaFile {
    /// The aggregate kind.
    pub aggregate: String,
    /// The event type and version, or the command.
    pub subject: Subject,
    /// Where it goes, relative to the schema folder.
    pub path: PathBuf,
    /// The JSON Schema, `x-keel` included.
    pub schema: Value,
}

impl SchemaFile {
    /// The file's text: sorted keys, two-space indents, a final newline.
    pub fn contents(&self) -> String {
        layout::canonical(&self.schema)
    }
}

/// What [`Registry::export`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Exported {
    /// Files written (new or changed), relative to the folder.
    pub written: Vec<PathBuf>,
    /// How many files were already up to date.
    pub unchanged: usize,
}

/// Why schemas could not be exported or checked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// A file or folder could not be read or written.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A committed file is not one `export` writes (not JSON, or no `x-keel`).
    #[error("{} is not a schema file keel exports: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Two registered aggregates have the same kind.
    #[error("aggregate kind `{kind}` is registered twice")]
    DuplicateAggregate {
        /// The kind.
        kind: String,
    },
    /// The event enum's JSON Schema has no variant for one of its types (skipped with
    /// `#[schemars(skip)]`, or a `JsonSchema` written by hand).
    #[error(
        "aggregate `{aggregate}`: the JSON Schema of `{event_enum}` has no variant `{variant}` \
         (event type `{event_type}`); derive `JsonSchema` on the enum and skip no variant"
    )]
    MissingVariant {
        /// The aggregate kind.
        aggregate: String,
        /// The event enum's Rust type.
        event_enum: String,
        /// The event type.
        event_type: String,
        /// The variant's serde name.
        variant: String,
    },
    /// The event enum describes no types (`Event::TYPE_INFO` is empty: a hand-written impl).
    #[error(
        "aggregate `{aggregate}`: `{event_enum}` describes no event types; derive `Event` on it"
    )]
    NoTypeInfo {
        /// The aggregate kind.
        aggregate: String,
        /// The event enum's Rust type.
        event_enum: String,
    },
    /// `schemas check` found breaking changes (listed in the report printed before).
    #[error("{count} breaking schema change(s) under {mode} compatibility")]
    Incompatible {
        /// How many.
        count: usize,
        /// The mode checked.
        mode: Compatibility,
    },
    /// The command line's output could not be written.
    #[error("cannot write the output")]
    Output(#[source] std::io::Error),
    /// `schemas check --exported` found schema files to export.
    #[error("{count} schema file(s) not exported yet: run `schemas export` and commit them")]
    NotExported {
        /// How many.
        count: usize,
    },
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an aggregate: its event types and its commands.
    #[must_use]
    pub fn aggregate<A>(mut self) -> Self
    where
        A: Handle,
        A::Event: JsonSchema,
        <A as Handle>::Command: JsonSchema,
    {
        self.entries.push(Entry {
            kind: A::KIND,
            event_enum: std::any::type_name::<A::Event>(),
            types: <A::Event as Event>::TYPE_INFO,
            ignored: <A::Event as Event>::IGNORED_TYPES,
            events: root_schema::<A::Event>(),
            commands: root_schema::<<A as Handle>::Command>(),
        });
        self
    }

    /// The aggregate kinds registered, in order.
    pub fn kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.entries.iter().map(|e| e.kind)
    }

    /// Every schema file of the code's current event types and commands, by path.
    ///
    /// # Errors
    ///
    /// [`SchemaError::DuplicateAggregate`], [`SchemaError::MissingVariant`] or
    /// [`SchemaError::NoTypeInfo`].
    pub fn files(&self) -> Result<Vec<SchemaFile>, SchemaError> {
        let mut files = Vec::new();
        for (i, entry) in self.entries.iter().enumerate() {
            if self.entries.iter().take(i).any(|e| e.kind == entry.kind) {
                return Err(SchemaError::DuplicateAggregate {
                    kind: entry.kind.to_owned(),
                });
            }
            entry.files(&mut files)?;
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    /// Writes the code's schema files under `dir` (created if missing), one per event type
    /// and schema version and one per command; files already holding the same text are left
    /// alone, and none is deleted (older versions stay, for the records that have them).
    ///
    /// # Errors
    ///
    /// As [`files`](Self::files), or [`SchemaError::Io`].
    pub fn export(&self, dir: &Path) -> Result<Exported, SchemaError> {
        let mut exported = Exported::default();
        for file in self.files()? {
            let path = dir.join(&file.path);
            let text = file.contents();
            if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
                exported.unchanged += 1;
                continue;
            }
            layout::write_atomic(&path, &text)?;
            exported.written.push(file.path);
        }
        Ok(exported)
    }

    /// Compares the code's schemas with those committed under `dir`, under `mode`.
    ///
    /// # Errors
    ///
    /// As [`files`](Self::files), [`SchemaError::Io`] or [`SchemaError::Malformed`]. Breaking
    /// changes are not errors: they are the report's [`breaking`](CheckReport::breaking).
    pub fn check(&self, dir: &Path, mode: Compatibility) -> Result<CheckReport, SchemaError> {
        let files = self.files()?;
        let committed = layout::read(dir)?;
        let breaking = check::check(&self.entries, &files, &committed, mode);
        let outdated = files
            .iter()
            .filter(|f| {
                std::fs::read_to_string(dir.join(&f.path)).map_or(true, |old| old != f.contents())
            })
            .map(|f| f.path.clone())
            .collect();
        Ok(CheckReport {
            mode,
            breaking,
            outdated,
        })
    }
}

impl Entry {
    fn files(&self, files: &mut Vec<SchemaFile>) -> Result<(), SchemaError> {
        if self.types.is_empty() {
            return Err(SchemaError::NoTypeInfo {
                aggregate: self.kind.to_owned(),
                event_enum: self.event_enum.to_owned(),
            });
        }
        let variants = extract::variants(&self.events);
        for info in self.types {
            let Some((_, content)) = variants.iter().find(|(tag, _)| tag == info.variant) else {
                return Err(SchemaError::MissingVariant {
                    aggregate: self.kind.to_owned(),
                    event_enum: self.event_enum.to_owned(),
                    event_type: info.name.to_owned(),
                    variant: info.variant.to_owned(),
                });
            };
            let subject = Subject::Event {
                event_type: info.name.to_owned(),
                version: info.version,
            };
            files.push(self.file(
                &self.events,
                subject,
                content.clone(),
                info.name,
                info.aliases,
            ));
        }
        for (name, schema) in extract::tagged(&self.commands, "command") {
            let subject = Subject::Command { name: name.clone() };
            files.push(self.file(&self.commands, subject, schema, &name, &[]));
        }
        Ok(())
    }

    fn file(
        &self,
        root: &Value,
        subject: Subject,
        schema: Value,
        title: &str,
        aliases: &[&str],
    ) -> SchemaFile {
        let meta = layout::meta(self.kind, &subject, aliases);
        SchemaFile {
            aggregate: self.kind.to_owned(),
            path: layout::relative_path(self.kind, &subject),
            schema: extract::standalone(root, schema, title, meta),
            subject,
        }
    }
}

/// The root schema of a type as readers need it (serde's deserialising side), in draft
/// 2020-12.
fn root_schema<T: JsonSchema>() -> Value {
    SchemaSettings::draft2020_12()
        .for_deserialize()
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value()
}
