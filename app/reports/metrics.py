"""Report metrics: one definition per metric, read by the one engine (engine.py).

A metric says where its numbers live at each resolution and how they combine:

- `meter_sources`: per resolution ('15min', 'hour', 'day', 'month') a SELECT returning
  `meter_id, bucket, v, valued, period` for the meters `%(ids)s` and buckets in
  [`%(lo)s`, `%(hi)s`). `v` is the quantity, `valued` the 15-minute intervals behind
  it that carry a value (completeness), `period` the tariff's TOU period (NULL where
  the source has none).
- `entity_sources`: the same per resolution from a per-entity rollup, returning
  `direction, category_id, item_id, bucket, v, valued, period` for `%(kind)s`/`%(eid)s`
  and the categories `%(cats)s` (optional: without it the engine sums the entity's
  meters).
- `unit`: 'category' (the energy category's unit; convertible to kgce), or a fixed unit
  ('kgCO2e'), or 'currency' (the tariffs' currency).
- `ratio`: output over input (efficiency) instead of a sum of inputs.
- `requires`: a relation that must exist (the metric's producer has run at least once).

Adding a metric is adding one `Metric(...)` to METRICS; nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

RESOLUTIONS = ("15min", "hour", "day", "month")

_ENERGY_METER = {
    "15min": "SELECT meter_id, ts AS bucket, energy::numeric AS v, (energy IS NOT NULL)::int AS valued, "
             "NULL::smallint AS period FROM energy.meter_interval "
             "WHERE meter_id = ANY (%(ids)s) AND ts >= %(lo)s AND ts < %(hi)s",
    "hour": "SELECT meter_id, bucket, energy AS v, valued, NULL::smallint AS period FROM energy.meter_hourly "
            "WHERE meter_id = ANY (%(ids)s) AND bucket >= %(lo)s AND bucket < %(hi)s",
    "day": "SELECT meter_id, bucket, energy AS v, valued, NULL::smallint AS period FROM energy.meter_daily "
           "WHERE meter_id = ANY (%(ids)s) AND bucket >= %(lo)s AND bucket < %(hi)s",
    "month": "SELECT meter_id, bucket, energy AS v, valued, NULL::smallint AS period FROM energy.meter_monthly "
             "WHERE meter_id = ANY (%(ids)s) AND bucket >= %(lo)s AND bucket < %(hi)s",
}

_ENERGY_ENTITY = {
    res: f"SELECT direction, category_id, item_id, bucket, energy AS v, valued, NULL::smallint AS period "
         f"FROM energy.{table} "
         "WHERE entity_kind = %(kind)s AND entity_id = %(eid)s AND bucket >= %(lo)s AND bucket < %(hi)s "
         "AND category_id = ANY (%(cats)s)"
    for res, table in (("day", "entity_daily"), ("month", "entity_monthly"))
}

# The cost rollups carry the TOU period (-1: none), so by=tou_period reads them too.
# There is no hourly cost rollup (sql/billing.sql): hours group the interval rows.
_COST_METER = {
    "15min": "SELECT meter_id, ts AS bucket, total AS v, 1 AS valued, period FROM billing.meter_cost "
             "WHERE meter_id = ANY (%(ids)s) AND ts >= %(lo)s AND ts < %(hi)s",
    "hour": "SELECT meter_id, time_bucket(INTERVAL '1 hour', ts, origin => %(origin)s) AS bucket, "
            "sum(total) AS v, count(*) AS valued, period FROM billing.meter_cost "
            "WHERE meter_id = ANY (%(ids)s) AND ts >= %(lo)s AND ts < %(hi)s GROUP BY 1, 2, 5",
    **{res: f"SELECT meter_id, bucket, total AS v, intervals AS valued, nullif(period, -1) AS period "
            f"FROM billing.{table} WHERE meter_id = ANY (%(ids)s) AND bucket >= %(lo)s AND bucket < %(hi)s"
       for res, table in (("day", "cost_daily"), ("month", "cost_monthly"))},
}

_COST_ENTITY = {
    res: f"SELECT direction, category_id, item_id, bucket, total AS v, intervals AS valued, "
         f"nullif(period, -1) AS period FROM billing.{table} "
         "WHERE entity_kind = %(kind)s AND entity_id = %(eid)s AND bucket >= %(lo)s AND bucket < %(hi)s "
         "AND category_id = ANY (%(cats)s)"
    for res, table in (("day", "entity_cost_daily"), ("month", "entity_cost_monthly"))
}


def _carbon_meter(column: str) -> dict[str, str]:
    return {
        "15min": f"SELECT meter_id, ts AS bucket, {column}::numeric AS v, ({column} IS NOT NULL)::int AS valued, "
                 "NULL::smallint AS period FROM carbon.meter_emission "
                 "WHERE meter_id = ANY (%(ids)s) AND ts >= %(lo)s AND ts < %(hi)s",
        **{res: f"SELECT meter_id, bucket, {column} AS v, intervals AS valued, NULL::smallint AS period "
                f"FROM carbon.{table} WHERE meter_id = ANY (%(ids)s) AND bucket >= %(lo)s AND bucket < %(hi)s"
           for res, table in (("hour", "meter_hourly"), ("day", "meter_daily"), ("month", "meter_monthly"))},
    }


@dataclass(frozen=True)
class Metric:
    name: str
    title: str
    description: str
    unit: str                                   # 'category', 'currency' or a fixed unit
    meter_sources: dict[str, str]
    entity_sources: dict[str, str] = field(default_factory=dict)
    ratio: bool = False                         # output / input (efficiency)
    kinds: tuple[str, ...] = ("space", "equipment", "combined_equipment", "tenant", "store",
                              "shopfloor", "meter", "cost_center")
    breakdowns: tuple[str, ...] = ("category", "item", "child")
    load: bool = False                          # peak and base load (kW) apply
    requires: str | None = None                 # relation that must exist

    def source(self, resolution: str, entity: bool) -> str | None:
        table = self.entity_sources if entity else self.meter_sources
        return table.get(resolution)


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric(
        name="energy", title="Energy",
        description="Energy used (input meters), in the energy category's unit or kg coal equivalent.",
        unit="category", meter_sources=_ENERGY_METER, entity_sources=_ENERGY_ENTITY, load=True,
    ),
    Metric(
        name="cost", title="Cost",
        description="Interval cost from the billing stage (energy charges plus allocated demand, fixed "
                    "and tax lines), in the tariffs' currency; by=tou_period splits it by TOU period.",
        unit="currency", meter_sources=_COST_METER, entity_sources=_COST_ENTITY,
        breakdowns=("category", "item", "child", "tou_period"), requires="billing.cost_daily",
    ),
    Metric(
        name="carbon", title="Emissions (location-based)",
        description="Location-based greenhouse-gas emissions from the carbon stage, kgCO2e.",
        unit="kgCO2e", meter_sources=_carbon_meter("kgco2e_location"), requires="carbon.meter_daily",
    ),
    Metric(
        name="carbon-market", title="Emissions (market-based)",
        description="Market-based greenhouse-gas emissions from the carbon stage, kgCO2e.",
        unit="kgCO2e", meter_sources=_carbon_meter("kgco2e_market"), requires="carbon.meter_daily",
    ),
    Metric(
        name="efficiency", title="Efficiency",
        description="Output energy over input energy of equipment or combined equipment (for a chiller: "
                    "cooling kWh out per electric kWh in). Totals are the ratio of the sums.",
        unit="category", meter_sources=_ENERGY_METER, entity_sources=_ENERGY_ENTITY, ratio=True,
        kinds=("equipment", "combined_equipment"), breakdowns=(),
    ),
)}


def get(name: str) -> Metric:
    return METRICS[name]
