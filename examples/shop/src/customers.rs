//! Customers: who they are, where to write to them and the currency they pay in. Registered
//! through the API; other services read them as a table ([`Customers`]).

use keel::prelude::*;
use keel_projections::{Envelope, Inputs, Table};
use serde::{Deserialize, Serialize};

/// The longest customer name, in characters.
pub const MAX_NAME_CHARS: usize = 100;

/// What a customer's stream records.
#[derive(Event, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub enum CustomerEvent {
    /// The customer registered.
    Registered {
        /// Their name.
        name: String,
        /// Where their emails go.
        email: String,
        /// The currency they pay in (ISO 4217, three capital letters).
        currency: String,
    },
}

/// Why a customer command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CustomerError {
    /// The id is registered already.
    #[error("the customer is registered already")]
    AlreadyRegistered,
    /// The name is empty or too long.
    #[error("the name must be 1 to {MAX_NAME_CHARS} characters")]
    BadName,
    /// The email address has no `@`.
    #[error("{email:?} is not an email address")]
    BadEmail {
        /// The refused address.
        email: String,
    },
    /// The currency is not three capital letters.
    #[error("{currency:?} is not a currency code (three capital letters, like EUR)")]
    BadCurrency {
        /// The refused code.
        currency: String,
    },
}

/// A customer: the fold of its events.
#[derive(Aggregate, Default, Debug, Clone)]
#[aggregate(kind = "customer", event = CustomerEvent, error = CustomerError)]
pub struct Customer {
    registered: bool,
}

impl Customer {
    /// Whether the customer has registered.
    pub fn is_registered(&self) -> bool {
        self.registered
    }
}

impl Apply<CustomerEvent> for Customer {
    fn apply(&mut self, event: &CustomerEvent) {
        let CustomerEvent::Registered { .. } = event;
        self.registered = true;
    }
}

/// Whether `code` looks like an ISO 4217 currency code.
pub fn is_currency(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}

#[keel::commands]
impl Customer {
    /// Registers the customer.
    pub fn register(
        &self,
        name: String,
        email: String,
        currency: String,
    ) -> Result<CustomerEvent, CustomerError> {
        if self.registered {
            return Err(CustomerError::AlreadyRegistered);
        }
        let chars = name.trim().chars().count();
        if chars == 0 || chars > MAX_NAME_CHARS {
            return Err(CustomerError::BadName);
        }
        if !email.contains('@') || email.len() > 254 {
            return Err(CustomerError::BadEmail { email });
        }
        if !is_currency(&currency) {
            return Err(CustomerError::BadCurrency { currency });
        }
        Ok(CustomerEvent::Registered {
            name,
            email,
            currency,
        })
    }
}

/// A customer as the tables keep it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerRow {
    /// Their name.
    pub name: String,
    /// Their email address.
    pub email: String,
    /// The currency they pay in.
    pub currency: String,
}

/// Customers by id: the table payments and notifications join on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Customers;

impl Table for Customers {
    type Input = CustomerEvent;
    type Row = CustomerRow;
    const NAME: &'static str = "customers";

    fn inputs(&self) -> Inputs<CustomerEvent> {
        Inputs::new().aggregate::<Customer>(|e| e)
    }

    fn key(&self, input: &Envelope<CustomerEvent>) -> Option<String> {
        Some(input.id().to_owned())
    }

    fn update(
        &self,
        _: Option<CustomerRow>,
        input: &Envelope<CustomerEvent>,
    ) -> Option<CustomerRow> {
        let CustomerEvent::Registered {
            name,
            email,
            currency,
        } = &input.event;
        Some(CustomerRow {
            name: name.clone(),
            email: email.clone(),
            currency: currency.clone(),
        })
    }
}
