//! The bank example: accounts with deposits, withdrawals, an overdraft rule and transfers,
//! event-sourced with keel on a SQLite file, or with the log and the views in PostgreSQL.
//!
//! It shows domain code written only with keel's public macros, and a small service on top of
//! keel's [`Repository`](keel::Repository):
//!
//! - [`account`]: the [`Account`] aggregate, its [`AccountEvent`]s, the generated
//!   [`AccountCommand`] and why a command is refused ([`AccountError`]);
//! - [`bank`]: the [`Bank`] service: idempotent account commands and statements;
//! - [`transfer`]: [`Bank::transfer`], moving money between two accounts (idempotent, not
//!   atomic);
//! - [`projections`]: the read models — balances and statements in SQLite or in PostgreSQL,
//!   balances in memory — fed from the log by `keel-projections`;
//! - [`schemas`]: the JSON Schemas of its events and commands, committed in
//!   `examples/bank/schemas` and checked for compatibility by its tests.
//!
//! The library is what the `bank` binary, the tests and the benches share. Run the binary's
//! scripted scenario with `cargo run -p bank`, and see `cargo run -p bank -- --help` for its
//! commands.
//!
//! ```
//! use std::sync::Arc;
//! use bank::{AccountError, Bank};
//! use keel::store::memory::MemoryStore;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> anyhow::Result<()> {
//! let bank = Bank::new(Arc::new(MemoryStore::new()));
//! bank.open("alice", "Alice", 100, None).await?;
//! bank.deposit("alice", 50, None).await?;
//! bank.withdraw("alice", 120, None).await?; // 30 into the overdraft
//! let refused = bank.withdraw("alice", 71, None).await;
//! assert!(matches!(
//!     refused,
//!     Err(keel::repository::Error::Rejected(AccountError::InsufficientFunds { .. }))
//! ));
//! assert_eq!(bank.account("alice").await?.state.balance(), -70);
//! # Ok(()) }
//! ```

pub mod account;
pub mod bank;
pub mod projections;
pub mod schemas;
pub mod transfer;

pub use account::{
    Account, AccountCommand, AccountError, AccountEvent, AccountStatus, MAX_AMOUNT, MAX_OWNER_CHARS,
};
pub use bank::{Bank, Error, Result, Statement, StatementLine};
pub use transfer::{TRANSFER_FROM, TRANSFER_ID, TRANSFER_TO, Transfer, TransferError};
