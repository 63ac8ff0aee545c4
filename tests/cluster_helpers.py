"""Clean-up for tests that provision their own embedded cluster."""

import shutil
from pathlib import Path

from app.embedded import FALLBACK_ROOT, Cluster


def discard(cluster: Cluster) -> None:
    """Stop a test cluster and remove what it left outside the test's temporary dir."""
    cluster.stop()
    remove_home(cluster.base)


def remove_home(home: Path) -> None:
    """As root, a cluster whose data dir `postgres` cannot reach lives under FALLBACK_ROOT,
    which pytest's temporary-dir clean-up never sees."""
    if home.is_relative_to(FALLBACK_ROOT) and home.exists():
        shutil.rmtree(home)
