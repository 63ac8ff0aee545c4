"""One settings object for every Wattline process.

Read from WATTLINE_* environment variables and an optional `.env` file, validated once
at start so that a bad value fails with the variable's name instead of deep inside a job.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app import PROJECT_ROOT


class Settings(BaseSettings):
    """Runtime configuration; every field maps to WATTLINE_<FIELD>."""

    model_config = SettingsConfigDict(
        env_prefix="WATTLINE_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    database_url: str | None = Field(
        default=None,
        description="PostgreSQL/TimescaleDB URL. Unset: the embedded local cluster is used.",
    )
    data_dir: Path = Field(
        default=PROJECT_ROOT / "var",
        description="Where the embedded cluster, its secret, spool files and logs live.",
    )
    embedded_port: int | None = Field(
        default=None, ge=1024, le=65535,
        description="TCP port of the embedded cluster (loopback). Default: first free port from 55432.",
    )
    reporting_timezone: str = Field(
        default="UTC", description="IANA zone for reporting days and months, e.g. Europe/Stockholm."
    )
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")
    jwt_secret: SecretStr | None = Field(
        default=None,
        description="Key signing API access tokens (HS256). Unset: generated once into <data_dir>/jwt-secret.",
    )
    dirty_log_retention_hours: int = Field(
        default=1, ge=0,
        description="Hours a dirty-log entry is kept after every stage has consumed it (ops.dirty_range).",
    )
    job_run_retention_days: int = Field(
        default=90, ge=1, description="Days of pipeline run history kept in ops.job_run.",
    )
    cors_origins: str = Field(
        default="", description="Comma-separated origins allowed to call the API from a browser ('*': any)."
    )

    @field_validator("reporting_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
            raise ValueError("must start with postgresql:// (or postgresql+psycopg://)")
        return value

    @property
    def pg_dir(self) -> Path:
        return self.data_dir / "pg"


class SettingsError(SystemExit):
    """Raised (as an exit) when the environment holds an invalid setting."""


def describe_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "settings"
        lines.append(f"WATTLINE_{field.upper()}: {err['msg']} (got {err.get('input')!r})")
    return "invalid settings:\n  " + "\n  ".join(lines)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        print(describe_validation_error(exc), file=sys.stderr)
        raise SettingsError(2) from None
