"""``rollsift eval``: held-out accuracy of a model, with optional voting over its samples.

* sampled accuracy: mean correctness of ``--samples`` completions per prompt;
* greedy accuracy: one temperature-0 completion;
* ``--vote majority``: the most frequent extracted answer among the samples (ties: first seen);
* ``--vote quality``: answers weighted by the quality head's predicted correctness of each
  completion (ARRoL's test-time use of the head); needs ``--head``: a run's checkpoint directory
  (the head saved with that step's policy) or its ``OUT/quality_head.pt`` (docs/strategies/pruning.md).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import Any, Callable, Sequence


def vote(answers: Sequence[str | None], weights: Sequence[float] | None = None) -> str | None:
    """The answer with the largest total weight (count when unweighted); None answers abstain."""
    totals: dict[str, float] = defaultdict(float)
    order: list[str] = []
    for i, a in enumerate(answers):
        if a is None:
            continue
        if a not in totals:
            order.append(a)
        totals[a] += 1.0 if weights is None else float(weights[i])
    if not totals:
        return None
    best = max(totals.values())
    return next(a for a in order if totals[a] == best)


def main(args: Any) -> int:
    import torch

    from .evaluate import evaluate
    from .generate import HFGenerator
    from .protocols import SamplingParams
    from .rewards import MathReward, extract_answer
    from .policy import load_model, resolve_device

    model, tok = load_model(args.model, resolve_device(args.device))
    prompts = _prompts(args.data, args.size)
    gen = HFGenerator(model, tok, max_batch_rows=256, seed=args.seed)
    reward = MathReward()
    result: dict[str, Any] = {"model": args.model, "data": args.data, "prompts": len(prompts), "samples": args.samples}
    result.update(evaluate(gen, prompts, lambda p, cs: reward.score([(p, c) for c in cs]),
                           samples=args.samples, temperature=args.temperature,
                           max_new_tokens=args.max_new_tokens, greedy=True, seed=args.seed))
    if args.vote != "none":
        gen.reseed(args.seed + 1)
        with torch.inference_mode():
            outs = gen.generate(prompts, args.samples, SamplingParams(args.temperature, 1.0, args.max_new_tokens))
        weigh: Callable | None = None
        if args.vote == "quality":
            if not args.head:
                raise SystemExit("--vote quality needs --head FILE (a quality head saved by a pruning run)")
            from .prune.quality_head import load_head

            head = load_head(args.head, model)
            weigh = lambda p, comps: head.score_completions(p, comps, gen)
        correct = 0
        for p, comps in zip(prompts, outs):
            answers = [extract_answer(c.text)[0] for c in comps]
            w = weigh(p, comps) if weigh else None
            chosen = vote(answers, w)
            correct += chosen is not None and reward(p, _as_completion(p, chosen)).correct
        result[f"eval/vote_{args.vote}_accuracy"] = correct / max(len(prompts), 1)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")
    return 0


def _as_completion(prompt, answer: str):
    from .records import Completion

    return Completion(prompt_id=prompt.id, index=0, token_ids=(), text=f"\\boxed{{{answer}}}")


def _prompts(source: str, size: int | None):
    if source == "testbed":
        from .testbed.problems import prompts

        out = prompts("eval")
    else:
        from .data import load_prompts

        out = load_prompts(source).prompts
    return out[:size] if size else out


__all__ = ["main", "vote", "Counter"]
