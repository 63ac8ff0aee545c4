"""The billing stage against the database: bills per meter, cost center and tenant,
revisions, open bills, tariff assignment precedence and changes, and interval cost that
sums to the bills at every granularity."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from app.tariffs import import_tariff
from jobs import billing
from jobs.dirty import log_energy_change

UTC = dt.timezone.utc
FLAT = [[0] * 24 for _ in range(12)]


def flat_tariff(label: str, rate: float, **extra) -> dict:
    return {"label": label, "name": label, "energyratestructure": [[{"rate": rate}]],
            "energyweekdayschedule": FLAT, "energyweekendschedule": FLAT, **extra}


def make_site(conn, meters: int = 1, category: str = "electricity", unit: str = "kWh"):
    """A cost center with `meters` meters; returns (category id, cost center id, meter ids)."""
    cat = conn.execute(
        "INSERT INTO config.energy_category (name, unit) VALUES (%s, %s) "
        "ON CONFLICT (name) DO UPDATE SET unit = EXCLUDED.unit RETURNING id", (category, unit)).fetchone()[0]
    cc = conn.execute("INSERT INTO config.cost_center (name) VALUES (%s) ON CONFLICT (name) DO UPDATE "
                      "SET name = EXCLUDED.name RETURNING id", ("plant",)).fetchone()[0]
    ids = [conn.execute("INSERT INTO config.meter (name, category_id, cost_center_id) VALUES (%s, %s, %s) "
                        "RETURNING id", (f"{category} {i}", cat, cc)).fetchone()[0] for i in range(meters)]
    return cat, cc, ids


def write_energy(conn, meter: int, start: dt.datetime, end: dt.datetime, kwh: float) -> None:
    with conn.cursor().copy("COPY energy.meter_interval (meter_id, ts, energy, quality) FROM STDIN") as copy:
        t = start
        while t < end:
            copy.write_row((meter, t, kwh, 1))
            t += dt.timedelta(minutes=15)


def assign(conn, tariff_id: int, *, category=None, cost_center=None, tenant=None, meter=None,
           valid_from="-infinity", valid_to="infinity") -> None:
    conn.execute(
        "INSERT INTO config.tariff_assignment (tariff_id, category_id, cost_center_id, tenant_id, meter_id, "
        "valid_from, valid_to) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (tariff_id, category, cost_center, tenant, meter, valid_from, valid_to))


def run_stage(conn, start=None, end=None) -> int:
    with conn.transaction():
        return billing.run(conn, start, end)


def bills(conn, kind="meter", entity=None):
    return conn.execute(
        "SELECT entity_id, period_start, revision, is_current, status, total, previous_total, difference "
        "FROM billing.bill WHERE entity_kind = %s AND (%s::int IS NULL OR entity_id = %s) "
        "ORDER BY entity_id, period_start, revision", (kind, entity, entity)).fetchall()


def assert_interval_cost_sums_to_bills(conn):
    """Every current meter bill equals the sum of its intervals; every entity bill the sum
    over its meters; the daily and monthly cost rollups hold the same total, and the days
    the stage wrote from its arrays are the rows the SQL definition gives."""
    mismatched = conn.execute(
        """SELECT b.entity_kind, b.entity_id, b.period_start, b.total, sum(c.total)
           FROM billing.bill b
           JOIN LATERAL (
               SELECT b.entity_id AS meter_id WHERE b.entity_kind = 'meter'
               UNION SELECT id FROM config.meter WHERE b.entity_kind = 'cost_center' AND cost_center_id = b.entity_id
                 AND category_id = b.category_id
               UNION SELECT meter_id FROM config.tenant_meter tm JOIN config.meter m ON m.id = tm.meter_id
                 WHERE b.entity_kind = 'tenant' AND tm.tenant_id = b.entity_id AND m.category_id = b.category_id
           ) mm ON true
           JOIN billing.meter_cost c ON c.meter_id = mm.meter_id AND c.ts >= b.period_start AND c.ts < b.period_end
           WHERE b.is_current
           GROUP BY b.id HAVING b.total <> sum(c.total)""").fetchall()
    assert mismatched == []
    base = conn.execute("SELECT sum(total) FROM billing.meter_cost").fetchone()[0]
    for obj in ("cost_daily", "cost_monthly"):
        assert conn.execute(f"SELECT sum(total) FROM billing.{obj}").fetchone()[0] == base, obj
    assert_daily_cost_is_its_definition(conn)


def assert_daily_cost_is_its_definition(conn):
    """billing.cost_daily holds exactly the rows of billing.cost_rollup_definition('day')."""
    definition = conn.execute(
        "SELECT billing.cost_rollup_definition('day', reporting_timezone, hour_origin) "
        "FROM billing.cost_rollup_setting").fetchone()[0]
    stored = conn.execute("SELECT meter_id, bucket, period, energy_charge::text, allocated_charge::text, "
                          "total::text, intervals FROM billing.cost_daily ORDER BY 1, 2, 3").fetchall()
    computed = conn.execute(f"SELECT meter_id, bucket, period, energy_charge::text, allocated_charge::text, "
                            f"total::text, intervals FROM ({definition}) d ORDER BY 1, 2, 3").fetchall()
    assert stored == computed


JUNE = (dt.datetime(2025, 6, 1, tzinfo=UTC), dt.datetime(2025, 7, 1, tzinfo=UTC))
JULY = (dt.datetime(2025, 7, 1, tzinfo=UTC), dt.datetime(2025, 8, 1, tzinfo=UTC))


def test_late_readings_in_a_billed_month_make_revision_2(conn):
    cat, cc, (m,) = make_site(conn)
    tid = import_tariff(conn, flat_tariff("flat", 0.10))
    assign(conn, tid, category=cat, cost_center=cc)
    write_energy(conn, m, *JUNE, 1.0)
    assert run_stage(conn) > 0
    # June: 2880 kWh × 0.10, closed (the month and its 5-day grace are long past)
    assert bills(conn) == [(m, JUNE[0], 1, True, "closed", Decimal("288.00"), None, None)]

    # Late data: 4 intervals on 10 June were 1 kWh and are really 3 kWh (+8 kWh).
    late = (dt.datetime(2025, 6, 10, 12, tzinfo=UTC), dt.datetime(2025, 6, 10, 13, tzinfo=UTC))
    conn.execute("UPDATE energy.meter_interval SET energy = 3 WHERE meter_id = %s AND ts >= %s AND ts < %s",
                 (m, *late))
    log_energy_change(conn, *late, "late reading", [m])
    run_stage(conn)
    # 2888 kWh × 0.10 = 288.80: revision 2, difference 0.80; revision 1 kept.
    assert bills(conn) == [
        (m, JUNE[0], 1, False, "closed", Decimal("288.00"), None, None),
        (m, JUNE[0], 2, True, "closed", Decimal("288.80"), Decimal("288.00"), Decimal("0.80")),
    ]
    assert [b[2:] for b in bills(conn, "cost_center", cc)] == [
        (1, False, "closed", Decimal("288.00"), None, None),
        (2, True, "closed", Decimal("288.80"), Decimal("288.00"), Decimal("0.80"))]
    lines_v1, lines_v2 = conn.execute(
        "SELECT array_agg(l.quantity ORDER BY b.revision) FROM billing.bill b JOIN billing.bill_line l "
        "ON l.bill_id = b.id WHERE b.entity_kind = 'meter'").fetchone()[0]
    assert (lines_v1, lines_v2) == (Decimal(2880), Decimal(2888))
    assert_interval_cost_sums_to_bills(conn)

    # Nothing changed: running again (incremental or explicit) adds no revision.
    run_stage(conn)
    run_stage(conn, *JUNE)
    assert len(bills(conn)) == 2


def test_corrected_tariff_makes_a_new_revision(conn):
    cat, cc, (m,) = make_site(conn)
    tid = import_tariff(conn, flat_tariff("flat", 0.10))
    assign(conn, tid, category=cat, cost_center=cc)
    write_energy(conn, m, *JUNE, 1.0)
    run_stage(conn)
    assert import_tariff(conn, flat_tariff("flat", 0.12)) == tid     # same label: corrected in place
    run_stage(conn)
    # 2880 × 0.12 = 345.60, + 57.60
    assert [b[2:] for b in bills(conn)] == [
        (1, False, "closed", Decimal("288.00"), None, None),
        (2, True, "closed", Decimal("345.60"), Decimal("288.00"), Decimal("57.60"))]


def test_open_month_bill_to_date_is_updated_in_place(conn):
    cat, cc, (m,) = make_site(conn)
    assign(conn, import_tariff(conn, flat_tariff("flat", 0.10)), category=cat, cost_center=cc)
    now = conn.execute("SELECT now()").fetchone()[0].astimezone(UTC)
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    write_energy(conn, m, month_start, month_start + dt.timedelta(hours=1), 1.0)
    run_stage(conn)
    assert [b[2:6] for b in bills(conn)] == [(1, True, "open", Decimal("0.40"))]   # 4 kWh × 0.10
    write_energy(conn, m, month_start + dt.timedelta(hours=1), month_start + dt.timedelta(hours=2), 2.0)
    run_stage(conn)
    # + 8 kWh × 0.10: still revision 1, still open
    assert [b[2:6] for b in bills(conn)] == [(1, True, "open", Decimal("1.20"))]
    flags = conn.execute("SELECT bit_and(flags) FROM billing.meter_cost").fetchone()[0]
    assert flags & 8   # every interval marked as priced on an open bill


def test_grace_period_closes_bills(conn):
    cat, cc, (m,) = make_site(conn)
    assign(conn, import_tariff(conn, flat_tariff("flat", 0.10)), category=cat, cost_center=cc)
    conn.execute("UPDATE billing.setting SET grace_period = '100 years'")
    write_energy(conn, m, *JUNE, 1.0)
    run_stage(conn)
    assert bills(conn)[0][4] == "open"
    conn.execute("UPDATE billing.setting SET grace_period = '5 days'")
    run_stage(conn)
    assert bills(conn)[0][2:5] == (1, True, "closed")


def test_assignment_precedence_and_tariff_change_on_the_16th(conn):
    cat, cc, (m1, m2, m3) = make_site(conn, meters=3)
    tenant = conn.execute("INSERT INTO config.tenant (name) VALUES ('shop') RETURNING id").fetchone()[0]
    conn.execute("INSERT INTO config.tenant_meter VALUES (%s, %s)", (tenant, m2))
    a = import_tariff(conn, flat_tariff("A", 0.10, fixedchargefirstmeter=31))
    b = import_tariff(conn, flat_tariff("B", 0.20, fixedchargefirstmeter=62))
    t = import_tariff(conn, flat_tariff("tenant", 0.30))
    own = import_tariff(conn, flat_tariff("own", 0.40))
    change = dt.datetime(2025, 7, 16, tzinfo=UTC)
    assign(conn, a, category=cat, cost_center=cc, valid_to=change)
    assign(conn, b, category=cat, cost_center=cc, valid_from=change)
    assign(conn, t, category=cat, tenant=tenant)
    assign(conn, own, meter=m3)
    for m in (m1, m2, m3):
        write_energy(conn, m, *JULY, 1.0)
    run_stage(conn, *JULY)
    totals = {r[0]: r[5] for r in bills(conn)}
    # m1: cost center tariffs split on the 16th:
    #   1–15 July 1440 kWh × 0.10 = 144.00 + fixed 31 × 15/31 = 15.00
    #   16–31 July 1536 kWh × 0.20 = 307.20 + fixed 62 × 16/31 = 32.00   → 498.20
    # m2: tenant override, 2976 kWh × 0.30 = 892.80; m3: meter override 2976 × 0.40 = 1190.40
    assert totals == {m1: Decimal("498.20"), m2: Decimal("892.80"), m3: Decimal("1190.40")}
    # cost center: all three meters; tenant: m2
    assert bills(conn, "cost_center", cc)[0][5] == Decimal("2581.40")
    assert bills(conn, "tenant", tenant)[0][5] == Decimal("892.80")
    segments = conn.execute(
        "SELECT l.tariff_id, l.kind, l.segment_start, l.segment_end, l.amount FROM billing.bill_line l "
        "JOIN billing.bill b ON b.id = l.bill_id WHERE b.entity_kind = 'meter' AND b.entity_id = %s "
        "ORDER BY l.line_no", (m1,)).fetchall()
    assert segments == [(a, "energy", JULY[0], change, Decimal("144.00")), (a, "fixed", JULY[0], change, Decimal("15.00")),
                        (b, "energy", change, JULY[1], Decimal("307.20")), (b, "fixed", change, JULY[1], Decimal("32.00"))]
    assert_interval_cost_sums_to_bills(conn)


def test_explicit_rerun_is_idempotent(conn):
    cat, cc, ids = make_site(conn, meters=2)
    assign(conn, import_tariff(conn, flat_tariff("flat", 0.10, fixedchargefirstmeter=9.99,
                                                 wattline={"taxes": [{"name": "VAT", "percent": 25}]})),
           category=cat, cost_center=cc)
    for i, m in enumerate(ids):
        write_energy(conn, m, JUNE[0], JULY[1], 0.37 + i)
    run_stage(conn, *JUNE)
    snapshot = conn.execute("SELECT * FROM billing.meter_cost ORDER BY meter_id, ts").fetchall()
    bills_before = bills(conn) + bills(conn, "cost_center")
    run_stage(conn, *JUNE)
    assert conn.execute("SELECT * FROM billing.meter_cost ORDER BY meter_id, ts").fetchall() == snapshot
    assert bills(conn) + bills(conn, "cost_center") == bills_before
    assert_interval_cost_sums_to_bills(conn)


def test_assignment_change_marks_meters_dirty(conn):
    cat, cc, (m,) = make_site(conn)
    write_energy(conn, m, *JUNE, 1.0)
    tid = import_tariff(conn, flat_tariff("flat", 0.10))
    assign(conn, tid, category=cat, cost_center=cc)
    reasons = conn.execute("SELECT meter_id, range_start, range_end, reason FROM ops.dirty_range").fetchall()
    assert reasons == [(m, JUNE[0], JUNE[1], "tariff: assignment changed")]


def test_intervals_without_an_energy_period_are_stored_with_null_period(conn):
    """A tariff with no energy charges (fixed only) prices intervals without a TOU period:
    in one period's COPY some rows carry period 0 and some NULL; the daily rollup keeps
    them apart (period -1) and everything still sums to the bill."""
    cat, cc, (m,) = make_site(conn)
    energy_tariff = import_tariff(conn, flat_tariff("energy", 0.10))
    fixed_only = import_tariff(conn, {"label": "fixed", "name": "fixed", "fixedchargefirstmeter": 31})
    change = dt.datetime(2025, 6, 16, tzinfo=UTC)
    assign(conn, energy_tariff, category=cat, cost_center=cc, valid_to=change)
    assign(conn, fixed_only, category=cat, cost_center=cc, valid_from=change)
    write_energy(conn, m, *JUNE, 1.0)
    run_stage(conn, *JUNE)
    run_stage(conn, *JUNE)          # the second run writes the daily rollup from the priced arrays
    periods = dict(conn.execute("SELECT period, count(*) FROM billing.meter_cost GROUP BY 1").fetchall())
    assert periods == {0: 15 * 96, None: 15 * 96}
    assert dict(conn.execute("SELECT period, sum(intervals) FROM billing.cost_daily GROUP BY 1").fetchall()) == \
        {0: 15 * 96, -1: 15 * 96}
    # 1440 kWh × 0.10 + fixed 31 × 15/30
    assert bills(conn)[0][5] == Decimal("144.00") + Decimal("15.50")
    assert_interval_cost_sums_to_bills(conn)


def test_energy_written_in_the_same_transaction_is_billed(conn):
    """The loader reads ahead on a second connection only while the caller's transaction
    has written nothing; energy written earlier in the same transaction is still billed."""
    cat, cc, ids = make_site(conn, meters=2)
    assign(conn, import_tariff(conn, flat_tariff("flat", 0.10)), category=cat, cost_center=cc)
    with conn.transaction():
        for m in ids:
            write_energy(conn, m, JUNE[0], JULY[1], 1.0)
        billing.run(conn, JUNE[0], JULY[1])
    # June 2880 kWh, July 2976 kWh at 0.10, for each meter
    assert sorted(b[5] for b in bills(conn)) == [Decimal("288.00")] * 2 + [Decimal("297.60")] * 2
    assert_interval_cost_sums_to_bills(conn)


def _billing_state(conn):
    return (
        conn.execute("SELECT * FROM billing.meter_cost ORDER BY meter_id, ts").fetchall(),
        conn.execute("SELECT entity_kind, entity_id, category_id, period_start, revision, is_current, total "
                     "FROM billing.bill ORDER BY 1, 2, 3, 4, 5").fetchall(),
        conn.execute("SELECT * FROM billing.cost_daily ORDER BY 1, 2, 3").fetchall(),
        conn.execute("SELECT * FROM billing.cost_monthly ORDER BY 1, 2, 3").fetchall(),
        conn.execute("SELECT * FROM billing.entity_cost_daily ORDER BY 1, 2, 3, 4, 5").fetchall(),
        conn.execute("SELECT * FROM billing.entity_cost_monthly ORDER BY 1, 2, 3, 4, 5").fetchall(),
    )



def test_a_backfill_prices_each_billing_period_once(conn):
    """`wattline backfill` takes billing in pieces of a year: one run prices June and
    July (day-long pieces, the default chunk, would re-price the month touching each
    day again), builds the entity bills, and a second backfill changes nothing."""
    from jobs import runner

    cat, cc, ids = make_site(conn, meters=3)
    tenant = conn.execute("INSERT INTO config.tenant (name) VALUES ('shop') RETURNING id").fetchone()[0]
    conn.execute("INSERT INTO config.tenant_meter (tenant_id, meter_id) VALUES (%s, %s)", (tenant, ids[0]))
    assign(conn, import_tariff(conn, flat_tariff("flat", 0.10, fixedchargefirstmeter=9.99)),
           category=cat, cost_center=cc)
    for i, m in enumerate(ids):
        write_energy(conn, m, JUNE[0], JULY[1], 0.25 + i)
    stages = runner.load_pipeline(["billing"])
    first = runner.backfill(conn, JUNE[0], JULY[1], stages=stages, workers=2)
    assert first["billing"].rows > 0
    # one piece: prepared, priced in two shares of time, settled
    assert conn.execute("SELECT count(DISTINCT (range_start, range_end)), count(*) FROM ops.job_run "
                        "WHERE stage = 'billing'").fetchone() == (1, 4)
    assert len(bills(conn)) == 3 * 2
    assert [b[0] for b in bills(conn, "cost_center")] == [cc, cc]
    assert [b[0] for b in bills(conn, "tenant")] == [tenant, tenant]
    assert_interval_cost_sums_to_bills(conn)
    state = _billing_state(conn)
    runner.backfill(conn, JUNE[0], JULY[1], stages=stages)
    assert _billing_state(conn) == state
