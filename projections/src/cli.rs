//! The command line an app embeds: `projections list | status | rebuild | reset | parked |
//! retry`, with a progress bar on long work and `--json` for machines.
//!
//! ```no_run
//! use clap::Parser;
//! use keel_projections::{Projections, cli::ProjectionsArgs};
//!
//! #[derive(Parser)]
//! enum Cli {
//!     /// Inspect and rebuild read models.
//!     Projections(ProjectionsArgs),
//! }
//!
//! # async fn app(projections: Projections) -> Result<(), keel_projections::Error> {
//! match Cli::parse() {
//!     Cli::Projections(args) => keel_projections::cli::run(&projections, args).await?,
//! }
//! # Ok(()) }
//! ```

use std::io::Write;
use std::time::Duration;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::registry::{AnyProjection, Projections};
use crate::runner::Status;

/// `projections ...`: inspect and rebuild read models.
#[derive(Debug, Clone, Args)]
pub struct ProjectionsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ProjectionsCommand,
}

/// The `projections` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum ProjectionsCommand {
    /// List the projections with their code version and active generation.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Checkpoint, head and lag per partition, and parked events.
    Status {
        /// Only this projection.
        name: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild a view by replaying the log from the start: side by side (readers keep the
    /// current view until the new one has caught up), or in place.
    Rebuild {
        /// The projection.
        name: String,
        /// Drop the view first and rebuild it where it is.
        #[arg(long)]
        in_place: bool,
    },
    /// Drop a view and its checkpoints: the next run replays the whole log.
    Reset {
        /// The projection.
        name: String,
    },
    /// Apply the parked events of a view again; those that succeed leave the list.
    Retry {
        /// The projection.
        name: String,
    },
}

/// Runs a `projections` command against `projections`, printing to standard output.
///
/// # Errors
///
/// An unknown projection, a held lease, a bad event, a store failure.
pub async fn run(projections: &Projections, args: ProjectionsArgs) -> Result<()> {
    let mut out = std::io::stdout().lock();
    run_to(projections, args, &mut out).await
}

fn io(e: std::io::Error) -> Error {
    Error::store("write the output", e)
}

/// [`run`], printing to `out`.
///
/// # Errors
///
/// As [`run`].
pub async fn run_to(
    projections: &Projections,
    args: ProjectionsArgs,
    out: &mut dyn Write,
) -> Result<()> {
    match args.command {
        ProjectionsCommand::List { json } => {
            let mut rows = Vec::new();
            for p in projections.iter() {
                rows.push(p.status().await?);
            }
            if json {
                let list: Vec<_> = rows
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "name": s.name,
                            "code_version": s.code_version,
                            "active": s.active,
                            "building": s.building,
                        })
                    })
                    .collect();
                writeln!(out, "{}", serde_json::Value::Array(list)).map_err(io)?;
            } else {
                writeln!(
                    out,
                    "{:<24} {:>7} {:>11} {:>10}",
                    "NAME", "VERSION", "GENERATION", "LAG"
                )
                .map_err(io)?;
                for s in rows {
                    let generation = s
                        .active
                        .as_ref()
                        .map_or_else(|| "-".to_owned(), |g| g.generation.to_string());
                    writeln!(
                        out,
                        "{:<24} {:>7} {:>11} {:>10}",
                        s.name, s.code_version, generation, s.lag
                    )
                    .map_err(io)?;
                }
            }
        }
        ProjectionsCommand::Status { name, json } => {
            let mut statuses = Vec::new();
            match name {
                Some(name) => statuses.push(projections.get(&name)?.status().await?),
                None => {
                    for p in projections.iter() {
                        statuses.push(p.status().await?);
                    }
                }
            }
            if json {
                let text = serde_json::to_string_pretty(&statuses)
                    .map_err(|e| Error::store("print JSON", e))?;
                writeln!(out, "{text}").map_err(io)?;
            } else {
                for s in &statuses {
                    print_status(out, s).map_err(io)?;
                }
            }
        }
        ProjectionsCommand::Rebuild { name, in_place } => {
            let p = projections.get(&name)?;
            let before = p.status().await?;
            let total: u64 = before.partitions.iter().map(|l| l.head).sum();
            rebuild_with_progress(p.as_ref(), in_place, total).await?;
            let after = p.status().await?;
            let generation = after.active.as_ref().map_or(0, |g| g.generation);
            writeln!(
                out,
                "rebuilt {name} {} from the start: generation {generation}, {} events read, lag {}",
                if in_place { "in place" } else { "side by side" },
                after.partitions.iter().map(|l| l.checkpoint).sum::<u64>(),
                after.lag
            )
            .map_err(io)?;
        }
        ProjectionsCommand::Reset { name } => {
            projections.get(&name)?.reset().await?;
            writeln!(
                out,
                "reset {name}: the next run replays the log from the start"
            )
            .map_err(io)?;
        }
        ProjectionsCommand::Retry { name } => {
            let fixed = projections.get(&name)?.retry_parked().await?;
            let left = projections.get(&name)?.status().await?.parked.len();
            writeln!(
                out,
                "{name}: {fixed} parked events applied, {left} still parked"
            )
            .map_err(io)?;
        }
    }
    Ok(())
}

fn print_status(out: &mut dyn Write, s: &Status) -> std::io::Result<()> {
    let describe = |g: &Option<crate::store::Generation>| {
        g.as_ref().map_or_else(
            || "none".to_owned(),
            |g| format!("generation {} (version {})", g.generation, g.version),
        )
    };
    writeln!(out, "{} (code version {})", s.name, s.code_version)?;
    writeln!(out, "  active:   {}", describe(&s.active))?;
    if s.building.is_some() {
        writeln!(out, "  building: {}", describe(&s.building))?;
    }
    writeln!(
        out,
        "  {:<20} {:>9} {:>12} {:>12} {:>10}",
        "TOPIC", "PARTITION", "CHECKPOINT", "HEAD", "LAG"
    )?;
    for p in &s.partitions {
        writeln!(
            out,
            "  {:<20} {:>9} {:>12} {:>12} {:>10}",
            p.topic, p.partition, p.checkpoint, p.head, p.lag
        )?;
    }
    writeln!(out, "  lag: {}   parked: {}", s.lag, s.parked.len())?;
    for p in &s.parked {
        writeln!(out, "  parked {}: {}", p.event, p.error)?;
    }
    Ok(())
}

async fn rebuild_with_progress(p: &dyn AnyProjection, in_place: bool, total: u64) -> Result<()> {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} events, {per_sec}, ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(format!("rebuilding {}", p.name()));
    let mut progress = p.progress();
    let start = progress.borrow().applied;
    let cancel = CancellationToken::new();
    let rebuild = p.rebuild(in_place, cancel.clone());
    tokio::pin!(rebuild);
    let result = loop {
        tokio::select! {
            result = &mut rebuild => break result,
            _ = progress.changed() => {
                bar.set_position(progress.borrow().applied.saturating_sub(start));
            }
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    };
    bar.finish_and_clear();
    result
}
