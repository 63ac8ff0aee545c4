"""The writer's durable local queue for readings the database could not take yet.

A reading the writer accepted must survive a database outage and a crash of the
collector, so batches that cannot be written go to numbered files here, each written to
a temporary name, fsync'd and renamed into place (a file is whole or absent). In `sync`
mode every reading is first appended to a journal segment and fsync'd; a sealed
segment is just another spool file. Files are replayed oldest first (by number), and
the database drops rows it already has, so a replay after an uncertain commit never
double-counts. One writer owns a spool directory at a time (an flock on `.lock`), so
whatever files it finds at start were left by a previous process and are its to replay.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import struct
import threading
from pathlib import Path
from typing import Iterable

from app.readings import Reading

MAGIC = b"WLSPOOL1"
RECORD = struct.Struct("<iqdh")  # point_id int32, ts µs since epoch int64, value float64, quality int16
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MICRO = dt.timedelta(microseconds=1)


class SpoolBusyError(RuntimeError):
    """Another live writer owns this spool directory."""


def encode(rows: Iterable[Reading]) -> bytes:
    pack = RECORD.pack
    return b"".join(pack(p, (ts - EPOCH) // _MICRO, v, q) for p, ts, v, q in rows)


def decode(data: bytes) -> list[Reading]:
    """Rows of a spool file's body; a torn last record (crash mid-append) is ignored."""
    whole = len(data) - len(data) % RECORD.size
    return [
        (p, EPOCH + dt.timedelta(microseconds=us), v, q)
        for p, us, v, q in RECORD.iter_unpack(data[:whole])
    ]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """An append-only, fsync-per-append segment (sync mode); sealed into a spool file."""

    def __init__(self, spool: "Spool", number: int) -> None:
        self.spool = spool
        self.number = number
        self.path = spool.directory / f"{number:020d}.journal"
        self.rows = 0
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        os.write(self._fd, MAGIC)
        os.fsync(self._fd)
        _fsync_dir(spool.directory)

    def append(self, rows: list[Reading]) -> None:
        data = encode(rows)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        os.fsync(self._fd)
        self.rows += len(rows)

    def seal(self) -> Path | None:
        """Close the segment; a segment with rows becomes a queued spool file."""
        os.close(self._fd)
        if not self.rows:
            self.path.unlink(missing_ok=True)
            return None
        target = self.spool.directory / f"{self.number:020d}.spool"
        os.rename(self.path, target)
        _fsync_dir(self.spool.directory)
        return target


class Spool:
    """A directory of numbered spool files, owned by one writer at a time."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(self._lock_fd, 32, 0).decode(errors="replace").strip()
            os.close(self._lock_fd)
            raise SpoolBusyError(
                f"spool directory {self.directory} is in use by another writer (pid {owner or '?'})"
            ) from None
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, str(os.getpid()).encode(), 0)
        self._recover()
        numbers = [int(p.name.split(".")[0]) for p in self.directory.glob("*.spool")]
        self._next = max(numbers, default=0) + 1
        self._numbering = threading.Lock()

    def _recover(self) -> None:
        """Turn what a dead process left into queued files: journals become spool files,
        half-written temporary files are dropped (their rows were never acknowledged)."""
        for tmp in self.directory.glob("*.tmp"):
            tmp.unlink(missing_ok=True)
        for journal in self.directory.glob("*.journal"):
            body = journal.read_bytes()[len(MAGIC):]
            if len(body) >= RECORD.size:
                os.rename(journal, journal.with_suffix(".spool"))
            else:
                journal.unlink()
        _fsync_dir(self.directory)

    def _number(self) -> int:
        with self._numbering:  # the writer's thread and a shedding caller both append
            n = self._next
            self._next += 1
            return n

    def append(self, rows: list[Reading]) -> Path:
        """Durably queue a batch as one new file."""
        number = self._number()
        tmp = self.directory / f"{number:020d}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(MAGIC)
            fh.write(encode(rows))
            fh.flush()
            os.fsync(fh.fileno())
        target = tmp.with_suffix(".spool")
        os.rename(tmp, target)
        _fsync_dir(self.directory)
        return target

    def journal(self) -> Journal:
        return Journal(self, self._number())

    def pending(self) -> list[Path]:
        """Queued files, oldest first."""
        return sorted(self.directory.glob("*.spool"))

    def read(self, path: Path) -> list[Reading]:
        data = path.read_bytes()
        if not data.startswith(MAGIC):
            raise ValueError(f"{path}: not a Wattline spool file")
        return decode(data[len(MAGIC):])

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def reject(self, path: Path) -> Path:
        """Set a file aside that the database refuses for a reason other than an outage."""
        target_dir = self.directory / "rejected"
        target_dir.mkdir(exist_ok=True)
        target = target_dir / path.name
        os.rename(path, target)
        return target

    def close(self) -> None:
        if self._lock_fd >= 0:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = -1
