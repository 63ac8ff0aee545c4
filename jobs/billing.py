"""Pipeline stage `billing`: monthly bills (with revisions) and 15-minute interval cost.

Runs after the rollups. A bill cannot be half recomputed, so every range it is given
(explicit, dirty, or new data past a meter's watermark) widens to the whole billing
periods it touches; those periods are re-priced for the meters concerned, their
billing.meter_cost rows rewritten, the cost rollups (per meter, then per entity)
refreshed, and the cost-center and tenant bills holding those meters rebuilt from the
meter bills. Entities whose meter links changed get their whole cost history
recomputed. Bills of an open period are updated in place; a closed bill that comes out
different gets a new revision.
Meters sharing a period's tariff segments are priced together in one numpy pass.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import logging
import struct
import time
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import psycopg
from psycopg.copy import QueuedLibpqWriter

from app.billing import (
    F_OPEN, Line, PeriodResult, Segment, bill_totals, billing_periods, price_period, quarter_grid,
)
from app.tariffs import Tariff, load_tariffs
from jobs import dirty

NAME = "billing"
# A range is priced by whole billing periods, so a backfill takes it in pieces of a year:
# day-long pieces would re-price the month touching each day again.
BACKFILL_CHUNK = dt.timedelta(days=366)
# A backfill prices the periods in shares of time on several connections (jobs.base):
# prepare() creates the interval-cost chunks, finish() settles what needs every share.
PARTITIONS = True
BATCH = 500           # meters priced together at most
PG_EPOCH = 946_684_800  # 2000-01-01 in Unix seconds
QUARTER_S = 900
log = logging.getLogger("wattline.jobs.billing")

Timeline = list[tuple[int, dt.datetime, dt.datetime]]   # (tariff_id, start, end)


# -------------------------------------------------------------- tariff resolution
def resolve_timelines(conn: psycopg.Connection, meter_ids: list[int] | None,
                      start: dt.datetime, end: dt.datetime) -> dict[int, Timeline]:
    """Each meter's tariff over [start, end): a meter assignment beats a tenant's (lowest
    tenant id first when a meter has several), which beats its cost center's; each
    clipped to the tariff's own validity."""
    rows = conn.execute(
        """
        SELECT m.id, a.tariff_id,
               greatest(a.valid_from, t.valid_from, %(s)s), least(a.valid_to, t.valid_to, %(e)s),
               CASE WHEN a.meter_id IS NOT NULL THEN 0 WHEN a.tenant_id IS NOT NULL THEN 1 ELSE 2 END,
               coalesce(a.tenant_id, 0)
        FROM config.meter m
        JOIN config.tariff_assignment a
          ON a.meter_id = m.id
          OR (a.category_id = m.category_id
              AND (a.cost_center_id = m.cost_center_id
                   OR a.tenant_id IN (SELECT tm.tenant_id FROM config.tenant_meter tm WHERE tm.meter_id = m.id)))
        JOIN config.tariff t ON t.id = a.tariff_id
        WHERE (%(m)s::int[] IS NULL OR m.id = ANY (%(m)s))
          AND greatest(a.valid_from, t.valid_from, %(s)s) < least(a.valid_to, t.valid_to, %(e)s)
        """,
        {"s": start, "e": end, "m": meter_ids},
    ).fetchall()
    cands: dict[int, list] = defaultdict(list)
    for meter, tariff, lo, hi, level, tenant in rows:
        cands[meter].append((level, tenant, tariff, lo, hi))
    out: dict[int, Timeline] = {}
    for meter, cs in cands.items():
        cuts = sorted({c[3] for c in cs} | {c[4] for c in cs})
        pieces: Timeline = []
        for a, b in zip(cuts, cuts[1:]):
            covering = [c for c in cs if c[3] <= a and c[4] >= b]
            if not covering:
                continue
            tariff = min(covering)[2]
            if pieces and pieces[-1][0] == tariff and pieces[-1][2] == a:
                pieces[-1] = (tariff, pieces[-1][1], b)
            else:
                pieces.append((tariff, a, b))
        out[meter] = pieces
    return out


def plan(conn: psycopg.Connection, tariffs: dict[int, Tariff], meter_ids: list[int] | None,
         start: dt.datetime, end: dt.datetime) -> dict[tuple, list[int]]:
    """Work: (period_start, period_end, segments) -> meters, for every billing period
    touching [start, end)."""
    margin = dt.timedelta(days=40)
    timelines = resolve_timelines(conn, meter_ids, start - margin, end + margin)
    work: dict[tuple, set[int]] = defaultdict(set)
    for meter, pieces in timelines.items():
        for tariff_id, lo, hi in pieces:
            t = tariffs[tariff_id]
            for ps, pe in billing_periods(t.zone, t.wattline.billing_cycle_day,
                                          max(lo, start), min(hi, end)):
                segs = tuple((tid, max(a, ps), min(b, pe)) for tid, a, b in pieces if a < pe and b > ps)
                work[(ps, pe, segs)].add(meter)
    return {k: sorted(v) for k, v in work.items()}


