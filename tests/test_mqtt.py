"""MQTT collector against a real Mosquitto broker on loopback: every payload shape,
dead letters for what cannot be read, persistent sessions and broker restarts."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest

from collectors.config import load_sources
from collectors.deadletter import DeadLetters
from collectors.mqtt import MqttCollector
from collectors.writer import BatchWriter

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
UTC = dt.timezone.utc

pytestmark = pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="mosquitto not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Broker:
    """A private Mosquitto: loopback listener, persistent sessions on disk."""

    def __init__(self, workdir: Path, port: int, passwords: dict[str, str] | None = None,
                 tls: dict[str, Path] | None = None):
        self.workdir, self.port = workdir, port
        self.proc: subprocess.Popen | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        lines = [
            f"listener {port} 127.0.0.1",
            *([f"cafile {tls['ca']}", f"certfile {tls['server_cert']}", f"keyfile {tls['server_key']}",
               "require_certificate true"] if tls else []),
            "user root",  # stay the test's user: the work dir is private
            "persistence true",
            f"persistence_location {workdir}/",
            "max_queued_messages 100000",
            f"log_dest file {workdir}/mosquitto.log",
        ]
        if passwords:
            pwfile = workdir / "passwords"
            for i, (user, password) in enumerate(passwords.items()):
                subprocess.run([MOSQUITTO_PASSWD, "-b", *(["-c"] if i == 0 else []), str(pwfile), user, password],
                               check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        else:
            lines.append("allow_anonymous true")
        self.config = workdir / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")

    def start(self) -> "Broker":
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def listening():
            if self.proc.poll() is not None:
                raise AssertionError(f"mosquitto exited: {self.proc.stderr.read().decode()}")
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        wait_for(listening, what="mosquitto to listen")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "broker", free_port()).start()
    yield b
    b.stop()


class Publisher:
    def __init__(self, port: int, username: str | None = None, password: str | None = None,
                 tls: dict[str, Path] | None = None):
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-pub-{port}-{id(self)}")
        if username:
            self.client.username_pw_set(username, password)
        if tls:
            self.client.tls_set(ca_certs=str(tls["ca"]), certfile=str(tls["client_cert"]),
                                keyfile=str(tls["client_key"]))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, topic: str, payload, qos: int = 1) -> None:
        if isinstance(payload, (dict, list)):
            payload = json.dumps(payload)
        info = self.client.publish(topic, payload, qos=qos)
        info.wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Running:
    """A collector's asyncio `run` on its own thread, stoppable from the test."""

    def __init__(self, collector: MqttCollector):
        self.collector = collector
        self.loop = asyncio.new_event_loop()
        self.stop_event: asyncio.Event | None = None
        ready = threading.Event()

        def main():
            asyncio.set_event_loop(self.loop)

            async def go():
                self.stop_event = asyncio.Event()
                ready.set()
                await collector.run(self.stop_event)

            self.loop.run_until_complete(go())

        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()
        ready.wait(5)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(15)
        assert not self.thread.is_alive(), "collector did not stop"
        self.loop.close()


def make_source(conn, port: int, *, name="gateway", topics=("site/#",), **extra) -> int:
    connection = {"host": "127.0.0.1", "port": port, "topics": list(topics), **extra}
    sid = conn.execute(
        "INSERT INTO config.data_source (name, protocol, connection) VALUES (%s, 'mqtt', %s) RETURNING id",
        (name, json.dumps(connection)),
    ).fetchone()[0]
    points = [
        ("energy", {}, 1.0, 0.0, None, None),
        ("power", {"key": "p"}, 1000.0, 0.0, None, None),        # kW on the wire, W stored
        ("temp", {"topic": "site/hall/temp"}, 1.0, -273.15, -50.0, 60.0),  # kelvin in, degC stored
    ]
    for pname, address, ratio, offset, low, high in points:
        conn.execute(
            'INSERT INTO config.point (data_source_id, name, object_type, address, ratio, "offset", low_limit, high_limit) '
            "VALUES (%s, %s, 'analog', %s, %s, %s, %s, %s)",
            (sid, pname, json.dumps(address), ratio, offset, low, high),
        )
    return sid


def point_ids(conn) -> dict[str, int]:
    return dict(conn.execute("SELECT name, id FROM config.point").fetchall())


