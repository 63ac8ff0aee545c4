"""The device simulator: realistic, deterministic load shapes served over Modbus TCP."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import socket

import pytest

from app import PROJECT_ROOT
from app.protocols import ModbusAddress, ModbusConnection
from app.readings import PointScaling
from collectors.config import PointConfig, SourceConfig, load_sources
from collectors.loadshapes import LoadShape, shape_for
from collectors.modbus import ModbusPoller
from collectors.simulator import (
    ModbusDeviceServer, backfill_history, backfill_readings, meter_stem, modbus_points, reading_at, source_shapes,
)

UTC = dt.timezone.utc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ListWriter:
    """Collects what a poller hands over, scaled (the writer itself is tested elsewhere)."""

    def __init__(self, points):
        self.scaling = {p.id: p.scaling for p in points}
        self.rows = []

    def add_many(self, rows):
        self.rows.extend((p, ts, self.scaling[p].apply(v)[0], q) for p, ts, v, q in rows)


def test_load_shapes_are_realistic_and_deterministic():
    office = LoadShape("office", peak=100, seed=1, tz="Europe/Stockholm")
    tuesday_10 = dt.datetime(2026, 11, 24, 9, tzinfo=UTC)     # 10:00 local
    tuesday_03 = dt.datetime(2026, 11, 24, 2, tzinfo=UTC)
    sunday_10 = dt.datetime(2026, 11, 29, 9, tzinfo=UTC)
    assert office.power(tuesday_10) > 2.5 * office.power(tuesday_03)
    assert office.power(tuesday_10) > 2.5 * office.power(sunday_10)
    retail = LoadShape("retail", peak=100, seed=1)
    saturday_noon = dt.datetime(2026, 11, 28, 12, tzinfo=UTC)
    assert retail.power(saturday_noon) > 0.9 * 100 * 0.9
    # Same name, same meter; the register is the integral of the power.
    a, b = shape_for("B-Lab-1", "kWh"), LoadShape(**{k: getattr(shape_for("B-Lab-1", "kWh"), k)
                                                      for k in ("profile", "peak", "seed", "tz", "initial")})
    assert a.energy(tuesday_10) == b.energy(tuesday_10)
    start = tuesday_03
    integral = sum((a.power(start + dt.timedelta(seconds=s)) + a.power(start + dt.timedelta(seconds=s + 30))) / 2 * 30 / 3600
                   for s in range(0, 6 * 3600, 30))
    assert a.energy(start + dt.timedelta(hours=6)) - a.energy(start) == pytest.approx(integral, rel=1e-6)


def test_registers_advance_at_run_time():
    port = free_port()
    points = (
        PointConfig(1, "Hall kWh", "energy", ModbusAddress(register=0, type="float64"), PointScaling(1), "kWh"),
        PointConfig(2, "Hall kW", "analog", ModbusAddress(function=4, register=0, type="float32",
                                                           byte_order="little", word_order="little"), PointScaling(2), "kW"),
        PointConfig(3, "Hall counter kWh", "energy", ModbusAddress(register=10, type="uint32"),
                    PointScaling(3, ratio=0.001), "kWh"),
    )
    source = SourceConfig(1, "sim", "modbus-tcp", ModbusConnection(host="127.0.0.1", port=port), 1.0, points)

    async def main():
        server = await ModbusDeviceServer("127.0.0.1", port, modbus_points(source), refresh_s=0.05).start()
        writer = ListWriter(source.points)
        poller = ModbusPoller(source, writer)
        try:
            await poller._connect()
            await poller.poll_once()
            await asyncio.sleep(1.2)
            await poller.poll_once()
        finally:
            poller.close()
            await server.stop()
        return writer.rows

    rows = asyncio.run(main())
    first = {p: v for p, _, v, _ in rows[:3]}
    second = {p: v for p, _, v, _ in rows[3:]}
    assert second[1] > first[1] and second[3] > first[3] and second[2] != first[2]
    shapes = source_shapes(source, "UTC")
    for p, ts, v, _ in rows:
        if p == 1:   # what was read is what the load shape says (within one refresh)
            shape = shapes["Hall"]
            assert v == pytest.approx(shape.energy(ts), abs=shape.power(ts) * 0.5 / 3600)
        if p == 3:   # the register holds Wh as an integer: ratio 0.001 gives kWh back
            shape = shapes["Hall counter"]
            assert v == pytest.approx(shape.energy(ts), abs=0.001 + shape.power(ts) * 0.5 / 3600)


def test_demo_site_devices_and_backfill(db_url, conn):
    from app.demo import load_demo

    load_demo(db_url)
    sources = load_sources(conn)
    modbus = [s for s in sources if s.protocol == "modbus-tcp"]
    assert modbus and all(s.connection.host == "127.0.0.1" for s in modbus)
    plc = modbus[0]
    port = free_port()
    plc = dataclasses.replace(plc, connection=plc.connection.model_copy(update={"port": port}))

    async def main():
        server = await ModbusDeviceServer("127.0.0.1", port, modbus_points(plc, "Europe/Stockholm")).start()
        writer = ListWriter(plc.points)
        poller = ModbusPoller(plc, writer)
        try:
            await poller._connect()
            await poller.poll_once()
        finally:
            poller.close()
            await server.stop()
        return writer.rows, server.requests

    rows, requests = asyncio.run(main())
    assert len(rows) == len(plc.points) and sum(requests.values()) == 2   # kWh block + kW block
    shapes = source_shapes(plc, "Europe/Stockholm")
    by_id = {p.id: p for p in plc.points}
    for pid, ts, value, _ in rows:
        p = by_id[pid]
        expected = reading_at(p, shapes[meter_stem(p.name)], ts.timestamp())
        tolerance = 0.11 if p.object_type == "energy" else 0.01 * max(1.0, abs(expected))
        assert value == pytest.approx(expected, abs=tolerance), p.name
    main_kw = next(v for pid, _, v, _ in rows if by_id[pid].name.endswith("Main kW"))
    subs_kw = sum(v for pid, _, v, _ in rows if by_id[pid].name.endswith(" kW") and "Main" not in by_id[pid].name)
    assert main_kw > subs_kw   # a main meter sees its sub-meters and some unmetered load

    end = dt.datetime(2026, 11, 20, tzinfo=UTC)
    history = list(backfill_readings(sources, end - dt.timedelta(hours=2), end, dt.timedelta(minutes=15)))
    every_point = [p for s in sources for p in s.points]   # HTTP senders' history included
    assert {s.protocol for s in sources} == {"modbus-tcp", "mqtt", "http"}
    assert len(history) == 8 * len(every_point)
    energy_ids = {p.id for p in every_point if p.object_type == "energy"}
    series = {}
    for pid, ts, value, quality in history:
        series.setdefault(pid, []).append(value)
    assert all(series[p] == sorted(series[p]) and series[p][-1] > series[p][0] for p in energy_ids)
    assert history == list(backfill_readings(sources, end - dt.timedelta(hours=2), end, dt.timedelta(minutes=15)))

    # The backfill command's function writes the same history, once.
    step = dt.timedelta(minutes=15)
    first = backfill_history(db_url, days=2 / 24, step=step, end=end + dt.timedelta(minutes=7))
    assert first == len(history)
    assert backfill_history(db_url, days=2 / 24, step=step, end=end) == 0
    stored = conn.execute("SELECT point_id, ts, value, quality FROM raw.point_value ORDER BY ts, point_id").fetchall()
    assert sorted(stored, key=lambda r: (r[1], r[0])) == sorted(history, key=lambda r: (r[1], r[0]))
