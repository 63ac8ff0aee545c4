"""`wattline collect`: every enabled Modbus and MQTT data source in one asyncio process.

One process keeps one writer (one database connection, one spool) for all sources, and
a configuration edit must not need a restart: the service polls the configuration's
fingerprint every few seconds and restarts only the sources whose settings changed,
after giving the writer the new point scalings. SIGTERM/SIGINT stop the collectors and
close the writer, which writes (or spools) every accepted reading. Counters per source
are logged periodically and, when a port is given, served as JSON (`/`) and Prometheus
text (`/metrics`) on loopback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from collectors.config import SourceConfig, fingerprint, load_sources
from collectors.status import StatusRecorder
from collectors.writer import BatchWriter

log = logging.getLogger("wattline.collect")

PROTOCOLS = ("modbus-tcp", "mqtt")


@dataclass
class _Running:
    source: SourceConfig
    collector: object
    stop: asyncio.Event
    task: asyncio.Task


@dataclass
class CollectorService:
    url: str | None = None
    spool_dir: Path | None = None
    sync: bool = False
    batch_size: int = 5000
    max_age_s: float = 1.0
    config_poll_s: float = 5.0
    status_save_s: float = 5.0
    stats_interval_s: float = 60.0
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    modbus_backoff_max_s: float = 60.0

    writer: BatchWriter | None = field(default=None, init=False)
    dead_letters: object = field(default=None, init=False)
    status: StatusRecorder | None = field(default=None, init=False)
    running: dict[int, _Running] = field(default_factory=dict, init=False)
    config_changes: int = field(default=0, init=False)
    _fingerprint: str | None = field(default=None, init=False)
    _metrics_server: asyncio.AbstractServer | None = field(default=None, init=False)

    # --------------------------------------------------------------- lifecycle
    async def run(self, stop: asyncio.Event) -> None:
        if self.url is None:
            from app.db import database_url

            self.url = database_url()
        sources = await self._wait_for_configuration(stop)
        if sources is None:
            return
        self.writer = await asyncio.to_thread(
            BatchWriter, self.url, points=self._scalings(sources), source_of=self._source_of(sources),
            batch_size=self.batch_size, max_age_s=self.max_age_s, spool_dir=self.spool_dir, sync=self.sync,
        )
        self.status = StatusRecorder(self.url)
        self.dead_letters = self._make_dead_letters()
        if self.metrics_port is not None:
            self._metrics_server = await asyncio.start_server(self._serve_metrics, self.metrics_host, self.metrics_port)
            log.info("event=metrics_listening host=%s port=%d", self.metrics_host, self.metrics_port)
        for source in sources:
            self._start(source)
        log.info("event=collect_start sources=%d spool=%s sync=%s", len(self.running), self.writer.spool.directory, self.sync)
        try:
            await self._supervise(stop)
        finally:
            await self._shutdown()

    async def _wait_for_configuration(self, stop: asyncio.Event) -> list[SourceConfig] | None:
        delay = 1.0
        while not stop.is_set():
            try:
                sources, self._fingerprint = await asyncio.to_thread(self._load)
                return sources
            except psycopg.Error as exc:
                log.warning("event=config_unavailable retry_in_s=%.0f error=%r", delay, str(exc).strip()[:200])
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except asyncio.TimeoutError:
                delay = min(delay * 2, 30.0)
        return None

    def _load(self) -> tuple[list[SourceConfig], str]:
        with psycopg.connect(self.url, connect_timeout=5) as conn:
            fp = fingerprint(conn)
            sources = [s for s in load_sources(conn) if s.protocol in PROTOCOLS]
        return sources, fp

    def _fingerprint_now(self) -> str:
        with psycopg.connect(self.url, connect_timeout=5) as conn:
            return fingerprint(conn)

    @staticmethod
    def _scalings(sources):
        return {p.id: p.scaling for s in sources for p in s.points}

    @staticmethod
    def _source_of(sources):
        return {p.id: s.id for s in sources for p in s.points}

    def _make_dead_letters(self):
        try:
            from collectors.deadletter import DeadLetters
        except ImportError as exc:
            log.error("event=dead_letters_unavailable error=%r", str(exc))
            return None
        return DeadLetters(self.url).start()

    # -------------------------------------------------------------- collectors
    def _start(self, source: SourceConfig) -> None:
        collector = self._collector(source)
        if collector is None:
            return
        stop = asyncio.Event()
        task = asyncio.create_task(self._guard(source, collector, stop), name=f"source-{source.id}")
        self.running[source.id] = _Running(source, collector, stop, task)

    def _collector(self, source: SourceConfig):
        if source.protocol == "modbus-tcp":
            from collectors.modbus import ModbusPoller

            return ModbusPoller(source, self.writer, self.status, backoff_max_s=self.modbus_backoff_max_s)
        try:
            from collectors.mqtt import MqttCollector
        except ImportError as exc:
            log.error("event=source_skipped source=%s protocol=mqtt error=%r", source.name, str(exc))
            return None
        if self.dead_letters is None:
            log.error("event=source_skipped source=%s protocol=mqtt error='no dead-letter store'", source.name)
            return None
        return MqttCollector(source, self.writer, self.dead_letters, status=self.status)

    async def _guard(self, source: SourceConfig, collector, stop: asyncio.Event) -> None:
        """Run a collector; if it crashes, log and restart it after a pause."""
        delay = 1.0
        while not stop.is_set():
            try:
                await collector.run(stop)
                return
            except Exception:
                log.exception("event=collector_crashed source=%s restart_in_s=%.0f", source.name, delay)
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except asyncio.TimeoutError:
                delay = min(delay * 2, 60.0)

    async def _stop_source(self, source_id: int) -> None:
        running = self.running.pop(source_id)
        running.stop.set()
        await asyncio.gather(running.task, return_exceptions=True)

    # -------------------------------------------------------------- supervision
    async def _supervise(self, stop: asyncio.Event) -> None:
        now = time.monotonic()
        next_config, next_status, next_stats = now + self.config_poll_s, now + self.status_save_s, now + self.stats_interval_s
        while not stop.is_set():
            wake = min(next_config, next_status, next_stats)
            try:
                await asyncio.wait_for(stop.wait(), timeout=max(0.0, wake - time.monotonic()))
                break
            except asyncio.TimeoutError:
                pass
            now = time.monotonic()
            if now >= next_config:
                next_config = now + self.config_poll_s
                await self._check_configuration()
            if now >= next_status:
                next_status = now + self.status_save_s
                await asyncio.to_thread(self.status.save)
            if now >= next_stats:
                next_stats = now + self.stats_interval_s
                self._log_stats()

    async def _check_configuration(self) -> None:
        try:
            fp = await asyncio.to_thread(self._fingerprint_now)
            if fp == self._fingerprint:
                return
            sources, fp = await asyncio.to_thread(self._load)
        except psycopg.Error as exc:
            log.warning("event=config_check_failed error=%r", str(exc).strip()[:200])
            return
        await self.apply(sources)
        self._fingerprint = fp

    async def apply(self, sources: list[SourceConfig]) -> None:
        """Move to a new configuration: restart only the sources that changed."""
        self.config_changes += 1
        self.writer.update_points(self._scalings(sources), self._source_of(sources))
        wanted = {s.id: s for s in sources}
        stopped = started = 0
        removed = []
        for sid in list(self.running):
            if sid not in wanted or wanted[sid] != self.running[sid].source:
                await self._stop_source(sid)
                stopped += 1
                if sid not in wanted:
                    removed.append(sid)
        if removed:   # their last state is saved before it is forgotten
            await asyncio.to_thread(self.status.save)
            for sid in removed:
                self.status.forget_source(sid)
        for sid, source in wanted.items():
            if sid not in self.running:
                self._start(source)
                started += 1
        log.info("event=config_changed sources=%d stopped=%d started=%d", len(self.running), stopped, started)

    async def _shutdown(self) -> None:
        for sid in list(self.running):
            await self._stop_source(sid)
        if self._metrics_server is not None:
            self._metrics_server.close()
            await self._metrics_server.wait_closed()
        if self.writer is not None:
            await asyncio.to_thread(self.writer.close)
        if self.dead_letters is not None:
            await asyncio.to_thread(self.dead_letters.close)
        if self.status is not None:
            await asyncio.to_thread(self.status.save)
        self._log_stats()
        log.info("event=collect_stop")

    # ------------------------------------------------------------------ counters
    def stats(self) -> dict:
        writer = self.writer.stats() if self.writer else {}
        by_source = writer.pop("by_source", {})
        sources = {}
        for sid, r in self.running.items():
            c = r.collector
            own = dict(c.counters) if r.source.protocol == "modbus-tcp" else c.stats()
            w = by_source.get(sid, {})
            sources[r.source.name] = {
                "id": sid, "protocol": r.source.protocol,
                "received": w.get("received", 0), "written": w.get("written", 0) + w.get("replayed", 0),
                "spooled": w.get("spooled", 0),
                "dead_lettered": own.get("dead_lettered", 0) if r.source.protocol == "mqtt" else 0,
                **{f"collector_{k}": v for k, v in own.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
            }
        dl = self.dead_letters
        return {
            "writer": writer,
            "sources": sources,
            "dead_letters": {"added": dl.added, "written": dl.written, "dropped": dl.dropped} if dl else None,
            "config_changes": self.config_changes,
        }

    def _log_stats(self) -> None:
        if self.writer is None:
            return
        s = self.stats()
        w = s["writer"]
        log.info("event=writer_stats received=%d written=%d duplicates=%d spooled=%d replayed=%d pending=%d spool_files=%d",
                 w["received"], w["written"], w["duplicates"], w["spooled"], w["replayed"], w["pending"], w["spool_files"])
        for name, c in s["sources"].items():
            log.info("event=source_stats source=%s %s", name,
                     " ".join(f"{k}={v}" for k, v in c.items() if k not in ("id",)))

    def prometheus(self) -> str:
        s = self.stats()
        lines = []
        for key in ("received", "rejected", "written", "duplicates", "spooled", "replayed", "pending", "spool_files"):
            lines.append(f"# TYPE wattline_writer_{key} {'gauge' if key in ('pending', 'spool_files') else 'counter'}")
            lines.append(f"wattline_writer_{key} {s['writer'].get(key, 0)}")
        for key in ("received", "written", "spooled", "dead_lettered"):
            lines.append(f"# TYPE wattline_source_{key} counter")
            for name, c in s["sources"].items():
                label = name.replace("\\", "\\\\").replace('"', '\\"')
                lines.append(f'wattline_source_{key}{{source="{label}",protocol="{c["protocol"]}"}} {c[key]}')
        return "\n".join(lines) + "\n"

    async def _serve_metrics(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), timeout=5)
            while (await asyncio.wait_for(reader.readline(), timeout=5)) not in (b"\r\n", b"\n", b""):
                pass
            path = request.split()[1].decode() if len(request.split()) > 1 else "/"
            if path.startswith("/metrics"):
                body, ctype = self.prometheus().encode(), "text/plain; version=0.0.4"
            else:
                body, ctype = json.dumps(self.stats(), default=str).encode(), "application/json"
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype.encode() +
                         f"\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError, IndexError):
            pass
        finally:
            writer.close()