# ------------------------------------------------------------------------ loading
# array_send() of a one-dimensional array without NULLs: ndim, has-nulls flag, element
# type, length, lower bound, then each element as (length, value). timestamptz values
# are int8 microseconds since 2000-01-01 UTC.
_ARRAY_HEADER = 20
_TS_ELEM = np.dtype([("len", ">i4"), ("v", ">i8")])
_F8_ELEM = np.dtype([("len", ">i4"), ("v", ">f8")])


def load_matrix(conn: psycopg.Connection, meter_ids: list[int], start: dt.datetime, end: dt.datetime
                ) -> tuple[np.ndarray, np.ndarray]:
    """(energy, present) as (meters, quarter-hours of [start, end)); NaN where energy is NULL.

    One row per meter: its timestamps and energies as two arrays aggregated in the same
    pass (so in the same order), sent in binary and read straight into numpy. A row per
    interval (COPY) costs a client round of work per row; this is about twice as fast."""
    grid = quarter_grid(start, end)
    M, N = len(meter_ids), len(grid)
    energy = np.full((M, N), np.nan)
    present = np.zeros((M, N), dtype=bool)
    if not M or not N:
        return energy, present
    row_of = {m: i for i, m in enumerate(meter_ids)}
    cur = conn.cursor(binary=True)
    cur.execute(
        "SELECT meter_id, array_send(array_agg(ts)), array_send(array_agg(coalesce(energy, 'NaN'::float8))) "
        "FROM energy.meter_interval WHERE meter_id = ANY (%s) AND ts >= %s AND ts < %s GROUP BY meter_id",
        (meter_ids, start, end))
    offset = PG_EPOCH - int(grid[0])
    for meter, ts_bytes, e_bytes in cur:
        i = row_of[meter]
        ts = np.frombuffer(ts_bytes, dtype=_TS_ELEM, offset=_ARRAY_HEADER)["v"]
        c = (ts // 1_000_000 + offset) // QUARTER_S
        energy[i, c] = np.frombuffer(e_bytes, dtype=_F8_ELEM, offset=_ARRAY_HEADER)["v"]
        present[i, c] = True
    return energy, present


class Loader:
    """Energy matrices for a sequence of (meters, period start, period end), one ahead.

    When the caller's transaction has written nothing yet, every row it can see is
    committed, so a second connection sees the same energy: the next matrix is then
    read there, on a worker thread, while this one is priced and written (the server
    scans for the next batch while Python prices and the server stores this one).
    Otherwise (energy written earlier in the same transaction, as a test may do) each
    matrix is read on the caller's connection when asked for. `waited` is the time spent
    waiting for matrices."""

    def __init__(self, conn: psycopg.Connection, jobs: list[tuple[list[int], dt.datetime, dt.datetime]]):
        self.conn, self.jobs, self.waited = conn, jobs, 0.0
        self.side: psycopg.Connection | None = None
        if len(jobs) > 1 and conn.execute("SELECT pg_current_xact_id_if_assigned() IS NULL").fetchone()[0]:
            try:
                self.side = psycopg.connect(conn.info.dsn, password=conn.info.password, autocommit=True)
            except psycopg.Error as exc:          # no second connection: read in line
                log.info("billing loads energy on one connection: %s", exc)

    def __iter__(self):
        if self.side is None:
            for job in self.jobs:
                t = time.perf_counter()
                out = load_matrix(self.conn, *job)
                self.waited += time.perf_counter() - t
                yield job, out
            return
        with self.side, concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            ahead = pool.submit(load_matrix, self.side, *self.jobs[0])
            for i, job in enumerate(self.jobs):
                t = time.perf_counter()
                out = ahead.result()
                self.waited += time.perf_counter() - t
                if i + 1 < len(self.jobs):
                    ahead = pool.submit(load_matrix, self.side, *self.jobs[i + 1])
                yield job, out


def load_reactive(conn: psycopg.Connection, meter_ids: list[int], start: dt.datetime, end: dt.datetime
                  ) -> np.ndarray | None:
    links = dict(conn.execute(
        "SELECT meter_id, reactive_meter_id FROM config.reactive_meter WHERE meter_id = ANY (%s)",
        (meter_ids,)).fetchall())
    if not links:
        return None
    sources = sorted(set(links.values()))
    q, present = load_matrix(conn, sources, start, end)
    q = np.where(present, q, np.nan)
    out = np.full((len(meter_ids), q.shape[1]), np.nan)
    for i, m in enumerate(meter_ids):
        if m in links:
            out[i] = q[sources.index(links[m])]
    return out


# ------------------------------------------------------------------ interval cost
def _numeric_micro(v: np.ndarray) -> np.ndarray:
    """Binary COPY encoding of micro-units as numeric with 6 decimals: (ndigits 4,
    weight 1, sign, dscale 6, four base-10000 digits); |value| < 10^8."""
    a = np.abs(v)
    whole, frac = a // 1_000_000, (a % 1_000_000) * 100
    if (whole >= 10**8).any():
        raise ValueError("interval cost above 10^8 currency units")
    out = np.zeros(len(v), dtype=[("len", ">i4"), ("nd", ">i2"), ("w", ">i2"), ("sign", ">u2"),
                                  ("ds", ">i2"), ("d", ">i2", 4)])
    out["len"], out["nd"], out["w"], out["ds"] = 16, 4, 1, 6
    out["sign"] = np.where(v < 0, 0x4000, 0)
    out["d"] = np.stack([whole // 10000, whole % 10000, frac // 10000, frac % 10000], axis=1)
    return out


COPY_CHUNK = 131_072   # interval rows encoded at a time


def _meter_cost_chunk(meter_ids: np.ndarray, grid: np.ndarray, res: PeriodResult, r: np.ndarray,
                      c: np.ndarray) -> bytes:
    """Binary COPY rows of billing.meter_cost for the intervals (r, c) of the result; a
    period of -1 is written as NULL (a 4-byte length of -1 instead of 2 + the value)."""
    e = res.energy_micro[r, c]
    o = res.allocated_micro[r, c]
    num = _numeric_micro(e[:1]).dtype
    per = res.period[c]
    k = len(r)
    rows = np.zeros(k, dtype=[("nf", ">i2"), ("l1", ">i4"), ("meter", ">i4"), ("l2", ">i4"), ("ts", ">i8"),
                              ("l3", ">i4"), ("tariff", ">i4"), ("l4", ">i4"), ("period", ">i2"),
                              ("ec", num), ("ac", num), ("tot", num), ("l8", ">i4"), ("flags", ">i2")])
    rows["nf"], rows["l1"], rows["l2"], rows["l3"], rows["l4"], rows["l8"] = 8, 4, 8, 4, 2, 2
    rows["meter"] = meter_ids[r]
    rows["ts"] = (grid[c] - PG_EPOCH) * 1_000_000
    rows["tariff"] = res.tariff_id[c]
    rows["period"] = per
    rows["ec"] = _numeric_micro(e)
    rows["ac"] = _numeric_micro(o)
    rows["tot"] = _numeric_micro(e + o)
    rows["flags"] = res.flags[r, c]
    none = per < 0
    if not none.any():
        return rows.tobytes()
    # Rows without a period: drop the period's two value bytes and mark it NULL.
    rows["l4"][none] = -1
    width = rows.dtype.itemsize
    at = rows.dtype.fields["period"][1]
    raw = rows.view(np.uint8).reshape(k, width)
    keep = np.ones((k, width), dtype=bool)
    keep[none, at:at + 2] = False
    return raw[keep].tobytes()


def write_meter_cost(conn: psycopg.Connection, meter_ids: list[int], period: tuple, res: PeriodResult
                     ) -> int:
    """Replace the meters' interval cost over the billing period with the result's rows.

    One binary COPY; rows are encoded in chunks and handed to a writer thread, so the
    server stores one chunk while the next is encoded."""
    ps, pe = period
    conn.execute("DELETE FROM billing.meter_cost WHERE meter_id = ANY (%s) AND ts >= %s AND ts < %s",
                 (meter_ids, ps, pe))
    grid = quarter_grid(ps, pe)
    r, c = np.nonzero(res.rows)
    if not len(r):
        return 0
    ids = np.asarray(meter_ids, dtype=np.int64)
    cur = conn.cursor()
    with cur.copy("COPY billing.meter_cost (meter_id, ts, tariff_id, period, energy_charge, "
                  "allocated_charge, total, flags) FROM STDIN (FORMAT binary)",
                  writer=QueuedLibpqWriter(cur)) as copy:
        copy.write(b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0))
        for i in range(0, len(r), COPY_CHUNK):
            copy.write(_meter_cost_chunk(ids, grid, res, r[i:i + COPY_CHUNK], c[i:i + COPY_CHUNK]))
        copy.write(struct.pack(">h", -1))
    return len(r)


# -------------------------------------------------------------------------- bills
def _fingerprint(kind, tariff_id, segment_start, period, tier, quantity, rate, amount) -> tuple:
    """What makes two bill lines the same, whichever side (engine or database) they come from."""
    return (kind, int(tariff_id), segment_start, None if period is None else int(period),
            None if tier is None else int(tier), round(float(quantity), 6), round(float(rate), 9),
            Decimal(amount).quantize(Decimal("0.01")))


def _line_tuples(lines: list[Line]) -> list[tuple]:
    return [(ln.kind, ln.tariff_id, ln.segment_start, ln.segment_end, ln.period, ln.tier,
             ln.description, ln.quantity, ln.unit, ln.rate, ln.amount) for ln in lines]


BILL_COLUMNS = [("entity_kind", "text"), ("entity_id", "int"), ("category_id", "int"),
                ("period_start", "timestamptz"), ("period_end", "timestamptz"), ("revision", "int"),
                ("status", "text"), ("currency", "text"), ("energy", "numeric"), ("subtotal", "numeric"),
                ("taxes", "numeric"), ("total", "numeric"), ("previous_total", "numeric"),
                ("difference", "numeric")]


def write_bills(conn: psycopg.Connection, bills: list[dict]) -> int:
    """Store bills: each dict has entity_kind, entity_id, category_id, period_start,
    period_end, currency, energy, lines (tuples as _line_tuples). An open bill is replaced
    (same revision); a closed one gets revision n+1 when its lines differ, the earlier
    revision kept with is_current false. Returns bills written."""
    if not bills:
        return 0
    grace, now = conn.execute("SELECT grace_period, now() FROM billing.setting").fetchone()
    keys = [(b["entity_kind"], b["entity_id"], b["category_id"], b["period_start"]) for b in bills]
    current = {}
    for row in conn.execute(
        "SELECT entity_kind, entity_id, category_id, period_start, id, revision, status, total "
        "FROM billing.bill WHERE is_current AND (entity_kind, entity_id, category_id, period_start) IN "
        "(SELECT * FROM unnest(%s::text[], %s::int[], %s::int[], %s::timestamptz[]))",
        ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], [k[3] for k in keys]),
    ):
        current[tuple(row[:4])] = row[4:]
    closed_ids = [v[0] for v in current.values() if v[2] == "closed"]
    old_lines: dict[int, list[tuple]] = defaultdict(list)
    if closed_ids:
        for row in conn.execute(
            "SELECT bill_id, kind, tariff_id, segment_start, period, tier, quantity, rate, amount "
            "FROM billing.bill_line WHERE bill_id = ANY (%s) ORDER BY bill_id, line_no", (closed_ids,)
        ):
            old_lines[row[0]].append(_fingerprint(*row[1:]))
    to_insert, replace_ids, supersede_ids = [], [], []
    for b, key in zip(bills, keys):
        subtotal, taxes, total = bill_totals([Line(*t) for t in b["lines"]])
        closed = now >= b["period_end"] + grace
        row = dict(b, subtotal=subtotal, taxes=taxes, total=total, revision=1,
                   status="closed" if closed else "open", previous_total=None, difference=None)
        cur = current.get(key)
        if cur is not None:
            cur_id, cur_rev, cur_status, cur_total = cur
            if cur_status == "open":
                replace_ids.append(cur_id)
                row["revision"] = cur_rev
            else:
                new = [_fingerprint(t[0], t[1], t[2], t[4], t[5], t[7], t[9], t[10]) for t in b["lines"]]
                if new == old_lines.get(cur_id, []):
                    continue
                supersede_ids.append(cur_id)
                row.update(revision=cur_rev + 1, status="closed", previous_total=cur_total,
                           difference=total - cur_total)
        to_insert.append(row)
    if replace_ids:
        conn.execute("DELETE FROM billing.bill WHERE id = ANY (%s)", (replace_ids,))
    if supersede_ids:
        conn.execute("UPDATE billing.bill SET is_current = false WHERE id = ANY (%s)", (supersede_ids,))
    if not to_insert:
        return 0
    names = [c for c, _ in BILL_COLUMNS]
    ids = conn.execute(
        f"INSERT INTO billing.bill ({', '.join(names)}, closed_at) "
        f"SELECT {', '.join(names)}, CASE WHEN status = 'closed' THEN now() END FROM unnest("
        + ", ".join(f"%s::{t}[]" for _, t in BILL_COLUMNS) + ") WITH ORDINALITY AS u("
        + ", ".join(names) + ", ord) ORDER BY ord RETURNING id",
        [[Decimal(repr(round(float(r[c]), 6))) if c == "energy" else r[c] for r in to_insert]
         for c in names],
    ).fetchall()
    with conn.cursor().copy(
        "COPY billing.bill_line (bill_id, line_no, kind, tariff_id, segment_start, segment_end, period, "
        "tier, description, quantity, unit, rate, amount) FROM STDIN"
    ) as copy:
        for (bill_id,), r in zip(ids, to_insert):
            for no, t in enumerate(r["lines"], start=1):
                copy.write_row((bill_id, no, t[0], t[1], t[2], t[3], t[4], t[5], t[6],
                                repr(round(float(t[7]), 9)), t[8], repr(round(float(t[9]), 12)), t[10]))
    return len(to_insert)


