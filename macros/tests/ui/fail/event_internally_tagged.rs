use keel::Event;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[serde(tag = "type")]
enum AccountEvent {
    Deposited { amount: u64 },
}

fn main() {}
