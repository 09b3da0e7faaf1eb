//! The bank example's command line: accounts event-sourced with keel in a SQLite file.
//!
//! Without a subcommand it runs a short scripted scenario on `bank.db` in the working
//! directory (`--db PATH` or `BANK_DB` to choose another file): it opens `alice` and `bob`,
//! moves money, transfers, shows a refusal, and prints the balances. Run it twice and the
//! second run starts from where the first left off: the log is the state.
//!
//! ```text
//! cargo run -p bank                              # the scenario
//! cargo run -p bank -- open carol Carol --overdraft 50
//! cargo run -p bank -- deposit carol 20 --command-id pay-17
//! cargo run -p bank -- transfer carol alice 10 --id rent-2025-01
//! cargo run -p bank -- show carol
//! cargo run -p bank -- balances                 # the balances view, brought up to date
//! cargo run -p bank -- projections status
//! cargo run -p bank -- schemas export examples/bank/schemas   # after changing an event
//! cargo run -p bank -- schemas check examples/bank/schemas    # breaking changes fail
//! ```
//!
//! With `--database-url postgres://…` (or `BANK_DATABASE_URL`) the log and the views live in
//! that PostgreSQL database, the log in its schema `keel`, the views in its schema `bank_views`
//! (the SQLite file is not used); with `--kafka HOST:PORT` (or `BANK_KAFKA`) the log is on
//! Apache Kafka, in topic `account` (build with `--features kafka`), and the views stay in the
//! SQLite file.
//!
//! ```text
//! cargo run -p bank -- --database-url postgres://bank@localhost/bank
//! cargo run -p bank --features kafka -- --kafka 127.0.0.1:9092
//! ```
//!
//! `bank serve` runs the bank as one instance of several sharing the log on Kafka: start it
//! in two terminals (each with its own `--db`), send account commands as JSON lines to
//! either, and each runs on the instance that owns the account (see `serve.rs`).
//!
//! Exit codes: 0 on success, 1 when the bank refuses a command (or the file fails), 2 for a
//! usage error such as an amount that is not a positive whole number.

mod args;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use args::Checked;

use anyhow::Context as _;
use bank::{Account, AccountEvent, TransferError};
use clap::{Parser, Subcommand};
use keel::{Aggregate as _, CommandId, Committed, EventStore as _, Partition, Topic};

mod backend;
#[cfg(feature = "kafka")]
mod serve;

/// The bank, on the log the command line chose.
type Bank = backend::AnyBank;

/// Accounts, deposits, withdrawals and transfers, event-sourced with keel in a SQLite file.
///
/// Without a subcommand, runs a short scripted scenario.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// The SQLite file holding the log and the views (created if missing; not used with
    /// `--database-url`, which holds both).
    #[arg(long, env = "BANK_DB", default_value = "bank.db", global = true)]
    db: PathBuf,

    /// Keep the log and the views in this PostgreSQL database (`postgres://user:password@host/db`;
    /// the log in schema `keel`, the views in schema `bank_views`) instead of the SQLite file.
    #[arg(
        long,
        env = "BANK_DATABASE_URL",
        global = true,
        conflicts_with = "kafka"
    )]
    database_url: Option<String>,

    /// Keep the log on Apache Kafka at these bootstrap servers (`host:port[,…]`) instead of
    /// the SQLite file, which then holds only the views. Needs the `kafka` feature.
    #[arg(long, env = "BANK_KAFKA", global = true)]
    kafka: Option<String>,

    /// The replication factor of the Kafka topics the bank creates (1 for a single broker).
    #[arg(
        long,
        env = "BANK_KAFKA_REPLICATION",
        default_value_t = 1,
        global = true
    )]
    kafka_replication: u16,

    /// The consumer group and transactional-id prefix the bank's instances share on Kafka.
    #[arg(long, env = "BANK_KAFKA_GROUP", default_value = "bank", global = true)]
    kafka_group: String,

    /// A prefix for the bank's Kafka topic names (to keep several banks on one cluster apart).
    #[arg(
        long,
        env = "BANK_KAFKA_TOPIC_PREFIX",
        default_value = "",
        global = true
    )]
    kafka_topic_prefix: String,

    #[command(subcommand)]
    command: Option<Cmd>,
}

