//! How an event enum declares its history: upcasters, old type names and removed types.
//!
//! ```text
//! #[derive(Event, Serialize, Deserialize)]
//! #[event(ignore = ["Frozen"])]                  // removed: readers skip its records
//! enum AccountEvent {
//!     #[event(version = 3, aliases = ["AccountOpened"],
//!             upcast(from = 1, with = v1_to_v2), upcast(from = 2, with = v2_to_v3))]
//!     Opened { owner: String, currency: String },
//! }
//! ```
//!
//! Parsing (`upcast(...)`, name lists), validation (a chain with no gap up to the variant's
//! version; names unique across type names, aliases and ignored types) and the expansion of
//! a variant's decode arm live here; `event.rs` calls them.

use std::collections::HashMap;

use proc_macro2::{Literal, Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::meta::ParseNestedMeta;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Ident, Lit, LitInt, LitStr};

use crate::attr;
use crate::errors::Errors;
use crate::valid;

/// `upcast(from = N, with = path)`, as written.
pub(crate) struct UpcastAttr {
    /// The `upcast` key, for errors about the whole entry.
    span: Span,
    from: Option<(u32, LitInt)>,
    with: Option<syn::Path>,
    /// Whether something about it was already reported (so a missing key is not, again).
    reported: bool,
}

/// A checked upcaster: from a version to the next, through a function.
pub(crate) struct Upcast {
    pub(crate) from: u32,
    pub(crate) with: syn::Path,
}

/// Parses `upcast(from = N, with = path)`; every bad key is reported and parsing goes on.
///
/// # Errors
///
/// When the tokens do not parse at all.
pub(crate) fn upcast_attr(
    meta: &ParseNestedMeta<'_>,
    errors: &mut Errors,
) -> syn::Result<UpcastAttr> {
    let mut parsed = UpcastAttr {
        span: meta.path.span(),
        from: None,
        with: None,
        reported: false,
    };
    if !meta.input.peek(syn::token::Paren) {
        errors.push(meta.error(
            "expected `upcast(from = N, with = path::to_fn)`: the function turning the JSON of \
             version N into version N + 1",
        ));
        parsed.reported = true;
        return Ok(parsed);
    }
    meta.parse_nested_meta(|inner| {
        if inner.path.is_ident("from") {
            match errors.ok(from_version(&inner)) {
                Some(from) => attr::set_once(&mut parsed.from, from, &inner, "event", errors),
                None => parsed.reported = true,
            }
        } else if inner.path.is_ident("with") {
            match errors.ok(function_path(&inner)) {
                Some(path) => attr::set_once(&mut parsed.with, path, &inner, "event", errors),
                None => parsed.reported = true,
            }
        } else {
            attr::unknown_key(
                &inner,
                "event",
                "`from` or `with` inside `upcast(...)`",
                errors,
            )?;
        }
        Ok(())
    })?;
    Ok(parsed)
}

/// `from = N`: the version an upcaster reads, an integer from 1.
fn from_version(meta: &ParseNestedMeta<'_>) -> syn::Result<(u32, LitInt)> {
    let expr: Expr = meta.value()?.parse()?;
    let Expr::Lit(ExprLit {
        lit: Lit::Int(int), ..
    }) = &expr
    else {
        return Err(syn::Error::new_spanned(
            expr,
            "expected the schema version this function upcasts from: an integer, such as \
             `from = 1`",
        ));
    };
    match int.base10_parse::<u32>() {
        Ok(0) => Err(syn::Error::new_spanned(
            int,
            "schema versions start at 1: there is no version 0 to upcast from",
        )),
        Ok(from) => Ok((from, int.clone())),
        Err(_) => Err(syn::Error::new_spanned(
            int,
            "the schema version must fit in a `u32`",
        )),
    }
}

/// `with = path::to_fn`.
fn function_path(meta: &ParseNestedMeta<'_>) -> syn::Result<syn::Path> {
    match meta.value()?.parse::<Expr>()? {
        Expr::Path(path) if path.qself.is_none() => Ok(path.path),
        other => Err(syn::Error::new_spanned(
            other,
            "expected the path of a function, such as `with = upcast::opened_v1`: \
             `fn(serde_json::Value) -> serde_json::Value`",
        )),
    }
}

/// `key = ["A", "B"]`: a list of event type names, each checked.
///
/// # Errors
///
/// When the value does not parse as an expression; what is wrong with a parsed one is
/// recorded in `errors`.
pub(crate) fn name_list(
    meta: &ParseNestedMeta<'_>,
    example: &str,
    errors: &mut Errors,
) -> syn::Result<Vec<LitStr>> {
    let key = attr::key(meta);
    let expr: Expr = meta.value()?.parse()?;
    let Expr::Array(array) = expr else {
        errors.spanned(
            &expr,
            format_args!("expected a list of event type names: `{key} = [\"{example}\"]`"),
        );
        return Ok(Vec::new());
    };
    let mut names = Vec::with_capacity(array.elems.len());
    for elem in array.elems {
        match elem {
            Expr::Lit(ExprLit {
                lit: Lit::Str(lit), ..
            }) => match valid::event_type_name(&lit.value()) {
                Ok(()) => names.push(lit),
                Err(message) => errors.spanned(&lit, message),
            },
            other => errors.spanned(
                other,
                format_args!("expected an event type name, a string literal: `\"{example}\"`"),
            ),
        }
    }
    Ok(names)
}

