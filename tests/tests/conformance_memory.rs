//! The event store contract against the in-memory store.

keel::conformance_suite!(keel::testing::conformance::MemoryBackend);
