"""``rollsift testbed build``: warm-start the tiny policy by supervised fine-tuning on CPU.

The recipe (``SFTRecipe``) is what produced the shipped checkpoint. Demonstrations come from a
stream of fresh problems disjoint from nothing in particular but never the held-out set's
expressions (the eval set is redrawn when it collides with train; SFT problems are drawn from
their own random stream). Each demonstration is the reference scratchpad in which every carry or
borrow is dropped with probability ``slip``: a noisy teacher. The warm-started model therefore
knows the procedure but executes it with slips that depend on how many carries a problem has:
prompt difficulty varies, and RL has an error mode to remove. See docs/testbed.md.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .problems import DEFAULT_MIX, TIERS, demonstration, make_problem


@dataclass(frozen=True)
class SFTRecipe:
    """How the shipped checkpoint was trained (every field is a knob of ``testbed build``).

    hidden_size, num_layers, intermediate_size: model shape (head_dim 64).
    steps, batch_size, lr, warmup, min_lr_frac: AdamW schedule (linear warm-up, cosine decay).
    slip: probability that a demonstration drops each carry/borrow.
    mix: tier weights of the demonstrations.
    """

    hidden_size: int = 128
    num_layers: int = 4
    intermediate_size: int = 384
    steps: int = 2400
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 100
    min_lr_frac: float = 0.1
    slip: float = 0.35
    mix: tuple[float, ...] = DEFAULT_MIX


def _batch(tok, rng: random.Random, recipe: SFTRecipe):
    import torch

    ids, labels = [], []
    for _ in range(recipe.batch_size):
        tier = rng.choices(TIERS, weights=recipe.mix)[0]
        p = make_problem(rng, tier)
        prompt = tok.apply_chat_template([{"role": "user", "content": p.expression}],
                                         add_generation_prompt=True, tokenize=False)
        pi = tok(prompt, add_special_tokens=False).input_ids
        ci = tok(demonstration(p, rng, recipe.slip) + tok.eos_token, add_special_tokens=False).input_ids
        ids.append(pi + ci)
        labels.append([-100] * len(pi) + ci)
    L = max(map(len, ids))
    x = torch.full((len(ids), L), tok.pad_token_id)
    y = torch.full((len(ids), L), -100)
    m = torch.zeros((len(ids), L), dtype=torch.long)
    for i, (a, b) in enumerate(zip(ids, labels)):
        x[i, : len(a)] = torch.tensor(a)
        y[i, : len(b)] = torch.tensor(b)
        m[i, : len(a)] = 1
    return x, y, m


def sft(out: str | Path, recipe: SFTRecipe = SFTRecipe(), seed: int = 0, log=print) -> dict:
    """Train the testbed model from scratch and save model + tokenizer to ``out``."""
    import json

    import torch

    from .model import TinyModelConfig, build_model
    from .tokenizer import build_tokenizer

    tok = build_tokenizer()
    model = build_model(tok, TinyModelConfig(recipe.hidden_size, recipe.num_layers, recipe.intermediate_size,
                                             num_kv_heads=recipe.hidden_size // 64), seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=(0.9, 0.98), weight_decay=0.01)
    rng = random.Random(f"rollsift-sft/{seed}")
    model.train()
    t0 = time.perf_counter()
    loss_ema = None
    for step in range(recipe.steps):
        frac = step / max(recipe.steps - 1, 1)
        cosine = recipe.min_lr_frac + (1 - recipe.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * frac))
        for g in opt.param_groups:
            g["lr"] = recipe.lr * min(1.0, (step + 1) / recipe.warmup) * cosine
        x, y, m = _batch(tok, rng, recipe)
        loss = model(input_ids=x, attention_mask=m, labels=y).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss_ema = loss.item() if loss_ema is None else 0.98 * loss_ema + 0.02 * loss.item()
        if step % 200 == 0 or step == recipe.steps - 1:
            log(f"sft step {step}/{recipe.steps}  loss {loss_ema:.4f}  {time.perf_counter() - t0:.0f}s")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    info = {"recipe": asdict(recipe), "seed": seed, "seconds": time.perf_counter() - t0, "final_loss": loss_ema,
            "parameters": sum(p.numel() for p in model.parameters())}
    (out / "sft_recipe.json").write_text(json.dumps(info, indent=2))
    return info


def main_build(args) -> None:
    from . import base_checkpoint

    recipe = SFTRecipe() if args.steps is None else SFTRecipe(steps=args.steps)
    out = Path(args.out) if args.out else base_checkpoint(must_exist=False)
    info = sft(out, recipe, seed=args.seed)
    print(f"wrote {out} ({info['parameters'] / 1e6:.2f}M parameters, {info['seconds']:.0f}s)")
