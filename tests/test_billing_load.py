"""jobs.billing.load_matrix: one row per meter of binary arrays read into the (meters,
quarter-hours) matrix the pricing engine takes — NULL energy is NaN and present, a
missing row is absent, rows land in their own meter's row and interval's column."""

from __future__ import annotations

import datetime as dt

import numpy as np

from jobs import billing

UTC = dt.timezone.utc


def test_matrix_places_every_row_and_marks_nulls_and_gaps(conn):
    cat = conn.execute("INSERT INTO config.energy_category (name, unit) VALUES ('electricity', 'kWh') "
                       "RETURNING id").fetchone()[0]
    a, b, c = [conn.execute("INSERT INTO config.meter (name, category_id) VALUES (%s, %s) RETURNING id",
                            (f"m{i}", cat)).fetchone()[0] for i in range(3)]
    start = dt.datetime(2025, 3, 30, 22, tzinfo=UTC)
    end = start + dt.timedelta(hours=3)
    # a: every interval, energy = its index + 0.25; b: two rows, one NULL; c: nothing.
    conn.execute("INSERT INTO energy.meter_interval (meter_id, ts, energy, quality) "
                 "SELECT %s, %s::timestamptz + g * interval '15 minutes', g + 0.25, 1 FROM generate_series(0, 11) g",
                 (a, start))
    conn.execute("INSERT INTO energy.meter_interval (meter_id, ts, energy, quality) VALUES "
                 "(%s, %s, 7.5, 1), (%s, %s, NULL, 1)",
                 (b, start + dt.timedelta(minutes=45), b, start + dt.timedelta(hours=2)))
    # outside the window: ignored
    conn.execute("INSERT INTO energy.meter_interval (meter_id, ts, energy, quality) VALUES (%s, %s, 99, 1)",
                 (b, end))

    energy, present = billing.load_matrix(conn, [c, a, b], start, end)
    assert energy.shape == present.shape == (3, 12)
    assert not present[0].any() and np.isnan(energy[0]).all()
    assert present[1].all() and energy[1].tolist() == [i + 0.25 for i in range(12)]
    assert np.flatnonzero(present[2]).tolist() == [3, 8]
    assert energy[2, 3] == 7.5 and np.isnan(energy[2, 8])
    assert np.isnan(np.delete(energy[2], [3, 8])).all()

    # a window that starts between quarter hours begins at the next one
    e2, p2 = billing.load_matrix(conn, [a], start + dt.timedelta(minutes=5), end)
    assert e2.shape == (1, 11) and e2[0].tolist() == [i + 0.25 for i in range(1, 12)] and p2.all()
    assert billing.load_matrix(conn, [], start, end)[0].shape == (0, 12)
