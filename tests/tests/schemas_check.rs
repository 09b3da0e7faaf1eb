//! The schema compatibility check, change by change: the schemas of a base version of an
//! account's events are exported, then each variation of the code is checked against them
//! under each mode. Every breaking change fails with a message naming the aggregate, the
//! event type, the field and the rule; additive changes, and a bumped version with an
//! upcaster, pass backward.

use keel::schemas::{CheckReport, Compatibility, Direction, Registry, Rule};

/// Versions of one aggregate's events, each module standing for the code at one time. The
/// commands stay the same, so only the events differ.
#[allow(missing_docs, reason = "each module is the same type at another time")]
pub mod versions {
    /// The aggregate around an event enum: no state, one command.
    macro_rules! account {
        () => {
            #[derive(Debug, thiserror::Error)]
            #[error("refused")]
            pub struct Refused;

            #[derive(keel::Aggregate, Default)]
            #[aggregate(kind = "account", event = AccountEvent, error = Refused)]
            pub struct Account;

            impl keel::Apply<AccountEvent> for Account {
                fn apply(&mut self, _: &AccountEvent) {}
            }

            #[keel::commands]
            impl Account {
                pub fn close(&self) -> AccountEvent {
                    AccountEvent::Closed
                }
            }

            pub fn registry() -> keel::schemas::Registry {
                keel::schemas::Registry::new().aggregate::<Account>()
            }
        };
    }

    pub mod base {
        use keel::prelude::*;
        use serde::{Deserialize, Serialize};

        #[derive(Event, Serialize, Deserialize, JsonSchema)]
        pub enum AccountEvent {
            Opened { owner: String, overdraft: u32 },
            Deposited { amount: u64 },
            Closed,
        }
        account!();
    }

    /// New optional fields (a default, an `Option`), a wider integer, a new event type.
    pub mod additive {
        use keel::prelude::*;
        use serde::{Deserialize, Serialize};

        #[derive(Event, Serialize, Deserialize, JsonSchema)]
        pub enum AccountEvent {
            Opened {
                owner: String,
                overdraft: u64,
                #[serde(default)]
                note: String,
                nickname: Option<String>,
            },
            Deposited {
                amount: u64,
            },
            Closed,
            Renamed {
                owner: String,
            },
        }
        account!();
    }

    pub mod removed_required_field {
        use keel::prelude::*;
        use serde::{Deserialize, Serialize};

        #[derive(Event, Serialize, Deserialize, JsonSchema)]
        pub enum AccountEvent {
            Opened { owner: String },
            Deposited { amount: u64 },
            Closed,
        }
        account!();
    }

    pub mod renamed_required_field {
        use keel::prelude::*;
        use serde::{Deserialize, Serialize};

        #[derive(Event, Serialize, Deserialize, JsonSchema)]
        pub enum AccountEvent {
            Opened { holder: String, overdraft: u32 },
            Deposited { amount: u64 },
            Closed,
        }
        account!();
    }

    pub mod changed_type {
        use keel::prelude::*;
        use serde::{Deserialize, Serialize};

        #[derive(Event, Serialize, Deserialize, JsonSchema)]
        pub enum AccountEvent {
            Opened { owner: String, overdraft: u32 },
            Deposited { amount: String },
            Closed,
        }
        account!();
    }

    pub mod new_required_field {
        use keel::prelude::*;
        use serde::{Deserialize, Serialize};

        #[derive(Event, Serialize, Deserialize, JsonSchema)]
        pub enum AccountEvent {
            Opened { owner: String, overdraft: u32 },
            Deposited { amount: u64, currency: String },
            Closed,
        }
        account!();
    }

    /// `Opened` is gone; the aggregate still has a `Closed` for its command.
    pub mod removed_variant {
        use keel::prelude::*;
        use serde::{Deserialize, Serialize};

        #[derive(Event, Serialize, Deserialize, JsonSchema)]
        pub enum AccountEvent {
            Deposited { amount: u64 },
            Closed,
        }
        account!();
    }

