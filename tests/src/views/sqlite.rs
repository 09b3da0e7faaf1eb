//! The suite on [`SqliteViews`]: the tally is two tables per generation, `totals` (a row per
//! account) and `build` (the build number), read back through [`SqliteViews::begin_read`].

use keel_projections::BoxError;
use keel_projections::sqlx::{self, Row as _};
use keel_projections::store::sqlite::{SqliteBatch, SqliteViews};

use super::{Change, Place, Row, SuiteViews, TALLY, TallyView};

impl SuiteViews for SqliteViews {
    const KIND: &'static str = "sqlite";
    const DURABLE: bool = true;

    async fn create() -> anyhow::Result<Place> {
        let dir = tempfile::tempdir()?;
        let at = dir
            .path()
            .join("views.db")
            .to_str()
            .ok_or_else(|| anyhow::anyhow!("a temporary path that is not UTF-8"))?
            .to_owned();
        Ok(Place { at, dir: Some(dir) })
    }

    async fn open(at: &str) -> anyhow::Result<Self> {
        Ok(Self::open(at).await?)
    }

    async fn close(&self) {
        SqliteViews::close(self).await;
    }

    async fn setup(batch: &mut SqliteBatch, build: u64) -> Result<(), BoxError> {
        let sql = format!(
            "CREATE TABLE {} (account TEXT PRIMARY KEY, total INTEGER NOT NULL, \
             events INTEGER NOT NULL, built_by INTEGER NOT NULL)",
            batch.table("totals")
        );
        sqlx::query(&sql).execute(batch.conn()).await?;
        let sql = format!("CREATE TABLE {} (n INTEGER NOT NULL)", batch.table("build"));
        sqlx::query(&sql).execute(batch.conn()).await?;
        let sql = format!("INSERT INTO {} (n) VALUES (?)", batch.table("build"));
        sqlx::query(&sql)
            .bind(i64::try_from(build)?)
            .execute(batch.conn())
            .await?;
        Ok(())
    }

    async fn add(batch: &mut SqliteBatch, changes: &[Change]) -> Result<(), BoxError> {
        let sql = format!(
            "INSERT INTO {} (account, total, events, built_by) VALUES (?, ?, ?, ?) \
             ON CONFLICT (account) DO UPDATE SET total = total + excluded.total, \
             events = events + excluded.events",
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
                "SELECT name FROM sqlite_master WHERE type = 'table' \
                 AND name LIKE 'tally\\_\\_g%' ESCAPE '\\' ORDER BY name",
            )
            .fetch_all(self.pool())
            .await?,
        ))
    }
}
