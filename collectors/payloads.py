"""What an MQTT message means: which points, which instants, which device values.

Three payload shapes are understood, so devices and gateways can publish what they
already produce:

- `{"ts": ..., "values": {"<point key>": number, ...}}`: one instant, many points;
- `[{"point": ..., "ts": ..., "value": ...}, ...]`: a batch, each with its own instant;
- a plain number on a topic that one point's address names (`{"ts":..,"value":..}`
  on such a topic works too).

Timestamps and numbers are parsed by app.ingest, the same rules HTTP and files use
(naive ISO times are UTC here; a missing ts means the time the message arrived). A
message is decoded entry by entry: good entries are kept, bad ones are reported with a
reason each, so one bad value never costs the others.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from app.ingest import InputError, parse_timestamp, parse_value
from collectors.config import PointConfig, SourceConfig

UTC = dt.timezone.utc


@dataclass(frozen=True)
class Entry:
    point_id: int
    ts: dt.datetime
    value: float  # device value: the writer applies ratio and offset


@dataclass
class Decoded:
    entries: list[Entry] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def reason(self) -> str:
        """One dead-letter reason for the whole message."""
        text = "; ".join(self.problems)
        if self.entries:
            total = len(self.entries) + len(self.problems)
            return f"partly accepted ({len(self.entries)} of {total} readings): {text}"
        return text


class TopicPoints:
    """A data source's points, found by JSON key (address.key or point name), by their
    own topic (plain-number payloads) or by id."""

    def __init__(self, source: SourceConfig):
        self.by_key: dict[str, list[PointConfig]] = {}
        self.by_topic: dict[str, PointConfig] = {}
        self.by_id: dict[int, PointConfig] = {}
        for p in source.points:
            self.by_id[p.id] = p
            key = getattr(p.address, "key", None) or p.name
            self.by_key.setdefault(key, []).append(p)
            topic = getattr(p.address, "topic", None)
            if topic:
                self.by_topic[topic] = p

    def for_key(self, key: Any, topic: str, field: str) -> PointConfig:
        if isinstance(key, int) and not isinstance(key, bool):
            if key in self.by_id:
                return self.by_id[key]
            raise InputError(field, key, "unknown point id for this data source")
        if not isinstance(key, str) or not key:
            raise InputError(field, key, "a point is named by its key (a string)")
        found = self.by_key.get(key, [])
        if len(found) > 1:  # the same key on several devices: the topic decides
            found = [p for p in found if getattr(p.address, "topic", None) == topic]
        if len(found) == 1:
            return found[0]
        if not found:
            raise InputError(field, key, "unknown point")
        raise InputError(field, key, f"ambiguous: {len(found)} points use this key on topic {topic!r}")

    def for_topic(self, topic: str) -> PointConfig:
        point = self.by_topic.get(topic)
        if point is None:
            raise InputError("topic", topic, "no point has this topic, so a bare value cannot be placed")
        return point


def _describe(exc: InputError, where: str) -> str:
    value = exc.value if not isinstance(exc.value, str) or len(exc.value) < 80 else exc.value[:77] + "..."
    return f"{where}{exc.field} {value!r}: {exc.reason}"


def _instant(raw: Any, received_at: dt.datetime) -> dt.datetime:
    return received_at if raw is None else parse_timestamp(raw, now=received_at)


def decode(payload: bytes, topic: str, points: TopicPoints, received_at: dt.datetime) -> Decoded:
    out = Decoded()
    try:
        text = payload.decode("utf-8") if payload else ""
    except UnicodeDecodeError:
        out.problems.append("payload is not UTF-8 text")
        return out
    if not text.strip():
        out.problems.append("empty payload")
        return out
    try:
        data = json.loads(text)
    except ValueError:
        data = text.strip()  # maybe a bare number JSON does not know ("nan", "+5")
        try:
            float(data)
        except ValueError:
            out.problems.append("payload is neither JSON nor a number")
            return out

    if isinstance(data, (int, float, str)) and not isinstance(data, bool):
        if isinstance(data, str):
            try:
                float(data)
            except ValueError:
                out.problems.append("a JSON string payload is not a reading")
                return out
        _single(out, points, topic, data, None, received_at, "")
    elif isinstance(data, dict):
        if "values" in data:
            _object(out, points, topic, data, received_at)
        elif "point" in data:
            _array(out, points, topic, [data], received_at)
        elif "value" in data:
            _single(out, points, topic, data["value"], data.get("ts"), received_at, "")
        else:
            out.problems.append('JSON object has no "values" (nor "point"/"value")')
    elif isinstance(data, list):
        if not data:
            out.problems.append("empty JSON array")
        _array(out, points, topic, data, received_at)
    else:
        out.problems.append(f"a JSON {type(data).__name__} is not a reading")
    return out


def _single(out: Decoded, points: TopicPoints, topic: str, raw_value: Any, raw_ts: Any,
            received_at: dt.datetime, where: str) -> None:
    try:
        point = points.for_topic(topic)
        ts = _instant(raw_ts, received_at)
        value = parse_value(raw_value)
    except InputError as exc:
        out.problems.append(_describe(exc, where))
        return
    out.entries.append(Entry(point.id, ts, value))


def _object(out: Decoded, points: TopicPoints, topic: str, data: dict, received_at: dt.datetime) -> None:
    values = data["values"]
    if not isinstance(values, dict) or not values:
        out.problems.append('"values" must be a non-empty object of point key -> number')
        return
    try:
        ts = _instant(data.get("ts"), received_at)
    except InputError as exc:
        out.problems.append(_describe(exc, "") + f" (all {len(values)} values refused)")
        return
    for key, raw in values.items():
        try:
            point = points.for_key(key, topic, f"values.{key}")
            value = parse_value(raw, f"values.{key}")
        except InputError as exc:
            out.problems.append(_describe(exc, ""))
            continue
        out.entries.append(Entry(point.id, ts, value))


def _array(out: Decoded, points: TopicPoints, topic: str, items: list, received_at: dt.datetime) -> None:
    for i, item in enumerate(items):
        where = f"[{i}] "
        if not isinstance(item, dict):
            out.problems.append(f'{where}entry is not an object {{"point", "ts", "value"}}')
            continue
        try:
            if "point" not in item:
                raise InputError("point", None, "missing")
            point = points.for_key(item["point"], topic, "point")
            ts = _instant(item.get("ts"), received_at)
            value = parse_value(item.get("value"))
        except InputError as exc:
            out.problems.append(_describe(exc, where))
            continue
        out.entries.append(Entry(point.id, ts, value))
