//! Cases on leases and checkpoints: a second runner is refused while the first holds the
//! lease; and, driving the store by hand, a zombie runner cannot commit (its lease was taken,
//! or its checkpoint moved), `take_over` replaces only the holder it names, and a commit into
//! a dropped generation is refused.

use std::sync::Arc;
use std::time::Duration;

use keel::{Offset, Partition};
use keel_projections::store::{CheckpointMove, Commit, Stopped, ViewId, ViewStore};
use keel_projections::{CancellationToken, Error, Runner, RunnerConfig};

use super::{
    Change, SuiteViews, TALLY, Tally, caught_up, expected, fill, fresh, guard, ledger, memory_log,
    read_log, rows, tailing,
};

const TTL: Duration = Duration::from_millis(200);
/// Longer than [`TTL`]: how long to wait for a lease to run out.
const PAST_TTL: Duration = Duration::from_millis(350);

/// A commit moving partition 0's checkpoint from `from` to `to`.
fn moving(from: u64, to: u64) -> Commit {
    Commit {
        moves: vec![CheckpointMove {
            topic: ledger(),
            partition: Partition(0),
            from: Offset(from),
            to: Offset(to),
        }],
        ..Commit::default()
    }
}

async fn checkpoint<S: ViewStore>(views: &S, view: &ViewId) -> anyhow::Result<u64> {
    Ok(views
        .checkpoints(view)
        .await?
        .iter()
        .find(|c| c.partition == Partition(0))
        .map_or(0, |c| c.next.0))
}

/// Adds a row named `name` to the view in `batch`.
async fn write<S: SuiteViews>(batch: &mut S::Batch, name: &str) -> anyhow::Result<()> {
    S::add(
        batch,
        &[Change {
            account: name.to_owned(),
            total: 1,
            events: 1,
            built_by: 1,
        }],
    )
    .await
    .map_err(|e| anyhow::anyhow!("add {name}: {e}"))
}

/// The names of the rows of the active view.
async fn names<S: SuiteViews>(views: &S) -> anyhow::Result<Vec<String>> {
    Ok(rows(views).await?.into_keys().collect())
}

/// A runner whose lease ran out unclaimed still commits (and renews it); a runner whose lease
/// another runner claimed meanwhile cannot commit: its batch rolls back and the new owner's
/// checkpoint stands; nor can the owner itself commit from a checkpoint that moved since it
/// read it.
pub async fn a_zombie_runner_cannot_commit<S: SuiteViews>() -> anyhow::Result<()> {
    let (_place, views) = fresh::<S>().await?;
    let views = views.as_ref();
    let generation = views.create_generation(TALLY, 1).await?;
    let view = generation.id();
    let setup = views.claim(TALLY, "setup", TTL).await?;
    let mut batch = views.begin(&view).await?;
    S::setup(&mut batch, 0)
        .await
        .map_err(|e| anyhow::anyhow!("setup: {e}"))?;
    views.commit(batch, &setup, Commit::default()).await?;
    views.activate(&view).await?;
    views.release(&setup).await?;

    // A runner whose lease ran out while it worked on a batch, and that nobody took over, still
    // owns the projection: its commit goes through and renews the lease.
    let a = views.claim(TALLY, "a", TTL).await?;
    let mut batch = views.begin(&view).await?;
    write::<S>(&mut batch, "a1").await?;
    tokio::time::sleep(PAST_TTL).await;
    views.commit(batch, &a, moving(0, 3)).await?;
    assert_eq!(names(views).await?, ["a1"], "a1 was committed");
    assert_eq!(checkpoint(views, &view).await?, 3);
    let renewed = views.claim(TALLY, "c", TTL).await;
    assert!(
        matches!(&renewed, Err(Error::Held { owner, .. }) if owner == "a"),
        "the commit renewed a's lease: {renewed:?}"
    );
    tokio::time::sleep(PAST_TTL).await;

    // A paused runner (a zombie): its lease expires, b takes over and commits; a wakes up and
    // commits its batch. It must fail, roll back, and leave b's checkpoint alone.
    let a = views.claim(TALLY, "a", TTL).await?;
    tokio::time::sleep(PAST_TTL).await;
    let b = views.claim(TALLY, "b", Duration::from_secs(30)).await?;
    let mut batch = views.begin(&view).await?;
    write::<S>(&mut batch, "b1").await?;
    views.commit(batch, &b, moving(3, 5)).await?;
    let mut batch = views.begin(&view).await?;
    write::<S>(&mut batch, "a2").await?;
    let lost = views.commit(batch, &a, moving(3, 4)).await;
    assert!(matches!(&lost, Err(Error::LeaseLost { .. })), "{lost:?}");
    assert_eq!(
        names(views).await?,
        ["a1", "b1"],
        "a2 was rolled back, b1 kept"
    );
    assert_eq!(checkpoint(views, &view).await?, 5, "b's checkpoint stands");
    let held = views.claim(TALLY, "a", TTL).await;
    assert!(
        matches!(&held, Err(Error::Held { owner, .. }) if owner == "b"),
        "{held:?}"
    );

    // The owner itself, committing from a checkpoint it read before it moved: refused too.
    let mut batch = views.begin(&view).await?;
    write::<S>(&mut batch, "b2").await?;
    let stale = views.commit(batch, &b, moving(0, 7)).await;
    assert!(matches!(&stale, Err(Error::LeaseLost { .. })), "{stale:?}");
    assert_eq!(names(views).await?, ["a1", "b1"], "b2 was rolled back");
    assert_eq!(checkpoint(views, &view).await?, 5);
    // From where it really is, it commits.
    let mut batch = views.begin(&view).await?;
    write::<S>(&mut batch, "b3").await?;
    views.commit(batch, &b, moving(5, 7)).await?;
    assert_eq!(names(views).await?, ["a1", "b1", "b3"]);
    assert_eq!(checkpoint(views, &view).await?, 7);
    views.close().await;
    Ok(())
}

