"""Hugging Face generation backend: our own token loop over a transformers causal LM.

Why not ``model.generate``: a RolloutPruner must be able to stop rows mid-flight and see their
hidden states, finished rows must stop costing compute, and the learner needs the behaviour
log-probs of the sampled tokens. The loop is plain prefill + decode with a ``DynamicCache``:

* prompts are left-padded; ``position_ids`` come from the attention mask (cumsum - 1) for the
  prefill and every decode step, so padding never shifts a row's positions;
* a row stops on any EOS id or at ``max_new_tokens``; finished rows are dropped from the batch
  (input ids, attention mask, positions and KV cache) every ``compact_every`` steps;
* ``logprobs`` are log-softmax(logits / temperature) of the sampled token, taken BEFORE top-p
  truncation (at temperature 0, greedy, they are the untempered log-softmax);
* sampling draws from a ``torch.Generator`` this object owns, saved by ``state_dict()``.

Wraps public transformers API only: ``DynamicCache(config=...)`` and its
``batch_select_indices``, ``output_hidden_states``, and ``logits_to_keep`` when the model's
forward takes it; the cache goes in as ``cache`` where the forward takes it (transformers 5.24 and
later), else as ``past_key_values``. Tested against transformers 5.24 and 5.10.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from ..protocols import RolloutPruner
from ..records import LENGTH, PRUNED, STOP, Completion, Context, PartialBatch, Prompt, SamplingParams

_RUNNING, _STOP, _LENGTH, _PRUNED = 0, 1, 2, 3


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' and huggingface_hub's progress bars ("Loading weights", "Writing model
    shards") while rollsift loads or saves a model, so they do not cut through its own output."""
    from transformers.utils import logging as tlog

    was = tlog.is_progress_bar_enabled()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            tlog.enable_progress_bar()

_STATUS = {_STOP: STOP, _LENGTH: LENGTH, _PRUNED: PRUNED}


def load_policy(path: str | Path, device: str | torch.device | None = None, dtype: Any = None):
    """Load ``(model, tokenizer)`` from a local ``save_pretrained`` directory.

    ``dtype`` is a ``torch.dtype``, its name ("bfloat16") or "auto"; None keeps transformers'
    default. The tokenizer gets a pad token (its EOS when it has none) and left padding.
    """
    p = Path(path)
    if not (p.is_dir() and (p / "config.json").is_file()):
        raise FileNotFoundError(
            f"load_policy: {str(path)!r} is not a model directory "
            "(expected a folder with config.json, as written by save_pretrained)"
        )
    if isinstance(dtype, str) and dtype != "auto":
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(f"load_policy: dtype must be a torch dtype name or 'auto', got {dtype!r}")
        dtype = getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(str(p))
    model = AutoModelForCausalLM.from_pretrained(str(p), **({"dtype": dtype} if dtype is not None else {}))
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"load_policy: the tokenizer in {str(path)!r} has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if device is not None:
        model.to(device)
    return model, tokenizer


