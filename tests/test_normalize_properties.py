"""Energy conservation, as a property: over random register series with irregular
readings, gaps, rollovers and resets, the written intervals add up to the register's net
advance (corrected for rollovers and resets, times the multiplier) between the first and
last quarter boundary the readings cover, and every quarter in between is written once."""

from __future__ import annotations

import datetime as dt
import itertools

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs import normalize
from pipeline_setup import meter, readings, t

START = t("2026-03-01 00:00")
Q = 900.0
REGISTER_MAX = 99999
_names = itertools.count()

step = st.tuples(
    st.integers(min_value=1, max_value=240),                      # minutes to the next reading
    st.sampled_from(["advance"] * 8 + ["wrap", "reset"]),
    st.floats(min_value=0, max_value=40, allow_nan=False),        # energy used meanwhile
)


def expected_advance(series, register_max, multiplier, lo, hi):
    """Net advance of the unwrapped register between instants lo and hi (seconds)."""
    points, total = [], 0.0
    for i, (ts, v) in enumerate(series):
        if i:
            prev = series[i - 1][1]
            if v >= prev:
                total += v - prev
            elif register_max is not None:
                total += register_max + 1 - prev + v
            else:
                total += v
        points.append((ts, total))

    def at(x):
        for (t0, c0), (t1, c1) in zip(points, points[1:]):
            if t0 <= x <= t1:
                return c0 + (c1 - c0) * (x - t0) / (t1 - t0)
        raise AssertionError("outside the series")

    return (at(hi) - at(lo)) * multiplier


@pytest.fixture
def pg(db_url):
    with psycopg.connect(db_url, autocommit=True) as connection:
        yield connection


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    start_value=st.floats(min_value=0, max_value=REGISTER_MAX - 1000),
    steps=st.lists(step, min_size=2, max_size=40),
    with_max=st.booleans(),
    multiplier=st.sampled_from([1.0, 2.5, 40.0]),
)
def test_interval_sum_equals_net_register_advance(pg, start_value, steps, with_max, multiplier):
    register_max = REGISTER_MAX if with_max else None
    series, seconds, value = [(0.0, round(start_value, 3))], 0.0, start_value
    for minutes, kind, used in steps:
        seconds += minutes * 60.0
        if kind == "reset":
            value = used
        elif kind == "wrap" and register_max is not None:
            value = (value + used + 1000) % (register_max + 1)   # passes the maximum
            if value > series[-1][1]:
                value = 0.0
        else:
            value = value + used
            if register_max is not None and value > register_max:
                value -= register_max + 1
        series.append((seconds, round(value, 3)))

    m, p = meter(pg, f"prop{next(_names)}", register_max=register_max, multiplier=multiplier)
    readings(pg, p, [(START + dt.timedelta(seconds=s), v) for s, v in series])
    with pg.transaction():
        normalize.run(pg, None, None)
    rows = pg.execute(
        "SELECT extract(epoch FROM ts - %s)::float8, energy FROM energy.meter_interval WHERE meter_id = %s ORDER BY ts",
        (START, m),
    ).fetchall()

    first_boundary = -(-series[0][0] // Q) * Q
    last_boundary = (series[-1][0] // Q) * Q
    quarters = int((last_boundary - first_boundary) // Q)
    assert [r[0] for r in rows] == [first_boundary + i * Q for i in range(max(quarters, 0))]
    if quarters > 0:
        want = expected_advance(series, register_max, multiplier, first_boundary, last_boundary)
        assert sum(e for _, e in rows) == pytest.approx(want, rel=1e-9, abs=1e-6)
        # and over any sub-span of whole quarters
        i, j = len(rows) // 3, 2 * len(rows) // 3 + 1
        want = expected_advance(series, register_max, multiplier, first_boundary + i * Q, first_boundary + j * Q)
        assert sum(e for _, e in rows[i:j]) == pytest.approx(want, rel=1e-9, abs=1e-6)