/// `take_over` replaces only the holder it names; `lease` says who holds it and until when;
/// `set_stopped` keeps a reason with a generation until cleared or dropped.
pub async fn take_over_replaces_only_the_named_holder<S: SuiteViews>() -> anyhow::Result<()> {
    let (_place, views) = fresh::<S>().await?;
    let views = views.as_ref();
    assert_eq!(views.lease("p").await?, None, "nobody holds it yet");
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    views.claim("p", "dead", Duration::from_secs(60)).await?;
    let holder = views
        .lease("p")
        .await?
        .ok_or_else(|| anyhow::anyhow!("nobody holds the lease just claimed"))?;
    assert_eq!(holder.owner, "dead");
    let expires = u128::try_from(holder.expires_at_ms)?;
    assert!(
        expires >= before + 59_000 && expires <= before + 61_000 + 5_000,
        "{expires} vs {before}"
    );

    // Naming another holder than the one holding it: refused, nothing changes.
    let wrong = views
        .take_over("p", "someone-else", "new", Duration::from_secs(1))
        .await;
    assert!(
        matches!(&wrong, Err(Error::Held { owner, .. }) if owner == "dead"),
        "{wrong:?}"
    );
    assert_eq!(
        views.lease("p").await?.map(|h| h.owner).as_deref(),
        Some("dead")
    );
    // Naming it: taken, although its lease runs for another minute.
    let lease = views
        .take_over("p", "dead", "new", Duration::from_secs(30))
        .await?;
    assert_eq!(lease.owner, "new");
    assert_eq!(
        views.lease("p").await?.map(|h| h.owner).as_deref(),
        Some("new")
    );
    views.release(&lease).await?;
    assert_eq!(views.lease("p").await?, None, "released");

    let generation = views.create_generation("p", 1).await?;
    let stop = Stopped {
        at_ms: 1_700_000_000_000,
        error: "projection p stopped at event \"X\"".into(),
    };
    views.set_stopped(&generation.id(), Some(&stop)).await?;
    let found = views.generations("p").await?;
    assert_eq!(found.first().and_then(|g| g.stopped.as_ref()), Some(&stop));
    views.set_stopped(&generation.id(), None).await?;
    let found = views.generations("p").await?;
    assert_eq!(found.first().map(|g| g.stopped.clone()), Some(None));
    // On a generation that does not exist, recording does nothing.
    let gone = ViewId {
        name: "p".into(),
        generation: 99,
    };
    views.set_stopped(&gone, Some(&stop)).await?;
    assert_eq!(views.generations("p").await?.len(), 1);
    views.close().await;
    Ok(())
}

