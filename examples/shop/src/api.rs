//! What a person can ask of the shop, behind the HTTP API ([`crate::http`]) and the scripted
//! day ([`crate::day`]): the orders service's commands and queries.
//!
//! Commands run through keel repositories under ids derived from what they are (`place` on
//! the order's own stream, for instance), so a client that retries a request never places an
//! order twice. A command returns the positions of its events; a query can wait until the
//! orders service's views have applied them (read-your-writes), and for an order, until it is
//! decided (long polling).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel::store::EventStore;
use keel::{CommandId, CommandOptions, Offset, Partition, Position, Repository, Topic};
use keel_projections::store::sqlite::SqliteViews;
use keel_projections::{Runner, TableView};

use crate::customers::{Customer, CustomerCommand};
use crate::inventory::{Product, ProductCommand};
use crate::orders::{Order, OrderCommand};
use crate::payments::{Rate, RateCommand};
use crate::status::{OrderStatus, OrderView, StockLevels, StockView};

/// Why a request was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The domain refused it; nothing was written.
    #[error("refused: {0}")]
    Refused(String),
    /// The request names a customer who has not registered.
    #[error("customer {0} is not registered")]
    UnknownCustomer(String),
    /// The id was used before for another request (a retry must repeat the request exactly).
    #[error("{0} was used before for another request")]
    Conflict(String),
    /// An id or a token is malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The views have not applied the given positions within the time asked.
    #[error("not applied yet: {0}")]
    NotYet(String),
    /// The log or a view failed.
    #[error("internal error: {0}")]
    Internal(String),
}

fn repository_error<E: std::error::Error + Send + Sync + 'static>(
    e: keel::repository::Error<E>,
) -> ApiError {
    use keel::repository::Error;
    match e {
        Error::Rejected(reason) => ApiError::Refused(reason.to_string()),
        Error::InvalidId(id) => ApiError::BadRequest(id.to_string()),
        Error::Store(keel::store::Error::CommandIdReused {
            stream, command_id, ..
        }) => ApiError::Conflict(format!("command {command_id} on {stream}")),
        other => ApiError::Internal(chain(&other)),
    }
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The positions of a command's events, as a token a client hands back to read its own
/// writes: `topic:partition:offset`, comma separated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct After(pub Vec<Position>);

impl fmt::Display for After {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}:{}:{}", p.topic, p.partition.0, p.offset.0)?;
        }
        Ok(())
    }
}

impl FromStr for After {
    type Err = ApiError;

    fn from_str(s: &str) -> Result<Self, ApiError> {
        let bad = || ApiError::BadRequest(format!("{s:?} is not a positions token"));
        if s.is_empty() {
            return Ok(Self::default());
        }
        s.split(',')
            .take(64)
            .map(|part| {
                let mut it = part.split(':');
                let topic = Topic::new(it.next().ok_or_else(bad)?).map_err(|_| bad())?;
                let partition = it.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
                let offset = it.next().and_then(|o| o.parse().ok()).ok_or_else(bad)?;
                Ok(Position {
                    topic,
                    partition: Partition(partition),
                    offset: Offset(offset),
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }
}

/// An order to place.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlaceOrder {
    /// The order's id (a fresh one when absent): a retry with the same id places nothing more.
    #[serde(default)]
    pub id: Option<String>,
    /// Who orders.
    pub customer: String,
    /// What.
    pub product: String,
    /// How many.
    pub quantity: u32,
    /// The price of one as the customer saw it, in cents of EUR.
    pub unit_price: u64,
}

/// A placed order: its id and where its `Placed` event is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// The order's id.
    pub id: String,
    /// Where its event landed (read-your-writes).
    pub after: After,
    /// Whether this request was a retry of one already carried out.
    pub replayed: bool,
}

/// The orders service's commands and queries (see the [module docs](self)).
#[derive(Clone)]
pub struct Api {
    orders: Repository<Order, dyn EventStore>,
    customers: Repository<Customer, dyn EventStore>,
    products: Repository<Product, dyn EventStore>,
    rates: Repository<Rate, dyn EventStore>,
    views: Arc<SqliteViews>,
    status: Arc<Runner<TableView<OrderStatus, SqliteViews>>>,
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Api").finish_non_exhaustive()
    }
}

fn id(text: &str) -> Result<CommandId, ApiError> {
    CommandId::new(text).map_err(|e| ApiError::BadRequest(e.to_string()))
}

impl Api {
    /// The API of the orders service: commands to `log`, queries of `views`, kept by the
    /// `status` runner (whose commits wake waiting queries).
    pub fn new(
        log: Arc<dyn EventStore>,
        views: Arc<SqliteViews>,
        status: Arc<Runner<TableView<OrderStatus, SqliteViews>>>,
    ) -> Self {
        Self {
            orders: Repository::new(Arc::clone(&log)),
            customers: Repository::new(Arc::clone(&log)),
            products: Repository::new(Arc::clone(&log)),
            rates: Repository::new(log),
            views,
            status,
        }
    }

