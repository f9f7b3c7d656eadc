"""``rollsift bench trl``: TRL's GRPOTrainer with and without the rollsift adapter (GRESO + dynamic).

Both runs start from the same checkpoint with the same seed, data, prompts per step and number of
steps; the only difference is ``RollsiftConfig(selector="greso", filters=("dynamic",))``. In TRL
the generation batch keeps its size (skipped prompts are replaced), so both runs generate the
same number of rollouts; what GRESO changes is how many of the groups carry signal. Reported per
run: rollouts, groups, informative groups (correctness varied), rollouts per informative group,
wall and process CPU time of ``trainer.train()`` (CPU time is steadier on a shared machine), the
mean train reward over the last fifth of the steps, and (``--eval-prompts``) sampled accuracy on
held-out testbed prompts. Runs alternate when ``--repeats`` > 1; times are medians.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rollsift bench trl", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="testbed", metavar="PATH",
                   help="a save_pretrained directory, 'testbed' (the shipped checkpoint) or 'tiny' (a random "
                        "hidden-64 model: every answer is wrong, so only the plumbing is measured)")
    p.add_argument("--steps", type=int, default=30, help="training steps per run (default 30)")
    p.add_argument("--prompts", type=int, default=128, help="train pool size, testbed prompts (default 128)")
    p.add_argument("--batch", type=int, default=16, help="unique prompts per step (default 16)")
    p.add_argument("--num-generations", type=int, default=8, help="completions per prompt (default 8)")
    p.add_argument("--max-completion-length", type=int, default=64, help="default 64")
    p.add_argument("--lr", type=float, default=1e-4, help="learning rate (default 1e-4)")
    p.add_argument("--selector", default="greso", help="rollsift selector of the adapter run (default greso)")
    p.add_argument("--filters", default="dynamic", help="comma-separated filters of the adapter run (default dynamic)")
    p.add_argument("--eval-prompts", type=int, default=64, help="held-out prompts for sampled accuracy (0: skip)")
    p.add_argument("--repeats", type=int, default=1, help="runs of each variant, alternating (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--out", default=None, metavar="JSON", help="write the results here")
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry (``rollsift bench trl``): prints the comparison, writes --out; returns 0."""
    args = _parser().parse_args(argv)
    result = run_bench(args)
    print(format_result(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2, default=_finite))
        print(f"wrote {args.out}")
    return 0


def _finite(x: Any) -> Any:
    return str(x)


def _model_path(spec: str, workdir: Path) -> str:
    from ..testbed import base_checkpoint

    if spec == "testbed":
        return str(base_checkpoint())
    if spec == "tiny":
        from ..testbed.model import TinyModelConfig, build_model
        from ..testbed.tokenizer import build_tokenizer

        tok = build_tokenizer()
        build_model(tok, TinyModelConfig(hidden_size=64, num_layers=2, intermediate_size=128, num_kv_heads=1)
                    ).save_pretrained(workdir / "tiny")
        tok.save_pretrained(workdir / "tiny")
        return str(workdir / "tiny")
    return spec


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    import torch

    torch.set_num_threads(args.threads)
    from ..rewards import MathReward
    from ..testbed.problems import prompts
    from ..integrations.trl import RollsiftConfig, to_trl_dataset

    work = Path(tempfile.mkdtemp(prefix="rollsift-bench-trl-"))
    model = _model_path(args.model, work)
    data = to_trl_dataset(prompts("train", args.prompts, seed=args.seed))
    held_out = prompts("eval", args.eval_prompts, seed=args.seed) if args.eval_prompts else []
    filters = tuple(f for f in args.filters.split(",") if f)
    variants = {"trl": None, f"rollsift_{args.selector}": (args.selector, filters)}
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for r in range(args.repeats):
        for name, spec in variants.items():
            cfg = None if spec is None else RollsiftConfig(selector=spec[0], filters=spec[1])
            runs[name].append(_one_run(args, model, data, held_out, cfg, work / f"{name}-{r}", MathReward()))
    summary = {name: _summarise(rs) for name, rs in runs.items()}
    base, ours = summary["trl"], summary[f"rollsift_{args.selector}"]
    return {
        "config": {k: v for k, v in vars(args).items() if k != "out"} | {"model_path": model},
        "runs": summary,
        "rollouts_per_informative_group_ratio": _ratio(base["rollouts_per_informative_group"],
                                                       ours["rollouts_per_informative_group"]),
        "wall_time_ratio": _ratio(base["wall_s"], ours["wall_s"]),
        "cpu_time_ratio": _ratio(base["cpu_s"], ours["cpu_s"]),
    }


def _ratio(a: float, b: float) -> float:
    return a / b if b and math.isfinite(a) and math.isfinite(b) else math.nan


