//! Routing on the real broker. Two instances of the bank's account service share an events
//! topic of 6 partitions through a consumer group. A command sent to the instance that does
//! not own its stream's partition returns what the owner returns — the events with their
//! positions, or the account's own error, typed; a retry is answered with the first result;
//! a reused command id is refused as on the owner; a caller's restart never turns one command
//! into two; the health view names each partition's owner.

mod kafka;

use std::collections::BTreeSet;
use std::time::Duration;

use bank::{Account, AccountCommand, AccountError, AccountEvent};
use keel::kafka::{Routed, Service};
use keel::repository::Error;
use keel::store::kafka::KafkaStore;
use keel::testing::conformance::kafka_bootstrap;
use keel::{CommandId, Committed, EventStore, Repository, StreamId, StreamVersion};

const PARTITIONS: u32 = 6;

type Accounts = Routed<Account, KafkaStore>;

async fn instance(
    bootstrap: &str,
    prefix: &str,
    name: &str,
) -> anyhow::Result<(Service, Accounts)> {
    let service = Service::builder(kafka::builder(bootstrap, prefix))
        .instance(format!("{prefix}{name}"))
        .session_timeout(Duration::from_secs(6))
        .open()
        .await?;
    let accounts = service
        .serve(
            Repository::<Account, _>::new(service.store().clone()),
            PARTITIONS,
        )
        .await?;
    Ok((service, accounts))
}

/// Waits until the instances serve every partition between them, each at least one, none
/// twice (the group has settled), and returns what each serves.
async fn settled(services: &[&Service]) -> anyhow::Result<Vec<BTreeSet<u32>>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut watches: Vec<_> = services.iter().map(|s| s.ownership()).collect();
    loop {
        let owned: Vec<BTreeSet<u32>> = watches
            .iter_mut()
            .map(|w| w.borrow_and_update().iter().map(|(_, p)| p.0).collect())
            .collect();
        let all: BTreeSet<u32> = owned.iter().flatten().copied().collect();
        let total: usize = owned.iter().map(BTreeSet::len).sum();
        if all.len() == PARTITIONS as usize
            && total == PARTITIONS as usize
            && owned.iter().all(|o| !o.is_empty())
        {
            return Ok(owned);
        }
        let changed =
            futures::future::select_all(watches.iter_mut().map(|w| Box::pin(w.changed())));
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            anyhow::bail!("the group did not settle within 90 s: {owned:?}");
        }
    }
}

/// Account ids whose stream lives in one of `partitions`.
fn accounts_in(
    accounts: &Accounts,
    partitions: &BTreeSet<u32>,
    n: usize,
    tag: &str,
) -> Vec<String> {
    (0..)
        .map(|i| format!("{tag}-{i}"))
        .filter(|id| {
            accounts
                .partition_of(id)
                .is_ok_and(|p| partitions.contains(&p.0))
        })
        .take(n)
        .collect()
}

/// What a command returned, without what differs between two accounts (ids, positions).
#[derive(Debug, PartialEq)]
enum Outcome {
    Committed {
        events: Vec<(AccountEvent, StreamVersion)>,
        version: StreamVersion,
        replayed: bool,
    },
    Rejected(AccountError),
}

