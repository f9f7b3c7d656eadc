"""The rollout pipeline, the same on every engine: the step (``rollout_pipeline``), the walk that asks
the selector about each candidate (``prompt_walk``), the epoch stream (``epoch_stream``), the replay
buffer (``replay_buffer``) and the step's counters (``step_counters``)."""

from .rollout_pipeline import COUNTERS, SEEDS, Collected, RolloutPipeline, RoundCapError, seed_of, train_step

__all__ = ["COUNTERS", "Collected", "RolloutPipeline", "RoundCapError", "SEEDS", "seed_of", "train_step"]
