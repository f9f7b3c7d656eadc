"""``rollsift trace import SRC --format F --out LEDGER``: a real run's per-prompt outcomes as a ledger.

The ledger holds group events only (no selection, filter or step records, no config.toml), one
train group per (step, prompt), plus the registered pool and ``meta["trace_import"]`` (format,
source, group size, seed, steps). Every measuring command reads it: ``rollsift ledger card``,
``report``, ``replay-ledger`` (also ``--sweep``) and ``simulate --fit``. Formats (docs/real_dynamics.md):

* ``shipped``: ``{"<prompt id>": [accuracy of visit 0, visit 1, ...]}`` (the One-Shot-RLVR
  ``acc_step_500.json`` layout, e.g. ``../shared/data/real_trace/one_shot_rlvr_dsr_even.json``)
  with ``--n``, the group size: ``accuracy * n`` must be a whole number.
* ``jsonl``: one line per group, ``{"prompt_id": str|int, "step": int, "n": int, "correct": int}``
  (``correct`` = how many of the ``n`` rollouts were correct); at most one group per prompt per step.
* ``verl``: verl 0.9.1's rollout dumps (``trainer.rollout_data_dir``: one ``{step}.jsonl`` per
  step, one line per sample with ``input``, ``output``, ``gts``, ``score``, ``step``); a file or a
  directory of them. The samples of a step with the same ``input`` text form one group; a sample
  is correct when ``score > --threshold`` (default 0); prompt ids are ``verl/`` + the first 16
  hex digits of the sha1 of the input text.

The shipped trace keeps each prompt's visits in order but not the steps they fell in. They are
reconstructed (``reconstruct_steps``): prompt i with V_i visits gets a phase u_i drawn from
``--seed``; visit j sits at position (j + u_i) / V_i in [0, 1), so a prompt's visits are evenly
spaced over the run as an epoch-by-epoch sampler spaces them; all visits are sorted by position
and cut into ``--steps`` steps of (nearly) equal size (500 for the shipped run: 128 prompts a step
on the full trace, about 64 on the even half); a visit whose prompt is already in the step waits
for the next one, so a prompt is never twice in a step. A prompt's own visit order, and so every per-prompt
figure of the card, does not depend on the seed; what does is which prompts share a step, which
selectors that adapt per step see (docs/benchmarks.md shows figures over several seeds).

Every group's epoch is the number of full passes over the pool before its step (groups before the
step over prompts in the trace), and its policy version the rank of its step (0 for the first),
for all three formats. Rewards: 1.0 for a correct rollout, 0.0 else (verl: the scores);
completion lengths are not known (0). A bad file raises ``DataError`` naming file, line (or
prompt and visit), field and fix, before anything is written; the ledger is written to a
temporary file beside ``--out`` and renamed at the end, so a failed import leaves nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Iterator, NamedTuple

from ..data import DataError, _show

FORMATS = ("shipped", "jsonl", "verl")
SHIPPED_NAME = "one_shot_rlvr_dsr_even.json"
SHIPPED_N = 8  # the shipped run's rollouts per group
SHIPPED_STEPS = 500  # the shipped run's training steps


class TraceGroup(NamedTuple):
    """One group of a real run: ``n`` rollouts of ``prompt_id`` at ``step``, ``n_correct`` correct.
    ``rewards`` [n] and ``correct`` [n] when the source has them (verl); else None: the first
    ``n_correct`` rollouts are the correct ones, rewarded 1.0, the others 0.0."""

    step: int
    prompt_id: str
    n: int
    n_correct: int
    rewards: tuple[float, ...] | None = None
    correct: tuple[bool, ...] | None = None


# ---------------------------------------------------------------------- readers
def read_shipped(path: str | os.PathLike, n: int = SHIPPED_N, seed: int = 0,
                 steps: int = SHIPPED_STEPS) -> list[TraceGroup]:
    """The groups of a ``{id: [accuracy per visit]}`` trace, on steps reconstructed with ``seed``."""
    p = Path(path)
    if not p.is_file():
        raise DataError(str(p), None, None, "no such file", "check the path")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DataError(str(p), None, None, f"--n {n!r} is not a group size", "pass --n 8 (rollouts per group)")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f"line {e.lineno}" if isinstance(e, json.JSONDecodeError) else None
        raise DataError(str(p), where, None, f"not valid JSON ({e})",
                        'write one object {"<prompt id>": [accuracy per visit, ...]}') from None
    if not isinstance(data, dict) or not data:
        raise DataError(str(p), None, None, f"expected a non-empty object of prompt id -> accuracies, got {_show(data)}",
                        'write {"<prompt id>": [accuracy per visit, ...]}')
    counts: dict[str, list[int]] = {}
    for pid, accs in data.items():
        if not isinstance(accs, list) or not accs:
            raise DataError(str(p), f"prompt {pid!r}", None, f"expected a non-empty list of accuracies, got {_show(accs)}",
                            "give each prompt the list of its visits' accuracies, in visit order")
        ks = []
        for j, acc in enumerate(accs):
            where = f"prompt {pid!r}, visit {j} (0-based)"
            if isinstance(acc, bool) or not isinstance(acc, (int, float)) or not 0.0 <= acc <= 1.0:
                raise DataError(str(p), where, None, f"accuracy {_show(acc)} is not a number in [0, 1]",
                                "give the share of correct rollouts of the visit")
            k = acc * n
            if abs(k - round(k)) > 1e-6:
                raise DataError(str(p), where, None, f"accuracy {acc} x n={n} = {k:g} is not a whole number of "
                                                     f"correct rollouts", "pass the run's group size with --n")
            ks.append(int(round(k)))
        counts[str(pid)] = ks
    order = reconstruct_steps({pid: len(ks) for pid, ks in counts.items()}, steps, seed)
    return [TraceGroup(step, pid, n, counts[pid][j]) for step, pid, j in order]


def reconstruct_steps(visits: dict[str, int], steps: int, seed: int) -> list[tuple[int, str, int]]:
    """(step 1..steps, prompt id, visit index) for every visit, in step order (module docstring)."""
    import numpy as np

    total = sum(visits.values())
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1 or steps > total:
        raise ValueError(f"--steps must be an integer in 1..{total} (the trace's visits), got {steps!r}")
    if steps < max(visits.values()):
        raise ValueError(f"--steps {steps}: a prompt has {max(visits.values())} visits, so at least that many "
                         f"steps are needed (a prompt is visited at most once a step)")
    rng = np.random.default_rng(seed)
    ids = list(visits)
    phase = rng.random(len(ids))
    v = np.array([visits[i] for i in ids])
    owner = np.repeat(np.arange(len(ids)), v)
    j = np.concatenate([np.arange(x) for x in v])
    pos = (j + phase[owner]) / v[owner]
    order = np.lexsort((rng.random(len(pos)), pos))  # ties (rare) broken at random too
    sizes = [len(c) for c in np.array_split(order, steps)]
    # fill the steps in position order; a visit whose prompt is already in the step waits for the next
    # one (first in line there), so a prompt is never twice in a step and keeps its visit order
    out: list[tuple[int, str, int]] = []
    waiting: list[int] = []
    rest = iter(order)
    for s, size in enumerate(sizes, start=1):
        here: set[int] = set()
        queue, waiting = waiting, []
        while len(here) < size:
            if queue:
                i = queue.pop(0)
            else:
                i = next(rest, None)
                if i is None:
                    break
            if owner[i] in here or any(owner[w] == owner[i] for w in waiting):
                waiting.append(i)
                continue
            here.add(owner[i])
            out.append((s, ids[owner[i]], int(j[i])))
        waiting = queue + waiting
    if waiting:
        raise ValueError(f"--steps {steps}: too few steps to spread the visits one per prompt a step; use more steps")
    return out


def _lines(path: Path) -> Iterator[tuple[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"line {lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(str(path), where, None, f"not valid JSON ({e.msg} at column {e.colno})",
                                "write one JSON object per line") from None
            if not isinstance(row, dict):
                raise DataError(str(path), where, None, f"expected a JSON object, got {_show(row)}",
                                "write one JSON object per line")
            yield where, row


def _int(path: Path, where: str, row: dict, key: str, low: int, fix: str) -> int:
    if key not in row:
        raise DataError(str(path), where, key, f"missing (line has {_show(sorted(row))})", fix)
    v = row[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise DataError(str(path), where, key, f"expected an integer >= {low}, got {_show(v)}", fix)
    return v


def read_jsonl(path: str | os.PathLike) -> list[TraceGroup]:
    """Groups of the generic JSONL format, sorted by step (line order within a step)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(str(p), None, None, "no such file", "check the path")
    out: list[tuple[int, int, TraceGroup]] = []
    seen: dict[tuple[int, str], str] = {}
    fix = 'write {"prompt_id": "p1", "step": 1, "n": 8, "correct": 3} on each line'
    for i, (where, row) in enumerate(_lines(p)):
        pid = row.get("prompt_id")
        if isinstance(pid, bool) or not isinstance(pid, (str, int)) or pid == "":
            raise DataError(str(p), where, "prompt_id", f"expected a non-empty string or integer, got {_show(pid)}", fix)
        step = _int(p, where, row, "step", 0, fix)
        n = _int(p, where, row, "n", 1, fix)
        k = _int(p, where, row, "correct", 0, fix)
        if k > n:
            raise DataError(str(p), where, "correct", f"{k} correct out of n={n} rollouts", "correct must be 0..n")
        key = (step, str(pid))
        if key in seen:
            raise DataError(str(p), where, "prompt_id", f"prompt {str(pid)!r} has a second group at step {step} "
                                                        f"(first at {seen[key]})", "give one line per prompt and step "
                                                                                   "(sum the rollouts of a step)")
        seen[key] = where
        out.append((step, i, TraceGroup(step, str(pid), n, k)))
    if not out:
        raise DataError(str(p), None, None, "no groups in the file", fix)
    return [g for _, _, g in sorted(out, key=lambda t: t[:2])]


