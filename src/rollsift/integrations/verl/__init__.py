"""rollsift inside verl 0.9's V1 trainer: GRESO/DOTS selection and the ledger at cluster scale.

Nothing here forks verl. A ``verl.plugins`` entry point (``plugin.py``) registers the trainer mode
``rollsift_sync`` (``trainer.py``: verl's sync trainer plus pre-rollout selection); its replay buffer
is verl's own, extended (``sampler.py``) to write every finished group to the ledger before verl's
DAPO filter runs; the ledger is a Ray actor that owns the SQLite file (``ledger_actor.py``); the
knobs are verl config keys under ``trainer.v1.sampler.sampler_kwargs`` (``config.py``);
``reward.py`` is a verl reward function backed by rollsift's ``MathReward``. Tested with verl 0.9.1
on CPU; see docs/integrations/verl.md for what has and has not been run.

Importing this package imports no verl; its modules that subclass verl classes do.
"""

from .config import SUPPORTED_VERL_VERSIONS, TRAINER_MODE, VerlRollsiftConfig, check_verl_version

__all__ = ["SUPPORTED_VERL_VERSIONS", "TRAINER_MODE", "VerlRollsiftConfig", "check_verl_version"]
