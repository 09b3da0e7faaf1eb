//! The `bank` binary with its log in PostgreSQL (`--database-url`, `BANK_DATABASE_URL`): the
//! scenario, the subcommands and `projections …` (views in the SQLite file), each test on a
//! database of its own on the server named by `KEEL_TEST_POSTGRES_URL`.

use std::path::PathBuf;
use std::process::{Command, Output};

use keel::testing::postgres;
use sqlx::Connection;

/// A fresh database and a working directory for the views file.
struct Workdir {
    dir: tempfile::TempDir,
    url: String,
}

impl Workdir {
    async fn new() -> anyhow::Result<Self> {
        Ok(Self {
            dir: tempfile::tempdir()?,
            url: postgres::create_database("bank").await,
        })
    }

    fn views(&self) -> PathBuf {
        self.dir.path().join("views.db")
    }

    /// Runs `bank --database-url <url> --db <views> args…`.
    fn bank(&self, args: &[&str]) -> std::io::Result<Run> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_bank"));
        command
            .current_dir(self.dir.path())
            .env_remove("BANK_DB")
            .env_remove("BANK_DATABASE_URL")
            .arg("--database-url")
            .arg(&self.url)
            .arg("--db")
            .arg(self.views());
        run(command.args(args))
    }

    /// How many events the log in PostgreSQL holds.
    async fn events_in_postgres(&self) -> anyhow::Result<i64> {
        let mut conn = sqlx::PgConnection::connect(&self.url).await?;
        Ok(sqlx::query_scalar("SELECT count(*) FROM keel.events")
            .fetch_one(&mut conn)
            .await?)
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

fn run(command: &mut Command) -> std::io::Result<Run> {
    let Output {
        status,
        stdout,
        stderr,
    } = command.output()?;
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

#[tokio::test]
async fn the_scenario_keeps_its_log_in_postgres_across_runs() -> anyhow::Result<()> {
    let work = Workdir::new().await?;
    let first = work.bank(&[])?;
    assert_eq!(first.code, Some(0), "{first:?}");
    assert!(
        first
            .stdout
            .contains("scenario run 1 on PostgreSQL schema keel"),
        "{first:?}"
    );
    assert_eq!(balance(&first.stdout, "alice"), Some(45), "{first:?}");
    assert_eq!(balance(&first.stdout, "bob"), Some(75), "{first:?}");
    assert!(
        first.stdout.contains("the balances view"),
        "the views are read: {first:?}"
    );
    // alice and bob opened, two deposits, a withdrawal, a transfer's two legs.
    assert_eq!(
        work.events_in_postgres().await?,
        7,
        "the log is in PostgreSQL"
    );

    let second = work.bank(&[])?;
    assert_eq!(second.code, Some(0), "{second:?}");
    assert!(second.stdout.contains("scenario run 2 "), "{second:?}");
    assert!(
        second.stdout.contains("the log holds 7 account events"),
        "{second:?}"
    );
    assert_eq!(balance(&second.stdout, "alice"), Some(90), "{second:?}");
    assert_eq!(balance(&second.stdout, "bob"), Some(150), "{second:?}");
    Ok(())
}

#[tokio::test]
async fn the_subcommands_work_with_the_url_from_the_environment() -> anyhow::Result<()> {
    let work = Workdir::new().await?;
    let bank = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_bank"));
        command
            .current_dir(work.dir.path())
            .env("BANK_DATABASE_URL", &work.url)
            .env("BANK_DB", work.views());
        run(command.args(args))
    };
    for args in [
        &[
            "open",
            "acc",
            "Alice",
            "--overdraft",
            "10",
            "--command-id",
            "open-acc",
        ][..],
        &["open", "other", "Bob"],
        &["deposit", "acc", "7", "--command-id", "pay-1"],
        &["deposit", "acc", "7", "--command-id", "pay-1"],
        &["withdraw", "acc", "2"],
        &["transfer", "acc", "other", "3", "--id", "t-1"],
    ] {
        let out = bank(args)?;
        assert_eq!(out.code, Some(0), "{args:?}: {out:?}");
    }
    let refused = bank(&["withdraw", "acc", "100"])?;
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.contains("insufficient funds"), "{refused:?}");
    let show = bank(&["show", "acc"])?;
    assert_eq!(show.code, Some(0), "{show:?}");
    assert!(show.stdout.contains("balance 2, version 4"), "{show:?}");
    assert!(show.stdout.contains("open-acc"), "{show:?}");
    assert_eq!(
        work.events_in_postgres().await?,
        6,
        "open ×2, one deposit (the repeat replayed), a withdrawal, a transfer's two legs"
    );
    Ok(())
}

#[tokio::test]
async fn projections_run_on_a_log_in_postgres_with_views_in_sqlite() -> anyhow::Result<()> {
    let work = Workdir::new().await?;
    assert_eq!(work.bank(&[])?.code, Some(0));
    let status = work.bank(&["projections", "status", "--json"])?;
    assert_eq!(status.code, Some(0), "{status:?}");
    let list: Vec<serde_json::Value> = serde_json::from_str(&status.stdout)?;
    assert_eq!(list.len(), 2, "{status:?}");
    for s in &list {
        assert_eq!(s["lag"], 0, "{s}");
        let heads: u64 = s["partitions"]
            .as_array()
            .ok_or_else(|| anyhow::anyhow!("no partitions: {s}"))?
            .iter()
            .filter_map(|p| p["head"].as_u64())
            .sum();
        assert_eq!(heads, 7, "{s}");
    }
    let rebuilt = work.bank(&["projections", "rebuild", "balances"])?;
    assert_eq!(rebuilt.code, Some(0), "{rebuilt:?}");
    assert!(
        rebuilt.stdout.contains("7 events read, lag 0"),
        "{rebuilt:?}"
    );
    assert!(work.views().exists(), "the views are in the SQLite file");
    Ok(())
}

#[tokio::test]
async fn an_unreachable_database_is_an_error_naming_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut command = Command::new(env!("CARGO_BIN_EXE_bank"));
    command.current_dir(dir.path()).args([
        "--database-url",
        "postgres://bank:s3cret@127.0.0.1:1/bank",
        "show",
        "x",
    ]);
    let out = run(&mut command)?;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .starts_with("error: cannot open postgres://bank:***@127.0.0.1:1/bank"),
        "{out:?}"
    );
    assert!(
        !out.stderr.contains("s3cret"),
        "the password is not shown: {out:?}"
    );
    Ok(())
}
