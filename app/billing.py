"""The pricing engine: a billing period's 15-minute energy (meters × intervals) and its
tariff segments in, bill lines and per-interval cost out.

Pure Python and numpy, no database: the same code prices one meter in a test and a
thousand meters sharing a tariff in one vectorised pass (jobs.billing groups them).
Every rule here is stated in docs/billing.md; change both together.

Money: each line's amount is rounded half up to cents (what the bill shows); interval
cost is kept in integer micro-units while it is allocated, so the intervals of a bill
add up to its lines exactly (the rounding remainder of a line goes to the interval with
the largest weight, the earliest of equals).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

import numpy as np

from app.tariffs import Tariff

CENT = Decimal("0.01")
MICRO_PER_CENT = 10_000
QUARTER_S = 900

# billing.meter_cost.flags
F_ALLOCATED, F_HOLIDAY, F_OFFDAY, F_OPEN, F_MISSING = 1, 2, 4, 8, 16


def money(x: float | Decimal) -> Decimal:
    """Round half up to cents (rounded to 9 places first, so 2.675 is 2.68, not 2.67)."""
    if isinstance(x, Decimal):
        return x.quantize(CENT, ROUND_HALF_UP)
    return Decimal(repr(round(float(x), 9))).quantize(CENT, ROUND_HALF_UP)


def cents_to_micro(amount: Decimal) -> int:
    return int((amount / CENT).to_integral_value()) * MICRO_PER_CENT


@dataclass(frozen=True)
class Line:
    kind: str               # energy, demand, fixed, minimum, power_factor, tax
    tariff_id: int
    segment_start: dt.datetime
    segment_end: dt.datetime
    period: int | None
    tier: int | None
    description: str
    quantity: float
    unit: str
    rate: float
    amount: Decimal


# ---------------------------------------------------------------------- calendars
def local_days(zone: ZoneInfo, start: dt.datetime, end: dt.datetime) -> float:
    """Length of [start, end) in local calendar days (a 23- or 25-hour day counts as one)."""
    a, b = start.astimezone(zone).replace(tzinfo=None), end.astimezone(zone).replace(tzinfo=None)
    return (b - a).total_seconds() / 86400


def billing_periods(zone: ZoneInfo, cycle_day: int, start: dt.datetime, end: dt.datetime
                    ) -> list[tuple[dt.datetime, dt.datetime]]:
    """The billing periods overlapping [start, end): from local midnight of `cycle_day` to
    the same day of the next month (cycle day 1: calendar months)."""
    local = start.astimezone(zone)
    y, m = local.year, local.month
    if local.day < cycle_day:
        y, m = (y - 1, 12) if m == 1 else (y, m - 1)
    out = []
    while True:
        ps = dt.datetime(y, m, cycle_day, tzinfo=zone)
        ny, nm = (y + 1, 1) if m == 12 else (y, m + 1)
        pe = dt.datetime(ny, nm, cycle_day, tzinfo=zone)
        if ps >= end:
            break
        if pe > start:
            out.append((ps.astimezone(dt.timezone.utc), pe.astimezone(dt.timezone.utc)))
        y, m = ny, nm
    return out


def quarter_grid(start: dt.datetime, end: dt.datetime) -> np.ndarray:
    """Epoch seconds of the 15-minute interval starts in [start, end)."""
    a = math.ceil(start.timestamp() / QUARTER_S) * QUARTER_S
    return np.arange(a, int(end.timestamp()), QUARTER_S, dtype=np.int64)


@dataclass
class Calendar:
    """Each interval as the tariff sees it, in the tariff's local time."""

    ts: np.ndarray            # epoch seconds (UTC interval starts)
    month: np.ndarray         # local month, 0..11
    hour: np.ndarray          # local hour, 0..23
    holiday: np.ndarray       # bool
    offday: np.ndarray        # weekend or holiday: priced with the weekend schedules
    energy_period: np.ndarray  # period index, -1 without energy charges
    demand_period: np.ndarray  # TOU demand period index, -1 without TOU demand
    block: np.ndarray         # demand-interval key, non-decreasing in time


