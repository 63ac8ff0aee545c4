"""RFC 9457 problem documents: one exception per kind of problem, with a stable `type`
URI and title, so clients can branch on the kind and show `detail` to people."""

from __future__ import annotations

from typing import Any

import psycopg
from litestar.plugins.problem_details import ProblemDetailsException
from psycopg_pool import PoolTimeout

PROBLEM_BASE = "https://wattline.org/problems/"


def problem(status: int, kind: str, title: str, detail: str, headers: dict[str, str] | None = None,
            **extra: Any) -> ProblemDetailsException:
    return ProblemDetailsException(
        status_code=status, type_=PROBLEM_BASE + kind, title=title, detail=detail,
        headers=headers, extra=extra or None,
    )


def _database_unavailable(exc: Exception) -> ProblemDetailsException:
    return problem(503, "database-unavailable", "Database unavailable",
                   "the database cannot be reached right now; retry later", headers={"Retry-After": "5"})


def _invalid_value(exc: Exception) -> ProblemDetailsException:
    # A value the database cannot hold (an id beyond integer range, a malformed timestamp…)
    # that reached a query: the caller's mistake, not the server's.
    diag = getattr(exc, "diag", None)
    message = (diag.message_primary if diag is not None else None) or "invalid value"
    return problem(422, "invalid-value", "Invalid value", message)


EXCEPTION_MAP = {
    PoolTimeout: _database_unavailable,
    psycopg.OperationalError: _database_unavailable,
    psycopg.DataError: _invalid_value,
}
