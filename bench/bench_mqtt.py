"""MQTT ingest throughput: readings per second from a local Mosquitto into raw.point_value.

A publisher process sends QoS 1 messages of 100 readings each to a private Mosquitto on
loopback; the MQTT collector (with the real BatchWriter and dead-letter writer) runs in
this process. The clock runs from the first publish until the last reading is committed
in raw.point_value. Uses its own database (bench_mqtt_<pid>), dropped afterwards.

    .venv/bin/python bench/bench_mqtt.py [--messages 5000] [--format object|array]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import multiprocessing as mp
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app import migrate  # noqa: E402
from app.db import database_url  # noqa: E402
from collectors.config import load_sources  # noqa: E402
from collectors.deadletter import DeadLetters  # noqa: E402
from collectors.mqtt import MqttCollector  # noqa: E402
from collectors.writer import BatchWriter  # noqa: E402

PER_MESSAGE = 100
POINTS = 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(workdir: Path, port: int) -> subprocess.Popen:
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n"
        "max_queued_messages 0\nmax_inflight_messages 0\npersistence false\n"
        f"log_dest file {workdir}/mosquitto.log\n"
    )
    proc = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.05)
    raise RuntimeError("mosquitto did not start")


def payload(i: int, fmt: str) -> bytes:
    """Message i: readings of 100 points (i-th block of the 1000) at its own instant."""
    base = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(minutes=i)
    first = (i * PER_MESSAGE) % POINTS
    keys = [f"p{(first + k) % POINTS}" for k in range(PER_MESSAGE)]
    if fmt == "object":
        return json.dumps({"ts": base.isoformat(), "values": {k: 1000.0 + i + n * 0.5 for n, k in enumerate(keys)}}).encode()
    ts = base.isoformat()
    return json.dumps([{"point": k, "ts": ts, "value": 1000.0 + i + n * 0.5} for n, k in enumerate(keys)]).encode()


def publisher(port: int, messages: int, fmt: str, started) -> None:
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-publisher")
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    bodies = [payload(i, fmt) for i in range(messages)]
    started.set()
    infos = [client.publish("bench/site/gw", body, qos=1) for body in bodies]
    for info in infos:
        info.wait_for_publish(120)
    client.disconnect()
    client.loop_stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--format", choices=["object", "array"], default="object")
    args = ap.parse_args()
    total = args.messages * PER_MESSAGE

    main_url = database_url()
    server = make_url(main_url).set(database="postgres").render_as_string(hide_password=False)
    name = f"bench_mqtt_{os.getpid()}"
    url = make_url(main_url).set(database=name).render_as_string(hide_password=False)
    workdir = Path(tempfile.mkdtemp(prefix="bench-mqtt-"))
    port = free_port()
    broker = None
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        migrate.upgrade(url=url)
        with psycopg.connect(url, autocommit=True) as conn:
            sid = conn.execute(
                "INSERT INTO config.data_source (name, protocol, connection) VALUES ('bench', 'mqtt', %s) RETURNING id",
                (json.dumps({"host": "127.0.0.1", "port": port, "topics": ["bench/#"]}),),
            ).fetchone()[0]
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO config.point (data_source_id, name, object_type, ratio) VALUES (%s, %s, 'energy', 1)",
                    [(sid, f"p{i}") for i in range(POINTS)],
                )
            source = load_sources(conn, "mqtt")[0]
        broker = start_broker(workdir, port)

        writer = BatchWriter(url, batch_size=5000, max_age_s=0.5, spool_dir=workdir / "spool")
        dead = DeadLetters(url).start()
        collector = MqttCollector(source, writer, dead)
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()
        thread = threading.Thread(target=lambda: loop.run_until_complete(collector.run(stop)), daemon=True)
        thread.start()
        while not collector.subscribed.is_set():
            time.sleep(0.05)

        started = mp.Event()
        pub = mp.Process(target=publisher, args=(port, args.messages, args.format, started))
        cpu0 = time.process_time()
        pub.start()
        started.wait(60)
        t0 = time.perf_counter()
        received_at = None
        with psycopg.connect(url, autocommit=True) as conn:
            while True:
                time.sleep(0.25)
                if received_at is None and collector.counters.received >= args.messages:
                    received_at = time.perf_counter() - t0
                n = conn.execute("SELECT count(*) FROM raw.point_value").fetchone()[0]
                if n >= total:
                    break
                if time.perf_counter() - t0 > 600:
                    raise SystemExit(f"timeout: {n} of {total} readings stored")
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        pub.join(60)
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        writer.close()
        dead.close()
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        stats = writer.stats()
        print(f"date            {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC")
        print(f"machine         {os.cpu_count()} cores, {sys.platform}, shared")
        print(f"format          {args.format}, {PER_MESSAGE} readings per message, QoS 1, {POINTS} points")
        print(f"messages        {args.messages}  readings {total}")
        print(f"all received    {received_at or elapsed:.2f} s  ({total / (received_at or elapsed):,.0f} readings/s)")
        print(f"all stored      {elapsed:.2f} s  ({total / elapsed:,.0f} readings/s end to end)")
        print(f"collector CPU   {cpu:.2f} s ({cpu / elapsed:.2f} cores)  peak RSS {rss_mb:.0f} MB")
        print(f"writer          written {stats['written']} duplicates {stats['duplicates']} "
              f"spooled {stats['spooled']} dead letters {dead.written}")
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait(10)
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