def readings(conn, name: str) -> list[tuple[dt.datetime, float, int]]:
    return conn.execute(
        "SELECT ts, value, quality FROM raw.point_value v JOIN config.point p ON p.id = v.point_id "
        "WHERE p.name = %s ORDER BY ts", (name,)
    ).fetchall()


def count_rows(conn, name: str | None = None) -> int:
    if name is None:
        return conn.execute("SELECT count(*) FROM raw.point_value").fetchone()[0]
    return len(readings(conn, name))


@pytest.fixture
def stack(db_url, conn, broker, tmp_path):
    """Source, writer and dead letters for one mqtt data source on the test broker."""
    make_source(conn, broker.port)
    source = load_sources(conn, "mqtt")[0]
    writer = BatchWriter(db_url, max_age_s=0.1, spool_dir=tmp_path / "spool")
    dead = DeadLetters(db_url, max_age_s=0.1).start()
    collectors: list[Running] = []

    def start(**kw) -> MqttCollector:
        collector = MqttCollector(source, writer, dead, **kw)
        collectors.append(Running(collector))
        wait_for(collector.subscribed.is_set, what="the collector to subscribe")
        return collector

    def stop_all():
        for r in collectors:
            if r.thread.is_alive():
                r.stop()

    yield {"source": source, "writer": writer, "dead": dead, "start": start, "stop_all": stop_all,
           "collectors": collectors}
    stop_all()
    writer.close()
    dead.close()


def test_json_object_payload(stack, conn, broker):
    stack["start"]()
    pub = Publisher(broker.port)
    pub.publish("site/meter1", {"ts": "2024-03-01T10:00:00+01:00", "values": {"energy": 1234.5, "p": 2.5}})
    pub.publish("site/meter1", {"ts": "2024-03-01T09:15:00", "values": {"energy": 1240}})  # naive = UTC
    pub.close()
    wait_for(lambda: count_rows(conn) == 3, what="3 readings")
    assert readings(conn, "energy") == [
        (dt.datetime(2024, 3, 1, 9, 0, tzinfo=UTC), 1234.5, 0),
        (dt.datetime(2024, 3, 1, 9, 15, tzinfo=UTC), 1240.0, 0),
    ]
    assert readings(conn, "power") == [(dt.datetime(2024, 3, 1, 9, 0, tzinfo=UTC), 2500.0, 0)]


def test_json_array_payload_with_epoch_seconds_and_milliseconds(stack, conn, broker):
    stack["start"]()
    pub = Publisher(broker.port)
    pub.publish("site/batch", [
        {"point": "energy", "ts": 1709280000, "value": 10},          # seconds
        {"point": "energy", "ts": 1709280900000, "value": 11.5},     # milliseconds
        {"point": "p", "ts": "2024-03-01T08:00:00Z", "value": "0.75"},
    ])
    pub.close()
    wait_for(lambda: count_rows(conn) == 3, what="3 readings")
    assert readings(conn, "energy") == [
        (dt.datetime(2024, 3, 1, 8, 0, tzinfo=UTC), 10.0, 0),
        (dt.datetime(2024, 3, 1, 8, 15, tzinfo=UTC), 11.5, 0),
    ]
    assert readings(conn, "power") == [(dt.datetime(2024, 3, 1, 8, 0, tzinfo=UTC), 750.0, 0)]


def test_plain_number_on_a_point_topic_uses_receive_time(stack, conn, broker):
    stack["start"]()
    pub = Publisher(broker.port)
    before = dt.datetime.now(UTC)
    pub.publish("site/hall/temp", "295.15")
    pub.publish("site/hall/temp", "400")  # 126.85 degC: above the high limit, flagged not dropped
    after = dt.datetime.now(UTC)
    pub.close()
    wait_for(lambda: count_rows(conn, "temp") == 2, what="2 temperature readings")
    rows = readings(conn, "temp")
    assert all(before - dt.timedelta(seconds=1) <= ts <= after + dt.timedelta(seconds=1) for ts, _, _ in rows)
    assert sorted((round(v, 2), q) for _, v, q in rows) == [(22.0, 0), (126.85, 1)]


