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

use std::collections::HashMap;

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{
    Attribute, FnArg, Ident, ImplItem, ImplItemFn, ItemImpl, Pat, ReturnType, Type, Visibility,
};

use crate::attr;
use crate::case;
use crate::errors::Errors;

/// Expands `#[keel::commands]`. Always re-emits the impl block; any error comes with it, and
/// with whatever could still be generated, so the error the user sees is the one that matters.
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    if !args.is_empty() {
        errors.spanned(&args, "`#[keel::commands]` takes no arguments");
    }
    let generated = match syn::parse2::<syn::Item>(item.clone()) {
        Ok(syn::Item::Impl(block)) => parse(&block, &mut errors).map(|model| generate(&model)),
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

const TAKE_SHARED_SELF: &str = "command handlers take `&self`: they decide, they do not mutate; \
                                state changes come from applying events";

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
    tokens.next().map_or_else(Span::call_site, |token| token.span())
}

/// A valid `#[keel::commands]` block.
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
    /// The call's arguments in declared order; `None` when the method is no valid handler
    /// (its error is reported, its match arm is unreachable).
    call: Option<Call<'a>>,
}

struct Call<'a> {
    args: Vec<Arg>,
    is_async: bool,
    output: &'a Type,
}

enum Arg {
    /// The field at this index.
    Field(usize),
    Context,
}

fn parse<'a>(block: &'a ItemImpl, errors: &mut Errors) -> Option<Commands<'a>> {
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
        errors.spanned(
            &block.self_ty,
            "`#[keel::commands]` needs the aggregate's name as the impl's type: \
             `impl Account { ... }`",
        );
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
            errors.push(local.into_error()?);
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
            errors.push(local.into_error()?);
            continue;
        }
        variants.insert(handler.variant.to_string(), &method.sig.ident);
        if let Some(error) = local.into_error() {
            errors.push(error);
            handler.call = None;
        }
        commands.handlers.push(handler);
    }
    Some(commands)
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
        _ => errors.push(syn::Error::new(sig.paren_token.span.join(), TAKE_SHARED_SELF)),
    }
    let mut fields = Vec::new();
    let mut args = Vec::new();
    let mut own_context: Option<&Type> = None;
    for input in &sig.inputs {
        let FnArg::Typed(param) = input else {
            continue;
        };
        match &*param.ty {
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
            reference.mutability.is_none()
                && matches!(&*reference.elem, Type::Path(path) if path.qself.is_none() && path.path.is_ident("Self"))
        }
        _ => false,
    }
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

fn generate(model: &Commands<'_>) -> TokenStream {
    let Commands {
        aggregate, command, ..
    } = model;
    let doc = format!("Commands of [`{aggregate}`], generated by `#[keel::commands]`.");
    let context = model
        .context
        .map_or_else(|| quote!(()), ToTokens::to_token_stream);
    let variants = model.handlers.iter().map(|handler| variant(aggregate, handler));
    let names = model.handlers.iter().map(|handler| {
        let cfgs = cfgs(&handler.method.attrs);
        let variant = &handler.variant;
        let name = &handler.name;
        let pattern = if handler.fields.is_empty() {
            quote!(Self::#variant)
        } else {
            quote!(Self::#variant { .. })
        };
        quote!(#(#cfgs)* #pattern => #name)
    });
    let arms = model
        .handlers
        .iter()
        .map(|handler| arm(command, handler));
    quote! {
        #[doc = #doc]
        #[derive(
            ::core::fmt::Debug,
            ::core::clone::Clone,
            ::keel::__private::serde::Serialize,
            ::keel::__private::serde::Deserialize,
            ::keel::__private::schemars::JsonSchema,
        )]
        #[serde(crate = "::keel::__private::serde", tag = "command", rename_all = "snake_case")]
        #[schemars(crate = "::keel::__private::schemars")]
        pub enum #command {
            #(#variants,)*
        }

        #[automatically_derived]
        impl ::keel::Command for #command {
            fn name(&self) -> &'static ::core::primitive::str {
                match self {
                    #(#names,)*
                }
            }
        }

        #[automatically_derived]
        impl ::keel::Handle for #aggregate {
            type Command = #command;
            type Context = #context;

            fn handle<'__a>(
                &'__a self,
                __command: Self::Command,
                __context: &'__a Self::Context,
            ) -> impl ::core::future::Future<
                Output = ::core::result::Result<
                    ::std::vec::Vec<<Self as ::keel::Aggregate>::Event>,
                    <Self as ::keel::Aggregate>::Error,
                >,
            > + ::core::marker::Send + '__a {
                async move {
                    let _ = &__context;
                    match __command {
                        #(#arms,)*
                    }
                }
            }
        }
    }
}

