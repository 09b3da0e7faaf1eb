//! `#[derive(Aggregate)]`: the kind, event and error types of an aggregate's state.
//!
//! ```text
//! #[derive(Aggregate, Default)]
//! #[aggregate(kind = "account", event = AccountEvent, error = AccountError)]
//! struct Account { balance: u64 }
//! ```
//!
//! expands to an `impl ::keel::Aggregate` whose `apply_event` forwards to the user's
//! `impl Apply<AccountEvent> for Account`. With `snapshot(version = N, every = M)` (both
//! optional: version 1, every 100 events), the impl also encodes and decodes the state for
//! snapshots with serde.

use proc_macro2::TokenStream;
use quote::quote_spanned;
use syn::spanned::Spanned;
use syn::{Attribute, Data, DeriveInput, Ident, LitStr, Type};

use crate::attr;
use crate::errors::Errors;
use crate::valid;

/// Expands `#[derive(Aggregate)]`.
///
/// # Errors
///
/// Every problem with the input at once. Unless the struct is generic, the errors come back
/// inside `Ok` with the impl — with stand-in types for an event or error type the attribute
/// does not name, and the value of a misspelt key for the key meant — so code using the
/// aggregate sees one error, not one per use.
pub(crate) fn derive(input: TokenStream) -> syn::Result<TokenStream> {
    let input: DeriveInput = syn::parse2(input)?;
    let mut errors = Errors::default();
    let model = parse(&input, &mut errors);
    match (errors.into_error(), model) {
        (None, Some(model)) => Ok(expand(&model)),
        (Some(error), Some(model)) if input.generics.params.is_empty() => {
            let mut tokens = error.into_compile_error();
            tokens.extend(expand(&model));
            Ok(tokens)
        }
        (Some(error), _) => Err(error),
        // `parse` gives no model only after recording why.
        (None, None) => Err(syn::Error::new_spanned(&input.ident, "invalid aggregate")),
    }
}

/// What the impl needs. The kind may be invalid when the model serves as a fallback.
struct AggregateModel<'a> {
    ident: &'a Ident,
    kind: LitStr,
    event: Type,
    error: Type,
    snapshot: Option<SnapshotAttr>,
    /// A fallback after an error that left the event or error type unknown: the impl has
    /// stand-in types and a body that applies nothing, so only the error itself is reported.
    stub: bool,
}

impl<'a> AggregateModel<'a> {
    /// The impl to emit after an error that left nothing known but the name.
    fn fallback(ident: &'a Ident) -> Self {
        Self {
            ident,
            kind: LitStr::new("", ident.span()),
            event: missing(),
            error: missing(),
            snapshot: None,
            stub: true,
        }
    }
}

/// The stand-in for a type `#[aggregate(...)]` does not name (an `Event` and an error type
/// with no values).
fn missing() -> Type {
    syn::parse_quote!(::keel::__private::Missing)
}

/// `snapshot(version = N, every = M)`.
struct SnapshotAttr {
    /// The `snapshot` key, for spans.
    span: proc_macro2::Span,
    version: u32,
    every: u64,
}

/// `#[aggregate(...)]`, merged over every such attribute.
#[derive(Default)]
struct AggregateAttr {
    kind: Option<LitStr>,
    event: Option<Type>,
    error: Option<Type>,
    snapshot: Option<SnapshotAttr>,
}

const EXPECTED_KEYS: &str = "`kind`, `event`, `error` or `snapshot`";
const KEYS: &[&str] = &["kind", "event", "error", "snapshot"];