def entity_bills(conn: psycopg.Connection, keys: set[tuple]) -> list[dict]:
    """Cost-center and tenant bills: the current bills of their meters (of the category,
    same period), lines grouped by what they price, quantities and amounts summed."""
    out = []
    for kind, entity_id, category_id, ps in sorted(keys):
        members = conn.execute(
            "SELECT m.id FROM config.meter m WHERE m.category_id = %s AND "
            + ("m.cost_center_id = %s" if kind == "cost_center" else
               "m.id IN (SELECT meter_id FROM config.tenant_meter WHERE tenant_id = %s)"),
            (category_id, entity_id)).fetchall()
        ids = [m[0] for m in members]
        head = conn.execute(
            "SELECT max(period_end), min(currency), max(currency), sum(energy) FROM billing.bill "
            "WHERE entity_kind = 'meter' AND is_current AND period_start = %s AND category_id = %s "
            "AND entity_id = ANY (%s)", (ps, category_id, ids)).fetchone()
        if head[0] is None:
            continue
        if head[1] != head[2]:
            raise ValueError(f"{kind} {entity_id}: meters billed in {head[1]} and {head[2]} in one period")
        lines = conn.execute(
            """SELECT l.kind, l.tariff_id, l.segment_start, l.segment_end, l.period, l.tier, l.description,
                      sum(l.quantity), l.unit, l.rate, sum(l.amount)
               FROM billing.bill b JOIN billing.bill_line l ON l.bill_id = b.id
               WHERE b.entity_kind = 'meter' AND b.is_current AND b.period_start = %s
                 AND b.category_id = %s AND b.entity_id = ANY (%s)
               GROUP BY 1, 2, 3, 4, 5, 6, 7, 9, 10
               ORDER BY 3, CASE l.kind WHEN 'energy' THEN 0 WHEN 'demand' THEN 1 WHEN 'power_factor' THEN 2
                        WHEN 'fixed' THEN 3 WHEN 'minimum' THEN 4 ELSE 5 END, 5, 6, 7, 10""",
            (ps, category_id, ids)).fetchall()
        out.append(dict(entity_kind=kind, entity_id=entity_id, category_id=category_id, period_start=ps,
                        period_end=head[0], currency=head[1], energy=float(head[3]),
                        lines=[(l[0], l[1], l[2], l[3], l[4], l[5], l[6], float(l[7]), l[8], float(l[9]),
                                l[10]) for l in lines]))
    return out


