"""Realistic, deterministic load shapes for simulated meters.

The demo must look like a real campus: offices that wake at seven and sleep at
weekends, shops open into the evening and on Saturdays, a two-shift plant, HVAC that
follows the afternoon heat and the season. Every value is a pure function of the meter's
seed and the instant, so the live simulator and a 90-day backfill of raw history agree
to the last digit, and a test can ask what a register held last Tuesday at 14:07.

Power is defined at every UTC quarter hour (from the local wall-clock shape, so DST
moves the office day with the clock) and is linear in between; the cumulative register is
its exact integral from the meter's installation, so energy readings and power readings
of one meter are consistent with each other.
"""

from __future__ import annotations

import datetime as dt
import math
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterator, Sequence
from zoneinfo import ZoneInfo

QUARTER_S = 900
INSTALLED = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)   # registers start counting here
_INSTALLED_S = int(INSTALLED.timestamp())

# Fraction of peak load at each local hour (00:00 … 23:00), linear between hours.
#                      0    1    2    3    4    5    6    7    8    9   10   11   12   13   14   15   16   17   18   19   20   21   22   23
PROFILES: dict[str, dict[str, tuple[float, ...]]] = {
    "office": {
        "weekday":  (.22, .21, .21, .21, .22, .26, .40, .68, .92, 1.0, 1.0, .98, .90, .95, .98, .96, .90, .74, .52, .38, .30, .26, .24, .23),
        "saturday": (.22, .21, .21, .21, .21, .22, .24, .26, .30, .32, .33, .33, .32, .31, .30, .28, .26, .25, .24, .23, .23, .22, .22, .22),
        "sunday":   (.21, .21, .20, .20, .20, .21, .22, .23, .24, .25, .25, .25, .25, .25, .24, .24, .23, .23, .22, .22, .22, .21, .21, .21),
    },
    "retail": {
        "weekday":  (.28, .27, .27, .27, .27, .28, .32, .45, .78, .96, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, .98, .96, .94, .90, .60, .35, .30),
        "saturday": (.28, .27, .27, .27, .27, .28, .32, .48, .82, 1.0, 1.05, 1.08, 1.08, 1.08, 1.08, 1.06, 1.05, 1.0, .95, .80, .50, .34, .30, .29),
        "sunday":   (.27, .27, .27, .27, .27, .27, .28, .30, .40, .62, .82, .86, .86, .86, .86, .84, .80, .60, .38, .30, .28, .28, .27, .27),
    },
    "industrial": {
        "weekday":  (.50, .48, .48, .48, .50, .62, .90, .95, .96, .96, .95, .93, .86, .93, .96, .96, .95, .94, .92, .92, .90, .88, .70, .55),
        "saturday": (.48, .46, .46, .46, .48, .58, .82, .86, .86, .86, .85, .84, .80, .84, .74, .52, .46, .45, .45, .45, .45, .45, .45, .46),
        "sunday":   (.36, .35, .35, .35, .35, .35, .36, .36, .36, .36, .36, .36, .36, .36, .36, .36, .36, .36, .36, .36, .36, .36, .36, .36),
    },
    "hvac": {
        "weekday":  (.15, .14, .14, .14, .16, .30, .62, .78, .80, .82, .86, .90, .94, .98, 1.0, 1.0, .96, .86, .64, .40, .25, .20, .18, .16),
        "saturday": (.15, .14, .14, .14, .14, .16, .22, .28, .32, .36, .40, .44, .46, .48, .48, .46, .42, .36, .28, .22, .18, .16, .15, .15),
        "sunday":   (.14, .14, .14, .14, .14, .15, .18, .22, .25, .28, .30, .32, .34, .34, .34, .32, .30, .26, .22, .18, .16, .15, .14, .14),
    },
    "flat": {d: (1.0,) * 24 for d in ("weekday", "saturday", "sunday")},
}

# Names that say what a meter feeds; the first match picks its profile.
_KEYWORDS = (
    (("hvac", "ahu", "chiller", "cooling", "tower", "pump", "plant", "boiler", "fan"), "hvac"),
    (("store", "retail", "shop", "cafe", "restaurant", "mall"), "retail"),
    (("lab", "line", "factory", "compressor", "process", "industrial", "workshop"), "industrial"),
    (("server", "data-center", "datacenter", "it-"), "flat"),
)


def profile_for(name: str) -> str:
    lowered = name.lower()
    for words, profile in _KEYWORDS:
        if any(w in lowered for w in words):
            return profile
    return "office"


def seed_of(text: str) -> int:
    """A stable seed from a name (Python's hash() changes between runs)."""
    return zlib.crc32(text.encode())


