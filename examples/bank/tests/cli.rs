//! The `bank` binary as a user runs it: the scenario carries its state from run to run,
//! usage errors exit with 2, refusals with 1 and an `error:` line, and `show` lists events.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temporary working directory with a database path inside it.
struct Workdir {
    dir: tempfile::TempDir,
    db: PathBuf,
}

impl Workdir {
    fn new() -> std::io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("bank.db");
        Ok(Self { dir, db })
    }

    /// Runs `bank --db <db> args…` in the directory.
    fn bank(&self, args: &[&str]) -> std::io::Result<Run> {
        run(self.dir.path(), Some(&self.db), args)
    }
}

/// What one run printed, and how it ended.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn run(dir: &Path, db: Option<&Path>, args: &[&str]) -> std::io::Result<Run> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bank"));
    command.current_dir(dir).env_remove("BANK_DB");
    if let Some(db) = db {
        command.arg("--db").arg(db);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = command.args(args).output()?;
    Ok(Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

/// The balance on the last `  <account>: balance N, …` line of the output.
fn balance(output: &str, account: &str) -> Option<i64> {
    let prefix = format!("  {account}: balance ");
    output
        .lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .next_back()
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.trim().parse().ok())
}

/// What one scenario run moves: alice +100 −30 −25, bob +50 +25.
const ALICE_PER_RUN: i64 = 45;
const BOB_PER_RUN: i64 = 75;

#[test]
fn a_second_scenario_run_starts_from_the_first_runs_balances() -> anyhow::Result<()> {
    let work = Workdir::new()?;
    let first = work.bank(&[])?;
    assert_eq!(first.code, Some(0), "{first:?}");
    assert!(first.stdout.contains("scenario run 1 "), "{first:?}");
    assert!(
        first.stdout.contains("refused: insufficient funds"),
        "{first:?}"
    );
    assert!(
        first
            .stdout
            .contains("replayed from the log, nothing moved"),
        "{first:?}"
    );
    let alice = balance(&first.stdout, "alice").expect("alice's balance is printed");
    let bob = balance(&first.stdout, "bob").expect("bob's balance is printed");
    assert_eq!((alice, bob), (ALICE_PER_RUN, BOB_PER_RUN), "{first:?}");

    let second = work.bank(&[])?;
    assert_eq!(second.code, Some(0), "{second:?}");
    assert!(second.stdout.contains("scenario run 2 "), "{second:?}");
    assert!(second.stdout.contains("already open"), "{second:?}");
    assert_eq!(
        balance(&second.stdout, "alice"),
        Some(alice + ALICE_PER_RUN),
        "{second:?}"
    );
    assert_eq!(
        balance(&second.stdout, "bob"),
        Some(bob + BOB_PER_RUN),
        "{second:?}"
    );
    Ok(())
}

#[test]
fn the_scenario_uses_bank_db_in_the_working_directory_or_bank_db_from_the_environment()
-> anyhow::Result<()> {
    let work = Workdir::new()?;
    let default = run(work.dir.path(), None, &[])?;
    assert_eq!(default.code, Some(0), "{default:?}");
    assert!(work.dir.path().join("bank.db").exists());

    let elsewhere = work.dir.path().join("other.db");
    let output = Command::new(env!("CARGO_BIN_EXE_bank"))
        .current_dir(work.dir.path())
        .env("BANK_DB", &elsewhere)
        .output()?;
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).contains("scenario run 1 "));
    assert!(elsewhere.exists());
    Ok(())
}

