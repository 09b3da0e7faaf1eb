//! Query-side projections for keel (work in progress: see the projections issue).
