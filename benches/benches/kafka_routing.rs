//! Several instances of a service on the real broker at `KEEL_TEST_KAFKA` (`keel::kafka`),
//! with the bank's accounts over 6 partitions:
//!
//! - `kafka_routing/in_process/1_instance`: 64 tasks sending deposits to their own accounts
//!   through one instance that owns every partition — the commands run in process.
//! - `kafka_routing/routed/{1,2,3}_instances`: the same 64 tasks, spread over 1, 2 or 3
//!   instances sharing the partitions, every command sent through the commands topic to its
//!   owner and answered on the replies topic (`Routed::always_route`).
//! - `kafka_failover/sigkill_to_first_command`: two instances in child processes; one is
//!   killed with SIGKILL and a command for one of its partitions is sent at once to the
//!   other: the time until it is answered (the session timeout is 6 s, the broker's
//!   smallest by default).
//!
//! ```text
//! scripts/kafka.sh run cargo bench -p keel-benches --features kafka --bench kafka_routing
//! ```
#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented function"
)]

use std::collections::BTreeSet;
use std::io::{BufRead as _, Write as _};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bank::{Account, AccountCommand};
use criterion::{Criterion, Throughput, criterion_group};
use keel::kafka::{Routed, Service};
use keel::store::kafka::KafkaStore;
use keel::{CommandId, CommandOptions, Repository};

const PARTITIONS: u32 = 6;
const TASKS: u64 = 64;
const SESSION: Duration = Duration::from_secs(6);

fn bootstrap() -> String {
    std::env::var("KEEL_TEST_KAFKA").unwrap_or_else(|_| {
        panic!(
            "KEEL_TEST_KAFKA is not set: run `scripts/kafka.sh run cargo bench -p keel-benches \
             --features kafka --bench kafka_routing`, which starts a broker"
        )
    })
}

async fn instance(prefix: &str, name: &str) -> (Service, Routed<Account, KafkaStore>) {
    let mut store = KafkaStore::builder(bootstrap())
        .topic_prefix(prefix)
        .group(format!("{prefix}bank"))
        .replication_factor(1);
    // A child process keeps its local state in the parent's directory: a SIGKILL would
    // leave a temporary directory of its own behind.
    if let Ok(dir) = std::env::var(STATE) {
        store = store.state_dir(std::path::Path::new(&dir).join(name));
    }
    let service = Service::builder(store)
        .instance(format!("{prefix}{name}"))
        .session_timeout(SESSION)
        .metrics_every(Duration::ZERO)
        .open()
        .await
        .expect("open a service");
    let accounts = service
        .serve(
            Repository::<Account, _>::new(service.store().clone()),
            PARTITIONS,
        )
        .await
        .expect("serve accounts");
    (service, accounts)
}