#[test]
fn amounts_that_are_not_positive_whole_numbers_are_usage_errors() -> anyhow::Result<()> {
    let work = Workdir::new()?;
    for (command, amount) in [
        ("deposit", "-5"),
        ("deposit", "0"),
        ("deposit", "abc"),
        ("withdraw", "1.5"),
        ("withdraw", ""),
    ] {
        let out = work.bank(&[command, "acc", amount])?;
        assert_eq!(out.code, Some(2), "{command} {amount:?}: {out:?}");
        let expected = format!("amount must be a positive whole number, got {amount:?}");
        assert!(
            out.stderr.contains(&expected),
            "{command} {amount:?}: {out:?}"
        );
        assert!(out.stdout.is_empty(), "{out:?}");
    }
    let out = work.bank(&["transfer", "a", "b", "-1"])?;
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(out.stderr.contains(r#"got "-1""#), "{out:?}");
    Ok(())
}

#[test]
fn a_withdrawal_beyond_the_overdraft_is_refused_with_exit_code_1() -> anyhow::Result<()> {
    let work = Workdir::new()?;
    let opened = work.bank(&["open", "acc", "Alice", "--overdraft", "10"])?;
    assert_eq!(opened.code, Some(0), "{opened:?}");
    let ok = work.bank(&["withdraw", "acc", "10"])?;
    assert_eq!(ok.code, Some(0), "{ok:?}");
    assert!(ok.stdout.contains("balance now -10"), "{ok:?}");

    let refused = work.bank(&["withdraw", "acc", "1"])?;
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.starts_with("error: "), "{refused:?}");
    assert!(
        refused.stderr.contains(
            "insufficient funds: the balance is -10 and the overdraft limit 10, so 1 cannot be \
             withdrawn"
        ),
        "{refused:?}"
    );
    assert!(!refused.stderr.contains("panicked"), "{refused:?}");
    let show = work.bank(&["show", "acc"])?;
    assert!(show.stdout.contains("balance -10, version 2"), "{show:?}");
    Ok(())
}

#[test]
fn a_command_on_a_closed_account_is_refused_with_exit_code_1() -> anyhow::Result<()> {
    let work = Workdir::new()?;
    assert_eq!(work.bank(&["open", "acc", "Alice"])?.code, Some(0));
    let closed = work.bank(&["close", "acc"])?;
    assert_eq!(closed.code, Some(0), "{closed:?}");
    for args in [["deposit", "acc", "5"], ["withdraw", "acc", "5"]] {
        let refused = work.bank(&args)?;
        assert_eq!(refused.code, Some(1), "{args:?}: {refused:?}");
        assert!(refused.stderr.starts_with("error: "), "{refused:?}");
        assert!(
            refused.stderr.contains("the account is closed"),
            "{refused:?}"
        );
    }
    Ok(())
}

#[test]
fn show_lists_the_events_with_version_offset_and_type() -> anyhow::Result<()> {
    let work = Workdir::new()?;
    for args in [
        &["open", "acc", "Alice", "--command-id", "open-acc"][..],
        &["deposit", "acc", "7"],
        &["withdraw", "acc", "2"],
    ] {
        let out = work.bank(args)?;
        assert_eq!(out.code, Some(0), "{args:?}: {out:?}");
    }
    let show = work.bank(&["show", "acc"])?;
    assert_eq!(show.code, Some(0), "{show:?}");
    assert!(show.stdout.contains("account acc: open"), "{show:?}");
    assert!(show.stdout.contains("balance 5, version 3"), "{show:?}");
    let events: Vec<Vec<&str>> = show
        .stdout
        .lines()
        .map(str::split_whitespace)
        .map(Iterator::collect)
        .filter(|words: &Vec<&str>| {
            words
                .get(3)
                .is_some_and(|t| ["Opened", "Deposited", "Withdrawn"].contains(t))
        })
        .collect();
    let summary: Vec<(&str, &str, &str)> = events
        .iter()
        .filter_map(|w| Some((*w.first()?, *w.get(2)?, *w.get(3)?)))
        .collect();
    assert_eq!(
        summary,
        [
            ("1", "0", "Opened"),
            ("2", "1", "Deposited"),
            ("3", "2", "Withdrawn")
        ],
        "{show:?}"
    );
    assert!(
        show.stdout.contains("open-acc"),
        "the command id is shown: {show:?}"
    );
    Ok(())
}

#[test]
fn a_repeated_command_id_changes_nothing_the_second_time() -> anyhow::Result<()> {
    let work = Workdir::new()?;
    assert_eq!(work.bank(&["open", "acc", "Alice"])?.code, Some(0));
    let first = work.bank(&["deposit", "acc", "5", "--command-id", "pay-1"])?;
    let again = work.bank(&["deposit", "acc", "5", "--command-id", "pay-1"])?;
    assert_eq!(again.code, Some(0), "{again:?}");
    assert!(first.stdout.contains("balance now 5"), "{first:?}");
    assert!(again.stdout.contains("already done"), "{again:?}");
    assert!(again.stdout.contains("balance now 5"), "{again:?}");

    let reused = work.bank(&["deposit", "acc", "6", "--command-id", "pay-1"])?;
    assert_eq!(reused.code, Some(1), "{reused:?}");
    assert!(
        reused.stderr.contains("already used") && reused.stderr.contains("pay-1"),
        "{reused:?}"
    );
    Ok(())
}

#[test]
fn a_transfer_with_an_id_runs_once() -> anyhow::Result<()> {
    let work = Workdir::new()?;
    assert_eq!(
        work.bank(&["open", "a", "Ann", "--overdraft", "50"])?.code,
        Some(0)
    );
    assert_eq!(work.bank(&["open", "b", "Ben"])?.code, Some(0));
    let first = work.bank(&["transfer", "a", "b", "20", "--id", "t-1"])?;
    assert_eq!(first.code, Some(0), "{first:?}");
    assert_eq!(balance(&first.stdout, "a"), Some(-20), "{first:?}");
    assert_eq!(balance(&first.stdout, "b"), Some(20), "{first:?}");
    let again = work.bank(&["transfer", "a", "b", "20", "--id", "t-1"])?;
    assert!(again.stdout.contains("nothing moved"), "{again:?}");
    assert_eq!(balance(&again.stdout, "a"), Some(-20), "{again:?}");

    let refused = work.bank(&["transfer", "a", "b", "31"])?;
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("nothing was transferred (account a)"),
        "{refused:?}"
    );
    Ok(())
}

/// What `projections status --json` prints, by projection name.
fn statuses(
    work: &Workdir,
) -> anyhow::Result<std::collections::BTreeMap<String, serde_json::Value>> {
    let status = work.bank(&["projections", "status", "--json"])?;
    anyhow::ensure!(status.code == Some(0), "{status:?}");
    let list: Vec<serde_json::Value> = serde_json::from_str(&status.stdout)?;
    list.into_iter()
        .map(|s| {
            let name = s["name"]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("a status without a name: {s}"))?
                .to_owned();
            Ok((name, s))
        })
        .collect()
}

