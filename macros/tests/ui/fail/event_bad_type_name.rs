use keel::Event;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
enum AccountEvent {
    #[event(name = "account/deposited")]
    Deposited { amount: u64 },
}

fn main() {}
