"""The shape every pipeline stage shares.

A stage is a module in jobs/ with:

    NAME: str                      # e.g. "normalize"
    def run(conn, start, end) -> int

`run` works in the caller's transaction and returns the rows it touched. With explicit
`start`/`end` (backfill, `wattline jobs run STAGE --from --to`) it recomputes every
meter over [start, end). With both None (the scheduler's incremental run) it decides its
own work: new data past its watermark plus the dirty-range entries after its cursor
(jobs.dirty.pending / advance). A stage that rewrites a meter's intervals logs that with
jobs.dirty.log_energy_change so the stages after it follow. Run twice, it gives the same
rows.

Two optional attributes tune backfills (jobs.runner.backfill):

    PARTITIONS = True              # run(conn, start, end, part=(i, n)) does the i-th of n
                                   # disjoint shares (points or meters), so a backfill can
                                   # run the shares of a chunk on n connections at once
    def finish(conn, start, end)   # optional with PARTITIONS: the part of a chunk's work
                                   # that needs all n shares done (rollups: entities)
    BACKFILL_CHUNK = timedelta     # smallest useful piece of a backfill (rollups: their
                                   # buckets are wider than a day)
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

import psycopg

QUARTER = dt.timedelta(minutes=15)


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
