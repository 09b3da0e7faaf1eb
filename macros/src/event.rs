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
//! payload to serde under the variant's serde name; a record of another schema version goes
//! through the variant's upcasters (`evolution.rs`), and old type names (aliases) and ignored
//! types get arms after the current names.

use std::collections::HashMap;

use proc_macro2::{Literal, TokenStream};
use quote::{quote, quote_spanned};
use syn::ext::IdentExt;
use syn::{Attribute, Data, DataEnum, DeriveInput, Fields, Ident, Variant};

use crate::attr;
use crate::case;
use crate::errors::Errors;
use crate::evolution::{self, Upcast, UpcastAttr};
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
    /// Removed types whose records readers skip.
    ignored: Vec<syn::LitStr>,
}

/// One variant of a valid event enum.
struct EventVariant<'a> {
    variant: &'a Variant,
    /// The stored type name, spanned at the `name = "..."` literal or the variant.
    type_name: syn::LitStr,
    version: u32,
    /// The name serde knows the variant by.
    serde_tag: String,
    /// The names it was stored under before.
    aliases: Vec<syn::LitStr>,
    /// Its upcasters, by the version they read.
    upcasts: Vec<Upcast>,
}

/// `#[event(...)]` on the enum or a variant.
#[derive(Default)]
struct EventAttr {
    name: Option<syn::LitStr>,
    version: Option<u32>,
    /// `aliases = [...]` (variants).
    aliases: Option<Vec<syn::LitStr>>,
    /// `upcast(...)`, each (variants).
    upcasts: Vec<UpcastAttr>,
    /// `ignore = [...]` (the enum).
    ignore: Option<Vec<syn::LitStr>>,
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
    let ignored = defaults.ignore.unwrap_or_default();
    let names: Vec<evolution::Names<'_>> = variants
        .iter()
        .map(|v| evolution::Names {
            variant: &v.variant.ident,
            type_name: v.type_name.value(),
            aliases: &v.aliases,
        })
        .collect();
    evolution::check_names(&names, &ignored, errors);
    if data.variants.is_empty() {
        errors.spanned(
            &input.ident,
            "an event enum needs at least one variant: the facts the aggregate records",
        );
    }
    Some(EventEnum {
        ident: &input.ident,
        variants,
        ignored,
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
        let version = own.version.unwrap_or(default_version);
        variants.push(EventVariant {
            variant,
            type_name,
            version,
            serde_tag,
            aliases: own.aliases.unwrap_or_default(),
            upcasts: evolution::upcasts(version, own.upcasts, errors),
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
        Level::Enum => {
            "`version` or `ignore` (type names, aliases and upcasters are set on variants)"
        }
        Level::Variant => "`name`, `version`, `aliases` or `upcast`",
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
            } else if level == Level::Variant && meta.path.is_ident("aliases") {
                let aliases = evolution::name_list(&meta, "AccountOpened", errors)?;
                attr::set_once(&mut parsed.aliases, aliases, &meta, "event", errors);
            } else if level == Level::Variant && meta.path.is_ident("upcast") {
                let upcast = evolution::upcast_attr(&meta, errors)?;
                parsed.upcasts.push(upcast);
            } else if level == Level::Enum && meta.path.is_ident("ignore") {
                let ignore = evolution::name_list(&meta, "AccountFrozen", errors)?;
                attr::set_once(&mut parsed.ignore, ignore, &meta, "event", errors);
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
    let tags: Vec<syn::LitStr> = model
        .variants
        .iter()
        .map(|v| syn::LitStr::new(&v.serde_tag, v.variant.ident.span()))
        .collect();
    // Serde bounds fail at the enum's name: "the trait bound `X: Serialize` is not satisfied".
    let encode = quote_spanned! {ident.span()=>
        ::keel::__private::encode_variant(self, ::keel::Event::event_type(self))
    };
    let decode = quote_spanned! {ident.span()=> ::keel::__private::decode_variant::<Self> };
    let bodies: Vec<TokenStream> = model
        .variants
        .iter()
        .zip(&tags)
        .map(|(v, tag)| evolution::decode_body(tag, v.version, &v.upcasts, &decode))
        .collect();
    // Old names come after every current one, so reading a current name compares no more
    // strings than before.
    let aliases = model
        .variants
        .iter()
        .zip(&bodies)
        .flat_map(|(v, body)| v.aliases.iter().map(move |alias| quote!(#alias => #body,)));
    let ignored = &model.ignored;
    let ignored_arms = ignored.iter().map(|name| {
        quote! {
            #name => ::core::result::Result::Err(::keel::__private::ignored(
                __event_type,
                __schema_version,
            )),
        }
    });
    let ignored_const = (!ignored.is_empty()).then(|| {
        quote! {
            const IGNORED_TYPES: &'static [&'static ::core::primitive::str] = &[#(#ignored),*];
        }
    });
    let infos =
        model.variants.iter().zip(&tags).map(|(v, tag)| {
            evolution::type_info(&v.type_name, v.version, tag, &v.aliases, &v.upcasts)
        });
    quote! {
        #[automatically_derived]
        impl ::keel::Event for #ident {
            const EVENT_TYPES: &'static [&'static ::core::primitive::str] = &[#(#names),*];

            const TYPE_INFO: &'static [::keel::event::EventTypeInfo] = &[#(#infos),*];

            #ignored_const

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
                    #(#names => #bodies,)*
                    #(#aliases)*
                    #(#ignored_arms)*
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

                const TYPE_INFO: &'static [::keel::event::EventTypeInfo] = &[
                    ::keel::event::EventTypeInfo::new("Opened", 2, "opened", &[], &[]),
                    ::keel::event::EventTypeInfo::new("account.deposited", 3, "deposited", &[], &[]),
                    ::keel::event::EventTypeInfo::new("Closed", 2, "gone", &[], &[])
                ];

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
                        "Opened" => if __schema_version == 2 {
                            ::keel::__private::decode_variant::<Self>(
                                "opened", __event_type, __schema_version, __payload)
                        } else {
                            ::keel::__private::decode_older::<Self>(
                                "opened", __event_type, __schema_version, 2, __payload, &[],)
                        },
                        "account.deposited" => if __schema_version == 3 {
                            ::keel::__private::decode_variant::<Self>(
                                "deposited", __event_type, __schema_version, __payload)
                        } else {
                            ::keel::__private::decode_older::<Self>(
                                "deposited", __event_type, __schema_version, 3, __payload, &[],)
                        },
                        "Closed" => if __schema_version == 2 {
                            ::keel::__private::decode_variant::<Self>(
                                "gone", __event_type, __schema_version, __payload)
                        } else {
                            ::keel::__private::decode_older::<Self>(
                                "gone", __event_type, __schema_version, 2, __payload, &[],)
                        },
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
                "unknown key `name` in `#[event(...)]`; expected `version` or `ignore` (type names, aliases and upcasters are set on variants)",
                "unknown key `colour` in `#[event(...)]`; expected `name`, `version`, `aliases` or `upcast`",
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
