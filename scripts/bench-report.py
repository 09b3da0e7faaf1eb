#!/usr/bin/env python3
"""Turns criterion's output into the book's results page: every figure comes from the last
bench run, beside the machine it ran on. No figure is typed by hand.

    cargo bench -p keel-benches > /dev/null      # or one bench: --bench commands
    python3 scripts/bench-report.py              # writes book/src/results.md

Reads `$CARGO_TARGET_DIR/criterion` (default `target/criterion`). Groups and functions are
listed as criterion names them; the targets table compares the figures the speed issue
names with its thresholds.
"""

import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
CRITERION = TARGET / "criterion"
OUT = ROOT / "book" / "src" / "results.md"

# (label, criterion id, unit, comparison, threshold or another id to compare with).
# A threshold is a number of elements per second; a string names another bench whose
# throughput, times the factor, is the threshold.
TARGETS = [
    ("Memory, distinct accounts: commands/s", "memory/10000_accounts_x5/keel", ">=", 1_000_000),
    ("Memory, distinct accounts: ×cqrs-es", "memory/10000_accounts_x5/keel", ">=x", ("memory/10000_accounts_x5/cqrs-es", 1.5)),
    ("Memory, hot account at 100,000 events vs at 100", "memory/hot_account/keel/100000", ">=x", ("memory/hot_account/keel/100", 0.8)),
    ("Memory, hot account at 100,000 events: ×cqrs-es at 20,000", "memory/hot_account/keel/100000", ">=x", ("memory/hot_account/cqrs-es/20000", 100)),
    ("SQLite, hot account at 100,000 events vs at 100", "sqlite/hot_account/keel/100000", ">=x", ("sqlite/hot_account/keel/100", 0.8)),
    ("SQLite, 1 writer, fresh accounts: commands/s", "sqlite/fresh_accounts/keel/1_writer", ">=", 3_000),
    ("SQLite, 1 writer, fresh accounts, `expect_new`: commands/s", "sqlite/fresh_accounts/keel_expect_new/1_writer", ">=", 3_000),
    ("SQLite, 1 writer, fresh accounts: share of one-row durable commits", "sqlite/fresh_accounts/keel/1_writer", ">=x", ("sqlite/ceiling/sqlx_one_row_commit", 0.9)),
    ("SQLite, 64 writers, fresh accounts: commands/s", "sqlite/fresh_accounts/keel/64_writers", ">=", 40_000),
    ("SQLite, 64 writers, fresh accounts, `expect_new`: commands/s", "sqlite/fresh_accounts/keel_expect_new/64_writers", ">=", 40_000),
    ("SQLite, 64 tasks on 16 accounts: commands/s", "sqlite/64_tasks_16_accounts/keel/0", ">=", 10_000),
    ("SQLite, 64 tasks on 16 accounts of 4,000 events vs fresh", "sqlite/64_tasks_16_accounts/keel/4000", ">=x", ("sqlite/64_tasks_16_accounts/keel/0", 0.8)),
    ("SQLite, load 10,000 events without a snapshot: events/s", "sqlite/load/no_snapshot/10000", ">=", 1_000_000),
    ("Rebuild, log in SQLite, into SQLite views: events/s", "rebuild_1m/sqlite_log/sqlite_views/balances", ">=", 300_000),
    # PostgreSQL (the same server, in the same run as postgres-es).
    ("PostgreSQL, 1 writer: commands/s", "command/keel-postgres/deposit/1_writer", ">=", 1_500),
    ("PostgreSQL, 1 writer: ×postgres-es", "command/keel-postgres/deposit/1_writer", ">=x", ("command/postgres-es/deposit/1_writer", 1)),
    ("PostgreSQL, 64 writers on distinct accounts: commands/s", "command/keel-postgres/deposit/64_writers", ">=", 25_000),
    ("PostgreSQL, 64 writers: ×postgres-es", "command/keel-postgres/deposit/64_writers", ">=x", ("command/postgres-es/deposit/64_writers", 7)),
    ("Rebuild, log in PostgreSQL, into PostgreSQL views: events/s", "rebuild_1m/postgres_log/postgres_views/balances", ">=", 150_000),
    # Kafka (one broker): Keel's appends within 2× of the raw transactional producer.
    ("Kafka, appends: share of the raw transactional producer", "kafka_appends/keel/64_writers", ">=x", ("kafka_appends/raw_producer/64_per_transaction", 0.5)),
]

# The figures the issues' targets were set against, measured on the issues' machine. The same
# benches on the machine of this run say how it compares: a ratio under 1 is a slower machine,
# and absolute targets move with it while the ratios to peers and ceilings do not.
REFERENCE = [
    ("cqrs-es, memory, 10,000 accounts × 5 (issue 17: 555k–1,049k/s)", "memory/10000_accounts_x5/cqrs-es", 802_000),
    ("postgres-es, 1 writer (issue 12)", "command/postgres-es/deposit/1_writer", 940),
    ("postgres-es, 64 writers (issue 12)", "command/postgres-es/deposit/64_writers", 3_500),
    ("raw sqlx batcher on PostgreSQL, 64 writers (issue 12)", "raw/sqlx-batcher/64_writers", 31_000),
    ("PostgreSQL UNNEST insert of 1,000 rows (issue 12)", "raw/unnest-insert/1000_rows", 156_000),
    ("SQLite one-row durable commits through sqlx (DESIGN.md)", "sqlite/ceiling/sqlx_one_row_commit", 3_200),
]


