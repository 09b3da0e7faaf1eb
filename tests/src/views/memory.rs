//! The suite on [`MemoryViews`]: the tally is a [`TallyView`] value per generation. Not
//! durable: [`SuiteViews::open`] gives a new, empty store every time.

use keel_projections::BoxError;
use keel_projections::store::memory::{MemoryBatch, MemoryViews};

use super::{Change, Place, Row, SuiteViews, TALLY, TallyView};

impl SuiteViews for MemoryViews<TallyView> {
    const KIND: &'static str = "memory";
    const DURABLE: bool = false;

    async fn create() -> anyhow::Result<Place> {
        Ok(Place {
            at: "memory".to_owned(),
            dir: None,
        })
    }

    async fn open(_at: &str) -> anyhow::Result<Self> {
        Ok(Self::new())
    }

    async fn close(&self) {}

    async fn setup(batch: &mut MemoryBatch<TallyView>, build: u64) -> Result<(), BoxError> {
        batch.build = build;
        Ok(())
    }

    async fn add(batch: &mut MemoryBatch<TallyView>, changes: &[Change]) -> Result<(), BoxError> {
        for change in changes {
            let row = batch.rows.entry(change.account.clone()).or_insert(Row {
                built_by: change.built_by,
                ..Row::default()
            });
            row.total += change.total;
            row.events += change.events;
        }
        Ok(())
    }

    async fn read(&self) -> anyhow::Result<Option<TallyView>> {
        Ok(MemoryViews::read(self, TALLY, TallyView::clone).await)
    }

    async fn tables(&self) -> anyhow::Result<Option<Vec<String>>> {
        Ok(None)
    }
}
