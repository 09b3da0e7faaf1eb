//! The generated code names everything by absolute path: it compiles and works beside user
//! items that shadow `core`, `std` and the prelude. (It names primitives as
//! `::core::primitive::u32` too, but serde's and schemars' derives, which the same items need,
//! name `str` and `u8` bare, so primitives cannot be shadowed here.)

#![deny(warnings)]
#![allow(dead_code)]

mod core {}
mod std {}

struct Result;
struct Option;
struct Vec;
struct Box;
struct String;
struct Ok;
struct Err;
struct Some;
struct None;
struct Send;
struct Sync;
struct Sized;
struct Clone;
struct Debug;
struct Default;
struct Future;
struct Into;
struct From;
struct Iterator;
struct IntoIterator;

type Text = ::std::string::String;

#[derive(
    ::keel::Event,
    ::serde::Serialize,
    ::serde::Deserialize,
    ::core::fmt::Debug,
    ::core::cmp::PartialEq,
)]
#[event(version = 2, ignore = ["light.broken"])]
enum LightEvent {
    SwitchedOn,
    #[event(
        name = "light.dimmed",
        version = 3,
        aliases = ["Dimmed"],
        upcast(from = 1, with = upcasts::percent),
        upcast(from = 2, with = upcasts::rename)
    )]
    Dimmed {
        level: ::core::primitive::u8,
    },
    Named(Text),
}

mod upcasts {
    use ::keel::upcast::{Value, json};

    /// Version 1 said `{"percent": 30}`; version 2 `{"value": 3}`.
    pub(crate) fn percent(v1: Value) -> Value {
        json!({ "value": v1["percent"].as_u64().unwrap_or_default() / 10 })
    }

    /// Version 3 calls it `level`.
    pub(crate) fn rename(v2: Value) -> ::core::result::Result<Value, &'static ::core::primitive::str> {
        let value = v2.get("value").ok_or("no value")?;
        ::core::result::Result::Ok(json!({ "level": value }))
    }
}

#[derive(::core::fmt::Debug, ::thiserror::Error)]
#[error("the light is broken")]
struct Broken;

#[derive(::keel::Aggregate, ::core::default::Default)]
#[aggregate(kind = "light", event = LightEvent, error = Broken)]
struct Light {
    on: bool,
}

impl ::keel::Apply<LightEvent> for Light {
    fn apply(&mut self, event: &LightEvent) {
        self.on = ::core::matches!(event, LightEvent::SwitchedOn);
    }
}

struct Grid {
    healthy: bool,
}

#[::keel::commands]
impl Light {
    /// Switches the light on.
    pub fn switch_on(&self) -> LightEvent {
        LightEvent::SwitchedOn
    }

    pub fn dim(&self, level: ::core::primitive::u8) -> ::std::vec::Vec<LightEvent> {
        ::std::vec![LightEvent::Dimmed { level }]
    }

    pub async fn name(
        &self,
        grid: &Grid,
        name: Text,
    ) -> ::core::result::Result<LightEvent, Broken> {
        if grid.healthy {
            ::core::result::Result::Ok(LightEvent::Named(name))
        } else {
            ::core::result::Result::Err(Broken)
        }
    }
}

fn main() {
    use ::keel::{Command, Event, Handle};

    ::core::assert_eq!(
        LightEvent::EVENT_TYPES,
        &["SwitchedOn", "light.dimmed", "Named"]
    );
    let dimmed = LightEvent::Dimmed { level: 3 };
    ::core::assert_eq!(dimmed.event_type(), "light.dimmed");
    ::core::assert_eq!(dimmed.schema_version(), 3);
    let bytes = dimmed.encode().expect("encodes");
    ::core::assert_eq!(
        LightEvent::decode("light.dimmed", 3, &bytes).expect("decodes"),
        dimmed
    );
    ::core::assert!(LightEvent::decode("nope", 1, &bytes).is_err());
    ::core::assert_eq!(
        LightEvent::decode("Dimmed", 1, br#"{"percent":30}"#).expect("upcast twice"),
        dimmed
    );
    ::core::assert!(LightEvent::decode("light.dimmed", 2, b"{}").is_err());
    ::core::assert!(LightEvent::decode("light.dimmed", 4, &bytes).is_err());
    ::core::assert_eq!(LightEvent::IGNORED_TYPES, &["light.broken"]);
    ::core::assert!(LightEvent::reads("Dimmed") && !LightEvent::reads("light.broken"));

    let command = LightCommand::Name {
        name: "hall".into(),
    };
    ::core::assert_eq!(command.name(), "name");
    let runtime = ::tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let light = Light::default();
    let grid = Grid { healthy: true };
    let events = runtime
        .block_on(light.handle(command, &grid))
        .expect("accepted");
    ::core::assert_eq!(events, ::std::vec![LightEvent::Named("hall".into())]);
    let dimmed = runtime
        .block_on(light.handle(LightCommand::Dim { level: 1 }, &grid))
        .expect("accepted");
    ::core::assert_eq!(dimmed, ::std::vec![LightEvent::Dimmed { level: 1 }]);
}
