//! Helpers shared by the projection tests: filling a log with bank events, reading the log
//! and the views back, and the views computed straight from the log, independently of the
//! projection code, to compare against.

#![allow(
    dead_code,
    reason = "each test file uses its own subset of the helpers"
)]

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bank::projections::AccountRow;
use bank::{AccountCommand, AccountError, AccountEvent, Bank};
use keel::{
    AppendRequest, EventStore, ExpectedVersion, NewEvent, Offset, Partition, RecordedEvent,
    StreamId, StreamVersion, Topic,
};
use keel_projections::store::sqlite::SqliteViews;
use keel_projections::store::{Generation, ViewState, ViewStore};
use sqlx::Row as _;

/// The bank's topic.
pub(crate) const ACCOUNT: &str = "account";

/// The guard against hangs: nothing in these tests should come near it.
pub(crate) const HANG: Duration = Duration::from_secs(60);

/// Runs `future`, failing with `what` if it hangs.
pub(crate) async fn guard<T>(what: &str, future: impl Future<Output = T>) -> anyhow::Result<T> {
    tokio::time::timeout(HANG, future)
        .await
        .with_context(|| format!("{what} did not finish within {HANG:?}"))
}

/// A number in `0..n`, different on every call and every run.
pub(crate) fn random_below(n: u64) -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        % n.max(1)
}

/// The id of account number `i`.
pub(crate) fn account_id(i: usize) -> String {
    format!("acc-{i:04}")
}

/// The bank's topic, typed.
pub(crate) fn account_topic() -> Topic {
    Topic::new(ACCOUNT).expect("`account` is a valid topic")
}

/// A small deterministic generator (splitmix64), so a log's content depends only on its seed.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The events of account `i`: opened with an overdraft limit of 1,000, then deposits and
/// withdrawals that respect the limit; `n` events in all.
pub(crate) fn account_events(i: usize, n: usize, seed: u64) -> Vec<AccountEvent> {
    let mut mix = Mix(seed ^ (i as u64).wrapping_mul(0x1000_0000_01B3));
    let mut events = vec![AccountEvent::Opened {
        owner: format!("Owner {i}"),
        overdraft_limit: 1000,
    }];
    let mut balance: i64 = 0;
    while events.len() < n {
        let amount = 1 + mix.next() % 500;
        let signed = i64::try_from(amount).expect("small amount");
        if mix.next().is_multiple_of(3) && balance - signed >= -1000 {
            balance -= signed;
            events.push(AccountEvent::Withdrawn { amount });
        } else {
            balance += signed;
            events.push(AccountEvent::Deposited { amount });
        }
    }
    events
}

/// Appends [`account_events`] of every account in `accounts` (`events_each` events each) to
/// `log`, `per_append` events per append, from 32 concurrent tasks (the SQLite store
/// commits concurrent appends together). Returns how many events were appended.
pub(crate) async fn fill_log(
    log: &Arc<dyn EventStore>,
    accounts: Range<usize>,
    events_each: usize,
    seed: u64,
) -> anyhow::Result<u64> {
    const TASKS: usize = 32;
    const PER_APPEND: usize = 25;
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let log = Arc::clone(log);
        let mine: Vec<usize> = accounts.clone().filter(|i| i % TASKS == task).collect();
        tasks.spawn(async move {
            let mut appended = 0u64;
            for i in mine {
                let stream = StreamId::new(ACCOUNT, account_id(i))?;
                let mut version = log.stream_version(&stream).await?;
                for chunk in account_events(i, events_each, seed).chunks(PER_APPEND) {
                    let events = chunk
                        .iter()
                        .map(NewEvent::from_event)
                        .collect::<Result<Vec<_>, _>>()?;
                    let request =
                        AppendRequest::new(stream.clone(), ExpectedVersion::Exact(version), events);
                    let done = log.append(request).await?;
                    version = done.last_version();
                    appended += chunk.len() as u64;
                }
            }
            anyhow::Ok(appended)
        });
    }
    let mut total = 0;
    while let Some(done) = tasks.join_next().await {
        total += done??;
    }
    Ok(total)
}