def _schedule_lookup(weekday, weekend, month, hour, offday) -> np.ndarray:
    if weekday is None:
        return np.full(month.shape, -1, dtype=np.int64)
    wd = np.asarray(weekday, dtype=np.int64)
    we = np.asarray(weekend if weekend is not None else weekday, dtype=np.int64)
    return np.where(offday, we[month, hour], wd[month, hour])


def local_calendar(tariff: Tariff, ts: np.ndarray) -> Calendar:
    zone = tariff.zone
    offsets = np.fromiter(
        (dt.datetime.fromtimestamp(int(t), zone).utcoffset().total_seconds() for t in ts),
        dtype=np.int64, count=len(ts),
    )
    local = ts + offsets
    days = local // 86400
    weekday = (days + 3) % 7               # 1970-01-01 was a Thursday; Monday = 0
    month = local.astype("datetime64[s]").astype("datetime64[M]").astype(np.int64) % 12
    hour = (local % 86400) // 3600
    hol_days = np.array([(d - dt.date(1970, 1, 1)).days for d in tariff.wattline.holidays], dtype=np.int64)
    holiday = np.isin(days, hol_days)
    offday = (weekday >= 5) | holiday
    width = tariff.demand_minutes * 60
    block = (ts + offsets % width) // width  # local alignment, monotonic across DST
    return Calendar(
        ts=ts, month=month, hour=hour, holiday=holiday, offday=offday,
        energy_period=_schedule_lookup(tariff.energyweekdayschedule, tariff.energyweekendschedule,
                                       month, hour, offday),
        demand_period=_schedule_lookup(tariff.demandweekdayschedule, tariff.demandweekendschedule,
                                       month, hour, offday),
        block=block,
    )


# --------------------------------------------------------------------- allocation
def allocate(amount_micro: np.ndarray, weights: np.ndarray, mask: np.ndarray, fallback: np.ndarray
             ) -> np.ndarray:
    """Split each meter's amount over its masked intervals in proportion to weight (evenly
    when the weights sum to zero; over `fallback` when the mask is empty). Integer
    micro-units; the remainder goes to the largest share, earliest of equals."""
    M = amount_micro.shape[0]
    out = np.zeros(weights.shape, dtype=np.int64)
    if M == 0 or weights.shape[1] == 0:
        return out
    mask = mask & fallback
    empty = ~mask.any(axis=1)
    mask = np.where(empty[:, None], fallback, mask)
    w = np.where(mask, np.abs(weights), 0.0)
    total = w.sum(axis=1)
    even = total <= 0
    w = np.where(even[:, None], mask.astype(float), w)
    total = w.sum(axis=1)
    total[total == 0] = 1.0
    share = w / total[:, None]
    a = np.abs(amount_micro).astype(np.int64)
    raw = np.floor(a[:, None].astype(float) * share).astype(np.int64)
    raw[~mask] = 0
    rem = a - raw.sum(axis=1)
    idx = np.argmax(share, axis=1)
    raw[np.arange(M), idx] += rem
    return raw * np.sign(amount_micro).astype(np.int64)[:, None]


# ------------------------------------------------------------------------ pricing
@dataclass
class Segment:
    """A stretch of a billing period under one tariff."""

    tariff_id: int
    tariff: Tariff
    start: dt.datetime
    end: dt.datetime


@dataclass
class PeriodResult:
    lines: list[list[Line]]          # per meter
    energy_micro: np.ndarray         # (M, N) int64 energy charge per interval
    allocated_micro: np.ndarray      # (M, N) int64 other charges per interval
    rows: np.ndarray                 # (M, N) bool: interval gets a meter_cost row
    tariff_id: np.ndarray            # (N,) tariff of each interval (0 outside segments)
    period: np.ndarray               # (N,) energy TOU period (-1: none)
    flags: np.ndarray                # (M, N) int16
    energy: np.ndarray               # (M,) billed consumption