/// Checks a variant's upcasters against its version: each `from` below it, given once,
/// and a chain with no gap from each up to it. Returns the good ones, by `from`.
pub(crate) fn upcasts(version: u32, parsed: Vec<UpcastAttr>, errors: &mut Errors) -> Vec<Upcast> {
    let mut checked: Vec<(Upcast, LitInt)> = Vec::with_capacity(parsed.len());
    for upcast in parsed {
        let (from, with) = match (upcast.from, upcast.with) {
            (Some(from), Some(with)) => (from, with),
            // A bad value for the missing key was reported already.
            _ if upcast.reported => continue,
            (Some((from, _)), None) => {
                errors.push(syn::Error::new(
                    upcast.span,
                    format_args!(
                        "missing `with = path::to_fn` in `upcast(...)`: the function turning \
                         the JSON of version {from} into version {}",
                        from + 1
                    ),
                ));
                continue;
            }
            (None, _) => {
                errors.push(syn::Error::new(
                    upcast.span,
                    "missing `from = N` in `upcast(...)`: the version its function reads",
                ));
                continue;
            }
        };
        let (from, lit) = from;
        if from >= version {
            errors.spanned(
                &lit,
                format_args!(
                    "`upcast(from = {from})` makes version {}, but this variant's version is \
                     {version}: upcasters lead up to the current version, so `from` is below it \
                     (bump `version` when the payload changes)",
                    from + 1
                ),
            );
        } else if checked.iter().any(|(c, _)| c.from == from) {
            errors.spanned(
                &lit,
                format_args!(
                    "a second upcaster from version {from}: each version has one, turning it \
                     into version {}",
                    from + 1
                ),
            );
        } else {
            checked.push((Upcast { from, with }, lit));
        }
    }
    checked.sort_by_key(|(c, _)| c.from);
    // A gap after `from` leaves its records short of the current version.
    for (upcast, lit) in &checked {
        let next = upcast.from + 1;
        if next < version && !checked.iter().any(|(c, _)| c.from == next) {
            errors.spanned(
                lit,
                format_args!(
                    "the chain from version {} stops at version {next}: add `upcast(from = \
                     {next}, with = ...)` so records of version {} reach version {version}",
                    upcast.from, upcast.from
                ),
            );
        }
    }
    checked.into_iter().map(|(c, _)| c).collect()
}

/// The names a variant is read by, for the cross-checks.
pub(crate) struct Names<'a> {
    pub(crate) variant: &'a Ident,
    pub(crate) type_name: String,
    pub(crate) aliases: &'a [LitStr],
}

