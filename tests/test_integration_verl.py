"""The verl adapter against verl 0.9.1's real classes, on CPU, under a local Ray.

What runs here: Hydra composition of verl's ``ppo_trainer.yaml`` (and of the example config that
extends it) and verl's ``validate_config``; the ``verl.plugins`` entry point, loaded by ``import
verl`` in a fresh process; verl's stock ``PPOTrainerSync`` building ``RollsiftSampler`` through its
custom-sampler path; ``RollsiftTrainerSync`` with verl's own tokenizer, ``RLHFDataset``,
``StatefulDataLoader``, TransferQueue and sync ``ReplayBuffer`` (DAPO filter on), driven for
several steps, with GRESO and with rollsift's real DOTS (pool embedded with a tiny random policy, references
probed through verl's rollout path); the ledger actor written from another Ray process; the example
launch scripts' command lines composed and validated. What cannot run without GPUs:
verl's worker groups (FSDP/Megatron actor, vLLM/SGLang rollout servers) and so ``fit()``; a fake
agent loop stands in for rollout, writing trajectories to TransferQueue as verl's
``AgentLoopWorkerTQ`` does, with a reward known per prompt (easy: always right, hard: always
wrong, mixed: right on even sessions).

The verl-free core (``session.py``, ``config.py``, ``data.py``) is tested without verl.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from collections import deque
from pathlib import Path

import pytest

from rollsift.configlib import ConfigError
from rollsift.integrations.verl.config import VerlRollsiftConfig
from rollsift.integrations.verl.data import to_verl_rows, write_verl_parquet
from rollsift.integrations.verl.session import Candidate, Finished, Session, prompt_from_row
from rollsift.ledger import MemoryLedger, SqliteLedger
from rollsift.records import Context, Decision, Prompt, Selection
from rollsift.select.greso import GresoConfig, GresoSelector

HAS_VERL = all(importlib.util.find_spec(m) for m in ("verl", "ray", "transfer_queue", "hydra"))
needs_verl = pytest.mark.skipif(not HAS_VERL, reason="verl 0.9.1, ray and transferqueue are not installed")
ROOT = Path(__file__).resolve().parents[1]
N = 4  # rollouts per prompt
B = 4  # train_batch_size (prompts)
KINDS = ("easy", "hard", "mixed")


def pool(k: int = 8) -> list[Prompt]:
    """3k prompts: k easy, k hard, k mixed (the kind is in the id, read by the fake agent loop)."""
    return [Prompt(id=f"toy/{kind}/{i}", text=f"{i}+{i}", answer=str(2 * i), meta={"data_source": "toy"})
            for kind in KINDS for i in range(k)]


def outcome(prompt_id: str, session: int) -> bool:
    kind = prompt_id.split("/")[1]
    return kind == "easy" or (kind == "mixed" and session % 2 == 0)


# ------------------------------------------------------------------------------ verl-free core


def test_config_rejects_unknown_keys_and_bad_values():
    cfg = VerlRollsiftConfig.from_kwargs({"selector": {"type": "greso", "p_easy": 0.3}, "ledger": {"path": "x.db"}})
    assert cfg.selector.p_easy == 0.3 and cfg.ledger.backend == "actor" and cfg.correct_key == "acc"
    with pytest.raises(ConfigError, match="selectr"):
        VerlRollsiftConfig.from_kwargs({"selectr": {}})
    with pytest.raises(ConfigError, match="backend"):
        VerlRollsiftConfig.from_kwargs({"ledger": {"backend": "remote"}})
    with pytest.raises(ConfigError, match="max_examined"):
        VerlRollsiftConfig.from_kwargs({"max_examined": 0})
    assert VerlRollsiftConfig.from_kwargs(None).selector.type == "greso"


def test_verl_rows_round_trip_through_rollsift_loader(tmp_path):
    from rollsift.data import load_prompts

    ps = pool(2)
    rows = to_verl_rows(ps)
    assert rows[0]["reward_model"] == {"style": "rule", "ground_truth": "0"}
    assert rows[0]["prompt"][0]["content"].endswith("\\boxed{}.")
    write_verl_parquet(ps, tmp_path / "train.parquet")
    back = load_prompts(tmp_path / "train.parquet").prompts
    assert [p.id for p in back] == [p.id for p in ps] and [p.answer for p in back] == [p.answer for p in ps]
    # the id rule the adapter applies to verl's dataset rows is rollsift.data's
    row = {**rows[1], "raw_prompt": rows[1]["prompt"]}
    assert prompt_from_row(row).id == ps[1].id
    no_id = {k: v for k, v in row.items() if k != "id"}
    assert prompt_from_row(no_id).id == "toy/1"  # data_source/extra_info.index


def test_session_selects_a_prefix_per_epoch_and_fills():
    ledger = MemoryLedger()
    cfg = VerlRollsiftConfig.from_kwargs({"selector": {"type": "greso"}, "max_examined": 1.0})
    s = Session(cfg, GresoSelector(GresoConfig(), seed=0), ledger, n=N)
    ps = pool(2)
    draws = iter([[Candidate(p, e) for p in ps] for e in range(100)])
    pending: deque = deque()
    s.begin(1)
    got = s.select_stream(pending, 4, lambda: next(draws), len(ps))
    assert [c.prompt.id for c in got] == [p.id for p in ps[:4]]  # no history: all kept, in order
    assert len(pending) == 2 and s.round == 1
    # every prompt all-correct for 8 epochs: GRESO skips nearly all; the cap makes it fill
    for p in ps:
        for step in range(8):
            s.observe([])
            ledger.record_groups([_group(p, (True,) * N, step)], Context(step=step))
    got = s.select_stream(pending, 4, lambda: next(draws), len(ps))
    assert len(got) == 4
    reasons = [d.reason for d in ledger.decisions()]
    assert "easy" in reasons and "fill" in reasons


def test_session_observe_records_before_filtering_and_tells_once_per_step():
    ledger = MemoryLedger()
    cfg = VerlRollsiftConfig.from_kwargs({})
    sel = GresoSelector(GresoConfig(adapt_from_epoch=0), seed=0)
    s = Session(cfg, sel, ledger, n=2)
    ps = pool(1)
    s.begin(3)
    s.submitted(["u0", "u1", "u2"], ps, [0, 0, 0])
    s.observe([Finished(f"u{i}", (1.0, 0.0) if i == 2 else (float(i == 0),) * 2,
                        (True, False) if i == 2 else (i == 0,) * 2, (5, 7)) for i in range(3)])
    assert [g.prompt_id for g in ledger.groups()] == [p.id for p in ps]
    m = s.finish_step({"u2"})
    f = {r.prompt_id: (r.kept, r.reason) for r in ledger.filters()}
    assert f == {ps[0].id: (False, "zero_variance"), ps[1].id: (False, "zero_variance"), ps[2].id: (True, None)}
    assert m["cost/rollouts"] == 6 and m["cost/informative_rollouts"] == 2 and m["cost/gen_tokens"] == 36
    assert m["select/greso/p_easy"] == pytest.approx(0.49)  # 1/3 all-correct >= target 0.25/3: skip more
    assert [r.step for r in ledger.steps()] == [3]


def _group(p: Prompt, correct: tuple, step: int):
    from rollsift.records import Completion, Group

    return Group(p, tuple(Completion(p.id, i, (1,), "") for i in range(len(correct))),
                 tuple(map(float, correct)), correct, step=step)


def test_reward_function_returns_score_and_acc():
    from rollsift.integrations.verl.reward import compute_score

    assert compute_score("gsm8k", "so the answer is \\boxed{42}", "42") == {"score": 1.0, "acc": 1.0}
    assert compute_score("gsm8k", "\\boxed{41}", "42", {}, format_reward=0.1) == {"score": 0.1, "acc": 0.0}


# ------------------------------------------------------------------------------ verl, Ray, TransferQueue


@pytest.fixture(scope="module")
def cluster():
    """A local Ray and TransferQueue. Its controller and its one storage unit ask for a logical CPU each;
    rollsift's ledger actors and tasks ask for none."""
    if not HAS_VERL:
        pytest.skip("verl 0.9.1, ray and transferqueue are not installed")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    import transfer_queue as tq
    from omegaconf import OmegaConf

    env = {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    tq.init(OmegaConf.create({"backend": {"SimpleStorage": {"num_data_storage_units": 1}}}))
    yield tq
    tq.close()
    ray.shutdown()


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A tiny random Qwen2 with the testbed tokenizer (verl reads its config and tokenizer; DOTS embeds
    the pool with it) and the parquet files."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from rollsift.testbed.tokenizer import save_tokenizer

    root = tmp_path_factory.mktemp("verl")
    tok = save_tokenizer(root / "model")
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, architectures=["Qwen2ForCausalLM"])
    Qwen2ForCausalLM(cfg).save_pretrained(root / "model")
    write_verl_parquet(pool(8), root / "train.parquet", instruction=None)
    write_verl_parquet(pool(1), root / "val.parquet", split="test", instruction=None)
    return root


