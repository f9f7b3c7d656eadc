"""rollsift replay-ledger: a selector's counterfactual decisions on a recorded ledger."""

from __future__ import annotations

import json

import pytest

from rollsift.configlib import ConfigError
from rollsift.ledger import MemoryLedger, open_ledger
from rollsift.measure.counterfactual import main, replay
from rollsift.records import Completion, Context, Decision, Group
from rollsift.sim.model import prompts_for, synthetic_pool
from rollsift.sim.simulate import _parser, run_configs, simulate


def _record(ledger, epochs: int, outcomes: dict[str, int], n: int = 8, selections: bool = False) -> None:
    """Each epoch is one step that rolls out every prompt with ``outcomes[id]`` correct of n."""
    prompts = prompts_for(sorted(outcomes))
    ledger.register_pool([p.id for p in prompts])
    for e in range(epochs):
        ctx = Context(step=e + 1, epoch=e, policy_version=e, n=n)
        if selections:
            ledger.record_selection([Decision(p.id, True, "uniform") for p in prompts], ctx)
        groups = []
        for p in prompts:
            k = outcomes[p.id]
            comps = tuple(Completion(p.id, i, (1, 2, 3), "", (0.0,) * 3) for i in range(n))
            groups.append(Group(p, comps, tuple([1.0] * k + [0.0] * (n - k)), tuple([True] * k + [False] * (n - k)),
                                step=e + 1, epoch=e, policy_version=e))
        ledger.record_groups(groups, ctx)
        ledger.record_step(e + 1, {})


def _adds_up(t: dict) -> None:
    assert t["skipped_groups"] == t["skipped_all_correct"] + t["skipped_all_wrong"] + t["lost_informative_groups"]
    assert t["saved_rollout_share"] == pytest.approx(t["saved_rollouts"] / t["rollouts"])


def test_greso_skips_solved_prompts_at_its_rate_and_counts_add_up():
    ledger = MemoryLedger()
    outcomes = {f"easy/{i}": 8 for i in range(300)} | {f"mixed/{i}": 4 for i in range(100)}
    _record(ledger, 3, outcomes)
    out = replay(ledger, "greso", seed=0)
    assert out["source"] == "groups" and out["steps"] == 3
    e0, e1, e2 = (out["per_epoch"][str(e)] for e in range(3))
    assert e0["skipped_groups"] == 0                       # no history yet
    # epoch 1: one all-correct group behind each easy prompt -> skipped with probability 1 - 0.5
    assert 0.4 < e1["skipped_all_correct"] / 300 < 0.6
    assert e1["lost_informative_groups"] == 0 and e1["skipped_all_wrong"] == 0   # mixed prompts are never skipped
    # epoch 2: prompts skipped in epoch 1 kept a streak of 1, kept ones have 2 -> 0.5 * 0.5 + 0.5 * 0.75
    assert 0.5 < e2["skipped_all_correct"] / 300 < 0.75
    t = out["total"]
    assert t["groups"] == t["decisions"] == 1200 and t["rollouts"] == 9600 and t["gen_tokens"] == 9600 * 3
    assert t["saved_rollouts"] == 8 * t["skipped_groups"] and t["saved_gen_tokens"] == 3 * t["saved_rollouts"]
    _adds_up(t)
    assert len(out["skips"]) == t["skipped_groups"] and {s[4] for s in out["skips"]} == {"all_correct"}
    # kept groups are more informative than the recorded ones: the projected cost per informative group falls
    assert t["informative_share_kept"] > t["informative_share_recorded"] and t["projected_cost_ratio"] < 1.0


def test_uniform_skips_nothing_and_dots_is_refused():
    ledger = MemoryLedger()
    _record(ledger, 2, {"a": 8, "b": 0, "c": 3}, selections=True)
    out = replay(ledger, "uniform")
    assert out["source"] == "selections" and out["total"]["skipped_groups"] == 0 and out["total"]["agreement"] == 1.0
    with pytest.raises(ConfigError, match="stream selectors"):
        replay(ledger, "dots")


def _recorded_greso_run(seed: int):
    args = _parser().parse_args(["--selector", "greso", "--steps", "60", "--seed", str(seed), "--lr", "0.4"])
    (cfg,) = run_configs(args)
    prompts, model = synthetic_pool(200, seed=seed)
    ledger = MemoryLedger()
    return ledger, simulate(cfg, prompts, model, lr=0.4, ledger=ledger)


