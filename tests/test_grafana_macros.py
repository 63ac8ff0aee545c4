"""The Grafana expansion re-implementation against the cases Grafana's own tests state
(pkg/tsdb/grafana-postgresql-datasource/macros_test.go, the SQL data source's variable
interpolation and the template service's formats)."""

from __future__ import annotations

import datetime as dt

import pytest

from grafana_macros import (
    ALL, MacroError, TimeRange, Variable, calculate_interval, expand, format_interval,
    global_interpolate, interpolate_macros, metric_find_values, parse_interval, replace_variables,
)

UTC = dt.timezone.utc
FROM = dt.datetime(2018, 4, 12, 18, 0, tzinfo=UTC)
RANGE = TimeRange(FROM, FROM + dt.timedelta(minutes=5))


def m(sql: str, ts: bool = False, rng: TimeRange = RANGE) -> str:
    return interpolate_macros(sql, rng, timescaledb=ts)


def test_time_and_epoch_columns():
    assert m("select $__time(time_column)") == 'select time_column AS "time"'
    assert m("select min($__time(time_column))") == 'select min(time_column AS "time")'
    assert m("select $__timeEpoch(time_column)") == 'select extract(epoch from time_column) as "time"'


def test_time_filter_from_to():
    assert m("WHERE $__timeFilter(time_column)") == \
        "WHERE time_column BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T18:05:00Z'"
    assert m("select $__timeFrom()") == "select '2018-04-12T18:00:00Z'"
    assert m("select $__timeTo()") == "select '2018-04-12T18:05:00Z'"


def test_time_filter_keeps_fractional_seconds_without_trailing_zeros():
    rng = TimeRange(dt.datetime(1960, 2, 1, 7, 0, 0, 500000, tzinfo=UTC),
                    dt.datetime(1980, 2, 3, 8, 0, 0, 500000, tzinfo=UTC))
    assert m("WHERE $__timeFilter(time_column)", rng=rng) == \
        "WHERE time_column BETWEEN '1960-02-01T07:00:00.5Z' AND '1980-02-03T08:00:00.5Z'"
    assert m("select $__unixEpochFilter(time)", rng=rng) == \
        f"select time >= {int(rng.start.timestamp())} AND time <= {int(rng.end.timestamp())}"


def test_time_group_without_timescaledb():
    assert m("SELECT $__timeGroup(time_column,'5m')") == "SELECT floor(extract(epoch from time_column)/300)*300"
    assert m("SELECT $__timeGroupAlias(time_column,'5m')") == \
        'SELECT floor(extract(epoch from time_column)/300)*300 AS "time"'
    assert m("$__timeGroup(time_column , '5m')") == "floor(extract(epoch from time_column)/300)*300"


def test_time_group_pre_5_3_compatibility_adds_the_alias_before_a_comma():
    assert m("SELECT $__timeGroup(time_column,'5m'), value") == \
        'SELECT floor(extract(epoch from time_column)/300)*300 AS "time", value'
    assert m("SELECT $__timeGroup(time_column,'5m') as time, value") == \
        "SELECT floor(extract(epoch from time_column)/300)*300 as time, value"


def test_time_group_with_timescaledb():
    assert m("GROUP BY $__timeGroup(time_column,'5m')", ts=True) == "GROUP BY time_bucket('300.000s',time_column)"
    assert m("GROUP BY $__timeGroup(time_column , '5m')", ts=True) == "GROUP BY time_bucket('300.000s',time_column)"
    assert m("GROUP BY $__timeGroup(time_column , '12d')", ts=True) == \
        "GROUP BY time_bucket('1036800.000s',time_column)"
    assert m("GROUP BY $__timeGroup(time_column , '20ms')", ts=True) == "GROUP BY time_bucket('0.020s',time_column)"
    assert m("SELECT $__timeGroupAlias(ts, '1h')", ts=True) == "SELECT time_bucket('3600.000s',ts) AS \"time\""


def test_unix_epoch_macros():
    assert m("select $__unixEpochFilter(time)") == \
        f"select time >= {int(RANGE.start.timestamp())} AND time <= {int(RANGE.end.timestamp())}"
    nano_from = int(RANGE.start.timestamp()) * 10**9
    assert m("select $__unixEpochNanoFilter(time)") == \
        f"select time >= {nano_from} AND time <= {nano_from + 300 * 10**9}"
    assert m("select $__unixEpochNanoFrom()") == f"select {nano_from}"
    assert m("select $__unixEpochNanoTo()") == f"select {nano_from + 300 * 10**9}"
    assert m("SELECT $__unixEpochGroup(time_column+time_adjustment,'5m')") == \
        "SELECT floor((time_column+time_adjustment)/300)*300"
    assert m("SELECT $__unixEpochGroupAlias(time_column+time_adjustment,'5m')") == \
        'SELECT floor((time_column+time_adjustment)/300)*300 AS "time"'


