//! Cases on generations: a rebuild from scratch (side by side or in place) equals the
//! incrementally maintained view; during a side-by-side rebuild readers see the whole old view
//! until one switch, and reads racing many switches always answer; a version bump rebuilds
//! beside the old version and an older version refuses to run; a restart resumes exactly at
//! the last commit; a generation created but never set up does not wedge the projection.

use std::sync::Arc;

use keel_projections::store::ViewState;
use keel_projections::{CancellationToken, Error, Runner, RunnerConfig};

use super::{
    SuiteViews, TALLY, Tally, active, caught_up, expected, fill, fresh, guard, memory_log,
    positions, read_log, rows, tailing,
};

/// The names of generation `g`'s tally tables.
fn tables_of(g: u64) -> Vec<String> {
    vec![
        format!("tally__g{g}__build"),
        format!("tally__g{g}__totals"),
    ]
}

/// A rebuild side by side, then one in place, each gives a new generation equal to the view
/// maintained incrementally while events arrived; only the new generation's data is left, and
/// the rebuilt view goes on from where the rebuild stopped.
pub async fn a_rebuild_side_by_side_or_in_place_equals_the_incremental_view<S: SuiteViews>()
-> anyhow::Result<()> {
    let (_place, views) = fresh::<S>().await?;
    let log = memory_log(4);
    let runner = Arc::new(
        Runner::new(Tally::<S>::default(), Arc::clone(&log), Arc::clone(&views)).config(tailing()),
    );
    let cancel = CancellationToken::new();
    let tail = tokio::spawn({
        let (runner, cancel) = (Arc::clone(&runner), cancel.clone());
        async move { runner.run(cancel).await }
    });
    for wave in 0..4 {
        fill(&log, 0..40 + 20 * wave, 5, wave as u64).await?;
    }
    caught_up(&runner).await?;
    cancel.cancel();
    guard("a cancelled runner", tail).await???;
    let incremental = rows(views.as_ref()).await?;
    assert_eq!(incremental.len(), 100);
    assert_eq!(incremental, expected(&read_log(log.as_ref()).await?, 1)?);

    for in_place in [false, true] {
        let before = active(views.as_ref()).await?.map(|g| g.generation);
        guard(
            "a rebuild",
            runner.rebuild(in_place, CancellationToken::new()),
        )
        .await??;
        let after = active(views.as_ref()).await?.map(|g| g.generation);
        assert_eq!(after, before.map(|g| g + 1), "in place: {in_place}");
        let generation = after.unwrap_or_default();
        assert_eq!(
            views.generations(TALLY).await?.len(),
            1,
            "only the new generation is left (in place: {in_place})"
        );
        if let Some(tables) = views.tables().await? {
            assert_eq!(
                tables,
                tables_of(generation),
                "only the active generation's tables are left (in place: {in_place})"
            );
        }
        assert_eq!(
            rows(views.as_ref()).await?,
            incremental,
            "in place: {in_place}"
        );
    }

    fill(&log, 0..120, 3, 99).await?;
    guard("catch_up", runner.catch_up()).await??;
    assert_eq!(
        rows(views.as_ref()).await?,
        expected(&read_log(log.as_ref()).await?, 1)?
    );
    views.close().await;
    Ok(())
}

/// While a side-by-side rebuild runs (and nothing is appended), every read sees the whole
/// view: the old generation's until one switch, then the new one's.
pub async fn reads_during_a_side_by_side_rebuild_see_the_whole_old_view_until_one_switch<
    S: SuiteViews,
>() -> anyhow::Result<()> {
    let (_place, views) = fresh::<S>().await?;
    let log = memory_log(4);
    fill(&log, 0..250, 100, 11).await?;
    let runner = Arc::new(
        Runner::new(Tally::<S>::default(), Arc::clone(&log), Arc::clone(&views)).config(
            RunnerConfig {
                batch_size: 500,
                ..RunnerConfig::default()
            },
        ),
    );
    guard("the first build", runner.catch_up()).await??;
    let first = views
        .read()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no tally after the first build"))?;
    assert_eq!(first.rows, expected(&read_log(log.as_ref()).await?, 1)?);

    let rebuild = tokio::spawn({
        let runner = Arc::clone(&runner);
        async move { runner.rebuild(false, CancellationToken::new()).await }
    });
    let mut builds = vec![first.build];
    let (mut reads, mut during) = (0u64, 0u64);
    guard("reading during the rebuild", async {
        loop {
            let finished = rebuild.is_finished();
            let building = views
                .generations(TALLY)
                .await?
                .iter()
                .any(|g| g.state == ViewState::Building);
            let view = views.read().await?.ok_or_else(|| {
                anyhow::anyhow!("read {reads}: no active tally during the rebuild")
            })?;
            assert_eq!(
                view.rows, first.rows,
                "read {reads} (build {}) is the whole view",
                view.build
            );
            reads += 1;
            if building && view.build == first.build {
                during += 1;
            }
            if builds.last() != Some(&view.build) {
                builds.push(view.build);
            }
            if finished {
                return anyhow::Ok(());
            }
            tokio::task::yield_now().await;
        }
    })
    .await??;
    guard("the rebuild", rebuild).await???;
    assert_eq!(builds.len(), 2, "one switch from old to new: {builds:?}");
    assert!(
        during > 0,
        "some reads ran while the new generation was being built ({reads} reads in all)"
    );
    assert_eq!(rows(views.as_ref()).await?, first.rows);
    Ok(())
}

