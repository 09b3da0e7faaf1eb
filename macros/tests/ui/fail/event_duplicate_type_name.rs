use keel::Event;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
enum AccountEvent {
    Deposited { amount: u64 },
    #[event(name = "Deposited", version = 2)]
    DepositedV2 { amount: u64, memo: String },
}

fn main() {}
