//! The event store contract against the PostgreSQL store, each test in a schema of its own on
//! the server named by `KEEL_TEST_POSTGRES_URL` (scripts/test.sh starts one).

keel::conformance_suite!(keel::testing::conformance::PostgresBackend);
