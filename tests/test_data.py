"""Loading prompt files (TRL and verl styles, JSONL / JSON / parquet), ids, errors, round trips."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rollsift.data import DataError, LoadResult, load_prompts, read_jsonl, write_jsonl
from rollsift.records import Prompt
from rollsift.testbed import problems as testbed

MSG = [{"role": "system", "content": "Reason step by step."}, {"role": "user", "content": "What is 2+3?"}]


def write_lines(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


def verl_rows(n=3, source="openai/gsm8k"):
    return [
        {
            "data_source": source,
            "prompt": [{"role": "user", "content": f"What is {i}+1?"}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": str(i + 1)},
            "extra_info": {"split": "train", "index": i},
        }
        for i in range(n)
    ]


# ---------------------------------------------------------------------------------- TRL style


def test_trl_jsonl(tmp_path):
    path = write_lines(tmp_path / "train.jsonl", [
        {"prompt": "What is 2+3?", "answer": "5", "level": 1},
        {"prompt": MSG, "answer": 7},
        {"prompt": "Half of one?", "solution": "One half is $\\boxed{\\frac{1}{2}}$."},
        {"question": "Natalia sold 48 clips...", "answer": "She sold 48/2 = 24.\n#### 72"},
        {"id": "custom-1", "problem": "1+1?", "solution": "2"},
    ])
    res = load_prompts(path)
    assert isinstance(res, LoadResult) and res.skipped == 0 and res.errors == []
    assert res.styles == {str(path): "trl"}
    a, b, c, d, e = res.prompts
    assert (a.text, a.messages, a.answer, a.meta) == ("What is 2+3?", None, "5", {"level": 1})
    assert b.text is None and b.messages == tuple(MSG) and b.answer == "7"
    assert c.answer == "\\frac{1}{2}" and c.meta["solution"].startswith("One half")
    assert d.text.startswith("Natalia") and d.answer == "72" and d.meta["solution"].endswith("#### 72")
    assert (e.id, e.answer, e.text) == ("custom-1", "2", "1+1?")
    assert len({p.id for p in res.prompts}) == 5
    assert all(len(p.id) == 16 for p in (a, b, c, d))


def test_trl_json_list_and_parquet(tmp_path):
    rows = [{"prompt": "What is 2+3?", "answer": "5"}, {"prompt": "What is 1+1?", "answer": "2"}]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    from_json = load_prompts(tmp_path / "a.json").prompts
    from_parquet = load_prompts(tmp_path / "a.parquet").prompts
    assert from_json == from_parquet
    assert [p.answer for p in from_json] == ["5", "2"]


# --------------------------------------------------------------------------------- verl style


def test_verl_parquet(tmp_path):
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(verl_rows()), path)
    res = load_prompts(path)
    assert res.styles == {str(path): "verl"}
    p = res.prompts[1]
    assert p.id == "openai/gsm8k/1"
    assert p.messages == ({"role": "user", "content": "What is 1+1?"},) and p.answer == "2"
    assert p.meta == {"data_source": "openai/gsm8k", "ability": "math",
                      "extra_info": {"split": "train", "index": 1}, "reward_model": {"style": "rule"}}
    assert json.loads(json.dumps(dict(p.meta))) == p.meta


def test_verl_jsonl_and_forced_style(tmp_path):
    path = write_lines(tmp_path / "v.jsonl", verl_rows(2))
    assert [p.id for p in load_prompts(path).prompts] == ["openai/gsm8k/0", "openai/gsm8k/1"]
    assert load_prompts(path, style="verl").prompts == load_prompts(path).prompts
    trl = write_lines(tmp_path / "t.jsonl", [{"prompt": "q", "answer": "1"}])
    with pytest.raises(DataError, match="reward_model.ground_truth"):
        load_prompts(trl, style="verl")


def test_directory_of_parquet_shards(tmp_path):
    rows = verl_rows(5)
    (tmp_path / "ds").mkdir()
    pq.write_table(pa.Table.from_pylist(rows[:3]), tmp_path / "ds" / "part-00000.parquet")
    pq.write_table(pa.Table.from_pylist(rows[3:]), tmp_path / "ds" / "part-00001.parquet")
    res = load_prompts(tmp_path / "ds")
    assert [p.id for p in res.prompts] == [f"openai/gsm8k/{i}" for i in range(5)]
    assert len(res.styles) == 2 and set(res.styles.values()) == {"verl"}
    assert [p.id for p in load_prompts(tmp_path / "ds", limit=4).prompts] == [f"openai/gsm8k/{i}" for i in range(4)]
    # a duplicate across shards names both rows
    pq.write_table(pa.Table.from_pylist(rows[:1]), tmp_path / "ds" / "part-00002.parquet")
    with pytest.raises(DataError) as e:
        load_prompts(tmp_path / "ds")
    msg = str(e.value)
    assert "part-00002.parquet, row 0 (0-based)" in msg and "part-00000.parquet, row 0 (0-based)" in msg


# ------------------------------------------------------------------------------------------ ids


def test_ids_are_stable_across_loads_and_processes(tmp_path):
    path = write_lines(tmp_path / "q.jsonl", [{"prompt": "What is 2+3?", "answer": "5"},
                                              {"prompt": MSG, "answer": "5"}])
    first = [p.id for p in load_prompts(path).prompts]
    assert first == [p.id for p in load_prompts(path).prompts]
    code = ("import sys, json; from rollsift.data import load_prompts; "
            "print(json.dumps([p.id for p in load_prompts(sys.argv[1]).prompts]))")
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                         env=env, check=True)
    assert json.loads(out.stdout) == first
    # pinned: sha1 of the canonical JSON, never Python's hash()
    assert first[0] == hashlib.sha1(b'{"text":"What is 2+3?"}').hexdigest()[:16] == "4267edd87fa409f0"


def test_same_prompt_text_and_messages_get_different_ids(tmp_path):
    path = write_lines(tmp_path / "q.jsonl", [{"prompt": "hi", "answer": "1"},
                                              {"prompt": [{"role": "user", "content": "hi"}], "answer": "1"}])
    a, b = load_prompts(path).prompts
    assert a.id != b.id


# --------------------------------------------------------------------------------------- errors

_BAD_ROWS = [
    ('{"prompt": "q", "answer": ', "<json>", None),
    ({"answer": "1"}, "prompt", None),
    ({"prompt": 42, "answer": "1"}, "prompt", "42"),
    ({"prompt": [{"role": "user"}], "answer": "1"}, "prompt[0].content", None),
    ({"prompt": ["hello"], "answer": "1"}, "prompt[0]", "hello"),
    ({"prompt": "q"}, "answer", None),
    ({"prompt": "q", "answer": ["1", "2"]}, "answer", '["1", "2"]'),
    ({"prompt": "q", "answer": "  "}, "answer", None),
    ({"prompt": "q", "solution": "A long derivation\nwith no final answer marked"}, "solution", None),
    ({"prompt": "q", "answer": "1", "id": {"x": 1}}, "id", '{"x": 1}'),
    ([1, 2, 3], "<row>", "[1, 2, 3]"),
]


@pytest.mark.parametrize("bad, fld, shown", _BAD_ROWS)
def test_bad_jsonl_row_names_file_line_field_value(tmp_path, bad, fld, shown):
    path = write_lines(tmp_path / "bad.jsonl", [{"prompt": "fine", "answer": "1"}, bad])
    with pytest.raises(DataError) as e:
        load_prompts(path)
    msg = str(e.value)
    assert "bad.jsonl" in msg and "line 2 (1-based)" in msg and "Fix:" in msg
    if fld.startswith("<"):
        assert e.value.field is None
    else:
        assert f"field {fld!r}" in msg and e.value.field == fld
    if shown:
        assert shown in msg


@pytest.mark.parametrize(
    "edit, fld",
    [
        (lambda r: r.pop("reward_model"), "reward_model.ground_truth"),
        (lambda r: r["reward_model"].pop("ground_truth"), "reward_model.ground_truth"),
        (lambda r: r.update(extra_info="idx-3"), "extra_info"),
        (lambda r: r["extra_info"].update(index=1.5), "extra_info.index"),
        (lambda r: r.update(data_source=7), "data_source"),
        (lambda r: r.update(prompt=[{"role": "user", "content": 3}]), "prompt[0].content"),
    ],
)
def test_bad_verl_row(tmp_path, edit, fld):
    rows = verl_rows(3)
    edit(rows[2])
    path = write_lines(tmp_path / "verl.jsonl", rows)
    with pytest.raises(DataError) as e:
        load_prompts(path, style="verl")
    assert "verl.jsonl" in str(e.value) and "line 3 (1-based)" in str(e.value) and f"field {fld!r}" in str(e.value)


def test_bad_parquet_row_uses_zero_based_index(tmp_path):
    rows = [{"prompt": "a", "answer": "1"}, {"prompt": "b", "answer": None}, {"prompt": "c", "answer": "3"}]
    path = tmp_path / "p.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(DataError) as e:
        load_prompts(path)
    assert "p.parquet, row 1 (0-based), field 'answer'" in str(e.value)


def test_duplicate_ids_name_both_rows(tmp_path):
    path = write_lines(tmp_path / "dup.jsonl", [{"prompt": "q", "answer": "1"}, {"prompt": "r", "answer": "2"},
                                                {"prompt": "q", "answer": "1"}])
    with pytest.raises(DataError) as e:
        load_prompts(path)
    msg = str(e.value)
    assert "line 3 (1-based), field 'id'" in msg and "first seen at" in msg and "line 1 (1-based)" in msg


def test_skip_mode_counts_and_keeps_messages(tmp_path):
    rows = [{"prompt": "ok1", "answer": "1"}, "not json", {"prompt": "q"}, {"prompt": "ok2", "answer": "2"},
            {"prompt": "ok1", "answer": "1"}]
    path = write_lines(tmp_path / "mixed.jsonl", rows)
    res = load_prompts(path, on_error="skip")
    assert [p.text for p in res.prompts] == ["ok1", "ok2"]
    assert res.skipped == 3 and len(res.errors) == 3
    assert "line 2 (1-based)" in res.errors[0] and "field 'answer'" in res.errors[1]
    assert "duplicate id" in res.errors[2]


def test_file_level_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_prompts(tmp_path / "missing.jsonl")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unknown file type"):
        load_prompts(tmp_path / "x.csv", on_error="skip")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .parquet files"):
        load_prompts(tmp_path / "empty")
    with pytest.raises(ValueError, match="style must be one of"):
        load_prompts(tmp_path / "x.csv", style="hf")
    with pytest.raises(ValueError, match="on_error"):
        load_prompts(tmp_path / "x.csv", on_error="ignore")
    assert issubclass(DataError, ValueError)


# ---------------------------------------------------------------------------------- round trips


def test_write_and_read_round_trip(tmp_path):
    prompts = testbed.prompts("train", 20) + [
        Prompt(id="m/1", messages=tuple(MSG), answer="5", meta={"data_source": "x", "extra_info": {"index": 1}}),
        Prompt(id="u/1", text="Ünïcode — 1+1?", answer="2"),
    ]
    path = tmp_path / "pool.jsonl"
    assert write_jsonl(prompts, path) == len(prompts)
    assert read_jsonl(path) == prompts
    assert load_prompts(path).prompts == prompts
    assert not (tmp_path / "pool.jsonl.tmp").exists()


def test_write_rejects_non_json_meta(tmp_path):
    bad = Prompt(id="x", text="q", answer="1", meta={"f": object()})
    with pytest.raises(ValueError, match="'x'"):
        write_jsonl([bad], tmp_path / "o.jsonl")
    assert not (tmp_path / "o.jsonl").exists()