fn parse<'a>(input: &'a DeriveInput, errors: &mut Errors) -> Option<AggregateModel<'a>> {
    match &input.data {
        Data::Struct(data) => {
            for field in &data.fields {
                attr::reject(
                    &field.attrs,
                    "aggregate",
                    "`#[aggregate(...)]` goes on the struct, not on a field",
                    errors,
                );
            }
        }
        Data::Enum(data) => errors.spanned(data.enum_token, ONLY_STRUCTS),
        Data::Union(data) => errors.spanned(data.union_token, ONLY_STRUCTS),
    }
    if !input.generics.params.is_empty() || input.generics.where_clause.is_some() {
        errors.spanned(
            &input.generics,
            "generic aggregates are not supported: an aggregate kind names one concrete type",
        );
    }
    let attrs: Vec<&Attribute> = input
        .attrs
        .iter()
        .filter(|attr| attr.path().is_ident("aggregate"))
        .collect();
    let Some(first) = attrs.first() else {
        errors.spanned(
            &input.ident,
            "`#[derive(Aggregate)]` needs `#[aggregate(kind = \"...\", event = ..., error = ...)]` \
             on the struct",
        );
        return Some(AggregateModel::fallback(&input.ident));
    };
    let parsed = aggregate_attr(&attrs, errors);
    let kind = if let Some(kind) = parsed.kind {
        if let Err(message) = valid::aggregate_kind(&kind.value()) {
            errors.spanned(&kind, message);
        }
        kind
    } else {
        errors.spanned(
            first,
            "missing `kind` in `#[aggregate(...)]`: the name of the aggregate's streams and \
             topic, such as `kind = \"account\"`",
        );
        LitStr::new("", input.ident.span())
    };
    if parsed.event.is_none() {
        errors.spanned(
            first,
            "missing `event` in `#[aggregate(...)]`: the enum of the events this aggregate \
             records, such as `event = AccountEvent`",
        );
    }
    if parsed.error.is_none() {
        errors.spanned(
            first,
            "missing `error` in `#[aggregate(...)]`: why its commands are rejected, such as \
             `error = AccountError`",
        );
    }
    // A missing type is reported above; the fallback type keeps the impl whole.
    Some(AggregateModel {
        ident: &input.ident,
        kind,
        stub: parsed.event.is_none() || parsed.error.is_none(),
        event: parsed.event.unwrap_or_else(missing),
        error: parsed.error.unwrap_or_else(missing),
        snapshot: parsed.snapshot,
    })
}

const ONLY_STRUCTS: &str = "`Aggregate` can only be derived for structs: the aggregate's state";

fn aggregate_attr(attrs: &[&Attribute], errors: &mut Errors) -> AggregateAttr {
    let mut parsed = AggregateAttr::default();
    let mut misspelt = AggregateAttr::default();
    for attr in attrs {
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("kind") {
                if let Some(kind) = errors.ok(attr::lit_str(&meta)) {
                    attr::set_once(&mut parsed.kind, kind, &meta, "aggregate", errors);
                }
            } else if meta.path.is_ident("event") {
                let ty: Type = meta.value()?.parse()?;
                attr::set_once(&mut parsed.event, ty, &meta, "aggregate", errors);
            } else if meta.path.is_ident("error") {
                let ty: Type = meta.value()?.parse()?;
                attr::set_once(&mut parsed.error, ty, &meta, "aggregate", errors);
            } else if meta.path.is_ident("snapshot") {
                let snapshot = snapshot_attr(&meta, errors)?;
                attr::set_once(&mut parsed.snapshot, snapshot, &meta, "aggregate", errors);
            } else if let Some(meant) = attr::misspelt(&meta, "aggregate", KEYS, errors) {
                // Reported; its value stands for the key meant, unless that key is given too.
                match meant {
                    "kind" => misspelt.kind = errors.ok(attr::lit_str(&meta)),
                    "event" => misspelt.event = Some(meta.value()?.parse()?),
                    "error" => misspelt.error = Some(meta.value()?.parse()?),
                    _ => misspelt.snapshot = Some(snapshot_attr(&meta, errors)?),
                }
            } else {
                attr::unknown_key(&meta, "aggregate", EXPECTED_KEYS, errors)?;
            }
            Ok(())
        });
        errors.ok(result);
    }
    AggregateAttr {
        kind: parsed.kind.or(misspelt.kind),
        event: parsed.event.or(misspelt.event),
        error: parsed.error.or(misspelt.error),
        snapshot: parsed.snapshot.or(misspelt.snapshot),
    }
}

