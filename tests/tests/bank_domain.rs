//! The bank's account rules, given/when/then with `keel::testing::AggregateTest`, and the
//! account repository on a real SQLite file: refusals append nothing, a repeated command id
//! appends once, and stored events that no longer decode are reported, never skipped.

use std::sync::Arc;

use bank::{Account, AccountCommand, AccountError, AccountEvent, AccountStatus, MAX_AMOUNT};
use keel::repository::Error;
use keel::store::sqlite::SqliteStore;
use keel::testing::AggregateTest;
use keel::{
    AppendRequest, CommandId, DecodeErrorKind, EventStore, ExpectedVersion, NewEvent, Repository,
    StreamId, StreamVersion,
};

fn opened(overdraft_limit: u64) -> AccountEvent {
    AccountEvent::Opened {
        owner: "Alice".into(),
        overdraft_limit,
    }
}

fn deposited(amount: u64) -> AccountEvent {
    AccountEvent::Deposited { amount }
}

fn withdrawn(amount: u64) -> AccountEvent {
    AccountEvent::Withdrawn { amount }
}

fn open(owner: &str, overdraft_limit: u64) -> AccountCommand {
    AccountCommand::Open {
        owner: owner.into(),
        overdraft_limit,
    }
}

// ---- Opening ----

#[tokio::test]
async fn open_records_the_owner_and_the_overdraft_limit() {
    let account = AggregateTest::<Account>::given([])
        .when(open("Alice", 100))
        .await
        .then([opened(100)]);
    assert_eq!(account.status(), AccountStatus::Open);
    assert_eq!(account.owner(), "Alice");
    assert_eq!(account.overdraft_limit(), 100);
    assert_eq!(account.balance(), 0);
}

#[tokio::test]
async fn opening_an_open_account_again_is_refused() {
    AggregateTest::<Account>::given([opened(0)])
        .when(open("Alice", 0))
        .await
        .then_rejected(AccountError::AlreadyOpen);
}

#[tokio::test]
async fn opening_a_closed_account_again_is_refused() {
    AggregateTest::<Account>::given([opened(0), AccountEvent::Closed])
        .when(open("Alice", 0))
        .await
        .then_rejected(AccountError::Closed);
}

#[tokio::test]
async fn a_blank_owner_is_refused() {
    for owner in ["", "   "] {
        AggregateTest::<Account>::given([])
            .when(open(owner, 0))
            .await
            .then_rejected(AccountError::EmptyOwner);
    }
}

#[tokio::test]
async fn an_owner_of_100_characters_is_accepted_and_of_101_refused() {
    let longest = "é".repeat(100);
    AggregateTest::<Account>::given([])
        .when(open(&longest, 0))
        .await
        .then([AccountEvent::Opened {
            owner: longest.clone(),
            overdraft_limit: 0,
        }]);
    AggregateTest::<Account>::given([])
        .when(open(&format!("{longest}x"), 0))
        .await
        .then_rejected(AccountError::OwnerTooLong { chars: 101 });
}

#[tokio::test]
async fn an_overdraft_limit_beyond_the_largest_balance_is_refused() {
    AggregateTest::<Account>::given([])
        .when(open("Alice", MAX_AMOUNT + 1))
        .await
        .then_rejected(AccountError::OverdraftLimitTooLarge {
            overdraft_limit: MAX_AMOUNT + 1,
        });
}

// ---- Deposits ----

#[tokio::test]
async fn a_deposit_before_opening_is_refused() {
    AggregateTest::<Account>::given([])
        .when(AccountCommand::Deposit { amount: 5 })
        .await
        .then_rejected(AccountError::NotOpen);
}

#[tokio::test]
async fn a_deposit_adds_to_the_balance() {
    let account = AggregateTest::<Account>::given([opened(0), deposited(5)])
        .when(AccountCommand::Deposit { amount: 7 })
        .await
        .then([deposited(7)]);
    assert_eq!(account.balance(), 12);
}

#[tokio::test]
async fn a_zero_amount_is_refused() {
    AggregateTest::<Account>::given([opened(0)])
        .when(AccountCommand::Deposit { amount: 0 })
        .await
        .then_rejected(AccountError::InvalidAmount { amount: 0 });
    AggregateTest::<Account>::given([opened(10), deposited(5)])
        .when(AccountCommand::Withdraw { amount: 0 })
        .await
        .then_rejected(AccountError::InvalidAmount { amount: 0 });
}

