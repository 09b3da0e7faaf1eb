use keel::Event;
use keel::upcast::Value;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
enum AccountEvent {
    // Records of version 1 would stop at version 2: no upcaster from 2.
    #[event(version = 3, upcast(from = 1, with = v1_to_v2))]
    Deposited { cents: u64 },
}

fn v1_to_v2(v1: Value) -> Value {
    v1
}

fn main() {}
