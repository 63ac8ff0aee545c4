"""The demo campus: its tariffs, site file and emission factors, loaded in the order their
references need (site assignments name tariffs; factors name the site's categories).
Used by `wattline run` and by the tests; idempotent."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg

from app import PROJECT_ROOT
from app.db import database_url

EXAMPLES = PROJECT_ROOT / "examples"
DEMO_SITE = EXAMPLES / "demo-site.yaml"
DEMO_TARIFFS = EXAMPLES / "demo-tariffs.json"
DEMO_FACTORS = EXAMPLES / "demo-emission-factors.yaml"


def load_demo_tariffs(url: str | None = None) -> list[int]:
    from app.tariffs import import_tariff

    with psycopg.connect(url or database_url()) as conn:
        ids = import_tariff(conn, json.loads(DEMO_TARIFFS.read_text()))
    return ids if isinstance(ids, list) else [ids]


def load_demo(url: str | None = None, site_file: Path = DEMO_SITE) -> list[str]:
    """Tariffs, then the site, then emission factors; returns one summary line each."""
    from app.carbon import import_factor_file
    from app.site import import_site_file

    tariffs = load_demo_tariffs(url)
    site = import_site_file(site_file, url=url)
    factors = import_factor_file(DEMO_FACTORS, url=url)
    return [
        f"tariffs:  {len(tariffs)} from {DEMO_TARIFFS.name}",
        f"site:     {site_file.name}: {site.summary()}",
        f"carbon:   {DEMO_FACTORS.name}: {factors.inserted} new, {factors.updated} updated factors",
    ]
