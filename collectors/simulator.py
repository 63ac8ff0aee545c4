"""Simulated field devices on loopback, so a demo (and the tests) have live data without
hardware.

Each Modbus data source of the configuration gets a pymodbus TCP server on its own
host/port whose registers follow collectors.loadshapes: energy points hold cumulative
counters, analog points instantaneous rates, encoded with each point's type, byte and
word order and the inverse of its ratio/offset, so the collector reads back the
engineering values the load shape defines. Registers are refreshed from the shapes when
a request arrives (pymodbus's SimDevice `action` hook, the non-deprecated datastore of
pymodbus 3.16), so they change at run time. MQTT data sources get a publisher sending
`{"ts": ..., "values": {...}}` when a broker is reachable; the broker is optional.
`backfill_readings` yields the same values for past instants, for a history backfill.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterable, Iterator

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from app.protocols import REGISTER_COUNT, ModbusAddress
from collectors.config import PointConfig, SourceConfig
from collectors.loadshapes import CompositeShape, LoadShape, shape_for
from collectors.modbus import encode

log = logging.getLogger("wattline.simulator")

ValueFn = Callable[[float], float]   # epoch seconds -> device value
_BITS = {"int16": 16, "uint16": 16, "int32": 32, "uint32": 32, "int64": 64, "uint64": 64}


# ------------------------------------------------------------- register server
@dataclass
class SimPoint:
    """One simulated value: where it lives and what it holds (a constant or f(epoch s))."""

    address: ModbusAddress
    value: float | ValueFn

    def current(self, now: float) -> float:
        return self.value(now) if callable(self.value) else self.value


def fit(value: float, type_: str) -> float:
    """A device value as the register type can hold it: integers rounded and wrapped
    (a counter rolls over like the real one), floats as they are."""
    bits = _BITS.get(type_)
    if bits is None:
        return value
    n = int(round(value)) % (1 << bits)
    if type_.startswith("int") and n >= 1 << (bits - 1):
        n -= 1 << bits
    return n


def registers_of(point: SimPoint, now: float) -> list[int] | list[bool]:
    a = point.address
    if a.function in (1, 2):
        return [bool(point.current(now))]
    return encode(fit(point.current(now), a.type), a.type, a.byte_order, a.word_order)


class ModbusDeviceServer:
    """A pymodbus TCP server for one data source: any units, all four tables.

    `invalid` lists (unit, function, register) addresses that answer with an exception
    (for tests of bad points); `requests` counts requests per (unit, function).
    """

    def __init__(self, host: str, port: int, points: Iterable[SimPoint],
                 invalid: Iterable[tuple[int, int, int]] = (), refresh_s: float = 0.2) -> None:
        self.host, self.port = host, port
        self.points = list(points)
        self.invalid = set(invalid)
        self.refresh_s = refresh_s
        self.requests: Counter = Counter()
        self._server: ModbusTcpServer | None = None
        self._refreshed: dict[tuple[int, int], float] = {}
        self._by_table: dict[tuple[int, int], list[SimPoint]] = {}
        for p in self.points:
            self._by_table.setdefault((p.address.unit, p.address.function), []).append(p)

    # ............................................................... building
    def _device(self, unit: int) -> SimDevice:
        now = time.time()
        tables: list[list[SimData]] = []
        for function in (1, 2, 3, 4):
            pts = self._by_table.get((unit, function), [])
            tables.append(self._bits(pts, now) if function in (1, 2) else self._registers(unit, function, pts, now))

        async def action(func_code, start_address, address, count, registers, set_values):
            self._refresh(unit, func_code, start_address, registers)
            return None

        return SimDevice(id=unit, simdata=tuple(tables), action=action)

    @staticmethod
    def _bits(pts: list[SimPoint], now: float) -> list[SimData]:
        if not pts:
            return [SimData(address=65520, values=[False], datatype=DataType.BITS)]
        lo = min(p.address.register for p in pts)
        hi = max(p.address.register for p in pts)
        image = [False] * (hi - lo + 1)
        for p in pts:
            image[p.address.register - lo] = bool(p.current(now))
        return [SimData(address=lo, values=image, datatype=DataType.BITS)]

    def _registers(self, unit: int, function: int, pts: list[SimPoint], now: float) -> list[SimData]:
        if not pts:
            return [SimData(address=65535, datatype=DataType.INVALID)]
        lo = min(p.address.register for p in pts)
        hi = max(p.address.register + REGISTER_COUNT[p.address.type] - 1 for p in pts)
        image = [0] * (hi - lo + 1)
        for p in pts:
            regs = registers_of(p, now)
            image[p.address.register - lo:p.address.register - lo + len(regs)] = regs
        bad = sorted(r for u, f, r in self.invalid if u == unit and f == function and lo <= r <= hi)
        out, start = [], lo
        for r in bad + [hi + 1]:
            if r > start:
                out.append(SimData(address=start, values=image[start - lo:r - lo], datatype=DataType.REGISTERS))
            if r <= hi:
                out.append(SimData(address=r, datatype=DataType.INVALID))
            start = r + 1
        return out

    def _refresh(self, unit: int, function: int, start: int, registers: list[int]) -> None:
        """Rewrite a table from the value functions (at most every `refresh_s`)."""
        key = (unit, function)
        now = time.time()
        if now - self._refreshed.get(key, 0.0) < self.refresh_s:
            return
        self._refreshed[key] = now
        for p in self._by_table.get(key, ()):
            if not callable(p.value):
                continue
            a = p.address
            if function in (1, 2):
                index, bit = divmod(a.register, 16)
                index -= start
                if 0 <= index < len(registers):
                    mask = 1 << bit
                    registers[index] = (registers[index] | mask) if p.current(now) else (registers[index] & ~mask)
            else:
                regs = registers_of(p, now)
                offset = a.register - start
                registers[offset:offset + len(regs)] = regs

    def _trace(self, sending: bool, pdu):
        if not sending:
            self.requests[(pdu.dev_id, pdu.function_code)] += 1
        return pdu

    # .............................................................. lifecycle
    async def start(self) -> "ModbusDeviceServer":
        units = sorted({p.address.unit for p in self.points} | {u for u, _, _ in self.invalid}) or [1]
        self._server = ModbusTcpServer([self._device(u) for u in units], address=(self.host, self.port),
                                       trace_pdu=self._trace)
        await self._server.serve_forever(background=True)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None


# ------------------------------------------------------- configured devices
_SUFFIX = re.compile(r"[\s_.-]*(kwh|kw|wh|w|m3|m³|l|energy|power|rate|flow)$", re.IGNORECASE)


def meter_stem(point_name: str) -> str:
    """`A-Main kWh` and `A-Main kW` both name meter `A-Main`."""
    return _SUFFIX.sub("", point_name.strip()) or point_name


def source_shapes(source: SourceConfig, tz: str) -> dict[str, LoadShape | CompositeShape]:
    """One shape per meter of a data source; a meter named *Main sums the others."""
    units = {}
    for p in source.points:
        units.setdefault(meter_stem(p.name), p.unit)
    shapes: dict[str, LoadShape | CompositeShape] = {s: shape_for(s, u, tz) for s, u in units.items()}
    subs = [shapes[s] for s in shapes if not s.lower().endswith("main")]
    for stem in shapes:
        if stem.lower().endswith("main") and subs:
            shapes[stem] = CompositeShape(subs, _unmetered(stem, units[stem], tz))
    return shapes


@lru_cache(maxsize=1024)
def _unmetered(stem: str, unit: str | None, tz: str) -> LoadShape:
    """The part of a main meter's load no sub-meter sees (cached: its history is summed once)."""
    own = shape_for(stem, unit, tz)
    return LoadShape(own.profile, own.peak * 0.15, own.seed, tz, own.initial)