/// `snapshot`, `snapshot(version = N)`, `snapshot(every = M)` or both keys.
fn snapshot_attr(
    meta: &syn::meta::ParseNestedMeta<'_>,
    errors: &mut Errors,
) -> syn::Result<SnapshotAttr> {
    let mut version = None;
    let mut every = None;
    if meta.input.peek(syn::token::Paren) {
        meta.parse_nested_meta(|inner| {
            if inner.path.is_ident("version") {
                if let Some(v) = errors.ok(attr::version(&inner)) {
                    attr::set_once(&mut version, v, &inner, "aggregate", errors);
                }
            } else if inner.path.is_ident("every") {
                let expr: syn::Expr = inner.value()?.parse()?;
                match &expr {
                    syn::Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Int(int),
                        ..
                    }) if int.base10_parse::<u64>().is_ok() => {
                        let n = int.base10_parse::<u64>()?;
                        attr::set_once(&mut every, n, &inner, "aggregate", errors);
                    }
                    _ => errors.spanned(
                        &expr,
                        "expected how many events between snapshots: an integer, such as \
                         `every = 100` (0 saves none)",
                    ),
                }
            } else {
                attr::unknown_key(
                    &inner,
                    "aggregate",
                    "`version` or `every` inside `snapshot(...)`",
                    errors,
                )?;
            }
            Ok(())
        })?;
    }
    Ok(SnapshotAttr {
        span: meta.path.span(),
        version: version.unwrap_or(1),
        every: every.unwrap_or(100),
    })
}

