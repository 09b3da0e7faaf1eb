//! Leases and checkpoints under concurrency: a second runner of a projection is refused while
//! the first holds it; a zombie whose lease expired or was taken over cannot commit (its
//! changes roll back, the new owner's checkpoint stands), and neither can a commit from a
//! stale checkpoint; several projections run side by side in one process and stop cleanly.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bank::Bank;
use bank::projections::{Balances, read_balances};
use common::{
    account_topic, active_checkpoints, bank_wave, expected_balances, expected_movements, fill_log,
    guard, heads, read_log, read_movements,
};
use keel::store::sqlite::SqliteStore;
use keel::{EventStore, Offset, Partition};
use keel_projections::store::memory::MemoryViews;
use keel_projections::store::sqlite::SqliteViews;
use keel_projections::store::{CheckpointMove, Commit, Generation, ViewId, ViewStore};
use keel_projections::{Error, Runner, RunnerConfig};
use sqlx::Row as _;
use tokio_util::sync::CancellationToken;

fn owned(owner: &str) -> RunnerConfig {
    RunnerConfig {
        owner: owner.to_owned(),
        poll: Duration::from_millis(20),
        ..RunnerConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_runner_is_refused_while_the_first_holds_the_lease() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(dir.path().join("log.db")).await?);
    let log: Arc<dyn EventStore> = store.clone();
    fill_log(&log, 0..30, 20, 1).await?;
    let views = Arc::new(SqliteViews::open(dir.path().join("views.db")).await?);

    let first = Arc::new(
        Runner::new(Balances, Arc::clone(&log), Arc::clone(&views)).config(RunnerConfig {
            lease_ttl: Duration::from_secs(1),
            ..owned("runner-a")
        }),
    );
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let (first, cancel) = (Arc::clone(&first), cancel.clone());
        async move { first.run(cancel).await }
    });
    let generation = guard("the first runner catching up", async {
        loop {
            let status = first.status().await?;
            if status.active.is_some() && status.lag == 0 {
                return anyhow::Ok(status.active);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await??;

    let second = Runner::new(Balances, Arc::clone(&log), Arc::clone(&views)).config(RunnerConfig {
        claim_timeout: Duration::from_millis(300),
        ..owned("runner-b")
    });
    // Longer than the first runner's lease: it renews while tailing, so it still holds it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let refused = guard("the second catch_up", second.catch_up()).await?;
    match &refused {
        Err(Error::Held {
            projection,
            owner,
            remaining_ms,
        }) => {
            assert_eq!(projection, "balances");
            assert!(owner.starts_with("runner-a#"), "{owner}");
            assert!(*remaining_ms <= 1000, "{remaining_ms}");
        }
        other => anyhow::bail!("expected Held, got {other:?}"),
    }
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
        second.progress().borrow().applied,
        0,
        "the refused runner applied nothing"
    );
    assert_eq!(
        second.status().await?.active,
        generation,
        "and rebuilt nothing"
    );

    // The first one still works: it applies what comes next.
    fill_log(&log, 30..40, 20, 2).await?;
    guard("the first runner tailing", async {
        while second.status().await?.lag > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::Ok(())
    })
    .await??;

    // Stopped, it releases the lease: the second may run now.
    cancel.cancel();
    guard("the first runner", task).await???;
    guard("the second catch_up", second.catch_up()).await??;
    let records = read_log(log.as_ref()).await?;
    assert_eq!(read_balances(&views).await?, expected_balances(&records)?);
    views.close().await;
    store.close().await;
    Ok(())
}

const TTL: Duration = Duration::from_millis(200);
const PAST_TTL: Duration = Duration::from_millis(350);

/// A one-table view `zombie` for driving a view store by hand: returns its active
/// generation. (`create` makes the table inside a batch on SQLite; memory needs nothing.)
async fn zombie_view<S: ViewStore>(
    views: &S,
    create: impl AsyncFnOnce(&mut S::Batch) -> anyhow::Result<()>,
) -> anyhow::Result<ViewId> {
    let generation: Generation = views.create_generation("zombie", 1).await?;
    let lease = views.claim("zombie", "setup", TTL).await?;
    let mut batch = views.begin(&generation.id()).await?;
    create(&mut batch).await?;
    views.commit(batch, &lease, Commit::default()).await?;
    views.activate(&generation.id()).await?;
    views.release(&lease).await?;
    Ok(generation.id())
}

fn moving(from: u64, to: u64) -> Commit {
    Commit {
        moves: vec![CheckpointMove {
            topic: account_topic(),
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

/// The zombie scenario on any store; `write` adds a row to the view inside a batch, `rows`
/// reads the active view.
async fn zombies_cannot_commit<S: ViewStore>(
    views: &S,
    view: &ViewId,
    write: impl AsyncFn(&mut S::Batch, &str) -> anyhow::Result<()>,
    rows: impl AsyncFn() -> anyhow::Result<Vec<String>>,
) -> anyhow::Result<()> {
    // A runner whose lease ran out while it worked on a batch, and that nobody took over, still
    // owns the projection: its commit goes through and renews the lease.
    let a = views.claim("zombie", "a", TTL).await?;
    let mut batch = views.begin(view).await?;
    write(&mut batch, "a1").await?;
    tokio::time::sleep(PAST_TTL).await;
    views.commit(batch, &a, moving(0, 3)).await?;
    assert_eq!(rows().await?, ["a1"], "a1 was committed");
    assert_eq!(checkpoint(views, view).await?, 3);
    let renewed = views.claim("zombie", "c", TTL).await;
    assert!(
        matches!(&renewed, Err(Error::Held { owner, .. }) if owner == "a"),
        "the commit renewed a's lease: {renewed:?}"
    );
    tokio::time::sleep(PAST_TTL).await;

    // A paused runner (a zombie): its lease expires, b takes over and commits; a wakes up and
    // commits its batch. It must fail, roll back, and leave b's checkpoint alone.
    let a = views.claim("zombie", "a", TTL).await?;
    tokio::time::sleep(PAST_TTL).await;
    let b = views.claim("zombie", "b", Duration::from_secs(30)).await?;
    let mut batch = views.begin(view).await?;
    write(&mut batch, "b1").await?;
    views.commit(batch, &b, moving(3, 5)).await?;
    let mut batch = views.begin(view).await?;
    write(&mut batch, "a2").await?;
    let lost = views.commit(batch, &a, moving(3, 4)).await;
    assert!(matches!(&lost, Err(Error::LeaseLost { .. })), "{lost:?}");
    assert_eq!(rows().await?, ["a1", "b1"], "a2 was rolled back, b1 kept");
    assert_eq!(checkpoint(views, view).await?, 5, "b's checkpoint stands");
    let held = views.claim("zombie", "a", TTL).await;
    assert!(
        matches!(&held, Err(Error::Held { owner, .. }) if owner == "b"),
        "{held:?}"
    );

    // The owner itself, committing from a checkpoint it read before it moved: refused too.
    let mut batch = views.begin(view).await?;
    write(&mut batch, "b2").await?;
    let stale = views.commit(batch, &b, moving(0, 7)).await;
    assert!(matches!(&stale, Err(Error::LeaseLost { .. })), "{stale:?}");
    assert_eq!(rows().await?, ["a1", "b1"], "b2 was rolled back");
    assert_eq!(checkpoint(views, view).await?, 5);
    // From where it really is, it commits.
    let mut batch = views.begin(view).await?;
    write(&mut batch, "b3").await?;
    views.commit(batch, &b, moving(5, 7)).await?;
    assert_eq!(rows().await?, ["a1", "b1", "b3"]);
    assert_eq!(checkpoint(views, view).await?, 7);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_runner_cannot_commit_to_sqlite_views() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let views = SqliteViews::open(dir.path().join("views.db")).await?;
    let view = zombie_view(&views, async |batch| {
        let sql = format!(
            "CREATE TABLE {} (name TEXT PRIMARY KEY)",
            batch.table("rows")
        );
        sqlx::query(&sql).execute(batch.conn()).await?;
        Ok(())
    })
    .await?;
    zombies_cannot_commit(
        &views,
        &view,
        async |batch, name| {
            let sql = format!("INSERT INTO {} (name) VALUES (?)", batch.table("rows"));
            sqlx::query(&sql).bind(name).execute(batch.conn()).await?;
            Ok(())
        },
        async || {
            let table = views
                .table("zombie", "rows")
                .await?
                .ok_or_else(|| anyhow::anyhow!("no active zombie view"))?;
            let rows = sqlx::query(&format!("SELECT name FROM {table} ORDER BY name"))
                .fetch_all(views.pool())
                .await?;
            Ok(rows
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?)
        },
    )
    .await?;
    views.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_runner_cannot_commit_to_memory_views() -> anyhow::Result<()> {
    let views = MemoryViews::<Vec<String>>::new();
    let view = zombie_view(&views, async |_| Ok(())).await?;
    zombies_cannot_commit(
        &views,
        &view,
        async |batch, name| {
            batch.push(name.to_owned());
            batch.sort();
            Ok(())
        },
        async || {
            views
                .read("zombie", Vec::clone)
                .await
                .ok_or_else(|| anyhow::anyhow!("no active zombie view"))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_projections_run_side_by_side_in_one_process() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(dir.path().join("log.db")).await?);
    let log: Arc<dyn EventStore> = store.clone();
    let config = RunnerConfig {
        batch_size: 64,
        poll: Duration::from_millis(20),
        ..RunnerConfig::default()
    };
    let (projections, views) =
        bank::projections::bank_projections(Arc::clone(&log), dir.path().join("views.db"), config)
            .await?;
    let cancel = CancellationToken::new();
    let running = tokio::spawn({
        let (projections, cancel) = (projections.clone(), cancel.clone());
        async move {
            projections
                .run(cancel)
                .await
                .into_iter()
                .map(|(name, e)| format!("{name}: {e:#}"))
                .collect::<Vec<_>>()
        }
    });

    let bank = Bank::<dyn EventStore>::new(Arc::clone(&log));
    for wave in 0..3 {
        bank_wave(&bank, 0..30 + 30 * wave, 4, wave as u64).await?;
    }
    let heads = heads(log.as_ref()).await?;
    guard("both projections catching up", async {
        for p in projections.iter() {
            loop {
                let status = p.status().await?;
                if status.active.is_some() && status.lag == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        anyhow::Ok(())
    })
    .await??;
    for name in ["balances", "statement"] {
        let checkpoints: BTreeMap<u32, u64> =
            active_checkpoints(&views, log.as_ref(), name).await?;
        assert_eq!(checkpoints, heads, "{name}");
    }
    let records = read_log(log.as_ref()).await?;
    assert_eq!(read_balances(&views).await?, expected_balances(&records)?);
    assert_eq!(read_movements(&views).await?, expected_movements(&records)?);

    cancel.cancel();
    let errors = guard("stopping", running).await??;
    assert_eq!(errors, Vec::<String>::new());
    // Stopped cleanly: the leases are released, so another runner may start at once.
    let again =
        Runner::new(Balances, Arc::clone(&log), Arc::new(views.clone())).config(RunnerConfig {
            claim_timeout: Duration::ZERO,
            ..RunnerConfig::default()
        });
    guard("a new runner", again.catch_up()).await??;
    assert_eq!(
        again.progress().borrow().applied,
        0,
        "nothing left to apply"
    );
    views.close().await;
    store.close().await;
    Ok(())
}

/// `take_over` replaces only the holder it names; `lease` says who holds it and until when;
/// `set_stopped` keeps a reason with a generation until cleared or dropped.
async fn take_over_lease_and_stops<S: ViewStore>(views: &S) -> anyhow::Result<()> {
    assert_eq!(views.lease("p").await?, None, "nobody holds it yet");
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    views.claim("p", "dead", Duration::from_secs(60)).await?;
    let holder = views.lease("p").await?.expect("a holder");
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
    let stop = keel_projections::store::Stopped {
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
    Ok(())
}

#[tokio::test]
async fn take_over_replaces_only_the_named_holder_in_memory_views() -> anyhow::Result<()> {
    take_over_lease_and_stops(&MemoryViews::<u8>::new()).await
}

#[tokio::test]
async fn take_over_replaces_only_the_named_holder_in_sqlite_views() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let views = SqliteViews::open(dir.path().join("views.db")).await?;
    take_over_lease_and_stops(&views).await?;
    views.close().await;
    Ok(())
}
