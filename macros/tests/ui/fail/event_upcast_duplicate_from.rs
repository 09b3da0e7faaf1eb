use keel::Event;
use keel::upcast::Value;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
enum AccountEvent {
    #[event(version = 2, upcast(from = 1, with = cents), upcast(from = 1, with = also_cents))]
    Deposited { cents: u64 },
}

fn cents(v1: Value) -> Value {
    v1
}

fn also_cents(v1: Value) -> Value {
    v1
}

fn main() {}
