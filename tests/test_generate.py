"""HFGenerator: greedy equals model.generate, log-probs equal a teacher-forced pass, stops,
sampling reproducibility and resume, the pruner hook, compaction, and load_policy."""

import pytest
import torch

from rollsift.generate import HFGenerator, load_policy
from rollsift.protocols import Generator
from rollsift.records import Context, Prompt, SamplingParams
from rollsift.testbed.tokenizer import build_tokenizer

TEXTS = ["1+2", "37+48*3-9", "5", "99*9-1+2", "12*3"]
PROMPTS = [Prompt(id=f"p{i}", answer="0", text=t) for i, t in enumerate(TEXTS)]
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=12)


pytestmark = pytest.mark.usefixtures("one_thread")


def prompt_ids(tok, prompt):
    text = tok.apply_chat_template(prompt.as_messages(), add_generation_prompt=True, tokenize=False)
    return tok(text, add_special_tokens=False)["input_ids"]


def left_pad(seqs, pad):
    width = max(map(len, seqs))
    ids = torch.tensor([[pad] * (width - len(s)) + list(s) for s in seqs])
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs])
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


def hf_greedy(model, tok, prompts, max_new, eos):
    """model.generate greedy, each row cut after its first EOS (inclusive)."""
    ids, mask, _ = left_pad([prompt_ids(tok, p) for p in prompts], tok.pad_token_id)
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new,
                         eos_token_id=list(eos), pad_token_id=tok.pad_token_id)[:, ids.shape[1]:]
    rows = []
    for row in out.tolist():
        cut = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
        rows.append(row[:cut])
    return rows


def teacher_forced(model, tok, prompts, completions):
    """Last-layer hidden states and logits [N, L, .] of prompt+completion, positions from the mask."""
    seqs = [prompt_ids(tok, p) + c for p, c in zip(prompts, completions)]
    ids, mask, pos = left_pad(seqs, tok.pad_token_id)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True)
    return out.logits.float(), out.hidden_states[-1].float()


def test_is_a_generator(tiny):
    assert isinstance(HFGenerator(*tiny), Generator)


@pytest.mark.parametrize("max_batch_rows,compact_every", [(64, 1), (3, 1), (4, 3)])
def test_greedy_matches_model_generate(tiny, max_batch_rows, compact_every):
    model, tok = tiny
    gen = HFGenerator(model, tok, max_batch_rows=max_batch_rows, compact_every=compact_every)
    out = gen.generate(PROMPTS, 2, GREEDY, ctx=Context(step=3, policy_version=7))
    want = hf_greedy(model, tok, PROMPTS, GREEDY.max_new_tokens, [tok.eos_token_id])
    for comps, ref in zip(out, want):
        assert [c.index for c in comps] == [0, 1]
        for c in comps:
            assert c.token_ids.tolist() == ref
            assert c.token_ids.dtype == torch.long and c.logprobs.shape == c.token_ids.shape
            assert c.policy_version == 7 and not c.logprobs.is_inference()
            assert c.text == tok.decode(ref, skip_special_tokens=True)
    statuses = {c.status for comps in out for c in comps}
    assert statuses == {"stop", "length"}  # this seed yields both
    for c in (c for comps in out for c in comps):
        if c.status == "stop":
            assert c.token_ids[-1] == tok.eos_token_id and tok.eos_token_id not in c.token_ids[:-1].tolist()
        else:
            assert c.num_tokens == GREEDY.max_new_tokens and tok.eos_token_id not in c.token_ids.tolist()
    assert gen.last_stats["gen_tokens"] == sum(c.num_tokens for comps in out for c in comps)
    assert gen.last_stats["rows"] == 2 * len(PROMPTS) and gen.last_stats["pruned_rows"] == 0