#[test]
fn projections_status_json_lists_both_views_caught_up_after_the_scenario() -> anyhow::Result<()> {
    let work = Workdir::new()?;
    let scenario = work.bank(&[])?;
    assert_eq!(scenario.code, Some(0), "{scenario:?}");
    let statuses = statuses(&work)?;
    assert_eq!(
        statuses.keys().collect::<Vec<_>>(),
        ["balances", "statement"],
        "{statuses:?}"
    );
    let mut events = Vec::new();
    for (name, s) in &statuses {
        assert_eq!(s["lag"], 0, "{name}: {s}");
        assert_eq!(s["code_version"], 1, "{name}: {s}");
        assert_eq!(s["active"]["generation"], 1, "{name}: {s}");
        assert_eq!(s["active"]["state"], "active", "{name}: {s}");
        assert_eq!(s["parked"], serde_json::json!([]), "{name}: {s}");
        let partitions = s["partitions"]
            .as_array()
            .ok_or_else(|| anyhow::anyhow!("{name}: no partitions: {s}"))?;
        assert!(!partitions.is_empty(), "{name}: {s}");
        let mut total = 0;
        for p in partitions {
            assert_eq!(p["topic"], "account", "{name}: {p}");
            assert_eq!(p["checkpoint"], p["head"], "{name}: {p}");
            assert_eq!(p["lag"], 0, "{name}: {p}");
            total += p["head"]
                .as_u64()
                .ok_or_else(|| anyhow::anyhow!("{name}: no head: {p}"))?;
        }
        events.push(total);
    }
    // alice and bob opened, two deposits, a withdrawal, a transfer's two legs.
    assert_eq!(events, [7, 7], "{statuses:?}");
    Ok(())
}

#[test]
fn projections_rebuild_replays_a_view_from_the_log() -> anyhow::Result<()> {
    let work = Workdir::new()?;
    let scenario = work.bank(&[])?;
    assert_eq!(scenario.code, Some(0), "{scenario:?}");
    let rebuilt = work.bank(&["projections", "rebuild", "balances"])?;
    assert_eq!(rebuilt.code, Some(0), "{rebuilt:?}");
    assert!(
        rebuilt.stdout.starts_with(
            "rebuilt balances side by side from the start: generation 2, 7 events read, lag 0"
        ),
        "{rebuilt:?}"
    );
    let in_place = work.bank(&["projections", "rebuild", "balances", "--in-place"])?;
    assert_eq!(in_place.code, Some(0), "{in_place:?}");
    assert!(
        in_place.stdout.starts_with(
            "rebuilt balances in place from the start: generation 3, 7 events read, lag 0"
        ),
        "{in_place:?}"
    );
    let statuses = statuses(&work)?;
    assert_eq!(
        statuses["balances"]["active"]["generation"], 3,
        "{statuses:?}"
    );
    assert_eq!(statuses["balances"]["lag"], 0, "{statuses:?}");
    assert_eq!(
        statuses["statement"]["active"]["generation"], 1,
        "untouched: {statuses:?}"
    );

    // The rebuilt view shows what the log says: the next scenario run reads it back.
    let second = work.bank(&[])?;
    assert_eq!(second.code, Some(0), "{second:?}");
    assert_eq!(
        balance(&second.stdout, "alice"),
        Some(2 * ALICE_PER_RUN),
        "{second:?}"
    );
    assert_eq!(
        balance(&second.stdout, "bob"),
        Some(2 * BOB_PER_RUN),
        "{second:?}"
    );
    Ok(())
}

#[test]
fn projections_rebuild_of_an_unknown_view_exits_1_naming_the_known_ones() -> anyhow::Result<()> {
    let work = Workdir::new()?;
    assert_eq!(work.bank(&[])?.code, Some(0));
    let refused = work.bank(&["projections", "rebuild", "nope"])?;
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.starts_with("error: "), "{refused:?}");
    assert!(
        refused
            .stderr
            .contains(r#"no projection named "nope" (known: balances, statement)"#),
        "{refused:?}"
    );
    assert!(!refused.stderr.contains("panicked"), "{refused:?}");
    Ok(())
}

#[test]
fn projections_list_names_balances_and_statement() -> anyhow::Result<()> {
    let work = Workdir::new()?;
    assert_eq!(work.bank(&[])?.code, Some(0));
    let list = work.bank(&["projections", "list"])?;
    assert_eq!(list.code, Some(0), "{list:?}");
    let names: Vec<&str> = list
        .stdout
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert_eq!(names, ["balances", "statement"], "{list:?}");
    let json = work.bank(&["projections", "list", "--json"])?;
    assert_eq!(json.code, Some(0), "{json:?}");
    let list: Vec<serde_json::Value> = serde_json::from_str(&json.stdout)?;
    let names: Vec<&str> = list.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["balances", "statement"], "{json:?}");
    Ok(())
}
