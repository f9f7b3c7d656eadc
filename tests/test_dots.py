"""DOTS: the selection law, the refresh schedule, the predictor learning a planted signal, the
predictor file, exact resume and a run on the simulator.

By hand, not unit tests: ``python tests/test_dots.py`` times a refresh and a selection over a
1M-prompt pool (``--threads`` chooses the cores); ``--quality`` prints the planted-signal
correlations, ``--sim`` DOTS against uniform selection on the simulator, and ``--testbed
CHECKPOINT`` the correlations with a testbed policy's own embeddings, as quoted in
docs/strategies/dots.md.
"""

from __future__ import annotations

import copy
import io
from itertools import permutations

import numpy as np
import pytest
import torch

from rollsift.configlib import ConfigError
from rollsift.ledger import MemoryLedger
from rollsift.pipeline import RolloutPipeline
from rollsift.records import Completion, Context, Group, Prompt, SamplingParams, TrainBatch
from rollsift.select import dots_predictor as dp
from rollsift.select.dots import DotsConfig, DotsSelector, target_sample
from rollsift.select.uniform import UniformSelector
from rollsift.sim.model import SimGenerator, SimLearner, sim_reward, synthetic_pool

torch.set_num_threads(1)


def prompts(k: int, prefix: str = "q") -> list[Prompt]:
    return [Prompt(id=f"{prefix}{i}", text=f"{i}", answer="1") for i in range(k)]


def group(prompt: Prompt, k: int, n: int = 8, step: int = 0) -> Group:
    correct = tuple(i < k for i in range(n))
    comps = tuple(Completion(prompt.id, i, (1,), "") for i in range(n))
    return Group(prompt, comps, tuple(float(c) for c in correct), correct, step=step)


def planted(n: int = 3000, d: int = 32, seed: int = 0):
    """Gaussian embeddings whose success rate is sigmoid(2.5 * <e, w>) along a hidden unit direction w."""
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((n, d)).astype(np.float32)
    w = rng.standard_normal(d)
    w /= np.linalg.norm(w)
    return e, 1 / (1 + np.exp(-2.5 * (e @ w))), rng


def observe(rng, p, rows, n: int = 8) -> np.ndarray:
    return (rng.binomial(n, p[rows]) / n).astype(np.float32)


# ---------------------------------------------------------------------- the selection law
def inclusion_exact(w: np.ndarray, k: int) -> np.ndarray:
    """P(i among k draws without replacement, each draw proportional to w among those left)."""
    inc = np.zeros(len(w))
    for seq in permutations(range(len(w)), k):
        pr, left = 1.0, w.sum()
        for i in seq:
            pr *= w[i] / left
            left -= w[i]
        inc[list(seq)] += pr
    return inc


def test_selection_follows_softmax_without_replacement():
    pred = np.array([0.5, 0.45, 0.3, 0.72, 0.1, 0.95])
    tau, k, trials = 0.1, 3, 20000
    w = np.exp(-np.abs(pred - 0.5) / tau)
    rng = np.random.default_rng(0)
    counts, first = np.zeros(len(pred)), np.zeros(len(pred))
    for _ in range(trials):
        idx, _ = target_sample(pred, k, tau, 0.5, rng)
        counts[idx] += 1
        first[idx[0]] += 1
    expected = inclusion_exact(w, k)
    sd = np.sqrt(expected * (1 - expected) / trials)
    assert np.all(np.abs(counts / trials - expected) < 5 * sd + 1e-9)
    soft = w / w.sum()  # the first pick is one softmax draw
    assert np.all(np.abs(first / trials - soft) < 5 * np.sqrt(soft * (1 - soft) / trials) + 1e-9)


def test_inclusion_probability_is_the_horvitz_thompson_weight():
    pred = np.array([0.5, 0.45, 0.3, 0.72, 0.1])
    rng = np.random.default_rng(1)
    ht = np.zeros(len(pred))
    trials = 20000
    for _ in range(trials):
        idx, prob = target_sample(pred, 2, 0.1, 0.5, rng)
        assert np.all((prob > 0) & (prob <= 1))
        ht[idx] += 1 / prob
    assert np.allclose(ht / trials, 1.0, atol=0.06)