def _noise(seed: int, n: int) -> float:
    """Deterministic pseudo-random number in [-1, 1) for (seed, n): splitmix64."""
    x = (seed * 0x9E3779B97F4A7C15 + n * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 31
    return (x >> 11) / float(1 << 52) - 1.0


@dataclass
class LoadShape:
    """One simulated meter: `peak` is the rate (per hour, in the meter's unit) at the
    profile's 1.0; the register holds `initial` at installation."""

    profile: str
    peak: float
    seed: int
    tz: str = "UTC"
    initial: float = 0.0
    _zone: ZoneInfo = field(init=False, repr=False)
    _days: list[float] = field(init=False, repr=False, default_factory=list)  # register at each UTC day start
    _quarters: dict[int, list[float]] = field(init=False, repr=False, default_factory=dict)
    _dates: dict[int, tuple] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"unknown load profile {self.profile!r} (use one of {', '.join(PROFILES)})")
        self._zone = ZoneInfo(self.tz)
        self._days = [self.initial]

    # .................................................................. power
    def _knot(self, q: int) -> float:
        """Rate at the q-th UTC quarter hour since the epoch."""
        t = dt.datetime.fromtimestamp(q * QUARTER_S, self._zone)
        hours, factor = self._date_terms(t.toordinal())
        h = t.hour + t.minute / 60
        i = int(h)
        shape = hours[i] + (hours[(i + 1) % 24] - hours[i]) * (h - i)
        jitter = 1.0 + 0.03 * _noise(self.seed ^ 0x5A5A, q)
        return max(0.0, self.peak * shape * factor * jitter)

    def _date_terms(self, ordinal: int) -> tuple[tuple[float, ...], float]:
        """The hourly table and the day's scale (season x day-to-day variation) of a local date."""
        terms = self._dates.get(ordinal)
        if terms is None:
            date = dt.date.fromordinal(ordinal)
            table = PROFILES[self.profile]
            day = "sunday" if date.weekday() == 6 else "saturday" if date.weekday() == 5 else "weekday"
            doy = ordinal - dt.date(date.year, 1, 1).toordinal() + 1
            if self.profile == "hvac":   # more cooling in summer, some heating-season fan load
                season = 0.65 + 0.35 * math.cos(2 * math.pi * (doy - 200) / 365.25)
            else:
                season = 1.0 + 0.06 * math.cos(2 * math.pi * (doy - 15) / 365.25)
            terms = self._dates[ordinal] = (table[day], season * (1.0 + 0.08 * _noise(self.seed, ordinal)))
        return terms

    def power(self, t: dt.datetime | float) -> float:
        """Instantaneous rate at `t` (per hour, e.g. kW for a kWh meter)."""
        s = t.timestamp() if isinstance(t, dt.datetime) else t
        q, r = divmod(s, QUARTER_S)
        q = int(q)
        a, b = self._knot(q), self._knot(q + 1)
        return a + (b - a) * r / QUARTER_S

    # ................................................................. energy
    def _day(self, day: int) -> list[float]:
        """Register at each of the 97 quarter-hour boundaries of UTC day `day` after
        installation (memoised; earlier days are summed once)."""
        cached = self._quarters.get(day)
        if cached is not None:
            return cached
        while len(self._days) <= day:   # totals at day starts, computed in order
            d = len(self._days) - 1
            self._days.append(self._day(d)[-1] if d in self._quarters else self._sum_day(d)[-1])
        out = self._sum_day(day)
        if len(self._quarters) > 8:
            self._quarters.pop(next(iter(self._quarters)))
        self._quarters[day] = out
        return out

    def _sum_day(self, day: int) -> list[float]:
        q0 = (_INSTALLED_S + day * 86400) // QUARTER_S
        knots = [self._knot(q0 + k) for k in range(97)]
        total = self._days[day]
        out = [total]
        for k in range(96):
            total += (knots[k] + knots[k + 1]) / 2 * (QUARTER_S / 3600)
            out.append(total)
        return out

    def energy(self, t: dt.datetime | float) -> float:
        """The cumulative register at `t`: the exact integral of `power` since installation."""
        s = t.timestamp() if isinstance(t, dt.datetime) else float(t)
        if s < _INSTALLED_S:
            raise ValueError(f"{t} is before the simulated meters were installed ({INSTALLED.date()})")
        day, rest = divmod(s - _INSTALLED_S, 86400)
        full, part = divmod(rest, QUARTER_S)
        total = self._day(int(day))[int(full)]
        if part:
            q = (_INSTALLED_S + int(day) * 86400) // QUARTER_S + int(full)
            a = self._knot(q)
            p = self.power(q * QUARTER_S + part)
            total += (a + p) / 2 * (part / 3600)
        return total


@dataclass
class CompositeShape:
    """A main meter: the sum of its sub-meters plus an unmetered share of its own."""

    parts: Sequence[LoadShape]
    own: LoadShape

    def power(self, t) -> float:
        return self.own.power(t) + sum(p.power(t) for p in self.parts)

    def energy(self, t) -> float:
        return self.own.energy(t) + sum(p.energy(t) for p in self.parts)


@lru_cache(maxsize=4096)
def shape_for(name: str, unit: str | None = None, tz: str = "UTC") -> LoadShape:
    """The deterministic shape of the meter called `name` (same name, same shape)."""
    seed = seed_of(name)
    u = (unit or "").lower()
    if u.startswith("m3") or u in ("m³", "l", "litre", "liter"):
        peak = 0.4 + 4.0 * (_noise(seed, 1) + 1) / 2      # m³/h
    else:
        peak = 15 + 75 * (_noise(seed, 1) + 1) / 2        # kW
    initial = round(1000 + 90_000 * (_noise(seed, 2) + 1) / 2)
    return LoadShape(profile_for(name), peak, seed, tz, initial=initial)


def series(shape, start: dt.datetime, end: dt.datetime, step: dt.timedelta) -> Iterator[tuple[dt.datetime, float, float]]:
    """(ts, register, rate) every `step` from `start` (inclusive) to `end` (exclusive):
    what a backfill of raw history writes."""
    t = start
    while t < end:
        yield t, shape.energy(t), shape.power(t)
        t += step
