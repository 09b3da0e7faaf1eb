//! A misspelt key (`events` for `event`) is one error at the key: the code that uses the
//! aggregate (its command handlers, a repository) does not add "not a keel aggregate" errors.
use std::sync::Arc;

use keel::prelude::*;
use keel::store::memory::MemoryStore;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
enum BookEvent {
    Lent { to: String },
}

#[derive(Debug, thiserror::Error)]
#[error("already lent")]
struct BookError;

#[derive(Aggregate, Default)]
#[aggregate(kind = "book", events = BookEvent, error = BookError)]
struct Book {
    lent: bool,
}

impl Apply<BookEvent> for Book {
    fn apply(&mut self, _event: &BookEvent) {
        self.lent = true;
    }
}

#[keel::commands]
impl Book {
    pub fn lend(&self, to: String) -> Result<BookEvent, BookError> {
        if self.lent {
            return Err(BookError);
        }
        Ok(BookEvent::Lent { to })
    }
}

async fn lend() {
    let books = keel::Repository::<Book, _>::new(Arc::new(MemoryStore::new()));
    let _ = books
        .execute("b-1", BookCommand::Lend { to: "Ann".into() })
        .await;
    let _ = books.load("b-1").await.map(|loaded| loaded.state.lent);
}

fn main() {
    let _ = lend();
}