def verl_prompt_id(text: str) -> str:
    return "verl/" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def read_verl(path: str | os.PathLike, threshold: float = 0.0) -> list[TraceGroup]:
    """Groups of verl rollout dumps: a ``{step}.jsonl`` file or a directory of them."""
    p = Path(path)
    if p.is_dir():
        files = sorted((f for f in p.iterdir() if f.suffix == ".jsonl" and f.is_file()),
                       key=lambda f: (0, int(f.stem)) if f.stem.isdigit() else (1, f.name))
        if not files:
            raise DataError(str(p), None, None, "directory holds no .jsonl files",
                            "point at verl's trainer.rollout_data_dir or one of its {step}.jsonl files")
    elif p.is_file():
        files = [p]
    else:
        raise DataError(str(p), None, None, "no such file or directory", "check the path")
    fix = "verl 0.9.1 writes input, output, gts, score and step on every line of trainer.rollout_data_dir"
    groups: dict[tuple[int, str], list[float]] = {}
    for f in files:
        for where, row in _lines(f):
            text = row.get("input")
            if not isinstance(text, str):
                raise DataError(str(f), where, "input", f"expected the prompt text, got {_show(text)}", fix)
            score = row.get("score")
            if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
                raise DataError(str(f), where, "score", f"expected a finite number, got {_show(score)}", fix)
            step = _int(f, where, row, "step", 0, fix)
            groups.setdefault((step, verl_prompt_id(text)), []).append(float(score))
    if not groups:
        raise DataError(str(p), None, None, "no samples in the dump", fix)
    return [TraceGroup(step, pid, len(s), sum(x > threshold for x in s), tuple(s), tuple(x > threshold for x in s))
            for (step, pid), s in sorted(groups.items(), key=lambda kv: kv[0][0])]  # stable: first seen in a step


