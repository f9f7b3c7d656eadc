"""Named sets of runs for ``rollsift compare``: same data, same seeds, one reference run.

A run is a list of packaged run files (``src/rollsift/configs/NAME.toml``, or paths) plus
``--set`` overrides; the preset's ``common`` overrides apply to every run, then the user's
``--set`` ones. Runs land in ``OUT/runs/<name>-s<seed>/``, so a later ``compare`` (or another
preset sharing a run) reuses a finished run whose resolved config is identical.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunSpec:
    name: str
    configs: tuple[str, ...]
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    reference: str
    runs: tuple[RunSpec, ...]
    common: tuple[str, ...] = ()
    seeds: int = 1


# The real comparison: every run gets the same training-wall budget (evaluation excluded) on the
# default testbed data; accuracy-vs-cost curves come from evaluations every 20 steps.
_TESTBED_COMMON = ("steps=100000", "max_minutes=8", "eval.every=20", "checkpoint_every=50", "log.progress=false",
                   "threads=1")

_RUNS = {
    "grpo": RunSpec("grpo", ("grpo",)),
    "grpo_n4": RunSpec("grpo_n4", ("grpo_n4",)),
    "dynamic": RunSpec("dynamic", ("dynamic",)),
    "greso": RunSpec("greso", ("greso",)),
    "dots_replay": RunSpec("dots_replay", ("dots",)),
    "pods": RunSpec("pods", ("pods",)),
    # pooled-AUC gate: with the default within-group gate the head never leaves warm-up on the testbed
    # (docs/strategies/pruning.md), which would make this run identical to greso
    "prune": RunSpec("prune", ("prune",), ("pruner.gate=pooled",)),
    "best": RunSpec("best", ("best",)),
    "posterior": RunSpec("posterior", ("posterior",)),
    "learned": RunSpec("learned", ("learned",)),
    "dots_noreplay": RunSpec("dots_noreplay", ("dots_noreplay",)),
    # the replay ablation: GRESO + dynamic sampling + a quarter of the batch replayed, never older than 1 version
    "best_s1": RunSpec("best_s1", ("best",), ("replay.max_staleness=1",)),
    # asynchronous rollouts against the synchronous loop given the same two cores (two threads)
    "greso_sync2": RunSpec("greso_sync2", ("greso",), ("threads=2",)),
    "greso_async": RunSpec("greso_async", ("async",)),
    # the cheaper update's counterpart: pi_old recomputed by a forward pass every step
    "greso_recompute": RunSpec("greso_recompute", ("greso",), ("learner.old_logprobs=recompute",)),
}


def _pick(*names: str) -> tuple[RunSpec, ...]:
    return tuple(_RUNS[n] for n in names)


_LONG_COMMON = ("steps=300", "eval.every=20", "checkpoint_every=50", "log.progress=false", "threads=1")

# The testbed recalibrated to move like a real run (docs/testbed.md, "A testbed that moves like a real
# run"): at T = 1 the tiny policy is near-deterministic on its easy prompts (all-correct groups stay
# all-correct far more often than a real run's) and at lr 2e-4 it learns a prompt within a few visits
# (mixed -> all-correct 3.5x the real run's). At T = 1.4-1.5 the per-prompt success distribution's
# noise floor (independent groups at a fixed policy) is the real trace's within 0.05 in every cell;
# lr 2e-5 keeps the drift per visit small while plain GRPO still gains over 8 points of held-out
# accuracy (sampled at the same T) in 300 steps. Probes and figures: docs/testbed.md.
REALISTIC = ("learner.lr=2e-5", "sampling.temperature=1.5", "eval.temperature=1.5")
_REALISTIC_COMMON = _LONG_COMMON + REALISTIC

# Every strategy, tiny: 8 steps of 4 prompts x 4 rollouts from a pool of 16, so GRESO sees each
# prompt again (and skips), the heat map has several epochs, DOTS refreshes every mu = 2 steps,
# and the quality head prunes from the first step. About 30 s in all on one idle core.
_SMOKE_COMMON = ("steps=8", "batch_size=4", "n=4", "data.train_size=16", "data.eval_size=16", "eval.samples=2",
                 "eval.every=4", "eval.greedy=false", "sampling.max_new_tokens=48", "threads=1", "device=cpu",
                 "checkpoint_every=4", "log.progress=false", "dynamic.max_rounds=2")
_SMOKE = (
    RunSpec("grpo", ("grpo",)),
    RunSpec("dynamic", ("dynamic",)),
    RunSpec("greso", ("greso",)),
    RunSpec("posterior", ("posterior",)),
    RunSpec("dots_replay", ("dots",), ("selector.ref_size=8",)),
    RunSpec("pods", ("pods",), ("n=8", "pods.m=4")),
    # no warm-up gate: prune (and train the head) from step 1, so the pruning path runs
    RunSpec("prune", ("prune",), ("pruner.min_warmup_steps=0", "pruner.warmup_patience=0", "pruner.min_auc=0.0",
                                  "pruner.checkpoint=8", "pruner.train_iters=20")),
    RunSpec("best", ("best",)),
)

PRESETS: dict[str, Preset] = {
    "smoke": Preset("smoke",
                    "every strategy on a tiny slice of the testbed (a test of the plumbing, not of the methods)",
                    "dynamic", _SMOKE, _SMOKE_COMMON),
    "testbed": Preset(
        "testbed",
        "every method on the testbed, 8 minutes of training wall each; reference: dynamic sampling",
        "dynamic",
        _pick("grpo", "dynamic", "greso", "posterior", "dots_replay", "dots_noreplay", "pods", "grpo_n4", "prune",
              "best", "best_s1"),
        _TESTBED_COMMON, seeds=3,
    ),
    # The horizon where selection is meant to pay: dynamic sampling's rounds per step grow as the pool is
    # solved (the paper's gains are late-training ones). 300 steps each, no time budget.
    "long": Preset("long", "dynamic sampling, GRESO and the posterior selector over 300 steps (late training)",
                   "dynamic", _pick("dynamic", "greso", "posterior"), _LONG_COMMON, seeds=3),
    # The same three on the recalibrated testbed, plus plain GRPO (its held-out gain is part of the check).
    "realistic": Preset("realistic", "GRPO, dynamic sampling, GRESO and the posterior selector over 300 steps on "
                                     "the testbed recalibrated to a real run's per-visit dynamics (lr 2e-5, T 1.5)",
                        "dynamic", _pick("grpo", "dynamic", "greso", "posterior"), _REALISTIC_COMMON, seeds=3),
    # Per-issue benchmarks: subsets of the testbed preset with the baseline each issue names
    # (`--runs OUT/runs` of a testbed compare reuses its finished runs instead of training them again).
    "greso": Preset("greso", "GRESO + dynamic sampling against dynamic sampling alone", "dynamic",
                    _pick("dynamic", "greso"), _TESTBED_COMMON, seeds=3),
    "posterior": Preset("posterior", "the posterior selector and GRESO, each + dynamic sampling, against dynamic "
                                     "sampling alone", "dynamic", _pick("dynamic", "greso", "posterior"),
                        _TESTBED_COMMON, seeds=3),
    "learned": Preset("learned", "the learned selector and the posterior selector, each + dynamic sampling, against "
                                 "dynamic sampling alone", "dynamic", _pick("dynamic", "posterior", "learned"),
                      _TESTBED_COMMON, seeds=3),
    "ablations": Preset("ablations", "DOTS without replay, and replay at staleness 1, beside their full versions",
                        "dynamic", _pick("dynamic", "dots_replay", "dots_noreplay", "best", "best_s1"),
                        _TESTBED_COMMON, seeds=3),
    "dots": Preset("dots", "DOTS + rollout replay (and without it) against plain GRPO", "grpo",
                   _pick("grpo", "dots_replay", "dots_noreplay"), _TESTBED_COMMON, seeds=3),
    "pods": Preset("pods", "PODS (n = 16, m = 4) against GRPO with n = 4 (same update size)", "grpo_n4",
                   _pick("grpo_n4", "pods"), _TESTBED_COMMON, seeds=3),
    # Two-core runs: compare with --jobs 2 runs them one at a time, each on both cores.
    "async": Preset("async", "GRESO + dynamic sampling with asynchronous rollouts (eta = 1, a process per core) "
                             "against the synchronous loop with two threads", "greso_sync2",
                    _pick("greso_sync2", "greso_async"), _TESTBED_COMMON, seeds=3),
    # pi_old from the behaviour log-probs (the default) against a forward pass: time/train per step
    "update": Preset("update", "the cheaper update: GRESO + dynamic sampling with pi_old from the generator's "
                               "log-probs (greso) against recomputing it (greso_recompute), 60 steps",
                     "greso", _pick("greso", "greso_recompute"),
                     ("steps=60", "eval.every=20", "checkpoint_every=50", "log.progress=false", "threads=1"), seeds=3),
    "prune": Preset("prune", "quality-head pruning against the same run (GRESO + dynamic sampling) without it",
                    "greso", _pick("greso", "prune"), _TESTBED_COMMON, seeds=3),
}