    /// `Opened` is gone, declared ignored: its records are skipped.
    pub mod removed_variant_ignored {
        use keel::prelude::*;
        use serde::{Deserialize, Serialize};

        #[derive(Event, Serialize, Deserialize, JsonSchema)]
        #[event(ignore = ["Opened"])]
        pub enum AccountEvent {
            Deposited { amount: u64 },
            Closed,
        }
        account!();
    }

    /// `Opened` is now `Created`, which remembers its old name.
    pub mod renamed_type {
        use keel::prelude::*;
        use serde::{Deserialize, Serialize};

        #[derive(Event, Serialize, Deserialize, JsonSchema)]
        pub enum AccountEvent {
            #[event(aliases = ["Opened"])]
            Created {
                owner: String,
                overdraft: u32,
            },
            Deposited {
                amount: u64,
            },
            Closed,
        }
        account!();
    }

    /// The events of the base; the `close` command takes a reason now, and `reopen` is new.
    pub mod changed_commands {
        use keel::prelude::*;
        use serde::{Deserialize, Serialize};

        #[derive(Event, Serialize, Deserialize, JsonSchema)]
        pub enum AccountEvent {
            Opened { owner: String, overdraft: u32 },
            Deposited { amount: u64 },
            Closed,
        }

        #[derive(Debug, thiserror::Error)]
        #[error("refused")]
        pub struct Refused;

        #[derive(Aggregate, Default)]
        #[aggregate(kind = "account", event = AccountEvent, error = Refused)]
        pub struct Account;

        impl Apply<AccountEvent> for Account {
            fn apply(&mut self, _: &AccountEvent) {}
        }

        #[keel::commands]
        impl Account {
            pub fn close(&self, reason: String) -> AccountEvent {
                let _ = reason;
                AccountEvent::Closed
            }
            pub fn reopen(&self) -> Vec<AccountEvent> {
                Vec::new()
            }
        }

        pub fn registry() -> keel::schemas::Registry {
            keel::schemas::Registry::new().aggregate::<Account>()
        }
    }

    /// `Deposited` counts cents now, at version 2, with an upcaster from version 1.
    pub mod bumped_with_upcaster {
        use keel::prelude::*;
        use keel::upcast::{Value, json};
        use serde::{Deserialize, Serialize};

        #[derive(Event, Serialize, Deserialize, JsonSchema)]
        pub enum AccountEvent {
            Opened {
                owner: String,
                overdraft: u32,
            },
            #[event(version = 2, upcast(from = 1, with = cents))]
            Deposited {
                cents: u64,
            },
            Closed,
        }

        fn cents(v1: Value) -> Value {
            json!({ "cents": v1["amount"].as_u64().unwrap_or_default() * 100 })
        }
        account!();
    }

    /// The same change without the upcaster.
    pub mod bumped_without_upcaster {
        use keel::prelude::*;
        use serde::{Deserialize, Serialize};

        #[derive(Event, Serialize, Deserialize, JsonSchema)]
        pub enum AccountEvent {
            Opened {
                owner: String,
                overdraft: u32,
            },
            #[event(version = 2)]
            Deposited {
                cents: u64,
            },
            Closed,
        }
        account!();
    }
}

use versions::*;

/// Checks `code` against the base's exported schemas under `mode`.
fn check(code: &Registry, mode: Compatibility) -> anyhow::Result<CheckReport> {
    let dir = tempfile::tempdir()?;
    base::registry().export(dir.path())?;
    Ok(code.check(dir.path(), mode)?)
}

/// The findings' messages under `mode`.
fn breaking(code: &Registry, mode: Compatibility) -> anyhow::Result<Vec<String>> {
    Ok(check(code, mode)?
        .breaking
        .iter()
        .map(ToString::to_string)
        .collect())
}

const BACKWARD: Compatibility = Compatibility::Backward;
const FORWARD: Compatibility = Compatibility::Forward;
const FULL: Compatibility = Compatibility::Full;

