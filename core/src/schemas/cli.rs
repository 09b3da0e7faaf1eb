//! The command line an app embeds: `schemas export DIR` and `schemas check DIR [--mode
//! backward|forward|full] [--exported]`.
//!
//! ```no_run
//! use clap::Parser;
//! use keel::schemas::{Registry, cli::SchemasArgs};
//!
//! #[derive(Parser)]
//! enum Cli {
//!     /// Export and check the JSON Schemas of the app's events and commands.
//!     Schemas(SchemasArgs),
//! }
//!
//! # fn registry() -> Registry { Registry::new() }
//! # fn main() -> Result<(), keel::schemas::SchemaError> {
//! match Cli::parse() {
//!     Cli::Schemas(args) => keel::schemas::cli::run(&registry(), args)?,
//! }
//! # Ok(()) }
//! ```
//!
//! `check` prints every breaking change, one a line, naming the aggregate, the event type or
//! command, the field and the rule, then fails ([`SchemaError::Incompatible`]), so a test or
//! a CI step can run it as is.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{Compatibility, Registry, SchemaError};

/// `schemas ...`: export and check the JSON Schemas of events and commands.
#[derive(Debug, Clone, Args)]
pub struct SchemasArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: SchemasCommand,
}

/// The `schemas` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum SchemasCommand {
    /// Write the JSON Schema of every event type (one file per schema version) and command
    /// into a folder, to commit.
    Export {
        /// The folder (`schemas/`).
        dir: PathBuf,
    },
    /// Compare the code's schemas with those committed in a folder; fail on a change that
    /// breaks a reader.
    Check {
        /// The folder (`schemas/`).
        dir: PathBuf,
        /// Which readers must not break: backward (this code reads every stored event),
        /// forward (readers on the committed schemas read what this code writes), or full.
        #[arg(long, value_enum, default_value_t = Compatibility::Backward)]
        mode: Compatibility,
        /// Also fail when a compatible change is not exported and committed yet.
        #[arg(long)]
        exported: bool,
    },
}

/// Runs a `schemas` command against `registry`, printing to standard output.
///
/// # Errors
///
/// [`SchemaError::Incompatible`] when `check` finds a breaking change,
/// [`SchemaError::NotExported`] with `--exported`, or what reading and writing the folder
/// met.
pub fn run(registry: &Registry, args: SchemasArgs) -> Result<(), SchemaError> {
    let mut out = std::io::stdout().lock();
    run_to(registry, args, &mut out)?;
    out.flush().map_err(SchemaError::Output)
}

/// [`run`], printing to `out`.
///
/// # Errors
///
/// As [`run`].
pub fn run_to(
    registry: &Registry,
    args: SchemasArgs,
    out: &mut dyn Write,
) -> Result<(), SchemaError> {
    match args.command {
        SchemasCommand::Export { dir } => {
            let exported = registry.export(&dir)?;
            for path in &exported.written {
                writeln!(out, "wrote {}", dir.join(path).display()).map_err(SchemaError::Output)?;
            }
            writeln!(
                out,
                "{} written, {} unchanged in {}",
                exported.written.len(),
                exported.unchanged,
                dir.display()
            )
            .map_err(SchemaError::Output)
        }
        SchemasCommand::Check {
            dir,
            mode,
            exported,
        } => {
            let report = registry.check(&dir, mode)?;
            writeln!(out, "{report}").map_err(SchemaError::Output)?;
            if !report.is_compatible() {
                return Err(SchemaError::Incompatible {
                    count: report.breaking.len(),
                    mode,
                });
            }
            if exported && !report.is_up_to_date() {
                return Err(SchemaError::NotExported {
                    count: report.outdated.len(),
                });
            }
            Ok(())
        }
    }
}
