//! The compatibility check: the code's schemas against the committed ones, under a mode.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde_json::Value;

use super::compat::{self, IssueKind};
use super::layout::{Committed, CommittedAggregate};
use super::{Entry, SchemaFile, Subject};

/// Which readers a change must not break, as a schema registry's compatibility modes.
///
/// | mode | who must still read | what may change |
/// |---|---|---|
/// | `backward` (default) | this code, the events already stored | add optional fields or defaults, remove fields, add types; bump a version with upcasters |
/// | `forward` | readers on the committed schemas (other services, the build still running in a rolling deploy), what this code writes | add fields, remove optional fields, remove types |
/// | `full` | both | add or remove optional fields |
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[non_exhaustive]
pub enum Compatibility {
    /// This code reads every event already stored (new reader, old writer).
    #[default]
    Backward,
    /// Readers on the committed schemas read what this code writes (old reader, new writer).
    Forward,
    /// Both.
    Full,
}

impl Compatibility {
    fn directions(self) -> &'static [Direction] {
        match self {
            Self::Backward => &[Direction::Backward],
            Self::Forward => &[Direction::Forward],
            Self::Full => &[Direction::Backward, Direction::Forward],
        }
    }
}

impl fmt::Display for Compatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Backward => "backward",
            Self::Forward => "forward",
            Self::Full => "full",
        })
    }
}

impl FromStr for Compatibility {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "backward" => Ok(Self::Backward),
            "forward" => Ok(Self::Forward),
            "full" => Ok(Self::Full),
            other => Err(format!(
                "unknown compatibility mode `{other}`: expected backward, forward or full"
            )),
        }
    }
}

/// Which side of a change breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Direction {
    /// This code cannot read what the committed schema allowed (stored events).
    Backward,
    /// A reader on the committed schema cannot read what this code writes.
    Forward,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Backward => "backward",
            Self::Forward => "forward",
        })
    }
}

/// What a breaking change is, by the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rule {
    /// A required field is gone: readers on the committed schema require it.
    RemovedRequiredField,
    /// A required field has a new name: each side requires its own.
    RenamedRequiredField {
        /// The old name (the finding's field is the new one).
        from: String,
    },
    /// A new required field has no default: stored events lack it.
    NewRequiredFieldWithoutDefault,
    /// A field that was optional is now required: stored events may lack it.
    FieldNowRequired,
    /// A field (or the payload) holds another type.
    ChangedType {
        /// The committed schema's type.
        from: String,
        /// The code's.
        to: String,
    },
    /// A string value an enum accepted is gone: stored events may hold it.
    RemovedValue {
        /// The value.
        value: String,
    },
    /// A string value is new: readers on the committed schema refuse it.
    AddedValue {
        /// The value.
        value: String,
    },
    /// A variant of a nested enum is gone: stored events may hold it.
    RemovedVariant {
        /// The variant's tag.
        variant: String,
    },
    /// A variant of a nested enum is new: readers on the committed schema do not know it.
    AddedVariant {
        /// The variant's tag.
        variant: String,
    },
    /// The reader denies unknown fields (`#[serde(deny_unknown_fields)]`) and the writer has
    /// this one.
    UnknownFieldRefused,
    /// An event type (or command) is gone.
    RemovedType,
    /// An event type (or command) is new: readers on the committed schema fail on it.
    AddedType,
    /// An event type is written under a new name (its old one an alias): readers on the
    /// committed schema do not know the new name.
    RenamedType {
        /// The committed name.
        from: String,
    },
    /// The schema version went up but no upcaster leads from `missing` to the next.
    MissingUpcaster {
        /// The committed version.
        from: u32,
        /// The first version with no upcaster to the next.
        missing: u32,
    },
    /// The schema version went up: readers on the committed schema refuse the new version.
    VersionBumped {
        /// The committed version.
        from: u32,
    },
    /// The code's schema version is below the committed one.
    VersionLowered {
        /// The committed version.
        from: u32,
    },
    /// The folder holds schemas of an aggregate the registry does not list.
    UnregisteredAggregate,
}

