use keel::Event;
use keel::upcast::Value;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
enum AccountEvent {
    #[event(version = 2, upcast(from = 2, with = deposited_v2))]
    Deposited { cents: u64 },
}

fn deposited_v2(v2: Value) -> Value {
    v2
}

fn main() {}