def compose(assets: Path, tmp: Path, *overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    base = [
        f"actor_rollout_ref.model.path={assets / 'model'}", f"data.train_files={assets / 'train.parquet'}",
        f"data.val_files={assets / 'val.parquet'}", f"data.train_batch_size={B}", "data.max_prompt_length=64",
        "data.dataloader_num_workers=0", "data.seed=0", f"actor_rollout_ref.rollout.n={N}",
        "algorithm.adv_estimator=grpo", f"actor_rollout_ref.actor.ppo_mini_batch_size={B}",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=2", "trainer.n_gpus_per_node=1",
        f"trainer.default_local_dir={tmp / 'ckpt'}", "trainer.resume_mode=disable", "trainer.logger=[console]",
    ]
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        return hydra_compose(config_name="ppo_trainer", overrides=base + list(overrides))


class FakeAgentLoop:
    """Stands in for verl's AgentLoopManagerTQ: writes each prompt's N outputs to TransferQueue the way
    AgentLoopWorkerTQ._agent_loop_postprocess does (keys uid_session_index, dataset fields + output fields,
    rm_scores with the reward on the last token, reward_extra_info in extra_fields), then marks it finished."""

    def __init__(self):
        self.submitted: list[str] = []  # prompt ids, in submission order

    def generate_sequences(self, batch):
        import torch
        import transfer_queue as tq
        import verl.utils.tensordict_utils as tu

        steps = int(batch["global_steps"]) if not hasattr(batch["global_steps"], "__len__") else None
        uids, ids = [str(u) for u in batch["uid"]], list(batch["id"])
        dataset_fields = {f: list(batch[f]) for f in ("data_source", "extra_info", "reward_model", "raw_prompt")}
        keys, fields, tags = [], [], []
        for row, (uid, pid) in enumerate(zip(uids, ids)):
            self.submitted.append(pid)
            for s in range(N):
                ok = float(outcome(pid, s))
                length = 3 + s
                rm = torch.zeros(length)
                rm[-1] = ok
                keys.append(f"{uid}_{s}_0")
                fields.append({"prompts": torch.tensor([1, 2]), "responses": torch.arange(length),
                               "response_mask": torch.ones(length, dtype=torch.int64), "rm_scores": rm,
                               "extra_fields": {"reward_extra_info": {"acc": ok, "score": ok}},
                               "id": pid, "uid": uid, **{f: v[row] for f, v in dataset_fields.items()}})
                tags.append({"status": "success", "prompt_len": 2, "response_len": length, "seq_len": 2 + length,
                             "global_steps": steps, "min_global_steps": steps, "max_global_steps": steps})
        tq.kv_batch_put(keys=keys, partition_id="train", fields=tu.list_of_dict_to_tensordict(fields), tags=tags)
        for uid in uids:
            tq.kv_put(key=uid, partition_id="train", tag={"status": "finished"})


def clear_tq(tq):
    for part, items in (tq.kv_list() or {}).items():
        if items:
            tq.kv_clear(keys=list(items), partition_id=part)


def run_steps(trainer, steps: int, tq):
    """What verl's fit() does around a step, minus the GPU work: prepare, sample, clear."""
    out = []
    for step in range(1, steps + 1):
        trainer.global_steps = step
        prep = trainer.prepare_step()
        batch, metrics = trainer.replay_buffer.sample(global_steps=step, partition_id="train", batch_size=B)
        tq.kv_clear(keys=batch.keys, partition_id=batch.partition_id)
        out.append((batch, {**prep, **metrics}))
    return out


def make_trainer(cls, config, tmp_path):
    trainer = cls(config)
    trainer.replay_buffer.poll_interval = 0.01
    trainer._init_tokenizer()
    trainer._init_dataloader()
    trainer.agent_loop_manager = FakeAgentLoop()
    return trainer


@needs_verl
def test_config_through_verl_hydra_and_validate_config(cluster, assets, tmp_path):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    config = compose(assets, tmp_path, "trainer.v1.trainer_mode=rollsift_sync",
                     "+trainer.v1.sampler.sampler_kwargs.selector.type=greso",
                     "+trainer.v1.sampler.sampler_kwargs.selector.p_easy=0.3",
                     "+trainer.v1.sampler.sampler_kwargs.ledger.backend=driver",
                     "algorithm.filter_groups.enable=true", "algorithm.filter_groups.metric=acc")
    validate_config(config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    cfg = VerlRollsiftConfig.from_kwargs(config.trainer.v1.sampler.sampler_kwargs)
    assert (cfg.selector.type, cfg.selector.p_easy, cfg.ledger.backend) == ("greso", 0.3, "driver")

    # the example config extends ppo_trainer, so its keys take plain key=value overrides
    with initialize_config_dir(config_dir=str(ROOT / "examples" / "verl" / "config"), version_base=None):
        ex = hydra_compose(config_name="rollsift_grpo", overrides=[
            "trainer.v1.sampler.sampler_kwargs.selector.p_easy=0.4", "trainer.default_local_dir=/ckpt/run1"])
    assert ex.trainer.v1.trainer_mode == "rollsift_sync" and ex.algorithm.filter_groups.enable
    cfg = VerlRollsiftConfig.from_kwargs(ex.trainer.v1.sampler.sampler_kwargs)
    assert cfg.selector.p_easy == 0.4 and cfg.ledger.path == "/ckpt/run1/rollsift/ledger.sqlite"
    assert ex.reward.custom_reward_function.path == "pkg://rollsift.integrations.verl.reward"


@needs_verl
@pytest.mark.parametrize("override, match", [
    ("reward.reward_model.enable=true", "colocated reward model"),
    ("trainer.v1.sampler.custom_sampler.name=X", "unset trainer.v1.sampler.custom_sampler"),
    ("+trainer.v1.sync.parameter_sync_step=2", "parameter_sync_step=1"),
    ("+trainer.v1.sampler.sampler_kwargs.selector.type=gresso", "not a known selector"),
])
def test_trainer_refuses_settings_it_cannot_run_with(assets, tmp_path, override, match):
    from rollsift.integrations.verl.trainer import check_config

    with pytest.raises(ConfigError, match=match):
        check_config(compose(assets, tmp_path, "trainer.v1.trainer_mode=rollsift_sync", override))


def launch_overrides(*args: str, **env: str) -> tuple[str, str, list[str]]:
    """(config dir, config name, overrides) of an example launch script, run with PYTHON=echo."""
    import shlex

    out = subprocess.run(["bash", *args], env={**os.environ, "PYTHON": "echo", "RAY": "echo", **env},
                         capture_output=True, text=True, check=True).stdout
    argv = shlex.split(out)
    assert argv[:2] == ["-m", "verl.trainer.main_ppo"]
    opts = dict(a[2:].split("=", 1) for a in argv[2:] if a.startswith("--"))
    return opts["config-path"], opts["config-name"], [a for a in argv[2:] if not a.startswith("--")]


@needs_verl
@pytest.mark.parametrize("script", ["single", "multi"])
def test_example_launch_composes_and_validates(script):
    """The example launches' command lines, composed by Hydra and checked by verl's validate_config."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    ex = ROOT / "examples" / "verl"
    if script == "single":
        path, name, overrides = launch_overrides(str(ex / "run_single_node.sh"), MODEL="/models/m", DATA="/data/d")
    else:
        path, name, overrides = launch_overrides(str(ex / "run_multi_node.sh"), "train", MODEL="/models/m",
                                                 DATA="/data/d", NNODES="2", LEDGER="/var/ledgers/run.sqlite")
    with initialize_config_dir(config_dir=path, version_base=None):
        config = hydra_compose(config_name=name, overrides=overrides)
    validate_config(config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    cfg = VerlRollsiftConfig.from_kwargs(config.trainer.v1.sampler.sampler_kwargs)
    assert config.trainer.v1.trainer_mode == "rollsift_sync" and cfg.selector.type == "greso"
    assert config.algorithm.filter_groups.enable and config.algorithm.filter_groups.metric == "acc"
    assert config.data.train_files == "/data/d/train.parquet"
    if script == "multi":
        assert config.trainer.nnodes == 2 and cfg.ledger.placement == "head"
        assert cfg.ledger.path == "/var/ledgers/run.sqlite"


@needs_verl
def test_plugin_entry_point_is_loaded_by_import_verl(tmp_path):
    """A fresh process: `import verl` loads the verl.plugins entry point, which registers rollsift_sync."""
    dist = tmp_path / "site" / "rollsift_verl_plugin-0.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: rollsift-verl-plugin\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text("[verl.plugins]\nrollsift = rollsift.integrations.verl.plugin\n")
    code = textwrap.dedent("""
        import sys, verl
        assert "rollsift.integrations.verl.trainer" in sys.modules, "plugin not loaded by import verl"
        from verl.trainer.ppo.v1 import get_trainer_cls
        print(get_trainer_cls("rollsift_sync").__name__)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(ROOT / "src")]),
           "VERL_USE_EXTERNAL_PLUGINS": "rollsift", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "RollsiftTrainerSync"