/// Runs real bank commands through [`Bank`] from 16 concurrent tasks: opens every account of
/// `accounts` that is not open yet, then `commands_each` deposits and withdrawals on each
/// (a withdrawal the overdraft refuses is skipped). Returns how many events were written.
pub(crate) async fn bank_wave(
    bank: &Bank<dyn EventStore>,
    accounts: Range<usize>,
    commands_each: usize,
    seed: u64,
) -> anyhow::Result<u64> {
    const TASKS: usize = 16;
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let bank = bank.clone();
        let mine: Vec<usize> = accounts.clone().filter(|i| i % TASKS == task).collect();
        tasks.spawn(async move {
            let mut written = 0u64;
            for i in mine {
                let id = account_id(i);
                match bank.open(&id, format!("Owner {i}"), 300, None).await {
                    Ok(c) => written += c.events.len() as u64,
                    Err(keel::repository::Error::Rejected(AccountError::AlreadyOpen)) => {}
                    Err(e) => return Err(anyhow::Error::new(e).context(format!("open {id}"))),
                }
                let mut mix = Mix(seed ^ (i as u64).wrapping_mul(31));
                for _ in 0..commands_each {
                    let amount = 1 + mix.next() % 200;
                    let command = if mix.next().is_multiple_of(3) {
                        AccountCommand::Withdraw { amount }
                    } else {
                        AccountCommand::Deposit { amount }
                    };
                    match bank.execute(&id, command, None).await {
                        Ok(c) => written += c.events.len() as u64,
                        Err(keel::repository::Error::Rejected(
                            AccountError::InsufficientFunds { .. },
                        )) => {}
                        Err(e) => return Err(anyhow::Error::new(e).context(format!("on {id}"))),
                    }
                }
            }
            anyhow::Ok(written)
        });
    }
    let mut total = 0;
    while let Some(done) = tasks.join_next().await {
        total += done??;
    }
    Ok(total)
}

/// Every record of the `account` topic, partition by partition, in offset order.
pub(crate) async fn read_log(log: &dyn EventStore) -> anyhow::Result<Vec<RecordedEvent>> {
    let topic = account_topic();
    let mut out = Vec::new();
    for p in 0..partition_count(log).await? {
        out.extend(
            log.read_partition(&topic, Partition(p), Offset(0), usize::MAX >> 1)
                .await?,
        );
    }
    Ok(out)
}

/// How many partitions the `account` topic has (0 before it exists).
pub(crate) async fn partition_count(log: &dyn EventStore) -> anyhow::Result<u32> {
    let topic = account_topic();
    Ok(log
        .topics()
        .await?
        .into_iter()
        .find(|t| t.topic == topic)
        .map_or(0, |t| t.partitions))
}

/// The head of each partition of the `account` topic.
pub(crate) async fn heads(log: &dyn EventStore) -> anyhow::Result<BTreeMap<u32, u64>> {
    let topic = account_topic();
    let mut out = BTreeMap::new();
    for p in 0..partition_count(log).await? {
        out.insert(p, log.head(&topic, Partition(p)).await?.0);
    }
    Ok(out)
}

/// The checkpoint of each partition of the `account` topic in the active generation of
/// projection `name` (0 where none was committed).
pub(crate) async fn active_checkpoints<S: ViewStore>(
    views: &S,
    log: &dyn EventStore,
    name: &str,
) -> anyhow::Result<BTreeMap<u32, u64>> {
    let active = active(views, name)
        .await?
        .with_context(|| format!("{name} has an active generation"))?;
    let stored: HashMap<u32, u64> = views
        .checkpoints(&active.id())
        .await?
        .into_iter()
        .filter(|c| c.topic.as_str() == ACCOUNT)
        .map(|c| (c.partition.0, c.next.0))
        .collect();
    Ok((0..partition_count(log).await?)
        .map(|p| (p, stored.get(&p).copied().unwrap_or(0)))
        .collect())
}

/// The active generation of projection `name`.
pub(crate) async fn active<S: ViewStore>(
    views: &S,
    name: &str,
) -> anyhow::Result<Option<Generation>> {
    Ok(views
        .generations(name)
        .await?
        .into_iter()
        .find(|g| g.state == ViewState::Active))
}

/// The balances view computed from `records` (in log order per partition, which is version
/// order per account): what `bank::projections::Balances` must show.
pub(crate) fn expected_balances<'a>(
    records: impl IntoIterator<Item = &'a RecordedEvent>,
) -> anyhow::Result<Vec<AccountRow>> {
    let mut rows: BTreeMap<String, AccountRow> = BTreeMap::new();
    for r in records {
        let event: AccountEvent = r.decode()?;
        let row = rows
            .entry(r.stream.id().to_owned())
            .or_insert_with(|| AccountRow {
                id: r.stream.id().to_owned(),
                status: "open".to_owned(),
                ..AccountRow::default()
            });
        row.version = r.version.0;
        match event {
            AccountEvent::Opened { owner, .. } => {
                row.owner = owner;
                row.status = "open".to_owned();
            }
            AccountEvent::Deposited { amount } => row.balance += i64::try_from(amount)?,
            AccountEvent::Withdrawn { amount } => row.balance -= i64::try_from(amount)?,
            AccountEvent::Closed => row.status = "closed".to_owned(),
        }
    }
    Ok(rows.into_values().collect())
}