/// Checks that aliases and ignored types name nothing else the enum reads: every name
/// leads to one variant, or is skipped.
pub(crate) fn check_names(variants: &[Names<'_>], ignored: &[LitStr], errors: &mut Errors) {
    let mut owner: HashMap<String, (&Ident, &str)> = variants
        .iter()
        .map(|v| (v.type_name.clone(), (v.variant, "the type name")))
        .collect();
    for v in variants {
        for alias in v.aliases {
            let name = alias.value();
            if let Some((variant, what)) = owner.get(&name) {
                let whose = if *variant == v.variant {
                    "this variant's".to_owned()
                } else {
                    format!("variant `{variant}`'s")
                };
                errors.spanned(
                    alias,
                    format_args!(
                        "`{name}` is already {whose} {}: an alias is an old name no other \
                         type has",
                        what.trim_start_matches("the ")
                    ),
                );
            } else {
                owner.insert(name, (v.variant, "an alias"));
            }
        }
    }
    let mut seen: Vec<String> = Vec::with_capacity(ignored.len());
    for lit in ignored {
        let name = lit.value();
        if let Some((variant, what)) = owner.get(&name) {
            errors.spanned(
                lit,
                format_args!(
                    "`{name}` is {what} of variant `{variant}`: this enum reads it, so it cannot \
                     be ignored"
                ),
            );
        } else if seen.contains(&name) {
            errors.spanned(lit, format_args!("`{name}` is ignored twice"));
        } else {
            seen.push(name);
        }
    }
}

/// A variant's decode: straight from the bytes at the current version, else through its
/// upcasters (which also refuse a newer version).
pub(crate) fn decode_body(
    tag: &LitStr,
    version: u32,
    upcasts: &[Upcast],
    decode: &TokenStream,
) -> TokenStream {
    let version = Literal::u32_unsuffixed(version);
    let steps = upcasts.iter().map(|Upcast { from, with }| {
        let from = Literal::u32_unsuffixed(*from);
        // Type errors (a wrong signature) land on the user's path.
        let call = quote_spanned! {with.span()=>
            (|__value: ::keel::__private::serde_json::Value| {
                ::keel::__private::upcast_output(#with(__value))
            }) as ::keel::__private::Upcaster
        };
        quote!((#from, #call))
    });
    quote! {
        if __schema_version == #version {
            #decode(#tag, __event_type, __schema_version, __payload)
        } else {
            ::keel::__private::decode_older::<Self>(
                #tag,
                __event_type,
                __schema_version,
                #version,
                __payload,
                &[#(#steps),*],
            )
        }
    }
}

/// `::keel::event::EventTypeInfo::new(...)` for one variant.
pub(crate) fn type_info(
    name: &LitStr,
    version: u32,
    tag: &LitStr,
    aliases: &[LitStr],
    upcasts: &[Upcast],
) -> TokenStream {
    let version = Literal::u32_unsuffixed(version);
    let froms = upcasts.iter().map(|u| Literal::u32_unsuffixed(u.from));
    quote! {
        ::keel::event::EventTypeInfo::new(#name, #version, #tag, &[#(#aliases),*], &[#(#froms),*])
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    fn errors(input: proc_macro2::TokenStream) -> Vec<String> {
        crate::errors::messages(crate::event::derive(input))
    }

    #[test]
    fn upcasters_expand_into_the_decode_arm_and_the_type_info() {
        let out = crate::event::derive(quote! {
            #[event(ignore = ["Frozen"])]
            enum E {
                #[event(version = 3, aliases = ["Old"], upcast(from = 2, with = m::two), upcast(from = 1, with = one))]
                A { x: u8 },
            }
        })
        .expect("expands")
        .to_string();
        assert!(out.contains("if __schema_version == 3"), "{out}");
        assert!(
            out.contains(":: keel :: __private :: upcast_output (m :: two (__value))"),
            "{out}"
        );
        assert!(
            out.contains("EventTypeInfo :: new (\"A\" , 3 , \"A\" , & [\"Old\"] , & [1 , 2])"),
            "{out}"
        );
        assert!(
            out.contains("const IGNORED_TYPES : & 'static [& 'static :: core :: primitive :: str] = & [\"Frozen\"]"),
            "{out}"
        );
        assert!(out.contains("\"Old\" => if __schema_version == 3"), "{out}");
        assert!(
            out.contains(
                "\"Frozen\" => :: core :: result :: Result :: Err (:: keel :: __private :: ignored"
            ),
            "{out}"
        );
    }

    #[test]
    fn every_misuse_is_reported_at_once() {
        let found = errors(quote! {
            #[event(ignore = ["A", "Gone", "Gone", "has space"], upcast(from = 1, with = f))]
            enum E {
                #[event(version = 3, aliases = "Old", upcast(from = 1, with = f), upcast(from = 1, with = g))]
                A,
                #[event(version = 2, upcast(from = 2, with = f), upcast(from = 0, with = f), upcast(with = f), upcast)]
                B,
                #[event(version = 4, upcast(from = 1, with = |v| v), upcast(from = 3, with = f, colour = 1), aliases = ["B", "C", "C", 7])]
                C,
                #[event(version = 3, upcast(from = 1, with = f))]
                D,
            }
        });
        assert_eq!(
            found,
            [
                "the event type name `has space` contains ' ': only ASCII letters, digits, `-`, `_`, `.` and `:` are allowed",
                "unknown key `upcast` in `#[event(...)]`; expected `version` or `ignore` (type names, aliases and upcasters are set on variants)",
                "expected a list of event type names: `aliases = [\"AccountOpened\"]`",
                "a second upcaster from version 1: each version has one, turning it into version 2",
                "the chain from version 1 stops at version 2: add `upcast(from = 2, with = ...)` so records of version 1 reach version 3",
                "schema versions start at 1: there is no version 0 to upcast from",
                "expected `upcast(from = N, with = path::to_fn)`: the function turning the JSON of version N into version N + 1",
                "`upcast(from = 2)` makes version 3, but this variant's version is 2: upcasters lead up to the current version, so `from` is below it (bump `version` when the payload changes)",
                "missing `from = N` in `upcast(...)`: the version its function reads",
                "expected the path of a function, such as `with = upcast::opened_v1`: `fn(serde_json::Value) -> serde_json::Value`",
                "unknown key `colour` in `#[event(...)]`; expected `from` or `with` inside `upcast(...)`",
                "expected an event type name, a string literal: `\"AccountOpened\"`",
                "the chain from version 1 stops at version 2: add `upcast(from = 2, with = ...)` so records of version 1 reach version 3",
                "`B` is already variant `B`'s type name: an alias is an old name no other type has",
                "`C` is already this variant's type name: an alias is an old name no other type has",
                "`C` is already this variant's type name: an alias is an old name no other type has",
                "`A` is the type name of variant `A`: this enum reads it, so it cannot be ignored",
                "`Gone` is ignored twice",
            ]
        );
    }
}
