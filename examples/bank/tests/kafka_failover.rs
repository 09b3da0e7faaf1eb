//! Failover on the real broker. Two `bank serve` processes share the account topic (6
//! partitions) through a consumer group; a driver sends a stream of deposits, each with its
//! own command id, to both. One process is killed with SIGKILL in the middle: the other takes
//! its partitions over within the session timeout, and a command sent meanwhile comes back
//! with a typed timeout within the caller's timeout. Then a third process joins and takes
//! partitions over while the commands go on (and `bank health` names each partition's owner).
//! A command whose process died, or that timed out, is sent again with the same command id.
//! At the end every command was applied exactly once: each account's balance is the sum of
//! its acknowledged deposits, its versions are dense, and each command id wrote one event.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel::store::kafka::KafkaStore;
use keel::{EventStore, Offset, Partition, StreamVersion, Topic};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::{mpsc, oneshot, watch};

const PARTITIONS: u32 = 6;
const ACCOUNTS: usize = 24;
/// Commands in flight at once.
const CONCURRENCY: usize = 12;
/// Acknowledged commands per phase: before the kill, after it, after the third joins.
const PER_PHASE: u64 = 120;

fn bootstrap() -> String {
    match std::env::var("KEEL_TEST_KAFKA") {
        Ok(v) if !v.trim().is_empty() => v,
        _ => panic!(
            "KEEL_TEST_KAFKA is not set: this test needs a Kafka broker. Run it through \
             `scripts/kafka.sh run cargo test ...` (or `bash scripts/test.sh`), which starts one."
        ),
    }
}

/// The Kafka partition of an account, as the bank's store puts it.
fn partition_of(account: &str) -> u32 {
    keel::partitioner::partition_for(account.as_bytes(), PARTITIONS).0
}

/// One `bank serve` process.
struct Instance {
    name: String,
    child: Mutex<Option<Child>>,
    lines: mpsc::UnboundedSender<String>,
    owned: watch::Receiver<BTreeSet<u32>>,
    alive: watch::Receiver<bool>,
    waiting: Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>,
}

impl Instance {
    fn start(dir: &std::path::Path, prefix: &str, name: &str) -> anyhow::Result<Arc<Self>> {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_bank"))
            .arg("--kafka")
            .arg(bootstrap())
            .arg("--kafka-group")
            .arg(format!("{prefix}bank"))
            .arg("--kafka-topic-prefix")
            .arg(prefix)
            .arg("--db")
            .arg(dir.join(format!("{name}.db")))
            .args(["serve", "--instance", name, "--session-timeout-ms", "6000"])
            .arg("--partitions")
            .arg(PARTITIONS.to_string())
            .env_remove("BANK_DB")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let (lines, mut to_write) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            let mut stdin: ChildStdin = stdin;
            while let Some(line) = to_write.recv().await {
                if stdin
                    .write_all(format!("{line}\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
            }
            // The sender is gone: end of input closes the instance.
        });
        let (owned_tx, owned) = watch::channel(BTreeSet::new());
        let (alive_tx, alive) = watch::channel(true);
        let waiting: Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>> = Arc::default();
        {
            let waiting = Arc::clone(&waiting);
            let name = name.to_owned();
            tokio::spawn(async move {
                let mut out = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = out.next_line().await {
                    let Ok(value) = serde_json::from_str::<Value>(&line) else {
                        eprintln!("{name}: not JSON: {line}");
                        continue;
                    };
                    if let Some(owned) = value.get("owned").and_then(Value::as_array) {
                        let set = owned
                            .iter()
                            .filter_map(Value::as_u64)
                            .map(|p| p as u32)
                            .collect();
                        let _ = owned_tx.send(set);
                    } else if let Some(id) = value.get("id").and_then(Value::as_str) {
                        let tx = waiting.lock().expect("lock").remove(id);
                        if let Some(tx) = tx {
                            let _ = tx.send(value);
                        }
                    }
                }
                // The process ended: nobody waiting here gets an answer.
                waiting.lock().expect("lock").clear();
                let _ = alive_tx.send(false);
            });
        }
        Ok(Arc::new(Self {
            name: name.to_owned(),
            child: Mutex::new(Some(child)),
            lines,
            owned,
            alive,
            waiting,
        }))
    }

    fn is_alive(&self) -> bool {
        *self.alive.borrow()
    }

    /// Sends a command; its answer, or `None` when the process died first.
    async fn send(&self, command: Value) -> Option<Value> {
        let id = command.get("id")?.as_str()?.to_owned();
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().expect("lock").insert(id, tx);
        if !self.is_alive() || self.lines.send(command.to_string()).is_err() {
            return None;
        }
        rx.await.ok()
    }

