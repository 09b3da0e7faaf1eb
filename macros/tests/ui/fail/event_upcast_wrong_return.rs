use keel::Event;
use keel::upcast::Value;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
enum AccountEvent {
    #[event(version = 2, upcast(from = 1, with = cents))]
    Deposited { cents: u64 },
}

// An upcaster returns the new JSON.
fn cents(v1: Value) -> u64 {
    v1["amount"].as_u64().unwrap_or_default() * 100
}

fn main() {}
