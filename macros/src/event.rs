//! `#[derive(Event)]`: the type names, schema versions and payload codec of an event enum.
//!
//! ```text
//! #[derive(Event, Serialize, Deserialize)]
//! #[event(version = 2)]                         // default schema version, else 1
//! enum AccountEvent {
//!     Opened { owner: String },                 // type "Opened", version 2
//!     #[event(name = "account.deposited", version = 3)]
//!     Deposited(u64),                           // type "account.deposited", version 3
//! }
//! ```
//!
//! expands to an `impl ::keel::Event` whose `decode` dispatches on the type name and hands the
//! payload to serde under the variant's serde name.

use std::collections::HashMap;

use proc_macro2::{Literal, TokenStream};
use quote::{quote, quote_spanned};
use syn::ext::IdentExt;
use syn::{Attribute, Data, DataEnum, DeriveInput, Fields, Ident, Variant};

use crate::attr;
use crate::case;
use crate::errors::Errors;
use crate::valid;

/// Expands `#[derive(Event)]`.
///
/// # Errors
///
/// Every problem with the input at once. When the type is known, the errors come back inside
/// `Ok` with a stub impl, so code using the type sees one error, not one per use.
pub(crate) fn derive(input: TokenStream) -> syn::Result<TokenStream> {
    let input: DeriveInput = syn::parse2(input)?;
    let mut errors = Errors::default();
    let model = parse(&input, &mut errors);
    match (errors.into_error(), model) {
        (None, Some(model)) => Ok(expand(&model)),
        (Some(error), _) if input.generics.params.is_empty() => {
            let mut tokens = error.into_compile_error();
            tokens.extend(stub(&input.ident));
            Ok(tokens)
        }
        (Some(error), _) => Err(error),
        // `parse` gives no model only after recording why.
        (None, None) => Err(syn::Error::new_spanned(&input.ident, "invalid event enum")),
    }
}

/// A valid event enum.
struct EventEnum<'a> {
    ident: &'a Ident,
    variants: Vec<EventVariant<'a>>,
}

/// One variant of a valid event enum.
struct EventVariant<'a> {
    variant: &'a Variant,
    /// The stored type name, spanned at the `name = "..."` literal or the variant.
    type_name: syn::LitStr,
    version: u32,
    /// The name serde knows the variant by.
    serde_tag: String,
}

/// `#[event(...)]` on the enum or a variant.
#[derive(Default)]
struct EventAttr {
    name: Option<syn::LitStr>,
    version: Option<u32>,
}

fn parse<'a>(input: &'a DeriveInput, errors: &mut Errors) -> Option<EventEnum<'a>> {
    let data = match &input.data {
        Data::Enum(data) => data,
        Data::Struct(data) => {
            errors.spanned(data.struct_token, ONLY_ENUMS);
            return None;
        }
        Data::Union(data) => {
            errors.spanned(data.union_token, ONLY_ENUMS);
            return None;
        }
    };
    if !input.generics.params.is_empty() || input.generics.where_clause.is_some() {
        errors.spanned(
            &input.generics,
            "generic event enums are not supported: an event's type name and payload must say \
             everything needed to decode it",
        );
    }
    let serde = attr::serde_enum(&input.attrs);
    for error in serde.not_externally_tagged {
        errors.push(error);
    }
    let defaults = event_attr(&input.attrs, Level::Enum, errors);
    let default_version = defaults.version.unwrap_or(1);
    let variants = parse_variants(data, default_version, serde.rename_all.as_deref(), errors);
    if data.variants.is_empty() {
        errors.spanned(
            &input.ident,
            "an event enum needs at least one variant: the facts the aggregate records",
        );
    }
    Some(EventEnum {
        ident: &input.ident,
        variants,
    })
}

const ONLY_ENUMS: &str = "`Event` can only be derived for enums: one variant per fact the \
                          aggregate records";

fn parse_variants<'a>(
    data: &'a DataEnum,
    default_version: u32,
    rename_all: Option<&str>,
    errors: &mut Errors,
) -> Vec<EventVariant<'a>> {
    let mut seen: HashMap<String, &Ident> = HashMap::new();
    let mut variants = Vec::with_capacity(data.variants.len());
    for variant in &data.variants {
        for field in &variant.fields {
            attr::reject(
                &field.attrs,
                "event",
                "`#[event(...)]` goes on the enum or a variant, not on a field",
                errors,
            );
        }
        let own = event_attr(&variant.attrs, Level::Variant, errors);
        let ident = variant.ident.unraw().to_string();
        let type_name = own
            .name
            .unwrap_or_else(|| syn::LitStr::new(&ident, variant.ident.span()));
        let name = type_name.value();
        if let Err(message) = valid::event_type_name(&name) {
            errors.spanned(&type_name, message);
        } else if let Some(first) = seen.get(&name) {
            errors.spanned(
                &type_name,
                format_args!(
                    "duplicate event type name `{name}`: variant `{first}` already has it; \
                     each variant needs its own"
                ),
            );
        } else {
            seen.insert(name, &variant.ident);
        }
        let serde = attr::serde_variant(&variant.attrs);
        for error in serde.refused {
            errors.push(error);
        }
        let serde_tag = serde.rename.map_or_else(
            || {
                rename_all
                    .and_then(|rule| case::rename_variant(rule, &ident))
                    .unwrap_or(ident)
            },
            |rename| rename.value(),
        );
        variants.push(EventVariant {
            variant,
            type_name,
            version: own.version.unwrap_or(default_version),
            serde_tag,
        });
    }
    variants
}

