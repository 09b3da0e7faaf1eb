//! The bank's committed schemas (`examples/bank/schemas`) are the code's: no change breaks
//! reading the events already stored, and every compatible change is exported and
//! committed. `bank schemas check` says the same from the command line, and fails on a
//! breaking change.

use std::path::Path;
use std::process::Command;

use keel::schemas::Compatibility;

/// After changing an event or a command: `cargo run -p bank -- schemas export
/// examples/bank/schemas`, then commit the files.
const EXPORT: &str =
    "run `cargo run -p bank -- schemas export examples/bank/schemas` and commit the files";

#[test]
fn committed_schemas_are_compatible_and_up_to_date() -> Result<(), keel::schemas::SchemaError> {
    let registry = bank::schemas::registry();
    for mode in [Compatibility::Backward, Compatibility::Full] {
        let report = registry.check(Path::new(bank::schemas::DIR), mode)?;
        assert!(report.is_compatible(), "{report}");
        assert!(report.is_up_to_date(), "{report}\n{EXPORT}");
    }
    Ok(())
}

fn bank(args: &[&str]) -> std::io::Result<(Option<i32>, String, String)> {
    let dir = tempfile::tempdir()?;
    let output = Command::new(env!("CARGO_BIN_EXE_bank"))
        .current_dir(dir.path())
        .env_remove("BANK_DB")
        .args(args)
        .output()?;
    // No log is opened for schemas.
    assert!(!dir.path().join("bank.db").exists());
    Ok((
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

#[test]
fn the_command_line_exports_and_checks() -> std::io::Result<()> {
    let (code, out, err) = bank(&["schemas", "check", bank::schemas::DIR, "--exported"])?;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("compatible (backward)"), "{out}");

    let copy = tempfile::tempdir()?;
    let dir = copy.path().to_str().unwrap_or_default();
    let (code, out, err) = bank(&["schemas", "export", dir])?;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("8 written, 0 unchanged"), "{out}");

    // A stored type the code no longer has breaks reading the log.
    let frozen = copy.path().join("account/events/Frozen.v1.json");
    let closed = std::fs::read_to_string(copy.path().join("account/events/Closed.v1.json"))?;
    std::fs::write(&frozen, closed.replace("\"Closed\"", "\"Frozen\""))?;
    let (code, out, err) = bank(&["schemas", "check", dir])?;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains(
            "aggregate `account`, event `Frozen` v1: removed event type: its stored records no longer load"
        ),
        "{out}"
    );
    assert!(
        err.contains("error: 1 breaking schema change(s) under backward compatibility"),
        "{err}"
    );
    // Forward compatibility does not care: the code never writes it.
    let (code, out, err) = bank(&["schemas", "check", dir, "--mode", "forward"])?;
    assert_eq!(code, Some(0), "{out}{err}");
    Ok(())
}