impl Rule {
    /// What breaks, and what to do about it.
    fn explain(&self, subject: Option<&Subject>) -> String {
        let command = matches!(subject, Some(Subject::Command { .. }));
        // Who holds documents of the committed schema, and the way out of a breaking change.
        let (lack, may_lack, may_hold, fix) = if command {
            (
                "callers on the committed schema do not send it",
                "callers on the committed schema may leave it out",
                "callers on the committed schema may send it",
                "",
            )
        } else {
            (
                "stored events lack it",
                "stored events may lack it",
                "stored events may hold it",
                ", or bump the version with an upcaster",
            )
        };
        match self {
            Self::RemovedRequiredField => {
                "removed required field: readers on the committed schema require it".to_owned()
            }
            Self::RenamedRequiredField { from } => format!(
                "renamed required field (from `{from}`): readers of either version require \
                 their own name (keep the old name with `#[serde(rename)]`{fix})"
            ),
            Self::NewRequiredFieldWithoutDefault => format!(
                "new required field without a default: {lack} (give it `#[serde(default)]` or \
                 make it an `Option`{fix})"
            ),
            Self::FieldNowRequired => {
                format!("field now required: {may_lack} (give it `#[serde(default)]`{fix})")
            }
            Self::ChangedType { from, to } => format!("changed type from {from} to {to}"),
            Self::RemovedValue { value } => format!("removed value {value:?}: {may_hold}"),
            Self::AddedValue { value } => {
                format!("new value {value:?}: readers on the committed schema refuse it")
            }
            Self::RemovedVariant { variant } => {
                format!("removed variant `{variant}`: {may_hold}")
            }
            Self::AddedVariant { variant } => {
                format!("new variant `{variant}`: readers on the committed schema do not know it")
            }
            Self::UnknownFieldRefused => {
                "field refused: the reader denies unknown fields".to_owned()
            }
            Self::RemovedType if command => {
                "removed command: callers on the committed schema still send it".to_owned()
            }
            Self::RemovedType => concat!(
                "removed event type: its stored records no longer load (keep the variant, give ",
                "its new name `aliases = [...]`, or declare it `#[event(ignore = [...])]` on the ",
                "enum)"
            )
            .to_owned(),
            Self::AddedType if command => {
                "new command: services on the committed schema do not know it".to_owned()
            }
            Self::AddedType => {
                "new event type: readers on the committed schema fail on it (unknown type)"
                    .to_owned()
            }
            Self::RenamedType { from } => format!(
                "renamed event type (from `{from}`): readers on the committed schema do not \
                 know the new name"
            ),
            Self::MissingUpcaster { from, missing } => format!(
                "schema version bumped from {from} without an upcaster from version \
                 {missing}: stored records of version {from} no longer load (add \
                 `upcast(from = {missing}, with = ...)`)"
            ),
            Self::VersionBumped { from } => format!(
                "schema version bumped from {from}: readers on the committed schema refuse \
                 records of a newer version (upgrade them first)"
            ),
            Self::VersionLowered { from } => format!(
                "schema version lowered from {from}: records of version {from} are newer than \
                 this code"
            ),
            Self::UnregisteredAggregate => "committed schemas of an aggregate the registry does \
                                            not list (register it, or delete its folder)"
                .to_owned(),
        }
    }
}

/// One breaking change: where, which rule, which direction breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Finding {
    /// The aggregate kind.
    pub aggregate: String,
    /// The event type or command (`None` for a whole aggregate).
    pub subject: Option<Subject>,
    /// The field path (`owner`, `money.currency`, `lines[].amount`), `None` for the payload
    /// or the type as a whole.
    pub field: Option<String>,
    /// The rule the change breaks.
    pub rule: Rule,
    /// Which readers it breaks.
    pub direction: Direction,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "aggregate `{}`", self.aggregate)?;
        if let Some(subject) = &self.subject {
            write!(f, ", {subject}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ", field `{field}`")?;
        }
        write!(
            f,
            ": {} [breaks {}]",
            self.rule.explain(self.subject.as_ref()),
            self.direction
        )
    }
}

/// What [`Registry::check`](super::Registry::check) found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckReport {
    /// The mode checked.
    pub mode: Compatibility,
    /// The breaking changes: empty when the code is compatible.
    pub breaking: Vec<Finding>,
    /// The files `export` would write because they are new or differ (compatible changes
    /// not committed yet), relative to the folder.
    pub outdated: Vec<PathBuf>,
}

impl CheckReport {
    /// Whether no change breaks the mode's readers.
    pub fn is_compatible(&self) -> bool {
        self.breaking.is_empty()
    }

