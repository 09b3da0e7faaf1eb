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
#[aggregate(kind = "account", event = AccountEvent, error = AccountError, topic = "accounts")]
struct Account;

impl Apply<AccountEvent> for Account {
    fn apply(&mut self, _event: &AccountEvent) {}
}

fn main() {}
