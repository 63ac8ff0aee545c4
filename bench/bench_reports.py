"""Benchmark: the report engine on a site of 500 meters with a year of 15-minute data.

Creates its own database on the embedded cluster (dropped at the end unless --keep):
a site → 5 buildings → 10 floors each, 500 electricity meters on the floors (two items),
one cost center with a TOU tariff, a year of load-shaped 15-minute energy written with
generate_series, then the rollups (per meter and per entity) and the billing stage once.

1. Latency (in process, one connection, engine.build): the whole site's daily report for
   one month — energy; energy with the previous-month comparison; cost (daily); cost by
   TOU period; a year by month (energy, and cost by TOU period). p50 / p99 over repeated
   runs. Target p50 < 50 ms.
2. Load (a separate client process on loopback against `wattline api` with its default
   single worker — on two cores the database and the client need the other one; --workers
   to change it: wrk
   when installed, else a Python asyncio/httpx process): 200 concurrent clients for 60 s,
   three report requests to one live read; throughput, reports/s, p50/p99 and errors.
   Targets: ≥ 300 reports/s, p99 < 1 s, no errors.

    .venv/bin/python bench/bench_reports.py [--meters 500] [--days 365] [--clients 200] [--seconds 60]
        [--keep | --database NAME] [--no-latency] [--no-load] [--mix cost|energy] [--client wrk|httpx]

Figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
ZONE = "Europe/Stockholm"
Z = ZoneInfo(ZONE)
DAY = [0] * 7 + [1] * 14 + [0] * 3
TOU = {"label": "bench-tou", "name": "Bench TOU", "energyratestructure": [[{"rate": 0.08}], [{"rate": 0.21}]],
       "energyweekdayschedule": [DAY] * 12, "energyweekendschedule": [[0] * 24] * 12,
       "wattline": {"timezone": ZONE, "currency": "SEK"}}


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def build_site(url: str, meters: int, days: int) -> dict:
    from app import rollups
    from app.apikeys import issue_key
    from app.tariffs import import_tariff
    from jobs import billing

    start = dt.datetime(2025, 1, 1, tzinfo=Z)
    end = start + dt.timedelta(days=days)
    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        rollups.rebuild(conn, ZONE)
        cat = conn.execute("INSERT INTO config.energy_category (name, unit) VALUES ('electricity', 'kWh') "
                           "RETURNING id").fetchone()[0]
        items = [conn.execute("INSERT INTO config.energy_item (category_id, name) VALUES (%s, %s) RETURNING id",
                              (cat, n)).fetchone()[0] for n in ("lighting", "hvac")]
        cc = conn.execute("INSERT INTO config.cost_center (name) VALUES ('site') RETURNING id").fetchone()[0]
        site = conn.execute("INSERT INTO config.space (name, kind, area_m2) VALUES ('Site', 'site', 60000) "
                            "RETURNING id").fetchone()[0]
        conn.execute("INSERT INTO config.space (name, parent_id, kind, area_m2) "
                     "SELECT 'B' || b, %s, 'building', 12000 FROM generate_series(1, 5) b", (site,))
        conn.execute("INSERT INTO config.space (name, parent_id, kind) SELECT 'F' || f, s.id, 'floor' "
                     "FROM config.space s, generate_series(1, 10) f WHERE s.parent_id = %s", (site,))
        conn.execute("INSERT INTO config.meter (name, category_id, item_id, cost_center_id) "
                     "SELECT 'm' || i, %s, (%s::int[])[1 + i %% 2], %s FROM generate_series(1, %s) i",
                     (cat, items, cc, meters))
        conn.execute("INSERT INTO config.space_meter (space_id, meter_id) "
                     "SELECT f.id, m.id FROM (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM config.space "
                     "WHERE kind = 'floor') f JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n "
                     "FROM config.meter) m ON m.n % 50 = f.n")
        tariff = import_tariff(conn, TOU)
        conn.execute("INSERT INTO config.tariff_assignment (tariff_id, category_id, cost_center_id) "
                     "VALUES (%s, %s, %s)", (tariff, cat, cc))
        key = issue_key(conn, "bench", ["read"]).secret
        t = start
        while t < end:
            nxt = min(end, t + dt.timedelta(days=30))
            conn.execute(
                "INSERT INTO energy.meter_interval (meter_id, ts, energy, quality) "
                "SELECT m.id, ts, 0.6 + 0.4 * sin(pi() * extract(hour FROM ts) / 24) "
                "       + ((m.id * 7919 + extract(epoch FROM ts)::bigint / 900) %% 101) / 100.0, 1 "
                "FROM config.meter m, generate_series(%s::timestamptz, %s::timestamptz - interval '15 minutes', "
                "interval '15 minutes') ts", (t, nxt))
            t = nxt
        conn.execute("ANALYZE energy.meter_interval")
        t_data = time.perf_counter()
        with conn.transaction():
            rollups.refresh_meter_rollups(conn, start, end)
            rollups.refresh_entity_rollups(conn, start, end)
        t_roll = time.perf_counter()
        with conn.transaction():
            billing.run(conn, start, end)
        t_bill = time.perf_counter()
        conn.execute("ANALYZE")
        rows = conn.execute("SELECT count(*) FROM energy.meter_interval").fetchone()[0]
    print(f"site: {meters} meters, {days} days, {rows:,} intervals; data {t_data - t0:.0f} s, "
          f"rollups {t_roll - t_data:.0f} s, billing {t_bill - t_roll:.0f} s", flush=True)
    return {"site": site, "key": key, "buildings": None}


def latency(url: str, site: int, runs: int) -> list[tuple[str, float, float, int]]:
    from app.reports import engine, params

    cases = [
        ("energy, site, day, June", dict(metric="energy", granularity="day", start="2025-06-01", end="2025-06-30")),
        ("energy, site, day, June, compare=previous",
         dict(metric="energy", granularity="day", start="2025-06-01", end="2025-06-30", compare="previous")),
        ("energy, site, day, June, by=child", dict(metric="energy", granularity="day", start="2025-06-01",
                                                    end="2025-06-30", by="child")),
        ("cost, site, day, June", dict(metric="cost", granularity="day", start="2025-06-01", end="2025-06-30")),
        ("cost, site, day, June, by=tou_period",
         dict(metric="cost", granularity="day", start="2025-06-01", end="2025-06-30", by="tou_period")),
        ("energy, site, month, 2025", dict(metric="energy", granularity="month", start="2025-01-01",
                                           end="2025-12-31")),
        ("cost, site, month, 2025, by=tou_period",
         dict(metric="cost", granularity="month", start="2025-01-01", end="2025-12-31", by="tou_period")),
    ]
    out = []
    with psycopg.connect(url, autocommit=True) as conn:
        for label, kw in cases:
            p = params.parse(entity="space", entity_id=site, zone=ZONE, **kw)
            engine.build(conn, p)  # warm
            n = runs
            times = []
            for _ in range(n):
                t = time.perf_counter()
                engine.build(conn, p)
                times.append((time.perf_counter() - t) * 1000)
            out.append((label, statistics.median(times), pct(times, 99), n))
            print(f"  {label:<45} p50 {statistics.median(times):7.1f} ms  p99 {pct(times, 99):7.1f} ms  (n={n})",
                  flush=True)
    return out


# ----------------------------------------------------------------------- load client
async def _client_loop(client, base: str, key: str, site: int, deadline: float, stats: dict, rnd: random.Random):
    months = [f"2025-{m:02d}" for m in range(1, 13)]
    while time.perf_counter() < deadline:
        kind = "live" if rnd.random() < 0.25 else "report"
        if kind == "live":
            url, q = f"{base}/api/v1/live/data-sources", {}
        else:
            m = rnd.choice(months)
            y, mo = map(int, m.split("-"))
            last = (dt.date(y + mo // 12, mo % 12 + 1, 1) - dt.timedelta(days=1)).isoformat()
            metric = rnd.choice(["energy", "energy", "cost"])
            url = f"{base}/api/v1/reports/{metric}"
            q = {"entity": "space", "id": site, "granularity": "day", "from": f"{m}-01", "to": last}
        t = time.perf_counter()
        try:
            r = await client.get(url, params=q, headers={"X-API-Key": key})
            ok = r.status_code == 200
            if not ok and len(stats["samples"]) < 5:
                stats["samples"].append(f"{r.status_code} {r.text[:200]}")
        except Exception as exc:  # noqa: BLE001 - counted as an error
            ok = False
            if len(stats["samples"]) < 5:
                stats["samples"].append(repr(exc))
        ms = (time.perf_counter() - t) * 1000
        if time.perf_counter() <= deadline:
            stats[kind].append(ms)
            if not ok:
                stats["errors"] += 1


async def _load(base: str, key: str, site: int, clients: int, seconds: float) -> dict:
    import httpx

    stats = {"report": [], "live": [], "errors": 0, "samples": []}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        t0 = time.perf_counter()
        deadline = t0 + seconds
        await asyncio.gather(*[_client_loop(client, base, key, site, deadline, stats, random.Random(i))
                               for i in range(clients)])
        elapsed = time.perf_counter() - t0
    allr = stats["report"] + stats["live"]
    return {"seconds": elapsed, "requests": len(allr), "reports": len(stats["report"]), "live": len(stats["live"]),
            "errors": stats["errors"], "rps": len(allr) / elapsed, "reports_per_s": len(stats["report"]) / elapsed,
            "p50_ms": statistics.median(allr) if allr else None, "p99_ms": pct(allr, 99) if allr else None,
            "report_p99_ms": pct(stats["report"], 99) if stats["report"] else None, "samples": stats["samples"]}


WRK_SCRIPT = """
wrk.headers["X-API-Key"] = "%(key)s"
local paths = {%(paths)s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK {"requests": %%d, "duration_us": %%d, "status_errors": %%d, "socket_errors": %%d, '
    .. '"p50_us": %%d, "p99_us": %%d, "max_us": %%d}\\n', summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def mixed_paths(site: int, mix: str = "cost") -> list[str]:
    """Three reports (the site's daily report for a month: energy, cost, energy — or energy
    only with mix='energy') to one live read."""
    paths = []
    for k, m in enumerate(range(1, 13)):
        last = (dt.date(2025 + m // 12, m % 12 + 1, 1) - dt.timedelta(days=1)).isoformat()
        for metric in ("energy", "cost" if mix == "cost" else "energy", "energy"):
            paths.append(f"/api/v1/reports/{metric}?entity=space&id={site}&granularity=day"
                         f"&from=2025-{m:02d}-01&to={last}")
        paths.append("/api/v1/live/data-sources")
    return paths


def wrk_load(base: str, key: str, site: int, clients: int, seconds: float, mix: str = "cost") -> dict:
    """The load run with wrk (a separate process, C, light on the shared CPU)."""
    import tempfile

    paths = mixed_paths(site, mix)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT % {"key": key, "paths": ", ".join(json.dumps(x) for x in paths)})
    try:
        out = subprocess.run(["wrk", "-t2", f"-c{clients}", f"-d{int(seconds)}s", "--timeout", "10s", "-s", f.name,
                              base], capture_output=True, text=True, timeout=seconds + 60)
    finally:
        os.unlink(f.name)
    line = next((x for x in out.stdout.splitlines() if x.startswith("WRK ")), None)
    if line is None:
        raise RuntimeError(out.stdout[-2000:] + out.stderr[-2000:])
    r = json.loads(line[4:])
    secs = r["duration_us"] / 1e6
    reports = r["requests"] * 3 // 4
    return {"seconds": secs, "requests": r["requests"], "reports": reports, "live": r["requests"] - reports,
            "errors": r["status_errors"] + r["socket_errors"], "rps": r["requests"] / secs,
            "reports_per_s": reports / secs, "p50_ms": r["p50_us"] / 1000, "p99_ms": r["p99_us"] / 1000,
            "report_p99_ms": float("nan"), "samples": [], "client": "wrk"}


def load_client_main(argv: list[str]) -> None:
    """Entry point of the separate client process: prints one JSON line."""
    base, key, site, clients, seconds = argv[0], argv[1], int(argv[2]), int(argv[3]), float(argv[4])
    print(json.dumps(asyncio.run(_load(base, key, site, clients, seconds))))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load(url: str, key: str, site: int, clients: int, seconds: float, workers: int, client: str,
         mix: str = "cost") -> dict:
    port = free_port()
    env = {**os.environ, "WATTLINE_DATABASE_URL": url, "WATTLINE_REPORTING_TIMEZONE": ZONE,
           "WATTLINE_LOG_LEVEL": "WARNING"}
    wattline = Path(sys.executable).with_name("wattline")
    command = [str(wattline)] if wattline.exists() else [sys.executable, "-m", "app.cli"]
    server = subprocess.Popen(command + ["api", "--host", "127.0.0.1", "--port", str(port),
                               "--workers", str(workers)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        import httpx

        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("the API did not start: " + (server.stderr.read(4000).decode()
                                                                 if server.poll() is not None else "timeout"))
            time.sleep(0.5)
        if client == "wrk":
            return wrk_load(f"http://127.0.0.1:{port}", key, site, clients, seconds, mix)
        out = subprocess.run([sys.executable, __file__, "--client", f"http://127.0.0.1:{port}", key, str(site),
                              str(clients), str(seconds)], cwd=ROOT, capture_output=True, text=True,
                             timeout=seconds + 120)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-2000:])
        return {**json.loads(out.stdout.strip().splitlines()[-1]), "client": "httpx"}
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        load_client_main(sys.argv[2:])
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--meters", type=int, default=500)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--workers", type=int, default=1, help="API processes (default: 1, as `wattline api`)")
    ap.add_argument("--database", help="reuse a bench database built earlier with --keep")
    ap.add_argument("--keep", action="store_true", help="keep the database (prints its name)")
    ap.add_argument("--no-load", action="store_true")
    ap.add_argument("--no-latency", action="store_true")
    ap.add_argument("--client", choices=("wrk", "httpx"), default="wrk" if shutil.which("wrk") else "httpx",
                    help="load client: wrk (Debian package) or a Python asyncio/httpx process")
    ap.add_argument("--mix", choices=("cost", "energy"), default="cost",
                    help="reports in the load run: energy+cost (default) or energy only (wrk client)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    os.environ["WATTLINE_REPORTING_TIMEZONE"] = ZONE
    from app.embedded import get_cluster

    server = get_cluster().url("postgres")
    name = args.database or f"wattline_bench_reports_{uuid.uuid4().hex[:8]}"
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    created = not args.database
    if created:
        with psycopg.connect(server, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
    try:
        if created:
            from app import migrate

            migrate.upgrade(url=url)
            info = build_site(url, args.meters, args.days)
            site, key = info["site"], info["key"]
        else:
            from app.apikeys import issue_key

            with psycopg.connect(url, autocommit=True) as conn:
                site = conn.execute("SELECT id FROM config.space WHERE parent_id IS NULL").fetchone()[0]
                key = issue_key(conn, f"bench {uuid.uuid4().hex[:6]}", ["read"]).secret
        if not args.no_latency:
            print("latency (in process, engine.build, one connection):", flush=True)
            latency(url, site, args.runs)
        if not args.no_load:
            r = load(url, key, site, args.clients, args.seconds, args.workers, args.client, args.mix)
            print(f"load ({r['client']}, mix {args.mix}): {args.clients} clients, {r['seconds']:.0f} s, `wattline api --workers "
                  f"{args.workers}`: {r['requests']:,} requests ({r['rps']:.0f}/s), {r['reports']:,} reports "
                  f"({r['reports_per_s']:.0f}/s), {r['live']:,} live reads; p50 {r['p50_ms']:.0f} ms, "
                  f"p99 {r['p99_ms']:.0f} ms; errors {r['errors']}")
            for s in r["samples"]:
                print("  error sample:", s)
    finally:
        if args.keep or not created:
            print(f"database kept: {name}")
        else:
            with psycopg.connect(server, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