fn outcome(result: &Result<Committed<AccountEvent>, Error<AccountError>>) -> Outcome {
    match result {
        Ok(c) => Outcome::Committed {
            events: c
                .events
                .iter()
                .map(|e| (e.event.clone(), e.version))
                .collect(),
            version: c.version,
            replayed: c.replayed,
        },
        Err(Error::Rejected(e)) => Outcome::Rejected(e.clone()),
        Err(other) => panic!("neither committed nor rejected: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_sent_to_an_instance_that_does_not_own_its_partition_returns_what_the_owner_returns()
-> anyhow::Result<()> {
    let bootstrap = kafka_bootstrap();
    let prefix = kafka::unique_prefix("routing");
    let (a, on_a) = instance(&bootstrap, &prefix, "a").await?;
    let (b, on_b) = instance(&bootstrap, &prefix, "b").await?;
    let owned = settled(&[&a, &b]).await?;
    let (of_a, of_b) = (&owned[0], &owned[1]);

    // x runs on its owner (in process), y is sent to b, which does not own it.
    let x = accounts_in(&on_a, of_a, 1, "x").remove(0);
    let y = accounts_in(&on_a, of_a, 1, "y").remove(0);
    let steps = [
        AccountCommand::Open {
            owner: "Ann".into(),
            overdraft_limit: 10,
        },
        AccountCommand::Deposit { amount: 50 },
        AccountCommand::Withdraw { amount: 30 },
        AccountCommand::Withdraw { amount: 100 },
        AccountCommand::Deposit { amount: 0 },
        AccountCommand::Close,
        AccountCommand::Open {
            owner: "Ann".into(),
            overdraft_limit: 0,
        },
    ];
    let mut on_y = Vec::new();
    for (i, command) in steps.iter().enumerate() {
        let id = |account: &str| CommandId::new(format!("{account}-step-{i}"));
        let local = on_a.execute_with(&x, command.clone(), id(&x)?.into()).await;
        let routed = on_b.execute_with(&y, command.clone(), id(&y)?.into()).await;
        assert_eq!(outcome(&routed), outcome(&local), "step {i}: {command:?}");
        on_y.push(routed);
    }
    assert!(
        matches!(
            &on_y[3],
            Err(Error::Rejected(AccountError::InsufficientFunds {
                balance: 20,
                amount: 100,
                overdraft_limit: 10
            }))
        ),
        "the account's own error comes back typed: {:?}",
        on_y[3]
    );

    // The positions a routed command returns are where its events are.
    let stream = StreamId::new("account", &y)?;
    let log = a.store().read_stream(&stream, StreamVersion(1)).await?;
    let returned: Vec<_> = on_y
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .flat_map(|c| c.events.iter().map(|e| (e.version, e.position.clone())))
        .collect();
    let stored: Vec<_> = log
        .iter()
        .map(|r| (r.version, r.position.clone()))
        .collect();
    assert_eq!(returned, stored);

    // A retry through the non-owner is answered with the first result.
    let deposit = on_b
        .execute_with(
            &y,
            AccountCommand::Deposit { amount: 50 },
            CommandId::new(format!("{y}-step-1"))?.into(),
        )
        .await?;
    let Ok(first) = &on_y[1] else {
        anyhow::bail!("the first deposit committed")
    };
    assert!(deposit.replayed);
    assert_eq!(deposit.version, first.version);
    assert_eq!(deposit.events, first.events);
    // The same id for another command is refused, as on the owner.
    let reused = on_b
        .execute_with(
            &y,
            AccountCommand::Deposit { amount: 7 },
            CommandId::new(format!("{y}-step-1"))?.into(),
        )
        .await;
    assert!(
        matches!(
            reused,
            Err(Error::Store(keel::store::Error::CommandIdReused { .. }))
        ),
        "{reused:?}"
    );

    // And the other way round: a stream of b's, through a.
    let z = accounts_in(&on_b, of_b, 1, "z").remove(0);
    let opened = on_a
        .execute_with(
            &z,
            AccountCommand::Open {
                owner: "Zed".into(),
                overdraft_limit: 0,
            },
            CommandId::new("z-open")?.into(),
        )
        .await?;
    assert_eq!(opened.version, StreamVersion(1));
    // Written by its owner (whose local state follows its commit a moment later).
    let z_stream = StreamId::new("account", &z)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while b.store().stream_version(&z_stream).await? != StreamVersion(1) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "b serves z's version"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        b.store()
            .read_stream(&z_stream, StreamVersion(1))
            .await?
            .len(),
        1
    );

    // The health view names each partition's owner, and nothing waits.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let health = a.health().await?;
        assert_eq!(health.len(), PARTITIONS as usize);
        let owners_right = health.iter().all(|h| {
            let expected = if of_a.contains(&h.partition.0) {
                a.instance()
            } else {
                b.instance()
            };
            h.owner.as_deref() == Some(expected)
        });
        if owners_right && health.iter().all(|h| h.pending_commands == 0) {
            let y_partition = on_a.partition_of(&y)?;
            let end = health
                .iter()
                .find(|h| h.partition == y_partition)
                .map(|h| h.end);
            assert!(
                end > log.last().map(|r| r.offset()),
                "the end is past y's events"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "health did not show the owners with nothing pending: {health:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.close().await;
    a.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_restart_never_turns_one_command_into_two() -> anyhow::Result<()> {
    let bootstrap = kafka_bootstrap();
    let prefix = kafka::unique_prefix("restart");
    let (owner, on_owner) = instance(&bootstrap, &prefix, "owner").await?;
    let (caller, on_caller) = instance(&bootstrap, &prefix, "caller").await?;
    let owned = settled(&[&owner, &caller]).await?;
    let account = accounts_in(&on_owner, &owned[0], 1, "r").remove(0);
    let stream = StreamId::new("account", &account)?;
    on_owner
        .execute(
            &account,
            AccountCommand::Open {
                owner: "Rae".into(),
                overdraft_limit: 0,
            },
        )
        .await?;

    // The caller sends a deposit and gives up before the answer (a timeout far shorter than
    // a round trip), then restarts: a new instance with a new id.
    let id = CommandId::new("deposit-once")?;
    let gave_up = on_caller
        .clone()
        .timeout(Duration::from_micros(1))
        .execute_with(
            &account,
            AccountCommand::Deposit { amount: 25 },
            id.clone().into(),
        )
        .await;
    assert!(
        matches!(
            gave_up,
            Err(Error::Store(keel::store::Error::Timeout { .. }))
        ),
        "{gave_up:?}"
    );
    caller.close().await;
    let (again, on_again) = instance(&bootstrap, &prefix, "caller-2").await?;
    // The command reached the owner or not; either way the retry with its id applies it once.
    let retried = on_again
        .clone()
        .always_route(true)
        .execute_with(
            &account,
            AccountCommand::Deposit { amount: 25 },
            id.clone().into(),
        )
        .await?;
    let once_more = on_again
        .clone()
        .always_route(true)
        .execute_with(
            &account,
            AccountCommand::Deposit { amount: 25 },
            id.clone().into(),
        )
        .await?;
    assert!(once_more.replayed);
    assert_eq!(once_more.events, retried.events);
    let events = owner.store().read_stream(&stream, StreamVersion(1)).await?;
    let deposits = events
        .iter()
        .filter(|r| r.command_id.as_ref() == Some(&id))
        .count();
    assert_eq!(deposits, 1, "one deposit for one command id");
    assert_eq!(
        on_owner.repository().load(&account).await?.state.balance(),
        25
    );
    again.close().await;
    owner.close().await;
    Ok(())
}
