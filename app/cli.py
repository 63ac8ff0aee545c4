"""The `wattline` command.

Core commands (db, site, run) live here. Collectors and jobs add theirs through the
`wattline.commands` entry point group (each names a `register(app)` function), so the
core never imports them and the dependency arrows point one way.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import typer

from app import PROJECT_ROOT
from app.settings import get_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Wattline energy management.")
db_app = typer.Typer(no_args_is_help=True, help="The database: provision, run, migrate.")
site_app = typer.Typer(no_args_is_help=True, help="Site configuration as code (YAML).")
app.add_typer(db_app, name="db")
app.add_typer(site_app, name="site")


def fail(message: str, code: int = 1) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _cluster():
    from app.embedded import get_cluster

    return get_cluster()


def _embedded_in_use() -> bool:
    return not get_settings().database_url


# --------------------------------------------------------------------------- db
@db_app.command("install")
def db_install() -> None:
    """Install PostgreSQL with TimescaleDB for this system (idempotent)."""
    res = subprocess.run(["bash", str(PROJECT_ROOT / "scripts" / "install-system.sh")])
    raise typer.Exit(res.returncode)


@db_app.command("start")
def db_start() -> None:
    """Initialise (first time) and start the embedded cluster."""
    from app.embedded import EmbeddedError

    if not _embedded_in_use():
        typer.echo("WATTLINE_DATABASE_URL is set: the embedded cluster is not used.")
    try:
        cluster = _cluster()
        cluster.start()
    except EmbeddedError as exc:
        fail(str(exc))
    typer.echo(cluster.status())


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded cluster."""
    cluster = _cluster()
    cluster.stop()
    typer.echo(cluster.status())


@db_app.command("status")
def db_status() -> None:
    """Say whether the embedded cluster is initialised and running."""
    typer.echo(_cluster().status())
    if not _embedded_in_use():
        from app.db import database_url, redact

        typer.echo(f"in use instead: {redact(database_url())}")


@db_app.command("url")
def db_url(
    show_password: bool = typer.Option(False, "--show-password", help="Print the secret too."),
) -> None:
    """Print the database URL in use (password masked unless asked)."""
    from app.db import database_url, redact

    url = database_url()
    typer.echo(url if show_password else redact(url))


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Apply migrations up to REVISION (default: head)."""
    from app import migrate

    migrate.upgrade(revision)
    typer.echo(f"database at revision {migrate.current_revision()}")


@db_app.command("downgrade")
def db_downgrade(revision: str = typer.Argument(..., help="Target revision, -1, or base.")) -> None:
    """Revert migrations down to REVISION."""
    from app import migrate

    migrate.downgrade(revision)
    typer.echo(f"database at revision {migrate.current_revision()}")


@db_app.command("rebuild-rollups")
def db_rebuild_rollups(
    zone: str | None = typer.Option(None, "--zone", help="IANA zone (default: WATTLINE_REPORTING_TIMEZONE)."),
) -> None:
    """Rebuild every rollup in the reporting time zone (after changing it)."""
    from app.db import connect
    from app.rollups import rebuild

    with connect(autocommit=True) as conn:
        result = rebuild(conn, zone)
    typer.echo(f"rollups rebuilt in {result['zone']} ({result['materialisation']}): "
               f"{result['meter_rows']} meter rows, {result['entity_rows']} entity rows; "
               "offline values are re-spread by the next `offline` run")


@db_app.command("reader-password")
def db_reader_password(
    password: str | None = typer.Option(None, "--password", envvar="WATTLINE_GRAFANA_DB_PASSWORD",
                                        help="Use this password (default: a new random one)."),
) -> None:
    """Let the read-only role wattline_reader log in (Grafana); print its settings."""
    from app.db import connect, database_url
    from app.grafana import ReaderRoleMissing, grafana_env, set_reader_password

    try:
        with connect() as conn:
            password = set_reader_password(conn, password)
    except ReaderRoleMissing as exc:
        fail(str(exc))
    for name, value in grafana_env(database_url(), password).items():
        typer.echo(f"{name}={value}")


@db_app.command("info")
def db_info() -> None:
    """PostgreSQL and TimescaleDB versions, the edition and the schema revision."""
    from app import migrate
    from app.db import connect, database_url, redact, timescale_info

    with connect() as conn:
        info = timescale_info(conn)
    typer.echo(f"database:    {redact(database_url())}")
    typer.echo(f"postgresql:  {info['postgresql']}")
    typer.echo(f"timescaledb: {info['timescaledb']}")
    typer.echo(f"edition:     {info['edition']}")
    typer.echo(f"revision:    {migrate.current_revision()} (head {migrate.head_revision()})")


# ------------------------------------------------------------------------- site
@site_app.command("import")
def site_import(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and report, write nothing."),
) -> None:
    """Create or update everything the YAML file describes, in one transaction."""
    from app.site import SiteFileError, import_site_file

    try:
        report = import_site_file(file, dry_run=dry_run)
    except SiteFileError as exc:
        fail(str(exc), code=2)
    typer.echo(report.summary())


@site_app.command("export")
def site_export(
    file: Path | None = typer.Argument(None, help="Output file (default: standard output)."),
) -> None:
    """Write the whole configuration in the import format."""
    from app.site import export_site_yaml

    text = export_site_yaml()
    if file is None:
        sys.stdout.write(text)
    else:
        file.write_text(text)
        typer.echo(f"wrote {file}")


# ----------------------------------------------------------------------- carbon
carbon_app = typer.Typer(no_args_is_help=True, help="Emission factors and grid intensity series.")
carbon_factors_app = typer.Typer(no_args_is_help=True, help="Static emission factors (CSV or YAML).")
carbon_intensity_app = typer.Typer(no_args_is_help=True, help="Time-varying grid intensity (CSV).")
app.add_typer(carbon_app, name="carbon")
carbon_app.add_typer(carbon_factors_app, name="factors")
carbon_app.add_typer(carbon_intensity_app, name="intensity")


@carbon_factors_app.command("import")
def carbon_factors_import(file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True)) -> None:
    """Import emission factors; the whole file is checked first, nothing partial is written."""
    from app.carbon import CarbonFileError, import_factor_file

    try:
        typer.echo(import_factor_file(file).summary())
    except CarbonFileError as exc:
        fail(str(exc), code=2)


@carbon_intensity_app.command("import")
def carbon_intensity_import(file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True)) -> None:
    """Import a grid intensity series (kgCO2e/kWh per 15/30/60-minute period)."""
    from app.carbon import CarbonFileError, import_intensity_file

    try:
        typer.echo(import_intensity_file(file).summary())
    except CarbonFileError as exc:
        fail(str(exc), code=2)


# ------------------------------------------------------------------------- demo
demo_app = typer.Typer(no_args_is_help=True, help="The demo campus.")
app.add_typer(demo_app, name="demo")


@demo_app.command("load")
def demo_load() -> None:
    """Load the demo's tariffs, site and emission factors (idempotent)."""
    from app.demo import load_demo

    for line in load_demo():
        typer.echo(line)


