"""Quality-head pruning: the survivor rule against brute force, AUC, warm-up, pruning inside the
HF generator (rows stop, survivors are the rule's), observe end to end, state, and voting."""

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rollsift.configlib import ConfigError
from rollsift.generate import HFGenerator
from rollsift.protocols import RolloutPruner
from rollsift.records import SamplingParams
from rollsift.prune.head import (
    auc,
    choose_survivors,
    expected_sq_gap,
    policy_features,
    within_group_auc,
)
from rollsift.prune.quality_head import QualityHeadConfig, QualityHeadPruner, load_head
from rollsift.records import Context, Group, Prompt

PROMPTS = [Prompt(id=f"p{i}", answer="0", text=t) for i, t in enumerate(["1+2", "37+48*3-9", "5", "99*9-1+2"])]
CHECK = 4
SP = SamplingParams(temperature=1.0, max_new_tokens=16)


pytestmark = pytest.mark.usefixtures("one_thread")


def pruner_for(model, tok, tmp_path=None, **kw):
    """A bound pruner past warm-up whose head gives varied scores (random output weights)."""
    cfg = QualityHeadConfig(**{"checkpoint": CHECK, "warmup_patience": 0, "min_warmup_steps": 0, "audit_frac": 0.0, **kw})
    pr = QualityHeadPruner(cfg, seed=1)
    pr.bind(model=model, tokenizer=tok, encode=HFGenerator(model, tok).encode, out=tmp_path, device="cpu")
    pr._build(model.config.hidden_size)
    with torch.no_grad():
        pr.head.net[-1].weight.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(3))
    return pr


def recording(pr):
    calls = []
    inner = pr.prune

    def prune(partial, ctx):
        keep = inner(partial, ctx)
        calls.append((partial, keep.clone()))
        return keep

    pr.prune = prune
    return calls


# ---------------------------------------------------------------- the rule, AUC
@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=9), st.lists(st.floats(0, 1), max_size=3),
       st.floats(0, 1), st.data())
def test_choose_survivors_is_optimal_and_extreme(p, fixed, target, data):
    m = data.draw(st.integers(0, len(p)))
    chosen = choose_survivors(p, m, fixed, target)
    assert len(chosen) == m and len(set(chosen.tolist())) == m
    gap = expected_sq_gap([p[i] for i in chosen] + fixed, target)
    best = min(expected_sq_gap([p[i] for i in c] + fixed, target) for c in itertools.combinations(range(len(p)), m))
    assert gap <= best + 1e-9
    # the chosen set is the k highest plus the m - k lowest
    order = sorted(range(len(p)), key=lambda i: (-p[i], i))
    assert any(set(chosen.tolist()) == set(order[:k] + order[len(p) - (m - k):]) for k in range(m + 1))


def test_choose_survivors_balances_a_clear_case():
    # 6 running rows, keep 4: two confident positives + two confident negatives
    p = [0.95, 0.1, 0.9, 0.5, 0.05, 0.92]
    assert choose_survivors(p, 4, [], 0.5).tolist() == [0, 1, 4, 5]
    # a finished row predicted positive takes one positive's place
    assert choose_survivors(p, 3, [0.9], 0.5).tolist() == [0, 1, 4]
    # an uncertain row (0.5) is never preferred to a confident one of the side that is needed
    assert 3 not in choose_survivors(p, 2, [], 0.5).tolist()


def test_auc_values():
    assert auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert auc([0.5] * 4, [0, 1, 0, 1]) == 0.5
    assert auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert math.isnan(auc([0.1, 0.2], [1, 1]))


def test_within_group_auc_ignores_between_group_differences():
    # group 0 is hard (low scores), group 1 easy: pooled AUC is high, inside each group it is random
    scores = [0.2] * 4 + [0.8] * 4
    labels = [0, 1, 0, 0, 1, 1, 0, 1]
    gid = [0, 0, 0, 0, 1, 1, 1, 1]
    assert auc(scores, labels) > 0.6 and within_group_auc(scores, labels, gid) == 0.5
    assert within_group_auc([0.1, 0.9, 0.5, 0.6], [0, 1, 0, 1], [0, 0, 1, 1]) == 1.0
    assert math.isnan(within_group_auc([0.1, 0.9], [1, 1], [0, 1]))