def _tier_split(total: np.ndarray, limits: list[np.ndarray]) -> list[np.ndarray]:
    """Quantity of `total` in each tier; limits are the tiers' upper bounds (last: inf)."""
    out, lower = [], np.zeros_like(total)
    for upper in limits:
        out.append(np.clip(np.minimum(total, upper) - lower, 0.0, None))
        lower = np.maximum(lower, upper)
    return out


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def price_segment(seg: Segment, cal: Calendar, energy: np.ndarray, present: np.ndarray,
                  reactive: np.ndarray | None, fraction: float, days: float, bill_month: int
                  ) -> tuple[list[list[Line]], dict[str, np.ndarray]]:
    """Lines per meter and allocations by kind ((M, N) micro-units) for one segment."""
    t, tid = seg.tariff, seg.tariff_id
    e = np.where(present, np.nan_to_num(energy, nan=0.0), 0.0)
    M, N = e.shape
    lines: list[list[Line]] = [[] for _ in range(M)]
    alloc: dict[str, np.ndarray] = {}
    rows = present.copy()
    if N == 0:
        return lines, {"_rows": rows}
    rows[~rows.any(axis=1), 0] = True   # a meter without data: its first interval
    weight = np.clip(e, 0.0, None)
    everywhere = np.ones((M, N), dtype=bool)
    prorate = "" if abs(fraction - 1) < 1e-12 else f" × {_fmt(fraction)} of the period"

    def line(m: int, kind: str, period, tier, desc: str, qty: float, unit: str, rate: float,
             amount: Decimal | None = None) -> Decimal:
        amt = money(qty * rate) if amount is None else amount
        lines[m].append(Line(kind, tid, seg.start, seg.end, period, tier, desc, float(qty), unit,
                             float(rate), amt))
        return amt

    def add_alloc(kind: str, amounts: np.ndarray, mask: np.ndarray) -> None:
        a = allocate(amounts, weight, mask, rows)
        alloc[kind] = alloc.get(kind, 0) + a

    # Demand in kW per demand interval (fixed blocks aligned to local :00/:15/:30/:45).
    width_h = t.demand_minutes / 60
    if N:
        starts = np.flatnonzero(np.diff(cal.block, prepend=cal.block[0] - 1))
        kw = np.add.reduceat(e, starts, axis=1) / width_h
    else:
        starts, kw = np.zeros(0, dtype=np.int64), np.zeros((M, 0))
    peak_all = kw.max(axis=1) if kw.shape[1] else np.zeros(M)

    # Energy: tiers over the segment's total, each period's energy split in proportion.
    total = e.sum(axis=1)
    if t.energyratestructure:
        for p in np.unique(cal.energy_period):
            in_p = cal.energy_period == p
            ep = e[:, in_p].sum(axis=1)
            tiers = t.energyratestructure[p]
            unit = tiers[0].unit
            limits = []
            for k, tier in enumerate(tiers):
                if tier.max is None or k == len(tiers) - 1:
                    limits.append(np.full(M, np.inf))
                    continue
                scale = {"kWh": fraction, "kWh daily": days, "kWh/kW": fraction * peak_all,
                         "kWh/kW daily": days * peak_all}[unit]
                limits.append(tier.max * np.asarray(scale, dtype=float) * np.ones(M))
            q_total = _tier_split(np.clip(total, 0.0, None), limits)
            amounts = np.zeros(M, dtype=np.int64)
            for k, tier in enumerate(tiers):
                # Net export (total <= 0) has no tiers: it all prices at the first.
                q = np.where(total > 0, ep * q_total[k] / np.where(total > 0, total, 1.0),
                             ep if k == 0 else 0.0)
                for m in np.flatnonzero(q != 0):
                    amt = line(m, "energy", int(p), k,
                               f"energy period {p} tier {k}" + (f" (limit {_fmt(limits[k][m])} kWh)"
                                                                if np.isfinite(limits[k][m]) else ""),
                               q[m], "kWh", tier.price)
                    amounts[m] += cents_to_micro(amt)
            add_alloc("energy", amounts, np.broadcast_to(in_p, (M, N)))

    # Demand: TOU per demand period (max within it), flat per month (max of the segment).
    def demand_lines(peak: np.ndarray, tiers, period: int, label: str, mask: np.ndarray) -> None:
        limits = [np.full(M, np.inf) if (tr.max is None or k == len(tiers) - 1) else np.full(M, tr.max)
                  for k, tr in enumerate(tiers)]
        q_all = _tier_split(np.clip(peak, 0.0, None), limits)
        amounts = np.zeros(M, dtype=np.int64)
        for k, tier in enumerate(tiers):
            for m in np.flatnonzero(q_all[k] > 0):
                amt = line(m, "demand", period, k,
                           f"{label} demand period {period} tier {k}: max {t.demand_minutes}-min kW{prorate}",
                           q_all[k][m], "kW", tier.price * fraction)
                amounts[m] += cents_to_micro(amt)
        add_alloc("demand", amounts, mask)

    if t.demandratestructure and len(starts):
        block_period = cal.demand_period[starts]
        for p in np.unique(block_period):
            if p < 0:
                continue
            peak = kw[:, block_period == p].max(axis=1)
            demand_lines(peak, t.demandratestructure[p], int(p), "TOU",
                         np.broadcast_to(cal.demand_period == p, (M, N)))
    if t.flatdemandstructure and t.flatdemandmonths and len(starts):
        fp = t.flatdemandmonths[bill_month]
        demand_lines(peak_all, t.flatdemandstructure[fp], int(fp), "flat", everywhere)

    # Power factor from the linked reactive meter (monthly average over the segment).
    pf_rule = t.wattline.power_factor
    if pf_rule is not None and reactive is not None:
        q_kvarh = np.where(present, np.nan_to_num(reactive, nan=0.0), 0.0).sum(axis=1)
        amounts = np.zeros(M, dtype=np.int64)
        for m in range(M):
            p_kwh = total[m]
            if p_kwh <= 0 or not np.isfinite(reactive[m]).any():
                continue
            pf = p_kwh / math.hypot(p_kwh, q_kvarh[m])
            if pf >= pf_rule.threshold - 1e-12:
                continue
            if pf_rule.method == "kvarh":
                allowance = p_kwh * math.tan(math.acos(pf_rule.threshold))
                excess = q_kvarh[m] - allowance
                amt = line(m, "power_factor", None, None,
                           f"power factor {pf:.4f} below {pf_rule.threshold}: kvarh above "
                           f"allowance {_fmt(allowance)}", excess, "kvarh", pf_rule.rate)
            else:
                base = sum((ln.amount for ln in lines[m] if ln.kind == "demand"), Decimal(0))
                factor = pf_rule.threshold / pf - 1
                amt = line(m, "power_factor", None, None,
                           f"power factor {pf:.4f} below {pf_rule.threshold}: demand × "
                           f"{pf_rule.threshold}/{pf:.4f}", float(base), t.wattline.currency, factor,
                           money(float(base) * factor))
            amounts[m] += cents_to_micro(amt)
        add_alloc("power_factor", amounts, everywhere)

    # Fixed charges.
    if t.fixedchargefirstmeter:
        per_day = (t.fixedchargeunits or "$/month") == "$/day"
        qty, unit = (days, "day") if per_day else (fraction, "month")
        amounts = np.zeros(M, dtype=np.int64)
        for m in range(M):
            amounts[m] = cents_to_micro(line(m, "fixed", None, None, f"fixed charge ({unit})", qty, unit,
                                             t.fixedchargefirstmeter))
        add_alloc("fixed", amounts, everywhere)

    # Minimum charge: a floor on the bill before taxes.
    if t.mincharge:
        per_day = (t.minchargeunits or "$/month") == "$/day"
        floor = money(t.mincharge * (days if per_day else fraction))
        amounts = np.zeros(M, dtype=np.int64)
        for m in range(M):
            subtotal = sum((ln.amount for ln in lines[m]), Decimal(0))
            if subtotal < floor:
                short = floor - subtotal
                amounts[m] = cents_to_micro(line(m, "minimum", None, None,
                                                 f"minimum charge {floor}: subtotal {subtotal} raised",
                                                 1, "bill", float(short), short))
        add_alloc("minimum", amounts, everywhere)

    # Taxes: percent of the stated lines; allocated like the lines they are levied on.
    for tax in t.wattline.taxes:
        amounts = np.zeros(M, dtype=np.int64)
        for m in range(M):
            base = sum((ln.amount for ln in lines[m] if ln.kind in tax.applies_to), Decimal(0))
            if base != 0:
                amounts[m] = cents_to_micro(line(m, "tax", None, None, f"{tax.name} {tax.percent:g} %",
                                                 float(base), t.wattline.currency, tax.percent / 100,
                                                 money(base * Decimal(repr(tax.percent)) / 100)))
        taxed = sum((np.abs(alloc[k]) for k in tax.applies_to if k in alloc), np.zeros((M, N)))
        a = allocate(amounts, taxed.astype(float), everywhere, rows)
        if not np.any(taxed):
            a = allocate(amounts, weight, everywhere, rows)
        alloc["tax"] = alloc.get("tax", 0) + a
    alloc["_rows"] = rows
    return lines, alloc


