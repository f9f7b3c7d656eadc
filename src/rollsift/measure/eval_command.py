"""``rollsift eval``: held-out accuracy of a model, with optional voting over its samples.

* sampled accuracy: mean correctness of ``--samples`` completions per prompt;
* greedy accuracy: one temperature-0 completion;
* ``--vote majority``: the most frequent extracted answer among the samples (ties: first seen);
* ``--vote quality``: answers weighted by the quality head's predicted correctness of each
  completion (ARRoL's test-time use of the head); needs ``--head``: a run's checkpoint directory
  (the head saved with that step's policy) or its ``OUT/quality_head.pt`` (docs/strategies/pruning.md).

Arguments, paths and the data are checked before the model is loaded; the result is a table
(``--json`` for a machine), with a progress bar on stderr while generating.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
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
    from ..configlib import ConfigError
    from ..trainer.policy import check_model, resolve_device

    # everything that can be wrong is checked before a model is loaded or a token generated
    if args.vote == "quality" and not args.head:
        raise ConfigError("--vote quality needs --head FILE: the quality head a pruning run saved "
                          "(RUN/quality_head.pt, or a checkpoint directory of that run)")
    if args.head and not Path(args.head).exists():
        raise ConfigError(f"--head {args.head}: no such file or directory")
    for name in ("samples", "max_new_tokens"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.size is not None and args.size < 1:
        raise ConfigError(f"--size must be >= 1, got {args.size}")
    prompts = _prompts(args.data, args.size)
    if not prompts:
        raise ConfigError(f"--data {args.data}: no prompts to evaluate")
    check_model(args.model)
    device = resolve_device(args.device)

    import torch

    from ..trainer.evaluation import evaluate
    from ..generate import HFGenerator
    from ..trainer.policy import load_model
    from ..records import SamplingParams
    from ..rewards import MathReward, extract_answer

    model, tok = load_model(args.model, device)
    gen = HFGenerator(model, tok, max_batch_rows=256, seed=args.seed)
    reward = MathReward()
    result: dict[str, Any] = {"model": args.model, "data": args.data, "prompts": len(prompts), "samples": args.samples}
    with _progress(not args.json) as tick:
        result.update(evaluate(gen, prompts, lambda p, cs: reward.score([(p, c) for c in cs]),
                               samples=args.samples, temperature=args.temperature,
                               max_new_tokens=args.max_new_tokens, greedy=True, seed=args.seed,
                               progress=tick("sampled + greedy")))
        if args.vote != "none":
            gen.reseed(args.seed + 1)
            weigh: Callable | None = None
            if args.vote == "quality":
                from ..prune.quality_head import load_head

                head = load_head(args.head, model)
                weigh = lambda p, comps: head.score_completions(p, comps, gen)
            outs, step, report = [], 64, tick(f"vote ({args.vote})")
            with torch.inference_mode():
                for lo in range(0, len(prompts), step):
                    outs += gen.generate(prompts[lo:lo + step], args.samples,
                                         SamplingParams(args.temperature, 1.0, args.max_new_tokens))
                    report(min(lo + step, len(prompts)), len(prompts))
            correct = 0
            for p, comps in zip(prompts, outs):
                answers = [extract_answer(c.text)[0] for c in comps]
                chosen = vote(answers, weigh(p, comps) if weigh else None)
                correct += chosen is not None and reward(p, _as_completion(p, chosen)).correct
            result[f"eval/vote_{args.vote}_accuracy"] = correct / max(len(prompts), 1)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _table(result)
    return 0


_LABELS = {"eval/accuracy": "sampled accuracy (mean over samples)", "eval/greedy_accuracy": "greedy accuracy",
           "eval/tokens": "generated tokens (sampled)", "eval/vote_majority_accuracy": "majority-vote accuracy",
           "eval/vote_quality_accuracy": "quality-head-vote accuracy"}


def _table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{result['model']} on {result['data']}: {result['prompts']} prompts x {result['samples']} samples")
    t.add_column("figure")
    t.add_column("value", justify="right")
    for k, v in result.items():
        if k in ("model", "data", "prompts", "samples"):
            continue
        label = _LABELS.get(k) or k.replace("eval/accuracy/difficulty_", "sampled accuracy, tier ")
        t.add_row(label, f"{v:,.0f}" if k == "eval/tokens" else f"{v:.3f}" if isinstance(v, float) else str(v))
    Console().print(t)


class _progress:
    """A rich progress bar on stderr; ``tick(label)`` gives a ``progress(done, total)`` callback."""

    def __init__(self, show: bool) -> None:
        self.show, self.bar = show, None

    def __enter__(self):
        if self.show:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), console=Console(stderr=True), transient=True)
            self.bar.start()

        def tick(label: str):
            if self.bar is None:
                return lambda done, total: None
            task = self.bar.add_task(label, total=None)
            return lambda done, total: self.bar.update(task, completed=done, total=total)

        return tick

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()


def _as_completion(prompt, answer: str):
    from ..records import Completion

    return Completion(prompt_id=prompt.id, index=0, token_ids=(), text=f"\\boxed{{{answer}}}")


def _prompts(source: str, size: int | None):
    if source == "testbed":
        from ..testbed.problems import prompts

        out = prompts("eval")
    else:
        from ..data import load_prompts

        out = load_prompts(source).prompts
    return out[:size] if size else out


__all__ = ["main", "vote", "Counter"]