def test_warm_up_gate_within_needs_a_signal_inside_groups():
    """A feature that only tells prompts apart (difficulty) ends warm-up under gate='pooled' but
    not under the default gate='within'."""
    rng = torch.Generator().manual_seed(2)
    phases = {}
    for gate in ("within", "pooled"):
        pr = QualityHeadPruner(QualityHeadConfig(min_auc=0.7, warmup_patience=1, min_warmup_steps=1, gate=gate), seed=0)
        for _ in range(4):
            easy = torch.rand(32, generator=rng)  # per-group success rate
            gid = np.repeat(np.arange(32), 8)
            x = torch.randn(256, 8, generator=rng) * 0.1
            x[:, 0] += easy[gid] * 4  # the feature sees the group's difficulty, nothing about the row
            y = (torch.rand(256, generator=rng) < easy[gid]).numpy()
            m = pr.learn(x, y, group_ids=gid)
        phases[gate] = pr.warming_up
        assert m["prune/quality_head/auc"] > 0.75 and abs(m["prune/quality_head/auc_within"] - 0.5) < 0.12
    assert phases == {"within": True, "pooled": False}


# ---------------------------------------------------------------- warm-up on a planted signal
def planted(rng, n=256, dim=16):
    x = torch.randn(n, dim, generator=rng) * 3.0 + 5.0  # off-centre, scaled: standardisation matters
    w = torch.linspace(-1, 1, dim)
    return x, ((x - 5.0) @ w > 0).numpy()


def test_head_learns_a_planted_signal_and_warm_up_ends_only_after_the_auc_criterion():
    pr = QualityHeadPruner(QualityHeadConfig(min_auc=0.7, warmup_patience=2, min_warmup_steps=3), seed=0)
    rng = torch.Generator().manual_seed(0)
    assert pr.warming_up and pr.over_sample == 1.0 and not pr.needs_hidden_states
    aucs, phases = [], []
    for _ in range(5):
        x, y = planted(rng)
        m = pr.learn(x, y)
        aucs.append(m["prune/quality_head/auc"])
        phases.append(pr.warming_up)
    assert aucs[0] == 0.5  # an untrained head scores everything 0.5
    assert min(aucs[1:]) > 0.95  # measured on fresh rollouts, before training on them
    # step 1 fails the criterion; steps 2 and 3 pass it: warm-up ends after step 3, not before
    assert phases == [True, True, False, False, False]
    assert pr.over_sample == 1.5 and pr.needs_hidden_states
    # labels become noise: two measured steps below min_auc send it back to warm-up
    for _ in range(2):
        x, _ = planted(rng)
        pr.learn(x, torch.rand(len(x), generator=rng).numpy() > 0.5)
    assert pr.warming_up and pr.over_sample == 1.0


def test_auc_needs_enough_unbiased_rows():
    pr = QualityHeadPruner(QualityHeadConfig(min_auc_samples=16), seed=0)
    x, y = planted(torch.Generator().manual_seed(1), n=40)
    fair = np.zeros(40, bool)
    fair[:10] = True
    m = pr.learn(x, y, unbiased=fair)
    assert math.isnan(m["prune/quality_head/auc"]) and not math.isnan(m["prune/quality_head/auc_all"])


# ---------------------------------------------------------------- inside the generator
def test_recomputed_features_equal_the_hidden_state_at_the_poll(tiny):
    model, tok = tiny
    pr = pruner_for(model, tok)
    calls = recording(pr)
    gen = HFGenerator(model, tok, seed=5)
    gen.generate(PROMPTS, 2, SP, pruner=pr, ctx=Context(step=1, n=2))
    partial, _ = calls[0]
    rows = partial.active.nonzero().squeeze(1).tolist()
    seqs = [gen.encode(PROMPTS[int(partial.group_of[r])]) + partial.token_ids[r, :CHECK].tolist() for r in rows]
    feats = policy_features(model, seqs, gen.pad_id)
    assert torch.allclose(feats, partial.hidden[rows].float(), atol=1e-4)


