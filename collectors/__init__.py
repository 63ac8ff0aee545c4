"""Collectors: protocol I/O that turns device values into raw readings (never energy)."""