/// Readers racing many side-by-side rebuilds: a switch that drops the old generation between
/// a reader's lookup of the active generation and its read must not make the read fail or
/// see less than the whole view.
pub async fn reads_racing_generation_switches_always_answer<S: SuiteViews>() -> anyhow::Result<()> {
    const READERS: usize = 3;
    const REBUILDS: u64 = 15;
    let (_place, views) = fresh::<S>().await?;
    let log = memory_log(4);
    fill(&log, 0..50, 20, 13).await?;
    let runner = Runner::new(Tally::<S>::default(), Arc::clone(&log), Arc::clone(&views));
    guard("the first build", runner.catch_up()).await??;
    let full = Arc::new(rows(views.as_ref()).await?);
    assert_eq!(full.len(), 50);

    let stop = CancellationToken::new();
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (views, full, stop) = (Arc::clone(&views), Arc::clone(&full), stop.clone());
            tokio::spawn(async move {
                let (mut reads, mut failures) = (0u64, Vec::new());
                while !stop.is_cancelled() {
                    match views.read().await {
                        Ok(Some(view)) => {
                            if view.rows != *full {
                                failures.push(format!("read {reads} is not the whole view"));
                            }
                            reads += 1;
                        }
                        Ok(None) => failures.push(format!("read {reads} found no tally")),
                        Err(e) => failures.push(format!("{e:#}")),
                    }
                    tokio::task::yield_now().await;
                }
                (reads, failures)
            })
        })
        .collect();
    for _ in 0..REBUILDS {
        guard("a rebuild", runner.rebuild(false, CancellationToken::new())).await??;
    }
    stop.cancel();
    let (mut reads, mut failures) = (0, Vec::new());
    for reader in readers {
        let (r, f) = guard("a reader", reader).await??;
        reads += r;
        failures.extend(f);
    }
    assert!(reads > 0);
    assert!(
        failures.is_empty(),
        "{} of {} reads failed across {REBUILDS} switches; the first: {}",
        failures.len(),
        reads + failures.len() as u64,
        failures.first().map_or("", String::as_str)
    );
    assert_eq!(
        active(views.as_ref()).await?.map(|g| g.generation),
        Some(1 + REBUILDS)
    );
    views.close().await;
    Ok(())
}

/// Version 2 of the code builds a new generation from the start of the log and switches to it;
/// version 1 then refuses to run and changes nothing; `run` of version 3 does the same as
/// `catch_up` on start, then tails.
pub async fn a_version_bump_rebuilds_beside_the_old_version_and_an_older_version_refuses_to_run<
    S: SuiteViews,