#[tokio::test]
async fn a_deposit_past_the_largest_balance_is_refused() {
    AggregateTest::<Account>::given([opened(0), deposited(MAX_AMOUNT - 1)])
        .when(AccountCommand::Deposit { amount: 1 })
        .await
        .then([deposited(1)]);
    AggregateTest::<Account>::given([opened(0), deposited(MAX_AMOUNT - 1)])
        .when(AccountCommand::Deposit { amount: 2 })
        .await
        .then_rejected(AccountError::BalanceTooLarge {
            balance: i64::MAX - 1,
            amount: 2,
        });
}

// ---- Withdrawals and the overdraft rule: balance - amount >= -overdraft_limit ----

#[tokio::test]
async fn a_withdrawal_down_to_the_overdraft_limit_is_accepted() {
    let account = AggregateTest::<Account>::given([opened(100), deposited(50)])
        .when(AccountCommand::Withdraw { amount: 150 })
        .await
        .then([withdrawn(150)]);
    assert_eq!(account.balance(), -100);
}

#[tokio::test]
async fn a_withdrawal_one_past_the_overdraft_limit_is_refused() {
    AggregateTest::<Account>::given([opened(100), deposited(50)])
        .when(AccountCommand::Withdraw { amount: 151 })
        .await
        .then_rejected(AccountError::InsufficientFunds {
            balance: 50,
            amount: 151,
            overdraft_limit: 100,
        });
}

#[tokio::test]
async fn an_overdrawn_account_can_only_go_down_to_its_limit() {
    let overdrawn = [opened(100), withdrawn(60)];
    AggregateTest::<Account>::given(overdrawn.clone())
        .when(AccountCommand::Withdraw { amount: 40 })
        .await
        .then([withdrawn(40)]);
    AggregateTest::<Account>::given(overdrawn)
        .when(AccountCommand::Withdraw { amount: 41 })
        .await
        .then_rejected(AccountError::InsufficientFunds {
            balance: -60,
            amount: 41,
            overdraft_limit: 100,
        });
}

#[tokio::test]
async fn without_an_overdraft_the_balance_cannot_go_below_zero() {
    AggregateTest::<Account>::given([opened(0), deposited(10)])
        .when(AccountCommand::Withdraw { amount: 10 })
        .await
        .then([withdrawn(10)]);
    AggregateTest::<Account>::given([opened(0), deposited(10)])
        .when(AccountCommand::Withdraw { amount: 11 })
        .await
        .then_rejected(AccountError::InsufficientFunds {
            balance: 10,
            amount: 11,
            overdraft_limit: 0,
        });
}

#[tokio::test]
async fn the_largest_withdrawal_never_overflows() {
    AggregateTest::<Account>::given([opened(MAX_AMOUNT)])
        .when(AccountCommand::Withdraw { amount: u64::MAX })
        .await
        .then_rejected(AccountError::InsufficientFunds {
            balance: 0,
            amount: u64::MAX,
            overdraft_limit: MAX_AMOUNT,
        });
    let account = AggregateTest::<Account>::given([opened(MAX_AMOUNT)])
        .when(AccountCommand::Withdraw { amount: MAX_AMOUNT })
        .await
        .then([withdrawn(MAX_AMOUNT)]);
    assert_eq!(account.balance(), -i64::MAX);
}

// ---- Closing ----

#[tokio::test]
async fn a_closed_account_refuses_deposits_and_withdrawals() {
    let closed = [opened(100), AccountEvent::Closed];
    for command in [
        AccountCommand::Deposit { amount: 1 },
        AccountCommand::Withdraw { amount: 1 },
        AccountCommand::Close,
    ] {
        AggregateTest::<Account>::given(closed.clone())
            .when(command)
            .await
            .then_rejected(AccountError::Closed);
    }
}

#[tokio::test]
async fn closing_with_a_non_zero_balance_is_refused() {
    AggregateTest::<Account>::given([opened(0), deposited(3)])
        .when(AccountCommand::Close)
        .await
        .then_rejected(AccountError::NonZeroBalance { balance: 3 });
    AggregateTest::<Account>::given([opened(10), withdrawn(4)])
        .when(AccountCommand::Close)
        .await
        .then_rejected(AccountError::NonZeroBalance { balance: -4 });
}

#[tokio::test]
async fn closing_at_a_zero_balance_is_accepted() {
    let account = AggregateTest::<Account>::given([opened(0), deposited(3), withdrawn(3)])
        .when(AccountCommand::Close)
        .await
        .then([AccountEvent::Closed]);
    assert_eq!(account.status(), AccountStatus::Closed);
}

