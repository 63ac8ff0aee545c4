"""Modbus TCP collector against a real pymodbus server on loopback."""

from __future__ import annotations

import asyncio
import socket
import struct
import time

import psycopg

from app.protocols import ModbusAddress, ModbusConnection
from app.readings import PointScaling
from collectors.config import PointConfig, SourceConfig
from collectors.modbus import ModbusPoller, decode, encode, plan_blocks
from collectors.simulator import ModbusDeviceServer, SimPoint
from collectors.status import StatusRecorder
from collectors.writer import BatchWriter

VALUES = {
    "int16": -12345, "uint16": 54321, "int32": -123456789, "uint32": 3_000_000_000,
    "int64": -1_234_567_890_123, "uint64": 12_345_678_901_234_567, "float32": 3.5, "float64": -1234.5678,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def point(pid: int, **address) -> PointConfig:
    return PointConfig(pid, f"p{pid}", "analog", ModbusAddress(**address), PointScaling(pid))


def source(port: int, points, interval=0.3, **conn) -> SourceConfig:
    return SourceConfig(1, "plc", "modbus-tcp", ModbusConnection(host="127.0.0.1", port=port, timeout_s=1, **conn),
                        interval, tuple(points))


def raw_rows(url):
    with psycopg.connect(url) as c:
        return dict(c.execute("SELECT point_id, value FROM raw.point_value ORDER BY ts").fetchall())


def test_codec_follows_byte_and_word_order():
    # 0x11223344 as ABCD / CDAB / BADC / DCBA, written out by hand.
    assert encode(0x11223344, "uint32") == [0x1122, 0x3344]
    assert encode(0x11223344, "uint32", word_order="little") == [0x3344, 0x1122]
    assert encode(0x11223344, "uint32", byte_order="little") == [0x2211, 0x4433]
    assert encode(0x11223344, "uint32", "little", "little") == [0x4433, 0x2211]
    assert decode([0x4433, 0x2211], "uint32", "little", "little") == 0x11223344
    assert decode([0xFFFF], "int16") == -1
    assert decode([0x3F80, 0x0000], "float32") == 1.0
    words = list(struct.unpack(">4H", struct.pack(">d", 2.5)))
    assert decode(words[::-1], "float64", word_order="little") == 2.5


def test_every_type_and_order_reads_back(db_url, tmp_path):
    points, expected, register, pid = [], {}, 0, 0
    for function in (3, 4):
        for type_, value in VALUES.items():
            for byte_order in ("big", "little"):
                for word_order in ("big", "little"):
                    pid += 1
                    points.append(point(pid, unit=1 + pid % 2, function=function, register=register,
                                        type=type_, byte_order=byte_order, word_order=word_order))
                    expected[pid] = float(value)
                    register += 4
    for function in (1, 2):
        for bit, value in enumerate([True, False, True]):
            pid += 1
            points.append(point(pid, unit=1, function=function, register=bit * 3, type="bool"))
            expected[pid] = 1.0 if value else 0.0
    values = {p.id: (VALUES[p.address.type] if p.address.type != "bool" else expected[p.id]) for p in points}
    port = free_port()

    async def main():
        server = await ModbusDeviceServer("127.0.0.1", port, [SimPoint(p.address, values[p.id]) for p in points]).start()
        w = BatchWriter(db_url, points={p.id: p.scaling for p in points}, spool_dir=tmp_path)
        poller = ModbusPoller(source(port, points), w)
        try:
            await poller._connect()
            assert await poller.poll_once() == len(points)
        finally:
            poller.close()
            await server.stop()
            w.close()
        return server

    server = asyncio.run(main())
    assert raw_rows(db_url) == expected
    # 64 register points on two units and two functions, 3 coils, 3 inputs: 6 requests.
    assert sum(server.requests.values()) == 6


def test_coalescing_counted_at_the_server(db_url, tmp_path):
    points = [point(i + 1, register=i) for i in range(10)] + [point(11, register=20, type="float32")]
    points += [point(100 + i, register=200 + i) for i in range(130)]    # more than 125 registers
    port = free_port()

    async def poll(max_gap: int) -> int:
        server = await ModbusDeviceServer("127.0.0.1", port, [SimPoint(p.address, 7) for p in points]).start()
        w = BatchWriter(db_url, points={p.id: p.scaling for p in points}, spool_dir=tmp_path)
        poller = ModbusPoller(source(port, points, max_gap=max_gap), w)
        try:
            await poller._connect()
            await poller.poll_once()
        finally:
            poller.close()
            await server.stop()
            w.close()
        return server.requests[(1, 3)]

    assert asyncio.run(poll(max_gap=8)) == 1 + 1 + 2     # 0-9, 20-21, 200-324, 325-329
    assert asyncio.run(poll(max_gap=10)) == 1 + 2        # 0-21 in one request
    blocks = plan_blocks(points, max_gap=10, max_registers=125)
    assert [(b.start, b.count) for b in blocks] == [(0, 22), (200, 125), (325, 5)]


def test_one_bad_point_does_not_stop_the_others(db_url, tmp_path):
    points = [point(i + 1, register=i) for i in range(10)]
    port = free_port()

    async def main():
        server = await ModbusDeviceServer("127.0.0.1", port, [SimPoint(p.address, p.id * 10) for p in points],
                                          invalid=[(1, 3, 5)]).start()
        w = BatchWriter(db_url, points={p.id: p.scaling for p in points}, spool_dir=tmp_path)
        status = StatusRecorder(db_url)
        poller = ModbusPoller(source(port, points), w, status)
        try:
            await poller._connect()
            assert await poller.poll_once() == 9
            first = server.requests[(1, 3)]
            assert await poller.poll_once() == 9
            second = server.requests[(1, 3)] - first
        finally:
            poller.close()
            await server.stop()
            w.close()
        status.save()
        return first, second

    first, second = asyncio.run(main())
    assert first == 1 + 10                   # the refused block, then each point once
    assert second == 3                       # registers 0-4, the bad 5 alone, 6-9
    assert raw_rows(db_url) == {p.id: p.id * 10.0 for p in points if p.id != 6}
    with psycopg.connect(db_url) as c:
        status = dict(c.execute(
            "SELECT point_id, consecutive_failures FROM ops.collector_status ORDER BY point_id").fetchall())
        err = c.execute("SELECT last_error FROM ops.collector_status WHERE point_id = 6").fetchone()[0]
    assert status[6] == 2 and all(status[p] == 0 for p in status if p != 6)
    assert status[0] == 0 and "exception code" in err


def test_reconnects_after_the_server_restarts(db_url, tmp_path):
    points = [point(1, register=0)]
    port = free_port()

    async def until(predicate, timeout=20):
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "condition not reached"
            await asyncio.sleep(0.05)

    async def main():
        sims = [SimPoint(points[0].address, 42)]
        server = await ModbusDeviceServer("127.0.0.1", port, sims).start()
        w = BatchWriter(db_url, points={1: points[0].scaling}, spool_dir=tmp_path)
        status = StatusRecorder(db_url)
        poller = ModbusPoller(source(port, points, interval=0.2), w, status, backoff_initial_s=0.1, backoff_max_s=0.4)
        stop = asyncio.Event()
        task = asyncio.create_task(poller.run(stop))
        try:
            await until(lambda: poller.counters["readings"] >= 2)
            await server.stop()
            await until(lambda: (status.get(1) and status.get(1).consecutive_failures >= 2))
            server = await ModbusDeviceServer("127.0.0.1", port, sims).start()
            before = poller.counters["readings"]
            await until(lambda: poller.counters["readings"] > before + 1)
            assert status.get(1).consecutive_failures == 0
            assert poller.counters["connects"] >= 2
        finally:
            stop.set()
            await task
            await server.stop()
            w.close()

    asyncio.run(main())
