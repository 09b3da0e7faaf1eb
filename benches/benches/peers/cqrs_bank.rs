//! The bank's account, written for the crates.io crate `cqrs-es` 0.5 the way its own bank
//! example is: the same commands, events and rules as `bank::Account`, so both frameworks run
//! the same workload in the same process.

use cqrs_es::event_sink::EventSink;
use cqrs_es::mem_store::MemStore;
use cqrs_es::{Aggregate, CqrsFramework, DomainEvent, EventEnvelope};
use serde::{Deserialize, Serialize};

/// What a command asks of an account.
#[derive(Debug, Clone, Deserialize)]
pub(crate) enum BankAccountCommand {
    Open { owner: String, overdraft_limit: u64 },
    Deposit { amount: u64 },
    Withdraw { amount: u64 },
}

/// What happened to an account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum BankAccountEvent {
    Opened { owner: String, overdraft_limit: u64 },
    Deposited { amount: u64 },
    Withdrawn { amount: u64 },
}

impl DomainEvent for BankAccountEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Opened { .. } => "Opened",
            Self::Deposited { .. } => "Deposited",
            Self::Withdrawn { .. } => "Withdrawn",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// Why an account refused a command.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BankAccountError {
    #[error("the account is already open")]
    AlreadyOpen,
    #[error("the account is not open")]
    NotOpen,
    #[error("the amount must be positive")]
    InvalidAmount,
    #[error("insufficient funds")]
    InsufficientFunds,
}

/// The account's state.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct BankAccount {
    open: bool,
    balance: i64,
    overdraft_limit: u64,
}

impl Aggregate for BankAccount {
    const TYPE: &'static str = "account";
    type Command = BankAccountCommand;
    type Event = BankAccountEvent;
    type Error = BankAccountError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            BankAccountCommand::Open {
                owner,
                overdraft_limit,
            } => {
                if self.open {
                    return Err(BankAccountError::AlreadyOpen);
                }
                BankAccountEvent::Opened {
                    owner,
                    overdraft_limit,
                }
            }
            BankAccountCommand::Deposit { amount } => {
                if !self.open {
                    return Err(BankAccountError::NotOpen);
                }
                if amount == 0 {
                    return Err(BankAccountError::InvalidAmount);
                }
                BankAccountEvent::Deposited { amount }
            }
            BankAccountCommand::Withdraw { amount } => {
                if !self.open {
                    return Err(BankAccountError::NotOpen);
                }
                if amount == 0 {
                    return Err(BankAccountError::InvalidAmount);
                }
                if i128::from(self.balance) - i128::from(amount) < -i128::from(self.overdraft_limit)
                {
                    return Err(BankAccountError::InsufficientFunds);
                }
                BankAccountEvent::Withdrawn { amount }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            BankAccountEvent::Opened {
                overdraft_limit, ..
            } => {
                self.open = true;
                self.overdraft_limit = overdraft_limit;
            }
            BankAccountEvent::Deposited { amount } => {
                self.balance = self.balance.saturating_add_unsigned(amount);
            }
            BankAccountEvent::Withdrawn { amount } => {
                self.balance = self.balance.saturating_sub_unsigned(amount);
            }
        }
    }
}

/// A cqrs-es framework over its in-memory store, and a handle on that store.
pub(crate) fn framework() -> (
    CqrsFramework<BankAccount, MemStore<BankAccount>>,
    MemStore<BankAccount>,
) {
    let store = MemStore::<BankAccount>::default();
    (CqrsFramework::new(store.clone(), Vec::new(), ()), store)
}

/// Puts an opened account with `deposits` deposits straight into the store (building a long
/// history through cqrs-es itself costs O(n²): each commit copies the whole history).
#[allow(deprecated, reason = "the only way to seed a MemStore directly")]
pub(crate) fn seed(store: &MemStore<BankAccount>, id: &str, deposits: usize) {
    let mut events = Vec::with_capacity(deposits + 1);
    events.push(BankAccountEvent::Opened {
        owner: "hot".into(),
        overdraft_limit: 0,
    });
    events.extend((0..deposits).map(|_| BankAccountEvent::Deposited { amount: 1 }));
    let envelopes = events
        .into_iter()
        .enumerate()
        .map(|(i, payload)| EventEnvelope {
            aggregate_id: id.to_string(),
            sequence: i + 1,
            payload,
            metadata: Default::default(),
        })
        .collect();
    store
        .get_events()
        .write()
        .expect("the store's lock")
        .insert(id.to_string(), envelopes);
}
