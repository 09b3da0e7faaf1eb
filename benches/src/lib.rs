//! Criterion benches for keel; see `benches/`.
