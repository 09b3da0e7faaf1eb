//! Tables from streams: the latest value per key, kept in a view store, queryable, rebuilt by
//! replaying the log like any view (Kafka Streams' `KTable`; on SQL, a keyed table).
//!
//! A [`Table`] says which topics it reads, which row each input changes
//! ([`key`](Table::key)) and what the row becomes ([`update`](Table::update): the new value,
//! or a fold of the old one; `None` deletes it). [`TableView`] runs it as a projection, in a
//! [`KeyedStore`]; [`TableView::get`] and [`TableView::rows`] read it. The same `Table` also
//! feeds the rows a [`Join`](crate::Join) looks events up in.
//!
//! "Latest" is in log order: the updates of one key should come from one stream (the key is
//! the stream's id, or read from its events), so they reach the table in the order they were
//! written. Updates of one key from several partitions reach it in the order the runner reads
//! them.

use std::marker::PhantomData;
use std::sync::Arc;

use keel::{RecordedEvent, Topic};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::BoxError;
use crate::input::{AnyRecord, Inputs};
use crate::keyed::{self, KeyedStore, State};
use crate::projection::{Envelope, Projection};

/// A table fed from streams: see the [module docs](self).
///
/// ```
/// # use keel::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Event, Serialize, Deserialize, Clone, Debug, PartialEq)]
/// # pub enum RateEvent { Set { per_euro: f64 } }
/// use std::sync::Arc;
/// use keel::{AppendRequest, EventStore, ExpectedVersion, NewEvent, StreamId, Topic};
/// use keel::store::memory::MemoryStore;
/// use keel_projections::keyed::Keyed;
/// use keel_projections::store::memory::MemoryViews;
/// use keel_projections::{Envelope, Inputs, Runner, Table, TableView};
///
/// /// The latest exchange rate per currency (the stream id is the currency).
/// struct Rates;
///
/// impl Table for Rates {
///     type Input = RateEvent;
///     type Row = f64;
///     const NAME: &'static str = "rates";
///
///     fn inputs(&self) -> Inputs<RateEvent> {
///         Inputs::new().topic(Topic::new("rate").expect("a topic"), |e| e)
///     }
///     fn key(&self, input: &Envelope<RateEvent>) -> Option<String> {
///         Some(input.id().to_owned())
///     }
///     fn update(&self, _: Option<f64>, input: &Envelope<RateEvent>) -> Option<f64> {
///         let RateEvent::Set { per_euro } = input.event;
///         Some(per_euro)
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let log = Arc::new(MemoryStore::new());
/// for rate in [1.10, 1.08] {
///     let event = NewEvent::from_event(&RateEvent::Set { per_euro: rate })?;
///     log.append(AppendRequest::new(StreamId::new("rate", "USD")?, ExpectedVersion::Any, vec![event])).await?;
/// }
/// let views = Arc::new(MemoryViews::<Keyed>::new());
/// Runner::new(TableView::new(Rates), log, Arc::clone(&views)).catch_up().await?;
/// assert_eq!(TableView::<Rates, MemoryViews<Keyed>>::get(&views, "USD").await?, Some(1.08));
/// # Ok(()) }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a keel table",
    note = "implement `keel_projections::Table` for `{Self}`: its inputs, key and `update`"
)]
pub trait Table: Send + Sync + 'static {
    /// What it reads, decoded from its topics by [`inputs`](Self::inputs).
    type Input: Send + Sync + 'static;
    /// A row.
    type Row: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;
    /// The stable name (`[a-z0-9_]`): it keys the view, and the rows a join keeps.
    const NAME: &'static str;
    /// The version of the rows' shape and logic: bump it to rebuild the table.
    const VERSION: u32 = 1;

    /// The topics it reads and how their records decode.
    fn inputs(&self) -> Inputs<Self::Input>;

    /// The key of the row an input changes; `None` passes it over.
    fn key(&self, input: &Envelope<Self::Input>) -> Option<String>;

    /// The row after `input`, from the current one (`None` when absent): `None` deletes it.
    fn update(&self, row: Option<Self::Row>, input: &Envelope<Self::Input>) -> Option<Self::Row>;
}

const ROWS: &str = "rows";

/// Runs a [`Table`] as a projection in keyed store `S`, and reads it.
pub struct TableView<T: Table, S> {
    table: T,
    inputs: Inputs<T::Input>,
    store: PhantomData<fn() -> S>,
}

