//! Cross-crate integration tests for keel: backend conformance, crash and fault tests, and
//! the README's and the book's code, compiled and run as doc tests.

#[doc = include_str!("../../README.md")]
pub mod readme {}

/// The book's chapters; their Rust snippets run as doc tests.
pub mod book {
    #[doc = include_str!("../../book/src/getting-started.md")]
    pub mod getting_started {}
    #[doc = include_str!("../../book/src/domain.md")]
    pub mod domain {}
    #[doc = include_str!("../../book/src/event-store.md")]
    pub mod event_store {}
    #[doc = include_str!("../../book/src/sqlite.md")]
    pub mod sqlite {}
    #[doc = include_str!("../../book/src/durability.md")]
    pub mod durability {}
    #[cfg(feature = "kafka")]
    #[doc = include_str!("../../book/src/kafka.md")]
    pub mod kafka {}
    #[cfg(feature = "kafka")]
    #[doc = include_str!("../../book/src/kafka-scale.md")]
    pub mod kafka_scale {}
    #[doc = include_str!("../../book/src/commands.md")]
    pub mod commands {}
    #[doc = include_str!("../../book/src/speed.md")]
    pub mod speed {}
    #[doc = include_str!("../../book/src/testing.md")]
    pub mod testing {}
    #[doc = include_str!("../../book/src/projections.md")]
    pub mod projections {}
    #[doc = include_str!("../../book/src/bank.md")]
    pub mod bank {}
}
