use keel::Event;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
enum AccountEvent {
    Deposited { cents: u64 },
    // `Deposited` is another variant's type name.
    #[event(aliases = ["Withdrawn", "Deposited"])]
    Debited { cents: u64 },
}

fn main() {}
