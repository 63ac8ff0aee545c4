"""MQTT collector: one subscriber per data source, feeding the batching writer.

The session is persistent (clean_session false, a stable client id, QoS 1), so the
broker queues what is published while the collector is away, across its own restarts
too when the broker persists sessions, and delivers it on reconnect. paho-mqtt's network
thread reconnects with exponential backoff; the asyncio side only starts it and waits
for the stop signal. Decoding happens on paho's thread and never raises: whatever cannot
become a reading goes to ops.dead_letter with the reason, and the rest of the message
is still accepted.

Messages are acknowledged once handed to the writer (in memory, or fsync'd in its sync
mode), which is the writer's durability promise, not the database's.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
from dataclasses import asdict, dataclass

import paho.mqtt.client as mqtt

from app.protocols import MqttConnection
from collectors.config import SourceConfig
from collectors.deadletter import DeadLetters
from collectors.payloads import Decoded, TopicPoints, decode

log = logging.getLogger("wattline.mqtt")
UTC = dt.timezone.utc


@dataclass
class MqttCounters:
    received: int = 0        # messages
    accepted: int = 0        # readings handed to the writer
    dead_lettered: int = 0   # messages with at least one rejected part
    rejected: int = 0        # entries refused inside those messages
    connects: int = 0
    disconnects: int = 0


class MqttCollector:
    """Subscribe to a data source's topic filters and hand readings to `writer`
    (anything with thread-safe `add(point_id, ts, device_value, quality=0)`)."""

    def __init__(
        self,
        source: SourceConfig,
        writer,
        dead_letters: DeadLetters,
        *,
        status=None,
        reconnect_min_s: int = 1,
        reconnect_max_s: int = 60,
    ):
        if not isinstance(source.connection, MqttConnection):
            raise TypeError(f"data source {source.name!r} is {source.protocol}, not mqtt")
        self.source = source
        self.conn: MqttConnection = source.connection
        self.writer = writer
        self.dead_letters = dead_letters
        self.status = status  # collectors.status.StatusRecorder, optional
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.points = TopicPoints(source)
        self.counters = MqttCounters()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._client: mqtt.Client | None = None

    @property
    def client_id(self) -> str:
        """Stable across restarts, so the broker finds the session again."""
        return self.conn.client_id or f"wattline-ds{self.source.id}"

    def update_source(self, source: SourceConfig) -> None:
        """Take new points (keys, topics, scaling) without reconnecting. A change of
        broker or topic filters needs a new collector."""
        self.points = TopicPoints(source)
        self.source = source

    def stats(self) -> dict:
        with self._lock:
            out = asdict(self.counters)
        out.update(connected=self.connected.is_set(), last_error=self.last_error)
        return out

    # --------------------------------------------------------------- the client
    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            reconnect_on_failure=True,
        )
        if self.conn.username is not None:
            client.username_pw_set(self.conn.username, self.conn.password)
        if self.conn.tls is not None:
            tls = self.conn.tls
            client.tls_set(ca_certs=tls.ca_file, certfile=tls.cert_file, keyfile=tls.key_file)
            if tls.insecure:
                client.tls_insecure_set(True)
        client.reconnect_delay_set(self.reconnect_min_s, self.reconnect_max_s)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    async def run(self, stop: asyncio.Event) -> None:
        """Connect (retrying until the broker answers), collect until `stop` is set."""
        client = self._client = self._make_client()
        log.info("event=mqtt_start source=%s broker=%s:%d topics=%s client_id=%s",
                 self.source.name, self.conn.host, self.conn.port, self.conn.topics, self.client_id)
        client.connect_async(self.conn.host, self.conn.port, self.conn.keepalive_s)
        client.loop_start()
        try:
            await stop.wait()
        finally:
            client.disconnect()
            await asyncio.to_thread(client.loop_stop)
            self.connected.clear()
            self.subscribed.clear()
            self._client = None
            log.info("event=mqtt_stop source=%s %s", self.source.name,
                     " ".join(f"{k}={v}" for k, v in self.stats().items()))

    # ---------------------------------------------------------------- callbacks
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._failed(f"broker refused connection: {reason_code}")
            return
        with self._lock:
            self.counters.connects += 1
        self.last_error = None
        self.connected.set()
        if self.status is not None:
            self.status.success(self.source.id)
        log.info("event=mqtt_connected source=%s session_present=%s",
                 self.source.name, flags.session_present)
        # Subscribing again is harmless when the session kept the subscriptions.
        client.subscribe([(topic, self.conn.qos) for topic in self.conn.topics])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        bad = [str(rc) for rc in reason_codes if rc.is_failure]
        if bad:
            self._failed(f"subscription refused: {', '.join(bad)}")
        else:
            self.subscribed.set()

    def _on_connect_fail(self, client, userdata) -> None:
        self._failed(f"cannot reach broker {self.conn.host}:{self.conn.port}")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        self.subscribed.clear()
        if was:
            with self._lock:
                self.counters.disconnects += 1
            if reason_code.is_failure:
                self._failed(f"disconnected: {reason_code}")

    def _failed(self, message: str) -> None:
        if message != self.last_error:
            log.warning("event=mqtt_error source=%s error=%r", self.source.name, message)
        self.last_error = message
        if self.status is not None:
            self.status.failure(self.source.id, error=message)

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        self.handle(message.topic, message.payload)

    # ------------------------------------------------------------------ intake
    def handle(self, topic: str, payload: bytes, received_at: dt.datetime | None = None) -> Decoded:
        """Decode one message, hand its readings to the writer, dead-letter the rest.
        Never raises: a collector must outlive any payload."""
        received_at = received_at or dt.datetime.now(UTC)
        try:
            decoded = decode(payload, topic, self.points, received_at)
        except Exception as exc:  # a decoder bug must not stop collection
            log.exception("event=mqtt_decode_bug source=%s topic=%s", self.source.name, topic)
            decoded = Decoded(problems=[f"internal decoding error: {type(exc).__name__}: {exc}"])
        if decoded.entries:
            self._hand_over(decoded)
            if decoded.entries and self.status is not None:
                self.status.success(self.source.id, at=received_at)
        if decoded.problems:
            self.dead_letters.add(self.source.id, topic, payload, decoded.reason())
        with self._lock:
            c = self.counters
            c.received += 1
            c.accepted += len(decoded.entries)
            c.rejected += len(decoded.problems)
            c.dead_lettered += bool(decoded.problems)
        return decoded

    def _hand_over(self, decoded: Decoded) -> None:
        add_many = getattr(self.writer, "add_many", None)
        if add_many is not None:
            try:
                add_many([(e.point_id, e.ts, e.value, 0) for e in decoded.entries])
                return
            except Exception:
                pass  # all or none: find the one the writer refuses
        kept = []
        for e in decoded.entries:
            try:
                self.writer.add(e.point_id, e.ts, e.value)
                kept.append(e)
            except Exception as exc:
                decoded.problems.append(f"point id {e.point_id} at {e.ts.isoformat()}: writer refused: {exc}")
        decoded.entries = kept
