"""In-memory ledger for tests and throw-away runs: event rows in Python lists, nothing on disk."""

from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

from .rows import COLUMNS, cutoffs
from .state import LedgerBase


class MemoryLedger(LedgerBase):
    def __init__(self) -> None:
        super().__init__()
        self._tables: dict[str, list[tuple]] = {name: [] for name in COLUMNS}
        self._markers: list[tuple[int, int | None]] = [(0, None)]
        self._labels: dict[str, Any] = {}  # registered id -> label (insertion-ordered)
        self._meta: dict[str, Any] = {}
        self.attempt = 0

    def _append(self, table: str, rows: list[tuple]) -> None:
        self._tables[table].extend(rows)

    def _rows(self, table: str, columns: Sequence[str], include_rolled_back: bool) -> Iterator[tuple]:
        pos = [COLUMNS[table].index(c) for c in columns]
        cut = cutoffs(self._markers)
        for row in list(self._tables[table]):
            live = row[1] <= cut.get(row[0], math.inf)
            if live or include_rolled_back:
                yield tuple(row[i] for i in pos) + (live,)

    def _register(self, ids: list[str], labels: list[Any] | None) -> None:
        for i, pid in enumerate(ids):
            lab = labels[i] if labels is not None else None
            if lab is not None or pid not in self._labels:
                self._labels[pid] = lab

    def _pool(self) -> tuple[list[str], list[Any]]:
        return list(self._labels), list(self._labels.values())

    def _new_attempt(self, after_step: int) -> int:
        attempt = self._markers[-1][0] + 1
        self._markers.append((attempt, after_step))
        return attempt

    def _attempts(self) -> list[tuple[int, int | None]]:
        return list(self._markers)

    def set_meta(self, key: str, value: Any) -> None:
        self._meta[key] = value

    def get_meta(self, key: str, default: Any = None) -> Any:
        return self._meta.get(key, default)
