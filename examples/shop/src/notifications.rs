//! The notifications service: one email per confirmed and paid order, written by joining each
//! payment with the order's lines ([`OrderLines`]) and the customer ([`Customers`]).
//!
//! The email record is a command to the order's email stream, under an id derived from the
//! payment event's position. The email aggregate records every command it is given — it does
//! not look for an earlier email — so that exactly one email per order rests on the derived
//! ids alone, and the shop's tests can check it.

use std::sync::Arc;

use keel::prelude::*;
use keel::store::EventStore;
use keel::{CommandOptions, Repository};
use keel_projections::{BoxError, Envelope, Inputs, Join, Missing, Rows, Tables};
use serde::{Deserialize, Serialize};

use crate::customers::Customers;
use crate::orders::{OrderLines, cents};
use crate::payments::{Payment, PaymentEvent};

/// What an email stream records (one stream per order).
#[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub enum EmailEvent {
    /// An email was written.
    Sent {
        /// To whom.
        to: String,
        /// The subject line.
        subject: String,
        /// The text.
        body: String,
    },
}

/// An email is never refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("never")]
pub struct EmailError;

/// An order's emails: every `send` is recorded.
#[derive(Aggregate, Default, Debug, Clone)]
#[aggregate(kind = "email", event = EmailEvent, error = EmailError)]
pub struct Email;

impl Apply<EmailEvent> for Email {
    fn apply(&mut self, _: &EmailEvent) {}
}

#[keel::commands]
impl Email {
    /// Records an email.
    pub fn send(&self, to: String, subject: String, body: String) -> EmailEvent {
        EmailEvent::Sent { to, subject, body }
    }
}

/// An email to record for an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    order: String,
    to: String,
    subject: String,
    body: String,
}

/// Writes the confirmation email of each paid order (see the [module docs](self)).
pub struct Confirmations {
    emails: Repository<Email, dyn EventStore>,
}

impl Confirmations {
    /// Records emails into `log`.
    pub fn new(log: Arc<dyn EventStore>) -> Self {
        Self {
            emails: Repository::new(log),
        }
    }
}

impl Join for Confirmations {
    type Input = PaymentEvent;
    type Output = Message;
    const NAME: &'static str = "confirmations";

    fn inputs(&self) -> Inputs<PaymentEvent> {
        Inputs::new().aggregate::<Payment>(|e| e)
    }

    fn tables(&self) -> Tables {
        Tables::new().with(OrderLines).with(Customers)
    }

    fn join(
        &self,
        input: &Envelope<PaymentEvent>,
        rows: &Rows<'_>,
    ) -> Result<Option<Message>, Missing> {
        let PaymentEvent::Captured {
            customer,
            currency,
            amount,
            ..
        } = &input.event;
        let order = input.id();
        let line = rows.get::<OrderLines>(order)?;
        let who = rows.get::<Customers>(customer)?;
        Ok(Some(Message {
            order: order.to_owned(),
            to: who.email,
            subject: format!("Your order {order} is confirmed"),
            body: format!(
                "Dear {}, thank you for your order of {} × {}. We charged {} {currency}.",
                who.name,
                line.quantity,
                line.product,
                cents(*amount)
            ),
        }))
    }

    async fn emit(&self, message: Message, options: CommandOptions) -> Result<(), BoxError> {
        let command = EmailCommand::Send {
            to: message.to,
            subject: message.subject,
            body: message.body,
        };
        self.emails
            .execute_with(&message.order, command, options)
            .await?;
        Ok(())
    }
}