def test_bad_payloads_are_dead_lettered_and_collection_goes_on(stack, conn, broker):
    collector = stack["start"]()
    sid = stack["source"].id
    pub = Publisher(broker.port)
    bad = [
        ("site/x", "this is not json"),
        ("site/x", b"\xff\xfe\x00garbage"),
        ("site/x", {"values": {"nosuchpoint": 1}}),
        ("site/x", {"ts": "yesterday", "values": {"energy": 1}}),
        ("site/x", '{"values": {"energy": NaN}}'),
        ("site/x", "12.5"),            # plain number on a topic no point owns
        ("site/hall/temp", "inf"),     # non-finite bare number
        ("site/x", {"unexpected": True}),
        ("site/x", "[1, 2"),
    ]
    for topic, payload in bad:
        pub.publish(topic, payload)
    # One message half good, half bad: the good readings are kept.
    pub.publish("site/mixed", [
        {"point": "energy", "ts": "2024-05-01T00:00:00Z", "value": 5},
        {"point": "ghost", "ts": "2024-05-01T00:00:00Z", "value": 6},
        {"point": "p", "ts": "2024-05-01T00:00:00Z", "value": "abc"},
        {"point": "p", "ts": "2024-05-01T00:00:00Z", "value": 1},
    ])
    # And the collector still takes good messages afterwards.
    pub.publish("site/after", {"ts": "2024-05-01T00:15:00Z", "values": {"energy": 7}})
    pub.close()

    wait_for(lambda: count_rows(conn) == 3, what="the good readings")
    wait_for(lambda: conn.execute("SELECT count(*) FROM ops.dead_letter").fetchone()[0] == len(bad) + 1,
             what="dead letters")
    rows = conn.execute(
        "SELECT data_source_id, topic, payload, reason FROM ops.dead_letter ORDER BY id"
    ).fetchall()
    assert {r[0] for r in rows} == {sid}
    reasons = [r[3] for r in rows]
    assert reasons[0] == "payload is neither JSON nor a number"
    assert reasons[1] == "payload is not UTF-8 text"
    assert "values.nosuchpoint 'nosuchpoint': unknown point" in reasons[2]
    assert "not an ISO 8601 timestamp" in reasons[3] and "all 1 values refused" in reasons[3]
    assert "values.energy" in reasons[4] and "not a finite number" in reasons[4]
    assert "no point has this topic" in reasons[5]
    assert "not a finite number" in reasons[6]
    assert 'no "values"' in reasons[7]
    assert reasons[8] == "payload is neither JSON nor a number"
    mixed = rows[9]
    assert mixed[1] == "site/mixed"
    assert json.loads(mixed[2])[1]["point"] == "ghost"  # the whole message is kept
    assert mixed[3].startswith("partly accepted (2 of 4 readings)")
    assert "[1] point 'ghost': unknown point" in mixed[3]
    assert "[2] value 'abc': not a number" in mixed[3]
    assert readings(conn, "energy") == [
        (dt.datetime(2024, 5, 1, 0, 0, tzinfo=UTC), 5.0, 0),
        (dt.datetime(2024, 5, 1, 0, 15, tzinfo=UTC), 7.0, 0),
    ]
    stats = collector.stats()
    assert stats["received"] == len(bad) + 2
    assert stats["accepted"] == 3
    assert stats["dead_lettered"] == len(bad) + 1
    assert stats["connected"]


def test_persistent_session_delivers_what_was_published_while_away(stack, conn, broker):
    stack["start"]()
    stack["stop_all"]()  # the collector disconnects; its session stays on the broker
    pub = Publisher(broker.port)
    for i in range(5):
        pub.publish("site/m", {"ts": f"2024-06-01T00:{i * 15 % 60:02d}:00Z" if i < 4 else "2024-06-01T01:00:00Z",
                               "values": {"energy": 100 + i}})
    pub.close()
    time.sleep(0.2)
    assert count_rows(conn) == 0
    stack["start"]()
    wait_for(lambda: count_rows(conn, "energy") == 5, what="the queued messages")
    assert [v for _, v, _ in readings(conn, "energy")] == [100.0, 101.0, 102.0, 103.0, 104.0]


def test_reconnects_after_broker_restart_and_gets_messages_sent_meanwhile(stack, conn, broker):
    collector = stack["start"](reconnect_min_s=1, reconnect_max_s=2)
    pub = Publisher(broker.port)
    pub.publish("site/m", {"ts": "2024-07-01T00:00:00Z", "values": {"energy": 1}})
    pub.close()
    wait_for(lambda: count_rows(conn) == 1, what="the first reading")

    broker.stop()
    wait_for(lambda: not collector.connected.is_set(), what="the collector to notice")
    broker.start()  # same port, same persistence file: the session survives
    pub = Publisher(broker.port)
    pub.publish("site/m", {"ts": "2024-07-01T00:15:00Z", "values": {"energy": 2}})
    pub.close()
    wait_for(lambda: count_rows(conn) == 2, timeout=30, what="the reading sent during the outage")
    assert collector.stats()["connects"] >= 2
    assert collector.stats()["disconnects"] >= 1