# -------------------------------------------------------------------------- run
@app.command("run")
def run(
    site_file: Path = typer.Option(PROJECT_ROOT / "examples" / "demo-site.yaml", "--site"),
    history_days: float = typer.Option(90, "--history-days", min=0, help="Simulated history to backfill."),
    api_port: int = typer.Option(8000, "--api-port"),
) -> None:
    """Start Wattline on its embedded default: database, demo, history, then the running
    stack (simulator, collectors, jobs, API) until Ctrl-C."""
    from app.runner import run_stack

    available = {c.name or c.callback.__name__ for c in app.registered_commands}
    available |= {g.name for g in app.registered_groups}
    run_stack(site_file, available=available, api_port=api_port, history_days=history_days)


# ------------------------------------------------------------------------ tariffs
tariff_app = typer.Typer(no_args_is_help=True, help="Tariffs (OpenEI URDB JSON plus Wattline extensions).")
app.add_typer(tariff_app, name="tariff")


def _tariff_file(file: Path):
    import json

    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        fail(f"{file}: not JSON: {exc}", code=2)


@tariff_app.command("import")
def tariff_import(file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True)) -> None:
    """Validate and store a URDB tariff (one object or an API response {"items": [...]})."""
    from app.db import connect
    from app.tariffs import TariffError, import_tariff

    try:
        with connect() as conn:
            ids = import_tariff(conn, _tariff_file(file))
    except TariffError as exc:
        fail(f"{file}: {exc}", code=2)
    typer.echo(f"stored tariff id(s): {ids}")


@tariff_app.command("validate")
def tariff_validate(file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True)) -> None:
    """Check a tariff file and list every problem; store nothing."""
    from app.tariffs import TariffError, validate_all

    try:
        tariffs = validate_all(_tariff_file(file))
    except TariffError as exc:
        fail(f"{file}: {exc}", code=2)
    typer.echo(f"{file}: {len(tariffs)} valid tariff(s): " + ", ".join(t.stored_label for t in tariffs))