#[test]
fn the_same_code_is_compatible_in_every_mode_and_up_to_date() -> anyhow::Result<()> {
    for mode in [BACKWARD, FORWARD, FULL] {
        let report = check(&base::registry(), mode)?;
        assert!(report.is_compatible(), "{report}");
        assert!(report.is_up_to_date(), "{report}");
    }
    Ok(())
}

#[test]
fn additive_changes_pass_backward_and_break_forward() -> anyhow::Result<()> {
    let report = check(&additive::registry(), BACKWARD)?;
    assert!(report.is_compatible(), "{report}");
    // Compatible, but not exported yet: the changed and the new file.
    let outdated: Vec<String> = report
        .outdated
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(
        outdated,
        [
            "account/events/Opened.v1.json",
            "account/events/Renamed.v1.json"
        ]
    );
    let forward = [
        "aggregate `account`, event `Opened` v1, field `overdraft`: changed type from integer (uint32) to integer (uint64) [breaks forward]",
        "aggregate `account`, event `Renamed` v1: new event type: readers on the committed schema fail on it (unknown type) [breaks forward]",
    ];
    assert_eq!(breaking(&additive::registry(), FORWARD)?, forward);
    assert_eq!(breaking(&additive::registry(), FULL)?, forward);
    Ok(())
}

#[test]
fn a_removed_required_field_breaks_forward() -> anyhow::Result<()> {
    let code = removed_required_field::registry();
    // This code reads stored events: it ignores the field they still have.
    assert_eq!(breaking(&code, BACKWARD)?, Vec::<String>::new());
    let message = "aggregate `account`, event `Opened` v1, field `overdraft`: removed required field: readers on the committed schema require it [breaks forward]";
    assert_eq!(breaking(&code, FORWARD)?, [message]);
    assert_eq!(breaking(&code, FULL)?, [message]);
    Ok(())
}

#[test]
fn a_renamed_required_field_breaks_both_ways() -> anyhow::Result<()> {
    let code = renamed_required_field::registry();
    let report = check(&code, FULL)?;
    let rules: Vec<(&str, &Rule, Direction)> = report
        .breaking
        .iter()
        .map(|f| (f.field.as_deref().unwrap_or(""), &f.rule, f.direction))
        .collect();
    let renamed = Rule::RenamedRequiredField {
        from: "owner".into(),
    };
    assert_eq!(
        rules,
        [
            ("holder", &renamed, Direction::Backward),
            ("holder", &renamed, Direction::Forward)
        ]
    );
    assert_eq!(
        breaking(&code, BACKWARD)?,
        [
            "aggregate `account`, event `Opened` v1, field `holder`: renamed required field (from `owner`): readers of either version require their own name (keep the old name with `#[serde(rename)]`, or bump the version with an upcaster) [breaks backward]"
        ]
    );
    Ok(())
}

#[test]
fn a_changed_type_breaks_both_ways() -> anyhow::Result<()> {
    let code = changed_type::registry();
    assert_eq!(
        breaking(&code, BACKWARD)?,
        [
            "aggregate `account`, event `Deposited` v1, field `amount`: changed type from integer (uint64) to string [breaks backward]"
        ]
    );
    assert_eq!(
        breaking(&code, FORWARD)?,
        [
            "aggregate `account`, event `Deposited` v1, field `amount`: changed type from integer (uint64) to string [breaks forward]"
        ]
    );
    assert_eq!(breaking(&code, FULL)?.len(), 2);
    Ok(())
}

#[test]
fn a_new_required_field_without_a_default_breaks_backward() -> anyhow::Result<()> {
    let code = new_required_field::registry();
    let message = "aggregate `account`, event `Deposited` v1, field `currency`: new required field without a default: stored events lack it (give it `#[serde(default)]` or make it an `Option`, or bump the version with an upcaster) [breaks backward]";
    assert_eq!(breaking(&code, BACKWARD)?, [message]);
    assert_eq!(breaking(&code, FORWARD)?, Vec::<String>::new());
    assert_eq!(breaking(&code, FULL)?, [message]);
    Ok(())
}

