"""Filters applied to a loaded prompt pool before training: prompts longer than the context.

Why: a prompt whose tokens, plus the completion budget, do not fit the model's positions is not
an error a model reports: transformers only warns "Token indices sequence length is longer than
the specified maximum sequence length ... will result in indexing errors", then a 512-position
model indexes past its position table (a real DeepScaleR prompt of 588 tokens did exactly
that). verl drops such prompts before training (``data.filter_overlong_prompts``); so do we, with
a count and one warning naming it, so a user sees how much of their data was left out.

Lengths are counted as generation encodes a prompt: through the chat template when the
tokenizer has one (``HFGenerator.encode``), else the plain text. Pass ``HFGenerator.encode``
itself as ``tokenizer`` (any callable ``Prompt -> list[int]``) to count exactly the ids the run
will feed the model.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

from .records import Prompt

logger = logging.getLogger(__name__)


def prompt_length(prompt: Prompt, tokenizer: Any) -> int:
    """Tokens of ``prompt`` as generation sees them (``tokenizer`` may be an encode callable)."""
    if callable(tokenizer) and not hasattr(tokenizer, "apply_chat_template"):
        return len(tokenizer(prompt))
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(list(prompt.as_messages()), add_generation_prompt=True, tokenize=False)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])
    if prompt.text is None:
        raise ValueError(f"prompt {prompt.id!r} has chat messages but the tokenizer has no chat template")
    return len(tokenizer(prompt.text)["input_ids"])


def filter_overlong(prompts: Sequence[Prompt], tokenizer: Any | Callable[[Prompt], list[int]],
                    max_prompt_tokens: int, *, what: str = "prompts") -> tuple[list[Prompt], int]:
    """``(kept, n_dropped)``: the prompts of at most ``max_prompt_tokens`` tokens, in order, and how
    many were longer. Logs one warning naming the count, the limit and the longest dropped prompt.

    ``max_prompt_tokens`` is usually the model's positions less the completion budget
    (``max_prompt_tokens_for``). ``what`` names the pool in the warning ("training prompts").
    """
    if isinstance(max_prompt_tokens, bool) or not isinstance(max_prompt_tokens, int) or max_prompt_tokens < 1:
        raise ValueError(f"max_prompt_tokens must be an integer >= 1, got {max_prompt_tokens!r}")
    kept: list[Prompt] = []
    longest: tuple[int, str] | None = None
    for p in prompts:
        n = prompt_length(p, tokenizer)
        if n <= max_prompt_tokens:
            kept.append(p)
        elif longest is None or n > longest[0]:
            longest = (n, p.id)
    dropped = len(prompts) - len(kept)
    if dropped:
        logger.warning("dropped %d of %d %s longer than %d tokens (the longest: %r, %d tokens); they would not fit "
                       "the model's context with the completion budget", dropped, len(prompts), what,
                       max_prompt_tokens, longest[1], longest[0])
    return kept, dropped


def max_prompt_tokens_for(model_config: Any, max_new_tokens: int) -> int | None:
    """The longest prompt that leaves room for ``max_new_tokens`` in the model's positions
    (``max_position_embeddings``, or ``n_positions``); None when the config names no limit."""
    limit = getattr(model_config, "max_position_embeddings", None) or getattr(model_config, "n_positions", None)
    if not limit:
        return None
    if limit - max_new_tokens < 1:
        raise ValueError(f"sampling.max_new_tokens = {max_new_tokens} leaves no room for a prompt in the model's "
                         f"{limit} positions; lower sampling.max_new_tokens")
    return int(limit - max_new_tokens)


__all__ = ["filter_overlong", "max_prompt_tokens_for", "prompt_length"]
