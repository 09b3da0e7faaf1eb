//! The validation service: a process manager that gathers the three checks of each order —
//! inventory, fraud, order details — and confirms or rejects it, with a timeout.
//!
//! The checks come from three services' topics, in any order relative to each other and to
//! the order's own events. A check counts when its answer was *stamped* before the order's
//! deadline (placed time plus the timeout); when all three count, the order is confirmed if
//! they passed, rejected with the failed checks' reasons if not. When recorded time reaches
//! the deadline first, the order is rejected with the checks that did not answer in time. The
//! decision is a function of timestamps only, so a replay decides exactly as the live run
//! did; it is sent under one command id per order (`validation.<order>.decision`), so it is
//! sent once, and an order decides nothing more once decided.

use std::sync::Arc;
use std::time::Duration;

use keel::store::EventStore;
use keel::{CommandOptions, Repository, Timestamp};
use keel_projections::{BoxError, Effects, Envelope, Inputs, ProcessManager, Timer};
use serde::{Deserialize, Serialize};

use crate::details::{DetailsCheck, DetailsEvent};
use crate::fraud::{FraudCheck, FraudEvent};
use crate::inventory::{Product, ProductEvent};
use crate::orders::{Check, Order, OrderCommand, OrderEvent, Reason};

/// What the validation reads.
#[derive(Debug, Clone)]
pub enum Input {
    /// An order's own event.
    Order(OrderEvent),
    /// A product's event: reservations answer the inventory check.
    Product(ProductEvent),
    /// A fraud check's result.
    Fraud(FraudEvent),
    /// A details check's result.
    Details(DetailsEvent),
}

/// One check's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// Why it failed; `None` when it passed.
    pub failure: Option<Reason>,
    /// When it was stamped.
    pub at: Timestamp,
}

/// What the validation knows of one order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validating {
    /// Placed time plus the timeout, once the order's `Placed` has been read.
    pub deadline: Option<Timestamp>,
    /// The inventory's answer.
    pub inventory: Option<Answer>,
    /// The fraud check's answer.
    pub fraud: Option<Answer>,
    /// The details check's answer.
    pub details: Option<Answer>,
}

impl Validating {
    fn answers(&self) -> [(Check, &Option<Answer>); 3] {
        [
            (Check::Inventory, &self.inventory),
            (Check::Fraud, &self.fraud),
            (Check::Details, &self.details),
        ]
    }

    fn answer(&mut self, check: Check) -> &mut Option<Answer> {
        match check {
            Check::Inventory => &mut self.inventory,
            Check::Fraud => &mut self.fraud,
            Check::Details => &mut self.details,
        }
    }

    /// The checks that answered before the deadline, or `None` before it is known.
    fn counted(&self) -> Option<Vec<(Check, &Answer)>> {
        let deadline = self.deadline?;
        Some(
            self.answers()
                .into_iter()
                .filter_map(|(check, a)| a.as_ref().filter(|a| a.at < deadline).map(|a| (check, a)))
                .collect(),
        )
    }
}

/// The decision sent to the order.
pub type Decision = (String, OrderCommand);

/// Gathers each order's three checks and decides (see the [module docs](self)).
pub struct Validation {
    orders: Repository<Order, dyn EventStore>,
    timeout: Duration,
}

impl Validation {
    /// Decides orders of `log`, rejecting those whose checks are not all in within
    /// `timeout` of being placed.
    pub fn new(log: Arc<dyn EventStore>, timeout: Duration) -> Self {
        Self {
            orders: Repository::new(log),
            timeout,
        }
    }

    /// Decides when all three checks have answered in time.
    fn try_decide(state: &Validating, out: &mut Effects<Decision>) {
        let Some(counted) = state.counted() else {
            return;
        };
        if counted.len() < 3 {
            return;
        }
        let reasons: Vec<Reason> = counted
            .into_iter()
            .filter_map(|(_, a)| a.failure.clone())
            .collect();
        let order = out.key().to_owned();
        let command = if reasons.is_empty() {
            OrderCommand::Confirm
        } else {
            OrderCommand::Reject { reasons }
        };
        out.send_once("decision", order.clone(), (order, command));
        out.finish();
    }
}

impl ProcessManager for Validation {
    type Input = Input;
    type State = Validating;
    type Command = Decision;
    const NAME: &'static str = "validation";

    fn inputs(&self) -> Inputs<Input> {
        Inputs::new()
            .aggregate::<Order>(Input::Order)
            .aggregate::<Product>(Input::Product)
            .aggregate::<FraudCheck>(Input::Fraud)
            .aggregate::<DetailsCheck>(Input::Details)
    }

    fn key(&self, input: &Envelope<Input>) -> Option<String> {
        match &input.event {
            Input::Order(_) | Input::Fraud(_) | Input::Details(_) => Some(input.id().to_owned()),
            Input::Product(
                ProductEvent::Reserved { order, .. }
                | ProductEvent::ReservationRefused { order, .. },
            ) => Some(order.clone()),
            Input::Product(_) => None,
        }
    }

    fn react(&self, state: &mut Validating, input: &Envelope<Input>, out: &mut Effects<Decision>) {
        let at = input.record.timestamp;
        let (check, failure) = match &input.event {
            Input::Order(OrderEvent::Placed { .. }) => {
                let timeout = i64::try_from(self.timeout.as_micros()).unwrap_or(i64::MAX);
                let deadline = Timestamp(at.0.saturating_add(timeout));
                state.deadline = Some(deadline);
                out.set_timer("checks", deadline);
                Self::try_decide(state, out);
                return;
            }
            Input::Order(_) => {
                // Decided or cancelled: nothing more to gather.
                out.finish();
                return;
            }
            Input::Product(ProductEvent::Reserved { .. }) => (Check::Inventory, None),
            Input::Product(ProductEvent::ReservationRefused {
                requested,
                available,
                ..
            }) => (
                Check::Inventory,
                Some(Reason::OutOfStock {
                    requested: *requested,
                    available: *available,
                }),
            ),
            Input::Product(_) => return,
            Input::Fraud(FraudEvent::Cleared { .. }) => (Check::Fraud, None),
            Input::Fraud(FraudEvent::Flagged {
                total_in_hour,
                limit,
                ..
            }) => (
                Check::Fraud,
                Some(Reason::Fraud {
                    total_in_hour: *total_in_hour,
                    limit: *limit,
                }),
            ),
            Input::Details(DetailsEvent::Accepted) => (Check::Details, None),
            Input::Details(DetailsEvent::Refused { problems }) => (
                Check::Details,
                Some(Reason::Details {
                    problems: problems.clone(),
                }),
            ),
        };
        let answer = state.answer(check);
        if answer.is_none() {
            *answer = Some(Answer { failure, at });
        }
        Self::try_decide(state, out);
    }

    fn timeout(&self, state: &mut Validating, _: &Timer, out: &mut Effects<Decision>) {
        let answered: Vec<Check> = state
            .counted()
            .unwrap_or_default()
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        let missing: Vec<Check> = [Check::Inventory, Check::Fraud, Check::Details]
            .into_iter()
            .filter(|c| !answered.contains(c))
            .collect();
        let order = out.key().to_owned();
        let reasons = vec![Reason::Timeout { missing }];
        out.send_once(
            "decision",
            order.clone(),
            (order, OrderCommand::Reject { reasons }),
        );
        out.finish();
    }

    async fn send(
        &self,
        (order, command): Decision,
        options: CommandOptions,
    ) -> Result<(), BoxError> {
        self.orders.execute_with(&order, command, options).await?;
        Ok(())
    }
}
