"""Train the testbed model with TRL's GRPOTrainer and rollsift's GRESO selection, on CPU.

    python examples/trl_greso_testbed.py                  # shipped checkpoint if present, else a tiny random model
    python examples/trl_greso_testbed.py --model tiny --steps 10
    python examples/trl_greso_testbed.py --model path/to/checkpoint --out runs/trl-greso

What rollsift adds to a plain TRL script is the trainer class, the reward wrapper and the
``rollsift=`` argument (marked below). The ledger (every prompt's selections, groups, filter
decisions and step metrics) is written to ``OUT/ledger.sqlite``.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="auto",
                    help="'auto' (the shipped testbed checkpoint, else 'tiny'), 'testbed', 'tiny' or a path")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--prompts", type=int, default=256, help="train pool size")
    ap.add_argument("--batch", type=int, default=16, help="unique prompts per step")
    ap.add_argument("--num-generations", type=int, default=8)
    ap.add_argument("--max-completion-length", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--out", default="runs/trl-greso-testbed")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)  # tiny model: more threads only contend
    from trl import GRPOConfig

    from rollsift.integrations.trl import RollsiftConfig, RollsiftGRPOTrainer, RollsiftReward, to_trl_dataset
    from rollsift.rewards import MathReward
    from rollsift.testbed import base_checkpoint
    from rollsift.testbed.problems import prompts

    out = Path(args.out)
    model = resolve_model(args.model, out, base_checkpoint)
    config = GRPOConfig(
        output_dir=str(out), per_device_train_batch_size=args.batch * args.num_generations,
        num_generations=args.num_generations, max_completion_length=args.max_completion_length,
        max_steps=args.steps, learning_rate=args.lr, temperature=1.0, logging_steps=1, save_strategy="no",
        report_to="none", use_cpu=not torch.cuda.is_available(), bf16=False, seed=0,
    )
    trainer = RollsiftGRPOTrainer(                                          # rollsift: the trainer class
        model=model,
        reward_funcs=[RollsiftReward(MathReward())],                        # rollsift: reward + correctness
        args=config,
        train_dataset=to_trl_dataset(prompts("train", args.prompts)),
        rollsift=RollsiftConfig(selector="greso", filters=("dynamic",),     # rollsift: what to do
                                ledger=out / "ledger.sqlite"),
    )
    trainer.train()

    rs = trainer.rollsift
    t = rs.totals
    skipped = sum(not d.kept for d in rs.ledger.decisions())
    per = f"{t['rollouts'] / t['informative_groups']:.1f}" if t["informative_groups"] else "n/a"
    print(f"\n{t['rollouts']} rollouts, {t['groups']} groups, {t['informative_groups']} informative "
          f"({per} rollouts per informative group); "
          f"GRESO skipped {skipped} candidates; p_easy={rs.pipeline.selector.p_easy:.2f} p_hard={rs.pipeline.selector.p_hard:.2f}")
    print(f"ledger: {out / 'ledger.sqlite'}  (rollsift ledger show {out})")


def resolve_model(spec: str, out: Path, base_checkpoint) -> str:
    if spec in ("auto", "testbed"):
        path = base_checkpoint(must_exist=spec == "testbed")
        if (path / "config.json").exists():
            return str(path)
        print(f"no shipped testbed checkpoint at {path}; using a tiny random model (every answer wrong)")
    elif spec != "tiny":
        return spec
    from rollsift.testbed.model import TinyModelConfig, build_model
    from rollsift.testbed.tokenizer import build_tokenizer

    tok = build_tokenizer()
    path = out / "tiny-model"
    build_model(tok, TinyModelConfig(hidden_size=64, num_layers=2, intermediate_size=128, num_kv_heads=1)
                ).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


if __name__ == "__main__":
    main()
