"""Energy-flow Sankey for a space and period, from the meter hierarchy.

Meters are every meter linked to the space or a space below it (counted or not: sub-meters
are often not counted). Flows: a master meter → its sub-meters (config.meter.master_meter_id),
a meter → the equipment it feeds (config.equipment_meter, input); what a master measured
beyond its sub-meters (and beyond its equipment) goes to one "Losses / unmetered" node per
energy category. Energy per meter comes from the per-meter daily rollup over the period
widened to whole local days, all in one query.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg

from app.reports.engine import check_scope, entity_info, widen

_FLOWS = """
WITH ms AS MATERIALIZED (
    SELECT DISTINCT sm.meter_id FROM config.space_closure cl
    JOIN config.space_meter sm ON sm.space_id = cl.space_id WHERE cl.ancestor_id = %(sid)s
), e AS MATERIALIZED (
    SELECT d.meter_id, sum(d.energy) AS energy FROM energy.meter_daily d
    WHERE d.meter_id IN (SELECT meter_id FROM ms) AND d.bucket >= %(lo)s AND d.bucket < %(hi)s GROUP BY 1
)
SELECT m.id, m.name, c.name AS category, c.unit,
       CASE WHEN m.master_meter_id IN (SELECT meter_id FROM ms) THEN m.master_meter_id END AS master,
       coalesce(e.energy, 0) AS energy,
       (SELECT sum(coalesce(e2.energy, 0)) FROM config.meter k LEFT JOIN e e2 ON e2.meter_id = k.id
        WHERE k.master_meter_id = m.id AND k.id IN (SELECT meter_id FROM ms)) AS children,
       (SELECT q.id FROM config.equipment_meter x JOIN config.equipment q ON q.id = x.equipment_id
        WHERE x.meter_id = m.id AND x.direction = 'input' ORDER BY q.name LIMIT 1) AS equipment_id,
       (SELECT q.name FROM config.equipment_meter x JOIN config.equipment q ON q.id = x.equipment_id
        WHERE x.meter_id = m.id AND x.direction = 'input' ORDER BY q.name LIMIT 1) AS equipment
FROM ms JOIN config.meter m ON m.id = ms.meter_id
JOIN config.energy_category c ON c.id = m.category_id
LEFT JOIN e ON e.meter_id = m.id
ORDER BY m.id
"""


def build(conn: psycopg.Connection, space_id: int, start: dt.datetime, end: dt.datetime,
          scope: Any = None) -> dict[str, Any]:
    check_scope(conn, scope, "space", space_id)
    entity = entity_info(conn, "space", space_id)
    lo, hi, _ = widen(conn, "day", start, end)
    zone = conn.execute("SELECT energy.reporting_zone()").fetchone()[0]
    rows = conn.execute(_FLOWS, {"sid": space_id, "lo": lo, "hi": hi}).fetchall()
    nodes: list[dict[str, Any]] = []
    index: dict[tuple[str, Any], int] = {}

    def node(key: tuple[str, Any], label: str, kind: str, category: str) -> int:
        if key not in index:
            index[key] = len(nodes)
            nodes.append({"label": label, "kind": kind, "category": category})
        return index[key]

    links: list[dict[str, Any]] = []
    for mid, name, category, unit, master, energy, children, eq_id, eq_name in rows:
        me = node(("meter", mid), name, "meter", category)
        if master is not None:
            links.append({"source": node(("meter", master), "", "meter", category), "target": me,
                          "value": float(energy), "unit": unit})
        remainder = energy - (children or 0)
        if eq_id is not None:
            value = remainder if children is not None else energy
            if value > 0:
                links.append({"source": me, "target": node(("equipment", eq_id), eq_name, "equipment", category),
                              "value": float(value), "unit": unit})
        elif children is not None and remainder > 0:
            losses = node(("losses", category), f"Losses / unmetered ({category})", "losses", category)
            links.append({"source": me, "target": losses, "value": float(remainder), "unit": unit})
    for (kind, key), i in index.items():   # masters referenced before their own row carry no label yet
        if kind == "meter" and not nodes[i]["label"]:
            nodes[i]["label"] = next(r[1] for r in rows if r[0] == key)
    return {"entity": entity, "timezone": zone, "period": {"from": lo, "to": hi}, "nodes": nodes, "links": links}


def figure(flow: dict[str, Any]):
    import plotly.graph_objects as go

    colours = {"meter": "#4472c4", "equipment": "#70ad47", "losses": "#c00000"}
    fig = go.Figure(go.Sankey(
        node={"label": [n["label"] for n in flow["nodes"]],
              "color": [colours[n["kind"]] for n in flow["nodes"]], "pad": 14},
        link={"source": [x["source"] for x in flow["links"]], "target": [x["target"] for x in flow["links"]],
              "value": [x["value"] for x in flow["links"]]},
    ))
    p = flow["period"]
    fig.update_layout(title=f"Energy flow: {flow['entity']['name']} "
                            f"({p['from']:%Y-%m-%d} – {p['to']:%Y-%m-%d}, {flow['timezone']})")
    return fig


def html(flow: dict[str, Any]) -> str:
    return figure(flow).to_html(full_html=True, include_plotlyjs=True)


def png(flow: dict[str, Any]) -> bytes:
    from app.reports.export_plotly import _image

    return _image(figure(flow), "png", 1200, 700)
