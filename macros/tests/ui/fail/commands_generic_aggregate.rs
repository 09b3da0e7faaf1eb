//! `#[keel::commands]` on a generic aggregate's impl (`impl Shelf<Book>`) names the user's
//! type in its error, not an example type.
use keel::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
enum ShelfEvent {
    Stocked { count: u32 },
}

#[derive(Debug, thiserror::Error)]
#[error("rejected")]
struct ShelfError;

#[derive(Default)]
struct Book;

#[derive(Default)]
struct Shelf<T> {
    items: Vec<T>,
}

#[keel::commands]
impl Shelf<Book> {
    pub fn stock(&self, count: u32) -> ShelfEvent {
        ShelfEvent::Stocked { count }
    }
}

fn main() {}
