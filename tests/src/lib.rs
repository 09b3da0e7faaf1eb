//! Cross-crate integration tests for keel: backend conformance, the view-store suite
//! ([`views`]), crash and fault tests, and the README's and the book's code, compiled and run
//! as doc tests.

pub mod views;

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
    #[doc = include_str!("../../book/src/postgres.md")]
    pub mod postgres {}
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
    #[doc = include_str!("../../book/src/schemas.md")]
    pub mod schemas {}
    #[doc = include_str!("../../book/src/bank.md")]
    pub mod bank {}
    #[doc = include_str!("../../book/src/collaboration.md")]
    pub mod collaboration {}
    #[doc = include_str!("../../book/src/tables.md")]
    pub mod tables {}
    #[doc = include_str!("../../book/src/process-managers.md")]
    pub mod process_managers {}
    #[doc = include_str!("../../book/src/joins.md")]
    pub mod joins {}
    #[doc = include_str!("../../book/src/windows.md")]
    pub mod windows {}
    #[doc = include_str!("../../book/src/read-your-writes.md")]
    pub mod read_your_writes {}
    #[doc = include_str!("../../book/src/rules-across-aggregates.md")]
    pub mod rules_across_aggregates {}
    #[doc = include_str!("../../book/src/shop.md")]
    pub mod shop {}
}