def sh(*args):
    try:
        return subprocess.run(args, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""


def machine():
    cpu = ""
    for line in sh("lscpu").splitlines():
        if line.startswith("Model name:"):
            cpu = line.split(":", 1)[1].strip()
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    os_name = platform.platform()
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return [
        ("CPU", f"{cpu} ({os.cpu_count()} logical cores)"),
        ("Memory", mem),
        ("OS", f"{os_name}, kernel {platform.release()}"),
        ("Rust", sh("rustc", "--version")),
        ("Commit", sh("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD")),
        ("Date", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
    ]


def load():
    results = {}
    if not CRITERION.is_dir():
        return results
    for bench in CRITERION.rglob("new/benchmark.json"):
        estimates = bench.parent / "estimates.json"
        if not estimates.exists():
            continue
        meta = json.loads(bench.read_text())
        est = json.loads(estimates.read_text())
        ns = est["mean"]["point_estimate"]
        lo = est["mean"]["confidence_interval"]["lower_bound"]
        hi = est["mean"]["confidence_interval"]["upper_bound"]
        elements = None
        throughput = meta.get("throughput") or {}
        if "Elements" in throughput:
            elements = throughput["Elements"]
        elif "Bytes" in throughput:
            elements = throughput["Bytes"]
        results[meta["full_id"]] = {
            "group": meta["group_id"],
            "name": meta["full_id"][len(meta["group_id"]) + 1:],
            "ns": ns,
            "lo": lo,
            "hi": hi,
            "elements": elements,
            "rate": elements / (ns / 1e9) if elements else None,
        }
    return results


def human_time(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def human_rate(rate):
    if rate is None:
        return "—"
    return f"{rate:,.0f}/s"


def main():
    results = load()
    if not results:
        sys.exit(f"no criterion results under {CRITERION}: run `cargo bench -p keel-benches` first")
    lines = [
        "# Results",
        "",
        "Figures from the last run of the criterion benches in `benches/` on the machine below,",
        "written by `scripts/bench-report.py` from criterion's own output. Run them yourself:",
        "",
        "```sh",
        "cargo bench -p keel-benches > /dev/null",
        "python3 scripts/bench-report.py",
        "```",
        "",
        "Throughput is elements per second: commands, appends, events or rows, as the group says.",
        "Peers (`cqrs-es`, `postgres-es`) run in the same process, on the same workload.",
        "",
        "## The machine",
        "",
        "| | |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in machine()]
    lines += ["", "## Against the targets", "", "| what | measured | target | met |", "|---|---|---|---|"]
    for label, bench, op, want in TARGETS:
        got = results.get(bench)
        if got is None or got["rate"] is None:
            lines.append(f"| {label} | not run | | |")
            continue
        if op == ">=":
            ok = got["rate"] >= want
            lines.append(f"| {label} | {human_rate(got['rate'])} | ≥ {want:,}/s | {'yes' if ok else 'no'} |")
        else:
            other_id, factor = want
            other = results.get(other_id)
            if other is None or other["rate"] is None:
                lines.append(f"| {label} | {human_rate(got['rate'])} | ≥ {factor}× `{other_id}` (not run) | |")
                continue
            ratio = got["rate"] / other["rate"]
            ok = ratio >= factor
            lines.append(
                f"| {label} | {ratio:.2f}× ({human_rate(got['rate'])} vs {human_rate(other['rate'])}) "
                f"| ≥ {factor}× | {'yes' if ok else 'no'} |"
            )
    lines += [
        "",
        "## This machine against the issues' machine",
        "",
        "The targets above are absolute figures set on the machine the issues were written on.",
        "The same peers and ceilings, run here, show how this machine compares with that one.",
        "",
        "| peer or ceiling | here | on the issues' machine | ratio |",
        "|---|---|---|---|",
    ]
    for label, bench, reference in REFERENCE:
        got = results.get(bench)
        if got is None or got["rate"] is None:
            lines.append(f"| {label} | not run | {reference:,}/s | |")
            continue
        lines.append(
            f"| {label} | {human_rate(got['rate'])} | {reference:,}/s | {got['rate'] / reference:.2f}× |"
        )
    groups = {}
    for full_id, r in results.items():
        groups.setdefault(r["group"], []).append(r)
    lines += ["", "## Every bench", ""]
    for group in sorted(groups):
        lines += [f"### `{group}`", "", "| bench | time per iteration (95% CI) | throughput |", "|---|---|---|"]
        for r in sorted(groups[group], key=lambda r: r["name"]):
            lines.append(
                f"| `{r['name']}` | {human_time(r['ns'])} ({human_time(r['lo'])} – {human_time(r['hi'])}) "
                f"| {human_rate(r['rate'])} |"
            )
        lines.append("")
    OUT.write_text("\n".join(lines))
    print(f"wrote {OUT.relative_to(ROOT)} from {len(results)} benches")


if __name__ == "__main__":
    main()