# ------------------------------------------------------------------------ rollups
def _reporting_zone(conn: psycopg.Connection) -> str:
    if conn.execute("SELECT to_regclass('energy.rollup_setting')").fetchone()[0]:
        row = conn.execute("SELECT reporting_timezone FROM energy.rollup_setting").fetchone()
        if row:
            return row[0]
    from app.settings import get_settings

    return get_settings().reporting_timezone


class DailyCost:
    """The daily cost rollup written straight from the priced arrays (table path).

    A local day of the reporting zone lying wholly inside a billing period just priced
    for a batch of meters holds only that batch's fresh interval cost, so its rows are
    summed here in numpy (integer micro-units, exact) and copied in: the same rows
    billing.cost_rollup_definition('day') gives over billing.meter_cost, without reading
    back the rows just written. Days cut by a period edge are left to
    refresh_cost_rollups, which recomputes them from billing.meter_cost. Inactive (every
    day then comes from SQL) when the rollups are continuous aggregates or are about to
    be rebuilt in another zone."""

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn
        self.zone = _reporting_zone(conn)
        row = conn.execute("SELECT reporting_timezone, materialisation FROM billing.cost_rollup_setting").fetchone()
        self.active = row is not None and row[0] == self.zone and row[1] == "table"
        self.edges: dict[tuple[int, int], set[int]] = defaultdict(set)   # (day start, end) -> meters
        self._days: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def _calendar(self, ps: dt.datetime, pe: dt.datetime, grid: np.ndarray):
        """Per period: the reporting days (start, end epoch seconds), each column's day,
        and which days lie wholly inside [ps, pe)."""
        key = (ps, pe)
        if key not in self._days:
            starts, ends = self.conn.execute(
                "SELECT array_agg(extract(epoch FROM b)::bigint ORDER BY b), "
                "array_agg(extract(epoch FROM energy.bucket_next('day', b, %(z)s))::bigint ORDER BY b) "
                "FROM (SELECT DISTINCT time_bucket('1 day', to_timestamp(t), %(z)s) AS b "
                "FROM unnest(%(g)s::bigint[]) t) x", {"z": self.zone, "g": grid.tolist()}).fetchone()
            starts, ends = np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)
            col_day = np.searchsorted(starts, grid, side="right") - 1
            whole = (starts >= int(ps.timestamp())) & (ends <= int(pe.timestamp()))
            self._days[key] = (starts, ends, col_day, whole)
        return self._days[key]

    def note(self, meter_ids: list[int], period: tuple):
        """Remember the period's edge days for these meters; returns the period's calendar
        (None when inactive or empty)."""
        if not self.active or not meter_ids:
            return None
        ps, pe = period
        grid = quarter_grid(ps, pe)
        if not len(grid):
            return None
        starts, ends, col_day, whole = self._calendar(ps, pe, grid)
        for d in np.flatnonzero(~whole):
            self.edges[(int(starts[d]), int(ends[d]))].update(meter_ids)
        return starts, ends, col_day, whole

    def add(self, meter_ids: list[int], period: tuple, res: PeriodResult) -> int:
        """Write the batch's whole days; remember its edge days. Returns rows written."""
        noted = self.note(meter_ids, period)
        if noted is None:
            return 0
        starts, ends, col_day, whole = noted
        cols = np.flatnonzero(whole[col_day])
        if not len(cols):
            return 0
        per = res.period[cols]
        key = col_day[cols] * (int(per.max()) + 2) + per + 1     # day, then period: the key's order
        order = np.argsort(key, kind="stable")
        sel, k = cols[order], key[order]
        first = np.flatnonzero(np.diff(k, prepend=k[0] - 1))
        e = np.add.reduceat(res.energy_micro[:, sel], first, axis=1)
        o = np.add.reduceat(res.allocated_micro[:, sel], first, axis=1)
        n = np.add.reduceat(res.rows[:, sel].astype(np.int64), first, axis=1)
        g_day, g_period = col_day[sel[first]], res.period[sel[first]]
        r, g = np.nonzero(n)                                       # meter-major: primary-key order
        day_lo, day_hi = starts[whole].min(), ends[whole].max()
        self.conn.execute(
            "DELETE FROM billing.cost_daily WHERE meter_id = ANY (%s) AND bucket >= to_timestamp(%s) "
            "AND bucket < to_timestamp(%s)", (meter_ids, int(day_lo), int(day_hi)))
        if not len(r):
            return 0
        num = _numeric_micro(np.zeros(1, dtype=np.int64)).dtype
        rows = np.zeros(len(r), dtype=[("nf", ">i2"), ("l1", ">i4"), ("meter", ">i4"), ("l2", ">i4"),
                                       ("bucket", ">i8"), ("l3", ">i4"), ("period", ">i2"), ("ec", num),
                                       ("ac", num), ("tot", num), ("l7", ">i4"), ("n", ">i8")])
        rows["nf"], rows["l1"], rows["l2"], rows["l3"], rows["l7"] = 7, 4, 8, 2, 8
        rows["meter"] = np.asarray(meter_ids, dtype=np.int64)[r]
        rows["bucket"] = (starts[g_day[g]] - PG_EPOCH) * 1_000_000
        rows["period"] = g_period[g]
        rows["ec"] = _numeric_micro(e[r, g])
        rows["ac"] = _numeric_micro(o[r, g])
        rows["tot"] = _numeric_micro(e[r, g] + o[r, g])
        rows["n"] = n[r, g]
        with self.conn.cursor().copy(
            "COPY billing.cost_daily (meter_id, bucket, period, energy_charge, allocated_charge, total, intervals) "
            "FROM STDIN (FORMAT binary)"
        ) as copy:
            copy.write(b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0))
            copy.write(rows.tobytes())
            copy.write(struct.pack(">h", -1))
        return len(r)


