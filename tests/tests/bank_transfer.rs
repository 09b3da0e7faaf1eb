//! Transfers between accounts through `bank::Bank` on a real SQLite file: idempotent per
//! transfer id, refused up front when nothing can move, and honest about the case they do not
//! make atomic (money left the source, the deposit failed).

use bank::TransferError;
use bank::{AccountCommand, AccountError, Bank, TRANSFER_FROM, TRANSFER_ID, TRANSFER_TO};
use keel::repository::Error;
use keel::{CommandId, CommandOptions, Metadata, StreamVersion};

/// Commits only the first leg of transfer `t1` (30 from alice to bob), exactly as a run that
/// stopped between the legs leaves the log.
async fn first_leg_only(bank: &Bank) -> anyhow::Result<()> {
    let metadata = Metadata::from([
        (TRANSFER_ID.to_owned(), "t1".to_owned()),
        (TRANSFER_FROM.to_owned(), "alice".to_owned()),
        (TRANSFER_TO.to_owned(), "bob".to_owned()),
    ]);
    let options = CommandOptions {
        command_id: Some(CommandId::new("t1-out")?),
        metadata,
        ..CommandOptions::default()
    };
    bank.accounts()
        .execute_with("alice", AccountCommand::Withdraw { amount: 30 }, options)
        .await?;
    Ok(())
}

/// A bank on a fresh SQLite file with `alice` (100, no overdraft) and `bob` (empty) open.
async fn bank() -> anyhow::Result<(tempfile::TempDir, Bank)> {
    let dir = tempfile::tempdir()?;
    let bank = Bank::open_sqlite(dir.path().join("bank.db")).await?;
    bank.open("alice", "Alice", 0, None).await?;
    bank.deposit("alice", 100, None).await?;
    bank.open("bob", "Bob", 0, None).await?;
    Ok((dir, bank))
}

async fn balances(bank: &Bank) -> anyhow::Result<(i64, i64)> {
    Ok((
        bank.account("alice").await?.state.balance(),
        bank.account("bob").await?.state.balance(),
    ))
}

#[tokio::test]
async fn a_transfer_moves_the_amount_with_command_ids_derived_from_its_id() -> anyhow::Result<()> {
    let (_dir, bank) = bank().await?;
    let transfer = bank
        .transfer("alice", "bob", 30, &CommandId::new("t1")?)
        .await?;
    assert!(!transfer.replayed());
    assert_eq!(balances(&bank).await?, (70, 30));

    let alice = bank.show("alice").await?;
    let bob = bank.show("bob").await?;
    let last_command = |s: &bank::Statement| {
        s.lines
            .last()
            .and_then(|l| l.command_id.as_ref())
            .map(|id| id.as_str().to_owned())
    };
    assert_eq!(last_command(&alice).as_deref(), Some("t1-out"));
    assert_eq!(last_command(&bob).as_deref(), Some("t1-in"));
    Ok(())
}

#[tokio::test]
async fn running_a_transfer_again_with_its_id_moves_nothing() -> anyhow::Result<()> {
    let (_dir, bank) = bank().await?;
    let id = CommandId::new("t1")?;
    let first = bank.transfer("alice", "bob", 30, &id).await?;
    let again = bank.transfer("alice", "bob", 30, &id).await?;
    assert!(again.replayed());
    assert_eq!(again.withdrawn.version, first.withdrawn.version);
    assert_eq!(again.deposited.version, first.deposited.version);
    assert_eq!(balances(&bank).await?, (70, 30));
    Ok(())
}

#[tokio::test]
async fn a_refused_withdrawal_moves_nothing() -> anyhow::Result<()> {
    let (_dir, bank) = bank().await?;
    let refused = bank
        .transfer("alice", "bob", 101, &CommandId::new("t1")?)
        .await;
    let Err(TransferError::NothingMoved { account, source }) = refused else {
        panic!("expected a refusal, got {refused:?}");
    };
    assert_eq!(account, "alice");
    assert!(matches!(
        source,
        Error::Rejected(AccountError::InsufficientFunds { .. })
    ));
    assert_eq!(balances(&bank).await?, (100, 0));
    assert_eq!(bank.account("bob").await?.version, StreamVersion(1));
    Ok(())
}

#[tokio::test]
async fn a_transfer_to_a_closed_account_is_refused_before_anything_moves() -> anyhow::Result<()> {
    let (_dir, bank) = bank().await?;
    bank.close_account("bob", None).await?;
    let refused = bank
        .transfer("alice", "bob", 10, &CommandId::new("t1")?)
        .await;
    let Err(TransferError::NothingMoved { account, source }) = refused else {
        panic!("expected a refusal, got {refused:?}");
    };
    assert_eq!(account, "bob");
    assert!(matches!(source, Error::Rejected(AccountError::Closed)));
    assert_eq!(bank.account("alice").await?.version, StreamVersion(2));
    assert_eq!(bank.account("alice").await?.state.balance(), 100);
    Ok(())
}

