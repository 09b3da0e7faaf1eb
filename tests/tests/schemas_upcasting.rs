//! Evolving events over stored records: a log written by version 1 of an account's events
//! is read by version 2 of the code, which changed a payload (upcast from version 1),
//! renamed a type (an alias) and removed one (ignored). Aggregates load and projections
//! rebuild from the old records as if they had been written by the new code, on SQLite and
//! in memory; a record newer than the code is refused with an error that says to upgrade.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::guard;
use keel::store::memory::MemoryStore;
use keel::store::sqlite::SqliteStore;
use keel::{
    AppendRequest, DecodeErrorKind, EventStore, ExpectedVersion, NewEvent, Repository, StreamId,
    Topic,
};
use keel_projections::store::memory::{MemoryBatch, MemoryViews};
use keel_projections::{BoxError, Envelope, Projection, Runner};
use tokio_util::sync::CancellationToken;

/// The code as it was: accounts in one currency, withdrawals, and freezing.
pub mod v1 {
    use keel::prelude::*;
    use serde::{Deserialize, Serialize};

    /// An account's events, version 1.
    #[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
    pub enum AccountEvent {
        /// Opened.
        Opened {
            /// Who owns it.
            owner: String,
        },
        /// Money in, in whole units.
        Deposited {
            /// How much.
            amount: u64,
        },
        /// Money out, in whole units.
        Withdrawn {
            /// How much.
            amount: u64,
        },
        /// Frozen (version 2 dropped the idea).
        Frozen,
    }

    /// Never refuses, in fact.
    #[derive(Debug, thiserror::Error)]
    #[error("refused")]
    pub struct Refused;

    /// An account.
    #[derive(Aggregate, Default, Debug)]
    #[aggregate(kind = "account", event = AccountEvent, error = Refused)]
    pub struct Account {
        /// In whole units.
        pub balance: u64,
    }

    impl Apply<AccountEvent> for Account {
        fn apply(&mut self, event: &AccountEvent) {
            match event {
                AccountEvent::Deposited { amount } => self.balance += amount,
                AccountEvent::Withdrawn { amount } => self.balance -= amount,
                AccountEvent::Opened { .. } | AccountEvent::Frozen => {}
            }
        }
    }

    #[keel::commands]
    impl Account {
        /// Opens it.
        pub fn open(&self, owner: String) -> AccountEvent {
            AccountEvent::Opened { owner }
        }
        /// Puts money in.
        pub fn deposit(&self, amount: u64) -> AccountEvent {
            AccountEvent::Deposited { amount }
        }
        /// Takes money out.
        pub fn withdraw(&self, amount: u64) -> AccountEvent {
            AccountEvent::Withdrawn { amount }
        }
        /// Freezes it.
        pub fn freeze(&self) -> AccountEvent {
            AccountEvent::Frozen
        }
    }
}

/// The code now: every account has a currency, amounts are in cents, a withdrawal is
/// called a debit, and freezing is gone.
pub mod v2 {
    use keel::prelude::*;
    use keel::upcast::{Value, json};
    use serde::{Deserialize, Serialize};

    /// An account's events, version 2.
    #[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
    #[event(ignore = ["Frozen"])]
    pub enum AccountEvent {
        /// Opened, now in a currency.
        #[event(version = 2, upcast(from = 1, with = opened_v1))]
        Opened {
            /// Who owns it.
            owner: String,
            /// Its currency.
            currency: String,
        },
        /// Money in, now in cents.
        #[event(version = 2, upcast(from = 1, with = to_cents))]
        Deposited {
            /// How much.
            cents: u64,
        },
        /// Money out (stored as `Withdrawn` before), now in cents.
        #[event(version = 2, aliases = ["Withdrawn"], upcast(from = 1, with = to_cents))]
        Debited {
            /// How much.
            cents: u64,
        },
    }

    /// Accounts opened before currencies were in euros.
    fn opened_v1(mut v1: Value) -> Value {
        v1["currency"] = json!("EUR");
        v1
    }

    /// `{"amount": 5}` (whole units) to `{"cents": 500}`.
    fn to_cents(v1: Value) -> Result<Value, String> {
        let amount = v1["amount"]
            .as_u64()
            .ok_or_else(|| format!("no amount in {v1}"))?;
        Ok(json!({ "cents": amount * 100 }))
    }

    /// Never refuses, in fact.
    #[derive(Debug, thiserror::Error)]
    #[error("refused")]
    pub struct Refused;

