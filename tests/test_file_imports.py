"""File imports against a real database: MyEMS's own templates import as they are, and
a file with one bad cell is refused whole with a message naming sheet, row, column and
value, leaving the database untouched."""

from __future__ import annotations

import datetime as dt
import shutil

import openpyxl
import pytest
import typer
from typer.testing import CliRunner

from collectors.files import FileImportError, import_offline, import_readings, import_repair
from collectors.import_cli import register

UTC = dt.timezone.utc
SHANGHAI = "Asia/Shanghai"  # MyEMS's home zone: UTC+8, no DST


@pytest.fixture
def site(conn):
    cat = conn.execute(
        "INSERT INTO config.energy_category (name, unit) VALUES ('electricity', 'kWh') RETURNING id"
    ).fetchone()[0]

    def meter(name, kind="physical"):
        return conn.execute(
            "INSERT INTO config.meter (name, kind, category_id) VALUES (%s, %s, %s) RETURNING id",
            (name, kind, cat),
        ).fetchone()[0]

    ds = conn.execute(
        "INSERT INTO config.data_source (name, protocol, connection) "
        "VALUES ('plc', 'modbus-tcp', '{\"host\": \"127.0.0.1\"}') RETURNING id"
    ).fetchone()[0]

    def point(name, high=None):
        return conn.execute(
            "INSERT INTO config.point (data_source_id, name, object_type, address, high_limit) "
            "VALUES (%s, %s, 'energy', '{\"register\": 0}', %s) RETURNING id",
            (ds, name, high),
        ).fetchone()[0]

    ids = {
        "offline": meter("Example Offline Meter", "offline"),
        "water": meter("Water Offline", "offline"),
        "main": meter("Main"),
        "epi": point("3W11P-EPI"),
        "main_pt": point("main-energy", high=1e9),
        "spare": point("spare"),
    }
    conn.execute("INSERT INTO config.meter_point (meter_id, point_id) VALUES (%s, %s)", (ids["main"], ids["main_pt"]))
    return ids


@pytest.fixture
def myems(fixtures_dir, tmp_path):
    """Writable copies of MyEMS's templates (the fixture dir is read-only)."""
    out = {}
    for name in ("offline_meter_data.xlsx", "data_repair_sample.xlsx"):
        out[name.split("_")[0]] = shutil.copy(fixtures_dir / "myems" / name, tmp_path / name)
    return out


def edited(path, tmp_path, name, **cells):
    wb = openpyxl.load_workbook(path)
    ws = wb.worksheets[0]
    for ref, value in cells.items():
        ws[ref] = value
    target = tmp_path / name
    wb.save(target)
    return target


def dirty(conn):
    return conn.execute(
        "SELECT point_id, meter_id, range_start, range_end, reason FROM ops.dirty_range ORDER BY id"
    ).fetchall()


def offline_values(conn):
    return conn.execute(
        "SELECT meter_id, period_start, period, value FROM energy.offline_value ORDER BY meter_id, period_start"
    ).fetchall()


# --------------------------------------------------------------------- offline
def test_myems_offline_template_imports(conn, db_url, site, myems):
    report = import_offline(myems["offline"], url=db_url, tz=SHANGHAI)
    assert report.rows == 1 and report.written == 31
    values = offline_values(conn)
    assert len(values) == 31
    assert values[0] == (site["offline"], dt.date(2023, 3, 1), "day", 999.0)
    assert values[1][3] == pytest.approx(341.7)
    assert values[30] == (site["offline"], dt.date(2023, 3, 31), "day", 898.8)
    # The local March of Shanghai, in UTC, is marked dirty for that meter.
    assert dirty(conn) == [(None, site["offline"], dt.datetime(2023, 2, 28, 16, tzinfo=UTC),
                            dt.datetime(2023, 3, 31, 16, tzinfo=UTC), "offline import")]


def test_offline_reimport_replaces_only_the_days_in_the_file(conn, db_url, site, myems, tmp_path):
    conn.execute("INSERT INTO energy.offline_value (meter_id, period_start, period, value) "
                 "VALUES (%s, '2023-03-01', 'month', 5000)", (site["offline"],))
    import_offline(myems["offline"], url=db_url, tz=SHANGHAI)
    assert [v for v in offline_values(conn) if v[2] == "month"] == []   # overlapped: replaced
    blanks = {f"{openpyxl.utils.get_column_letter(c)}3": None for c in range(5, 35)}  # keep day 1 only
    again = edited(myems["offline"], tmp_path, "march-day1.xlsx", D3=1000.5, **blanks)
    report = import_offline(again, url=db_url, tz=SHANGHAI)
    assert report.written == 1 and report.replaced == 1
    values = offline_values(conn)
    assert len(values) == 31
    assert values[0][3] == 1000.5 and values[30][3] == 898.8
    assert dirty(conn)[-1][2:] == (dt.datetime(2023, 2, 28, 16, tzinfo=UTC),
                                   dt.datetime(2023, 3, 1, 16, tzinfo=UTC), "offline import")


