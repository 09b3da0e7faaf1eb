//! Transfers between two accounts: a withdrawal and a deposit, two commands on two streams,
//! with command ids derived from the transfer's id.
//!
//! **Atomic where the store can, idempotent everywhere.** On a store that commits appends to
//! several streams in one transaction ([`Capabilities::multi_stream_append`]: memory, SQLite,
//! PostgreSQL) both legs are decided on the accounts' current states and appended together with
//! [`EventStore::append_all`], each expecting the version it was decided on: the money moves
//! completely or not at all, and a concurrent command on either account makes the transfer
//! decide again on the new state (a bounded number of times). Running a transfer again with
//! its id never moves the money twice: committed legs are answered from the log.
//!
//! On a store without that capability (Kafka), the legs are two commands, one after the
//! other: if the process stops between them, or the deposit is refused, the money has left
//! the source and not reached the destination ([`TransferError::Deposit`]); running the
//! transfer again with the same id finishes it. (The shop example shows the other safe way,
//! for any store: a reservation made and released by a process manager.)
//!
//! Each leg carries the transfer's id and both accounts in its events' metadata
//! ([`TRANSFER_ID`], [`TRANSFER_FROM`], [`TRANSFER_TO`]), so a statement can say where money
//! came from, and an id reused for another transfer is caught before it moves anything.

use std::time::Duration;

use keel::store::{Appended, Capabilities};
use keel::{
    CommandId, CommandOptions, Committed, CommittedEvent, EventStore, IdError, Metadata,
    RecordedEvent, Repository,
};

use crate::account::{Account, AccountCommand, AccountEvent};
use crate::bank::{Bank, Error, Result};

/// The metadata key holding the transfer's id, on both legs' events.
pub const TRANSFER_ID: &str = "transfer.id";
/// The metadata key holding the source account, on both legs' events.
pub const TRANSFER_FROM: &str = "transfer.from";
/// The metadata key holding the destination account, on both legs' events.
pub const TRANSFER_TO: &str = "transfer.to";

impl<S: EventStore + ?Sized> Bank<S> {
    /// How many times an atomic transfer decides again after another writer moved one of
    /// its accounts.
    pub const TRANSFER_ATTEMPTS: u32 = 20;

    /// Moves `amount` from `from` to `to`: a withdrawal from `from` with command id
    /// `{transfer_id}-out` and a deposit into `to` with `{transfer_id}-in`.
    ///
    /// Idempotent per `transfer_id`; atomic on a store with
    /// [`Capabilities::multi_stream_append`], two steps otherwise: see the
    /// [module docs](crate::transfer). A new transfer is refused before anything moves when
    /// `from` refuses the withdrawal or `to` would refuse the deposit now; one whose
    /// withdrawal already committed (two steps, stopped between them) goes on to the deposit
    /// whatever `to` became.
    ///
    /// # Errors
    ///
    /// [`TransferError`], saying whether money moved.
    pub async fn transfer(
        &self,
        from: &str,
        to: &str,
        amount: u64,
        transfer_id: &CommandId,
    ) -> Result<Transfer, TransferError> {
        if from == to {
            return Err(TransferError::SameAccount);
        }
        let leg_id = |leg: &str| {
            CommandId::new(format!("{transfer_id}-{leg}")).map_err(TransferError::InvalidTransferId)
        };
        let (out_id, in_id) = (leg_id("out")?, leg_id("in")?);
        let nothing_moved = |account: &str| {
            let account = account.to_owned();
            move |source| TransferError::NothingMoved { account, source }
        };

        // A leg that already committed must be this transfer's, or the id is reused: replaying
        // it would move money that was never withdrawn, or withdraw money that never arrives.
        let out_leg = (self.leg(from, &out_id).await).map_err(nothing_moved(from))?;
        let in_leg = (self.leg(to, &in_id).await).map_err(nothing_moved(to))?;
        for leg in [&out_leg, &in_leg].into_iter().flatten() {
            if !is_leg_of(leg, from, to, amount) {
                return Err(TransferError::IdReused {
                    transfer_id: transfer_id.clone(),
                });
            }
        }
        if out_leg.is_none() {
            let target = (self.account(to).await).map_err(nothing_moved(to))?;
            (target.state.deposit(amount))
                .map_err(|reason| nothing_moved(to)(Error::Rejected(reason)))?;
        }

        let metadata = Metadata::from([
            (TRANSFER_ID.to_owned(), transfer_id.to_string()),
            (TRANSFER_FROM.to_owned(), from.to_owned()),
            (TRANSFER_TO.to_owned(), to.to_owned()),
        ]);
        let options = |id| CommandOptions {
            command_id: Some(id),
            metadata: metadata.clone(),
            ..CommandOptions::default()
        };
        if out_leg.is_none() && in_leg.is_none() && self.atomic() {
            return self
                .transfer_atomically(from, to, amount, (out_id, in_id), &metadata)
                .await;
        }
        let withdrawn = (self.accounts())
            .execute_with(from, AccountCommand::Withdraw { amount }, options(out_id))
            .await
            .map_err(nothing_moved(from))?;
        let deposited = (self.accounts())
            .execute_with(to, AccountCommand::Deposit { amount }, options(in_id))
            .await
            .map_err(|source| TransferError::Deposit {
                from: from.to_owned(),
                to: to.to_owned(),
                amount,
                transfer_id: transfer_id.clone(),
                source,
            })?;
        Ok(Transfer {
            withdrawn,
            deposited,
        })
    }

