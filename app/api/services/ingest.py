"""Push ingest: a batch of readings, validated whole, then written in one transaction.

Bodies are JSON (a list of {"point", "ts", "value"} or {"readings": [...]}) or CSV with
the header `point,ts,value`. A point is named by its HTTP key, its name or its id, among
the points of `http` data sources (only the key's own data source when the key is bound
to one). Timestamps are ISO 8601 (naive = UTC) or epoch seconds/milliseconds. Values
are device values: the point's ratio and offset are applied and limits flagged, exactly
as for the other collectors.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass

import psycopg

from app.api.problems import problem
from app.apikeys import ApiKey
from app.ingest import InputError, PointDirectory, RawReading, prepare_readings
from app.readings import write_readings

MAX_ERRORS_LISTED = 1000
CSV_COLUMNS = ("point", "ts", "value")


@dataclass
class IngestResult:
    accepted: int     # new readings stored
    duplicates: int   # readings already stored for that point and instant (dropped)


def parse_body(body: bytes, content_type: str) -> list[RawReading]:
    media = content_type.split(";")[0].strip().lower()
    if media in ("application/json", "") or media.endswith("+json"):
        return _json_rows(body)
    if media in ("text/csv", "application/csv"):
        return _csv_rows(body)
    raise problem(415, "unsupported-media-type", "Unsupported media type",
                  f"send application/json or text/csv, not {media!r}")


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise problem(400, "malformed-body", "Malformed body", f"body is not UTF-8 (byte {exc.start})") from None


def _json_rows(body: bytes) -> list[RawReading]:
    try:
        data = json.loads(_text(body))
    except ValueError as exc:
        raise problem(400, "malformed-body", "Malformed body", f"invalid JSON: {exc}") from None
    if isinstance(data, dict) and "readings" in data:
        data = data["readings"]
    if not isinstance(data, list):
        raise problem(400, "malformed-body", "Malformed body",
                      'expected a JSON array of readings or {"readings": [...]}')
    rows = []
    for i, item in enumerate(data, start=1):
        if not isinstance(item, dict):
            item = {"point": None, "ts": None, "value": None, "_bad": item}
        rows.append(RawReading({"row": i}, item.get("point"), item.get("ts"), item.get("value")))
    return rows


def _csv_rows(body: bytes) -> list[RawReading]:
    reader = csv.reader(io.StringIO(_text(body)))
    header = next(reader, None)
    names = [h.strip().lower() for h in header or []]
    missing = [c for c in CSV_COLUMNS if c not in names]
    if missing:
        raise problem(400, "malformed-body", "Malformed body",
                      f"CSV header must name the columns point,ts,value (missing: {', '.join(missing)}; "
                      f"got: {','.join(header or [])!r})")
    at = {c: names.index(c) for c in CSV_COLUMNS}
    rows = []
    for record in reader:
        if not any(cell.strip() for cell in record):
            continue  # blank line
        line = reader.line_num
        cells = {c: record[i] if i < len(record) else None for c, i in at.items()}
        rows.append(RawReading({"row": len(rows) + 1, "line": line}, cells["point"], cells["ts"], cells["value"]))
    return rows


def ingest_body(database, body: bytes, content_type: str, key: ApiKey) -> IngestResult:
    """Parse, then validate and write with a pooled connection."""
    rows = parse_body(body, content_type)
    with database.connection() as conn:
        return ingest(conn, rows, key)


def ingest(conn: psycopg.Connection, rows: list[RawReading], key: ApiKey) -> IngestResult:
    """All readings written, or none (a 422 problem listing every bad field)."""
    if not rows:
        raise problem(400, "empty-batch", "Empty batch", "the request holds no readings")
    directory = PointDirectory.load(conn, protocol="http", data_source_id=key.data_source_id)
    scope = "this key's data source" if key.data_source_id else "http data sources"

    def resolve(ref, field):
        try:
            return directory.point(ref, field)
        except InputError as exc:
            if exc.reason in ("unknown point", "no such point id"):
                raise InputError(field, ref, f"{exc.reason} among the points of {scope}") from None
            raise

    readings, errors = prepare_readings(rows, resolve)
    if errors:
        raise problem(
            422, "invalid-readings", "Invalid readings",
            f"{len({e.where['row'] for e in errors})} of {len(rows)} readings are invalid; nothing was written",
            errors=[e.as_dict() for e in errors[:MAX_ERRORS_LISTED]],
            errors_total=len(errors),
        )
    with conn.transaction():
        result = write_readings(conn, readings)
    return IngestResult(accepted=result.accepted, duplicates=result.duplicates)