    /// An account.
    #[derive(Aggregate, Default, Debug)]
    #[aggregate(kind = "account", event = AccountEvent, error = Refused)]
    pub struct Account {
        /// Who owns it.
        pub owner: String,
        /// Its currency.
        pub currency: String,
        /// Its balance in cents.
        pub cents: u64,
    }

    impl Apply<AccountEvent> for Account {
        fn apply(&mut self, event: &AccountEvent) {
            match event {
                AccountEvent::Opened { owner, currency } => {
                    self.owner.clone_from(owner);
                    self.currency.clone_from(currency);
                }
                AccountEvent::Deposited { cents } => self.cents += cents,
                AccountEvent::Debited { cents } => self.cents -= cents,
            }
        }
    }

    #[keel::commands]
    impl Account {
        /// Puts money in.
        pub fn deposit(&self, cents: u64) -> AccountEvent {
            AccountEvent::Deposited { cents }
        }
    }
}

/// Cents and currency per account, from version 2 events.
struct Balances;

type BalanceView = BTreeMap<String, (String, u64)>;

impl Projection for Balances {
    type Event = v2::AccountEvent;
    type Store = MemoryViews<BalanceView>;
    const NAME: &'static str = "balances";

    fn topics(&self) -> Vec<Topic> {
        vec![Topic::new("account").expect("a valid topic")]
    }

    async fn apply(
        &self,
        view: &mut MemoryBatch<BalanceView>,
        events: &[Envelope<v2::AccountEvent>],
    ) -> Result<(), BoxError> {
        for e in events {
            let row = view.entry(e.id().to_owned()).or_default();
            match &e.event {
                v2::AccountEvent::Opened { currency, .. } => row.0.clone_from(currency),
                v2::AccountEvent::Deposited { cents } => row.1 += cents,
                v2::AccountEvent::Debited { cents } => row.1 -= cents,
            }
        }
        Ok(())
    }
}

/// Writes the old log with version 1 of the code.
async fn write_v1(store: Arc<dyn EventStore>) -> anyhow::Result<()> {
    use v1::AccountCommand as C;
    let repo = Repository::<v1::Account, dyn EventStore>::new(store);
    for (id, owner) in [("ann", "Ann"), ("bob", "Bob")] {
        repo.execute(
            id,
            C::Open {
                owner: owner.into(),
            },
        )
        .await?;
        repo.execute(id, C::Deposit { amount: 7 }).await?;
        repo.execute(id, C::Withdraw { amount: 2 }).await?;
    }
    repo.execute("bob", C::Freeze).await?;
    repo.execute("bob", C::Deposit { amount: 1 }).await?;
    assert_eq!(repo.load("bob").await?.state.balance, 6);
    Ok(())
}

/// Reads the old log with version 2: loads, a new command on top, a projection rebuilt.
async fn read_v2(store: Arc<dyn EventStore>) -> anyhow::Result<()> {
    let repo = Repository::<v2::Account, dyn EventStore>::new(Arc::clone(&store));
    let ann = repo.load("ann").await?;
    assert_eq!(
        (ann.state.owner.as_str(), ann.state.currency.as_str()),
        ("Ann", "EUR")
    );
    assert_eq!((ann.state.cents, ann.version.0), (500, 3));
    // Bob's `Frozen` is skipped; his version still counts it.
    let bob = repo.load("bob").await?;
    assert_eq!((bob.state.cents, bob.version.0), (600, 5));
    let frozen = store
        .read_stream(&StreamId::new("account", "bob")?, keel::StreamVersion(4))
        .await?;
    assert_eq!(frozen[0].event_type, "Frozen");
    assert_eq!(frozen[0].decode_unless_ignored::<v2::AccountEvent>()?, None);
    assert_eq!(
        frozen[1].decode_unless_ignored::<v2::AccountEvent>()?,
        Some(v2::AccountEvent::Deposited { cents: 100 })
    );

    // New events are written at version 2, beside the old ones; both read back.
    repo.execute("ann", v2::AccountCommand::Deposit { cents: 50 })
        .await?;
    let records = store
        .read_stream(&StreamId::new("account", "ann")?, keel::StreamVersion(1))
        .await?;
    let versions: Vec<(&str, u32)> = records
        .iter()
        .map(|r| (r.event_type.as_str(), r.schema_version))
        .collect();
    assert_eq!(
        versions,
        [
            ("Opened", 1),
            ("Deposited", 1),
            ("Withdrawn", 1),
            ("Deposited", 2)
        ]
    );
    let fresh = Repository::<v2::Account, dyn EventStore>::new(Arc::clone(&store));
    assert_eq!(fresh.load("ann").await?.state.cents, 550);
    assert!(matches!(
        records[2].decode::<v2::AccountEvent>()?,
        v2::AccountEvent::Debited { cents: 200 }
    ));

    // A projection rebuilt from the old records sees version 2 events.
    let views = Arc::new(MemoryViews::<BalanceView>::new());
    let runner = Runner::new(Balances, Arc::clone(&store), Arc::clone(&views));
    guard("a rebuild", runner.rebuild(true, CancellationToken::new())).await??;
    let view = views
        .read(Balances::NAME, Clone::clone)
        .await
        .expect("an active view");
    let expected = BTreeMap::from([
        ("ann".to_owned(), ("EUR".to_owned(), 550)),
        ("bob".to_owned(), ("EUR".to_owned(), 600)),
    ]);
    assert_eq!(view, expected);
    Ok(())
}

