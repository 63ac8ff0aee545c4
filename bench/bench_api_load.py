"""Benchmark: the HTTP API under load, with the CPU each request costs.

On a shared machine requests/s mostly measures the neighbours, so besides wrk's
throughput and latency this reports the CPU time the API worker processes and their
database backends spent per request (from /proc, before and after the run), which is
what the API's own changes move.

Uses a database built by `bench/bench_reports.py --keep` (its site and a new read key):

    .venv/bin/python bench/bench_api_load.py --database NAME [--workers 2] [--clients 200]
        [--seconds 30] [--mix energy|cost|live|report] [--repeat 1] [--port 0]

mix: energy — three energy reports to one live read (as bench_reports.py --mix energy);
cost — energy, cost, energy + live; report — energy reports only; live — live reads only.
`--port` uses an API already running there instead of starting one (no CPU split then).
Figures: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_reports import WRK_SCRIPT, ZONE, free_port, mixed_paths  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += int(fields[11]) + int(fields[12])   # utime + stime
    return total / TICK


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    kids = [int(x) for x in out.split()]
    return kids + [g for k in kids for g in children(k)]


def backends(url: str, database: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [r[0] for r in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (database,))]


def paths_for(site: int, mix: str) -> list[str]:
    if mix == "live":
        return ["/api/v1/live/data-sources"]
    if mix == "report":
        return [p for p in mixed_paths(site, "energy") if "/reports/" in p]
    return mixed_paths(site, mix)


def wrk(base: str, key: str, paths: list[str], clients: int, seconds: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT % {"key": key, "paths": ", ".join(json.dumps(x) for x in paths)})
    try:
        out = subprocess.run(["wrk", "-t2", f"-c{clients}", f"-d{seconds}s", "--timeout", "10s", "-s", f.name, base],
                             capture_output=True, text=True, timeout=seconds + 60)
    finally:
        os.unlink(f.name)
    line = next((x for x in out.stdout.splitlines() if x.startswith("WRK ")), None)
    if line is None:
        raise RuntimeError(out.stdout[-2000:] + out.stderr[-2000:])
    return json.loads(line[4:])


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--database", required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--mix", choices=("energy", "cost", "live", "report"), default="energy")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--port", type=int, default=0, help="use an API already listening on this port")
    args = ap.parse_args()
    from app.apikeys import issue_key
    from app.embedded import get_cluster

    server_url = get_cluster().url("postgres")
    url = make_url(server_url).set(database=args.database).render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as conn:
        site = conn.execute("SELECT id FROM config.space WHERE parent_id IS NULL").fetchone()[0]
        key = issue_key(conn, f"bench-api {uuid.uuid4().hex[:6]}", ["read"]).secret
    paths = paths_for(site, args.mix)
    reports_share = sum("/reports/" in p for p in paths) / len(paths)

    server = None
    port = args.port
    if not port:
        port = free_port()
        env = {**os.environ, "WATTLINE_DATABASE_URL": url, "WATTLINE_REPORTING_TIMEZONE": ZONE,
               "WATTLINE_LOG_LEVEL": "WARNING"}
        wattline = Path(sys.executable).with_name("wattline")
        command = [str(wattline)] if wattline.exists() else [sys.executable, "-m", "app.cli"]
        server = subprocess.Popen(command + ["api", "--host", "127.0.0.1", "--port", str(port),
                                             "--workers", str(args.workers)],
                                  cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or (server is not None and server.poll() is not None):
                raise RuntimeError("the API did not start")
            time.sleep(0.3)
        wrk(base, key, paths, min(args.clients, 50), 3)        # warm: pools filled, statements prepared
        for _ in range(args.repeat):
            api_pids = [server.pid, *children(server.pid)] if server is not None else []
            db_pids = backends(server_url, args.database)
            before = (cpu_seconds(api_pids), cpu_seconds(db_pids), loadavg())
            r = wrk(base, key, paths, args.clients, args.seconds)
            api_cpu = cpu_seconds(api_pids) - before[0]
            db_cpu = cpu_seconds(db_pids) - before[1]
            secs = r["duration_us"] / 1e6
            n = r["requests"]
            out = {"workers": args.workers, "clients": args.clients, "mix": args.mix, "seconds": round(secs, 1),
                   "requests": n, "rps": round(n / secs, 1), "reports_per_s": round(n * reports_share / secs, 1),
                   "p50_ms": r["p50_us"] / 1000, "p99_ms": r["p99_us"] / 1000,
                   "errors": r["status_errors"] + r["socket_errors"],
                   "api_cpu_ms_per_request": round(api_cpu * 1000 / n, 2) if server is not None and n else None,
                   "db_cpu_ms_per_request": round(db_cpu * 1000 / n, 2) if n else None,
                   "load_before": before[2], "load_after": loadavg()}
            print(json.dumps(out), flush=True)
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    main()