    /// Registers a customer (idempotent per id and content).
    ///
    /// # Errors
    ///
    /// [`ApiError::Refused`] with the reason, [`ApiError::Conflict`], or a failure.
    pub async fn register_customer(
        &self,
        customer: &str,
        name: &str,
        email: &str,
        currency: &str,
    ) -> Result<(), ApiError> {
        let command = CustomerCommand::Register {
            name: name.to_owned(),
            email: email.to_owned(),
            currency: currency.to_owned(),
        };
        self.customers
            .execute_with(customer, command, id("register")?.into())
            .await
            .map_err(repository_error)?;
        Ok(())
    }

    /// Sets a currency's rate: `per_eur` millionths of it per EUR.
    ///
    /// # Errors
    ///
    /// [`ApiError::BadRequest`] for a code that is not three capital letters; otherwise as
    /// [`Self::register_customer`].
    pub async fn set_rate(&self, currency: &str, per_eur: u64) -> Result<(), ApiError> {
        if !crate::customers::is_currency(currency) {
            return Err(ApiError::BadRequest(format!(
                "{currency:?} is not a currency code (three capital letters, like USD)"
            )));
        }
        self.rates
            .execute(currency, RateCommand::Set { per_eur })
            .await
            .map_err(repository_error)?;
        Ok(())
    }

    /// Lists a product (idempotent per id and content).
    ///
    /// # Errors
    ///
    /// As [`Self::register_customer`].
    pub async fn list_product(
        &self,
        product: &str,
        name: &str,
        price: u64,
        max_per_order: u32,
    ) -> Result<(), ApiError> {
        let command = ProductCommand::List {
            name: name.to_owned(),
            price,
            max_per_order,
        };
        self.products
            .execute_with(product, command, id("list")?.into())
            .await
            .map_err(repository_error)?;
        Ok(())
    }

    /// Adds stock; `request` (when given) makes a retry add nothing more.
    ///
    /// # Errors
    ///
    /// As [`Self::register_customer`].
    pub async fn restock(
        &self,
        product: &str,
        quantity: u64,
        request: Option<&str>,
    ) -> Result<(), ApiError> {
        let options = match request {
            Some(r) => id(&format!("restock-{r}"))?.into(),
            None => CommandOptions::default(),
        };
        self.products
            .execute_with(product, ProductCommand::Restock { quantity }, options)
            .await
            .map_err(repository_error)?;
        Ok(())
    }