def test_replaying_a_run_with_its_own_selector_and_seed_reproduces_its_decisions():
    ledger, rec = _recorded_greso_run(seed=3)
    assert rec["skipped"] > 100
    out = replay(ledger, "greso", seed=3)
    t = out["total"]
    assert t["agreement"] == 1.0 and t["decisions"] == rec["examined"]
    assert t["skipped_groups"] == 0 and t["extra_groups"] == 0 and t["recorded_skips"] == rec["skipped"]
    other = replay(ledger, "greso", seed=4)["total"]
    assert other["agreement"] < 1.0 and other["decisions"] == t["decisions"]
    _adds_up(other)
    # uniform keeps every prompt the run skipped: outcome unknown, counted as extra rollouts
    uni = replay(ledger, "uniform")["total"]
    assert uni["extra_groups"] == rec["skipped"] and uni["extra_rollouts"] == 8 * rec["skipped"]
    assert uni["saved_rollouts"] == 0


def test_an_unfinished_last_step_is_left_out_and_steps_limits_the_replay():
    ledger = MemoryLedger()
    _record(ledger, 2, {"a": 8, "b": 4}, selections=True)
    ledger.record_selection([Decision("a", True, "uniform")], Context(step=3, epoch=2))  # killed before its groups
    out = replay(ledger, "uniform")
    assert out["total"]["decisions"] == 4 and out["steps"] == 2
    assert replay(ledger, "uniform", steps=1)["total"]["decisions"] == 2


def test_cli_on_a_sqlite_ledger_reads_the_runs_config(tmp_path, capsys):
    with open_ledger(tmp_path / "ledger.sqlite") as ledger:
        _record(ledger, 3, {f"p/{i}": (8 if i % 2 else 0) for i in range(50)}, selections=True)
    out = tmp_path / "cf.json"
    assert main([str(tmp_path), "--selector", "greso", "--set", "selector.p_easy=0.3", "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["knobs"] == {"p_easy": 0.3} and d["seed"] == 0 and d["selector_seed"] == 5
    assert d["total"]["groups"] == 150 and d["total"]["skipped_groups"] > 0
    assert "total" in capsys.readouterr().out
    (tmp_path / "config.toml").write_text('seed = 7\n[selector]\ntype = "greso"\np_hard = 0.2\n')
    assert main([str(tmp_path / "ledger.sqlite"), "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["knobs"] == {"p_hard": 0.2} and d["seed"] == 7
    assert main([str(tmp_path), "--selector", "uniform", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["knobs"] == {}          # the run's greso knobs are not uniform's
    with pytest.raises(ConfigError, match="no ledger.sqlite"):
        main([str(tmp_path / "nope")])
    with pytest.raises(ConfigError, match="only selector.KEY"):
        main([str(tmp_path), "--set", "dynamic.max_rounds=2"])


def test_the_oracle_skips_exactly_the_zero_variance_groups():
    ledger = MemoryLedger()
    outcomes = {f"easy/{i}": 8 for i in range(30)} | {f"hard/{i}": 0 for i in range(10)} | \
               {f"mixed/{i}": 3 for i in range(20)}
    _record(ledger, 4, outcomes)
    out = replay(ledger, "greso", seed=0)
    o = out["oracle"]["total"]
    assert o["groups"] == 240 and o["skipped_groups"] == 160 and o["skipped_all_correct"] == 120
    assert o["saved_rollout_share"] == pytest.approx(160 / 240) and o["lost_informative_groups"] == 0
    assert o["lost_informative_share"] == 0.0 and o["projected_cost_ratio"] == pytest.approx(80 / 240)
    assert out["oracle"]["per_epoch"]["0"]["skipped_groups"] == 40
    t = out["total"]   # GRESO never skips the mixed prompts here, so its saving is all zero-variance
    assert t["oracle_saving_reached"] == pytest.approx(t["saved_rollouts"] / o["saved_rollouts"]) and \
        0 < t["oracle_saving_reached"] < 1
    assert replay(ledger, "uniform")["total"]["oracle_saving_reached"] == 0.0
    lossy = replay(ledger, "posterior", {"max_lost": 0.5}, seed=0)["total"]
    # rollouts saved on informative groups are not the oracle's saving: the share counts zero-variance ones
    assert lossy["oracle_saving_reached"] == pytest.approx(
        (lossy["saved_rollouts"] - 8 * lossy["lost_informative_groups"]) / o["saved_rollouts"])
