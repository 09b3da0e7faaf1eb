//! The account aggregate: its events, its rules and why a command is refused.
//!
//! Everything here is plain Rust plus keel's three macros: `#[derive(Event)]` on the facts,
//! `#[derive(Aggregate)]` on the state, `#[keel::commands]` on the handlers.

use std::fmt;

use keel::prelude::*;
use serde::{Deserialize, Serialize};

/// The longest owner name an account accepts, in characters.
pub const MAX_OWNER_CHARS: usize = 100;

/// The largest balance and the largest overdraft limit an account can have: balances are
/// `i64`, so both sides of zero must fit.
pub const MAX_AMOUNT: u64 = i64::MAX as u64;

/// The facts an account records. Their type names (`Opened`, `Deposited`…) are stored with
/// every event and must never change.
#[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub enum AccountEvent {
    /// The account was opened for `owner`, allowed to go `overdraft_limit` below zero.
    Opened {
        /// Who owns the account.
        owner: String,
        /// How far below zero the balance may go.
        overdraft_limit: u64,
    },
    /// Money was put in.
    Deposited {
        /// How much.
        amount: u64,
    },
    /// Money was taken out.
    Withdrawn {
        /// How much.
        amount: u64,
    },
    /// The account was closed; it takes no more commands.
    Closed,
}

/// Why an account refused a command. Nothing is written when a command is refused.
///
/// It serialises with serde, so a command run by another instance of the bank (on Kafka,
/// see `keel::kafka`) comes back with this very error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum AccountError {
    /// The account has never been opened.
    #[error("the account is not open; open it first")]
    NotOpen,
    /// The account is already open.
    #[error("the account is already open")]
    AlreadyOpen,
    /// The account is closed and takes no more commands.
    #[error("the account is closed")]
    Closed,
    /// Amounts must be positive.
    #[error("the amount must be positive, got {amount}")]
    InvalidAmount {
        /// The refused amount.
        amount: u64,
    },
    /// The withdrawal would take the balance below the overdraft limit.
    #[error(
        "insufficient funds: the balance is {balance} and the overdraft limit {overdraft_limit}, \
         so {amount} cannot be withdrawn"
    )]
    InsufficientFunds {
        /// The balance before the withdrawal.
        balance: i64,
        /// The refused amount.
        amount: u64,
        /// How far below zero the account may go.
        overdraft_limit: u64,
    },
    /// The deposit would take the balance past [`MAX_AMOUNT`].
    #[error(
        "a deposit of {amount} would take the balance of {balance} past the largest balance an account can hold ({MAX_AMOUNT})"
    )]
    BalanceTooLarge {
        /// The balance before the deposit.
        balance: i64,
        /// The refused amount.
        amount: u64,
    },
    /// Only an account with a balance of exactly zero can be closed.
    #[error("the balance is {balance}; only an account with a balance of 0 can be closed")]
    NonZeroBalance {
        /// The balance.
        balance: i64,
    },
    /// The owner's name is empty or blank.
    #[error("the owner's name is empty")]
    EmptyOwner,
    /// The owner's name is too long.
    #[error("the owner's name is {chars} characters long; the limit is {MAX_OWNER_CHARS}")]
    OwnerTooLong {
        /// Its length in characters.
        chars: usize,
    },
    /// The overdraft limit is larger than a balance can go.
    #[error("the overdraft limit {overdraft_limit} is too large; the most is {MAX_AMOUNT}")]
    OverdraftLimitTooLarge {
        /// The refused limit.
        overdraft_limit: u64,
    },
}

/// Where an account is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AccountStatus {
    /// No `Opened` event yet.
    #[default]
    NeverOpened,
    /// Open: takes deposits and withdrawals.
    Open,
    /// Closed: takes nothing more.
    Closed,
}

impl fmt::Display for AccountStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NeverOpened => "never opened",
            Self::Open => "open",
            Self::Closed => "closed",
        })
    }
}

/// A bank account: the fold of its events.
///
/// The balance may go below zero, down to `-overdraft_limit`. A snapshot of the state is
/// saved every 100 events (shape version 1: bump it when the fields change).
#[derive(Aggregate, Default, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[aggregate(kind = "account", event = AccountEvent, error = AccountError, snapshot(version = 1, every = 100))]
pub struct Account {
    status: AccountStatus,
    owner: String,
    balance: i64,
    overdraft_limit: u64,
}

