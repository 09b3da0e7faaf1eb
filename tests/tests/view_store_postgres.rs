//! The view-store suite against views in PostgreSQL (`keel_tests::views`), each test in a
//! database of its own on the server named by `KEEL_TEST_POSTGRES_URL` (scripts/test.sh starts
//! one; without it the tests fail, saying how to start one).

keel_tests::view_store_suite!(keel_projections::store::postgres::PostgresViews);
