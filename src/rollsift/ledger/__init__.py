"""The ledger: an append-only record of what every prompt did (docs/ledger.md).

Events: selection decisions, every generated group (before filtering), filter decisions, step
metrics, and run metadata (the registered pool, rollback markers). Selectors read the per-prompt
state derived from them (``get``, ``lookup``); analysis tools read the history (``groups``,
``decisions``, ``filters``, ``steps``). Resuming from the checkpoint of step c calls
``rollback(after_step=c)``, which hides later events without deleting them.

    ledger = open_ledger("runs/x/ledger.sqlite")   # or open_ledger(None) for an in-memory one
"""

from __future__ import annotations

from pathlib import Path

from .memory import MemoryLedger
from .sqlite import LedgerFullError, SqliteLedger
from ..records import PURPOSES
from .rows import DecisionRow, FilterRow, GroupRow, StepRow, UseRow
from .state import LedgerBase, PromptState

__all__ = ["open_ledger", "MemoryLedger", "SqliteLedger", "LedgerFullError", "LedgerBase", "PromptState", "GroupRow",
           "DecisionRow", "FilterRow", "StepRow", "UseRow", "PURPOSES"]


def open_ledger(path: str | Path | None = None) -> LedgerBase:
    """A SQLite ledger at ``path`` (a run directory means ``path/ledger.sqlite``), in memory for None."""
    if path is None:
        return MemoryLedger()
    p = Path(path)
    return SqliteLedger(p / "ledger.sqlite" if p.is_dir() else p)
