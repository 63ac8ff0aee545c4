"""The README's run command end to end: a private embedded cluster, the demo with a little
history, live readings from the simulator through the collectors, the API answering, a
clean stop on Ctrl-C, and a second run that reuses everything."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import psycopg
import pytest

from app.embedded import Cluster, _free_port
from app.settings import Settings
from cluster_helpers import discard

DEMO_PORTS = (15020, 15021, 15022, 18830)


def _start(env):
    return subprocess.Popen([sys.executable, "-m", "app.cli", "run", "--history-days", "0.25",
                             "--api-port", env["TEST_API_PORT"]],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _wait_for(proc, needle, timeout):
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        lines.append(line)
        if needle in line:
            return lines
    pytest.fail(f"{needle!r} not seen within {timeout}s:\n{''.join(lines[-60:])}")


def _stop(proc):
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    return proc.returncode, out


@pytest.fixture
def run_env(tmp_path):
    for port in DEMO_PORTS:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                pytest.skip(f"port {port} of the demo devices is in use on this machine")
    data = tmp_path / "var"
    env = {**os.environ, "WATTLINE_DATA_DIR": str(data), "WATTLINE_EMBEDDED_PORT": str(_free_port(57100)),
           "TEST_API_PORT": str(_free_port(58100)), "WATTLINE_LOG_LEVEL": "WARNING"}
    env.pop("WATTLINE_DATABASE_URL", None)
    yield env
    discard(Cluster(Settings(data_dir=data, embedded_port=int(env["WATTLINE_EMBEDDED_PORT"]))))


def test_run_twice_live_data_and_clean_stop(run_env):
    proc = _start(run_env)
    try:
        lines = _wait_for(proc, "running; press Ctrl-C", timeout=300)
        text = "".join(lines)
        assert "site:" in text and "history:" in text and "pipeline:" in text
        assert "admin:" in text and "WATTLINE_GRAFANA_DB_PASSWORD=" in text
        port = run_env["TEST_API_PORT"]
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        settings = Settings(data_dir=run_env["WATTLINE_DATA_DIR"],
                            embedded_port=int(run_env["WATTLINE_EMBEDDED_PORT"]))
        url = Cluster(settings).url()
        deadline = time.monotonic() + 90
        while True:   # live readings from the simulated devices arrive through the collectors
            with psycopg.connect(url) as conn:
                live = conn.execute("SELECT count(DISTINCT point_id) FROM raw.point_value "
                                    "WHERE ts > now() - interval '30 seconds'").fetchone()[0]
            if live >= 40 or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert live >= 40, "live readings did not arrive from the simulated Modbus and MQTT devices"
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM energy.meter_interval").fetchone()[0] > 0
    finally:
        code, out = _stop(proc)
    assert code == 0, out[-3000:]
    for name in ("api", "jobs", "collectors", "simulator"):
        assert f"stopped:   {name}" in out

    second = _start(run_env)
    try:
        lines = _wait_for(second, "running; press Ctrl-C", timeout=300)
        assert "no changes" in "".join(lines)
    finally:
        code, out = _stop(second)
    assert code == 0, out[-3000:]