    /// Places an order for a registered customer. Retried with the same id and content, it
    /// places nothing more and answers with the first placement.
    ///
    /// # Errors
    ///
    /// [`ApiError::UnknownCustomer`], [`ApiError::Refused`], [`ApiError::Conflict`] (the id
    /// placed another order), [`ApiError::BadRequest`], or a failure.
    pub async fn place(&self, order: PlaceOrder) -> Result<Placed, ApiError> {
        let order_id = order
            .id
            .clone()
            .unwrap_or_else(|| CommandId::random().to_string());
        let customer = self
            .customers
            .load(&order.customer)
            .await
            .map_err(repository_error)?;
        if !customer.state.is_registered() {
            return Err(ApiError::UnknownCustomer(order.customer));
        }
        let command = OrderCommand::Place {
            customer: order.customer,
            product: order.product,
            quantity: order.quantity,
            unit_price: order.unit_price,
        };
        let options = CommandOptions {
            command_id: Some(id("place")?),
            expect_new: true,
            ..CommandOptions::default()
        };
        let done = self
            .orders
            .execute_with(&order_id, command, options)
            .await
            .map_err(repository_error)?;
        Ok(Placed {
            id: order_id,
            after: After(done.positions().cloned().collect()),
            replayed: done.replayed,
        })
    }

    /// Cancels an order still being validated.
    ///
    /// # Errors
    ///
    /// [`ApiError::Refused`] (never placed, decided already), or a failure.
    pub async fn cancel(&self, order: &str) -> Result<After, ApiError> {
        let done = self
            .orders
            .execute_with(order, OrderCommand::Cancel, id("cancel")?.into())
            .await
            .map_err(repository_error)?;
        Ok(After(done.positions().cloned().collect()))
    }

    /// An order as the orders service sees it: after its views have applied `after` (when
    /// given), and — with `until_decided` — once it is decided, waiting at most `timeout` in
    /// all. `None` for an order it does not know.
    ///
    /// # Errors
    ///
    /// [`ApiError::NotYet`] when the views have not applied `after` in time, or a failure.
    pub async fn order(
        &self,
        order: &str,
        after: &After,
        until_decided: bool,
        timeout: Duration,
    ) -> Result<Option<OrderView>, ApiError> {
        let started = Instant::now();
        if !after.0.is_empty() {
            self.status
                .wait_for(&after.0, timeout)
                .await
                .map_err(|e| match e {
                    keel_projections::Error::NotYet { .. } => ApiError::NotYet(e.to_string()),
                    other => ApiError::Internal(chain(&other)),
                })?;
        }
        let mut progress = self.status.progress();
        loop {
            progress.borrow_and_update();
            let view = TableView::<OrderStatus, SqliteViews>::get(&self.views, order)
                .await
                .map_err(|e| ApiError::Internal(chain(&e)))?;
            let decided = view.as_ref().is_some_and(|v| v.status.is_final());
            let left = timeout.saturating_sub(started.elapsed());
            if !until_decided || decided || left.is_zero() {
                return Ok(view);
            }
            // Woken by the status view's next commit; polled too, for a view kept elsewhere.
            tokio::select! {
                _ = progress.changed() => {}
                () = tokio::time::sleep(left.min(Duration::from_millis(100))) => {}
            }
        }
    }

    /// A product's stock as the orders service sees it.
    ///
    /// # Errors
    ///
    /// A view failure.
    pub async fn stock(&self, product: &str) -> Result<Option<StockView>, ApiError> {
        TableView::<StockLevels, SqliteViews>::get(&self.views, product)
            .await
            .map_err(|e| ApiError::Internal(chain(&e)))
    }

    /// Every product's stock, by id.
    ///
    /// # Errors
    ///
    /// A view failure.
    pub async fn stocks(&self) -> Result<Vec<(String, StockView)>, ApiError> {
        TableView::<StockLevels, SqliteViews>::rows(&self.views, "", 10_000)
            .await
            .map_err(|e| ApiError::Internal(chain(&e)))
    }

    /// Every order's status, by id.
    ///
    /// # Errors
    ///
    /// A view failure.
    pub async fn orders(&self) -> Result<Vec<(String, OrderView)>, ApiError> {
        let mut all = Vec::new();
        let mut from = String::new();
        loop {
            let page = TableView::<OrderStatus, SqliteViews>::rows(&self.views, &from, 1000)
                .await
                .map_err(|e| ApiError::Internal(chain(&e)))?;
            let full = page.len() == 1000;
            if let Some((last, _)) = page.last() {
                from = format!("{last}\u{0}");
            }
            all.extend(page);
            if !full {
                return Ok(all);
            }
        }
    }
}