def price_period(segments: list[Segment], period: tuple[dt.datetime, dt.datetime],
                 energy: np.ndarray, present: np.ndarray, reactive: np.ndarray | None = None,
                 is_open: bool = False) -> PeriodResult:
    """Price one billing period for M meters sharing the same tariff segments.

    energy/present/reactive are (M, N) over quarter_grid(*period); NaN or absent energy
    counts as zero. A segment covers part of the period under one tariff; monthly
    quantities of a partial segment are prorated by its share of the period's local days.
    """
    ps, pe = period
    grid = quarter_grid(ps, pe)
    M, N = energy.shape
    assert N == len(grid), f"energy has {N} intervals, the period {len(grid)}"
    lines: list[list[Line]] = [[] for _ in range(M)]
    e_micro = np.zeros((M, N), dtype=np.int64)
    o_micro = np.zeros((M, N), dtype=np.int64)
    rows = np.zeros((M, N), dtype=bool)
    tariff_col = np.zeros(N, dtype=np.int64)
    period_col = np.full(N, -1, dtype=np.int64)
    flags = np.zeros((M, N), dtype=np.int16)
    for seg in segments:
        zone = seg.tariff.zone
        period_days = local_days(zone, ps, pe)
        days = local_days(zone, seg.start, seg.end)
        sl = slice(int(np.searchsorted(grid, seg.start.timestamp())),
                   int(np.searchsorted(grid, seg.end.timestamp())))
        cal = local_calendar(seg.tariff, grid[sl])
        bill_month = ps.astimezone(zone).month - 1
        seg_lines, alloc = price_segment(
            seg, cal, energy[:, sl], present[:, sl], None if reactive is None else reactive[:, sl],
            days / period_days, days, bill_month)
        for m in range(M):
            lines[m].extend(seg_lines[m])
        e_micro[:, sl] += alloc.pop("energy", 0)
        seg_rows = alloc.pop("_rows")
        for a in alloc.values():
            o_micro[:, sl] += a
        rows[:, sl] |= seg_rows
        tariff_col[sl] = seg.tariff_id
        period_col[sl] = cal.energy_period
        flags[:, sl] |= np.where(cal.holiday, F_HOLIDAY, 0).astype(np.int16)
        flags[:, sl] |= np.where(cal.offday, F_OFFDAY, 0).astype(np.int16)
    flags |= np.where(o_micro != 0, F_ALLOCATED, 0).astype(np.int16)
    flags |= np.where(~present | np.isnan(energy), F_MISSING, 0).astype(np.int16)
    if is_open:
        flags |= F_OPEN
    billed = np.where(present, np.nan_to_num(energy, nan=0.0), 0.0)
    covered = tariff_col > 0
    return PeriodResult(lines, e_micro, o_micro, rows & covered, tariff_col, period_col, flags,
                        billed[:, covered].sum(axis=1))


def bill_totals(lines: list[Line]) -> tuple[Decimal, Decimal, Decimal]:
    """(subtotal before taxes, taxes, total)."""
    taxes = sum((ln.amount for ln in lines if ln.kind == "tax"), Decimal("0.00"))
    subtotal = sum((ln.amount for ln in lines if ln.kind != "tax"), Decimal("0.00"))
    return subtotal, taxes, subtotal + taxes
