"""Uniform selection: every candidate of the shuffled epoch stream is rolled out (plain GRPO)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..configlib import doc
from ..records import Context, Decision, Group, Prompt, Selection


@dataclass
class UniformConfig:
    type: str = doc("Selector name in the registry.", "uniform")
    strategy = "rollsift.select.uniform:UniformSelector"


class UniformSelector:
    """Keeps candidates in stream order until the budget is met (the stream is already shuffled)."""

    scope = "stream"

    def __init__(self, cfg: UniformConfig | None = None, seed: int = 0) -> None:
        self.cfg = cfg or UniformConfig()

    def ask(self, candidates: Sequence[Prompt], budget: int, ledger: Any, ctx: Context) -> Selection:
        chosen = tuple(candidates[: max(budget, 0)])
        return Selection(chosen=chosen, decisions=tuple(Decision(p.id, True, "uniform") for p in chosen))

    def tell(self, groups: Sequence[Group], ledger: Any, ctx: Context) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass

    def metrics(self) -> dict[str, float]:
        return {}
