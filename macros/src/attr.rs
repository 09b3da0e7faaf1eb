//! Attribute parsing shared by the macros: `parse_nested_meta` helpers that reject unknown and
//! duplicate keys at their token, and the few `#[serde(...)]` keys the derives must honour.
//!
//! Keys are parsed so that one bad key does not hide the next: a helper consumes the key's
//! value, records what is wrong in [`Errors`] and lets parsing go on.

use proc_macro2::TokenTree;
use syn::meta::ParseNestedMeta;
use syn::{Attribute, Expr, ExprLit, Lit, LitStr, Token, token};

use crate::errors::Errors;

/// The key of a nested meta item, as written: `version`.
pub(crate) fn key(meta: &ParseNestedMeta<'_>) -> String {
    meta.path.get_ident().map_or_else(
        || quote::ToTokens::to_token_stream(&meta.path).to_string(),
        ToString::to_string,
    )
}

/// Stores the value of a key that may be given once; a second occurrence is an error at its
/// token (the first stays in force).
pub(crate) fn set_once<T>(
    slot: &mut Option<T>,
    value: T,
    meta: &ParseNestedMeta<'_>,
    attribute: &str,
    errors: &mut Errors,
) {
    if slot.is_some() {
        errors.push(meta.error(format_args!(
            "duplicate key `{}` in `#[{attribute}(...)]`",
            key(meta)
        )));
    } else {
        *slot = Some(value);
    }
}

/// Rejects a key the attribute does not know, after consuming its value so parsing goes on.
///
/// # Errors
///
/// When the value itself does not parse; then parsing of this attribute stops.
pub(crate) fn unknown_key(
    meta: &ParseNestedMeta<'_>,
    attribute: &str,
    expected: &str,
    errors: &mut Errors,
) -> syn::Result<()> {
    skip_value(meta)?;
    errors.push(meta.error(format_args!(
        "unknown key `{}` in `#[{attribute}(...)]`; expected {expected}",
        key(meta)
    )));
    Ok(())
}

/// If `meta`'s key is a near miss of one of `keys` (`events` for `event`, `Kind` for `kind`,
/// `evnet`), reports it as such ("did you mean `event`?") and returns the key meant, for the
/// caller to read the value as that key's: so one typo gives one error, with no knock-on
/// "missing key" error nor errors from the code using the type. The value is left unread.
pub(crate) fn misspelt(
    meta: &ParseNestedMeta<'_>,
    attribute: &str,
    keys: &[&'static str],
    errors: &mut Errors,
) -> Option<&'static str> {
    let written = key(meta);
    let meant = keys.iter().copied().find(|k| near_miss(&written, k))?;
    errors.push(meta.error(format_args!(
        "unknown key `{written}` in `#[{attribute}(...)]`; did you mean `{meant}`?"
    )));
    Some(meant)
}

/// Whether `written` is probably a typo of `key`: the same but for case or a trailing `s`,
/// or one edit away (a letter added, dropped or changed, or two neighbours swapped).
fn near_miss(written: &str, key: &str) -> bool {
    let written = written.to_ascii_lowercase();
    written.strip_suffix('s') == Some(key) || one_edit(written.as_bytes(), key.as_bytes())
}

/// Whether `a` and `b` differ by at most one edit.
fn one_edit(a: &[u8], b: &[u8]) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    let same = short.iter().zip(long).take_while(|(x, y)| x == y).count();
    let (Some(short_rest), Some(long_rest)) = (short.get(same..), long.get(same..)) else {
        return false;
    };
    match long.len() - short.len() {
        // Changed: the rests agree after their first byte; swapped: `xy…` against `yx…`.
        0 => {
            short_rest.get(1..) == long_rest.get(1..)
                || matches!(
                    (short_rest, long_rest),
                    ([x, y, a @ ..], [y2, x2, b @ ..]) if x == x2 && y == y2 && a == b
                )
        }
        1 => Some(short_rest) == long_rest.get(1..),
        _ => false,
    }
}

