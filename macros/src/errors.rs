//! Collects every error a macro finds, so the user sees them all in one compile (serde's
//! `ctxt.rs`).

use std::fmt::Display;

use quote::ToTokens;

/// The errors found so far, combined into one [`syn::Error`].
#[derive(Default)]
pub(crate) struct Errors {
    combined: Option<syn::Error>,
}

impl Errors {
    /// Records an error.
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.combined {
            Some(combined) => combined.combine(error),
            None => self.combined = Some(error),
        }
    }

    /// Records an error spanning `tokens`.
    pub(crate) fn spanned(&mut self, tokens: impl ToTokens, message: impl Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    /// Records every error of `other`.
    pub(crate) fn append(&mut self, other: Errors) {
        if let Some(error) = other.combined {
            self.push(error);
        }
    }

    /// Records the error of `result`, if any, and passes its value on.
    pub(crate) fn ok<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        result.map_err(|error| self.push(error)).ok()
    }

    /// Whether nothing went wrong.
    pub(crate) fn is_empty(&self) -> bool {
        self.combined.is_none()
    }

    /// The errors as one, or `None` when there were none.
    pub(crate) fn into_error(self) -> Option<syn::Error> {
        self.combined
    }
}

/// The messages of every error a macro expansion reports: those of an `Err`, or those of the
/// `compile_error!`s in an `Ok` fallback expansion.
#[cfg(test)]
pub(crate) fn messages(expansion: syn::Result<proc_macro2::TokenStream>) -> Vec<String> {
    use proc_macro2::TokenTree;

    fn scan(tokens: proc_macro2::TokenStream, found: &mut Vec<String>) {
        let trees: Vec<TokenTree> = tokens.into_iter().collect();
        for (i, tree) in trees.iter().enumerate() {
            match tree {
                TokenTree::Ident(ident) if ident == "compile_error" => {
                    if let Some(TokenTree::Group(args)) = trees.get(i + 2)
                        && let Ok(lit) = syn::parse2::<syn::LitStr>(args.stream())
                    {
                        found.push(lit.value());
                    }
                }
                TokenTree::Group(group) => scan(group.stream(), found),
                _ => {}
            }
        }
    }

    match expansion {
        Ok(tokens) => {
            let mut found = Vec::new();
            scan(tokens, &mut found);
            found
        }
        Err(error) => error.into_iter().map(|e| e.to_string()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use proc_macro2::Span;

    use super::*;

    #[test]
    fn every_error_is_kept() {
        let mut errors = Errors::default();
        assert!(errors.is_empty());
        errors.push(syn::Error::new(Span::call_site(), "first"));
        errors.spanned(quote::quote!(x), "second");
        assert_eq!(
            errors.ok::<()>(Err(syn::Error::new(Span::call_site(), "third"))),
            None
        );
        let mut more = Errors::default();
        more.spanned(quote::quote!(y), "fourth");
        errors.append(more);
        errors.append(Errors::default());
        let all = errors.into_error().expect("four errors");
        let messages: Vec<String> = all.into_iter().map(|e| e.to_string()).collect();
        assert_eq!(messages, ["first", "second", "third", "fourth"]);
    }
}