impl Cli {
    /// Where the command line puts the log.
    fn log(&self) -> backend::Place<'_> {
        match (&self.database_url, &self.kafka) {
            (Some(url), _) if !url.is_empty() => backend::Place::Postgres(url),
            (_, Some(bootstrap)) if !bootstrap.is_empty() => backend::Place::Kafka(bootstrap),
            _ => backend::Place::Sqlite,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Read models (balances, statement): list, status, rebuild, reset, retry parked events.
    Projections(keel_projections::cli::ProjectionsArgs),
    /// The JSON Schemas of the bank's events and commands: export them to a folder, or check
    /// the code against the committed ones (no log is opened).
    Schemas(keel::schemas::cli::SchemasArgs),
    /// Serves account commands as one instance of several sharing the log on Kafka (needs
    /// `--kafka`): commands come as JSON lines on standard input, answers go to standard
    /// output, and each command runs on the instance that owns its account's partition.
    Serve {
        /// The partition count of the account topic, when this instance creates it.
        #[arg(long, default_value_t = 6)]
        partitions: u32,
        /// This instance's id (default: the group, host and process id).
        #[arg(long)]
        instance: Option<String>,
        /// How long a command sent to another instance waits for its answer, in ms.
        #[arg(long, default_value_t = 30_000)]
        timeout_ms: u64,
        /// How long the group waits for a silent instance before moving its partitions to
        /// the others, in ms (the broker accepts 6000 and up by default).
        #[arg(long, default_value_t = 10_000)]
        session_timeout_ms: u64,
    },
    /// Shows, for the bank on Kafka (needs `--kafka`), each partition of the account topic:
    /// the `bank serve` instance that owns it, its writer's end offset and the commands
    /// waiting for it.
    Health,
    /// Opens an account.
    Open {
        /// The account id.
        #[arg(value_parser = Checked(args::account))]
        account: String,
        /// Who owns it.
        owner: String,
        /// How far below zero the balance may go.
        #[arg(long, default_value_t = 0)]
        overdraft: u64,
        /// Makes the command idempotent: running it again with this id changes nothing.
        #[arg(long, value_parser = Checked(args::command_id))]
        command_id: Option<CommandId>,
    },
    /// Puts money into an account.
    Deposit {
        /// The account id.
        #[arg(value_parser = Checked(args::account))]
        account: String,
        /// A positive whole number.
        #[arg(value_parser = Checked(args::amount), allow_negative_numbers = true)]
        amount: u64,
        /// Makes the command idempotent: running it again with this id changes nothing.
        #[arg(long, value_parser = Checked(args::command_id))]
        command_id: Option<CommandId>,
    },
    /// Takes money out of an account, down to its overdraft limit.
    Withdraw {
        /// The account id.
        #[arg(value_parser = Checked(args::account))]
        account: String,
        /// A positive whole number.
        #[arg(value_parser = Checked(args::amount), allow_negative_numbers = true)]
        amount: u64,
        /// Makes the command idempotent: running it again with this id changes nothing.
        #[arg(long, value_parser = Checked(args::command_id))]
        command_id: Option<CommandId>,
    },
    /// Closes an account whose balance is 0.
    Close {
        /// The account id.
        #[arg(value_parser = Checked(args::account))]
        account: String,
        /// Makes the command idempotent: running it again with this id changes nothing.
        #[arg(long, value_parser = Checked(args::command_id))]
        command_id: Option<CommandId>,
    },
    /// Reads the balances view (a projection of the log, beside it): every account,
    /// or one. Brings the view up to date with the log first, then reads it in one consistent
    /// read.
    Balances {
        /// Only this account.
        #[arg(value_parser = Checked(args::account))]
        account: Option<String>,
    },
    /// Shows an account's balance, status, version and events.
    Show {
        /// The account id.
        #[arg(value_parser = Checked(args::account))]
        account: String,
    },
    /// Moves money from one account to another (atomically, idempotent per transfer id).
    Transfer {
        /// The account the money leaves.
        #[arg(value_parser = Checked(args::account))]
        from: String,
        /// The account the money reaches.
        #[arg(value_parser = Checked(args::account))]
        to: String,
        /// A positive whole number.
        #[arg(value_parser = Checked(args::amount), allow_negative_numbers = true)]
        amount: u64,
        /// The transfer's id; running the transfer again with it never moves the money twice.
        /// A fresh one is made (and printed) when missing.
        #[arg(long, value_parser = Checked(args::command_id))]
        id: Option<CommandId>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(mut cli: Cli) -> anyhow::Result<()> {
    if let Some(Cmd::Serve {
        partitions,
        instance,
        timeout_ms,
        session_timeout_ms,
    }) = cli.command
    {
        let Some(bootstrap) = cli.kafka.as_deref() else {
            anyhow::bail!(
                "`bank serve` shares the log with other instances on Kafka: give --kafka HOST:PORT"
            );
        };
        #[cfg(feature = "kafka")]
        return serve::serve(serve::ServeOptions {
            bootstrap,
            group: &cli.kafka_group,
            prefix: &cli.kafka_topic_prefix,
            replication: cli.kafka_replication,
            db: &cli.db,
            partitions,
            instance,
            timeout: std::time::Duration::from_millis(timeout_ms),
            session_timeout: std::time::Duration::from_millis(session_timeout_ms),
        })
        .await;
        #[cfg(not(feature = "kafka"))]
        {
            let _ = (
                bootstrap,
                partitions,
                instance,
                timeout_ms,
                session_timeout_ms,
            );
            anyhow::bail!(
                "this bank was built without Kafka; run it with \
                 `cargo run -p bank --features kafka -- --kafka HOST:PORT serve`"
            )
        }
    }
    if let Some(Cmd::Health) = cli.command {
        let Some(bootstrap) = cli.kafka.as_deref() else {
            anyhow::bail!(
                "`bank health` shows the bank's partitions on Kafka: give --kafka HOST:PORT"
            );
        };
        #[cfg(feature = "kafka")]
        return serve::health(serve::ServeOptions {
            bootstrap,
            group: &cli.kafka_group,
            prefix: &cli.kafka_topic_prefix,
            replication: cli.kafka_replication,
            db: &cli.db,
            partitions: 0,
            instance: None,
            timeout: std::time::Duration::ZERO,
            session_timeout: std::time::Duration::ZERO,
        })
        .await;
        #[cfg(not(feature = "kafka"))]
        {
            let _ = bootstrap;
            anyhow::bail!(
                "this bank was built without Kafka; run it with \
                 `cargo run -p bank --features kafka -- --kafka HOST:PORT health`"
            )
        }
    }
    let kafka = backend::KafkaOptions {
        group: &cli.kafka_group,
        prefix: &cli.kafka_topic_prefix,
        replication: cli.kafka_replication,
    };
    let command = match cli.command.take() {
        // The schemas are the code's: nothing to open.
        Some(Cmd::Schemas(args)) => return schemas(args),
        other => other,
    };
    let (bank, log) = backend::Log::open(&cli.db, cli.log(), &kafka).await?;
    let result = match command {
        None => scenario(&bank, &log, &cli.db).await,
        Some(command) => execute(&bank, &log, &cli.db, command).await,
    };
    drop(bank);
    log.close().await;
    result
}

async fn execute(bank: &Bank, log: &backend::Log, db: &Path, command: Cmd) -> anyhow::Result<()> {
    match command {
        Cmd::Open {
            account,
            owner,
            overdraft,
            command_id,
        } => {
            let committed = (bank
                .open(&account, owner.as_str(), overdraft, command_id)
                .await)
                .map_err(refusal)
                .with_context(|| format!("cannot open account {account}"))?;
            let verb = if committed.replayed {
                "was already opened by this command id"
            } else {
                "opened"
            };
            println!(
                "account {account} {verb} for {owner} (overdraft limit {overdraft}), version {}",
                committed.version
            );
        }
        Cmd::Deposit {
            account,
            amount,
            command_id,
        } => {
            let committed = (bank.deposit(&account, amount, command_id).await)
                .map_err(refusal)
                .with_context(|| format!("cannot deposit {amount} into {account}"))?;
            report(
                bank,
                &format!("deposited {amount} into"),
                &account,
                &committed,
            )
            .await?;
        }
        Cmd::Withdraw {
            account,
            amount,
            command_id,
        } => {
            let committed = (bank.withdraw(&account, amount, command_id).await)
                .map_err(refusal)
                .with_context(|| format!("cannot withdraw {amount} from {account}"))?;
            report(
                bank,
                &format!("withdrew {amount} from"),
                &account,
                &committed,
            )
            .await?;
        }
        Cmd::Close {
            account,
            command_id,
        } => {
            let committed = (bank.close_account(&account, command_id).await)
                .map_err(refusal)
                .with_context(|| format!("cannot close account {account}"))?;
            report(bank, "closed", &account, &committed).await?;
        }
        Cmd::Schemas(args) => schemas(args)?,
        Cmd::Show { account } => show(bank, &account).await?,
        // Handled in `run`, before the log is opened.
        Cmd::Serve { .. } | Cmd::Health => {}
        Cmd::Balances { account } => balances(bank, log, db, account.as_deref()).await?,
        Cmd::Projections(args) => {
            let (projections, views) = backend::Views::open(bank, log, db).await?;
            let result = keel_projections::cli::run(&projections, args).await;
            views.close().await;
            result?;
        }
        Cmd::Transfer {
            from,
            to,
            amount,
            id,
        } => {
            let id = id.unwrap_or_else(CommandId::random);
            let transfer = (bank.transfer(&from, &to, amount, &id).await)
                .map_err(transfer_refusal)
                .with_context(|| format!("cannot transfer {amount} from {from} to {to}"))?;
            let what = if transfer.replayed() {
                "was already done: nothing moved"
            } else {
                "done"
            };
            println!("transfer {id} of {amount} from {from} to {to} {what}");
            print_balances(bank, &[&from, &to]).await?;
        }
    }
    Ok(())
}

/// `bank schemas export | check DIR`.
fn schemas(args: keel::schemas::cli::SchemasArgs) -> anyhow::Result<()> {
    Ok(keel::schemas::cli::run(&bank::schemas::registry(), args)?)
}

/// The account's own reason for a refusal, without the "command rejected" wrapper.
fn refusal(error: bank::Error) -> anyhow::Error {
    match error {
        keel::repository::Error::Rejected(reason) => reason.into(),
        other => other.into(),
    }
}

fn transfer_refusal(error: TransferError) -> anyhow::Error {
    match error {
        TransferError::NothingMoved { account, source } => {
            refusal(source).context(format!("nothing was transferred (account {account})"))
        }
        TransferError::Deposit {
            from,
            to,
            amount,
            transfer_id,
            source,
        } => refusal(source).context(format!(
            "{amount} left account {from} but did not reach account {to}; \
             run the transfer again with --id {transfer_id} to finish it"
        )),
        other => other.into(),
    }
}

/// Prints what a command did and the account's balance now.
async fn report(
    bank: &Bank,
    what: &str,
    account: &str,
    committed: &Committed<AccountEvent>,
) -> anyhow::Result<()> {
    let state = bank.account(account).await?;
    let replayed = if committed.replayed {
        " (already done by this command id: nothing changed)"
    } else {
        ""
    };
    println!(
        "{what} account {account} at version {}{replayed}; balance now {}",
        committed.version,
        state.state.balance()
    );
    Ok(())
}

async fn show(bank: &Bank, account: &str) -> anyhow::Result<()> {
    let statement = bank
        .show(account)
        .await
        .with_context(|| format!("cannot read account {account}"))?;
    let state = &statement.state;
    println!("account {account}: {}", state.status());
    if state.status() != bank::AccountStatus::NeverOpened {
        println!(
            "  owner {}, overdraft limit {}",
            state.owner(),
            state.overdraft_limit()
        );
    }
    println!(
        "  balance {}, version {}",
        state.balance(),
        statement.version
    );
    if statement.lines.is_empty() {
        println!("  no events");
        return Ok(());
    }
    println!("  events:");
    println!(
        "    {:<8} {:<10} {:<7} {:<10} {:<40} command",
        "version", "partition", "offset", "type", "details"
    );
    for line in &statement.lines {
        let mut details = match &line.event {
            AccountEvent::Opened {
                owner,
                overdraft_limit,
            } => format!("owner {owner}, overdraft limit {overdraft_limit}"),
            AccountEvent::Deposited { amount } | AccountEvent::Withdrawn { amount } => {
                format!("amount {amount}")
            }
            AccountEvent::Closed => String::new(),
        };
        // A transfer's legs name the other account in their metadata; the command id (the
        // last column) names the transfer.
        let transfer = |key| line.metadata.get(key).map(String::as_str);
        match (
            &line.event,
            transfer(bank::TRANSFER_FROM),
            transfer(bank::TRANSFER_TO),
        ) {
            (AccountEvent::Withdrawn { .. }, _, Some(to)) => {
                details.push_str(&format!(", transfer to {to}"));
            }
            (AccountEvent::Deposited { .. }, Some(from), _) => {
                details.push_str(&format!(", transfer from {from}"));
            }
            _ => {}
        }
        let command = line.command_id.as_ref().map_or("-", CommandId::as_str);
        println!(
            "    {:<8} {:<10} {:<7} {:<10} {details:<40} {command}",
            line.version.to_string(),
            line.partition.to_string(),
            line.offset.to_string(),
            line.event_type
        );
    }
    Ok(())
}

/// `bank balances [ACCOUNT]`: catches the balances view up with the log, then reads it.
async fn balances(
    bank: &Bank,
    log: &backend::Log,
    db: &Path,
    account: Option<&str>,
) -> anyhow::Result<()> {
    let (projections, views) = backend::Views::open(bank, log, db).await?;
    let result = async {
        projections
            .get(<bank::projections::Balances as keel_projections::Projection>::NAME)?
            .catch_up()
            .await
            .context("cannot bring the balances view up to date")?;
        let rows = match account {
            Some(id) => vec![views.read_balance(id).await?.with_context(|| {
                format!("account {id} is not in the balances view: it was never opened")
            })?],
            None => views.read_balances().await?,
        };
        print_rows(&rows)
    }
    .await;
    views.close().await;
    result
}

/// Prints balance rows as a table; standard output closed early (`| head`) ends quietly.
fn print_rows(rows: &[bank::projections::AccountRow]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let written = (|| {
        writeln!(
            out,
            "{:<24} {:<24} {:<7} {:>20} {:>8}",
            "ACCOUNT", "OWNER", "STATUS", "BALANCE", "VERSION"
        )?;
        for row in rows {
            writeln!(
                out,
                "{:<24} {:<24} {:<7} {:>20} {:>8}",
                row.id, row.owner, row.status, row.balance, row.version
            )?;
        }
        out.flush()
    })();
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other.context("cannot write the output")?),
    }
}

async fn print_balances(bank: &Bank, accounts: &[&str]) -> anyhow::Result<()> {
    for account in accounts {
        let loaded = bank.account(account).await?;
        println!(
            "  {account}: balance {}, version {}, {}",
            loaded.state.balance(),
            loaded.version,
            loaded.state.status()
        );
    }
    Ok(())
}

/// What one scenario run does, so each run moves the balances by the same amounts.
const ALICE_DEPOSIT: u64 = 100;
const BOB_DEPOSIT: u64 = 50;
const ALICE_WITHDRAWAL: u64 = 30;
const TRANSFER: u64 = 25;
const ALICE_OVERDRAFT: u64 = 100;

/// Command ids of the scenario's deposits into alice start with this; counting them tells
/// which run this is.
const ALICE_DEPOSIT_ID: &str = "scenario-deposit-alice-";

async fn scenario(bank: &Bank, log: &backend::Log, db: &Path) -> anyhow::Result<()> {
    let where_log = log.describe(db);
    let alice = bank.show("alice").await?;
    let run = 1 + alice
        .lines
        .iter()
        .filter(|line| {
            line.command_id
                .as_ref()
                .is_some_and(|id| id.as_str().starts_with(ALICE_DEPOSIT_ID))
        })
        .count();
    println!(
        "scenario run {run} on {where_log}: the log holds {} account events, alice is at version {}",
        log_length(bank).await?,
        alice.version
    );

    for (account, owner, overdraft) in [("alice", "Alice", ALICE_OVERDRAFT), ("bob", "Bob", 0)] {
        let id = CommandId::new(format!("scenario-open-{account}"))?;
        print!("open {account} for {owner} (overdraft limit {overdraft}): ");
        match bank.open(account, owner, overdraft, Some(id)).await {
            Ok(committed) if committed.replayed => {
                println!("already open (command replayed, nothing written)");
            }
            Ok(committed) => println!("opened at version {}", committed.version),
            Err(keel::repository::Error::Rejected(bank::AccountError::AlreadyOpen)) => {
                println!("already open (opened by another command)");
            }
            Err(e) => return Err(refusal(e).context(format!("cannot open {account}"))),
        }
    }

    let fresh = |prefix: &str| CommandId::new(format!("{prefix}{}", CommandId::random()));
    let steps = [
        ("deposit", "into", "alice", ALICE_DEPOSIT, ALICE_DEPOSIT_ID),
        (
            "deposit",
            "into",
            "bob",
            BOB_DEPOSIT,
            "scenario-deposit-bob-",
        ),
        (
            "withdraw",
            "from",
            "alice",
            ALICE_WITHDRAWAL,
            "scenario-withdraw-alice-",
        ),
    ];
    for (verb, preposition, account, amount, id_prefix) in steps {
        // A fresh command id each run: these move the balances every time.
        let id = Some(fresh(id_prefix)?);
        let committed = if verb == "deposit" {
            bank.deposit(account, amount, id).await
        } else {
            bank.withdraw(account, amount, id).await
        };
        let committed = committed
            .map_err(refusal)
            .with_context(|| format!("cannot {verb} {amount} {preposition} {account}"))?;
        let balance = bank.account(account).await?.state.balance();
        println!(
            "{verb} {amount} {preposition} {account}: balance {balance}, version {}",
            committed.version
        );
    }

    let transfer_id = fresh("scenario-transfer-")?;
    let transfer = (bank.transfer("alice", "bob", TRANSFER, &transfer_id).await)
        .map_err(transfer_refusal)
        .context("cannot transfer from alice to bob")?;
    let (alice, bob) = (bank.account("alice").await?, bank.account("bob").await?);
    println!(
        "transfer {TRANSFER} from alice to bob: alice balance {} (version {}), bob balance {} \
         (version {})",
        alice.state.balance(),
        transfer.withdrawn.version,
        bob.state.balance(),
        transfer.deposited.version
    );
    let again = (bank.transfer("alice", "bob", TRANSFER, &transfer_id).await)
        .map_err(transfer_refusal)
        .context("cannot retry the transfer")?;
    println!(
        "the same transfer again (same id): {}",
        if again.replayed() {
            "replayed from the log, nothing moved"
        } else {
            "moved money again (a bug!)"
        }
    );

    let alice = bank.account("alice").await?.state;
    // One more than alice may take: her balance plus her overdraft limit, plus 1.
    let available = i128::from(alice.balance()) + i128::from(alice.overdraft_limit());
    let too_much = u64::try_from(available + 1).unwrap_or(u64::MAX).max(1);
    print!(
        "withdraw {too_much} from alice (balance {}, overdraft limit {}): ",
        alice.balance(),
        alice.overdraft_limit()
    );
    match bank.withdraw("alice", too_much, None).await {
        Ok(_) => println!("accepted (a bug!)"),
        Err(e) => println!("refused: {:#}", refusal(e)),
    }

    println!("balances after run {run}:");
    print_balances(bank, &["alice", "bob"]).await?;

    // The query side: bring the read models up to date and read balances from them.
    let (projections, views) = backend::Views::open(bank, log, db).await?;
    for p in projections.iter() {
        p.catch_up().await?;
    }
    println!(
        "the balances view (a projection of the log, in {}):",
        views.describe(db)
    );
    for row in views.read_balances().await? {
        println!(
            "  {}: balance {}, version {}, {}",
            row.id, row.balance, row.version, row.status
        );
    }
    views.close().await;
    Ok(())
}

/// How many events the `account` topic holds: the sum of its partitions' heads where offsets
/// are dense from 0 (SQLite, PostgreSQL), else a count of the records (Kafka's offsets skip
/// markers).
async fn log_length(bank: &Bank) -> anyhow::Result<u64> {
    let store = bank.accounts().store();
    let topic = Topic::new(Account::KIND)?;
    let Some(info) = store
        .topics()
        .await?
        .into_iter()
        .find(|info| info.topic == topic)
    else {
        return Ok(0);
    };
    let mut total = 0;
    for partition in 0..info.partitions {
        let partition = Partition(partition);
        if store.capabilities().dense_offsets {
            total += store.head(&topic, partition).await?.0;
            continue;
        }
        let mut from = keel::Offset(0);
        loop {
            let page = store.read_partition(&topic, partition, from, 1000).await?;
            let Some(last) = page.last() else { break };
            from = last.offset().next();
            total += page.len() as u64;
        }
    }
    Ok(total)
}