/// Consumes a key's value, whatever it is: `= expr`, `(...)` or nothing.
fn skip_value(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        meta.value()?.parse::<Expr>()?;
    } else if meta.input.peek(token::Paren) {
        meta.input.parse::<TokenTree>()?;
    }
    Ok(())
}

/// The value of `key = "..."`.
///
/// # Errors
///
/// At the value when it is not a string literal (the value is consumed all the same).
pub(crate) fn lit_str(meta: &ParseNestedMeta<'_>) -> syn::Result<LitStr> {
    match meta.value()?.parse::<Expr>()? {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => Ok(lit),
        other => Err(syn::Error::new_spanned(
            other,
            format_args!("expected a string literal: `{} = \"...\"`", key(meta)),
        )),
    }
}

/// The value of `version = N`: a schema version, an integer from 1.
///
/// # Errors
///
/// At the value when it is not an integer literal, is 0 or does not fit in a `u32`.
pub(crate) fn version(meta: &ParseNestedMeta<'_>) -> syn::Result<u32> {
    let expr: Expr = meta.value()?.parse()?;
    let Expr::Lit(ExprLit {
        lit: Lit::Int(int), ..
    }) = &expr
    else {
        return Err(syn::Error::new_spanned(
            expr,
            "expected a schema version: an integer from 1, such as `version = 2`",
        ));
    };
    match int.base10_parse::<u32>() {
        Ok(0) => Err(syn::Error::new_spanned(
            int,
            "schema versions start at 1: `version = 0` is not a version",
        )),
        Ok(version) => Ok(version),
        Err(_) => Err(syn::Error::new_spanned(
            int,
            "the schema version must fit in a `u32`",
        )),
    }
}

/// Reports every `#[name]` attribute in `attrs`: the helper attribute has no meaning there.
pub(crate) fn reject(attrs: &[Attribute], name: &str, message: &str, errors: &mut Errors) {
    for attr in attrs.iter().filter(|attr| attr.path().is_ident(name)) {
        errors.spanned(attr, message);
    }
}

/// The `///` comments (`#[doc]` attributes) among `attrs`.
pub(crate) fn docs(attrs: &[Attribute]) -> impl Iterator<Item = &Attribute> {
    attrs.iter().filter(|attr| attr.path().is_ident("doc"))
}

/// The enum-level `#[serde(...)]` keys an event enum's derive must honour.
#[derive(Default)]
pub(crate) struct SerdeEnum {
    /// `rename_all = "..."` (its deserialize side): the rule serde applies to variant names.
    pub(crate) rename_all: Option<String>,
    /// One error per `tag`, `content` or `untagged` key, at its tokens: events are stored as
    /// their variant's content, which only serde's default representation gives.
    pub(crate) not_externally_tagged: Vec<syn::Error>,
}

/// Reads the enum-level `#[serde(...)]` attributes. Lenient: other keys, and attributes that
/// do not parse, are serde's business and left for serde to report.
pub(crate) fn serde_enum(attrs: &[Attribute]) -> SerdeEnum {
    let mut serde = SerdeEnum::default();
    for attr in attrs.iter().filter(|attr| attr.path().is_ident("serde")) {
        // A malformed attribute is reported by serde's own derive; stop reading it here.
        let _malformed = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("rename_all") {
                if let Some(rule) = deserialize_side(&meta)? {
                    serde.rename_all = Some(rule.value());
                }
            } else if ["tag", "content", "untagged"]
                .iter()
                .any(|key| meta.path.is_ident(key))
            {
                skip_value(&meta)?;
                serde.not_externally_tagged.push(meta.error(format_args!(
                    "events use serde's default externally tagged representation: remove `{}`",
                    key(&meta)
                )));
            } else {
                skip_value(&meta)?;
            }
            Ok(())
        });
    }
    serde
}

/// The `#[serde(...)]` keys on an event variant the Event derive must honour.
#[derive(Default)]
pub(crate) struct SerdeVariant {
    /// The name serde deserialises the variant under, from `rename = "..."` (or its
    /// deserialize side).
    pub(crate) rename: Option<LitStr>,
    /// One error per `untagged` or `skip*` key, at its tokens: an event variant must be stored
    /// as its content and read back.
    pub(crate) refused: Vec<syn::Error>,
}

