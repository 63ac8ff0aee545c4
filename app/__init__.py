"""Wattline core: settings, database access, configuration model, domain logic, API and CLI.

Collectors and jobs import from here; nothing here imports them.
"""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SQL_DIR = PROJECT_ROOT / "sql"
__version__ = "0.1.0"