/// Waits until the services hold every partition between them, each at least one.
async fn settled(services: &[&Service]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let owned: Vec<BTreeSet<u32>> = services
            .iter()
            .map(|s| s.owned().iter().map(|(_, p)| p.0).collect())
            .collect();
        let total: usize = owned.iter().map(BTreeSet::len).sum();
        let all: BTreeSet<u32> = owned.iter().flatten().copied().collect();
        if total == PARTITIONS as usize
            && all.len() == PARTITIONS as usize
            && owned.iter().all(|o| !o.is_empty())
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the group did not settle: {owned:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Each of the 64 tasks sends `iters` deposits to its own account, through the instance
/// `task % instances`; returns how long they took.
async fn deposits(
    routes: &[Routed<Account, KafkaStore>],
    counter: &Arc<AtomicU64>,
    iters: u64,
) -> Duration {
    let start = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let route = routes[t as usize % routes.len()].clone();
            let counter = Arc::clone(counter);
            tokio::spawn(async move {
                for _ in 0..iters {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let id = CommandId::new(format!("dep-{n}")).expect("id");
                    route
                        .execute_with(
                            &format!("acc-{t}"),
                            AccountCommand::Deposit { amount: 1 },
                            CommandOptions::from(id),
                        )
                        .await
                        .expect("deposit");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    start.elapsed()
}

fn routing(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let run = std::process::id();
    let counter = Arc::new(AtomicU64::new(0));
    let mut group = c.benchmark_group("kafka_routing");
    group
        .measurement_time(Duration::from_secs(10))
        .sample_size(10)
        .throughput(Throughput::Elements(TASKS));
    for instances in 1..=3usize {
        let prefix = format!("bench-routing-{run}-{instances}.");
        let services: Vec<(Service, Routed<Account, KafkaStore>)> = rt.block_on(async {
            let mut services = Vec::new();
            for i in 0..instances {
                services.push(instance(&prefix, &format!("i{i}")).await);
            }
            let refs: Vec<&Service> = services.iter().map(|(s, _)| s).collect();
            settled(&refs).await;
            services
        });
        let routes: Vec<_> = services.iter().map(|(_, r)| r.clone()).collect();
        rt.block_on(async {
            for t in 0..TASKS {
                routes[0]
                    .execute(
                        &format!("acc-{t}"),
                        AccountCommand::Open {
                            owner: format!("owner {t}"),
                            overdraft_limit: 0,
                        },
                    )
                    .await
                    .expect("open");
            }
        });
        if instances == 1 {
            group.bench_function("in_process/1_instance", |b| {
                b.to_async(&rt)
                    .iter_custom(|iters| deposits(&routes, &counter, iters));
            });
        }
        let always: Vec<_> = routes
            .iter()
            .map(|r| r.clone().always_route(true))
            .collect();
        group.bench_function(format!("routed/{instances}_instances"), |b| {
            b.to_async(&rt)
                .iter_custom(|iters| deposits(&always, &counter, iters));
        });
        rt.block_on(async {
            for (service, _) in &services {
                service.close().await;
            }
        });
    }
    group.finish();
}

/// A serving instance in a child process (this bench binary, run again).
struct Child {
    process: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
    owned: BTreeSet<u32>,
    answered: BTreeSet<String>,
}

impl Child {
    fn start(prefix: &str, name: &str, state: &std::path::Path) -> Self {
        let mut process = std::process::Command::new(std::env::current_exe().expect("exe"))
            .env(SERVE, format!("{prefix} {name}"))
            .env(STATE, state)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn an instance");
        let stdin = process.stdin.take().expect("stdin");
        let stdout = process.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            process,
            stdin,
            lines,
            owned: BTreeSet::new(),
            answered: BTreeSet::new(),
        }
    }

    fn take(&mut self, line: &str) {
        if let Some(owned) = line.strip_prefix("OWNED") {
            self.owned = owned
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect();
        } else if let Some(id) = line.strip_prefix("OK ") {
            self.answered.insert(id.to_owned());
        } else if line.starts_with("ERR ") {
            panic!("an instance failed a command: {line}");
        }
    }

    /// Takes every line printed so far.
    fn pump(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.take(&line);
        }
    }

    /// Waits for the answer to command `id`.
    fn answered(&mut self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !self.answered.remove(id) {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).expect("an answer");
            self.take(&line);
        }
    }

    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("send a command");
    }
}

/// Waits until the two instances hold every partition between them, each at least one.
fn wait_settled(a: &mut Child, b: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        a.pump();
        b.pump();
        if !a.owned.is_empty()
            && !b.owned.is_empty()
            && a.owned.len() + b.owned.len() == PARTITIONS as usize
            && a.owned.is_disjoint(&b.owned)
        {
            return;
        }
        assert!(Instant::now() < deadline, "the instances did not settle");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn failover(c: &mut Criterion) {
    let prefix = format!("bench-failover-{}.", std::process::id());
    let mut group = c.benchmark_group("kafka_failover");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1));
    let state = tempfile::tempdir().expect("a directory for the instances' state");
    let mut a = Child::start(&prefix, "a0", state.path());
    let mut b = Child::start(&prefix, "b", state.path());
    let mut generation = 0;
    let mut command = 0;
    group.bench_function("sigkill_to_first_command", |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                wait_settled(&mut a, &mut b);
                let moved = a.owned.clone();
                let account = (0..)
                    .map(|i| format!("k{generation}-{i}"))
                    .find(|id| {
                        moved.contains(
                            &keel::partitioner::partition_for(id.as_bytes(), PARTITIONS).0,
                        )
                    })
                    .expect("an account");
                // Open it first (through b), so the deposit after the kill is a plain one.
                command += 1;
                b.send(&format!("open {account} c{command}"));
                b.answered(&format!("c{command}"));
                let start = Instant::now();
                a.process.kill().expect("SIGKILL");
                let _ = a.process.wait();
                command += 1;
                b.send(&format!("deposit {account} c{command}"));
                b.answered(&format!("c{command}"));
                total += start.elapsed();
                // A new instance joins for the next round.
                generation += 1;
                a = Child::start(&prefix, &format!("a{generation}"), state.path());
            }
            total
        });
    });
    group.finish();
    let _ = a.process.kill();
    let _ = b.process.kill();
}

/// The child's mode: `<prefix> <name>` serves accounts, reading `open|deposit ACCOUNT ID`
/// lines, printing `OWNED <partitions>` and `OK <id>` (or `ERR <id> <error>`).
const SERVE: &str = "KEEL_BENCH_SERVE";
/// Where the children keep their local state.
const STATE: &str = "KEEL_BENCH_STATE";

fn serve(spec: &str) {
    let (prefix, name) = spec.split_once(' ').expect("prefix and name");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (service, accounts) = instance(prefix, name).await;
        let mut ownership = service.ownership();
        tokio::spawn(async move {
            loop {
                let owned: Vec<String> = ownership
                    .borrow_and_update()
                    .iter()
                    .map(|(_, p)| p.to_string())
                    .collect();
                println!("OWNED {}", owned.join(" "));
                if ownership.changed().await.is_err() {
                    return;
                }
            }
        });
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        while let Some(line) = rx.recv().await {
            let mut words = line.split_whitespace();
            let (Some(verb), Some(account), Some(id)) = (words.next(), words.next(), words.next())
            else {
                continue;
            };
            let command = match verb {
                "open" => AccountCommand::Open {
                    owner: account.to_owned(),
                    overdraft_limit: 0,
                },
                _ => AccountCommand::Deposit { amount: 1 },
            };
            let (accounts, id, account) = (accounts.clone(), id.to_owned(), account.to_owned());
            tokio::spawn(async move {
                let options = CommandOptions::from(CommandId::new(&id).expect("id"));
                match accounts.execute_with(&account, command, options).await {
                    Ok(_) => println!("OK {id}"),
                    Err(e) => println!("ERR {id} {e}"),
                }
            });
        }
        service.close().await;
    });
}

criterion_group!(benches, routing, failover);

fn main() {
    if let Ok(spec) = std::env::var(SERVE) {
        serve(&spec);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
