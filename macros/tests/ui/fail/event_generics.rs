use keel::Event;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
enum Changed<T> {
    Set(T),
}

fn main() {}
