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
struct Account<T> {
    state: T,
}

fn main() {}
