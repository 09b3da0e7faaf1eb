//! Reads a `#[keel::commands]` block into [`Commands`], reporting every problem at its tokens.

use std::collections::HashMap;

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{ToTokens, format_ident};
use syn::ext::IdentExt;
use syn::{FnArg, Ident, ImplItem, ImplItemFn, ItemImpl, Pat, ReturnType, Type, Visibility};

use super::{Arg, Call, Commands, Handler};
use crate::case;
use crate::errors::Errors;

const TAKE_SHARED_SELF: &str = "command handlers take `&self`: they decide, they do not mutate; \
                                state changes come from applying events";

/// Reads the block. `None` after a block-level error (a trait impl, generics, no handlers):
/// then only the block is re-emitted. Handler errors leave a model to generate from.
pub(super) fn parse<'a>(block: &'a ItemImpl, errors: &mut Errors) -> Option<Commands<'a>> {
    let mut usable = true; // false after a block-level error: nothing is generated
    if let Some((_, path, _)) = &block.trait_ {
        errors.spanned(
            path,
            "`#[keel::commands]` goes on the aggregate's own `impl` block, not on a trait impl",
        );
        usable = false;
    }
    if !block.generics.params.is_empty() || block.generics.where_clause.is_some() {
        errors.spanned(
            generics_tokens(&block.generics),
            "`#[keel::commands]` does not support generic impl blocks: generic aggregates are \
             not supported",
        );
        usable = false;
    }
    if !usable {
        return None;
    }
    let aggregate = match &*block.self_ty {
        Type::Path(path) if path.qself.is_none() => path.path.get_ident(),
        _ => None,
    };
    let Some(aggregate) = aggregate else {
        errors.spanned(&block.self_ty, not_a_name(&block.self_ty));
        return None;
    };
    let methods: Vec<&ImplItemFn> = block
        .items
        .iter()
        .filter_map(|item| match item {
            ImplItem::Fn(method) if matches!(method.vis, Visibility::Public(_)) => Some(method),
            _ => None,
        })
        .collect();
    if methods.is_empty() {
        errors.spanned(
            &block.self_ty,
            format_args!(
                "`#[keel::commands]` found no command handlers in `impl {aggregate}`: each \
                 `pub fn` taking `&self` becomes a command"
            ),
        );
        return None;
    }
    let mut commands = Commands {
        aggregate,
        command: format_ident!("{}Command", aggregate, span = aggregate.span()),
        context: None,
        handlers: Vec::with_capacity(methods.len()),
    };
    let mut variants: HashMap<String, &Ident> = HashMap::new();
    for method in methods {
        let mut local = Errors::default();
        let Some(mut handler) = handler(method, &mut commands.context, &mut local) else {
            errors.append(local);
            continue;
        };
        if let Some(first) = variants.get(&handler.variant.to_string()) {
            local.spanned(
                &method.sig.ident,
                format_args!(
                    "`{}` and `{first}` both become the command `{}`: rename one",
                    method.sig.ident, handler.variant
                ),
            );
            errors.append(local);
            continue;
        }
        variants.insert(handler.variant.to_string(), &method.sig.ident);
        if !local.is_empty() {
            errors.append(local);
            handler.call = None;
        }
        commands.handlers.push(handler);
    }
    Some(commands)
}

/// Why an impl's type is not an aggregate's bare name, in terms of the user's own type.
fn not_a_name(ty: &Type) -> String {
    let written = compact(&ty.to_token_stream().to_string());
    let Type::Path(path) = ty else {
        return format!(
            "`#[keel::commands]` needs the aggregate's name as the impl's type, not `{written}`"
        );
    };
    let Some(last) = path.path.segments.last() else {
        return format!("`#[keel::commands]` needs the aggregate's name, not `{written}`");
    };
    let name = &last.ident;
    if last.arguments.is_empty() {
        format!(
            "`#[keel::commands]` needs the aggregate's name alone as the impl's type: bring \
             `{name}` into scope with `use` and write `impl {name} {{ ... }}`"
        )
    } else {
        format!(
            "`#[keel::commands]` does not support generic aggregates: `{written}` has type \
             arguments; an aggregate kind names one concrete type, `impl {name} {{ ... }}`"
        )
    }
}

/// Tokens as a user writes them: `Shelf<Book>`, not `Shelf < Book >`.
fn compact(text: &str) -> String {
    let word = |c: Option<&char>| c.is_some_and(|c| c.is_alphanumeric() || *c == '_');
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    for (i, c) in chars.iter().enumerate() {
        let keep = *c != ' '
            || (word(i.checked_sub(1).and_then(|p| chars.get(p))) && word(chars.get(i + 1)));
        if keep {
            out.push(*c);
        }
        if *c == ',' {
            out.push(' ');
        }
    }
    out
}