/// Balance per account computed from `records`: what `BalancesInMemory` must hold.
pub(crate) fn expected_balance_map<'a>(
    records: impl IntoIterator<Item = &'a RecordedEvent>,
) -> anyhow::Result<HashMap<String, i64>> {
    Ok(expected_balances(records)?
        .into_iter()
        .map(|r| (r.id, r.balance))
        .collect())
}

/// A row of the statement view's `movements` table: account, version, kind, amount,
/// partition, offset, time.
pub(crate) type MovementRow = (String, i64, String, i64, i64, i64, i64);

/// The statement view computed from `records`, ordered by account and version.
pub(crate) fn expected_movements<'a>(
    records: impl IntoIterator<Item = &'a RecordedEvent>,
) -> anyhow::Result<Vec<MovementRow>> {
    let mut rows = Vec::new();
    for r in records {
        let (kind, amount) = match r.decode::<AccountEvent>()? {
            AccountEvent::Opened { .. } => ("opened", 0),
            AccountEvent::Deposited { amount } => ("deposit", i64::try_from(amount)?),
            AccountEvent::Withdrawn { amount } => ("withdrawal", -i64::try_from(amount)?),
            AccountEvent::Closed => ("closed", 0),
        };
        rows.push((
            r.stream.id().to_owned(),
            i64::try_from(r.version.0)?,
            kind.to_owned(),
            amount,
            i64::from(r.partition().0),
            i64::try_from(r.offset().0)?,
            r.timestamp.as_micros(),
        ));
    }
    rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    Ok(rows)
}

/// Every row of the active statement view, ordered by account and version (empty before its
/// first build).
pub(crate) async fn read_movements(views: &SqliteViews) -> anyhow::Result<Vec<MovementRow>> {
    let Some(table) = views.table("statement", "movements").await? else {
        return Ok(Vec::new());
    };
    let rows = sqlx::query(&format!(
        "SELECT account, version, kind, amount, partition_no, log_offset, at FROM {table} \
         ORDER BY account, version"
    ))
    .fetch_all(views.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
                r.try_get(3)?,
                r.try_get(4)?,
                r.try_get(5)?,
                r.try_get(6)?,
            ))
        })
        .collect()
}

/// The names of the tables of `projection` in the views file, sorted.
pub(crate) async fn tables_of(
    views: &SqliteViews,
    projection: &str,
) -> anyhow::Result<Vec<String>> {
    let pattern = format!("{}\\_\\_g%", projection.replace('_', "\\_"));
    Ok(sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE ? ESCAPE '\\' \
         ORDER BY name",
    )
    .bind(pattern)
    .fetch_all(views.pool())
    .await?)
}

/// The records of `records` that sit before `checkpoints` (per partition).
pub(crate) fn before<'a>(
    records: &'a [RecordedEvent],
    checkpoints: &'a BTreeMap<u32, u64>,
) -> impl Iterator<Item = &'a RecordedEvent> + 'a {
    records.iter().filter(|r| {
        checkpoints
            .get(&r.partition().0)
            .is_some_and(|&c| r.offset().0 < c)
    })
}

/// The stream of account `id`.
pub(crate) fn account_stream(id: &str) -> StreamId {
    StreamId::new(ACCOUNT, id).expect("a valid account id")
}

/// Appends raw events to an account's stream, whatever its version: how bad data gets in.
pub(crate) async fn append_raw(
    log: &dyn EventStore,
    account: &str,
    events: Vec<NewEvent>,
) -> anyhow::Result<keel::Appended> {
    Ok(log
        .append(AppendRequest::new(
            account_stream(account),
            ExpectedVersion::Any,
            events,
        ))
        .await?)
}

/// The version an account's stream is at.
pub(crate) async fn version_of(
    log: &dyn EventStore,
    account: &str,
) -> anyhow::Result<StreamVersion> {
    Ok(log.stream_version(&account_stream(account)).await?)
}