def test_offline_file_with_one_bad_cell_is_refused_whole(conn, db_url, site, myems, tmp_path):
    # A second meter row that is fine, and one bad cell in the first.
    bad = edited(myems["offline"], tmp_path, "bad.xlsx", F3="abc",
                 A4=2, B4="Water Offline", D4=12)
    with pytest.raises(FileImportError) as exc:
        import_offline(bad, url=db_url, tz=SHANGHAI)
    assert str(exc.value) == (
        "bad.xlsx: 1 problem, nothing imported:\n"
        "  sheet Sheet1 row 3 column F, day 3 = 'abc': not a number"
    )
    assert offline_values(conn) == [] and dirty(conn) == []


def test_offline_file_problems_are_all_named(conn, db_url, site, myems, tmp_path):
    bad = edited(myems["offline"], tmp_path, "feb.xlsx", B2=2, AH3=5, E3=-1,
                 A4=9, B4="Nobody", D4=1, A5=3, B5="Main", D5=1)
    with pytest.raises(FileImportError) as exc:
        import_offline(bad, url=db_url, tz=SHANGHAI)
    lines = str(exc.value).splitlines()[1:]
    assert lines == [
        "  sheet Sheet1 row 3 column E, day 2 = -1: negative energy",
        "  sheet Sheet1 row 3 column AF, day 29 = 707.700000000004: February 2023 has 28 days",
        "  sheet Sheet1 row 3 column AG, day 30 = 999.599999999991: February 2023 has 28 days",
        "  sheet Sheet1 row 3 column AH, day 31 = 5: February 2023 has 28 days",
        "  sheet Sheet1 row 4 column B, meter = 'Nobody': unknown meter",
        "  sheet Sheet1 row 5 column B, meter = 'Main': meter 'Main' is a physical meter, not an offline meter",
    ]
    assert offline_values(conn) == []


# ---------------------------------------------------------------------- repair
def test_myems_repair_template_replaces_the_range(conn, db_url, site, myems):
    epi = site["epi"]
    # Stored before: two readings inside the repaired range, one before, one after.
    local = lambda h, m: dt.datetime(2022, 7, 18, h, m, tzinfo=UTC) - dt.timedelta(hours=8)  # noqa: E731
    conn.execute(
        "INSERT INTO raw.point_value (point_id, ts, value) VALUES (%s, %s, 1), (%s, %s, 2), (%s, %s, 3), (%s, %s, 4)",
        (epi, local(1, 50), epi, local(2, 5), epi, local(3, 0), epi, local(4, 10)),
    )
    report = import_repair(myems["data"], url=db_url, tz=SHANGHAI)
    assert report.rows == 13 and report.written == 13 and report.replaced == 2
    rows = conn.execute("SELECT ts, value FROM raw.point_value WHERE point_id = %s ORDER BY ts", (epi,)).fetchall()
    assert rows[0] == (local(1, 50), 1.0)
    assert rows[1] == (local(2, 0), 2987887.998)
    assert rows[-2] == (local(4, 0), 2989087.998)
    assert rows[-1] == (local(4, 10), 4.0)
    assert len(rows) == 15
    assert dirty(conn) == [(epi, None, local(2, 0), local(4, 0) + dt.timedelta(microseconds=1), "data repair")]


def test_repair_with_one_bad_date_changes_nothing(conn, db_url, site, myems, tmp_path):
    conn.execute("INSERT INTO raw.point_value (point_id, ts, value) VALUES (%s, '2022-07-17 18:30Z', 1)",
                 (site["epi"],))
    bad = edited(myems["data"], tmp_path, "bad-repair.xlsx", C7="2022-07-18 02:61:00")
    with pytest.raises(FileImportError) as exc:
        import_repair(bad, url=db_url, tz=SHANGHAI)
    assert str(exc.value).splitlines()[1] == (
        "  sheet Sheet1 row 7 column C, ts = '2022-07-18 02:61:00': not an ISO 8601 timestamp or epoch number"
    )
    assert conn.execute("SELECT count(*) FROM raw.point_value").fetchone()[0] == 1
    assert dirty(conn) == []


def test_repair_point_found_by_name_or_agreeing_id(conn, db_url, site, myems, tmp_path):
    # The MyEMS id (1) is another point here; the name decides.
    f = edited(myems["data"], tmp_path, "other-id.xlsx", **{f"A{r}": site["spare"] for r in range(2, 15)})
    assert import_repair(f, url=db_url, tz=SHANGHAI).targets == ["3W11P-EPI"]
    f = edited(myems["data"], tmp_path, "unknown.xlsx", B3="No Such Point")
    with pytest.raises(FileImportError) as exc:
        import_repair(f, url=db_url, tz=SHANGHAI)
    assert "row 3 column B, point name = 'No Such Point': no point has this name" in str(exc.value)