    /// Whether the committed schemas are exactly the code's (nothing for `export` to write).
    pub fn is_up_to_date(&self) -> bool {
        self.outdated.is_empty()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.breaking.is_empty() {
            write!(f, "compatible ({})", self.mode)?;
        } else {
            write!(
                f,
                "{} breaking change{} ({} compatibility):",
                self.breaking.len(),
                if self.breaking.len() == 1 { "" } else { "s" },
                self.mode
            )?;
            for finding in &self.breaking {
                write!(f, "\n  {finding}")?;
            }
        }
        if !self.outdated.is_empty() {
            write!(
                f,
                "\n{} schema file{} to export (new or changed):",
                self.outdated.len(),
                if self.outdated.len() == 1 { "" } else { "s" }
            )?;
            for path in &self.outdated {
                write!(f, "\n  {}", path.display())?;
            }
        }
        Ok(())
    }
}

/// Checks every registered aggregate, and the committed ones no longer registered.
pub(super) fn check(
    entries: &[Entry],
    files: &[SchemaFile],
    committed: &Committed,
    mode: Compatibility,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut out =
        |subject: Option<Subject>, field: Option<String>, rule, direction, aggregate: &str| {
            if mode.directions().contains(&direction) {
                findings.push(Finding {
                    aggregate: aggregate.to_owned(),
                    subject,
                    field,
                    rule,
                    direction,
                });
            }
        };
    for (kind, _) in committed.aggregates.iter() {
        if !entries.iter().any(|e| e.kind == kind) {
            for direction in [Direction::Backward, Direction::Forward] {
                out(None, None, Rule::UnregisteredAggregate, direction, kind);
            }
        }
    }
    for entry in entries {
        // A new aggregate has no readers yet.
        let Some(old) = committed.aggregates.get(entry.kind) else {
            continue;
        };
        let mine: Vec<&SchemaFile> = files.iter().filter(|f| f.aggregate == entry.kind).collect();
        check_events(entry, &mine, old, &mut |s, f, r, d| {
            out(s, f, r, d, entry.kind)
        });
        check_commands(&mine, old, &mut |s, f, r, d| out(s, f, r, d, entry.kind));
    }
    findings
}

type Out<'a> = dyn FnMut(Option<Subject>, Option<String>, Rule, Direction) + 'a;

fn check_events(entry: &Entry, files: &[&SchemaFile], old: &CommittedAggregate, out: &mut Out<'_>) {
    let mut matched: BTreeSet<&str> = BTreeSet::new();
    for info in entry.types {
        let Some(file) = files.iter().find(
            |f| matches!(&f.subject, Subject::Event { event_type, .. } if event_type == info.name),
        ) else {
            continue;
        };
        // The committed history under its name and its old names, newest version first.
        let mut history: Vec<(u32, &str, &Value)> = std::iter::once(info.name)
            .chain(info.aliases.iter().copied())
            .filter_map(|name| old.events.get_key_value(name))
            .flat_map(|(name, versions)| versions.iter().map(move |(v, s)| (*v, name.as_str(), s)))
            .collect();
        matched.insert(info.name);
        matched.extend(info.aliases.iter().copied());
        history.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then((a.1 != info.name).cmp(&(b.1 != info.name)))
        });
        let subject = || Subject::Event {
            event_type: info.name.to_owned(),
            version: info.version,
        };
        let Some(&(latest, _, committed_schema)) = history.first() else {
            out(Some(subject()), None, Rule::AddedType, Direction::Forward);
            continue;
        };
        if !old.events.contains_key(info.name)
            && let Some((_, committed_name, _)) = history.first()
        {
            out(
                Some(subject()),
                None,
                Rule::RenamedType {
                    from: (*committed_name).to_owned(),
                },
                Direction::Forward,
            );
        }
        if info.version < latest {
            for direction in [Direction::Backward, Direction::Forward] {
                out(
                    Some(subject()),
                    None,
                    Rule::VersionLowered { from: latest },
                    direction,
                );
            }
            continue;
        }
        if info.version == latest {
            compare(
                committed_schema,
                &file.schema,
                &mut |field, rule, direction| {
                    out(Some(subject()), field, rule, direction);
                },
            );
        } else {
            out(
                Some(subject()),
                None,
                Rule::VersionBumped { from: latest },
                Direction::Forward,
            );
        }
        // Every committed version is stored somewhere: each must reach the current one
        // through upcasters.
        let oldest = history.iter().map(|(v, ..)| *v).min().unwrap_or(latest);
        if let Some(missing) = info.missing_upcast(oldest) {
            let from = history
                .iter()
                .map(|(v, ..)| *v)
                .filter(|v| *v <= missing)
                .max()
                .unwrap_or(oldest);
            out(
                Some(subject()),
                None,
                Rule::MissingUpcaster { from, missing },
                Direction::Backward,
            );
        }
    }
    for name in old.events.keys() {
        if matched.contains(name.as_str()) || entry.ignored.contains(&name.as_str()) {
            continue;
        }
        let version = old
            .events
            .get(name)
            .and_then(|v| v.keys().next_back())
            .copied()
            .unwrap_or(1);
        out(
            Some(Subject::Event {
                event_type: name.clone(),
                version,
            }),
            None,
            Rule::RemovedType,
            Direction::Backward,
        );
    }
}

