"""Data and ledger edges (issues 21 and 23): empty or all-skipped sets, short pools, GSM8K's own
format checked by math-verify, the on_error hint in a bad row's error, a ledger on a full disk."""

from __future__ import annotations

import json
import re
import logging
import sqlite3

import pytest

from conftest import train_cli

from rollsift.data import DataError, check_batch_fill, check_nonempty, load_prompts
from rollsift.ledger import open_ledger
from rollsift.records import Completion, Prompt
from rollsift.rewards import MathReward

GSM8K = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                 "How many clips did Natalia sell altogether in April and May?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72"},
    {"question": "A shop sold 617 pens on Monday and 617 on Tuesday. How many pens in all?",
     "answer": "617 + 617 = <<617+617=1234>>1234\n#### 1,234"},
    {"question": "What is 1,234 written without a comma?", "answer": "#### 1,234"},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------------------ empty and short sets
def test_an_empty_file_is_an_error_naming_it_when_asked(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert load_prompts(empty).prompts == []  # the plain call still returns an empty result
    with pytest.raises(DataError) as e:
        load_prompts(empty, nonempty=True)
    msg = str(e.value)
    assert "empty.jsonl" in msg and "holds no prompts" in msg and "data.eval=none" in msg


def test_a_set_whose_every_row_was_skipped_is_an_error_with_the_first_reason(tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "a"}, {"prompt": "b"}])
    res = load_prompts(bad, on_error="skip")
    assert res.prompts == [] and res.skipped == 2
    with pytest.raises(DataError) as e:
        check_nonempty(res, bad, "data.eval")
    msg = str(e.value)
    assert "bad.jsonl" in msg and "every row was bad and skipped (2 with data.on_error=skip)" in msg
    assert "line 1 (1-based)" in msg and "set data.eval to another file" in msg
    with pytest.raises(DataError, match="every row was bad"):
        load_prompts(bad, on_error="skip", nonempty=True)


def test_a_pool_shorter_than_the_batch_warns_with_the_counts(tmp_path, caplog):
    rows = [{"prompt": "q1", "answer": "1"}, {"prompt": "q2"}, {"prompt": "q3"}, {"prompt": "q4"}]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    res = load_prompts(path, on_error="skip", nonempty=True)
    with caplog.at_level(logging.WARNING, logger="rollsift.data"):
        msg = check_batch_fill(res, 4, path)
    assert msg is not None and msg in caplog.text
    assert "gives 1 prompt, fewer than batch_size 4" in msg and "3 of 4 rows were skipped" in msg
    assert "at most 1 group" in msg
    assert check_batch_fill(res, 1, path) is None  # a full batch: no warning
    small = load_prompts(write_jsonl(tmp_path / "small.jsonl", rows[:1]))
    assert "the file holds no more" in check_batch_fill(small, 2, "small.jsonl")


# ------------------------------------------------------------------------------------- GSM8K's format
@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_gsm8k_rows_load_with_the_gold_after_the_hashes(tmp_path, suffix):
    path = tmp_path / f"gsm8k{suffix}"
    if suffix == ".jsonl":
        write_jsonl(path, GSM8K)
    elif suffix == ".json":
        path.write_text(json.dumps(GSM8K))
    else:
        pa = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(GSM8K), path)
    prompts = load_prompts(path).prompts
    assert [p.answer for p in prompts] == ["72", "1,234", "1,234"]
    assert prompts[0].text.startswith("Natalia sold clips") and prompts[0].meta["solution"].endswith("#### 72")


@pytest.mark.parametrize("fast_path", [True, False])  # False: math-verify decides
def test_gsm8k_golds_with_commas_verify_against_plain_numbers(tmp_path, fast_path):
    pytest.importorskip("math_verify")
    prompts = load_prompts(write_jsonl(tmp_path / "gsm8k.jsonl", GSM8K)).prompts
    r = MathReward(fast_path=fast_path)
    try:
        texts = ["... so she sold 72 clips.\n#### 72", "The total is \\boxed{1234}.", "The answer is 1234.",
                 "The answer is 1235."]
        pairs = [(prompts[0], texts[0]), (prompts[1], texts[1]), (prompts[2], texts[2]), (prompts[2], texts[3])]
        res = r.score([(p, Completion(p.id, 0, (), t)) for p, t in pairs])
        assert [x.correct for x in res] == [True, True, True, False]
        # a gold handed over as the raw GSM8K solution, as a TRL dataset column would carry it
        raw = Prompt(id="raw", answer=GSM8K[1]["answer"], text="q")
        assert r(raw, Completion("raw", 0, (), "\\boxed{1234}")).correct
    finally:
        r.close()


