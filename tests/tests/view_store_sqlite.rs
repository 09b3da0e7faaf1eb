//! The view-store suite against views in SQLite files (`keel_tests::views`).

keel_tests::view_store_suite!(keel_projections::store::sqlite::SqliteViews);
