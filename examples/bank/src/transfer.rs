//! Transfers between two accounts: a withdrawal and a deposit, two commands on two streams,
//! with command ids derived from the transfer's id.
//!
//! **Idempotent, not atomic.** Running a transfer again with its id never moves the money
//! twice: a leg that committed is answered from the log. But if the process stops between the
//! legs, or the deposit is refused, the money has left the source and not reached the
//! destination ([`TransferError::Deposit`]); running the transfer again with the same id
//! finishes it. Refunding a deposit that can never succeed is the job of a process manager
//! reacting to the withdrawal, which this example does not have yet.
//!
//! Each leg carries the transfer's id and both accounts in its events' metadata
//! ([`TRANSFER_ID`], [`TRANSFER_FROM`], [`TRANSFER_TO`]), so a statement can say where money
//! came from, and an id reused for another transfer is caught before it moves anything.

use keel::{
    CommandId, CommandOptions, Committed, EventStore, IdError, Metadata, RecordedEvent, Repository,
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
    /// Moves `amount` from `from` to `to`: a withdrawal from `from` with command id
    /// `{transfer_id}-out`, then a deposit into `to` with `{transfer_id}-in`.
    ///
    /// Idempotent per `transfer_id`, not atomic: see the [module docs](crate::transfer). A new
    /// transfer is refused before anything moves when `from` refuses the withdrawal or `to`
    /// would refuse the deposit now; one whose withdrawal already committed goes on to the
    /// deposit whatever `to` became.
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
    /// The money left `from` but did not reach `to`. Run the transfer again with the same id
    /// to finish it; it will not be withdrawn twice.
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