def test_tau_1e3_is_nearly_greedy_and_excluded_rows_are_never_drawn():
    pred = np.array([0.2, 0.47, 0.5, 0.55, 0.9])
    rng = np.random.default_rng(0)
    assert all(target_sample(pred, 1, 1e-3, 0.5, rng)[0][0] == 2 for _ in range(500))
    assert all(list(target_sample(pred, 3, 1e-3, 0.5, rng)[0]) == [2, 1, 3] for _ in range(500))
    exclude = np.array([False, False, True, False, False])
    assert all(2 not in target_sample(pred, 4, 1e-3, 0.5, rng, exclude)[0] for _ in range(50))
    idx, prob = target_sample(pred, 9, 1e-3, 0.5, rng, exclude)
    assert sorted(idx) == [0, 1, 3, 4] and np.all(prob == 1.0)


def test_ask_records_only_the_chosen_and_never_repeats_within_a_round():
    pool = prompts(40)
    sel = DotsSelector(DotsConfig(tau=0.01), seed=0)
    sel.set_embeddings([p.id for p in pool], np.random.default_rng(0).normal(size=(40, 8)))
    sel.pred = np.linspace(0, 1, 40).astype(np.float32)
    ctx = Context(step=1)
    seen = []
    for budget in (8, 8, 8):  # dynamic sampling's refills within one step
        out = sel.ask(pool, budget, None, ctx)
        assert len(out.chosen) == len(out.decisions) == budget
        assert all(d.kept and d.reason == "target" and 0 < d.prob <= 1 for d in out.decisions)
        seen += [p.id for p in out.chosen]
    assert len(set(seen)) == len(seen)
    near = [abs(float(sel.pred[int(i[1:])]) - 0.5) for i in seen[:8]]
    assert max(near) < 0.15  # the first picks are the prompts nearest 0.5
    out = sel.ask(pool, 30, None, ctx)  # the pool is used up for the round: only this step's picks are excluded
    assert len(out.chosen) == 16 and not set(seen) & {p.id for p in out.chosen}


def test_ask_aims_at_the_configured_target():
    pool = prompts(5)
    for target, best in ((0.5, "q2"), (0.9, "q4")):
        sel = DotsSelector(DotsConfig(target=target), seed=0)
        sel.set_embeddings([p.id for p in pool], np.eye(5))
        sel.pred = np.array([0.2, 0.47, 0.5, 0.55, 0.9], np.float32)
        assert sel.ask(pool, 1, None, Context(step=1)).chosen[0].id == best


def test_probe_draws_references_at_the_first_step_and_every_mu_steps():
    pool = prompts(100)
    sel = DotsSelector(DotsConfig(mu=3, ref_size=10), seed=0)
    sel.set_embeddings([p.id for p in pool], np.random.default_rng(0).normal(size=(100, 8)))
    rng = np.random.default_rng(0)
    probed = []
    for s in range(1, 10):
        refs = sel.probe(pool, None, Context(step=s))
        if refs:
            assert len({p.id for p in refs}) == 10
            probed.append(s)
            sel.tell([group(p, int(rng.integers(9))) for p in refs], None, Context(step=s, purpose="probe"))
        sel.tell([], None, Context(step=s))
    assert probed == [1, 4, 7]
    assert sel.metrics()["select/dots/refreshes"] == 3


