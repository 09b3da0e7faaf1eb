//! The event store contract against the SQLite store, on real files.

keel::conformance_suite!(keel::testing::conformance::SqliteBackend);