/// A record written by a newer build is refused, naming the type and version, and saying
/// to upgrade; nothing is guessed.
async fn newer_is_refused(store: Arc<dyn EventStore>) -> anyhow::Result<()> {
    let stream = StreamId::new("account", "cat")?;
    let events = vec![NewEvent::raw(
        "Opened",
        3,
        br#"{"owner":"Cat","currency":"EUR","iban":"X"}"#.to_vec(),
    )];
    store
        .append(AppendRequest::new(
            stream,
            ExpectedVersion::NoStream,
            events,
        ))
        .await?;
    let repo = Repository::<v2::Account, dyn EventStore>::new(store);
    let error = repo
        .load("cat")
        .await
        .expect_err("v3 is newer than the code");
    let keel::repository::Error::Decode(decode) = &error else {
        panic!("not a decode error: {error}");
    };
    assert!(
        matches!(decode.kind, DecodeErrorKind::NewerThanCode { current: 2 }),
        "{decode}"
    );
    let message = error.to_string();
    assert!(
        message.starts_with(
            "cannot decode event type \"Opened\" (schema v3) of stream account/cat version 1"
        ),
        "{message}"
    );
    assert!(
        message.ends_with(
            "it is newer than version 2, the newest this code reads: upgrade this service to a \
             build that knows it before it reads these events"
        ),
        "{message}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_1_records_load_and_rebuild_as_version_2_on_sqlite() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("log.db");
    {
        let store = Arc::new(SqliteStore::open(&path).await?);
        write_v1(store.clone()).await?;
        store.close().await;
    }
    // The new build opens the same file.
    let store = Arc::new(SqliteStore::open(&path).await?);
    read_v2(store.clone()).await?;
    newer_is_refused(store.clone()).await?;
    store.close().await;
    Ok(())
}

#[tokio::test]
async fn version_1_records_load_and_rebuild_as_version_2_in_memory() -> anyhow::Result<()> {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    write_v1(Arc::clone(&store)).await?;
    read_v2(Arc::clone(&store)).await?;
    newer_is_refused(store).await
}

#[test]
fn an_unknown_stored_version_names_the_missing_upcaster() {
    use keel::Event as _;
    // Version 2 knows versions 1 and 2 of `Opened`; a version 0 record has no path.
    let error = v2::AccountEvent::decode("Opened", 0, b"{}").expect_err("no upcaster from 0");
    assert_eq!(
        error.to_string(),
        "cannot decode event type \"Opened\" (schema v0): no upcaster from schema version 0 to \
         the version 2 this code reads: declare `upcast(from = 0, with = ...)` on the variant"
    );
    // The upcaster's own refusal is told apart from a payload that does not decode.
    let refused = v2::AccountEvent::decode("Deposited", 1, br#"{"amount":"x"}"#)
        .expect_err("the upcaster refuses");
    assert!(
        matches!(&refused.kind, DecodeErrorKind::Upcast(e) if e.from == 1),
        "{refused}"
    );
    let source = std::error::Error::source(&refused).map(ToString::to_string);
    assert_eq!(source.as_deref(), Some("no amount in {\"amount\":\"x\"}"));
    // An ignored type says so when decoded directly.
    let ignored = v2::AccountEvent::decode("Frozen", 1, b"null").expect_err("ignored");
    assert!(
        matches!(ignored.kind, DecodeErrorKind::Ignored),
        "{ignored}"
    );
}