impl<T: Table, S> std::fmt::Debug for TableView<T, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableView")
            .field("name", &T::NAME)
            .field("inputs", &self.inputs)
            .finish_non_exhaustive()
    }
}

impl<T: Table, S: KeyedStore> TableView<T, S> {
    /// Runs `table`.
    pub fn new(table: T) -> Self {
        let inputs = table.inputs();
        Self {
            table,
            inputs,
            store: PhantomData,
        }
    }

    /// The row under `key`, as of the table's last commit.
    ///
    /// # Errors
    ///
    /// A view-store failure or a row that does not decode.
    pub async fn get(views: &S, key: &str) -> crate::Result<Option<T::Row>> {
        keyed::read(views, T::NAME, ROWS, key).await
    }

    /// Up to `limit` rows with keys `>= from`, in key order.
    ///
    /// # Errors
    ///
    /// A view-store failure or a row that does not decode.
    pub async fn rows(views: &S, from: &str, limit: usize) -> crate::Result<Vec<(String, T::Row)>> {
        views
            .read_range(T::NAME, ROWS, from, limit)
            .await?
            .into_iter()
            .map(|(k, v)| {
                let row = keyed::decode(ROWS, &k, &v)?;
                Ok((k, row))
            })
            .collect()
    }
}

impl<T: Table, S: KeyedStore> Projection for TableView<T, S> {
    type Event = AnyRecord;
    type Store = S;
    const NAME: &'static str = T::NAME;
    const VERSION: u32 = T::VERSION;

    fn topics(&self) -> Vec<Topic> {
        self.inputs.topics()
    }

    fn reads(&self, record: &RecordedEvent) -> bool {
        self.inputs.decode_types(record)
    }

    async fn setup(&self, view: &mut S::Batch) -> Result<(), BoxError> {
        S::setup_keyed(view).await?;
        Ok(())
    }

    async fn apply(
        &self,
        view: &mut S::Batch,
        events: &[Envelope<AnyRecord>],
    ) -> Result<(), BoxError> {
        let mut state = State::<S> { batch: view };
        for env in events {
            let Some(input) = self.inputs.decode(&env.record) else {
                continue;
            };
            let input = Envelope {
                event: input?,
                record: env.record.clone(),
            };
            let Some(key) = self.table.key(&input) else {
                continue;
            };
            let row = state.get::<T::Row>(ROWS, &key).await?;
            match self.table.update(row, &input) {
                Some(row) => state.put(ROWS, &key, &row).await?,
                None => state.delete(ROWS, &key).await?,
            }
        }
        Ok(())
    }
}

/// A table's rows as a join keeps them: type-erased, encoded.
pub(crate) trait AnyTable: Send + Sync {
    fn name(&self) -> &'static str;
    fn inputs(&self) -> Vec<Topic>;
    /// The key and new value (encoded; `None` deletes) an input record makes, given a way to
    /// read the current value; `None` when the table does not read the record.
    fn change(&self, record: &RecordedEvent) -> Option<Result<Change, BoxError>>;
}

/// A row change decided from one record, waiting for the current row.
pub(crate) struct Change {
    pub(crate) key: String,
    #[expect(clippy::type_complexity, reason = "one boxed step, used once")]
    pub(crate) update: Box<dyn FnOnce(Option<&[u8]>) -> Result<Option<Vec<u8>>, BoxError> + Send>,
}

/// A table behind [`AnyTable`].
pub(crate) struct Erased<T: Table> {
    pub(crate) table: Arc<T>,
    pub(crate) inputs: Inputs<T::Input>,
}

impl<T: Table> AnyTable for Erased<T> {
    fn name(&self) -> &'static str {
        T::NAME
    }

    fn inputs(&self) -> Vec<Topic> {
        self.inputs.topics()
    }

    fn change(&self, record: &RecordedEvent) -> Option<Result<Change, BoxError>> {
        let input = match self.inputs.decode(record)? {
            Ok(input) => input,
            Err(e) => return Some(Err(e.into())),
        };
        let input = Envelope {
            event: input,
            record: record.clone(),
        };
        let key = self.table.key(&input)?;
        let table = Arc::clone(&self.table);
        let name = T::NAME;
        let row_key = key.clone();
        Some(Ok(Change {
            key,
            update: Box::new(move |current| {
                let current = current
                    .map(|bytes| keyed::decode::<T::Row>(name, &row_key, bytes))
                    .transpose()?;
                table
                    .update(current, &input)
                    .map(|row| keyed::encode(name, &row_key, &row))
                    .transpose()
                    .map_err(Into::into)
            }),
        }))
    }
}
