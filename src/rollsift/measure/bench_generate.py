"""``rollsift bench generate``: HFGenerator's token loop against ``model.generate``.

Both sample the same prompts with the same settings (temperature, top-p, max_new_tokens, EOS),
in chunks of the same number of rows, after one small warm-up each; timed runs alternate. Generated tokens are counted
per row up to and including the first EOS; ``model.generate`` keeps computing finished rows (it
pads them), which is exactly the cost our compaction removes, so it is not counted as output.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rollsift bench generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, metavar="PATH",
                   help="local save_pretrained directory, or 'testbed' for the shipped testbed checkpoint "
                        "(default: a fresh testbed-shaped model, hidden 256, 4 layers)")
    p.add_argument("--prompts", type=int, default=16, help="number of testbed prompts (default 16)")
    p.add_argument("--n", type=int, default=4, help="completions per prompt (default 4)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="default 64")
    p.add_argument("--temperature", type=float, default=1.0, help="default 1.0")
    p.add_argument("--top-p", type=float, default=1.0, help="default 1.0")
    p.add_argument("--max-batch-rows", type=int, default=64, help="rows decoded together, both backends (default 64)")
    p.add_argument("--repeats", type=int, default=1, help="timed runs of each backend; the median is reported")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--dtype", default=None, help="model dtype for --model, e.g. bfloat16")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave torch's choice)")
    p.add_argument("--out", default=None, metavar="JSON", help="write the results here")
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry (``rollsift bench generate``): prints the comparison, writes --out; returns 0."""
    run_bench(argv)
    return 0


def run_bench(argv: list[str] | None = None) -> dict:
    """Parse ``argv`` like the CLI, run the comparison and return the report dict."""
    args = _parser().parse_args(argv)
    import torch

    from ..records import SamplingParams
    from ..testbed.problems import prompts as testbed_prompts
    from ..generate.hf import HFGenerator, load_policy

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.model:
        path = args.model
        if path == "testbed":
            from ..testbed import base_checkpoint

            path = str(base_checkpoint())
        model, tok = load_policy(path, device=device, dtype=args.dtype)
        source = args.model
    else:
        from ..testbed.model import TinyModelConfig, build_model
        from ..testbed.tokenizer import build_tokenizer

        tok = build_tokenizer()
        model = build_model(tok, TinyModelConfig(), seed=args.seed).to(device)
        source = "fresh testbed-shaped model (hidden 256, 4 layers)"
    model.eval()
    prompts = testbed_prompts("train", args.prompts, seed=args.seed)
    sp = SamplingParams(args.temperature, args.top_p, args.max_new_tokens)
    gen = HFGenerator(model, tok, max_batch_rows=args.max_batch_rows, seed=args.seed)
    eos = list(gen.eos_token_ids)
    per_chunk = max(1, args.max_batch_rows // args.n)  # prompts per model.generate call
    torch.manual_seed(args.seed)

    def ours(ps, sampling) -> int:
        gen.generate(ps, args.n, sampling)
        return int(gen.last_stats["gen_tokens"])

    def theirs(ps, sampling) -> int:
        count = 0
        for lo in range(0, len(ps), per_chunk):
            chunk = ps[lo:lo + per_chunk]
            texts = [tok.apply_chat_template(p.as_messages(), add_generation_prompt=True, tokenize=False)
                     if getattr(tok, "chat_template", None) else p.text for p in chunk]
            enc = tok(texts, return_tensors="pt", padding=True,
                      add_special_tokens=not getattr(tok, "chat_template", None)).to(device)
            # top_k=0: transformers otherwise applies its default top-k of 50, which we do not
            knobs = ({"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": 0}
                     if sampling.temperature > 0 else {"do_sample": False})
            with torch.inference_mode():
                # rows repeated by hand: greedy generate refuses num_return_sequences > 1
                ids, mask = (enc[k].repeat_interleave(args.n, 0) for k in ("input_ids", "attention_mask"))
                seqs = model.generate(input_ids=ids, attention_mask=mask, **knobs, eos_token_id=eos,
                                      max_new_tokens=sampling.max_new_tokens, pad_token_id=gen.pad_id)
            new = seqs[:, ids.shape[1]:]
            is_eos = torch.isin(new, torch.tensor(eos, device=new.device))
            # length = up to and including the first EOS, else all of it
            first = torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, new.shape[1])
            count += int(first.sum())
        return count

    def timed(fn) -> tuple[float, int]:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        tokens = fn(prompts, sp)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start, tokens

    warm = SamplingParams(args.temperature, args.top_p, min(4, args.max_new_tokens))
    backends = {"hfgenerator": ours, "model_generate": theirs}
    for fn in backends.values():
        fn(prompts[:2], warm)
    # Alternate the backends so that drifting load on a shared machine hits both alike.
    runs = {name: [] for name in backends}
    for _ in range(max(1, args.repeats)):
        for name, fn in backends.items():
            runs[name].append(timed(fn))
    results = {}
    for name, rs in runs.items():
        secs, toks = statistics.median(r[0] for r in rs), int(statistics.median(r[1] for r in rs))
        results[name] = {"seconds": secs, "gen_tokens": toks, "tokens_per_s": toks / secs}
    ratio = results["hfgenerator"]["tokens_per_s"] / results["model_generate"]["tokens_per_s"]
    report = {
        "model": source, "device": str(device), "dtype": str(next(model.parameters()).dtype),
        "threads": torch.get_num_threads(), "prompts": args.prompts, "n": args.n,
        "max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": args.top_p,
        "max_batch_rows": args.max_batch_rows, "seed": args.seed, **results, "speed_ratio": ratio,
    }
    for name in ("hfgenerator", "model_generate"):
        r = results[name]
        print(f"{name:15s} {r['gen_tokens']:7d} tokens in {r['seconds']:7.2f} s = {r['tokens_per_s']:9.1f} tokens/s")
    print(f"ratio (hfgenerator / model.generate tokens/s): {ratio:.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