#[tokio::test]
async fn a_transfer_to_the_same_account_is_refused() -> anyhow::Result<()> {
    let (_dir, bank) = bank().await?;
    let refused = bank
        .transfer("alice", "alice", 10, &CommandId::new("t1")?)
        .await;
    assert!(matches!(refused, Err(TransferError::SameAccount)));
    assert_eq!(bank.account("alice").await?.version, StreamVersion(2));
    Ok(())
}

#[tokio::test]
async fn a_transfer_id_too_long_for_its_legs_is_refused() -> anyhow::Result<()> {
    let (_dir, bank) = bank().await?;
    let id = CommandId::new("t".repeat(keel::limits::MAX_ID_BYTES))?;
    let refused = bank.transfer("alice", "bob", 10, &id).await;
    assert!(matches!(refused, Err(TransferError::InvalidTransferId(_))));
    assert_eq!(balances(&bank).await?, (100, 0));
    Ok(())
}

/// The case a transfer does not make atomic: the withdrawal committed (here, by a run that
/// stopped after it), then the destination closed. The error says the money left and how to
/// finish; running it again never withdraws twice.
#[tokio::test]
async fn a_half_done_transfer_reports_the_money_in_flight_and_never_withdraws_twice()
-> anyhow::Result<()> {
    let (_dir, bank) = bank().await?;
    first_leg_only(&bank).await?;
    bank.close_account("bob", None).await?;

    for _ in 0..2 {
        let failed = bank
            .transfer("alice", "bob", 30, &CommandId::new("t1")?)
            .await;
        let Err(error) = failed else {
            panic!("expected the deposit leg to fail, got {failed:?}");
        };
        assert!(
            matches!(
                &error,
                TransferError::Deposit {
                    source: Error::Rejected(AccountError::Closed),
                    ..
                }
            ),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains("30 left account alice") && message.contains("transfer t1 again"),
            "{message}"
        );
    }
    assert_eq!(balances(&bank).await?, (70, 0));
    assert_eq!(bank.account("alice").await?.version, StreamVersion(3));
    Ok(())
}

/// The other half of that case: the process stopped after the withdrawal, and running the
/// transfer again finishes it.
#[tokio::test]
async fn running_a_half_done_transfer_again_finishes_it() -> anyhow::Result<()> {
    let (_dir, bank) = bank().await?;
    first_leg_only(&bank).await?;
    assert_eq!(balances(&bank).await?, (70, 0));

    let finished = bank
        .transfer("alice", "bob", 30, &CommandId::new("t1")?)
        .await?;
    assert!(
        finished.withdrawn.replayed,
        "the withdrawal is not run again"
    );
    assert!(!finished.deposited.replayed);
    assert_eq!(balances(&bank).await?, (70, 30));
    Ok(())
}

/// A transfer id names one transfer. Reused for other accounts or another amount, replaying
/// one leg and running the other would create or destroy money: it is refused instead.
#[tokio::test]
async fn a_transfer_id_reused_for_another_transfer_moves_nothing() -> anyhow::Result<()> {
    let (_dir, bank) = bank().await?;
    bank.open("carol", "Carol", 0, None).await?;
    bank.deposit("carol", 100, None).await?;
    let id = CommandId::new("t1")?;
    bank.transfer("alice", "bob", 30, &id).await?;
    let versions = |bank: &Bank| {
        let bank = bank.clone();
        async move {
            let mut versions = Vec::new();
            for account in ["alice", "bob", "carol"] {
                versions.push(bank.account(account).await?.version);
            }
            anyhow::Ok(versions)
        }
    };
    let before = versions(&bank).await?;

    for (from, to, amount) in [
        ("alice", "carol", 30), // the withdrawal would replay: carol would get money from nowhere
        ("carol", "bob", 30),   // the deposit would replay: carol's money would vanish
        ("alice", "bob", 31),   // another amount
    ] {
        let reused = bank.transfer(from, to, amount, &id).await;
        assert!(
            matches!(&reused, Err(TransferError::IdReused { transfer_id }) if *transfer_id == id),
            "{from} -> {to} {amount}: {reused:?}"
        );
    }
    assert_eq!(versions(&bank).await?, before);
    assert_eq!(balances(&bank).await?, (70, 30));
    assert_eq!(bank.account("carol").await?.state.balance(), 100);
    Ok(())
}

#[tokio::test]
async fn a_transfer_leg_names_the_transfer_in_its_metadata() -> anyhow::Result<()> {
    let (_dir, bank) = bank().await?;
    bank.transfer("alice", "bob", 30, &CommandId::new("t1")?)
        .await?;
    for account in ["alice", "bob"] {
        let statement = bank.show(account).await?;
        let leg = statement.lines.last().expect("the leg is in the statement");
        let get = |key| leg.metadata.get(key).map(String::as_str);
        assert_eq!(get(TRANSFER_ID), Some("t1"), "{account}");
        assert_eq!(get(TRANSFER_FROM), Some("alice"), "{account}");
        assert_eq!(get(TRANSFER_TO), Some("bob"), "{account}");
    }
    Ok(())
}