def test_macro_errors():
    with pytest.raises(MacroError, match="unknown macro"):
        m("select $__nope(x)")
    with pytest.raises(MacroError, match="needs time column and interval"):
        m("select $__timeGroup(x)")
    with pytest.raises(MacroError, match="error parsing interval"):
        m("select $__timeGroup(x, 'soon')")


def test_global_substitutions():
    sql = "$__interval_ms $__interval $__unixEpochFrom() $__unixEpochTo()"
    assert global_interpolate(sql, RANGE, dt.timedelta(minutes=5)) == \
        f"300000 5m {int(RANGE.start.timestamp())} {int(RANGE.end.timestamp())}"


def test_durations():
    assert parse_interval("5m") == dt.timedelta(minutes=5)
    assert parse_interval("1h30m") == dt.timedelta(minutes=90)
    assert parse_interval("20ms") == dt.timedelta(milliseconds=20)
    assert parse_interval("2d") == dt.timedelta(days=2)
    assert parse_interval("1w") == dt.timedelta(days=7)
    now = dt.datetime(2026, 3, 31, tzinfo=UTC)
    assert parse_interval("1M", now) == now - dt.datetime(2026, 3, 3, tzinfo=UTC)   # Go: Feb 31 → Mar 3
    assert [format_interval(dt.timedelta(seconds=s)) for s in (0.0005, 0.02, 90, 3600, 86400 * 8, 86400 * 400)] \
        == ["1ms", "20ms", "1m", "1h", "8d", "1y"]


def test_interval_from_range_and_data_points():
    day = TimeRange(FROM, FROM + dt.timedelta(days=1))
    assert calculate_interval(day, 1000) == dt.timedelta(minutes=1)            # 86.4 s → 1m
    assert calculate_interval(day, 100) == dt.timedelta(minutes=15)            # 864 s → 15m
    assert calculate_interval(day, 1000, "15m") == dt.timedelta(minutes=15)    # min interval wins
    two_weeks = TimeRange(FROM, FROM + dt.timedelta(days=14))
    assert calculate_interval(two_weeks, 1000) == dt.timedelta(minutes=20)


SINGLE = Variable("site", "12")
QUOTED = Variable("name", "O'Brien")
MULTI = Variable("meter", ["3", "5"], multi=True)
ALL_NO_CUSTOM = Variable("cat", ALL, multi=True, include_all=True, options=["1", "2"])
ALL_CUSTOM = Variable("kind", ALL, include_all=True, all_value="SELECT id FROM x", options=["a"])
VARS = {v.name: v for v in (SINGLE, QUOTED, MULTI, ALL_NO_CUSTOM, ALL_CUSTOM)}


def test_sql_variable_formatting_single_multi_and_all():
    r = lambda sql: replace_variables(sql, VARS)  # noqa: E731
    assert r("id = $site") == "id = 12"                         # single: raw
    assert r("name = '$name'") == "name = 'O''Brien'"           # single: quotes doubled, not quoted
    assert r("id IN ($meter)") == "id IN ('3','5')"              # multi: quoted list
    assert r("id IN (${meter})") == "id IN ('3','5')"
    assert r("id IN ([[meter]])") == "id IN ('3','5')"
    assert r("id IN ($cat)") == "id IN ('1','2')"                # All without custom value: every option
    assert r("id IN ($kind)") == "id IN (SELECT id FROM x)"      # custom all value: raw
    assert r("$unknown stays") == "$unknown stays"


def test_explicit_formats_override_the_sql_default():
    r = lambda sql: replace_variables(sql, VARS)  # noqa: E731
    assert r("${meter:csv}") == "3,5"
    assert r("${meter:sqlstring}") == "'3','5'"
    assert r("${name:sqlstring}") == "'O''Brien'"
    assert r("${meter:pipe}") == "3|5"
    assert r("[[meter:csv]]") == "3,5"
    assert r("${meter:raw}") == "3,5"


def test_expand_applies_browser_then_server_substitutions():
    sql = ("SELECT $__timeGroupAlias(ts, $__interval), sum(e) FROM t "
           "WHERE $__timeFilter(ts) AND m IN ($meter) AND s = $site GROUP BY 1")
    out = expand(sql, RANGE, dt.timedelta(minutes=15), VARS, timescaledb=True)
    assert out == ("SELECT time_bucket('900.000s',ts) AS \"time\", sum(e) FROM t "
                   "WHERE ts BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T18:05:00Z' "
                   "AND m IN ('3','5') AND s = 12 GROUP BY 1")
    assert expand("$__from $__to", RANGE, dt.timedelta(minutes=1)) == \
        f"{int(RANGE.start.timestamp()) * 1000} {int(RANGE.end.timestamp()) * 1000}"


def test_metric_find_values():
    assert metric_find_values([("A", 1), ("B", 2), ("A", 3)], ["__text", "__value"]) == [("A", "1"), ("B", "2")]
    assert metric_find_values([(1,), (2,)], ["id"]) == [("1", "1"), ("2", "2")]
