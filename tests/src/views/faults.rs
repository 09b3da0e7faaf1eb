//! Cases on bad events: a handler failure stops the projection naming the event, with
//! everything before it applied and nothing after; with `OnBadEvent::Park` the event is parked
//! in the store and everything else applied once, and a parked event is applied once when
//! retried after a fix; an event that does not decode is parked the same way.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use keel::{EventStore, NewEvent, RecordedEvent};
use keel_projections::{Error, EventRef, OnBadEvent, Runner, RunnerConfig};

use super::{
    Entry, POISON, SuiteViews, TALLY, Tally, account, active_checkpoints, append_to, before,
    expected, fill, fresh, guard, ledger, memory_log, read_log, rows,
};

/// Small batches, so that the bad event sits inside a batch with good ones around it.
fn config(on_bad_event: OnBadEvent) -> RunnerConfig {
    RunnerConfig {
        batch_size: 16,
        on_bad_event,
        ..RunnerConfig::default()
    }
}

/// The log without the record at `bad`.
fn without<'a>(
    records: &'a [RecordedEvent],
    bad: &'a EventRef,
) -> impl Iterator<Item = &'a RecordedEvent> + 'a {
    records
        .iter()
        .filter(|r| !(r.partition() == bad.partition && r.offset() == bad.offset))
}

/// Where `appended`'s first event landed.
fn event_ref(appended: &keel::Appended, event_type: &str) -> anyhow::Result<EventRef> {
    Ok(EventRef {
        topic: ledger(),
        partition: appended.partition,
        offset: *appended
            .offsets
            .first()
            .ok_or_else(|| anyhow::anyhow!("nothing appended"))?,
        stream: appended.stream.clone(),
        version: appended.first_version,
        event_type: event_type.to_owned(),
    })
}

/// A log on 2 partitions with a good prefix that `runner` has caught up on, then a bad event
/// (`bad`, appended to `acc-0005`), then good events after it: to the same account and to 20
/// new accounts on both partitions.
async fn log_with<S: SuiteViews>(
    runner: &Runner<Tally<S>>,
    log: &Arc<dyn EventStore>,
    bad: NewEvent,
) -> anyhow::Result<EventRef> {
    fill(log, 0..20, 30, 1).await?;
    guard("the good prefix", runner.catch_up()).await??;
    let event_type = bad.event_type.clone();
    let appended = append_to(log.as_ref(), "acc-0005", vec![bad]).await?;
    append_to(
        log.as_ref(),
        "acc-0005",
        vec![NewEvent::from_event(&Entry::Credited { amount: 3 })?; 3],
    )
    .await?;
    fill(log, 20..40, 30, 2).await?;
    event_ref(&appended, &event_type)
}

/// A runner of a broken tally on a fresh store and log.
async fn broken<S: SuiteViews>(
    on_bad_event: OnBadEvent,
) -> anyhow::Result<(super::Place, Arc<dyn EventStore>, Runner<Tally<S>>)> {
    let (place, views) = fresh::<S>().await?;
    let log = memory_log(2);
    let runner =
        Runner::new(Tally::<S>::broken(), Arc::clone(&log), views).config(config(on_bad_event));
    Ok((place, log, runner))
}

/// Stop (the default): the error names the event; the view holds exactly the events before
/// the checkpoints, each applied once, and the event's partition's checkpoint is its offset.
/// Starting again stops on the same event and skips nothing.
pub async fn a_handler_failure_stops_the_projection_naming_the_event<S: SuiteViews>()
-> anyhow::Result<()> {
    let (_place, log, runner) = broken::<S>(OnBadEvent::Stop).await?;
    let poison = log_with(
        &runner,
        &log,
        NewEvent::from_event(&Entry::Credited { amount: POISON })?,
    )
    .await?;
    let error = guard("catch_up", runner.catch_up())
        .await?
        .expect_err("the projection stops on the poison");
    let text = error.to_string();
    let Error::Handler {
        projection,
        event,
        source,
    } = &error
    else {
        anyhow::bail!("expected a handler error, got {error:?}");
    };
    assert_eq!(projection, TALLY);
    assert_eq!(event, &poison);
    assert_eq!(poison.stream, account("acc-0005")?);
    assert!(
        text.starts_with(
            r#"projection tally failed on event "Credited" of stream ledger/acc-0005"#
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!("offset {}", poison.offset)),
        "{text}"
    );
    assert!(source.to_string().contains("777777"), "{source}");

    let views = runner.views();
    let records = read_log(log.as_ref()).await?;
    let checkpoints = active_checkpoints(views.as_ref(), log.as_ref()).await?;
    assert_eq!(checkpoints.get(&poison.partition.0), Some(&poison.offset.0));
    assert_eq!(
        rows(views.as_ref()).await?,
        expected(before(&records, &checkpoints), 1)?
    );
    let status = runner.status().await?;
    assert!(status.lag > 0, "{status:?}");
    assert!(status.parked.is_empty(), "{status:?}");

    let again = guard("catch_up again", runner.catch_up()).await?;
    assert!(
        matches!(&again, Err(Error::Handler { event, .. }) if *event == poison),
        "{again:?}"
    );
    // The other partition may have gone on; the poison's stays where it was.
    let again = active_checkpoints(views.as_ref(), log.as_ref()).await?;
    assert_eq!(again.get(&poison.partition.0), Some(&poison.offset.0));
    assert_eq!(
        rows(views.as_ref()).await?,
        expected(before(&records, &again), 1)?
    );
    views.close().await;
    Ok(())
}

