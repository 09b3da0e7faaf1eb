//! The bank service: account commands through a keel [`Repository`], and statements.
//! Transfers between two accounts are in [`crate::transfer`].

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use keel::store::sqlite::SqliteStore;
use keel::{
    CommandId, CommandOptions, Committed, EventStore, Metadata, Offset, Partition, Repository,
    StreamVersion,
};

use crate::account::{Account, AccountCommand, AccountError, AccountEvent};

/// Why an account command did not commit: the account refused it
/// ([`keel::repository::Error::Rejected`]), or the id, the log or a stored event failed.
pub type Error = keel::repository::Error<AccountError>;

/// `Result` with the bank's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Accounts on an event store: each account is one stream of kind `account`.
///
/// Every command takes an optional command id. With one, the command is idempotent: running it
/// again returns the first outcome ([`Committed::replayed`] is `true`) and writes nothing.
/// Without one, a fresh id is used and a retry runs the command again.
pub struct Bank<S: EventStore + ?Sized = SqliteStore> {
    accounts: Repository<Account, S>,
    /// Set when the bank runs as one instance of several on Kafka: commands run on the
    /// instance that owns their account's partition.
    #[cfg(feature = "kafka")]
    routed: Option<keel::kafka::Routed<Account, S>>,
}

impl Bank<SqliteStore> {
    /// Opens (creating if needed) the SQLite file at `path`.
    ///
    /// # Errors
    ///
    /// [`keel::store::Error`] when the file cannot be opened.
    pub async fn open_sqlite(path: impl AsRef<Path>) -> Result<Self, keel::store::Error> {
        Ok(Self::new(Arc::new(SqliteStore::open(path).await?)))
    }

    /// Finishes pending writes and closes the file. Clones of this bank keep the file open
    /// until the last one is closed or dropped.
    pub async fn close(self) {
        let store = Arc::clone(self.accounts.store());
        drop(self);
        if let Ok(store) = Arc::try_unwrap(store) {
            store.close().await;
        }
    }
}

impl<S: EventStore + ?Sized> Bank<S> {
    /// A bank on `store`.
    pub fn new(store: Arc<S>) -> Self {
        Self {
            accounts: Repository::new(store),
            #[cfg(feature = "kafka")]
            routed: None,
        }
    }

    /// A bank that is one instance of several sharing a Kafka log (feature `kafka`): each
    /// account command runs on the instance that owns the account's partition, in process
    /// or routed there (`routed` comes from [`keel::kafka::Service::serve`]). Reads
    /// ([`Self::account`], [`Self::show`]) and transfers work for the accounts this instance
    /// owns.
    #[cfg(feature = "kafka")]
    pub fn routed(routed: keel::kafka::Routed<Account, S>) -> Self {
        Self {
            accounts: routed.repository().clone(),
            routed: Some(routed),
        }
    }

    /// The repository of accounts, for what the bank does not wrap.
    pub fn accounts(&self) -> &Repository<Account, S> {
        &self.accounts
    }

    /// Runs `command` on `account`.
    ///
    /// # Errors
    ///
    /// [`Error::Rejected`](keel::repository::Error::Rejected) with the account's reason, or
    /// another [`Error`].
    pub async fn execute(
        &self,
        account: &str,
        command: AccountCommand,
        command_id: Option<CommandId>,
    ) -> Result<Committed<AccountEvent>> {
        let options = command_id.map(CommandOptions::from).unwrap_or_default();
        #[cfg(feature = "kafka")]
        if let Some(routed) = &self.routed {
            return routed.execute_with(account, command, options).await;
        }
        self.accounts.execute_with(account, command, options).await
    }

    /// Opens `account` for `owner`, allowed to go `overdraft_limit` below zero.
    ///
    /// # Errors
    ///
    /// See [`Self::execute`].
    pub async fn open(
        &self,
        account: &str,
        owner: impl Into<String>,
        overdraft_limit: u64,
        command_id: Option<CommandId>,
    ) -> Result<Committed<AccountEvent>> {
        let command = AccountCommand::Open {
            owner: owner.into(),
            overdraft_limit,
        };
        self.execute(account, command, command_id).await
    }