    /// Waits until this instance serves partitions for which `ok` holds.
    async fn wait_owned(
        &self,
        within: Duration,
        ok: impl Fn(&BTreeSet<u32>) -> bool,
    ) -> anyhow::Result<BTreeSet<u32>> {
        let mut owned = self.owned.clone();
        let found = tokio::time::timeout(within, owned.wait_for(|o| ok(o))).await;
        match found {
            Ok(Ok(set)) => Ok(set.clone()),
            _ => anyhow::bail!(
                "{} did not reach the expected partitions within {within:?}: it serves {:?}",
                self.name,
                *self.owned.borrow()
            ),
        }
    }

    fn kill(&self) -> anyhow::Result<()> {
        let mut child = self.child.lock().expect("lock");
        if let Some(child) = child.as_mut() {
            child.start_kill()?;
        }
        Ok(())
    }

    /// Closes standard input and waits for a clean exit.
    async fn close(self: Arc<Self>) -> anyhow::Result<()> {
        let child = self.child.lock().expect("lock").take();
        let Ok(this) = Arc::try_unwrap(self) else {
            anyhow::bail!("an instance is still in use");
        };
        drop(this.lines);
        if let Some(mut child) = child {
            let status = tokio::time::timeout(Duration::from_secs(90), child.wait()).await??;
            anyhow::ensure!(status.success(), "{} exited with {status}", this.name);
        }
        Ok(())
    }
}

/// The instances commands go to.
#[derive(Default)]
struct Fleet {
    live: Mutex<Vec<Arc<Instance>>>,
}

impl Fleet {
    fn pick(&self, n: u64) -> Option<Arc<Instance>> {
        let live: Vec<_> = self
            .live
            .lock()
            .expect("lock")
            .iter()
            .filter(|i| i.is_alive())
            .cloned()
            .collect();
        if live.is_empty() {
            return None;
        }
        live.get(n as usize % live.len()).cloned()
    }
}

/// When an instance was killed, and the partitions it served.
type Killed = (Instant, BTreeSet<u32>);

/// What the driver saw acknowledged: command id → (account, amount).
#[derive(Default)]
struct Acked {
    deposits: Mutex<BTreeMap<String, (String, u64)>>,
    count: AtomicU64,
    resent: AtomicU64,
    /// How long after the kill the first command sent after it to a moved partition was
    /// acknowledged.
    first_moved: Mutex<Option<Duration>>,
}