/// The tokens to point at for generics: the parameters, else the `where` clause.
fn generics_tokens(generics: &syn::Generics) -> TokenStream {
    if generics.params.is_empty() {
        generics.where_clause.to_token_stream()
    } else {
        generics.to_token_stream()
    }
}

/// Reads one `pub fn`. `None` only when it cannot even be a variant (a name that makes no
/// variant); other errors leave a variant whose call is `None`.
fn handler<'a>(
    method: &'a ImplItemFn,
    context: &mut Option<&'a Type>,
    errors: &mut Errors,
) -> Option<Handler<'a>> {
    let sig = &method.sig;
    let name = sig.ident.unraw().to_string();
    let variant = match syn::parse_str::<Ident>(&case::upper_camel(&name)) {
        Ok(mut variant) => {
            variant.set_span(sig.ident.span());
            variant
        }
        Err(_) => {
            errors.spanned(
                &sig.ident,
                format_args!("`{name}` cannot name a command variant: rename the method"),
            );
            return None;
        }
    };
    if let Some(unsafety) = sig.unsafety {
        errors.spanned(unsafety, "command handlers cannot be `unsafe`");
    }
    if let Some(abi) = &sig.abi {
        errors.spanned(abi, "command handlers cannot be `extern`");
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.spanned(
            generics_tokens(&sig.generics),
            "generic command handlers are not supported: a command's fields are concrete types",
        );
    }
    match sig.inputs.first() {
        Some(FnArg::Receiver(receiver)) if takes_shared_self(&receiver.ty) => {}
        Some(FnArg::Receiver(receiver)) => errors.spanned(receiver, TAKE_SHARED_SELF),
        _ => errors.push(syn::Error::new(
            sig.paren_token.span.join(),
            TAKE_SHARED_SELF,
        )),
    }
    let mut fields = Vec::new();
    let mut args = Vec::new();
    let mut own_context: Option<&Type> = None;
    for input in &sig.inputs {
        let FnArg::Typed(param) = input else {
            continue;
        };
        match &*param.ty {
            Type::Reference(reference)
                if matches!(&*reference.elem, Type::Slice(_))
                    || is_path(&reference.elem, "str") =>
            {
                errors.spanned(
                    reference,
                    "a command field must be an owned value (`String`, `Vec<T>`): a `&T` \
                     parameter is the handler's shared context",
                );
            }
            Type::Reference(reference) if reference.mutability.is_none() => {
                let ty = &*reference.elem;
                if own_context.is_some() {
                    errors.spanned(
                        &param.ty,
                        "a command handler takes at most one `&Context` parameter: the shared \
                         services",
                    );
                    continue;
                }
                own_context = Some(ty);
                match context {
                    Some(first) if !same_type(first, ty) => errors.spanned(
                        ty,
                        format_args!(
                            "all command handlers share one context type: `{}` here, but `{}` \
                             in an earlier handler",
                            ty.to_token_stream(),
                            first.to_token_stream(),
                        ),
                    ),
                    Some(_) => {}
                    None => *context = Some(ty),
                }
                args.push(Arg::Context);
            }
            Type::Reference(reference) => errors.spanned(
                reference,
                "command handlers cannot take `&mut`: fields are owned values from the \
                 command, and the context is shared as `&T`",
            ),
            Type::ImplTrait(ty) => errors.spanned(
                ty,
                "generic command handlers are not supported: a command's fields are concrete \
                 types",
            ),
            ty => {
                if let Some(self_token) = find_self(ty.to_token_stream()) {
                    errors.push(syn::Error::new(
                        self_token,
                        "a command field cannot name `Self`: the command enum is a separate type; \
                         write the type out",
                    ));
                }
                match &*param.pat {
                    Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => {
                        args.push(Arg::Field(fields.len()));
                        fields.push((&pat.ident, ty));
                    }
                    pat => errors.spanned(
                        pat,
                        "command handler parameters must be plain names, such as \
                         `amount: u64`: each becomes a field of the command",
                    ),
                }
            }
        }
    }
    let call = match &sig.output {
        ReturnType::Type(_, output) => errors.is_empty().then_some(Call {
            args,
            is_async: sig.asyncness.is_some(),
            output,
        }),
        ReturnType::Default => {
            errors.spanned(
                sig,
                "a command handler must return the aggregate's event, a Vec of events, or a \
                 Result of either",
            );
            None
        }
    };
    Some(Handler {
        method,
        variant,
        name,
        fields,
        call,
    })
}