>() -> anyhow::Result<()> {
    let (_place, views) = fresh::<S>().await?;
    let log = memory_log(4);
    fill(&log, 0..50, 20, 5).await?;
    let generations = async || -> anyhow::Result<Vec<(u64, u32, ViewState)>> {
        Ok(views
            .generations(TALLY)
            .await?
            .iter()
            .map(|g| (g.generation, g.version, g.state))
            .collect())
    };

    guard(
        "v1",
        Runner::new(
            Tally::<S, 1>::default(),
            Arc::clone(&log),
            Arc::clone(&views),
        )
        .catch_up(),
    )
    .await??;
    assert_eq!(generations().await?, [(1, 1, ViewState::Active)]);
    assert_eq!(
        rows(views.as_ref()).await?,
        expected(&read_log(log.as_ref()).await?, 1)?
    );

    fill(&log, 50..60, 20, 6).await?;
    guard(
        "v2",
        Runner::new(
            Tally::<S, 2>::default(),
            Arc::clone(&log),
            Arc::clone(&views),
        )
        .catch_up(),
    )
    .await??;
    assert_eq!(generations().await?, [(2, 2, ViewState::Active)]);
    if let Some(tables) = views.tables().await? {
        assert_eq!(tables, tables_of(2));
    }
    let v2 = rows(views.as_ref()).await?;
    assert_eq!(v2.len(), 60);
    assert_eq!(v2, expected(&read_log(log.as_ref()).await?, 2)?);

    let refused = Runner::new(
        Tally::<S, 1>::default(),
        Arc::clone(&log),
        Arc::clone(&views),
    )
    .catch_up()
    .await;
    assert!(
        matches!(
            refused,
            Err(Error::VersionBehind { ref projection, stored: 2, code: 1 }) if projection == TALLY
        ),
        "{refused:?}"
    );
    assert_eq!(
        rows(views.as_ref()).await?,
        v2,
        "the old code changed nothing"
    );
    assert_eq!(generations().await?, [(2, 2, ViewState::Active)]);

    let v3 = Arc::new(
        Runner::new(
            Tally::<S, 3>::default(),
            Arc::clone(&log),
            Arc::clone(&views),
        )
        .config(tailing()),
    );
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let (v3, cancel) = (Arc::clone(&v3), cancel.clone());
        async move { v3.run(cancel).await }
    });
    caught_up(&v3).await?;
    fill(&log, 60..70, 20, 7).await?;
    let status = caught_up(&v3).await?;
    cancel.cancel();
    guard("run v3", task).await???;
    assert_eq!(
        status.active.map(|g| (g.generation, g.version)),
        Some((3, 3))
    );
    if let Some(tables) = views.tables().await? {
        assert_eq!(tables, tables_of(3));
    }
    assert_eq!(
        rows(views.as_ref()).await?,
        expected(&read_log(log.as_ref()).await?, 3)?
    );
    views.close().await;
    Ok(())
}

/// A fresh runner (a new owner, as after a restart) is fed exactly the events the last commit
/// did not cover: none twice, none skipped.
pub async fn a_restart_resumes_exactly_where_the_last_commit_left_off<S: SuiteViews>()
-> anyhow::Result<()> {
    let (_place, views) = fresh::<S>().await?;
    let log = memory_log(4);
    let config = RunnerConfig {
        batch_size: 100,
        ..RunnerConfig::default()
    };
    let first = fill(&log, 0..40, 30, 1).await?;
    let tally = Tally::<S>::default();
    let fed = Arc::clone(&tally.fed);
    let runner = Runner::new(tally, Arc::clone(&log), Arc::clone(&views)).config(config.clone());
    guard("the first run", runner.catch_up()).await??;
    let before = positions(&read_log(log.as_ref()).await?);
    assert_eq!(
        runner.projection().take_fed()?,
        before,
        "the first run is fed every event once"
    );
    assert_eq!(runner.progress().borrow().applied, first);
    drop(runner);

    // More events: to new accounts and to the old ones.
    let more = fill(&log, 40..60, 30, 2).await? + fill(&log, 0..60, 2, 3).await?;
    let records = read_log(log.as_ref()).await?;
    let new: Vec<(u32, u64)> = positions(&records)
        .into_iter()
        .filter(|p| before.binary_search(p).is_err())
        .collect();
    assert_eq!(new.len() as u64, more);

    let tally = Tally::<S> {
        fed,
        ..Tally::default()
    };
    let runner = Runner::new(tally, Arc::clone(&log), Arc::clone(&views)).config(config);
    guard("the second run", runner.catch_up()).await??;
    assert_eq!(
        runner.projection().take_fed()?,
        new,
        "the second run is fed exactly the new events"
    );
    assert_eq!(runner.progress().borrow().applied, more);
    assert_eq!(rows(views.as_ref()).await?, expected(&records, 1)?);
    views.close().await;
    Ok(())
}

/// A crash right after a generation was registered and before its setup committed leaves a
/// building generation without data. The next start must build the view anyway.
pub async fn a_generation_created_but_never_set_up_does_not_wedge_the_projection<S: SuiteViews>()
-> anyhow::Result<()> {
    let (_place, views) = fresh::<S>().await?;
    let log = memory_log(4);
    fill(&log, 0..20, 10, 3).await?;
    // What `Runner::new_generation` has done when the process dies before `setup` commits.
    let orphan = views.create_generation(TALLY, 1).await?;
    assert_eq!(orphan.generation, 1);
    let runner = Runner::new(Tally::<S>::default(), Arc::clone(&log), Arc::clone(&views));
    guard("catch_up", runner.catch_up())
        .await?
        .map_err(|e| anyhow::anyhow!("the restarted projection must recover: {e:#?}"))?;
    assert_eq!(
        rows(views.as_ref()).await?,
        expected(&read_log(log.as_ref()).await?, 1)?
    );
    views.close().await;
    Ok(())
}