def engineering_fn(point: PointConfig, shape) -> Callable[[float], float]:
    """What the point reads in engineering units at an instant."""
    if point.object_type == "energy":
        return shape.energy
    if point.object_type == "digital":
        return lambda t: 1.0 if shape.power(t) > 0.5 * getattr(shape, "peak", 1.0) else 0.0
    name = point.name.lower()
    if "volt" in name:
        return lambda t: 230.0 + 2.0 * ((int(t) // 60) % 5 - 2) / 2
    if "pf" in name or "power factor" in name:
        return lambda t: 0.95
    return shape.power


def device_fn(point: PointConfig, shape) -> ValueFn:
    """The register value: the inverse of the point's ratio and offset, fitted to its type."""
    eng = engineering_fn(point, shape)
    ratio = point.scaling.ratio or 1.0
    offset = point.scaling.offset
    return lambda t: (eng(t) - offset) / ratio


def modbus_points(source: SourceConfig, tz: str = "UTC") -> list[SimPoint]:
    shapes = source_shapes(source, tz)
    return [SimPoint(p.address, device_fn(p, shapes[meter_stem(p.name)])) for p in source.points]


def reading_at(point: PointConfig, shape, t: float) -> float:
    """The engineering value the collector would write for `point` at epoch `t`,
    register quantisation included."""
    raw = device_fn(point, shape)(t)
    if isinstance(point.address, ModbusAddress):
        raw = fit(raw, point.address.type) if point.address.function in (3, 4) else float(bool(raw))
        if point.address.type == "float32":
            import struct

            raw = struct.unpack(">f", struct.pack(">f", raw))[0]
    return point.scaling.apply(raw)[0]


def backfill_readings(sources: Iterable[SourceConfig], start: dt.datetime, end: dt.datetime,
                      step: dt.timedelta = dt.timedelta(minutes=5), tz: str = "UTC",
                      ) -> Iterator[tuple[int, dt.datetime, float, int]]:
    """Raw readings (point_id, ts, value, quality) the simulated devices would have
    produced every `step` in [start, end): the history a demo backfill writes."""
    plans = []
    for source in sources:  # HTTP sources too: their senders would have pushed the same history
        shapes = source_shapes(source, tz)
        plans += [(p, shapes[meter_stem(p.name)]) for p in source.points]
    t = start
    while t < end:
        s = t.timestamp()
        for p, shape in plans:
            yield p.id, t, reading_at(p, shape, s), 0
        t += step


# ------------------------------------------------------------------ MQTT side
def mqtt_topic(filter_: str) -> str:
    """A concrete topic matching a subscription filter."""
    return "/".join("sim" if level in ("+", "#") else level for level in filter_.split("/"))


class MqttPublisher:
    """Publishes a source's point values every poll interval; the broker is optional."""

    def __init__(self, source: SourceConfig, tz: str = "UTC") -> None:
        self.source = source
        self.shapes = source_shapes(source, tz)
        self.published = 0

    def payloads(self, now: float) -> list[tuple[str, str]]:
        conn = self.source.connection
        values, own = {}, []
        for p in self.source.points:
            v = device_fn(p, self.shapes[meter_stem(p.name)])(now)
            if p.address.topic:
                own.append((p.address.topic, f"{v:.6f}"))
            else:
                values[p.address.key or p.name] = round(v, 6)
        ts = dt.datetime.fromtimestamp(now, dt.timezone.utc).isoformat()
        out = [(mqtt_topic(conn.topics[0]), json.dumps({"ts": ts, "values": values}))] if values else []
        return out + own

    async def run(self, stop: asyncio.Event) -> None:
        import paho.mqtt.client as mqtt

        conn = self.source.connection
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"wattline-sim-{self.source.id}")
        if conn.username:
            client.username_pw_set(conn.username, conn.password)
        if conn.tls:
            client.tls_set(ca_certs=conn.tls.ca_file, certfile=conn.tls.cert_file, keyfile=conn.tls.key_file)
            client.tls_insecure_set(conn.tls.insecure)
        client.reconnect_delay_set(1, 30)
        client.connect_async(conn.host, conn.port, keepalive=conn.keepalive_s)
        client.loop_start()
        interval = float(self.source.poll_interval_s)
        try:
            while not stop.is_set():
                if client.is_connected():
                    for topic, payload in self.payloads(time.time()):
                        client.publish(topic, payload, qos=1)
                        self.published += 1
                try:
                    await asyncio.wait_for(stop.wait(), timeout=interval - time.time() % interval)
                except asyncio.TimeoutError:
                    pass
        finally:
            client.disconnect()
            client.loop_stop()


async def run_simulator(sources: list[SourceConfig], stop: asyncio.Event, tz: str = "UTC",
                        mqtt: bool = True) -> None:
    """Serve every Modbus source and publish every MQTT source until `stop` is set."""
    servers, tasks = [], []
    for source in sources:
        if source.protocol == "modbus-tcp":
            c = source.connection
            server = ModbusDeviceServer(c.host, c.port, modbus_points(source, tz))
            try:
                await server.start()
            except Exception as exc:
                log.error("event=simulator_listen_failed source=%s port=%d error=%r", source.name, c.port, str(exc))
                continue
            servers.append(server)
            log.info("event=simulator_modbus source=%s host=%s port=%d points=%d",
                     source.name, c.host, c.port, len(source.points))
        elif source.protocol == "mqtt" and mqtt:
            tasks.append(asyncio.create_task(MqttPublisher(source, tz).run(stop)))
            log.info("event=simulator_mqtt source=%s broker=%s:%d", source.name,
                     source.connection.host, source.connection.port)
    try:
        await stop.wait()
    finally:
        for server in servers:
            await server.stop()
        for task in tasks:
            await asyncio.gather(task, return_exceptions=True)


def backfill_history(url: str, days: float, step: dt.timedelta = dt.timedelta(minutes=5), tz: str = "UTC",
                     end: dt.datetime | None = None, batch: int = 50_000) -> int:
    """Write `days` of simulated history up to `end` (default: now, on a step boundary)
    for every enabled Modbus, MQTT and HTTP point. Idempotent: the same instants every run,
    and rows already present are dropped. Returns the rows newly written."""
    import psycopg

    from app.readings import write_readings
    from collectors.config import load_sources

    step_s = step.total_seconds()
    end = end or dt.datetime.now(dt.timezone.utc)
    end = dt.datetime.fromtimestamp(end.timestamp() // step_s * step_s, dt.timezone.utc)
    from collectors.loadshapes import INSTALLED

    start = max(end - dt.timedelta(days=days), INSTALLED)
    written = 0
    with psycopg.connect(url) as conn:
        sources = load_sources(conn)
        rows: list = []
        for reading in backfill_readings(sources, start, end, step, tz):
            rows.append(reading)
            if len(rows) >= batch:
                with conn.transaction():
                    written += write_readings(conn, rows).accepted
                rows = []
        if rows:
            with conn.transaction():
                written += write_readings(conn, rows).accepted
    log.info("event=backfill_done start=%s end=%s written=%d", start.isoformat(), end.isoformat(), written)
    return written
