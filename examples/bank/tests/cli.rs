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

/// Appends an event the bank cannot decode (an amount that is not a number) to `account`'s
/// stream, as a buggy or foreign writer might.
fn append_undecodable(db: &Path, account: &str) -> anyhow::Result<()> {
    use keel::{AppendRequest, EventStore as _, ExpectedVersion, NewEvent, StreamId};
    tokio::runtime::Runtime::new()?.block_on(async {
        let store = keel::store::sqlite::SqliteStore::open(db).await?;
        let bad = NewEvent::raw("Deposited", 1, br#"{"amount":"lots"}"#.to_vec());
        store
            .append(AppendRequest::new(
                StreamId::new("account", account)?,
                ExpectedVersion::Any,
                vec![bad],
            ))
            .await?;
        store.close().await;
        anyhow::Ok(())
    })
}

/// How many generations of `projection` the views (in `db`) hold.
fn generations(db: &Path, projection: &str) -> anyhow::Result<i64> {
    tokio::runtime::Runtime::new()?.block_on(async {
        let views = keel_projections::store::sqlite::SqliteViews::open(db).await?;
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM keel_view_generations WHERE name = ?")
                .bind(projection)
                .fetch_one(views.pool())
                .await?;
        views.close().await;
        anyhow::Ok(n)
    })
}

#[test]
fn projections_status_after_a_failed_rebuild_says_why_and_how_to_go_on() -> anyhow::Result<()> {
    let work = Workdir::new()?;
    assert_eq!(work.bank(&[])?.code, Some(0));
    append_undecodable(&work.db, "mallory")?;

    let rebuild = work.bank(&["projections", "rebuild", "balances"])?;
    assert_eq!(rebuild.code, Some(1), "{rebuild:?}");
    assert!(
        rebuild.stderr.contains(
            r#"projection balances stopped at event "Deposited" of stream account/mallory"#
        ),
        "{rebuild:?}"
    );
    assert!(
        rebuild
            .stderr
            .contains("`projections status balances` shows why and how to go on"),
        "{rebuild:?}"
    );

    let status = work.bank(&["projections", "status", "balances"])?;
    assert_eq!(status.code, Some(0), "{status:?}");
    let out = &status.stdout;
    for expected in [
        "  active:   generation 1 (version 1)",
        "  building: generation 2 (version 1)",
        r#"stopped at event "Deposited" of stream account/mallory"#,
        "payload does not decode: invalid type: string \"lots\", expected u64",
        "- retry: fix the event or the projection's code, then `projections rebuild balances`",
        "- drop: `projections drop balances` abandons this build; readers keep generation 1",
        "- reset: `projections reset balances` drops every generation",
    ] {
        assert!(out.contains(expected), "{expected:?} in {status:?}");
    }
    let json = statuses(&work)?;
    let building = &json["balances"]["building"];
    assert_eq!(building["generation"], 2, "{json:?}");
    let error = building["stopped"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("account/mallory"), "{json:?}");

    // Retried, the rebuild replaces its stopped build instead of piling builds up.
    let again = work.bank(&["projections", "rebuild", "balances"])?;
    assert_eq!(again.code, Some(1), "{again:?}");
    assert_eq!(
        generations(&work.db, "balances")?,
        2,
        "active and one build"
    );
    assert_eq!(statuses(&work)?["balances"]["building"]["generation"], 3);

    let dropped = work.bank(&["projections", "drop", "balances"])?;
    assert_eq!(dropped.code, Some(0), "{dropped:?}");
    assert!(
        dropped
            .stdout
            .contains("dropped 1 generation(s) being built"),
        "{dropped:?}"
    );
    assert_eq!(generations(&work.db, "balances")?, 1);
    let after = statuses(&work)?;
    assert_eq!(after["balances"]["active"]["generation"], 1, "{after:?}");
    assert_eq!(after["balances"]["building"], serde_json::Value::Null);
    Ok(())
}

#[test]
fn projections_status_of_a_view_never_built_counts_the_events_waiting() -> anyhow::Result<()> {
    let work = Workdir::new()?;
    for args in [
        ["open", "a", "Ann"],
        ["open", "b", "Ben"],
        ["deposit", "a", "5"],
    ] {
        assert_eq!(work.bank(&args)?.code, Some(0), "{args:?}");
    }
    let status = work.bank(&["projections", "status", "balances"])?;
    assert!(
        status.stdout.contains("active:   none (never built"),
        "{status:?}"
    );
    assert!(status.stdout.contains("lag: 3 "), "{status:?}");
    let json = statuses(&work)?;
    assert_eq!(json["balances"]["lag"], 3, "{json:?}");
    assert_eq!(json["balances"]["active"], serde_json::Value::Null);
    Ok(())
}

#[test]
fn projections_status_into_a_closed_pipe_exits_quietly() -> anyhow::Result<()> {
    let work = Workdir::new()?;
    assert_eq!(work.bank(&[])?.code, Some(0));
    for args in [&["projections", "status"][..], &["balances"]] {
        // The reading end is closed before the bank starts: every write meets a broken pipe.
        let (reader, writer) = std::io::pipe()?;
        drop(reader);
        let output = Command::new(env!("CARGO_BIN_EXE_bank"))
            .current_dir(work.dir.path())
            .arg("--db")
            .arg(&work.db)
            .args(args)
            .stdout(writer)
            .output()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
        assert_eq!(stderr, "", "{args:?}: quiet");
    }
    Ok(())
}

/// This host's name as the runners record it in leases, if it can be known here.
fn host() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    Some(name.trim().to_owned())
}