    /// Whether the store commits appends to several streams atomically.
    fn atomic(&self) -> bool {
        let Capabilities {
            multi_stream_append,
            ..
        } = self.accounts().store().capabilities();
        multi_stream_append
    }

    /// Decides both legs on the accounts' current states and appends them in one
    /// transaction; decides again when another writer moved either account meanwhile.
    async fn transfer_atomically(
        &self,
        from: &str,
        to: &str,
        amount: u64,
        (out_id, in_id): (CommandId, CommandId),
        metadata: &Metadata,
    ) -> Result<Transfer, TransferError> {
        let options = |id: &CommandId| CommandOptions {
            command_id: Some(id.clone()),
            metadata: metadata.clone(),
            ..CommandOptions::default()
        };
        let nothing_moved = |account: &str, source: Error| TransferError::NothingMoved {
            account: account.to_owned(),
            source,
        };
        let accounts = self.accounts();
        for attempt in 1..=Self::TRANSFER_ATTEMPTS {
            let out = (accounts)
                .prepare(from, AccountCommand::Withdraw { amount }, options(&out_id))
                .await
                .map_err(|e| nothing_moved(from, e))?;
            let into = (accounts)
                .prepare(to, AccountCommand::Deposit { amount }, options(&in_id))
                .await
                .map_err(|e| nothing_moved(to, e))?;
            let (out_events, in_events) = (out.events, into.events);
            match accounts
                .store()
                .append_all(vec![out.request, into.request])
                .await
            {
                Ok(appended) => {
                    let mut legs = appended.into_iter();
                    let (Some(out_leg), Some(in_leg)) = (legs.next(), legs.next()) else {
                        return Err(nothing_moved(from, keel::store::Error::Closed.into()));
                    };
                    if out_leg.replayed || in_leg.replayed {
                        // A concurrent run of this transfer committed first: answer from the log.
                        let withdrawn = (accounts.execute_with(
                            from,
                            AccountCommand::Withdraw { amount },
                            options(&out_id),
                        ))
                        .await
                        .map_err(|e| nothing_moved(from, e))?;
                        let deposited = (accounts.execute_with(
                            to,
                            AccountCommand::Deposit { amount },
                            options(&in_id),
                        ))
                        .await
                        .map_err(|e| nothing_moved(to, e))?;
                        return Ok(Transfer {
                            withdrawn,
                            deposited,
                        });
                    }
                    return Ok(Transfer {
                        withdrawn: committed(out_leg, out_events),
                        deposited: committed(in_leg, in_events),
                    });
                }
                Err(e) if e.is_conflict() => {
                    pause(attempt).await;
                }
                Err(e) => return Err(nothing_moved(from, e.into())),
            }
        }
        let error = match Repository::<Account, S>::stream(from) {
            Ok(stream) => Error::TooManyConflicts {
                stream,
                attempts: Self::TRANSFER_ATTEMPTS,
            },
            Err(e) => Error::InvalidId(e),
        };
        Err(nothing_moved(from, error))
    }