def refresh_cost_rollups(conn: psycopg.Connection, start: dt.datetime, end: dt.datetime,
                         meter_ids: list[int] | None, daily: DailyCost | None = None) -> int:
    """Refresh the cost rollups over [start, end) widened to whole reporting months;
    (re)build them first when missing or in another zone than the energy rollups.

    With `daily` (the stage's DailyCost, active), the days it wrote are kept and only its
    edge days are recomputed from billing.meter_cost; else every day of those months is.
    Then the months (from the daily rollup) and the entity cost rollups of the entities
    holding the meters."""
    zone = _reporting_zone(conn)
    row = conn.execute("SELECT reporting_timezone, materialisation FROM billing.cost_rollup_setting").fetchone()
    # (continuous aggregates: built by an earlier version; they are tables on every edition now)
    rebuilt = row is None or row[0] != zone or row[1] != "table"
    if rebuilt:
        conn.execute("SELECT billing.build_cost_rollups(%s)", (zone,))
        lo, hi = conn.execute("SELECT min(ts), max(ts) + interval '15 minutes' FROM billing.meter_cost").fetchone()
        if lo is not None:   # refill the whole history
            start, end, meter_ids = min(lo, start), max(hi, end), None
    lo, hi = conn.execute(
        "SELECT time_bucket('1 month', %(s)s::timestamptz, %(z)s), "
        "(time_bucket('1 month', %(e)s::timestamptz - interval '1 microsecond', %(z)s) AT TIME ZONE %(z)s "
        "+ interval '1 month') AT TIME ZONE %(z)s", {"s": start, "e": end, "z": zone}).fetchone()
    n = 0
    if daily is not None and daily.active and not rebuilt:
        for (d0, d1), ms in sorted(daily.edges.items()):
            n += conn.execute("SELECT billing.refresh_cost_rollup('day', to_timestamp(%s), to_timestamp(%s), %s)",
                              (d0, d1, sorted(ms))).fetchone()[0]
    else:
        n += conn.execute("SELECT billing.refresh_cost_rollup('day', %s, %s, %s)", (lo, hi, meter_ids)).fetchone()[0]
    n += conn.execute("SELECT billing.refresh_cost_rollup('month', %s, %s, %s)", (lo, hi, meter_ids)).fetchone()[0]
    # The entities holding those meters, over the same months (all entities after a rebuild).
    n += conn.execute("SELECT billing.refresh_entity_cost_rollups(%s, %s, %s)", (lo, hi, meter_ids)).fetchone()[0]
    return n


