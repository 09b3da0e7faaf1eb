//! Criterion benches for keel live in `benches/`; this library holds what several of them
//! share.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use keel_projections::{Projection, Runner};
use tokio_util::sync::CancellationToken;

/// Times `runner`'s side-by-side rebuild of a log of `events` events as `rebuild_1m/<name>`,
/// ten samples in `measurement` time.
pub fn bench_rebuild<P: Projection>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    runner: &Runner<P>,
    events: u64,
    measurement: Duration,
) {
    let mut group = c.benchmark_group("rebuild_1m");
    group.sample_size(10).measurement_time(measurement);
    group.throughput(Throughput::Elements(events));
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                rt.block_on(runner.rebuild(false, CancellationToken::new()))
                    .expect("rebuild");
                total += start.elapsed();
            }
            total
        });
    });
    group.finish();
}