    /// The first event a committed leg wrote on `account`, if command `leg_id` committed there.
    async fn leg(&self, account: &str, leg_id: &CommandId) -> Result<Option<RecordedEvent>> {
        let stream = Repository::<Account, S>::stream(account)?;
        let store = self.accounts().store();
        let Some(command) = store.command(&stream, leg_id).await? else {
            return Ok(None);
        };
        let records = store
            .read_stream(&stream, command.appended.first_version)
            .await?;
        Ok(records.into_iter().next())
    }
}

/// A pause before deciding a transfer again after a conflict: doubling from 1 ms up to 64 ms,
/// with jitter so that competing transfers spread apart.
async fn pause(attempt: u32) {
    let base = Duration::from_millis(1 << attempt.min(6));
    // Jitter from the random bits of a fresh UUID v4-like value: 50% to 150% of the base.
    let jitter = (keel::CommandId::random()
        .as_str()
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
        % 100) as f64;
    tokio::time::sleep(base.mul_f64(0.5 + jitter / 100.0)).await;
}

/// The outcome of one leg appended by [`EventStore::append_all`].
fn committed(appended: Appended, events: Vec<AccountEvent>) -> Committed<AccountEvent> {
    let version = appended.last_version();
    let events = events
        .into_iter()
        .zip(appended.versions().zip(appended.positions()))
        .map(|(event, (version, position))| CommittedEvent {
            event,
            version,
            position,
        })
        .collect();
    Committed {
        stream: appended.stream,
        events,
        version,
        replayed: false,
        attempts: 1,
    }
}

/// Whether `record` is a leg of the transfer of `amount` from `from` to `to`.
fn is_leg_of(record: &RecordedEvent, from: &str, to: &str, amount: u64) -> bool {
    let same_amount = match record.decode::<AccountEvent>() {
        Ok(AccountEvent::Withdrawn { amount: a } | AccountEvent::Deposited { amount: a }) => {
            a == amount
        }
        Ok(_) | Err(_) => false,
    };
    same_amount
        && record.metadata.get(TRANSFER_FROM).map(String::as_str) == Some(from)
        && record.metadata.get(TRANSFER_TO).map(String::as_str) == Some(to)
}

/// Both legs of a committed transfer.
#[derive(Debug, Clone, PartialEq)]
pub struct Transfer {
    /// The withdrawal from the source account.
    pub withdrawn: Committed<AccountEvent>,
    /// The deposit into the destination account.
    pub deposited: Committed<AccountEvent>,
}

impl Transfer {
    /// Whether both legs had been committed before: this run moved nothing.
    pub fn replayed(&self) -> bool {
        self.withdrawn.replayed && self.deposited.replayed
    }
}

/// Why a transfer did not complete, and whether money moved.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The source and the destination are the same account. Nothing moved.
    #[error("an account cannot transfer to itself")]
    SameAccount,
    /// The transfer id is too long or holds a character a command id refuses. Nothing moved.
    #[error("the transfer id cannot name its legs")]
    InvalidTransferId(#[source] IdError),
    /// The transfer id already names a transfer between other accounts or of another amount.
    /// Nothing moved; give this transfer its own id.
    #[error(
        "transfer id {transfer_id} was already used for another transfer (other accounts or \
         another amount); give this transfer its own id"
    )]
    IdReused {
        /// The reused id.
        transfer_id: CommandId,
    },
    /// `account` refused its leg (or could not be read or written) before any money moved:
    /// the source refused the withdrawal, or the destination would refuse the deposit.
    #[error("nothing was transferred (account {account})")]
    NothingMoved {
        /// The account that refused or failed.
        account: String,
        /// Why.
        #[source]
        source: Error,
    },
    /// The money left `from` but did not reach `to` (only on a store without atomic appends to
    /// several streams). Run the transfer again with the same id to finish it; it will not be
    /// withdrawn twice.
    #[error(
        "{amount} left account {from} but did not reach account {to}; run transfer {transfer_id} \
         again to finish it"
    )]
    Deposit {
        /// The source account.
        from: String,
        /// The destination account.
        to: String,
        /// The amount.
        amount: u64,
        /// The transfer's id.
        transfer_id: CommandId,
        /// Why the deposit failed.
        #[source]
        source: Error,
    },
}
