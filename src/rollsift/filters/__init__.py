"""Post-rollout group filters (see rollsift.config.FILTERS for the registry)."""
