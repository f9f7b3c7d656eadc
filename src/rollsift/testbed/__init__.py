"""The embedded testbed: arithmetic problems, a character tokenizer and a tiny Qwen2 policy.

``base_checkpoint()`` is the shipped warm-started model (``rollsift testbed build`` rebuilds it).
"""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).parent / "assets"


def base_checkpoint(must_exist: bool = True) -> Path:
    path = ASSETS / "base"
    if must_exist and not (path / "config.json").exists():
        raise FileNotFoundError(
            f"the testbed checkpoint is missing at {path}; rebuild it with `rollsift testbed build`"
        )
    return path
