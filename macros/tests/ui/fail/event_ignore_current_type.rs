use keel::Event;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(ignore = ["Frozen", "Deposited"])]
enum AccountEvent {
    Deposited { cents: u64 },
}

fn main() {}
