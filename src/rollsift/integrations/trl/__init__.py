"""rollsift inside TRL's ``GRPOTrainer`` (``adapter``: the trainer mixin; ``data``: the reward wrapper and
the dataset conversion). Users import from here: ``from rollsift.integrations.trl import ...``."""

from .adapter import (SUPPORTED_TRL_VERSIONS, RollsiftConfig, RollsiftGRPOTrainer, RollsiftMixin, RollsiftReward, TRLRollsift,
                      content_id, to_trl_dataset)

__all__ = ["RollsiftConfig", "RollsiftGRPOTrainer", "RollsiftMixin", "RollsiftReward", "SUPPORTED_TRL_VERSIONS", "TRLRollsift", "content_id",
           "to_trl_dataset"]