/// The `#[cfg]`s of a method, which its variant and match arms carry too.
fn cfgs(attrs: &[Attribute]) -> impl Iterator<Item = &Attribute> {
    attrs.iter().filter(|attr| attr.path().is_ident("cfg"))
}

fn variant(aggregate: &Ident, handler: &Handler<'_>) -> TokenStream {
    let attrs = &handler.method.attrs;
    let cfgs = cfgs(attrs);
    let mut docs = attr::docs(attrs).peekable();
    let default_doc = docs.peek().is_none().then(|| {
        let doc = format!("Handled by [`{aggregate}::{}`].", handler.method.sig.ident);
        quote!(#[doc = #doc])
    });
    let variant = &handler.variant;
    // `rename_all = "snake_case"` gives the method's name back, except for names such as
    // `step_2a` (`Step2a` → `step2a`): those are renamed explicitly.
    let rename = (case::snake(&variant.to_string()) != handler.name).then(|| {
        let name = &handler.name;
        quote!(#[serde(rename = #name)])
    });
    let fields = handler.fields.iter().map(|(ident, ty)| quote!(#ident: #ty));
    let body = (!handler.fields.is_empty()).then(|| quote!({ #(#fields),* }));
    quote! {
        #(#cfgs)*
        #(#docs)*
        #default_doc
        #rename
        #variant #body
    }
}

fn arm(command: &Ident, handler: &Handler<'_>) -> TokenStream {
    let cfgs = cfgs(&handler.method.attrs);
    let variant = &handler.variant;
    let bindings: Vec<Ident> = (0..handler.fields.len())
        .map(|index| format_ident!("__arg{}", index))
        .collect();
    let pattern = if handler.fields.is_empty() {
        quote!(#command::#variant)
    } else {
        let fields = handler.fields.iter().map(|(ident, _)| ident);
        quote!(#command::#variant { #(#fields: #bindings),* })
    };
    let Some(call) = &handler.call else {
        // The method's error is reported; this arm only keeps the match whole.
        return quote!(#(#cfgs)* #pattern => ::core::unreachable!());
    };
    let method = &handler.method.sig.ident;
    let args = call.args.iter().map(|arg| match arg {
        Arg::Field(index) => bindings
            .get(*index)
            .map_or_else(TokenStream::new, ToTokens::to_token_stream),
        Arg::Context => quote!(__context),
    });
    // Spanned at the return type, so a type that is no handler answer is reported there, with
    // `IntoEvents`' message.
    let span = call.output.span();
    let invoke = quote_spanned!(span=> Self::#method(self #(, #args)*));
    let invoke = if call.is_async {
        quote_spanned!(span=> #invoke.await)
    } else {
        invoke
    };
    quote_spanned! {span=>
        #(#cfgs)* #pattern => ::keel::__private::into_events::<Self, _>(#invoke)
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::*;

    fn errors(item: TokenStream) -> Vec<String> {
        crate::errors::messages(Ok(expand(TokenStream::new(), item)))
    }

    #[test]
    fn expands_handlers_into_enum_command_and_handle() {
        let out = expand(
            TokenStream::new(),
            quote! {
                impl Account {
                    /// Puts money in.
                    pub fn deposit(&self, amount: u64) -> Result<AccountEvent, AccountError> {
                        todo!()
                    }
                    pub async fn reserve(&self, services: &Services, qty: u32) -> Vec<AccountEvent> {
                        todo!()
                    }
                    pub fn close(&self) -> AccountEvent { todo!() }
                    pub fn step_2a(&self) -> AccountEvent { todo!() }
                    pub(crate) fn helper(&self) {}
                    fn private(&mut self) {}
                }
            },
        );
        let expected = quote! {
            #[doc = "Commands of [`Account`], generated by `#[keel::commands]`."]
            #[derive(
                ::core::fmt::Debug,
                ::core::clone::Clone,
                ::keel::__private::serde::Serialize,
                ::keel::__private::serde::Deserialize,
                ::keel::__private::schemars::JsonSchema,
            )]
            #[serde(crate = "::keel::__private::serde", tag = "command", rename_all = "snake_case")]
            #[schemars(crate = "::keel::__private::schemars")]
            pub enum AccountCommand {
                /// Puts money in.
                Deposit { amount: u64 },
                #[doc = "Handled by [`Account::reserve`]."]
                Reserve { qty: u32 },
                #[doc = "Handled by [`Account::close`]."]
                Close,
                #[doc = "Handled by [`Account::step_2a`]."]
                #[serde(rename = "step_2a")]
                Step2a,
            }

            #[automatically_derived]
            impl ::keel::Command for AccountCommand {
                fn name(&self) -> &'static ::core::primitive::str {
                    match self {
                        Self::Deposit { .. } => "deposit",
                        Self::Reserve { .. } => "reserve",
                        Self::Close => "close",
                        Self::Step2a => "step_2a",
                    }
                }
            }

            #[automatically_derived]
            impl ::keel::Handle for Account {
                type Command = AccountCommand;
                type Context = Services;

                fn handle<'__a>(
                    &'__a self,
                    __command: Self::Command,
                    __context: &'__a Self::Context,
                ) -> impl ::core::future::Future<
                    Output = ::core::result::Result<
                        ::std::vec::Vec<<Self as ::keel::Aggregate>::Event>,
                        <Self as ::keel::Aggregate>::Error,
                    >,
                > + ::core::marker::Send + '__a {
                    async move {
                        let _ = &__context;
                        match __command {
                            AccountCommand::Deposit { amount: __arg0 } =>
                                ::keel::__private::into_events::<Self, _>(Self::deposit(self, __arg0)),
                            AccountCommand::Reserve { qty: __arg0 } =>
                                ::keel::__private::into_events::<Self, _>(
                                    Self::reserve(self, __context, __arg0).await
                                ),
                            AccountCommand::Close =>
                                ::keel::__private::into_events::<Self, _>(Self::close(self)),
                            AccountCommand::Step2a =>
                                ::keel::__private::into_events::<Self, _>(Self::step_2a(self)),
                        }
                    }
                }
            }
        };
        let out = out.to_string();
        assert!(out.starts_with(&expected.to_string()), "{out}");
        assert!(out.ends_with("fn private (& mut self) { } }"), "the block is re-emitted");
    }

    #[test]
    fn without_a_context_the_context_is_unit() {
        let out = expand(
            TokenStream::new(),
            quote!(impl A { pub fn go(&self, x: u8) -> E { todo!() } }),
        )
        .to_string();
        assert!(out.contains("type Context = () ;"), "{out}");
    }

    #[test]
    fn cfgs_follow_the_handler() {
        let out = expand(
            TokenStream::new(),
            quote!(impl A { #[cfg(test)] pub fn go(&self) -> E { todo!() } }),
        )
        .to_string();
        assert_eq!(out.matches("# [cfg (test)]").count(), 4, "{out}");
    }

    #[test]
    fn block_level_errors_re_emit_only_the_block() {
        let cases = [
            (
                quote!(impl<T> A<T> { pub fn go(&self) -> E { todo!() } }),
                "`#[keel::commands]` does not support generic impl blocks: generic aggregates are not supported",
            ),
            (
                quote!(impl Tr for A { fn go(&self) -> E { todo!() } }),
                "`#[keel::commands]` goes on the aggregate's own `impl` block, not on a trait impl",
            ),
            (
                quote!(impl crate::A { pub fn go(&self) -> E { todo!() } }),
                "`#[keel::commands]` needs the aggregate's name as the impl's type: `impl Account { ... }`",
            ),
            (
                quote!(impl A { fn go(&self) -> E { todo!() } }),
                "`#[keel::commands]` found no command handlers in `impl A`: each `pub fn` taking `&self` becomes a command",
            ),
            (
                quote!(#[derive(Debug)] pub struct A;),
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
                "generic command handlers are not supported: a command's fields are concrete types",
                "a command field cannot name `Self`: the command enum is a separate type; write the type out",
                "command handlers cannot be `unsafe`",
                "`open__account` and `open_account` both become the command `OpenAccount`: rename one",
                "`__` cannot name a command variant: rename the method",
            ]
        );
        let out = out.to_string();
        // The valid handler is generated in full, the others as unreachable arms.
        assert!(out.contains("into_events :: < Self , _ > (Self :: typed (self))"), "{out}");
        assert_eq!(out.matches(":: core :: unreachable ! ()").count(), 14, "{out}");
    }

    #[test]
    fn arguments_are_rejected() {
        let out = expand(quote!(x), quote!(impl A { pub fn go(&self) -> E { todo!() } }));
        assert_eq!(
            crate::errors::messages(Ok(out)),
            ["`#[keel::commands]` takes no arguments"]
        );
    }

    #[test]
    fn errors_helper_sees_nothing_in_a_clean_expansion() {
        assert!(errors(quote!(impl A { pub fn go(&self) -> E { todo!() } })).is_empty());
    }
}
