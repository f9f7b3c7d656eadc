"""Helper for test_ledger_kill.py: a fake trainer writing ledger events for steps START..END.

    python ledger_kill_worker.py LEDGER CHECKPOINT START END EVERY PROMPTS PAUSE_S

Each step: one selection call, two record_groups calls (PROMPTS groups in all), one step record;
then, every EVERY steps and at END, an atomic checkpoint file holding the step number (write a
temporary file, fsync, os.replace), as the trainer does after the step's ledger events.
"""

from __future__ import annotations

import os
import sys
import time

from rollsift.ledger import SqliteLedger
from rollsift.records import Completion, Context, Decision, Group, Prompt


def group(pid: str, step: int) -> Group:
    """Deterministic in (prompt, step), so a resumed run rewrites exactly what was lost."""
    correct = tuple((step + i + int(pid[1:])) % 3 == 0 for i in range(4))
    comps = tuple(Completion(pid, i, (1,) * (i + 1), "") for i in range(4))
    return Group(Prompt(pid, "0", text="q"), comps, tuple(map(float, correct)), correct, step=step,
                 policy_version=step)


def main() -> None:
    path, ckpt = sys.argv[1], sys.argv[2]
    start, end, every, k = map(int, sys.argv[3:7])
    pause = float(sys.argv[7])
    ledger = SqliteLedger(path)
    pids = [f"p{i}" for i in range(k)]
    print("ready", flush=True)
    for step in range(start, end + 1):
        ctx = Context(step=step)
        ledger.record_selection([Decision(p, True, "no_history") for p in pids], ctx)
        groups = [group(p, step) for p in pids]
        ledger.record_groups(groups[: k // 2], ctx)
        ledger.record_groups(groups[k // 2 :], ctx)
        ledger.record_step(step, {"step": step})
        if step % every == 0 or step == end:
            tmp = f"{ckpt}.tmp"
            with open(tmp, "w") as f:
                f.write(str(step))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, ckpt)
        time.sleep(pause)
    ledger.close()


if __name__ == "__main__":
    main()
