"""Clean-up for tests that provision their own embedded cluster."""

import shutil

from app.embedded import FALLBACK_ROOT, Cluster


def discard(cluster: Cluster) -> None:
    """Stop a test cluster and remove what it left outside the test's temporary dir.

    As root, a cluster whose data dir `postgres` cannot reach lives under FALLBACK_ROOT,
    which pytest's temporary-dir clean-up never sees.
    """
    cluster.stop()
    if cluster.base.is_relative_to(FALLBACK_ROOT) and cluster.base.exists():
        shutil.rmtree(cluster.base)