fn expand(model: &AggregateModel<'_>) -> TokenStream {
    let AggregateModel {
        ident,
        kind,
        event,
        error,
        snapshot,
        stub,
    } = model;
    // A missing `Apply<Event>` impl is reported at the `event = ...` type, a missing `Default`
    // (the supertrait) once, at the struct's name: the rest of the impl carries its span.
    let apply = if *stub {
        quote_spanned! {ident.span()=> let _ = __event; }
    } else {
        quote_spanned! {event.span()=>
            <Self as ::keel::Apply<#event>>::apply(self, __event)
        }
    };
    // Serde bounds are reported at the `snapshot` key.
    let snapshot = snapshot.as_ref().map(|s| {
        let SnapshotAttr { span, version, every } = s;
        quote_spanned! {*span=>
            const SNAPSHOT: ::core::option::Option<::keel::__private::SnapshotConfig> =
                ::core::option::Option::Some(::keel::__private::SnapshotConfig {
                    version: #version,
                    every: #every,
                });

            fn encode_snapshot(
                &self,
            ) -> ::core::result::Result<::std::vec::Vec<::core::primitive::u8>, ::keel::SnapshotError> {
                ::keel::__private::encode_snapshot(#kind, self)
            }

            fn decode_snapshot(
                __payload: &[::core::primitive::u8],
            ) -> ::core::result::Result<Self, ::keel::SnapshotError> {
                ::keel::__private::decode_snapshot(#kind, __payload)
            }
        }
    });
    let body = quote_spanned! {ident.span()=>
        const KIND: &'static ::core::primitive::str = #kind;
        type Event = #event;
        type Error = #error;

        fn apply_event(&mut self, __event: &Self::Event) {
            #apply
        }

        #snapshot
    };
    quote_spanned! {ident.span()=>
        #[automatically_derived]
        impl ::keel::Aggregate for #ident {
            #body
        }
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::*;

    fn errors(input: TokenStream) -> Vec<String> {
        crate::errors::messages(derive(input))
    }

    #[test]
    fn expands_to_the_impl() {
        let out = derive(quote! {
            #[derive(Default)]
            #[aggregate(kind = "account", event = AccountEvent, error = AccountError)]
            pub struct Account { balance: u64 }
        })
        .expect("expands");
        let expected = quote! {
            #[automatically_derived]
            impl ::keel::Aggregate for Account {
                const KIND: &'static ::core::primitive::str = "account";
                type Event = AccountEvent;
                type Error = AccountError;

                fn apply_event(&mut self, __event: &Self::Event) {
                    <Self as ::keel::Apply<AccountEvent>>::apply(self, __event)
                }
            }
        };
        assert_eq!(out.to_string(), expected.to_string());
    }

    #[test]
    fn keys_may_be_split_over_attributes() {
        let out = derive(quote! {
            #[aggregate(kind = "a.b")]
            #[aggregate(event = crate::E, error = Box<dyn std::error::Error + Send + Sync>)]
            struct A;
        })
        .expect("expands")
        .to_string();
        assert!(out.contains("type Error = Box < dyn std :: error :: Error + Send + Sync > ;"));
    }

    #[test]
    fn a_missing_attribute_or_key_is_named() {
        assert_eq!(
            errors(quote!(
                struct A;
            )),
            [
                "`#[derive(Aggregate)]` needs `#[aggregate(kind = \"...\", event = ..., error = ...)]` on the struct"
            ]
        );
        let found = errors(quote!(
            #[aggregate()]
            struct A;
        ));
        assert_eq!(found.len(), 3);
        assert!(found[0].starts_with("missing `kind`"));
        assert!(found[1].starts_with("missing `event`"));
        assert!(found[2].starts_with("missing `error`"));
    }

    #[test]
    fn a_bad_kind_still_yields_the_impl() {
        let tokens = derive(quote! {
            #[aggregate(kind = "bank account", event = E, error = Err)]
            struct A;
        })
        .expect("a fallback");
        assert!(
            tokens
                .to_string()
                .contains("impl :: keel :: Aggregate for A")
        );
        assert_eq!(
            crate::errors::messages(Ok(tokens)),
            [
                "the aggregate kind `bank account` contains ' ': only ASCII letters, digits, `-`, `_` and `.` are allowed"
            ]
        );
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let found = errors(quote! {
            #[aggregate(kind = 7, event = E, colour = "red", event = F)]
            enum A<'a> { X(&'a u8) }
        });
        assert_eq!(
            found,
            [
                "`Aggregate` can only be derived for structs: the aggregate's state",
                "generic aggregates are not supported: an aggregate kind names one concrete type",
                "expected a string literal: `kind = \"...\"`",
                "unknown key `colour` in `#[aggregate(...)]`; expected `kind`, `event`, `error` or `snapshot`",
                "duplicate key `event` in `#[aggregate(...)]`",
                "missing `kind` in `#[aggregate(...)]`: the name of the aggregate's streams and topic, such as `kind = \"account\"`",
                "missing `error` in `#[aggregate(...)]`: why its commands are rejected, such as `error = AccountError`",
            ]
        );
    }

    #[test]
    fn a_misspelt_key_is_one_error_and_its_value_stands_for_the_key_meant() {
        let tokens = derive(quote! {
            #[aggregate(Kind = "book", events = BookEvent, errors = BookError)]
            struct Book;
        })
        .expect("a fallback");
        assert_eq!(
            crate::errors::messages(Ok(tokens.clone())),
            [
                "unknown key `Kind` in `#[aggregate(...)]`; did you mean `kind`?",
                "unknown key `events` in `#[aggregate(...)]`; did you mean `event`?",
                "unknown key `errors` in `#[aggregate(...)]`; did you mean `error`?",
            ]
        );
        let out = tokens.to_string();
        assert!(
            out.contains("const KIND : & 'static :: core :: primitive :: str = \"book\""),
            "{out}"
        );
        assert!(out.contains("type Event = BookEvent ;"), "{out}");
        assert!(out.contains("type Error = BookError ;"), "{out}");
        assert!(out.contains("Apply < BookEvent >"), "{out}");
    }

    #[test]
    fn a_misspelt_key_beside_the_right_one_leaves_the_right_one_in_force() {
        let out = derive(quote! {
            #[aggregate(kind = "book", events = Wrong, event = BookEvent, error = BookError)]
            struct Book;
        })
        .expect("a fallback");
        assert_eq!(
            crate::errors::messages(Ok(out.clone())),
            ["unknown key `events` in `#[aggregate(...)]`; did you mean `event`?"]
        );
        assert!(out.to_string().contains("type Event = BookEvent ;"));
    }

    #[test]
    fn missing_types_still_yield_a_stub_impl() {
        for input in [
            quote!(
                #[aggregate(kind = "book", error = E)]
                struct Book;
            ),
            quote!(
                #[aggregate(kind = "book", event = E)]
                struct Book;
            ),
            quote!(
                struct Book;
            ),
        ] {
            let tokens = derive(input.clone()).expect("a fallback");
            assert_eq!(
                crate::errors::messages(Ok(tokens.clone())).len(),
                1,
                "{input}"
            );
            let out = tokens.to_string();
            assert!(out.contains("impl :: keel :: Aggregate for Book"), "{out}");
            assert!(out.contains(":: keel :: __private :: Missing"), "{out}");
            assert!(!out.contains("Apply"), "a stub applies nothing: {out}");
        }
    }

    #[test]
    fn field_attributes_are_refused() {
        let found = errors(quote! {
            #[aggregate(kind = "a", event = E, error = Err)]
            struct A { #[aggregate(kind = "b")] x: u8 }
        });
        assert_eq!(
            found,
            ["`#[aggregate(...)]` goes on the struct, not on a field"]
        );
    }
}
