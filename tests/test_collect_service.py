"""The collector service: runs configured sources, follows configuration edits, counts,
and flushes everything on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request


from app import PROJECT_ROOT
from app.protocols import ModbusAddress
from collectors.service import CollectorService
from collectors.simulator import ModbusDeviceServer, SimPoint


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def add_source(conn, port: int, interval: float = 0.2) -> int:
    return conn.execute(
        "INSERT INTO config.data_source (name, protocol, connection, poll_interval_s) "
        "VALUES ('plc', 'modbus-tcp', %s, %s) RETURNING id",
        (json.dumps({"host": "127.0.0.1", "port": port, "timeout_s": 1}), interval),
    ).fetchone()[0]


def add_point(conn, source_id: int, name: str, register: int, ratio: float = 1.0) -> int:
    return conn.execute(
        "INSERT INTO config.point (data_source_id, name, object_type, address, ratio) "
        "VALUES (%s, %s, 'analog', %s, %s) RETURNING id",
        (source_id, name, json.dumps({"register": register}), ratio),
    ).fetchone()[0]


def values_of(conn, point_id: int) -> set[float]:
    return {r[0] for r in conn.execute("SELECT DISTINCT value FROM raw.point_value WHERE point_id = %s", (point_id,))}


async def until(predicate, timeout=30):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.1)


async def http_get(port: int, path: str) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    return data.split(b"\r\n\r\n", 1)[1].decode()


def test_service_follows_configuration_changes(db_url, conn, tmp_path):
    device_port, metrics_port = free_port(), free_port()
    sims = [SimPoint(ModbusAddress(register=0), 10), SimPoint(ModbusAddress(register=1), 20)]
    sid = add_source(conn, device_port)
    p1 = add_point(conn, sid, "p1", 0)

    async def main():
        server = await ModbusDeviceServer("127.0.0.1", device_port, sims).start()
        service = CollectorService(db_url, spool_dir=tmp_path, max_age_s=0.1, config_poll_s=0.2,
                                   status_save_s=0.2, metrics_port=metrics_port)
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        try:
            await until(lambda: values_of(conn, p1) == {10.0})
            # A new point with a ratio, picked up without a restart.
            p2 = add_point(conn, sid, "p2", 1, ratio=2.0)
            await until(lambda: values_of(conn, p2) == {40.0})
            assert service.config_changes == 1
            # The ratio of an existing point changes: new readings follow it.
            conn.execute("UPDATE config.point SET ratio = 0.5 WHERE id = %s", (p1,))
            await until(lambda: 5.0 in values_of(conn, p1))
            stats = json.loads(await http_get(metrics_port, "/"))
            assert stats["sources"]["plc"]["received"] > 0 and stats["sources"]["plc"]["written"] > 0
            prom = await http_get(metrics_port, "/metrics")
            assert 'wattline_source_written{source="plc",protocol="modbus-tcp"}' in prom
            # Disabled: the source stops.
            conn.execute("UPDATE config.data_source SET enabled = false WHERE id = %s", (sid,))
            await until(lambda: not service.running)
        finally:
            stop.set()
            await task
            await server.stop()
        return service

    service = asyncio.run(main())
    assert service.writer.pending == 0
    status = conn.execute(
        "SELECT consecutive_failures, last_success IS NOT NULL FROM ops.collector_status "
        "WHERE data_source_id = %s AND point_id = 0", (sid,)).fetchone()
    assert status == (0, True)


class DeviceThread:
    """A Modbus device served from its own thread, for tests that run the CLI."""

    def __init__(self, port: int, points):
        self.port, self.points = port, points
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        self.loop = asyncio.new_event_loop()
        self.stop_event = asyncio.Event()

        async def main():
            server = await ModbusDeviceServer("127.0.0.1", self.port, self.points).start()
            self.ready.set()
            await self.stop_event.wait()
            await server.stop()

        self.loop.run_until_complete(main())

    def __enter__(self):
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(10)


def test_sigterm_flushes_every_accepted_reading(db_url, conn, tmp_path):
    device_port, metrics_port = free_port(), free_port()
    sid = add_source(conn, device_port, interval=0.1)
    p1 = add_point(conn, sid, "p1", 0)
    env = dict(os.environ, WATTLINE_DATA_DIR=str(tmp_path), WATTLINE_DATABASE_URL=db_url)
    with DeviceThread(device_port, [SimPoint(ModbusAddress(register=0), 7)]):
        proc = subprocess.Popen(
            [str(PROJECT_ROOT / ".venv" / "bin" / "wattline"), "collect", "--metrics-port", str(metrics_port),
             "--max-age", "3600", "--batch-size", "1000000"],   # nothing is written before the signal
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        try:
            received = 0
            deadline = time.monotonic() + 60
            while received < 5:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "no readings"
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/", timeout=2) as r:
                        received = json.load(r)["writer"]["received"]
                except OSError:
                    pass
                time.sleep(0.2)
            assert conn.execute("SELECT count(*) FROM raw.point_value").fetchone()[0] == 0
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, out
    assert "event=collect_stop" in out
    stored = conn.execute("SELECT count(*) FROM raw.point_value WHERE point_id = %s", (p1,)).fetchone()[0]
    assert stored >= received   # everything accepted before the signal, and whatever came after
    written = [line for line in out.splitlines() if "event=writer_stats" in line][-1]
    assert f"written={stored}" in written


def test_an_unreachable_broker_does_not_hold_up_modbus(db_url, conn, tmp_path):
    device_port, broker_port = free_port(), free_port()   # nothing listens on the broker port
    sid = add_source(conn, device_port)
    p1 = add_point(conn, sid, "p1", 0)
    mqtt_id = conn.execute(
        "INSERT INTO config.data_source (name, protocol, connection) VALUES ('gw', 'mqtt', %s) RETURNING id",
        (json.dumps({"host": "127.0.0.1", "port": broker_port, "topics": ["site/#"]}),),
    ).fetchone()[0]
    conn.execute("INSERT INTO config.point (data_source_id, name, object_type, address) "
                 "VALUES (%s, 'flow', 'analog', '{\"key\": \"flow\"}')", (mqtt_id,))

    async def main():
        server = await ModbusDeviceServer("127.0.0.1", device_port, [SimPoint(ModbusAddress(register=0), 3)]).start()
        service = CollectorService(db_url, spool_dir=tmp_path, max_age_s=0.1, config_poll_s=0.2)
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        try:
            await until(lambda: values_of(conn, p1) == {3.0})
            assert set(service.running) == {sid, mqtt_id}
            assert service.stats()["sources"]["gw"]["protocol"] == "mqtt"
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
            await server.stop()

    asyncio.run(main())