@needs_verl
def test_stock_sync_trainer_builds_rollsift_sampler_as_custom_sampler(cluster, assets, tmp_path):
    """verl's own PPOTrainerSync, custom_sampler -> RollsiftSampler: verl's constructor contract, then
    sample() returns (KVBatchMeta, metrics) and the ledger holds every group, read from TransferQueue."""
    from transfer_queue import KVBatchMeta
    from verl.trainer.ppo.v1 import PPOTrainerSync

    from rollsift.integrations.verl.sampler import RollsiftSampler

    ledger_path = tmp_path / "ledger.sqlite"
    config = compose(assets, tmp_path, "trainer.v1.sampler.custom_sampler.path=pkg://rollsift.integrations.verl.sampler",
                     "trainer.v1.sampler.custom_sampler.name=RollsiftSampler",
                     "+trainer.v1.sampler.sampler_kwargs.selector.type=uniform",
                     "+trainer.v1.sampler.sampler_kwargs.ledger.backend=driver",
                     f"+trainer.v1.sampler.sampler_kwargs.ledger.path={ledger_path}")
    tq = cluster
    trainer = make_trainer(PPOTrainerSync, config, tmp_path)
    assert type(trainer.replay_buffer) is RollsiftSampler and trainer.replay_buffer.filter_groups_metric is None
    (batch, metrics), = run_steps(trainer, 1, tq)
    assert isinstance(batch, KVBatchMeta) and len(batch.keys) == B * N
    assert metrics["cost/rollouts"] == B * N and metrics["cost/prompts"] == B
    trainer.replay_buffer.session.ledger.sync()
    clear_tq(tq)
    with SqliteLedger(ledger_path, readonly=True) as led:
        groups = list(led.groups(detail=True))
        assert sorted(g.prompt_id for g in groups) == sorted(trainer.agent_loop_manager.submitted)
        for g in groups:
            assert g.correct == tuple(outcome(g.prompt_id, s) for s in range(N))
            assert g.lengths == tuple(3 + s for s in range(N)) and g.step == 1


