"""rollsift prompts as verl's parquet rows (what ``verl.utils.dataset.RLHFDataset`` reads).

One row per prompt, verl's layout (as its ``examples/data_preprocess`` scripts write it)::

    {"id": "gsm8k/7", "data_source": "gsm8k", "ability": "math",
     "prompt": [{"role": "user", "content": "<question> <instruction>"}],
     "reward_model": {"style": "rule", "ground_truth": "42"},
     "extra_info": {"index": 7, "split": "train"}}

The ``id`` column carries the rollsift prompt id, so the ledger of a verl run names prompts as a
rollsift run on the same source does (``rollsift.data.load_prompts`` reads these files back).
No verl import: pyarrow writes the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from ...records import Prompt

INSTRUCTION = "Let's think step by step and output the final answer within \\boxed{}."


def to_verl_rows(prompts: Iterable[Prompt], *, split: str = "train", instruction: str | None = INSTRUCTION,
                 data_source: str | None = None, ability: str = "math") -> list[dict]:
    """verl rows for ``prompts``; ``instruction`` is appended to the last user turn (None: as is)."""
    rows = []
    for i, p in enumerate(prompts):
        messages = p.as_messages()
        if instruction:
            users = [j for j, m in enumerate(messages) if m.get("role") == "user"]
            last = users[-1] if users else len(messages) - 1
            messages[last] = {**messages[last], "content": f"{messages[last]['content']} {instruction}"}
        source = data_source or str(p.meta.get("data_source") or "rollsift")
        rows.append({
            "id": p.id,
            "data_source": source,
            "ability": ability,
            "prompt": [{"role": str(m["role"]), "content": str(m["content"])} for m in messages],
            "reward_model": {"style": "rule", "ground_truth": str(p.answer)},
            "extra_info": {"index": i, "split": split},
        })
    return rows


def write_verl_parquet(prompts: Sequence[Prompt], path: str | os.PathLike, **kwargs) -> int:
    """Write ``to_verl_rows(prompts, **kwargs)`` to a parquet file (replaced atomically); the row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = to_verl_rows(prompts, **kwargs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.Table.from_pylist(rows), tmp)
    os.replace(tmp, path)
    return len(rows)