/// Sends a command until an instance acknowledges it, again with the same id after a death
/// or a timeout (up to `deadline`). Returns the acknowledgement.
async fn until_acked(
    fleet: &Fleet,
    acked: &Acked,
    n: u64,
    command: Value,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut attempt = n;
    loop {
        anyhow::ensure!(Instant::now() < deadline, "{command} never acknowledged");
        let Some(instance) = fleet.pick(attempt) else {
            anyhow::bail!("no instance is alive");
        };
        attempt += 1;
        match instance.send(command.clone()).await {
            Some(answer) if answer.get("ok").is_some() => return Ok(answer),
            Some(answer) if answer.get("timeout").is_some() => {
                acked.resent.fetch_add(1, Ordering::Relaxed);
            }
            Some(answer) => anyhow::bail!("{command} failed: {answer}"),
            None => {
                acked.resent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_instance_s_partitions_move_and_every_command_is_applied_once() -> anyhow::Result<()>
{
    let prefix = format!("failover-{}.", uuid_like());
    let dir = tempfile::tempdir()?;
    let a = Instance::start(dir.path(), &prefix, "a")?;
    let b = Instance::start(dir.path(), &prefix, "b")?;
    let fleet = Arc::new(Fleet::default());
    fleet
        .live
        .lock()
        .expect("lock")
        .extend([Arc::clone(&a), Arc::clone(&b)]);
    // The two settle on 6 partitions between them.
    let owned = settled(&[&a, &b]).await?;
    let (of_a, of_b) = (&owned[0], &owned[1]);
    eprintln!("a serves {of_a:?}, b serves {of_b:?}");

    let accounts: Vec<String> = (0..ACCOUNTS).map(|i| format!("acc-{i}")).collect();
    let acked = Arc::new(Acked::default());
    for (i, account) in accounts.iter().enumerate() {
        let open = json!({"id": format!("open-{account}"), "account": account,
            "command": "open", "owner": format!("Owner {i}"), "overdraft_limit": 0});
        until_acked(&fleet, &acked, i as u64, open).await?;
    }

    // The workload: deposits with fresh ids, CONCURRENCY at a time, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let killed_at: Arc<Mutex<Option<Killed>>> = Arc::default();
    let workload = {
        let (fleet, acked, stop, accounts, killed_at) = (
            Arc::clone(&fleet),
            Arc::clone(&acked),
            Arc::clone(&stop),
            accounts.clone(),
            Arc::clone(&killed_at),
        );
        tokio::spawn(async move {
            let mut running = tokio::task::JoinSet::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Acquire) {
                while running.len() < CONCURRENCY {
                    let account = accounts[(n as usize * 7) % accounts.len()].clone();
                    let amount = n % 9 + 1;
                    let id = format!("dep-{n}");
                    let command = json!({"id": id, "account": account, "command": "deposit", "amount": amount});
                    let (fleet, acked, killed_at) = (
                        Arc::clone(&fleet),
                        Arc::clone(&acked),
                        Arc::clone(&killed_at),
                    );
                    running.spawn(async move {
                        let sent = Instant::now();
                        until_acked(&fleet, &acked, n, command).await?;
                        acked
                            .deposits
                            .lock()
                            .expect("lock")
                            .insert(id, (account.clone(), amount));
                        acked.count.fetch_add(1, Ordering::AcqRel);
                        let moved = killed_at.lock().expect("lock").clone();
                        if let Some((at, partitions)) = moved
                            && sent > at
                            && partitions.contains(&partition_of(&account))
                        {
                            let mut first = acked.first_moved.lock().expect("lock");
                            first.get_or_insert(at.elapsed());
                        }
                        anyhow::Ok(())
                    });
                    n += 1;
                }
                if let Some(done) = running.join_next().await {
                    done??;
                }
            }
            while let Some(done) = running.join_next().await {
                done??;
            }
            anyhow::Ok(())
        })
    };
    let wait_acks = |at_least: u64| {
        let acked = Arc::clone(&acked);
        async move {
            let deadline = Instant::now() + Duration::from_secs(180);
            while acked.count.load(Ordering::Acquire) < at_least {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "the workload stalled at {} acknowledgements",
                    acked.count.load(Ordering::Acquire)
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::Ok(())
        }
    };

    // Phase 1: both serve. Then SIGKILL a, mid-stream.
    wait_acks(PER_PHASE).await?;
    let moved = a.owned.borrow().clone();
    let kill_time = Instant::now();
    *killed_at.lock().expect("lock") = Some((kill_time, moved.clone()));
    a.kill()?;
    eprintln!(
        "killed a (serving {moved:?}) after {} acknowledgements",
        acked.count.load(Ordering::Acquire)
    );

    // A command for a moved partition, sent now with a short timeout, comes back as a typed
    // timeout within it: nobody owns the partition until the session timeout passes.
    let probe_account = accounts
        .iter()
        .find(|acc| moved.contains(&partition_of(acc)))
        .ok_or_else(|| anyhow::anyhow!("no account on a's partitions"))?
        .clone();
    let probe = json!({"id": "probe", "account": probe_account, "command": "deposit", "amount": 1000, "timeout_ms": 1000});
    let sent = Instant::now();
    let answer = b
        .send(probe.clone())
        .await
        .ok_or_else(|| anyhow::anyhow!("b died"))?;
    let waited = sent.elapsed();
    assert_eq!(answer.get("timeout"), Some(&Value::Bool(true)), "{answer}");
    assert!(
        waited < Duration::from_secs(3),
        "the timeout came after {waited:?}, not within the 1 s asked (plus slack)"
    );

    // Phase 2: b takes a's partitions over within the session timeout (plus the rebalance).
    b.wait_owned(Duration::from_secs(60), |o| o.len() == PARTITIONS as usize)
        .await?;
    let took_over = kill_time.elapsed();
    fleet.live.lock().expect("lock").retain(|i| i.name != "a");
    let probe =
        json!({"id": "probe", "account": probe_account, "command": "deposit", "amount": 1000});
    until_acked(&fleet, &acked, 0, probe).await?;
    acked
        .deposits
        .lock()
        .expect("lock")
        .insert("probe".into(), (probe_account.clone(), 1000));
    let phase_two = acked.count.load(Ordering::Acquire) + PER_PHASE;
    wait_acks(phase_two).await?;
    eprintln!(
        "b serves every partition {took_over:?} after the kill; the first command on a moved partition was acknowledged after {:?}",
        *acked.first_moved.lock().expect("lock")
    );
    assert!(
        took_over < Duration::from_secs(6 + 20),
        "b took over {took_over:?} after the kill: the session timeout is 6 s"
    );

    // Phase 3: c joins and takes partitions over while the commands go on.
    let c = Instance::start(dir.path(), &prefix, "c")?;
    fleet.live.lock().expect("lock").push(Arc::clone(&c));
    let owned = settled(&[&b, &c]).await?;
    let (of_b, of_c) = (&owned[0], &owned[1]);
    eprintln!("c joined: b serves {of_b:?}, c serves {of_c:?}");
    // `bank health` names each partition's owner, as the group sees it.
    let health = std::process::Command::new(env!("CARGO_BIN_EXE_bank"))
        .arg("--kafka")
        .arg(bootstrap())
        .arg("--kafka-group")
        .arg(format!("{prefix}bank"))
        .arg("--kafka-topic-prefix")
        .arg(&prefix)
        .arg("--db")
        .arg(dir.path().join("health.db"))
        .arg("health")
        .output()?;
    let table = String::from_utf8_lossy(&health.stdout);
    assert!(health.status.success(), "bank health: {table}");
    for line in table.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (partition, owner): (u32, &str) = (cols[1].parse()?, cols[2]);
        let expected = if of_b.contains(&partition) { "b" } else { "c" };
        assert_eq!(owner, expected, "bank health: {table}");
    }
    assert_eq!(table.lines().count(), PARTITIONS as usize + 1, "{table}");
    let phase_three = acked.count.load(Ordering::Acquire) + PER_PHASE;
    wait_acks(phase_three).await?;
    stop.store(true, Ordering::Release);
    workload.await??;
    eprintln!(
        "{} commands acknowledged, {} sent again after a death or a timeout",
        acked.count.load(Ordering::Acquire),
        acked.resent.load(Ordering::Relaxed)
    );

    // Close b and c cleanly, and check the log with a fresh store.
    fleet.live.lock().expect("lock").clear();
    drop(a);
    b.close().await?;
    c.close().await?;
    let store = KafkaStore::builder(bootstrap())
        .topic_prefix(&prefix)
        .group(format!("{prefix}verify"))
        .replication_factor(1)
        .open()
        .await?;
    let topic = Topic::new("account")?;
    let mut versions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut balances: BTreeMap<String, i64> = BTreeMap::new();
    let mut per_command: HashMap<String, usize> = HashMap::new();
    for p in 0..PARTITIONS {
        let mut from = Offset(0);
        loop {
            let page = store
                .read_partition(&topic, Partition(p), from, 1000)
                .await?;
            let Some(last) = page.last() else { break };
            from = last.offset().next();
            for r in page {
                let account = r.stream.id().to_owned();
                versions
                    .entry(account.clone())
                    .or_default()
                    .push(r.version.0);
                if let Some(id) = &r.command_id {
                    *per_command.entry(id.to_string()).or_default() += 1;
                }
                let event: bank::AccountEvent = r.decode()?;
                if let bank::AccountEvent::Deposited { amount } = event {
                    *balances.entry(account).or_default() += i64::try_from(amount)?;
                }
            }
        }
    }
    for (account, v) in &versions {
        assert_eq!(
            *v,
            (1..=v.len() as u64).collect::<Vec<_>>(),
            "{account}: versions dense"
        );
    }
    for (id, n) in &per_command {
        assert_eq!(*n, 1, "command {id} wrote {n} events");
    }
    let deposits = acked.deposits.lock().expect("lock").clone();
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for (id, (account, amount)) in &deposits {
        assert!(
            per_command.contains_key(id),
            "acknowledged {id} is in the log"
        );
        *expected.entry(account.clone()).or_default() += i64::try_from(*amount)?;
    }
    let written = per_command
        .keys()
        .filter(|id| id.starts_with("dep-") || *id == "probe")
        .count();
    assert_eq!(
        written,
        deposits.len(),
        "every deposit in the log was acknowledged"
    );
    assert_eq!(
        balances, expected,
        "balances = the sum of acknowledged deposits"
    );
    for account in &accounts {
        let stream = keel::StreamId::new("account", account)?;
        assert_eq!(
            store.stream_version(&stream).await?,
            StreamVersion(versions.get(account).map_or(0, |v| v.len() as u64))
        );
    }
    store.close().await;
    Ok(())
}

/// Waits until the instances serve every partition between them, each at least one, none
/// twice; returns what each serves.
async fn settled(instances: &[&Instance]) -> anyhow::Result<Vec<BTreeSet<u32>>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut watches: Vec<_> = instances.iter().map(|i| i.owned.clone()).collect();
    loop {
        let owned: Vec<BTreeSet<u32>> = watches
            .iter_mut()
            .map(|w| w.borrow_and_update().clone())
            .collect();
        let all: BTreeSet<u32> = owned.iter().flatten().copied().collect();
        let total: usize = owned.iter().map(BTreeSet::len).sum();
        if all.len() == PARTITIONS as usize
            && total == PARTITIONS as usize
            && owned.iter().all(|o| !o.is_empty())
        {
            return Ok(owned);
        }
        let changed =
            futures::future::select_all(watches.iter_mut().map(|w| Box::pin(w.changed())));
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            anyhow::bail!("the instances did not settle within 90 s: {owned:?}");
        }
    }
}

fn uuid_like() -> String {
    use std::hash::{BuildHasher, Hasher};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{nanos:x}{:08x}", random as u32)
}
