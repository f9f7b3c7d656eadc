"""The small protocols rollsift's pieces meet at.

Third parties implement these structurally (``typing.Protocol``): no base class to inherit.
Every stateful strategy also offers ``state_dict() / load_state_dict(d) / metrics()``; its
randomness comes from its own seeded generator, which is part of its state.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence, runtime_checkable

from .records import (
    Completion,
    Context,
    Decision,
    FilterResult,
    Group,
    PartialBatch,
    Prompt,
    PromptArrays,
    PromptStats,
    RewardResult,
    SamplingParams,
    Selection,
    TrainBatch,
)


@runtime_checkable
class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...

    def metrics(self) -> dict[str, float]: ...


@runtime_checkable
class LedgerView(Protocol):
    """Read side of the ledger, as strategies see it."""

    def get(self, prompt_id: str) -> PromptStats: ...

    def lookup(self, prompt_ids: Sequence[str]) -> PromptArrays: ...


@runtime_checkable
class Ledger(LedgerView, Protocol):
    """Append-only record of what every prompt did (see rollsift.ledger)."""

    def record_selection(self, decisions: Sequence[Decision], ctx: Context) -> None: ...

    def record_groups(self, groups: Sequence[Group], ctx: Context, purpose: str | None = None) -> None: ...

    def record_filter(self, name: str, result: FilterResult, ctx: Context) -> None: ...

    def record_use(self, groups: Sequence[Group], replayed: Sequence[bool], ctx: Context) -> None: ...

    def record_step(self, step: int, metrics: Mapping[str, float]) -> None: ...

    def register_pool(self, prompt_ids: Sequence[str], labels: Sequence[Any] | None = None) -> None: ...

    def rollback(self, after_step: int) -> int: ...


@runtime_checkable
class PromptSelector(Stateful, Protocol):
    """Chooses prompts before rollout.

    ``scope`` is "stream" when the selector filters candidate chunks of the epoch stream (GRESO,
    uniform) or "pool" when it ranks the whole pool every call (DOTS).
    """

    scope: str

    def ask(
        self, candidates: Sequence[Prompt], budget: int, ledger: LedgerView, ctx: Context
    ) -> Selection: ...

    def tell(self, groups: Sequence[Group], ledger: LedgerView, ctx: Context) -> None: ...


@runtime_checkable
class ProbingSelector(PromptSelector, Protocol):
    """A selector that wants some prompts rolled out for information (DOTS's reference set).

    The pipeline calls ``probe`` at the start of a step, rolls the returned prompts out under the
    current policy (their cost is counted), records them in the ledger with purpose "probe", and
    hands the groups to ``tell`` (with ``ctx.purpose == "probe"``) before ``ask``.
    """

    def probe(self, pool: Sequence[Prompt], ledger: LedgerView, ctx: Context) -> Sequence[Prompt]: ...


@runtime_checkable
class Bindable(Protocol):
    """A strategy that reads the policy or the pool before training (DOTS embeds the pool, the
    quality head sizes itself to the policy's hidden states). Every engine calls ``bind`` once,
    after building the strategy and before its first ``ask``/``prune``, with what it has:

    model / tokenizer: the starting policy (None where the host keeps it elsewhere, e.g. verl's
        GPU workers); encode: ``Prompt -> list[int]`` as generation sees it; out: a directory the
        strategy may cache in (the run directory); pool: the training prompts; device: where to
        compute. Strategies accept ``**_`` so that engines can pass more later.
    """

    def bind(self, *, model: Any, tokenizer: Any, encode: Any, out: Any, pool: Sequence[Prompt],
             device: Any = None, **_: Any) -> None: ...


@runtime_checkable
class RefillPolicy(Protocol):
    """How a step tops its batch up when filters dropped groups (DAPO dynamic sampling's loop).

    The pipeline keeps generating rounds while the batch is short, at most ``max_rounds`` per
    step; ``at_cap`` says what happens at the cap ("train" on the short batch, or "error").
    ``next_round_size`` sizes the next round from the missing groups and the last round's
    zero-variance rate. Surplus groups are kept for the next step when ``carry_over`` is true and
    dropped once older than ``max_staleness`` steps. Without a refill policy a step is one round.
    """

    max_rounds: int
    at_cap: str
    carry_over: bool
    max_staleness: int

    def next_round_size(self, missing: int, zero_variance_rate: float, batch_size: int) -> int: ...


@runtime_checkable
class GroupFilter(Stateful, Protocol):
    """Post-rollout filter: keeps, drops or edits groups (DAPO dynamic sampling, PODS)."""

    name: str

    def apply(self, groups: Sequence[Group], ctx: Context) -> FilterResult: ...


@runtime_checkable
class RolloutPruner(Stateful, Protocol):
    """Stops rollouts during generation.

    ``over_sample``: the generator starts ``ceil(n * over_sample)`` rollouts per prompt; the pruner
    must leave at most ``n`` alive per group by the end. ``poll_every`` is in generated tokens.
    ``prune`` returns a boolean keep mask [R]; rows set to False stop (status "pruned").
    """

    over_sample: float
    poll_every: int
    needs_hidden_states: bool

    def prune(self, partial: PartialBatch, ctx: Context) -> Any: ...

    def observe(self, groups: Sequence[Group], ctx: Context) -> None: ...


@runtime_checkable
class Generator(Protocol):
    """Produces ``n`` completions for each prompt; ``out[i]`` are the completions of ``prompts[i]``.

    ``last_stats`` describes the last call: ``rows`` (rollouts started, pruned ones included),
    ``gen_tokens`` (tokens generated), ``pruned_rows``; a backend may add more (``seconds``,
    ``prompt_tokens``). The pipeline's cost accounting reads it.
    """

    last_stats: Mapping[str, float]

    def generate(
        self,
        prompts: Sequence[Prompt],
        n: int,
        sampling: SamplingParams,
        pruner: RolloutPruner | None = None,
        ctx: Context | None = None,
    ) -> list[list[Completion]]: ...


RewardFn = Callable[[Prompt, Completion], RewardResult]


@runtime_checkable
class Learner(Stateful, Protocol):
    """Updates the policy from a TrainBatch and returns metrics."""

    policy_version: int

    def update(self, batch: TrainBatch, ctx: Context) -> dict[str, float]: ...


@runtime_checkable
class ReplayBuffer(Stateful, Protocol):
    """Keeps recent informative groups for reuse, bounded by size and by staleness.

    ``available`` counts the groups that may still be replayed at ``policy_version``; ``sample``
    draws up to ``k`` of them, none of whose prompt is in ``exclude`` (the step's fresh prompts).
    """

    def add(self, groups: Sequence[Group], policy_version: int) -> None: ...

    def available(self, policy_version: int) -> int: ...

    def sample(self, k: int, policy_version: int, exclude: Iterable[str] = ()) -> list[Group]: ...
