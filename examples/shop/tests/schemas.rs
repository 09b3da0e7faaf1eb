//! The shop's services share nothing but the log, so the schemas of the events they broadcast
//! are the contract between them. The committed schemas (`examples/shop/schemas`) must be the
//! code's: no change may break reading the events already stored (backward) nor a service
//! still on the previous version reading the new ones (full), and every compatible change is
//! exported and committed. `shop schemas check` says the same from the command line.

use std::path::Path;
use std::process::Command;

use keel::schemas::Compatibility;

/// After changing an event or a command: export, then commit the files.
const EXPORT: &str =
    "run `cargo run -p shop -- schemas export examples/shop/schemas` and commit the files";

#[test]
fn committed_schemas_are_compatible_and_up_to_date() -> Result<(), keel::schemas::SchemaError> {
    let registry = shop::schemas::registry();
    let kinds: Vec<&str> = registry.kinds().collect();
    for kind in [
        "customer", "product", "order", "fraud", "details", "rate", "payment", "email",
    ] {
        assert!(kinds.contains(&kind), "{kind} is not registered: {kinds:?}");
    }
    for mode in [Compatibility::Backward, Compatibility::Full] {
        let report = registry.check(Path::new(shop::schemas::DIR), mode)?;
        assert!(report.is_compatible(), "{report}");
        assert!(report.is_up_to_date(), "{report}\n{EXPORT}");
    }
    Ok(())
}

fn shop(args: &[&str]) -> std::io::Result<(Option<i32>, String, String)> {
    let dir = tempfile::tempdir()?;
    let output = Command::new(env!("CARGO_BIN_EXE_shop"))
        .current_dir(dir.path())
        .env_remove("SHOP_STATE")
        .env("RUST_BACKTRACE", "1")
        .args(args)
        .args(["--state", &dir.path().join("state").display().to_string()])
        .output()?;
    // No log is opened for schemas.
    assert!(!dir.path().join("state").exists());
    Ok((
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

#[test]
fn a_change_that_breaks_another_service_fails_the_check() -> std::io::Result<()> {
    let copy = tempfile::tempdir()?;
    let dir = copy.path().to_str().unwrap_or_default();
    let (code, out, err) = shop(&["schemas", "export", dir])?;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("written, 0 unchanged"), "{out}");
    let (code, out, err) = shop(&["schemas", "check", dir, "--mode", "full"])?;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("compatible (full)"), "{out}");

    // The stored orders said how many as text: the code reading them as a number (the fraud
    // and details services among its readers) would fail on every one of them.
    let placed = copy.path().join("order/events/Placed.v1.json");
    let mut schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&placed)?)?;
    schema["properties"]["quantity"] = serde_json::json!({ "type": "string" });
    std::fs::write(&placed, serde_json::to_string_pretty(&schema)?)?;
    let (code, out, err) = shop(&["schemas", "check", dir])?;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains("aggregate `order`, event `Placed` v1, field `quantity`: changed type"),
        "{out}"
    );
    // One line that says why, without a backtrace even when backtraces are on.
    assert_eq!(
        err.trim(),
        "error: 1 breaking schema change(s) under backward compatibility",
        "{err}"
    );
    Ok(())
}