def test_pruned_rows_stop_and_survivors_are_the_rules_choice(tiny):
    model, tok = tiny
    n = 4
    pr = pruner_for(model, tok)
    pr.prior = 0.8
    calls = recording(pr)
    gen = HFGenerator(model, tok, seed=7)
    out = gen.generate(PROMPTS, n, SP, pruner=pr, ctx=Context(step=1, n=n))
    stats = gen.last_stats
    (partial, keep), = [c for c in calls if c[0].step_tokens == CHECK]
    k = math.ceil(n * 1.5)
    assert stats["rows"] == k * len(PROMPTS) and len(partial.active) == k * len(PROMPTS)
    probs = pr.head.prob(partial.hidden).numpy()
    n_pruned = 0
    for g in range(len(PROMPTS)):
        rows = list(range(g * k, (g + 1) * k))
        act = [r for r in rows if partial.active[r]]
        fin = [r for r in rows if not partial.active[r]]
        m = min(max(n - len(fin), 0), len(act))
        # brute force over every m-subset of the running rows (scores computed here)
        gaps = {c: expected_sq_gap([probs[r] for r in c] + [0.8] * len(fin), 0.5) for c in itertools.combinations(act, m)}
        expected = set(min(gaps, key=gaps.get))
        assert {r for r in act if keep[r]} == expected
        n_pruned += len(act) - m
        survivors = sorted(expected | set(fin))[:n]
        assert len(out[g]) == len(survivors)
        for c, r in zip(out[g], survivors):  # survivors come back in row order, re-indexed
            assert c.index == out[g].index(c)
            assert c.token_ids[:CHECK].tolist() == partial.token_ids[r, :min(CHECK, c.num_tokens)].tolist()
            assert c.status != "pruned"
    assert n_pruned > 0 and stats["pruned_rows"] == n_pruned
    # pruned rows stopped at the checkpoint: the token count is survivors' tokens + CHECK per pruned row
    assert stats["gen_tokens"] == sum(c.num_tokens for cs in out for c in cs) + CHECK * n_pruned
    # the same seed without a pruner: the same first CHECK tokens, all k rows to the end
    base = HFGenerator(model, tok, seed=7)
    full = base.generate(PROMPTS, k, SP)
    for g in range(len(PROMPTS)):
        for i, c in enumerate(full[g]):
            r = g * k + i
            assert c.token_ids[:CHECK].tolist() == partial.token_ids[r, :min(CHECK, c.num_tokens)].tolist()
    assert stats["gen_tokens"] < base.last_stats["gen_tokens"]


def test_warming_up_starts_n_rows_and_prunes_nothing(tiny):
    model, tok = tiny
    pr = QualityHeadPruner(QualityHeadConfig(checkpoint=CHECK), seed=0)
    pr.bind(model=model, tokenizer=tok, encode=HFGenerator(model, tok).encode, device="cpu")
    gen = HFGenerator(model, tok, seed=7)
    out = gen.generate(PROMPTS, 4, SP, pruner=pr, ctx=Context(step=1, n=4))
    assert pr.over_sample == 1.0 and gen.last_stats["rows"] == 4 * len(PROMPTS)
    assert gen.last_stats["pruned_rows"] == 0 and all(len(cs) == 4 for cs in out)


def test_audit_groups_keep_a_random_subset(tiny):
    model, tok = tiny
    pr = pruner_for(model, tok, audit_frac=1.0)
    gen = HFGenerator(model, tok, seed=7)
    out = gen.generate(PROMPTS, 4, SP, pruner=pr, ctx=Context(step=1, n=4))
    assert all(len(cs) == 4 for cs in out) and gen.last_stats["pruned_rows"] > 0
    assert all(rec["audit"] for rec in pr._groups.values())


# ---------------------------------------------------------------- observe, state, voting
def groups_from(gen, pr, step, n=4):
    ctx = Context(step=step, n=n)
    out = gen.generate(PROMPTS, n, SP, pruner=pr, ctx=ctx)
    # a label the head can learn from the prefix: the first generated token's id is even
    return [Group(prompt=p, completions=tuple(cs), rewards=tuple(float(c.token_ids[0] % 2 == 0) for c in cs),
                  correct=tuple(bool(c.token_ids[0] % 2 == 0) for c in cs), step=step)
            for p, cs in zip(PROMPTS, out)], ctx


