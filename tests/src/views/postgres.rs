//! The suite on [`PostgresViews`], each test in a database of its own on the server named by
//! `KEEL_TEST_POSTGRES_URL` (a test fails without one, saying how to start one). The tally is
//! two tables per generation, `totals` (a row per account) and `build` (the build number),
//! read back through [`PostgresViews::begin_read`].

use keel_projections::BoxError;
use keel_projections::sqlx::{self, Row as _};
use keel_projections::store::postgres::{PgBatch, PostgresViews};

use super::{Change, Place, Row, SuiteViews, TALLY, TallyView};

impl SuiteViews for PostgresViews {
    const KIND: &'static str = "postgres";
    const DURABLE: bool = true;

    async fn create() -> anyhow::Result<Place> {
        Ok(Place {
            at: keel::testing::postgres::create_database("views").await,
            dir: None,
        })
    }

    async fn open(at: &str) -> anyhow::Result<Self> {
        Ok(Self::connect(at).await?)
    }

    async fn close(&self) {
        PostgresViews::close(self).await;
    }

    async fn setup(batch: &mut PgBatch, build: u64) -> Result<(), BoxError> {
        let sql = format!(
            "CREATE TABLE {} (account TEXT PRIMARY KEY, total BIGINT NOT NULL, \
             events BIGINT NOT NULL, built_by BIGINT NOT NULL)",
            batch.table("totals")
        );
        sqlx::query(&sql).execute(batch.conn()).await?;
        let sql = format!("CREATE TABLE {} (n BIGINT NOT NULL)", batch.table("build"));
        sqlx::query(&sql).execute(batch.conn()).await?;
        let sql = format!("INSERT INTO {} (n) VALUES ($1)", batch.table("build"));
        sqlx::query(&sql)
            .bind(i64::try_from(build)?)
            .execute(batch.conn())
            .await?;
        Ok(())
    }

    async fn add(batch: &mut PgBatch, changes: &[Change]) -> Result<(), BoxError> {
        let sql = format!(
            "INSERT INTO {} AS t (account, total, events, built_by) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (account) DO UPDATE SET total = t.total + excluded.total, \
             events = t.events + excluded.events",
            batch.table("totals")
        );
        for change in changes {
            sqlx::query(&sql)
                .bind(&change.account)
                .bind(change.total)
                .bind(i64::try_from(change.events)?)
                .bind(i64::from(change.built_by))
                .execute(batch.conn())
                .await?;
        }
        Ok(())
    }

    async fn read(&self) -> anyhow::Result<Option<TallyView>> {
        let mut read = self.begin_read().await?;
        let (Some(build), Some(totals)) = (
            read.table(TALLY, "build").await?,
            read.table(TALLY, "totals").await?,
        ) else {
            read.finish().await?;
            return Ok(None);
        };
        let build: i64 = sqlx::query_scalar(&format!("SELECT n FROM {build}"))
            .fetch_one(read.conn())
            .await?;
        let found = sqlx::query(&format!(
            "SELECT account, total, events, built_by FROM {totals}"
        ))
        .fetch_all(read.conn())
        .await?;
        read.finish().await?;
        let mut view = TallyView {
            build: u64::try_from(build)?,
            ..TallyView::default()
        };
        for r in &found {
            view.rows.insert(
                r.try_get(0)?,
                Row {
                    total: r.try_get(1)?,
                    events: u64::try_from(r.try_get::<i64, _>(2)?)?,
                    built_by: u32::try_from(r.try_get::<i64, _>(3)?)?,
                },
            );
        }
        Ok(Some(view))
    }

    async fn tables(&self) -> anyhow::Result<Option<Vec<String>>> {
        Ok(Some(
            sqlx::query_scalar(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() \
                 AND tablename LIKE 'tally\\_\\_g%' ESCAPE '\\' ORDER BY tablename",
            )
            .fetch_all(self.pool())
            .await?,
        ))
    }
}
