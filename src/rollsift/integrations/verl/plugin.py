"""The ``verl.plugins`` entry point: registers the ``rollsift_sync`` trainer in every verl process.

verl 0.9 (``verl/__init__.py``) loads every entry point of the group ``verl.plugins`` whenever a
process imports verl: the driver, the ``TaskRunnerV1`` actor that looks trainers up by
``trainer.v1.trainer_mode``, and the workers. rollsift's ``pyproject.toml`` declares::

    [project.entry-points."verl.plugins"]
    rollsift = "rollsift.integrations.verl.plugin"

so installing rollsift with its verl extra on every node (``pip install '/path/to/rollsift[verl]'``) is the whole setup. Loading
imports ``verl.trainer.ppo.v1`` (about 4 s once per process that imports verl). Set
``ROLLSIFT_VERL_PLUGIN=0`` to skip it in a process, or use verl's own ``VERL_USE_EXTERNAL_PLUGINS``
(``none``, or a list of plugin names). verl logs a failing plugin at debug level only, so a failure
is logged here as a warning, naming the cause.
"""

from __future__ import annotations

import logging
import os

ENV = "ROLLSIFT_VERL_PLUGIN"
logger = logging.getLogger(__name__)


def register() -> bool:
    """Register rollsift's trainer with verl (idempotent). Returns False when switched off by ``ENV``."""
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "off", "no"):
        return False
    from . import trainer  # noqa: F401  (registering is the import's side effect)

    return True


try:
    register()
except Exception as e:  # noqa: BLE001 - never break `import verl` for the user's other work
    logger.warning("rollsift: the verl plugin did not load, trainer.v1.trainer_mode=rollsift_sync is unavailable "
                   "in this process: %r", e)
