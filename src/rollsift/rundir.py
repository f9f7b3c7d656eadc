"""A run directory and everything in it, with one owner at a time.

    RUN/config.toml      the resolved configuration (written once the run's state has loaded)
    RUN/metrics.jsonl    one line per training step (rollsift's own trainer)
    RUN/ledger.sqlite    every selection, group, filter and step event (any engine)
    RUN/checkpoints/     resumable checkpoints (rollsift's own trainer)
    RUN/report.html      written at the end of every ``rollsift train``
    RUN/.lock            held by the process training into RUN (``RunLock``)

Readers (``report``, ``ledger show``/``card``, ``replay-ledger``, ``simulate --fit``) open a run
through ``RunDir`` too, so a TRL or verl run, which has a ledger and nothing else, reads the same
way: ``read_metrics`` falls back to the ledger's step records.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from .configlib import ConfigError

LEDGER_SUFFIXES = (".sqlite", ".sqlite3", ".db")


class RunDirError(ConfigError):
    """A run directory that cannot be used as asked (missing, locked, without a ledger)."""


class RunDir:
    CONFIG, METRICS, LEDGER, CHECKPOINTS, REPORT, LOCK = (
        "config.toml", "metrics.jsonl", "ledger.sqlite", "checkpoints", "report.html", ".lock")

    def __init__(self, path: str | os.PathLike) -> None:
        """``path``: a run directory, or a ledger file (whose directory is then the run's)."""
        p = Path(path)
        if p.suffix in LEDGER_SUFFIXES or p.is_file():
            self.path, self.ledger_path = p.parent, p
        else:
            self.path, self.ledger_path = p, p / self.LEDGER

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def metrics_path(self) -> Path:
        return self.path / self.METRICS

    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def report_path(self) -> Path:
        return self.path / self.REPORT

    def has_run(self) -> bool:
        """Something of a run is here (metrics, a ledger or checkpoints)."""
        return any(p.exists() for p in (self.metrics_path, self.ledger_path, self.checkpoints))

    def has_ledger(self) -> bool:
        return self.ledger_path.is_file()

    # ------------------------------------------------------------------ reading
    def open_ledger(self, *, readonly: bool = True) -> Any:
        """The run's SQLite ledger (read-only by default: nothing is written, not even -wal/-shm files
        of a cleanly closed ledger). A clear error, not a traceback, when there is none."""
        from .ledger import SqliteLedger

        if not self.has_ledger():
            raise RunDirError(f"{self.path}: no {self.LEDGER} there; pass a run directory or its ledger file")
        return SqliteLedger(self.ledger_path, readonly=readonly)

    def read_config(self) -> dict[str, Any] | None:
        """The run's config.toml as a table, or None when the run has none."""
        from .configlib import load_toml

        return load_toml(self.config_path) if self.config_path.is_file() else None

    def read_metrics(self) -> list[dict[str, Any]]:
        """metrics.jsonl rows; for a run without one (TRL, verl), rows rebuilt from the ledger's step
        records with the same cumulative totals (``cost/*_total``, ``cost/effective_share``)."""
        from .metrics_file import accumulate, read_metrics

        if self.metrics_path.is_file():
            return read_metrics(self.metrics_path)
        if not self.has_ledger():
            raise RunDirError(f"{self.path}: neither {self.METRICS} nor {self.LEDGER}; pass a run directory")
        with self.open_ledger() as ledger:
            return accumulate([{"step": s.step, **s.metrics} for s in ledger.steps()])

    # ------------------------------------------------------------------ owning
    def check_not_in_use(self) -> None:
        """Raise the lock's message if another process holds this run directory; take nothing."""
        if (self.path / ".lock").exists():
            RunLock(self.path / ".lock").acquire().release()

    def lock(self) -> "RunLock":
        return RunLock(self.path / self.LOCK)

    def reset(self) -> None:
        """Remove a previous run's files (``--overwrite``); the lock file stays with its holder."""
        for name in (self.METRICS, self.LEDGER, self.LEDGER + "-wal", self.LEDGER + "-shm", self.CHECKPOINTS,
                     "tb", self.REPORT, self.CONFIG):
            target = self.path / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)

    def clean_temporaries(self) -> list[Path]:
        """Remove what a killed checkpoint write left (``checkpoints/.step_N.tmp``, ``.latest.tmp``)."""
        removed = []
        if self.checkpoints.is_dir():
            for p in self.checkpoints.glob(".*.tmp"):
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
                removed.append(p)
        return removed


class RunLock:
    """An exclusive lock on a run directory (``flock`` on ``RUN/.lock``), released on exit or when the
    process dies. A second process fails at once, naming the holder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown process"
            os.close(fd)
            raise RunDirError(f"{self.path.parent} is in use by another rollsift process ({holder}); wait for it "
                              f"to finish, stop it, or train into another directory (--set out=...)") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


__all__ = ["RunDir", "RunDirError", "RunLock"]