@pytest.mark.parametrize("compact_every", [1, 2])
def test_compaction_with_staggered_stops(tiny, compact_every):
    """Several EOS ids make rows finish at many different steps; output still equals generate."""
    model, tok = tiny
    prompts = [Prompt(id=f"q{i}", answer="0", text=t) for i, t in enumerate(TEXTS + ["8-1", "77+7", "3*3*3"])]
    free = hf_greedy(model, tok, prompts, 16, [tok.eos_token_id])
    eos = sorted({row[len(row) // 2] for row in free} | {tok.eos_token_id})  # tokens seen mid-row
    gen = HFGenerator(model, tok, compact_every=compact_every, eos_token_ids=eos)
    out = gen.generate(prompts, 1, SamplingParams(temperature=0.0, max_new_tokens=16))
    got = [comps[0].token_ids.tolist() for comps in out]
    assert got == hf_greedy(model, tok, prompts, 16, eos)
    assert len({len(r) for r in got}) >= 3  # rows really did finish at different times
    assert all(c[0].status == ("stop" if c[0].token_ids[-1].item() in eos else "length") for c in out)


def test_messages_prompt_uses_chat_template(tiny):
    model, tok = tiny
    as_text = HFGenerator(model, tok).generate(PROMPTS[:1], 1, GREEDY)[0][0]
    msgs = Prompt(id="m", answer="0", messages=({"role": "user", "content": TEXTS[0]},))
    assert HFGenerator(model, tok).generate([msgs], 1, GREEDY)[0][0].token_ids.tolist() == as_text.token_ids.tolist()


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 1.0), (0.7, 0.8)])
def test_logprobs_match_teacher_forcing(tiny, temperature, top_p):
    """Behaviour log-probs = log-softmax(logits / T) at the sampled token, untruncated by top-p."""
    model, tok = tiny
    out = HFGenerator(model, tok, seed=1).generate(PROMPTS, 2, SamplingParams(temperature, top_p, 10))
    comps = [c for cs in out for c in cs]
    prompts = [p for p in PROMPTS for _ in range(2)]
    logits, _ = teacher_forced(model, tok, prompts, [c.token_ids.tolist() for c in comps])
    width = logits.shape[1]  # rows are left-padded, so every completion ends at the last column
    for i, c in enumerate(comps):
        T = c.num_tokens
        # logits at column j predict the token at column j + 1
        lp = torch.log_softmax(logits[i, width - T - 1: width - 1] / temperature, -1)
        ref = lp.gather(-1, c.token_ids[:, None]).squeeze(-1)
        torch.testing.assert_close(c.logprobs, ref, atol=1e-4, rtol=0)


def test_tiny_top_p_is_greedy(tiny):
    model, tok = tiny
    greedy = HFGenerator(model, tok).generate(PROMPTS, 1, GREEDY)
    nucleus = HFGenerator(model, tok, seed=3).generate(PROMPTS, 2, SamplingParams(1.0, 1e-6, 12))
    for g, cs in zip(greedy, nucleus):
        for c in cs:
            assert c.token_ids.tolist() == g[0].token_ids.tolist()


def test_seeded_sampling_reproduces_and_resumes(tiny):
    model, tok = tiny
    sp = SamplingParams(temperature=1.0, max_new_tokens=8)

    def ids(out):
        return [c.token_ids.tolist() for cs in out for c in cs]

    a = HFGenerator(model, tok, seed=5)
    first, second = ids(a.generate(PROMPTS, 3, sp)), ids(a.generate(PROMPTS, 3, sp))
    b = HFGenerator(model, tok, seed=5)
    assert ids(b.generate(PROMPTS, 3, sp)) == first
    state = b.state_dict()
    c = HFGenerator(model, tok, seed=999)
    assert ids(c.generate(PROMPTS, 3, sp)) != first
    c.load_state_dict(state)
    assert ids(c.generate(PROMPTS, 3, sp)) == second


def test_model_mode_restored(tiny):
    model, tok = tiny
    model.train()
    try:
        HFGenerator(model, tok).generate(PROMPTS[:1], 1, SamplingParams(max_new_tokens=2))
        assert model.training
    finally:
        model.eval()


class FakePruner:
    """Over-samples x2 and, at the first poll, stops the odd rows of every group."""

    def __init__(self, prune_odd=True, needs_hidden_states=True):
        self.over_sample, self.poll_every, self.needs_hidden_states = 2.0, 3, needs_hidden_states
        self.prune_odd, self.partials = prune_odd, []

    def prune(self, partial, ctx):
        self.partials.append(partial)
        keep = torch.ones(len(partial.group_of), dtype=torch.bool)
        if self.prune_odd and len(self.partials) == 1:
            keep[1::2] = False
        return keep

    def observe(self, groups, ctx): ...
    def state_dict(self): return {}
    def load_state_dict(self, state): ...
    def metrics(self): return {}


