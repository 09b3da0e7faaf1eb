//! Property: whatever commands arrive, the account loaded from a real SQLite store is the fold
//! of the accepted commands' events in memory, its version counts exactly those events, and
//! both hold after the file is closed and opened again. Alongside, a model that knows nothing
//! of `Apply` sums the accepted amounts: the balance matches it and never passes the overdraft
//! limit.

use std::sync::Arc;

use bank::{Account, AccountCommand, AccountEvent, MAX_AMOUNT};
use keel::store::sqlite::SqliteStore;
use keel::{Aggregate, Handle, Repository, StreamVersion};
use proptest::prelude::*;

/// The accounts commands go to: two, so streams share and split partitions.
const ACCOUNTS: [&str; 2] = ["alice", "bob"];

/// Amounts that are often accepted, sometimes zero, and sometimes large enough to meet the
/// overflow rules.
fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => 0..60_u64,
        1 => Just(0_u64),
        1 => Just(MAX_AMOUNT),
        1 => Just(u64::MAX),
    ]
}

fn command() -> impl Strategy<Value = AccountCommand> {
    let owner = prop_oneof![
        4 => "[A-Za-z][A-Za-z ]{0,8}",
        1 => Just(String::new()),
        1 => Just("o".repeat(101)),
    ];
    let overdraft_limit = prop_oneof![3 => 0..50_u64, 1 => Just(MAX_AMOUNT), 1 => Just(u64::MAX)];
    prop_oneof![
        2 => (owner, overdraft_limit).prop_map(|(owner, overdraft_limit)| AccountCommand::Open {
            owner,
            overdraft_limit,
        }),
        4 => amount().prop_map(|amount| AccountCommand::Deposit { amount }),
        4 => amount().prop_map(|amount| AccountCommand::Withdraw { amount }),
        1 => Just(AccountCommand::Close),
    ]
}

fn commands() -> impl Strategy<Value = Vec<(usize, AccountCommand)>> {
    prop::collection::vec((0..ACCOUNTS.len(), command()), 0..40)
}

/// One account folded in memory: its state, how many events it accepted, and the balance the
/// accepted commands' amounts add up to.
#[derive(Default)]
struct Folded {
    state: Account,
    events: u64,
    balance: i128,
}

async fn check(commands: Vec<(usize, AccountCommand)>) -> Result<(), TestCaseError> {
    let fail = |e: &dyn std::fmt::Display| TestCaseError::fail(e.to_string());
    let dir = tempfile::tempdir().map_err(|e| fail(&e))?;
    let path = dir.path().join("bank.db");
    let store = Arc::new(SqliteStore::open(&path).await.map_err(|e| fail(&e))?);
    let repo = Repository::<Account, _>::new(Arc::clone(&store));
    let mut folded: [Folded; ACCOUNTS.len()] = Default::default();

    for (index, command) in commands {
        let (Some(id), Some(fold)) = (ACCOUNTS.get(index), folded.get_mut(index)) else {
            return Err(fail(&"account index out of range"));
        };
        let decided: Result<Vec<AccountEvent>, _> = fold.state.handle(command.clone(), &()).await;
        let executed = repo.execute(id, command.clone()).await;
        match (decided, executed) {
            (Ok(events), Ok(committed)) => {
                let written: Vec<AccountEvent> =
                    committed.events.into_iter().map(|c| c.event).collect();
                prop_assert_eq!(&written, &events, "{:?} on {}", command, id);
                for event in &events {
                    fold.state.apply_event(event);
                }
                fold.events += events.len() as u64;
                match command {
                    AccountCommand::Deposit { amount } => fold.balance += i128::from(amount),
                    AccountCommand::Withdraw { amount } => fold.balance -= i128::from(amount),
                    AccountCommand::Open { .. } | AccountCommand::Close => {}
                }
                prop_assert_eq!(committed.version, StreamVersion(fold.events));
                prop_assert_eq!(i128::from(fold.state.balance()), fold.balance);
                prop_assert!(fold.balance >= -i128::from(fold.state.overdraft_limit()));
            }
            (Err(reason), Err(keel::repository::Error::Rejected(rejected))) => {
                prop_assert_eq!(rejected, reason, "{:?} on {}", command, id);
            }
            (decided, executed) => {
                return Err(fail(&format!(
                    "{command:?} on {id}: in memory {decided:?}, through the store {executed:?}"
                )));
            }
        }
    }

    for (id, fold) in ACCOUNTS.iter().zip(&folded) {
        let loaded = repo.load(id).await.map_err(|e| fail(&e))?;
        prop_assert_eq!(&loaded.state, &fold.state, "{} loaded from the store", id);
        prop_assert_eq!(loaded.version, StreamVersion(fold.events));
    }

    drop(repo);
    let store = Arc::try_unwrap(store).map_err(|_| fail(&"the store is still shared"))?;
    store.close().await;
    let store = Arc::new(SqliteStore::open(&path).await.map_err(|e| fail(&e))?);
    let repo = Repository::<Account, _>::new(Arc::clone(&store));
    for (id, fold) in ACCOUNTS.iter().zip(&folded) {
        let loaded = repo.load(id).await.map_err(|e| fail(&e))?;
        prop_assert_eq!(&loaded.state, &fold.state, "{} after reopening", id);
        prop_assert_eq!(loaded.version, StreamVersion(fold.events));
    }
    drop(repo);
    if let Ok(store) = Arc::try_unwrap(store) {
        store.close().await;
    }
    Ok(())
}

proptest! {
    // Each case opens a SQLite file (twice) and commits with fsync: keep the count modest.
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn the_store_agrees_with_the_in_memory_fold(commands in commands()) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        runtime.block_on(check(commands))?;
    }
}
