"""The shape every pipeline stage shares.

A stage is a module in jobs/ with:

    NAME: str                      # e.g. "normalize"
    def run(conn, start, end) -> int

`run` works in the caller's transaction and returns the rows it touched. With explicit
`start`/`end` (backfill, `wattline jobs run STAGE --from --to`) it recomputes every
meter over [start, end). With both None (the scheduler's incremental run) it decides its
own work: new data past its watermark plus the dirty-range entries it has not consumed
(jobs.dirty.pending / advance). A stage that rewrites a meter's intervals logs that with
jobs.dirty.log_energy_change so the stages after it follow. Run twice, it gives the same
rows.

Two optional attributes tune backfills (jobs.runner.backfill):

    PARTITIONS = True              # run(conn, start, end, part=(i, n)) does the i-th of n
                                   # disjoint shares (points or meters), so a backfill can
                                   # run the shares of a chunk on n connections at once
    def finish(conn, start, end)   # optional with PARTITIONS: the part of a chunk's work
                                   # that needs all n shares done (rollups: entities)
    def prepare(conn, start, end)  # optional with finish: committed before the n shares
                                   # start (billing: the chunks they write into)
    BACKFILL_CHUNK = timedelta     # smallest useful piece of a backfill (rollups: their
                                   # buckets are wider than a day)
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

import psycopg

QUARTER = dt.timedelta(minutes=15)

# How long an incremental clean or normalize waits for readings being written before it
# gives way (recorded as skipped; the next run retries).
WRITE_GATE_TIMEOUT_S = 5.0


class StageBusy(Exception):
    """The stage cannot start its work now; run_stage records the run as skipped."""


def close_write_gate(conn: psycopg.Connection, *, give_way: bool) -> None:
    """Hold new readings back until this transaction ends, after those in flight commit.

    Clean and normalize advance per-point watermarks past the readings they saw, and the
    writer (app.readings) logs a reading as late only if it is older than a committed
    watermark. A reading committed after a stage took its snapshot, but checked before
    the stage committed, would be neither seen nor logged. So writers hold ROW EXCLUSIVE
    on ops.write_gate from before their check, and these stages take SHARE before they
    read: a stage waits for the writes in flight, and later writes wait for its commit,
    then see its watermarks. Stages (and the parts of a backfill) share the gate.
    give_way: after WRITE_GATE_TIMEOUT_S of waiting for a long write, raise StageBusy
    (incremental runs; a backfill waits).
    """
    if not give_way:
        conn.execute("LOCK TABLE ops.write_gate IN SHARE MODE")
        return
    (before,) = conn.execute("SELECT current_setting('lock_timeout')").fetchone()
    conn.execute("SELECT set_config('lock_timeout', %s, true)",
                 (f"{max(1, round(WRITE_GATE_TIMEOUT_S * 1000))}ms",))
    try:
        conn.execute("LOCK TABLE ops.write_gate IN SHARE MODE")
    except psycopg.errors.LockNotAvailable:
        raise StageBusy(f"readings were being written for more than {WRITE_GATE_TIMEOUT_S:g} s; "
                        "the next run retries") from None
    conn.execute("SELECT set_config('lock_timeout', %s, true)", (before,))


class StageModule(Protocol):
    NAME: str

    def run(self, conn: psycopg.Connection, start: dt.datetime | None, end: dt.datetime | None) -> int: ...


def floor_quarter(ts: dt.datetime) -> dt.datetime:
    """Start of the 15-minute interval holding ts (UTC-aligned; every real offset is a
    multiple of 15 minutes)."""
    epoch = int(ts.timestamp())
    return dt.datetime.fromtimestamp(epoch - epoch % 900, tz=dt.timezone.utc)


def ceil_quarter(ts: dt.datetime) -> dt.datetime:
    floor = floor_quarter(ts)
    return floor if floor == ts else floor + QUARTER
