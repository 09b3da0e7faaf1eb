//! The command line an app embeds: `projections list | status | rebuild | reset | retry |
//! drop`, with a progress bar on long work and `--json` for machines.
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
use crate::store::{Generation, ViewState};

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
    /// Abandon a build beside the active view (one that stopped on a bad event, say): readers
    /// keep the active view, and the next rebuild starts over.
    Drop {
        /// The projection.
        name: String,
    },
}

/// Runs a `projections` command against `projections`, printing to standard output.
///
/// Standard output closed early (`projections status | head`) ends the command quietly, as
/// Unix tools do: the reader has seen what it wanted.
///
/// # Errors
///
/// An unknown projection, a held lease, a bad event, a store failure, or output that cannot
/// be written ([`Error::Output`]).
pub async fn run(projections: &Projections, args: ProjectionsArgs) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let result = run_to(projections, args, &mut out)
        .await
        .and_then(|()| out.flush().map_err(Error::Output));
    match result {
        Err(Error::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

fn io(e: std::io::Error) -> Error {
    Error::Output(e)
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
        ProjectionsCommand::Drop { name } => {
            let dropped = projections.get(&name)?.drop_building().await?;
            let what = if dropped == 0 {
                "nothing was being built".to_owned()
            } else {
                format!("dropped {dropped} generation(s) being built; readers keep the active view")
            };
            writeln!(out, "{name}: {what}").map_err(io)?;
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
    writeln!(out, "{} (code version {})", s.name, s.code_version)?;
    match &s.active {
        Some(g) => print_generation(out, "active:  ", g, s)?,
        None => writeln!(
            out,
            "  active:   none (never built: the next run builds it)"
        )?,
    }
    if let Some(g) = &s.building {
        print_generation(out, "building:", g, s)?;
    }
    if let Some(lease) = &s.lease {
        let when = utc(lease.expires_at_ms);
        let state = if lease.holder_gone {
            " — its process is gone: the next command takes the lease over".to_owned()
        } else if lease.remaining_ms == 0 {
            ", expired: the next command takes it".to_owned()
        } else {
            format!(" ({} s more)", lease.remaining_ms.div_ceil(1000))
        };
        writeln!(
            out,
            "  lease:    held by {} until {when}{state}",
            lease.owner
        )?;
    }
    // Instances sharing the projection each hold some partitions: say which.
    let shared = s.partitions.iter().any(|p| p.owner.is_some());
    let owner_header = if shared { "  OWNER" } else { "" };
    writeln!(
        out,
        "  {:<20} {:>9} {:>12} {:>12} {:>10}{owner_header}",
        "TOPIC", "PARTITION", "CHECKPOINT", "HEAD", "LAG"
    )?;
    for p in &s.partitions {
        let owner = match (&p.owner, shared) {
            (Some(owner), _) => format!("  {owner}"),
            (None, true) => "  -".to_owned(),
            (None, false) => String::new(),
        };
        writeln!(
            out,
            "  {:<20} {:>9} {:>12} {:>12} {:>10}{owner}",
            p.topic, p.partition, p.checkpoint, p.head, p.lag
        )?;
    }
    writeln!(out, "  lag: {}   parked: {}", s.lag, s.parked.len())?;
    for p in &s.parked {
        writeln!(out, "  parked {}: {}", p.event, p.error)?;
    }
    Ok(())
}

/// One generation's line, and, when its runner stopped on an error, why and how to go on.
fn print_generation(
    out: &mut dyn Write,
    label: &str,
    g: &Generation,
    s: &Status,
) -> std::io::Result<()> {
    writeln!(
        out,
        "  {label} generation {} (version {})",
        g.generation, g.version
    )?;
    let Some(stopped) = &g.stopped else {
        return Ok(());
    };
    let name = &s.name;
    writeln!(
        out,
        "            stopped on an error at {}:",
        utc(stopped.at_ms)
    )?;
    writeln!(out, "              {}", stopped.error)?;
    writeln!(out, "            to go on:")?;
    if g.state == ViewState::Building {
        let readers = s.active.as_ref().map_or_else(
            || "there is no active view yet".to_owned(),
            |a| format!("readers keep generation {}", a.generation),
        );
        writeln!(
            out,
            "              - retry: fix the event or the projection's code, then \
             `projections rebuild {name}` (a fresh build replaces this one)"
        )?;
        writeln!(
            out,
            "              - drop: `projections drop {name}` abandons this build; {readers}"
        )?;
    } else {
        writeln!(
            out,
            "              - retry: fix the event or the projection's code and run it again: it \
             resumes at the event (or configure OnBadEvent::Park to set such events aside)"
        )?;
    }
    writeln!(
        out,
        "              - reset: `projections reset {name}` drops every generation; the next run \
         replays the whole log"
    )
}

/// `ms` since the Unix epoch as `2025-01-31 23:59:59 UTC`.
fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
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
    let mut announced: Option<String> = None;
    let result = loop {
        tokio::select! {
            result = &mut rebuild => break result,
            _ = progress.changed() => {
                let now = progress.borrow_and_update().clone();
                bar.set_position(now.applied.saturating_sub(start));
                // A wait for another runner's lease is said once per holder, even without a
                // terminal to draw the bar on.
                if let Some(holder) = now.waiting_for
                    && announced.as_deref() != Some(holder.owner.as_str())
                {
                    let remaining = holder.expires_at_ms.saturating_sub(crate::store::now_ms());
                    bar.suspend(|| {
                        eprintln!(
                            "waiting for projection {}: its lease is held by {} until {} \
                             ({} s more)",
                            p.name(),
                            holder.owner,
                            utc(holder.expires_at_ms),
                            remaining.max(0).div_euclid(1000) + 1
                        );
                    });
                    announced = Some(holder.owner);
                }
            }
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    };
    bar.finish_and_clear();
    if let Err(e) = &result
        && !matches!(e, Error::Held { .. })
    {
        eprintln!(
            "the rebuild of {0} stopped; `projections status {0}` shows why and how to go on",
            p.name()
        );
    }
    result
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn times_print_as_utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_735_689_599_999), "2024-12-31 23:59:59 UTC");
        assert_eq!(utc(-1000), "1969-12-31 23:59:59 UTC");
    }
}