def _one_run(args, model_path: str, data, held_out, cfg, out: Path, reward_fn) -> dict[str, Any]:
    import torch
    from transformers import PrinterCallback, ProgressCallback
    from trl import GRPOConfig, GRPOTrainer

    from .trl import RollsiftGRPOTrainer, RollsiftReward

    class Counting(RollsiftReward):  # correctness of every generated row, in generation order
        def __init__(self, fn):
            super().__init__(fn)
            self.rows: list[bool] = []

        def __call__(self, *a, **kw):
            out = super().__call__(*a, **kw)
            self.rows.extend(self.last_correct)
            return out

    G = args.num_generations
    reward = Counting(reward_fn)
    cpu = not torch.cuda.is_available()
    targs = GRPOConfig(
        output_dir=str(out), per_device_train_batch_size=args.batch * G, num_generations=G,
        max_completion_length=args.max_completion_length, max_steps=args.steps, learning_rate=args.lr,
        logging_steps=1, report_to="none", save_strategy="no", use_cpu=cpu, bf16=False, seed=args.seed,
        disable_tqdm=True, temperature=1.0,
    )
    torch.manual_seed(args.seed)
    common = dict(model=model_path, reward_funcs=[reward], args=targs, train_dataset=data)
    trainer = GRPOTrainer(**common) if cfg is None else RollsiftGRPOTrainer(**common, rollsift=cfg)
    for cb in (PrinterCallback, ProgressCallback):  # TRL's per-step log lines would drown the table
        trainer.remove_callback(cb)
    t0, c0 = time.perf_counter(), time.process_time()
    trainer.train()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rows = reward.rows
    groups = [rows[i:i + G] for i in range(0, len(rows), G)]
    informative = sum(0 < sum(g) < G for g in groups)
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    tail = rewards[-max(1, len(rewards) // 5):]
    result = {
        "rollouts": len(rows), "groups": len(groups), "informative_groups": informative,
        "rollouts_per_informative_group": len(rows) / informative if informative else math.inf,
        "wall_s": wall, "cpu_s": cpu, "final_train_reward": sum(tail) / len(tail) if tail else math.nan,
        "train_accuracy": sum(rows) / len(rows) if rows else math.nan,
    }
    if cfg is not None:
        result["skipped"] = sum(not d.kept for d in trainer.rollsift.ledger.decisions())
    if held_out:
        result["eval_accuracy"] = _eval(trainer.model, trainer.processing_class, held_out, args, reward_fn)
    return result


def _eval(model, tok, prompts, args, reward_fn, samples: int = 4) -> float:
    """Sampled accuracy (temperature 1.0, ``samples`` per prompt) with ``model.generate``."""
    import torch

    from ..records import Completion

    torch.manual_seed(args.seed + 1)
    model.eval()
    correct = total = 0
    texts = [tok.apply_chat_template(p.as_messages(), add_generation_prompt=True, tokenize=False) for p in prompts]
    with torch.no_grad():
        for i in range(0, len(prompts), 16):
            enc = tok(texts[i:i + 16], return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            out = model.generate(**enc, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                                 max_new_tokens=args.max_completion_length, num_return_sequences=samples,
                                 pad_token_id=tok.pad_token_id)
            comp = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            for j, text in enumerate(comp):
                p = prompts[i + j // samples]
                correct += reward_fn(p, Completion(p.id, j % samples, (), text)).correct
                total += 1
    model.train()
    return correct / total


def _summarise(runs: list[dict]) -> dict[str, Any]:
    out = dict(runs[0])
    if len(runs) > 1:
        out["wall_s"] = statistics.median(r["wall_s"] for r in runs)
        out["wall_s_all"] = [r["wall_s"] for r in runs]
        out["cpu_s"] = statistics.median(r["cpu_s"] for r in runs)
        out["cpu_s_all"] = [r["cpu_s"] for r in runs]
    return out


def format_result(r: dict[str, Any]) -> str:
    keys = ["rollouts", "groups", "informative_groups", "rollouts_per_informative_group", "wall_s", "cpu_s",
            "final_train_reward", "train_accuracy", "eval_accuracy", "skipped"]
    names = list(r["runs"])
    lines = [f"{'':32}" + "".join(f"{n:>20}" for n in names)]
    for k in keys:
        vals = [r["runs"][n].get(k) for n in names]
        if all(v is None for v in vals):
            continue
        lines.append(f"{k:32}" + "".join(f"{_fmt(v):>20}" for v in vals))
    lines.append(f"rollouts per informative group: {_fmt(r['rollouts_per_informative_group_ratio'])}x fewer with "
                 f"the adapter; time ratio (trl / adapter): wall {_fmt(r['wall_time_ratio'])}, "
                 f"process CPU {_fmt(r['cpu_time_ratio'])}")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}" if math.isfinite(v) else str(v)
    return str(v)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
