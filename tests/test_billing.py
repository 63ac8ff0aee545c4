"""Hand-computed bills from the pricing engine (app.billing) on 15-minute arrays.

Each test states its arithmetic. Energy is written per 15-minute interval, so 1 kWh per
interval is 4 kW and 96 kWh per (24-hour) day. Every test also checks that the interval
cost adds up to the bill to the cent.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from app.billing import (
    F_HOLIDAY, F_OFFDAY, Segment, allocate, bill_totals, billing_periods, local_days, money,
    price_period, quarter_grid,
)
from app.tariffs import validate

UTC = dt.timezone.utc


def tariff(**fields):
    return validate({"name": "test", **fields})


def flat_schedule(period: int = 0):
    return [[period] * 24 for _ in range(12)]


def hours_schedule(hours: range, inside: int = 1, outside: int = 0):
    return [[inside if h in hours else outside for h in range(24)] for _ in range(12)]


def month(y: int, m: int, zone: str = "UTC") -> tuple[dt.datetime, dt.datetime]:
    z = ZoneInfo(zone)
    start = dt.datetime(y, m, 1, tzinfo=z)
    end = dt.datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=z)
    return start.astimezone(UTC), end.astimezone(UTC)


def price(t, period, energy, reactive=None, segments=None):
    """Bill one meter; returns (lines, total) after checking interval cost sums to it."""
    n = len(quarter_grid(*period))
    e = np.broadcast_to(np.asarray(energy, dtype=float), (n,)).reshape(1, n).copy()
    q = None if reactive is None else np.broadcast_to(np.asarray(reactive, float), (n,)).reshape(1, n).copy()
    segments = segments or [Segment(1, t, *period)]
    res = price_period(segments, period, e, np.ones_like(e, dtype=bool), q)
    lines = res.lines[0]
    _, _, total = bill_totals(lines)
    interval_sum = int(res.energy_micro.sum() + res.allocated_micro.sum())
    assert interval_sum == int(total * 1_000_000), "interval cost must sum to the bill"
    return lines, total, res


def amounts(lines, kind):
    return [ln.amount for ln in lines if ln.kind == kind]


def test_flat_rate():
    t = tariff(energyratestructure=[[{"rate": 0.10}]], energyweekdayschedule=flat_schedule(),
               energyweekendschedule=flat_schedule())
    lines, total, _ = price(t, month(2025, 6), 1.0)
    # June: 30 days × 96 kWh = 2880 kWh × 0.10 = 288.00
    assert total == Decimal("288.00")
    assert [(ln.quantity, ln.unit, ln.rate) for ln in lines] == [(2880.0, "kWh", 0.10)]


def test_tou_weekday_weekend_with_holiday():
    t = tariff(energyratestructure=[[{"rate": 0.10}], [{"rate": 0.30}]],
               energyweekdayschedule=hours_schedule(range(8, 20)), energyweekendschedule=flat_schedule(0),
               wattline={"holidays": ["2025-12-25"]})
    lines, total, res = price(t, month(2025, 12), 1.0)
    # December 2025 starts on a Monday: 23 weekdays, 8 weekend days; Thursday the 25th is a
    # holiday priced as a weekend day → 22 weekdays. Peak 08–20 = 12 h × 4 kWh = 48 kWh/weekday.
    peak = 22 * 12 * 4            # 1056 kWh
    off = 31 * 96 - peak          # 1920 kWh
    assert {ln.period: ln.quantity for ln in lines} == {1: peak, 0: off}
    assert total == Decimal("508.80")   # 1056 × 0.30 + 1920 × 0.10 = 316.80 + 192.00
    grid = quarter_grid(*month(2025, 12))
    xmas_noon = np.searchsorted(grid, dt.datetime(2025, 12, 25, 12, tzinfo=UTC).timestamp())
    assert res.period[xmas_noon] == 0 and res.flags[0, xmas_noon] & F_HOLIDAY
    assert res.flags[0, xmas_noon] & F_OFFDAY


def test_three_tiers_crossing_mid_month_with_two_tou_periods():
    t = tariff(
        energyratestructure=[
            [{"max": 1000, "rate": 0.10}, {"max": 2000, "rate": 0.08}, {"rate": 0.05}],
            [{"max": 1000, "rate": 0.20}, {"max": 2000, "rate": 0.16}, {"rate": 0.10}],
        ],
        energyweekdayschedule=hours_schedule(range(12, 18)), energyweekendschedule=hours_schedule(range(12, 18)))
    lines, total, _ = price(t, month(2025, 6), 1.0)
    # 2880 kWh: tier 0 = 1000, tier 1 = 1000, tier 2 = 880 (limits crossed on day 10 and 20).
    # Period 1 (12–18 h) = 30 × 6 h × 4 = 720 kWh = 25 % → 250, 250, 220; period 0: 750, 750, 660.
    got = {(ln.period, ln.tier): (round(ln.quantity, 6), ln.amount) for ln in lines}
    assert got == {
        (0, 0): (750.0, Decimal("75.00")), (0, 1): (750.0, Decimal("60.00")), (0, 2): (660.0, Decimal("33.00")),
        (1, 0): (250.0, Decimal("50.00")), (1, 1): (250.0, Decimal("40.00")), (1, 2): (220.0, Decimal("22.00")),
    }
    assert total == Decimal("280.00")   # 168.00 + 112.00


def test_kwh_daily_tier_limit_multiplies_by_days_in_month():
    t = tariff(energyratestructure=[[{"max": 50, "unit": "kWh daily", "rate": 0.10},
                                     {"unit": "kWh daily", "rate": 0.20}]],
               energyweekdayschedule=flat_schedule(), energyweekendschedule=flat_schedule())
    lines, total, _ = price(t, month(2025, 7), 1.0)
    # July: limit 50 × 31 = 1550 kWh of 2976 → 1550 × 0.10 + 1426 × 0.20 = 155.00 + 285.20
    assert total == Decimal("440.20")


def _demand_energy(period):
    grid = quarter_grid(*period)
    e = np.ones(len(grid))                                       # 4 kW base
    at = lambda d: int(np.searchsorted(grid, d.timestamp()))     # noqa: E731
    e[at(dt.datetime(2025, 6, 10, 15, 0, tzinfo=UTC))] = 5.0     # Tuesday on-peak: 20 kW
    e[at(dt.datetime(2025, 6, 14, 3, 0, tzinfo=UTC))] = 7.5      # Saturday off-peak: 30 kW
    return e


DEMAND = dict(demandratestructure=[[{"rate": 2.0}], [{"rate": 10.0}]],
              demandweekdayschedule=hours_schedule(range(12, 18)), demandweekendschedule=flat_schedule(0),
              flatdemandstructure=[[{"max": 25, "rate": 4.0}, {"rate": 3.0}]], flatdemandmonths=[0] * 12)


def test_tou_demand_and_flat_monthly_demand_15_minutes():
    period = month(2025, 6)
    lines, total, _ = price(tariff(**DEMAND), period, _demand_energy(period))
    got = sorted((ln.description.split(":")[0], ln.quantity, ln.amount) for ln in lines)
    assert got == [
        ("TOU demand period 0 tier 0", 30.0, Decimal("60.00")),    # 30 kW × 2
        ("TOU demand period 1 tier 0", 20.0, Decimal("200.00")),   # 20 kW × 10
        ("flat demand period 0 tier 0", 25.0, Decimal("100.00")),  # 25 kW × 4
        ("flat demand period 0 tier 1", 5.0, Decimal("15.00")),    # (30 − 25) kW × 3
    ]
    assert total == Decimal("375.00")


def test_demand_over_30_minute_intervals():
    period = month(2025, 6)
    t = tariff(**DEMAND, wattline={"demand_interval_minutes": 30})
    lines, total, _ = price(t, period, _demand_energy(period))
    # Half hours: (5 + 1) kWh / 0.5 h = 12 kW on-peak; (7.5 + 1) / 0.5 = 17 kW off-peak.
    # 17 × 2 + 12 × 10 + 17 × 4 = 34 + 120 + 68
    assert total == Decimal("222.00")


def test_fixed_per_day_in_a_31_day_month():
    t = tariff(fixedchargefirstmeter=1.25, fixedchargeunits="$/day")
    lines, total, res = price(t, month(2025, 7), 0.0)
    assert [(ln.kind, ln.quantity, ln.unit) for ln in lines] == [("fixed", 31.0, "day")]
    assert total == Decimal("38.75")          # 31 × 1.25
    # No energy: spread evenly (38.75 / 2976 intervals), remainder on the first interval.
    assert res.allocated_micro[0, 1] == 38_750_000 // 2976


def test_minimum_charge_is_a_floor_before_taxes():
    t = tariff(energyratestructure=[[{"rate": 0.10}]], energyweekdayschedule=flat_schedule(),
               energyweekendschedule=flat_schedule(), fixedchargefirstmeter=10, mincharge=50,
               wattline={"taxes": [{"name": "VAT", "percent": 10}]})
    lines, total, _ = price(t, month(2025, 6), 0.05)
    # 2880 × 0.05 = 144 kWh × 0.10 = 14.40; + fixed 10.00 = 24.40 < 50 → minimum 25.60;
    # tax 10 % of 50.00 = 5.00
    assert amounts(lines, "minimum") == [Decimal("25.60")]
    assert amounts(lines, "tax") == [Decimal("5.00")]
    assert total == Decimal("55.00")


def test_minimum_charge_not_applied_above_it():
    t = tariff(energyratestructure=[[{"rate": 0.10}]], energyweekdayschedule=flat_schedule(),
               energyweekendschedule=flat_schedule(), mincharge=50)
    lines, total, _ = price(t, month(2025, 6), 1.0)
    assert amounts(lines, "minimum") == [] and total == Decimal("288.00")


def test_power_factor_penalty_per_kvarh():
    t = tariff(energyratestructure=[[{"rate": 0.0}]], energyweekdayschedule=flat_schedule(),
               energyweekendschedule=flat_schedule(),
               wattline={"power_factor": {"threshold": 0.9, "method": "kvarh", "rate": 0.05}})
    lines, total, _ = price(t, month(2025, 6), 1.0, reactive=0.75)
    # P = 2880 kWh, Q = 2160 kvarh → PF = 2880 / 3600 = 0.8 < 0.9.
    allowance = 2880 * math.sqrt(1 - 0.9 ** 2) / 0.9      # tan(acos 0.9) = √0.19 / 0.9 → 1394.85 kvarh
    excess = 2160 - allowance                             # 765.15 kvarh
    assert round(excess * 0.05, 2) == 38.26
    (pf,) = [ln for ln in lines if ln.kind == "power_factor"]
    assert pf.quantity == pytest.approx(excess) and pf.amount == Decimal("38.26")
    assert total == Decimal("38.26")


def test_power_factor_demand_multiplier():
    t = tariff(flatdemandstructure=[[{"rate": 10.0}]], flatdemandmonths=[0] * 12,
               wattline={"power_factor": {"threshold": 0.9, "method": "demand_multiplier"}})
    lines, total, _ = price(t, month(2025, 6), 1.0, reactive=0.75)
    # Demand 4 kW × 10 = 40.00; PF 0.8 → billed demand × 0.9 / 0.8: extra 40 × 0.125 = 5.00
    assert amounts(lines, "demand") == [Decimal("40.00")]
    assert amounts(lines, "power_factor") == [Decimal("5.00")]
    assert total == Decimal("45.00")


def test_no_power_factor_charge_at_or_above_threshold():
    t = tariff(energyratestructure=[[{"rate": 0.0}]], energyweekdayschedule=flat_schedule(),
               energyweekendschedule=flat_schedule(),
               wattline={"power_factor": {"threshold": 0.8, "method": "kvarh", "rate": 0.05}})
    lines, total, _ = price(t, month(2025, 6), 1.0, reactive=0.75)   # PF exactly 0.8
    assert amounts(lines, "power_factor") == []


def test_taxes_on_stated_lines():
    t = tariff(energyratestructure=[[{"rate": 0.10}]], energyweekdayschedule=flat_schedule(),
               energyweekendschedule=flat_schedule(), fixedchargefirstmeter=20,
               wattline={"taxes": [{"name": "energy tax", "percent": 25, "applies_to": ["energy"]},
                                   {"name": "VAT", "percent": 5, "applies_to": ["energy", "fixed"]}]})
    lines, total, res = price(t, month(2025, 6), 1.0)
    # energy 288.00, fixed 20.00; energy tax 25 % × 288 = 72.00; VAT 5 % × 308 = 15.40
    assert amounts(lines, "tax") == [Decimal("72.00"), Decimal("15.40")]
    assert bill_totals(lines) == (Decimal("308.00"), Decimal("87.40"), Decimal("395.40"))


def test_tariff_change_on_the_16th_splits_the_month():
    a = tariff(energyratestructure=[[{"rate": 0.10}]], energyweekdayschedule=flat_schedule(),
               energyweekendschedule=flat_schedule(), fixedchargefirstmeter=31)
    b = tariff(energyratestructure=[[{"rate": 0.20}]], energyweekdayschedule=flat_schedule(),
               energyweekendschedule=flat_schedule(), fixedchargefirstmeter=62)
    ps, pe = month(2025, 7)
    change = dt.datetime(2025, 7, 16, tzinfo=UTC)
    lines, total, res = price(a, (ps, pe), 1.0, segments=[Segment(1, a, ps, change), Segment(2, b, change, pe)])
    # 1–15 July (15 days): 1440 kWh × 0.10 = 144.00, fixed 31 × 15/31 = 15.00
    # 16–31 July (16 days): 1536 kWh × 0.20 = 307.20, fixed 62 × 16/31 = 32.00
    assert [(ln.tariff_id, ln.kind, ln.amount) for ln in lines] == [
        (1, "energy", Decimal("144.00")), (1, "fixed", Decimal("15.00")),
        (2, "energy", Decimal("307.20")), (2, "fixed", Decimal("32.00"))]
    assert total == Decimal("498.20")
    assert set(res.tariff_id[:1440]) == {1} and set(res.tariff_id[1440:]) == {2}


@pytest.mark.parametrize("day, hours_priced", [
    (dt.date(2025, 3, 30), 5),   # 23-hour day: local 00–06 is 00, 01, 03, 04, 05 (02 skipped)
    (dt.date(2025, 10, 26), 7),  # 25-hour day: 00, 01, 02, 02 again, 03, 04, 05
])
def test_stockholm_dst_days_priced_in_local_hours(day, hours_priced):
    zone = "Europe/Stockholm"
    t = tariff(energyratestructure=[[{"rate": 0.0}], [{"rate": 1.0}]],
               energyweekdayschedule=hours_schedule(range(0, 6)), energyweekendschedule=hours_schedule(range(0, 6)),
               wattline={"timezone": zone})
    period = month(day.year, day.month, zone)
    grid = quarter_grid(*period)
    z = ZoneInfo(zone)
    lo = dt.datetime.combine(day, dt.time(), z).timestamp()
    hi = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), z).timestamp()
    energy = ((grid >= lo) & (grid < hi)).astype(float)     # 1 kWh per interval on that day only
    lines, total, _ = price(t, period, energy)
    day_kwh = energy.sum()
    assert day_kwh == {5: 92, 7: 100}[hours_priced]          # 23 h or 25 h × 4 kWh
    assert total == Decimal(hours_priced * 4)                # hours × 4 kWh × 1.00


def test_allocation_puts_the_remainder_on_the_largest_weight():
    a = allocate(np.array([1_000_000]), np.array([[1.0, 1.0, 1.0]]), np.ones((1, 3), bool), np.ones((1, 3), bool))
    # 1.000000 / 3 = 0.333333 each, remainder 0.000001 on the first of the equal weights
    assert a.tolist() == [[333_334, 333_333, 333_333]]


def test_calendar_helpers():
    z = ZoneInfo("Europe/Stockholm")
    assert local_days(z, *month(2025, 3, "Europe/Stockholm")) == 31      # 23-hour day counts as one
    periods = billing_periods(ZoneInfo("UTC"), 15, dt.datetime(2025, 1, 20, tzinfo=UTC),
                              dt.datetime(2025, 2, 20, tzinfo=UTC))
    assert [(p[0].date(), p[1].date()) for p in periods] == [
        (dt.date(2025, 1, 15), dt.date(2025, 2, 15)), (dt.date(2025, 2, 15), dt.date(2025, 3, 15))]
    assert money(2.675) == Decimal("2.68")