def refresh_dirty_entities(conn: psycopg.Connection) -> int:
    """Entity cost rollups of the entities whose meter links changed, over their whole
    history (billing.entity_dirty, copied from the link triggers' ops.entity_dirty)."""
    return conn.execute("SELECT billing.refresh_dirty_cost_entities()").fetchone()[0]


# -------------------------------------------------------------------------- stage
@dataclass
class RangeWork:
    """What pricing a range needs, decided once per run (or once per part and finish of a
    backfill piece: each decides the same from the same configuration)."""
    tariffs: dict[int, Tariff]
    work: dict[tuple, list[int]]           # plan(): (period start, end, segments) -> meters
    grace: dt.timedelta
    now: dt.datetime
    meta: dict[int, tuple[int, int | None]]   # meter -> (category, cost center)
    tenants: dict[int, list[int]]             # meter -> tenants


def range_work(conn: psycopg.Connection, start: dt.datetime, end: dt.datetime,
               meter_ids: list[int] | None = None) -> RangeWork | None:
    """The billing periods touching [start, end) for the meters (None: all), or None when
    there is no tariff. Refuses a period whose tariffs bill in more than one currency."""
    tariffs = load_tariffs(conn)
    if not tariffs:
        return None
    work = plan(conn, tariffs, meter_ids, start, end)
    for (ps, pe, segs), meters in work.items():
        currency = {tariffs[tid].wattline.currency for tid, _, _ in segs}
        if len(currency) > 1:
            raise ValueError(f"meters {meters[:5]}…: tariffs in {sorted(currency)} within one billing period")
    grace, now = conn.execute("SELECT grace_period, now() FROM billing.setting").fetchone()
    meta = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT id, category_id, cost_center_id FROM config.meter")}
    tenants = defaultdict(list)
    for t_id, m_id in conn.execute("SELECT tenant_id, meter_id FROM config.tenant_meter"):
        tenants[m_id].append(t_id)
    return RangeWork(tariffs, work, grace, now, meta, tenants)


