use keel::Event;
use keel::upcast::Value;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
enum AccountEvent {
    #[event(version = 2, upcast(from = 1, with = cents))]
    Deposited { cents: u64 },
}

// An upcaster takes the stored JSON, not a decoded value.
fn cents(amount: u64) -> Value {
    Value::from(amount * 100)
}

fn main() {}
