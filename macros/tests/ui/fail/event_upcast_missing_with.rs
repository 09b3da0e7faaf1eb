use keel::Event;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
enum AccountEvent {
    #[event(version = 2, upcast(from = 1))]
    Deposited { cents: u64 },
}

fn main() {}