impl Account {
    /// Where the account is in its life.
    pub fn status(&self) -> AccountStatus {
        self.status
    }

    /// Who owns it (empty before it is opened).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The balance; negative when overdrawn.
    pub fn balance(&self) -> i64 {
        self.balance
    }

    /// How far below zero the balance may go.
    pub fn overdraft_limit(&self) -> u64 {
        self.overdraft_limit
    }

    /// Whether it takes deposits and withdrawals.
    pub fn is_open(&self) -> bool {
        self.status == AccountStatus::Open
    }
}

impl Apply<AccountEvent> for Account {
    fn apply(&mut self, event: &AccountEvent) {
        // Events already happened: applying never fails. The handlers keep the balance within
        // `i64`, so the saturating operations only matter for events written by other means.
        match event {
            AccountEvent::Opened {
                owner,
                overdraft_limit,
            } => {
                self.status = AccountStatus::Open;
                self.owner.clone_from(owner);
                self.overdraft_limit = *overdraft_limit;
            }
            AccountEvent::Deposited { amount } => {
                self.balance = self.balance.saturating_add_unsigned(*amount);
            }
            AccountEvent::Withdrawn { amount } => {
                self.balance = self.balance.saturating_sub_unsigned(*amount);
            }
            AccountEvent::Closed => self.status = AccountStatus::Closed,
        }
    }
}

#[keel::commands]
impl Account {
    /// Opens the account for `owner` (1 to 100 characters), allowing the balance to go
    /// `overdraft_limit` below zero.
    pub fn open(&self, owner: String, overdraft_limit: u64) -> Result<AccountEvent, AccountError> {
        match self.status {
            AccountStatus::NeverOpened => {}
            AccountStatus::Open => return Err(AccountError::AlreadyOpen),
            AccountStatus::Closed => return Err(AccountError::Closed),
        }
        if owner.trim().is_empty() {
            return Err(AccountError::EmptyOwner);
        }
        let chars = owner.chars().count();
        if chars > MAX_OWNER_CHARS {
            return Err(AccountError::OwnerTooLong { chars });
        }
        if overdraft_limit > MAX_AMOUNT {
            return Err(AccountError::OverdraftLimitTooLarge { overdraft_limit });
        }
        Ok(AccountEvent::Opened {
            owner,
            overdraft_limit,
        })
    }

    /// Puts `amount` (at least 1) into an open account.
    pub fn deposit(&self, amount: u64) -> Result<AccountEvent, AccountError> {
        self.ensure_open()?;
        ensure_positive(amount)?;
        if self.balance.checked_add_unsigned(amount).is_none() {
            return Err(AccountError::BalanceTooLarge {
                balance: self.balance,
                amount,
            });
        }
        Ok(AccountEvent::Deposited { amount })
    }

    /// Takes `amount` (at least 1) out of an open account, as long as the balance stays at
    /// or above `-overdraft_limit`.
    pub fn withdraw(&self, amount: u64) -> Result<AccountEvent, AccountError> {
        self.ensure_open()?;
        ensure_positive(amount)?;
        let after = i128::from(self.balance) - i128::from(amount);
        if after < -i128::from(self.overdraft_limit) {
            return Err(AccountError::InsufficientFunds {
                balance: self.balance,
                amount,
                overdraft_limit: self.overdraft_limit,
            });
        }
        Ok(AccountEvent::Withdrawn { amount })
    }

    /// Closes an open account whose balance is exactly 0.
    pub fn close(&self) -> Result<AccountEvent, AccountError> {
        self.ensure_open()?;
        if self.balance != 0 {
            return Err(AccountError::NonZeroBalance {
                balance: self.balance,
            });
        }
        Ok(AccountEvent::Closed)
    }

    fn ensure_open(&self) -> Result<(), AccountError> {
        match self.status {
            AccountStatus::NeverOpened => Err(AccountError::NotOpen),
            AccountStatus::Open => Ok(()),
            AccountStatus::Closed => Err(AccountError::Closed),
        }
    }
}

fn ensure_positive(amount: u64) -> Result<(), AccountError> {
    if amount == 0 {
        Err(AccountError::InvalidAmount { amount })
    } else {
        Ok(())
    }
}