#[tokio::test]
async fn closing_an_account_never_opened_is_refused() {
    AggregateTest::<Account>::given([])
        .when(AccountCommand::Close)
        .await
        .then_rejected(AccountError::NotOpen);
}

#[test]
fn refusals_read_as_sentences() {
    let refusal = AccountError::InsufficientFunds {
        balance: 50,
        amount: 151,
        overdraft_limit: 100,
    };
    assert_eq!(
        refusal.to_string(),
        "insufficient funds: the balance is 50 and the overdraft limit 100, so 151 cannot be \
         withdrawn"
    );
    assert_eq!(AccountError::Closed.to_string(), "the account is closed");
}

// ---- The repository on a real SQLite file ----

/// A fresh SQLite store in its own temporary directory (kept alive by the returned guard).
async fn sqlite() -> anyhow::Result<(tempfile::TempDir, Arc<SqliteStore>)> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path().join("bank.db")).await?;
    Ok((dir, Arc::new(store)))
}

fn stream(id: &str) -> anyhow::Result<StreamId> {
    Ok(Repository::<Account, SqliteStore>::stream(id)?)
}

#[tokio::test]
async fn a_command_on_a_closed_account_is_rejected_and_appends_nothing() -> anyhow::Result<()> {
    let (_dir, store) = sqlite().await?;
    let repo = Repository::<Account, _>::new(Arc::clone(&store));
    repo.execute("acc", open("Alice", 0)).await?;
    let closed = repo.execute("acc", AccountCommand::Close).await?;
    assert_eq!(closed.version, StreamVersion(2));

    let refused = repo
        .execute("acc", AccountCommand::Deposit { amount: 5 })
        .await;
    assert!(
        matches!(refused, Err(Error::Rejected(AccountError::Closed))),
        "{refused:?}"
    );
    assert_eq!(
        store.stream_version(&stream("acc")?).await?,
        StreamVersion(2)
    );
    assert_eq!(
        store
            .read_stream(&stream("acc")?, StreamVersion(1))
            .await?
            .len(),
        2
    );
    let loaded = repo.load("acc").await?;
    assert_eq!(loaded.version, StreamVersion(2));
    assert_eq!(loaded.state.status(), AccountStatus::Closed);
    Ok(())
}

#[tokio::test]
async fn the_same_command_id_twice_appends_one_set_of_events() -> anyhow::Result<()> {
    let (_dir, store) = sqlite().await?;
    let repo = Repository::<Account, _>::new(Arc::clone(&store));
    let open_id = CommandId::new("open-acc")?;
    let first = repo
        .execute_with("acc", open("Alice", 0), open_id.clone().into())
        .await?;
    let second = repo
        .execute_with("acc", open("Alice", 0), open_id.into())
        .await?;
    assert!(!first.replayed);
    assert!(second.replayed, "the retry must be answered from the log");
    assert_eq!(second.events, first.events);
    assert_eq!(second.version, StreamVersion(1));

    let deposit_id = CommandId::new("deposit-1")?;
    let deposit = AccountCommand::Deposit { amount: 40 };
    let first = repo
        .execute_with("acc", deposit.clone(), deposit_id.clone().into())
        .await?;
    let second = repo.execute_with("acc", deposit, deposit_id.into()).await?;
    assert!(second.replayed);
    assert_eq!(second.events, first.events);
    assert_eq!(first.events.len(), 1);

    let loaded = repo.load("acc").await?;
    assert_eq!(loaded.version, StreamVersion(2));
    assert_eq!(loaded.state.balance(), 40, "the deposit counted once");
    assert_eq!(
        store
            .read_stream(&stream("acc")?, StreamVersion(1))
            .await?
            .len(),
        2
    );
    Ok(())
}

#[tokio::test]
async fn a_command_id_reused_for_another_command_is_refused() -> anyhow::Result<()> {
    let (_dir, store) = sqlite().await?;
    let repo = Repository::<Account, _>::new(Arc::clone(&store));
    repo.execute("acc", open("Alice", 0)).await?;
    let id = CommandId::new("pay-1")?;
    repo.execute_with(
        "acc",
        AccountCommand::Deposit { amount: 5 },
        id.clone().into(),
    )
    .await?;
    let reused = repo
        .execute_with("acc", AccountCommand::Deposit { amount: 6 }, id.into())
        .await;
    assert!(
        matches!(
            reused,
            Err(Error::Store(keel::store::Error::CommandIdReused { .. }))
        ),
        "{reused:?}"
    );
    assert_eq!(repo.load("acc").await?.state.balance(), 5);
    Ok(())
}

