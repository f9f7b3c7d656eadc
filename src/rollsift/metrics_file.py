"""Run logging: metrics.jsonl (one line per step), a rich progress bar, TensorBoard on request.

``metrics.jsonl`` is the run's machine-readable history; on resume, lines after the checkpoint's
step are dropped so the file reads as if the run had never stopped. Cumulative counters
(``cost/*_total``) and the run's wall time travel in the checkpoint.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Mapping

CUMULATIVE = ("cost/rollouts", "cost/gen_tokens", "cost/informative_rollouts", "cost/prompts",
              "cost/probe_rollouts", "cost/pruned_rollouts", "cost/rounds")
TIMES = ("time/select", "time/generate", "time/score", "time/ledger", "time/filter", "time/train", "time/eval")


class RunLog:
    def __init__(self, out: str | Path, *, progress: bool = True, tensorboard: bool = False,
                 total_steps: int = 0, resume_step: int | None = None) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.path = self.out / "metrics.jsonl"
        if resume_step is not None:  # a resumed run forgets the steps after its checkpoint
            _truncate_after(self.path, resume_step)
        self.totals: dict[str, float] = {}
        self.elapsed = 0.0  # wall time of the run, summed over resumed segments
        self._t0 = time.perf_counter()
        self._progress = _Progress(total_steps, resume_step or 0) if progress else None
        self._tb = _tensorboard(self.out / "tb") if tensorboard else None
        self.last_eval: dict[str, float] = {}

    def wall(self) -> float:
        return self.elapsed + time.perf_counter() - self._t0

    def train_wall(self) -> float:
        """Wall time without evaluation: the clock benchmarks compare."""
        return self.wall() - self.totals.get("time/eval_total", 0.0)

    def log(self, step: int, metrics: Mapping[str, float]) -> dict[str, float]:
        row = add_totals({k: float(v) for k, v in metrics.items()}, self.totals)
        row["time/wall"] = self.wall()
        row["time/train_wall"] = row["time/wall"] - self.totals.get("time/eval_total", 0.0)
        if any(k.startswith("eval/") for k in row):
            self.last_eval = {k: v for k, v in row.items() if k.startswith("eval/")}
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **{k: _finite(v) for k, v in row.items()}}) + "\n")
        if self._tb is not None:
            for k, v in row.items():
                self._tb.add_scalar(k, v, step)
        if self._progress is not None:
            self._progress.update(step, row, self.last_eval)
        return row

    def state_dict(self) -> dict[str, Any]:
        return {"totals": dict(self.totals), "elapsed": self.wall()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.totals = dict(state["totals"])
        self.elapsed = float(state["elapsed"])
        self._t0 = time.perf_counter()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.close()
        if self._tb is not None:
            self._tb.close()


def add_totals(row: dict[str, Any], totals: dict[str, float]) -> dict[str, Any]:
    """Add the row's costs and times to the running ``totals`` and write them into the row as
    ``<key>_total``, with ``cost/effective_share`` (informative rollouts over all rollouts so far)."""
    for k in CUMULATIVE + TIMES:
        if isinstance(row.get(k), (int, float)):
            totals[k + "_total"] = totals.get(k + "_total", 0.0) + float(row[k])
    row.update(totals)
    informative = totals.get("cost/informative_rollouts_total", 0.0)
    rollouts = totals.get("cost/rollouts_total", 0.0)
    row["cost/effective_share"] = informative / rollouts if rollouts else 0.0
    return row


def accumulate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of per-step metrics (a TRL or verl ledger's step records) with the totals a
    metrics.jsonl row has (``add_totals``), and ``time/train_wall`` summed from the time split."""
    totals: dict[str, float] = {}
    out = []
    for r in sorted(rows, key=lambda r: r["step"]):
        row = add_totals(dict(r), totals)
        row.setdefault("time/train_wall", sum(totals.get(k + "_total", 0.0) for k in TIMES if k != "time/eval"))
        out.append(row)
    return out


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    if p.is_dir():
        p = p / "metrics.jsonl"
    with p.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _truncate_after(path: Path, step: int) -> None:
    if not path.exists():
        return
    if step <= 0:
        path.unlink()
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    tmp.replace(path)


def _tensorboard(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise RuntimeError("log.tensorboard = true needs the tensorboard package: pip install tensorboard") from e
    return SummaryWriter(str(path))


def progress_line(row: Mapping[str, float], last_eval: Mapping[str, float]) -> str:
    """What the progress bar shows; a figure the step does not have is left out, never 'nan'."""
    parts = []
    for key, label, fmt in (("step/accuracy", "train acc", "{:.2f}"), ("step/zero_variance_frac", "zero-var", "{:.2f}")):
        v = row.get(key)
        if v is not None and math.isfinite(v):
            parts.append(f"{label} {fmt.format(v)}")
    if last_eval.get("eval/accuracy") is not None:
        parts.append(f"held-out {last_eval['eval/accuracy']:.3f}")
    parts.append(f"rollouts {int(row.get('cost/rollouts_total', 0)):,}")
    if row.get("cost/rollouts_total"):
        parts.append(f"effective {row.get('cost/effective_share', 0.0):.2f}")
    return "  ".join(parts)


class _Progress:
    """A rich progress bar with live metrics; plain lines when the output is not a terminal."""

    def __init__(self, total: int, start: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True)
        self.live = self.console.is_terminal
        self.bar = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"), console=self.console, transient=False,
        )
        self.task = self.bar.add_task("train", total=total, completed=start, info="")
        if self.live:
            self.bar.start()

    def update(self, step: int, row: Mapping[str, float], last_eval: Mapping[str, float]) -> None:
        info = progress_line(row, last_eval)
        self.bar.update(self.task, completed=step, info=info)
        if not self.live and ("eval/accuracy" in row or step == self.bar.tasks[0].total):
            print(f"step {step}: {info}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.live:
            self.bar.stop()
