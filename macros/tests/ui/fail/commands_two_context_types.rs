use keel::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
enum AccountEvent {
    Deposited { amount: u64 },
}

#[derive(Debug, thiserror::Error)]
#[error("rejected")]
struct AccountError;

#[derive(Aggregate, Default)]
#[aggregate(kind = "account", event = AccountEvent, error = AccountError)]
struct Account {
    balance: u64,
}

impl Apply<AccountEvent> for Account {
    fn apply(&mut self, event: &AccountEvent) {
        let AccountEvent::Deposited { amount } = event;
        self.balance += amount;
    }
}

struct Bank;
struct Ledger;

#[keel::commands]
impl Account {
    pub fn deposit(&self, _bank: &Bank, amount: u64) -> AccountEvent {
        AccountEvent::Deposited { amount }
    }

    pub fn reconcile(&self, _ledger: &Ledger) -> Vec<AccountEvent> {
        Vec::new()
    }
}
fn main() {}