def _sample(logits: torch.Tensor, sp: SamplingParams, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Next tokens [B] and their behaviour log-probs [B] from last-position logits [B, V]."""
    logits = logits.float()
    if sp.temperature == 0:
        tok = logits.argmax(-1)
        return tok, torch.log_softmax(logits, -1).gather(-1, tok[:, None]).squeeze(-1)
    logp = torch.log_softmax(logits / sp.temperature, -1)
    probs = logp.exp()
    if sp.top_p < 1.0:
        # Keep the smallest prefix of the sorted distribution whose mass reaches top_p (the top
        # token always survives); multinomial renormalises what is left.
        sorted_p, order = probs.sort(-1, descending=True)
        mass_before = sorted_p.cumsum(-1) - sorted_p
        sorted_p = sorted_p.masked_fill(mass_before >= sp.top_p, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    tok = torch.multinomial(probs, 1, generator=rng).squeeze(-1)
    # The log-prob is of the tempered but untruncated distribution: see the module docstring.
    return tok, logp.gather(-1, tok[:, None]).squeeze(-1)


class HFGenerator:
    """``Generator`` over a transformers causal LM (see the module docstring).

    max_batch_rows: rows (prompt x sample) decoded together; with a pruner a group is never split
        across chunks, so a chunk holds at least one whole group.
    seed: seed of the sampling generator (part of ``state_dict()``).
    compact_every: drop finished rows from the batch every this many steps (1 = as soon as any
        finishes; ``DynamicCache`` re-allocates its tensors each step anyway, so this is cheap).
    eos_token_ids: ids that end a completion; default the model's ``generation_config`` EOS ids,
        else the tokenizer's EOS.
    """

    def __init__(self, model, tokenizer, max_batch_rows: int = 64, seed: int = 0,
                 compact_every: int = 1, eos_token_ids: Sequence[int] | None = None):
        if max_batch_rows < 1:
            raise ValueError(f"max_batch_rows must be >= 1, got {max_batch_rows}")
        if compact_every < 1:
            raise ValueError(f"compact_every must be >= 1, got {compact_every}")
        self.model, self.tokenizer = model, tokenizer
        self.max_batch_rows, self.compact_every = max_batch_rows, compact_every
        eos = eos_token_ids if eos_token_ids is not None else model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        eos = [eos] if isinstance(eos, int) else [int(e) for e in (eos or [])]
        if not eos:
            raise ValueError("HFGenerator: no EOS id (set generation_config.eos_token_id or pass eos_token_ids)")
        self.eos_token_ids = tuple(eos)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
        self.device = next(model.parameters()).device
        self._eos = torch.tensor(eos, dtype=torch.long, device=self.device)
        # Sampling must happen where the logits are, so the generator lives on the model's device;
        # its state is therefore device-specific.
        self._rng = torch.Generator(device=self.device)
        self._rng.manual_seed(seed)
        # Prefill only needs the last position's logits: skip the [B, L, V] projection if we can.
        params = inspect.signature(model.forward).parameters
        self._keep = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        # transformers >= 5.24 takes the KV cache as `cache` (`past_key_values` is deprecated, removed in
        # 5.40); earlier releases only know `past_key_values`.
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self.last_stats: dict[str, float] = {}
        self._encoded: dict[str, list[int]] = {}

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self._rng.get_state()}

    def reseed(self, seed: int) -> None:
        """Restart the sampling stream from ``seed`` (evaluation uses its own seeds)."""
        self._rng.manual_seed(seed)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._rng.set_state(state["rng"])

    def generate(self, prompts: Sequence[Prompt], n: int, sampling: SamplingParams,
                 pruner: RolloutPruner | None = None, ctx: Context | None = None) -> list[list[Completion]]:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        k = n
        if pruner is not None:
            if pruner.over_sample < 1 or pruner.poll_every < 1:
                raise ValueError(f"pruner needs over_sample >= 1 and poll_every >= 1, got "
                                 f"{pruner.over_sample} and {pruner.poll_every}")
            k = math.ceil(n * pruner.over_sample)
        ctx = ctx if ctx is not None else Context(step=0, n=n)
        start = time.perf_counter()
        encoded = [self.encode(p) for p in prompts]
        group_of = torch.arange(len(prompts), device=self.device).repeat_interleave(k)
        # Keep groups whole under a pruner: it decides per group, so it must see the whole group.
        step = max(k, self.max_batch_rows // k * k) if pruner is not None else self.max_batch_rows
        was_training = self.model.training
        self.model.eval()
        chunks = []
        try:
            with torch.inference_mode():
                for lo in range(0, len(group_of), step):
                    chunks.append(self._run_chunk(encoded, group_of[lo:lo + step], sampling, pruner, ctx))
        finally:
            self.model.train(was_training)
        if not chunks:
            self.last_stats = {"gen_tokens": 0, "rows": 0, "pruned_rows": 0, "prompt_tokens": 0, "seconds": 0.0}
            return [[] for _ in prompts]
        # Outside inference mode, clone into ordinary tensors: inference tensors cannot be saved
        # for backward, and the learner multiplies by these log-probs.
        tokens, logps, lengths, status = (torch.cat(x).cpu() for x in zip(*chunks))
        out: list[list[Completion]] = [[] for _ in prompts]
        for r, (g, length, st) in enumerate(zip(group_of.tolist(), lengths.tolist(), status.tolist())):
            if st == _PRUNED or len(out[g]) >= n:  # over n survivors: the first n by row order stay
                status[r] = _PRUNED
                continue
            ids = tokens[r, :length].clone()
            out[g].append(Completion(
                prompt_id=prompts[g].id, index=len(out[g]), token_ids=ids,
                text=self.tokenizer.decode(ids.tolist(), skip_special_tokens=True),
                logprobs=logps[r, :length].clone(), status=_STATUS[st], policy_version=ctx.policy_version,
            ))
        self.last_stats = {
            "gen_tokens": int(lengths.sum()), "rows": len(group_of), "pruned_rows": int((status == _PRUNED).sum()),
            "prompt_tokens": sum(len(encoded[g]) for g in group_of.tolist()),
            "seconds": time.perf_counter() - start,
        }
        return out

    def encode(self, prompt: Prompt) -> list[int]:
        """Prompt token ids as generation sees them (chat template when the tokenizer has one).

        The learner uses the same ids, so positions and log-probs match. Cached by prompt id.
        """
        ids = self._encoded.get(prompt.id)
        if ids is None:
            ids = self._encode(prompt)
            if len(self._encoded) >= 1_000_000:
                self._encoded.clear()
            self._encoded[prompt.id] = ids
        return ids

    def _encode(self, prompt: Prompt) -> list[int]:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(prompt.as_messages(), add_generation_prompt=True, tokenize=False)
            ids = tok(text, add_special_tokens=False)["input_ids"]  # the template already has its specials
        elif prompt.text is not None:
            ids = tok(prompt.text)["input_ids"]
        else:
            raise ValueError(f"Prompt {prompt.id!r} has chat messages but the tokenizer has no chat template")
        if not ids:
            raise ValueError(f"Prompt {prompt.id!r} encodes to no tokens")
        return ids

    def _forward(self, ids, mask, pos, cache, hidden: bool):
        return self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                          output_hidden_states=hidden, **{self._cache_arg: cache}, **self._keep)

    def _run_chunk(self, encoded, group_of, sampling, pruner, ctx):
        """Decode one chunk; returns tokens [R, T], logps [R, T], lengths [R], status [R]."""
        dev, pad, T, R = self.device, self.pad_id, sampling.max_new_tokens, len(group_of)
        seqs = [encoded[g] for g in group_of.tolist()]
        width = max(map(len, seqs))
        ids = torch.full((R, width), pad, dtype=torch.long)
        mask = torch.zeros((R, width), dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, width - len(s):] = torch.tensor(s)
            mask[r, width - len(s):] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        tokens = torch.full((R, T), pad, dtype=torch.long, device=dev)
        logps = torch.zeros((R, T), dtype=torch.float32, device=dev)
        lengths = torch.zeros(R, dtype=torch.long, device=dev)
        status = torch.full((R,), _RUNNING, dtype=torch.long, device=dev)
        live = torch.arange(R, device=dev)  # chunk row held by each batch row
        cache = DynamicCache(config=self.model.config)
        out = self._forward(ids, mask, pos, cache, hidden=False)
        next_pos = pos[:, -1] + 1
        for t in range(T):  # t tokens generated so far; `out` holds the forward over token t
            if pruner is not None and t > 0 and t % pruner.poll_every == 0:
                self._poll(pruner, ctx, t, group_of, tokens, lengths, status, live, out)
            tok, lp = _sample(out.logits[:, -1, :], sampling, self._rng)
            running = status[live] == _RUNNING
            rows = live[running]
            tokens[rows, t], logps[rows, t], lengths[rows] = tok[running], lp[running], t + 1
            status[live[running & torch.isin(tok, self._eos)]] = _STOP
            if t + 1 == T:
                status[status == _RUNNING] = _LENGTH
            running = status[live] == _RUNNING
            if not running.any():
                break
            if not running.all() and (t + 1) % self.compact_every == 0:
                keep = running.nonzero().squeeze(1)
                cache.batch_select_indices(keep)
                live, mask, next_pos, tok, running = live[keep], mask[keep], next_pos[keep], tok[keep], running[keep]
            # Rows finished but not yet compacted get a pad token; their outputs are ignored.
            tok = torch.where(running, tok, pad)
            mask = torch.cat([mask, mask.new_ones(len(live), 1)], dim=1)
            poll_next = pruner is not None and pruner.needs_hidden_states and (t + 1) % pruner.poll_every == 0
            out = self._forward(tok[:, None], mask, next_pos[:, None], cache, hidden=poll_next)
            next_pos = next_pos + 1
        return tokens, logps, lengths, status

    def _poll(self, pruner, ctx, t, group_of, tokens, lengths, status, live, out) -> None:
        """Show the pruner every row of the chunk; rows it drops stop now with status "pruned"."""
        active = status == _RUNNING
        hidden = None
        if pruner.needs_hidden_states:
            h = out.hidden_states[-1][:, -1]  # [B, H] at the token just fed, i.e. the last generated
            hidden = h.new_zeros(len(status), h.shape[-1])
            run = active[live]
            hidden[live[run]] = h[run]
        partial = PartialBatch(step_tokens=t, group_of=group_of.clone(), token_ids=tokens[:, :t].clone(),
                               lengths=lengths.clone(), active=active.clone(), hidden=hidden)
        keep = torch.as_tensor(pruner.prune(partial, ctx), dtype=torch.bool, device=self.device)
        if keep.shape != active.shape:
            raise ValueError(f"pruner.prune returned a mask of shape {tuple(keep.shape)}, expected ({len(active)},)")
        status[active & ~keep] = _PRUNED  # keep values of rows already finished are ignored
