//! The view-store suite against views in memory (`keel_tests::views`). Not durable: the crash
//! case aborts its runner inside the process instead of killing a child process.

keel_tests::view_store_suite!(
    keel_projections::store::memory::MemoryViews<keel_tests::views::TallyView>
);