#[derive(Clone, Copy, PartialEq)]
enum Level {
    Enum,
    Variant,
}

fn event_attr(attrs: &[Attribute], level: Level, errors: &mut Errors) -> EventAttr {
    let mut parsed = EventAttr::default();
    let expected = match level {
        Level::Enum => "`version` (type names are set on variants)",
        Level::Variant => "`name` or `version`",
    };
    for attr in attrs.iter().filter(|attr| attr.path().is_ident("event")) {
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("version") {
                if let Some(version) = errors.ok(attr::version(&meta)) {
                    attr::set_once(&mut parsed.version, version, &meta, "event", errors);
                }
            } else if level == Level::Variant && meta.path.is_ident("name") {
                if let Some(name) = errors.ok(attr::lit_str(&meta)) {
                    attr::set_once(&mut parsed.name, name, &meta, "event", errors);
                }
            } else {
                attr::unknown_key(&meta, "event", expected, errors)?;
            }
            Ok(())
        });
        errors.ok(result);
    }
    parsed
}

fn expand(model: &EventEnum<'_>) -> TokenStream {
    let ident = model.ident;
    let patterns: Vec<TokenStream> = model.variants.iter().map(|v| pattern(v.variant)).collect();
    let names: Vec<&syn::LitStr> = model.variants.iter().map(|v| &v.type_name).collect();
    let versions = model
        .variants
        .iter()
        .map(|v| Literal::u32_unsuffixed(v.version));
    let tags = model
        .variants
        .iter()
        .map(|v| syn::LitStr::new(&v.serde_tag, v.variant.ident.span()));
    // Serde bounds fail at the enum's name: "the trait bound `X: Serialize` is not satisfied".
    let encode = quote_spanned! {ident.span()=>
        ::keel::__private::encode_variant(self, ::keel::Event::event_type(self))
    };
    let decode = quote_spanned! {ident.span()=> ::keel::__private::decode_variant::<Self> };
    quote! {
        #[automatically_derived]
        impl ::keel::Event for #ident {
            const EVENT_TYPES: &'static [&'static ::core::primitive::str] = &[#(#names),*];

            fn event_type(&self) -> &'static ::core::primitive::str {
                match self {
                    #(#patterns => #names,)*
                }
            }

            fn schema_version(&self) -> ::core::primitive::u32 {
                match self {
                    #(#patterns => #versions,)*
                }
            }

            fn encode(
                &self,
            ) -> ::core::result::Result<::std::vec::Vec<::core::primitive::u8>, ::keel::EncodeError>
            {
                #encode
            }

            fn decode(
                __event_type: &::core::primitive::str,
                __schema_version: ::core::primitive::u32,
                __payload: &[::core::primitive::u8],
            ) -> ::core::result::Result<Self, ::keel::DecodeError> {
                match __event_type {
                    #(#names => #decode(#tags, __event_type, __schema_version, __payload),)*
                    _ => ::core::result::Result::Err(::keel::DecodeError::unknown_type(
                        __event_type,
                        __schema_version,
                        <Self as ::keel::Event>::EVENT_TYPES,
                    )),
                }
            }
        }
    }
}

