"""Write verl-style parquet files (train.parquet, test.parquet) for the rollsift verl examples.

    python examples/verl/prepare_data.py --out ~/data/testbed                       # rollsift's testbed
    python examples/verl/prepare_data.py --train gsm8k_train.jsonl --test gsm8k_test.jsonl \
        --data-source gsm8k --out ~/data/gsm8k                                       # your own files

--train/--test take anything rollsift.data.load_prompts reads: JSONL/JSON/parquet in TRL style
(prompt|problem|question + answer|solution, GSM8K's '#### X' included) or verl style. Rows keep
rollsift's prompt ids in an 'id' column, so the verl run's ledger names prompts as rollsift does.
The instruction appended to each question asks for a \\boxed{} answer, which the reward
(rollsift.integrations.verl.reward.compute_score) extracts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rollsift.data import load_prompts
from rollsift.integrations.verl.data import INSTRUCTION, write_verl_parquet


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory (train.parquet, test.parquet)")
    ap.add_argument("--train", help="training prompts file; default: the rollsift testbed's train pool")
    ap.add_argument("--test", help="held-out prompts file; default: the rollsift testbed's eval set")
    ap.add_argument("--data-source", help="data_source column (verl's reward dispatch key); default: per prompt")
    ap.add_argument("--instruction", default=INSTRUCTION, help="appended to every question ('' for none)")
    ap.add_argument("--limit", type=int, help="use only the first N prompts of each split")
    args = ap.parse_args(argv)

    out = Path(args.out).expanduser()
    for split, src in (("train", args.train), ("test", args.test)):
        if src:
            prompts = load_prompts(src, limit=args.limit).prompts
        else:
            from rollsift.testbed.problems import prompts as testbed

            prompts = testbed("train" if split == "train" else "eval", args.limit)
        n = write_verl_parquet(prompts, out / f"{split}.parquet", split=split, instruction=args.instruction or None,
                               data_source=args.data_source)
        print(f"{out / f'{split}.parquet'}: {n} prompts")


if __name__ == "__main__":
    main()