/// Reads a variant's `#[serde(...)]` attributes. Lenient, as [`serde_enum`].
pub(crate) fn serde_variant(attrs: &[Attribute]) -> SerdeVariant {
    let mut serde = SerdeVariant::default();
    for attr in attrs.iter().filter(|attr| attr.path().is_ident("serde")) {
        let _malformed = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("rename") {
                if let Some(name) = deserialize_side(&meta)? {
                    serde.rename = Some(name);
                }
            } else if meta.path.is_ident("untagged") {
                serde.refused.push(meta.error(
                    "events use serde's default externally tagged representation: remove \
                     `untagged`",
                ));
            } else if ["skip", "skip_serializing", "skip_deserializing"]
                .iter()
                .any(|key| meta.path.is_ident(key))
            {
                skip_value(&meta)?;
                serde.refused.push(meta.error(format_args!(
                    "every event must be stored and read back: remove `{}`",
                    key(&meta)
                )));
            } else {
                skip_value(&meta)?;
            }
            Ok(())
        });
    }
    serde
}

/// `key = "x"` or `key(serialize = "y", deserialize = "x")`: the `"x"`, if given.
fn deserialize_side(meta: &ParseNestedMeta<'_>) -> syn::Result<Option<LitStr>> {
    if meta.input.peek(Token![=]) {
        return lit_str(meta).map(Some);
    }
    let mut found = None;
    if meta.input.peek(token::Paren) {
        meta.parse_nested_meta(|inner| {
            if inner.path.is_ident("deserialize") {
                found = Some(lit_str(&inner)?);
            } else {
                skip_value(&inner)?;
            }
            Ok(())
        })?;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use syn::parse_quote;

    use super::*;

    fn messages(errors: Errors) -> Vec<String> {
        errors
            .into_error()
            .map(|e| e.into_iter().map(|e| e.to_string()).collect())
            .unwrap_or_default()
    }

    /// Parses `#[test(...)]` the way the derives do, collecting keys `a` (string) and
    /// `version`.
    fn parse(attr: &Attribute) -> (Option<String>, Option<u32>, Vec<String>) {
        let (mut a, mut found_version, mut errors) = (None, None, Errors::default());
        let parsed = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("a") {
                if let Some(lit) = errors.ok(lit_str(&meta)) {
                    set_once(&mut a, lit.value(), &meta, "test", &mut errors);
                }
            } else if meta.path.is_ident("version") {
                if let Some(v) = errors.ok(version(&meta)) {
                    set_once(&mut found_version, v, &meta, "test", &mut errors);
                }
            } else {
                unknown_key(&meta, "test", "`a` or `version`", &mut errors)?;
            }
            Ok(())
        });
        errors.ok(parsed);
        (a, found_version, messages(errors))
    }

    #[test]
    fn near_misses_are_typos_of_a_key() {
        for (written, key) in [
            ("events", "event"),
            ("Event", "event"),
            ("evnet", "event"),
            ("evnt", "event"),
            ("eventt", "event"),
            ("evant", "event"),
            ("kinds", "kind"),
            ("KIND", "kind"),
            ("errors", "error"),
        ] {
            assert!(near_miss(written, key), "{written} for {key}");
        }
        for (written, key) in [
            ("id", "kind"),
            ("topic", "kind"),
            ("error", "event"),
            ("evvent_", "event"),
            ("tneve", "event"),
            ("", "kind"),
        ] {
            assert!(!near_miss(written, key), "{written} is no {key}");
        }
    }

    #[test]
    fn keys_are_read() {
        let attr: Attribute = parse_quote!(#[test(a = "x", version = 3)]);
        assert_eq!(parse(&attr), (Some("x".into()), Some(3), vec![]));
    }

    #[test]
    fn every_bad_key_is_reported_and_parsing_goes_on() {
        let attr: Attribute = parse_quote!(#[test(
            a = "x", b = 1 + 2, c(d, e), a = "y", version = 0, version = "2", f, version = 4
        )]);
        let (a, version, errors) = parse(&attr);
        assert_eq!((a.as_deref(), version), (Some("x"), Some(4)));
        assert_eq!(
            errors,
            [
                "unknown key `b` in `#[test(...)]`; expected `a` or `version`",
                "unknown key `c` in `#[test(...)]`; expected `a` or `version`",
                "duplicate key `a` in `#[test(...)]`",
                "schema versions start at 1: `version = 0` is not a version",
                "expected a schema version: an integer from 1, such as `version = 2`",
                "unknown key `f` in `#[test(...)]`; expected `a` or `version`",
            ]
        );
    }

    #[test]
    fn versions_must_fit_a_u32() {
        let attr: Attribute = parse_quote!(#[test(version = 4294967296)]);
        assert_eq!(parse(&attr).2, ["the schema version must fit in a `u32`"]);
        let attr: Attribute = parse_quote!(#[test(a = 1)]);
        assert_eq!(parse(&attr).2, ["expected a string literal: `a = \"...\"`"]);
    }

    #[test]
    fn serde_keys_are_read_leniently() {
        let attrs: Vec<Attribute> = vec![
            parse_quote!(#[serde(deny_unknown_fields, bound(serialize = "T: X"))]),
            parse_quote!(#[serde(rename_all(serialize = "UPPERCASE", deserialize = "kebab-case"))]),
            parse_quote!(#[serde(tag = "type", content = "data")]),
            parse_quote!(#[serde(untagged)]),
            parse_quote!(#[serde(this is not a meta list)]),
            parse_quote!(#[doc = "not serde"]),
        ];
        let serde = serde_enum(&attrs);
        assert_eq!(serde.rename_all.as_deref(), Some("kebab-case"));
        let errors: Vec<String> = serde
            .not_externally_tagged
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errors,
            [
                "events use serde's default externally tagged representation: remove `tag`",
                "events use serde's default externally tagged representation: remove `content`",
                "events use serde's default externally tagged representation: remove `untagged`",
            ]
        );
    }

    #[test]
    fn variant_renames_take_the_deserialize_side() {
        let rename = |attr: Attribute| serde_variant(&[attr]).rename.map(|lit| lit.value());
        assert_eq!(
            rename(parse_quote!(#[serde(rename = "x")])).as_deref(),
            Some("x")
        );
        assert_eq!(
            rename(parse_quote!(#[serde(alias = "z", rename(serialize = "s", deserialize = "d"))]))
                .as_deref(),
            Some("d")
        );
        assert_eq!(
            rename(parse_quote!(#[serde(rename(serialize = "s"))])),
            None
        );
        assert_eq!(rename(parse_quote!(#[serde(with = "m")])), None);
    }

    #[test]
    fn variants_that_cannot_round_trip_are_refused() {
        let attrs: Vec<Attribute> = vec![
            parse_quote!(#[serde(untagged, alias = "x")]),
            parse_quote!(#[serde(skip_serializing_if = "f", skip)]),
            parse_quote!(#[serde(skip_deserializing, rename = "y")]),
        ];
        let serde = serde_variant(&attrs);
        assert_eq!(serde.rename.map(|lit| lit.value()).as_deref(), Some("y"));
        let errors: Vec<String> = serde.refused.iter().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            [
                "events use serde's default externally tagged representation: remove `untagged`",
                "every event must be stored and read back: remove `skip`",
                "every event must be stored and read back: remove `skip_deserializing`",
            ]
        );
    }

    #[test]
    fn helper_attributes_out_of_place_are_rejected() {
        let attrs: Vec<Attribute> = vec![
            parse_quote!(#[doc = "x"]),
            parse_quote!(#[event(name = "x")]),
        ];
        let mut errors = Errors::default();
        reject(&attrs, "event", "not here", &mut errors);
        assert_eq!(messages(errors), ["not here"]);
        assert_eq!(docs(&attrs).count(), 1);
    }
}