/// Opens `acc` with a deposit through the repository, then appends `bad` through the store
/// directly, as an older or foreign writer would. Returns the bad record's offset.
async fn with_a_bad_record(
    repo: &Repository<Account, SqliteStore>,
    bad: NewEvent,
) -> anyhow::Result<keel::Offset> {
    repo.execute("acc", open("Alice", 10)).await?;
    repo.execute("acc", AccountCommand::Deposit { amount: 5 })
        .await?;
    let appended = repo
        .store()
        .append(AppendRequest::new(
            stream("acc")?,
            ExpectedVersion::Exact(StreamVersion(2)),
            vec![bad],
        ))
        .await?;
    assert_eq!(appended.first_version, StreamVersion(3));
    Ok(appended.offsets[0])
}

#[tokio::test]
async fn a_payload_that_no_longer_decodes_fails_the_load_naming_the_record() -> anyhow::Result<()> {
    let (_dir, store) = sqlite().await?;
    let repo = Repository::<Account, _>::new(Arc::clone(&store));
    let bad = NewEvent::raw("Deposited", 1, br#"{"amount":"lots"}"#.to_vec());
    let offset = with_a_bad_record(&repo, bad).await?;

    let Err(Error::Decode(error)) = repo.load("acc").await else {
        panic!("loading must fail with a decode error");
    };
    assert_eq!(error.event_type, "Deposited");
    assert_eq!(error.schema_version, 1);
    assert_eq!(error.stream, Some((stream("acc")?, StreamVersion(3))));
    let position = error
        .position
        .as_ref()
        .expect("the error names the position");
    assert_eq!(position.offset, offset);
    assert_eq!(position.topic.as_str(), "account");
    assert!(matches!(error.kind, DecodeErrorKind::Payload(_)), "{error}");
    let message = error.to_string();
    for part in [
        "\"Deposited\"",
        "account/acc",
        "version 3",
        &format!("offset {offset}"),
    ] {
        assert!(message.contains(part), "{part:?} missing from {message:?}");
    }

    // Nothing is lost: every record is still there, the bad one included.
    let records = store.read_stream(&stream("acc")?, StreamVersion(1)).await?;
    assert_eq!(records.len(), 3);
    assert_eq!(records[2].payload, br#"{"amount":"lots"}"#);
    // And a command on the account is refused the same way instead of deciding on a
    // partial state.
    let refused = repo
        .execute("acc", AccountCommand::Withdraw { amount: 1 })
        .await;
    assert!(matches!(refused, Err(Error::Decode(_))), "{refused:?}");
    assert_eq!(
        store.stream_version(&stream("acc")?).await?,
        StreamVersion(3)
    );
    Ok(())
}

#[tokio::test]
async fn an_unknown_event_type_fails_the_load_naming_the_record() -> anyhow::Result<()> {
    let (_dir, store) = sqlite().await?;
    let repo = Repository::<Account, _>::new(Arc::clone(&store));
    let offset = with_a_bad_record(&repo, NewEvent::raw("Frozen", 1, b"null".to_vec())).await?;

    let Err(Error::Decode(error)) = repo.load("acc").await else {
        panic!("loading must fail with a decode error");
    };
    assert_eq!(error.event_type, "Frozen");
    assert_eq!(error.stream, Some((stream("acc")?, StreamVersion(3))));
    assert_eq!(error.position.as_ref().map(|p| p.offset), Some(offset));
    let DecodeErrorKind::UnknownType { known } = &error.kind else {
        panic!("expected an unknown type, got {error}");
    };
    assert_eq!(known, "Opened, Deposited, Withdrawn, Closed");

    let records = store.read_stream(&stream("acc")?, StreamVersion(1)).await?;
    let types: Vec<&str> = records.iter().map(|r| r.event_type.as_str()).collect();
    assert_eq!(types, ["Opened", "Deposited", "Frozen"]);
    Ok(())
}

#[tokio::test]
async fn accounts_survive_closing_and_reopening_the_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bank.db");
    let bank = bank::Bank::open_sqlite(&path).await?;
    bank.open("acc", "Alice", 20, None).await?;
    bank.withdraw("acc", 15, None).await?;
    let before = bank.account("acc").await?;
    bank.close().await;

    let bank = bank::Bank::open_sqlite(&path).await?;
    let after = bank.account("acc").await?;
    assert_eq!(after.state, before.state);
    assert_eq!(after.version, StreamVersion(2));
    assert_eq!(after.state.balance(), -15);
    bank.close().await;
    Ok(())
}