/// A batch begun on a generation that is dropped before it commits (a reset by another runner)
/// commits nothing: not even a checkpoint.
pub async fn a_commit_into_a_dropped_generation_is_refused<S: SuiteViews>() -> anyhow::Result<()> {
    let (_place, views) = fresh::<S>().await?;
    let views = views.as_ref();
    let lease = views
        .claim("dropped", "runner-a", Duration::from_secs(30))
        .await?;
    let generation = views.create_generation("dropped", 1).await?;
    views.drop_generation(&generation.id()).await?;
    match views.begin(&generation.id()).await {
        // A store may refuse the batch at once (memory: the generation is not there)…
        Err(e) => {
            let e = anyhow::Error::from(e);
            assert!(format!("{e:#}").contains("does not exist"), "{e:#}");
        }
        // …or at its commit (SQL: the generation's row is gone), as a lost lease.
        Ok(batch) => {
            let refused = views.commit(batch, &lease, moving(0, 5)).await;
            assert!(
                matches!(refused, Err(Error::LeaseLost { .. })),
                "the generation is gone: {refused:?}"
            );
        }
    }
    assert!(
        views.checkpoints(&generation.id()).await?.is_empty(),
        "no checkpoint was left for the dropped generation"
    );
    assert_eq!(views.generations("dropped").await?, []);
    views.close().await;
    Ok(())
}

/// While a runner holds the projection (tailing, so it renews its lease past its first
/// expiry), a second runner is refused, naming the holder, for `catch_up` and `rebuild` alike,
/// and changes nothing; once the first stops, which releases the lease, the second runs.
pub async fn a_second_runner_is_refused_while_the_first_holds_the_lease<S: SuiteViews>()
-> anyhow::Result<()> {
    let (_place, views) = fresh::<S>().await?;
    let log = memory_log(4);
    fill(&log, 0..30, 20, 1).await?;
    let owned = |owner: &str| RunnerConfig {
        owner: owner.to_owned(),
        lease_ttl: Duration::from_secs(1),
        ..tailing()
    };
    let first = Arc::new(
        Runner::new(Tally::<S>::default(), Arc::clone(&log), Arc::clone(&views))
            .config(owned("runner-a")),
    );
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let (first, cancel) = (Arc::clone(&first), cancel.clone());
        async move { first.run(cancel).await }
    });
    let generation = caught_up(&first).await?.active;
    // Wait until the first runner has renewed its lease past the expiry it first had.
    let claimed = views
        .lease(TALLY)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the running runner holds no lease"))?;
    guard("the first runner renewing its lease", async {
        loop {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis();
            let holder = views.lease(TALLY).await?;
            if now > u128::try_from(claimed.expires_at_ms)?
                && holder.is_some_and(|h| h.expires_at_ms > claimed.expires_at_ms)
            {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await??;

    let second = Runner::new(Tally::<S>::default(), Arc::clone(&log), Arc::clone(&views)).config(
        RunnerConfig {
            claim_timeout: Duration::from_millis(300),
            ..owned("runner-b")
        },
    );
    let refused = guard("the second catch_up", second.catch_up()).await?;
    assert!(
        matches!(&refused, Err(Error::Held { projection, owner, .. })
            if projection == TALLY && owner.starts_with("runner-a#")),
        "{refused:?}"
    );
    let rebuild = guard(
        "the second rebuild",
        second.rebuild(false, CancellationToken::new()),
    )
    .await?;
    assert!(
        matches!(&rebuild, Err(Error::Held { owner, .. }) if owner.starts_with("runner-a#")),
        "{rebuild:?}"
    );
    assert_eq!(
        second.projection().take_fed()?,
        [],
        "the refused runner was fed nothing"
    );
    assert_eq!(
        second.status().await?.active,
        generation,
        "and rebuilt nothing"
    );

    // The first one still works: it applies what comes next.
    fill(&log, 30..40, 20, 2).await?;
    caught_up(&first).await?;

    // Stopped, it releases the lease: the second may run now.
    cancel.cancel();
    guard("the first runner", task).await???;
    assert_eq!(views.lease(TALLY).await?, None, "released");
    guard("the second catch_up", second.catch_up()).await??;
    assert_eq!(
        rows(views.as_ref()).await?,
        expected(&read_log(log.as_ref()).await?, 1)?
    );
    views.close().await;
    Ok(())
}