/// Gives the lease of `projection` to `owner` for `ttl`, as a runner's claim would.
fn hold_lease(
    db: &Path,
    projection: &str,
    owner: &str,
    ttl: std::time::Duration,
) -> anyhow::Result<()> {
    use keel_projections::store::ViewStore as _;
    tokio::runtime::Runtime::new()?.block_on(async {
        let views = keel_projections::store::sqlite::SqliteViews::open(db).await?;
        views.claim(projection, owner, ttl).await?;
        views.close().await;
        anyhow::Ok(())
    })
}

#[test]
fn a_lease_left_by_a_killed_runner_does_not_hold_the_next_command_up() -> anyhow::Result<()> {
    let Some(host) = host() else {
        return Ok(()); // no /proc: a holder's process is never provably gone here
    };
    let work = Workdir::new()?;
    assert_eq!(work.bank(&[])?.code, Some(0));
    // A process of this host that has exited, like a rebuild killed with SIGKILL.
    let mut gone = Command::new("true").spawn()?;
    let pid = gone.id();
    gone.wait()?;
    let owner = format!("runner-killed#1@{host}:{pid}");
    hold_lease(
        &work.db,
        "balances",
        &owner,
        std::time::Duration::from_secs(120),
    )?;

    let status = work.bank(&["projections", "status", "balances"])?;
    assert!(
        status
            .stdout
            .contains(&format!("lease:    held by {owner} until ")),
        "{status:?}"
    );
    assert!(
        status
            .stdout
            .contains("its process is gone: the next command takes the lease over"),
        "{status:?}"
    );

    // Its lease has two minutes to run and the wait for one gives up after one: succeeding
    // means the rebuild did not wait for it.
    let rebuild = work.bank(&["projections", "rebuild", "balances"])?;
    assert_eq!(rebuild.code, Some(0), "{rebuild:?}");
    assert!(!rebuild.stderr.contains("waiting"), "{rebuild:?}");
    let json = statuses(&work)?;
    assert_eq!(
        json["balances"]["lease"],
        serde_json::Value::Null,
        "released"
    );
    assert_eq!(json["balances"]["active"]["generation"], 2, "{json:?}");
    Ok(())
}

#[test]
fn a_rebuild_waiting_for_a_live_runners_lease_says_so() -> anyhow::Result<()> {
    let Some(host) = host() else {
        return Ok(());
    };
    let work = Workdir::new()?;
    assert_eq!(work.bank(&[])?.code, Some(0));
    // This test's own process: alive for as long as the rebuild waits.
    let owner = format!("runner-live#1@{host}:{}", std::process::id());
    hold_lease(
        &work.db,
        "balances",
        &owner,
        std::time::Duration::from_millis(1500),
    )?;
    let rebuild = work.bank(&["projections", "rebuild", "balances"])?;
    assert_eq!(rebuild.code, Some(0), "{rebuild:?}");
    assert!(
        rebuild.stderr.contains(&format!(
            "waiting for projection balances: its lease is held by {owner} until "
        )),
        "{rebuild:?}"
    );
    assert_eq!(rebuild.stderr.matches("waiting for").count(), 1, "once");
    Ok(())
}

#[test]
fn balances_reads_the_view_brought_up_to_date() -> anyhow::Result<()> {
    let work = Workdir::new()?;
    assert_eq!(work.bank(&[])?.code, Some(0));
    // Commands after the scenario's catch-up: `balances` applies them before reading.
    assert_eq!(work.bank(&["deposit", "bob", "5"])?.code, Some(0));
    assert_eq!(work.bank(&["open", "carol", "Carol"])?.code, Some(0));
    let all = work.bank(&["balances"])?;
    assert_eq!(all.code, Some(0), "{all:?}");
    let rows: Vec<Vec<&str>> = all
        .stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    let bob = (BOB_PER_RUN + 5).to_string();
    let alice = ALICE_PER_RUN.to_string();
    assert_eq!(
        rows,
        [
            vec!["alice", "Alice", "open", alice.as_str(), "4"],
            vec!["bob", "Bob", "open", bob.as_str(), "4"],
            vec!["carol", "Carol", "open", "0", "1"],
        ],
        "{all:?}"
    );
    let one = work.bank(&["balances", "carol"])?;
    assert_eq!(one.code, Some(0), "{one:?}");
    assert_eq!(one.stdout.lines().count(), 2, "{one:?}");
    let none = work.bank(&["balances", "dave"])?;
    assert_eq!(none.code, Some(1), "{none:?}");
    assert!(
        none.stderr
            .contains("account dave is not in the balances view: it was never opened"),
        "{none:?}"
    );
    Ok(())
}

#[test]
fn a_128_kib_argument_is_cut_in_the_error() -> anyhow::Result<()> {
    let work = Workdir::new()?;
    let long = "x".repeat(128 * 1024 - 1);
    for args in [
        vec!["deposit", "acc", long.as_str()],
        vec!["deposit", long.as_str(), "5"],
        vec!["deposit", "acc", "5", "--command-id", long.as_str()],
        vec!["projections", "rebuild", long.as_str()],
        vec!["--db", long.as_str(), "show", "acc"],
    ] {
        let out = work.bank(&args)?;
        assert!(
            matches!(out.code, Some(1 | 2)),
            "{:?}: exit {:?}",
            args.first(),
            out.code
        );
        assert!(
            out.stderr.len() < 1024,
            "{:?}: {} bytes of error: {}",
            args.first(),
            out.stderr.len(),
            out.stderr.get(..300).unwrap_or_default()
        );
        assert!(
            !out.stderr.contains(&"x".repeat(100)),
            "the value is cut: {}",
            out.stderr
        );
    }
    Ok(())
}
