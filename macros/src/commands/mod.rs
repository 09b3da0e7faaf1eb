//! `#[keel::commands]`: an aggregate's command handlers become its command enum, an
//! `impl ::keel::Command` for it and the aggregate's `impl ::keel::Handle`.
//!
//! ```text
//! #[keel::commands]
//! impl Account {
//!     /// Puts money in.
//!     pub fn deposit(&self, amount: u64) -> Result<AccountEvent, AccountError> { ... }
//!     pub async fn reserve(&self, services: &Services, qty: u32) -> Vec<AccountEvent> { ... }
//!     fn helper(&self) {}                       // not `pub`: stays a helper
//! }
//! ```
//!
//! gives `pub enum AccountCommand { Deposit { amount: u64 }, Reserve { qty: u32 } }` (serde:
//! `{"command":"deposit","amount":5}`), `Handle::Context = Services`, and re-emits the block.

mod expand;
mod parse;

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{ToTokens, quote};
use syn::{Ident, ImplItemFn, Type};

use crate::errors::Errors;

/// Expands `#[keel::commands]`. Always re-emits the impl block; any error comes with it, and
/// with whatever could still be generated, so the error the user sees is the one that matters.
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    if !args.is_empty() {
        errors.spanned(&args, "`#[keel::commands]` takes no arguments");
    }
    let generated = match syn::parse2::<syn::Item>(item.clone()) {
        Ok(syn::Item::Impl(block)) => {
            parse::parse(&block, &mut errors).map(|model| expand::generate(&model))
        }
        Ok(other) => {
            errors.push(syn::Error::new(first_span(&other), NOT_AN_IMPL));
            None
        }
        Err(error) => {
            errors.push(error);
            None
        }
    };
    let errors = errors.into_error().map(syn::Error::into_compile_error);
    quote! {
        #errors
        #generated
        #item
    }
}

const NOT_AN_IMPL: &str = "`#[keel::commands]` goes on an aggregate's `impl` block: \
                           `impl Account { pub fn deposit(&self, ...) -> ... }`";

/// The span of an item's first token after its attributes (its visibility or keyword).
fn first_span(item: &syn::Item) -> Span {
    let mut tokens = item.to_token_stream().into_iter().peekable();
    while let Some(TokenTree::Punct(punct)) = tokens.peek() {
        if punct.as_char() != '#' {
            break;
        }
        tokens.next(); // `#`
        tokens.next(); // `[...]`
    }
    tokens
        .next()
        .map_or_else(Span::call_site, |token| token.span())
}

/// A `#[keel::commands]` block, read: what the expansion is written from.
struct Commands<'a> {
    aggregate: &'a Ident,
    command: Ident,
    /// The `T` of the handlers' `&T` context parameter, if any takes one.
    context: Option<&'a Type>,
    handlers: Vec<Handler<'a>>,
}

/// One `pub fn`: a variant of the command enum.
struct Handler<'a> {
    method: &'a ImplItemFn,
    variant: Ident,
    /// The command's name: the method's, which is also its serde tag.
    name: String,
    fields: Vec<(&'a Ident, &'a Type)>,
    /// `None` when the method is no valid handler: its error is reported and its match arm
    /// is unreachable.
    call: Option<Call<'a>>,
}

/// How a valid handler is called.
struct Call<'a> {
    /// In the method's declared order.
    args: Vec<Arg>,
    is_async: bool,
    /// The return type, where a wrong one is reported.
    output: &'a Type,
}

/// One argument of a handler call.
enum Arg {
    /// The command field at this index.
    Field(usize),
    /// `__context`, where the handler takes its `&T`.
    Context,
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::*;

    #[test]
    fn block_level_errors_re_emit_only_the_block() {
        let cases = [
            (
                quote!(
                    impl<T> A<T> {
                        pub fn go(&self) -> E {
                            todo!()
                        }
                    }
                ),
                "`#[keel::commands]` does not support generic impl blocks: generic aggregates are not supported",
            ),
            (
                quote!(impl Tr for A { fn go(&self) -> E { todo!() } }),
                "`#[keel::commands]` goes on the aggregate's own `impl` block, not on a trait impl",
            ),
            (
                quote!(impl crate::A { pub fn go(&self) -> E { todo!() } }),
                "`#[keel::commands]` needs the aggregate's name alone as the impl's type: bring `A` into scope with `use` and write `impl A { ... }`",
            ),
            (
                quote!(impl Shelf<Book> { pub fn go(&self) -> E { todo!() } }),
                "`#[keel::commands]` does not support generic aggregates: `Shelf<Book>` has type arguments; an aggregate kind names one concrete type, `impl Shelf { ... }`",
            ),
            (
                quote!(impl &A { pub fn go(&self) -> E { todo!() } }),
                "`#[keel::commands]` needs the aggregate's name as the impl's type, not `&A`",
            ),
            (
                quote!(impl A { fn go(&self) -> E { todo!() } }),
                "`#[keel::commands]` found no command handlers in `impl A`: each `pub fn` taking `&self` becomes a command",
            ),
            (
                quote!(
                    #[derive(Debug)]
                    pub struct A;
                ),
                NOT_AN_IMPL,
            ),
        ];
        for (item, message) in cases {
            let out = expand(TokenStream::new(), item.clone());
            assert_eq!(crate::errors::messages(Ok(out.clone())), [message]);
            assert!(!out.to_string().contains("enum"), "{out}");
            assert!(out.to_string().ends_with(&item.to_string()), "{out}");
        }
    }

    #[test]
    fn arguments_are_rejected() {
        let out = expand(
            quote!(x),
            quote!(impl A { pub fn go(&self) -> E { todo!() } }),
        );
        assert_eq!(
            crate::errors::messages(Ok(out)),
            ["`#[keel::commands]` takes no arguments"]
        );
    }
}