@tariff_app.command("list")
def tariff_list() -> None:
    """Stored tariffs: id, label, name, zone, currency, validity, version."""
    from app.db import connect
    from app.tariffs import list_tariffs

    with connect() as conn:
        for row in list_tariffs(conn):
            typer.echo("\t".join(str(v) for v in row))


# ----------------------------------------------------------------------- api keys
apikey_app = typer.Typer(no_args_is_help=True, help="API keys for machines calling the HTTP API.")
app.add_typer(apikey_app, name="apikey")


@apikey_app.command("create")
def apikey_create(
    scope: list[str] = typer.Option(..., "--scope", help="read, write or ingest (repeat for several)."),
    name: str = typer.Option("api key", "--name", help="Who or what uses the key."),
    expires: float | None = typer.Option(None, "--expires", help="Expire after DAYS days (default: never)."),
    data_source: str | None = typer.Option(None, "--data-source", help="Only this data source's points (ingest)."),
) -> None:
    """Issue a key and print it once: only its hash is stored."""
    from app.apikeys import issue_key
    from app.db import connect

    with connect() as conn:
        source_id = None
        if data_source is not None:
            row = conn.execute("SELECT id FROM config.data_source WHERE name = %s", (data_source,)).fetchone()
            if row is None:
                fail(f"--data-source: no data source named {data_source!r}", code=2)
            source_id = row[0]
        try:
            issued = issue_key(conn, name, scope, expires_in_days=expires, data_source_id=source_id)
        except ValueError as exc:
            fail(str(exc), code=2)
    expiry = issued.key.expires_at.isoformat() if issued.key.expires_at else "never"
    typer.echo(f"key id {issued.key.id} ({', '.join(issued.key.scopes)}; expires {expiry}); store it now:", err=True)
    typer.echo(issued.secret)


@apikey_app.command("list")
def apikey_list() -> None:
    """Every key: id, name, scopes, expiry, revocation, last use (never the secret)."""
    from app.apikeys import list_keys
    from app.db import connect

    with connect() as conn:
        for k in list_keys(conn):
            state = "revoked" if k["revoked_at"] else f"expires {k['expires_at'] or 'never'}"
            typer.echo(f"{k['id']:>4}  wl_{k['prefix']}_…  {','.join(k['scopes']):<18} {state}  "
                       f"last used {k['last_used_at'] or 'never'}  {k['name']}")


@apikey_app.command("revoke")
def apikey_revoke(key_id: int = typer.Argument(..., help="The key's id (see `wattline apikey list`).")) -> None:
    """Revoke a key at once."""
    from app.apikeys import revoke_key
    from app.db import connect

    with connect() as conn:
        if not revoke_key(conn, key_id):
            fail(f"no active key with id {key_id}")
    typer.echo(f"key {key_id} revoked")


# -------------------------------------------------------------------------- users
user_app = typer.Typer(no_args_is_help=True, help="People who log in to the API.")
app.add_typer(user_app, name="user")


@user_app.command("create")
def user_create(
    username: str = typer.Option(..., "--username", help="Login name."),
    role: str = typer.Option("viewer", "--role", help="admin, engineer or viewer."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin."),
) -> None:
    """Create a user; without --password-stdin a password is generated and printed once."""
    from app import audit
    from app.db import connect
    from app.users import create_user

    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else None
    with connect() as conn:
        try:
            user, password = create_user(conn, username, role, password)
        except ValueError as exc:
            fail(str(exc), code=2)
        audit.record(conn, "cli", "create", "user", user.id, None,
                     {"id": user.id, "username": user.username, "role": user.role})
        conn.commit()
    typer.echo(f"user {user.username} ({user.role}) created with id {user.id}", err=True)
    if not password_stdin:
        typer.echo("generated password, shown once:", err=True)
        typer.echo(password)


# -------------------------------------------------------------------------- api
@app.command("api")
def api(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    workers: int = typer.Option(1, "--workers", min=1),
) -> None:
    """Serve the HTTP API (push ingest, health) with uvicorn."""
    import uvicorn

    uvicorn.run("app.api:create_app", factory=True, host=host, port=port, workers=workers,
                log_level=get_settings().log_level.lower())


def _register_plugins() -> None:
    for ep in entry_points(group="wattline.commands"):
        try:
            ep.load()(app)
        except Exception as exc:  # a broken plugin must not take the core CLI down
            logging.getLogger("wattline.cli").warning("command plugin %s failed to load: %s", ep.name, exc)


def main() -> None:
    get_settings()  # invalid settings fail here, naming the variable
    logging.basicConfig(
        level=get_settings().log_level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    _register_plugins()
    app()


if __name__ == "__main__":
    main()