/// Park: the event is parked in the store and skipped, everything else applied once; a retry
/// while still broken changes nothing; fixed and retried, it is applied once and leaves the
/// parked list.
pub async fn with_park_a_handler_failure_is_parked_and_the_rest_applied_once<S: SuiteViews>()
-> anyhow::Result<()> {
    let (_place, log, runner) = broken::<S>(OnBadEvent::Park).await?;
    let poison = log_with(
        &runner,
        &log,
        NewEvent::from_event(&Entry::Credited { amount: POISON })?,
    )
    .await?;
    guard("catch_up", runner.catch_up()).await??;
    let views = runner.views();
    let records = read_log(log.as_ref()).await?;
    let status = runner.status().await?;
    assert_eq!(status.lag, 0, "{status:?}");
    let parked: Vec<&EventRef> = status.parked.iter().map(|p| &p.event).collect();
    assert_eq!(parked, [&poison], "{status:?}");
    assert!(
        status.parked.iter().all(|p| p.error.contains("777777")),
        "{status:?}"
    );
    let skipped = expected(without(&records, &poison), 1)?;
    assert_eq!(
        rows(views.as_ref()).await?,
        skipped,
        "everything but the poison, each once"
    );

    // Still broken: a retry fails again and changes nothing.
    assert_eq!(guard("retry", runner.retry_parked()).await??, 0);
    assert_eq!(runner.status().await?.parked.len(), 1);
    assert_eq!(rows(views.as_ref()).await?, skipped);

    runner.projection().broken.store(false, Ordering::SeqCst);
    assert_eq!(guard("retry", runner.retry_parked()).await??, 1);
    let status = runner.status().await?;
    assert_eq!(status.parked, []);
    assert_eq!(status.lag, 0);
    let all = expected(&records, 1)?;
    assert_eq!(rows(views.as_ref()).await?, all, "now the poison too, once");
    guard("catch_up again", runner.catch_up()).await??;
    assert_eq!(rows(views.as_ref()).await?, all, "nothing applied twice");
    views.close().await;
    Ok(())
}

/// Park: an event whose payload does not decode is parked with the decoder's reason, the rest
/// applied once; a retry cannot help it, so it stays parked.
pub async fn with_park_an_event_that_does_not_decode_is_parked_and_skipped<S: SuiteViews>()
-> anyhow::Result<()> {
    let (_place, log, runner) = broken::<S>(OnBadEvent::Park).await?;
    let bad = log_with(
        &runner,
        &log,
        NewEvent::raw("Credited", 1, br#"{"amount":"lots"}"#.to_vec()),
    )
    .await?;
    guard("catch_up", runner.catch_up()).await??;
    let views = runner.views();
    let records = read_log(log.as_ref()).await?;
    let status = runner.status().await?;
    assert_eq!(status.lag, 0, "{status:?}");
    let parked: Vec<&EventRef> = status.parked.iter().map(|p| &p.event).collect();
    assert_eq!(parked, [&bad], "{status:?}");
    assert!(
        status
            .parked
            .iter()
            .all(|p| p.error.contains("payload does not decode") && p.error.contains("lots")),
        "{status:?}"
    );
    assert_eq!(
        rows(views.as_ref()).await?,
        expected(without(&records, &bad), 1)?
    );
    assert_eq!(guard("retry", runner.retry_parked()).await??, 0);
    assert_eq!(runner.status().await?.parked.len(), 1);
    views.close().await;
    Ok(())
}
