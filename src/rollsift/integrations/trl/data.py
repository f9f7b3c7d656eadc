"""TRL-side data helpers: a rollsift reward as a TRL reward function, prompts as a TRL dataset.

Split from ``rollsift.integrations.trl`` so that module holds only the trainer adapter; these
helpers import nothing from TRL.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ...data import content_id as data_content_id
from ...records import Completion, Prompt, RewardResult
from ...rewards import score

# Keyword arguments TRL passes to every reward function besides the dataset columns.
_TRL_REWARD_KWARGS = {"trainer_state", "log_extra", "log_metric", "environments", "completion_ids"}


class RollsiftReward:
    """A rollsift ``RewardFn`` ``(Prompt, Completion) -> RewardResult`` as a TRL reward function.

    Returns the rewards; keeps each call's correctness flags (``last_correct``), which the adapter
    gathers for the ledger and the filters (they decide on correctness, not on a shaped reward).
    TRL logs it as ``rewards/<name>/mean`` and, from here, ``rewards/<name>/accuracy``.
    """

    def __init__(self, reward_fn: Any = None, *, answer_column: str = "answer", id_column: str = "id",
                 name: str | None = None) -> None:
        if reward_fn is None:
            from ...rewards import MathReward

            reward_fn = MathReward()
        if not callable(reward_fn):
            raise ValueError(f"reward_fn must be callable (Prompt, Completion) -> RewardResult, got {reward_fn!r}")
        self.reward_fn = reward_fn
        self.answer_column, self.id_column = answer_column, id_column
        self.__name__ = name or type(reward_fn).__name__.lower().removesuffix("reward") or "reward"
        self.last_correct: list[bool] = []
        self.last_results: list[RewardResult] = []

    def __call__(self, prompts: list, completions: list, completion_ids: list | None = None, **kw: Any) -> list[float]:
        if self.answer_column not in kw:
            raise KeyError(f"RollsiftReward needs a dataset column {self.answer_column!r} with the gold answers; "
                           f"got columns {sorted(k for k in kw if k not in _TRL_REWARD_KWARGS)}")
        ids = kw.get(self.id_column)
        extra = {k: v for k, v in kw.items() if k not in _TRL_REWARD_KWARGS and k not in (self.answer_column,
                                                                                       self.id_column)}
        pairs = []
        for i, (prompt, completion) in enumerate(zip(prompts, completions)):
            pid = str(ids[i]) if ids is not None and ids[i] is not None else content_id(prompt)
            rec = _prompt_record(pid, prompt, kw[self.answer_column][i], {k: v[i] for k, v in extra.items()})
            text = completion[-1]["content"] if isinstance(completion, list) else completion
            tokens = completion_ids[i] if completion_ids is not None else ()
            pairs.append((rec, Completion(pid, i, tokens, text)))
        # one call for TRL's whole batch: MathReward checks it in parallel under one deadline (batch_timeout)
        results = score(self.reward_fn, pairs)
        self.last_results = results
        self.last_correct = [bool(r.correct) for r in results]
        if results and callable(kw.get("log_metric")):
            kw["log_metric"](f"rewards/{self.__name__}/accuracy", sum(self.last_correct) / len(results))
        return [float(r.reward) for r in results]


def content_id(prompt: Any) -> str:
    """The id ``rollsift.data.load_prompts`` gives a row without one (a hash of the prompt)."""
    if isinstance(prompt, str):
        return data_content_id(prompt, None)
    return data_content_id(None, tuple(dict(m) for m in prompt))


def _prompt_record(pid: str, prompt: Any, answer: Any, meta: Mapping[str, Any]) -> Prompt:
    if isinstance(prompt, str):
        return Prompt(id=pid, answer=str(answer), text=prompt, meta=dict(meta))
    return Prompt(id=pid, answer=str(answer), messages=tuple(dict(m) for m in prompt), meta=dict(meta))


def to_trl_dataset(prompts: Sequence[Prompt], *, conversational: bool = True, meta_columns: Sequence[str] = ()):
    """A ``datasets.Dataset`` with columns ``id``, ``prompt``, ``answer`` (+ the named meta fields).

    ``conversational`` renders text prompts as one user turn (TRL then applies the chat template).
    """
    from datasets import Dataset

    rows = []
    for p in prompts:
        body = p.as_messages() if (conversational or p.messages is not None) else p.text
        rows.append({"id": p.id, "prompt": body, "answer": p.answer, **{k: p.meta.get(k) for k in meta_columns}})
    return Dataset.from_list(rows)