def read_trace(src: str | os.PathLike, fmt: str, *, n: int = SHIPPED_N, seed: int = 0, steps: int = SHIPPED_STEPS,
               threshold: float = 0.0) -> list[TraceGroup]:
    if fmt == "shipped":
        return read_shipped(src, n, seed, steps)
    if fmt == "jsonl":
        return read_jsonl(src)
    if fmt == "verl":
        return read_verl(src, threshold)
    raise ValueError(f"--format must be one of {FORMATS}, got {fmt!r}")


def shipped_trace() -> Path | None:
    """The shipped half trace: ``$ROLLSIFT_REFERENCE_TRACE``, else ``../shared/data/real_trace/`` beside
    a source checkout (src/rollsift/measure -> the checkout's parent). None where neither exists (an
    installed package carries no trace): the card then has no reference column."""
    env = os.environ.get("ROLLSIFT_REFERENCE_TRACE")
    if env:
        return Path(env) if Path(env).is_file() else None
    p = Path(__file__).resolve().parents[4] / "shared" / "data" / "real_trace" / SHIPPED_NAME
    return p if p.is_file() else None


# ---------------------------------------------------------------------- writing
def write_ledger(groups: Sequence[TraceGroup], out: str | os.PathLike, meta: dict[str, Any],
                 overwrite: bool = False) -> Path:
    """A groups-only SQLite ledger at ``out``, written to a temporary file and renamed at the end."""
    from ..ledger import SqliteLedger
    from ..records import Completion, Context, Group, Prompt

    out = Path(out)
    if out.exists() and not overwrite:
        raise DataError(str(out), None, None, "already exists", "pass --overwrite, or another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    steps = sorted({g.step for g in groups})
    version = {s: i for i, s in enumerate(steps)}
    ids = list(dict.fromkeys(g.prompt_id for g in groups))
    try:
        with SqliteLedger(tmp) as led:
            led.register_pool(ids)
            led.set_meta("trace_import", meta)
            by_step: dict[int, list[TraceGroup]] = {}
            for g in groups:
                by_step.setdefault(g.step, []).append(g)
            before = 0
            for s in steps:
                epoch = before // len(ids)  # full passes over the pool before this step
                rows = []
                for g in by_step[s]:
                    correct = g.correct or tuple([True] * g.n_correct + [False] * (g.n - g.n_correct))
                    rewards = g.rewards or tuple(float(c) for c in correct)
                    comps = tuple(Completion(g.prompt_id, i, (), "", policy_version=version[s]) for i in range(g.n))
                    rows.append(Group(Prompt(id=g.prompt_id, answer="", text=g.prompt_id), comps, rewards, correct,
                                      step=s, policy_version=version[s], epoch=epoch))
                led.record_groups(rows, Context(step=s, epoch=epoch, policy_version=version[s], n=rows[0].n))
                before += len(rows)
        for suffix in ("-wal", "-shm"):
            Path(f"{out}{suffix}").unlink(missing_ok=True)
        os.replace(tmp, out)
    finally:
        for f in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            f.unlink(missing_ok=True)
    return out


def import_trace(src: str | os.PathLike, fmt: str, out: str | os.PathLike, *, n: int = SHIPPED_N, seed: int = 0,
                 steps: int = SHIPPED_STEPS, threshold: float = 0.0, overwrite: bool = False) -> dict[str, Any]:
    """Read ``src`` in format ``fmt`` and write the ledger ``out``; returns what was written."""
    groups = read_trace(src, fmt, n=n, seed=seed, steps=steps, threshold=threshold)
    meta: dict[str, Any] = {"format": fmt, "source": str(src)}
    if fmt == "shipped":
        meta.update(n=n, seed=seed, steps=steps, order="reconstructed (rollsift.measure.trace_import)")
    if fmt == "verl":
        meta.update(threshold=threshold)
    path = write_ledger(groups, out, meta, overwrite)
    return {"ledger": str(path), "groups": len(groups), "prompts": len({g.prompt_id for g in groups}),
            "steps": len({g.step for g in groups}), "rollouts": sum(g.n for g in groups), **meta}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="rollsift trace import", description=__doc__.splitlines()[0])
    ap.add_argument("src", help="the trace: a .json (shipped), a .jsonl (jsonl, verl) or verl's rollout_data_dir")
    ap.add_argument("--format", required=True, choices=FORMATS, help="the trace's layout (docs/real_dynamics.md)")
    ap.add_argument("--out", required=True, metavar="LEDGER", help="the ledger to write (e.g. runs/real/ledger.sqlite)")
    ap.add_argument("--n", type=int, default=SHIPPED_N, help=f"shipped: rollouts per group (default {SHIPPED_N})")
    ap.add_argument("--seed", type=int, default=0, help="shipped: seed of the reconstructed visit order (default 0)")
    ap.add_argument("--steps", type=int, default=SHIPPED_STEPS,
                    help=f"shipped: training steps to spread the visits over (default {SHIPPED_STEPS})")
    ap.add_argument("--threshold", type=float, default=0.0,
                    help="verl: a sample is correct when its score exceeds this (default 0)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = ap.parse_args(argv)
    try:
        info = import_trace(args.src, args.format, args.out, n=args.n, seed=args.seed, steps=args.steps,
                            threshold=args.threshold, overwrite=args.overwrite)
    except ValueError as e:
        if isinstance(e, DataError):
            raise
        from ..configlib import ConfigError

        raise ConfigError(str(e)) from None
    print(f"wrote {info['ledger']}: {info['groups']:,} groups of {info['prompts']:,} prompts over {info['steps']} steps "
          f"({info['rollouts']:,} rollouts, format {info['format']})")
    return 0


__all__ = ["FORMATS", "TraceGroup", "import_trace", "main", "read_jsonl", "read_shipped", "read_trace", "read_verl",
           "reconstruct_steps", "shipped_trace", "verl_prompt_id", "write_ledger"]