def test_username_and_password(db_url, conn, tmp_path):
    broker = Broker(tmp_path / "auth-broker", free_port(), passwords={"meter": "s3cret"}).start()
    try:
        make_source(conn, broker.port, name="good", topics=["site/#"], username="meter", password="s3cret")
        make_source(conn, broker.port, name="bad", topics=["other/#"], username="meter", password="wrong")
        good, bad = load_sources(conn, "mqtt")
        dead = DeadLetters(db_url, max_age_s=0.1).start()
        with BatchWriter(db_url, max_age_s=0.1, spool_dir=tmp_path / "spool") as writer:
            ok = MqttCollector(good, writer, dead)
            refused = MqttCollector(bad, writer, dead, reconnect_min_s=1, reconnect_max_s=1)
            running = [Running(ok), Running(refused)]
            wait_for(ok.subscribed.is_set, what="the authorised collector")
            wait_for(lambda: refused.last_error and "refused" in refused.last_error,
                     what="the refusal to be recorded")
            pub = Publisher(broker.port, "meter", "s3cret")
            pub.publish("site/m", {"ts": "2024-08-01T00:00:00Z", "values": {"energy": 42}})
            pub.close()
            wait_for(lambda: count_rows(conn) == 1, what="the reading")
            assert not refused.connected.is_set()
            assert running[1].thread.is_alive()  # refused, but still trying, not dead
            for r in running:
                r.stop()
        dead.close()
    finally:
        broker.stop()


def test_dead_letters_survive_a_database_outage(db_url, server_url):
    """Rows added while the database refuses connections are written once it is back."""
    dbname = psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]
    dead = DeadLetters(db_url, max_age_s=0.05, retry_max_s=0.2).start()
    try:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (dbname,))
            dead.add(None, "t", b"payload one", "reason one")
            dead.add(None, "t", "payload\x00two", "reason two")
            wait_for(lambda: dead.failures >= 1, what="a failed write")
            assert dead.pending == 2
            admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
        wait_for(lambda: dead.pending == 0, what="the retry")
    finally:
        dead.close()
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT payload, reason FROM ops.dead_letter ORDER BY id").fetchall()
    assert rows == [("payload one", "reason one"), ("payload\\x00two", "reason two")]


def make_certificates(d: Path) -> dict[str, Path]:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate."""
    d.mkdir(parents=True, exist_ok=True)
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=wattline-test-ca")
    for who, cn, ext in (("server", "127.0.0.1", "subjectAltName=IP:127.0.0.1"),
                         ("client", "collector", "extendedKeyUsage=clientAuth")):
        (d / f"{who}.ext").write_text(ext + "\n")
        run("req", *key, "-keyout", f"{who}.key", "-out", f"{who}.csr", "-subj", f"/CN={cn}")
        run("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{who}.crt", "-days", "2", "-extfile", f"{who}.ext")
    return {"ca": d / "ca.crt", "server_cert": d / "server.crt", "server_key": d / "server.key",
            "client_cert": d / "client.crt", "client_key": d / "client.key"}


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl not installed")
def test_tls_with_client_certificate(db_url, conn, tmp_path):
    certs = make_certificates(tmp_path / "pki")
    broker = Broker(tmp_path / "tls-broker", free_port(), tls=certs).start()
    try:
        make_source(conn, broker.port, tls={"ca_file": str(certs["ca"]), "cert_file": str(certs["client_cert"]),
                                            "key_file": str(certs["client_key"])})
        source = load_sources(conn, "mqtt")[0]
        dead = DeadLetters(db_url, max_age_s=0.1).start()
        with BatchWriter(db_url, max_age_s=0.1, spool_dir=tmp_path / "spool") as writer:
            collector = MqttCollector(source, writer, dead)
            running = Running(collector)
            wait_for(collector.subscribed.is_set, what="a TLS session")
            pub = Publisher(broker.port, tls=certs)
            pub.publish("site/m", {"ts": "2024-09-01T00:00:00Z", "values": {"energy": 9}})
            pub.close()
            wait_for(lambda: count_rows(conn) == 1, what="the reading over TLS")
            running.stop()
        dead.close()
    finally:
        broker.stop()