def test_a_bad_rows_error_says_that_skipping_exists(tmp_path):
    path = write_jsonl(tmp_path / "dsr.jsonl", [{"prompt": "q", "answer": "1"}, {"prompt": "q2", "answer": ""}])
    with pytest.raises(DataError) as e:
        load_prompts(path)
    msg = str(e.value)
    assert "line 2 (1-based)" in msg and "field 'answer'" in msg and "data.on_error=skip" in msg
    skipped = load_prompts(path, on_error="skip")
    assert "on_error=skip" not in skipped.errors[0]  # once skipping, the hint is noise


# ---------------------------------------------------------------------------------- ledger, disk full
def _tiny_disk(monkeypatch, pages: int) -> None:
    """SQLite's max_page_count makes a write fail exactly as a full disk does (SQLITE_FULL)."""
    import rollsift.ledger.sqlite as S

    real = S._connect

    def connect(path):
        db = real(path)
        db.execute(f"PRAGMA max_page_count = {pages}")
        return db

    monkeypatch.setattr(S, "_connect", connect)


def test_a_ledger_on_a_full_disk_says_free_space_then_resume(tmp_path, monkeypatch):
    from rollsift.errors import UserError
    from rollsift.ledger import LedgerFullError, SqliteLedger

    path = tmp_path / "run" / "ledger.sqlite"
    led = SqliteLedger(path)
    led.set_meta("note", "history")
    led.close()
    pages = sqlite3.connect(path).execute("PRAGMA page_count").fetchone()[0]
    _tiny_disk(monkeypatch, pages)
    led = SqliteLedger(path)
    with pytest.raises(LedgerFullError) as e:
        for i in range(200):
            led.set_meta(f"k{i}", "x" * 2000)
    msg = str(e.value)
    assert isinstance(e.value, UserError) and str(path) in msg and "disk is full" in msg
    assert "--resume" in msg and "do not remove it" in msg and "remove it or" not in msg
    assert led.get_meta("note") == "history"  # the failed write was rolled back, the history is intact
    led.close()


def test_a_new_ledger_on_a_full_disk_says_free_space_then_start_again(tmp_path, monkeypatch):
    from rollsift.ledger import LedgerFullError, SqliteLedger

    _tiny_disk(monkeypatch, 1)
    with pytest.raises(LedgerFullError) as e:
        SqliteLedger(tmp_path / "ledger.sqlite")
    assert "start the run again" in str(e.value) and "--resume" not in str(e.value)


def test_a_damaged_ledger_is_still_a_database_error(tmp_path):
    from rollsift.ledger import LedgerFullError, SqliteLedger

    path = tmp_path / "ledger.sqlite"
    path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(sqlite3.DatabaseError) as e:
        SqliteLedger(path)
    assert not isinstance(e.value, LedgerFullError)  # the caller's "remove it" message stays for this case


@pytest.mark.parametrize("content", ["", '{"prompt": "1+1"}\n'])  # an empty file; every row skipped
def test_train_refuses_an_empty_eval_set_before_any_model_loads(tmp_path, capsys, monkeypatch, content):
    """Needs ``load_prompts(..., nonempty=True)`` in the trainer's ``load_data`` (issue 23)."""
    from rollsift.cli import main as cli

    def no_model(*a, **k):  # the refusal must come first
        raise AssertionError("a model was loaded")

    import rollsift.trainer.assembly as assembly

    monkeypatch.setattr(assembly, "check_model", no_model)
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    args = ["train", "--set", f"data.eval={path}", "--set", "data.on_error=skip", "--set", f"out={tmp_path / 'run'}",
            "--set", "steps=1"]
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert "empty.jsonl" in err and ("no prompts" in err or "every row was bad" in err), err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_train_drops_prompts_longer_than_the_context_with_a_warning(tiny_model, tmp_path):
    """A prompt that does not fit the model's positions with the completion budget never reaches
    the model (verl's data.filter_overlong_prompts): `rollsift train` drops it with a count."""
    rows = [{"prompt": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(8)]
    rows.insert(3, {"id": "long", "prompt": "What is " + " + ".join(["1"] * 150) + "?", "answer": "150"})
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    out = tmp_path / "run"
    r = train_cli(tiny_model, out, 1, extra=(f"data.train={data}", f"data.eval={data}", "selector.type=uniform",
                                             "filters=[]", "eval.every=0"))
    assert r.returncode == 0, r.stderr
    assert "dropped 1 of 9 training prompts longer than 208 tokens (the longest: 'long'" in r.stderr
    assert re.search(r"dropped 1 of \d+ held-out prompts longer than 208 tokens", r.stderr)
    pool, _ = open_ledger(out / "ledger.sqlite").pool()
    assert "long" not in pool and len(pool) == 8