fn check_commands(files: &[&SchemaFile], old: &CommittedAggregate, out: &mut Out<'_>) {
    let current: BTreeMap<&str, &Value> = files
        .iter()
        .filter_map(|f| match &f.subject {
            Subject::Command { name } => Some((name.as_str(), &f.schema)),
            Subject::Event { .. } => None,
        })
        .collect();
    for (name, schema) in &current {
        let subject = || Subject::Command {
            name: (*name).to_owned(),
        };
        match old.commands.get(*name) {
            Some(committed) => compare(committed, schema, &mut |field, rule, direction| {
                out(Some(subject()), field, rule, direction);
            }),
            None => out(Some(subject()), None, Rule::AddedType, Direction::Forward),
        }
    }
    for name in old.commands.keys() {
        if !current.contains_key(name.as_str()) {
            out(
                Some(Subject::Command { name: name.clone() }),
                None,
                Rule::RemovedType,
                Direction::Backward,
            );
        }
    }
}

/// Compares a committed schema with the code's, both ways, naming each issue by its rule.
fn compare(
    committed: &Value,
    current: &Value,
    out: &mut dyn FnMut(Option<String>, Rule, Direction),
) {
    let field = |path: String| (!path.is_empty()).then_some(path);
    // Backward: the code reads what the committed schema allowed.
    for issue in compat::reads(committed, current) {
        let rule = match issue.kind {
            IssueKind::Missing {
                instead: Some(from),
            } => Rule::RenamedRequiredField {
                from: last_segment(&from),
            },
            IssueKind::Missing { instead: None } => Rule::NewRequiredFieldWithoutDefault,
            IssueKind::NotAlways => Rule::FieldNowRequired,
            IssueKind::Type { writer, reader } => Rule::ChangedType {
                from: writer,
                to: reader,
            },
            IssueKind::Value { value } => Rule::RemovedValue { value },
            IssueKind::Variant { variant } => Rule::RemovedVariant { variant },
            IssueKind::Unknown => Rule::UnknownFieldRefused,
        };
        out(field(issue.path), rule, Direction::Backward);
    }
    // Forward: readers on the committed schema read what the code writes.
    for issue in compat::reads(current, committed) {
        let (path, rule) = match issue.kind {
            // The old name is the committed reader's; name the new one, as backward does.
            IssueKind::Missing { instead: Some(to) } => (
                to,
                Rule::RenamedRequiredField {
                    from: last_segment(&issue.path),
                },
            ),
            IssueKind::Missing { instead: None } => (issue.path, Rule::RemovedRequiredField),
            // The code writes every field it has (serde writes `None` as `null`): a field
            // that became optional is still written.
            IssueKind::NotAlways => continue,
            IssueKind::Type { writer, reader } => (
                issue.path,
                Rule::ChangedType {
                    from: reader,
                    to: writer,
                },
            ),
            IssueKind::Value { value } => (issue.path, Rule::AddedValue { value }),
            IssueKind::Variant { variant } => (issue.path, Rule::AddedVariant { variant }),
            IssueKind::Unknown => (issue.path, Rule::UnknownFieldRefused),
        };
        out(field(path), rule, Direction::Forward);
    }
}

fn last_segment(path: &str) -> String {
    path.rsplit('.').next().unwrap_or(path).to_owned()
}
