//! A missing key (`event`) is one error, at the attribute: the aggregate still gets an impl
//! (with a stand-in event type), so code using it as an aggregate adds no "`Book` is not a
//! keel aggregate" errors.
use keel::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
enum BookEvent {
    Lent { to: String },
}

#[derive(Debug, thiserror::Error)]
#[error("already lent")]
struct BookError;

#[derive(Aggregate, Default)]
#[aggregate(kind = "book", error = BookError)]
struct Book {
    lent: bool,
}

impl Apply<BookEvent> for Book {
    fn apply(&mut self, _event: &BookEvent) {
        self.lent = true;
    }
}

fn stream_of<A: keel::Aggregate>(id: &str) -> Result<keel::StreamId, keel::IdError> {
    keel::StreamId::new(A::KIND, id)
}

fn main() {
    let _ = stream_of::<Book>("b-1");
    let mut book = Book::default();
    book.apply_all([]);
    let _ = book.lent;
}
