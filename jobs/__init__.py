"""Pipeline stages and their runner: everything after raw is computed here, recomputably."""