def bill_range(conn: psycopg.Connection, start: dt.datetime, end: dt.datetime,
               meter_ids: list[int] | None = None) -> int:
    """Re-price every billing period touching [start, end) for the meters (None: all), in
    the caller's transaction: interval cost, meter bills, then what needs them all."""
    rw = range_work(conn, start, end, meter_ids)
    if rw is None:
        return 0
    daily = DailyCost(conn)
    return price_periods(conn, rw, rw.work, daily) + settle(conn, rw, daily)


def price_periods(conn: psycopg.Connection, rw: RangeWork, work: dict[tuple, list[int]],
                  daily: DailyCost) -> int:
    """Price the periods of `work` (part of rw.work) in batches of meters: interval cost,
    daily cost of the whole days, meter bills. Returns rows written."""
    periods = sorted(work.items(), key=lambda kv: (kv[0][0], kv[0][1]))
    jobs = [(meters[i:i + BATCH], ps, pe, segs)
            for (ps, pe, segs), meters in periods for i in range(0, len(meters), BATCH)]
    loads = iter(Loader(conn, [(batch, ps, pe) for batch, ps, pe, _ in jobs]))
    touched = 0
    try:
        for ((batch, ps, pe), (energy, present)), (_, _, _, segs) in zip(loads, jobs):
            segments = [Segment(tid, rw.tariffs[tid], a, b) for tid, a, b in segs]
            reactive = load_reactive(conn, batch, ps, pe)
            res = price_period(segments, (ps, pe), energy, present, reactive,
                               is_open=rw.now < pe + rw.grace)
            touched += write_meter_cost(conn, batch, (ps, pe), res)
            daily.add(batch, (ps, pe), res)
            currency = segments[0].tariff.wattline.currency
            touched += write_bills(conn, [
                dict(entity_kind="meter", entity_id=m, category_id=rw.meta[m][0], period_start=ps,
                     period_end=pe, currency=currency, energy=float(res.energy[j]),
                     lines=_line_tuples(res.lines[j]))
                for j, m in enumerate(batch)])
    finally:
        loads.close()                    # stops the worker and closes its connection, also on error
    return touched


def settle(conn: psycopg.Connection, rw: RangeWork, daily: DailyCost) -> int:
    """What needs every meter of the range priced: the cost-center and tenant bills, the
    cost rollups (days the priced arrays did not cover, months, entities) and the meters'
    billing watermarks."""
    if not rw.work:
        return 0
    keys, meters = set(), set()
    for (ps, _, _), ms in rw.work.items():
        meters.update(ms)
        for m in ms:
            cat, cc = rw.meta[m]
            if cc is not None:
                keys.add(("cost_center", cc, cat, ps))
            keys.update(("tenant", t, cat, ps) for t in rw.tenants.get(m, []))
    touched = write_bills(conn, entity_bills(conn, keys))
    span_lo = min(ps for ps, _, _ in rw.work)
    span_hi = max(pe for _, pe, _ in rw.work)
    refresh_cost_rollups(conn, span_lo, span_hi, sorted(meters), daily)
    conn.execute(
        "INSERT INTO billing.meter_watermark (meter_id, data_until) "
        "SELECT meter_id, max(ts) + interval '15 minutes' FROM energy.meter_interval "
        "WHERE meter_id = ANY (%s) AND ts < %s GROUP BY meter_id "
        "ON CONFLICT (meter_id) DO UPDATE SET data_until = greatest(billing.meter_watermark.data_until, "
        "EXCLUDED.data_until)", (sorted(meters), span_hi))
    return touched


