"""In-flight rollout pruners (see rollsift.config.PRUNERS for the registry).

``quality_head``: ARRoL-style pruning by a quality head trained online on the policy's hidden
states (docs/strategies/pruning.md).
"""
