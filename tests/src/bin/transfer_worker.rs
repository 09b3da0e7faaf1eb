//! A child process for the atomic-transfer crash test: runs transfers between four accounts
//! of a bank on a SQLite file from several tasks, printing `ACK <transfer id>` for each
//! transfer that returned, until it is killed.
//!
//! Usage: `transfer_worker DB_PATH ROUND`. The accounts `a0`…`a3` are opened (with 1,000
//! each and no overdraft) by round 0; transfer ids are `r{round}-t{task}-{i}`.

use std::io::Write;
use std::sync::Arc;

use bank::{Bank, TransferError};
use keel::CommandId;

const TASKS: u64 = 4;
const ACCOUNTS: u64 = 4;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: transfer_worker DB ROUND"))?;
    let round: u64 = args.next().unwrap_or_default().parse()?;
    let bank = Bank::open_sqlite(&path).await?;
    for a in 0..ACCOUNTS {
        let id = CommandId::new(format!("open-a{a}"))?;
        bank.open(&format!("a{a}"), "Owner", 0, Some(id)).await?;
        let id = CommandId::new(format!("fund-a{a}"))?;
        bank.deposit(&format!("a{a}"), 1_000, Some(id)).await?;
    }
    println!("READY");
    let stdout = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (bank, stdout) = (bank.clone(), Arc::clone(&stdout));
        tasks.push(tokio::spawn(async move {
            for i in 0u64.. {
                let from = format!("a{}", (task + i) % ACCOUNTS);
                let to = format!("a{}", (task + i * 3 + 1) % ACCOUNTS);
                if from == to {
                    continue;
                }
                let id = CommandId::new(format!("r{round}-t{task}-{i}"))?;
                let amount = 1 + (task * 31 + i * 17) % 400;
                match bank.transfer(&from, &to, amount, &id).await {
                    Ok(_) | Err(TransferError::NothingMoved { .. }) => {
                        let mut out = stdout
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        writeln!(out, "ACK {id}")?;
                        out.flush()?;
                    }
                    Err(e) => return Err(anyhow::Error::new(e)),
                }
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}