# -------------------------------------------------------------------- readings
def test_readings_csv_with_bom_points_meters_and_ids(conn, db_url, site, tmp_path):
    f = tmp_path / "readings.csv"
    f.write_text(
        "\ufeffPoint,Timestamp,Value\n"
        "3W11P-EPI,2024-01-01 00:00,10\n"                  # local (Shanghai)
        "Main,2024-01-01T00:00:00Z,20\n"                   # a meter: its current point
        f"{site['spare']},1704067200,30\n"                 # point id, epoch seconds
        "\ufeff3W11P-EPI ,2024-01-01 00:15,11\n",
        encoding="utf-8",
    )
    report = import_readings(f, url=db_url, tz=SHANGHAI)
    assert (report.rows, report.written, report.duplicates) == (4, 4, 0)
    rows = conn.execute(
        "SELECT p.name, v.ts, v.value FROM raw.point_value v JOIN config.point p ON p.id = v.point_id "
        "ORDER BY p.name, v.ts").fetchall()
    assert rows == [
        ("3W11P-EPI", dt.datetime(2023, 12, 31, 16, tzinfo=UTC), 10.0),
        ("3W11P-EPI", dt.datetime(2023, 12, 31, 16, 15, tzinfo=UTC), 11.0),
        ("main-energy", dt.datetime(2024, 1, 1, tzinfo=UTC), 20.0),
        ("spare", dt.datetime(2024, 1, 1, tzinfo=UTC), 30.0),
    ]
    again = import_readings(f, url=db_url, tz=SHANGHAI)
    assert (again.written, again.duplicates) == (0, 4)


def test_readings_xlsx_with_meter_column_and_one_bad_cell(conn, db_url, site, tmp_path):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "data"
    ws.append(["计量表", "时间", "值"])
    ws.append(["Main", dt.datetime(2024, 2, 1, 8, 0), 100.5])
    ws.append(["Main", dt.datetime(2024, 2, 1, 8, 15), "1O1"])     # letter O, not zero
    ws.append(["Nowhere", dt.datetime(2024, 2, 1, 8, 30), 102])
    bad = tmp_path / "meters.xlsx"
    wb.save(bad)
    with pytest.raises(FileImportError) as exc:
        import_readings(bad, url=db_url, tz="Europe/Stockholm")
    assert str(exc.value).splitlines()[1:] == [
        "  sheet data row 3 column C, value = '1O1': not a number",
        "  sheet data row 4 column A, point = 'Nowhere': unknown meter",
    ]
    assert conn.execute("SELECT count(*) FROM raw.point_value").fetchone()[0] == 0

    ws["C3"] = 101
    ws["A4"] = "Main"
    wb.save(bad)
    assert import_readings(bad, url=db_url, tz="Europe/Stockholm").written == 3
    assert conn.execute("SELECT min(ts) FROM raw.point_value").fetchone()[0] == dt.datetime(2024, 2, 1, 7, tzinfo=UTC)


def test_readings_header_without_value_column_is_explained(db_url, site, tmp_path):
    f = tmp_path / "odd.csv"
    f.write_text("point;when\nspare;2024-01-01\n")
    with pytest.raises(FileImportError) as exc:
        import_readings(f, url=db_url)
    assert "no column for ts, value in header ['point', 'when']" in str(exc.value)


def test_dst_gap_times_are_refused(db_url, site, tmp_path):
    f = tmp_path / "gap.csv"
    f.write_text("point,ts,value\nspare,2024-03-31 02:30,1\n")
    with pytest.raises(FileImportError) as exc:
        import_readings(f, url=db_url, tz="Europe/Stockholm")
    assert "does not exist in Europe/Stockholm (daylight-saving gap)" in str(exc.value)


# ------------------------------------------------------------------------- CLI
def test_cli_commands(conn, db_url, site, myems, tmp_path, monkeypatch):
    from app.settings import get_settings

    monkeypatch.setenv("WATTLINE_REPORTING_TIMEZONE", SHANGHAI)
    get_settings.cache_clear()
    cli = typer.Typer()
    cli.command("noop")(lambda: None)
    register(cli)
    runner = CliRunner()
    ok = runner.invoke(cli, ["import", "offline", str(myems["offline"])])
    assert ok.exit_code == 0, ok.output
    assert "offline import of offline_meter_data.xlsx: 1 rows read, 31 written" in ok.output
    ok = runner.invoke(cli, ["import", "repair", str(myems["data"])])
    assert ok.exit_code == 0 and "13 written" in ok.output
    bad = edited(myems["data"], tmp_path, "bad.xlsx", D5="n/a")
    refused = runner.invoke(cli, ["import", "repair", str(bad)])
    assert refused.exit_code == 2
    assert "row 5 column D, value = 'n/a': not a number" in refused.output
    get_settings.cache_clear()
