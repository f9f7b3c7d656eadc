"""Deterministic arithmetic problems with graded difficulty and a short scratchpad.

A problem is an integer expression over ``+ - *`` with the usual precedence, e.g. ``37+48*3-9``.
Its reference solution is a scratchpad that reduces the expression one operation at a time
(multiplications first, then left to right), ending in a boxed answer::

    48*3=144
    37+144=181
    181-9=172
    \\boxed{172}

Difficulty tiers (``meta["difficulty"]``, for analysis only; no strategy may read it):

====  ==========================================================================
tier  shape
====  ==========================================================================
1     one + or - of a one-digit number to or from a number below 1000
2     one + or - of a two-digit number to or from a number below 1000
3     two operations on one- and two-digit numbers (products of one-digit factors)
4     three operations on two-digit numbers (a product of a two-digit and a one-digit factor)
5     three or four operations with a product of two two-digit numbers
====  ==========================================================================

No intermediate value is negative, so the scratchpad never needs a sign.
Everything is a pure function of (seed, split, index): the same pool on every machine.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from ..records import Prompt

TIERS = (1, 2, 3, 4, 5)
BOX = "\\boxed{"


@dataclass(frozen=True)
class Problem:
    expression: str
    tokens: tuple
    steps: tuple[str, ...]
    answer: int
    difficulty: int

    @property
    def solution(self) -> str:
        """The reference scratchpad completion (no end-of-turn token)."""
        return "\n".join(self.steps + (f"{BOX}{self.answer}}}",))


def _num(rng: random.Random, digits: int) -> int:
    if digits == 1:
        return rng.randint(0, 9)
    return rng.randint(10 ** (digits - 1), 10**digits - 1)


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def _digits(x: int) -> list[int]:
    return [int(c) for c in reversed(str(x))]


def slipped(a: int, op: str, b: int, rng: random.Random, q: float) -> int:
    """``a op b`` computed digit by digit, each carry (or borrow) dropped with probability ``q``.

    This is the testbed's noisy teacher: a slip is an error a model can learn to make sometimes
    and RL can teach it to stop making. Products with two multi-digit factors are never slipped.
    """
    if q <= 0 or (op == "*" and min(a, b) > 9):
        return _apply(a, op, b)
    if op == "*":
        big, small = (a, b) if b <= 9 else (b, a)
        out, carry = [], 0
        for d in _digits(big):
            s = d * small + carry
            out.append(s % 10)
            carry = s // 10 if rng.random() >= q else 0
        digits = out + _digits(carry) if carry else out
    elif op == "+":
        da, db = _digits(a), _digits(b)
        out, carry = [], 0
        for i in range(max(len(da), len(db))):
            s = (da[i] if i < len(da) else 0) + (db[i] if i < len(db) else 0) + carry
            out.append(s % 10)
            carry = 1 if s >= 10 and rng.random() >= q else 0
        digits = out + [carry] if carry else out
    else:
        da, db = _digits(a), _digits(b)
        digits, borrow = [], 0
        for i in range(len(da)):
            d = da[i] - (db[i] if i < len(db) else 0) - borrow
            borrow = 0
            if d < 0:
                d += 10
                borrow = 1 if rng.random() >= q else 0
            digits.append(d)
    return int("".join(str(d) for d in reversed(digits)))


def _reduce(tokens: list, step=_apply) -> tuple[list[str], int] | None:
    """Evaluate with precedence, one operation per step; None if a value would go negative.

    ``step(a, op, b)`` computes one operation (exactly, or with slips for noisy demonstrations).
    """
    toks = list(tokens)
    steps: list[str] = []
    while "*" in toks:
        i = toks.index("*")
        a, b = toks[i - 1], toks[i + 1]
        c = step(a, "*", b)
        steps.append(f"{a}*{b}={c}")
        toks[i - 1 : i + 2] = [c]
    while len(toks) > 1:
        a, op, b = toks[0], toks[1], toks[2]
        c = step(a, op, b)
        if c < 0:
            return None
        steps.append(f"{a}{op}{b}={c}")
        toks[0:3] = [c]
    return steps, toks[0]


def _shape(rng: random.Random, tier: int) -> list:
    """Operands and operators for one expression of the given tier."""
    if tier == 1:
        return [_num(rng, rng.choice((1, 2, 3))), rng.choice("+-"), _num(rng, 1)]
    if tier == 2:
        return [_num(rng, rng.choice((2, 3))), rng.choice("+-"), _num(rng, 2)]
    if tier == 3:
        ops = [rng.choice("+-*") for _ in range(2)]
        nums = []
        for j in range(3):
            next_to_star = (j > 0 and ops[j - 1] == "*") or (j < 2 and ops[j] == "*")
            nums.append(_num(rng, 1 if next_to_star else rng.choice((1, 2))))
        return _interleave(nums, ops)
    if tier == 4:
        ops = ["*"] + [rng.choice("+-") for _ in range(2)]
        rng.shuffle(ops)
        nums = [_num(rng, 2) for _ in range(4)]
        i = ops.index("*")
        nums[i + rng.randint(0, 1)] = rng.randint(2, 9)  # one factor of the product is 1-digit
        return _interleave(nums, ops)
    if tier == 5:
        k = rng.choice((3, 4))
        ops = ["*"] + [rng.choice("+-") for _ in range(k - 1)]
        rng.shuffle(ops)
        nums = [_num(rng, 2) for _ in range(k + 1)]
        return _interleave(nums, ops)
    raise ValueError(f"difficulty tier must be one of {TIERS}, got {tier!r}")


def _interleave(nums: list[int], ops: list[str]) -> list:
    out: list = [nums[0]]
    for op, x in zip(ops, nums[1:]):
        out += [op, x]
    return out


def make_problem(rng: random.Random, tier: int) -> Problem:
    """Draw one problem of ``tier`` (resampling until no intermediate value is negative)."""
    while True:
        tokens = _shape(rng, tier)
        reduced = _reduce(tokens)
        if reduced is None:
            continue
        steps, answer = reduced
        expr = "".join(str(t) for t in tokens)
        return Problem(expression=expr, tokens=tuple(tokens), steps=tuple(steps), answer=answer, difficulty=tier)


def demonstration(p: Problem, rng: random.Random, slip: float = 0.0) -> str:
    """A worked solution for supervised warm-up: the reference, or one with carry slips."""
    if slip <= 0:
        return p.solution
    steps, answer = _reduce(list(p.tokens), lambda a, op, b: slipped(a, op, b, rng, slip))
    return "\n".join(steps + [f"{BOX}{answer}}}"])


def _rng(seed: int, split: str, index: int) -> random.Random:
    digest = hashlib.sha256(f"rollsift-testbed/{seed}/{split}/{index}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


def problems(split: str, size: int, seed: int = 0, mix: tuple[float, ...] | None = None) -> list[Problem]:
    """``size`` problems of ``split`` ("train" or "eval"), tiers drawn with weights ``mix``.

    Train and eval are drawn from disjoint random streams; an eval expression that also occurs in
    train is redrawn, so held-out accuracy never rewards memorisation.
    """
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    weights = mix or DEFAULT_MIX
    if len(weights) != len(TIERS):
        raise ValueError(f"mix needs one weight per tier {TIERS}, got {weights!r}")
    banned: set[str] = set()
    if split == "eval":
        banned = {p.expression for p in problems("train", TRAIN_SIZE, seed, mix)}
    out: list[Problem] = []
    seen: set[str] = set()
    i = 0
    while len(out) < size:
        rng = _rng(seed, split, i)
        i += 1
        tier = rng.choices(TIERS, weights=weights)[0]
        p = make_problem(rng, tier)
        if p.expression in banned or p.expression in seen:
            continue
        seen.add(p.expression)
        out.append(p)
    return out


DEFAULT_MIX = (0.25, 0.25, 0.25, 0.15, 0.10)
TRAIN_SIZE = 4096
EVAL_SIZE = 512


def to_prompt(p: Problem, split: str, index: int) -> Prompt:
    return Prompt(
        id=f"testbed/{split}/{index}",
        text=p.expression,
        answer=str(p.answer),
        meta={"difficulty": p.difficulty, "data_source": "rollsift-testbed", "solution": p.solution},
    )


def prompts(split: str, size: int | None = None, seed: int = 0) -> list[Prompt]:
    """The testbed's train pool or held-out eval set as Prompt records."""
    if size is None:
        size = TRAIN_SIZE if split == "train" else EVAL_SIZE
    return [to_prompt(p, split, i) for i, p in enumerate(problems(split, size, seed))]