def test_pruner_stops_rows_and_sees_hidden_states(tiny):
    model, tok = tiny
    sp = SamplingParams(temperature=1.0, max_new_tokens=12)
    keep_all, pruning = FakePruner(prune_odd=False), FakePruner()
    full = HFGenerator(model, tok, seed=2, max_batch_rows=8)
    out_full = full.generate(PROMPTS, 2, sp, pruner=keep_all)
    gen = HFGenerator(model, tok, seed=2, max_batch_rows=8)
    out = gen.generate(PROMPTS, 2, sp, pruner=pruning)

    # Keep-all: 4 rows per group survive, the first 2 by row order are returned, 2 count as pruned.
    assert [[c.index for c in cs] for cs in out_full] == [[0, 1]] * len(PROMPTS)
    assert full.last_stats["rows"] == 4 * len(PROMPTS) and full.last_stats["pruned_rows"] == 2 * len(PROMPTS)
    assert all(c.status != "pruned" for cs in out + out_full for c in cs)
    assert gen.last_stats["pruned_rows"] == 2 * len(PROMPTS)
    assert gen.last_stats["gen_tokens"] < full.last_stats["gen_tokens"]

    first = pruning.partials[0]
    assert first.step_tokens == 3 and first.token_ids.shape[1] == 3
    # groups are whole within a chunk of at most 8 rows: 2 groups of 4 rows
    assert first.group_of.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    stopped = torch.zeros(len(first.group_of), dtype=torch.bool)
    stopped[1::2] = True
    stopped &= first.active
    later = pruning.partials[1]  # the same chunk's next poll: pruned rows did not grow
    assert later.step_tokens == 6 and later.group_of.tolist() == first.group_of.tolist()
    assert stopped.any() and not later.active[stopped].any()
    assert (later.lengths[stopped] == 3).all() and (later.token_ids[stopped, 3:] == tok.pad_token_id).all()

    # hidden [R, H]: the policy's last-layer state at each active row's 3rd generated token
    rows = first.active.nonzero().squeeze(1).tolist()
    prompts = [PROMPTS[int(first.group_of[r])] for r in rows]
    _, hidden = teacher_forced(model, tok, prompts, [first.token_ids[r].tolist() for r in rows])
    torch.testing.assert_close(first.hidden[rows].float(), hidden[:, -1], atol=1e-4, rtol=0)
    assert (first.hidden[~first.active] == 0).all()


def test_pruner_without_hidden_states_gets_none(tiny):
    model, tok = tiny
    p = FakePruner(needs_hidden_states=False)
    HFGenerator(model, tok).generate(PROMPTS[:2], 1, SamplingParams(max_new_tokens=7), pruner=p)
    assert p.partials and all(x.hidden is None for x in p.partials)


def test_bad_knobs_are_rejected(tiny):
    with pytest.raises(ValueError, match="max_batch_rows"):
        HFGenerator(*tiny, max_batch_rows=0)
    with pytest.raises(ValueError, match="n must be"):
        HFGenerator(*tiny).generate(PROMPTS, 0, GREEDY)


def test_load_policy_roundtrip(tiny, tmp_path):
    model, tok = tiny
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, ltok = load_policy(tmp_path, dtype="float32")
    assert ltok.padding_side == "left" and ltok.pad_token_id == tok.pad_token_id
    want = HFGenerator(model, tok).generate(PROMPTS, 1, GREEDY)
    got = HFGenerator(loaded, ltok).generate(PROMPTS, 1, GREEDY)
    assert [c[0].token_ids.tolist() for c in got] == [c[0].token_ids.tolist() for c in want]


def test_load_policy_sets_missing_pad_and_names_bad_paths(tiny, tmp_path):
    model, tok = tiny
    model.save_pretrained(tmp_path)
    nopad = build_tokenizer()
    nopad.pad_token = None
    nopad.save_pretrained(tmp_path)
    _, ltok = load_policy(tmp_path)
    assert ltok.pad_token == ltok.eos_token and ltok.padding_side == "left"
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        load_policy(tmp_path / "no-such-model")


def test_bench_smoke(tmp_path):
    import json

    from rollsift.measure.bench_generate import run_bench

    out = tmp_path / "bench.json"
    report = run_bench(["--prompts", "2", "--n", "2", "--max-new-tokens", "4", "--threads", "1",
                        "--device", "cpu", "--out", str(out)])
    assert json.loads(out.read_text()) == report
    for name in ("hfgenerator", "model_generate"):
        assert 0 < report[name]["gen_tokens"] <= 2 * 2 * 4 and report[name]["tokens_per_s"] > 0