#[test]
fn a_removed_variant_breaks_backward_unless_ignored_or_renamed() -> anyhow::Result<()> {
    let message = "aggregate `account`, event `Opened` v1: removed event type: its stored records no longer load (keep the variant, give its new name `aliases = [...]`, or declare it `#[event(ignore = [...])]` on the enum) [breaks backward]";
    assert_eq!(breaking(&removed_variant::registry(), BACKWARD)?, [message]);
    assert_eq!(
        breaking(&removed_variant::registry(), FORWARD)?,
        Vec::<String>::new()
    );
    for code in [
        removed_variant_ignored::registry(),
        renamed_type::registry(),
    ] {
        assert_eq!(breaking(&code, BACKWARD)?, Vec::<String>::new());
    }
    // A rename is still a new type name to readers on the committed schema.
    assert_eq!(
        breaking(&renamed_type::registry(), FORWARD)?,
        [
            "aggregate `account`, event `Created` v1: renamed event type (from `Opened`): readers on the committed schema do not know the new name [breaks forward]"
        ]
    );
    Ok(())
}

#[test]
fn a_bumped_version_passes_backward_with_an_upcaster_only() -> anyhow::Result<()> {
    let with = bumped_with_upcaster::registry();
    let report = check(&with, BACKWARD)?;
    assert!(report.is_compatible(), "{report}");
    assert_eq!(
        report
            .outdated
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>(),
        ["account/events/Deposited.v2.json"]
    );
    // Old builds refuse version 2 records.
    assert_eq!(
        breaking(&with, FORWARD)?,
        [
            "aggregate `account`, event `Deposited` v2: schema version bumped from 1: readers on the committed schema refuse records of a newer version (upgrade them first) [breaks forward]"
        ]
    );
    assert_eq!(
        breaking(&bumped_without_upcaster::registry(), BACKWARD)?,
        [
            "aggregate `account`, event `Deposited` v2: schema version bumped from 1 without an upcaster from version 1: stored records of version 1 no longer load (add `upcast(from = 1, with = ...)`) [breaks backward]"
        ]
    );

    // Once exported, version 2 is the base: the same change again is compatible, and
    // version 1 stays in the folder for the records that have it.
    let dir = tempfile::tempdir()?;
    base::registry().export(dir.path())?;
    with.export(dir.path())?;
    assert!(dir.path().join("account/events/Deposited.v1.json").exists());
    let again = with.check(dir.path(), BACKWARD)?;
    assert!(again.is_compatible() && again.is_up_to_date(), "{again}");
    // Dropping the upcaster later is caught: version 1 records are still stored.
    let dropped = bumped_without_upcaster::registry().check(dir.path(), BACKWARD)?;
    assert_eq!(
        dropped.breaking.iter().map(|f| &f.rule).collect::<Vec<_>>(),
        [&Rule::MissingUpcaster {
            from: 1,
            missing: 1
        }]
    );
    Ok(())
}

#[test]
fn an_aggregate_no_longer_registered_is_named() -> anyhow::Result<()> {
    let report = check(&Registry::new(), BACKWARD)?;
    assert_eq!(
        report
            .breaking
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [
            "aggregate `account`: committed schemas of an aggregate the registry does not list (register it, or delete its folder) [breaks backward]"
        ]
    );
    Ok(())
}

#[test]
fn commands_are_checked_by_the_same_rules() -> anyhow::Result<()> {
    let code = changed_commands::registry();
    assert_eq!(
        breaking(&code, FULL)?,
        [
            "aggregate `account`, command `close`, field `reason`: new required field without a default: callers on the committed schema do not send it (give it `#[serde(default)]` or make it an `Option`) [breaks backward]",
            "aggregate `account`, command `reopen`: new command: services on the committed schema do not know it [breaks forward]",
        ]
    );
    Ok(())
}
