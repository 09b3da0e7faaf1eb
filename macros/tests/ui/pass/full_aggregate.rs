//! A whole aggregate: events with renamed type names and versions, the state, and command
//! handlers of every return shape, one of them async with a context. `main` checks the
//! generated code at run time.

#![deny(warnings)]

use keel::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[event(version = 2)]
pub enum AccountEvent {
    Opened {
        owner: String,
    },
    #[event(name = "account.deposited", version = 3)]
    Deposited {
        amount: u64,
    },
    #[serde(rename = "withdrawn")]
    Withdrawn(u64),
    #[event(version = 1)]
    Reserved(u32, String),
    Closed,
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum AccountError {
    #[error("the account is closed")]
    Closed,
    #[error("the balance is too low")]
    Insufficient,
    #[error("the inventory refused: {0}")]
    Inventory(String),
}

#[derive(Debug, thiserror::Error)]
#[error("only {left} left")]
pub struct OutOfStock {
    left: u32,
}

impl From<OutOfStock> for AccountError {
    fn from(e: OutOfStock) -> Self {
        AccountError::Inventory(e.to_string())
    }
}

/// The services the async handler reads.
pub struct Services {
    stock: u32,
}

#[derive(Aggregate, Default, Debug)]
#[aggregate(kind = "account", event = AccountEvent, error = AccountError)]
pub struct Account {
    open: bool,
    closed: bool,
    balance: u64,
}

impl Apply<AccountEvent> for Account {
    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Opened { .. } => self.open = true,
            AccountEvent::Deposited { amount } => self.balance += amount,
            AccountEvent::Withdrawn(amount) => self.balance -= amount,
            AccountEvent::Reserved(..) => {}
            AccountEvent::Closed => self.closed = true,
        }
    }
}

#[keel::commands]
impl Account {
    /// Opens the account for `owner`.
    pub fn open(&self, owner: String) -> AccountEvent {
        AccountEvent::Opened { owner }
    }

    /// Puts money in.
    ///
    /// Refused once the account is closed.
    pub fn deposit(&self, amount: u64) -> Result<AccountEvent, AccountError> {
        self.ensure_open()?;
        Ok(AccountEvent::Deposited { amount })
    }

    pub fn withdraw_all(&self) -> Vec<AccountEvent> {
        if self.balance == 0 {
            Vec::new()
        } else {
            vec![AccountEvent::Withdrawn(self.balance)]
        }
    }

    /// Moves `amount` out, twice over if `split`.
    pub fn pay_out(&self, amount: u64, split: bool) -> Result<Vec<AccountEvent>, AccountError> {
        if amount > self.balance {
            return Err(AccountError::Insufficient);
        }
        Ok(if split {
            vec![
                AccountEvent::Withdrawn(amount / 2),
                AccountEvent::Withdrawn(amount - amount / 2),
            ]
        } else {
            vec![AccountEvent::Withdrawn(amount)]
        })
    }

    /// Reserves stock, asking the inventory service.
    pub async fn reserve(
        &self,
        item: String,
        services: &Services,
        mut qty: u32,
    ) -> Result<AccountEvent, OutOfStock> {
        tokio::task::yield_now().await;
        if qty > services.stock {
            return Err(OutOfStock {
                left: services.stock,
            });
        }
        qty += 0;
        Ok(AccountEvent::Reserved(qty, item))
    }

    pub fn close(&self) -> AccountEvent {
        AccountEvent::Closed
    }

    pub(crate) fn ensure_open(&self) -> Result<(), AccountError> {
        if self.closed {
            Err(AccountError::Closed)
        } else {
            Ok(())
        }
    }
}

fn context_of<A: Handle>(_: &A) -> &'static str {
    std::any::type_name::<A::Context>()
}

fn main() {
    events();
    commands();
    handlers();
}

fn events() {
    assert_eq!(
        AccountEvent::EVENT_TYPES,
        &[
            "Opened",
            "account.deposited",
            "Withdrawn",
            "Reserved",
            "Closed"
        ]
    );
    let cases = [
        (
            AccountEvent::Opened {
                owner: "ada".into(),
            },
            "Opened",
            2,
            r#"{"owner":"ada"}"#,
        ),
        (
            AccountEvent::Deposited { amount: 5 },
            "account.deposited",
            3,
            r#"{"amount":5}"#,
        ),
        (AccountEvent::Withdrawn(4), "Withdrawn", 2, "4"),
        (
            AccountEvent::Reserved(1, "x".into()),
            "Reserved",
            1,
            r#"[1,"x"]"#,
        ),
        (AccountEvent::Closed, "Closed", 2, "null"),
    ];
    for (event, event_type, version, json) in cases {
        assert_eq!(event.event_type(), event_type);
        assert_eq!(event.schema_version(), version);
        let bytes = event.encode().expect("encodes");
        assert_eq!(std::str::from_utf8(&bytes).expect("utf-8"), json);
        let back = AccountEvent::decode(event_type, version, &bytes).expect("decodes");
        assert_eq!(back, event);
    }
    let unknown = AccountEvent::decode("Deposited", 3, b"{}").expect_err("not a type name");
    assert_eq!(unknown.event_type, "Deposited");
    assert!(matches!(
        unknown.kind,
        keel::DecodeErrorKind::UnknownType { .. }
    ));
    let bad = AccountEvent::decode("Opened", 2, b"{}").expect_err("owner is missing");
    assert!(matches!(bad.kind, keel::DecodeErrorKind::Payload(_)));
    assert_eq!(<Account as Aggregate>::KIND, "account");
}