def test_config_rejects_bad_knobs():
    for bad in ({"tau": 0.0}, {"target": 1.5}, {"mu": 0}, {"ref_size": 3}, {"hidden": 0}, {"train_steps": -1}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            DotsConfig(**bad)


def test_prompts_without_embeddings_are_an_error():
    sel = DotsSelector(DotsConfig(), seed=0)
    with pytest.raises(RuntimeError, match="set_embeddings"):
        sel.probe(prompts(5), None, Context(step=1))
    sel.set_embeddings(["a", "b"], np.eye(2))
    with pytest.raises(ValueError, match="no embedding"):
        sel.ask(prompts(3), 1, None, Context(step=1))


# ---------------------------------------------------------------------- the predictor
def training_rounds(p, rng, rows: int = 2000, k: int = 128, q: int = 256, count: int = 8) -> list[dp.Round]:
    out = []
    for _ in range(count):
        keys = rng.choice(rows, k, replace=False)
        rd = dp.Round(keys, observe(rng, p, keys))
        rd.add(keys, rd.key_y)
        queries = rng.choice(rows, q, replace=False)
        rd.add(queries, observe(rng, p, queries))
        out.append(rd)
    return out


def held_out_pearson(pred: dp.DotsPredictor, emb, p, rng) -> tuple[float, float]:
    """Correlation with observed and with true success on prompts never trained on."""
    fresh = np.arange(2000, len(p))
    keys = rng.choice(fresh, 128, replace=False)
    test = np.setdiff1d(fresh, keys)
    x = pred.predict(emb, keys, observe(rng, p, keys), test)
    return dp.pearson(x, observe(rng, p, test)), dp.pearson(x, p[test])


def test_predictor_learns_a_planted_difficulty_signal():
    e, p, rng = planted()
    emb = dp.normalize(e)
    pred = dp.DotsPredictor(emb.shape[1], seed=0)
    before = held_out_pearson(pred, emb, p, np.random.default_rng(5))
    loss = pred.fit(emb, training_rounds(p, rng), steps=120, batch=256, rng=rng)
    after = held_out_pearson(pred, emb, p, np.random.default_rng(5))
    assert loss is not None and loss < 0.6
    assert after[0] > 0.75 and after[1] > 0.85  # observed labels are Binomial(8, p) / 8: noisy
    assert after[0] > abs(before[0]) + 0.5


def test_online_training_beats_the_untrained_adapters():
    e, p, _ = planted(n=2000, seed=2)
    pool = prompts(2000)

    def run(online: bool) -> list[float]:
        rng = np.random.default_rng(7)
        sel = DotsSelector(DotsConfig(mu=1, ref_size=128, online=online, train_steps=40, train_batch=128), seed=0)
        sel.set_embeddings([x.id for x in pool], e)
        out = []
        for s in range(1, 8):
            refs = sel.probe(pool, None, Context(step=s))
            sel.tell([group(x, int(rng.binomial(8, p[int(x.id[1:])]))) for x in refs], None, Context(step=s, purpose="probe"))
            chosen = sel.ask(pool, 64, None, Context(step=s)).chosen
            sel.tell([group(x, int(rng.binomial(8, p[int(x.id[1:])]))) for x in chosen], None, Context(step=s))
            out.append(sel.metrics().get("select/dots/pearson", 0.0))
        return out

    trained, frozen = run(True), run(False)
    assert trained[0] == frozen[0]  # the same untrained start
    assert np.mean(trained[-3:]) > 0.7
    assert np.mean(trained[-3:]) > np.mean(frozen[-3:]) + 0.2


def test_predictor_file_round_trip(tmp_path):
    e, p, rng = planted(n=2500, d=16)
    emb = dp.normalize(e)
    pred = dp.DotsPredictor(16, hidden=16, layers=2, seed=3)
    pred.fit(emb, training_rounds(p, rng, count=3), steps=30, batch=128, rng=rng)
    path = tmp_path / "dots.pt"
    pred.save(path, meta={"encoder": "synthetic"})
    keys, ky = np.arange(64), observe(rng, p, np.arange(64))
    again = dp.DotsPredictor.load(path)
    assert again.shape == pred.shape
    np.testing.assert_array_equal(again.predict(emb, keys, ky), pred.predict(emb, keys, ky))
    # a frozen offline predictor in the selector: the authors' setting
    pool = prompts(2500)
    sel = DotsSelector(DotsConfig(predictor_path=str(path), online=False, ref_size=64), seed=0)
    sel.set_embeddings([x.id for x in pool], e)
    before = {k: v.clone() for k, v in sel.predictor.net.state_dict().items()}
    sel.tell([group(pool[i], int(ky[i] * 8)) for i in range(64)], None, Context(step=1, purpose="probe"))
    assert all(torch.equal(v, sel.predictor.net.state_dict()[k]) for k, v in before.items())
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a DOTS predictor file"):
        dp.DotsPredictor.load(tmp_path / "other.pt")
    sel = DotsSelector(DotsConfig(predictor_path=str(path)), seed=0)
    with pytest.raises(ValueError, match="16-dim"):
        sel.set_embeddings(["a", "b"], np.eye(2))


def test_bind_embeds_the_pool_with_the_policy_and_caches_it(tmp_path, monkeypatch):
    from rollsift.testbed.model import TinyModelConfig, build_model
    from rollsift.testbed.tokenizer import build_tokenizer

    tok = build_tokenizer()
    model = build_model(tok, TinyModelConfig(hidden_size=64, num_layers=1, intermediate_size=64, num_kv_heads=1))
    pool = [Prompt(id=f"t{i}", text=f"{i * 37}+{i}=", answer="") for i in range(12)]

    def encode(prompt):
        return tok(prompt.text)["input_ids"]

    sel = DotsSelector(DotsConfig(embed_batch=5), seed=0)
    sel.bind(model=model, tokenizer=tok, encode=encode, out=tmp_path, device="cpu", pool=pool)
    assert sel.emb.shape == (12, 64)
    (cache,) = tmp_path.glob("dots-embeddings-*.npy")
    raw = np.load(cache)
    with torch.inference_mode():  # one prompt alone, no padding: the batched, padded mean must equal it
        alone = model.base_model(input_ids=torch.tensor([encode(pool[7])])).last_hidden_state.mean(1)[0]
    np.testing.assert_allclose(raw[7], alone.numpy(), rtol=1e-4, atol=1e-5)

    def boom(*a, **k):
        raise AssertionError("recomputed despite the cache")

    monkeypatch.setattr(dp, "embed_token_ids", boom)
    again = DotsSelector(DotsConfig(), seed=0)
    again.bind(model=model, tokenizer=tok, encode=encode, out=tmp_path, device="cpu", pool=pool)
    np.testing.assert_array_equal(again.emb, sel.emb)


# ---------------------------------------------------------------------- in the pipeline
def sim_run(selector, size: int = 400, batch: int = 16, seed: int = 0):
    pool, model = synthetic_pool(size, seed=seed)
    ledger = MemoryLedger()
    ledger.register_pool([p.id for p in pool])
    if isinstance(selector, DotsSelector):  # synthetic embeddings that carry the simulator's ease and gain
        rng = np.random.default_rng(seed + 1)
        ease = np.array([model.ease[p.id] for p in pool])
        gain = np.array([model.gain[p.id] for p in pool])
        selector.set_embeddings([p.id for p in pool], np.column_stack([ease, gain, rng.normal(size=(size, 6))]))
    pipe = RolloutPipeline(pool, selector, SimGenerator(model, seed=seed), lambda p, cs: [sim_reward(p, c) for c in cs],
                           ledger, batch_size=batch, n=8, sampling=SamplingParams(), seed=seed)
    return pipe, ledger, SimLearner(model, batch_size=batch)


def sim_step(pipe, learner, s):
    ctx = Context(step=s, policy_version=learner.policy_version, n=pipe.n)
    col = pipe.collect(ctx)
    learner.update(TrainBatch(tuple(col.groups), tuple((0.0,) * g.n for g in col.groups), tuple(col.off_policy)), ctx)
    return col, pipe.observe(col, ctx)


def dots(**kw) -> DotsSelector:
    return DotsSelector(DotsConfig(**{"ref_size": 48, "train_steps": 20, "train_batch": 64, **kw}), seed=4)


def test_pipeline_rolls_out_probes_and_selects_near_one_half():
    pipe, ledger, learner = sim_run(dots())
    cols = [sim_step(pipe, learner, s) for s in range(1, 7)]
    assert [c.metrics["cost/probe_rollouts"] for c, _ in cols] == [48 * 8, 0] * 3
    assert all(c.metrics["cost/rollouts"] == 48 * 8 * (s % 2) + 16 * 8 for s, (c, _) in enumerate(cols, 1))
    assert len(list(ledger.groups(purpose="probe"))) == 3 * 48
    assert all(c.metrics["batch/groups"] == 16 for c, _ in cols)  # probes are never trained on
    decisions = list(ledger.decisions())
    assert len(decisions) == 6 * 16 and all(d.kept and d.reason == "target" for d in decisions)
    m = cols[-1][1]
    assert abs(m["select/dots/chosen_pred_mean"] - 0.5) < 0.05
    assert m["select/dots/refreshes"] == 3 and m["select/dots/pearson"] > 0.6
    for key in ("pred_mean", "ref_success_mean", "train_loss", "chosen_informative_frac"):
        assert f"select/dots/{key}" in m
    uni_pipe, _, uni_learner = sim_run(UniformSelector())
    uni = [sim_step(uni_pipe, uni_learner, s)[0] for s in range(1, 7)]
    zero_var = np.mean([c.metrics["step/zero_variance_frac"] for c, _ in cols])
    assert zero_var < np.mean([c.metrics["step/zero_variance_frac"] for c in uni]) - 0.2


def test_dynamic_sampling_refills_never_repeat_a_prompt_within_a_round():
    from rollsift.filters.dynamic import DynamicSamplingConfig, DynamicSamplingFilter

    pipe, ledger, learner = sim_run(dots())
    pipe.filters = [DynamicSamplingFilter(DynamicSamplingConfig(max_rounds=6, carry_over=False))]
    pipe.refill = pipe.filters[0]
    for s in range(1, 5):
        sim_step(pipe, learner, s)
    train = [g for g in ledger.groups(purpose="train")]
    assert max(g.round for g in train) >= 1  # refills happened
    for first in (1, 3):  # rounds of mu = 2 steps
        ids = [g.prompt_id for g in train if g.step in (first, first + 1)]
        assert len(ids) == len(set(ids))


def test_resume_from_state_gives_identical_selections():
    pipe, ledger, learner = sim_run(dots())
    for s in (1, 2, 3):  # stop inside a round: step 4 reuses step 3's predictions
        sim_step(pipe, learner, s)
    buf = io.BytesIO()
    torch.save(pipe.state_dict(), buf)  # as a checkpoint does
    gen_state = copy.deepcopy(pipe.generator.state_dict())
    a = [sim_step(pipe, learner, s) for s in (4, 5, 6, 7)]

    pipe2, _, learner2 = sim_run(dots())
    pipe2.selector.rng = np.random.default_rng(123)  # whatever it held is replaced by the state
    pipe2.ledger = ledger
    ledger.rollback(after_step=3)
    buf.seek(0)
    pipe2.load_state_dict(torch.load(buf, weights_only=False))
    pipe2.generator.load_state_dict(gen_state)
    learner2.model.competence = pipe2.generator.model.competence
    learner2.policy_version = 3
    b = [sim_step(pipe2, learner2, s) for s in (4, 5, 6, 7)]
    for (ca, ma), (cb, mb) in zip(a, b):
        assert [g.prompt_id for g in ca.groups] == [g.prompt_id for g in cb.groups]
        assert {k: v for k, v in ma.items() if not k.startswith("time/")} == \
            {k: v for k, v in mb.items() if not k.startswith("time/")}
    np.testing.assert_array_equal(pipe.selector.pred, pipe2.selector.pred)


@pytest.mark.slow
def test_trainer_embeds_with_the_policy_and_resumes_exactly(tmp_path):
    """The reference trainer: bind embeds the pool, checkpoints carry the predictor, resume = uninterrupted."""
    from safetensors.torch import load_file

    from rollsift.config import build_config
    from rollsift.ledger import open_ledger
    from rollsift.metrics_file import read_metrics
    from rollsift.testbed.model import TinyModelConfig, build_model
    from rollsift.testbed.tokenizer import build_tokenizer
    from rollsift.trainer.train import train

    tok, model = build_tokenizer(), tmp_path / "tiny"
    shape = TinyModelConfig(hidden_size=64, num_layers=1, intermediate_size=64, num_kv_heads=1)
    build_model(tok, shape).save_pretrained(model)
    tok.save_pretrained(model)

    def cfg(out, steps):
        return build_config(overrides=[
            f"model={model}", f"out={out}", f"steps={steps}", "device=cpu", "threads=1", "batch_size=4", "n=4",
            "data.train_size=24", "data.eval_size=4", "eval.every=3", "eval.samples=1", "checkpoint_every=1",
            "sampling.max_new_tokens=6", "log.progress=false", "learner.lr=1e-2", "selector.type=dots",
            "selector.ref_size=8", "selector.train_steps=5", "selector.train_batch=16"])

    train(cfg(tmp_path / "a", 4))
    train(cfg(tmp_path / "b", 3))
    train(cfg(tmp_path / "b", 4), resume=True)  # step 3 evaluates in both runs (eval.every)
    rows = [[{k: v for k, v in r.items() if not k.startswith("time/")} for r in read_metrics(tmp_path / x)]
            for x in "ab"]
    assert rows[0] == rows[1]
    assert [r.get("cost/probe_rollouts") for r in rows[0][1:]] == [32.0, 0.0, 32.0, 0.0]
    assert len(list((tmp_path / "a").glob("dots-embeddings-*.npy"))) == 1
    groups = [[(g.step, g.purpose, g.prompt_id, g.n_correct) for g in open_ledger(tmp_path / x).groups()]
              for x in "ab"]
    assert groups[0] == groups[1]
    ckpt = [tmp_path / x / "checkpoints" for x in "ab"]
    wa, wb = (load_file(str(c / (c / "latest").read_text().strip() / "model.safetensors")) for c in ckpt)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_state_loaded_before_the_embeddings_is_applied_when_they_arrive():
    pipe, _, learner = sim_run(dots())
    sim_step(pipe, learner, 1)
    state = copy.deepcopy(pipe.selector.state_dict())
    late = dots()
    late.load_state_dict(state)  # a run builder may restore before bind
    late.set_embeddings(pipe.selector.ids, np.random.default_rng(0).normal(size=(400, 8)))
    np.testing.assert_array_equal(late.pred, pipe.selector.pred)
    assert late.refreshes == 1


# ---------------------------------------------------------------------- timing, by hand
def _time_refresh(n: int, d: int, threads: int) -> None:
    import time

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    ids = [f"p{i}" for i in range(n)]
    pool = [Prompt(id=i, text="", answer="") for i in ids]
    sel = DotsSelector(DotsConfig(), seed=0)
    t = time.perf_counter()
    sel.set_embeddings(ids, rng.standard_normal((n, d), dtype=np.float32))
    print(f"N={n} d={d} threads={threads}: set_embeddings {time.perf_counter() - t:.2f}s")
    for s in (1, 3):
        refs = sel.probe(pool, None, Context(step=s))
        groups = [group(p, int(rng.integers(9)), step=s) for p in refs]
        t, c = time.perf_counter(), time.process_time()
        sel.tell(groups, None, Context(step=s, purpose="probe"))
        m = sel._round_metrics
        print(f"  refresh {s} (K={len(refs)}): {time.perf_counter() - t:.2f}s wall, {time.process_time() - c:.2f}s cpu "
              f"(train {m['time/dots/train']:.2f}s, predict {m['time/dots/predict']:.2f}s)")
        for _ in range(2):
            t = time.perf_counter()
            sel.ask(pool, 512, None, Context(step=s))
            print(f"  ask B=512: {time.perf_counter() - t:.3f}s")
        sel.tell(groups[:64], None, Context(step=s))


def _quality(seeds: int = 3) -> None:
    """The planted-signal numbers of docs/strategies/dots.md."""
    for seed in range(seeds + 1):
        e, p, rng = planted(seed=seed)
        emb = dp.normalize(e)
        pred = dp.DotsPredictor(emb.shape[1], seed=seed)
        before = held_out_pearson(pred, emb, p, np.random.default_rng(5))
        pred.fit(emb, training_rounds(p, rng), steps=120, batch=256, rng=rng)
        after = held_out_pearson(pred, emb, p, np.random.default_rng(5))
        ceiling = dp.pearson(p[2000:], observe(np.random.default_rng(9), p, np.arange(2000, len(p))))
        print(f"planted seed {seed}: untrained r_obs {before[0]:.3f} r_true {before[1]:.3f}; "
              f"trained r_obs {after[0]:.3f} r_true {after[1]:.3f}; noise ceiling r_obs {ceiling:.3f}")
    for seed in range(seeds):
        e, p, _ = planted(n=2000, seed=seed)
        pool = prompts(2000)
        for online in (True, False):
            rng = np.random.default_rng(7)
            sel = DotsSelector(DotsConfig(mu=1, ref_size=128, online=online, train_steps=40, train_batch=128), seed)
            sel.set_embeddings([x.id for x in pool], e)
            out = []
            for s in range(1, 11):
                refs = sel.probe(pool, None, Context(step=s))
                sel.tell([group(x, int(rng.binomial(8, p[int(x.id[1:])]))) for x in refs], None,
                         Context(step=s, purpose="probe"))
                chosen = sel.ask(pool, 64, None, Context(step=s)).chosen
                sel.tell([group(x, int(rng.binomial(8, p[int(x.id[1:])]))) for x in chosen], None, Context(step=s))
                out.append(round(sel.metrics().get("select/dots/pearson", 0.0), 2))
            print(f"online seed {seed} {'online' if online else 'frozen'}: pearson by round {out}")


def _sim(ref_size: int = 48, steps: int = 10, seeds: int = 3) -> None:
    """DOTS against uniform selection on the simulator (zero-variance share, learning progress)."""
    for seed in range(seeds):
        pipe, _, learner = sim_run(dots(ref_size=ref_size), seed=seed)
        runs = [sim_step(pipe, learner, s) for s in range(1, steps + 1)]
        uni_pipe, _, uni_learner = sim_run(UniformSelector(), seed=seed)
        uni = [sim_step(uni_pipe, uni_learner, s)[0] for s in range(1, steps + 1)]
        print(f"sim seed {seed}: zero-variance dots {[round(c.metrics['step/zero_variance_frac'], 2) for c, _ in runs]}"
              f" uniform {[round(c.metrics['step/zero_variance_frac'], 2) for c in uni]}")
        print(f"  chosen p_hat {[round(m['select/dots/chosen_pred_mean'], 2) for _, m in runs]}"
              f" pearson {[round(m.get('select/dots/pearson', float('nan')), 2) for _, m in runs]}")
        print(f"  competence dots {learner.model.competence:.3f} uniform {uni_learner.model.competence:.3f}; rollouts "
              f"dots {sum(c.metrics['cost/rollouts'] for c, _ in runs):.0f} "
              f"uniform {sum(c.metrics['cost/rollouts'] for c in uni):.0f}")


def _testbed(checkpoint: str, size: int = 2048, seeds: int = 3) -> None:
    """Held-out correlation with the testbed policy's own embeddings and its observed success."""
    from rollsift.generate import HFGenerator
    from rollsift.records import SamplingParams
    from rollsift.rewards import MathReward
    from rollsift.trainer.assembly import load_model
    from rollsift.testbed.problems import prompts as testbed_prompts

    policy, tok = load_model(checkpoint, torch.device("cpu"))
    pool = testbed_prompts("train")[:size]
    gen, reward = HFGenerator(policy, tok, max_batch_rows=512, seed=0), MathReward()
    emb = dp.normalize(dp.embed_token_ids(policy, [gen.encode(x) for x in pool], 64, tok.pad_token_id or 0))
    acc = []
    for lo in range(0, size, 128):
        outs = gen.generate(pool[lo:lo + 128], 8, SamplingParams(1.0, 1.0, 64))
        acc += [sum(reward(x, c).correct for c in cs) / 8 for x, cs in zip(pool[lo:lo + 128], outs)]
    acc, tier = np.array(acc, np.float32), np.array([x.meta["difficulty"] for x in pool])
    n_train = size * 3 // 4
    print(f"{checkpoint}: mean success {acc.mean():.3f}, mixed {np.mean((acc > 0) & (acc < 1)):.3f}")
    tier_mean = {t: acc[:n_train][tier[:n_train] == t].mean() for t in np.unique(tier)}
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        pred = dp.DotsPredictor(emb.shape[1], seed=seed)
        keys = rng.choice(np.arange(n_train, size), 128, replace=False)
        test = np.setdiff1d(np.arange(n_train, size), keys)
        untrained = dp.pearson(pred.predict(emb, keys, acc[keys], test), acc[test])
        rounds = []
        for _ in range(8):
            k, q = rng.choice(n_train, 128, replace=False), rng.choice(n_train, 256, replace=False)
            rounds.append(dp.Round(k, acc[k]))
            rounds[-1].add(np.concatenate([k, q]), acc[np.concatenate([k, q])])
        pred.fit(emb, rounds, 300, 256, rng)
        trained = dp.pearson(pred.predict(emb, keys, acc[keys], test), acc[test])
        by_tier = dp.pearson([tier_mean[t] for t in tier[test]], acc[test])
        print(f"  seed {seed}: held-out r trained {trained:.3f}, untrained {untrained:.3f}, tier mean {by_tier:.3f}")


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dims", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--quality", action="store_true", help="the planted-signal correlations instead")
    ap.add_argument("--sim", action="store_true", help="DOTS against uniform on the simulator instead")
    ap.add_argument("--ref-size", type=int, default=48, help="K for --sim")
    ap.add_argument("--steps", type=int, default=10, help="training steps for --sim")
    ap.add_argument("--testbed", metavar="CHECKPOINT", help="correlations with a testbed checkpoint instead")
    args = ap.parse_args()
    if args.quality:
        _quality()
    elif args.sim:
        _sim(args.ref_size, args.steps)
    elif args.testbed:
        _testbed(args.testbed)
    else:
        for d in args.dims:
            for th in args.threads:
                _time_refresh(args.n, d, th)