@needs_verl
def test_rollsift_trainer_greso_with_verl_dapo_filter(cluster, assets, tmp_path):
    """rollsift_sync + GRESO + verl's DAPO filter (algorithm.filter_groups, metric acc), 12 steps over a pool
    of 24 prompts (4 per step after filtering, so about 3 epochs of the 8 mixed ones)."""
    from rollsift.integrations.verl.trainer import RollsiftTrainerSync

    tq = cluster
    config = compose(assets, tmp_path, "trainer.v1.trainer_mode=rollsift_sync",
                     "+trainer.v1.sampler.sampler_kwargs.selector.type=greso",
                     "+trainer.v1.sampler.sampler_kwargs.selector.adapt_from_epoch=0",
                     "algorithm.filter_groups.enable=true", "algorithm.filter_groups.metric=acc")
    trainer = make_trainer(RollsiftTrainerSync, config, tmp_path)
    assert type(trainer.replay_buffer).__name__ == "RollsiftSampler"
    assert trainer.replay_buffer.filter_groups_metric == "acc"  # verl's DAPO knobs, as verl set them
    assert config.trainer.v1.trainer_mode == "sync" and config.data.gen_batch_size == 1
    trainer._load_checkpoint()  # resume_mode=disable: registers the pool
    steps = run_steps(trainer, 12, tq)
    for batch, m in steps:
        uids = {k.split("_")[0] for k in batch.keys}
        assert len(uids) == B and len(batch.keys) == B * N
    evicted = [m.get("training/filter_groups/evicted_samples", 0) for _, m in steps]
    assert evicted[0] > 0  # verl's DAPO filter ran: step 1 has no history, so GRESO keeps everything
    s = trainer.rollsift
    s.ledger.sync()
    led = SqliteLedger(Path(config.trainer.default_local_dir) / "rollsift" / "ledger.sqlite", readonly=True)
    groups = list(led.groups())
    # every generated group is in the ledger, the evicted ones included; only mixed ones were trained on
    assert len(groups) == len(trainer.agent_loop_manager.submitted)
    kept = [r for r in led.filters() if r.kept]
    assert len(kept) == 12 * B and all("/mixed/" in r.prompt_id for r in kept)
    assert {r.reason for r in led.filters() if not r.kept} <= {"zero_variance", "surplus"}
    # GRESO skipped easy/hard prompts it had seen, and the skipped ones were never submitted again that round
    decisions = list(led.decisions())
    skipped = [d for d in decisions if not d.kept]
    assert skipped and all("/mixed/" not in d.prompt_id for d in skipped)
    assert {d.reason for d in skipped} <= {"easy", "hard"}
    late = trainer.agent_loop_manager.submitted[len(trainer.agent_loop_manager.submitted) // 2:]
    early = trainer.agent_loop_manager.submitted[: len(trainer.agent_loop_manager.submitted) // 2]
    frac = lambda xs: sum("/mixed/" in x for x in xs) / len(xs)
    assert frac(late) > frac(early)
    m = steps[-1][1]
    assert m["select/greso/p_easy"] < 0.5 and "cost/informative_rollouts" in m and "select/skip_frac" in m
    assert [r.step for r in led.steps()] == list(range(1, 13))
    assert len(led.pool()[0]) == 24
    led.close()

    # checkpoint and resume: state file next to verl's, ledger rolled back, selector state restored
    folder = tmp_path / "ckpt" / "global_step_6"
    trainer.global_steps = 6
    trainer.rollsift_save(str(folder))
    saved = trainer.rollsift.state_dict()
    resumed = make_trainer(RollsiftTrainerSync, config, tmp_path)
    resumed.rollsift_load(str(folder), 6)
    assert resumed.rollsift.state_dict()["selector"]["p_easy"] == saved["selector"]["p_easy"]
    assert len(resumed._rollsift_pending) == len(trainer._rollsift_pending)
    resumed.rollsift.ledger.sync()
    with SqliteLedger(Path(config.trainer.default_local_dir) / "rollsift" / "ledger.sqlite", readonly=True) as led:
        assert [r.step for r in led.steps()] == list(range(1, 7))  # steps 7-12 hidden by the rollback
    clear_tq(tq)


class ProbingPoolSelector:
    """A pool-scoped, probing selector shaped like DOTS: probes the first 2 mixed prompts, then picks
    mixed prompts it has not picked yet (what a difficulty-targeting selector would do on this pool)."""

    scope = "pool"

    def __init__(self):
        self.told: list[list] = []
        self.next = 0

    def probe(self, pool, ledger, ctx):
        return [p for p in pool if "/mixed/" in p.id][:2]

    def ask(self, candidates, budget, ledger, ctx):
        mixed = [p for p in candidates if "/mixed/" in p.id]
        chosen = [mixed[(self.next + i) % len(mixed)] for i in range(budget)]
        self.next += budget
        return Selection(tuple(chosen), tuple(Decision(p.id, True, "target") for p in chosen))

    def tell(self, groups, ledger, ctx):
        self.told.append([(g.prompt_id, ctx.purpose) for g in groups])

    def state_dict(self):
        return {"next": self.next}

    def load_state_dict(self, state):
        self.next = state["next"]

    def metrics(self):
        return {}


@needs_verl
def test_rollsift_trainer_pool_selector_with_probes(cluster, assets, tmp_path):
    from rollsift.integrations.verl.trainer import RollsiftTrainerSync

    tq = cluster
    config = compose(assets, tmp_path, "trainer.v1.trainer_mode=rollsift_sync",
                     "+trainer.v1.sampler.sampler_kwargs.selector.type=uniform",
                     "+trainer.v1.sampler.sampler_kwargs.ledger.backend=driver")
    trainer = make_trainer(RollsiftTrainerSync, config, tmp_path)
    sel = trainer.rollsift.pipeline.selector = ProbingPoolSelector()
    steps = run_steps(trainer, 2, tq)
    for batch, m in steps:
        assert len({k.split("_")[0] for k in batch.keys}) == B and m["select/probe_groups"] == 2
    # per step: the probes told first (purpose "probe"), then the step's B training groups
    assert [len(t) for t in sel.told] == [2, B, 2, B] and sel.told[0][0][1] == "probe"
    led = trainer.rollsift.ledger
    purposes = [g.purpose for g in led.groups()]
    assert purposes.count("probe") == 4 and purposes.count("train") == 2 * B
    assert not (tq.kv_list("train") or {}).get("train")  # probes cleared from TransferQueue
    clear_tq(tq)


@needs_verl
def test_rollsift_trainer_with_dots(cluster, assets, tmp_path):
    """rollsift's DOTS selector in verl: the pool embedded with the policy checkpoint (loaded on CPU in the
    trainer process), references probed through verl's rollout path every step, predictions refreshed."""
    from rollsift.integrations.verl.trainer import RollsiftTrainerSync

    tq = cluster
    config = compose(assets, tmp_path, "trainer.v1.trainer_mode=rollsift_sync",
                     "+trainer.v1.sampler.sampler_kwargs.selector.type=dots",
                     "+trainer.v1.sampler.sampler_kwargs.selector.ref_size=6",
                     "+trainer.v1.sampler.sampler_kwargs.selector.mu=1",
                     "+trainer.v1.sampler.sampler_kwargs.selector.train_steps=3",
                     "+trainer.v1.sampler.sampler_kwargs.selector.hidden=8",
                     "+trainer.v1.sampler.sampler_kwargs.ledger.backend=driver")
    trainer = make_trainer(RollsiftTrainerSync, config, tmp_path)
    trainer._load_checkpoint()  # builds the pool, which binds DOTS (embeddings cached next to the ledger)
    assert list((tmp_path / "ckpt" / "rollsift").glob("dots-embeddings-*.npy"))
    steps = run_steps(trainer, 3, tq)
    for batch, m in steps:
        assert len({k.split("_")[0] for k in batch.keys}) == B and m["select/probe_groups"] == 6
    assert steps[-1][1]["select/dots/refreshes"] == 3
    assert steps[-1][1]["cost/probe_rollouts"] == 6 * N and steps[-1][1]["cost/rollouts"] == (6 + B) * N
    purposes = [g.purpose for g in trainer.rollsift.ledger.groups()]
    assert purposes.count("probe") == 18 and purposes.count("train") == 3 * B
    assert {d.reason for d in trainer.rollsift.ledger.decisions()} <= {"target", "no_prediction"}
    clear_tq(tq)


@needs_verl
def test_ledger_actor_is_shared_across_processes(cluster, tmp_path):
    """A Ray task in another worker process (as a reward worker on another node would be) writes through
    the named actor; the driver's handle sees it; the SQLite file holds it after close."""
    import ray

    from rollsift.integrations.verl.ledger_actor import LedgerClient, start_ledger_actor

    path = str(tmp_path / "shared.sqlite")
    client = start_ledger_actor(path, "test-ledger", placement="head")
    ps = pool(1)

    @ray.remote(num_cpus=0)
    def remote_writer(name, prompts):
        import os

        from rollsift.integrations.verl.ledger_actor import LedgerClient
        from rollsift.records import Completion, Context, Group

        led = LedgerClient.connect(name)
        groups = [Group(p, (Completion(p.id, 0, (1, 2), ""), Completion(p.id, 1, (1,), "")), (1.0, 0.0),
                        (True, False), step=1) for p in prompts]
        led.record_groups(groups, Context(step=1))
        return os.getpid()

    pid = ray.get(remote_writer.remote("test-ledger", ps))
    assert pid != os.getpid()
    assert client.get(ps[0].id).rollouts == 1 and client.info()["path"] == path
    assert list(client.lookup([p.id for p in ps]).rollouts) == [1, 1, 1]
    with pytest.raises(RuntimeError, match="already owns"):
        start_ledger_actor(str(tmp_path / "other.sqlite"), "test-ledger")
    assert LedgerClient.connect("test-ledger").info()["pid"] == client.info()["pid"]
    client.close()
    with SqliteLedger(path, readonly=True) as led:
        assert [g.prompt_id for g in led.groups()] == [p.id for p in ps]
