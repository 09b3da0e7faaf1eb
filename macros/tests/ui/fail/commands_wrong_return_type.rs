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

#[keel::commands]
impl Account {
    pub fn deposit(&self, amount: u64) -> String {
        format!("deposited {amount}")
    }
}
fn main() {}
