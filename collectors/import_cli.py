"""`wattline import …`: readings, offline meters and data repairs from files."""

from __future__ import annotations

from pathlib import Path

import typer

TZ_NOTE = ("Times without an offset are local to the reporting time zone "
           "(WATTLINE_REPORTING_TIMEZONE, default UTC; --tz overrides).")

HELP = {
    "readings": (
        "Long-format CSV or XLSX: columns point (or meter), ts, value (header names tolerant: "
        "point/meter/name, ts/timestamp/time, value/reading). A meter name means its current point; "
        "a point is named by name or id. Values are engineering units unless --device-values. "
        "Readings already stored are kept. " + TZ_NOTE
    ),
    "offline": (
        "Offline meters' daily values in MyEMS's template (year in A2, month in B2, day numbers "
        "from D2; one row per offline meter: id, name, note, days 1-31). Days in the file replace "
        "the same days already stored; blank days are left as they are. Days are local days of "
        "the reporting time zone."
    ),
    "repair": (
        "Corrected register values in MyEMS's data-repair template (POINT ID, POINT NAME, DATE "
        "TIME LOCAL, ACTUAL VALUE after the ratio). Replaces each point's readings between its "
        "first and last time in the file and marks that range for recomputation. " + TZ_NOTE
    ),
}


def _run(fn, file: Path, **kwargs) -> None:
    from collectors.files import FileImportError

    try:
        report = fn(file, **kwargs)
    except FileImportError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    typer.echo(report.summary())


def register(app: typer.Typer) -> None:
    imports = typer.Typer(no_args_is_help=True, help="Import readings and offline data from files. " + TZ_NOTE)
    app.add_typer(imports, name="import")
    file_arg = typer.Argument(..., exists=True, dir_okay=False, readable=True)
    tz_opt = typer.Option(None, "--tz", help="IANA zone of local times in the file.")

    @imports.command("readings", help=HELP["readings"])
    def readings(
        file: Path = file_arg,
        tz: str | None = tz_opt,
        device_values: bool = typer.Option(
            False, "--device-values", help="Values are raw device values: apply each point's ratio and offset."),
    ) -> None:
        from collectors.files import import_readings

        _run(import_readings, file, tz=tz, apply_scaling=device_values)

    @imports.command("offline", help=HELP["offline"])
    def offline(file: Path = file_arg, tz: str | None = tz_opt) -> None:
        from collectors.files import import_offline

        _run(import_offline, file, tz=tz)

    @imports.command("repair", help=HELP["repair"])
    def repair(file: Path = file_arg, tz: str | None = tz_opt) -> None:
        from collectors.files import import_repair

        _run(import_repair, file, tz=tz)
