"""The embedded cluster: provisioned from nothing, password-only, loopback-only, and
managed by the `wattline db` commands."""

import os
import shutil
import socket
import stat
import subprocess
import sys

import psycopg
import pytest

from app.embedded import Cluster, EmbeddedError, _free_port
from app.settings import Settings
from cluster_helpers import discard, remove_home


@pytest.fixture
def cluster(tmp_path):
    settings = Settings(data_dir=tmp_path / "var", embedded_port=_free_port(56500), database_url=None)
    c = Cluster(settings)
    yield c
    discard(c)


def _wattline(env, *args):
    return subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, capture_output=True, text=True)


def test_cluster_lifecycle_and_security(cluster):
    assert "not initialised" in cluster.status()
    cluster.start()
    assert cluster.running()
    assert "running" in cluster.status()

    # the secret is readable by its owner only
    mode = stat.S_IMODE(os.stat(cluster.secret_file).st_mode)
    assert mode == 0o600

    # password authentication works, a wrong password does not, and nothing trusts
    with psycopg.connect(cluster.url()) as conn:
        assert conn.execute("SELECT current_setting('shared_preload_libraries')").fetchone()[0] == "timescaledb"
        assert conn.execute("SELECT current_setting('listen_addresses')").fetchone()[0] == "127.0.0.1"
        methods = {r[0] for r in conn.execute("SELECT auth_method FROM pg_hba_file_rules")}
        assert methods == {"scram-sha-256"}
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    wrong = cluster.url().replace(cluster.password(), "not-the-secret")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong)
    # no Unix socket to walk in through
    assert not list(cluster.pgdata.glob(".s.PGSQL.*"))

    cluster.start()  # idempotent
    cluster.stop()
    assert not cluster.running()
    assert "stopped" in cluster.status()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(cluster.url(), connect_timeout=2)
    cluster.start()  # restarts on the same data and port
    with psycopg.connect(cluster.url()) as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1


def test_db_commands_manage_the_cluster(tmp_path):
    port = _free_port(56700)
    env = {**os.environ, "WATTLINE_DATA_DIR": str(tmp_path / "var"), "WATTLINE_EMBEDDED_PORT": str(port)}
    env.pop("WATTLINE_DATABASE_URL", None)
    try:
        res = _wattline(env, "db", "start")
        assert res.returncode == 0, res.stderr
        assert "running" in res.stdout
        res = _wattline(env, "db", "url")
        assert f"127.0.0.1:{port}/wattline" in res.stdout and "***" in res.stdout
        res = _wattline(env, "db", "upgrade")
        assert res.returncode == 0, res.stderr
        res = _wattline(env, "db", "info")
        assert res.returncode == 0, res.stderr
        assert "edition:" in res.stdout and ("apache" in res.stdout or "timescale" in res.stdout)
        assert "timescaledb: 2." in res.stdout
    finally:
        res = _wattline(env, "db", "stop")
        discard(Cluster(Settings(data_dir=tmp_path / "var", embedded_port=port, database_url=None)))
    assert "stopped" in res.stdout
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_a_data_dir_recreated_at_the_same_path_gets_its_own_cluster(tmp_path):
    """As root with a data dir `postgres` cannot reach, the cluster lives elsewhere; a wiped
    and re-created data dir (or a reused temporary path) must not meet the old one."""
    settings = Settings(data_dir=tmp_path / "var", embedded_port=_free_port(56600), database_url=None)
    first = Cluster(settings)
    first.start()
    first.stop()
    old_home = first.base
    shutil.rmtree(settings.data_dir)  # the old cluster, if it lived outside, stays behind
    second = Cluster(settings)
    try:
        second.start()
        with psycopg.connect(second.url()) as conn:
            assert conn.execute("SELECT 1").fetchone()[0] == 1
    finally:
        discard(second)
        remove_home(old_home)


def test_a_cluster_without_its_secret_is_named_not_overwritten(cluster):
    cluster.start()
    cluster.stop()
    cluster.secret_file.unlink()
    with pytest.raises(EmbeddedError, match="secret .* is missing"):
        cluster.start()
    assert (cluster.pgdata / "PG_VERSION").exists()


def test_invalid_setting_names_the_variable(tmp_path):
    env = {**os.environ, "WATTLINE_REPORTING_TIMEZONE": "Mars/Olympus"}
    res = _wattline(env, "db", "status")
    assert res.returncode == 2
    assert "WATTLINE_REPORTING_TIMEZONE" in res.stderr and "Mars/Olympus" in res.stderr
    env = {**os.environ, "WATTLINE_DATABASE_URL": "mysql://x"}
    res = _wattline(env, "db", "status")
    assert res.returncode == 2 and "WATTLINE_DATABASE_URL" in res.stderr
