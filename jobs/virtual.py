"""Virtual meters stage: formula meters computed from other meters' 15-minute energy.

Each formula is parsed once (app.formula), the meters are evaluated in dependency order
(a virtual meter may read other virtual meters), and each is evaluated with numpy over
its inputs' aligned intervals. An interval is written when at least one input has a row
there; if any input is absent or has no value, the result is NULL with quality
16 | 256 (virtual, missing) - never a silent zero. Otherwise quality is 16 OR-ed with the
inputs' estimated, manual, limit-violation, rollover and reset flags, so a doubt about an
input stays visible on the result.

Incremental runs recompute a virtual meter over the dirty ranges of any meter it reads,
directly or through other virtual meters, and over its inputs' whole history when its
formula is new or changed (ops.virtual_meter_state). What it rewrites is logged for the
rollups. Its own log entries ('virtual: …') are not read back.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import numpy as np
import psycopg

from app.formula import Formula, FormulaError, dependency_order, parse_formula
from jobs.base import ceil_quarter, floor_quarter
from jobs.dirty import DirtyRange, advance, log_energy_change, merge, pending

NAME = "virtual"
REASON = "virtual: intervals rewritten"
Q_VIRTUAL = 16
Q_MISSING = 256
INHERITED = 4 | 8 | 32 | 64 | 128   # estimated, manual, limit_violation, rollover, reset

log = logging.getLogger("wattline.jobs.virtual")


@dataclass
class VirtualMeter:
    id: int
    name: str
    formula: Formula
    input_ids: list[int]        # direct inputs, in formula order
    reads: set[int]             # every meter it depends on, through other virtual meters too


def load_virtual_meters(conn: psycopg.Connection) -> list[VirtualMeter]:
    """Virtual meters in dependency order; a meter with a bad formula is skipped with an
    error in the log (the site importer rejects those at save time)."""
    ids = {name: mid for mid, name in conn.execute("SELECT id, name FROM config.meter")}
    rows = conn.execute(
        "SELECT id, name, formula FROM config.meter WHERE kind = 'virtual' ORDER BY id"
    ).fetchall()
    parsed: dict[str, tuple[int, Formula]] = {}
    for mid, name, text in rows:
        try:
            f = parse_formula(text)
        except FormulaError as exc:
            log.error("virtual meter %r skipped: formula: %s", name, exc)
            continue
        unknown = [n for n in f.names if n not in ids]
        if unknown:
            log.error("virtual meter %r skipped: unknown meter(s) %s", name, ", ".join(map(repr, unknown)))
            continue
        parsed[name] = (mid, f)
    try:
        order = dependency_order({n: f for n, (_, f) in parsed.items()})
    except FormulaError as exc:
        log.error("virtual meters skipped: %s", exc)
        return []
    out: list[VirtualMeter] = []
    reads_by_name: dict[str, set[int]] = {}
    for name in order:
        if name not in parsed:
            continue
        mid, f = parsed[name]
        reads: set[int] = set()
        for n in f.names:
            reads.add(ids[n])
            reads |= reads_by_name.get(n, set())
        reads_by_name[name] = reads
        out.append(VirtualMeter(mid, name, f, [ids[n] for n in f.names], reads))
    return out


def _data_span(conn: psycopg.Connection, meter_ids: list[int]) -> tuple[dt.datetime, dt.datetime] | None:
    row = conn.execute(
        "SELECT min(lo), max(hi) FROM unnest(%s::int[]) m, LATERAL ("
        " SELECT (SELECT ts FROM energy.meter_interval WHERE meter_id = m ORDER BY ts LIMIT 1) AS lo,"
        "        (SELECT ts FROM energy.meter_interval WHERE meter_id = m ORDER BY ts DESC LIMIT 1)"
        "          + interval '15 minutes' AS hi) x",
        (meter_ids,),
    ).fetchone()
    return None if row[0] is None else (row[0], row[1])


def evaluate(conn: psycopg.Connection, vm: VirtualMeter, start: dt.datetime, end: dt.datetime) -> int:
    """Recompute one virtual meter over [start, end) (whole quarters); returns rows written
    plus rows removed."""
    rows = conn.execute(
        "SELECT meter_id, ts, energy, quality FROM energy.meter_interval "
        "WHERE meter_id = ANY(%s) AND ts >= %s AND ts < %s",
        (vm.input_ids, start, end),
    ).fetchall()
    deleted = conn.execute(
        "DELETE FROM energy.meter_interval WHERE meter_id = %s AND ts >= %s AND ts < %s",
        (vm.id, start, end),
    ).rowcount
    if not rows:
        return deleted
    stamps = np.array(sorted({r[1] for r in rows}), dtype=object)
    position = {ts: i for i, ts in enumerate(stamps)}
    column = {mid: k for k, mid in enumerate(vm.input_ids)}
    values = np.full((len(vm.input_ids), len(stamps)), np.nan)
    flags = np.zeros((len(vm.input_ids), len(stamps)), dtype=np.int64)
    for mid, ts, energy, quality in rows:
        k, i = column[mid], position[ts]
        values[k, i] = np.nan if energy is None else energy
        flags[k, i] = quality
    result = vm.formula.evaluate({name: values[k] for k, name in enumerate(vm.formula.names)})
    missing = np.isnan(result)
    quality = np.where(
        missing, Q_VIRTUAL | Q_MISSING, Q_VIRTUAL | (np.bitwise_or.reduce(flags, axis=0) & INHERITED)
    )
    with conn.cursor().copy("COPY energy.meter_interval (meter_id, ts, energy, quality) FROM STDIN") as copy:
        for i, ts in enumerate(stamps):
            copy.write_row((vm.id, ts, None if missing[i] else float(result[i]), int(quality[i])))
    return len(stamps) + deleted


def run(conn: psycopg.Connection, start: dt.datetime | None, end: dt.datetime | None) -> int:
    """Compute virtual meters; returns interval rows written or removed."""
    if (start is None) != (end is None):
        raise ValueError("give both start and end, or neither")
    if start is not None and start >= end:
        raise ValueError(f"empty range: {start} >= {end}")
    meters = load_virtual_meters(conn)
    state = dict(conn.execute("SELECT meter_id, formula FROM ops.virtual_meter_state").fetchall())
    if start is None:
        ranges, seen = pending(conn, NAME, "meter", reason_not_like="virtual:%")
    else:
        ranges, seen = [DirtyRange(floor_quarter(start), ceil_quarter(end))], None
    touched = 0
    for vm in meters:
        if start is None and state.get(vm.id) != vm.formula.text:
            spans = [_data_span(conn, sorted(vm.reads))] if vm.reads else []
            spans = [s for s in spans if s is not None]
        else:
            spans = merge([
                DirtyRange(floor_quarter(r.start), ceil_quarter(r.end))
                for r in ranges if r.meter_id is None or r.meter_id in vm.reads or r.meter_id == vm.id
            ])
        for s, e in spans:
            n = evaluate(conn, vm, s, e)
            if n:
                log_energy_change(conn, s, e, REASON, [vm.id])
                ranges.append(DirtyRange(s, e, meter_id=vm.id))  # its dependants follow
            touched += n
        if start is None:  # only a run that covered the formula's whole history records it
            conn.execute(
                "INSERT INTO ops.virtual_meter_state (meter_id, formula) VALUES (%s, %s) "
                "ON CONFLICT (meter_id) DO UPDATE SET formula = EXCLUDED.formula, computed_at = now()",
                (vm.id, vm.formula.text),
            )
    if seen is not None:
        advance(conn, NAME, seen)
    return touched
