"""rollsift trace import: each format round-trips a hand-made trace into the exact groups; bad files
are refused with file, line, field and fix, and leave nothing behind; the measuring commands read
the groups-only ledger it writes."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest

from rollsift.cli import main as cli
from rollsift.data import DataError
from rollsift.ledger import open_ledger
from rollsift.measure.trace_import import import_trace, read_shipped, verl_prompt_id

# prompt -> correct rollouts of each visit, out of N
VISITS = {"p0": [0, 0, 1, 4, 4], "p1": [4, 4, 4], "p2": [2, 3, 0, 0], "p3": [1]}
N = 4


def groups_of(path) -> list[tuple[int, str, int, int]]:
    with open_ledger(path) as led:
        assert not led.steps() and not list(led.decisions()) and not list(led.filters())  # groups only
        return [(g.step, g.prompt_id, g.n, g.n_correct) for g in led.groups("train")]


def per_prompt(groups) -> dict[str, list[int]]:
    out = defaultdict(list)
    for step, pid, n, k in sorted(groups):
        out[pid].append(k)
    return dict(out)


def test_shipped_round_trips_and_the_seed_moves_only_the_interleaving(tmp_path):
    src = tmp_path / "trace.json"
    src.write_text(json.dumps({p: [k / N for k in ks] for p, ks in VISITS.items()}))
    layouts = []
    for seed in (0, 1, 2):
        out = tmp_path / f"s{seed}" / "ledger.sqlite"
        info = import_trace(src, "shipped", out, n=N, seed=seed, steps=6)
        assert info["groups"] == 13 and info["prompts"] == 4 and info["steps"] == 6
        g = groups_of(out)
        assert per_prompt(g) == VISITS                                     # every visit, in visit order
        assert all(n == N for _, _, n, _ in g)
        assert len({(s, p) for s, p, _, _ in g}) == len(g)                 # at most one visit a step
        sizes = [sum(s == x for s, _, _, _ in g) for x in range(1, 7)]
        assert max(sizes) - min(sizes) <= 1                                # steps of (nearly) equal size
        with open_ledger(out) as led:
            assert led.get_meta("trace_import")["seed"] == seed and sorted(led.pool()[0]) == sorted(VISITS)
        layouts.append(sorted(g))
    assert layouts[0] != layouts[1] or layouts[0] != layouts[2]            # the seed does move the steps


def test_generic_jsonl_round_trips_exactly(tmp_path):
    rows = [{"prompt_id": "a", "step": 2, "n": 8, "correct": 3}, {"prompt_id": 7, "step": 1, "n": 8, "correct": 0},
            {"prompt_id": "a", "step": 1, "n": 4, "correct": 4}, {"prompt_id": "b", "step": 5, "n": 8, "correct": 8}]
    src = tmp_path / "groups.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    import_trace(src, "jsonl", tmp_path / "l.sqlite")
    assert groups_of(tmp_path / "l.sqlite") == [(1, "7", 8, 0), (1, "a", 4, 4), (2, "a", 8, 3), (5, "b", 8, 8)]
    with open_ledger(tmp_path / "l.sqlite") as led:
        g = [x for x in led.groups("train", detail=True) if x.step == 2][0]
        assert g.correct == (True,) * 3 + (False,) * 5 and g.rewards == (1.0,) * 3 + (0.0,) * 5
        assert g.epoch == 0 and g.policy_version == 1          # epochs: passes over the pool; versions: step rank
        assert [x.epoch for x in led.groups("train")][-1] == 1


def test_verl_dumps_group_a_steps_samples_by_prompt(tmp_path):
    dump = tmp_path / "rollout_data"
    dump.mkdir()

    def line(prompt, score, step):  # the keys verl 0.9.1's _write_generations writes
        return json.dumps({"input": prompt, "output": "...", "gts": "1", "score": score, "step": step})

    (dump / "1.jsonl").write_text("\n".join([line("Q1", 1.0, 1), line("Q1", 0.0, 1), line("Q2", 0.0, 1),
                                             line("Q1", 1.0, 1), line("Q2", -0.5, 1)]) + "\n")
    (dump / "10.jsonl").write_text(line("Q2", 1.0, 10) + "\n" + line("Q2", 1.0, 10) + "\n")
    (dump / "2.jsonl").write_text(line("Q1", 0.5, 2) + "\n" + line("Q1", 0.0, 2) + "\n")
    import_trace(dump, "verl", tmp_path / "v.sqlite")
    q1, q2 = verl_prompt_id("Q1"), verl_prompt_id("Q2")
    assert groups_of(tmp_path / "v.sqlite") == [(1, q1, 3, 2), (1, q2, 2, 0), (2, q1, 2, 1), (10, q2, 2, 2)]
    with open_ledger(tmp_path / "v.sqlite") as led:
        first = next(led.groups("train", detail=True))
        assert first.rewards == (1.0, 0.0, 1.0) and first.correct == (True, False, True)
    import_trace(dump, "verl", tmp_path / "t.sqlite", threshold=0.6)  # a documented threshold
    assert [g[3] for g in groups_of(tmp_path / "t.sqlite")] == [2, 0, 0, 2]


@pytest.mark.parametrize("fmt, content, where", [
    ("shipped", {"x": [0.5, 0.3]}, "prompt 'x', visit 1"),                    # 0.3 * 4 is not whole
    ("shipped", {"x": [0.5, "a"]}, "prompt 'x', visit 1"),
    ("shipped", [0.5], None),
    ("jsonl", [{"prompt_id": "a", "step": 1, "n": 4, "correct": 1}, {"prompt_id": "a", "step": 1, "n": 4}],
     "line 2, field 'correct'"),
    ("jsonl", [{"prompt_id": "a", "step": 1, "n": 4, "correct": 5}], "line 1, field 'correct'"),
    ("jsonl", [{"prompt_id": "a", "step": 1, "n": 4, "correct": 1}, {"prompt_id": "a", "step": 1, "n": 4, "correct": 2}],
     "line 2, field 'prompt_id'"),
    ("verl", [{"input": "q", "score": 1.0, "step": 1}, {"input": "q", "score": None, "step": 1}],
     "line 2, field 'score'"),
])
def test_a_malformed_trace_is_named_and_writes_nothing(tmp_path, capsys, fmt, content, where):
    src = tmp_path / ("t.json" if fmt == "shipped" else "t.jsonl")
    src.write_text(json.dumps(content) if fmt == "shipped" else "\n".join(json.dumps(r) for r in content))
    out = tmp_path / "out" / "ledger.sqlite"
    with pytest.raises(DataError) as e:
        import_trace(src, fmt, out, n=N)
    msg = str(e.value)
    assert msg.startswith(str(src)) and "Fix:" in msg and (where is None or where in msg)
    assert not out.parent.exists() or not any(out.parent.iterdir())         # nothing, not even a temp file
    assert cli(["trace", "import", str(src), "--format", fmt, "--out", str(out), "--n", str(N)]) == 2
    assert str(src) in capsys.readouterr().err and not out.exists()


def test_a_broken_line_and_an_existing_ledger(tmp_path):
    src = tmp_path / "t.jsonl"
    src.write_text('{"prompt_id": "a", "step": 1, "n": 4, "correct": 1}\n{"prompt_id": "a",\n')
    with pytest.raises(DataError, match="line 2: not valid JSON"):
        import_trace(src, "jsonl", tmp_path / "l.sqlite")
    src.write_text('{"prompt_id": "a", "step": 1, "n": 4, "correct": 1}\n')
    import_trace(src, "jsonl", tmp_path / "l.sqlite")
    with pytest.raises(DataError, match="already exists.*--overwrite"):
        import_trace(src, "jsonl", tmp_path / "l.sqlite")
    import_trace(src, "jsonl", tmp_path / "l.sqlite", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.sqlite", "t.jsonl"]


def test_shipped_trace_is_read_as_documented():
    """The shipped half trace (beside the checkout): 8 rollouts a group, 500 steps of about 64 groups."""
    from rollsift.measure.trace_import import shipped_trace

    path = shipped_trace()
    if path is None:
        pytest.skip("the shipped trace is not beside this checkout (../shared/data/real_trace/)")
    g = read_shipped(path)
    raw = json.loads(path.read_text())
    assert len(g) == sum(map(len, raw.values())) and {x.step for x in g} == set(range(1, 501))
    assert per_prompt([(x.step, x.prompt_id, x.n, x.n_correct) for x in g]) == \
        {p: [round(a * 8) for a in accs] for p, accs in raw.items()}


def test_every_measuring_command_reads_an_imported_ledger(tmp_path, capsys):
    src = tmp_path / "trace.json"
    # 40 prompts x 12 visits: some always solved, some never, some drifting
    trace = {f"q{i}": [((i + j) % 9) / 8 if i % 3 else float(i % 2) for j in range(12)] for i in range(40)}
    src.write_text(json.dumps(trace))
    run = tmp_path / "real"
    assert cli(["trace", "import", str(src), "--format", "shipped", "--out", str(run / "ledger.sqlite"),
                "--steps", "24"]) == 0
    capsys.readouterr()
    assert cli(["ledger", "card", str(run), "--json", "--reference", str(run)]) == 0
    c = json.loads(capsys.readouterr().out)
    assert c["groups"] == 480 and c["reference"]["transitions"] == c["transitions"]  # itself at its own horizon
    assert cli(["ledger", "show", str(run)]) == 0
    assert cli(["replay-ledger", str(run), "--selector", "greso", "--json", str(tmp_path / "g.json")]) == 0
    r = json.loads((tmp_path / "g.json").read_text())
    assert r["source"] == "groups" and r["total"]["groups"] == 480
    assert cli(["replay-ledger", str(run), "--sweep", "--out", str(tmp_path / "sweep")]) == 0
    assert any(p["selector"] == "oracle" for p in json.loads((tmp_path / "sweep" / "pareto.json").read_text())["points"])
    assert cli(["report", str(run), "--out", str(tmp_path / "rep")]) == 0
    assert "Realism card" in (tmp_path / "rep" / "report.html").read_text()
    assert cli(["simulate", "--fit", str(run), "--steps", "3", "--batch", "8"]) == 0
