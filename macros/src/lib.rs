//! Derive and attribute macros for [keel](https://docs.rs/keel): `#[derive(Event)]`,
//! `#[derive(Aggregate)]` and `#[keel::commands]`.
//!
//! Use them through `keel`, which re-exports them (default `derive` feature); the generated
//! code names `::keel` and its hidden `__private` support module, so this crate is not useful
//! on its own. The `keel::event` and `keel::aggregate` module docs hold tested examples.
//!
//! ```text
//! use keel::prelude::*;
//!
//! #[derive(Event, Serialize, Deserialize, Debug)]
//! enum AccountEvent { Opened { owner: String }, Deposited { amount: u64 } }
//!
//! #[derive(Aggregate, Default)]
//! #[aggregate(kind = "account", event = AccountEvent, error = AccountError)]
//! struct Account { balance: u64 }
//!
//! impl Apply<AccountEvent> for Account { fn apply(&mut self, event: &AccountEvent) { ... } }
//!
//! #[keel::commands]
//! impl Account {
//!     pub fn deposit(&self, amount: u64) -> Result<AccountEvent, AccountError> { ... }
//! }
//! // generates `AccountCommand::Deposit { amount }` and `impl Handle for Account`
//! ```
//!
//! Every macro reports all the errors it finds at once, each at the tokens it is about, and
//! never panics.

mod aggregate;
mod attr;
mod case;
mod commands;
mod errors;
mod event;
mod evolution;
mod valid;

use proc_macro::TokenStream;

/// Derives `keel::Event` for an enum of the facts one aggregate records.
///
/// Each variant gets a stable **type name**, stored with the event: the variant's name as
/// written, or `#[event(name = "...")]` (1 to 128 bytes of ASCII letters, digits and
/// `- _ . :`, unique within the enum). Each also gets a **schema version**: `#[event(version =
/// N)]` on the variant, else on the enum, else 1. The payload is the variant's content as
/// serde JSON, so the enum must also derive `Serialize` and `Deserialize`, in serde's default
/// externally tagged representation (no `tag`, `content` or `untagged`); `#[serde(rename)]`
/// and `#[serde(rename_all)]` are honoured.
///
/// ```text
/// #[derive(Event, Serialize, Deserialize)]
/// #[event(version = 2)]
/// enum AccountEvent {
///     Opened { owner: String },              // type "Opened", version 2
///     #[event(name = "account.deposited", version = 3)]
///     Deposited(u64),                        // type "account.deposited", version 3
///     Closed,                                // type "Closed", version 2
/// }
/// ```
///
/// Events outlive the code that wrote them; the attribute also declares their history:
///
/// - `upcast(from = N, with = path::to_fn)` on a variant, once per older version: a
///   `fn(serde_json::Value) -> serde_json::Value` (or `-> Result<Value, E>`) turning the
///   stored JSON of version N into version N + 1. `decode` runs the chain from a record's
///   version up to the variant's; each `from` is below the variant's version, given once,
///   with no gap up to it.
/// - `aliases = ["Old"]` on a variant: type names its records were stored under before.
/// - `ignore = ["Removed"]` on the enum: types it no longer has; readers skip their records.
///
/// ```text
/// #[derive(Event, Serialize, Deserialize)]
/// #[event(ignore = ["Frozen"])]
/// enum AccountEvent {
///     #[event(version = 2, aliases = ["AccountOpened"], upcast(from = 1, with = opened_v1))]
///     Opened { owner: String, currency: String },
/// }
/// ```
///
/// Generics, structs and unions are refused.
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    event::derive(input.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Derives `keel::Aggregate` for the struct holding an aggregate's state.
///
/// `#[aggregate(...)]` takes three keys, all required:
///
/// - `kind = "..."`: the aggregate kind, which names its streams and topic (1 to 128 bytes of
///   ASCII letters, digits and `- _ .`);
/// - `event = Type`: its event enum (`#[derive(Event)]`);
/// - `error = Type`: why its commands are rejected.
///
/// ```text
/// #[derive(Aggregate, Default)]
/// #[aggregate(kind = "account", event = AccountEvent, error = AccountError)]
/// struct Account { balance: u64 }
///
/// impl Apply<AccountEvent> for Account {
///     fn apply(&mut self, event: &AccountEvent) { ... }
/// }
/// ```
///
/// The struct must implement `Default` (the state before any event) and
/// `keel::Apply<Event>` (how each event changes it). Generic structs are refused.
#[proc_macro_derive(Aggregate, attributes(aggregate))]
pub fn derive_aggregate(input: TokenStream) -> TokenStream {
    aggregate::derive(input.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Turns an aggregate's `impl` block into its command handlers.
///
/// Every `pub fn` of the block is a handler (`pub(crate)` and private methods stay helpers).
/// It takes `&self`, plain `name: Type` parameters that become the command's fields, and at
/// most one `&Context` parameter for shared services (the same type in every handler that
/// takes one). It may be `async`, and returns the aggregate's event, a `Vec` of events, or a
/// `Result` of either whose error converts into the aggregate's error.
///
/// ```text
/// #[keel::commands]
/// impl Account {
///     /// Puts money in.
///     pub fn deposit(&self, amount: u64) -> Result<AccountEvent, AccountError> { ... }
///     pub async fn reserve(&self, services: &Services, qty: u32) -> Vec<AccountEvent> { ... }
///     pub fn close(&self) -> AccountEvent { ... }
/// }
/// ```
///
/// generates, beside the unchanged block:
///
/// - `pub enum AccountCommand { Deposit { amount: u64 }, Reserve { qty: u32 }, Close }`, one
///   variant per handler (its name in UpperCamelCase, its doc comments), with `Debug`,
///   `Clone`, serde and `JsonSchema`; its JSON is `{"command":"deposit","amount":5}`;
/// - `impl keel::Command for AccountCommand`: `name()` is the method's name, `"deposit"`;
/// - `impl keel::Handle for Account`, with `Context = Services` (`()` when no handler takes
///   one), dispatching each command to its method.
#[proc_macro_attribute]
pub fn commands(args: TokenStream, item: TokenStream) -> TokenStream {
    commands::expand(args.into(), item.into()).into()
}
