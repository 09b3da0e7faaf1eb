use keel::Event;
use keel::upcast::Value;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
#[event(version = 2, upcast(from = 1, with = same))]
enum AccountEvent {
    Deposited { cents: u64 },
}

fn same(v1: Value) -> Value {
    v1
}

fn main() {}