fn commands() {
    let json = r#"{"command":"deposit","amount":5}"#;
    let command: AccountCommand = serde_json::from_str(json).expect("a command");
    assert!(matches!(command, AccountCommand::Deposit { amount: 5 }));
    assert_eq!(command.name(), "deposit");
    assert_eq!(serde_json::to_string(&command).expect("serialises"), json);

    let close: AccountCommand = serde_json::from_str(r#"{"command":"close"}"#).expect("unit");
    assert_eq!(close.name(), "close");
    let withdraw = AccountCommand::WithdrawAll;
    assert_eq!(withdraw.name(), "withdraw_all");
    assert_eq!(
        serde_json::to_string(&withdraw.clone()).expect("serialises"),
        r#"{"command":"withdraw_all"}"#
    );
    let reserve = AccountCommand::Reserve {
        item: "bolt".into(),
        qty: 2,
    };
    assert_eq!(
        serde_json::to_string(&reserve).expect("serialises"),
        r#"{"command":"reserve","item":"bolt","qty":2}"#
    );
    assert!(format!("{reserve:?}").starts_with("Reserve"));
    assert!(serde_json::from_str::<AccountCommand>(r#"{"command":"ensure_open"}"#).is_err());

    let schema = serde_json::to_string(&schemars::schema_for!(AccountCommand)).expect("schema");
    for name in [
        "open",
        "deposit",
        "withdraw_all",
        "pay_out",
        "reserve",
        "close",
        "Puts money in.",
    ] {
        assert!(schema.contains(name), "{name} missing from {schema}");
    }
}

/// Decides `command` against `account`, through the generated `Handle` impl.
async fn run(
    account: &Account,
    services: &Services,
    command: AccountCommand,
) -> Result<Vec<AccountEvent>, AccountError> {
    account.handle(command, services).await
}

fn handlers() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let services = Services { stock: 3 };
        let mut account = Account::default();
        assert_eq!(context_of(&account), std::any::type_name::<Services>());

        let opened = run(
            &account,
            &services,
            AccountCommand::Open {
                owner: "ada".into(),
            },
        )
        .await;
        assert_eq!(
            opened,
            Ok(vec![AccountEvent::Opened {
                owner: "ada".into()
            }])
        );
        account.apply_all(opened.as_ref().expect("opened"));

        let deposited = run(&account, &services, AccountCommand::Deposit { amount: 10 }).await;
        assert_eq!(deposited, Ok(vec![AccountEvent::Deposited { amount: 10 }]));
        account.apply_all(deposited.as_ref().expect("deposited"));
        assert_eq!(account.balance, 10);

        let paid = run(
            &account,
            &services,
            AccountCommand::PayOut {
                amount: 4,
                split: true,
            },
        )
        .await;
        assert_eq!(
            paid,
            Ok(vec![AccountEvent::Withdrawn(2), AccountEvent::Withdrawn(2)])
        );
        let too_much = run(
            &account,
            &services,
            AccountCommand::PayOut {
                amount: 11,
                split: false,
            },
        )
        .await;
        assert_eq!(too_much, Err(AccountError::Insufficient));

        let reserved = run(
            &account,
            &services,
            AccountCommand::Reserve {
                item: "bolt".into(),
                qty: 2,
            },
        )
        .await;
        assert_eq!(reserved, Ok(vec![AccountEvent::Reserved(2, "bolt".into())]));
        let refused = run(
            &account,
            &services,
            AccountCommand::Reserve {
                item: "nut".into(),
                qty: 9,
            },
        )
        .await;
        assert_eq!(refused, Err(AccountError::Inventory("only 3 left".into())));

        let all = run(&account, &services, AccountCommand::WithdrawAll).await;
        assert_eq!(all, Ok(vec![AccountEvent::Withdrawn(10)]));

        account.apply_event(&AccountEvent::Closed);
        let late = run(&account, &services, AccountCommand::Deposit { amount: 1 }).await;
        assert_eq!(late, Err(AccountError::Closed));
        assert_eq!(
            run(&account, &services, AccountCommand::Close).await,
            Ok(vec![AccountEvent::Closed])
        );
    });
}
