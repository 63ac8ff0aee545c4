"""Modbus collection at scale: D simulated devices x P points polled every 10 s by the
real `wattline collect` process (writer and database included).

Prints the full cycle time (from the 10 s tick until the last reading of that tick),
the collector's CPU use (fraction of one core) and its peak RSS. Targets (issue 3): a
cycle well inside 10 s, under half a core, under 300 MB. Runs in its own database
(created, migrated, dropped); the devices run in a separate process.

    .venv/bin/python bench/bench_modbus.py                    # 50 x 400, 6 cycles
    .venv/bin/python bench/bench_modbus.py --devices 10 --cycles 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from app.db import database_url  # noqa: E402


def with_db(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def device_points(points: int) -> list[dict]:
    """Half cumulative energy (uint32, holding), half power (float32, input), as meters are."""
    out = []
    for i in range(points):
        if i % 2 == 0:
            out.append({"function": 3, "register": i, "type": "uint32", "object_type": "energy"})
        else:
            out.append({"function": 4, "register": i - 1, "type": "float32", "object_type": "analog"})
    return out


# ----------------------------------------------------------------- devices
def serve(ports: list[int], points: int) -> None:
    """The simulated devices (run in a child process)."""
    from app.protocols import ModbusAddress
    from collectors.simulator import ModbusDeviceServer, SimPoint

    async def main():
        servers = []
        for d, port in enumerate(ports):
            sims = []
            for k, spec in enumerate(device_points(points)):
                addr = ModbusAddress(unit=1, function=spec["function"], register=spec["register"], type=spec["type"])
                rate = 1 + (d * 7 + k) % 50
                if spec["object_type"] == "energy":
                    sims.append(SimPoint(addr, lambda t, r=rate: (t - 1.7e9) * r / 36))
                else:
                    sims.append(SimPoint(addr, lambda t, r=rate: r * (1 + 0.1 * ((int(t) // 10) % 3))))
            servers.append(await ModbusDeviceServer("127.0.0.1", port, sims, refresh_s=1.0).start())
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


# ---------------------------------------------------------------- measuring
def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def configure(url: str, ports: list[int], points: int, interval: float) -> None:
    with psycopg.connect(url) as c:
        for d, port in enumerate(ports):
            sid = c.execute(
                "INSERT INTO config.data_source (name, protocol, connection, poll_interval_s) "
                "VALUES (%s, 'modbus-tcp', %s, %s) RETURNING id",
                (f"bench-{d:03d}", json.dumps({"host": "127.0.0.1", "port": port, "timeout_s": 5}), interval),
            ).fetchone()[0]
            with c.cursor().copy(
                "COPY config.point (data_source_id, name, object_type, address, ratio) FROM STDIN"
            ) as copy:
                for k, spec in enumerate(device_points(points)):
                    address = {"unit": 1, "function": spec["function"], "register": spec["register"], "type": spec["type"]}
                    copy.write_row((sid, f"d{d}-p{k}", spec["object_type"], json.dumps(address),
                                    0.1 if spec["object_type"] == "energy" else 1.0))


def cycles(url: str, interval: float) -> list[tuple[str, int, float]]:
    """Per tick: readings and seconds from the tick to its last reading."""
    with psycopg.connect(url) as c:
        rows = c.execute(
            "SELECT b, count(*), extract(epoch FROM max(ts) - b) FROM ("
            "  SELECT time_bucket(make_interval(secs => %s), ts) AS b, ts FROM raw.point_value) x "
            "GROUP BY b ORDER BY b", (interval,),
        ).fetchall()
    return [(b.astimezone().strftime("%H:%M:%S"), n, float(s)) for b, n, s in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--points", type=int, default=400)
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--cycles", type=int, default=6, help="Measured cycles (after one warm-up cycle).")
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve([int(p) for p in args.serve.split(",")], args.points)
        return

    main_url = database_url()
    admin = with_db(main_url, "postgres")
    name = f"bench_modbus_{os.getpid()}"
    url = with_db(main_url, name)
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    devices = collector = None
    try:
        from app import migrate

        migrate.upgrade(url=url)
        ports = free_ports(args.devices)
        configure(url, ports, args.points, args.interval)
        devices = subprocess.Popen([sys.executable, __file__, "--serve", ",".join(map(str, ports)),
                                    "--points", str(args.points)], stdout=subprocess.PIPE, text=True)
        assert devices.stdout.readline().strip() == "ready", "device simulator did not start"
        data_dir = tempfile.mkdtemp(prefix="bench-modbus-")
        env = dict(os.environ, WATTLINE_DATABASE_URL=url, WATTLINE_DATA_DIR=data_dir, WATTLINE_LOG_LEVEL="WARNING")
        collector = subprocess.Popen([str(ROOT / ".venv" / "bin" / "wattline"), "collect"], env=env)
        # Warm up one cycle, then measure whole cycles.
        now = time.time()
        start = (now // args.interval + 2) * args.interval
        time.sleep(start - time.time() - 0.5)
        cpu0 = proc_cpu_s(collector.pid)
        wall0 = time.time()
        time.sleep(start + args.cycles * args.interval - time.time() - 0.5)
        cpu = proc_cpu_s(collector.pid) - cpu0
        wall = time.time() - wall0
        rss = proc_peak_rss_mb(collector.pid)
        collector.send_signal(signal.SIGTERM)
        collector.wait(60)
        per_cycle = cycles(url, args.interval)
        expected = args.devices * args.points
        print(f"{args.devices} devices x {args.points} points = {expected:,} points every {args.interval:g} s")
        print("tick      readings  last reading after (s)")
        for b, n, s in per_cycle:
            print(f"{b}  {n:>8,}  {s:6.2f}")
        measured = {time.strftime("%H:%M:%S", time.localtime(start + i * args.interval)) for i in range(args.cycles)}
        full = [s for b, n, s in per_cycle if n == expected and b in measured]
        print("(the first tick includes start-up: connecting and a first, unaligned poll)")
        print(f"measured full cycles: {len(full)}; cycle time max {max(full, default=float('nan')):.2f} s, "
              f"mean {sum(full) / max(len(full), 1):.2f} s")
        print(f"collector CPU: {cpu / wall:.3f} of one core over {wall:.0f} s; peak RSS {rss:.0f} MB")
        ok = full and max(full) < args.interval / 2 and cpu / wall < 0.5 and rss < 300
        print(f"targets (cycle well inside {args.interval:g} s, < 0.5 core, < 300 MB): {'met' if ok else 'NOT met'}")
    finally:
        for p in (collector, devices):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
