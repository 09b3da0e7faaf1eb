//! Compile tests of the macros: what must compile (and run), and the errors users see.
//!
//! Regenerate the `.stderr` files with `TRYBUILD=overwrite cargo test -p keel-macros --test
//! ui`, then read each one: it is the message a user gets.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