def time_share(work: dict[tuple, list[int]], part: tuple[int, int]) -> dict[tuple, list[int]]:
    """The i-th of n shares of the periods, cut in time: consecutive period starts, about
    equal meter-quarters each. Shares in time write different chunks of billing.meter_cost
    (shares by meter would write the same ones and wait on each other)."""
    i, n = part
    weight: dict[dt.datetime, float] = defaultdict(float)
    for (ps, pe, _), ms in work.items():
        weight[ps] += len(ms) * (pe - ps).total_seconds()
    starts = sorted(weight)
    total, run, share_of = sum(weight.values()), 0.0, {}
    for ps in starts:
        share_of[ps] = min(n - 1, int(n * (run + weight[ps] / 2) / total)) if total else 0
        run += weight[ps]
    return {k: ms for k, ms in work.items() if share_of[k[0]] == i}


def prepare(conn: psycopg.Connection, start: dt.datetime, end: dt.datetime) -> int:
    """Before the parts of a backfill piece: create the billing.meter_cost chunks their
    periods need, committed. A transaction that creates a chunk holds the hypertable's
    chunk-creation lock until it ends, so parts creating chunks as they go would each wait
    for the other to finish; created here, the parts write side by side. (A row per day
    is inserted and deleted again in this transaction: no reader ever sees one.)"""
    rw = range_work(conn, start, end)
    if rw is None or not rw.work:
        return 0
    lo = min(ps for ps, _, _ in rw.work)
    hi = max(pe for _, pe, _ in rw.work)
    conn.execute(
        "INSERT INTO billing.meter_cost (meter_id, ts, tariff_id, energy_charge, allocated_charge, total) "
        "SELECT -1, t, -1, 0, 0, 0 FROM generate_series(time_bucket('15 minutes', %s::timestamptz), "
        "%s::timestamptz - interval '15 minutes', interval '1 day') t", (lo, hi))
    conn.execute("DELETE FROM billing.meter_cost WHERE meter_id = -1")
    return 0


def finish(conn: psycopg.Connection, start: dt.datetime, end: dt.datetime) -> int:
    """After the parts of a backfill piece: settle the whole range (the edge days of
    every priced period are recomputed from billing.meter_cost)."""
    rw = range_work(conn, start, end)
    touched = 0
    if rw is not None:
        daily = DailyCost(conn)
        for (ps, pe, _), ms in rw.work.items():
            daily.note(ms, (ps, pe))
        touched = settle(conn, rw, daily)
    return touched + close_due_bills(conn) + refresh_dirty_entities(conn)


def close_due_bills(conn: psycopg.Connection) -> int:
    """Close the open bills whose period ended more than the grace period ago."""
    return conn.execute(
        "UPDATE billing.bill b SET status = 'closed', closed_at = now() FROM billing.setting s "
        "WHERE b.status = 'open' AND b.period_end + s.grace_period <= now()").rowcount


def new_data(conn: psycopg.Connection) -> list[tuple[int, dt.datetime, dt.datetime]]:
    """(meter, from, to) of intervals past each priced meter's watermark."""
    return conn.execute(
        """SELECT m.id, coalesce(w.data_until, x.first), x.last
           FROM (SELECT DISTINCT id FROM config.meter) m
           LEFT JOIN billing.meter_watermark w ON w.meter_id = m.id
           CROSS JOIN LATERAL (
               SELECT (SELECT min(ts) FROM energy.meter_interval WHERE meter_id = m.id) AS first,
                      (SELECT max(ts) + interval '15 minutes' FROM energy.meter_interval WHERE meter_id = m.id) AS last
           ) x
           WHERE x.last IS NOT NULL AND (w.data_until IS NULL OR x.last > w.data_until)"""
    ).fetchall()


def run(conn: psycopg.Connection, start: dt.datetime | None, end: dt.datetime | None,
        *, part: tuple[int, int] | None = None) -> int:
    """part=(i, n) (backfill): price the i-th time share of the range's periods; prepare()
    runs before the parts and finish() after them."""
    if part is not None:
        if start is None or end is None:
            raise ValueError("only explicit ranges can be split into parts")
        rw = range_work(conn, start, end)
        return 0 if rw is None else price_periods(conn, rw, time_share(rw.work, part), DailyCost(conn))
    if start is not None and end is not None:
        return bill_range(conn, start, end) + close_due_bills(conn) + refresh_dirty_entities(conn)
    ranges, seen = dirty.pending(conn, NAME, "meter")
    touched = 0
    everyone = [r for r in ranges if r.meter_id is None]
    for lo, hi in dirty.merge(everyone):
        touched += bill_range(conn, lo, hi)
    per_meter: dict[int, list[dirty.DirtyRange]] = defaultdict(list)
    for r in ranges:
        if r.meter_id is not None:
            per_meter[r.meter_id].append(r)
    for meter, lo, hi in new_data(conn):
        per_meter[meter].append(dirty.DirtyRange(lo, hi, meter_id=meter))
    # Meters with the same spans are billed together (one vectorised pass).
    by_span: dict[tuple, list[int]] = defaultdict(list)
    for meter, rs in per_meter.items():
        for span in dirty.merge(rs):
            by_span[span].append(meter)
    for (lo, hi), meters in sorted(by_span.items()):
        touched += bill_range(conn, lo, hi, sorted(meters))
    touched += close_due_bills(conn)
    touched += refresh_dirty_entities(conn)
    dirty.advance(conn, NAME, seen)
    return touched