    /// Puts `amount` into `account`.
    ///
    /// # Errors
    ///
    /// See [`Self::execute`].
    pub async fn deposit(
        &self,
        account: &str,
        amount: u64,
        command_id: Option<CommandId>,
    ) -> Result<Committed<AccountEvent>> {
        self.execute(account, AccountCommand::Deposit { amount }, command_id)
            .await
    }

    /// Takes `amount` out of `account`.
    ///
    /// # Errors
    ///
    /// See [`Self::execute`].
    pub async fn withdraw(
        &self,
        account: &str,
        amount: u64,
        command_id: Option<CommandId>,
    ) -> Result<Committed<AccountEvent>> {
        self.execute(account, AccountCommand::Withdraw { amount }, command_id)
            .await
    }

    /// Closes `account`.
    ///
    /// # Errors
    ///
    /// See [`Self::execute`].
    pub async fn close_account(
        &self,
        account: &str,
        command_id: Option<CommandId>,
    ) -> Result<Committed<AccountEvent>> {
        self.execute(account, AccountCommand::Close, command_id)
            .await
    }

    /// The current state of `account` and its version (0 and the default state when it has
    /// no events).
    ///
    /// # Errors
    ///
    /// [`Error::Decode`](keel::repository::Error::Decode) naming a stored event that does not
    /// decode, or another [`Error`].
    pub async fn account(&self, account: &str) -> Result<keel::Loaded<Account>> {
        self.accounts.load(account).await
    }

    /// `account`'s state with every event that made it, read in one pass.
    ///
    /// # Errors
    ///
    /// As [`Self::account`].
    pub async fn show(&self, account: &str) -> Result<Statement> {
        let stream = Repository::<Account, S>::stream(account)?;
        let records = self
            .accounts
            .store()
            .read_stream(&stream, StreamVersion(1))
            .await?;
        let mut state = Account::default();
        let mut version = StreamVersion::INITIAL;
        let mut lines = Vec::with_capacity(records.len());
        for record in records {
            let event: AccountEvent = record.decode()?;
            keel::Aggregate::apply_event(&mut state, &event);
            version = record.version;
            lines.push(StatementLine {
                version: record.version,
                partition: record.partition(),
                offset: record.offset(),
                event_type: record.event_type,
                command_id: record.command_id,
                metadata: record.metadata,
                event,
            });
        }
        Ok(Statement {
            account: account.to_owned(),
            state,
            version,
            lines,
        })
    }
}

impl<S: EventStore + ?Sized> Clone for Bank<S> {
    fn clone(&self) -> Self {
        Self {
            accounts: self.accounts.clone(),
            #[cfg(feature = "kafka")]
            routed: self.routed.clone(),
        }
    }
}

impl<S: EventStore + ?Sized> fmt::Debug for Bank<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bank")
            .field("accounts", &self.accounts)
            .finish()
    }
}

/// An account's state with the events that made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// The account id.
    pub account: String,
    /// Its state after every event.
    pub state: Account,
    /// Its version (0: no events).
    pub version: StreamVersion,
    /// Its events, in version order.
    pub lines: Vec<StatementLine>,
}

/// One event of an account, with where it sits in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct StatementLine {
    /// Its version in the account's stream.
    pub version: StreamVersion,
    /// The partition of the `account` topic the account lives in.
    pub partition: Partition,
    /// Its offset in that partition.
    pub offset: Offset,
    /// Its stored type name.
    pub event_type: String,
    /// The command that wrote it.
    pub command_id: Option<CommandId>,
    /// The metadata written with it (a transfer's legs name the transfer and both accounts:
    /// see [`crate::transfer`]).
    pub metadata: Metadata,
    /// The event.
    pub event: AccountEvent,
}
