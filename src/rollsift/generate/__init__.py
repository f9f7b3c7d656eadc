"""Generation backends: ``HFGenerator`` (our own token loop over a transformers model) and
``load_policy`` (a local ``save_pretrained`` directory to ``(model, tokenizer)``).

Imports are lazy so that ``rollsift bench generate --help`` does not load torch.
"""

from __future__ import annotations

__all__ = ["HFGenerator", "load_policy"]


def __getattr__(name: str):
    if name in __all__:
        from . import hf

        return getattr(hf, name)
    raise AttributeError(f"module 'rollsift.generate' has no attribute {name!r}")