def test_observe_reports_metrics_saves_the_head_and_round_trips_state(tiny, tmp_path):
    model, tok = tiny
    pr = pruner_for(model, tok, tmp_path, audit_frac=0.5, min_auc_samples=4)
    gen = HFGenerator(model, tok, seed=11)
    groups, ctx = groups_from(gen, pr, step=1)
    pr.observe(groups, ctx)
    m = pr.metrics()
    keys = ["auc", "auc_all", "pruned_frac", "tokens_saved", "survivor_pos_ratio", "unpruned_pos_ratio",
            "pred_survivor_pos_ratio", "warming_up", "train_loss"]
    assert all(f"prune/quality_head/{k}" in m for k in keys)
    assert m["prune/quality_head/pruned_frac"] == pytest.approx(8 / 24)  # 6 started, 4 kept per group
    assert m["prune/quality_head/tokens_saved"] > 0 and m["prune/quality_head/warming_up"] == 0.0
    assert (tmp_path / "quality_head.pt").is_file() and pr._groups == {}

    state = pr.state_dict()
    twin = QualityHeadPruner(pr.cfg, seed=1)
    twin.bind(model=model, tokenizer=tok, encode=gen.encode, out=tmp_path, device="cpu")
    twin.load_state_dict(state)
    assert twin.metrics() == m and twin.prior == pr.prior and twin.warming_up == pr.warming_up
    # resume equals uninterrupted: the next step generates, prunes and learns the same
    groups2, ctx2 = groups_from(HFGenerator(model, tok, seed=12), pr, step=2)
    twin2, _ = groups_from(HFGenerator(model, tok, seed=12), twin, step=2)
    assert [[c.token_ids.tolist() for c in g.completions] for g in groups2] == \
        [[c.token_ids.tolist() for c in g.completions] for g in twin2]
    pr.observe(groups2, ctx2)
    twin.observe(twin2, ctx2)
    assert twin.metrics() == pr.metrics()
    for a, b in zip(pr.head.state_dict().values(), twin.head.state_dict().values()):
        assert torch.equal(a, b)


def test_voting_helper_scores_with_the_saved_head(tiny, tmp_path):
    from rollsift.measure.eval_command import vote

    model, tok = tiny
    pr = pruner_for(model, tok, tmp_path)
    gen = HFGenerator(model, tok, seed=13)
    out = gen.generate(PROMPTS[:1], 4, SP)
    path = pr.save_head(tmp_path / "quality_head.pt")
    scorer = load_head(path, model)
    w = scorer.score_completions(PROMPTS[0], out[0], gen)
    assert len(w) == 4 and all(0.0 < x < 1.0 for x in w)
    assert w == pytest.approx(pr.score_completions(PROMPTS[0], out[0], gen))
    answers = ["1", "2", "2", "1"]
    assert vote(answers, w) == ("1" if w[0] + w[3] >= w[1] + w[2] else "2")


def test_config_validation_and_protocol():
    assert isinstance(QualityHeadPruner(), RolloutPruner)
    for bad in ({"over_sample": 0.5}, {"checkpoint": 0}, {"target_ratio": 1.5}, {"min_auc": 2.0},
                {"audit_frac": -0.1}, {"drop_patience": 0}, {"type": "other"}, {"gate": "both"}):
        with pytest.raises(ConfigError):
            QualityHeadConfig(**bad)
    from rollsift.config import PRUNERS, resolve_strategy

    cfg = resolve_strategy("pruner", PRUNERS, {"type": "quality_head", "checkpoint": 8}, "pruner")
    assert isinstance(cfg, QualityHeadConfig) and cfg.checkpoint == 8


def test_head_loads_from_a_checkpoint_directory(tiny, tmp_path):
    from rollsift.trainer import checkpoint

    model, tok = tiny
    pr = pruner_for(model, tok, tmp_path)
    ckpt = checkpoint.save(tmp_path, 7, model, tok, {"pipeline": {"pruner": pr.state_dict()}})
    gen = HFGenerator(model, tok, seed=13)
    out = gen.generate(PROMPTS[:1], 3, SP)
    assert load_head(ckpt, model).score_completions(PROMPTS[0], out[0], gen) == \
        pytest.approx(pr.score_completions(PROMPTS[0], out[0], gen))
    bare = checkpoint.save(tmp_path / "other", 1, model, tok, {"pipeline": {"pruner": None}})
    with pytest.raises(ValueError, match="no trained quality head"):
        load_head(bare, model)


def test_eval_cli_votes_with_a_saved_head(tmp_path, capsys):
    import argparse
    import json

    from rollsift.measure.eval_command import main
    from rollsift.prune.head import QualityHead, save_head
    from rollsift.trainer.assembly import load_model

    model, _ = load_model("testbed", torch.device("cpu"))
    path = save_head(QualityHead(model.config.hidden_size), 8, tmp_path / "quality_head.pt")
    args = argparse.Namespace(model="testbed", data="testbed", size=3, samples=2, temperature=1.0, max_new_tokens=64,
                              vote="quality", head=str(path), device="cpu", seed=0, json=True)
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0.0 <= result["eval/vote_quality_accuracy"] <= 1.0 and result["prompts"] == 3
    from rollsift.configlib import ConfigError

    with pytest.raises(ConfigError, match="--head"):  # before any model is loaded (it was after generating)
        main(argparse.Namespace(**{**vars(args), "head": None}))
