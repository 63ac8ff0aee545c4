"""Modbus TCP polling: one asyncio connection per data source, as few requests as the
register map allows.

MyEMS sends one request per point; a meter with 400 registers then costs 400 round
trips. Here points of the same unit and function are coalesced into blocks (at most 125
registers or 2000 bits, skipping at most `max_gap` unused addresses), each block one
request. When a device refuses a block (one bad address in it), the block is read point
by point once, the bad points are reported and split off, and the rest stay coalesced,
so one bad register never stops the others. A lost or silent device ends the cycle,
is reported, and is reconnected with exponential backoff.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from app.protocols import ModbusAddress, ModbusConnection
from collectors.config import PointConfig, SourceConfig
from collectors.status import StatusRecorder

log = logging.getLogger("wattline.modbus")

MAX_BITS = 2000  # Modbus limit for one coil / discrete-input read
_FORMAT = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "int64": "q",
           "uint64": "Q", "float32": "f", "float64": "d"}


# ----------------------------------------------------------------- value codec
def _swap_bytes(data: bytes) -> bytes:
    out = bytearray(data)
    out[0::2], out[1::2] = data[1::2], data[0::2]
    return bytes(out)


def decode(registers: list[int], type_: str, byte_order: str = "big", word_order: str = "big") -> float:
    """The value a point's registers hold. word_order: which 16-bit word comes first
    (big: most significant); byte_order: the byte order inside each word."""
    words = list(registers)
    if word_order == "little":
        words.reverse()
    data = struct.pack(f">{len(words)}H", *words)
    if byte_order == "little":
        data = _swap_bytes(data)
    return struct.unpack(">" + _FORMAT[type_], data)[0]


def encode(value: float, type_: str, byte_order: str = "big", word_order: str = "big") -> list[int]:
    """Registers that `decode` turns back into `value` (the simulator's side)."""
    fmt = _FORMAT[type_]
    if fmt not in "fd":
        value = int(value)
    data = struct.pack(">" + fmt, value)
    if byte_order == "little":
        data = _swap_bytes(data)
    words = list(struct.unpack(f">{len(data) // 2}H", data))
    if word_order == "little":
        words.reverse()
    return words


# ------------------------------------------------------------------- planning
@dataclass
class Block:
    """One read request: `count` registers (or bits) from `start` on one unit."""

    unit: int
    function: int
    start: int
    count: int
    points: list[PointConfig] = field(default_factory=list)

    @property
    def end(self) -> int:
        return self.start + self.count


def plan_blocks(points: Iterable[PointConfig], max_gap: int = 8, max_registers: int = 125,
                max_bits: int = MAX_BITS) -> list[Block]:
    """Coalesce points of the same unit and function into as few reads as the limits allow."""
    ordered = sorted(points, key=lambda p: (p.address.unit, p.address.function, p.address.register, p.id))
    blocks: list[Block] = []
    for p in ordered:
        a: ModbusAddress = p.address
        limit = max_bits if a.function in (1, 2) else max_registers
        end = a.register + a.count
        cur = blocks[-1] if blocks else None
        if (
            cur is not None and cur.unit == a.unit and cur.function == a.function
            and a.register - cur.end <= max_gap and max(cur.end, end) - cur.start <= limit
        ):
            cur.count = max(cur.end, end) - cur.start
            cur.points.append(p)
        else:
            blocks.append(Block(a.unit, a.function, a.register, a.count, [p]))
    return blocks


def point_value(block: Block, values: list, p: PointConfig) -> float:
    a: ModbusAddress = p.address
    offset = a.register - block.start
    if a.function in (1, 2):
        return 1.0 if values[offset] else 0.0
    return float(decode(values[offset:offset + a.count], a.type, a.byte_order, a.word_order))


# -------------------------------------------------------------------- polling
class DeviceError(Exception):
    """The device answered a request with a Modbus exception (bad address, busy…)."""


class ModbusPoller:
    """Polls one Modbus TCP data source until `stop` is set; readings go to `writer`."""

    def __init__(self, source: SourceConfig, writer, status: StatusRecorder | None = None, *,
                 backoff_initial_s: float = 1.0, backoff_max_s: float = 60.0) -> None:
        self.source = source
        self.conn: ModbusConnection = source.connection
        self.writer = writer
        self.status = status
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.blocks = plan_blocks(source.points, self.conn.max_gap, self.conn.max_registers)
        self.client: AsyncModbusTcpClient | None = None
        self.counters: Counter = Counter()   # polls, requests, readings, errors, reconnects
        self.last_cycle_s: float | None = None

    # ..................................................................... I/O
    async def _connect(self) -> None:
        self.client = AsyncModbusTcpClient(
            self.conn.host, port=self.conn.port, timeout=self.conn.timeout_s,
            retries=self.conn.retries, reconnect_delay=0, name=f"source-{self.source.id}",
        )
        if not await self.client.connect():
            self.close()
            raise ConnectionError(f"cannot connect to {self.conn.host}:{self.conn.port}")
        self.counters["connects"] += 1

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    async def _read(self, unit: int, function: int, start: int, count: int) -> list:
        c = self.client
        if c is None or not c.connected:
            raise ConnectionError("not connected")
        call = {1: c.read_coils, 2: c.read_discrete_inputs,
                3: c.read_holding_registers, 4: c.read_input_registers}[function]
        self.counters["requests"] += 1
        rr = await call(start, count=count, device_id=unit)
        if rr.isError():
            raise DeviceError(f"unit {unit} function {function} registers {start}..{start + count - 1}: "
                              f"exception code {getattr(rr, 'exception_code', '?')}")
        return rr.bits if function in (1, 2) else rr.registers

    # ..................................................................... poll
    async def poll_once(self) -> int:
        """Read every block once; returns the number of readings handed to the writer.
        Raises ConnectionError/ModbusException when the device is gone or silent."""
        sid = self.source.id
        readings: list[tuple[int, dt.datetime, float, int]] = []
        started = time.monotonic()
        i = 0
        try:
            while i < len(self.blocks):
                block = self.blocks[i]
                try:
                    values = await self._read(block.unit, block.function, block.start, block.count)
                except DeviceError as exc:
                    i += await self._fall_back(i, block, exc, readings)
                    continue
                ts = dt.datetime.now(dt.timezone.utc)
                for p in block.points:
                    readings.append((p.id, ts, point_value(block, values, p), 0))
                    if self.status:
                        self.status.success(sid, p.id, ts)
                i += 1
        finally:
            if readings:
                self._hand_over(readings)
        self.last_cycle_s = time.monotonic() - started
        self.counters["polls"] += 1
        if self.status:
            self.status.success(sid)
        return len(readings)

    async def _fall_back(self, index: int, block: Block, exc: DeviceError, readings: list) -> int:
        """Read a refused block point by point; split bad points off for later cycles.
        Returns how many plan entries now stand where the block stood."""
        sid = self.source.id
        if len(block.points) == 1:
            self._point_failed(block.points[0], str(exc))
            return 1
        good, bad = [], []
        for p in block.points:
            a: ModbusAddress = p.address
            try:
                values = await self._read(a.unit, a.function, a.register, a.count)
            except DeviceError as point_exc:
                bad.append(p)
                self._point_failed(p, str(point_exc))
                continue
            ts = dt.datetime.now(dt.timezone.utc)
            single = Block(a.unit, a.function, a.register, a.count, [p])
            readings.append((p.id, ts, point_value(single, values, p), 0))
            if self.status:
                self.status.success(sid, p.id, ts)
            good.append(p)
        # No gaps in the new blocks, so none of them spans a refused address again.
        replacement = plan_blocks(good, 0, self.conn.max_registers) + [
            Block(p.address.unit, p.address.function, p.address.register, p.address.count, [p]) for p in bad
        ]
        self.blocks[index:index + 1] = replacement
        log.warning("event=modbus_block_split source=%s bad_points=%s error=%r",
                    self.source.name, ",".join(str(p.id) for p in bad), str(exc))
        return len(replacement)

    def _point_failed(self, p: PointConfig, error: str) -> None:
        self.counters["point_errors"] += 1
        if self.status:
            self.status.failure(self.source.id, p.id, error)

    def _hand_over(self, readings: list) -> None:
        try:
            self.writer.add_many(readings)
        except ValueError as exc:  # e.g. a point removed from the configuration meanwhile
            self.counters["rejected"] += len(readings)
            log.error("event=modbus_readings_refused source=%s error=%s", self.source.name, exc)
            return
        self.counters["readings"] += len(readings)

    # ..................................................................... loop
    async def run(self, stop: asyncio.Event) -> None:
        """Poll on wall-clock multiples of the source's interval until `stop` is set."""
        interval = float(self.source.poll_interval_s)
        backoff = self.backoff_initial_s
        sid, name = self.source.id, self.source.name
        log.info("event=modbus_start source=%s host=%s port=%d points=%d requests_per_poll=%d",
                 name, self.conn.host, self.conn.port, len(self.source.points), len(self.blocks))
        try:
            while not stop.is_set():
                try:
                    if self.client is None or not self.client.connected:
                        self.close()
                        await self._connect()
                        log.info("event=modbus_connected source=%s", name)
                    await self.poll_once()
                    backoff = self.backoff_initial_s
                    delay = interval - (time.time() % interval)
                except (ConnectionError, ModbusException, asyncio.TimeoutError, OSError) as exc:
                    self.counters["errors"] += 1
                    error = f"{type(exc).__name__}: {exc}"
                    if self.status:
                        self.status.failure(sid, error=error)
                    log.warning("event=modbus_error source=%s retry_in_s=%.1f error=%r", name, backoff, error)
                    self.close()
                    delay = backoff
                    backoff = min(backoff * 2, self.backoff_max_s)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                except asyncio.TimeoutError:
                    pass
        finally:
            self.close()
            log.info("event=modbus_stop source=%s", name)
