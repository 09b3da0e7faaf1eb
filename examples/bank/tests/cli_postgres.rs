//! The `bank` binary with its log and its views in PostgreSQL (`--database-url`,
//! `BANK_DATABASE_URL`): the scenario, the subcommands, `balances` and `projections …`, each
//! test on a database of its own on the server named by `KEEL_TEST_POSTGRES_URL`. The SQLite
//! file named by `--db` is never created.

use std::path::PathBuf;
use std::process::{Command, Output};

use bank::projections::{AccountRow, postgres as pg};
use keel::testing::postgres;
use keel_projections::store::postgres::PostgresViews;
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

    /// The bank's views in the test's database.
    async fn views_in_postgres(&self) -> anyhow::Result<PostgresViews> {
        Ok(
            PostgresViews::connect_schema(&self.url, bank::projections::postgres::VIEWS_SCHEMA)
                .await?,
        )
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
        first.stdout.contains(
            "the balances view (a projection of the log, in PostgreSQL schema bank_views)"
        ),
        "the views are read from PostgreSQL: {first:?}"
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

    // The views are in PostgreSQL, up to date with both runs; the SQLite file never existed.
    let views = work.views_in_postgres().await?;
    let rows = pg::read_balances(&views).await?;
    views.close().await;
    assert_eq!(
        rows.iter()
            .map(|r| (r.id.as_str(), r.balance, r.version))
            .collect::<Vec<_>>(),
        [("alice", 90, 7), ("bob", 150, 5)],
        "{rows:?}"
    );
    assert!(!work.views().exists(), "nothing in the SQLite file");
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

/// The rows `bank balances` printed: id, owner, status, balance, version.
fn balance_rows(output: &str) -> Vec<AccountRow> {
    output
        .lines()
        .skip(1)
        .filter_map(
            |line| match line.split_whitespace().collect::<Vec<_>>()[..] {
                [id, owner, status, balance, version] => Some(AccountRow {
                    id: id.to_owned(),
                    owner: owner.to_owned(),
                    status: status.to_owned(),
                    balance: balance.parse().ok()?,
                    version: version.parse().ok()?,
                }),
                _ => None,
            },
        )
        .collect()
}

#[tokio::test]
async fn balances_and_projections_run_with_the_views_in_postgres() -> anyhow::Result<()> {
    let work = Workdir::new().await?;
    let scenario = work.bank(&[])?;
    assert_eq!(scenario.code, Some(0), "{scenario:?}");
    let deposit = work.bank(&["deposit", "bob", "5"])?;
    assert_eq!(deposit.code, Some(0), "{deposit:?}");
    let expected = |bob_version| {
        vec![
            AccountRow {
                id: "alice".into(),
                owner: "Alice".into(),
                status: "open".into(),
                balance: 45,
                version: 4,
            },
            AccountRow {
                id: "bob".into(),
                owner: "Bob".into(),
                status: "open".into(),
                balance: 80,
                version: bob_version,
            },
        ]
    };

    // `balances` catches the view up with the deposit made after the scenario, then reads it.
    let balances = work.bank(&["balances"])?;
    assert_eq!(balances.code, Some(0), "{balances:?}");
    assert_eq!(balance_rows(&balances.stdout), expected(4), "{balances:?}");
    let one = work.bank(&["balances", "bob"])?;
    assert_eq!(one.code, Some(0), "{one:?}");
    assert_eq!(balance_rows(&one.stdout), expected(4)[1..], "{one:?}");
    let missing = work.bank(&["balances", "nobody"])?;
    assert_eq!(missing.code, Some(1), "{missing:?}");
    assert!(
        missing
            .stderr
            .contains("account nobody is not in the balances view"),
        "{missing:?}"
    );

    let status = work.bank(&["projections", "status", "--json"])?;
    assert_eq!(status.code, Some(0), "{status:?}");
    let list: Vec<serde_json::Value> = serde_json::from_str(&status.stdout)?;
    assert_eq!(list.len(), 2, "{status:?}");
    for s in &list {
        let heads: u64 = s["partitions"]
            .as_array()
            .ok_or_else(|| anyhow::anyhow!("no partitions: {s}"))?
            .iter()
            .filter_map(|p| p["head"].as_u64())
            .sum();
        assert_eq!(heads, 8, "the scenario's 7 events and the deposit: {s}");
    }
    let lag = |name: &str| {
        list.iter()
            .find(|s| s["name"] == name)
            .map(|s| s["lag"].clone())
    };
    assert_eq!(
        lag("balances"),
        Some(0.into()),
        "caught up by `balances`: {status:?}"
    );
    assert_eq!(
        lag("statement"),
        Some(1.into()),
        "the deposit after the scenario is not in the statement yet: {status:?}"
    );

    let rebuilt = work.bank(&["projections", "rebuild", "balances"])?;
    assert_eq!(rebuilt.code, Some(0), "{rebuilt:?}");
    assert!(
        rebuilt.stdout.contains("8 events read, lag 0"),
        "{rebuilt:?}"
    );
    // The rebuilt generation, read straight from PostgreSQL, holds the same balances.
    let views = work.views_in_postgres().await?;
    let rows = pg::read_balances(&views).await?;
    let generations: Vec<i64> = sqlx::query_scalar(
        "SELECT generation FROM bank_views.keel_view_generations \
         WHERE name = 'balances' AND state = 'active'",
    )
    .fetch_all(views.pool())
    .await?;
    views.close().await;
    assert_eq!(rows, expected(4), "{rows:?}");
    assert_eq!(generations, [2], "the rebuild switched to generation 2");

    let statement_of_bob = || async {
        let views = work.views_in_postgres().await?;
        let statement = pg::read_statement(&views, "bob").await?;
        views.close().await;
        anyhow::Ok(
            statement
                .iter()
                .map(|m| (m.version, m.kind.clone(), m.amount))
                .collect::<Vec<_>>(),
        )
    };
    let movement = |version, kind: &str, amount| (version, kind.to_owned(), amount);
    let scenario_movements = vec![
        movement(1, "opened", 0),
        movement(2, "deposit", 50),
        movement(3, "deposit", 25),
    ];
    assert_eq!(statement_of_bob().await?, scenario_movements);
    let rebuilt = work.bank(&["projections", "rebuild", "statement"])?;
    assert_eq!(rebuilt.code, Some(0), "{rebuilt:?}");
    let mut all = scenario_movements;
    all.push(movement(4, "deposit", 5));
    assert_eq!(
        statement_of_bob().await?,
        all,
        "the rebuild replayed the whole log"
    );
    assert!(
        !work.views().exists(),
        "the views are not in the SQLite file"
    );
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
