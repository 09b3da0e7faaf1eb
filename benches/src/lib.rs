//! Criterion benches for keel live in `benches/`; this library is empty.
