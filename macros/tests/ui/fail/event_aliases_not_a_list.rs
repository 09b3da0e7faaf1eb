use keel::Event;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
enum AccountEvent {
    #[event(aliases = "Withdrawn")]
    Debited { cents: u64 },
}

fn main() {}