/// `&Self`, the type of `&self` and of `self: &Self`.
fn takes_shared_self(ty: &Type) -> bool {
    match ty {
        Type::Reference(reference) => {
            reference.mutability.is_none() && is_path(&reference.elem, "Self")
        }
        _ => false,
    }
}

/// Whether `ty` is the single-segment path `name`.
fn is_path(ty: &Type, name: &str) -> bool {
    matches!(ty, Type::Path(path) if path.qself.is_none() && path.path.is_ident(name))
}

/// Compares two types as written.
fn same_type(a: &Type, b: &Type) -> bool {
    a.to_token_stream().to_string() == b.to_token_stream().to_string()
}

/// The span of a `Self` in `tokens`, if any.
fn find_self(tokens: TokenStream) -> Option<Span> {
    tokens.into_iter().find_map(|token| match token {
        TokenTree::Ident(ident) if ident == "Self" => Some(ident.span()),
        TokenTree::Group(group) => find_self(group.stream()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use proc_macro2::TokenStream;
    use quote::quote;

    use super::*;
    use crate::commands::expand;

    fn errors(item: TokenStream) -> Vec<String> {
        crate::errors::messages(Ok(expand(TokenStream::new(), item)))
    }

    #[test]
    fn every_handler_error_is_reported_and_the_rest_generated() {
        let item = quote! {
            impl A {
                pub fn by_value(self) -> E { todo!() }
                pub fn by_mut(&mut self) -> E { todo!() }
                pub fn no_self(x: u8) -> E { todo!() }
                pub fn boxed(self: Box<Self>) -> E { todo!() }
                pub fn typed(self: &Self) -> E { todo!() }
                pub fn nothing(&self) {}
                pub fn generic<T: Into<u8>>(&self, x: T) -> E { todo!() }
                pub fn where_clause(&self) -> E where u8: Copy { todo!() }
                pub fn pattern(&self, (a, b): (u8, u8), ref c: u8, d @ _: u8) -> E { todo!() }
                pub fn two_contexts(&self, a: &S, b: &S) -> E { todo!() }
                pub fn other_context(&self, t: &T) -> E { todo!() }
                pub fn mutable(&self, t: &mut S) -> E { todo!() }
                pub fn borrowed(&self, name: &str, items: &[u8]) -> E { todo!() }
                pub fn impl_trait(&self, t: impl Into<u8>) -> E { todo!() }
                pub fn selfish(&self, t: Vec<Self>) -> E { todo!() }
                pub unsafe fn danger(&self) -> E { todo!() }
                pub fn open_account(&self) -> E { todo!() }
                pub fn open__account(&self) -> E { todo!() }
                pub fn __(&self) -> E { todo!() }
            }
        };
        let out = expand(TokenStream::new(), item);
        assert_eq!(
            crate::errors::messages(Ok(out.clone())),
            [
                TAKE_SHARED_SELF,
                TAKE_SHARED_SELF,
                TAKE_SHARED_SELF,
                TAKE_SHARED_SELF,
                "a command handler must return the aggregate's event, a Vec of events, or a Result of either",
                "generic command handlers are not supported: a command's fields are concrete types",
                "generic command handlers are not supported: a command's fields are concrete types",
                "command handler parameters must be plain names, such as `amount: u64`: each becomes a field of the command",
                "command handler parameters must be plain names, such as `amount: u64`: each becomes a field of the command",
                "command handler parameters must be plain names, such as `amount: u64`: each becomes a field of the command",
                "a command handler takes at most one `&Context` parameter: the shared services",
                "all command handlers share one context type: `T` here, but `S` in an earlier handler",
                "command handlers cannot take `&mut`: fields are owned values from the command, and the context is shared as `&T`",
                "a command field must be an owned value (`String`, `Vec<T>`): a `&T` parameter is the handler's shared context",
                "a command field must be an owned value (`String`, `Vec<T>`): a `&T` parameter is the handler's shared context",
                "generic command handlers are not supported: a command's fields are concrete types",
                "a command field cannot name `Self`: the command enum is a separate type; write the type out",
                "command handlers cannot be `unsafe`",
                "`open__account` and `open_account` both become the command `OpenAccount`: rename one",
                "`__` cannot name a command variant: rename the method",
            ]
        );
        let out = out.to_string();
        // The valid handler is generated in full, the others as unreachable arms.
        assert!(
            out.contains("into_events :: < Self , _ > (Self :: typed (self))"),
            "{out}"
        );
        assert_eq!(
            out.matches(":: core :: unreachable ! ()").count(),
            15,
            "{out}"
        );
    }

    #[test]
    fn errors_helper_sees_nothing_in_a_clean_expansion() {
        assert!(errors(quote!(impl A { pub fn go(&self) -> E { todo!() } })).is_empty());
    }
}