/// `Self::V { .. }`, `Self::V(..)` or `Self::V`, by the variant's shape.
fn pattern(variant: &Variant) -> TokenStream {
    let ident = &variant.ident;
    match &variant.fields {
        Fields::Named(_) => quote!(Self::#ident { .. }),
        Fields::Unnamed(_) => quote!(Self::#ident(..)),
        Fields::Unit => quote!(Self::#ident),
    }
}

/// An impl that type-checks whatever the input was, so the derive's own error stands alone.
fn stub(ident: &Ident) -> TokenStream {
    let unreachable = quote!(::core::unreachable!("`#[derive(Event)]` failed"));
    quote! {
        #[automatically_derived]
        impl ::keel::Event for #ident {
            const EVENT_TYPES: &'static [&'static ::core::primitive::str] = &[];

            fn event_type(&self) -> &'static ::core::primitive::str {
                #unreachable
            }

            fn schema_version(&self) -> ::core::primitive::u32 {
                #unreachable
            }

            fn encode(
                &self,
            ) -> ::core::result::Result<::std::vec::Vec<::core::primitive::u8>, ::keel::EncodeError>
            {
                #unreachable
            }

            fn decode(
                _: &::core::primitive::str,
                _: ::core::primitive::u32,
                _: &[::core::primitive::u8],
            ) -> ::core::result::Result<Self, ::keel::DecodeError> {
                #unreachable
            }
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

    fn expanded(input: TokenStream) -> String {
        derive(input).expect("expands").to_string()
    }

    #[test]
    fn type_names_versions_and_tags() {
        let out = expanded(quote! {
            #[event(version = 2)]
            #[serde(rename_all = "snake_case")]
            enum AccountEvent {
                Opened { owner: String },
                #[event(name = "account.deposited", version = 3)]
                Deposited(u64),
                #[serde(rename = "gone")]
                Closed,
            }
        });
        let expected = quote! {
            #[automatically_derived]
            impl ::keel::Event for AccountEvent {
                const EVENT_TYPES: &'static [&'static ::core::primitive::str] =
                    &["Opened", "account.deposited", "Closed"];

                fn event_type(&self) -> &'static ::core::primitive::str {
                    match self {
                        Self::Opened { .. } => "Opened",
                        Self::Deposited(..) => "account.deposited",
                        Self::Closed => "Closed",
                    }
                }

                fn schema_version(&self) -> ::core::primitive::u32 {
                    match self {
                        Self::Opened { .. } => 2,
                        Self::Deposited(..) => 3,
                        Self::Closed => 2,
                    }
                }

                fn encode(
                    &self,
                ) -> ::core::result::Result<::std::vec::Vec<::core::primitive::u8>, ::keel::EncodeError>
                {
                    ::keel::__private::encode_variant(self, ::keel::Event::event_type(self))
                }

                fn decode(
                    __event_type: &::core::primitive::str,
                    __schema_version: ::core::primitive::u32,
                    __payload: &[::core::primitive::u8],
                ) -> ::core::result::Result<Self, ::keel::DecodeError> {
                    match __event_type {
                        "Opened" => ::keel::__private::decode_variant::<Self>(
                            "opened", __event_type, __schema_version, __payload),
                        "account.deposited" => ::keel::__private::decode_variant::<Self>(
                            "deposited", __event_type, __schema_version, __payload),
                        "Closed" => ::keel::__private::decode_variant::<Self>(
                            "gone", __event_type, __schema_version, __payload),
                        _ => ::core::result::Result::Err(::keel::DecodeError::unknown_type(
                            __event_type,
                            __schema_version,
                            <Self as ::keel::Event>::EVENT_TYPES,
                        )),
                    }
                }
            }
        };
        assert_eq!(out, expected.to_string());
    }

    #[test]
    fn raw_variant_names_are_unraw() {
        let out = expanded(quote!(
            enum E {
                r#Type,
            }
        ));
        assert!(out.contains(r#"& ["Type"]"#), "{out}");
        assert!(out.contains("Self :: r#Type =>"), "{out}");
    }

    #[test]
    fn structs_and_unions_are_refused_with_a_stub() {
        for input in [
            quote!(
                struct S;
            ),
            quote!(union U { a: u8 }),
        ] {
            let out = derive(input).expect("a stub impl").to_string();
            assert!(out.contains("impl :: keel :: Event for"), "{out}");
            assert!(out.contains("can only be derived for enums"), "{out}");
        }
    }

    #[test]
    fn generic_enums_are_refused_without_a_stub() {
        let error = derive(quote!(
            enum E<T> {
                A(T),
            }
        ))
        .expect_err("no stub for generics");
        assert!(
            error
                .to_string()
                .starts_with("generic event enums are not supported")
        );
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let found = errors(quote! {
            #[event(version = 0, name = "x")]
            #[serde(tag = "type")]
            enum E {
                #[event(name = "", colour = "red")]
                A,
                #[event(name = "B", version = "2", version = 2, version = 3)]
                B,
                #[event(name = "has space")]
                C,
                D(#[event(version = 2)] u8),
                #[event(name = "B")]
                E,
                #[event(name = "a.b:c-d_e")]
                F,
            }
        });
        assert_eq!(
            found,
            [
                "events use serde's default externally tagged representation: remove `tag`",
                "schema versions start at 1: `version = 0` is not a version",
                "unknown key `name` in `#[event(...)]`; expected `version` (type names are set on variants)",
                "unknown key `colour` in `#[event(...)]`; expected `name` or `version`",
                "the event type name is empty",
                "expected a schema version: an integer from 1, such as `version = 2`",
                "duplicate key `version` in `#[event(...)]`",
                "the event type name `has space` contains ' ': only ASCII letters, digits, `-`, `_`, `.` and `:` are allowed",
                "`#[event(...)]` goes on the enum or a variant, not on a field",
                "duplicate event type name `B`: variant `B` already has it; each variant needs its own",
            ]
        );
    }

    #[test]
    fn empty_and_long_names() {
        assert_eq!(
            errors(quote!(
                enum Nothing {}
            )),
            ["an event enum needs at least one variant: the facts the aggregate records"]
        );
        let long = "a".repeat(129);
        assert_eq!(
            errors(quote!(
                enum E {
                    #[event(name = #long)]
                    A,
                }
            )),
            ["the event type name is 129 bytes long; the limit is 128"]
        );
    }
}
